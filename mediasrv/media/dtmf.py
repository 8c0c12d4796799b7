"""DTMF in: RFC 4733 telephone-events and SIP INFO bodies turned into key presses (sans-I/O).

A key press on the wire (RFC 4733 §2.5) is a run of packets that share one RTP timestamp, the
event's start: the first (often with the marker bit), updates every packet time whose duration
grows, and three end packets (E bit) with the final duration.  Packets get lost, duplicated and
reordered, so :class:`TelephoneEventDetector` reports each press exactly once:

- on its first end packet, with that duration (later copies of the end are retransmissions);
- when a newer event timestamp arrives while it is still open (all its end packets were lost),
  with the longest duration seen;
- after ``timeout_s`` without any packet for it (:meth:`poll`), likewise.

A finished timestamp is remembered (the last 64), so late updates and retransmitted end
packets never report it again.  The first packet of a new timestamp is also reported as a
``start`` (barge-in stops a prompt on it, without waiting for the end).

Bad input is counted and dropped, never raised: payloads that are not a multiple of 4 bytes
(``malformed``), events other than the 16 DTMF keys (``unsupported``), an event code that changes
within one timestamp or updates after its end (``inconsistent``), durations longer than the time
the event could have lasted (``absurd``: more than ``grace_s`` beyond the arrival time of its
first packet), and more than ``max_packets_per_s`` packets or ``max_presses_per_s`` new presses a
second (``flood``, token buckets).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields

DIGITS = "0123456789*#ABCD"  # RFC 4733 §3.2 event codes 0-15
MASK32 = 0xFFFFFFFF


def newer(a: int, b: int) -> bool:
    """Whether RTP timestamp *a* is after *b* (serial-number arithmetic, wraps at 2**32)."""
    return a != b and ((a - b) & MASK32) < 0x80000000


@dataclass(frozen=True, slots=True)
class DtmfSignal:
    """``start`` (the first packet of a press: barge-in) or ``end`` (the press, once, with its duration)."""

    kind: str  # "start" | "end"
    digit: str
    timestamp: int  # the event's RTP timestamp (0 for SIP INFO)
    duration_ms: int = 0
    how: str = ""  # end: "end" (E bit), "next_event" or "timeout" (the end packets were lost)


@dataclass
class DetectorStats:
    packets: int = 0
    presses: int = 0
    duplicates: int = 0  # retransmitted end packets, late updates of a finished press
    malformed: int = 0
    unsupported: int = 0
    inconsistent: int = 0
    absurd: int = 0
    flood: int = 0
    ended_without_end: int = 0  # reported on the next event or a timeout

    def as_dict(self) -> dict[str, int]:
        # not dataclasses.asdict: that deep-copies, ~7 µs a leg, 11 ms per /metrics scrape at 1,500 legs
        return {name: getattr(self, name) for name in _STAT_FIELDS}


_STAT_FIELDS = tuple(f.name for f in fields(DetectorStats))


@dataclass(slots=True)
class _Open:
    ts: int
    event: int
    duration: int
    first_seen: float
    last_seen: float


@dataclass(slots=True)
class _Bucket:
    """A token bucket: ``rate`` a second, at most ``burst`` saved."""

    rate: float
    burst: float
    tokens: float = -1.0
    at: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass
class TelephoneEventDetector:
    """One inbound stream's telephone-events → :class:`DtmfSignal`s.  Times are seconds (monotonic)."""

    clock_rate: int = 8000
    timeout_s: float = 0.5
    grace_s: float = 2.0
    max_packets_per_s: float = 200.0
    max_presses_per_s: float = 20.0
    stats: DetectorStats = field(default_factory=DetectorStats)

    def __post_init__(self) -> None:
        self._open: dict[int, _Open] = {}
        self._done: deque[int] = deque(maxlen=64)
        self._done_set: set[int] = set()
        self._packets = _Bucket(self.max_packets_per_s, self.max_packets_per_s)
        self._presses = _Bucket(self.max_presses_per_s, self.max_presses_per_s)

    @property
    def open_events(self) -> int:
        return len(self._open)

    def feed(self, timestamp: int, payload: bytes, now: float) -> list[DtmfSignal]:
        """One telephone-event RTP packet (its timestamp and payload) → the signals it completes."""
        self.stats.packets += 1
        if not self._packets.take(now):
            self.stats.flood += 1
            return []
        n = len(payload)
        if n < 4 or n % 4:
            self.stats.malformed += 1
            return []
        out: list[DtmfSignal] = []
        ts = timestamp & MASK32
        for i in range(0, min(n, 64), 4):  # §2.5.1.5: packed events follow each other back to back
            event, flags, d_hi, d_lo = payload[i], payload[i + 1], payload[i + 2], payload[i + 3]
            duration = d_hi << 8 | d_lo
            if event >= len(DIGITS):
                self.stats.unsupported += 1
            else:
                self._one(ts, event, bool(flags & 0x80), duration, now, out)
            ts = (ts + duration) & MASK32
        return out

    def poll(self, now: float) -> list[DtmfSignal]:
        """Presses whose packets stopped ``timeout_s`` ago without an end packet."""
        out: list[DtmfSignal] = []
        for o in [o for o in self._open.values() if now - o.last_seen >= self.timeout_s]:
            self._finish(o, "timeout", out)
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`poll` may next have something to report (None: nothing open)."""
        if not self._open:
            return None
        return min(o.last_seen for o in self._open.values()) + self.timeout_s

    def _one(self, ts: int, event: int, end: bool, duration: int, now: float, out: list[DtmfSignal]) -> None:
        if ts in self._done_set:
            self.stats.duplicates += 1  # a retransmitted end, or an update that arrived after the end
            return
        o = self._open.get(ts)
        limit = ((now - o.first_seen) if o is not None else 0.0) * self.clock_rate + self.grace_s * self.clock_rate
        if duration > limit or (end and duration == 0):
            self.stats.absurd += 1
            return
        if o is not None:
            if event != o.event:
                self.stats.inconsistent += 1
                return
            o.last_seen = now
            if duration > o.duration:
                o.duration = duration
            if end:
                o.duration = duration  # the end packets carry the final duration
                self._finish(o, "end", out)
            return
        if not self._presses.take(now):
            self.stats.flood += 1
            return
        for older in [p for p in self._open.values() if newer(ts, p.ts)]:
            self._finish(older, "next_event", out)  # its end packets were all lost
        o = self._open[ts] = _Open(ts, event, duration, now, now)
        out.append(DtmfSignal("start", DIGITS[event], ts))
        if end:
            self._finish(o, "end", out)
        elif len(self._open) > 4:  # bounded, whatever a peer sends
            self._finish(min(self._open.values(), key=lambda p: p.first_seen), "next_event", out)

    def _finish(self, o: _Open, how: str, out: list[DtmfSignal]) -> None:
        del self._open[o.ts]
        if len(self._done) == self._done.maxlen:
            self._done_set.discard(self._done[0])
        self._done.append(o.ts)
        self._done_set.add(o.ts)
        self.stats.presses += 1
        if how != "end":
            self.stats.ended_without_end += 1
        out.append(DtmfSignal("end", DIGITS[o.event], o.ts, round(o.duration * 1000 / self.clock_rate), how))


# -- DTMF out -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OutPacket:
    """One packet a sender wants on the wire now: payload type, marker, RTP timestamp, payload."""

    payload_type: int
    marker: bool
    timestamp: int
    payload: bytes


def event_payload(event: int, end: bool, duration: int, volume: int = 10) -> bytes:
    """RFC 4733 §2.3: event, E|R|volume, duration (16 bits, in timestamp units)."""
    return bytes([event, (0x80 if end else 0) | (volume & 0x3F), (duration >> 8) & 0xFF, duration & 0xFF])


@dataclass(frozen=True, slots=True)
class _Step:
    event: int | None  # None: a packet of silence (audio) between digits
    duration: int = 0
    end: bool = False
    marker: bool = False
    new_event: bool = False  # the first packet of a digit: its event timestamp is the clock now


class DtmfSender:
    """Digits into a call, one packet per tick on the media clock (sans-I/O).

    RFC 4733 (§2.5.1): the event timestamp is the media clock at the digit's first packet and
    stays the same in all its packets; the first carries the marker bit; each update carries the
    duration so far (one packet time more each tick); then three end packets (E bit) with the
    same final duration, one per tick.  Between digits ``gap_ms`` of silence goes out as ordinary
    audio.  The caller sends each packet with the leg's next sequence number and advances its
    timestamp by one packet time, so seq and the media clock stay continuous across the digits.

    In-band (``inband`` given: the digits' tones already encoded in the leg's codec, see
    :func:`mediasrv.content.tones.dtmf_pcm`): that audio, one packet per tick.
    """

    def __init__(self, digits: str, duration_ms: int, gap_ms: int, samples: int, audio_pt: int, silence: bytes,
                 te_pt: int | None = None, inband: bytes | None = None, ticks_per_ms: int = 8) -> None:
        # samples: RTP ticks (= payload bytes) per packet; ticks_per_ms: the audio codec's clock, which
        # telephone-events share (RFC 4733 2.1)
        self.digits = digits
        self.te_pt, self.audio_pt, self.silence = te_pt, audio_pt, silence
        self.method = "rfc4733" if inband is None else "inband"
        self._inband = inband
        self._steps: list[_Step] = []
        self._i = 0
        self._event_ts = 0
        n = samples
        if inband is not None:
            self._steps = [_Step(None, marker=(off == 0)) for off in range(0, len(inband), n)]
            return
        duration = min(max(duration_ms * ticks_per_ms, n), 0xFFFF)
        gap_packets = max(1, -(-gap_ms * ticks_per_ms // n))
        for i, d in enumerate(digits):
            if i:
                self._steps += [_Step(None, marker=(j == 0)) for j in range(gap_packets)]
            event = DIGITS.index(d)
            k = 1
            while k * n < duration:
                self._steps.append(_Step(event, k * n, marker=(k == 1), new_event=(k == 1)))
                k += 1
            for j in range(3):
                first = k == 1 and j == 0
                self._steps.append(_Step(event, duration, end=True, marker=first, new_event=first))

    @property
    def done(self) -> bool:
        return self._i >= len(self._steps)

    @property
    def packets_total(self) -> int:
        return len(self._steps)

    def next(self, ts: int) -> OutPacket | None:
        """The packet for the tick whose media clock is *ts*, or None when everything is sent."""
        if self._i >= len(self._steps):
            return None
        step = self._steps[self._i]
        i = self._i
        self._i += 1
        if step.event is None:
            if self._inband is not None:
                n = len(self.silence)
                chunk = self._inband[i * n : (i + 1) * n]
                if len(chunk) < n:
                    chunk += self.silence[: n - len(chunk)]
                return OutPacket(self.audio_pt, step.marker, ts, chunk)
            return OutPacket(self.audio_pt, step.marker, ts, self.silence)
        if step.new_event:
            self._event_ts = ts
        assert self.te_pt is not None
        return OutPacket(self.te_pt, step.marker, self._event_ts, event_payload(step.event, step.end, step.duration))
