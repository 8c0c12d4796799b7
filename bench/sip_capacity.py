"""SIP call capacity: the highest rate of short calls SIPp's built-in UAC completes with zero failures.

Runs ``mediasrv serve`` (the whole server: each call also gets an RTP leg sending silence)
and ``sipp -sn uac -d 1000`` at increasing rates, each step bounded in calls and time,
with and without ``-lost 5``; prints successful/failed calls and the server's CPU per
step, then the server's RSS before and after a 20,000-call soak.

    python bench/sip_capacity.py --rates 100,200,300,400,500 --seconds 10
    python bench/sip_capacity.py --sip-only   # the SIP user agent alone (NullMedia, uvloop)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")

# --sip-only: the SIP UA with NullMedia on uvloop, nothing else (signaling capacity on one core).
SIP_ONLY = """
import asyncio, signal, sys, uvloop
from mediasrv.calls.registry import CallRegistry, NullMedia
from mediasrv.calls.controller import SipSettings, SipUserAgent
async def main():
    ua = SipUserAgent(SipSettings(host="127.0.0.1", port=int(sys.argv[1])), CallRegistry(), NullMedia())
    await ua.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print("sip stats:", ua.stats, flush=True)
    await ua.stop()
uvloop.run(main())
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_sipp(port: int, rate: int, calls: int, lost: int, timeout_s: int) -> tuple[int, int, float]:
    args = ["sipp", f"127.0.0.1:{port}", "-sn", "uac", "-d", "1000", "-r", str(rate), "-m", str(calls),
            "-l", str(rate * 3), "-i", "127.0.0.1", "-p", str(free_port()), "-nostdin",
            "-timeout", f"{timeout_s}s", "-timeout_error", "-max_socket", "1000"]
    if lost:
        args += ["-lost", str(lost)]
    t0 = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s + 30,
                          env={**os.environ, "TERM": "dumb"})
    elapsed = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", out)
    failed = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", out)
    return (int(ok[-1]) if ok else -1), (int(failed[-1]) if failed else -1), elapsed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="100,200,300,400,500")
    ap.add_argument("--seconds", type=int, default=10, help="calls per step = rate × seconds")
    ap.add_argument("--soak", type=int, default=20000, help="calls for the memory check (0 = skip)")
    ap.add_argument("--soak-rate", type=int, default=300)
    ap.add_argument("--asyncio", action="store_true")
    ap.add_argument("--sip-only", action="store_true", help="run only the SIP UA (NullMedia, uvloop)")
    args = ap.parse_args()
    if shutil.which("sipp") is None:
        print("sipp is not installed (apt-get install sip-tester)", file=sys.stderr)
        return 1
    sip_port, http_port = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="mediasrv-bench-")
    cmd = [sys.executable, "-m", "mediasrv", "serve", "--sip", f"127.0.0.1:{sip_port}",
           "--http", f"127.0.0.1:{http_port}", "--rtp-ports", "30000-39999", "--data-dir", data,
           "--log-level", "WARNING"] + (["--asyncio"] if args.asyncio else [])
    if args.sip_only:
        cmd = [sys.executable, "-c", SIP_ONLY, str(sip_port)]
    server = subprocess.Popen(cmd)
    try:
        time.sleep(2.0)
        what = "SIP UA only (NullMedia)" if args.sip_only else "mediasrv serve"
        print(f"{what}, server pid {server.pid}, loop {'asyncio' if args.asyncio and not args.sip_only else 'uvloop'};"
              " sipp -sn uac -d 1000")
        print(f"{'rate/s':>7} {'lost%':>5} {'calls':>6} {'ok':>6} {'failed':>6} {'wall s':>7} {'server CPU%':>11}")
        for lost in (0, 5):
            for rate in [int(r) for r in args.rates.split(",")]:
                calls = rate * args.seconds
                c0, t0 = cpu_seconds(server.pid), time.monotonic()
                ok, failed, wall = run_sipp(sip_port, rate, calls, lost, args.seconds * 3 + 20)
                cpu = 100 * (cpu_seconds(server.pid) - c0) / (time.monotonic() - t0)
                print(f"{rate:7d} {lost:5d} {calls:6d} {ok:6d} {failed:6d} {wall:7.1f} {cpu:11.1f}", flush=True)
                time.sleep(2.0)
        if args.soak:
            before = rss_mb(server.pid)
            ok, failed, wall = run_sipp(sip_port, args.soak_rate, args.soak, 0, args.soak // args.soak_rate * 3 + 30)
            time.sleep(3.0)
            after = rss_mb(server.pid)
            print(f"soak: {args.soak} calls at {args.soak_rate}/s: ok={ok} failed={failed} in {wall:.0f} s; "
                  f"server RSS {before:.1f} MB before, {after:.1f} MB after")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
