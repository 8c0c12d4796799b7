"""The event journal: line codec, torn and damaged lines, retention that keeps owed webhooks, restart of a bus
against a real receiver, an unwritable data dir."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from mediasrv.events.bus import EventBus, WebhookSettings
from mediasrv.events.journal import Journal, JournalSettings, decode_line, encode_record

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=())),  # surrogates too: a SIP header can carry anything
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
records = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


def test_unencodable_record_is_counted_not_raised(tmp_path):
    j = _journal(tmp_path)
    j.open()
    j.append({"t": "e", "seq": 1, "data": {"obj": object()}})
    j.close()
    assert j.stats["unencodable"] == 1 and j.stats["written"] == 0


@given(records)
def test_codec_round_trips(record):
    line = encode_record(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one record, one line, whatever the text holds
    assert decode_line(line) == record


@given(records, st.data())
def test_codec_rejects_every_torn_line(record, data):
    line = encode_record(record)
    cut = data.draw(st.integers(0, len(line) - 2))  # a crash mid-write leaves any proper prefix
    assert decode_line(line[:cut]) is None


@given(records, st.data())
def test_codec_rejects_any_changed_byte(record, data):
    line = encode_record(record)
    i = data.draw(st.integers(0, len(line) - 2))  # any byte but the newline
    new = data.draw(st.integers(0, 255).filter(lambda b: b != line[i]))
    damaged = line[:i] + bytes([new]) + line[i + 1 :]
    decoded = decode_line(damaged)
    # CRC32 catches every single-byte change in the JSON; in the hex prefix a change of case ('a'->'A') is
    # the same number, which is harmless: the JSON it guards is intact.
    assert decoded is None or (i < 8 and decoded == record)


@given(st.binary(max_size=200))
def test_codec_never_raises_on_garbage(blob):
    assert decode_line(blob) is None or isinstance(decode_line(blob), dict)


def _journal(path: Path, **kw) -> Journal:
    return Journal(JournalSettings(dir=path, **kw))


def test_corrupt_and_truncated_lines_are_skipped_and_counted(tmp_path):
    j = _journal(tmp_path)
    j.open()
    for seq in (1, 2, 3):
        j.append({"t": "e", "seq": seq, "id": f"e{seq}", "type": "call.answered", "call_id": "c", "data": {}})
    j.append({"t": "d", "id": "d1", "n": j.next_n(), "sink": "webhook", "key": "c", "url": "http://x/",
              "method": "POST", "label": "call.answered", "spec": {"event": {"seq": 3}}})
    j.close()
    seg = sorted(tmp_path.glob("*.jsonl"))[-1]
    good = seg.read_bytes()
    damaged = good.replace(b'"seq":2', b'"seq":7')  # a bit flip on disk: the CRC no longer matches
    seg.write_bytes(damaged + b"not a journal line\n" + b"\x00\xff\xfe\n" + encode_record({"t": "e", "seq": 9})[:-7])

    j2 = _journal(tmp_path)
    rec = j2.open()
    try:
        assert rec.corrupt_lines == 4  # the flipped line, the two garbage lines and the torn tail
        assert j2.stats["corrupt_lines"] == 4
        assert rec.last_seq == 3  # neither the damaged 7 nor the torn 9 counts
        assert [p["id"] for p in rec.pending] == ["d1"]
        assert [e["seq"] for e in j2.read_events(0)] == [1, 3]
        assert j2.state == "ok"
    finally:
        j2.close()
    names = sorted(p.name for p in tmp_path.glob("*.jsonl"))
    assert len(names) == 2 and names[1].endswith("-000000000003.jsonl")  # a fresh segment per start, seq base 3
    j3 = _journal(tmp_path)  # now the damaged segment is an older one, whose events are only CRC-checked
    rec3 = j3.open()
    j3.close()
    assert (rec3.corrupt_lines, rec3.last_seq, [p["id"] for p in rec3.pending]) == (4, 3, ["d1"])


def test_retention_deletes_old_segments_but_carries_owed_deliveries_forward(tmp_path):
    j = _journal(tmp_path, segment_bytes=4096, max_bytes=3 * 4096, fsync_interval_s=0)
    j.open()
    owed = {"t": "d", "id": "owed-1", "n": j.next_n(), "sink": "webhook", "key": "c1", "url": "http://x/",
            "method": "POST", "label": "call.hangup", "spec": {"event": {"n": 1}}}
    done = {**owed, "id": "done-1", "n": j.next_n()}
    j.append(owed)
    j.append(done)
    j.append({"t": "r", "id": "done-1", "ok": True, "reason": None})
    for seq in range(1, 2001):  # ~200 kB of events: many rotations
        j.append({"t": "e", "seq": seq, "type": "x", "call_id": f"c{seq % 7}", "data": {"pad": "y" * 40}})
    j.close()
    segments = sorted(tmp_path.glob("*.jsonl"))
    assert j.stats["segments_deleted"] > 10 and j.stats["carried_forward"] >= 1
    assert sum(p.stat().st_size for p in segments) <= 3 * 4096  # bounded, however the batches fell
    assert all(p.stat().st_size < 4096 + 200 for p in segments)  # a segment overshoots by at most one line
    j2 = _journal(tmp_path)
    rec = j2.open()
    j2.close()
    assert [p["id"] for p in rec.pending] == ["owed-1"] and rec.last_n == 2
    assert rec.last_seq == 2000 and rec.corrupt_lines == 0


async def _receiver(status: dict[str, int]) -> tuple[web.AppRunner, str, list[tuple[int, dict]]]:
    """A real webhook receiver whose answer the test switches (500 while 'down', 204 when 'up')."""
    got: list[tuple[int, dict]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((status["code"], await request.json()))
        return web.Response(status=status["code"])

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook", got


async def test_bus_restart_resends_owed_webhooks_once_in_order_and_seq_continues(tmp_path):
    status = {"code": 500}
    runner, url, got = await _receiver(status)
    settings = WebhookSettings(url=url, backoff_s=0.05, max_attempts=50)
    bus = EventBus(settings, journal=_journal(tmp_path))
    await bus.start()
    published = [bus.publish(t, f"call-{i % 3}", {"i": i})
                 for i, t in enumerate(["call.initiated", "call.answered", "playback.started", "call.hangup"] * 3)]
    await asyncio.sleep(0.3)  # every call's first webhook has been refused at least once
    assert {e["id"] for code, e in got} <= {e.id for e in published} and all(code == 500 for code, _ in got)
    await bus.close()  # graceful stop while the receiver still refuses: all twelve stay owed

    status["code"] = 204
    bus2 = EventBus(settings, journal=_journal(tmp_path))
    await bus2.start()
    assert bus2.restored["deliveries"] == 12 and bus2.restored["last_seq"] == 12
    later = bus2.publish("call.initiated", "call-0", {"i": 99})
    assert later.seq == 13
    await bus2.drain()
    await bus2.close()
    await runner.cleanup()

    ok = [e for code, e in got if code == 204]
    assert sorted(e["id"] for e in ok) == sorted([e.id for e in published] + [later.id])  # each exactly once
    for call in ("call-0", "call-1", "call-2"):
        assert [e["seq"] for e in ok if e["call_id"] == call] == sorted(
            [e.seq for e in published if e.call_id == call] + ([13] if call == "call-0" else []))

    bus3 = EventBus(settings, journal=_journal(tmp_path))  # nothing owed any more
    await bus3.start()
    assert bus3.restored["deliveries"] == 0
    assert [e["seq"] for e in await bus3.since(10)] == [11, 12, 13]
    await bus3.close()


async def test_exhausted_retries_are_recorded_failed_and_not_resent(tmp_path):
    bus = EventBus(WebhookSettings(url="http://127.0.0.1:9/refused", backoff_s=0.01, max_attempts=2),
                   journal=_journal(tmp_path))
    await bus.start()
    bus.publish("call.hangup", "c", {})
    await bus.drain()
    await bus.close()
    outcomes = [json.loads(line.split(b" ", 1)[1]) for p in sorted(tmp_path.glob("*.jsonl"))
                for line in p.read_bytes().splitlines()]
    failed = [r for r in outcomes if r.get("t") == "r"]
    assert len(failed) == 1 and failed[0]["ok"] is False and "after 2 attempts" in failed[0]["reason"]
    bus2 = EventBus(WebhookSettings(url="http://127.0.0.1:9/refused"), journal=_journal(tmp_path))
    await bus2.start()
    assert bus2.restored["deliveries"] == 0
    await bus2.close()


async def test_unwritable_data_dir_keeps_delivering_from_memory(tmp_path):
    (tmp_path / "events").write_text("a file where the journal directory should be")
    status = {"code": 204}
    runner, url, got = await _receiver(status)
    bus = EventBus(WebhookSettings(url=url), journal=_journal(tmp_path / "events"))
    await bus.start()
    assert bus.journal is not None and bus.journal.state == "unavailable" and "events" in (bus.journal.error or "")
    event = bus.publish("call.answered", "c", {})
    await bus.drain()
    await bus.close()
    await runner.cleanup()
    assert [e["id"] for _, e in got] == [event.id]
    assert bus.journal.stats["dropped"] >= 2  # the event and its delivery record


def test_second_journal_on_the_same_dir_is_refused(tmp_path):
    first = _journal(tmp_path)
    first.open()
    second = _journal(tmp_path)
    second.open()  # another server on this data dir: it must not re-send the first one's webhooks
    assert second.state == "unavailable" and "in use by another mediasrv" in (second.error or "")
    first.close()
    third = _journal(tmp_path)
    third.open()
    assert third.state == "ok"
    third.close()


async def test_queue_overflow_drops_the_oldest_waiting_not_the_one_in_flight(tmp_path):
    status = {"code": 204}
    got: list[dict] = []
    release = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        if body["data"]["i"] == 0:
            await release.wait()  # the first request hangs in flight while more are queued
        got.append(body)
        return web.Response(status=status["code"])

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"
    bus = EventBus(WebhookSettings(url=url, queue_limit=3), journal=_journal(tmp_path))
    await bus.start()
    bus.publish("e", "c", {"i": 0})
    await asyncio.sleep(0.2)  # #0 is in flight
    for i in range(1, 5):  # at most 3 queued, #0 (in flight) among them: #3 drops #1, #4 drops #2
        bus.publish("e", "c", {"i": i})
    release.set()
    await bus.drain()
    await bus.close()
    await runner.cleanup()
    assert [e["data"]["i"] for e in got] == [0, 3, 4] and bus.stats["dropped"] == 2
    bus2 = EventBus(WebhookSettings(url=url), journal=_journal(tmp_path))
    await bus2.start()  # the dropped one is recorded failed, the rest delivered: nothing owed
    assert bus2.restored["deliveries"] == 0
    await bus2.close()
