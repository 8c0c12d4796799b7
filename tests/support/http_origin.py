"""A real aiohttp origin server for fetch and cache tests: per-path behaviours, request counting.

Each path gets a handler built by one of the helpers (static body with chosen headers,
redirect, slow drip, truncated body, endless chunked body, stall before headers), and every
request is recorded (path, headers) so tests can count origin hits and inspect what was sent.
"""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import soundfile
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def wav(pcm: np.ndarray, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, pcm, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def tone(seconds: float, rate: int = 8000, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    return (np.clip(0.3 * np.sin(2 * np.pi * freq * t) + noise, -1, 1) * 32767).astype(np.int16)


@dataclass
class Transfer:
    """One response a trickling route served: how far it got and when the client went away."""

    total: int
    started: float
    sent: int = 0  # body bytes handed to the socket
    finished: bool = False  # the whole body was sent
    closed_at: float | None = None  # loop time at which the client's disconnect was seen


@dataclass
class Origin:
    base: str = ""
    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    def hits(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    def headers_of(self, path: str) -> list[dict[str, str]]:
        return [h for p, h in self.requests if p == path]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.headers)))
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="not found")
        return await handler(request)

    async def start(self) -> Origin:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{self.port}"
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # -- behaviours -------------------------------------------------------------
    def static(self, path: str, body: bytes, content_type: str | None = "audio/wav",
               headers: dict[str, str] | None = None, etag: str | None = None,
               last_modified: str | None = None) -> str:
        """A fixed body; answers conditional requests with 304 when the validator matches."""

        async def handler(request: web.Request) -> web.StreamResponse:
            h = dict(headers or {})
            if etag:
                h["ETag"] = etag
            if last_modified:
                h["Last-Modified"] = last_modified
            inm, ims = request.headers.get("If-None-Match"), request.headers.get("If-Modified-Since")
            if (etag and inm == etag) or (not etag and last_modified and ims == last_modified):
                return web.Response(status=304, headers=h)
            if content_type is not None:
                h["Content-Type"] = content_type
            return web.Response(body=body, headers=h)

        self.routes[path] = handler
        return self.url(path)

    def status(self, path: str, code: int, text: str = "error") -> str:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(status=code, text=text)

        self.routes[path] = handler
        return self.url(path)

    def redirect(self, path: str, location: str, code: int = 302) -> str:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(status=code, headers={"Location": location})

        self.routes[path] = handler
        return self.url(path)

    def echo_auth(self, path: str, body: bytes) -> str:
        """200 with *body* only when a Basic Authorization header came; 401 otherwise."""

        async def handler(request: web.Request) -> web.StreamResponse:
            if not request.headers.get("Authorization", "").startswith("Basic "):
                return web.Response(status=401, text="who are you")
            return web.Response(body=body, content_type="audio/wav")

        self.routes[path] = handler
        return self.url(path)

    def stall(self, path: str, seconds: float) -> str:
        """No response headers for *seconds*."""

        async def handler(request: web.Request) -> web.StreamResponse:
            await asyncio.sleep(seconds)
            return web.Response(body=b"late", content_type="audio/wav")

        self.routes[path] = handler
        return self.url(path)

    def drip(self, path: str, body: bytes, piece: int, every_s: float, content_type: str = "audio/wav") -> str:
        """Headers at once, then *piece* bytes every *every_s* seconds."""

        async def handler(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": content_type})
            resp.content_length = len(body)
            await resp.prepare(request)
            for i in range(0, len(body), piece):
                await resp.write(body[i:i + piece])
                await asyncio.sleep(every_s)
            return resp

        self.routes[path] = handler
        return self.url(path)

    def trickle(self, path: str, body: bytes, piece: int, every_s: float, content_type: str = "audio/wav",
                poll_s: float = 0.02) -> str:
        """Like :meth:`drip`, recording each response in ``transfers[path]``: bytes sent, and when the
        client disconnected (checked at least every *poll_s*, so ``closed_at`` is that precise)."""
        self.transfers: dict[str, list[Transfer]] = getattr(self, "transfers", {})

        async def handler(request: web.Request) -> web.StreamResponse:
            loop = asyncio.get_running_loop()
            t = Transfer(total=len(body), started=loop.time())
            self.transfers.setdefault(path, []).append(t)
            resp = web.StreamResponse(headers={"Content-Type": content_type})
            resp.content_length = len(body)
            await resp.prepare(request)

            def gone() -> bool:
                return request.transport is None or request.transport.is_closing()

            try:
                for i in range(0, len(body), piece):
                    if gone():
                        raise ConnectionResetError
                    await resp.write(body[i:i + piece])
                    t.sent += len(body[i:i + piece])
                    waited = 0.0
                    while waited < every_s:
                        await asyncio.sleep(min(poll_s, every_s - waited))
                        waited += poll_s
                        if gone():
                            raise ConnectionResetError
                t.finished = True
            except (ConnectionError, RuntimeError):
                t.closed_at = loop.time()
            return resp

        self.routes[path] = handler
        return self.url(path)

    def truncated(self, path: str, body: bytes, send: int, content_type: str = "audio/wav") -> str:
        """Declares ``len(body)`` bytes, sends *send* of them, then drops the connection."""

        async def handler(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": content_type})
            resp.content_length = len(body)
            await resp.prepare(request)
            await resp.write(body[:send])
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.close()
            return resp

        self.routes[path] = handler
        return self.url(path)

    def endless(self, path: str, head: bytes, content_type: str = "audio/wav", total: int = 10 << 30) -> str:
        """A chunked body of *head* then zeros, up to *total* bytes (10 GB by default); counts what it sent."""
        self.sent: dict[str, int] = getattr(self, "sent", {})

        async def handler(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": content_type})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            block = bytes(1 << 16)
            await resp.write(head)
            sent = len(head)
            try:
                while sent < total:
                    await resp.write(block)
                    sent += len(block)
                    self.sent[path] = sent
            except (ConnectionResetError, ConnectionError, RuntimeError):
                pass
            return resp

        self.routes[path] = handler
        return self.url(path)


def wav_header(rate: int = 8000, data_bytes: int = 0xFFFFFFF0) -> bytes:
    """A 16-bit mono WAV header claiming *data_bytes* of audio (e.g. 4 GB)."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", min(data_bytes + 36, 0xFFFFFFFF)) + b"WAVE"
            + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_bytes))
