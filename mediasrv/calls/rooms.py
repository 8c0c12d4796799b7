"""Rooms: which calls are connected to each other (bridges and N-party rooms): the one owner of that.

A :class:`Room` holds N legs; every change of membership goes through :class:`RoomRegistry`, which
keeps the rooms and the call -> room index, tells the media plane which leg mixes to connect or
disconnect (``join_room`` / ``leave_room``: the plane only wires legs, what each hears is the mixer's
business) and emits ``call.bridged`` / ``call.unbridged`` for the call that joined or left.  A call's
``room_id`` / ``peers`` are answered from here (the registry is the calls' :class:`~mediasrv.calls.registry.Topology`).
A room made by a two-call bridge dissolves when fewer than two members are left; a room created
through the API lives until it is deleted.  The server builds the one registry of a node and hands it
to whoever needs it (the HTTP routes, the dialects).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .registry import NODE_ID, Call, CallRegistry

BRIDGE = "bridge"
CONFERENCE = "conference"


def new_room_id(node_id: str) -> str:
    """Globally unique room id naming the owning node, like call ids (``r3:<node>:<random>``)."""
    return f"r3:{node_id}:{uuid.uuid4().hex}"


@dataclass
class Room:
    kind: str  # BRIDGE (made by POST /calls/{a}/bridge) or CONFERENCE (POST /rooms)
    room_id: str = field(default_factory=lambda: new_room_id(NODE_ID))
    members: list[str] = field(default_factory=list)  # call ids, in joining order
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"room_id": self.room_id, "kind": self.kind, "members": list(self.members), "created_at": self.created_at}


class MediaRooms(Protocol):
    """What the room registry needs from the media plane (``MediaPlane`` has these)."""

    def join_room(self, room_id: str, call_id: str) -> None: ...  # KeyError: the call has no leg

    def leave_room(self, call_id: str) -> None: ...


Emit = Callable[[str, str, dict[str, Any]], object]  # (event type, call id, data); its result is ignored


class RoomRegistry:
    """All rooms of this node; the only place that changes who is connected to whom."""

    def __init__(self, calls: CallRegistry, media: MediaRooms, emit: Emit) -> None:
        self.calls = calls
        self.media = media
        self.emit = emit
        self._rooms: dict[str, Room] = {}
        self._room_of: dict[str, Room] = {}  # call id -> its room (every member of every room, nothing else)
        calls.topology = self
        for call in calls.all():
            call.topology = self
        calls.subscribe(self._on_call_event)

    # -- queries ---------------------------------------------------------
    def get(self, room_id: str) -> Room | None:
        return self._rooms.get(room_id)

    def all(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))

    def room_of(self, call_id: str) -> Room | None:
        return self._room_of.get(call_id)

    def room_id_of(self, call_id: str) -> str | None:
        room = self._room_of.get(call_id)
        return room.room_id if room is not None else None

    def peers_of(self, call_id: str) -> list[str]:
        """The other members of *call_id*'s room, in joining order (empty: in no room)."""
        room = self._room_of.get(call_id)
        return [c for c in room.members if c != call_id] if room is not None else []

    # -- changes ---------------------------------------------------------
    def create(self, kind: str = CONFERENCE) -> Room:
        room = Room(kind=kind, room_id=new_room_id(self.calls.node_id))
        self._rooms[room.room_id] = room
        return room

    def join(self, room: Room, calls: list[Call], reason: str = "api") -> None:
        """Put *calls* (live, answered) into *room*; one ``call.bridged`` each.

        A call still in another room leaves it first (the API refuses that case with a 409; this
        keeps the registry and the media plane in step whoever calls it).  Raises KeyError if a
        call has no media leg; then none of *calls* is left joined.
        """
        joined: list[Call] = []
        try:
            for call in calls:
                if call.call_id in room.members:
                    continue
                if call.call_id in self._room_of:
                    self.leave(call.call_id, reason="moved")
                self.media.join_room(room.room_id, call.call_id)
                room.members.append(call.call_id)
                self._room_of[call.call_id] = room
                joined.append(call)
        except KeyError:
            for call in joined:
                self._remove(room, call.call_id)
            raise
        for call in joined:
            self._emit("call.bridged", call, room, reason, room.members)

    def leave(self, call_id: str, reason: str = "api") -> Room | None:
        """Take *call_id* out of its room (no-op if in none); a bridge left with one leg dissolves."""
        call = self.calls.get(call_id)
        room = self.room_of(call_id)
        if call is None or room is None:
            return None
        before = list(room.members)
        self._remove(room, call_id)
        self._emit("call.unbridged", call, room, reason, before)
        if room.kind == BRIDGE and len(room.members) < 2:
            self._dissolve(room, "bridge_ended", before)
        return room

    def delete(self, room: Room) -> None:
        """Empty *room* (every call stays up, unbridged) and forget it."""
        self._dissolve(room, "room_deleted", list(room.members))

    # -- internals -------------------------------------------------------
    def _dissolve(self, room: Room, reason: str, before: list[str]) -> None:
        """Everyone out; each ``call.unbridged`` names the legs that were connected to it (*before*)."""
        for call_id in list(room.members):
            self._remove(room, call_id)
            call = self.calls.get(call_id)
            if call is not None:
                self._emit("call.unbridged", call, room, reason, before)
        room.members.clear()
        self._rooms.pop(room.room_id, None)

    def _remove(self, room: Room, call_id: str) -> None:
        if call_id in room.members:
            room.members.remove(call_id)
        if self._room_of.get(call_id) is room:
            del self._room_of[call_id]
        self.media.leave_room(call_id)

    def _emit(self, type_: str, call: Call, room: Room, reason: str, members: list[str]) -> None:
        peers = [c for c in members if c != call.call_id]
        self.emit(type_, call.call_id, {"call_id": call.call_id, "room_id": room.room_id, "peers": peers,
                                        "reason": reason, "room_kind": room.kind})

    def _on_call_event(self, type_: str, call: Call) -> None:
        if type_ == "call.hangup" and call.call_id in self._room_of:
            self.leave(call.call_id, reason="hangup")
