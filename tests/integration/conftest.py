"""Shared fixtures for integration tests: a real server, a real audio origin, a real webhook receiver, SIPp."""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from aiohttp import web

from mediasrv.config import Settings
from mediasrv.demo import free_port_pair
from mediasrv.server import Server

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "sipp-scenarios"


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed; run the README's test command (bash scripts/test.sh)")
    return path


def wav_bytes(pcm: np.ndarray, rate: int, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    data = pcm if channels == 1 else np.stack([pcm] * channels, axis=1)
    soundfile.write(buf, data, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def chirp_signal(seconds: float = 1.0, rate: int = 8000, seed: int = 1) -> np.ndarray:
    """A chirp plus a little noise: every packet differs, so misalignment cannot pass."""
    t = np.arange(int(seconds * rate)) / rate
    chirp = 0.4 * np.sin(2 * np.pi * (200 * t + 1500 * t * t / max(seconds, 1e-3)))
    noise = np.random.default_rng(seed).normal(0, 0.02, t.size)
    return (np.clip(chirp + noise, -1, 1) * 32767).astype(np.int16)


async def serve_app(app: web.Application) -> tuple[web.AppRunner, str]:
    """Start *app* on a free loopback port; returns the runner (for cleanup) and its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


@dataclass
class AudioOrigin:
    """A real aiohttp server serving audio (and not-audio) for playback URLs."""

    base: str
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, body: bytes, content_type: str = "audio/wav") -> str:
        self.files[name] = (body, content_type)
        return f"{self.base}/{name}"


@pytest.fixture
async def audio_origin() -> AsyncIterator[AudioOrigin]:
    origin = AudioOrigin(base="")

    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        origin.hits[name] = origin.hits.get(name, 0) + 1
        if name == "slow.wav":
            await asyncio.sleep(60)
        if name not in origin.files:
            return web.Response(status=404, text="not here")
        body, ctype = origin.files[name]
        return web.Response(body=body, content_type=ctype)

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner, origin.base = await serve_app(app)
    yield origin
    await runner.cleanup()


@dataclass
class Hooks:
    events: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

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


@pytest.fixture
async def webhooks() -> AsyncIterator[Hooks]:
    hooks = Hooks()

    async def receive(request: web.Request) -> web.Response:
        hooks.events.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner, base = await serve_app(app)
    hooks.url = f"{base}/hook"
    yield hooks
    await runner.cleanup()


def free_tcp_udp_port() -> int:
    """A port free for both UDP and TCP on loopback (SIP listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind(("127.0.0.1", port))
                    return port
            except OSError:
                continue
    raise RuntimeError("no free port")


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


@pytest.fixture
async def running(tmp_path: Path, webhooks: Hooks) -> AsyncIterator[Running]:
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    yield r
    await r.server.stop()


def sipp_caller(r: Running) -> list[str]:
    """uac_wait_bye.xml: one call that stays up until we hang it up (a test then lasts only as long as it needs)."""
    return [f"127.0.0.1:{r.sip_port}", "-sf", str(SCENARIOS / "uac_wait_bye.xml"), "-i", "127.0.0.1", "-p", "0",
            "-mp", str(free_port_pair()), "-m", "1", "-timeout", "60s", "-timeout_error"]


async def hang_up_all(r: Running) -> None:
    for call in list(r.server.registry.active()):
        await r.server.sip.hangup(call.call_id, cause="normal_clearing", by="api")


async def run_sipp(*args: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run SIPp to completion (bounded), return (exit code, combined output)."""
    sipp = require("sipp")
    proc = await asyncio.create_subprocess_exec(
        sipp, *args, "-nostdin", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "TERM": "dumb"},
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        raise AssertionError(f"SIPp did not finish in {timeout}s: {out.decode(errors='replace')[-2000:]}") from None
    return proc.returncode or 0, out.decode(errors="replace")


async def wait_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = pred()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def readme_block(section: str, index: int = 0) -> str:
    """The *index*-th python code block of README's "### <section>" section (the docs the tests run)."""
    text = (REPO / "README.md").read_text()
    part = text.split(f"### {section}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", part, re.S)[index]


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
