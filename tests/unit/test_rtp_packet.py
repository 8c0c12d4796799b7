"""RTP header pack/parse: round trip and hostile datagrams."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediasrv.rtp.packet import RtpError, pack_header, parse


@given(st.integers(0, 127).filter(lambda p: not 72 <= p <= 76), st.booleans(), st.integers(0, 0xFFFF),
       st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.binary(max_size=200))
def test_round_trip(pt, marker, seq, ts, ssrc, payload):
    h = parse(pack_header(pt, marker, seq, ts, ssrc) + payload)
    assert (h.payload_type, h.marker, h.seq, h.timestamp, h.ssrc) == (pt, marker, seq, ts, ssrc)
    assert h.payload_length == len(payload)


@given(st.binary(max_size=100))
def test_random_bytes_never_raise_anything_else(data):
    try:
        parse(data)
    except RtpError:
        pass


@pytest.mark.parametrize("data", [
    b"", b"\x80\x00", bytes([0x40]) + bytes(11),  # short, version 1
    bytes([0x8F]) + bytes(11),  # 15 CSRCs claimed, none present
    bytes([0x90]) + bytes(11) + struct.pack("!HH", 0, 50),  # extension longer than the packet
    bytes([0xA0]) + bytes(11) + b"\x00",  # padding count 0
    bytes([0x80, 0xC8]) + bytes(10),  # an RTCP SR on the RTP port
])
def test_malformed_rejected(data):
    with pytest.raises(RtpError):
        parse(data)


def test_padding_and_csrc_accounted():
    pkt = bytes([0xA1, 0x00]) + bytes(10) + bytes(4) + b"abc" + b"\x00\x02"
    h = parse(pkt)
    assert h.payload_offset == 16 and h.payload_length == 3
