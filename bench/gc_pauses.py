"""Cyclic-GC pauses and clock lateness under call churn, with and without mediasrv/ops/gcpolicy.py's freezing.

For each mode (``MEDIASRV_GC_FREEZE=1`` then ``0``, or as ``--modes`` says), it starts
``mediasrv serve`` (pinned to CPU 1; silence is sent, so every answered call is a leg on the
clock) and SIPp ``uac_load.xml`` (pinned to CPU 0) placing ``--calls`` calls of ``--hold`` ms at
``--rate`` calls/s: the server reaches ``rate x hold`` concurrent calls and then keeps
replacing them, which is what makes long-lived objects pile up for the collector.  When SIPp
is done it reads the server's ``/metrics``: collections and pause totals per generation, the
pauses over 5 and 50 ms, the longest, and how many clock wake-ups were more than 5 / 10 / 20 ms
late.  Everything is bounded (SIPp ``-m`` and ``-timeout``; the server is stopped by its PID).

    python bench/gc_pauses.py                      # 1,000 concurrent, 3,000 calls per mode
    python bench/gc_pauses.py --rate 20 --hold 10000 --calls 400   # smoke
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
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCENARIO = REPO / "sipp-scenarios" / "uac_load.xml"


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(http: str) -> str:
    with urllib.request.urlopen(f"{http}/metrics", timeout=10) as resp:
        return resp.read().decode()


def sample(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def run(mode: str, args: argparse.Namespace) -> str:
    data = Path(tempfile.mkdtemp(prefix="mediasrv-gc-"))
    sip_port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    http = f"http://127.0.0.1:{http_port}"
    env = {**os.environ, "MEDIASRV_GC_FREEZE": mode, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, "-m", "mediasrv", "serve", "--sip", f"127.0.0.1:{sip_port}",
         "--http", f"127.0.0.1:{http_port}", "--rtp-ports", "30000-39998", "--data-dir", str(data),
         "--rtp-timeout", "0", "--log-level", "WARNING"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                metrics(http)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("server did not come up") from None
                time.sleep(0.2)
        before = metrics(http)
        sipp = subprocess.run(
            ["taskset", "-c", "0", "sipp", f"127.0.0.1:{sip_port}", "-sf", str(SCENARIO), "-i", "127.0.0.1", "-p", "0",
             "-mp", str(free_port(socket.SOCK_DGRAM)), "-r", str(args.rate), "-l", str(int(args.rate * args.hold / 1000) + 50),
             "-d", str(args.hold), "-m", str(args.calls), "-timeout", f"{int(args.calls / args.rate + args.hold / 1000 + 60)}s",
             "-timeout_error", "-nostdin"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "TERM": "dumb"},
            timeout=args.calls / args.rate + args.hold / 1000 + 120)
        ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", sipp.stdout)
        failed = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", sipp.stdout)
        after = metrics(http)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(data, ignore_errors=True)
    cols = [f"{'on' if mode == '1' else 'off':>6}", f"{ok[-1] if ok else '?':>5}/{failed[-1] if failed else '?':<3}"]
    for gen in ("0", "1", "2"):
        lab = f'{{generation="{gen}"}}'
        n = sample(after, "mediasrv_gc_pause_seconds_count", lab) - sample(before, "mediasrv_gc_pause_seconds_count", lab)
        total = sample(after, "mediasrv_gc_pause_seconds_sum", lab) - sample(before, "mediasrv_gc_pause_seconds_sum", lab)
        over5 = n - (sample(after, "mediasrv_gc_pause_seconds_bucket", f'{{generation="{gen}",le="0.005"}}')
                     - sample(before, "mediasrv_gc_pause_seconds_bucket", f'{{generation="{gen}",le="0.005"}}'))
        over50 = n - (sample(after, "mediasrv_gc_pause_seconds_bucket", f'{{generation="{gen}",le="0.05"}}')
                      - sample(before, "mediasrv_gc_pause_seconds_bucket", f'{{generation="{gen}",le="0.05"}}'))
        mx = sample(after, "mediasrv_gc_pause_max_seconds", lab)
        cols.append(f"{n:6.0f} {1000 * total:8.1f} {over5:4.0f} {over50:4.0f} {1000 * mx:7.1f}")
    late = []
    count = sample(after, "mediasrv_clock_tick_lateness_seconds_count")
    for le in ("0.005", "0.01", "0.02"):
        late.append(count - sample(after, "mediasrv_clock_tick_lateness_seconds_bucket", f'{{le="{le}"}}'))
    cols.append(" ".join(f"{x:6.0f}" for x in late))
    return "  ".join(cols)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=50.0, help="new calls per second")
    ap.add_argument("--hold", type=int, default=20000, help="call length in ms")
    ap.add_argument("--calls", type=int, default=3000, help="calls per mode")
    ap.add_argument("--modes", default="1,0", help="MEDIASRV_GC_FREEZE values to run, in order")
    args = ap.parse_args()
    for tool in ("sipp", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is required", file=sys.stderr)
            return 1
    print(f"{args.calls} calls of {args.hold} ms at {args.rate:g}/s (~{args.rate * args.hold / 1000:.0f} concurrent), "
          "server on CPU 1, SIPp on CPU 0; per generation: collections, total pause ms, pauses > 5 ms, > 50 ms, "
          "longest ms; then clock wake-ups later than 5 / 10 / 20 ms", flush=True)
    print(f"{'freeze':>6}  {'ok/fail':9}  {'gen 0':^33}  {'gen 1':^33}  {'gen 2':^33}  late>5/10/20 ms", flush=True)
    for mode in args.modes.split(","):
        try:
            print(run(mode.strip(), args), flush=True)
        except Exception as exc:  # noqa: BLE001 - report the row and go on
            print(f"{mode}: failed: {type(exc).__name__}: {exc}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
