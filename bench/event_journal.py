"""What the event journal costs: sustained events/s, loop-side cost, and the loop stall while it writes.

One "event" here is what a published event with one native webhook costs the journal: the event record,
the delivery's "d" record (its spec holds the event again) and its "r" outcome, shaped like a real
``playback.ended``.  Three parts, all in a temp dir on the data disk (ext4 here; fsync is real):

1. burst: N events appended as fast as the caller can; the caller's µs/event (encoding + enqueue, what the
   event loop pays) and the events/s until the writer thread has written them all; fsync every 1 s
   (the default) and fsync every batch (``fsync_interval_s = 0``).
2. stall: an event loop (uvloop) waking on an absolute 1 ms grid, as the media clock's sub-slots do,
   while events are published at R/s from that loop; wake-up lateness p50/p99/max with no journal (the
   same records built, not appended), the default journal, and fsync-every-batch, rounds interleaved.
3. recovery: the time ``open()`` takes to scan a journal of that size (what a restart pays before SIP).

    python bench/event_journal.py            (smoke: --events 5000 --seconds 2 --rounds 1)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mediasrv.events.journal import Journal, JournalSettings  # noqa: E402


def event_records(seq: int, j: Journal | None) -> list[dict]:
    event = {
        "type": "playback.ended", "call_id": f"node1:{seq % 500:06d}", "id": uuid.uuid4().hex, "seq": seq,
        "occurred_at": time.time(),
        "data": {"playback_id": uuid.uuid4().hex, "source": "http://127.0.0.1:8000/prompts/welcome.wav",
                 "command_id": None, "target": "self", "overlay": False, "status": "completed", "reason": None,
                 "message": None, "ms_played": 4820, "last_seq": 31337, "last_ts": 1234560, "stopped_by": None,
                 "failed_source_index": None, "underruns": 0},
    }
    did = f"{event['id']}:webhook"
    return [
        {"t": "e", **event},
        {"t": "d", "id": did, "n": j.next_n() if j else seq, "sink": "webhook", "key": event["call_id"],
         "url": "http://127.0.0.1:9000/hook", "method": "POST", "label": event["type"], "spec": {"event": event}},
        {"t": "r", "id": did, "ok": True, "reason": None},
    ]


def new_journal(root: Path, fsync: float) -> Journal:
    j = Journal(JournalSettings(dir=Path(tempfile.mkdtemp(dir=root)), fsync_interval_s=fsync,
                                segment_bytes=8 * 1024 * 1024, max_bytes=1024 * 1024 * 1024, queue_limit=10_000_000))
    j.open()
    return j


def burst(root: Path, n: int, fsync: float) -> tuple[float, float, float, int, Journal]:
    j = new_journal(root, fsync)
    recs = [event_records(i + 1, j) for i in range(n)]  # built first: measure only what the journal adds
    t0 = time.perf_counter()
    for three in recs:
        for r in three:
            j.append(r)
    t_append = time.perf_counter() - t0
    while j.stats["written"] < j.stats["appended"]:
        time.sleep(0.0005)
    t_all = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in j.settings.dir.glob("*.jsonl"))
    return t_append / n * 1e6, n / t_all, j.stats["fsyncs"], size, j


async def stall_round(root: Path, mode: str, rate: int, seconds: float) -> tuple[list[float], float, int]:
    """Lateness (ms) of 1 ms absolute-deadline wake-ups while `rate` events/s are published on this loop;
    also the loop thread's CPU seconds and the writer's batch count."""
    loop = asyncio.get_running_loop()
    j = None if mode == "none" else new_journal(root, 1.0 if mode == "default" else 0.0)
    late: list[float] = []
    seq = 0
    per_tick = rate / 1000.0
    owed = 0.0
    start = time.monotonic() + 0.05
    ticks = int(seconds * 1000)
    cpu0 = time.thread_time()
    for k in range(ticks):
        deadline = start + k * 0.001
        fut = loop.create_future()
        loop.call_later(max(0.0, deadline - time.monotonic()), fut.set_result, None)
        await fut
        late.append((time.monotonic() - deadline) * 1000)  # monotonic: uvloop's loop.time() is ms-cached
        owed += per_tick
        while owed >= 1:  # the publishes of this millisecond, on the loop, as EventBus.publish does
            owed -= 1
            seq += 1
            for r in event_records(seq, j):
                if j is not None:
                    j.append(r)
    cpu = time.thread_time() - cpu0
    batches = j.stats["batches"] if j is not None else 0
    if j is not None:
        await loop.run_in_executor(None, j.close)
    return late[100:], cpu, batches  # skip the first 100 ms


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--rate", type=int, default=2000, help="events/s published during the stall test")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="parent dir for the journals (default: a temp dir under /tmp)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mediasrv-journal-bench-", dir=args.dir))
    fs = os.popen(f"df -T {root} | tail -1").read().split()
    print(f"journal dir {root} ({fs[1] if len(fs) > 1 else '?'}); {os.cpu_count()} CPUs")

    print(f"\n1. burst of {args.events} events (3 records each)")
    print(f"{'fsync':>14} {'caller us/event':>16} {'events/s written':>17} {'fsyncs':>7} {'MB':>6}")
    journals = []
    for fsync, label in ((1.0, "every 1 s"), (0.0, "every batch")):
        us, rate, fsyncs, size, j = burst(root, args.events, fsync)
        journals.append(j)
        print(f"{label:>14} {us:16.1f} {rate:17.0f} {fsyncs:7d} {size / 1e6:6.1f}")
    for j in journals:
        j.close()

    try:
        import uvloop
        runner = uvloop.run
        loop_name = "uvloop"
    except ImportError:
        runner, loop_name = asyncio.run, "asyncio"
    print(f"\n2. loop stall: 1 ms absolute-deadline wake-ups ({loop_name}), {args.rate} events/s published, "
          f"{args.seconds:g} s x {args.rounds} rounds interleaved; lateness ms")
    modes = ("none", "default", "every batch")
    p99s: dict[str, list[float]] = {m: [] for m in modes}
    maxes: dict[str, list[float]] = {m: [] for m in modes}
    cpus: dict[str, list[float]] = {m: [] for m in modes}
    batches: dict[str, int] = {}
    for _ in range(args.rounds):
        for mode in modes:
            late, cpu, b = runner(stall_round(root, mode, args.rate, args.seconds))
            p99s[mode].append(pct(late, 0.99))
            maxes[mode].append(max(late))
            cpus[mode].append(cpu)
            batches[mode] = b
    n_events = args.rate * args.seconds
    print(f"{'journal':>14} {'p99 median':>11} {'p99 per round':>30} {'max':>7} {'loop us/event':>14} {'batches':>8}")
    for mode in modes:
        extra = (statistics.median(cpus[mode]) - statistics.median(cpus["none"])) / n_events * 1e6
        rounds = " ".join(f"{x:.2f}" for x in p99s[mode])
        print(f"{mode:>14} {statistics.median(p99s[mode]):11.2f} {rounds:>30} {max(maxes[mode]):7.2f} "
              f"{extra if mode != 'none' else 0:14.1f} {batches.get(mode, 0):8d}")
    print("(loop us/event: the loop thread's CPU over the no-journal run, per event, i.e. encoding + enqueue)")

    print("\n3. recovery: open() scanning the burst journal (what a restart pays before SIP starts)")
    for j in journals:
        j2 = Journal(JournalSettings(dir=j.settings.dir))
        t0 = time.perf_counter()
        rec = j2.open()
        dt = time.perf_counter() - t0
        j2.close()
        size = sum(p.stat().st_size for p in j.settings.dir.glob("*.jsonl"))
        print(f"{size / 1e6:6.1f} MB, {rec.records} records: {dt * 1000:.0f} ms ({rec.records / dt:.0f} records/s), "
              f"last seq {rec.last_seq}, pending {len(rec.pending)}")
    import shutil

    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
