"""Draining a node for a rolling restart: no new calls, the current ones carry on, then exit.

While draining, the SIP core answers new INVITEs and OPTIONS probes with 503: Kamailio's
dispatcher retries those INVITEs on another node (failure_route) and its probes take this node
out. ``mediasrv serve`` exits once the last call has ended (``POST /v1/drain`` or SIGUSR1).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ..calls.registry import Call
    from ..nodeview import Node


class Drain:
    def __init__(self, server: Node) -> None:
        self.server = server
        self.drained = asyncio.Event()  # set once draining and no call is left
        server.registry.subscribe(self._on_call_event)

    @property
    def draining(self) -> bool:
        return self.server.sip.core.draining

    def start(self) -> None:
        self.server.sip.core.draining = True
        self._check()

    def _on_call_event(self, type_: str, call: Call) -> None:
        if type_ == "call.hangup" and self.draining:
            asyncio.get_running_loop().call_soon(self._check)  # after the registry counted it ended

    def _check(self) -> None:
        if self.draining and self.server.registry.active_count == 0:
            self.drained.set()

    async def handle(self, request: web.Request) -> web.Response:
        """``POST /v1/drain``: start draining (idempotent); 202 with the calls still in progress."""
        self.start()
        return web.json_response({"draining": True, "node_id": self.server.node_id,
                                  "active_calls": self.server.registry.active_count}, status=202)
