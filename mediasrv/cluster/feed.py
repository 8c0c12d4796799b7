"""``GET /v1/events?scope=cluster``: one server-sent-event feed carrying every node's events.

Why a composite cursor: each node numbers its own events (``seq``, kept across restarts by its
journal), so the aggregate feed's event id is the position in every node's feed at once,
``<node>=<seq>,<node>=<seq>``. A client that reconnects sends it back as ``Last-Event-ID`` (or
``?since=``) and each node replays from its own position, as its own feed does: no gap, no
repeat, per node. Each event's data is the node's event plus ``"node"``. A node that is down is
retried every second (its events arrive when it is back, from the cursor); ``: node <id> down``
comments say so. The node's own feed is read through its HTTP API like the peers' (one code path).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from ..api.errors import ApiError
from ..egress import AddressPolicy, Purpose, new_session
from .identity import valid_node_id

if TYPE_CHECKING:
    from ..nodeview import Node

Item = tuple[str, int, str, dict] | tuple[str, str, int]  # (node, seq, type, event) or (node, "at", seq)


def parse_cursor(raw: str | None) -> dict[str, int]:
    """``a=12,b=40`` → {"a": 12, "b": 40}; a clear 400 for anything else."""
    out: dict[str, int] = {}
    if not raw or not raw.strip():
        return out
    for part in raw.split(","):
        node, sep, seq = part.strip().partition("=")
        if not sep or not valid_node_id(node) or not seq.isdigit():
            raise ApiError(400, "invalid_field", "a cluster feed cursor is node=seq[,node=seq...]",
                           field="Last-Event-ID")
        out[node] = int(seq)
    return out


def format_cursor(cursor: dict[str, int]) -> str:
    return ",".join(f"{n}={s}" for n, s in sorted(cursor.items()))


async def _follow(session: aiohttp.ClientSession, node: str, base: str, since: int | None, headers: dict[str, str],
                  out: asyncio.Queue[Item | tuple[str, str]]) -> None:
    """One node's feed into *out*, reconnecting (from the last seq seen) for as long as we are asked."""
    last = since
    while True:
        params = {"since": str(last)} if last is not None else {}
        try:
            async with session.get(base.rstrip("/") + "/v1/events", params=params, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=None, connect=2.0, sock_read=40.0)) as resp:
                if resp.status != 200:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                seq, type_ = None, ""
                async for raw in resp.content:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if line.startswith(": seq "):  # where this node's feed starts: then it is up
                        if last is None:
                            last = int(line[6:])
                            await out.put((node, "at", last))
                        await out.put((node, "up"))
                    elif line.startswith("id: "):
                        seq = int(line[4:])
                    elif line.startswith("event: "):
                        type_ = line[7:]
                    elif line.startswith("data: ") and seq is not None:
                        await out.put((node, seq, type_, json.loads(line[6:])))
                        last = seq
                        seq = None
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            pass
        await out.put((node, "down"))
        await asyncio.sleep(1.0)


async def cluster_feed(server: Node, peers: Mapping[str, str], request: web.Request) -> web.StreamResponse:
    cursor = parse_cursor(request.query.get("since") or request.headers.get("Last-Event-ID"))
    host, port = server.http_address or server.settings.http_addr
    own = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    nodes = {server.node_id: own, **{n: u for n, u in peers.items() if n != server.node_id}}
    headers = {"X-Mediasrv-Forwarded": server.node_id, "Accept": "text/event-stream"}
    if "Authorization" in request.headers:
        headers["Authorization"] = request.headers["Authorization"]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    await resp.write(f": cluster feed of {', '.join(sorted(nodes))}\n\n".encode())
    queue: asyncio.Queue[Item | tuple[str, str]] = asyncio.Queue(maxsize=10_000)
    policy = AddressPolicy.from_cidrs((), (), Purpose.CLUSTER, list(nodes.values()))
    session = new_session(policy)
    tasks = [asyncio.create_task(_follow(session, n, u, cursor.get(n), headers, queue)) for n, u in nodes.items()]
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=15)
            except TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            if len(item) == 2:
                node, state = item
                await resp.write(f": node {node} {state}\n\n".encode())
                continue
            if len(item) == 3:  # a node's starting position: part of the cursor from now on
                node, _, at = item
                cursor.setdefault(node, at)
                continue
            node, seq, type_, event = item
            if seq <= cursor.get(node, -1):
                continue
            cursor[node] = seq
            event["node"] = node
            await resp.write(f"id: {format_cursor(cursor)}\nevent: {type_}\ndata: {json.dumps(event)}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await session.close()
    return resp
