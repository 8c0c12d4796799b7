"""The loader: sources → :class:`Media`, single flight, with claims, the cache and the media store.

Everything here runs off the media clock's path: the download is async, each decode step and
its G.711 encoding run in the loader's decode threads (or a worker process), and the result is a
:class:`Media` whose encoded payloads the clock only slices.  A long source is handed to the
player as soon as its first ~100 ms are decoded (``complete=False``); the rest is appended while
it plays.  Concurrent requests for one source share one load (:class:`_Flight`); each playback
holds a :class:`Claim` and the last one released cancels a load nothing keeps.  A source larger
than the memory cache budget is not kept in memory once played; it goes to the disk tier.

The loader's collaborators (fetcher, store, cache, decode workers) are passed in;
:meth:`MediaLoader.create` builds the defaults from settings.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..ops.logsafe import clip
from ..ops.timing import Timing
from . import decode
from .cache import AudioCache, CacheEntry, Freshness, cache_key, freshness
from .decodeproc import DecodeWorkers
from .errors import SourceError
from .fetch import Fetcher, FetchResponse, FetchSettings, public_url
from .source import RATE, Media, MediaBuilder, choose_decoder, media_from_pcm
from .spec import SourceSpec
from .store import MediaStore
from .synth import get_engine
from .tones import dtmf_pcm, tone_pcm

__all__ = ["Claim", "MediaLoader"]

log = logging.getLogger("mediasrv.source")

START_SAMPLES = 800  # hand the media to the player once 100 ms are decoded
FEED_BYTES = 256 * 1024  # decode in pieces of at most this much (whatever has arrived, up to this)
HEAD_BYTES = 4096  # bytes looked at to decide the type
DECODE_THREADS = 2
SYNTH_CACHE = 256  # synthesized tone/digits sources kept (each a few seconds of audio at most, typically)
THREAD_DECODE_BYTES = 1 << 20  # a body this small decodes in a thread (milliseconds); larger: a worker process


@dataclass(eq=False)
class _Flight:
    """One download-and-decode in progress; every concurrent request for its key shares it.

    ``claims`` counts the playbacks waiting on or streaming from it; ``keep`` is set by a
    request that wants the result whatever the playbacks do (an explicit prefetch, or an
    in-process ``load``).  When the last claim goes and nothing keeps it, the load is
    cancelled (see :meth:`MediaLoader._release`).
    """

    first: asyncio.Future[Media]  # resolved once ~100 ms are decoded (or on failure before that)
    done: asyncio.Future[Media]  # resolved when the whole source is decoded (or failed)
    key: str = ""  # its entry in MediaLoader._inflight
    claims: int = 0
    keep: bool = False
    decoding: bool = True  # False once the decode is complete: only bookkeeping (the cache) is left
    cancelled: bool = False
    task: asyncio.Task[None] | None = None
    response: FetchResponse | None = None  # the open download, closed at once by a cancel

    def check(self) -> None:
        """Raise CancelledError if the load was cancelled: the task's cancel alone is not enough on
        Python 3.11, whose ``asyncio.wait_for`` swallows a cancel that lands as its inner read
        completes (gh-86296), and the decode would then carry on."""
        if self.cancelled:
            raise asyncio.CancelledError


class Claim:
    """One playback's interest in one source's load; :meth:`release` it when the playback ends.

    ``future`` is what the player waits on.  A claim on audio that was already decoded (a
    cache hit) has no flight and releasing it does nothing.
    """

    __slots__ = ("future", "_flight", "_loader")

    def __init__(self, future: asyncio.Future[Media], flight: _Flight | None = None,
                 loader: MediaLoader | None = None) -> None:
        self.future = future
        self._flight = flight
        self._loader = loader
        if flight is not None:
            flight.claims += 1

    def another(self) -> Claim:
        """A second claim on the same load (the same source played on another leg)."""
        return Claim(self.future, self._flight, self._loader)

    def release(self) -> None:
        """Idempotent: the playback no longer needs this source."""
        flight, loader = self._flight, self._loader
        self._flight = self._loader = None
        if flight is not None and loader is not None:
            loader._release(flight)


def _quiet(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: a failure nobody awaits is not logged as "never retrieved"


class MediaLoader:
    """Loads sources, single-flight, with a decoded-audio cache (RFC 9111) and the media store."""

    def __init__(self, fetcher: Fetcher, store: MediaStore, cache: AudioCache, *,
                 workers: DecodeWorkers | None = None, max_audio_seconds: float = 3600.0,
                 wideband: bool = False) -> None:
        """Takes its collaborators (tests pass their own); :meth:`create` builds them from settings."""
        self.fetcher = fetcher
        self.store = store
        self.cache = cache
        self.wideband = wideband  # also decode at 16 kHz and G.722-encode every source (a G.722 leg may play it)
        self.max_audio_seconds = max_audio_seconds
        self._inflight: dict[str, _Flight] = {}
        # Decoding has its own threads: a long decode never queues the default executor's short jobs.
        # (Not reniced: a low-priority thread holding the GIL would stall the clock's thread.)
        self._decode_pool = ThreadPoolExecutor(DECODE_THREADS, "mediasrv-decode")
        # ...and the decoding itself happens in worker processes (see decodeproc.py for why).
        self._workers = workers
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = {"fetches": 0, "cache_hits": 0, "disk_hits": 0, "revalidations": 0, "coalesced": 0,
                      "decodes": 0, "process_decodes": 0, "failures": 0, "cancelled": 0, "synthesized": 0,
                      "syntheses": 0}
        self.load_time = Timing()  # successful loads, claim to fully decoded (mediasrv_source_load_seconds)
        self._synth: dict[tuple[Any, ...], Media] = {}  # tone/digits sources, least recently used first

    @classmethod
    def create(cls, data_dir: str, fetch_timeout_s: float = 30.0, max_fetch_bytes: int = 250 << 20,
               cache_bytes: int = 512 << 20, *, max_audio_seconds: float = 3600.0,
               allow_cidrs: list[str] | tuple[str, ...] = (), deny_cidrs: list[str] | tuple[str, ...] = (),
               disk_cache_bytes: int = 4 << 30, connect_timeout_s: float = 5.0,
               first_byte_timeout_s: float = 10.0, decode_processes: int = 1, wideband: bool = False,
               media_dir: str | None = None) -> MediaLoader:
        """The default collaborators from settings: the egress-checked fetcher, the named-media store
        (*media_dir*, shared by a cluster's nodes; default ``<data_dir>/media``), the two-tier cache
        under ``<data_dir>/cache`` and *decode_processes* decoder processes (0: threads only)."""
        fetcher = Fetcher(FetchSettings(
            connect_timeout_s=min(connect_timeout_s, fetch_timeout_s),
            first_byte_timeout_s=min(first_byte_timeout_s, fetch_timeout_s),
            total_timeout_s=fetch_timeout_s,
            read_idle_timeout_s=min(first_byte_timeout_s, fetch_timeout_s),
            max_bytes=max_fetch_bytes, allow_cidrs=list(allow_cidrs), deny_cidrs=list(deny_cidrs),
        ))
        root = Path(data_dir)
        store = MediaStore(Path(media_dir) if media_dir else root / "media", decode.describe_audio, max_fetch_bytes)
        cache = AudioCache(root / "cache", cache_bytes, disk_cache_bytes)
        workers = DecodeWorkers(decode_processes) if decode_processes else None
        return cls(fetcher, store, cache, workers=workers, max_audio_seconds=max_audio_seconds, wideband=wideband)

    def start_workers(self) -> None:
        """Start the decoder processes now rather than at the first decode (saves the first play ~0.5 s)."""
        if self._workers is not None:
            self._workers.start()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.fetcher.close()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        if self._workers is not None:
            self._workers.close()

    # -- entry points ------------------------------------------------------------
    def claim(self, spec: SourceSpec) -> Claim:
        """A playback's claim on one source's load: its future resolves as soon as it can start
        playing; releasing the last claim cancels a load nothing else keeps (see :meth:`_release`)."""
        flight = self._flight(spec)
        return Claim(flight.first, flight, self)

    def load_source(self, spec: SourceSpec) -> asyncio.Future[Media]:
        """A future for one source's media, for a caller that holds no claim: the load is kept
        alive to the end whatever playbacks sharing it do."""
        return self._flight(spec, keep=True).first

    async def prefetch(self, spec: SourceSpec) -> tuple[Media, CacheEntry | None]:
        """Load *spec* completely (into the cache if it may be cached): the media and its entry.

        An explicit prefetch keeps the load alive even when every playback sharing it stops.
        """
        flight = self._flight(spec, keep=True)
        media = await asyncio.shield(flight.done)
        key = self._key(spec)
        return media, self.cache.get(key) if key else None

    def synth(self, spec: SourceSpec) -> Media:
        """A tone or digits source, synthesized (milliseconds) and kept in a small LRU.  ToneError: a bad spec."""
        key = (spec.tone, spec.digits, spec.duration_ms, spec.digit_ms, spec.gap_ms)
        media = self._synth.pop(key, None)
        if media is None:
            pcm = (tone_pcm(spec.tone, spec.duration_ms) if spec.tone is not None
                   else dtmf_pcm(spec.digits or "", spec.digit_ms, spec.gap_ms))
            media = media_from_pcm(spec.describe(), pcm, self.wideband)
            self.stats["synthesized"] += 1
        self._synth[key] = media
        while len(self._synth) > SYNTH_CACHE:
            self._synth.pop(next(iter(self._synth)))
        return media

    def ready_media(self, spec: SourceSpec) -> Media | None:
        """The fully decoded media of *spec* if it is in memory and fresh now, else None.

        Synchronous (one stat for stored media, nothing else), so a caller can start a cached
        prompt at the very next tick; counts as a cache hit.  Tone and digits sources are
        synthesized here (validated before, by the API).
        """
        if spec.synthesized:
            try:
                return self.synth(spec)
            except ValueError:
                return None  # the load reports it as a failed source
        try:
            if spec.speech is not None:
                media = self.cache.media(spec.speech.cache_key())
            elif spec.media is not None:
                mtime, size = self.store.version(spec.media)
                media = self.cache.media(f"media:{spec.media}:{mtime}:{size}")
            elif spec.url is not None and spec.cache is not False:
                key = cache_key(spec.url, spec.cache_id)
                entry = self.cache.get(key)
                if entry is None or not entry.fresh(time.time()):
                    return None
                media = self.cache.media(key)
                if media is not None:
                    entry.hits += 1
            else:
                return None
        except (SourceError, OSError):
            return None
        if media is None or not media.complete:
            return None
        self.stats["cache_hits"] += 1
        return media

    def load(self, key: str, kind: str) -> asyncio.Future[Media]:
        """Shorthand: a URL or a stored media name."""
        return self.load_source(SourceSpec(url=key) if kind == "url" else SourceSpec(media=key))

    async def purge(self, url: str | None = None, cache_id: str | None = None) -> bool:
        entry = self.cache.remove(cache_key(url, cache_id))
        if entry is None:
            return False
        await asyncio.get_running_loop().run_in_executor(None, self.cache.delete_files, entry.key)
        return True

    def forget_stored(self, name: str) -> None:
        """A stored media file changed or went away: drop its decoded copies."""
        for key in [k for k in self.cache.entries if k.startswith(f"media:{name}:")]:
            self.cache.remove(key)

    # -- keys and flights ----------------------------------------------------------
    @staticmethod
    def _key(spec: SourceSpec) -> str | None:
        if spec.url is not None and spec.cache is not False:
            return cache_key(spec.url, spec.cache_id)
        return None

    def _flight(self, spec: SourceSpec, keep: bool = False) -> _Flight:
        loop = asyncio.get_running_loop()
        if spec.speech is not None:
            key = spec.speech.cache_key()
        elif spec.url is not None:
            key = self._key(spec) or f"nocache:{uuid.uuid4().hex}"
        elif spec.media is not None:
            key = f"media:{spec.media}"
        else:
            key = f"content:{uuid.uuid4().hex}"
        flight_key = key
        if spec.username is not None:  # a download made with credentials is shared only with the same ones
            secret = f"{spec.username}\0{spec.password or ''}".encode()
            flight_key += "|auth:" + hashlib.sha256(secret).hexdigest()[:16]
        flight = self._inflight.get(flight_key)
        if flight is not None:
            self.stats["coalesced"] += 1
            flight.keep = flight.keep or keep
            return flight
        flight = _Flight(loop.create_future(), loop.create_future(), key=flight_key, keep=keep)
        flight.first.add_done_callback(_quiet)
        flight.done.add_done_callback(_quiet)
        self._inflight[flight_key] = flight
        flight.task = task = loop.create_task(self._run(flight_key, key, spec, flight))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return flight

    def _release(self, flight: _Flight) -> None:
        """A claim went.  The last one cancels the load unless something else wants the result.

        What keeps a load alive with no claim left: an explicit prefetch (or an in-process
        ``load``).  A play's ``cache: true`` / ``cache_id`` / Telnyx ``cache_audio`` does not:
        they say how to store what is fetched, not that it must be fetched whoever listens
        (Telnyx's ``cache_audio`` defaults to true, which would exempt every Telnyx play).
        Cancelling closes the HTTP connection, drops the decoder (thread step or worker
        stream) and the partial media, and removes the single-flight entry so a later play
        fetches afresh.  Nothing is reported: every playback that wanted it has already ended.
        """
        flight.claims -= 1
        if flight.claims > 0 or flight.keep or not flight.decoding or flight.cancelled or flight.done.done():
            return
        flight.cancelled = True
        self.stats["cancelled"] += 1
        if self._inflight.get(flight.key) is flight:
            del self._inflight[flight.key]
        for fut in (flight.first, flight.done):
            if not fut.done():
                fut.cancel()
        if flight.response is not None:
            flight.response.close()  # the connection goes now, whatever the task is awaiting
        if flight.task is not None:
            flight.task.cancel()

    async def _run(self, flight_key: str, key: str, spec: SourceSpec, flight: _Flight) -> None:
        media: Media | None = None
        t0 = time.perf_counter()
        try:
            if spec.speech is not None:
                media = await self._load_speech(key, spec, flight)
            elif spec.synthesized:
                try:
                    media = self.synth(spec)
                except ValueError as exc:
                    raise SourceError("invalid_tone", str(exc)) from None
            elif spec.url is not None:
                media = await self._load_url(key, spec, flight)
            elif spec.media is not None:
                media = await self._load_stored(spec.media, flight)
            else:
                media = await self._decode_stream(spec.describe(), _one(spec.content or b""), flight,
                                                  declared=spec.audio_type)
        except SourceError as exc:
            if not flight.cancelled:  # else the closed connection's error: nobody to tell
                self._fail(flight, exc)
        except asyncio.CancelledError:
            if flight.cancelled:
                # Nobody wants it (see _release), and nobody is told.  Ending normally rather than
                # re-raising: a task keeps the CancelledError it ends with, whose traceback holds
                # this frame and so the partial media, freed then only by the cyclic GC, late.
                return
            self._fail(flight, SourceError("shutdown", "the server is stopping"))
            raise
        except Exception as exc:  # an unexpected failure still ends as a reasoned failed playback
            if flight.cancelled:
                log.debug("cancelled load of %s ended with %r", spec.describe(), exc)
                return
            log.exception("loading %s failed", spec.describe())
            self._fail(flight, SourceError("internal_error", f"{spec.describe()}: {type(exc).__name__}: {exc}"))
        else:
            self.load_time.observe(time.perf_counter() - t0)
            if not flight.first.done():
                flight.first.set_result(media)
            flight.done.set_result(media)
        finally:
            if self._inflight.get(flight_key) is flight:
                del self._inflight[flight_key]
            flight.task = None  # no cycle task -> frame -> flight -> task to keep the media past its end

    def _fail(self, flight: _Flight, exc: SourceError, media: Media | None = None) -> None:
        # The futures keep *exc* for every waiter; its traceback would hold _run's frame and so the
        # flight and its futures: a cycle only the cyclic GC frees, late (gcpolicy.py freezes it).
        exc = exc.with_traceback(None)
        exc.__cause__ = exc.__context__ = None
        self.stats["failures"] += 1
        # the call id comes from the context of the play that started this load (logs.py)
        log.info("fetch failed: %s: %s", exc.reason, clip(exc.message, 200),
                 extra={"event": "source.failed", "reason": exc.reason})
        if not flight.first.done():
            flight.first.set_exception(exc)
        elif flight.first.exception() is None:
            flight.first.result().error = exc  # it is playing: the player ends it failed
        if not flight.done.done():
            flight.done.set_exception(exc)

    # -- the three kinds of source -------------------------------------------------
    async def _load_url(self, key: str, spec: SourceSpec, flight: _Flight) -> Media:
        assert spec.url is not None
        cached = self.cache.get(key) if spec.cache is not False else None
        now = time.time()
        if cached is not None and cached.fresh(now):
            self.stats["cache_hits"] += 1
            cached.hits += 1
            return await self._cached_media(cached)
        headers = cached.conditional_headers() if cached is not None else None
        self.stats["fetches"] += 1
        resp = await self.fetcher.open(spec.url, spec.username, spec.password, headers)
        flight.response = resp
        try:
            async with resp:
                flight.check()
                fresh = freshness(resp.headers, time.time(), spec.cache, spec.cache_id, spec.username is not None)
                if resp.status == 304:
                    if cached is None or self.cache.get(key) is not cached:
                        raise SourceError("fetch_error", f"{public_url(spec.url)}: 304 to an unconditional request")
                    self.stats["revalidations"] += 1
                    cached.hits += 1
                    self.cache.refresh(key, fresh if fresh.store else Freshness(True, 0.0),
                                       resp.headers.get("ETag"), resp.headers.get("Last-Modified"))
                    if cached.on_disk:
                        await asyncio.get_running_loop().run_in_executor(
                            None, self.cache.write_sidecar, key, self.cache.sidecar(cached))
                    return await self._cached_media(cached)
                declared = resp.content_length
                media = await self._decode_stream(
                    spec.describe(), resp.chunks(FEED_BYTES), flight, declared=spec.audio_type,
                    content_type=resp.content_type, url_path=resp.url.path, size_hint=declared,
                )
        finally:
            flight.response = None
        if spec.cache is not False and fresh.store:
            await self._remember(CacheEntry(
                key=key, source=public_url(spec.url), samples=len(media.pcm), stored_at=time.time(),
                fresh_until=fresh.fresh_until, etag=resp.headers.get("ETag"),
                last_modified=resp.headers.get("Last-Modified"),
            ), media)
        elif cached is not None:  # the new answer may not be stored: the old entry is no longer right
            await self.purge_key(key)
        return media

    async def purge_key(self, key: str) -> None:
        entry = self.cache.remove(key)
        if entry is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.cache.delete_files, key)

    async def _cached_media(self, entry: CacheEntry) -> Media:
        media = self.cache.media(entry.key)
        if media is not None:
            return media
        self.stats["disk_hits"] += 1
        loop = asyncio.get_running_loop()
        pcm = await loop.run_in_executor(None, self.cache.read_pcm, entry.key)
        media = await loop.run_in_executor(self._decode_pool, media_from_pcm, entry.source, pcm, self.wideband)
        self.cache.keep_in_memory(entry.key, media)
        return media

    async def _remember(self, entry: CacheEntry, media: Media) -> None:
        to_disk = self.cache.put(entry, media)
        if not to_disk:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._decode_pool, self.cache.write_files, entry.key, media.pcm,
                                       self.cache.sidecar(entry))
        except OSError as exc:
            log.warning("cannot write cache entry %s to disk: %s", entry.source, exc)
            return
        for key in self.cache.written(entry):
            await loop.run_in_executor(None, self.cache.delete_files, key)

    async def _load_speech(self, key: str, spec: SourceSpec, flight: _Flight) -> Media:
        """Text to speech: a cached decode, or the engine's WAV (a child process) through the WAV decode path."""
        speech = spec.speech
        assert speech is not None
        media = self.cache.media(key)
        if media is not None:
            self.stats["cache_hits"] += 1
            self.cache.entries[key].hits += 1
            return media
        self.stats["syntheses"] += 1
        wav = await get_engine().synthesize(speech.text, speech.voice, speech.rate, speech.ssml)
        flight.check()
        media = await self._decode_stream(speech.describe(), _one(wav), flight, declared="wav", size_hint=len(wav))
        # memory only: it is cheaper to say again than to keep on disk, and the text may be private
        self.cache.put(CacheEntry(key=key, source=speech.describe(), samples=len(media.pcm), stored_at=time.time(),
                                  fresh_until=float("inf")), media)
        return media

    async def _load_stored(self, name: str, flight: _Flight) -> Media:
        loop = asyncio.get_running_loop()
        mtime, size = await loop.run_in_executor(None, self.store.version, name)
        key = f"media:{name}:{mtime}:{size}"
        media = self.cache.media(key)
        if media is not None:
            self.stats["cache_hits"] += 1
            return media
        path = self.store.path(name)
        media = await self._decode_stream(f"media:{name}", _read_file(path), flight, url_path=name, size_hint=size)
        self.cache.put(CacheEntry(key=key, source=f"media:{name}", samples=len(media.pcm), stored_at=time.time(),
                                  fresh_until=float("inf")), media)
        return media

    async def decode_upload(self, name: str, path: Path, size: int) -> Media:
        """Decode an upload completely: validation that it is whole, playable audio (SourceError if not)."""
        loop = asyncio.get_running_loop()
        flight = _Flight(loop.create_future(), loop.create_future())
        flight.first.add_done_callback(_quiet)
        flight.done.add_done_callback(_quiet)
        return await self._decode_stream(f"media:{name}", _read_file(path), flight, url_path=name, size_hint=size)

    async def remember_stored(self, name: str, media: Media) -> None:
        """Keep an upload's decoded audio for its first play (decoded once, at upload)."""
        self.forget_stored(name)
        mtime, size = await asyncio.get_running_loop().run_in_executor(None, self.store.version, name)
        self.cache.put(CacheEntry(key=f"media:{name}:{mtime}:{size}", source=f"media:{name}", samples=len(media.pcm),
                                  stored_at=time.time(), fresh_until=float("inf")), media)

    # -- decoding while the bytes arrive -------------------------------------------
    async def _decode_stream(self, source: str, chunks: AsyncIterator[bytes], flight: _Flight, *,
                             declared: str | None = None, content_type: str | None = None,
                             url_path: str | None = None, size_hint: int | None = None) -> Media:
        """Decode *chunks* as they come; resolve ``flight.first`` once 100 ms are ready."""
        loop = asyncio.get_running_loop()
        it = chunks.__aiter__()
        head = b""
        ended = False
        while len(head) < HEAD_BYTES:
            try:
                head += await it.__anext__()
            except StopAsyncIteration:
                ended = True
                break
            flight.check()
        size = size_hint if size_hint is not None else len(head)
        decoder = choose_decoder(head[:HEAD_BYTES], declared, content_type, url_path, size, source,
                                 self.max_audio_seconds, self.wideband)
        self.stats["decodes"] += 1
        builder = MediaBuilder(source, self.wideband)
        pending: bytes | None = head
        remote = None
        # FLAC/Ogg/MP4/AAC pack more audio per byte and decode slower than WAV/MP3: a lower bar
        limit = THREAD_DECODE_BYTES if decoder.kind in ("wav", "mp3") else THREAD_DECODE_BYTES // 8
        small = size_hint is not None and size_hint <= limit
        if self._workers is not None and not small and self._workers.available():
            remote = await self._workers.open(decoder.kind, source, RATE, self.max_audio_seconds, self.wideband)
            self.stats["process_decodes"] += 1
        try:
            while True:
                if remote is not None:  # decoded in a worker process; stored here off the loop's thread
                    pcm, ulaw, alaw, g722 = await remote.step(pending)
                    n = await loop.run_in_executor(self._decode_pool, builder.store, pcm)
                else:
                    step: Callable[[], tuple[int, bytes, bytes, bytes]] = _bind(builder.decode_step, decoder, pending)
                    n, ulaw, alaw, g722 = await loop.run_in_executor(self._decode_pool, step)
                flight.check()
                builder.publish(n, ulaw, alaw, g722)
                if not flight.first.done() and builder.samples >= START_SAMPLES:
                    flight.first.set_result(builder.media)
                if pending is None:
                    break
                if ended:
                    pending = None
                    continue
                try:
                    pending = await it.__anext__()
                except StopAsyncIteration:
                    pending = None
                flight.check()
        finally:
            await _aclose(it)
            if remote is not None:
                await remote.close()
        if builder.samples == 0:
            raise SourceError("decode_error", f"{source}: no audio samples")
        media = builder.media
        media.pcm = await loop.run_in_executor(self._decode_pool, builder.trim)
        media.complete = True
        flight.decoding = False  # what is left (storing it in the cache) is not cancelled
        return media


def _bind(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: fn(*args)


async def _aclose(it: Any) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        await close()


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _read_file(path: Path, size: int = FEED_BYTES) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    try:
        fh = await loop.run_in_executor(None, path.open, "rb")
    except FileNotFoundError as exc:
        raise SourceError("media_not_found", f"no stored media named {path.name!r}") from exc
    try:
        while chunk := await loop.run_in_executor(None, fh.read, size):
            yield chunk
    finally:
        fh.close()
