"""Playbacks and the per-leg player: FIFO, multi-source, loop, length cap, overlays, controls.

The clock asks for exactly one packet's worth of audio per packet time.  The common case (one
main playback at 0 dB, nothing else on the leg) is a slice of bytes encoded once in advance,
cut by the leg itself: the player keeps ``fast`` pointing at that playback (or None), hands its
cursor (data, offset, ``end`` where the slice stops being enough, played, last seq/ts) to the
leg's packet state (rtp/fastpath.py PacketState) and takes it back when anything changes; the
playback's position properties read whichever side holds it.  Every other case (overlays, volume, pause, bridged call audio, source boundaries, loops, the length
cap, streaming underruns) goes through :meth:`Player.next_payload`, which composes int16 PCM
with numpy and encodes once.

Semantics, chosen where the vendors differ:

- Sources of one playback play in order; each source (and each loop iteration) starts on a
  packet boundary, the last packet of a source is padded with silence.  A source that cannot be
  loaded ends the playback ``failed`` when it is reached, with ``failed_source_index`` (as ACS).
- ``loop`` repeats the whole source list.  ``length_s`` caps the audio played (ms_played): the
  playback then ends ``completed`` with reason ``"length"``.  Seek/restart do not reset the cap.
- Overlays are mixed over the main playback.  Starting one needs a main playback on the leg
  (playing, paused or about to play); after that an overlay is independent: it ends on its own
  (completed, stopped by id or by a stop with ``overlay=True``, hangup), not when the main ends.
- ``stop`` current|all acts on the main queue; with ``overlay=True`` it stops the overlays only.
  A stop names a playback or applies to what is current at that moment; stopping an ended
  playback is a no-op reported as ``False``.
- ``mix=False``: while the playback is active (playing or paused) the leg hears no call audio;
  ``duck_db``: the call audio is lowered by that much instead.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mediacodecs.codec import Codec, FrameEncoder

from ..content.errors import SourceError
from ..content.source import Media
from ..content.spec import SourceSpec
from ..rtp.fastpath import PacketState

FINAL_STATES = frozenset({"completed", "stopped", "failed", "call_hangup"})
MAX_LOOP = 100
VOLUME_RANGE_DB = (-60.0, 20.0)
MAX_DUCK_DB = 90.0
NO_CAP = 1 << 62
BARGE_KEYS = "0123456789*#ABCD"
MAX_OFFSET_MS = 24 * 3600 * 1000
DEFAULT_PER_MS = 8  # payload bytes per ms of G.711 and G.722 (Codec.bytes_per_ms): a playback's unit until a leg says


_WIDE_OFFSET = 65536
_WIDE_TABLES: dict[str, np.ndarray] = {}  # codec name -> its table indexed by a saturated sum (made on first use)


def _wide(table: np.ndarray) -> np.ndarray:
    """The codec's table indexed by (sum + 65536) for sums of two int16 frames, saturation built in."""
    values = np.clip(np.arange(-_WIDE_OFFSET, _WIDE_OFFSET + 1), -32768, 32767).astype(np.int16)
    return table[values.view(np.uint16)]


def _wide_table(codec: Codec) -> np.ndarray | None:
    """The sum-indexed table of a table codec (G.711), None for any other."""
    if codec.encode_table is None:
        return None
    wide = _WIDE_TABLES.get(codec.name)
    if wide is None:
        wide = _WIDE_TABLES[codec.name] = _wide(codec.encode_table)
    return wide


def encode_frame(codec: Codec, pcm: np.ndarray) -> bytes:
    """Table-encode (G.711) one frame: the codec's table indexed by the samples (``take`` is the cheap path)."""
    assert codec.encode_table is not None
    if pcm.dtype != np.int16 or not pcm.flags.c_contiguous:
        pcm = np.ascontiguousarray(pcm, np.int16)
    return codec.encode_table.take(pcm.view(np.uint16)).tobytes()


class PlayError(ValueError):
    """A play or control command that cannot be carried out as asked (the API's 422)."""

    def __init__(self, reason: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


class PlaybackStateError(PlayError):
    """The playback is in the wrong state for the command (ended, not started): the API's 409."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message, status=409)


@dataclass
class PlayRequest:
    """One play command, dialect-neutral.  ``url``/``media`` are shorthands for a single source."""

    url: str | None = None
    media: str | None = None
    loop: int | None = 1  # None = forever
    sources: list[SourceSpec] = field(default_factory=list)  # played in order, as one playback
    overlay: bool = False  # mix over the current main playback instead of queueing (Telnyx overlay)
    stop: str | None = None  # "current" | "all": stop these on the target legs first
    target: str | list[str] = "self"  # "self" | "opposite" | "both" | "room" | [call_id, ...]
    length_s: float | None = None  # cap on how long the playback lasts (Plivo length)
    mix: bool = True  # False: the target legs hear only the playback while it plays (Plivo mix=false)
    duck_db: float | None = None  # lower (not remove) the call audio by this much while it plays
    volume_db: float = 0.0
    command_id: str | None = None  # the caller's id for this command, echoed on the playbacks
    barge_in: str | None = None  # "any" or the DTMF keys that stop this playback when pressed
    barge_in_stops: str = "current"  # a barge-in stops this one ("current": the queue moves on) or "all"
    offset_ms: int = 0  # start this far into the source list (the first iteration only, as ARI's offsetms)

    def __post_init__(self) -> None:
        if not self.sources and (self.url is not None or self.media is not None):
            self.sources = [SourceSpec(url=self.url, media=self.media)]

    @property
    def source(self) -> str:
        if len(self.sources) == 1:
            return self.sources[0].describe()
        return ", ".join(s.describe() for s in self.sources)

    def validate(self) -> None:
        """Raise :class:`PlayError` for values no leg could play (checked before anything changes)."""
        if not self.sources:
            raise PlayError("no_source", "a play command needs at least one source")
        if self.loop is not None and (isinstance(self.loop, bool) or not 1 <= self.loop <= MAX_LOOP):
            raise PlayError("out_of_range", f"loop must be between 1 and {MAX_LOOP} or infinity, got {self.loop}")
        if self.length_s is not None and not self.length_s > 0:
            raise PlayError("out_of_range", f"length_s must be positive, got {self.length_s}")
        if self.stop not in (None, "current", "all"):
            raise PlayError("invalid_stop", f"stop must be 'current' or 'all', got {self.stop!r}")
        lo, hi = VOLUME_RANGE_DB
        if not lo <= self.volume_db <= hi:
            raise PlayError("out_of_range", f"volume_db must be between {lo:g} and {hi:g}, got {self.volume_db}")
        if self.duck_db is not None and not 0 <= self.duck_db <= MAX_DUCK_DB:
            raise PlayError("out_of_range", f"duck_db must be between 0 and {MAX_DUCK_DB:g}, got {self.duck_db}")
        if self.barge_in is not None and (self.barge_in != "any" and (
                not self.barge_in or any(c not in BARGE_KEYS for c in self.barge_in))):
            raise PlayError("invalid_field", f"barge_in must be 'any' or DTMF keys (0-9, *, #, A-D), got {self.barge_in!r}")
        if self.barge_in_stops not in ("current", "all"):
            raise PlayError("invalid_field", f"barge_in_stops must be 'current' or 'all', got {self.barge_in_stops!r}")
        if self.barge_in is not None and self.overlay:
            raise PlayError("invalid_field", "barge_in applies to main playbacks, not overlays")
        if not 0 <= self.offset_ms <= MAX_OFFSET_MS:
            raise PlayError("out_of_range", f"offset_ms must be between 0 and {MAX_OFFSET_MS}, got {self.offset_ms}")


def db_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


@dataclass(slots=True, eq=False)
class Playback:
    id: str
    call_id: str
    source: str
    loop: int | None
    state: str = "queued"  # queued | playing | completed | stopped | failed | call_hangup
    reason: str | None = None
    message: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    stopped_by: str | None = None
    command_id: str | None = None
    target: str | list[str] = "self"
    overlay: bool = False
    mix: bool = True
    duck_db: float | None = None
    volume_db: float = 0.0
    length_s: float | None = None
    paused: bool = False
    failed_source_index: int | None = None
    underruns: int = 0
    barge_in: str | None = None
    barge_in_stops: str = "current"
    digit: str | None = None  # the DTMF key that stopped it (stopped_by "dtmf")
    start_offset: int = field(default=0, repr=False)  # samples to skip when it starts (offset_ms), then 0
    # "samples" here (samples_played, offset, end, cap, start_offset) are payload bytes of the leg's
    # codec, per_ms of them per millisecond (Codec.bytes_per_ms: 8 for G.711 and G.722)
    per_ms: int = field(default=DEFAULT_PER_MS, repr=False)
    # playing position (not part of the resource)
    futures: list[asyncio.Future[Media]] = field(default_factory=list, repr=False)
    index: int = field(default=0, repr=False)  # which source is playing
    media: Media | None = field(default=None, repr=False)  # that source's media, once resolved
    loops_done: int = field(default=0, repr=False)
    cap: int = field(default=NO_CAP, repr=False)  # samples_played limit (length_s)
    gain: float = field(default=1.0, repr=False)
    # run once when it ends, before playback.ended is raised: the media plane gives back its load claims here
    on_finished: Callable[[], None] | None = field(default=None, repr=False)
    # The cursor: kept here, or in the leg's PacketState (``_on``) while the player has handed this
    # playback's slice to the leg (Player._refresh); the properties below read whichever holds it.
    _data: bytes | bytearray = field(default=b"", repr=False)  # the media encoded for the leg's codec
    _offset: int = field(default=0, repr=False)  # next byte (= sample) of ``data`` to send
    _end: int = field(default=0, repr=False)  # the leg may slice while offset + n < end
    _samples_played: int = field(default=0, repr=False)
    _last_seq: int | None = field(default=None, repr=False)
    _last_ts: int | None = field(default=None, repr=False)
    _on: PacketState | None = field(default=None, repr=False)

    @property
    def data(self) -> bytes | bytearray:
        on = self._on
        return self._data if on is None or on.slice_data is None else on.slice_data

    @data.setter
    def data(self, value: bytes | bytearray) -> None:
        if self._on is None:
            self._data = value
        else:
            self._on.slice_data = value

    @property
    def offset(self) -> int:
        return self._offset if self._on is None else self._on.slice_offset

    @offset.setter
    def offset(self, value: int) -> None:
        if self._on is None:
            self._offset = value
        else:
            self._on.slice_offset = value

    @property
    def end(self) -> int:
        return self._end if self._on is None else self._on.slice_end

    @end.setter
    def end(self, value: int) -> None:
        if self._on is None:
            self._end = value
        else:
            self._on.slice_end = value

    @property
    def samples_played(self) -> int:
        return self._samples_played if self._on is None else self._on.slice_played

    @samples_played.setter
    def samples_played(self, value: int) -> None:
        if self._on is None:
            self._samples_played = value
        else:
            self._on.slice_played = value

    @property
    def last_seq(self) -> int | None:
        return self._last_seq if self._on is None else self._on.slice_last_seq

    @last_seq.setter
    def last_seq(self, value: int | None) -> None:
        if self._on is None:
            self._last_seq = value
        else:
            self._on.slice_last_seq = value

    @property
    def last_ts(self) -> int | None:
        return self._last_ts if self._on is None else self._on.slice_last_ts

    @last_ts.setter
    def last_ts(self, value: int | None) -> None:
        if self._on is None:
            self._last_ts = value
        else:
            self._on.slice_last_ts = value

    def hand_to(self, out: PacketState) -> None:
        """Move the cursor into the leg's packet state: the leg slices ``data`` until ``end``."""
        out.slice_data, out.slice_offset, out.slice_end = self._data, self._offset, self._end
        out.slice_played, out.slice_last_seq, out.slice_last_ts = self._samples_played, self._last_seq, self._last_ts
        self._on = out

    def take_back(self) -> None:
        """Move the cursor back from the leg (which then has no slice)."""
        out = self._on
        if out is None:
            return
        self._on = None
        self._data = out.slice_data if out.slice_data is not None else b""
        self._offset, self._end, self._samples_played = out.slice_offset, out.slice_end, out.slice_played
        self._last_seq, self._last_ts = out.slice_last_seq, out.slice_last_ts
        out.slice_data, out.slice_offset, out.slice_end = None, 0, 0

    @property
    def ended(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def ms_played(self) -> int:
        return self.samples_played // self.per_ms

    @property
    def media_future(self) -> asyncio.Future[Media] | None:
        return self.futures[0] if self.futures else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "call_id": self.call_id,
            "command_id": self.command_id,
            "target": self.target,
            "source": self.source,
            "loop": "infinity" if self.loop is None else self.loop,
            "loops_done": self.loops_done,  # passes over the whole source list completed so far
            "overlay": self.overlay,
            "state": self.state,
            "paused": self.paused,
            "reason": self.reason,
            "message": self.message,
            "failed_source_index": self.failed_source_index,
            "ms_played": self.ms_played,
            # progress in the source playing now (of a list: source_index); its length once fully decoded
            "source_index": self.index,
            "position_ms": self.offset // self.per_ms if self.media is not None else 0,
            "source_duration_ms": self.media.duration_ms if self.media is not None and self.media.complete else None,
            "length_s": self.length_s,
            "mix": self.mix,
            "duck_db": self.duck_db,
            "volume_db": self.volume_db,
            "underruns": self.underruns,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "last_seq": self.last_seq,
            "last_ts": self.last_ts,
            "stopped_by": self.stopped_by,
            "digit": self.digit,
            "barge_in": self.barge_in,
            "barge_in_stops": self.barge_in_stops,
        }

    # -- position --------------------------------------------------------
    def refresh_end(self) -> None:
        """Where the fast path must hand over: the source's end or the length cap, whichever first."""
        if self.media is None:
            self.end = 0
        else:
            self.end = min(len(self.data), self.offset + self.cap - self.samples_played)


def new_playback(
    call_id: str,
    request: PlayRequest,
    media_future: asyncio.Future[Media] | Sequence[asyncio.Future[Media]],
    command_id: str | None = None,
    node_id: str = "",
    per_ms: int = DEFAULT_PER_MS,
) -> Playback:
    """A playback whose id names its node (``p3:<node>:<random>``), like call ids, when *node_id* is given.

    *per_ms*: the leg's codec's payload bytes per ms (``Codec.bytes_per_ms``), the unit of its positions."""
    futures = [media_future] if isinstance(media_future, asyncio.Future) else list(media_future)
    return Playback(
        id=f"p3:{node_id}:{uuid.uuid4().hex}" if node_id else uuid.uuid4().hex, call_id=call_id, source=request.source, loop=request.loop, futures=futures,
        command_id=command_id if command_id is not None else request.command_id, target=request.target,
        overlay=request.overlay, mix=request.mix, duck_db=request.duck_db, volume_db=request.volume_db,
        length_s=request.length_s, gain=db_gain(request.volume_db),
        cap=NO_CAP if request.length_s is None else max(1, round(request.length_s * 1000 * per_ms)),
        barge_in=request.barge_in, barge_in_stops=request.barge_in_stops, start_offset=request.offset_ms * per_ms,
        per_ms=per_ms,
    )


PlaybackListener = Callable[[str, Playback], None]  # ("playback.started" | "playback.ended" | ..., playback)
Span = tuple[Media, bytes | bytearray, int, int]  # (media, encoded data, start, count): the samples a packet took


class Player:
    """The main FIFO and the overlays of one leg; owned by the media plane, driven by the clock."""

    __slots__ = ("codec", "current", "queue", "overlays", "fast", "busy", "_bridged", "_notify", "_held",
                 "_frame_enc", "out")

    def __init__(self, codec: Codec, notify: PlaybackListener) -> None:
        self.codec = codec  # the leg's codec (mediacodecs.codec): encoding, silence, bytes per ms
        self._frame_enc: FrameEncoder | None = None  # per-packet encoder of a stateful codec (G.722), made on use
        self.current: Playback | None = None
        self.queue: deque[Playback] = deque()
        self.overlays: list[Playback] = []
        self.fast: Playback | None = None  # the playback LegDriver.tick may slice directly, or None
        self.busy = False  # anything for next_payload to do: a playback current, queued or overlaid, or bridged
        self._bridged = False  # the leg hears call audio (LegDriver.call_audio is set)
        self._held = False  # the leg's ticks are taken by something else (DTMF being sent): nothing advances
        self._notify = notify
        self.out: PacketState | None = None  # the leg's packet state: ``fast``'s slice is handed to it

    def attach(self, out: PacketState) -> None:
        """Hand ``fast``'s slices, and whether there is work for Python (``busy``), to the leg *out*."""
        if self.fast is not None:
            self.fast.take_back()
            self.fast = None
        self.out = out
        self._refresh()

    @property
    def bridged(self) -> bool:
        return self._bridged

    @bridged.setter
    def bridged(self, value: bool) -> None:
        self._bridged = value
        self._refresh()

    @property
    def held(self) -> bool:
        return self._held

    @held.setter
    def held(self, value: bool) -> None:
        self._held = value
        self._refresh()

    def set_codec(self, codec: Codec) -> None:
        """The leg's codec changed (answer, re-INVITE): what plays is re-sliced from the new encoding, at
        the same place in time (positions are rescaled when the new codec has a different byte rate)."""
        self.codec, self._frame_enc = codec, None
        for pb in (self.current, *self.queue, *self.overlays):
            if pb is None:
                continue
            if pb.per_ms != codec.bytes_per_ms:
                self._rescale(pb, codec.bytes_per_ms)
            if pb.media is not None:
                pb.data = self._encoded(pb.media)
                pb.refresh_end()

    @staticmethod
    def _rescale(pb: Playback, per_ms: int) -> None:
        def scale(x: int) -> int:
            return x * per_ms // pb.per_ms

        pb.offset, pb.samples_played, pb.start_offset = scale(pb.offset), scale(pb.samples_played), scale(pb.start_offset)
        if pb.cap != NO_CAP:
            pb.cap = scale(pb.cap)
        pb.per_ms = per_ms

    def _refresh(self) -> None:
        """Recompute what LegDriver.tick reads: ``fast`` (slice directly) and ``busy`` (call next_payload).

        Called after every change of current, queue, overlays, pause, volume or bridging.  With a
        leg attached, ``fast``'s cursor is handed to the leg's packet state (and taken back when it
        stops being ``fast``), and the leg's ``busy`` follows the player's.
        """
        cur = self.current
        fast = (cur if cur is not None and not cur.paused and not self.overlays and cur.gain == 1.0
                and not self._bridged and not self._held else None)
        self.busy = cur is not None or bool(self.queue) or bool(self.overlays) or self._bridged or self._held
        out = self.out
        if out is not None:
            if fast is not self.fast:
                if self.fast is not None:
                    self.fast.take_back()
                if fast is not None:
                    fast.hand_to(out)
            out.busy = self.busy
        self.fast = fast

    # -- commands --------------------------------------------------------
    def enqueue(self, playback: Playback) -> None:
        """Queue a main playback, or add an overlay; a ready one starts now (on the wire next tick)."""
        if playback.per_ms != self.codec.bytes_per_ms:  # made for another byte rate than this leg's codec
            self._rescale(playback, self.codec.bytes_per_ms)
        if playback.overlay:
            self.overlays.append(playback)
            self._try_start_overlay(playback)
            self._refresh()
            return
        self.queue.append(playback)
        if self.current is None:
            self._start_next()
        self._refresh()

    def has_main(self) -> bool:
        """Whether an overlay may start: a main playback is playing, paused or about to play."""
        return self.current is not None or bool(self.queue)

    def barge_in(self, digit: str) -> list[Playback]:
        """A DTMF key arrived: stop the main playback if it names that key (and, by its rule, the queue)."""
        pb = self.current if self.current is not None else (self.queue[0] if self.queue else None)
        if pb is None or pb.barge_in is None or (pb.barge_in != "any" and digit not in pb.barge_in):
            return []
        if pb.barge_in_stops == "all":
            return self.stop("all", "dtmf", digit=digit)
        return [pb] if self.stop_one(pb, "dtmf", digit=digit) else []

    def stop_one(self, pb: Playback, by: str, digit: str | None = None) -> bool:
        if pb.ended:
            return False
        if pb is not self.current:
            if pb in self.overlays:
                self.overlays.remove(pb)
            else:
                try:
                    self.queue.remove(pb)
                except ValueError:
                    return False
        was_current = pb is self.current
        self._finish(pb, "stopped", by, digit)
        if was_current:
            self._start_next()  # the next one is current now (on the wire at the next tick)
            self._refresh()
        return True

    def stop(self, which: str, by: str, overlay: bool = False, digit: str | None = None) -> list[Playback]:
        """Stop what is current *now*: ``current`` (the queue moves on), ``all``, or the overlays."""
        stopped: list[Playback] = []
        if overlay:
            while self.overlays:
                pb = self.overlays.pop(0)
                self._finish(pb, "stopped", by)
                stopped.append(pb)
            return stopped
        if self.current is not None:
            stopped.append(self.current)
            self._finish(self.current, "stopped", by, digit)
        elif self.queue and which != "all":  # the head is still loading: it is what "current" means
            pb = self.queue.popleft()
            self._finish(pb, "stopped", by, digit)
            stopped.append(pb)
        if which == "all":
            while self.queue:
                pb = self.queue.popleft()
                self._finish(pb, "stopped", by, digit)
                stopped.append(pb)
        elif self.current is None:
            self._start_next()  # "current" moves the queue on now, so a second stop sees the next one
            self._refresh()
        return stopped

    def fail_all(self, message: str) -> list[Playback]:
        """The leg's tick raised making a payload: what is playing (main and overlays) ends ``failed``.

        The reason is ``internal_error`` with *message*; the queue moves on at the next tick.
        """
        failed = [pb for pb in (self.current, *self.overlays) if pb is not None and not pb.ended]
        for pb in failed:
            pb.reason, pb.message = "internal_error", message
            self._finish(pb, "failed")
        return failed

    def end_all(self, state: str = "call_hangup") -> None:
        if self.current is not None:
            self._finish(self.current, state, None)
        while self.queue:
            self._finish(self.queue.popleft(), state, None)
        while self.overlays:
            self._finish(self.overlays.pop(0), state, None)

    # -- controls (ARI-like) -----------------------------------------------
    def _require_playing(self, pb: Playback) -> None:
        if pb.ended:
            raise PlaybackStateError("playback_ended", f"playback {pb.id} has ended ({pb.state})")
        if pb.state != "playing":
            raise PlaybackStateError("playback_not_started", f"playback {pb.id} has not started yet")

    def pause(self, pb: Playback) -> bool:
        self._require_playing(pb)
        if pb.paused:
            return False
        pb.paused = True
        self._refresh()
        self._notify("playback.paused", pb)
        return True

    def resume(self, pb: Playback) -> bool:
        self._require_playing(pb)
        if not pb.paused:
            return False
        pb.paused = False
        self._refresh()
        self._notify("playback.resumed", pb)
        return True

    def set_volume(self, pb: Playback, db: float) -> None:
        if pb.ended:
            raise PlaybackStateError("playback_ended", f"playback {pb.id} has ended ({pb.state})")
        lo, hi = VOLUME_RANGE_DB
        if not lo <= db <= hi:
            raise PlayError("out_of_range", f"volume must be between {lo:g} and {hi:g} dB, got {db}")
        pb.volume_db = db
        pb.gain = db_gain(db)
        self._refresh()

    def position(self, pb: Playback) -> int:
        """Samples from the start of the source list (one loop iteration) to the next one to play."""
        before = 0
        for fut in pb.futures[: pb.index]:
            before += len(self._encoded(fut.result()))
        return before + (pb.offset if pb.media is not None else 0)

    def seek(self, pb: Playback, ms: int) -> None:
        """Jump to *ms* from the start of the source list; past the end is a PlayError."""
        self._require_playing(pb)
        target = int(ms) * pb.per_ms
        if target < 0:
            raise PlayError("out_of_range", f"seek position must be >= 0, got {ms}")
        self._seek_samples(pb, target, ms)

    def skip(self, pb: Playback, ms: int) -> None:
        """Move by *ms* (negative: back, clamped at the start); past the end is a PlayError."""
        self._require_playing(pb)
        target = max(0, self.position(pb) + int(ms) * pb.per_ms)
        self._seek_samples(pb, target, target // pb.per_ms)

    def restart(self, pb: Playback) -> None:
        self._require_playing(pb)
        pb.loops_done = 0
        self._seek_samples(pb, 0, 0)

    def _seek_samples(self, pb: Playback, target: int, ms: int) -> None:
        start = 0
        for i, fut in enumerate(pb.futures):
            if not fut.done() or fut.exception() is not None:
                break  # a later source is not playable yet: positions beyond it are unknown
            media = fut.result()
            size = len(self._encoded(media))
            if target < start + size:
                pb.index = i
                pb.media = media
                pb.data = self._encoded(media)
                pb.offset = target - start
                pb.refresh_end()
                return
            start += size
        raise PlayError("seek_past_end", f"position {ms} ms is past the end of the playback ({start // pb.per_ms} ms)")

    # -- the clock's path ------------------------------------------------
    def next_payload(self, nbytes: int, seq: int, ts: int, call_audio: Callable[[int], Any] | None = None) -> bytes | None:
        """The next packet's payload, or None when the leg has nothing to send."""
        pb = self.current
        if pb is None:
            pb = self._start_next()
        if call_audio is None and not self.overlays:
            # only a main playback: bytes, no PCM (a source boundary, a loop, the cap, a 0 dB slice)
            if pb is None or pb.paused:
                return None
            span = self._advance(pb, nbytes, seq, ts)
            if span is None:
                return None
            _, data, start, count = span
            if pb.gain == 1.0:
                chunk = data[start : start + count]
                if count < nbytes:
                    chunk = bytes(chunk) + self.codec.silence_payload(nbytes - count)
                return bytes(chunk)
            return self._mix([(self._pcm(span), pb.gain)], self.codec.pcm_of(nbytes))
        return self._compose(pb, nbytes, seq, ts, call_audio)

    def _compose(self, pb: Playback | None, n: int, seq: int, ts: int,
                 call_audio: Callable[[int], Any] | None) -> bytes | None:
        """*n* payload bytes of everything the leg hears, mixed as PCM (``codec.pcm_of(n)`` samples)."""
        pcm_n = self.codec.pcm_of(n)
        parts: list[tuple[np.ndarray, float]] = []
        mute = False
        duck = 0.0
        if pb is not None:
            mute, duck = not pb.mix, pb.duck_db or 0.0
            if not pb.paused:
                span = self._advance(pb, n, seq, ts)
                if span is not None and span[3] > 0:
                    parts.append((self._pcm(span), pb.gain))
        if self.overlays:
            for ov in list(self.overlays):
                if ov.state == "queued" and not self._try_start_overlay(ov):
                    continue
                mute, duck = mute or not ov.mix, max(duck, ov.duck_db or 0.0)
                if ov.paused:
                    continue
                span = self._advance(ov, n, seq, ts)
                if span is not None and span[3] > 0:
                    parts.append((self._pcm(span), ov.gain))
        if call_audio is not None:
            frame = call_audio(pcm_n)  # drained every tick, heard or not, so the peer's audio stays current
            if frame is not None and not mute:
                parts.append((frame, db_gain(-duck) if duck else 1.0))
        return self._mix(parts, pcm_n)

    def _mix(self, parts: list[tuple[np.ndarray, float]], n: int) -> bytes | None:
        """Sum int16 parts (*n* samples at 8 kHz, each at its gain) in int32, saturate, encode once; None for
        no parts."""
        if not parts:
            return None
        if len(parts) == 1:
            pcm, gain = parts[0]
            if gain == 1.0 and len(pcm) == n:  # one full frame at 0 dB: nothing to sum or clip
                return self._encode_frame(pcm)
        acc = np.zeros(n, np.int32)
        for pcm, gain in parts:
            k = min(len(pcm), n)
            if gain == 1.0:
                if k == n:
                    acc += pcm
                else:
                    acc[:k] += pcm[:k]
            else:
                acc[:k] += (pcm[:k].astype(np.float32) * gain).astype(np.int32)
        wide = _wide_table(self.codec)
        if wide is not None and len(parts) <= 2 and all(g <= 1.0 for _, g in parts):  # |sum| <= 65536
            acc += _WIDE_OFFSET
            return wide.take(acc).tobytes()
        np.minimum(acc, 32767, out=acc)  # saturate (two ufuncs: cheaper than np.clip on 160 samples)
        np.maximum(acc, -32768, out=acc)
        return self._encode_frame(acc.astype(np.int16))

    def _encode_frame(self, pcm: np.ndarray) -> bytes:
        """One packet's 8 kHz PCM in the leg's codec: a table for G.711, the leg's own encoder otherwise."""
        if self.codec.encode_table is not None:
            return encode_frame(self.codec, pcm)
        if self._frame_enc is None:
            self._frame_enc = self.codec.frame_encoder()
        return self._frame_enc(pcm)

    def _pcm(self, span: Span) -> np.ndarray:
        """The int16 samples a span took: the media's PCM, or its bytes decoded while PCM lags."""
        media, data, start, count = span
        pcm = media.pcm
        codec = self.codec
        lo, hi = codec.pcm_of(start), codec.pcm_of(start + count)  # payload bytes -> 8 kHz samples
        if len(pcm) >= hi:
            return pcm[lo:hi]
        if codec.decode_table is None:  # a wideband encoding is never ahead of the PCM it is encoded from
            return np.zeros(hi - lo, np.int16)
        return codec.decode_table[np.frombuffer(bytes(data[start : start + count]), np.uint8)]

    def encode(self, pcm: np.ndarray) -> bytes:
        """Any 8 kHz int16 PCM in this leg's codec, from a fresh encoder (in-band DTMF out)."""
        return self.codec.encode(pcm)

    def _encoded(self, media: Media) -> bytes:
        """The media in this leg's codec, encoded once for every leg (the loader makes G.711 and, when
        wideband, G.722 from the 16 kHz decode); a codec it lacks is encoded here from the 8 kHz PCM."""
        data = media.encoded.get(self.codec.name)
        if data is None:
            data = media.encoded[self.codec.name] = self.codec.encode(media.pcm)
        return data

    def _resolve(self, pb: Playback) -> bool | None:
        """Make ``pb.media`` the source at ``pb.index``: True ready, None still loading, False failed."""
        fut = pb.futures[pb.index]
        if not fut.done():
            pb.media, pb.end = None, 0
            return None
        exc = fut.exception()
        if exc is not None:
            pb.reason = exc.reason if isinstance(exc, SourceError) else "internal_error"
            pb.message = getattr(exc, "message", str(exc))
            pb.failed_source_index = pb.index
            return False
        media = fut.result()
        data = self._encoded(media)
        if not data and media.complete:
            pb.reason, pb.message = "decode_error", "no audio samples"
            pb.failed_source_index = pb.index
            return False
        pb.media, pb.data, pb.offset = media, data, 0
        pb.refresh_end()
        return True

    def _advance(self, pb: Playback, n: int, seq: int, ts: int) -> Span | None:
        """Take up to *n* samples of *pb* and move its state on (source, loop, cap, end)."""
        if pb.media is None:
            ok = self._resolve(pb)
            if ok is None:
                pb.underruns += 1  # the next source is still loading: silence, the playback waits
                return None
            if not ok:
                self._finish(pb, "failed")
                return None
        media = pb.media
        assert media is not None
        if media.error is not None:
            pb.reason, pb.message = media.error.reason, media.error.message
            pb.failed_source_index = pb.index
            self._finish(pb, "failed")
            return None
        data = pb.data
        off = pb.offset
        if off > len(data) and media.complete:  # an offset_ms past the end of a source still decoding then
            off = pb.offset = len(data)
        avail = len(data) - off
        cap_left = pb.cap - pb.samples_played
        if not media.complete and avail < n and avail < cap_left:
            pb.underruns += 1  # streaming media not decoded this far yet: silence, counted
            pb.end = len(data)
            return None
        count = min(n, avail, cap_left)
        pb.offset = off + count
        pb.samples_played += count
        pb.last_seq, pb.last_ts = seq, ts
        span = (media, data, off, count)
        if pb.samples_played >= pb.cap:
            pb.reason = "length"
            self._finish(pb, "completed")
        elif pb.offset >= len(data) and media.complete:
            pb.index += 1
            pb.media = None
            if pb.index >= len(pb.futures):
                pb.index = 0
                pb.loops_done += 1
                if pb.loop is not None and pb.loops_done >= pb.loop:
                    self._finish(pb, "completed")
                    return span
            if self._resolve(pb) is False:  # reached a failed source: fail now, as ACS reports
                self._finish(pb, "failed")
        else:
            pb.refresh_end()
        return span

    def _start(self, pb: Playback) -> bool:
        ok = self._resolve(pb)
        if not ok:
            self._finish(pb, "failed")
            return False
        if pb.start_offset:  # offset_ms: the first iteration starts this far in (clipped to the first source)
            pb.offset = min(pb.start_offset, len(pb.data)) if pb.media is not None and pb.media.complete \
                else pb.start_offset
            pb.start_offset = 0
            pb.refresh_end()
        pb.state = "playing"
        pb.started_at = time.time()
        self._notify("playback.started", pb)
        return True

    def _start_next(self) -> Playback | None:
        while self.queue:
            pb = self.queue[0]
            fut = pb.futures[0]
            if not fut.done():
                return None  # still loading: the leg keeps its place (and sends silence)
            self.queue.popleft()
            self.current = pb
            if self._start(pb):
                self._refresh()
                return pb
            self.current = None
        return None

    def _try_start_overlay(self, pb: Playback) -> bool:
        if not pb.futures[0].done():
            return False
        return self._start(pb)  # a failure finishes it (and removes it from the overlays)

    def _finish(self, pb: Playback, state: str, by: str | None = None, digit: str | None = None) -> None:
        pb.state = state
        pb.ended_at = time.time()
        pb.stopped_by = by
        pb.digit = digit
        # An ended playback keeps no audio: a cancelled download's partial media must be freed
        # (ended playbacks stay answerable for a while), and a cached source is the cache's.
        pb.media, pb.data, pb.end, pb.futures = None, b"", 0, []
        if self.current is pb:
            self.current = None
        elif pb in self.overlays:
            self.overlays.remove(pb)
        self._refresh()
        done, pb.on_finished = pb.on_finished, None
        if done is not None:
            done()
        self._notify("playback.ended", pb)
