"""Bridged pairs mixing vs play-only legs: CPU per leg and receiver pacing, same run, same N legs.

Rows (one after the other, never two senders at once), all measured by bench/c/rtp_receiver.c
exactly as bench/pacing.py does (it reuses pacing.py's receiver, C sender, UAC and row format):
  - C paced sender, N streams: the yardstick;
  - mediasrv play-only: N calls each playing a looped prompt (pacing.py's own row);
  - mediasrv play+talk: the same, with every far end also sending RTP (as real callers do), so
    the server receives as many packets as it sends: the fair baseline for the bridged row;
  - mediasrv bridged: N calls bridged in pairs (N/2 two-leg rooms through
    ``POST /v1/calls/{a}/bridge``), every far end talking: bench/c/raw_talker.c sends a paced PCMU
    tone into each leg *from* the receiver port that leg's SDP announced (a raw socket, so the
    receiver keeps that port), so each leg's jitter buffer fills, the mixer pops it once per
    20 ms and the other leg of the pair encodes and sends it.  This server sends silence when a
    leg's peer has nothing to play (the server's default), so the receiver measures the clock's
    pacing; jitter-buffer underruns are reported from the legs' own counters;
  - mediasrv bridged+play: the same pairs, and every leg also plays the looped prompt with
    mix=true, so each packet is the prompt and the peer's audio summed and encoded once.
With --bridged-no-silence a bridged leg sends only when it has call audio, and an underrun shows at
the receiver as a missing packet (tserr, deliv%).  The raw talker needs root (CAP_NET_RAW).

    python bench/bridge_pacing.py --n 400 --seconds 20
    python bench/bridge_pacing.py --n 40 --seconds 5          # smoke run
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
import urllib.request
from collections import Counter
from pathlib import Path

import aiohttp
import numpy as np
import soundfile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pacing  # noqa: E402  (a sibling script, not a package)
from pacing import (  # noqa: E402
    BENCH_CPU,
    HEADER,
    NOTES,
    SERVER_CPU,
    SKIP_S,
    WARMUP_S,
    Receiver,
    ReceiverPorts,
    Row,
    cpu_seconds,
    fmt,
    free_port,
    reap,
    spawn,
    steal_seconds,
    wait_http,
)

from mediasrv.calls.controller import SipSettings, SipUserAgent  # noqa: E402
from mediasrv.calls.registry import Call, CallRegistry  # noqa: E402


# -- the bridged row --------------------------------------------------------------------
class PortsByCall(ReceiverPorts):
    """pacing.py's receiver-port allocation, remembering which port each call announced."""

    def __init__(self) -> None:
        super().__init__()
        self.port_of: dict[str, int] = {}

    def allocate(self, call: Call) -> tuple[str, int]:
        host, port = super().allocate(call)
        self.port_of[call.call_id] = port
        return host, port


def metric(http: str, name: str) -> float:
    """One counter from /metrics; NaN if a loaded server does not answer in time (the row goes on)."""
    try:
        with urllib.request.urlopen(f"{http}/metrics", timeout=20) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
    except OSError:
        pass
    return float("nan")


async def bridge_pairs(http: str, timeout: float) -> int:
    """Bridge the answered calls two by two (POST /v1/calls/{a}/bridge); returns how many pairs."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
        async with s.get(f"{http}/v1/calls") as resp:
            ids = [c["call_id"] for c in (await resp.json())["calls"] if c["state"] == "answered"]
        sem = asyncio.Semaphore(50)

        async def bridge(a: str, b: str) -> bool:
            async with sem, s.post(f"{http}/v1/calls/{a}/bridge", json={"call_id": b}) as resp:
                return resp.status == 200

        return sum(await asyncio.gather(*(bridge(a, b) for a, b in zip(ids[::2], ids[1::2], strict=False))))


async def start_playbacks(http: str, timeout: float) -> int:
    """Every answered call plays the looped prompt (as pacing.py's play-only row does)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
        async with s.get(f"{http}/v1/calls") as resp:
            ids = [c["call_id"] for c in (await resp.json())["calls"] if c["state"] == "answered"]
        sem = asyncio.Semaphore(50)

        async def play(call_id: str) -> bool:
            async with sem, s.post(f"{http}/v1/calls/{call_id}/playbacks",
                                   json={"media": "prompt.wav", "loop": "infinity"}) as resp:
                return resp.status == 201

        return sum(await asyncio.gather(*(play(i) for i in ids)))


async def jitter_summary(http: str) -> str:
    """The bridged legs' jitter-buffer counters, summed (from GET /v1/calls/{id})."""
    totals: Counter[str] = Counter()
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{http}/v1/calls") as resp:
            ids = [c["call_id"] for c in (await resp.json())["calls"] if c["state"] == "answered"]
        for call_id in ids:
            async with s.get(f"{http}/v1/calls/{call_id}") as resp:
                jb = (await resp.json()).get("jitter_buffer") or {}
            totals.update({k: v for k, v in jb.items() if k != "jitter"})
            totals["legs"] += 1 if jb else 0
            totals["jitter_max"] = max(totals["jitter_max"], int(jb.get("jitter", 0)))
    return "jitter buffers (sum over legs, whole call): " + ", ".join(f"{k}={v}" for k, v in sorted(totals.items()))


async def drive_talking(sip_port: int, http: str, n: int, seconds: float, rx: Receiver, server_pid: int,
                        talker_exe: Path, tmp: Path, setup_timeout: float, call_rate: float, bridge: bool, play: bool,
                        notes: list[str]) -> tuple[int, dict, float, float]:
    ports = PortsByCall()
    uac = SipUserAgent(SipSettings(host="127.0.0.1", port=free_port(socket.SOCK_DGRAM, n),
                                   user_agent="mediasrv-bench"), CallRegistry(), ports)
    await uac.start()
    in_flight = asyncio.Semaphore(100)
    t0 = time.monotonic()

    async def one(i: int) -> Call:
        await asyncio.sleep(max(0.0, t0 + i / call_rate - time.monotonic()))
        async with in_flight:
            return await uac.call(f"sip:bench@127.0.0.1:{sip_port}", remote=("127.0.0.1", sip_port), timeout=30.0)

    calls: list[Call] = []
    talker: subprocess.Popen | None = None
    try:
        tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
        done, pending = await asyncio.wait(tasks, timeout=setup_timeout)
        for t in pending:
            t.cancel()
        failures: Counter[str] = Counter()
        for t in tasks:
            if t in done and t.exception() is None:
                calls.append(t.result())
            else:
                failures["failed or not answered"] += 1
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        notes.append(f"{len(calls)}/{n} calls answered in {time.monotonic() - t0:.1f} s"
                     + (f"; {dict(failures)}" if failures else ""))
        if bridge:
            notes.append(f"{await bridge_pairs(http, setup_timeout)} pairs bridged (POST /v1/calls/{{a}}/bridge)")
        if play:
            notes.append(f"{await start_playbacks(http, setup_timeout)} playbacks started")
        pairs = tmp / "pairs.txt"
        pairs.write_text("".join(f"{ports.port_of[c.call_id]} {c.media.remote_addr[1]}\n"
                                 for c in calls if c.media and c.media.remote_addr))
        talker = spawn(["taskset", "-c", BENCH_CPU, str(talker_exe), str(pairs)], stdout=subprocess.PIPE, text=True)
        await asyncio.sleep(WARMUP_S + SKIP_S)
        rx0 = metric(http, "mediasrv_rtp_packets_received_total")
        c0, st0 = cpu_seconds(server_pid), steal_seconds(SERVER_CPU)
        rx.start_window()
        await asyncio.sleep(seconds)
        cpu, steal = cpu_seconds(server_pid) - c0, steal_seconds(SERVER_CPU) - st0
        inbound = metric(http, "mediasrv_rtp_packets_received_total") - rx0
        stats = await asyncio.get_running_loop().run_in_executor(None, rx.result)
        if bridge:
            notes.append(await jitter_summary(http))
        notes.append(f"server received {inbound:.0f} RTP packets from the talker in the window "
                     f"({inbound / seconds / max(1, len(calls)):.1f}/s per leg)")
    finally:
        if talker is not None:
            reap(talker, 5)
            out = talker.stdout.read() if talker.stdout else ""
            notes.append(f"talker: {out.strip()}")
        for c in calls:
            try:
                await uac.hangup(c.call_id)
            except Exception:  # noqa: BLE001 - a call the server already ended
                pass
        await asyncio.sleep(1.0 + len(calls) / 1000)
        await uac.stop()
    return len(calls), stats, cpu, steal


def run_talking(receiver_exe: Path, talker_exe: Path, n: int, seconds: float, loop: str, setup_timeout: float,
                call_rate: float, bridged: bool, silence: bool = False, play: bool | None = None) -> Row:
    """Every far end talks; *bridged*: legs in pairs hear each other; *play* (default: not bridged): each
    leg plays the looped prompt (bridged too: the prompt mixed over the call audio)."""
    play = (not bridged) if play is None else play
    data = Path(tempfile.mkdtemp(prefix="mediasrv-bridge-"))
    (data / "media").mkdir()
    t = np.arange(10 * 8000) / 8000
    soundfile.write(data / "media" / "prompt.wav",
                    (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16), 8000, subtype="PCM_16")
    sip_port, http_port = free_port(socket.SOCK_DGRAM, n), free_port(socket.SOCK_STREAM, n)
    log_path = data / "server.log"
    cmd = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "mediasrv", "serve",
           "--sip", f"127.0.0.1:{sip_port}", "--http", f"127.0.0.1:{http_port}", "--rtp-ports", f"{pacing.RTP_LO}-{pacing.RTP_HI}",
           "--data-dir", str(data), "--max-calls", str(n + 100), "--rtp-timeout", "0", "--log-level", "WARNING"]
    if not silence:
        cmd.append("--no-silence")
    if loop == "asyncio":
        cmd.append("--asyncio")
    notes: list[str] = []
    rx: Receiver | None = None
    with open(log_path, "w") as log:
        server = spawn(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        http = f"http://127.0.0.1:{http_port}"
        wait_http(f"{http}/healthz", server)
        rx = Receiver(receiver_exe, n, seconds)
        legs, stats, cpu, steal = asyncio.run(asyncio.wait_for(
            drive_talking(sip_port, http, n, seconds, rx, server.pid, talker_exe, data, setup_timeout, call_rate,
                          bridged, play, notes), 2 * setup_timeout + seconds + 120))
    finally:
        if rx is not None:
            rx.stop()
        reap(server, 15)
        bad = [ln for ln in log_path.read_text(errors="replace").splitlines()
               if ("WARNING" in ln or "ERROR" in ln or "Traceback" in ln) and "has no token" not in ln]
        if bad:
            notes.append(f"server log: {len(bad)} warning/error lines, first: {bad[0][:120]}")
        shutil.rmtree(data, ignore_errors=True)
        name = ("bridged+play" if play else "bridged") if bridged else "play+talk"
        NOTES.extend(f"  {name} {loop} N={n}: {note}" for note in notes)
    return Row(f"{name} {loop}", n, legs, stats, cpu, stats["window_s"] or seconds, steal, notes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400, help="legs (N/2 bridged pairs; the same N for every row)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    ap.add_argument("--setup-timeout", type=float, default=120.0)
    ap.add_argument("--call-rate", type=float, default=200.0)
    ap.add_argument("--no-c", action="store_true", help="skip the C sender row")
    ap.add_argument("--no-playback-row", action="store_true",
                    help="skip the bridged+play row (bridged pairs, every leg also playing the looped prompt mixed "
                         "over the call audio)")
    ap.add_argument("--bridged-no-silence", action="store_true",
                    help="bridged server with --no-silence: a jitter-buffer underrun then shows at the receiver as a "
                         "missing packet (tserr, deliv%%) instead of a silent one; p99 then mixes underruns with pacing")
    ap.add_argument("--receiver-base", type=int, default=12000,
                    help="first receiver port (pacing.py uses 42000; another port block keeps a concurrent "
                         "pacing.py run on the same host out of this one)")
    ap.add_argument("--rtp-ports", default="14000-19998", help="the server's RTP range (pacing.py: 50000-59998)")
    args = ap.parse_args()
    # Every mediasrv leg binds with SO_REUSEPORT, so two servers of one user on one host can share a
    # port without noticing: keep this bench's ports apart from any other run's.
    pacing.RECEIVER_BASE = args.receiver_base
    pacing.RTP_LO, pacing.RTP_HI = (int(x) for x in args.rtp_ports.split("-"))
    if args.n % 2 or args.n * 2 + pacing.RECEIVER_BASE >= pacing.RTP_LO:
        ap.error("--n must be even and small enough for the receiver's port range")
    for tool in ("gcc", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is required", file=sys.stderr)
            return 1
    if os.geteuid() != 0:
        print("the raw-socket talker needs root (CAP_NET_RAW)", file=sys.stderr)
        return 1
    pacing.watchdog(3 * (2 * args.setup_timeout + args.seconds + 150) + 60)
    os.sched_setaffinity(0, {int(BENCH_CPU)})
    tmp = Path(tempfile.mkdtemp(prefix="mediasrv-bench-bridge-"))
    try:
        receiver_exe, sender_exe = pacing.build(tmp)
        talker_exe = tmp / "raw_talker"
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(talker_exe), str(HERE / "c" / "raw_talker.c"), "-lm"],
                       check=True)
        print(f"N = {args.n} legs per row; window {args.seconds:g} s after {WARMUP_S + SKIP_S:g} s warm-up; server and "
              f"C sender on CPU {SERVER_CPU}, receiver, talker and UAC on CPU {BENCH_CPU}; loopback", flush=True)
        print(HEADER, flush=True)
        c_row = None
        if not args.no_c:
            c_row = pacing.run_c(receiver_exe, sender_exe, args.n, args.seconds)
            print(fmt(c_row, c_row), flush=True)
        play = pacing.run_mediasrv(receiver_exe, args.n, args.seconds, args.loop, args.setup_timeout,
                                   args.call_rate, False)[0]
        print(fmt(play, c_row), flush=True)
        talk = run_talking(receiver_exe, talker_exe, args.n, args.seconds, args.loop, args.setup_timeout,
                           args.call_rate, bridged=False)
        print(fmt(talk, c_row), flush=True)
        bridged = run_talking(receiver_exe, talker_exe, args.n, args.seconds, args.loop, args.setup_timeout,
                              args.call_rate, bridged=True, silence=not args.bridged_no_silence)
        print(fmt(bridged, c_row), flush=True)
        rows = [bridged]
        if not args.no_playback_row:
            both = run_talking(receiver_exe, talker_exe, args.n, args.seconds, args.loop, args.setup_timeout,
                               args.call_rate, bridged=True, silence=not args.bridged_no_silence, play=True)
            print(fmt(both, c_row), flush=True)
            rows.append(both)
        print()
        for row in rows:
            for base in (play, talk):
                per_leg = [r.cpu_pct / max(1, r.calls) for r in (base, row)]
                print(f"{row.sender.split()[0]} vs {base.sender}: CPU per leg {per_leg[1]:.3f} % vs {per_leg[0]:.3f} % "
                      f"(x{per_leg[1] / per_leg[0]:.2f}); µs per sent packet {row.us_per_packet:.1f} vs "
                      f"{base.us_per_packet:.1f} (x{row.us_per_packet / base.us_per_packet:.2f}); p99 deviation "
                      f"{row.p99:.2f} ms vs {base.p99:.2f} ms "
                      f"(x{row.p99 / base.p99 if base.p99 else float('nan'):.2f})", flush=True)
        if NOTES:
            print("notes:")
            print("\n".join(NOTES), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
