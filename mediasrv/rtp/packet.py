"""RTP fixed header (RFC 3550 §5.1): pack for sending, validate and parse what arrives."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from aiortc.rtp import AnyRtcpPacket, RtcpPacket

HEADER = struct.Struct("!BBHII")
HEADER_SIZE = HEADER.size  # 12
MAX_DATAGRAM = 2048  # what a leg reads per datagram (recvfrom); a longer one arrives truncated


class RtpError(ValueError):
    """A datagram that is not a valid RTP packet."""


@dataclass(frozen=True)
class RtpHeader:
    payload_type: int
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    payload_offset: int
    payload_length: int


def pack_header(payload_type: int, marker: bool, seq: int, timestamp: int, ssrc: int) -> bytes:
    return HEADER.pack(0x80, payload_type | (0x80 if marker else 0), seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)


def parse(data: bytes) -> RtpHeader:
    """Validate version, CSRC count, extension and padding against the datagram's length."""
    n = len(data)
    if n < HEADER_SIZE:
        raise RtpError(f"{n} bytes is shorter than an RTP header")
    b0, b1, seq, ts, ssrc = HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        raise RtpError(f"RTP version {b0 >> 6}")
    offset = HEADER_SIZE + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension
        if n < offset + 4:
            raise RtpError("truncated header extension")
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = n
    if b0 & 0x20:  # padding: last octet counts the padding octets, itself included
        pad = data[-1]
        if pad == 0 or pad > n - offset:
            raise RtpError("bad padding length")
        end -= pad
    if offset > end:
        raise RtpError("header longer than the datagram")
    pt = b1 & 0x7F
    if 72 <= pt <= 76:  # RTCP packet types 200-204 with the marker bit: not RTP
        raise RtpError("RTCP packet on the RTP port")
    return RtpHeader(pt, bool(b1 & 0x80), seq, ts, ssrc, offset, end - offset)


def parse_rtcp(data: bytes) -> list[AnyRtcpPacket]:
    """A compound RTCP datagram (RFC 3550 §6) → its packets, or RtpError.

    aiortc's parser walks the packets by their own length fields (linear) and raises ValueError,
    struct.error or IndexError on the inconsistencies a hostile peer can send; all become RtpError.
    Datagrams longer than a leg ever reads are refused, so its per-packet loops stay bounded.
    """
    if len(data) > MAX_DATAGRAM:
        raise RtpError(f"{len(data)} bytes is longer than an RTCP datagram we read")
    try:
        return RtcpPacket.parse(data)
    except (ValueError, struct.error, IndexError) as exc:
        raise RtpError(f"bad RTCP: {exc}") from exc
