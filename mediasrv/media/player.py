"""Playbacks and the per-leg player: a FIFO, loops, stop current/all/by id.

The clock asks :meth:`Player.next_payload` for exactly one packet's worth of encoded
audio per packet time.  For a leg playing one stream that is a slice of bytes encoded
once in advance; state changes (start, end) are recorded here and reported through a
callback that only queues events.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .source import Media, SourceError

FINAL_STATES = frozenset({"completed", "stopped", "failed", "call_hangup"})


@dataclass
class SourceSpec:
    """One thing to play: exactly one of ``url``, ``media`` (a stored name) or ``content`` (bytes)."""

    url: str | None = None
    media: str | None = None
    content: bytes | None = field(default=None, repr=False)  # inline audio, already base64-decoded
    audio_type: str | None = None  # declared type ("wav", "mp3", a MIME type): a hint, the bytes decide
    username: str | None = None  # HTTP Basic credentials for this URL only; never logged
    password: str | None = field(default=None, repr=False)
    cache: bool | None = None  # True: cache even without HTTP caching headers; False: never; None: RFC 9111
    cache_id: str | None = None  # caller's cache key (a rotating signed URL can share one entry)

    def describe(self) -> str:
        if self.url is not None:
            return self.url.split("?", 1)[0]  # never the query string: signed URLs carry secrets there
        if self.media is not None:
            return f"media:{self.media}"
        return f"content:{len(self.content or b'')} bytes"


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

    def __post_init__(self) -> None:
        if not self.sources and (self.url is not None or self.media is not None):
            self.sources = [SourceSpec(url=self.url, media=self.media)]

    @property
    def source(self) -> str:
        if len(self.sources) == 1:
            return self.sources[0].describe()
        return ", ".join(s.describe() for s in self.sources)


@dataclass(slots=True)
class Playback:
    id: str
    call_id: str
    source: str
    loop: int | None
    state: str = "queued"  # queued | playing | completed | stopped | failed | call_hangup
    reason: str | None = None
    message: str | None = None
    samples_played: int = 0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    last_seq: int | None = None
    last_ts: int | None = None
    stopped_by: str | None = None
    # playing position (not part of the resource)
    media_future: asyncio.Future[Media] | None = field(default=None, repr=False)
    media: Media | None = field(default=None, repr=False)
    data: bytes = field(default=b"", repr=False)  # the media encoded for the leg's codec
    offset: int = field(default=0, repr=False)
    loops_done: int = field(default=0, repr=False)

    @property
    def ended(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def ms_played(self) -> int:
        return self.samples_played // 8

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "call_id": self.call_id,
            "source": self.source,
            "loop": "infinity" if self.loop is None else self.loop,
            "state": self.state,
            "reason": self.reason,
            "message": self.message,
            "ms_played": self.ms_played,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "last_seq": self.last_seq,
            "last_ts": self.last_ts,
            "stopped_by": self.stopped_by,
        }


def new_playback(call_id: str, request: PlayRequest, media_future: asyncio.Future[Media]) -> Playback:
    return Playback(
        id=uuid.uuid4().hex, call_id=call_id, source=request.source, loop=request.loop, media_future=media_future
    )


PlaybackListener = Callable[[str, Playback], None]  # ("playback.started" | "playback.ended", playback)


class Player:
    """The FIFO of one leg; owned by the media plane, driven by the clock."""

    def __init__(self, codec: str, silence: int, notify: PlaybackListener) -> None:
        self.codec = codec
        self.silence = silence
        self.current: Playback | None = None
        self.queue: deque[Playback] = deque()
        self._notify = notify

    def set_codec(self, codec: str, silence: int) -> None:
        self.codec, self.silence = codec, silence
        if self.current is not None and self.current.media is not None:
            self.current.data = self.current.media.encoded[codec]

    def enqueue(self, playback: Playback) -> None:
        self.queue.append(playback)

    # -- the clock's path ------------------------------------------------
    def next_payload(self, nbytes: int, seq: int, ts: int) -> bytes | None:
        """The next packet's payload, or None when nothing is ready to play."""
        pb = self.current
        if pb is None:
            pb = self._start_next()
            if pb is None:
                return None
        data = pb.data
        off = pb.offset
        end = off + nbytes
        if end < len(data):
            chunk = data[off:end]
            pb.offset = end
            pb.samples_played += nbytes
        else:
            media = pb.media
            if media is not None and not media.complete:  # still decoding: an underrun, or a late failure
                if media.error is not None:
                    pb.reason, pb.message = media.error.reason, media.error.message
                    self._finish(pb, "failed")
                return None
            chunk = data[off:]
            pb.samples_played += len(chunk)
            if len(chunk) < nbytes:
                chunk += bytes([self.silence]) * (nbytes - len(chunk))
            pb.loops_done += 1
            pb.offset = 0
            if pb.loop is not None and pb.loops_done >= pb.loop:
                pb.last_seq, pb.last_ts = seq, ts
                self._finish(pb, "completed")
                return chunk
        pb.last_seq, pb.last_ts = seq, ts
        return chunk

    def _start_next(self) -> Playback | None:
        while self.queue:
            pb = self.queue[0]
            fut = pb.media_future
            if fut is None or not fut.done():
                return None  # still loading: the leg keeps its place (and sends silence)
            self.queue.popleft()
            exc = fut.exception()
            if exc is not None:
                pb.reason = exc.reason if isinstance(exc, SourceError) else "internal_error"
                pb.message = getattr(exc, "message", str(exc))
                self._finish(pb, "failed")
                continue
            pb.media = fut.result()
            pb.data = pb.media.encoded.get(self.codec, b"")
            if not pb.data:
                pb.reason, pb.message = "decode_error", "no audio samples"
                self._finish(pb, "failed")
                continue
            pb.state = "playing"
            pb.started_at = time.time()
            self.current = pb
            self._notify("playback.started", pb)
            return pb
        return None

    def _finish(self, pb: Playback, state: str, by: str | None = None) -> None:
        pb.state = state
        pb.ended_at = time.time()
        pb.stopped_by = by
        if self.current is pb:
            self.current = None
        self._notify("playback.ended", pb)

    # -- commands --------------------------------------------------------
    def stop_one(self, pb: Playback, by: str) -> bool:
        if pb.ended:
            return False
        if pb is not self.current:
            try:
                self.queue.remove(pb)
            except ValueError:
                return False
        self._finish(pb, "stopped", by)
        return True

    def stop(self, which: str, by: str) -> list[Playback]:
        stopped = []
        if self.current is not None:
            stopped.append(self.current)
            self._finish(self.current, "stopped", by)
        elif self.queue and which != "all":  # the head is still loading: it is what "current" means
            pb = self.queue.popleft()
            self._finish(pb, "stopped", by)
            stopped.append(pb)
        if which == "all":
            while self.queue:
                pb = self.queue.popleft()
                self._finish(pb, "stopped", by)
                stopped.append(pb)
        return stopped

    def end_all(self, state: str = "call_hangup") -> None:
        if self.current is not None:
            self._finish(self.current, state, None)
        while self.queue:
            self._finish(self.queue.popleft(), state, None)
