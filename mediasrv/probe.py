"""An independent RTP receiver: captures what a caller would hear and measures its pacing.

Used by ``mediasrv demo``, the integration tests and the benchmarks as the far end of a
call.  It shares no code with the sending side (it parses RTP headers itself) so that a
bug in our packetizer cannot hide itself in the check.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .calls import Call


@dataclass
class CapturedPacket:
    arrival: float  # time.monotonic() when read
    seq: int
    ts: int
    ssrc: int
    marker: bool
    pt: int
    payload: bytes


@dataclass
class RtpCapture(asyncio.DatagramProtocol):
    """Collects every RTP packet arriving on one UDP socket."""

    packets: list[CapturedPacket] = field(default_factory=list)
    malformed: int = 0
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now = time.monotonic()
        if len(data) < 12 or data[0] >> 6 != 2:
            self.malformed += 1
            return
        b1 = data[1]
        seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
        cc = data[0] & 0x0F
        self.packets.append(CapturedPacket(now, seq, ts, ssrc, bool(b1 & 0x80), b1 & 0x7F, data[12 + 4 * cc :]))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def payload(self, ssrc: int | None = None) -> bytes:
        return b"".join(p.payload for p in self.packets if ssrc is None or p.ssrc == ssrc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_capture(host: str = "127.0.0.1", port: int = 0) -> RtpCapture:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    _, protocol = await loop.create_datagram_endpoint(RtpCapture, local_addr=(host, port), family=family)
    return protocol


@dataclass
class StreamReport:
    packets: int
    ssrcs: int
    seq_errors: int  # gaps or reorders in the sequence numbers
    ts_errors: int  # timestamp steps that disagree with the sequence step
    lost: int  # packets missing judged by sequence numbers
    markers: int
    p50_ms: float  # inter-arrival deviation from the packet time
    p99_ms: float
    max_ms: float

    def line(self) -> str:
        return (
            f"packets={self.packets} lost={self.lost} ssrcs={self.ssrcs} seq_errors={self.seq_errors} "
            f"ts_errors={self.ts_errors} markers={self.markers} inter-arrival deviation "
            f"p50={self.p50_ms:.3f}ms p99={self.p99_ms:.3f}ms max={self.max_ms:.3f}ms"
        )


def analyse(packets: list[CapturedPacket], ptime_ms: float = 20.0, samples_per_packet: int = 160) -> StreamReport:
    """Continuity and pacing of one stream, as a receiver sees it."""
    seq_errors = ts_errors = lost = 0
    for a, b in zip(packets, packets[1:], strict=False):
        step = (b.seq - a.seq) & 0xFFFF
        if step != 1:
            seq_errors += 1
            if 1 < step < 0x8000:
                lost += step - 1
        elif (b.ts - a.ts) & 0xFFFFFFFF != samples_per_packet:
            ts_errors += 1
    gaps = np.diff(np.array([p.arrival for p in packets])) * 1000.0 if len(packets) > 1 else np.zeros(1)
    dev = np.abs(gaps - ptime_ms)
    return StreamReport(
        packets=len(packets),
        ssrcs=len({p.ssrc for p in packets}),
        seq_errors=seq_errors,
        ts_errors=ts_errors,
        lost=lost,
        markers=sum(p.marker for p in packets),
        p50_ms=float(np.percentile(dev, 50)),
        p99_ms=float(np.percentile(dev, 99)),
        max_ms=float(dev.max()),
    )


class CaptureMedia:
    """A MediaBackend for a UAC that only listens: each call gets its own RtpCapture."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.captures: dict[str, RtpCapture] = {}
        self._pending: dict[str, socket.socket] = {}

    def allocate(self, call: Call) -> tuple[str, int]:
        # Bind synchronously (the UA asks before it builds its SDP); the protocol is attached
        # right after on the running loop.
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.host, 0))
        capture = RtpCapture()
        loop = asyncio.get_running_loop()
        loop.create_task(loop.create_datagram_endpoint(lambda: capture, sock=sock))
        self.captures[call.call_id] = capture
        return (self.host, sock.getsockname()[1])

    def media_changed(self, call: Call) -> None:
        return None

    def release(self, call: Call) -> None:
        return None  # keep the capture for inspection; close_all() ends it

    def close_all(self) -> None:
        for capture in self.captures.values():
            capture.close()
