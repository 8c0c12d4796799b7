"""Call model, registry and the hand-off interface between signaling and media.

The SIP layer creates and ends :class:`Call` objects; the media plane implements
:class:`MediaBackend` and is told when a call needs a port, when its negotiated
media changes (answer, hold, unhold) and when it ends.  Neither side imports the
other: both only know this module, so they can evolve (and be tested) apart.
"""

from __future__ import annotations

import enum
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from mediacodecs.codec import Codec
from mediacodecs.registry import DEFAULT_PTIME_MS


class CallState(enum.StrEnum):
    INITIATED = "initiated"  # INVITE received / sent, not answered
    RINGING = "ringing"  # 180 sent (waiting for an API answer) / received
    ANSWERED = "answered"  # 200 OK sent or received; media flows
    ENDED = "ended"


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


@dataclass
class NegotiatedMedia:
    """What SDP offer/answer settled on for one call's audio stream."""

    remote_addr: tuple[str, int] | None  # None while on hold with c=0.0.0.0 or before the answer
    codec: Codec  # the codec object (mediacodecs.codec); its ``name`` is what the call resource shows
    payload_type: int  # the number the offer/answer chose: the static one (0, 8, 9) or a dynamic one
    ptime_ms: int = DEFAULT_PTIME_MS
    telephone_event_pt: int | None = None
    # May *we* send media?  False for a=sendonly/inactive from the peer, or c=0.0.0.0 (hold).
    send_enabled: bool = True
    # Does the peer send to us?  False for a=recvonly/inactive from the peer.
    recv_enabled: bool = True

    @property
    def clock_rate(self) -> int:
        """The RTP clock of the stream (the codec's: timestamps and telephone-events count in it)."""
        return self.codec.clock_rate


def new_call_id(node_id: str) -> str:
    """Globally unique call id that names the owning node (``v3:<node>:<random>``)."""
    return f"v3:{node_id}:{uuid.uuid4().hex}"


NODE_ID = os.environ.get("MEDIASRV_NODE_ID", uuid.uuid4().hex[:8])  # for objects made outside any server (tests)


def owner_of(object_id: str) -> str | None:
    """The node named by a call, room or playback id (``v3:<node>:…``, ``r3:…``, ``p3:…``); None if it names none."""
    kind, sep, rest = object_id.partition(":")
    node, sep2, tail = rest.partition(":")
    if not sep or not sep2 or kind not in ("v3", "r3", "p3") or not node or not tail:
        return None
    return node


@dataclass
class Call:
    """One SIP dialog with one audio leg."""

    direction: Direction
    from_uri: str
    to_uri: str
    sip_call_id: str
    call_id: str = field(default_factory=lambda: new_call_id(NODE_ID))
    state: CallState = CallState.INITIATED
    media: NegotiatedMedia | None = None
    local_rtp: tuple[str, int] | None = None  # our RTP address (host, port); RTCP is port + 1
    hangup_cause: str | None = None  # e.g. "normal_clearing", "rtp_timeout", "cancelled", "no_ack"
    hangup_by: str | None = None  # "caller", "callee", "api", "server"
    sip_code: int | None = None  # final SIP status associated with the end, if any
    created_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, e.g. SIP headers of interest
    # Who hears whom is the room registry's alone (rooms.py); the call only knows where to ask
    # (set by CallRegistry.add), so ``room_id`` / ``peers`` below can never disagree with it.
    topology: Topology | None = field(default=None, repr=False, compare=False)
    # Media flows before the answer: the callee's 18x carried SDP (outbound), or we sent 183 Session
    # Progress with our SDP answer (inbound). The state stays ringing until the 200.
    early_media: bool = False

    @property
    def is_active(self) -> bool:
        return self.state is not CallState.ENDED

    @property
    def room_id(self) -> str | None:
        """The room this leg is in, as the room registry says (None: in none)."""
        return self.topology.room_id_of(self.call_id) if self.topology is not None else None

    @property
    def peers(self) -> list[str]:
        """The other legs in its room (the "opposite" legs of a bridge), in joining order."""
        return self.topology.peers_of(self.call_id) if self.topology is not None else []

    def summary(self) -> dict[str, Any]:
        m = self.media
        return {
            "call_id": self.call_id,
            "state": self.state.value,
            "direction": self.direction.value,
            "from": self.from_uri,
            "to": self.to_uri,
            "sip_call_id": self.sip_call_id,
            "codec": m.codec.name if m else None,
            "ptime_ms": m.ptime_ms if m else None,
            "remote_rtp": f"{m.remote_addr[0]}:{m.remote_addr[1]}" if m and m.remote_addr else None,
            "local_rtp": f"{self.local_rtp[0]}:{self.local_rtp[1]}" if self.local_rtp else None,
            "hangup_cause": self.hangup_cause,
            "hangup_by": self.hangup_by,
            "sip_code": self.sip_code,
            "room_id": self.room_id,
            "peers": list(self.peers),
            "early_media": self.early_media,
            "created_at": self.created_at,
            "answered_at": self.answered_at,
            "ended_at": self.ended_at,
        }


class Topology(Protocol):
    """Who hears whom, as the one owner (``rooms.RoomRegistry``) answers it for a call."""

    def room_id_of(self, call_id: str) -> str | None: ...

    def peers_of(self, call_id: str) -> list[str]: ...


class MediaBackend(Protocol):
    """What signaling needs from the media plane."""

    def allocate(self, call: Call) -> tuple[str, int]:
        """Reserve an even RTP port (RTCP = port + 1) for *call*; return our (host, port).

        Raises ``ResourceWarning``-free ``RuntimeError`` when no port is free (SIP then answers 503).
        """
        ...

    def media_changed(self, call: Call) -> None:
        """Called after answer and after every re-INVITE with ``call.media`` updated."""
        ...

    def release(self, call: Call) -> None:
        """Called once when the call ends: stop sending, send RTCP BYE, free the port."""
        ...

    def dtmf_info(self, call: Call, digit: str, duration_ms: int) -> bool:
        """A key press signalled by SIP INFO (application/dtmf-relay, application/dtmf); False: no media leg.

        Optional: the SIP core calls it only on backends that have it."""
        ...


class NullMedia:
    """A media backend with ports but no audio: lets signaling run on its own (tests, SIP bench)."""

    def __init__(self, host: str = "127.0.0.1", lo: int = 20000, hi: int = 29999) -> None:
        self.host = host
        self._free = list(range(lo - lo % 2 + (2 if lo % 2 else 0), hi, 2))
        self._used: dict[str, int] = {}

    def allocate(self, call: Call) -> tuple[str, int]:
        if not self._free:
            raise RuntimeError("no free RTP port")
        port = self._free.pop(0)
        self._used[call.call_id] = port
        return (self.host, port)

    def media_changed(self, call: Call) -> None:
        return None

    def release(self, call: Call) -> None:
        port = self._used.pop(call.call_id, None)
        if port is not None:
            self._free.append(port)


CallListener = Callable[[str, Call], None]  # (event type, call)


class CallRegistry:
    """All live calls of this node, plus lifecycle notifications.

    Listeners get ``("call.initiated" | "call.ringing" | "call.early_media" | "call.answered" |
    "call.hangup", call)``
    synchronously; they must not block (the event bus queues and delivers off the media path).
    Ended calls are kept for a while so that late API commands get 409 instead of 404.
    """

    def __init__(self, keep_ended: int = 1000, node_id: str | None = None) -> None:
        self.node_id = node_id or NODE_ID  # named by every call id this node makes
        self._calls: dict[str, Call] = {}
        self._by_sip: dict[str, str] = {}
        self._ended: list[str] = []
        self._keep_ended = keep_ended
        self._listeners: list[CallListener] = []
        self.topology: Topology | None = None  # the room registry, once made: every call added asks it
        # calls not ended, by state: kept as the registry moves them, so /metrics reads it in O(1)
        self._live_states: dict[CallState, int] = {}

    def subscribe(self, listener: CallListener) -> None:
        self._listeners.append(listener)

    def _notify(self, event: str, call: Call) -> None:
        for listener in list(self._listeners):
            listener(event, call)

    def _count(self, state: CallState, delta: int) -> None:
        if state is not CallState.ENDED:
            self._live_states[state] = self._live_states.get(state, 0) + delta

    def _move(self, call: Call, state: CallState) -> None:
        """Every state change goes through here (the registry is the one owner of call state)."""
        self._count(call.state, -1)
        call.state = state
        self._count(state, +1)

    def live_state_counts(self) -> dict[CallState, int]:
        """Calls not ended, by state (every live state present, 0 if none)."""
        return {st: self._live_states.get(st, 0) for st in CallState if st is not CallState.ENDED}

    def add(self, call: Call) -> None:
        call.topology = self.topology
        previous = self._calls.get(call.call_id)
        if previous is not None:
            self._count(previous.state, -1)
        self._count(call.state, +1)
        self._calls[call.call_id] = call
        self._by_sip[call.sip_call_id] = call.call_id
        self._notify("call.initiated", call)

    def ringing(self, call: Call) -> None:
        if call.state is CallState.INITIATED:
            self._move(call, CallState.RINGING)
            self._notify("call.ringing", call)

    def early_media(self, call: Call) -> None:
        """RTP flows before the answer: an outbound call's 18x carried an SDP answer, or an inbound
        call got our 183 with SDP. Notified once per call."""
        if call.state in (CallState.INITIATED, CallState.RINGING) and not call.early_media:
            call.early_media = True
            self._notify("call.early_media", call)

    def answered(self, call: Call) -> None:
        if call.state in (CallState.INITIATED, CallState.RINGING):
            self._move(call, CallState.ANSWERED)
            call.answered_at = time.time()
            self._notify("call.answered", call)

    def ended(self, call: Call, cause: str, by: str, sip_code: int | None = None) -> None:
        if call.state is CallState.ENDED:
            return
        self._move(call, CallState.ENDED)
        call.hangup_cause = cause
        call.hangup_by = by
        call.sip_code = sip_code
        call.ended_at = time.time()
        self._by_sip.pop(call.sip_call_id, None)
        self._ended.append(call.call_id)
        while len(self._ended) > self._keep_ended:
            self._calls.pop(self._ended.pop(0), None)
        self._notify("call.hangup", call)

    def get(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def by_sip_call_id(self, sip_call_id: str) -> Call | None:
        cid = self._by_sip.get(sip_call_id)
        return self._calls.get(cid) if cid else None

    def active(self) -> Iterator[Call]:
        return (c for c in self._calls.values() if c.is_active)

    def all(self) -> Iterator[Call]:
        return iter(list(self._calls.values()))

    @property
    def active_count(self) -> int:
        return len(self._by_sip)
