"""The decoded-audio cache: RFC 9111 freshness, byte-bounded LRU in memory, a disk tier.

Keyed by URL or by a caller's cache id (a signed URL whose query rotates shares one entry).
What is cached is the *decoded* audio: a hit or a 304 revalidation costs no decode.  The
memory tier holds :class:`Media` (PCM plus its G.711 encodings); the disk tier under
``<data-dir>/cache`` holds the 8 kHz PCM as raw int16 with a JSON sidecar (validators,
freshness), re-encoded on load (a table lookup, ~0.1 s per hour of audio).
"""

from __future__ import annotations

import builtins
import email.utils
import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .fetch import public_url
from .source import Media

log = logging.getLogger("mediasrv.cache")

FORCED_TTL_S = 3600.0  # cache=true (Telnyx cache_audio) or a cache id (ACS) without freshness headers


def cache_key(url: str | None, cache_id: str | None) -> str:
    return f"id:{cache_id}" if cache_id else f"url:{url}"


def display_key(key: str) -> str:
    """A key as it may be shown: a URL key loses its query string (signed URLs carry secrets)."""
    return "url:" + public_url(key[4:]) if key.startswith("url:") else key


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return dt.timestamp() if dt is not None else None


def parse_cache_control(value: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for part in value.split(","):
        name, _, arg = part.strip().partition("=")
        if name:
            out[name.strip().lower()] = arg.strip().strip('"') if arg else None
    return out


@dataclass
class Freshness:
    """What a response allows: store it or not, and until when it is fresh (wall clock)."""

    store: bool
    fresh_until: float = 0.0  # 0 or in the past: stored but must be revalidated before use
    why: str = ""


def freshness(headers: Mapping[str, str], now: float, force: bool | None, cache_id: str | None,
              authorized: bool = False) -> Freshness:
    """RFC 9111 for a shared cache (s-maxage > max-age > Expires; Age subtracted; no-store, no-cache).

    Without any freshness information a response is stored only when the command asks
    (``force`` = Telnyx cache_audio, or a cache id = ACS, for :data:`FORCED_TTL_S`), or,
    when it carries a validator, stored stale so the next play revalidates (no decode on 304).
    ``no-store`` (and ``private``) always win.  A response to a request with credentials
    (*authorized*) is shared only if it says so (``public``, ``s-maxage``, ``must-revalidate``,
    RFC 9111 §3.5) or the command asked for caching.
    """
    if force is False:
        return Freshness(False, why="cache=false in the command")
    cc = parse_cache_control(headers.get("Cache-Control", ""))
    if "no-store" in cc or "private" in cc:
        return Freshness(False, why="Cache-Control: " + ("no-store" if "no-store" in cc else "private"))
    if authorized and not (force or cache_id) and not {"public", "s-maxage", "must-revalidate"} & cc.keys():
        return Freshness(False, why="a response to credentials, not marked shareable")
    date = _http_date(headers.get("Date")) or now
    try:
        age = max(0.0, float(headers.get("Age", "0")), now - date)
    except ValueError:
        age = max(0.0, now - date)
    lifetime: float | None = None
    for directive in ("s-maxage", "max-age"):
        if directive in cc:
            try:
                lifetime = max(0.0, float(cc[directive] or "0"))
            except ValueError:
                lifetime = 0.0
            break
    if lifetime is None and "Expires" in headers:
        expires = _http_date(headers["Expires"])
        lifetime = max(0.0, expires - date) if expires is not None else 0.0  # invalid Expires = already stale
    validators = "ETag" in headers or "Last-Modified" in headers
    if "no-cache" in cc:
        return Freshness(True, 0.0, "no-cache: revalidate on every use")
    if lifetime is not None:
        if lifetime - age <= 0 and not validators and not (force or cache_id):
            return Freshness(False, why="already stale and no validator")
        return Freshness(True, now + lifetime - age, f"fresh for {max(0.0, lifetime - age):g} s")
    if force or cache_id:
        return Freshness(True, now + FORCED_TTL_S, "cached on request for 1 hour")
    if validators:
        return Freshness(True, 0.0, "validator only: revalidate on every use")
    return Freshness(False, why="no caching headers")


@dataclass
class CacheEntry:
    key: str
    source: str  # the URL without its query string
    samples: int
    stored_at: float
    fresh_until: float
    etag: str | None = None
    last_modified: str | None = None
    nbytes: int = 0  # memory bytes (PCM + encodings) while in memory, else PCM bytes on disk
    on_disk: bool = False
    hits: int = 0

    def fresh(self, now: float) -> bool:
        return now < self.fresh_until

    @property
    def has_validator(self) -> bool:
        return bool(self.etag or self.last_modified)

    def conditional_headers(self) -> dict[str, str]:
        h = {}
        if self.etag:
            h["If-None-Match"] = self.etag
        if self.last_modified:
            h["If-Modified-Since"] = self.last_modified
        return h

    def to_dict(self, in_memory: bool) -> dict[str, Any]:
        return {
            "key": display_key(self.key),
            "source": self.source,
            "bytes": self.nbytes,
            "duration_ms": self.samples // 8,
            "stored_at": self.stored_at,
            "expires": self.fresh_until if self.fresh_until != float("inf") else None,
            "fresh": self.fresh(time.time()),
            "validators": {"etag": self.etag, "last_modified": self.last_modified},
            "in_memory": in_memory,
            "on_disk": self.on_disk,
            "hits": self.hits,
        }


class AudioCache:
    """Entries and their decoded audio; memory LRU bounded by bytes, disk tier bounded by bytes.

    Pure bookkeeping plus blocking disk helpers (``write_disk``/``read_disk``/``delete_disk``)
    that the loader runs in an executor.  The media type is opaque here except for ``pcm`` and
    ``size_bytes``.
    """

    def __init__(self, directory: str | Path, memory_bytes: int, disk_bytes: int) -> None:
        self.dir = Path(directory)
        self.memory_bytes = memory_bytes
        self.disk_bytes = disk_bytes
        self.entries: dict[str, CacheEntry] = {}
        self._memory: OrderedDict[str, Media] = OrderedDict()
        self._memory_used = 0
        self._disk_used = 0
        self._load_index()

    # -- lookups -------------------------------------------------------------
    def get(self, key: str) -> CacheEntry | None:
        return self.entries.get(key)

    def media(self, key: str) -> Media | None:
        media = self._memory.get(key)
        if media is not None:
            self._memory.move_to_end(key)
        return media

    def list(self) -> list[dict[str, Any]]:
        """URL and cache-id entries (decoded copies of stored media are internal)."""
        return [e.to_dict(k in self._memory) for k, e in self.entries.items() if not k.startswith("media:")]

    @property
    def memory_used(self) -> int:
        return self._memory_used

    @property
    def disk_used(self) -> int:
        return self._disk_used

    # -- updates -------------------------------------------------------------
    def put(self, entry: CacheEntry, media: Media) -> bool:
        """Record *entry*; keep *media* in memory if it fits the budget.  True: write it to disk too."""
        old = self.entries.get(entry.key)
        if old is not None:
            self._drop_memory(entry.key)
            entry.hits = old.hits
            if old.on_disk:
                self._disk_used -= old.samples * 2
                old.on_disk = False
        self.entries[entry.key] = entry
        size = media.size_bytes
        if size <= self.memory_bytes:
            self._memory[entry.key] = media
            self._memory_used += size
            entry.nbytes = size
            while self._memory_used > self.memory_bytes and self._memory:
                victim, _ = next(iter(self._memory.items()))
                self._drop_memory(victim)
        else:
            entry.nbytes = entry.samples * 2
        return entry.samples * 2 <= self.disk_bytes

    def keep_in_memory(self, key: str, media: Media) -> None:
        """A disk entry was just loaded: keep it in memory too if it fits."""
        if key in self.entries and key not in self._memory and media.size_bytes <= self.memory_bytes:
            self._memory[key] = media
            self._memory_used += media.size_bytes
            while self._memory_used > self.memory_bytes and self._memory:
                self._drop_memory(next(iter(self._memory)))

    def refresh(self, key: str, fresh: Freshness, etag: str | None, last_modified: str | None) -> None:
        """A 304: the stored audio is still right; take the new freshness and validators."""
        entry = self.entries.get(key)
        if entry is None:
            return
        entry.fresh_until = fresh.fresh_until
        entry.etag = etag or entry.etag
        entry.last_modified = last_modified or entry.last_modified

    def remove(self, key: str) -> CacheEntry | None:
        self._drop_memory(key)
        entry = self.entries.pop(key, None)
        if entry is not None and entry.on_disk:
            self._disk_used -= entry.samples * 2
        return entry

    def _drop_memory(self, key: str) -> None:
        media = self._memory.pop(key, None)
        if media is not None:
            self._memory_used -= media.size_bytes
            entry = self.entries.get(key)
            if entry is not None:
                if entry.on_disk:
                    entry.nbytes = entry.samples * 2
                else:  # neither in memory nor on disk: the entry is gone
                    self.entries.pop(key, None)

    # -- disk tier (blocking: run in an executor) ------------------------------
    def _paths(self, key: str) -> tuple[Path, Path]:
        h = hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.dir / f"{h}.pcm", self.dir / f"{h}.json"

    def _load_index(self) -> None:
        if not self.dir.is_dir():
            return
        for meta in self.dir.glob("*.json"):
            try:
                data = json.loads(meta.read_text())
                entry = CacheEntry(**data)
                pcm_path, _ = self._paths(entry.key)
                if pcm_path.stat().st_size != entry.samples * 2:
                    raise ValueError("size mismatch")
            except (OSError, ValueError, TypeError) as exc:
                log.warning("dropping unreadable cache entry %s: %s", meta.name, exc)
                meta.unlink(missing_ok=True)
                meta.with_suffix(".pcm").unlink(missing_ok=True)
                continue
            entry.on_disk, entry.nbytes = True, entry.samples * 2
            self.entries[entry.key] = entry
            self._disk_used += entry.nbytes

    def sidecar(self, entry: CacheEntry) -> dict[str, Any]:
        data = asdict(entry)
        data.pop("on_disk"), data.pop("nbytes")
        return data

    def write_sidecar(self, key: str, sidecar: dict[str, Any]) -> None:
        """Blocking: (re)write an entry's JSON sidecar atomically."""
        _, meta = self._paths(key)
        tmp = meta.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(sidecar))
        os.replace(tmp, meta)

    def write_files(self, key: str, pcm: np.ndarray, sidecar: dict[str, Any]) -> None:
        """Blocking: write the PCM then the sidecar, each atomically (temp file + rename)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        pcm_path, _ = self._paths(key)
        tmp = pcm_path.with_suffix(".pcm.tmp")
        pcm.astype("<i2", copy=False).tofile(tmp)
        os.replace(tmp, pcm_path)
        self.write_sidecar(key, sidecar)

    def written(self, entry: CacheEntry) -> builtins.list[str]:
        """Bookkeeping after :meth:`write_files`: evicts the oldest disk entries past the budget.

        Returns the keys whose files must now be deleted (:meth:`delete_files`).
        """
        if self.entries.get(entry.key) is not entry:  # replaced or purged meanwhile
            return [entry.key] if entry.key not in self.entries else []
        entry.on_disk = True
        self._disk_used += entry.samples * 2
        victims = sorted((e for e in self.entries.values() if e.on_disk and e is not entry), key=lambda e: e.stored_at)
        doomed = []
        while self._disk_used > self.disk_bytes and victims:
            victim = victims.pop(0)
            victim.on_disk = False
            self._disk_used -= victim.samples * 2
            if victim.key not in self._memory:
                self.entries.pop(victim.key, None)
            doomed.append(victim.key)
        return doomed

    def delete_files(self, key: str) -> None:
        """Blocking: remove an entry's files."""
        for p in self._paths(key):
            p.unlink(missing_ok=True)

    def read_pcm(self, key: str) -> np.ndarray:
        """Blocking: the stored PCM of *key*."""
        pcm_path, _ = self._paths(key)
        return np.fromfile(pcm_path, dtype="<i2").astype(np.int16, copy=False)
