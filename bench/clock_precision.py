"""How precisely can the event loop wake at an absolute 1 ms grid?  (chooses the clock's wake-up).

For each loop (asyncio, uvloop) and mechanism (loop.call_at, an absolute timerfd read
through loop.add_reader, and sleep-then-spin: call_at 1 ms early then spin on
time.monotonic), wake at t0 + k·1 ms for --seconds and print the lateness
distribution and the CPU the process used.

With ``--legs N`` it instead measures the real media plane under load: N calls, each
playing a looped WAV through :class:`MediaPlane` on uvloop, all sending to one receiver
in a separate process that stamps arrivals with kernel timestamps (SO_TIMESTAMPNS) and
reports loss and the per-stream inter-arrival deviation from the packet time, while the
server's own CPU per packet is taken from getrusage.

    python bench/clock_precision.py --seconds 5
    python bench/clock_precision.py --legs 1500 --seconds 10
    BENCH_SENDTO=1 ...   (A/B: unconnected sendto)   BENCH_NOOP=1 ...   (no send: Python cost only)
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import socket
import struct
import tempfile
import time
from multiprocessing.connection import Connection

import numpy as np
import soundfile

from mediasrv.media.clock import _TimerFd

SO_TIMESTAMPNS = 35

STEP = 0.001


async def measure(mechanism: str, seconds: float) -> tuple[np.ndarray, float]:
    loop = asyncio.get_running_loop()
    n = int(seconds / STEP)
    lateness = np.zeros(n)
    done = loop.create_future()
    t0 = time.monotonic() + 0.05
    state = {"k": 0}
    tfd = _TimerFd() if mechanism == "timerfd" else None

    def deadline() -> float:
        return t0 + state["k"] * STEP

    def fired() -> None:
        now = time.monotonic()
        if mechanism == "spin":
            while now < deadline():
                now = time.monotonic()
        lateness[state["k"]] = now - deadline()
        state["k"] += 1
        if state["k"] >= n:
            done.set_result(None)
            return
        arm()

    def arm() -> None:
        d = deadline()
        if tfd is not None:
            tfd.arm(d)
        else:
            early = 0.001 if mechanism == "spin" else 0.0
            loop.call_at(loop.time() + (d - early - time.monotonic()), fired)

    if tfd is not None:
        def on_read() -> None:
            tfd.consume()
            fired()
        loop.add_reader(tfd.fd, on_read)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    arm()
    await done
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    if tfd is not None:
        loop.remove_reader(tfd.fd)
        tfd.close()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return lateness, 100.0 * cpu / seconds


def receive(port_out: Connection, seconds: float) -> None:
    """Child process: one socket for every stream; (ssrc, seq, kernel arrival time) for each packet."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 25)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(1.0)
    port_out.send(sock.getsockname()[1])
    unpack, stamp = struct.Struct("!HII").unpack_from, struct.Struct("@qq").unpack_from
    rows: list[tuple[int, int, float]] = []
    start = port_out.recv()  # the server says when every leg is up
    end = time.time() + seconds + 1.0
    while time.time() < end:
        try:
            data, anc, _, _ = sock.recvmsg(512, 64)
        except TimeoutError:
            continue
        sec, nsec = stamp(anc[0][2])
        seq, _, ssrc = unpack(data, 2)
        rows.append((ssrc, seq, sec + nsec * 1e-9))
    port_out.send((start, rows))


def report(rows: list[tuple[int, int, float]], start: float, ptime: float) -> str:
    streams: dict[int, list[tuple[int, float]]] = {}
    for ssrc, seq, t in rows:
        if start <= t:
            streams.setdefault(ssrc, []).append((seq, t))
    lost, devs = 0, []
    for pkts in streams.values():
        seqs = np.array([s for s, _ in pkts], dtype=np.int64)
        times = np.array([t for _, t in pkts])
        steps = (np.diff(seqs) % 65536)
        lost += int(np.sum(steps - 1))
        ok = steps == 1
        devs.append(np.abs(np.diff(times)[ok] - ptime))
    d = np.concatenate(devs) * 1e3
    return (f"streams={len(streams)} packets={len(rows)} lost={lost} inter-arrival deviation "
            f"p50={np.percentile(d, 50):.3f} ms p99={np.percentile(d, 99):.3f} ms max={d.max():.3f} ms")


async def load(legs: int, seconds: float, ptime: int) -> None:
    from mediacodecs.codec import PCMU
    from mediasrv.calls.registry import Call, Direction, NegotiatedMedia
    from mediasrv.media import MediaPlane, MediaSettings, PlayRequest

    parent, child = mp.Pipe()
    rx = mp.get_context("fork").Process(target=receive, args=(child, seconds), daemon=True)
    rx.start()
    port = parent.recv()
    data = tempfile.mkdtemp()
    os.makedirs(f"{data}/media")
    pcm = (np.sin(np.arange(80000) * 2 * np.pi * 440 / 8000) * 8000).astype(np.int16)
    soundfile.write(f"{data}/media/tone.wav", pcm, 8000, subtype="PCM_16")
    plane = MediaPlane(MediaSettings(data_dir=data, rtp_port_lo=30000, rtp_port_hi=30000 + 4 * legs + 100),
                       emit=lambda *_: None)
    await plane.start()
    for i in range(legs):
        call = Call(Direction.INBOUND, "sip:a@x", "sip:b@x", f"bench-{i}")
        call.media = NegotiatedMedia(("127.0.0.1", port), PCMU, 0, ptime_ms=ptime)
        plane.allocate(call)
        plane.media_changed(call)
        plane.play(call.call_id, PlayRequest(media="tone.wav", loop=None))
        if os.environ.get("BENCH_NOOP"):
            plane._drivers[call.call_id].leg.transmit = len
        if os.environ.get("BENCH_SENDTO"):  # A/B: unconnected sendto instead of the connected socket
            leg = plane._drivers[call.call_id].leg
            leg.transmit = (lambda f, a: lambda p: f(p, a))(leg.rtp_sock.sendto, ("127.0.0.1", port))
    await asyncio.sleep(2.0)  # loads done, every leg playing
    m0, r0, t0 = plane.metrics(), resource.getrusage(resource.RUSAGE_SELF), time.time()
    parent.send(t0)
    await asyncio.sleep(seconds)
    m1, r1, t1 = plane.metrics(), resource.getrusage(resource.RUSAGE_SELF), time.time()
    await plane.stop()
    start, rows = parent.recv()
    rx.join()
    sent = m1["packets_sent"] - m0["packets_sent"]
    user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    late = m1["late_ticks"] - m0["late_ticks"]
    hist0 = dict(m0["lateness_histogram"]["buckets"])
    hist1 = m1["lateness_histogram"]["buckets"]
    wakes = hist1[-1][1] - hist0["+Inf"]
    cdf = " ".join(f"≤{le}:{100 * (n - hist0[le]) / max(1, wakes):.1f}%" for le, n in hist1[:-1])
    print(f"legs={legs} ptime={ptime} ms clock={plane.clock.mechanism} window={t1 - t0:.1f} s")
    print(f"server: packets sent={sent} ({sent / (t1 - t0):.0f}/s), CPU {100 * (user + sys_) / (t1 - t0):.1f}% "
          f"of a core, {1e6 * (user + sys_) / max(1, sent):.2f} µs/packet "
          f"(user {1e6 * user / max(1, sent):.2f}, sys {1e6 * sys_ / max(1, sent):.2f})")
    print(f"clock: late sub-slots={late}, wake lateness CDF {cdf}")
    print("receiver: " + report(rows, start, ptime / 1000))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--legs", type=int, default=0, help="measure the media plane with this many playing legs")
    ap.add_argument("--ptime", type=int, default=20)
    args = ap.parse_args()
    import uvloop

    if args.legs:
        uvloop.run(load(args.legs, args.seconds, args.ptime))
        return

    print(f"{'loop':8} {'mechanism':9} {'p50 µs':>8} {'p99 µs':>8} {'max µs':>9} {'CPU %':>6}")
    for loop_name, runner in (("asyncio", asyncio.run), ("uvloop", uvloop.run)):
        for mechanism in ("call_at", "timerfd", "spin"):
            lat, cpu = runner(measure(mechanism, args.seconds))
            us = np.abs(lat) * 1e6
            print(f"{loop_name:8} {mechanism:9} {np.percentile(us, 50):8.0f} {np.percentile(us, 99):8.0f} "
                  f"{us.max():9.0f} {cpu:6.1f}")


if __name__ == "__main__":
    main()
