"""Native HTTP command API under ``/v1``: calls, playbacks, events, health and metrics.

Handlers only validate and translate; the call registry, the SIP user agent and the
media plane do the work.  Every client mistake becomes an :class:`ApiError`.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..calls.commands import CallEnded, CommandError, InvalidCommand, NoSuchCall, NoSuchLeg
from ..calls.registry import Call, CallState, Direction
from ..media import Playback, PlayRequest
from ..media.player import MAX_DUCK_DB, MAX_OFFSET_MS, VOLUME_RANGE_DB
from ..ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..ops.metrics import exposition_async
from .common import MAX_LOOP, BadLoop
from .common import parse_loop as _parse_loop
from .errors import ApiError, check_fields, command_error, read_json_object
from .openapi import OPENAPI
from .sources import SOURCE_FIELDS, parse_sources

if TYPE_CHECKING:
    from ..nodeview import Node

SERVER_KEY: web.AppKey[Node] = web.AppKey("server")
__all__ = ["MAX_LOOP", "SERVER_KEY", "add_routes", "call_resource", "parse_loop", "parse_play_request"]


def _server(request: web.Request) -> Node:
    return request.app[SERVER_KEY]


def _call_or_404(server: Node, call_id: str) -> Call:
    try:
        return server.commands.call(call_id)
    except CommandError as exc:
        raise command_error(exc) from None


def _live_call(server: Node, call_id: str) -> Call:
    try:
        return server.commands.live_call(call_id)
    except CommandError as exc:
        raise command_error(exc) from None


def call_resource(server: Node, call: Call) -> dict[str, Any]:
    body = call.summary()
    body.update(server.media.leg_stats(call.call_id) if call.is_active else call.extra.get("final_stats", {}))
    current, queued = server.media.playbacks_for(call.call_id) if call.is_active else (None, [])
    body["current_playback"] = current.to_dict() if current else None
    body["queued_playbacks"] = [p.to_dict() for p in queued]
    body["overlay_playbacks"] = [p.to_dict() for p in server.media.overlays_for(call.call_id)] if call.is_active else []
    return body


def parse_loop(value: Any) -> int | None:
    """``1..100`` → that count, ``"infinity"`` → None (forever)."""
    try:
        return _parse_loop(value, forever=("infinity", "infinite", "inf"))
    except BadLoop as exc:
        if exc.out_of_range:
            raise ApiError(422, "out_of_range", str(exc), field="loop") from None
        raise ApiError(400, "invalid_field", "loop must be an integer 1-100 or \"infinity\"", field="loop") from None


TARGETS = ("self", "opposite", "both", "room")


def _bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(400, "invalid_field", f"{name} must be true or false", field=name)
    return value


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, "invalid_field", f"{name} must be a number", field=name)
    return float(value)


def _in_range(name: str, value: float | None, lo: float, hi: float) -> float | None:
    if value is not None and not lo <= value <= hi:
        raise ApiError(422, "out_of_range", f"{name} must be between {lo:g} and {hi:g}, got {value:g}", field=name)
    return value


def parse_target(body: dict[str, Any]) -> str | list[str]:
    """``target_legs`` (Telnyx's name) or ``target``: self | opposite | both | room | [call_id, ...]."""
    if "target_legs" in body and "target" in body:
        raise ApiError(422, "conflicting_fields", "give either 'target' or 'target_legs', not both", field="target")
    name = "target_legs" if "target_legs" in body else "target"
    value = body.get(name, "self")
    if isinstance(value, str) and value in TARGETS:
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise ApiError(400, "invalid_field", f"{name} must be one of {', '.join(TARGETS)} or a non-empty list of call ids",
                   field=name)


PLAY_FIELDS = frozenset({"sources", "loop", "overlay", "stop", "target", "target_legs", "length_s", "mix",
                         "duck_db", "volume_db", "command_id", "barge_in", "barge_in_stops", "offset_ms",
                         "early_media"})
CONTROL_FIELDS = frozenset({"op", "ms", "db"})


def parse_play_request(body: dict[str, Any]) -> PlayRequest:
    check_fields(body, PLAY_FIELDS | SOURCE_FIELDS)
    sources = parse_sources(body)
    stop = body.get("stop")
    if stop is not None and stop not in ("current", "all"):
        raise ApiError(400, "invalid_field", "stop must be 'current' or 'all'", field="stop")
    length_s = _number(body, "length_s")
    if length_s is not None and length_s <= 0:
        raise ApiError(422, "out_of_range", f"length_s must be positive, got {length_s:g}", field="length_s")
    command_id = body.get("command_id")
    if command_id is not None and (not isinstance(command_id, str) or not 0 < len(command_id) <= 200):
        raise ApiError(400, "invalid_field", "command_id must be a string of 1-200 characters", field="command_id")
    barge_in = body.get("barge_in")
    if barge_in is not None and (not isinstance(barge_in, str) or not barge_in):
        raise ApiError(400, "invalid_field", "barge_in must be \"any\" or a string of DTMF keys", field="barge_in")
    if barge_in is not None and barge_in != "any":
        barge_in = barge_in.upper()
        if any(c not in "0123456789*#ABCD" for c in barge_in):
            raise ApiError(422, "invalid_field", "barge_in must be \"any\" or DTMF keys (0-9, *, #, A-D)",
                           field="barge_in")
    barge_in_stops = body.get("barge_in_stops", "current")
    if barge_in_stops not in ("current", "all"):
        raise ApiError(400, "invalid_field", "barge_in_stops must be 'current' or 'all'", field="barge_in_stops")
    offset_ms = body.get("offset_ms", 0)
    if isinstance(offset_ms, bool) or not isinstance(offset_ms, int):
        raise ApiError(400, "invalid_field", "offset_ms must be an integer", field="offset_ms")
    if not 0 <= offset_ms <= MAX_OFFSET_MS:
        raise ApiError(422, "out_of_range", f"offset_ms must be between 0 and {MAX_OFFSET_MS}", field="offset_ms")
    overlay = _bool(body, "overlay", False)
    if barge_in is not None and overlay:
        raise ApiError(422, "invalid_field", "barge_in applies to main playbacks, not overlays", field="barge_in")
    return PlayRequest(
        sources=sources,
        barge_in=barge_in,
        barge_in_stops=barge_in_stops,
        offset_ms=offset_ms,
        loop=parse_loop(body.get("loop")),
        overlay=overlay,
        stop=stop,
        target=parse_target(body),
        length_s=length_s,
        mix=_bool(body, "mix", True),
        duck_db=_in_range("duck_db", _number(body, "duck_db"), 0.0, MAX_DUCK_DB),
        volume_db=_in_range("volume_db", _number(body, "volume_db"), *VOLUME_RANGE_DB) or 0.0,
        command_id=command_id,
    )


def play_error(exc: InvalidCommand) -> ApiError:
    return ApiError(exc.status, exc.reason, exc.message)


# -- calls --------------------------------------------------------------------
async def list_calls(request: web.Request) -> web.Response:
    server = _server(request)
    state = request.query.get("state")
    raw_limit = request.query.get("limit")
    limit = None
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise ApiError(400, "invalid_field", "limit must be an integer", field="limit") from None
        if not 1 <= limit <= 100_000:
            raise ApiError(422, "out_of_range", "limit must be 1..100000", field="limit")
    matched = [c for c in server.registry.all() if state is None or c.state.value == state]
    # live calls first (oldest first), then ended ones newest first: a ?limit page (mediasrv top,
    # the console) shows what is happening now, not the oldest of the ended calls the registry keeps
    live = [c for c in matched if c.state is not CallState.ENDED]
    ended = [c for c in matched if c.state is CallState.ENDED][::-1]
    counts: dict[str, int] = {}
    for c in matched:
        counts[c.state.value] = counts.get(c.state.value, 0) + 1
    calls = [call_resource(server, c) for c in (live + ended)[:limit]]
    return web.json_response({"calls": calls, "total": len(matched), "counts": counts})


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


async def _start_early_media(server: Node, call: Call) -> None:
    """183 Session Progress with our SDP on a ringing inbound call (a no-op when it already has it)."""
    if call.direction is not Direction.INBOUND:
        raise ApiError(409, "cannot_early_media", "early media is for ringing inbound calls (an outbound call's "
                       "early media is the callee's 183)")
    try:
        await server.sip.early_media(call.call_id)
    except KeyError as exc:
        raise ApiError(409, "call_ended", f"call {call.call_id!r} has ended") from exc
    except RuntimeError as exc:
        raise ApiError(409, "cannot_early_media", str(exc)) from exc


async def early_media(request: web.Request) -> web.Response:
    """Early media without answering (ARI ``progress``, FreeSWITCH ``pre_answer``): 183 with SDP, RTP starts."""
    server = _server(request)
    call = _live_call(server, request.match_info["call_id"])
    if call.state is CallState.ANSWERED:
        raise ApiError(409, "already_answered", "call is already answered")
    await _start_early_media(server, call)
    return web.json_response(call_resource(server, call))


async def hangup_call(request: web.Request) -> web.Response:
    server = _server(request)
    call = _live_call(server, request.match_info["call_id"])
    await server.sip.hangup(call.call_id, cause="normal_clearing", by="api")
    return web.json_response(call_resource(server, call))


# -- playbacks ----------------------------------------------------------------
def _play_refused(call: Call, exc: CommandError) -> ApiError:
    """Why a play command cannot be carried out; a target leg other than the call is named as ``target``."""
    if isinstance(exc, InvalidCommand):
        return play_error(exc)
    if exc.call_id == call.call_id:
        return ApiError(409, "no_media", "the call has no media leg")
    if isinstance(exc, NoSuchCall):
        return ApiError(404, "call_not_found", exc.message, field="target")
    if isinstance(exc, CallEnded):
        return ApiError(409, "call_ended", exc.message, field="target")
    if isinstance(exc, NoSuchLeg):
        return ApiError(409, "no_media", exc.message, field="target")
    return command_error(exc)


async def start_playback(request: web.Request) -> web.Response:
    """One playback per target leg; the body is the first one (compatible) plus ``playbacks``."""
    server = _server(request)
    call = _live_call(server, request.match_info["call_id"])
    body = await read_json_object(request)
    play = parse_play_request(body)
    allow_early = _bool(body, "early_media", True)
    if call.state is not CallState.ANSWERED:
        # A ringing inbound call plays as early media (183 with SDP) unless the request says not to.
        if not allow_early or call.direction is not Direction.INBOUND:
            raise ApiError(409, "call_not_answered", "the call must be answered before playing audio"
                           + (" (early_media=false)" if not allow_early else ""))
        try:
            server.commands.check_play(call.call_id, play)  # checked before the 183 goes out
            if play.overlay and not call.early_media:
                raise InvalidCommand(call.call_id, "nothing_playing", "an overlay needs a playing non-overlay "
                                     f"playback on leg {call.call_id} (the call is ringing with nothing playing)")
        except CommandError as exc:
            raise _play_refused(call, exc) from exc
        await _start_early_media(server, call)
    try:
        playbacks = server.commands.play(call.call_id, play)
    except CommandError as exc:
        raise _play_refused(call, exc) from exc
    body = playbacks[0].to_dict()
    body["playbacks"] = [p.to_dict() for p in playbacks]
    return web.json_response(body, status=201)


def _playback_or_404(server: Node, playback_id: str) -> Playback:
    try:
        return server.commands.playback(playback_id)
    except CommandError as exc:
        raise command_error(exc) from None


async def get_playback(request: web.Request) -> web.Response:
    server = _server(request)
    return web.json_response(_playback_or_404(server, request.match_info["playback_id"]).to_dict())


async def stop_playback(request: web.Request) -> web.Response:
    server = _server(request)
    playback_id = request.match_info["playback_id"]
    playback = _playback_or_404(server, playback_id)
    stopped = server.commands.stop_playback(playback_id, by=request.query.get("command_id") or "api")
    body = playback.to_dict()
    body["stopped_now"] = stopped  # False: it had already ended, the stop was a no-op
    return web.json_response(body)


CONTROL_OPS = ("pause", "resume", "restart", "seek", "skip", "volume")


async def control_playback(request: web.Request) -> web.Response:
    """pause | resume | restart | seek {ms} | skip {ms} | volume {db} on one playback id."""
    server = _server(request)
    playback_id = request.match_info["playback_id"]
    _playback_or_404(server, playback_id)
    body = await read_json_object(request, CONTROL_FIELDS)
    op = body.get("op")
    if op not in CONTROL_OPS:
        raise ApiError(400, "invalid_field", f"op must be one of {', '.join(CONTROL_OPS)}", field="op")
    ms = _number(body, "ms")
    db = _number(body, "db")
    if op in ("seek", "skip") and ms is None:
        raise ApiError(400, "missing_field", f"{op} needs 'ms'", field="ms")
    if op == "volume" and db is None:
        raise ApiError(400, "missing_field", "volume needs 'db'", field="db")
    if op == "seek" and ms is not None and ms < 0:
        raise ApiError(422, "out_of_range", f"seek position must be >= 0, got {ms:g}", field="ms")
    try:
        playback = server.commands.control(playback_id, op, ms=None if ms is None else int(ms), db=db)
    except CommandError as exc:
        raise command_error(exc) from exc
    out = playback.to_dict()
    out["position_ms"] = server.media.position_ms(playback_id)
    return web.json_response(out)


async def stop_call_playbacks(request: web.Request) -> web.Response:
    """Stop what is current now (``stop=current``, the queue moves on), ``all``, or ``overlay=true``."""
    server = _server(request)
    call = _live_call(server, request.match_info["call_id"])
    which = request.query.get("stop", "current")
    if which not in ("current", "all"):
        raise ApiError(400, "invalid_field", "stop must be 'current' or 'all'", field="stop")
    overlay_arg = request.query.get("overlay", "false").lower()
    if overlay_arg not in ("true", "false", "1", "0"):
        raise ApiError(400, "invalid_field", "overlay must be true or false", field="overlay")
    stopped = server.commands.stop_playbacks(call.call_id, which, by=request.query.get("command_id") or "api",
                                             overlay=overlay_arg in ("true", "1"))
    return web.json_response({"stopped": [p.to_dict() for p in stopped]})


# -- events, health, metrics --------------------------------------------------
def _since(request: web.Request) -> int | None:
    """Where a client resumes: ``Last-Event-ID`` (what EventSource sends on reconnect) or ``?since=<seq>``."""
    raw = request.query.get("since")
    field, raw = ("since", raw) if raw is not None else ("Last-Event-ID", request.headers.get("Last-Event-ID"))
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_field", f"{field} must be an event seq (an integer)", field=field) from None
    if value < 0:
        raise ApiError(400, "invalid_field", f"{field} must be >= 0", field=field)
    return value


async def list_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events (any Accept but an explicit JSON one); ``?call_id=`` filters;
    ``Accept: application/json`` gives the history.

    With ``Last-Event-ID`` or ``?since=<seq>`` the journaled events after that seq come first (also
    those of an earlier run: seq keeps increasing across restarts), then the live feed, without gaps
    or repeats.  The JSON form with ``since`` pages through the journal (``limit``, default 1000).
    """
    server = _server(request)
    call_id = request.query.get("call_id")
    since = _since(request)
    if since is not None and since > server.events.last_seq:
        since = server.events.last_seq  # an id from the future: this journal was lost; go on from now
    if _wants_json(request.headers.get("Accept", "")):
        if since is None:
            return web.json_response({"events": [e.to_dict() for e in server.events.history(call_id)]})
        try:
            limit = int(request.query.get("limit", "1000"))
        except ValueError:
            raise ApiError(400, "invalid_field", "limit must be an integer", field="limit") from None
        if not 1 <= limit <= 10_000:
            raise ApiError(422, "out_of_range", "limit must be 1..10000", field="limit")
        return web.json_response({"events": await server.events.since(since, call_id, limit)})
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    queue = server.events.subscribe()  # before the replay: nothing published meanwhile is missed
    last = since if since is not None else server.events.last_seq
    # the headers go now, not with the first event; the comment names the position the feed starts
    # after (the cluster feed, mediasrv/cluster/feed.py, resumes every node from there)
    await resp.write(f": stream open\n\n: seq {last}\n\n".encode())
    try:
        if since is not None:
            while True:  # in pages, so a long replay never sits in memory at once
                page = await server.events.since(last, call_id, 1000)
                for event in page:
                    await resp.write(_sse(event["seq"], event["type"], event))
                    last = event["seq"]
                if len(page) < 1000:
                    break
        while True:
            try:
                live = await asyncio.wait_for(queue.get(), timeout=15)
            except TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            if live is None:  # the server is stopping
                break
            if (call_id and live.call_id != call_id) or live.seq <= last:
                continue
            await resp.write(_sse(live.seq, live.type, live.to_dict()))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        server.events.unsubscribe(queue)
    return resp


def _wants_json(accept: str) -> bool:
    """The JSON history only when the client asks for JSON by name (curl's ``*/*`` gets the stream)."""
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return "application/json" in types and "text/event-stream" not in types


def _sse(seq: int, type_: str, event: dict[str, Any]) -> bytes:
    return f"id: {seq}\nevent: {type_}\ndata: {json.dumps(event)}\n\n".encode()


async def healthz(request: web.Request) -> web.Response:
    server = _server(request)
    return web.json_response({"status": "draining" if server.drain.draining else "ok", "node_id": server.node_id, "active_calls": server.registry.active_count,
                              "events_journal": server.journal_health()})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


async def metrics(request: web.Request) -> web.Response:
    server = _server(request)
    body = await exposition_async(server.metrics_registry, server.metrics_collector)
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def call_pacing(request: web.Request) -> web.Response:
    """A live leg's last minute of pacing (worst lateness per second) and the level it is sending."""
    server = _server(request)
    call = _live_call(server, request.match_info["call_id"])
    try:
        server.commands.require_leg(call.call_id)
    except NoSuchLeg:
        raise ApiError(409, "no_media", f"call {call.call_id!r} has no media leg yet") from None
    return web.json_response(server.media.monitor(call.call_id))


def add_routes(app: web.Application) -> None:
    app.add_routes(
        [
            web.get("/v1/calls", list_calls),
            web.get("/v1/calls/{call_id}", get_call),
            web.delete("/v1/calls/{call_id}", hangup_call),
            web.post("/v1/calls/{call_id}/answer", answer_call),
            web.post("/v1/calls/{call_id}/early_media", early_media),
            web.post("/v1/calls/{call_id}/playbacks", start_playback),
            web.delete("/v1/calls/{call_id}/playbacks", stop_call_playbacks),
            web.get("/v1/playbacks/{playback_id}", get_playback),
            web.delete("/v1/playbacks/{playback_id}", stop_playback),
            web.post("/v1/playbacks/{playback_id}/control", control_playback),
            web.get("/v1/calls/{call_id}/pacing", call_pacing),
            web.get("/v1/events", list_events),
            web.get("/healthz", healthz),
            web.get("/metrics", metrics),
            web.get("/openapi.json", openapi),
        ]
    )
