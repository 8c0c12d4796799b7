"""ClockCore on a fake clock: staggering, absolute deadlines, catch-up without drift."""

from mediasrv.media.clock import SLOTS_PER_CYCLE, SUBSLOT_S, ClockCore


class Leg:
    def __init__(self, core: ClockCore, log: list) -> None:
        self.core, self.log = core, log

    def tick(self) -> None:
        self.log.append((self, self.core.next_tick))


def test_legs_are_spread_over_sub_slots():
    core = ClockCore(t0=100.0)
    log: list = []
    legs = [Leg(core, log) for _ in range(100)]
    for leg in legs:
        core.add(leg, 20)
    core.run_until(100.0 + 0.0195)  # one packet time
    assert len(log) == 100
    per_slot: dict[int, int] = {}
    for _, k in log:
        per_slot[k] = per_slot.get(k, 0) + 1
    assert len(per_slot) == SLOTS_PER_CYCLE and set(per_slot.values()) == {5}


def test_each_leg_every_ptime_and_no_drift_after_late_wake():
    core = ClockCore(t0=0.0)
    log: list = []
    a, b = Leg(core, log), Leg(core, log)
    core.add(a, 20)
    core.add(b, 30)
    for i in range(1, 10000):
        now = i * 0.001
        if 5.0 < now < 5.2:  # the process stalls for 200 ms
            continue
        core.run_until(now)
    ticks_a = [k for leg, k in log if leg is a]
    ticks_b = [k for leg, k in log if leg is b]
    assert all(y - x == 20 for x, y in zip(ticks_a, ticks_a[1:]))  # deadlines never move
    assert all(y - x == 30 for x, y in zip(ticks_b, ticks_b[1:]))
    assert len(ticks_a) == 500 and len(ticks_b) == 334  # caught up: every packet of the 10 s sent
    # late: the sub-slots with packets whose deadline fell in the stall (a's 10, b's 6 or 7), no empty ones
    stalled = {k for _, k in log if 5000 < k < 5200}
    assert core.stats.late_ticks == len(stalled) and 15 <= len(stalled) <= 17
    hist = core.stats.histogram()
    assert hist["count"] > 0 and hist["buckets"][-1][0] == "+Inf"


def test_removed_leg_stops_and_slot_is_reused():
    core = ClockCore(t0=0.0)
    log: list = []
    a = Leg(core, log)
    entry = core.add(a, 20)
    core.run_until(0.05)
    n = len(log)
    core.remove(entry)
    core.run_until(0.2)
    assert len(log) == n and core.active_count == 0
    core.add(Leg(core, log), 20)
    assert core.next_deadline() is not None


def test_a_failing_leg_does_not_stop_the_others():
    core = ClockCore(t0=0.0)
    log: list = []

    class Broken:
        def tick(self) -> None:
            raise RuntimeError("boom")

    core.add(Broken(), 20)
    good = Leg(core, log)
    core.add(good, 20)
    core.run_until(1.0)
    assert core.stats.tick_errors == 1 and len(log) == 50
    assert SUBSLOT_S == 0.001


def test_other_ptimes_are_paced_and_spread():
    core = ClockCore(t0=0.0)
    log: list = []
    legs = {p: [Leg(core, log) for _ in range(12)] for p in (10, 20, 30, 40)}
    for p, group in legs.items():
        for leg in group:
            core.add(leg, p)
    for i in range(1200):
        core.run_until(i * 0.001)
    for p, group in legs.items():
        for leg in group:
            ticks = [k for who, k in log if who is leg]
            assert all(y - x == p for x, y in zip(ticks, ticks[1:]))  # one packet every ptime
            assert len(ticks) == 1200 // p
    per_slot = [0] * 120
    for _, k in log:
        per_slot[k % 120] += 1
    per_slot = [n // 10 for n in per_slot]  # 10 hyper-cycles of 120 ms were run
    # 48 legs send 12*(12+6+4+3)=300 packets per 120 ms: 2.5 per sub-slot on average, never bunched
    assert max(per_slot) <= 4 and min(per_slot) >= 1, per_slot


def test_late_wake_catches_up_every_due_packet_and_records_lateness():
    core = ClockCore(t0=0.0)
    log: list = []
    leg = Leg(core, log)
    core.add(leg, 20)
    for i in range(100):
        core.run_until(i * 0.001 + 0.0002)  # on time, 0.2 ms after each sub-slot
    assert len(log) == 5 and core.stats.late_ticks == 0
    core.run_until(0.2503)  # woke 150 ms late: every missed packet goes out now, in order
    assert [k for _, k in log] == [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200, 220, 240]
    assert core.stats.late_ticks == 8  # sub-slots 100..240, the ones with a packet
    # lateness per wake-up that sent something: five on time (0.2 ms), the last 150.3 ms late; the 95
    # wake-ups with nothing to send are not counted (the real clock sleeps over them)
    buckets = dict(core.stats.histogram()["buckets"])
    assert buckets["0.0005"] == 5 and buckets["0.02"] == 5 and buckets["+Inf"] == 6


def test_pacing_history_is_per_group_and_per_second():
    """PacingHistory: each leg sees the worst lateness of its own sub-slots, one value per second."""
    from mediasrv.media.clock import ClockCore

    class Leg:
        def tick(self) -> None:
            pass

    core = ClockCore(t0=0.0)
    a, b = core.add(Leg(), 20), core.add(Leg(), 20)
    assert a.phase != b.phase
    for k in range(1000):  # every sub-slot of second 0 on time
        core.run_until(core.deadline(k))
    late = 1000 + a.phase
    for k in range(1000, 2000):  # second 1: one wake-up 4 ms late, at a's sub-slot
        if late < k < late + 4:
            continue
        core.run_until(core.deadline(k) + (0.004 if k == late else 0))
    core.run_until(2.5)  # second 2: a late wake-up at 2.5 s catches up every sub-slot of 2.0-2.5 s
    rows_a = core.pacing_of(a)
    rows_b = core.pacing_of(b)
    assert [t for t, _ in rows_a] == [0.0, 1.0, 2.0]
    assert rows_a[0][1] == 0 and rows_b[0][1] == 0
    assert abs(rows_a[1][1] - 0.004) < 1e-9 and rows_b[1][1] < 0.004
    assert rows_a[2][1] >= 0.48 and rows_b[2][1] >= 0.48


async def test_gap_comes_back_right_after_a_wake_up_when_the_next_sub_slot_is_near():
    """MediaClock.gap(): sliced work on the loop runs in the clock's idle time, never starved."""
    import asyncio
    import time

    from mediasrv.media.clock import MediaClock

    clock = MediaClock()
    clock.start()
    wakes: list[float] = []

    class Leg:
        def tick(self) -> None:
            wakes.append(time.monotonic())

    for _ in range(20):  # one leg in every 1 ms sub-slot: a wake-up every millisecond
        clock.add(Leg(), 20)
    try:
        await asyncio.sleep(0.05)
        room: list[float] = []
        since_wake: list[float] = []
        for _ in range(200):
            await clock.gap(0.0005)
            now = time.monotonic()
            armed = clock._armed_for
            assert armed is not None
            room.append(armed - now)
            since_wake.append(now - wakes[-1])
        # each return either had the room asked for, or came right after a wake-up
        ok = [r >= 0.0005 or s < 0.0005 for r, s in zip(room, since_wake, strict=True)]
        assert sum(ok) >= 190, (sorted(room)[:5], sorted(since_wake)[-5:])
        # and it never waited longer than about one sub-slot (a loaded machine may be late)
        t0 = time.monotonic()
        for _ in range(50):
            await clock.gap(0.0005)
        assert time.monotonic() - t0 < 50 * 0.004
    finally:
        clock.stop()


async def test_gap_on_an_idle_clock_is_a_plain_yield():
    import time

    from mediasrv.media.clock import MediaClock

    clock = MediaClock()
    clock.start()
    try:
        t0 = time.monotonic()
        for _ in range(1000):
            await clock.gap()
        assert time.monotonic() - t0 < 0.5
    finally:
        clock.stop()
