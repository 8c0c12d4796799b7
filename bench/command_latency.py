"""Command latency: play → first packet carrying the new audio, stop → first silent packet.

100 live calls, each running rounds of "play a cached prompt (loop infinity), wait 150-350 ms,
stop current, wait 50-250 ms"; every command is timed from just before it is issued to the
kernel receive timestamp (SO_TIMESTAMPNS, same wall clock) of the first packet on that call's
SSRC that carries the prompt's first 160 samples (play) or is all silence (stop).  The leg's
next tick is at most one packet time (20 ms) away, so that is the floor to compare with; the
script also counts, per command, the packets of that call that reached the receiver between
the command and its effect ("extra"): 0 means the command made the very next packet.

Two modes:
  --mode plane  a MediaPlane in this process, commands as method calls (what the plane adds);
  --mode http   ``python -m mediasrv serve`` as a child process, SIPp (uac_play.xml) dialling in
                with its SDP pointing at this script's receiver, commands over the native HTTP
                API (``POST /v1/calls/{id}/playbacks``, ``DELETE ...?stop=current``).

    python bench/command_latency.py --mode plane --calls 100 --rounds 10
    python bench/command_latency.py --mode http --calls 100 --rounds 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mediacodecs.g711 import ulaw_encode  # noqa: E402
from mediasrv.rtp.probe import RtpCapture, open_capture  # noqa: E402

N = 160
SILENCE = b"\xff" * N


@dataclass
class Command:
    call_id: str
    kind: str  # "play" | "stop"
    t0: float  # wall clock just before the command was issued
    t_ack: float = 0.0  # when the command returned (HTTP response / method return)


def prompt_pcm(seconds: float = 2.0) -> np.ndarray:
    """A chirp with noise: its first packet occurs once per loop and never looks like silence."""
    t = np.arange(int(seconds * 8000)) / 8000
    chirp = 0.4 * np.sin(2 * np.pi * (300 * t + 800 * t * t / seconds))
    noise = np.random.default_rng(1).normal(0, 0.02, t.size)
    return (np.clip(chirp + noise, -1, 1) * 32767).astype(np.int16)


def free_port_pair() -> int:
    for _ in range(200):
        port = random.randrange(40000, 60000, 2)
        socks = []
        try:
            for p in (port, port + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port pair")


async def drive(calls: list[str], rounds: int, play, stop, log: list[Command]) -> None:
    async def one(call_id: str) -> None:
        await asyncio.sleep(random.uniform(0, 0.3))
        for _ in range(rounds):
            cmd = Command(call_id, "play", time.time())
            await play(call_id)
            cmd.t_ack = time.time()
            log.append(cmd)
            await asyncio.sleep(random.uniform(0.15, 0.35))
            cmd = Command(call_id, "stop", time.time())
            await stop(call_id)
            cmd.t_ack = time.time()
            log.append(cmd)
            await asyncio.sleep(random.uniform(0.05, 0.25))

    await asyncio.gather(*(one(c) for c in calls))
    await asyncio.sleep(0.2)  # the last stops' silence arrives


def analyse(capture: RtpCapture, ssrc_of: dict[str, int], log: list[Command], first: bytes) -> dict:
    by_ssrc: dict[int, list] = {}
    for p in capture.packets:
        by_ssrc.setdefault(p.ssrc, []).append(p)
    for packets in by_ssrc.values():
        packets.sort(key=lambda p: p.arrival)
    out: dict[str, dict] = {}
    for kind, want in (("play", first), ("stop", SILENCE)):
        lat, extra, ack, late, missing = [], [], [], [], 0
        for cmd in (c for c in log if c.kind == kind):
            packets = by_ssrc.get(ssrc_of[cmd.call_id], [])
            k = next((i for i, p in enumerate(packets) if p.arrival > cmd.t0), len(packets))
            later = packets[k:]
            hit = next((i for i, p in enumerate(later) if p.payload == want), None)
            if hit is None:
                missing += 1
                continue
            lat.append((later[hit].arrival - cmd.t0) * 1000)
            if k > 0:  # how far that packet was behind its slot (previous packet + 20 ms): clock lateness
                late.append(max(0.0, (later[hit].arrival - packets[k - 1].arrival) * 1000 - 20.0 * (hit + 1)))
            extra.append(hit)
            ack.append((cmd.t_ack - cmd.t0) * 1000)
        arr = np.array(lat)
        ex = np.array(extra)
        out[kind] = {
            "n": len(lat), "missing": missing,
            "p50": float(np.percentile(arr, 50)) if lat else float("nan"),
            "p99": float(np.percentile(arr, 99)) if lat else float("nan"),
            "max": float(arr.max()) if lat else float("nan"),
            "late_p99": float(np.percentile(late, 99)) if late else float("nan"),
            "ack_p50": float(np.percentile(ack, 50)) if ack else float("nan"),
            "ack_p99": float(np.percentile(ack, 99)) if ack else float("nan"),
            "extra0": int((ex == 0).sum()), "extra1": int((ex == 1).sum()), "extra2+": int((ex >= 2).sum()),
        }
    return out


def report(mode: str, calls: int, result: dict, packets: int) -> None:
    print(f"mode={mode} calls={calls} packets captured={packets}")
    print(f"{'command':8} {'n':>5} {'miss':>4} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'late p99':>8} {'ack p50':>7} {'ack p99':>7}  extra packets 0/1/2+")
    for kind in ("play", "stop"):
        r = result[kind]
        print(f"{kind:8} {r['n']:5d} {r['missing']:4d} {r['p50']:7.2f} {r['p99']:7.2f} {r['max']:7.2f} "
              f"{r['late_p99']:8.2f} {r['ack_p50']:7.2f} {r['ack_p99']:7.2f}  {r['extra0']}/{r['extra1']}/{r['extra2+']}")


async def run_plane(args: argparse.Namespace) -> None:
    from mediacodecs.codec import PCMU
    from mediasrv.calls.registry import Call, Direction, NegotiatedMedia
    from mediasrv.media import MediaPlane, MediaSettings, PlayRequest
    from mediasrv.media.player import SourceSpec

    pcm = prompt_pcm()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "media").mkdir()
        soundfile.write(Path(tmp) / "media" / "prompt.wav", pcm, 8000, subtype="PCM_16")
        lo = free_port_pair()
        plane = MediaPlane(MediaSettings(rtp_port_lo=lo, rtp_port_hi=lo + 4 * args.calls + 10, data_dir=tmp),
                           emit=lambda t, c, d: None)
        await plane.start()
        capture = await open_capture()
        try:
            await plane.loader.load_source(SourceSpec(media="prompt.wav"))  # cached, as the bench asks
            ids = []
            for i in range(args.calls):
                call = Call(Direction.INBOUND, "sip:a@x", "sip:b@x", f"bench-{i}@x")
                call.media = NegotiatedMedia(("127.0.0.1", capture.port), PCMU, 0)
                plane.allocate(call)
                plane.media_changed(call)
                ids.append(call.call_id)
            await asyncio.sleep(0.5)
            ssrc_of = {c: plane.leg_stats(c)["ssrc"] for c in ids}
            log: list[Command] = []

            async def play(call_id: str) -> None:
                plane.play(call_id, PlayRequest(media="prompt.wav", loop=None))

            async def stop(call_id: str) -> None:
                plane.stop_playbacks(call_id, "current", by="bench")

            await drive(ids, args.rounds, play, stop, log)
        finally:
            capture.close()
            await plane.stop()
    report("plane", args.calls, analyse(capture, ssrc_of, log, ulaw_encode(pcm[:N])), len(capture.packets))


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("mediasrv exited early")
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("mediasrv did not come up")


async def run_http(args: argparse.Namespace) -> None:
    import aiohttp

    sipp = shutil.which("sipp")
    if sipp is None:
        raise SystemExit("sipp is not installed")
    pcm = prompt_pcm()
    tmp = tempfile.mkdtemp()
    (Path(tmp) / "media").mkdir()
    soundfile.write(Path(tmp) / "media" / "prompt.wav", pcm, 8000, subtype="PCM_16")
    lo = free_port_pair()
    sip_port = free_port_pair()
    http_port = free_port_pair() + 1
    http = f"http://127.0.0.1:{http_port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mediasrv", "serve", "--sip", f"127.0.0.1:{sip_port}", "--http",
         f"127.0.0.1:{http_port}", "--rtp-ports", f"{lo}-{lo + 4 * args.calls + 10}", "--data-dir", tmp,
         "--rtp-timeout", "0", "--log-level", "warning"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    capture = await open_capture()
    uac = None
    try:
        wait_http(http, server)
        duration_ms = int((args.rounds * 0.6 + 8) * 1000)
        uac = subprocess.Popen(
            [sipp, f"127.0.0.1:{sip_port}", "-sf", str(REPO / "sipp-scenarios" / "uac_play.xml"), "-i", "127.0.0.1",
             "-p", "0", "-set", "rtp_ip", "127.0.0.1", "-set", "rtp_port", str(capture.port), "-d", str(duration_ms),
             "-m", str(args.calls), "-l", str(args.calls), "-r", "50", "-nostdin", "-timeout", "120s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        async with aiohttp.ClientSession() as s:
            deadline = time.time() + 30
            while True:
                async with s.get(f"{http}/v1/calls?state=answered") as resp:
                    calls = (await resp.json())["calls"]
                if len(calls) >= args.calls or time.time() > deadline:
                    break
                await asyncio.sleep(0.2)
            ids = [c["call_id"] for c in calls]
            ssrc_of = {c["call_id"]: c["ssrc"] for c in calls}
            async with s.post(f"{http}/v1/calls/{ids[0]}/playbacks", json={"media": "prompt.wav"}) as resp:
                assert resp.status == 201, await resp.text()  # warm the cache
            await asyncio.sleep(0.5)
            async with s.delete(f"{http}/v1/calls/{ids[0]}/playbacks?stop=all") as resp:
                await resp.read()
            log: list[Command] = []

            async def play(call_id: str) -> None:
                async with s.post(f"{http}/v1/calls/{call_id}/playbacks",
                                  json={"media": "prompt.wav", "loop": "infinity"}) as resp:
                    if resp.status != 201:
                        raise RuntimeError(await resp.text())

            async def stop(call_id: str) -> None:
                async with s.delete(f"{http}/v1/calls/{call_id}/playbacks?stop=current") as resp:
                    await resp.read()

            await drive(ids, args.rounds, play, stop, log)
    finally:
        capture.close()
        for proc in (uac, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    report("http", len(ids), analyse(capture, ssrc_of, log, ulaw_encode(pcm[:N])), len(capture.packets))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("plane", "http"), default="plane")
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=10, help="play+stop rounds per call")
    args = ap.parse_args()
    asyncio.run(run_plane(args) if args.mode == "plane" else run_http(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
