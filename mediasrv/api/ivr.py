"""Native IVR routes: play-and-collect (``/v1/calls/{id}/collect``, ``/v1/collects/{id}``) and DTMF out
(``/v1/calls/{id}/dtmf``).  Validation only; media/ivr.py does the work."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..calls.commands import CommandError
from ..calls.registry import CallState
from ..media.collect import MAX_DIGITS, MAX_TIMEOUT_MS, Collect, CollectRequest
from .errors import ApiError, check_fields, command_error, read_json_object
from .native import _live_call, _server, parse_play_request

KEYS = "0123456789*#ABCD"


def _int(body: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "invalid_field", f"{name} must be an integer", field=name)
    if not lo <= value <= hi:
        raise ApiError(422, "out_of_range", f"{name} must be between {lo} and {hi}, got {value}", field=name)
    return value


COLLECT_FIELDS = frozenset({"prompt", "max_digits", "min_digits", "terminator", "barge_in", "command_id",
                            "first_digit_timeout_ms", "inter_digit_timeout_ms"})
DTMF_FIELDS = frozenset({"digits", "duration_ms"})


def parse_collect(body: dict[str, Any]) -> CollectRequest:
    check_fields(body, COLLECT_FIELDS)
    prompt_body = body.get("prompt")
    prompt = None
    if prompt_body is not None:
        if not isinstance(prompt_body, dict):
            raise ApiError(400, "invalid_field", "prompt must be an object (a playback's source fields)", field="prompt")
        for name in ("target", "target_legs", "overlay", "barge_in", "barge_in_stops"):
            if name in prompt_body:
                raise ApiError(422, "invalid_field", f"prompt.{name} is not allowed: the collect decides it",
                               field=f"prompt.{name}")
        try:
            prompt = parse_play_request(prompt_body)
        except ApiError as exc:
            field = exc.details.get("field")
            exc.details["field"] = f"prompt.{field}" if field else "prompt"
            raise
    max_digits = _int(body, "max_digits", MAX_DIGITS, 1, MAX_DIGITS)
    min_digits = _int(body, "min_digits", 1, 0, MAX_DIGITS)
    if min_digits > max_digits:
        raise ApiError(422, "out_of_range", f"min_digits ({min_digits}) is more than max_digits ({max_digits})",
                       field="min_digits")
    terminator = body.get("terminator", "#")
    if terminator is None:
        terminator = ""
    if not isinstance(terminator, str) or len(terminator) > len(KEYS) or any(c not in KEYS for c in terminator.upper()):
        raise ApiError(422, "invalid_field", "terminator must be a string of DTMF keys (0-9, *, #, A-D) or \"\"",
                       field="terminator")
    barge_in = body.get("barge_in", True)
    if not isinstance(barge_in, bool):
        raise ApiError(400, "invalid_field", "barge_in must be true or false", field="barge_in")
    command_id = body.get("command_id")
    if command_id is not None and (not isinstance(command_id, str) or not 0 < len(command_id) <= 200):
        raise ApiError(400, "invalid_field", "command_id must be a string of 1-200 characters", field="command_id")
    return CollectRequest(
        prompt=prompt, min_digits=min_digits, max_digits=max_digits, terminators=terminator.upper(),
        first_digit_timeout_ms=_int(body, "first_digit_timeout_ms", 5000, 1, MAX_TIMEOUT_MS),
        inter_digit_timeout_ms=_int(body, "inter_digit_timeout_ms", 5000, 1, MAX_TIMEOUT_MS),
        barge_in=barge_in, command_id=command_id,
    )


def _resource(server: Any, c: Collect) -> dict[str, Any]:
    out = c.to_dict()
    out["prompt_playbacks"] = sorted(c.prompt_ids)
    return out


async def start_collect(request: web.Request) -> web.Response:
    server = _server(request)
    call = _live_call(server, request.match_info["call_id"])
    req = parse_collect(await read_json_object(request))
    if call.state is not CallState.ANSWERED:
        raise ApiError(409, "call_not_answered", "the call must be answered before collecting digits")
    try:
        collect = server.commands.collect(call.call_id, req)
    except CommandError as exc:
        raise command_error(exc) from exc
    return web.json_response(_resource(server, collect), status=201)


def _collect_or_404(server: Any, collect_id: str) -> Collect:
    c = server.media.ivr.get_collect(collect_id)
    if c is None:
        raise ApiError(404, "collect_not_found", "no collect with that id")
    return c


async def get_collect(request: web.Request) -> web.Response:
    server = _server(request)
    return web.json_response(_resource(server, _collect_or_404(server, request.match_info["collect_id"])))


async def stop_collect(request: web.Request) -> web.Response:
    server = _server(request)
    c = _collect_or_404(server, request.match_info["collect_id"])
    stopped = server.media.ivr.stop_collect(c.id)
    body = _resource(server, c)
    body["stopped_now"] = stopped
    return web.json_response(body)


async def send_dtmf(request: web.Request) -> web.Response:
    """``{"digits": "123#", "duration_ms": 100}``: RFC 4733 if the far end offered telephone-event, else tones."""
    server = _server(request)
    call = _live_call(server, request.match_info["call_id"])
    body = await read_json_object(request, DTMF_FIELDS)
    digits = body.get("digits")
    if not isinstance(digits, str) or not digits:
        raise ApiError(400, "missing_field" if digits is None else "invalid_field",
                       "digits must be a string of DTMF keys", field="digits")
    if len(digits) > 64 or any(c not in KEYS for c in digits.upper()):
        raise ApiError(422, "invalid_field", "digits must be 1-64 DTMF keys (0-9, *, #, A-D)", field="digits")
    duration_ms = _int(body, "duration_ms", 100, 40, 2000)
    if call.state is not CallState.ANSWERED:
        raise ApiError(409, "call_not_answered", "the call must be answered before sending digits")
    try:
        sender = server.commands.send_dtmf(call.call_id, digits, duration_ms)
    except CommandError as exc:
        raise command_error(exc) from exc
    return web.json_response({"call_id": call.call_id, "digits": sender.digits, "duration_ms": duration_ms,
                              "method": sender.method, "packets": sender.packets_total}, status=202)


def add_routes(app: web.Application) -> None:
    app.add_routes([
        web.post("/v1/calls/{call_id}/collect", start_collect),
        web.get("/v1/collects/{collect_id}", get_collect),
        web.delete("/v1/collects/{collect_id}", stop_collect),
        web.post("/v1/calls/{call_id}/dtmf", send_dtmf),
    ])
