"""First-packet latency and memory for a 1-hour MP3 from a URL, and pacing while it decodes.

Part 1 (latency, memory): a local origin (``python -m http.server``, its own process) serves a
1-hour MP3 (44.1 kHz stereo 128 kb/s, generated once and kept under /tmp/mediasrv-bench);
``mediasrv serve`` runs in its own process; our UAC (``SipUserAgent`` + ``probe.CaptureMedia``,
kernel receive timestamps) calls it and asks ``POST /v1/calls/{id}/playbacks {"url": ...}``.
Latency = first RTP packet carrying audio (not silence) minus the moment the command was sent.
Memory = the server's VmRSS before the play and VmHWM (peak RSS) once the hour is decoded
(the play asks cache=true, so its cache entry appearing in ``GET /v1/media-cache`` marks the
end of the decode; the time to it gives the decode speed in x real time).  Then cold plays
with cache=false (each waits for the previous decode to finish) and one warm play (a 304
revalidation: Last-Modified from http.server, no decode).

Part 2 (pacing): a fresh server, N calls (default 200) each playing a looped 10 s prompt to
bench/pacing.py's C receiver (same pinning and tools as pacing.py); rounds of two windows in one
run: A idle, B while the server fetches and decodes the 1-hour MP3 (``POST
/v1/media-cache/prefetch`` with cache=false: the same loader path as a play).  Interleaved
rounds because the shared VM's noise moves p99 from window to window; prints every window and
the ratio of the medians.

    python bench/first_packet.py                       # both parts, N=200, 3 rounds of 6 s windows
    python bench/first_packet.py --calls 50 --window 5 --runs 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pacing  # noqa: E402
from ab_pacing import ab_windows, looped_calls, print_ab, start_server  # noqa: E402
from pacing import (  # noqa: E402 - the pacing bench's receiver, process and port helpers
    BENCH_CPU,
    SERVER_CPU,
    build,
    cpu_seconds,
    free_port,
    reap,
    spawn,
    watchdog,
)

from mediasrv.calls.controller import SipSettings, SipUserAgent  # noqa: E402
from mediasrv.calls.registry import CallRegistry  # noqa: E402
from mediasrv.rtp.probe import CaptureMedia  # noqa: E402

CACHE_DIR = Path("/tmp/mediasrv-bench")
HOUR = CACHE_DIR / "hour.mp3"
RATE = 44100


def make_hour_mp3() -> Path:
    """59.9 s encoded with libmp3lame (no ID3, no Xing), repeated 60 times: a 1-hour MP3 stream.

    59.9 s, not 60: each copy carries the encoder's delay and padding (~50 ms), and the server
    refuses audio longer than its 3600 s limit (``too_long``).
    """
    if HOUR.exists() and HOUR.stat().st_size > 50_000_000 and (CACHE_DIR / "v2").exists():
        return HOUR
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    minute = CACHE_DIR / "minute.mp3"
    with av.open(str(minute), "w", format="mp3", options={"id3v2_version": "0", "write_xing": "0"}) as out:
        stream = out.add_stream("libmp3lame", rate=RATE, layout="stereo")
        stream.bit_rate = 128_000
        n = 0
        for block in range(6):
            size = RATE * 10 if block < 5 else int(RATE * 9.9)
            t = (np.arange(size) + n) / RATE
            x = (0.3 * np.sin(2 * np.pi * (300 + 200 * np.sin(2 * np.pi * 0.1 * t)) * t) * 32767).astype(np.int16)
            pcm = np.stack([x, x], axis=1).reshape(1, -1)
            for i in range(0, size, 4608):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, 2 * i: 2 * (i + 4608)]),
                                                   format="s16", layout="stereo")
                frame.sample_rate, frame.pts = RATE, n + i
                for packet in stream.encode(frame):
                    out.mux(packet)
            n += size
        for packet in stream.encode(None):
            out.mux(packet)
    body = minute.read_bytes()
    tmp = HOUR.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        for _ in range(60):
            fh.write(body)
    os.replace(tmp, HOUR)
    (CACHE_DIR / "v2").touch()
    print(f"generated {HOUR} ({HOUR.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - t0:.1f} s", flush=True)
    return HOUR


def rss_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def start_origin() -> tuple[subprocess.Popen, str]:
    port = free_port(socket.SOCK_STREAM, 1)
    proc = spawn(["taskset", "-c", BENCH_CPU, sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                  "--directory", str(CACHE_DIR)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/hour.mp3"
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, url
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("origin did not start")


# -- part 1 -----------------------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    """The server's child processes (its decoder workers)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def family_cpu(pid: int) -> float:
    total = cpu_seconds(pid)
    for child in children(pid):
        try:
            total += cpu_seconds(child)
        except OSError:
            pass
    return total


async def wait_idle(pid: int, quiet_s: float = 0.6, limit_s: float = 120.0) -> None:
    """Until the server and its decoder processes stay under 20 % CPU for *quiet_s* (a decode has ended)."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        c0 = family_cpu(pid)
        await asyncio.sleep(quiet_s)
        if family_cpu(pid) - c0 < 0.2 * quiet_s:
            return


async def latency_part(url: str, runs: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="mediasrv-first-"))
    server, http, sip_port = start_server(data, 1, [])
    media = CaptureMedia()
    uac = SipUserAgent(SipSettings(host="127.0.0.1", port=0, user_agent="mediasrv-bench"), CallRegistry(), media)
    await uac.start()
    try:
        call = await uac.call(f"sip:bench@127.0.0.1:{sip_port}", remote=("127.0.0.1", sip_port), timeout=10)
        capture = media.captures[call.call_id]
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{http}/v1/calls") as resp:
                [server_call] = [c for c in (await resp.json())["calls"] if c["sip_call_id"] == call.sip_call_id]
            cid = server_call["call_id"]
            await asyncio.sleep(1.0)  # the decoder process has started (the server starts it at start-up)
            base_rss = rss_kb(server.pid, "VmRSS")

            async def play(body: dict) -> tuple[float, str]:
                async with s.delete(f"{http}/v1/calls/{cid}/playbacks", params={"stop": "all"}):
                    pass
                await asyncio.sleep(0.1)
                mark = len(capture.packets)
                sent = time.time()
                async with s.post(f"{http}/v1/calls/{cid}/playbacks", json=body) as resp:
                    assert resp.status == 201, await resp.text()
                    pid = (await resp.json())["id"]
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    for p in capture.packets[mark:]:
                        if p.arrival >= sent and p.payload.count(0xFF) < len(p.payload):
                            return 1000 * (p.arrival - sent), pid
                    mark = max(mark, len(capture.packets) - 5)
                    await asyncio.sleep(0.002)
                raise RuntimeError("no audio packet within 30 s")

            async def state(pid: str) -> dict:
                async with s.get(f"{http}/v1/playbacks/{pid}") as resp:
                    return await resp.json()

            t0 = time.monotonic()
            first, pid = await play({"url": url, "cache": True})
            peak = 0
            while time.monotonic() - t0 < 300:  # until the cache entry appears: the whole hour is decoded
                peak = max(peak, rss_kb(server.pid, "VmRSS"))
                async with s.get(f"{http}/v1/media-cache") as resp:
                    if (await resp.json())["entries"]:
                        break
                pb = await state(pid)
                if pb["state"] == "failed":
                    raise RuntimeError(f"the play failed: {pb['reason']}: {pb['message']}")
                await asyncio.sleep(0.05)
            decode_s = time.monotonic() - t0
            hwm = rss_kb(server.pid, "VmHWM")
            workers = [(rss_kb(c, "VmRSS"), rss_kb(c, "VmHWM")) for c in children(server.pid)]
            print(f"cold play, cache=true: first audio packet {first:.0f} ms after the command; whole hour decoded "
                  f"in {decode_s:.1f} s ({3600 / decode_s:.0f}x real time, download + decode + resample + encode)")
            print(f"server RSS before {base_rss / 1024:.0f} MB, sampled max during the decode {peak / 1024:.0f} MB, "
                  f"peak (VmHWM) {hwm / 1024:.0f} MB, after {rss_kb(server.pid, 'VmRSS') / 1024:.0f} MB "
                  f"(decoded 1 h at 8 kHz: 57.6 MB PCM + 2 x 28.8 MB G.711); decoder process(es) RSS "
                  f"{', '.join(f'{r / 1024:.0f} MB (peak {h / 1024:.0f} MB)' for r, h in workers) or 'none'}")
            cold = []
            for _ in range(runs):
                await wait_idle(server.pid)
                cold.append((await play({"url": url, "cache": False}))[0])
            print(f"cold plays, cache=false: first audio packet {', '.join(f'{x:.0f}' for x in cold)} ms "
                  f"(median {np.median(cold):.0f} ms)")
            await wait_idle(server.pid)
            warm, _ = await play({"url": url})
            print(f"warm play (cached, revalidated by Last-Modified, 304, no decode): first audio packet "
                  f"{warm:.0f} ms")
            async with s.get(f"{http}/metrics") as resp:
                await resp.text()
        await uac.hangup(call.call_id)
    finally:
        await uac.stop()
        media.close_all()
        reap(server)
        shutil.rmtree(data, ignore_errors=True)


# -- part 2 -----------------------------------------------------------------------------------------
async def pacing_part(url: str, n: int, window: float, rounds: int, receiver_exe: Path) -> None:
    decode_times: list[float] = []
    async with looped_calls(n, "mediasrv-first-pacing-") as lc:
        s = lc.session
        prefetch: asyncio.Future | None = None
        t0 = 0.0

        async def before(kind: str, name: str) -> None:
            nonlocal prefetch, t0
            if kind == "B":
                t0 = time.monotonic()
                prefetch = asyncio.ensure_future(s.post(
                    f"{lc.http}/v1/media-cache/prefetch", json={"url": url, "cache": False},
                    timeout=aiohttp.ClientTimeout(total=600)))
                await asyncio.sleep(0.3)  # the decode is under way

        async def after(kind: str, name: str) -> None:
            nonlocal prefetch
            if prefetch is not None:
                ended_early = prefetch.done()
                resp = await prefetch
                assert resp.status == 200, await resp.text()
                resp.release()
                decode_times.append(time.monotonic() - t0)
                prefetch = None
                if ended_early:
                    print(f"note: the decode ended before window {name} did", flush=True)

        rows = await ab_windows(lc, rounds, window, receiver_exe, "decoding 1 h MP3", before, after)
    print(f"1-hour MP3 fetched and decoded in {', '.join(f'{d:.1f}' for d in decode_times)} s while {n} calls "
          f"played ({3600 / np.median(decode_times):.0f}x real time)")
    print_ab(rows, "while decoding")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200, help="playing calls in the pacing part")
    ap.add_argument("--window", type=float, default=6.0, help="seconds per pacing window")
    ap.add_argument("--rounds", type=int, default=3, help="pacing rounds, each an idle window then a decoding one")
    ap.add_argument("--runs", type=int, default=3, help="cold cache=false plays in the latency part")
    ap.add_argument("--receiver-base", type=int, default=30600,
                    help="first receiver port: below the ephemeral range (where other processes' ports land) "
                         "and outside the common RTP ranges")
    ap.add_argument("--skip-pacing", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    for tool in ("gcc", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is required", file=sys.stderr)
            return 1
    pacing.RECEIVER_BASE = args.receiver_base  # Receiver and ReceiverPorts read it at call time
    watchdog(900)
    os.sched_setaffinity(0, {int(BENCH_CPU)})
    make_hour_mp3()
    origin, url = start_origin()
    tmp = Path(tempfile.mkdtemp(prefix="mediasrv-bench-c-"))
    try:
        print(f"origin {url} ({HOUR.stat().st_size / 1e6:.1f} MB, 1 h, MP3 44.1 kHz stereo 128 kb/s); server pinned "
              f"to CPU {SERVER_CPU}, origin/UAC/receiver to CPU {BENCH_CPU}", flush=True)
        if not args.skip_latency:
            asyncio.run(latency_part(url, args.runs))
        if not args.skip_pacing:
            receiver_exe, _ = build(tmp)
            asyncio.run(pacing_part(url, args.calls, args.window, args.rounds, receiver_exe))
    finally:
        reap(origin)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
