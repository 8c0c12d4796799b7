"""Keeps CPython's cyclic garbage collector from stalling the media clock.

Why: the cyclic GC runs inside whatever Python code allocates, on the one thread that also
runs the media clock, and a collection's cost grows with the number of tracked objects it
traverses.  With 1,500 calls up (~170,000 tracked objects in the server), bench/pacing.py with
GC callbacks recorded full (gen 2) collections of 30-210 ms and gen 1 collections of 1-8 ms:
every leg's packets wait for them.  Nearly all of those objects live as long as their call and
are freed by reference counting when it ends, so traversing them again and again finds nothing.

What we do:
- ``gc.freeze()`` at start and then every ``interval_s``: everything alive moves to the
  permanent generation (an O(1) list splice in CPython), which collections skip, so they only
  ever traverse objects born in the last interval.  (Counting the frozen objects is not O(1):
  see :meth:`GcPolicy.step`.)
- Frozen objects that later become *cyclic* garbage are not reclaimed until they are unfrozen.
  So our own objects must not form cycles that outlive a call (tests/integration/test_gc.py
  checks that an ended call leaves no cyclic garbage of ours), and the frozen set is
  reclaimed (unfreeze, full collection, freeze) when the clock is idle -- no leg sending, so a
  stall delays no packet -- once ``idle_reclaim_objects`` were frozen since the last reclaim
  or ``idle_reclaim_s`` went by, and, as a backstop against a slow leak under load that never
  idles, when it has grown past twice its size after the last reclaim plus ``backstop_objects``.
- Every collection's pause is recorded per generation for ``/metrics``.

``MEDIASRV_GC_FREEZE=0`` (``Settings.gc_freeze``) turns freezing off for A/B runs.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("mediasrv.gc")

PAUSE_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.2)


@dataclass
class GcPauses:
    """Pause histogram of one generation's collections."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(PAUSE_BUCKETS) + 1))
    total_s: float = 0.0
    max_s: float = 0.0

    def record(self, seconds: float) -> None:
        self.total_s += seconds
        self.max_s = max(self.max_s, seconds)
        for i, le in enumerate(PAUSE_BUCKETS):
            if seconds <= le:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass
class GcStats:
    pauses: dict[int, GcPauses] = field(default_factory=lambda: {g: GcPauses() for g in range(3)})
    freezes: int = 0
    reclaims: int = 0  # unfreeze + full collection + freeze
    reclaimed_objects: int = 0
    last_reclaim_s: float = 0.0  # how long the last reclaim's collection took


class GcPolicy:
    """Freezes survivors periodically, reclaims when idle, records collection pauses."""

    def __init__(self, is_idle: Callable[[], bool], *, freeze: bool = True, interval_s: float = 1.0,
                 backstop_objects: int = 1_000_000, idle_reclaim_objects: int = 10_000,
                 idle_reclaim_s: float = 60.0) -> None:
        self.is_idle = is_idle
        self.freeze_enabled = freeze
        self.interval_s = interval_s
        self.backstop_objects = backstop_objects
        self.idle_reclaim_objects = idle_reclaim_objects
        self.idle_reclaim_s = idle_reclaim_s
        self.stats = GcStats()
        self._started_at = 0.0
        self._baseline = 0  # frozen objects right after the last reclaim
        self._frozen_since = 0  # objects frozen since then (an upper bound: some have been freed since)
        self._reclaimed_at = 0.0
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------
    def start(self) -> None:
        if self.freeze_enabled:
            self.reclaim()  # start-up garbage collected, the server's long-lived objects frozen
            self._task = asyncio.get_running_loop().create_task(self._run())
        gc.callbacks.append(self._on_gc)  # pauses while serving (the start-up reclaim above is not one)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self.freeze_enabled:
            gc.unfreeze()  # an embedding process (the tests) gets its normal collector back

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.step()

    # -- policy ----------------------------------------------------------
    def step(self) -> None:
        """One round: freeze the young objects; reclaim instead when idle, or when past the backstop.

        ``gc.get_freeze_count()`` walks the whole permanent generation (~17 ms at 1,500 calls,
        seen in perf), so the frozen total is tracked from what each round freezes and counted
        for real only when that estimate crosses the backstop.
        """
        young = sum(len(gc.get_objects(generation=g)) for g in range(3))  # walks only the young lists
        if self.is_idle() and self._frozen_since + young > 0 and (
                self._frozen_since + young >= self.idle_reclaim_objects
                or time.monotonic() - self._reclaimed_at >= self.idle_reclaim_s):
            self.reclaim()
            return
        if self._frozen_since + young > self._baseline + self.backstop_objects:
            frozen = gc.get_freeze_count() + young
            if frozen > 2 * self._baseline + self.backstop_objects:
                log.warning("GC backstop: %d objects tracked (%d after the last reclaim); collecting them "
                            "now, which stalls the media clock", frozen, self._baseline)
                self.reclaim()
                return
            self._frozen_since = max(0, frozen - young - self._baseline)  # much of the estimate was freed since
        gc.freeze()
        self._frozen_since += young
        self.stats.freezes += 1

    def reclaim(self) -> int:
        """Unfreeze, collect everything, freeze what is left; returns how many objects were collected."""
        gc.unfreeze()
        t0 = time.perf_counter()
        n = gc.collect()
        self.stats.last_reclaim_s = time.perf_counter() - t0
        gc.freeze()
        self._baseline = gc.get_freeze_count()
        self._frozen_since = 0
        self._reclaimed_at = time.monotonic()
        self.stats.reclaims += 1
        self.stats.reclaimed_objects += n
        return n

    # -- measurement -----------------------------------------------------
    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started_at = time.perf_counter()
        elif self._started_at:
            self.stats.pauses[int(info.get("generation", 2))].record(time.perf_counter() - self._started_at)
            self._started_at = 0.0

    def metrics(self) -> dict[str, Any]:
        return {
            "frozen_objects": self._baseline + self._frozen_since,  # estimate: the exact count walks them all
            "freezes": self.stats.freezes,
            "reclaims": self.stats.reclaims,
            "reclaimed_objects": self.stats.reclaimed_objects,
            "pauses": {g: p for g, p in self.stats.pauses.items()},
        }
