"""Digest authentication: the RFCs' own examples, challenge parsing, and the UAC's 401/407 retry."""

from __future__ import annotations

import hashlib

import pytest

from mediasrv.calls.controller import Leg as Session
from mediasrv.calls.registry import CallState
from mediasrv.sip import digest
from mediasrv.sip.core import check_user_headers
from mediasrv.sip.digest import Challenge, Credentials, DigestError
from mediasrv.sip.message import Request
from tests.support.sip_harness import PEER, Harness, sdp

# -- RFC test vectors -------------------------------------------------------------------------------


def test_rfc2617_section_3_5_example() -> None:
    ch = digest.parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert (ch.algorithm, ch.qop, ch.proxy) == ("MD5", ("auth", "auth-int"), False)
    value = digest.authorization(ch, Credentials("Mufasa", "Circle Of Life"), "GET", "/dir/index.html", cnonce="0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in value
    assert "qop=auth," in value and "nc=00000001" in value and 'cnonce="0a4f113b"' in value
    assert 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in value and value.startswith('Digest username="Mufasa"')


RFC7616 = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


@pytest.mark.parametrize(
    ("alg", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_examples(alg: str, expected: str) -> None:
    ch = digest.parse_challenge(RFC7616.format(alg=alg))
    creds = Credentials("Mufasa", "Circle of Life")
    cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    assert digest.response(ch, creds, "GET", "/dir/index.html", cnonce) == expected
    value = digest.authorization(ch, creds, "GET", "/dir/index.html", cnonce=cnonce)
    assert f'response="{expected}"' in value and f"algorithm={alg}" in value and "qop=auth," in value


# -- our own formulas against the RFC's definitions, for the variants without a published example ----


def _h(alg: str, s: str) -> str:
    return hashlib.new({"MD5": "md5", "SHA-256": "sha256"}[alg], s.encode()).hexdigest()


def test_rfc2069_mode_without_qop() -> None:
    ch = digest.parse_challenge('Digest realm="r", nonce="n1"')
    ha1, ha2 = _h("MD5", "u:r:p"), _h("MD5", "INVITE:sip:x@h")
    assert digest.response(ch, Credentials("u", "p"), "INVITE", "sip:x@h", "ignored") == _h("MD5", f"{ha1}:n1:{ha2}")
    value = digest.authorization(ch, Credentials("u", "p"), "INVITE", "sip:x@h")
    assert "qop=" not in value and "nc=" not in value and "cnonce=" not in value


def test_sess_variant_and_auth_int() -> None:
    ch = digest.parse_challenge('Digest realm="r", nonce="n", algorithm=SHA-256-sess, qop="auth-int"')
    assert ch.session and ch.base_algorithm == "SHA-256" and ch.supported
    body = b"v=0\r\n"
    ha1 = _h("SHA-256", _h("SHA-256", "u:r:p") + ":n:c")
    ha2 = _h("SHA-256", "INVITE:sip:x@h:" + hashlib.sha256(body).hexdigest())
    expected = _h("SHA-256", f"{ha1}:n:00000002:c:auth-int:{ha2}")
    assert digest.response(ch, Credentials("u", "p"), "INVITE", "sip:x@h", "c", nc=2, body=body) == expected


def test_userhash_hashes_the_username() -> None:
    ch = digest.parse_challenge('Digest realm="r", nonce="n", algorithm=SHA-256, qop="auth", userhash=true')
    value = digest.authorization(ch, Credentials("bob", "p"), "INVITE", "sip:x@h", cnonce="c")
    assert f'username="{_h("SHA-256", "bob:r")}"' in value and "userhash=true" in value


# -- parsing ------------------------------------------------------------------------------------------


def test_parse_quoted_commas_escapes_and_case() -> None:
    ch = digest.parse_challenge(
        'DIGEST Realm="a, \\"b\\"",NONCE="x" ,  stale=TRUE, algorithm=sha-256, qop="AUTH"', proxy=True
    )
    assert (ch.realm, ch.nonce, ch.stale, ch.qop, ch.proxy) == ('a, "b"', "x", True, ("auth",), True)
    assert ch.base_algorithm == "SHA-256" and ch.header_name == "Proxy-Authorization"


@pytest.mark.parametrize(
    "value",
    ['Basic realm="x"', 'Digest realm="x"', 'Digest nonce="x"', 'Digest realm="x, nonce="y"', "Digest realm"],
)
def test_unusable_challenges_raise(value: str) -> None:
    with pytest.raises(DigestError):
        digest.parse_challenge(value)


def test_choose_takes_the_first_supported_challenge() -> None:
    values = [
        'Digest realm="r", nonce="1", algorithm=SHA-999',
        'Digest realm="r", nonce="2", qop="auth-conf"',
        "Basic realm=x",
        'Digest realm="r", nonce="3", algorithm=SHA-256, qop="auth"',
        'Digest realm="r", nonce="4", algorithm=MD5, qop="auth"',
    ]
    ch = digest.choose(values)
    assert ch is not None and ch.nonce == "3"
    assert digest.choose(values[:3]) is None
    with pytest.raises(DigestError):
        digest.authorization(Challenge("r", "n", "SHA-999"), Credentials("u", "p"), "INVITE", "sip:x")


def test_user_headers_are_checked() -> None:
    assert check_user_headers({"X-Tenant": "acme", "P-Asserted-Identity": "<sip:a@b>"}) is None
    assert check_user_headers({"X-Bad": "a\r\nVia: evil"}) is not None
    assert check_user_headers({"Call-ID": "x"}) is not None
    assert check_user_headers({"Bad Name": "x"}) is not None
    assert check_user_headers({"X-Long": "a" * 2000}) is not None


# -- the UAC's retry, on the sans-I/O core ----------------------------------------------------------


def _reply(req: Request, status: int, extra: str = "", body: str = "", to_tag: str = "uas1") -> str:
    lines = [f"SIP/2.0 {status} X"]
    lines += [f"Via: {v}" for k, v in req.headers if k == "via"]
    lines += [f"From: {req.get('from')}", f"To: {req.get('to')};tag={to_tag}", f"Call-ID: {req.call_id}"]
    lines += [f"CSeq: {req.cseq} {req.cseq_method}", "Contact: <sip:uas@127.0.0.1:5062>"]
    if extra:
        lines.append(extra)
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return "\n".join(lines) + "\n\n" + body


WWW = 'WWW-Authenticate: Digest realm="mediasrv.test", nonce="abc", qop="auth", algorithm=MD5'


def _invites(h: Harness) -> list[Request]:
    return [m for m in h.take() if isinstance(m, Request) and m.method == "INVITE"]


ALICE = Credentials("alice", "s3cret")


def _start(
    h: Harness, creds: Credentials | None = ALICE, headers: dict[str, str] | None = None
) -> tuple[Session, list[tuple[int, str]]]:
    results: list[tuple[int, str]] = []
    s = h.core.start_call("sip:svc@127.0.0.1:5062", PEER, lambda s, c, r: results.append((c, r)),
                          headers=headers, credentials=creds)
    return s, results


@pytest.mark.parametrize(("status", "challenge", "answer"), [
    (401, WWW, "authorization"),
    (407, WWW.replace("WWW-", "Proxy-"), "proxy-authorization"),
])
def test_uac_answers_a_challenge_with_a_new_cseq_and_branch(status: int, challenge: str, answer: str) -> None:
    h = Harness()
    s, results = _start(h, headers={"X-Tenant": "acme"})
    first = _invites(h)[0]
    h.feed(_reply(first, status, challenge))
    sent = h.take()
    assert [m.method for m in sent] == ["ACK", "INVITE"]  # type: ignore[union-attr]
    ack, second = sent
    assert isinstance(ack, Request) and ack.vias[0].branch == first.vias[0].branch and ack.cseq == first.cseq
    assert isinstance(second, Request) and second.cseq == first.cseq + 1
    assert second.vias[0].branch != first.vias[0].branch
    assert (second.call_id, second.from_tag, second.body) == (first.call_id, first.from_tag, first.body)
    assert second.get("x-tenant") == "acme" and first.get("x-tenant") == "acme"
    value = second.get(answer)
    assert value is not None and (second.get("authorization" if answer != "authorization" else "proxy-authorization")
                                  is None)
    ha1 = _h("MD5", "alice:mediasrv.test:s3cret")
    ha2 = _h("MD5", f"INVITE:{second.uri_str}")
    cnonce = value.split('cnonce="')[1].split('"')[0]
    assert f'response="{_h("MD5", f"{ha1}:abc:00000001:{cnonce}:auth:{ha2}")}"' in value
    h.feed(_reply(second, 200, body=sdp()))
    assert results == [(200, "X")] and s.call.state is CallState.ANSWERED
    # a CANCEL or BYE after a retry refers to the retried INVITE
    h.core.hangup(s.call.call_id)
    bye = h.take()[-1]
    assert isinstance(bye, Request) and bye.method == "BYE" and bye.cseq > second.cseq


def test_second_challenge_is_auth_failed_and_stale_gets_one_more_try() -> None:
    h = Harness()
    s, results = _start(h)
    h.feed(_reply(_invites(h)[0], 401, WWW))
    h.feed(_reply(_invites(h)[0], 401, WWW.replace('nonce="abc"', 'nonce="def", stale=true')))
    third = _invites(h)[0]
    assert 'nonce="def"' in (third.get("authorization") or "") and third.cseq == 3
    h.feed(_reply(third, 401, WWW))
    assert [m.method for m in h.take()] == ["ACK"]  # type: ignore[union-attr]
    assert results == [(401, "X")]
    assert (s.call.state, s.call.hangup_cause, s.call.hangup_by, s.call.sip_code) == (
        CallState.ENDED, "auth_failed", "callee", 401)


def test_challenge_without_credentials_or_usable_scheme_fails() -> None:
    h = Harness()
    s, _ = _start(h, creds=None)
    h.feed(_reply(_invites(h)[0], 407, WWW.replace("WWW-", "Proxy-")))
    assert (s.call.hangup_cause, s.call.sip_code) == ("auth_failed", 407)
    s2, _ = _start(h)
    h.feed(_reply(_invites(h)[0], 401, 'WWW-Authenticate: Basic realm="x"'))
    assert (s2.call.hangup_cause, s2.call.sip_code) == ("auth_failed", 401)


def test_cancel_after_auth_retry_uses_the_retried_transaction() -> None:
    h = Harness()
    s, results = _start(h)
    h.feed(_reply(_invites(h)[0], 401, WWW))
    second = _invites(h)[0]
    h.feed(_reply(second, 180))
    h.core.hangup(s.call.call_id)  # unanswered outbound: CANCEL, cause "cancelled"
    cancel = h.take()[-1]
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    assert (cancel.cseq, cancel.vias[0].branch) == (second.cseq, second.vias[0].branch)
    assert cancel.get("authorization") is None
    h.feed(_reply(second, 487))
    assert (s.call.hangup_cause, s.call.hangup_by, s.call.sip_code) == ("cancelled", "api", 487)
    assert results == [(487, "X")]


@pytest.mark.parametrize(("status", "cause"), [(486, "busy"), (603, "declined"), (480, "no_answer"),
                                               (404, "not_found"), (500, "rejected")])
def test_final_responses_map_to_causes(status: int, cause: str) -> None:
    h = Harness()
    s, _ = _start(h)
    h.feed(_reply(_invites(h)[0], status))
    assert (s.call.hangup_cause, s.call.hangup_by, s.call.sip_code) == (cause, "callee", status)


def test_183_with_sdp_is_early_media_then_200_without_body_keeps_it() -> None:
    h = Harness()
    s, results = _start(h)
    invite = _invites(h)[0]
    h.feed(_reply(invite, 183, body=sdp(pts="8")))
    assert s.call.state is CallState.RINGING and s.call.media and s.call.media.codec.name == "PCMA"
    assert h.media.changes == [(s.call.call_id, True)]
    assert [e for e, _ in h.events] == ["call.initiated", "call.ringing", "call.early_media"]
    h.feed(_reply(invite, 183, body=sdp(pts="8")))  # a repeated 183: no second event
    h.feed(_reply(invite, 200))
    assert results == [(200, "X")] and s.call.state is CallState.ANSWERED and s.call.media.codec.name == "PCMA"
    assert [e for e, _ in h.events] == ["call.initiated", "call.ringing", "call.early_media", "call.answered"]


def test_hangup_before_any_response_waits_for_a_provisional_then_cancels() -> None:
    """RFC 3261 9.1: no CANCEL before a provisional; a later give-up keeps the API's cause."""
    h = Harness()
    s, _ = _start(h)
    invite = _invites(h)[0]
    h.core.hangup(s.call.call_id)
    assert [m for m in h.take() if isinstance(m, Request) and m.method == "CANCEL"] == []
    h.feed(_reply(invite, 100))
    cancel = h.take()[-1]
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    h.core.cancel_call(s, "timeout", "server", end_now=True)  # e.g. the dial timer fires before the 487
    assert (s.call.hangup_cause, s.call.hangup_by, s.call.sip_code) == ("cancelled", "api", 487)


def test_challenged_bye_is_retried_once_with_credentials() -> None:
    h = Harness()
    s, _ = _start(h)
    h.feed(_reply(_invites(h)[0], 200, body=sdp()))
    h.take()
    h.core.hangup(s.call.call_id)
    bye = h.take()[-1]
    assert isinstance(bye, Request) and bye.method == "BYE" and bye.get("proxy-authorization") is None
    h.feed(_reply(bye, 407, WWW.replace("WWW-", "Proxy-"), to_tag="uas1"))
    retry = h.take()[-1]
    assert isinstance(retry, Request) and retry.method == "BYE" and retry.cseq == bye.cseq + 1
    value = retry.get("proxy-authorization") or ""
    cnonce = value.split('cnonce="')[1].split('"')[0]
    ha1, ha2 = _h("MD5", "alice:mediasrv.test:s3cret"), _h("MD5", f"BYE:{retry.uri_str}")
    assert f'response="{_h("MD5", f"{ha1}:abc:00000001:{cnonce}:auth:{ha2}")}"' in value
    h.feed(_reply(retry, 401, WWW))  # refused again: no third BYE
    assert [m for m in h.take() if isinstance(m, Request) and m.method == "BYE"] == []
