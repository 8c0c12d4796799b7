"""N calls playing a looped prompt to pacing.py's C receiver, measured in interleaved A/B windows.

The set-up shared by first_packet.py (B: a 1-hour MP3 decoding) and speak_pacing.py (B: speak
commands): a fresh ``mediasrv serve`` pinned to SERVER_CPU, our UAC placing N calls, each playing
``prompt.wav`` (10 s, 440 Hz) looped; rounds of an idle window A then a loaded window B, the
receiver restarted per window; a table of every window and the ratio of the median p99s.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pacing import SERVER_CPU, Receiver, ReceiverPorts, Row, cpu_seconds, free_port, reap, spawn, wait_http  # noqa: E402

from mediasrv.calls.controller import SipSettings, SipUserAgent  # noqa: E402
from mediasrv.calls.registry import CallRegistry  # noqa: E402

LOOPED_PROMPT = {"media": "prompt.wav", "loop": "infinity"}


def start_server(data: Path, n: int, extra: list[str]) -> tuple[subprocess.Popen, str, int]:
    """``mediasrv serve`` pinned to SERVER_CPU with a 10 s prompt in its media store; (process, http base, SIP port)."""
    (data / "media").mkdir(parents=True, exist_ok=True)
    t = np.arange(10 * 8000) / 8000
    soundfile.write(data / "media" / "prompt.wav", (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16),
                    8000, subtype="PCM_16")
    sip_port, http_port = free_port(socket.SOCK_DGRAM, n), free_port(socket.SOCK_STREAM, n)
    env = {**os.environ, "MEDIASRV_FETCH_ALLOW_CIDRS": "127.0.0.0/8"}
    cmd = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "mediasrv", "serve", "--sip", f"127.0.0.1:{sip_port}",
           "--http", f"127.0.0.1:{http_port}", "--rtp-ports", "50000-59998", "--data-dir", str(data),
           "--max-calls", str(n + 100), "--rtp-timeout", "0", "--log-level", "WARNING", *extra]
    log = open(data / "server.log", "w")  # noqa: SIM115 - closed with the process
    proc = spawn(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    http = f"http://127.0.0.1:{http_port}"
    wait_http(f"{http}/healthz", proc)
    return proc, http, sip_port


async def place_calls(uac: SipUserAgent, sip_port: int, n: int) -> list:
    sem = asyncio.Semaphore(50)

    async def one() -> object:
        async with sem:
            return await uac.call(f"sip:bench@127.0.0.1:{sip_port}", remote=("127.0.0.1", sip_port), timeout=30)

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def start_receiver(exe: Path, n: int, window: float) -> Receiver:
    """pacing.py's receiver; retried, since a port of its range may be held for a moment by another process."""
    for attempt in range(5):
        try:
            return await asyncio.get_running_loop().run_in_executor(None, Receiver, exe, n, window)
        except RuntimeError:
            if attempt == 4:
                raise
            await asyncio.sleep(1.0)
    raise AssertionError("unreachable")


@dataclass
class LoopedCalls:
    """A running server with N answered calls, each playing the looped prompt."""

    n: int
    server: subprocess.Popen
    http: str
    session: aiohttp.ClientSession
    ids: list[str] = field(default_factory=list)


@asynccontextmanager
async def looped_calls(n: int, prefix: str) -> AsyncIterator[LoopedCalls]:
    data = Path(tempfile.mkdtemp(prefix=prefix))
    server, http, sip_port = start_server(data, n, ["--no-silence"])
    uac = SipUserAgent(SipSettings(host="127.0.0.1", port=free_port(socket.SOCK_DGRAM, n), user_agent="mediasrv-bench"),
                       CallRegistry(), ReceiverPorts())
    await uac.start()
    calls = []
    try:
        calls = await place_calls(uac, sip_port, n)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{http}/v1/calls") as resp:
                ids = [c["call_id"] for c in (await resp.json())["calls"] if c["state"] == "answered"]
            sem = asyncio.Semaphore(50)

            async def play(cid: str) -> int:
                async with sem, s.post(f"{http}/v1/calls/{cid}/playbacks", json=LOOPED_PROMPT) as resp:
                    return resp.status

            statuses = await asyncio.gather(*(play(c) for c in ids))
            print(f"{len(calls)} calls, {statuses.count(201)} playing the looped prompt", flush=True)
            await asyncio.sleep(2.0)
            yield LoopedCalls(n, server, http, s, ids)
    finally:
        for call in calls:
            try:
                await uac.hangup(call.call_id)
            except Exception:  # noqa: BLE001 - already ended
                pass
        await asyncio.sleep(1.0)
        await uac.stop()
        reap(server, 15)
        shutil.rmtree(data, ignore_errors=True)


Hook = Callable[[str, str], Awaitable[None]]  # (kind "A" or "B", window name)


async def ab_windows(lc: LoopedCalls, rounds: int, window: float, receiver_exe: Path, b_label: str,
                     before: Hook, after: Hook) -> dict[str, Row]:
    """Interleaved rounds of an idle window A and a loaded window B; *before* starts the load (and may
    read counters) just before the window opens, *after* stops it once the receiver has reported."""
    loop = asyncio.get_running_loop()
    rows: dict[str, Row] = {}
    for rnd in range(rounds):
        for kind in ("A", "B"):
            name = f"{kind}{rnd + 1} " + ("idle" if kind == "A" else b_label)
            rx = await start_receiver(receiver_exe, lc.n, window)
            await asyncio.sleep(1.5)  # the receiver skips each stream's first second
            await before(kind, name)
            c0 = cpu_seconds(lc.server.pid)
            rx.start_window()
            await asyncio.sleep(window)
            cpu = cpu_seconds(lc.server.pid) - c0
            stats = await loop.run_in_executor(None, rx.result)
            rx.stop()
            rows[name] = Row(name, lc.n, len(lc.ids), stats, cpu, stats["window_s"] or window, 0.0)
            await after(kind, name)
    return rows


def print_ab(rows: dict[str, Row], b_words: str) -> None:
    """Every window, then the median p99 of the A windows against the B windows."""
    print(f"{'window':22} {'packets':>8} {'deliv%':>6} {'lost':>5} {'p50 ms':>6} {'p99 ms':>6} {'max ms':>7} "
          f"{'CPU %':>5}")
    for name, r in rows.items():
        p50, p99, mx, _ = r.percentiles()
        print(f"{name:22} {r.stats['packets']:8d} {r.delivered_pct:6.1f} {r.stats['lost']:5d} {p50:6.2f} "
              f"{p99:6.2f} {mx:7.2f} {r.cpu_pct:5.1f}")
    a = [r.p99 for k, r in rows.items() if k.startswith("A")]
    b = [r.p99 for k, r in rows.items() if k.startswith("B")]
    print(f"p99 median idle {np.median(a):.2f} ms, median {b_words} {np.median(b):.2f} ms: "
          f"ratio {np.median(b) / np.median(a):.2f} (per round: "
          f"{', '.join(f'{y / x:.2f}' for x, y in zip(a, b, strict=True))})")
