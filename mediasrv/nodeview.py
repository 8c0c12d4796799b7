"""What the node-wide parts (metrics, cluster drain and forwarding) read of the running server.

A structural type, so that those parts (and every API module) depend on the pieces they read (the call registry, the
media plane, the SIP agent, the event bus ...) and not on ``server.py``, which builds them and
imports them: with the server itself as their type, server.py and each of them imported each other.
"""

from __future__ import annotations

from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from .calls.commands import CommandService
from .calls.controller import SipUserAgent
from .calls.registry import CallRegistry
from .calls.rooms import RoomRegistry
from .config import Settings
from .egress import Egress
from .events.bus import EventBus
from .media import MediaPlane
from .ops.gcpolicy import GcPolicy
from .ops.timing import LoopMeter, Timing

__all__ = ["Node", "Draining", "Refreshable"]


class Refreshable(Protocol):
    """What a /metrics scrape asks of the server's collector (ops/metrics.py's ServerCollector is one)."""

    async def refresh(self, chunk: int = ..., meter: LoopMeter | None = ...) -> None: ...
    def forget(self) -> None: ...
    def scraped(self, meter: LoopMeter) -> None: ...
    async def gap(self) -> None: ...


class Draining(Protocol):
    """What the API reads of the node's drain (cluster/drain.py's Drain is one)."""

    @property
    def draining(self) -> bool: ...


class Node(Protocol):
    """One mediasrv node as the API, its metrics collector, drain and forwarder see it (server.Server is one)."""

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
    commands: CommandService
    metrics_registry: CollectorRegistry
    @property
    def metrics_collector(self) -> Refreshable: ...
    rooms: RoomRegistry
    @property
    def drain(self) -> Draining: ...

    def journal_health(self) -> dict[str, Any]: ...
