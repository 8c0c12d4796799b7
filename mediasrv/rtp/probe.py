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

import numpy as np

from ..calls.registry import Call


@dataclass
class CapturedPacket:
    arrival: float  # kernel receive time (wall clock seconds)
    seq: int
    ts: int
    ssrc: int
    marker: bool
    pt: int
    payload: bytes


SO_TIMESTAMPNS = 35  # Linux: the kernel stamps each datagram when it arrives (struct timespec)
_TIMESPEC = struct.Struct("@qq")


@dataclass
class RtpCapture:
    """Collects every RTP packet arriving on one UDP socket, stamped with the kernel's arrival time.

    Kernel timestamps (SO_TIMESTAMPNS) make the measured pacing independent of how busy this
    process's event loop is, which matters when the receiver shares a loop with the server.
    """

    sock: socket.socket
    packets: list[CapturedPacket] = field(default_factory=list)
    malformed: int = 0
    kernel_timestamps: bool = False
    _loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.sock.setblocking(False)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.kernel_timestamps = True
        except OSError:
            self.kernel_timestamps = False
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                data, ancdata, _, _ = self.sock.recvmsg(4096, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            arrival = time.time()
            for level, kind, value in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = _TIMESPEC.unpack_from(value)
                    arrival = sec + nsec * 1e-9
            self._record(data, arrival)

    def _record(self, data: bytes, arrival: float) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            self.malformed += 1
            return
        b1 = data[1]
        seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
        cc = data[0] & 0x0F
        self.packets.append(CapturedPacket(arrival, seq, ts, ssrc, bool(b1 & 0x80), b1 & 0x7F, data[12 + 4 * cc :]))

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def payload(self, ssrc: int | None = None) -> bytes:
        return b"".join(p.payload for p in self.packets if ssrc is None or p.ssrc == ssrc)

    def close(self) -> None:
        if self._loop is not None and self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


def bind_capture(host: str = "127.0.0.1", port: int = 0) -> RtpCapture:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    capture = RtpCapture(sock)
    capture.attach(asyncio.get_running_loop())
    return capture


async def open_capture(host: str = "127.0.0.1", port: int = 0) -> RtpCapture:
    return bind_capture(host, port)


def bind_capture_with_rtcp(host: str = "127.0.0.1", attempts: int = 50) -> tuple[RtpCapture, socket.socket]:
    """A capture plus a socket already bound on its port + 1 (the RTCP port a peer will use).

    Binding port + 1 after the fact races with other processes; this keeps trying fresh
    ephemeral ports until both are ours.
    """
    for _ in range(attempts):
        capture = bind_capture(host, 0)
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtcp.bind((host, capture.port + 1))
        except OSError:
            rtcp.close()
            capture.close()
            continue
        rtcp.setblocking(False)
        return capture, rtcp
    raise OSError(f"no free RTP/RTCP port pair on {host} after {attempts} attempts")


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

    def allocate(self, call: Call) -> tuple[str, int]:
        capture = bind_capture(self.host)
        self.captures[call.call_id] = capture
        return (self.host, capture.port)

    def media_changed(self, call: Call) -> None:
        return None

    def release(self, call: Call) -> None:
        return None  # keep the capture for inspection; close_all() ends it

    def dtmf_info(self, call: Call, digit: str, duration_ms: int) -> bool:
        return False  # a listening UAC plays nothing: no key press is ever sent to it

    def close_all(self) -> None:
        for capture in self.captures.values():
            capture.close()
