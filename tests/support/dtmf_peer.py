"""A far end that presses keys: RFC 4733 packets from a UDP socket (its own packing, not the server's).

Used by the DTMF integration tests and bench/dtmf.py with the RtpCapture socket of a call SIPp
placed (the address the SDP named, so the server accepts the packets as the remote's).
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from dataclasses import dataclass, field

DIGITS = "0123456789*#ABCD"


@dataclass
class KeyPresser:
    sock: socket.socket
    dest: tuple[str, int]
    pt: int = 101
    ssrc: int = 0x5EED1234
    seq: int = 1000
    ts: int = 4_000_000_000  # near the wrap on purpose
    loss: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    sent: int = 0
    dropped: int = 0
    first_packet_at: list[float] = field(default_factory=list)  # wall time each press's first packet was sent

    def _send(self, payload: bytes, marker: bool, ts: int, pt: int | None = None, lossy: bool = True) -> None:
        b1 = (pt if pt is not None else self.pt) | (0x80 if marker else 0)
        packet = struct.pack("!BBHII", 0x80, b1, self.seq & 0xFFFF, ts & 0xFFFFFFFF, self.ssrc) + payload
        self.seq += 1
        if lossy and self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return
        self.sock.sendto(packet, self.dest)
        self.sent += 1

    def raw(self, payload: bytes, ts: int | None = None) -> None:
        """Any telephone-event payload (malformed ones too), never lost."""
        self._send(payload, False, self.ts if ts is None else ts, lossy=False)
        self.ts += 160

    async def press(self, digit: str, updates: int = 4, spacing_s: float = 0.007, audio_after: int = 3) -> None:
        """One key press: *updates* growing durations (marker on the first), three end packets,
        then a little audio; the event timestamp stays the press's start."""
        event = DIGITS.index(digit)
        start = self.ts
        for k in range(1, updates + 1):
            if k == 1:
                self.first_packet_at.append(time.time())
            self._send(struct.pack("!BBH", event, 10, k * 160), k == 1, start)
            await asyncio.sleep(spacing_s)
        final = (updates + 1) * 160
        for _ in range(3):
            self._send(struct.pack("!BBH", event, 0x80 | 10, final), False, start)
            await asyncio.sleep(spacing_s)
        self.ts = start + (updates + 3) * 160
        for _ in range(audio_after):
            self._send(b"\xff" * 160, False, self.ts, pt=0)
            self.ts += 160
            await asyncio.sleep(spacing_s)
