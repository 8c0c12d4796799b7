"""The one media clock: absolute deadlines, 1 ms sub-slots, every leg at a fixed phase.

Why this shape:
- Absolute deadlines (tick *k* is due at ``t0 + k·1 ms``) mean a late wake-up never
  shifts later packets: the clock catches up by running every due tick, so RTP
  timestamps and wall time never drift apart.  Late wake-ups are counted and their
  lateness recorded.
- Staggering: each leg is placed in the least-loaded of 20 one-millisecond sub-slots
  (for 20 ms ptime; other ptimes likewise over their own period) and sends one packet
  every ``ptime`` ms from there, so 1,000 legs leave as 20 groups of 50 instead of one
  burst of 1,000 (the burst is what makes p99 jitter grow).
- Waking: an absolute ``timerfd`` (CLOCK_MONOTONIC, TFD_TIMER_ABSTIME) registered with
  ``loop.add_reader``, chosen by ``bench/clock_precision.py`` (wake lateness on a 1 ms
  grid, 5 s each, this 2-core VM, uvloop):  call_at p50 308 µs / p99 2546 µs / max 8.2 ms
  at 5 % CPU; timerfd p50 69 / p99 869 µs / max 6.5 ms at 6 % CPU; sleep-then-spin p50 0 /
  p99 4 µs but 100 % of a core, which the legs need.  (asyncio: call_at 626/2268 µs,
  timerfd 79/1179 µs.)  ``loop.call_at`` is the fallback where timerfd is missing.

:class:`ClockCore` is the pure scheduling logic (time is passed in), so tests drive it
with a fake clock; :class:`MediaClock` is the thin asyncio driver.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..rtp.fastpath import RunGroup

log = logging.getLogger("mediasrv.clock")

SUBSLOT_S = 0.001
SLOTS_PER_CYCLE = 20  # for 20 ms ptime: 20 phases of 1 ms
HYPER_CYCLE = 120  # sub-slots; a multiple of every usual ptime (10, 20, 30, 40, 60 ms)
LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02)
GAP_S = 0.0005  # MediaClock.gap(): room asked for before the next sub-slot (a scrape's longest slice: ~0.46 ms)


class Tickable(Protocol):
    def tick(self) -> None:
        """Send this leg's packet for the current packet time (must not block)."""


@dataclass(eq=False)
class Scheduled:
    item: Tickable
    period: int  # in sub-slots (= ptime in ms)
    phase: int  # fires on sub-slots k with k % period == phase
    active: bool = True
    added_tick: int = 0  # the sub-slot it joined at (its pacing history starts there)


@dataclass
class ClockStats:
    ticks: int = 0  # sub-slots processed
    wakeups: int = 0
    late_ticks: int = 0  # sub-slots with packets run more than one sub-slot after their deadline
    packets: int = 0  # item.tick() calls
    tick_errors: int = 0
    lateness_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENESS_BUCKETS) + 1))
    lateness_sum: float = 0.0

    def record_lateness(self, seconds: float) -> None:
        self.lateness_sum += seconds
        for i, le in enumerate(LATENESS_BUCKETS):
            if seconds <= le:
                self.lateness_counts[i] += 1
                return
        self.lateness_counts[-1] += 1

    def histogram(self) -> dict[str, object]:
        cumulative, buckets = 0, []
        for le, n in zip([*map(str, LATENESS_BUCKETS), "+Inf"], self.lateness_counts, strict=True):
            cumulative += n
            buckets.append((le, cumulative))
        return {"buckets": buckets, "sum": self.lateness_sum, "count": cumulative}


class PacingHistory:
    """Per-second worst lateness of each hyper-cycle position, for the last minute (the live page's plot).

    Why this shape: the clock already knows how late each sub-slot runs, and every leg of one
    (period, phase) group shares its sub-slots, so a leg's pacing is its positions' lateness.
    The clock's cost is one compare per sub-slot (not per packet) and a 120-float copy per
    second; a leg's series is worked out only when someone asks (:meth:`series`).
    """

    SECONDS = 60

    def __init__(self) -> None:
        self.current = [0.0] * HYPER_CYCLE  # worst lateness per position in the second being filled
        self.seconds: deque[tuple[int, list[float]]] = deque(maxlen=self.SECONDS)  # (second index, worst per position)
        self.second = 0  # index of the second being filled (sub-slot // 1000)

    def roll(self, second: int) -> None:
        self.seconds.append((self.second, self.current))
        self.current = [0.0] * HYPER_CYCLE
        self.second = second

    def series(self, positions: range) -> list[tuple[int, float]]:
        """(second index, worst lateness in seconds) over *positions*, oldest first, the filling second last."""
        rows = [*self.seconds, (self.second, self.current)]
        return [(sec, max(worst[i] for i in positions)) for sec, worst in rows]


Tick = Callable[[], object]  # what a group holds: a bound ``tick``, or a leg's packet state (rtp/fastpath.py)


def run_each(ticks: tuple[Tick, ...]) -> list[tuple[Tick, Exception]] | None:
    """Call every tick of a group; a failing tick is reported (tick, exc), the others still run."""
    failed = None
    for tick in ticks:
        try:
            tick()
        except Exception as exc:  # one leg's bug must not stop every other leg
            failed = [*(failed or ()), (tick, exc)]
    return failed


class ClockCore:
    """Which legs send in which sub-slot; pure logic driven by ``run_until(now)``.

    Each leg has a fixed phase: with period *p* (its ptime in ms) it fires on every
    sub-slot *k* with ``k % p == phase``.  Legs of one (period, phase) sit in one tuple of
    bound ``tick`` methods (or the legs' packet states, which the C runner ticks itself), rebuilt only when a leg comes or goes, so a sub-slot is a plain
    loop over a tuple: no per-packet re-scheduling, and removal during a tick is safe.
    Phases are chosen on a 120-sub-slot hyper-cycle (a multiple of 10/20/30/40/60 ms) so
    legs of different ptimes also spread evenly.
    """

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.next_tick = 0  # first sub-slot not yet run
        self._slots: dict[int, list[tuple[Tick, ...]]] = {}  # period -> per-phase ticks
        self._entries: dict[Tick, Scheduled] = {}
        self._load = [0] * HYPER_CYCLE
        self.stats = ClockStats()
        self.pacing = PacingHistory()
        self.on_error: Callable[[Tickable, BaseException], None] | None = None
        # Runs one sub-slot's group of ticks; the media plane swaps in the C fast path (rtp/fastpath.py).
        self.run_group: RunGroup = run_each

    def deadline(self, tick: int) -> float:
        return self.t0 + tick * SUBSLOT_S

    def _fires(self, period: int, phase: int) -> range:
        return range(phase, HYPER_CYCLE, period) if period <= HYPER_CYCLE else range(phase % HYPER_CYCLE, phase % HYPER_CYCLE + 1)

    def add(self, item: Tickable, ptime_ms: int = 20, fn: Tick | None = None) -> Scheduled:
        """Schedule *item*; the group holds *fn* (default ``item.tick``): the media plane passes the
        leg's packet state, which the C runner ticks itself (rtp/fastpath.py)."""
        period = max(1, int(ptime_ms))
        load = self._load
        # least-loaded phase: smallest peak over the sub-slots it will use, then smallest total
        phase = min(range(min(period, HYPER_CYCLE)),
                    key=lambda ph: (max(load[i] for i in self._fires(period, ph)),
                                    sum(load[i] for i in self._fires(period, ph)), ph))
        for i in self._fires(period, phase):
            load[i] += 1
        entry = Scheduled(item, period, phase, added_tick=self.next_tick)
        if fn is None:
            fn = item.tick
        self._entries[fn] = entry
        slots = self._slots.setdefault(period, [() for _ in range(period)])
        slots[phase] = (*slots[phase], fn)
        return entry

    def remove(self, entry: Scheduled) -> None:
        if not entry.active:
            return
        entry.active = False
        for i in self._fires(entry.period, entry.phase):
            self._load[i] -= 1
        slots = self._slots[entry.period]
        fn = next(f for f in slots[entry.phase] if self._entries.get(f) is entry)
        del self._entries[fn]
        slots[entry.phase] = tuple(f for f in slots[entry.phase] if f is not fn)
        if not any(slots):
            del self._slots[entry.period]

    @property
    def active_count(self) -> int:
        return len(self._entries)

    def run_until(self, now: float) -> int:
        """Run every sub-slot due by *now* (catching up after a late wake-up); returns how many ran.

        Lateness is counted for sub-slots that had packets to send: the clock sleeps over empty
        ones, so measuring from the first (empty) sub-slot after the last run would report a wake-up
        as up to a packet time late while it was on time for the packets it sent.
        """
        ran = 0
        recorded = False
        stats = self.stats
        pacing = self.pacing
        while self.deadline(self.next_tick) <= now:
            k = self.next_tick
            busy = False
            for period, slots in list(self._slots.items()):
                due = slots[k % period]
                if due:
                    busy = True
                    failed = self.run_group(due)
                    stats.packets += len(due) - (len(failed) if failed else 0)
                    if failed:
                        self._drop_failed(failed)
            if busy:  # per sub-slot with packets, never per packet
                lateness = now - self.deadline(k)
                if not recorded:
                    stats.record_lateness(lateness)  # how late this wake-up's first packets went out
                    recorded = True
                if lateness > SUBSLOT_S:
                    stats.late_ticks += 1
                if k >= pacing.second * 1000 + 1000:
                    pacing.roll(k // 1000)
                worst = pacing.current
                if lateness > worst[k % HYPER_CYCLE]:
                    worst[k % HYPER_CYCLE] = lateness
            self.next_tick = k + 1
            stats.ticks += 1
            ran += 1
        return ran

    def _drop_failed(self, failed: list[tuple[Tick, Exception]]) -> None:
        """Take items whose tick raised off the clock (counted, reported to ``on_error``).

        A leg's own failures never get here: LegDriver.tick ends what was playing ``failed`` and
        keeps sending (media/plane.py); this is the last resort for a tick that raised anyway.
        """
        for tick, exc in failed:
            entry = self._entries.get(tick)
            if entry is None:
                continue
            self.stats.tick_errors += 1
            self.remove(entry)
            if self.on_error:
                self.on_error(entry.item, exc)

    def pacing_of(self, entry: Scheduled) -> list[tuple[float, float]]:
        """A leg's last minute of pacing: (deadline of the second's start, worst lateness in s) per second."""
        first = entry.added_tick // 1000
        return [(self.deadline(sec * 1000), late) for sec, late in self.pacing.series(self._fires(entry.period, entry.phase))
                if sec >= first]

    def next_deadline(self) -> float | None:
        """Deadline of the next sub-slot with anything to send (None when idle)."""
        if not self._slots:
            return None
        k = self.next_tick
        for d in range(HYPER_CYCLE):
            if any(slots[(k + d) % period] for period, slots in self._slots.items()):
                return self.deadline(k + d)
        return self.deadline(k)


class _TimerFd:
    """An absolute CLOCK_MONOTONIC timerfd, through ctypes (os.timerfd_* arrived only in 3.13)."""

    CLOCK_MONOTONIC = 1
    TFD_NONBLOCK = os.O_NONBLOCK
    TFD_CLOEXEC = 0o2000000
    TFD_TIMER_ABSTIME = 1

    class _Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    class _Itimerspec(ctypes.Structure):
        pass

    _Itimerspec._fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self._settime = libc.timerfd_settime
        fd = libc.timerfd_create(self.CLOCK_MONOTONIC, self.TFD_NONBLOCK | self.TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd = fd
        self._spec = self._Itimerspec()

    def arm(self, deadline: float) -> None:
        sec = int(deadline)
        self._spec.it_value.tv_sec = sec
        self._spec.it_value.tv_nsec = max(1, int((deadline - sec) * 1e9))
        if self._settime(self.fd, self.TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def disarm(self) -> None:
        self._spec.it_value.tv_sec = 0
        self._spec.it_value.tv_nsec = 0
        self._settime(self.fd, 0, ctypes.byref(self._spec), None)

    def consume(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)


class MediaClock:
    """Drives a :class:`ClockCore` from the event loop; idles when no leg is scheduled."""

    def __init__(self, use_timerfd: bool = True) -> None:
        self.core = ClockCore(time.monotonic())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timerfd: _TimerFd | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None
        self._use_timerfd = use_timerfd
        self.mechanism = "call_at"
        self._after_wake: list[asyncio.Future[None]] = []  # gap() waiters, released after the next wake

    @property
    def stats(self) -> ClockStats:
        return self.core.stats

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        # Start the grid now, aligned to a whole cycle from here.
        self.core.t0 = time.monotonic()
        if self._use_timerfd:
            try:
                self._timerfd = _TimerFd()
                self._loop.add_reader(self._timerfd.fd, self._on_timerfd)
                self.mechanism = "timerfd"
            except (OSError, AttributeError) as exc:
                log.info("timerfd unavailable (%s); using loop.call_at", exc)
                self._timerfd = None

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._timerfd is not None and self._loop is not None:
            self._loop.remove_reader(self._timerfd.fd)
            self._timerfd.close()
            self._timerfd = None

    def add(self, item: Tickable, ptime_ms: int = 20, fn: Tick | None = None) -> Scheduled:
        # An idle clock's grid is re-based so a first leg does not "catch up" a long idle gap.
        if self.core.next_deadline() is None:
            now = time.monotonic()
            missed = int((now - self.core.deadline(self.core.next_tick)) / SUBSLOT_S)
            if missed > 0:
                self.core.next_tick += missed
        entry = self.core.add(item, ptime_ms, fn)
        self._arm()
        return entry

    def remove(self, entry: Scheduled) -> None:
        self.core.remove(entry)

    def _arm(self) -> None:
        deadline = self.core.next_deadline()
        if deadline is None or self._loop is None:
            return
        if self._armed_for is not None and self._armed_for <= deadline:
            return  # already set to wake at or before it
        self._armed_for = deadline
        if self._timerfd is not None:
            self._timerfd.arm(deadline)
        else:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = self._loop.call_at(self._loop.time() + (deadline - time.monotonic()), self._on_wake)

    def _on_timerfd(self) -> None:
        assert self._timerfd is not None
        self._timerfd.consume()
        self._on_wake()

    def _on_wake(self) -> None:
        self._armed_for = None
        self._handle = None
        self.core.stats.wakeups += 1
        self.core.run_until(time.monotonic())
        self._arm()
        if self._after_wake:
            waiters, self._after_wake = self._after_wake, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def gap(self, need_s: float = GAP_S) -> None:
        """Yield to the loop, and come back when about *need_s* can run before the next sub-slot.

        Why: work on the loop that is sliced (a /metrics scrape) delays every wake-up that falls in
        a slice, by up to the slice's length.  Run right after a wake-up, a slice shorter than the
        gap to the next sub-slot delays none: the clock's idle time goes to it instead.  An idle
        clock, or a next sub-slot far enough away, costs a plain ``sleep(0)``; otherwise the caller
        waits for the next wake-up (at most a sub-slot, or a packet time when few legs are up) and
        then goes on whatever the gap, so it is never starved."""
        armed = self._armed_for
        if armed is None or self._loop is None or armed - time.monotonic() >= need_s:
            await asyncio.sleep(0)
            return
        fut = self._loop.create_future()
        self._after_wake.append(fut)
        await fut
