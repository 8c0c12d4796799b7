"""HTTP to any node: a request naming another node's call, room or playback is carried out by that node.

Why forward and not redirect: vendor SDKs do not all follow redirects (and must work unmodified
when pointed at any node). The middleware finds the first path segment that is one of our ids
(``v3:<node>:…``, ``p3:…``, ``r3:…``, also inside an ACS ``…:play`` action segment), and when the
node is another one listed in ``cluster_peers`` it replays the request there (method, path,
query, headers, body) and returns the owner's answer as it is, in whatever dialect it speaks.
The forwarded request carries ``X-Mediasrv-Forwarded: <this node>``; a request that carries it is
never forwarded again (a loop is impossible: it is handled where it lands, so an id this node does
not own gets that dialect's 404). An id naming no known node is handled locally (→ 404 in the
dialect's shape); an owner that does not answer → 503 naming the node. Outbound connections go
through the egress policy's ``cluster`` purpose, which reaches only the configured peers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote

import aiohttp
from aiohttp import web

from ..api.errors import ApiError
from ..calls.registry import owner_of
from ..egress import Purpose
from ..ops.logsafe import SourceLimiter, clip
from ..ops.timing import Timing
from .feed import cluster_feed

if TYPE_CHECKING:
    from ..nodeview import Node

log = logging.getLogger("mediasrv.cluster")

HOP_HEADER = "X-Mediasrv-Forwarded"
# not replayed: connection-level headers (RFC 9110 7.6.1) and what aiohttp sets from the body itself.
# Host is kept: dialects that sign the URL (ACS HMAC, Plivo V3) check the host the client used.
_HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
    "Content-Length", "Proxy-Authorization", "Proxy-Authenticate",
))
# cache commands that ?scope=cluster runs on every node (each node has its own cache)
FAN_OUT = frozenset({("POST", "/v1/media-cache/prefetch"), ("DELETE", "/v1/media-cache")})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def owner_in_path(path: str) -> str | None:
    """The node named by the first id-shaped segment of *path*, or None."""
    for raw in path.split("/"):
        segment = unquote(raw)
        if ":" in segment:
            node = owner_of(segment)
            if node is not None:
                return node
    return None


class Forwarder:
    """The middleware and its one client session (made on first use, closed with the server)."""

    def __init__(self, server: Node, timeout_s: float = 10.0) -> None:
        self.server = server
        self.peers = dict(server.settings.cluster_peers)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(2.0, timeout_s))
        self._session: aiohttp.ClientSession | None = None
        self.stats = {"forwarded": 0, "owner_down": 0, "received": 0}
        self.latency = Timing()  # our round trip to the owner, request sent to answer read
        self._log_limit = SourceLimiter(rate=1.0, burst=5)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self.server.egress.session(Purpose.CLUSTER, timeout=self.timeout, auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if HOP_HEADER in request.headers:
            self.stats["received"] += 1
            return await handler(request)  # forwarded once already: never again, whatever it names
        if request.query.get("scope") == "cluster":
            if request.method == "GET" and request.path == "/v1/calls":
                return await self.cluster_calls(request, handler)
            if request.method == "GET" and request.path == "/v1/events":
                return await cluster_feed(self.server, self.peers, request)
            if (request.method, request.path) in FAN_OUT:
                return await self.fan_out(request, handler)
        node = owner_in_path(request.path)
        if node is None or node == self.server.node_id or node not in self.peers:
            return await handler(request)
        return await self.forward(request, node)

    async def forward(self, request: web.Request, node: str) -> web.StreamResponse:
        url = self.peers[node].rstrip("/") + request.rel_url.raw_path_qs
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        headers.append((HOP_HEADER, self.server.node_id))
        if request.remote:
            headers.append(("X-Forwarded-For", request.remote))
        body = await request.read()
        start = asyncio.get_running_loop().time()
        try:
            async with self.session().request(request.method, url, headers=headers, data=body or None,
                                              allow_redirects=False) as resp:
                payload = await resp.read()
                out_headers = [(k, v) for k, v in resp.headers.items()
                               if k.lower() not in _HOP_BY_HOP and k.lower() not in ("date", "server")]
                status, reason = resp.status, resp.reason
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.stats["owner_down"] += 1
            ok, dropped = self._log_limit.allow(node)
            if ok:
                log.warning("node %s (owner of %s) unreachable: %s%s", node, clip(request.path), clip(str(exc)),
                            f" ({dropped} more suppressed)" if dropped else "")
            raise ApiError(503, "node_unavailable", f"node {node}, which owns this id, is not reachable",
                           node=node) from None
        self.latency.observe(asyncio.get_running_loop().time() - start)
        self.stats["forwarded"] += 1
        response = web.Response(status=status, reason=reason, body=payload)
        for k, v in out_headers:
            response.headers.add(k, v)
        response.headers[HOP_HEADER] = node  # who answered
        return response

    async def cluster_calls(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """``GET /v1/calls?scope=cluster``: this node's list plus every peer's, asked concurrently.

        ``nodes`` says, per node, ``ok`` or why its calls are missing (a down node does not fail the list).
        """
        local = await handler(request)  # validates state/limit; 4xx returned as they are
        if not isinstance(local, web.Response) or local.status != 200 or local.body is None:
            return local
        merged = json.loads(local.body)  # type: ignore[arg-type]
        nodes: dict[str, str] = {self.server.node_id: "ok"}
        query = {k: v for k, v in request.query.items() if k != "scope"}
        headers = {HOP_HEADER: self.server.node_id}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]

        async def ask(node: str, base: str) -> None:
            try:
                async with self.session().get(base.rstrip("/") + "/v1/calls", params=query, headers=headers,
                                              allow_redirects=False) as resp:
                    if resp.status != 200:
                        nodes[node] = f"HTTP {resp.status}"
                        return
                    body = await resp.json()
                merged["calls"].extend(body.get("calls", []))
                merged["total"] += int(body.get("total", 0))
                nodes[node] = "ok"
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                nodes[node] = f"unreachable: {clip(str(exc), 200)}"

        await asyncio.gather(*(ask(n, u) for n, u in self.peers.items() if n != self.server.node_id))
        merged["nodes"] = nodes
        return web.json_response(merged)

    async def fan_out(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A cache command on this node and then on every peer: this node's answer plus ``nodes``.

        ``nodes`` maps each node id to ``{"status": <HTTP status>, "body": <its JSON>}`` (or
        ``{"status": 503, "error": ...}`` for a node that did not answer); the status is this node's.
        """
        body = await request.read()
        local = await handler(request)
        if not isinstance(local, web.Response) or local.body is None or local.content_type != "application/json":
            return local
        merged = json.loads(local.body)  # type: ignore[arg-type]
        nodes: dict[str, dict[str, object]] = {self.server.node_id: {"status": local.status, "body": dict(merged)}}
        query = {k: v for k, v in request.query.items() if k != "scope"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP and k.lower() != "host"}
        headers[HOP_HEADER] = self.server.node_id

        async def one(node: str, base: str) -> None:
            try:
                async with self.session().request(request.method, base.rstrip("/") + request.path, params=query,
                                                  headers=headers, data=body or None, allow_redirects=False) as resp:
                    nodes[node] = {"status": resp.status, "body": await resp.json(content_type=None)}
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                nodes[node] = {"status": 503, "error": f"unreachable: {clip(str(exc), 200)}"}

        await asyncio.gather(*(one(n, u) for n, u in self.peers.items() if n != self.server.node_id))
        merged["nodes"] = nodes
        return web.json_response(merged, status=local.status)
