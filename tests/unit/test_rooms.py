"""RoomRegistry over a real MediaPlane: membership, peers on the Call, events, hangup, rollback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mediasrv.calls.registry import Call, CallRegistry, Direction
from mediasrv.calls.rooms import BRIDGE, CONFERENCE, RoomRegistry
from mediasrv.demo import free_port_pair
from mediasrv.media import MediaPlane, MediaSettings


class Env:
    def __init__(self, tmp_path: Path) -> None:
        lo = free_port_pair()
        self.plane = MediaPlane(MediaSettings(rtp_port_lo=lo, rtp_port_hi=lo + 40, data_dir=str(tmp_path)),
                                emit=lambda t, c, d: None)
        self.calls = CallRegistry()
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.rooms = RoomRegistry(self.calls, self.plane, lambda t, c, d: self.events.append((t, c, d)))

    def call(self, leg: bool = True) -> Call:
        call = Call(Direction.INBOUND, "sip:a@x", "sip:b@x", f"{len(list(self.calls.all()))}@x")
        self.calls.add(call)
        if leg:
            call.local_rtp = self.plane.allocate(call)
        return call

    def hangup(self, call: Call) -> None:
        self.calls.ended(call, "normal_clearing", "caller")
        self.plane.release(call)

    def of(self, call: Call) -> list[tuple[str, str, list[str]]]:
        return [(t, d["reason"], d["peers"]) for t, c, d in self.events if c == call.call_id]


async def test_bridge_dissolves_when_one_leg_hangs_up(tmp_path: Path) -> None:
    env = Env(tmp_path)
    await env.plane.start()
    try:
        a, b = env.call(), env.call()
        room = env.rooms.create(BRIDGE)
        env.rooms.join(room, [a, b], reason="bridge")
        assert room.members == [a.call_id, b.call_id]
        assert (a.room_id, a.peers, b.peers) == (room.room_id, [b.call_id], [a.call_id])
        assert env.plane.peers_of(a.call_id) == [b.call_id]
        assert env.of(a) == [("call.bridged", "bridge", [b.call_id])]
        env.hangup(b)
        assert env.rooms.get(room.room_id) is None and (a.room_id, a.peers, b.room_id) == (None, [], None)
        assert env.plane.peers_of(a.call_id) == []
        assert env.of(b)[-1] == ("call.unbridged", "hangup", [a.call_id])
        assert env.of(a)[-1] == ("call.unbridged", "bridge_ended", [b.call_id])
    finally:
        await env.plane.stop()


async def test_conference_keeps_the_others_and_survives_empty(tmp_path: Path) -> None:
    env = Env(tmp_path)
    await env.plane.start()
    try:
        a, b, c = env.call(), env.call(), env.call()
        room = env.rooms.create(CONFERENCE)
        for x in (a, b, c):
            env.rooms.join(room, [x])
        assert sorted(env.plane.peers_of(b.call_id)) == sorted([a.call_id, c.call_id])
        env.hangup(a)
        assert room.members == [b.call_id, c.call_id] and b.peers == [c.call_id] and c.peers == [b.call_id]
        env.rooms.leave(b.call_id)
        env.rooms.leave(c.call_id)
        assert env.rooms.get(room.room_id) is room and room.members == []
        other = env.rooms.create(CONFERENCE)
        env.rooms.join(room, [b])
        env.rooms.join(other, [b])  # moves: out of the first room first
        assert room.members == [] and other.members == [b.call_id] and b.room_id == other.room_id
        assert env.of(b)[-2:] == [("call.unbridged", "moved", []), ("call.bridged", "api", [])]
        env.rooms.delete(other)
        assert b.room_id is None and env.rooms.get(other.room_id) is None
    finally:
        await env.plane.stop()


async def test_join_rolls_back_when_a_call_has_no_leg(tmp_path: Path) -> None:
    env = Env(tmp_path)
    await env.plane.start()
    try:
        a, ghost = env.call(), env.call(leg=False)
        room = env.rooms.create(BRIDGE)
        with pytest.raises(KeyError):
            env.rooms.join(room, [a, ghost])
        assert room.members == [] and a.room_id is None and env.plane.peers_of(a.call_id) == []
        assert env.events == []
    finally:
        await env.plane.stop()


async def test_the_registry_is_the_one_owner_and_the_plane_only_wires(tmp_path: Path) -> None:
    """A call's room and peers are the registry's answer; the plane's "opposite" legs are its wiring."""
    env = Env(tmp_path)
    await env.plane.start()
    try:
        a, b, c = env.call(), env.call(), env.call()
        assert env.calls.topology is env.rooms and a.topology is env.rooms
        room = env.rooms.create(CONFERENCE)
        env.rooms.join(room, [a, b, c])
        assert (c.room_id, a.peers, a.summary()["peers"]) == (room.room_id, [b.call_id, c.call_id], a.peers)
        assert env.rooms.peers_of(b.call_id) == b.peers == [a.call_id, c.call_id]
        assert env.plane.peers_of(a.call_id) == [b.call_id, c.call_id]  # wired in joining order
        env.rooms.leave(a.call_id)
        assert env.plane.peers_of(a.call_id) == [] and env.plane.peers_of(b.call_id) == [c.call_id]
        assert (a.room_id, a.peers, a.summary()["room_id"]) == (None, [], None)
    finally:
        await env.plane.stop()
