"""SDP offer/answer (RFC 3264) for G.711 + telephone-event."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediasrv.sip.sdp import (
    NoCommonCodec,
    SdpError,
    build_answer,
    build_offer,
    media_from_answer,
    negotiate_offer,
    parse_sdp,
)


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(["v=0", "o=x 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0", *lines]) + "\r\n").encode()


def test_answer_keeps_offer_order_and_telephone_event_pt_and_fmtp() -> None:
    offer = parse_sdp(
        sdp(
            "c=IN IP4 192.0.2.1",
            "m=audio 4000 RTP/AVP 8 0 96",
            "a=rtpmap:96 telephone-event/8000",
            "a=fmtp:96 0-15",
            "a=ptime:30",
        )
    )
    plan = negotiate_offer(offer, ("PCMU", "PCMA"))
    assert plan.media.codec.name == "PCMA" and plan.media.payload_type == 8
    assert plan.media.telephone_event_pt == 96 and plan.media.ptime_ms == 30
    assert plan.media.remote_addr == ("192.0.2.1", 4000)
    ans = build_answer(offer, plan, ("127.0.0.1", 20000), 7, 3).decode()
    assert "m=audio 20000 RTP/AVP 8 0 96" in ans
    assert "a=fmtp:96 0-15" in ans and "a=ptime:30" in ans and "o=mediasrv 7 3 IN IP4 127.0.0.1" in ans


def test_rtpmapless_static_payload_types_and_unsupported_ptime() -> None:
    plan = negotiate_offer(parse_sdp(sdp("c=IN IP4 10.0.0.1", "m=audio 5000 RTP/AVP 18 0", "a=ptime:25")), ("PCMU",))
    assert (plan.media.codec.name, plan.media.payload_type, plan.media.ptime_ms) == ("PCMU", 0, 20)


def test_codec_preference_filters() -> None:
    offer = parse_sdp(sdp("c=IN IP4 10.0.0.1", "m=audio 5000 RTP/AVP 0 8"))
    assert negotiate_offer(offer, ("PCMA",)).media.codec.name == "PCMA"


def test_no_common_codec_and_bad_sdp() -> None:
    with pytest.raises(NoCommonCodec):
        negotiate_offer(parse_sdp(sdp("c=IN IP4 10.0.0.1", "m=audio 5000 RTP/AVP 18", "a=rtpmap:18 G729/8000")), ("PCMU",))
    with pytest.raises(SdpError):
        parse_sdp(b"hello")
    with pytest.raises(SdpError):
        parse_sdp(sdp("c=IN IP4", "m=audio 5000 RTP/AVP 0"))


def test_multiple_m_lines_first_acceptable_audio_used_others_rejected() -> None:
    offer = parse_sdp(
        sdp(
            "m=video 6000 RTP/AVP 31",
            "c=IN IP4 10.0.0.9",
            "m=audio 5000 RTP/AVP 9",
            "c=IN IP4 10.0.0.1",
            "m=audio 5002 RTP/AVP 0",
            "c=IN IP6 2001:db8::2",
        )
    )
    plan = negotiate_offer(offer, ("PCMU", "PCMA"))
    assert plan.index == 2 and plan.media.remote_addr == ("2001:db8::2", 5002)
    ans = build_answer(offer, plan, ("::1", 20000), 1, 1).decode()
    assert "m=video 0 RTP/AVP 31" in ans and "m=audio 0 RTP/AVP 9" in ans and "m=audio 20000 RTP/AVP 0" in ans
    assert "c=IN IP6 ::1" in ans


@pytest.mark.parametrize(
    ("lines", "send", "recv", "answer_dir"),
    [
        (["a=sendonly"], False, True, "a=recvonly"),
        (["a=inactive"], False, False, "a=inactive"),
        (["a=recvonly"], True, False, "a=sendonly"),
        (["a=sendrecv"], True, True, "a=sendrecv"),
    ],
)
def test_direction(lines: list[str], send: bool, recv: bool, answer_dir: str) -> None:
    offer = parse_sdp(sdp("c=IN IP4 10.0.0.1", "m=audio 5000 RTP/AVP 0", *lines))
    plan = negotiate_offer(offer, ("PCMU",))
    assert (plan.media.send_enabled, plan.media.recv_enabled) == (send, recv)
    assert answer_dir in build_answer(offer, plan, ("127.0.0.1", 1), 1, 1).decode()


def test_session_level_direction_and_old_style_hold() -> None:
    offer = parse_sdp(sdp("c=IN IP4 0.0.0.0", "a=sendonly", "m=audio 5000 RTP/AVP 0"))
    media = negotiate_offer(offer, ("PCMU",)).media
    assert media.remote_addr is None and not media.send_enabled


def test_our_offer_and_the_answer_to_it() -> None:
    offer = build_offer(("127.0.0.1", 20000), ("PCMU", "PCMA"), 1, 1).decode()
    assert "m=audio 20000 RTP/AVP 0 8 101" in offer and "a=fmtp:101 0-16" in offer and "a=ptime:20" in offer
    media = media_from_answer(parse_sdp(sdp("c=IN IP4 10.1.1.1", "m=audio 7000 RTP/AVP 8")), ("PCMU", "PCMA"))
    assert (media.codec.name, media.remote_addr) == ("PCMA", ("10.1.1.1", 7000))


# -- validation of what a peer may put in an SDP (issue 14) ---------------------------------------


@pytest.mark.parametrize(
    ("conn", "why"),
    [
        ("c=IN IP4 127.0.0.1\x00evil", "control character"),
        ("c=IN IP4 127.0.0.1\x07", "control character"),
        ("c=IN IP4 media.example.com", "not an IP literal"),
        ("c=IN IP4 ::1", "not IP4"),
        ("c=IN IP6 127.0.0.1", "not IP6"),
        ("c=IN IP6 fe80::1%eth0", "not an IP literal"),
        ("c=IN IP4 127.0.0.01", "not an IP literal"),
        ("c=IN IP4 １２７.0.0.1", "not an IP literal"),
    ],
)
def test_connection_address_must_be_an_ip_literal_of_its_family(conn: str, why: str) -> None:
    with pytest.raises(SdpError, match=why):
        parse_sdp(sdp(conn, "m=audio 4000 RTP/AVP 0"))


@pytest.mark.parametrize("port", ["65536", "99999", "-1", "²", "0" * 4400 + "1", "4000x"])
def test_bad_media_ports_are_sdp_errors(port: str) -> None:
    with pytest.raises(SdpError, match="port"):
        parse_sdp(sdp("c=IN IP4 192.0.2.1", f"m=audio {port} RTP/AVP 0"))


def test_port_limits_and_rejected_streams() -> None:
    plan = negotiate_offer(parse_sdp(sdp("c=IN IP4 192.0.2.1", "m=audio 65535 RTP/AVP 0")), ("PCMU",))
    assert plan.media.remote_addr == ("192.0.2.1", 65535)
    with pytest.raises(NoCommonCodec, match="no usable audio stream"):
        negotiate_offer(parse_sdp(sdp("c=IN IP4 192.0.2.1", "m=audio 0 RTP/AVP 0")), ("PCMU",))
    with pytest.raises(SdpError, match="no c= line"):
        negotiate_offer(parse_sdp(sdp("m=audio 4000 RTP/AVP 0")), ("PCMU",))


def test_codec_lists_never_raise_anything_but_sdp_errors() -> None:
    for fmts in ("18 97 abc ²", "9999999999999", "0" * 5000, "96"):
        offer = parse_sdp(sdp("c=IN IP4 192.0.2.1", f"m=audio 4000 RTP/AVP {fmts}", "a=rtpmap:² PCMU/８０００",
                              "a=ptime:²"))
        with pytest.raises(NoCommonCodec, match="no common audio codec"):
            negotiate_offer(offer, ("PCMU", "PCMA"))


def test_hold_address_and_ipv6_are_kept() -> None:
    plan = negotiate_offer(parse_sdp(sdp("c=IN IP4 0.0.0.0", "m=audio 4000 RTP/AVP 0")), ("PCMU",))
    assert plan.media.remote_addr is None and not plan.media.send_enabled
    plan = negotiate_offer(parse_sdp(sdp("c=IN IP6 2001:DB8:0::1", "m=audio 4000 RTP/AVP 0")), ("PCMU",))
    assert plan.media.remote_addr == ("2001:db8::1", 4000)


def test_line_and_media_limits() -> None:
    with pytest.raises(SdpError, match="lines"):
        parse_sdp(sdp(*["a=x"] * 600))
    with pytest.raises(SdpError, match="m= lines"):
        parse_sdp(sdp(*["m=audio 0 RTP/AVP 0"] * 40))


_GOOD = sdp("c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0 8 101", "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15", "a=ptime:20", "a=sendrecv")


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_GOOD)), st.sampled_from(["flip", "insert", "delete"]),
                          st.binary(min_size=1, max_size=4) | st.sampled_from(
                              [b"\x00", b"\xc2\xb2", b" ", b"/", b"%", b":", b"9" * 12, b"\r\n", b"::"])),
                max_size=4))
def test_mutated_sdp_only_ever_raises_sdp_errors(edits: list[tuple[int, str, bytes]]) -> None:
    body = bytearray(_GOOD)
    for pos, op, data in edits:
        pos = min(pos, len(body))
        if op == "flip" and pos < len(body):
            body[pos] ^= data[0] or 1
        elif op == "insert":
            body[pos:pos] = data
        elif op == "delete":
            del body[pos : pos + len(data)]
    try:
        plan = negotiate_offer(parse_sdp(bytes(body)), ("PCMU", "PCMA"))
    except (SdpError, NoCommonCodec):
        return
    addr = plan.media.remote_addr
    if addr is not None:  # whatever got through is a usable IP literal and port
        assert ipaddress.ip_address(addr[0]) and 0 < addr[1] < 65536 and "%" not in addr[0]
    build_answer(parse_sdp(bytes(body)), plan, ("127.0.0.1", 20000), 1, 2)
