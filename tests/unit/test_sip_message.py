"""SIP parser/serializer against the RFC 4475 / RFC 5118 torture messages, plus fuzzing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediasrv.sip.message import ParseError, Request, Response, parse, parse_name_addr, parse_uri, unescape

DATA = Path(__file__).resolve().parents[1] / "data" / "sip-torture"
RFC4475 = json.loads((DATA / "rfc4475" / "cases.json").read_text())
RFC5118 = json.loads((DATA / "rfc5118" / "cases.json").read_text())


def load(case: dict[str, Any]) -> bytes:
    return (DATA / "rfc4475" / case["file"]).read_bytes()


def _expected(v: Any) -> Any:
    if isinstance(v, str) and "\\x" in v:
        return v.encode().decode("unicode_escape")
    if isinstance(v, list):
        return [_expected(x) for x in v]
    return v


def actual_value(m: Request | Response, key: str) -> Any:  # noqa: C901 - a table of lookups
    """The parsed value a cases.json check refers to; KeyError for checks we do not model."""
    if key == "request_uri":
        return m.uri_str  # type: ignore[union-attr]
    if key == "method":
        return m.method  # type: ignore[union-attr]
    if key == "call_id":
        return m.call_id
    if key == "cseq":
        return f"{m.cseq} {m.cseq_method}"
    if key == "cseq_method":
        return m.cseq_method
    if key == "via_count":
        return len(m.vias)
    if key == "via_branches":
        return [v.branch for v in m.vias]
    if key == "via_branch":
        return m.vias[0].branch
    if key == "via_transports":
        return [v.transport for v in m.vias]
    if key == "max_forwards":
        return int(m.get("max-forwards") or "")
    if key == "content_length":
        return m.content_length
    if key == "content_type":
        return m.content_type
    if key == "from_tag":
        return m.from_tag
    if key == "to_tag":
        return m.to_tag
    if key == "status_code":
        return m.status  # type: ignore[union-attr]
    if key == "reason_phrase":
        return m.reason  # type: ignore[union-attr]
    if key == "request_uri_scheme":
        return m.uri.scheme if m.uri.is_sip else m.uri_str.split(":")[0]  # type: ignore[union-attr]
    if key == "request_uri_user_unescaped":
        return m.uri.user_unescaped  # type: ignore[union-attr]
    if key == "request_uri_host":
        return m.uri.host  # type: ignore[union-attr]
    if key == "to_user_unescaped":
        return m.to.uri.user_unescaped
    if key == "from_user_unescaped":
        return m.from_.uri.user_unescaped
    if key == "contact_user_unescaped":
        return m.contacts()[0].uri.user_unescaped
    if key == "contact_users_unescaped":
        return [c.uri.user_unescaped for c in m.contacts()]
    if key == "contact_count":
        return len(m.contacts())
    if key == "contact_params":
        return m.contacts()[0].params
    if key == "contact_uri_params":
        return {unescape(k).lower(): (unescape(v) if v else v) for k, v in m.contacts()[0].uri.params.items()}
    if key == "from_display_name":
        return m.from_.display
    if key == "to_display_name":
        return m.to.display
    if key == "body":
        return m.body.decode()
    if key == "subject":
        return m.get("subject") or "(empty)"
    if key == "require":
        return [x.strip() for x in (m.get("require") or "").split(",")]
    if key == "proxy_require":
        return [x.strip() for x in (m.get("proxy-require") or "").split(",")]
    if key == "accept":
        return m.get("accept")
    if key == "UnknownHeaderWithUnusualValue":
        return m.get("unknownheaderwithunusualvalue")
    raise KeyError(key)


ACCEPT = [c for c in RFC4475 if c["verdict"] == "accept"]

# cases.json says longreq has 21 Vias, but the message bytes carry 34 Via header fields
# (sip33 ... sip1 plus host.example.com, one per line, in long and short forms): trust the bytes.
CORRECTIONS = {("longreq", "via_count"): 34}
REJECT = [c for c in RFC4475 if c["verdict"] == "reject"]


@pytest.mark.parametrize("case", ACCEPT, ids=[c["name"] for c in ACCEPT])
def test_rfc4475_valid_messages_parse_to_the_right_values(case: dict[str, Any]) -> None:
    m = parse(load(case))
    checked = 0
    for key, want in (case.get("parsed_value_checks") or {}).items():
        try:
            got = actual_value(m, key)
        except KeyError:
            continue
        want = CORRECTIONS.get((case["name"], key), want)
        assert got == _expected(want), f"{case['name']}: {key}"
        checked += 1
    if case["parsed_value_checks"]:
        assert checked, f"no checks applied for {case['name']}"


@pytest.mark.parametrize("case", REJECT, ids=[c["name"] for c in REJECT])
def test_rfc4475_invalid_messages_are_rejected(case: dict[str, Any]) -> None:
    with pytest.raises(ParseError) as err:
        parse(load(case))
    if case["name"] == "badvers":
        assert err.value.status == 505
    else:
        assert err.value.status == 400


def test_baddn_variant_with_final_crlf_is_rejected_for_the_display_name() -> None:
    with pytest.raises(ParseError, match="name-addr"):
        parse((DATA / "rfc4475" / "variants" / "baddn.with-final-CRLF.dat").read_bytes())


def test_rfc4475_specific_verdicts() -> None:
    by_name = {c["name"]: load(c) for c in RFC4475}
    # dblreq: the trailing INVITE bytes are not part of the REGISTER
    m = parse(by_name["dblreq"])
    assert m.method == "REGISTER" and m.body == b""  # type: ignore[union-attr]
    # inv2543: no Content-Length over UDP -> the body is the rest of the datagram; over TCP it is 0
    m = parse(by_name["inv2543"])
    assert m.body.startswith(b"v=0")
    assert parse(by_name["inv2543"], stream=True).body == b""
    # clerr over a stream cannot be framed from what is here either
    with pytest.raises(ParseError):
        parse(by_name["clerr"], stream=True)
    # transports: the response goes to the top Via
    m = parse(by_name["transports"])
    assert (m.vias[0].transport, m.vias[0].host) == ("UDP", "t1.example.com")
    # unkscm / novelsc parse; the UA answers 416
    assert parse(by_name["unkscm"]).uri.scheme == "nobodyknowsthisscheme"  # type: ignore[union-attr]
    assert parse(by_name["novelsc"]).uri.scheme == "soap.beep"  # type: ignore[union-attr]


RFC5118_ACCEPT = [c for c in RFC5118 if c["verdict"] != "reject"]


@pytest.mark.parametrize("case", RFC5118_ACCEPT, ids=[c["name"] for c in RFC5118_ACCEPT])
def test_rfc5118_messages_parse(case: dict[str, Any]) -> None:
    m = parse((DATA / "rfc5118" / case["wire_file"]).read_bytes())
    assert m.vias and m.call_id


def test_rfc5118_ipv6_bad_is_rejected() -> None:
    case = next(c for c in RFC5118 if c["name"] == "ipv6-bad")
    with pytest.raises(ParseError):
        parse((DATA / "rfc5118" / case["wire_file"]).read_bytes())


def test_rfc5118_port_ambiguity() -> None:
    amb = parse((DATA / "rfc5118" / "wire" / "port-ambiguous.sip").read_bytes())
    assert (amb.uri.host, amb.uri.port) == ("[2001:db8::10:5070]", None)  # type: ignore[union-attr]
    unamb = parse((DATA / "rfc5118" / "wire" / "port-unambiguous.sip").read_bytes())
    assert (unamb.uri.host, unamb.uri.port) == ("[2001:db8::10]", 5070)  # type: ignore[union-attr]
    assert unamb.uri.host_plain == "2001:db8::10"  # type: ignore[union-attr]


def test_uri_params_compare_case_insensitively() -> None:
    u = parse_uri("sip:127.0.0.1:5061;Transport=UDP;lr")
    assert u.param("transport") == "udp" and u.param("lr") == "" and u.port == 5061
    na = parse_name_addr('"A \\"B\\"" <sip:a@b;transport=TCP>;TAG=x')
    assert na.display == 'A "B"' and na.tag == "x" and na.uri.param("transport") == "tcp"


def test_short_forms_and_folding() -> None:
    raw = (
        b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKx\r\nf: <sip:c@d>;tag=1\r\n"
        b"t: <sip:a@b>\r\ni: abc\r\nCSeq: 1\r\n  OPTIONS\r\nl: 0\r\n\r\n"
    )
    m = parse(raw)
    assert m.call_id == "abc" and m.cseq == 1 and m.cseq_method == "OPTIONS" and m.vias[0].branch == "z9hG4bKx"


def _meaning(m: Request | Response) -> tuple[Any, ...]:
    start = (m.method, m.uri_str) if isinstance(m, Request) else (m.status, m.reason)
    return (
        start,
        m.call_id,
        m.cseq,
        m.cseq_method,
        [(v.transport, v.host, v.port, v.params) for v in m.vias],
        m.from_tag,
        m.to_tag,
        str(m.from_.uri),
        str(m.to.uri),
        m.body,
        [(k, v) for k, v in m.headers if k != "content-length"],
    )


VALID = [load(c) for c in ACCEPT] + [
    (DATA / "rfc5118" / c["wire_file"]).read_bytes() for c in RFC5118_ACCEPT
]


@pytest.mark.parametrize("raw", VALID)
def test_round_trip_keeps_meaning(raw: bytes) -> None:
    m = parse(raw)
    again = parse(m.serialize())
    assert _meaning(again) == _meaning(m)
    assert parse(again.serialize()).serialize() == again.serialize()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_parse_error(data: bytes) -> None:
    try:
        parse(data)
    except ParseError:
        pass


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    base = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        if not base:
            break
        i = draw(st.integers(0, len(base) - 1))
        if op == "flip":
            base[i] = draw(st.sampled_from(b' \r\n:;,<>"@[]=\x00\xff%\\/0a'))
        elif op == "insert":
            base[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del base[i : i + draw(st.integers(1, 20))]
        elif op == "truncate":
            del base[i:]
        else:
            base[i:i] = base[max(0, i - 30) : i]
    return bytes(base)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.booleans())
def test_mutated_messages_only_raise_parse_error(data: bytes, stream: bool) -> None:
    try:
        m = parse(data, stream=stream)
    except ParseError:
        return
    m.serialize()  # whatever parses must serialize
    try:
        m.contacts()  # parsed lazily: may still fail, but only with ParseError
    except ParseError:
        pass


@pytest.mark.parametrize("second", ["Content-Length: 0", "l: 4", "content-length:0"])
def test_duplicated_content_length_is_refused(second: str) -> None:
    """Two Content-Length headers make the framing ambiguous (request smuggling on TCP): 400, not a guess."""
    msg = (
        "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-cl\r\n"
        "From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: cl-dup\r\nCSeq: 1 OPTIONS\r\n"
        f"Content-Length: 4\r\n{second}\r\n\r\nabcd"
    ).encode()
    with pytest.raises(ParseError):
        parse(msg)
