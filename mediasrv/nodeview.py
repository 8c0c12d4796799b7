"""What the node-wide parts (metrics, cluster drain and forwarding) read of the running server.

A structural type, so that those parts depend on the pieces they read (the call registry, the
media plane, the SIP agent, the event bus ...) and not on ``server.py``, which builds them and
imports them: with the server itself as their type, server.py and each of them imported each other.
"""

from __future__ import annotations

from typing import Protocol

from .calls import CallRegistry
from .config import Settings
from .egress import Egress
from .events import EventBus
from .gcpolicy import GcPolicy
from .media import MediaPlane
from .sip.ua import SipUserAgent
from .timing import Timing

__all__ = ["Node"]


class Node(Protocol):
    """One mediasrv node as its metrics collector, drain and forwarder see it (server.Server is one)."""

    settings: Settings
    node_id: str
    registry: CallRegistry
    egress: Egress
    events: EventBus
    media: MediaPlane
    sip: SipUserAgent
    gc: GcPolicy
    http_timings: dict[tuple[str, str], Timing]
    http_address: tuple[str, int] | None
