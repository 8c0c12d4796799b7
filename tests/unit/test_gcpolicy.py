"""GcPolicy against the real collector: freeze while busy, reclaim when idle or past the backstop."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from mediasrv.ops.gcpolicy import GcPolicy


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    """A two-node reference cycle nobody refers to: only the cyclic GC can free it."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def normal_collector() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_busy_rounds_freeze_and_keep_frozen_cycles_until_idle() -> None:
    idle = False
    policy = GcPolicy(lambda: idle, backstop_objects=10**9, idle_reclaim_objects=1)
    policy.reclaim()
    garbage = cycle()
    policy.step()  # busy: the cycle is frozen with everything else
    assert policy.stats.freezes == 1 and garbage() is not None
    gc.collect()
    assert garbage() is not None, "frozen objects are skipped by collections"
    idle = True
    policy.step()  # idle and grown: unfreeze, collect, freeze
    assert policy.stats.reclaims == 2 and garbage() is None


def test_idle_reclaim_waits_for_enough_objects_or_time() -> None:
    policy = GcPolicy(lambda: True, backstop_objects=10**9, idle_reclaim_objects=10**9, idle_reclaim_s=0.0)
    policy.reclaim()
    garbage = cycle()
    policy.step()  # idle_reclaim_s went by (0 s): reclaim even though few objects are new
    assert policy.stats.reclaims == 2 and garbage() is None


def test_idle_without_growth_only_freezes() -> None:
    policy = GcPolicy(lambda: True, backstop_objects=10**9, idle_reclaim_objects=10**9, idle_reclaim_s=3600)
    policy.reclaim()
    policy.step()  # idle, but little was frozen since the reclaim and it was recent: just a freeze
    assert policy.stats.reclaims == 1 and policy.stats.freezes == 1


def test_backstop_reclaims_under_load() -> None:
    policy = GcPolicy(lambda: False, backstop_objects=0)
    policy.reclaim()
    garbage = cycle()
    keep = [[i] for i in range(2 * gc.get_freeze_count() + 10)]  # live objects: the tracked total more than doubles
    policy.step()
    assert policy.stats.reclaims == 2 and garbage() is None
    del keep


async def test_start_records_pauses_and_stop_unfreezes() -> None:
    policy = GcPolicy(lambda: False, interval_s=0.01)
    policy.start()
    try:
        assert gc.get_freeze_count() > 0 and policy.stats.reclaims == 1
        await asyncio.sleep(0.05)
        assert policy.stats.freezes >= 1
        gc.collect()
        assert policy.stats.pauses[2].count >= 1  # this one (the start-up reclaim is not counted)
        # an upper-bound estimate (counting exactly walks every frozen object)
        assert policy.metrics()["frozen_objects"] >= gc.get_freeze_count() > 0
    finally:
        await policy.stop()
    assert gc.get_freeze_count() == 0 and policy._on_gc not in gc.callbacks


def test_freeze_off_touches_nothing() -> None:
    async def run() -> None:
        policy = GcPolicy(lambda: True, freeze=False)
        policy.start()
        assert gc.get_freeze_count() == 0 and policy.stats.reclaims == 0
        gc.collect(0)
        assert policy.stats.pauses[0].count == 1
        await policy.stop()

    asyncio.run(run())
