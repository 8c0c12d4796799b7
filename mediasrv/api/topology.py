"""Native API for call topologies: outbound calls, two-call bridges and rooms.

``POST /v1/calls`` places a call through the SIP UAC and answers 201 at once (state
``initiated``); the rest is told by events.  Bridges and rooms only change who is connected to
whom (:class:`~mediasrv.calls.rooms.RoomRegistry`); what each leg hears is the media plane's business.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..calls.registry import Call, CallState, Direction
from ..calls.rooms import BRIDGE, CONFERENCE, Room, RoomRegistry
from ..sip.core import check_user_headers
from ..sip.digest import Credentials
from ..sip.message import ParseError, parse_uri
from ..sip.ua import CallFailed
from .errors import ApiError, check_fields, read_json_object
from .native import _call_or_404, _live_call, _server, call_resource
from .sources import AUTH_FIELDS

if TYPE_CHECKING:
    from ..nodeview import Node

ROOMS_KEY: web.AppKey[RoomRegistry] = web.AppKey("rooms", RoomRegistry)
CALL_FIELDS = frozenset({"to", "from", "headers", "timeout_s", "auth", "transport"})
CALL_ID_FIELD = frozenset({"call_id"})
DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 600.0


def _rooms(request: web.Request) -> RoomRegistry:
    return request.app[ROOMS_KEY]


def _str_field(body: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, "missing_field", f"{name} is required", field=name)
        return None
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "invalid_field", f"{name} must be a non-empty string", field=name)
    return value.strip()


# -- outbound calls -----------------------------------------------------------
async def _target(to: str, transport: str | None, family: int) -> tuple[str, str, tuple[str, int]]:
    """(Request-URI, transport, (ip, port)) for a ``to`` URI; host names are resolved here."""
    uri_text = to[1:-1] if to.startswith("<") and to.endswith(">") else to
    try:
        uri = parse_uri(uri_text)
    except ParseError as exc:
        raise ApiError(400, "invalid_field", f"to is not a SIP URI: {exc}", field="to") from exc
    if uri.scheme == "sips":
        raise ApiError(422, "unsupported", "sips: needs TLS, which this server does not do", field="to")
    if uri.scheme != "sip" or not uri.host:
        raise ApiError(422, "unsupported", "to must be a sip: URI with a host", field="to")
    tp = (transport or uri.param("transport") or "udp").lower()
    if tp not in ("udp", "tcp"):
        raise ApiError(422, "unsupported", f"transport {tp!r} is not supported (udp, tcp)", field="transport")
    host, port = uri.host.strip("[]"), uri.port or 5060
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise ApiError(422, "unresolvable", f"cannot resolve {host!r}: {exc}", field="to") from exc
        ip = str(infos[0][4][0])
    return uri_text, tp, (ip, port)


def _credentials(server: Node, body: dict[str, Any]) -> Credentials | None:
    auth = body.get("auth")
    if auth is None:
        s = server.settings
        return Credentials(s.sip_username, s.sip_password or "") if s.sip_username else None
    if not isinstance(auth, dict) or not isinstance(auth.get("username"), str) or not auth["username"]:
        raise ApiError(400, "invalid_field", "auth must be {\"username\": ..., \"password\": ...}", field="auth")
    check_fields(auth, AUTH_FIELDS, "auth")
    password = auth.get("password", "")
    if not isinstance(password, str):
        raise ApiError(400, "invalid_field", "auth.password must be a string", field="auth.password")
    return Credentials(auth["username"], password)


def _timeout(body: dict[str, Any]) -> float:
    value = body.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, "invalid_field", "timeout_s must be a number of seconds", field="timeout_s")
    if not 1 <= value <= MAX_TIMEOUT_S:
        raise ApiError(422, "out_of_range", f"timeout_s must be between 1 and {MAX_TIMEOUT_S:g}", field="timeout_s")
    return float(value)


async def create_call(request: web.Request) -> web.Response:
    server = _server(request)
    body = await read_json_object(request, CALL_FIELDS)
    to = _str_field(body, "to", required=True)
    assert to is not None
    from_uri = _str_field(body, "from")
    if from_uri is not None:
        try:
            if parse_uri(from_uri).scheme not in ("sip", "sips"):
                raise ParseError("not sip")
        except ParseError as exc:
            raise ApiError(400, "invalid_field", "from must be a sip: URI", field="from") from exc
    headers = body.get("headers") or {}
    if not isinstance(headers, dict):
        raise ApiError(400, "invalid_field", "headers must be an object of header name -> value", field="headers")
    problem = check_user_headers(headers)
    if problem:
        raise ApiError(422, "invalid_header", problem, field="headers")
    timeout = _timeout(body)
    credentials = _credentials(server, body)
    family = socket.AF_INET6 if ":" in server.sip.address[0] else socket.AF_INET  # what our SIP socket reaches
    uri, transport, remote = await _target(to, _str_field(body, "transport"), family)
    try:
        call = server.sip.dial(
            uri,
            remote=remote,
            from_uri=from_uri,
            transport=transport,
            headers=headers,
            credentials=credentials,
            timeout=timeout,
        )
    except CallFailed as exc:
        raise ApiError(503, "cannot_place_call", str(exc)) from exc
    return web.json_response(call_resource(server, call), status=201)


# -- bridges ------------------------------------------------------------------
def _answered(call: Call) -> Call:
    if call.state is not CallState.ANSWERED:
        raise ApiError(409, "call_not_answered", f"call {call.call_id!r} is not answered ({call.state.value})")
    return call


def _room_body(server: Node, room: Room) -> dict[str, Any]:
    body = room.to_dict()
    body["calls"] = [c.summary() for c in (server.registry.get(cid) for cid in room.members) if c is not None]
    return body


async def bridge(request: web.Request) -> web.Response:
    server, rooms = _server(request), _rooms(request)
    a = _live_call(server, request.match_info["call_id"])
    other = _str_field(await read_json_object(request, CALL_ID_FIELD), "call_id", required=True)
    if other == a.call_id:
        raise ApiError(409, "bridge_self", "a call cannot be bridged with itself", field="call_id")
    b = _live_call(server, other or "")
    _answered(a), _answered(b)
    ra, rb = rooms.room_of(a.call_id), rooms.room_of(b.call_id)
    if ra is not None and rb is not None and ra is not rb:
        raise ApiError(409, "already_in_room", "both calls are in different rooms; unbridge one first",
                       room_ids=[ra.room_id, rb.room_id])
    room = ra or rb or rooms.create(BRIDGE)
    try:
        rooms.join(room, [a, b], reason="bridge")
    except KeyError as exc:
        if not room.members:
            rooms.delete(room)
        raise ApiError(409, "no_media", f"call {exc.args[0]!r} has no media leg") from exc
    return web.json_response(_room_body(server, room))


async def unbridge(request: web.Request) -> web.Response:
    server, rooms = _server(request), _rooms(request)
    call = _live_call(server, request.match_info["call_id"])
    if rooms.leave(call.call_id, reason="unbridge") is None:
        raise ApiError(409, "not_bridged", f"call {call.call_id!r} is in no room")
    return web.json_response(call_resource(server, call))


# -- rooms --------------------------------------------------------------------
def _room_or_404(request: web.Request) -> Room:
    room = _rooms(request).get(request.match_info["room_id"])
    if room is None:
        raise ApiError(404, "room_not_found", f"no room with id {request.match_info['room_id']!r}")
    return room


async def create_room(request: web.Request) -> web.Response:
    await read_json_object(request, ())  # no options yet: a malformed body or any field is a 400
    room = _rooms(request).create(CONFERENCE)
    return web.json_response(_room_body(_server(request), room), status=201)


async def list_rooms(request: web.Request) -> web.Response:
    server = _server(request)
    return web.json_response({"rooms": [_room_body(server, r) for r in _rooms(request).all()]})


async def get_room(request: web.Request) -> web.Response:
    return web.json_response(_room_body(_server(request), _room_or_404(request)))


async def delete_room(request: web.Request) -> web.Response:
    room = _room_or_404(request)
    _rooms(request).delete(room)
    return web.json_response(_room_body(_server(request), room))


async def join_room(request: web.Request) -> web.Response:
    server, rooms = _server(request), _rooms(request)
    room = _room_or_404(request)
    call = _answered(_live_call(server, _str_field(await read_json_object(request, CALL_ID_FIELD), "call_id", required=True) or ""))
    current = rooms.room_of(call.call_id)
    if current is not None and current is not room:
        raise ApiError(409, "already_in_room", f"call is in room {current.room_id!r}; leave it first",
                       room_id=current.room_id)
    try:
        rooms.join(room, [call], reason="api")
    except KeyError as exc:
        raise ApiError(409, "no_media", "the call has no media leg") from exc
    return web.json_response(_room_body(server, room))


async def leave_room(request: web.Request) -> web.Response:
    server, rooms = _server(request), _rooms(request)
    room = _room_or_404(request)
    call = _call_or_404(server, _str_field(await read_json_object(request, CALL_ID_FIELD), "call_id", required=True) or "")
    if call.call_id not in room.members:
        raise ApiError(409, "not_in_room", f"call {call.call_id!r} is not in this room")
    rooms.leave(call.call_id, reason="api")
    return web.json_response(_room_body(server, room))


# -- wiring -------------------------------------------------------------------
def setup(app: web.Application, server: Node) -> None:
    """Add the routes over the node's RoomRegistry (built by the server: ``server.rooms``)."""
    app[ROOMS_KEY] = server.rooms

    def ringing(type_: str, call: Call) -> None:
        # The native event set has no ringing event for inbound calls (they ring only while an
        # application decides); an outbound call's 180 is news for the application that dialled.
        if type_ == "call.ringing" and call.direction is Direction.OUTBOUND:
            server.events.publish("call.ringing", call.call_id, call.summary())

    server.registry.subscribe(ringing)
    app.add_routes(
        [
            web.post("/v1/calls", create_call),
            web.post("/v1/calls/{call_id}/bridge", bridge),
            web.post("/v1/calls/{call_id}/unbridge", unbridge),
            web.post("/v1/rooms", create_room),
            web.get("/v1/rooms", list_rooms),
            web.get("/v1/rooms/{room_id}", get_room),
            web.delete("/v1/rooms/{room_id}", delete_room),
            web.post("/v1/rooms/{room_id}/join", join_room),
            web.post("/v1/rooms/{room_id}/leave", leave_room),
        ]
    )
