"""Telnyx Call Control DTMF commands: ``gather_using_audio`` / ``gather_using_speak``, ``gather_stop``, ``send_dtmf``.

A gather is the core's play-and-collect (media/collect.py) with Telnyx's rules on top, judged
here when the collect ends:

- ``valid``: between ``minimum_digits`` and ``maximum_digits`` digits, all in ``valid_digits``;
- no digit at all (the prompt played, ``timeout_millis`` passed): the prompt plays again, up to
  ``maximum_tries`` times, then ``timeout``;
- ``invalid``: anything else; ``invalid_audio_url`` / ``invalid_media_name`` plays before the
  prompt is tried again (tries left) or the gather ends ``invalid``;
- ``cancelled`` (``gather_stop``, or a newer gather) and ``call_hangup``.

It ends in one ``call.gather.ended`` webhook (Telnyx's envelope, signed like the others).
Kept apart from telnyx.py so that module stays about playback and call control.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..calls.commands import InvalidCommand, LegUnavailable
from ..events.bus import Delivery, Event
from ..media.collect import MAX_DIGITS, MAX_TIMEOUT_MS, CollectRequest
from ..media.player import PlayRequest, SourceSpec
from . import dtmf_pauses
from .common import iso_z
from .telnyx import PlaybackInfo, TelnyxError, _client_state, _opt_str, ok, parse_speak

if TYPE_CHECKING:
    from .dialect import Dialect
    from .telnyx import TelnyxDialect

KEYS = "0123456789*#ABCD"
DEFAULT_VALID = "0123456789#*"
MAX_TRIES = 10
GATHER_MEMORY = 10_000


@dataclass
class Gather:
    """One gather_using_audio command: the collect it runs now and what its webhook echoes."""

    call_id: str
    request: CollectRequest  # min_digits 0: validity is judged here, against Telnyx's rules
    minimum_digits: int
    valid_digits: str
    maximum_tries: int
    prompt: SourceSpec | None  # None: the plain ``gather`` (no prompt)
    invalid_prompt: SourceSpec | None
    client_state: str | None
    tries: int = 1
    collect_id: str | None = None
    speak: bool = False  # gather_using_speak: the prompt's webhooks are call.speak.*
    overall_ms: int | None = None  # plain gather's timeout_millis: the whole command's limit
    gather_id: str | None = None  # plain gather: echoed in call.gather.ended
    expired: bool = False  # overall_ms passed: the collect was stopped for it
    timer: asyncio.TimerHandle | None = None


def _int(body: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise TelnyxError("10015", f"{name} must be an integer", f"/{name}", status=422)
    if not lo <= value <= hi:
        raise TelnyxError("10033", f"{name} must be between {lo} and {hi}, got {value}", f"/{name}")
    return value


def _keys(body: dict[str, Any], name: str, default: str, max_len: int) -> str:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > max_len or any(c not in KEYS for c in value.upper()):
        raise TelnyxError("90061", f"{name} must be DTMF keys (0-9, *, #, A-D), at most {max_len}", f"/{name}")
    return value.upper()


def _audio(body: dict[str, Any], url_field: str, name_field: str, required: bool) -> SourceSpec | None:
    url, name = _opt_str(body, url_field), _opt_str(body, name_field)
    if url is not None and name is not None:
        raise TelnyxError("10015", f"{url_field} and {name_field} cannot be used together in one request",
                          f"/{name_field}", status=422)
    if url is not None:
        if not url.lower().startswith(("http://", "https://")) or len(url) > 2000:
            raise TelnyxError("10003", f"{url_field} must be an http(s) URL of at most 2000 characters",
                              f"/{url_field}")
        return SourceSpec(url=url)
    if name is not None:
        if not name:
            raise TelnyxError("10015", f"{name_field} must not be empty", f"/{name_field}", status=422)
        return SourceSpec(media=name)
    if required:
        raise TelnyxError("10004", f"one of {url_field} or {name_field} is required", f"/{url_field}")
    return None


def parse_gather(call_id: str, body: dict[str, Any]) -> Gather:
    """``gather_using_audio`` body → a Gather (TelnyxError naming the field for bad values)."""
    prompt = _audio(body, "audio_url", "media_name", required=True)
    assert prompt is not None
    invalid_prompt = _audio(body, "invalid_audio_url", "invalid_media_name", required=False)
    return _gather(call_id, body, prompt, invalid_prompt)


def parse_gather_speak(call_id: str, body: dict[str, Any]) -> Gather:
    """``gather_using_speak`` body → a Gather whose prompts are speech sources (``speak``'s own parsing)."""
    speak_fields: dict[str, Any] = {k: body[k] for k in ("payload", "voice", "payload_type", "service_level", "language")
                    if k in body}
    prompt = parse_speak(speak_fields)[0].sources[0]
    invalid_prompt = None
    if body.get("invalid_payload") is not None:
        try:
            invalid_prompt = parse_speak({**speak_fields, "payload": body["invalid_payload"]})[0].sources[0]
        except TelnyxError as exc:
            if exc.pointer == "/payload":
                exc.pointer = "/invalid_payload"
            raise
    g = _gather(call_id, body, prompt, invalid_prompt)
    g.speak = True
    return g


def parse_plain_gather(call_id: str, body: dict[str, Any]) -> Gather:
    """``gather`` body: no prompt, ``initial_timeout_millis`` for the first key, ``timeout_millis`` for it all."""
    gather_id = _opt_str(body, "gather_id")
    if gather_id is not None and not 0 < len(gather_id) <= 200:
        raise TelnyxError("90061", "gather_id must be 1-200 characters", "/gather_id")
    g = _gather(call_id, {k: v for k, v in body.items() if k not in ("timeout_millis", "maximum_tries")}, None,
                None)
    g.request.first_digit_timeout_ms = _int(body, "initial_timeout_millis", 5000, 1, MAX_TIMEOUT_MS)
    g.overall_ms = _int(body, "timeout_millis", 60_000, 1, MAX_TIMEOUT_MS)
    g.maximum_tries = 1
    g.gather_id = gather_id or str(uuid.uuid4())
    return g


def _gather(call_id: str, body: dict[str, Any], prompt: SourceSpec | None,
            invalid_prompt: SourceSpec | None) -> Gather:
    minimum = _int(body, "minimum_digits", 1, 1, MAX_DIGITS)
    maximum = _int(body, "maximum_digits", MAX_DIGITS, 1, MAX_DIGITS)
    if minimum > maximum:
        raise TelnyxError("10033", f"minimum_digits ({minimum}) is more than maximum_digits ({maximum})",
                          "/minimum_digits")
    terminating = _keys(body, "terminating_digit", "#", 1)
    valid = _keys(body, "valid_digits", DEFAULT_VALID, len(KEYS))
    if not valid:
        raise TelnyxError("90061", "valid_digits must name at least one key", "/valid_digits")
    request = CollectRequest(
        prompt=None, min_digits=0, max_digits=maximum, terminators=terminating,
        first_digit_timeout_ms=_int(body, "timeout_millis", 60_000, 1, MAX_TIMEOUT_MS),
        inter_digit_timeout_ms=_int(body, "inter_digit_timeout_millis", 5000, 1, MAX_TIMEOUT_MS),
        barge_in=True, command_id=_opt_str(body, "command_id"),
    )
    return Gather(call_id, request, minimum, valid, _int(body, "maximum_tries", 3, 1, MAX_TRIES), prompt,
                  invalid_prompt, _client_state(body))


def judge(g: Gather, digits: str, reason: str) -> str | None:
    """The Telnyx status of a finished collect, or None: try again (no input or invalid, tries left)."""
    if reason == "call_hangup":
        return "call_hangup"
    if reason == "stopped":
        return "timeout" if g.expired else "cancelled"
    if not digits and reason == "timeout":
        return None if g.tries < g.maximum_tries else "timeout"
    if g.minimum_digits <= len(digits) <= g.request.max_digits and all(c in g.valid_digits for c in digits):
        return "valid"
    return None if g.tries < g.maximum_tries else "invalid"


class TelnyxIvr:
    def __init__(self, dialect: TelnyxDialect) -> None:
        self.d = dialect
        self.server = dialect.server
        self._gathers: dict[str, Gather] = {}  # collect id -> its gather

    # -- commands ---------------------------------------------------------------------------------
    async def gather_using_audio(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        return await self._gather(request, parse_gather(request.match_info["call_control_id"], body))

    async def gather_using_speak(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        return await self._gather(request, parse_gather_speak(request.match_info["call_control_id"], body))

    async def gather(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        return await self._gather(request, parse_plain_gather(request.match_info["call_control_id"], body))

    async def _gather(self, request: web.Request, g: Gather) -> web.Response:
        call_id = g.call_id
        self.d._call(call_id)
        self.d._remember_state(call_id, g.client_state)
        if g.client_state is None:
            g.client_state = self.d._call_state.get(call_id)
        self._start(g, [g.prompt] if g.prompt is not None else [])
        if g.overall_ms is not None:
            g.timer = asyncio.get_running_loop().call_later(g.overall_ms / 1000, self._expire, g)
        return ok()

    def _expire(self, g: Gather) -> None:
        g.timer = None
        if g.collect_id is not None and g.collect_id in self._gathers:
            g.expired = True
            self.server.media.ivr.stop_collect(g.collect_id)

    def _start(self, g: Gather, sources: list[SourceSpec]) -> None:
        req = replace(g.request, prompt=PlayRequest(sources=[replace(s) for s in sources]) if sources else None)
        try:
            collect = self.server.commands.collect(g.call_id, req)
        except LegUnavailable as exc:
            raise TelnyxError("90018", "This call has no media any more.", "/call_control_id") from exc
        except InvalidCommand as exc:
            raise TelnyxError("90061", str(exc), "/audio_url") from exc
        g.collect_id = collect.id
        for pid in collect.prompt_ids:  # the prompt's playback webhooks echo the client_state and first source
            first = sources[0]
            self.d._playbacks[pid] = PlaybackInfo(g.client_state, first.url, first.media, False, speak=g.speak)
        self._gathers[collect.id] = g
        while len(self._gathers) > GATHER_MEMORY:
            self._gathers.pop(next(iter(self._gathers)))

    async def gather_stop(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        """Ends the running gather ``cancelled`` (nothing running: still ok, as Telnyx answers)."""
        call_id = request.match_info["call_control_id"]
        client_state = _client_state(body)
        self.d._call(call_id)
        self.d._remember_state(call_id, client_state)
        for cid, g in list(self._gathers.items()):
            if g.call_id == call_id:
                self.server.media.ivr.stop_collect(cid)
        return ok()

    async def send_dtmf(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        """``{"digits", "duration_millis"}`` → the core's DTMF out (RFC 4733, or tones without telephone-event)."""
        call_id = request.match_info["call_control_id"]
        digits = body.get("digits")
        if digits is None:
            raise TelnyxError("10004", "digits is required", "/digits")
        if not isinstance(digits, str) or not digits:
            raise TelnyxError("90061", "digits must be a non-empty string of DTMF keys", "/digits")
        if not dtmf_pauses.valid(digits):
            raise TelnyxError("90061", "digits must be 1-64 DTMF keys (0-9, A-D, *, #), w (0.5 s) and W (1 s) "
                                       "pauses between them", "/digits")
        duration = _int(body, "duration_millis", 250, 100, 500)
        client_state = _client_state(body)
        self.d._call(call_id)
        self.d._remember_state(call_id, client_state)
        try:
            dtmf_pauses.sender(self.server).start(call_id, digits, duration)
        except LegUnavailable as exc:
            raise TelnyxError("90018", "This call has no media any more.", "/call_control_id") from exc
        except InvalidCommand as exc:
            raise TelnyxError("90061", str(exc), "/digits", status=exc.status) from exc
        return ok()

    # -- events -----------------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        """Bus listener: a gather's collect ended → try again or ``call.gather.ended``."""
        if event.type != "collect.ended":
            return
        g = self._gathers.pop(str(event.data.get("id")), None)
        if g is None:
            return
        digits, reason = str(event.data.get("digits") or ""), str(event.data.get("reason") or "")
        status = judge(g, digits, reason)
        if status is None:
            g.tries += 1
            prompt = [g.prompt] if g.prompt is not None else []
            sources = prompt if not digits or g.invalid_prompt is None else [g.invalid_prompt, *prompt]
            # after the bus is done with this event: the new collect's own events come after it
            asyncio.get_running_loop().call_soon(self._retry, g, sources)
            return
        self._ended(g, digits, status)

    def _retry(self, g: Gather, sources: list[SourceSpec]) -> None:
        try:
            self._start(g, sources)
        except TelnyxError:  # the call went away meanwhile
            self._ended(g, "", "call_hangup")

    def _ended(self, g: Gather, digits: str, status: str) -> None:
        if g.timer is not None:
            g.timer.cancel()
            g.timer = None
        d = self.d
        url = d._call_webhook.get(g.call_id) or d.webhook_url
        if not url or d.sink is None:
            return
        call = self.server.registry.get(g.call_id)
        payload = d._ids(g.call_id, call.sip_call_id if call else None)
        payload.update({"client_state": g.client_state, "from": call.from_uri if call else None,
                        "to": call.to_uri if call else None, "digits": digits, "status": status})
        if g.gather_id is not None:
            payload["gather_id"] = g.gather_id
        data = {"record_type": "event", "event_type": "call.gather.ended", "id": str(uuid.uuid4()),
                "occurred_at": iso_z(time.time()),
                "payload": payload}
        spec = {"url": url, "data": data}
        d.sink.send(Delivery(url=url, build=d.build(spec), key=g.call_id, label="call.gather.ended", spec=spec))


def setup(unit: Dialect, dialect: TelnyxDialect) -> TelnyxIvr:
    """Routes for the three commands (before the dialect's catch-all) and the collect listener."""
    ivr = TelnyxIvr(dialect)
    unit.on_event.append(ivr.on_event)
    r = dialect.route
    actions = "/v2/calls/{call_control_id}/actions/"
    unit.add_routes([
        web.post(actions + "gather", r(ivr.gather)),
        web.post(actions + "gather_using_audio", r(ivr.gather_using_audio)),
        web.post(actions + "gather_using_speak", r(ivr.gather_using_speak)),
        web.post(actions + "gather_stop", r(ivr.gather_stop)),
        web.post(actions + "send_dtmf", r(ivr.send_dtmf)),
    ])
    return ivr


OPENAPI_ROUTES = [
    {"method": "POST", "path": "/v2/calls/{call_control_id}/actions/gather",
     "maps_to": "POST /v1/calls/{call_id}/collect without a prompt (timeout_millis: the whole gather)"},
    {"method": "POST", "path": "/v2/calls/{call_control_id}/actions/gather_using_audio",
     "maps_to": "POST /v1/calls/{call_id}/collect (prompt replayed up to maximum_tries; call.gather.ended)"},
    {"method": "POST", "path": "/v2/calls/{call_control_id}/actions/gather_using_speak",
     "maps_to": "POST /v1/calls/{call_id}/collect with a speak prompt (as gather_using_audio; call.gather.ended)"},
    {"method": "POST", "path": "/v2/calls/{call_control_id}/actions/gather_stop",
     "maps_to": "DELETE /v1/collects/{collect_id}"},
    {"method": "POST", "path": "/v2/calls/{call_control_id}/actions/send_dtmf", "maps_to": "POST /v1/calls/{call_id}/dtmf"},
]
