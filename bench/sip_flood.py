"""SIP floods against a live mediasrv, bounded: what one hostile source costs everyone else.

Two sub-commands:

``flood``  send dialog-less requests (REGISTER, OPTIONS or unknown methods) from one source
           address at a fixed rate for a fixed time (the integration tests use it as "source B")::

    python3 bench/sip_flood.py flood --target 127.0.0.1:5060 --source 127.0.0.2 --rate 2000 --seconds 5

``measure`` start ``mediasrv serve`` (loopback, its own ports) and report
           (1) OPTIONS from 127.0.0.1 answered (count, p50/p99 latency) while 127.0.0.2 floods
           REGISTER/OPTIONS at ``--rate`` for ``--seconds``, and (2) the server's RSS before and
           after ``--registers`` REGISTERs (each a new Call-ID, paced at 600/s like the scanner run)::

    python3 bench/sip_flood.py measure --rate 2000 --seconds 5 --registers 15000

Everything is bounded by the given counts and times; only processes started here are stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("REGISTER", "OPTIONS", "SUBSCRIBE", "FOOBAR")


def request(method: str, target: str, source: tuple[str, int], n: int, agent: str = "flood/1") -> bytes:
    host, port = source
    tag = f"{n:x}{random.getrandbits(24):x}"
    return (
        f"{method} sip:probe@{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{tag};rport\r\n"
        f"From: <sip:flood@{host}>;tag={tag}\r\n"
        f"To: <sip:probe@{target}>\r\n"
        f"Call-ID: {tag}-{n}@{host}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:flood@{host}:{port}>\r\n"
        f"Max-Forwards: 70\r\nUser-Agent: {agent}\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def flood(target: str, source_ip: str, rate: float, seconds: float, methods: tuple[str, ...] = METHODS) -> int:
    """Send at *rate*/s for *seconds* from *source_ip*; returns how many datagrams went out."""
    host, port_s = target.rsplit(":", 1)
    dest = (host, int(port_s))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source_ip, 0))
        s.setblocking(False)
        me = s.getsockname()
        start = time.monotonic()
        n = 0
        total = int(rate * seconds)
        while n < total:
            due = start + n / rate
            now = time.monotonic()
            if due > now:
                time.sleep(min(due - now, 0.01))
                continue
            try:
                s.sendto(request(methods[n % len(methods)], target, me, n), dest)
            except BlockingIOError:
                pass
            n += 1
            if n % 64 == 0:  # discard what the server answered so our socket buffer never fills
                try:
                    while s.recv(65535):
                        pass
                except BlockingIOError:
                    pass
    return n


def probe_options(target: str, seconds: float, interval: float = 0.05, source_ip: str = "127.0.0.1") -> dict:
    """OPTIONS every *interval* s for *seconds*; latency of each answer (2 s give-up)."""
    host, port_s = target.rsplit(":", 1)
    dest = (host, int(port_s))
    lat: list[float] = []
    lost = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source_ip, 0))
        me = s.getsockname()
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1
            data = request("OPTIONS", target, me, n, agent="probe/1")
            branch = data.split(b"branch=", 1)[1].split(b";", 1)[0]
            t0 = time.monotonic()
            s.sendto(data, dest)
            got = False
            while time.monotonic() - t0 < 2.0:
                s.settimeout(max(0.001, 2.0 - (time.monotonic() - t0)))
                try:
                    resp = s.recv(65535)
                except TimeoutError:
                    break
                if branch in resp and resp.startswith(b"SIP/2.0 200"):
                    lat.append(time.monotonic() - t0)
                    got = True
                    break
            if not got:
                lost += 1
            time.sleep(max(0.0, interval - (time.monotonic() - t0)))
    lat.sort()
    return {
        "sent": n,
        "answered": len(lat),
        "lost": lost,
        "p50_ms": round(statistics.median(lat) * 1000, 2) if lat else None,
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 2) if lat else None,
        "max_ms": round(lat[-1] * 1000, 2) if lat else None,
    }


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        return u.getsockname()[1]


def measure(rate: float, seconds: float, registers: int) -> dict:
    repo = Path(__file__).resolve().parents[1]
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(repo), "MEDIASRV_EVENTS_JOURNAL": "false"}
    data_dir = Path("/tmp") / f"sip_flood_{os.getpid()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mediasrv", "serve", "--sip", f"127.0.0.1:{port}", "--http", "127.0.0.1:0",
         "--data-dir", str(data_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "mediasrv serving: ..."
        target = f"127.0.0.1:{port}"
        time.sleep(1.0)
        result: dict = {"flood_rate": rate, "flood_seconds": seconds}
        result["options_alone"] = probe_options(target, 2.0)
        flooder = subprocess.Popen(
            [sys.executable, __file__, "flood", "--target", target, "--source", "127.0.0.2",
             "--rate", str(rate), "--seconds", str(seconds)],
        )
        result["options_during_flood"] = probe_options(target, seconds)
        flooder.wait(timeout=seconds + 30)
        time.sleep(1.0)
        before = rss_kb(proc.pid)
        flood(target, "127.0.0.3", 600.0, registers / 600.0, ("REGISTER",))
        time.sleep(1.0)
        after = rss_kb(proc.pid)
        result["registers"] = registers
        result["rss_kb_before_registers"] = before
        result["rss_kb_after_registers"] = after
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("flood")
    f.add_argument("--target", required=True)
    f.add_argument("--source", default="127.0.0.2")
    f.add_argument("--rate", type=float, default=2000.0)
    f.add_argument("--seconds", type=float, default=5.0)
    f.add_argument("--methods", default=",".join(METHODS))
    m = sub.add_parser("measure")
    m.add_argument("--rate", type=float, default=2000.0)
    m.add_argument("--seconds", type=float, default=5.0)
    m.add_argument("--registers", type=int, default=15000)
    args = ap.parse_args()
    if args.cmd == "flood":
        if args.seconds > 60 or args.rate > 20000:
            sys.exit("bounded: at most 60 s and 20,000/s")
        sent = flood(args.target, args.source, args.rate, args.seconds, tuple(args.methods.split(",")))
        print(json.dumps({"sent": sent}))
    else:
        if args.seconds > 60 or args.registers > 100000:
            sys.exit("bounded: at most 60 s of flood and 100,000 REGISTERs")
        print(json.dumps(measure(args.rate, args.seconds, args.registers), indent=2))


if __name__ == "__main__":
    main()
