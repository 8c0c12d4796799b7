"""Native HTTP command API under ``/v1``: calls, playbacks, events, health and metrics.

Handlers only validate and translate; the call registry, the SIP user agent and the
media plane do the work.  Every client mistake becomes an :class:`ApiError`.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..calls import Call, CallState
from ..media import PlayRequest
from .errors import ApiError, read_json_object
from .openapi import OPENAPI
from .sources import parse_sources

if TYPE_CHECKING:
    from ..server import Server

SERVER_KEY: web.AppKey[Server] = web.AppKey("server")
MAX_LOOP = 100


def _server(request: web.Request) -> Server:
    return request.app[SERVER_KEY]


def _call_or_404(server: Server, call_id: str) -> Call:
    call = server.registry.get(call_id)
    if call is None:
        raise ApiError(404, "call_not_found", f"no call with id {call_id!r}")
    return call


def _live_call(server: Server, call_id: str) -> Call:
    call = _call_or_404(server, call_id)
    if call.state is CallState.ENDED:
        raise ApiError(409, "call_ended", f"call {call_id!r} has ended ({call.hangup_cause})")
    return call


def call_resource(server: Server, call: Call) -> dict[str, Any]:
    body = call.summary()
    body.update(server.media.leg_stats(call.call_id) if call.is_active else call.extra.get("final_stats", {}))
    current, queued = server.media.playbacks_for(call.call_id) if call.is_active else (None, [])
    body["current_playback"] = current.to_dict() if current else None
    body["queued_playbacks"] = [p.to_dict() for p in queued]
    return body


def parse_loop(value: Any) -> int | None:
    """``1..100`` → that count, ``"infinity"`` → None (forever)."""
    if value is None:
        return 1
    if isinstance(value, str) and value.strip().lower() in ("infinity", "infinite", "inf"):
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "invalid_field", "loop must be an integer 1-100 or \"infinity\"", field="loop")
    if not 1 <= value <= MAX_LOOP:
        raise ApiError(422, "out_of_range", f"loop must be between 1 and {MAX_LOOP}, got {value}", field="loop")
    return value


def parse_play_request(body: dict[str, Any]) -> PlayRequest:
    sources = parse_sources(body)
    return PlayRequest(sources=sources, loop=parse_loop(body.get("loop")))


# -- calls --------------------------------------------------------------------
async def list_calls(request: web.Request) -> web.Response:
    server = _server(request)
    state = request.query.get("state")
    calls = [call_resource(server, c) for c in server.registry.all() if state is None or c.state.value == state]
    return web.json_response({"calls": calls})


async def get_call(request: web.Request) -> web.Response:
    server = _server(request)
    return web.json_response(call_resource(server, _call_or_404(server, request.match_info["call_id"])))


async def answer_call(request: web.Request) -> web.Response:
    server = _server(request)
    call = _live_call(server, request.match_info["call_id"])
    if call.state is CallState.ANSWERED:
        raise ApiError(409, "already_answered", "call is already answered")
    try:
        await server.sip.answer(call.call_id)
    except RuntimeError as exc:
        raise ApiError(409, "cannot_answer", str(exc)) from exc
    return web.json_response(call_resource(server, call))


async def hangup_call(request: web.Request) -> web.Response:
    server = _server(request)
    call = _live_call(server, request.match_info["call_id"])
    await server.sip.hangup(call.call_id, cause="normal_clearing", by="api")
    return web.json_response(call_resource(server, call))


# -- playbacks ----------------------------------------------------------------
async def start_playback(request: web.Request) -> web.Response:
    server = _server(request)
    call = _live_call(server, request.match_info["call_id"])
    play = parse_play_request(await read_json_object(request))
    if call.state is not CallState.ANSWERED:
        raise ApiError(409, "call_not_answered", "the call must be answered before playing audio")
    try:
        playbacks = server.media.play(call.call_id, play)
    except KeyError as exc:
        raise ApiError(409, "no_media", "the call has no media leg") from exc
    return web.json_response(playbacks[0].to_dict(), status=201)


async def get_playback(request: web.Request) -> web.Response:
    server = _server(request)
    playback = server.media.get_playback(request.match_info["playback_id"])
    if playback is None:
        raise ApiError(404, "playback_not_found", "no playback with that id")
    return web.json_response(playback.to_dict())


async def stop_playback(request: web.Request) -> web.Response:
    server = _server(request)
    playback_id = request.match_info["playback_id"]
    playback = server.media.get_playback(playback_id)
    if playback is None:
        raise ApiError(404, "playback_not_found", "no playback with that id")
    stopped = server.media.stop_playback(playback_id, by="api")
    body = playback.to_dict()
    body["stopped_now"] = stopped  # False: it had already ended, the stop was a no-op
    return web.json_response(body)


async def stop_call_playbacks(request: web.Request) -> web.Response:
    server = _server(request)
    call = _live_call(server, request.match_info["call_id"])
    which = request.query.get("stop", "current")
    if which not in ("current", "all"):
        raise ApiError(400, "invalid_field", "stop must be 'current' or 'all'", field="stop")
    stopped = server.media.stop_playbacks(call.call_id, which, by="api")
    return web.json_response({"stopped": [p.to_dict() for p in stopped]})


# -- events, health, metrics --------------------------------------------------
async def list_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events; ``?call_id=`` filters; ``Accept: application/json`` gives the history."""
    server = _server(request)
    call_id = request.query.get("call_id")
    if "text/event-stream" not in request.headers.get("Accept", "text/event-stream"):
        return web.json_response({"events": [e.to_dict() for e in server.events.history(call_id)]})
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    queue = server.events.subscribe()
    try:
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=15)
            except TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            if call_id and event.call_id != call_id:
                continue
            payload = json.dumps(event.to_dict())
            await resp.write(f"id: {event.seq}\nevent: {event.type}\ndata: {payload}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        server.events.unsubscribe(queue)
    return resp


async def healthz(request: web.Request) -> web.Response:
    server = _server(request)
    return web.json_response({"status": "ok", "active_calls": server.registry.active_count})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=_server(request).prometheus_text(), content_type="text/plain", charset="utf-8")


def add_routes(app: web.Application) -> None:
    app.add_routes(
        [
            web.get("/v1/calls", list_calls),
            web.get("/v1/calls/{call_id}", get_call),
            web.delete("/v1/calls/{call_id}", hangup_call),
            web.post("/v1/calls/{call_id}/answer", answer_call),
            web.post("/v1/calls/{call_id}/playbacks", start_playback),
            web.delete("/v1/calls/{call_id}/playbacks", stop_call_playbacks),
            web.get("/v1/playbacks/{playback_id}", get_playback),
            web.delete("/v1/playbacks/{playback_id}", stop_playback),
            web.get("/v1/events", list_events),
            web.get("/healthz", healthz),
            web.get("/metrics", metrics),
            web.get("/openapi.json", openapi),
        ]
    )
