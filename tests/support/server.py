"""A real mediasrv for a test (in-process or as ``python -m mediasrv serve``) and the real HTTP
peers around it: audio origins and webhook receivers, each one aiohttp app on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from mediasrv.config import Settings
from mediasrv.demo import free_port_pair
from mediasrv.server import Server

from .paths import REPO
from .ports import free_tcp_udp_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve_app(app: web.Application) -> tuple[web.AppRunner, str]:
    """Start *app* on a free loopback port; returns the runner (for cleanup) and its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


@contextlib.asynccontextmanager
async def receiver(method: str, path: str, handler: Handler) -> AsyncIterator[str]:
    """One route served on a free loopback port for the block; yields the base URL.

    Every recorder the tests use (webhooks, vendor callbacks, audio origins) is served this way."""
    app = web.Application()
    app.router.add_route(method, path, handler)
    runner, base = await serve_app(app)
    try:
        yield base
    finally:
        await runner.cleanup()


@dataclass
class AudioOrigin:
    """A real aiohttp server serving audio (and not-audio) for playback URLs."""

    base: str
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, body: bytes, content_type: str = "audio/wav") -> str:
        self.files[name] = (body, content_type)
        return f"{self.base}/{name}"

    async def serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] = self.hits.get(name, 0) + 1
        if name == "slow.wav":
            await asyncio.sleep(60)
        if name not in self.files:
            return web.Response(status=404, text="not here")
        body, ctype = self.files[name]
        return web.Response(body=body, content_type=ctype)


@dataclass
class Hooks:
    """The native dialect's webhooks as received (JSON bodies, in order)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def receive(self, request: web.Request) -> web.Response:
        self.events.append(await request.json())
        return web.Response(status=204)

    def of(self, call_id: str) -> list[str]:
        return [e["type"] for e in self.events if e["call_id"] == call_id]

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for e in self.events:
                if pred(e):
                    return e
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no matching event within {timeout}s; got {[e['type'] for e in self.events]}")
            await asyncio.sleep(0.02)


@dataclass
class Running:
    server: Server
    http: str
    sip_port: int
    data_dir: Path


async def start_server(tmp_path: Path, webhook_url: str | None = None, **overrides: Any) -> Running:
    media = tmp_path / "data" / "media"
    media.mkdir(parents=True, exist_ok=True)
    lo = free_port_pair()
    settings = Settings(
        sip=f"127.0.0.1:{free_tcp_udp_port()}",
        http="127.0.0.1:0",
        rtp_ports=f"{lo}-{lo + 400}",
        data_dir=str(tmp_path / "data"),
        webhook_url=webhook_url,
        # everything in these tests lives on loopback, which the egress policy refuses unless allowed
        **{"fetch_allow_cidrs": ["127.0.0.0/8", "::1/128"], "webhook_allow_cidrs": ["127.0.0.0/8", "::1/128"],
           **overrides},
    )
    server = Server(settings)
    await server.start()
    host, port = server.http_address  # type: ignore[misc]
    return Running(server, f"http://{host}:{port}", server.sip.address[1], tmp_path / "data")


async def hang_up_all(r: Running) -> None:
    for call in list(r.server.registry.active()):
        await r.server.sip.hangup(call.call_id, cause="normal_clearing", by="api")


async def wait_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = pred()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def start_serve(tmp_path, *args: str, env: dict[str, str] | None = None):
    """``python -m mediasrv serve`` on free loopback ports; returns (process, http base, sip port)."""
    sip_port, http_port, lo = free_tcp_udp_port(), free_tcp_udp_port(), free_port_pair()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mediasrv", "serve", "--sip", f"127.0.0.1:{sip_port}", "--http",
        f"127.0.0.1:{http_port}", "--rtp-ports", f"{lo}-{lo + 20}", "--data-dir", str(tmp_path / "data"), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line.startswith(b"mediasrv serving"), line
    return proc, f"http://127.0.0.1:{http_port}", sip_port
