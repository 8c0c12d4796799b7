"""How precisely can the event loop wake at an absolute 1 ms grid?  (chooses the clock's wake-up).

For each loop (asyncio, uvloop) and mechanism (loop.call_at, an absolute timerfd read
through loop.add_reader, and sleep-then-spin: call_at 1 ms early then spin on
time.monotonic), wake at t0 + k·1 ms for --seconds and print the lateness
distribution and the CPU the process used.

    python bench/clock_precision.py --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time

import numpy as np

from mediasrv.media.clock import _TimerFd

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    import uvloop

    print(f"{'loop':8} {'mechanism':9} {'p50 µs':>8} {'p99 µs':>8} {'max µs':>9} {'CPU %':>6}")
    for loop_name, runner in (("asyncio", asyncio.run), ("uvloop", uvloop.run)):
        for mechanism in ("call_at", "timerfd", "spin"):
            lat, cpu = runner(measure(mechanism, args.seconds))
            us = np.abs(lat) * 1e6
            print(f"{loop_name:8} {mechanism:9} {np.percentile(us, 50):8.0f} {np.percentile(us, 99):8.0f} "
                  f"{us.max():9.0f} {cpu:6.1f}")


if __name__ == "__main__":
    main()
