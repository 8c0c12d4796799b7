"""CPU per packet of the clock's per-sub-slot work: Python LegDriver.tick vs the C group runner.

N real legs (RtpLeg + Player + LegDriver, each playing a long pre-encoded prompt in a loop) on
real loopback sockets, each connected to one of a few receiver sockets that a separate process
drains (pinned to the other CPU).  The legs are split into 20 groups like the clock's 1 ms
sub-slots; for each mode the bench runs the groups for --seconds, paced on an absolute 1 ms
grid (``--unpaced``: back to back), and prints process CPU time / packets :

- ``python``   : ``clock.run_each`` over every leg's ``LegDriver.tick`` (the reference)
- ``group``    : ``_fastsend.run_group`` over the legs' packet states, as the media plane
                 schedules them (the C tick from the struct, ``LegDriver.tick`` for the rest)

Both modes drive the same objects: there is no copy of the tick here.  Modes alternate in
rounds (``--rounds``) so a noisy neighbour hits them alike; ``x python`` is the ratio to the
same round's ``python`` figure.

    python bench/fastsend_micro.py --legs 500,1000,1500 --seconds 3 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from mediacodecs.codec import PCMU
from mediacodecs.g711 import ulaw_encode
from mediasrv.content.source import Media
from mediasrv.media.clock import run_each
from mediasrv.media.plane import LegDriver
from mediasrv.media.player import Player, PlayRequest, new_playback
from mediasrv.rtp import fastpath
from mediasrv.rtp.fastpath import RunGroup
from mediasrv.rtp.leg import PortAllocator, RtpLeg

RECEIVERS = 8
SEND_CPU, RECV_CPU = 1, 0
RECEIVER = r"""
import select, socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind(("127.0.0.1", 0)); s.setblocking(False); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks), flush=True)
count = 0
while True:
    r, _, _ = select.select(socks + [sys.stdin], [], [])
    for s in r:
        if s is sys.stdin:
            sys.stdin.readline(); print(count, flush=True); continue
        try:
            while True:
                s.recv(2048); count += 1
        except BlockingIOError:
            pass
"""


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def make_legs(n: int, ports: list[int], loop: asyncio.AbstractEventLoop) -> list[LegDriver]:
    alloc = PortAllocator("127.0.0.1", 50000, 50000 + 2 * n + 2000)
    pcm = np.random.default_rng(1).integers(-12000, 12000, 8000 * 60).astype(np.int16)
    media = Media("bench", pcm, {"PCMU": ulaw_encode(pcm)})
    drivers = []
    for i in range(n):
        rtp, rtcp = alloc.bind_pair()
        leg = RtpLeg(f"c{i}", rtp, rtcp)
        leg.set_remote(("127.0.0.1", ports[i % len(ports)]))
        player = Player(PCMU, lambda t, pb: None)
        driver = LegDriver(leg, player, True)
        driver.configure(PCMU, 0, 20)
        fut = loop.create_future()
        fut.set_result(media)
        player.enqueue(new_playback(f"c{i}", PlayRequest(url="u", loop=None), [fut]))
        drivers.append(driver)
    return drivers


def groups_for(mode: str, drivers: list[LegDriver], slots: int = 20) -> tuple[RunGroup, list[tuple[Callable[[], object], ...]]]:
    if mode == "python":
        runner, ticks = run_each, [d.tick for d in drivers]
    else:
        runner, ticks = fastpath.group_runner(run_each), list(d.leg for d in drivers)
    return runner, [tuple(ticks[i::slots]) for i in range(slots)]


def run_mode(mode: str, drivers: list[LegDriver], seconds: float, paced: bool) -> tuple[int, float, float, float]:
    runner, groups = groups_for(mode, drivers)
    sent0 = sum(d.leg.packets_sent for d in drivers)
    ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    k = 0
    end = t0 + seconds
    while True:
        if paced:
            deadline = t0 + k * 0.001
            now = time.monotonic()
            if deadline > now:
                time.sleep(deadline - now)
        elif time.monotonic() >= end:
            break
        if paced and t0 + k * 0.001 >= end:
            break
        failed = runner(groups[k % len(groups)])
        if failed:
            raise failed[0][1]
        k += 1
    ru = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - t0
    return sum(d.leg.packets_sent for d in drivers) - sent0, ru.ru_utime - ru0.ru_utime, ru.ru_stime - ru0.ru_stime, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--legs", default="500,1000,1500")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default="python,group")
    ap.add_argument("--unpaced", action="store_true", help="run the groups back to back instead of every 1 ms")
    args = ap.parse_args()
    if not fastpath.AVAILABLE:
        sys.exit(f"mediasrv.rtp._fastsend is not built ({fastpath.IMPORT_ERROR}): pip install -e .")
    raise_fd_limit()
    os.sched_setaffinity(0, {SEND_CPU})
    rx = subprocess.Popen(["taskset", "-c", str(RECV_CPU), sys.executable, "-c", RECEIVER, str(RECEIVERS)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout is not None and rx.stdin is not None
        ports = [int(p) for p in rx.stdout.readline().split()]
        loop = asyncio.new_event_loop()
        modes = args.modes.split(",")
        print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; sender on CPU {SEND_CPU}, receiver on CPU "
              f"{RECV_CPU}; {'unpaced' if args.unpaced else 'paced 1 ms sub-slots, 20 groups'}; {args.seconds:g} s per mode")
        print(f"{'legs':>5} {'round':>5} {'mode':>8} {'packets':>9} {'deliv%':>7} {'CPU s':>7} {'us/pkt':>7} {'x python':>8}")
        for n in map(int, args.legs.split(",")):
            drivers = make_legs(n, ports, loop)
            for r in range(args.rounds):
                base = None
                for mode in modes:
                    rx.stdin.write("\n")
                    rx.stdin.flush()
                    got0 = int(rx.stdout.readline())
                    packets, user, system, _ = run_mode(mode, drivers, args.seconds, not args.unpaced)
                    cpu = user + system  # the kernel splits user/system by sampling: only the sum means much
                    time.sleep(0.2)
                    rx.stdin.write("\n")
                    rx.stdin.flush()
                    got = int(rx.stdout.readline()) - got0
                    us = cpu / max(packets, 1) * 1e6
                    if mode == "python":
                        base = us
                    ratio = f"{us / base:8.2f}" if base else f"{'':>8}"
                    deliv = 100.0 * got / max(packets, 1)
                    print(f"{n:>5} {r + 1:>5} {mode:>8} {packets:>9} {deliv:>7.1f} {cpu:>7.2f} {us:>7.2f} {ratio}",
                          flush=True)
            for d in drivers:
                d.leg.close(send_bye=False)
        print("counters:", fastpath.counters())
    finally:
        rx.kill()
        rx.wait()


if __name__ == "__main__":
    main()
