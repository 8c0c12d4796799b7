"""Outbox: what a command or tick group raises is delivered after it, in the order raised."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mediasrv.calls.registry import Call, Direction
from mediasrv.demo import free_port_pair
from mediasrv.events.bus import Event, EventBus
from mediasrv.events.outbox import Outbox
from mediasrv.media import MediaPlane, MediaSettings
from mediasrv.media.player import PlayRequest, SourceSpec


async def test_items_wait_for_the_current_callback_then_go_in_order() -> None:
    got: list[int] = []
    box: Outbox[int] = Outbox(got.append)
    for i in range(5):
        box.put(i)
    assert got == [] and len(box) == 5  # the "command" has not returned yet
    await asyncio.sleep(0)
    assert got == [0, 1, 2, 3, 4] and len(box) == 0


async def test_items_raised_while_delivering_join_the_same_batch_in_causal_order() -> None:
    got: list[str] = []
    box: Outbox[str] = Outbox(lambda item: None)

    def deliver(item: str) -> None:
        got.append(item)
        if item == "a":
            box.put("a-caused")  # a consumer's reaction comes after everything already raised

    box._deliver = deliver
    box.put("a")
    box.put("b")
    await asyncio.sleep(0)
    assert got == ["a", "b", "a-caused"]


async def test_groups_keep_their_order_and_none_is_delivered_inside_a_group() -> None:
    got: list[str] = []
    box: Outbox[str] = Outbox(got.append)
    loop = asyncio.get_running_loop()
    inside: list[list[str]] = []

    def group(name: str) -> None:
        box.put(f"{name}-e1")
        inside.append(list(got))  # nothing of this group has gone out while it runs
        box.put(f"{name}-e2")

    loop.call_soon(group, "g1")
    loop.call_soon(group, "g2")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert got == ["g1-e1", "g1-e2", "g2-e1", "g2-e2"]
    assert inside[0] == [] and "g2-e1" not in inside[1]


async def test_a_failing_delivery_does_not_stop_the_rest() -> None:
    got: list[int] = []

    def deliver(item: int) -> None:
        if item == 1:
            raise RuntimeError("broken consumer")
        got.append(item)

    box: Outbox[int] = Outbox(deliver)
    for i in range(3):
        box.put(i)
    box.flush()  # an explicit flush (drain, shutdown) empties it now
    assert got == [0, 2] and len(box) == 0


def test_without_a_loop_items_go_at_once() -> None:
    got: list[int] = []
    box: Outbox[int] = Outbox(got.append)
    box.put(7)
    assert got == [7]


async def test_bus_numbers_at_publish_and_delivers_after_the_command() -> None:
    bus = EventBus()
    seen: list[Event] = []
    bus.add_listener(seen.append)
    a = bus.publish("call.answered", "c", {})
    b = bus.publish("playback.started", "c", {})
    assert (a.seq, b.seq) == (1, 2) and seen == [] and bus.history("c") == []
    await asyncio.sleep(0)
    assert [e.seq for e in seen] == [1, 2] and [e.seq for e in bus.history("c")] == [1, 2]
    assert bus.last_seq == 2
    await bus.close()


async def test_dialect_sees_its_own_record_before_playback_started(tmp_path: Path) -> None:
    """A tone is ready at once, so ``play()`` starts it inside the call: the dialect that recorded the
    playback ids play() returned still has that record when ``playback.started`` reaches it."""
    lo = free_port_pair()
    bus = EventBus()

    def emit(type_: str, call_id: str, data: dict[str, Any]) -> None:
        bus.publish(type_, call_id, data)

    plane = MediaPlane(MediaSettings(rtp_port_lo=lo, rtp_port_hi=lo + 10, data_dir=str(tmp_path)), emit=emit)
    await plane.start()
    try:
        call = Call(Direction.INBOUND, "sip:a@x", "sip:b@x", "order@x")
        plane.allocate(call)
        recorded: dict[str, str] = {}  # the dialect's own record of its command (playback id -> context)
        order: list[tuple[str, str | None]] = []

        def listener(event: Event) -> None:
            if event.type.startswith("playback."):
                order.append((event.type, recorded.get(event.data["playback_id"])))

        bus.add_listener(listener)
        playbacks = plane.play(call.call_id, PlayRequest(sources=[SourceSpec(tone="440", duration_ms=40)]))
        assert playbacks[0].state == "playing"  # started inside play()
        for pb in playbacks:
            recorded[pb.id] = "my-command"  # what a dialect does after play() returns
        await asyncio.sleep(0)
        assert order == [("playback.started", "my-command")]
        plane.stop_playbacks(call.call_id, "all")
        await asyncio.sleep(0)
        assert order[-1] == ("playback.ended", "my-command")
        plane.release(call)
    finally:
        await plane.stop()
        await bus.close()
