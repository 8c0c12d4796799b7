"""N−1 mixing for bridged calls and rooms: every leg hears the sum of the room's other legs.

Sans-I/O: a :class:`MixSource` takes one leg's inbound RTP payloads (from the leg's reader)
and a :class:`Room` answers each member's ``call_audio(n)`` from the clock's tick.

Why this shape:
- One timeline, the clock's.  Sample position ``p`` is sub-slot ``p / 8`` of the media clock
  (1 ms sub-slots, 8 kHz).  A leg ticking in sub-slot ``k`` with ``n`` samples per packet
  hears the other legs' audio for positions ``[8k − n, 8k)``.  Legs tick at different
  phases of the packet time, but each reads a contiguous, non-overlapping window of the
  same timeline, so every listener hears every sample exactly once, whatever its phase
  or its ptime.
- Each source advances its jitter buffer once per *its own* packet time, lazily: the first
  listener that needs samples past what the source has decoded pops one packet's worth
  into the source's short history; every other listener reads the same samples from
  there.  A source is therefore popped 50 times a second (20 ms) whether one leg listens
  (a bridge) or nine (a ten-party room), and never per listener.
- Transcoding falls out of decode → mix → encode: sources are decoded to int16 PCM by the
  jitter buffer whatever their codec, and the listener's tick encodes what it hears with
  its own codec (whatever its Codec object is).  A source whose RTP clock is 16 kHz is decoded at
  16 kHz by its jitter buffer and brought to the 8 kHz timeline by a 2x decimating filter.
- Saturation: two or more sources are summed in int32 and clipped to int16 once; a single
  source (a two-leg bridge) is passed through untouched.
- A leg that leaves is removed from the room's member tuple at once: the next tick of any
  other leg no longer reads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from mediacodecs.codec import PCM_RATE, Codec, Halfband

from ..rtp.jitter import JitterBuffer

CallAudio = Callable[[int], "np.ndarray | None"]

HISTORY = 4096  # samples of decoded audio a source keeps (512 ms): far more than listeners' phases span
KEEP = 2048  # kept when the history is compacted: listeners read at most one packet time behind the newest


class MixSource:
    """One leg's inbound audio placed on the clock's timeline."""

    __slots__ = ("call_id", "jitter", "frame", "pull", "_buf", "_base", "_filled", "_live_since", "_live_until",
                 "pops", "_ratio", "_down")

    def __init__(self, call_id: str, jitter: JitterBuffer, frame: int) -> None:
        self.call_id = call_id
        self.jitter = jitter
        self.frame = frame  # samples per pop (8 kHz): the leg's own packet time
        self._ratio = jitter.rate // PCM_RATE  # RTP ticks (jitter buffer samples) per timeline sample
        if self._ratio not in (1, 2):
            raise ValueError(f"no mixing of a {jitter.rate} Hz stream on the {PCM_RATE} Hz timeline")
        self._down = Halfband(up=False) if self._ratio == 2 else None
        # Reads the leg's socket now (RtpLeg.poll_inbound): called when the buffer is about to run dry,
        # so packets that arrived while the event loop was stalled are not played out as late.
        self.pull: Callable[[], None] | None = None
        self._buf = np.zeros(HISTORY, dtype=np.int16)
        self._base = 0  # timeline position of _buf[0]
        self._filled: int | None = None  # timeline position up to which _buf holds this source's audio
        self._live_since = 0  # the span of real (not silence-filled) audio in the history
        self._live_until = 0
        self.pops = 0

    def push(self, seq: int, ts: int, ssrc: int, payload_type: int, payload: bytes) -> None:
        """The leg's inbound hook: one RTP packet as it arrived."""
        self.jitter.push(seq, ts, payload, time.monotonic(), payload_type, ssrc)

    def read(self, start: int, n: int) -> np.ndarray | None:
        """This source's samples for timeline ``[start, start + n)``, or None if it was silent there.

        The result is a view into the history: valid until the next ``read`` of this source.
        """
        end = start + n
        filled = self._filled
        if filled is None or start > filled or start < self._base:
            # First read, or nobody listened for a while (the only listener was playing a prompt
            # with mix=false, or on hold): this source's timeline starts here, and what piled up
            # in its jitter buffer meanwhile is dropped so the delay is back to the target.
            self.jitter.trim()
            self._base = self._filled = filled = start
            self._live_since = self._live_until = start
        while filled < end:
            filled = self._advance(filled)
        if start >= self._live_until or end <= self._live_since:
            return None
        lo = start - self._base
        return self._buf[lo : lo + n]

    def _advance(self, filled: int) -> int:
        f = self.frame
        pos = filled - self._base
        buf = self._buf
        if pos + f > len(buf):
            keep = min(KEEP, pos)
            buf[:keep] = buf[pos - keep : pos]
            self._base = filled - keep
            pos = keep
        jitter = self.jitter
        if self.pull is not None and jitter.buffered < f * self._ratio:  # would play short: anything still in the kernel?
            self.pull()
        pcm = jitter.pop(f * self._ratio)
        self.pops += 1
        if pcm is not None and self._down is not None:
            pcm = self._down(pcm)
        if pcm is None:
            buf[pos : pos + f] = 0
        else:
            buf[pos : pos + f] = pcm
            if self._live_until < filled:
                self._live_since = filled
            self._live_until = filled + f
        self._filled = filled + f
        return filled + f


class Room:
    """The legs that hear each other; answers each member's ``call_audio(n)`` with the others' mix."""

    def __init__(self, room_id: str, now: Callable[[], int]) -> None:
        self.room_id = room_id
        self._now = now  # the clock's current timeline position, in samples
        self._sources: dict[str, MixSource] = {}
        self._members: tuple[MixSource, ...] = ()

    def __len__(self) -> int:
        return len(self._sources)

    def add(self, source: MixSource) -> None:
        self._sources[source.call_id] = source
        self._members = tuple(self._sources.values())

    def remove(self, call_id: str) -> MixSource | None:
        source = self._sources.pop(call_id, None)
        self._members = tuple(self._sources.values())
        return source

    def listener(self, call_id: str) -> CallAudio:
        """The ``call_audio`` hook for member *call_id*."""
        return lambda n: self.mix_for(call_id, n)

    def mix_for(self, call_id: str, n: int) -> np.ndarray | None:
        """What *call_id* hears for its next *n* samples: the other members, summed with saturation."""
        end = self._now()
        start = end - n
        single: np.ndarray | None = None
        acc: np.ndarray | None = None
        for src in self._members:
            if src.call_id == call_id:
                continue
            frame = src.read(start, n)
            if frame is None:
                continue
            if single is None:
                single = frame
            elif acc is None:
                acc = single.astype(np.int32)
                acc += frame
            else:
                acc += frame
        if acc is not None:
            np.clip(acc, -32768, 32767, out=acc)
            return acc.astype(np.int16)
        return None if single is None else single.copy()


class Mixer:
    """All rooms of one media plane, on one clock timeline."""

    def __init__(self, now: Callable[[], int], target_ms: int = 40, high_water_ms: int = 120,
                 max_target_ms: int = 200) -> None:
        self._now = now
        self.target_ms = target_ms
        self.high_water_ms = high_water_ms
        self.max_target_ms = max_target_ms
        self._rooms: dict[str, Room] = {}
        self._room_of: dict[str, Room] = {}

    def join(self, room_id: str, call_id: str, frame: int, decoders: dict[int, Codec] | None = None,
             clock_rate: int = PCM_RATE) -> tuple[MixSource, CallAudio]:
        """Add *call_id* to *room_id* (leaving any other room): its inbound hook and its call_audio hook.

        *frame*: samples (8 kHz) per packet time; *decoders*: payload type -> codec of what the leg's peer
        may send (default: the static ones); *clock_rate*: the RTP clock of the leg's negotiated codec."""
        self.leave(call_id)
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = Room(room_id, self._now)
        jitter = JitterBuffer(clock_rate, target_ms=self.target_ms, high_water_ms=self.high_water_ms,
                              decoders=decoders, max_target_ms=self.max_target_ms)
        source = MixSource(call_id, jitter, frame)
        room.add(source)
        self._room_of[call_id] = room
        return source, room.listener(call_id)

    def leave(self, call_id: str) -> MixSource | None:
        room = self._room_of.pop(call_id, None)
        if room is None:
            return None
        source = room.remove(call_id)
        if not len(room):
            self._rooms.pop(room.room_id, None)
        return source

    def room(self, room_id: str) -> Room | None:
        return self._rooms.get(room_id)

    def peers_of(self, call_id: str) -> list[str]:
        """The other legs wired to *call_id*'s mix, in joining order (empty: not wired)."""
        room = self._room_of.get(call_id)
        return [c for c in room._sources if c != call_id] if room is not None else []

    def source(self, call_id: str) -> MixSource | None:
        room = self._room_of.get(call_id)
        return room._sources.get(call_id) if room else None
