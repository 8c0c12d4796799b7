"""Decoding in worker processes, so the clock's thread never waits for a decoder.

Why not threads: the decoder does part of its work in Python (MP3 framing, WAV parsing) and
PyAV's calls hold the GIL at times; a decoding thread then makes the media clock's thread
wait for the GIL after its wake-ups, and a 1-hour decode moved other calls' p99 pacing from
~2 ms to ~11-15 ms (bench/first_packet.py).  A worker process shares no GIL, runs at a lower
CPU priority (nice +10), and a decoder that crashes on hostile input takes only the worker
down (that source fails with ``decode_error``; the next decode starts a new worker).

Protocol over one pipe per worker, one request at a time: ``("open", sid, kind, source, rate,
max_seconds, wide)``, ``("feed", sid, bytes)``, ``("finish", sid)``, ``("close", sid)``, ``("streams", 0)``
(how many decoders the worker holds open); answers
``("ok", payload)`` or ``("error", reason, message)``; ``feed``/``finish`` answer with
``(pcm int16 bytes, µ-law bytes, A-law bytes, G.722 bytes)`` (G.722 empty unless ``wide``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from .errors import SourceError

log = logging.getLogger("mediasrv.decode")

NICE = 10


def serve(conn: Connection) -> None:
    """The worker's loop (runs in the child process)."""
    try:
        os.nice(NICE)
    except OSError:
        pass
    from mediacodecs.g711 import alaw_encode, ulaw_encode

    from .decode import StreamDecoder

    decoders: dict[int, Any] = {}
    conn.send(("ok", "ready"))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        op, sid = msg[0], msg[1]
        try:
            if op == "open":
                decoders[sid] = StreamDecoder(*msg[2:])
                conn.send(("ok", None))
            elif op == "close":
                dropped = decoders.pop(sid, None)
                if dropped is not None and hasattr(dropped, "close"):
                    dropped.close()
                conn.send(("ok", None))
            elif op == "streams":
                conn.send(("ok", len(decoders)))
            else:
                dec = decoders[sid]
                pcm = dec.feed(msg[2]) if op == "feed" else dec.finish()
                if op == "finish":
                    decoders.pop(sid, None)
                g722 = dec.take_g722() if dec.wide else b""
                conn.send(("ok", (pcm.tobytes(), ulaw_encode(pcm), alaw_encode(pcm), g722)))
        except SourceError as exc:
            decoders.pop(sid, None)
            conn.send(("error", exc.reason, exc.message))
        except Exception as exc:  # noqa: BLE001 - any decoder failure is this source's failure
            decoders.pop(sid, None)
            conn.send(("error", "decode_error", f"{type(exc).__name__}: {exc}"))


class _Worker:
    """``python -m mediasrv.content.decode_worker FD``: a plain child process (not multiprocessing, whose
    spawn/forkserver would re-import the parent's ``__main__``), talking over a socketpair."""

    def __init__(self) -> None:
        mine, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # import what we imported
        self.proc = subprocess.Popen([sys.executable, "-m", "mediasrv.content.decode_worker", str(theirs.fileno())],
                                     pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)
        theirs.close()
        self.conn = Connection(mine.detach())
        self.lock = asyncio.Lock()
        self.ready = False
        self.streams = 0

    def check_ready(self) -> bool:
        """Non-blocking: has the worker finished its imports (its first message)?"""
        if not self.ready and self.conn.poll(0):
            self.conn.recv()
            self.ready = True
        return self.ready

    def roundtrip(self, msg: tuple[Any, ...]) -> tuple[Any, ...]:
        """Blocking (an I/O thread): wait for readiness once, send, receive."""
        if not self.ready:
            self.conn.recv()
            self.ready = True
        self.conn.send(msg)
        return self.conn.recv()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        try:
            self.conn.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(2)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(2)


class DecodeWorkers:
    """A few decoder processes; each stream stays on the worker that opened it."""

    def __init__(self, count: int = 1) -> None:
        self.count = count
        self._workers: list[_Worker] = []
        self._io = ThreadPoolExecutor(max(2, count * 2), "mediasrv-decode-io")
        self._ids = itertools.count(1)

    def start(self) -> None:
        """Start the workers now (they import numpy and PyAV: ~0.5 s of CPU each, off this process)."""
        while len(self._workers) < self.count:
            self._workers.append(_Worker())

    def close(self) -> None:
        for w in self._workers:
            w.stop()
        self._workers.clear()
        self._io.shutdown(wait=False, cancel_futures=True)

    def available(self) -> bool:
        """A worker is up and ready now (else the caller decodes in a thread rather than wait ~0.5 s)."""
        self._workers = [w for w in self._workers if w.alive]
        self.start()
        try:
            return any(w.check_ready() for w in self._workers)
        except (EOFError, OSError):
            return False

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.alive]

    async def open_streams(self) -> int:
        """How many decoders the live workers hold open, as the workers themselves count them
        (a cancelled load must leave none behind)."""
        total = 0
        for w in [w for w in self._workers if w.alive and w.ready]:
            total += await self._call(w, ("streams", 0), "streams")
        return total

    def _pick(self) -> _Worker:
        ready = [w for w in self._workers if w.alive and w.ready]
        if not ready:
            self._workers = [w for w in self._workers if w.alive]
            self.start()
            ready = self._workers
        return min(ready, key=lambda w: w.streams)

    async def _call(self, worker: _Worker, msg: tuple[Any, ...], source: str) -> Any:
        async with worker.lock:
            trip = asyncio.get_running_loop().run_in_executor(self._io, worker.roundtrip, msg)
            try:
                answer = await asyncio.shield(trip)
            except asyncio.CancelledError:
                # The load was cancelled mid-request: the I/O thread is still reading this answer.
                # Keep the pipe ours until it has (one step: bounded), or the next request on this
                # worker would read this one's answer.
                await _settle(trip)
                raise
            except (EOFError, OSError, BrokenPipeError) as exc:
                worker.stop()
                raise SourceError("decode_error", f"{source}: the decoder process died ({exc or 'EOF'})") from None
        if answer[0] == "error":
            raise SourceError(answer[1], answer[2])
        return answer[1]

    async def open(self, kind: str, source: str, rate: int, max_seconds: float, wide: bool = False) -> RemoteDecoder:
        worker = self._pick()
        sid = next(self._ids)
        await self._call(worker, ("open", sid, kind, source, rate, max_seconds, wide), source)
        worker.streams += 1
        return RemoteDecoder(self, worker, sid, source)


async def _settle(fut: asyncio.Future[Any]) -> None:
    """Wait for *fut* to finish, whatever it ends with, even if cancelled again meanwhile."""
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            continue
        except BaseException:  # noqa: BLE001 - its outcome is not ours to report
            break
    if not fut.cancelled():
        fut.exception()


class RemoteDecoder:
    """One stream's decoder in a worker: ``await step(chunk)`` → (samples, pcm, µ-law, A-law)."""

    def __init__(self, pool: DecodeWorkers, worker: _Worker, sid: int, source: str) -> None:
        self.pool, self.worker, self.sid, self.source = pool, worker, sid, source
        self.open = True

    async def step(self, chunk: bytes | None) -> tuple[np.ndarray, bytes, bytes, bytes]:
        msg = ("feed", self.sid, chunk) if chunk is not None else ("finish", self.sid)
        try:
            pcm, ulaw, alaw, g722 = await self.pool._call(self.worker, msg, self.source)
        except SourceError:
            self._closed()
            raise
        if chunk is None:
            self._closed()
        return np.frombuffer(pcm, np.int16), ulaw, alaw, g722

    def _closed(self) -> None:
        if self.open:
            self.open = False
            self.worker.streams -= 1

    async def close(self) -> None:
        if self.open:
            self._closed()
            try:
                await self.pool._call(self.worker, ("close", self.sid), self.source)
            except SourceError:
                pass
