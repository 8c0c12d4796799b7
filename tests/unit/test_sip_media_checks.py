"""SDP checks in the SIP core: refused before any allocation or 200, re-INVITEs that keep the old media."""

from __future__ import annotations

import socket
from pathlib import Path

from mediasrv.calls.controller import CallCore as SipCore
from mediasrv.calls.controller import CallSettings as CoreSettings
from mediasrv.calls.registry import CallRegistry, CallState
from mediasrv.media.addrpolicy import MediaAddressPolicy
from mediasrv.media.plane import MediaPlane, MediaSettings
from mediasrv.sip.message import Response, parse
from mediasrv.sip.transaction import Dest
from tests.support.sip_harness import Harness, request, response_to, sdp


def _policy_harness() -> Harness:
    return Harness(CoreSettings(media_address_check=MediaAddressPolicy(["10.0.0.0/8"]).check))


def _warning(h: Harness) -> str:
    resp = h.sent[-1][0]
    assert isinstance(resp, Response) and resp.status == 488
    return resp.get("warning") or ""


def test_refused_addresses_get_488_with_the_reason_and_nothing_is_allocated() -> None:
    h = _policy_harness()
    cases = {
        "169.254.169.254": "instance metadata",
        "192.0.0.192": "Oracle Cloud metadata",
        "224.0.0.1": "multicast",
        "255.255.255.255": "broadcast",
        "10.1.2.3": "media_deny_cidrs",
        "media.example.com": "not an IP literal",
        "127.0.0.1\x00x": "control character",
    }
    for n, (ip, why) in enumerate(cases.items()):
        h.feed(request(branch=f"z9hG4bK-{n}", call_id=f"c{n}", body=sdp(ip=ip)))
        warning = _warning(h)
        assert warning.startswith('399 mediasrv "unusable SDP') and why in warning, (ip, warning)
        assert "\x00" not in warning
    assert list(h.registry.all()) == [] and h.media._used == {} and h.media.changes == []
    assert h.core.stats["sdp_refused"] == len(cases)


def test_no_common_codec_names_what_was_offered() -> None:
    h = Harness()
    h.feed(request(body=sdp(pts="18 97")))
    warning = _warning(h)
    assert warning.startswith('305 mediasrv "Incompatible media format", 399 mediasrv') and "18 97" in warning


def test_ipv6_offer_to_an_ipv4_server_is_488() -> None:
    h = Harness()
    h.feed(request(body=sdp().replace("c=IN IP4 127.0.0.1", "c=IN IP6 ::1")))
    assert "address family" in _warning(h)


def test_reinvite_with_bad_sdp_is_488_and_the_call_keeps_its_media() -> None:
    h = _policy_harness()
    h.feed(request(body=sdp()))
    ok = h.take()[-1]
    assert isinstance(ok, Response) and ok.status == 200
    h.feed(request("ACK", branch="z9hG4bK-ack", to_tag=ok.to_tag))
    call = next(h.registry.all())
    before = call.media
    for n, body in enumerate(
        [sdp(ip="169.254.169.254", v=2), sdp(ip="127.0.0.1\x00", v=2), sdp(pts="18", v=2),
         sdp(v=2).replace("m=audio 6000", "m=audio 70000")],
        start=2,
    ):
        h.feed(request(branch=f"z9hG4bK-re{n}", cseq=n, to_tag=ok.to_tag, body=body))
        assert h.statuses() == [488]
        h.feed(request("ACK", branch=f"z9hG4bK-re{n}", cseq=n, to_tag=ok.to_tag))
    assert call.media is before and call.state is CallState.ANSWERED
    assert h.media.changes == [(call.call_id, True)]  # only the initial answer reached the media plane
    h.feed(request(branch="z9hG4bK-re9", cseq=9, to_tag=ok.to_tag, body=sdp(v=3)))
    assert h.statuses() == [200]


def test_refused_answer_to_our_offer_in_ack_hangs_up() -> None:
    h = _policy_harness()
    h.feed(request())  # no offer: we offer in the 200, the answer comes in the ACK
    ok = h.take()[-1]
    assert isinstance(ok, Response) and ok.status == 200
    h.feed(request("ACK", branch="z9hG4bK-ack", to_tag=ok.to_tag, body=sdp(ip="224.1.1.1")))
    call = next(h.registry.all())
    assert (call.state, call.hangup_cause) == (CallState.ENDED, "bad_sdp")
    assert h.media.released == [call.call_id] and h.media._used == {}


async def test_media_plane_refusal_is_a_500_before_any_200_and_the_leg_is_released(tmp_path: Path) -> None:
    """Defence in depth: a SIP core that checks nothing still cannot make the real plane send to metadata."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        lo = s.getsockname()[1] & ~1
    plane = MediaPlane(MediaSettings(rtp_port_lo=lo, rtp_port_hi=lo + 20, data_dir=str(tmp_path)), emit=lambda *a: None)
    await plane.start()
    sent: list[bytes] = []
    registry = CallRegistry()
    core = SipCore(CoreSettings(), registry, plane, lambda data, dest: sent.append(data), lambda: 0.0)
    try:
        core.receive(request(body=sdp(ip="169.254.169.254")).replace("\n", "\r\n").replace("\r\r\n", "\r\n").encode(),
                     Dest("udp", ("127.0.0.1", 5062)))
        statuses = [parse(d, stream=True).status for d in sent]  # type: ignore[union-attr]
        assert statuses == [100, 500]
        call = next(registry.all())
        assert (call.state, call.hangup_cause) == (CallState.ENDED, "media_error")
        assert plane.ports.in_use == 0 and plane.metrics()["media_events"]["refused_remotes"] == 1
    finally:
        await plane.stop()


def test_refused_answer_in_a_2xx_to_our_invite_is_acked_then_hung_up() -> None:

    h = _policy_harness()
    results: list[tuple[int, str]] = []
    session = h.core.start_call("sip:svc@127.0.0.1:5062", ("127.0.0.1", 5062), lambda s, c, r: results.append((c, r)))
    invite = h.take()[0]
    h.feed(response_to(invite, 183, body=sdp(ip="192.0.0.192")))  # early media to a metadata address: ignored
    assert session.call.media is None and h.media.changes == []
    h.feed(response_to(invite, 200, body=sdp(ip="100.100.100.200")))
    assert [m.method for m in h.take() if not isinstance(m, Response)] == ["ACK", "BYE"]
    assert results[0][0] == 488 and "Alibaba Cloud metadata" in results[0][1]
    assert session.call.hangup_cause == "bad_sdp" and h.media.changes == [] and h.media._used == {}


def test_an_unanswered_ringing_call_is_refused_after_the_ring_timeout_and_released() -> None:
    h = Harness(CoreSettings(auto_answer=False, ring_timeout_s=60.0))
    h.feed(request(body=sdp()))
    assert h.statuses() == [100, 180]
    call = next(h.registry.all())
    h.advance(59.0)
    assert call.state is CallState.RINGING and h.statuses() == []
    h.advance(1.5)
    refusal = h.take()[0]
    assert isinstance(refusal, Response) and refusal.status == 480
    h.feed(request("ACK", to_tag=refusal.to_tag))  # the transaction's ACK: no more retransmissions
    assert (call.state, call.hangup_cause, call.hangup_by) == (CallState.ENDED, "no_answer", "server")
    assert h.media.released == [call.call_id] and h.media._used == {}
    # answered in time: the timer is cancelled with the call's end, nothing fires later
    h.feed(request(branch="z9hG4bK-2", call_id="c2", body=sdp()))
    h.take()
    second = next(c for c in h.registry.all() if c.sip_call_id == "c2")
    h.core.answer(second.call_id)
    ok = h.take()[-1]
    assert isinstance(ok, Response) and ok.status == 200
    h.feed(request("ACK", branch="z9hG4bK-ack2", call_id="c2", to_tag=ok.to_tag))
    h.advance(120.0)
    assert second.state is CallState.ANSWERED and h.statuses() == []


def test_a_failing_hangup_listener_does_not_keep_the_calls_port() -> None:
    h = Harness()

    def broken_listener(event: str, call: object) -> None:
        if event == "call.hangup":
            raise RuntimeError("listener bug")

    h.registry.subscribe(broken_listener)
    h.feed(request(body=sdp()))
    ok = h.take()[-1]
    assert isinstance(ok, Response) and ok.status == 200
    call = next(h.registry.all())
    try:
        h.feed(request("BYE", branch="z9hG4bK-bye", cseq=2, to_tag=ok.to_tag))
    except RuntimeError:
        pass  # the transport logs it; what matters is below
    assert h.media.released == [call.call_id] and h.media._used == {}
