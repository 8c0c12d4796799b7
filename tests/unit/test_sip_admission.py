"""Admission on the sans-I/O core: allow-list, scanners, per-source limits, digest, CSeq, egress."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediasrv.calls.controller import CallSettings as CoreSettings
from mediasrv.calls.registry import CallState
from mediasrv.config import ConfigError, load_settings
from mediasrv.sip import digest
from mediasrv.sip.admission import (
    DEFAULT_ALLOW_CIDRS,
    Admission,
    AdmissionSettings,
    AuthOutcome,
    opening_hint,
)
from mediasrv.sip.message import ParseError, Request, Response, parse
from mediasrv.sip.transaction import Dest
from tests.support.sip_harness import PEER, UDP, Harness, request, sdp

OUTSIDER = Dest("udp", ("198.51.100.7", 5060))


def _nothing_kept(h: Harness) -> None:
    assert list(h.registry.all()) == [] and not h.core.sessions and not h.core.dialogs
    assert h.core.tl.server == {} and h.core.timers.next_deadline() is None
    assert h.media.released == []


def test_invite_from_outside_the_allow_list_gets_a_stateless_403_and_nothing_else() -> None:
    h = Harness()
    h.feed(request(body=sdp()), OUTSIDER)
    h.feed(request(body=sdp()), OUTSIDER)  # retransmission: the same answer, same To-tag
    out = h.take()
    assert [m.status for m in out] == [403, 403]  # type: ignore[union-attr]
    assert out[0].to_tag == out[1].to_tag and out[0].to_tag
    h.feed(request("ACK", to_tag=out[0].to_tag), OUTSIDER)
    assert h.take() == []
    _nothing_kept(h)
    assert h.core.stats["refused_source"] == 2
    # the same INVITE from an allowed source is a call
    h.feed(request(body=sdp()))
    assert [m.status for m in h.take()] == [100, 200]  # type: ignore[union-attr]


def test_allow_list_networks_and_mapped_addresses() -> None:
    a = Admission(AdmissionSettings(allow_cidrs=("203.0.113.0/24", "::1")))
    assert a.source_allowed("203.0.113.9") and a.source_allowed("::ffff:203.0.113.9") and a.source_allowed("::1")
    assert not a.source_allowed("127.0.0.1") and not a.source_allowed("203.0.114.1") and not a.source_allowed("x")


def test_scanner_user_agent_is_dropped_whatever_it_sends() -> None:
    h = Harness()
    for method, ua in (("INVITE", "friendly-scanner"), ("OPTIONS", "sipvicious 0.3.4"), ("REGISTER", "SIPVicious")):
        body = sdp() if method == "INVITE" else ""
        h.feed(request(method, branch=f"z9hG4bK-{method}", body=body, extra=f"User-Agent: {ua}\n"))
    assert h.take() == []
    _nothing_kept(h)
    assert h.core.stats["refused_scanner"] == 3


def test_register_and_unknown_methods_get_405_statelessly_and_keep_nothing() -> None:
    h = Harness()
    for i in range(50):
        h.feed(request("REGISTER", call_id=f"r{i}", branch=f"z9hG4bK-r{i}"))
    h.feed(request("FOOBAR", branch="z9hG4bK-f"))
    out = h.take()
    assert {m.status for m in out} == {405}  # type: ignore[union-attr]
    assert "INVITE" in (out[0].get("allow") or "")
    assert h.core.tl.server == {} and h.core.timers.next_deadline() is None  # no Timer J per REGISTER


def test_per_source_bucket_drops_a_flood_but_not_another_sources_options() -> None:
    h = Harness(CoreSettings(admission=AdmissionSettings(rate_per_source=10, burst_per_source=20)))
    flooder = Dest("udp", ("127.0.0.2", 5060))
    for i in range(500):
        h.feed(request("OPTIONS", call_id=f"f{i}", branch=f"z9hG4bK-f{i}"), flooder)
    assert len(h.statuses()) == 20 and h.core.stats["rate_limited"] == 480
    h.feed(request("OPTIONS", branch="z9hG4bK-a"), UDP)
    assert h.statuses() == [200]
    h.advance(1.0)  # refilled at 10/s
    for i in range(50):
        h.feed(request("OPTIONS", call_id=f"g{i}", branch=f"z9hG4bK-g{i}"), flooder)
    assert len(h.statuses()) == 10


def test_bucket_memory_is_bounded() -> None:
    a = Admission(AdmissionSettings(max_sources=100))
    for i in range(5000):
        a.take(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert a.sources_tracked == 100


def _challenge(h: Harness, msg: Response) -> digest.Challenge:
    name = "proxy-authenticate" if msg.status == 407 else "www-authenticate"
    ch = digest.choose(msg.raw_all(name), proxy=msg.status == 407)
    assert ch is not None
    return ch


def _auth_invite(h: Harness, ch: digest.Challenge, user: str, pw: str, cseq: int = 2, call_id: str = "c1@peer") -> str:
    uri = "sip:svc@127.0.0.1:5060"
    value = digest.authorization(ch, digest.Credentials(user, pw), "INVITE", uri)
    return request(body=sdp(), cseq=cseq, branch=f"z9hG4bK-a{cseq}", call_id=call_id, extra=f"{ch.header_name}: {value}\n")


def test_digest_auth_challenge_accept_reject_stale_and_replay() -> None:
    adm = AdmissionSettings(users={"alice": "s3cret"}, realm="test", nonce_ttl_s=60)
    h = Harness(CoreSettings(admission=adm))
    h.feed(request(body=sdp()))
    (resp,) = h.take()
    assert isinstance(resp, Response) and resp.status == 401
    ch = _challenge(h, resp)
    assert ch.realm == "test" and ch.qop == ("auth",) and not ch.stale
    _nothing_kept(h)
    # wrong password -> 403, nothing kept
    h.feed(_auth_invite(h, ch, "alice", "wrong"))
    assert h.statuses() == [403] and h.core.stats["auth_failed"] == 1
    h.feed(_auth_invite(h, ch, "mallory", "s3cret", cseq=3))
    assert h.statuses() == [403]
    _nothing_kept(h)
    # right password -> a call
    good = _auth_invite(h, ch, "alice", "s3cret", cseq=4)
    h.feed(good)
    ok = h.take()[-1]
    assert ok.status == 200 and h.core.stats["auth_ok"] == 1  # type: ignore[union-attr]
    h.feed(request("ACK", cseq=4, branch="z9hG4bK-a4", to_tag=ok.to_tag))
    # the same credentials again (a replay on a new transaction) -> challenged, no second call
    h.feed(good.replace("z9hG4bK-a4", "z9hG4bK-replay").replace("c1@peer", "c2@peer"))
    assert h.statuses() == [401] and len(list(h.registry.all())) == 1
    # an expired nonce with the right password -> 401 stale=true
    h.advance(61)
    h.feed(_auth_invite(h, ch, "alice", "s3cret", cseq=5, call_id="c3@peer"))
    (resp,) = h.take()
    assert resp.status == 401 and _challenge(h, resp).stale  # type: ignore[union-attr]
    # OPTIONS needs no credentials
    h.feed(request("OPTIONS", branch="z9hG4bK-o", call_id="o1"))
    assert h.statuses() == [200]


def test_forged_nonce_is_challenged_and_proxy_mode_uses_407() -> None:
    h = Harness(CoreSettings(admission=AdmissionSettings(users={"bob": "pw"}, auth_proxy=True)))
    h.feed(request(body=sdp()))
    (resp,) = h.take()
    assert resp.status == 407  # type: ignore[union-attr]
    ch = _challenge(h, resp)  # type: ignore[arg-type]
    assert ch.proxy
    forged = digest.Challenge(realm=ch.realm, nonce="1234.00000000000000000000000000000000", qop=("auth",), proxy=True)
    h.feed(_auth_invite(h, forged, "bob", "pw"))
    assert h.statuses() == [407]
    h.feed(_auth_invite(h, ch, "bob", "pw", cseq=3))
    assert h.statuses() == [100, 200]


def test_authenticate_refuses_a_digest_for_another_uri() -> None:
    a = Admission(AdmissionSettings(users={"alice": "pw"}))
    _, (_, value) = a.challenge(10.0)
    ch = digest.parse_challenge(value)
    auth = digest.authorization(ch, digest.Credentials("alice", "pw"), "INVITE", "sip:other@host")
    req = parse(request(body=sdp(), extra=f"Authorization: {auth}\n").replace("\n", "\r\n").encode())
    assert isinstance(req, Request)
    assert a.authenticate(req, 10.0).outcome is AuthOutcome.FORBIDDEN


def test_dialog_at_the_top_of_the_cseq_range_is_ended_by_the_peers_bye() -> None:
    h = Harness()
    h.feed(request(body=sdp(), cseq=2147483647))
    ok = h.take()[-1]
    assert ok.status == 200  # type: ignore[union-attr]
    h.feed(request("ACK", cseq=2147483647, to_tag=ok.to_tag))
    h.feed(request("BYE", branch="z9hG4bK-bye", cseq=2147483648, to_tag=ok.to_tag))
    assert h.statuses() == [200]
    (call,) = h.registry.all()
    assert call.state is CallState.ENDED and (call.hangup_cause, call.hangup_by) == ("normal_clearing", "caller")
    h.feed(request(body=sdp(), call_id="big", cseq=2**32))
    h.feed(request(body=sdp(), call_id="neg", branch="z9hG4bK-n", cseq=-1))
    assert h.statuses() == [400, 400]


def test_bye_after_a_missing_ack_goes_to_the_invites_source_not_the_contact() -> None:
    h = Harness()
    rr = "Record-Route: <sip:10.9.9.9:5080;transport=tcp;lr>\n"
    invite = request(body=sdp(), extra=rr).replace("Contact: <sip:sipp@127.0.0.1:5062>", "Contact: <sip:x@10.1.1.1:9>")
    h.feed(invite)
    h.take()
    h.advance(64 * 0.5 + 1)
    byes = [(m, d) for m, d, *_ in h.sent if isinstance(m, Request) and m.method == "BYE"]
    assert byes and all(d == UDP for _, d in byes)
    assert byes[0][0].uri_str == "sip:x@10.1.1.1:9"  # the Contact is the Request-URI, not the next hop
    tcp = Dest("tcp", ("127.0.0.1", 40001), conn=3)
    h = Harness()
    h.feed(invite.replace("c1@peer", "t1").replace("SIP/2.0/UDP", "SIP/2.0/TCP"), tcp)
    h.advance(64 * 0.5 + 1)
    assert {d for m, d, *_ in h.sent} == {tcp}


def _ok_for(invite: Request) -> str:
    vias = "".join(f"Via: {v}\n" for k, v in invite.headers if k == "via")
    return (
        f"SIP/2.0 200 OK\n{vias}From: {invite.get('from')}\nTo: {invite.get('to')};tag=u1\n"
        f"Call-ID: {invite.call_id}\nCSeq: {invite.cseq} INVITE\nContact: <sip:uas@10.1.1.1:5070>\n"
        f"Record-Route: <sip:10.2.2.2;lr>\nContent-Type: application/sdp\nContent-Length: {len(sdp())}\n\n{sdp()}"
    )


def _outbound_ack_dest(h: Harness) -> tuple[Request, Dest]:
    h.core.start_call("sip:svc@127.0.0.1:5062", PEER, lambda s, c, r: None)
    invite = h.take()[0]
    assert isinstance(invite, Request)
    h.feed(_ok_for(invite))
    ack, dest, *_ = h.sent[-1]
    assert isinstance(ack, Request) and ack.method == "ACK"
    return ack, dest


def test_outbound_call_acks_over_the_flow_when_the_2xx_names_an_untrusted_host() -> None:
    ack, dest = _outbound_ack_dest(Harness())
    assert dest == UDP and ack.get_all("route") == ["<sip:10.2.2.2;lr>"]
    # a trusted next hop (in sip_allow_cidrs) is followed as RFC 3261 says
    trusted = Harness(CoreSettings(admission=AdmissionSettings(allow_cidrs=("127.0.0.0/8", "10.2.2.0/24"))))
    ack, dest = _outbound_ack_dest(trusted)
    assert dest.addr == ("10.2.2.2", 5060)


def test_opening_hint_only_for_an_outside_listener_with_the_loopback_default() -> None:
    hint = opening_hint("0.0.0.0", DEFAULT_ALLOW_CIDRS)
    assert hint is not None and "MEDIASRV_SIP_ALLOW_CIDRS=" in hint and "sip_allow_cidrs = [" in hint
    assert opening_hint("192.0.2.10", ["127.0.0.1/32"]) is not None
    assert opening_hint("127.0.0.1", DEFAULT_ALLOW_CIDRS) is None
    assert opening_hint("0.0.0.0", ["203.0.113.0/24"]) is None


def test_settings_from_toml_table_env_and_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text(
        '[mediasrv]\nsip_allow_cidrs = ["203.0.113.0/24"]\nsip_realm = "pbx"\n'
        '[mediasrv.sip_users]\nalice = "p,w:1"\nbob = "x"\n'
    )
    s = load_settings({"config": str(cfg)}, environ={})
    assert s.sip_allow_cidrs == ["203.0.113.0/24"] and s.sip_users == {"alice": "p,w:1", "bob": "x"}
    s = load_settings({}, environ={"MEDIASRV_SIP_USERS": "alice:pw:x, bob:y", "MEDIASRV_SIP_ALLOW_CIDRS": "10.0.0.0/8,::1"})
    assert s.sip_users == {"alice": "pw:x", "bob": "y"} and s.sip_allow_cidrs == ["10.0.0.0/8", "::1"]
    assert load_settings({}, environ={}).sip_allow_cidrs == ["127.0.0.0/8", "::1/128"]
    for env in ({"MEDIASRV_SIP_ALLOW_CIDRS": "10.0.0.0/33"}, {"MEDIASRV_SIP_USERS": "nopassword"},
                {"MEDIASRV_SIP_RATE_PER_SOURCE": "0"}):
        with pytest.raises(ConfigError):
            load_settings({}, environ=env)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.sampled_from(["authorization", "proxy-authorization"]))
def test_any_authorization_header_is_answered_never_raises(value: str, name: str) -> None:
    a = Admission(AdmissionSettings(users={"alice": "pw"}, auth_proxy=name == "proxy-authorization"))
    nonce = a.nonce(1.0)
    for v in (value, f'Digest realm="mediasrv", username="alice", nonce="{nonce}", {value}',
              f'Digest realm="mediasrv", nonce="{value}", response="{value}", nc={value}, qop=auth, cnonce="x"'):
        safe = v.replace("\r", " ").replace("\n", " ").replace("\x00", " ")
        text = request(body=sdp(), extra=f"{name}: {safe}\n").replace("\n", "\r\n").encode("utf-8", "surrogateescape")
        try:
            req = parse(text)
        except ParseError:
            continue
        assert isinstance(req, Request)
        assert a.authenticate(req, 2.0).outcome in set(AuthOutcome)


def test_non_ascii_nonce_and_response_are_refused_not_raised() -> None:
    a = Admission(AdmissionSettings(users={"alice": "pw"}))
    for nonce, resp in (("1.\u00e9", "x"), (a.nonce(1.0), "\u00e9")):
        hdr = f'Authorization: Digest realm="mediasrv", username="alice", nonce="{nonce}", uri="sip:svc@127.0.0.1:5060", response="{resp}"\n'
        req = parse(request(body=sdp(), extra=hdr).replace("\n", "\r\n").encode())
        assert isinstance(req, Request)
        assert a.authenticate(req, 2.0).outcome in (AuthOutcome.CHALLENGE, AuthOutcome.FORBIDDEN)
