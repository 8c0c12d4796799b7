"""Audio sources: fetch (aiohttp) or read a stored file, decode, resample and encode once.

Everything here runs off the media clock's path: the download is async, the decode and
encode run in the default executor, and the result is a :class:`Media` whose encoded
payloads the clock only slices.  Failures carry a machine-readable reason.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import numpy as np
import soundfile

from mediacodecs.g711 import alaw_encode, ulaw_encode
from mediacodecs.resample import to_telephony

if TYPE_CHECKING:
    from .player import SourceSpec

MEDIA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
RATE = 8000


class SourceError(Exception):
    """Why a source could not be played: ``reason`` for machines, ``message`` for people."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Media:
    """Decoded 8 kHz mono PCM with its G.711 encodings, made once and shared by every play."""

    source: str
    pcm: np.ndarray
    encoded: dict[str, bytes] = field(default_factory=dict)
    # Streaming contract: while ``complete`` is False the media is still being decoded and
    # ``encoded[codec]`` may be a bytearray that only grows; a player that reaches its end
    # sends silence (an underrun, counted) instead of ending.  ``error`` is set if decoding
    # failed after playback started; the playback then ends failed with that reason.
    complete: bool = True
    error: SourceError | None = None

    @property
    def duration_ms(self) -> int:
        return int(len(self.pcm) * 1000 / RATE)

    @property
    def size_bytes(self) -> int:
        return self.pcm.nbytes + sum(len(b) for b in self.encoded.values())


def sniff(body: bytes) -> str:
    """What the bytes are, judged by their first bytes, not by any label."""
    head = body[:16]
    if head[:4] == b"RIFF" and body[8:12] == b"WAVE":
        return "wav"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head[:4] in (b"OggS", b"fLaC"):
        return "other_audio"
    stripped = body[:256].lstrip().lower()
    if stripped.startswith((b"<!doctype", b"<html", b"<?xml", b"{", b"[")):
        return "text"
    return "unknown"


def decode_wav(body: bytes, source: str) -> Media:
    """Decode, mix down, resample to 8 kHz and G.711-encode (blocking: run in an executor)."""
    kind = sniff(body)
    if kind != "wav":
        raise SourceError("unsupported_format", f"{source}: {kind} data, only WAV is supported")
    try:
        data, rate = soundfile.read(io.BytesIO(body), dtype="int16", always_2d=True)
    except (RuntimeError, ValueError, soundfile.LibsndfileError) as exc:
        raise SourceError("decode_error", f"{source}: cannot decode WAV: {exc}") from exc
    if data.size == 0:
        raise SourceError("decode_error", f"{source}: WAV holds no audio")
    pcm = to_telephony(data, rate, RATE)
    return Media(source, pcm, {"PCMU": ulaw_encode(pcm), "PCMA": alaw_encode(pcm)})


class MediaLoader:
    """Fetches and decodes sources, single-flight, keeping decoded media in a byte-bounded LRU."""

    def __init__(self, data_dir: str, fetch_timeout_s: float = 30.0, max_fetch_bytes: int = 250 << 20,
                 cache_bytes: int = 512 << 20) -> None:
        self.media_dir = Path(data_dir) / "media"
        self.fetch_timeout_s = fetch_timeout_s
        self.max_fetch_bytes = max_fetch_bytes
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, Media] = OrderedDict()
        self._cached_bytes = 0
        self._inflight: dict[str, asyncio.Future[Media]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.stats = {"fetches": 0, "cache_hits": 0, "decodes": 0, "failures": 0}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def load_source(self, spec: SourceSpec) -> asyncio.Future[Media]:
        """A future for one source's media (url, stored name or inline content)."""
        if spec.url is not None:
            return self.load(spec.url, "url")
        if spec.media is not None:
            return self.load(spec.media, "media")
        fut: asyncio.Future[Media] = asyncio.get_running_loop().create_future()
        try:
            fut.set_result(decode_wav(spec.content or b"", spec.describe()))
        except SourceError as exc:
            fut.set_exception(exc)
        return fut

    def load(self, key: str, kind: str) -> asyncio.Future[Media]:
        """A future for the media of a ``url`` or stored ``media`` name; shared by concurrent callers."""
        cache_key = f"{kind}:{key}"
        hit = self._cache.get(cache_key)
        loop = asyncio.get_running_loop()
        if hit is not None:
            self._cache.move_to_end(cache_key)
            self.stats["cache_hits"] += 1
            fut: asyncio.Future[Media] = loop.create_future()
            fut.set_result(hit)
            return fut
        pending = self._inflight.get(cache_key)
        if pending is not None:
            return pending
        fut = loop.create_future()
        self._inflight[cache_key] = fut
        loop.create_task(self._load(cache_key, key, kind, fut))
        return fut

    async def _load(self, cache_key: str, key: str, kind: str, fut: asyncio.Future[Media]) -> None:
        try:
            body = await (self._fetch(key) if kind == "url" else self._read_stored(key))
            self.stats["decodes"] += 1
            media = await asyncio.get_running_loop().run_in_executor(None, decode_wav, body, key)
        except SourceError as exc:
            self.stats["failures"] += 1
            fut.set_exception(exc)
        except Exception as exc:  # an unexpected failure still ends as a reasoned failed playback
            self.stats["failures"] += 1
            fut.set_exception(SourceError("internal_error", f"{key}: {type(exc).__name__}: {exc}"))
        else:
            self._remember(cache_key, media)
            fut.set_result(media)
        finally:
            self._inflight.pop(cache_key, None)

    def _remember(self, cache_key: str, media: Media) -> None:
        if media.size_bytes > self.cache_bytes:
            return
        self._cache[cache_key] = media
        self._cached_bytes += media.size_bytes
        while self._cached_bytes > self.cache_bytes and self._cache:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.size_bytes

    async def _read_stored(self, name: str) -> bytes:
        if not MEDIA_NAME.match(name) or ".." in name:
            raise SourceError("invalid_media_name", f"{name!r} is not a valid media name")
        path = self.media_dir / name
        try:
            return await asyncio.get_running_loop().run_in_executor(None, path.read_bytes)
        except FileNotFoundError as exc:
            raise SourceError("media_not_found", f"no stored media named {name!r}") from exc
        except OSError as exc:
            raise SourceError("read_error", f"cannot read media {name!r}: {exc}") from exc

    async def _fetch(self, url: str) -> bytes:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": "mediasrv/0.1 (+audio fetch)"})
        self.stats["fetches"] += 1
        timeout = aiohttp.ClientTimeout(total=self.fetch_timeout_s, sock_connect=5.0, sock_read=10.0)
        try:
            async with self._session.get(url, timeout=timeout, max_redirects=5) as resp:
                if resp.status != 200:
                    raise SourceError(f"http_{resp.status}", f"{url}: HTTP {resp.status} {resp.reason or ''}".strip())
                declared = resp.content_length
                if declared is not None and declared > self.max_fetch_bytes:
                    raise SourceError("too_large", f"{url}: {declared} bytes exceeds {self.max_fetch_bytes}")
                chunks, size = [], 0
                async for chunk in resp.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > self.max_fetch_bytes:
                        raise SourceError("too_large", f"{url}: more than {self.max_fetch_bytes} bytes")
                    chunks.append(chunk)
                body = b"".join(chunks)
                ctype = resp.headers.get("Content-Type", "no content type").split(";")[0].strip()
        except SourceError:
            raise
        except TimeoutError as exc:
            raise SourceError("fetch_timeout", f"{url}: no complete answer within {self.fetch_timeout_s} s") from exc
        except aiohttp.TooManyRedirects as exc:
            raise SourceError("too_many_redirects", f"{url}: more than 5 redirects") from exc
        except aiohttp.ClientConnectorError as exc:
            raise SourceError("unreachable", f"{url}: cannot connect: {exc.os_error or exc}") from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise SourceError("fetch_error", f"{url}: {type(exc).__name__}: {exc}") from exc
        kind = sniff(body)
        if kind in ("text", "unknown"):
            raise SourceError("not_audio", f"{ctype}, {len(body)} bytes, not audio")
        return body
