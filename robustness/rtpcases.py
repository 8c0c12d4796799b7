"""RTP, RTCP and telephone-event datagrams: valid seeds and the malformed shapes published
advisories describe (short headers, CSRC count/extension/padding overflows, RTCP length lies)."""

from __future__ import annotations

import random
import struct

SSRC = 0x5EED1234


def rtp(seq: int, ts: int, pt: int = 0, payload: bytes = b"\xff" * 160, marker: bool = False,
        cc: int = 0, x: bool = False, p: bool = False, ssrc: int = SSRC) -> bytes:
    b0 = 0x80 | (0x20 if p else 0) | (0x10 if x else 0) | (cc & 0x0F)
    return struct.pack("!BBHII", b0, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def dtmf(seq: int, ts: int, event: int = 5, end: bool = False, volume: int = 10, duration: int = 160) -> bytes:
    payload = struct.pack("!BBH", event & 0xFF, (0x80 if end else 0) | (volume & 0x3F), duration & 0xFFFF)
    return rtp(seq, ts, 101, payload, marker=not end)


def rtcp_sr(ssrc: int = SSRC, rc: int = 0, blocks: bytes = b"") -> bytes:
    body = struct.pack("!IIIII", ssrc, 0xE0000000, 0, 1000, 50) + struct.pack("!I", 8000) + blocks
    return struct.pack("!BBH", 0x80 | rc, 200, (len(body) + 4) // 4 - 1) + body


def rtcp_rr(ssrc: int = SSRC, rc: int = 1) -> bytes:
    block = struct.pack("!IIIIII", 0xABCDEF01, 0, 1, 0, 0, 0)
    body = struct.pack("!I", ssrc) + block * rc
    return struct.pack("!BBH", 0x80 | rc, 201, (len(body) + 4) // 4 - 1) + body


def rtcp_sdes(ssrc: int = SSRC, cname: bytes = b"robust@127.0.0.1") -> bytes:
    item = bytes([1, len(cname) & 0xFF]) + cname + b"\x00"
    item += b"\x00" * (-len(item) % 4)
    body = struct.pack("!I", ssrc) + item
    return struct.pack("!BBH", 0x81, 202, (len(body) + 4) // 4 - 1) + body


def rtcp_bye(ssrc: int = SSRC) -> bytes:
    return struct.pack("!BBHI", 0x81, 203, 1, ssrc)


def seeds(i: int) -> list[bytes]:
    seq, ts = 1000 + i, 160 * i
    return [rtp(seq, ts), rtp(seq, ts, pt=8), dtmf(seq, ts), dtmf(seq, ts, end=True),
            rtcp_sr() + rtcp_sdes(), rtcp_rr() + rtcp_sdes(), rtcp_bye()]


def advisory_datagrams() -> list[tuple[str, bytes, str]]:
    """(name, datagram, 'rtp'|'rtcp') for the malformed shapes described in RTP/RTCP advisories."""
    out: list[tuple[str, bytes, str]] = []
    for n in range(12):
        out.append((f"rtp-short-header/{n}B", rtp(1, 160)[:n], "rtp"))
    for cc in (1, 8, 15):
        out.append((f"CVE-2022-21722/rtp-csrc-count-{cc}-beyond-packet", rtp(2, 320, cc=cc, payload=b"\x00" * 4), "rtp"))
    for words in (1, 0x7FFF, 0xFFFF):
        ext = struct.pack("!HH", 0xBEDE, words)
        out.append((f"CVE-2022-21722/rtp-extension-length-{words}", rtp(3, 480, x=True, payload=ext), "rtp"))
    for pad in (0, 13, 200, 255):
        out.append((f"rtp-padding-overflow/{pad}", rtp(4, 640, p=True, payload=b"\x00" * 11 + bytes([pad])), "rtp"))
    out.append(("rtp-version-0", b"\x00" + rtp(5, 800)[1:], "rtp"))
    out.append(("rtp-rtcp-type-on-rtp-port", rtp(6, 960, pt=72, marker=True), "rtp"))
    out.append(("rtp-unknown-pt-96", rtp(7, 1120, pt=96), "rtp"))
    out.append(("rtp-zero-payload", rtp(8, 1280, payload=b""), "rtp"))
    out.append(("rtp-jumbo-payload", rtp(9, 1440, payload=b"\x55" * 60000), "rtp"))
    out.append(("rtp-seq-wrap", rtp(0xFFFF, 0xFFFFFF60) + b"", "rtp"))
    out.append(("RFC4733/telephone-event-short-payload", rtp(10, 1600, pt=101, payload=b"\x05"), "rtp"))
    out.append(("RFC4733/telephone-event-empty", rtp(11, 1760, pt=101, payload=b""), "rtp"))
    out.append(("RFC4733/telephone-event-255", dtmf(12, 1920, event=255), "rtp"))
    out.append(("RFC4733/telephone-event-duration-0-end", dtmf(13, 2080, end=True, duration=0), "rtp"))
    out.append(("RFC4733/telephone-event-duration-65535", dtmf(14, 2240, duration=0xFFFF), "rtp"))
    out.append(("RFC4733/telephone-event-end-storm", b"".join([dtmf(15, 2400, end=True)]), "rtp"))
    for rc in (1, 31):
        short = struct.pack("!BBHI", 0x80 | rc, 201, 1, SSRC)
        out.append((f"CVE-2017-14603/rtcp-rr-report-count-{rc}-short", short, "rtcp"))
    out.append(("CVE-2022-21722/rtcp-length-beyond-datagram", struct.pack("!BBHI", 0x80, 200, 0xFFFF, SSRC), "rtcp"))
    out.append(("CVE-2022-21722/rtcp-length-zero-loop", struct.pack("!BBH", 0x80, 202, 0) * 200, "rtcp"))
    out.append(("CVE-2021-43845/rtcp-xr-block-length-overflow",
                struct.pack("!BBHI", 0x80, 207, 3, SSRC) + struct.pack("!BBH", 4, 0, 0xFFFF) + b"\x00" * 4, "rtcp"))
    out.append(("rtcp-sdes-item-length-overflow", struct.pack("!BBHI", 0x81, 202, 2, SSRC) + b"\x01\xff" + b"ab", "rtcp"))
    out.append(("rtcp-bye-count-31", struct.pack("!BBHI", 0x9F, 203, 1, SSRC), "rtcp"))
    out.append(("rtcp-bye-reason-length-overflow", struct.pack("!BBHI", 0x81, 203, 2, SSRC) + b"\xffab", "rtcp"))
    out.append(("rtcp-app-short", struct.pack("!BBH", 0x80, 204, 5) + b"\x00" * 4, "rtcp"))
    out.append(("rtcp-empty", b"", "rtcp"))
    out.append(("rtcp-3-bytes", b"\x80\xc8\x00", "rtcp"))
    out.append(("rtcp-on-rtp-port", rtcp_sr(), "rtp"))
    out.append(("rtp-on-rtcp-port", rtp(16, 2560), "rtcp"))
    return out


def random_datagram(rnd: random.Random) -> bytes:
    return bytes(rnd.randrange(256) for _ in range(rnd.choice((0, 1, 4, 12, 13, 20, 172, 1500))))
