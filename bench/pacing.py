"""Pacing under load: N concurrent calls all playing, measured by an independent C receiver.

For each N it runs, one after the other (never at the same time):
  - a minimal C paced sender (bench/c/paced_sender.c: one thread, absolute deadlines,
    streams staggered over 1 ms sub-slots) — the yardstick;
  - mediasrv (`python -m mediasrv serve`) on uvloop and/or asyncio, with N calls placed by
    our own UAC whose SDP points at the receiver's ports, each playing a prompt in a loop.
The receiver (bench/c/rtp_receiver.c) uses kernel receive timestamps and reports loss,
sequence/timestamp errors and |inter-arrival − 20 ms|.  The sender's CPU comes from
/proc/<pid>/stat over the same window.  The server and the C sender run on CPU 1, the
receiver and this script on CPU 0.  Only same-run ratios mean anything on a shared machine.

    python bench/pacing.py --n 100,500,1000,2000 --seconds 20 --loops uvloop,asyncio
    python bench/pacing.py --n 50 --seconds 5 --loops uvloop          # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import soundfile

from mediasrv.calls import Call, CallRegistry
from mediasrv.sip.ua import SipSettings, SipUserAgent

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
RECEIVER_BASE = 42000


@dataclass
class Row:
    sender: str
    n: int
    packets: int
    lost: int
    seq_errors: int
    ts_errors: int
    ssrc_changes: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_pct: float
    us_per_packet: float


def build(tmp: Path) -> tuple[Path, Path]:
    out = []
    for name in ("rtp_receiver", "paced_sender"):
        exe = tmp / name
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "c" / f"{name}.c")], check=True)
        out.append(exe)
    return out[0], out[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(hist: list[int], bin_us: int) -> tuple[float, float, float]:
    counts = np.array(hist, dtype=np.float64)
    if counts.sum() == 0:
        return float("nan"), float("nan"), float("nan")
    cdf = np.cumsum(counts) / counts.sum()
    p50 = int(np.searchsorted(cdf, 0.50)) * bin_us / 1000
    p99 = int(np.searchsorted(cdf, 0.99)) * bin_us / 1000
    return p50, p99, (len(hist) - 1) * bin_us / 1000


class Receiver:
    def __init__(self, exe: Path, n: int) -> None:
        self.proc = subprocess.Popen(["taskset", "-c", "0", str(exe), str(RECEIVER_BASE), str(n)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"receiver failed to start: {line!r}")

    def start_window(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)

    def finish(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=20)
        return json.loads(out.strip().splitlines()[-1])


def make_row(name: str, n: int, stats: dict, cpu_s: float, window: float) -> Row:
    p50, p99, mx = percentiles(stats["hist"], stats["bin_us"])
    packets = max(stats["packets"], 1)
    return Row(name, n, stats["packets"], stats["lost"], stats["seq_errors"], stats["ts_errors"],
               stats["ssrc_changes"], p50, p99, mx, 100 * cpu_s / window, 1e6 * cpu_s / packets)


def run_c(receiver_exe: Path, sender_exe: Path, n: int, seconds: float) -> Row:
    rx = Receiver(receiver_exe, n)
    tx = subprocess.Popen(["taskset", "-c", "1", str(sender_exe), str(RECEIVER_BASE), str(n)],
                          stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)
        c0 = cpu_seconds(tx.pid)
        rx.start_window()
        time.sleep(seconds)
        cpu = cpu_seconds(tx.pid) - c0
        stats = rx.finish()
    finally:
        tx.send_signal(signal.SIGTERM)
        tx.communicate(timeout=10)
    return make_row("C paced sender", n, stats, cpu, seconds)


class ReceiverPorts:
    """MediaBackend for the bench's UAC: call i's SDP names the receiver's port i."""

    def __init__(self) -> None:
        self.next = 0

    def allocate(self, call: Call) -> tuple[str, int]:
        port = RECEIVER_BASE + 2 * self.next
        self.next += 1
        return ("127.0.0.1", port)

    def media_changed(self, call: Call) -> None:
        return None

    def release(self, call: Call) -> None:
        return None


async def drive_calls(sip_port: int, http: str, n: int, seconds: float, rx: Receiver, server_pid: int) -> tuple[dict, float]:
    uac = SipUserAgent(SipSettings(host="127.0.0.1", port=0, user_agent="mediasrv-bench"), CallRegistry(),
                       ReceiverPorts())
    await uac.start()
    limit = asyncio.Semaphore(100)

    async def one(i: int) -> Call:
        async with limit:
            return await uac.call(f"sip:bench{i}@127.0.0.1:{sip_port}", remote=("127.0.0.1", sip_port))

    try:
        placed = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
        calls = [c for c in placed if isinstance(c, Call)]
        if len(calls) < n:
            raise RuntimeError(f"only {len(calls)} of {n} calls were answered")
        by_sip = {c.sip_call_id for c in calls}
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{http}/v1/calls?state=answered") as resp:
                server_calls = [c for c in (await resp.json())["calls"] if c["sip_call_id"] in by_sip]
            sem = asyncio.Semaphore(50)

            async def play(call_id: str) -> None:
                async with sem, s.post(f"{http}/v1/calls/{call_id}/playbacks",
                                       json={"media": "prompt.wav", "loop": "infinity"}) as resp:
                    if resp.status != 201:
                        raise RuntimeError(f"play failed: {resp.status} {await resp.text()}")

            await asyncio.gather(*(play(c["call_id"]) for c in server_calls))
        await asyncio.sleep(2.0)
        c0 = cpu_seconds(server_pid)
        rx.start_window()
        await asyncio.sleep(seconds)
        cpu = cpu_seconds(server_pid) - c0
        stats = rx.finish()
        await asyncio.gather(*(uac.hangup(c.call_id) for c in calls), return_exceptions=True)
        await asyncio.sleep(1.0)
    finally:
        await uac.stop()
    return stats, cpu


def run_mediasrv(receiver_exe: Path, n: int, seconds: float, loop: str) -> Row:
    data = Path(tempfile.mkdtemp(prefix="mediasrv-pacing-"))
    (data / "media").mkdir()
    t = np.arange(80000) / 8000
    soundfile.write(data / "media" / "prompt.wav", (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16),
                    8000, subtype="PCM_16")
    sip_port, http_port = free_port(), free_port()
    cmd = ["taskset", "-c", "1", sys.executable, "-m", "mediasrv", "serve", "--sip", f"127.0.0.1:{sip_port}",
           "--http", f"127.0.0.1:{http_port}", "--rtp-ports", "50000-60000", "--data-dir", str(data),
           "--log-level", "WARNING"] + (["--asyncio"] if loop == "asyncio" else [])
    server = subprocess.Popen(cmd)
    rx = Receiver(receiver_exe, n)
    try:
        time.sleep(1.5)
        runner = asyncio.run
        stats, cpu = runner(asyncio.wait_for(
            drive_calls(sip_port, f"http://127.0.0.1:{http_port}", n, seconds, rx, server.pid), seconds + 180))
    finally:
        if rx.proc.poll() is None:
            rx.proc.kill()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data, ignore_errors=True)
    return make_row(f"mediasrv {loop}", n, stats, cpu, seconds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="100,500,1000,2000")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--loops", default="uvloop,asyncio")
    args = ap.parse_args()
    for tool in ("gcc", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is required", file=sys.stderr)
            return 1
    tmp = Path(tempfile.mkdtemp(prefix="mediasrv-bench-c-"))
    receiver_exe, sender_exe = build(tmp)
    print(f"window {args.seconds:.0f} s per row; server and C sender pinned to CPU 1, receiver to CPU 0; "
          "deviation = |inter-arrival - 20 ms| from kernel receive timestamps", flush=True)
    header = (f"{'sender':18} {'N':>5} {'packets':>9} {'lost':>6} {'seq err':>7} {'ts err':>6} {'ssrc chg':>8} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'CPU %':>6} {'µs/pkt':>7} {'p99 ×C':>7} {'µs ×C':>6}")
    print(header, flush=True)
    for n in [int(x) for x in args.n.split(",")]:
        c_row = run_c(receiver_exe, sender_exe, n, args.seconds)
        for loop in [None, *args.loops.split(",")]:
            try:
                r = c_row if loop is None else run_mediasrv(receiver_exe, n, args.seconds, loop)
            except Exception as exc:  # an overloaded row is a result too: say so and go on
                print(f"{'mediasrv ' + str(loop):18} {n:5d} failed: {type(exc).__name__} {exc}"[:200], flush=True)
                continue
            ratio_p99 = r.p99_ms / c_row.p99_ms if c_row.p99_ms else float("nan")
            ratio_cpu = r.us_per_packet / c_row.us_per_packet if c_row.us_per_packet else float("nan")
            print(f"{r.sender:18} {r.n:5d} {r.packets:9d} {r.lost:6d} {r.seq_errors:7d} {r.ts_errors:6d} "
                  f"{r.ssrc_changes:8d} {r.p50_ms:7.2f} {r.p99_ms:7.2f} {r.max_ms:7.2f} {r.cpu_pct:6.1f} "
                  f"{r.us_per_packet:7.2f} {ratio_p99:7.2f} {ratio_cpu:6.2f}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
