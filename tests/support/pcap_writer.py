"""A small pcap writer (Ethernet / IPv4 / UDP), for SIPp's ``play_pcap_audio``: RTP made at test time."""

from __future__ import annotations

import struct
from pathlib import Path


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def write_pcap(path: Path, packets: list[tuple[float, bytes]], src: tuple[str, int] = ("10.0.0.1", 6000),
               dst: tuple[str, int] = ("10.0.0.2", 7000)) -> None:
    """*packets*: (seconds from the start, UDP payload).  Link type 1 (Ethernet), microsecond stamps."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    sip = bytes(int(x) for x in src[0].split("."))
    dip = bytes(int(x) for x in dst[0].split("."))
    for i, (t, payload) in enumerate(packets):
        udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0, sip, dip)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        frame = b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00" + ip + udp
        sec, usec = int(t), int(round((t - int(t)) * 1e6))
        out.append(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))
