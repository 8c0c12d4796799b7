"""Durable event journal: CRC-framed JSON lines in rotating segments under ``<data-dir>/events/``.

Three kinds of record go in, in the order they happened:

- ``{"t": "e", ...}`` an event (its ``seq`` is restored from here after a restart; SSE clients resume from it),
- ``{"t": "d", "id", "sink", "key", "url", "method", "label", "spec", "n"}`` a webhook delivery that is owed,
- ``{"t": "r", "id", "ok", "reason"}`` that delivery's outcome (2xx, or retries exhausted / refused).

A delivery with a ``d`` and no ``r`` is *pending*: on startup it is handed back to its sink and re-sent.

Each line is ``<crc32 of the JSON, 8 hex digits> <JSON>\\n``.  A line cut short by a crash, or damaged
on disk, fails its CRC (or has no newline) and is skipped and counted; it never stops startup.  Every
start opens a fresh segment, so a torn tail is never appended to.

Writing happens in one thread: the event loop only encodes a record (a ``json.dumps`` of a small dict)
and appends the line to a deque; the thread writes whatever has accumulated as one batch, at most every
``batch_window_s`` (5 ms: waking per record made the thread and the loop trade the GIL thousands of times a
second; measured in ``bench/event_journal.py``).  The loop never waits for the disk, and a slow or full
disk never touches the media clock.

**fsync policy.**  Every batch is ``write()``-n to the kernel within about 5 ms of the event, so a crash
or ``SIGKILL`` of mediasrv loses nothing the loop handed over more than that long ago (the page cache
survives the process).  ``fsync`` runs at most once per ``fsync_interval_s`` (default 1 s), on rotation, before an old
segment's pending deliveries are dropped from it, and at close: a power loss or kernel panic may lose the
last interval.  Webhooks are at-least-once already (a receiver's 2xx can be lost before its ``r`` record
is written) and carry stable ids, so this trades the last second on power loss for not paying a disk
flush per event; ``fsync_interval_s = 0`` flushes every batch for those who want it (see
``bench/event_journal.py`` for both costs).

Retention: segments rotate at ``segment_bytes``; the oldest are deleted while the total exceeds
``max_bytes`` or they are older than ``max_age_s``.  Pending deliveries in a segment about to be deleted
are first copied forward into the current one, so retention never loses an owed webhook.

If the directory cannot be created or written (read-only, full disk), the journal logs an error, reports
``state`` ``"unavailable"`` / ``"failing"`` (shown in ``/healthz`` and ``/metrics``) and drops records
while webhooks go on being delivered from memory; a failing writer retries a fresh segment every few
seconds and, once it works, re-writes every delivery still pending.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("mediasrv.eventlog")

SEGMENT_RE = re.compile(r"^(\d{8})-(\d{12})\.jsonl$")
RETRY_AFTER_ERROR_S = 5.0


# -- the line codec -------------------------------------------------------------------------------
def encode_record(record: dict[str, Any]) -> bytes:
    """One journal line: CRC32 (hex) of the compact JSON, a space, the JSON, a newline."""
    payload = json.dumps(record, separators=(",", ":")).encode()  # ASCII: lone surrogates cannot break it
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def decode_line(line: bytes) -> dict[str, Any] | None:
    """The record of one line (with or without its newline), or None if it is torn or damaged."""
    if line.endswith(b"\n"):
        line = line[:-1]
    if len(line) < 10 or line[8:9] != b" ":
        return None
    payload = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(payload):
            return None
        record = json.loads(payload)
    except ValueError:  # bad hex, bad UTF-8, bad JSON
        return None
    return record if isinstance(record, dict) else None


def line_intact(line: bytes) -> bool:
    """The CRC check alone (no JSON parse): enough for records whose content a scan does not need."""
    if line.endswith(b"\n"):
        line = line[:-1]
    try:
        return len(line) >= 10 and line[8:9] == b" " and int(line[:8], 16) == zlib.crc32(line[9:])
    except ValueError:
        return False


def iter_lines(data: bytes) -> Iterator[tuple[bytes, bool]]:
    """Each line of a segment and whether it was complete (a crash can leave the last one without newline)."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            yield data[start:], False
            return
        yield data[start : end + 1], True
        start = end + 1


# -- settings and recovery ------------------------------------------------------------------------
@dataclass
class JournalSettings:
    dir: Path
    segment_bytes: int = 4 * 1024 * 1024
    max_bytes: int = 64 * 1024 * 1024
    max_age_s: float = 7 * 86400.0
    fsync_interval_s: float = 1.0  # 0: fsync every batch
    batch_window_s: float = 0.005  # the thread wakes at most this often: fewer, larger batches, less GIL traffic
    queue_limit: int = 200_000  # records waiting for the thread; beyond it they are dropped (and counted)


@dataclass
class Recovered:
    """What a start found on disk."""

    last_seq: int = 0
    last_n: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)  # "d" records without an outcome, in n order
    corrupt_lines: int = 0
    segments: int = 0
    records: int = 0


@dataclass
class _Segment:
    no: int
    base_seq: int
    path: Path
    size: int
    mtime: float


class Journal:
    """The journal of one server.  ``open`` and ``close`` block (call them from an executor);
    ``append`` is what the event loop calls, and it never blocks."""

    def __init__(self, settings: JournalSettings) -> None:
        self.settings = settings
        self.state = "closed"  # closed | ok | failing | unavailable
        self.error: str | None = None
        self.stats = {"appended": 0, "written": 0, "batches": 0, "fsyncs": 0, "write_errors": 0, "dropped": 0,
                      "corrupt_lines": 0, "unencodable": 0, "segments_deleted": 0, "carried_forward": 0}
        self._queue: deque[tuple[str, str, bytes]] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._segments: list[_Segment] = []
        self._fh: Any = None  # the open segment (binary, unbuffered writes of whole batches)
        self._pending: dict[str, tuple[int, bytes]] = {}  # delivery id -> (segment no, its "d" line)
        self._last_seq = 0
        self._n = 0
        self._last_fsync = 0.0
        self._retry_at = 0.0
        self._lock_fd: int | None = None

    # -- loop side -------------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        return self.state in ("ok", "failing")

    def next_n(self) -> int:
        """The outbox order of a new delivery (kept across restarts)."""
        self._n += 1
        return self._n

    def append(self, record: dict[str, Any]) -> None:
        """Queue one record for the writer thread (encoding happens here, the disk I/O there)."""
        if not self.writable or len(self._queue) >= self.settings.queue_limit:
            self.stats["dropped"] += 1
            return
        kind = record.get("t", "")
        try:
            line = encode_record(record)
        except (TypeError, ValueError) as exc:  # not JSON (a producer put an object in data): never raise
            self.stats["unencodable"] += 1
            log.warning("event journal: record %s not journaled: %s", record.get("id"), exc)
            return
        self._queue.append((kind, str(record.get("id", "")) if kind != "e" else str(record.get("seq", 0)), line))
        self.stats["appended"] += 1
        if not self._wake.is_set():
            self._wake.set()

    # -- open / close (blocking) -----------------------------------------------------------------
    def open(self) -> Recovered:
        """Scan every segment, start a fresh one and the writer thread; on an OSError become unavailable."""
        rec = Recovered()
        try:
            self.settings.dir.mkdir(parents=True, exist_ok=True)
            self._lock()
            rec = self._recover()
            self._open_segment()
        except OSError as exc:
            self._unlock()
            self.state, self.error = "unavailable", f"{type(exc).__name__}: {exc}"
            log.error("event journal in %s unavailable, events and webhooks stay in memory only: %s",
                      self.settings.dir, self.error)
            return rec
        self.state = "ok"
        self._thread = threading.Thread(target=self._run, name="event-journal", daemon=True)
        self._thread.start()
        return rec

    def _lock(self) -> None:
        """One process per journal: a second server on the same data dir would re-send the same owed
        webhooks and write into the same segment names."""
        fd = os.open(self.settings.dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BlockingIOError(f"{self.settings.dir} is in use by another mediasrv process") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    def close(self) -> None:
        """Write what is queued, fsync, stop the thread."""
        if self._thread is not None:
            self._stop = True
            self._wake.set()
            self._thread.join(timeout=30)
            self._thread = None
        if self._fh is not None:
            try:
                self._write_batch()
                self._fsync()
                self._fh.close()
            except OSError as exc:
                log.error("event journal: closing failed: %s", exc)
            self._fh = None
        self._unlock()
        if self.state != "unavailable":
            self.state = "closed"

    # -- reading (blocking; for executors) -------------------------------------------------------
    def read_events(self, since: int, call_id: str | None = None, limit: int = 10_000) -> list[dict[str, Any]]:
        """Journaled events with ``seq > since`` in order (at most *limit*); torn lines are skipped."""
        out: list[dict[str, Any]] = []
        segments = self._list_segments() if self.state != "unavailable" else []
        for i, seg in enumerate(segments):
            nxt = segments[i + 1].base_seq if i + 1 < len(segments) else None
            if nxt is not None and nxt <= since:
                continue  # everything in it is at or before `since`
            try:
                data = seg.path.read_bytes()
            except OSError:
                continue  # deleted by retention meanwhile
            for line, _complete in iter_lines(data):
                record = decode_line(line)
                if record is None or record.get("t") != "e" or record.get("seq", 0) <= since:
                    continue
                if call_id is not None and record.get("call_id") != call_id:
                    continue
                record.pop("t", None)
                out.append(record)
                if len(out) >= limit:
                    return out
        return out

    # -- internals (writer thread, or open/close before/after it runs) ----------------------------
    def _list_segments(self) -> list[_Segment]:
        segments = []
        for entry in os.scandir(self.settings.dir):
            m = SEGMENT_RE.match(entry.name)
            if m and entry.is_file():
                st = entry.stat()
                segments.append(_Segment(int(m[1]), int(m[2]), Path(entry.path), st.st_size, st.st_mtime))
        return sorted(segments, key=lambda s: s.no)

    def _recover(self) -> Recovered:
        rec = Recovered()
        self._segments = self._list_segments()
        rec.segments = len(self._segments)
        pending: dict[str, tuple[int, bytes, dict[str, Any]]] = {}
        for k, seg in enumerate(self._segments):
            rec.last_seq = max(rec.last_seq, seg.base_seq)
            # the next segment's name holds the highest seq written before it: older segments' events
            # need only their CRC checked, not a JSON parse (a third of the scan)
            skim = k + 1 < len(self._segments)
            for line, complete in iter_lines(seg.path.read_bytes()):
                if skim and complete and line[9:17] == b'{"t":"e"':
                    if line_intact(line):
                        rec.records += 1
                    else:
                        rec.corrupt_lines += 1
                    continue
                record = decode_line(line) if complete else None
                if record is None:
                    rec.corrupt_lines += 1
                    continue
                rec.records += 1
                kind = record.get("t")
                if kind == "e":
                    rec.last_seq = max(rec.last_seq, int(record.get("seq", 0)))
                elif kind == "h":
                    rec.last_seq = max(rec.last_seq, int(record.get("seq", 0)))
                    rec.last_n = max(rec.last_n, int(record.get("n", 0)))
                elif kind == "d":
                    rec.last_n = max(rec.last_n, int(record.get("n", 0)))
                    pending[str(record.get("id"))] = (seg.no, line, record)
                elif kind == "r":
                    pending.pop(str(record.get("id")), None)
        rec.pending = sorted((r for _, _, r in pending.values()), key=lambda r: int(r.get("n", 0)))
        self._pending = {i: (no, line) for i, (no, line, _) in pending.items()}
        self._last_seq, self._n = rec.last_seq, rec.last_n
        self.stats["corrupt_lines"] += rec.corrupt_lines
        if rec.corrupt_lines:
            log.warning("event journal: skipped %d torn or damaged line(s) in %s", rec.corrupt_lines, self.settings.dir)
        return rec

    def _open_segment(self) -> None:
        no = self._segments[-1].no + 1 if self._segments else 1
        path = self.settings.dir / f"{no:08d}-{self._last_seq:012d}.jsonl"
        fh = open(path, "ab", buffering=0)  # noqa: SIM115 - lives until rotation
        header = encode_record({"t": "h", "v": 1, "seq": self._last_seq, "n": self._n, "at": time.time()})
        fh.write(header)
        self._fh = fh
        self._segments.append(_Segment(no, self._last_seq, path, len(header), time.time()))

    def _run(self) -> None:
        interval = self.settings.fsync_interval_s
        last_batch = 0.0
        while True:
            self._wake.wait(timeout=interval if interval > 0 else 1.0)
            linger = last_batch + self.settings.batch_window_s - time.monotonic()
            if linger > 0 and not self._stop:
                time.sleep(linger)  # let the batch grow (releases the GIL; the loop keeps running)
            self._wake.clear()
            last_batch = time.monotonic()
            if self._stop:
                return  # close() writes the rest on its own thread after join
            try:
                if self._fh is None:
                    if time.monotonic() < self._retry_at:
                        self._drop_queue()
                        continue
                    self._reopen_after_error()
                wrote = self._write_batch()
                now = time.monotonic()
                if wrote and (interval <= 0 or now - self._last_fsync >= interval):
                    self._fsync()
            except OSError as exc:
                self._fail(exc)

    def _write_batch(self) -> bool:
        """Write everything queued, rotating (and applying retention) whenever a segment fills up."""
        lines: list[bytes] = []
        size = self._segments[-1].size
        queue = self._queue
        wrote = False
        while queue:
            kind, key, line = queue.popleft()
            if kind == "d":
                self._pending[key] = (self._segments[-1].no, line)
            elif kind == "r":
                self._pending.pop(key, None)
            elif kind == "e":
                self._last_seq = max(self._last_seq, int(key))
            lines.append(line)
            size += len(line)
            if size >= self.settings.segment_bytes:
                self._write(lines)
                lines, wrote = [], True
                self._rotate()
                size = self._segments[-1].size
        if lines:
            self._write(lines)
            wrote = True
        return wrote

    def _write(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        view = memoryview(data)
        while view:  # unbuffered: a short write is possible on a nearly full disk
            n = self._fh.write(view)
            view = view[n:]
        self._segments[-1].size += len(data)
        self.stats["written"] += len(lines)
        self.stats["batches"] += 1

    def _fsync(self) -> None:
        if self._fh is not None:
            os.fsync(self._fh.fileno())
            self.stats["fsyncs"] += 1
            self._last_fsync = time.monotonic()

    def _rotate(self) -> None:
        self._fsync()
        self._fh.close()
        self._fh = None
        self._open_segment()
        self._retain()

    def _retain(self) -> None:
        now = time.time()
        while len(self._segments) > 1:
            # the cap holds with the current segment full, too
            total = sum(s.size for s in self._segments[:-1]) + self.settings.segment_bytes
            oldest = self._segments[0]
            if total <= self.settings.max_bytes and now - oldest.mtime <= self.settings.max_age_s:
                return
            owed = [(i, line) for i, (no, line) in self._pending.items() if no <= oldest.no]
            if owed:  # copy the deliveries still owed forward before their only copy goes
                current = self._segments[-1]
                data = b"".join(line for _, line in owed)
                self._fh.write(data)
                current.size += len(data)
                for i, line in owed:
                    self._pending[i] = (current.no, line)
                self.stats["carried_forward"] += len(owed)
                self._fsync()
            oldest.path.unlink(missing_ok=True)
            self._segments.pop(0)
            self.stats["segments_deleted"] += 1

    def _fail(self, exc: OSError) -> None:
        self.stats["write_errors"] += 1
        if self.state != "failing":
            log.error("event journal: writing to %s failed, events and webhooks continue in memory only "
                      "(retrying every %.0f s): %s", self.settings.dir, RETRY_AFTER_ERROR_S, exc)
        self.state, self.error = "failing", f"{type(exc).__name__}: {exc}"
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None  # never append after a torn write: the next attempt starts a new segment
        self._drop_queue()
        self._retry_at = time.monotonic() + RETRY_AFTER_ERROR_S

    def _drop_queue(self) -> None:
        while self._queue:
            kind, key, _line = self._queue.popleft()
            if kind == "d":
                self._pending[key] = (-1, _line)  # owed, but only in memory until the journal works again
            elif kind == "r":
                self._pending.pop(key, None)
            elif kind == "e":
                self._last_seq = max(self._last_seq, int(key))
            self.stats["dropped"] += 1

    def _reopen_after_error(self) -> None:
        self._segments = self._list_segments()
        self._open_segment()
        if self._pending:  # every delivery still owed goes into the new segment, so none is lost
            current = self._segments[-1]
            data = b"".join(line for _, line in self._pending.values())
            self._fh.write(data)
            current.size += len(data)
            self._pending = {i: (current.no, line) for i, (_, line) in self._pending.items()}
        self._fsync()
        log.warning("event journal: writing to %s works again", self.settings.dir)
        self.state, self.error = "ok", None
