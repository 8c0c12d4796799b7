"""Telnyx Call Control dialect (``/v2``): the official ``telnyx`` SDK works against mediasrv unmodified.

Only translation happens here: a Telnyx command becomes a :class:`PlayRequest` or a call
command on the server's registry, SIP user agent and media plane; internal events become
Telnyx webhooks (their envelope, ``client_state`` echoed, Ed25519-signed); internal
errors become Telnyx's ``{"errors": [...]}`` with its codes.  What the SDK sends and
accepts is recorded in ``shared/vendor-sdk-wire.md`` section 1.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..calls.commands import (
    CallEnded,
    CallNotAnswered,
    CommandError,
    InvalidCommand,
    LegUnavailable,
    NoSuchCall,
    NoSuchPlayback,
)
from ..calls.registry import Call, CallState, Direction
from ..calls.rooms import BRIDGE
from ..content.synth import SpeechInputError, SpeechSpec, check
from ..events.bus import Build, Delivery, Event, WebhookSink
from ..media.player import PlayRequest, SourceSpec
from .common import MAX_LOOP, BadLoop, iso_z, same
from .common import parse_loop as _parse_loop
from .dialect import Handler
from .errors import BodyError, parse_json_object
from .signing import Ed25519Signer
from .voices import cloud_voice, espeak_voice

if TYPE_CHECKING:
    from ..nodeview import Node

log = logging.getLogger("mediasrv.telnyx")

COMMAND_MEMORY = 20_000  # command_ids remembered (per call), oldest forgotten first
CALL_STATE_TTL_S = 300.0  # how long a call's client_state outlives the call (late playback events)

# code -> (HTTP status, title) as Telnyx sends them
ERRORS: dict[str, tuple[int, str]] = {
    "10004": (422, "Missing required parameter"),
    "10003": (422, "Invalid URL"),
    "10005": (404, "Resource not found"),
    "10009": (401, "Authentication failed"),
    "10015": (400, "Bad Request"),
    "10032": (422, "Invalid enumerated value"),
    "10033": (422, "Value out of range"),
    "90015": (422, "Invalid Call Control ID"),
    "90018": (422, "Call has already ended"),
    "90034": (422, "Call not answered yet"),
    "90061": (422, "Invalid parameter value"),
}


class TelnyxError(Exception):
    """A failed command in Telnyx's error shape."""

    def __init__(self, code: str, detail: str, pointer: str | None = None, status: int | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.status, self.title = ERRORS[code]
        if status is not None:
            self.status = status
        self.detail = detail
        self.pointer = pointer

    def to_response(self) -> web.Response:
        err: dict[str, Any] = {"code": self.code, "title": self.title, "detail": self.detail}
        if self.pointer:
            err["source"] = {"pointer": self.pointer}
        err["meta"] = {"url": f"https://developers.telnyx.com/docs/overview/errors/{self.code}"}
        # 4xx are final: tell the SDK not to retry (it would for 408/409/429)
        return web.json_response({"errors": [err]}, status=self.status, headers={"x-should-retry": "false"})


def telnyx_error(exc: CommandError) -> TelnyxError:
    """The command service's domain error as Telnyx answers it."""
    if isinstance(exc, NoSuchCall):
        return TelnyxError("90015", "The call_control_id provided was not valid.", "/call_control_id")
    if isinstance(exc, CallEnded):
        return TelnyxError("90018", "This call is no longer active and can't receive commands.", "/call_control_id")
    if isinstance(exc, CallNotAnswered):
        return TelnyxError("90034", "This call can't receive this command because it has not been answered yet.",
                           "/call_control_id")
    if isinstance(exc, InvalidCommand):
        return TelnyxError("90061", exc.message, PLAY_ERROR_POINTERS.get(exc.reason))
    if isinstance(exc, NoSuchPlayback):
        return TelnyxError("10005", exc.message)
    return TelnyxError("90018", "This call has no media any more.", "/call_control_id")  # NoSuchLeg


def ok() -> web.Response:
    """The one success answer the SDK parses: 200 with ``{"data": {"result": "ok"}}`` (never 204/empty)."""
    return web.json_response({"data": {"result": "ok"}})


@dataclass
class PlaybackInfo:
    """What a Telnyx playback webhook echoes that the internal playback does not carry."""

    client_state: str | None
    media_url: str | None
    media_name: str | None
    overlay: bool
    speak: bool = False  # a speak command: its webhooks are call.speak.started / call.speak.ended


# -- request validation ------------------------------------------------------------------------
def _opt_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TelnyxError("10015", f"{name} must be a string", f"/{name}")
    return value


def _opt_bool(body: dict[str, Any], name: str, default: bool | None = None) -> bool | None:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise TelnyxError("10015", f"{name} must be a boolean", f"/{name}")
    return value


def _enum(body: dict[str, Any], name: str, allowed: tuple[str, ...], default: str | None = None) -> str | None:
    value = body.get(name)
    if value is None:
        return default
    if value not in allowed:
        raise TelnyxError("10032", f"{name} must be one of {', '.join(allowed)}; got {value!r}", f"/{name}")
    return str(value)


def parse_loop(value: Any) -> int | None:
    """Telnyx ``loop``: an integer 1..100 (a digit string too) or ``"infinity"`` (None = forever)."""
    try:
        return _parse_loop(value, digit_strings=True)
    except BadLoop as exc:
        if exc.out_of_range:
            raise TelnyxError("10033", str(exc), "/loop") from None
        raise TelnyxError("10032", f'loop must be an integer between 1 and {MAX_LOOP} or "infinity"', "/loop") from None


def _client_state(body: dict[str, Any]) -> str | None:
    value = _opt_str(body, "client_state")
    if value is not None:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise TelnyxError("10015", "client_state must be a valid Base64 string", "/client_state") from exc
    return value


def parse_playback_start(body: dict[str, Any]) -> tuple[PlayRequest, PlaybackInfo]:
    """``playback_start`` body → the internal PlayRequest and what its webhooks echo."""
    audio_url = _opt_str(body, "audio_url")
    media_name = _opt_str(body, "media_name")
    content_b64 = _opt_str(body, "playback_content")
    given = [n for n, v in (("audio_url", audio_url), ("media_name", media_name), ("playback_content", content_b64))
             if v is not None]
    if not given:
        raise TelnyxError("10004", "one of audio_url, media_name or playback_content is required", "/audio_url")
    if len(given) > 1:
        raise TelnyxError("10015", f"{' and '.join(given)} cannot be used together in one request", f"/{given[1]}",
                          status=422)
    audio_type = _enum(body, "audio_type", ("mp3", "wav"))
    cache = _opt_bool(body, "cache_audio", True)
    if audio_url is not None:
        if not audio_url.lower().startswith(("http://", "https://")) or len(audio_url) > 2000:
            raise TelnyxError("10003", "audio_url must be an http(s) URL of at most 2000 characters", "/audio_url")
        spec = SourceSpec(url=audio_url, audio_type=audio_type, cache=cache)
    elif media_name is not None:
        if not media_name:
            raise TelnyxError("10015", "media_name must not be empty", "/media_name", status=422)
        spec = SourceSpec(media=media_name, audio_type=audio_type)
    else:
        try:
            content = base64.b64decode(content_b64 or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise TelnyxError("10015", "playback_content must be Base64", "/playback_content", status=422) from exc
        if not content:
            raise TelnyxError("10015", "playback_content is empty", "/playback_content", status=422)
        spec = SourceSpec(content=content, audio_type=audio_type)
    loop = parse_loop(body.get("loop"))
    overlay = bool(_opt_bool(body, "overlay", False))
    stop = _enum(body, "stop", ("current", "all"))
    target = _enum(body, "target_legs", ("self", "opposite", "both"), "self")
    if overlay and target != "self":
        raise TelnyxError("10032", "with overlay, target_legs must be self", "/target_legs")
    client_state = _client_state(body)
    command_id = _opt_str(body, "command_id")
    request = PlayRequest(
        sources=[spec], loop=loop, overlay=overlay, stop=stop, target=target or "self", command_id=command_id
    )
    return request, PlaybackInfo(client_state, audio_url, media_name, overlay)


SPEAK_LANGUAGE = "en-US"
SPEAK_FIELDS = {"text": "/payload", "ssml": "/payload", "voice": "/voice", "rate": "/voice"}


def parse_speak(body: dict[str, Any]) -> tuple[PlayRequest, PlaybackInfo]:
    """``speak`` body → a PlayRequest with one speech source (voice table: api/voices.py)."""
    payload = _opt_str(body, "payload")
    if payload is None:
        raise TelnyxError("10004", "payload is required", "/payload")
    voice_name = _opt_str(body, "voice")
    if voice_name is None:
        raise TelnyxError("10004", "voice is required", "/voice")
    payload_type = _enum(body, "payload_type", ("text", "ssml"), "text")
    _enum(body, "service_level", ("basic", "premium"))
    language = _opt_str(body, "language") or SPEAK_LANGUAGE
    if voice_name.lower() in ("female", "male"):
        voice = espeak_voice(language, voice_name)
        if voice is None:
            raise TelnyxError("10032", f"language {language[:32]!r} has no voice on this server", "/language")
    else:
        voice = cloud_voice(voice_name)
        if voice is None:
            raise TelnyxError("10032", f"voice {voice_name[:64]!r} has no equivalent on this server: use female, "
                                       "male, a Polly.* or an Azure neural voice of the table", "/voice")
    try:
        speech = check(SpeechSpec(text=payload, voice=voice, ssml=payload_type == "ssml"))
    except SpeechInputError as exc:
        raise TelnyxError("10015" if exc.status == 400 else "90061", exc.message,
                          SPEAK_FIELDS.get(exc.field, "/payload"), status=422) from exc
    target = _enum(body, "target_legs", ("self", "opposite", "both"), "self")
    request = PlayRequest(sources=[SourceSpec(speech=speech)], loop=parse_loop(body.get("loop")),
                          stop=_enum(body, "stop", ("current", "all")), target=target or "self",
                          command_id=_opt_str(body, "command_id"))
    return request, PlaybackInfo(_client_state(body), None, None, False, speak=True)


# -- the dialect -------------------------------------------------------------------------------
BodyHandler = Callable[[web.Request, dict[str, Any]], Awaitable[web.Response]]

# the core's reasons for refusing a play command → the Telnyx field to point at
PLAY_ERROR_POINTERS = {
    "nothing_playing": "/overlay",
    "no_opposite_leg": "/target_legs",
    "invalid_target": "/target_legs",
    "invalid_stop": "/stop",
    "out_of_range": "/loop",
    "no_source": "/audio_url",
}

HANGUP_CAUSES = {
    "normal_clearing": "normal_clearing",
    "cancelled": "originator_cancel",
    "rejected": "call_rejected",
    "call_rejected": "call_rejected",
    "decline": "call_rejected",
    "declined": "call_rejected",
    "incompatible_media": "call_rejected",
    "busy": "user_busy",
    "timeout": "timeout",
    "no_answer": "no_answer",
    "rtp_timeout": "timeout",
    "not_found": "not_found",
}


# reject's cause -> the core's hangup cause, whose refusal is 603 / 486 / 404 / 480 to the caller
REJECT_CAUSES = {
    "CALL_REJECTED": "call_rejected",
    "USER_BUSY": "busy",
    "NOT_FOUND": "not_found",
    "TEMPORARILY_UNAVAILABLE": "temporarily_unavailable",
}


class TelnyxDialect:
    def __init__(
        self, server: Node, api_key: str | None, webhook_url: str | None, signer: Ed25519Signer | None
    ) -> None:
        self.server = server
        self.api_key = api_key
        self.webhook_url = webhook_url
        self.signer = signer
        self._call_state: dict[str, str] = {}  # call_id -> client_state of the latest command
        self._call_webhook: dict[str, str] = {}  # call_id -> webhook_url given on answer
        self._playbacks: dict[str, PlaybackInfo] = {}
        self._commands: OrderedDict[tuple[str, str], asyncio.Future[None]] = OrderedDict()
        self.sink: WebhookSink | None = None  # set by setup(): webhooks made outside render (call.gather.ended)

    # -- plumbing ----------------------------------------------------------------------------
    def authorized(self, request: web.Request) -> bool:
        if not self.api_key:
            return False
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and same(value.strip(), self.api_key)

    # behind its error shape (mediasrv/api/dialect.py error_shape): the dialect's auth middleware
    async def auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Auth first: a 401 says nothing about the call."""
        if not self.authorized(request):
            raise TelnyxError("10009", "The required authentication headers were either invalid or not "
                                       "included in the request.")
        return await handler(request)

    def route(self, handler: BodyHandler, action: bool = True) -> Handler:
        """The body, then command_id dedup (behind the dialect's auth)."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            body = await _read_body(request) if action else {}
            command_id = body.get("command_id") if action else None
            if command_id is None:
                return await handler(request, body)
            if not isinstance(command_id, str):
                raise TelnyxError("10015", "command_id must be a string", "/command_id")
            return await self._once(request, body, command_id, handler)

        return wrapped

    async def _once(self, request: web.Request, body: dict[str, Any], command_id: str,
                    handler: BodyHandler) -> web.Response:
        """A command_id seen before on this call returns the original result and does nothing again."""
        key = (request.match_info.get("call_control_id", ""), command_id)
        prior = self._commands.get(key)
        if prior is not None:
            await asyncio.shield(prior)  # a retry racing the original waits for it
            return ok()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._commands[key] = fut
        while len(self._commands) > COMMAND_MEMORY:
            self._commands.popitem(last=False)
        try:
            response = await handler(request, body)
        except BaseException as exc:
            self._commands.pop(key, None)  # a failed command did nothing: it may be sent again
            if isinstance(exc, Exception):
                fut.set_exception(exc)  # a racing retry gets the same error
                fut.exception()  # retrieved: no "never retrieved" warning when nobody raced it
            else:
                fut.cancel()
            raise
        fut.set_result(None)
        return response

    def _call(self, call_id: str, answered: bool = True) -> Call:
        try:
            return self.server.commands.live_call(call_id, answered=answered)
        except CommandError as exc:
            raise telnyx_error(exc) from None

    def _remember_state(self, call_id: str, client_state: str | None) -> None:
        if client_state is not None:
            self._call_state[call_id] = client_state

    # -- commands ----------------------------------------------------------------------------
    async def speak(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        """``speak``: text or SSML through the speech source, with call.speak.* webhooks."""
        return await self.playback_start(request, body, parse_speak)

    async def playback_start(self, request: web.Request, body: dict[str, Any],
                             parse: Callable[[dict[str, Any]], tuple[PlayRequest, PlaybackInfo]] | None = None,
                             ) -> web.Response:
        call_id = request.match_info["call_control_id"]
        play, info = (parse or parse_playback_start)(body)
        self._call(call_id)
        self._remember_state(call_id, info.client_state)
        if info.client_state is None:
            info.client_state = self._call_state.get(call_id)
        try:
            playbacks = self.server.commands.play(call_id, play)
        except LegUnavailable as exc:
            raise TelnyxError("90018", "This call has no media any more.", "/call_control_id") from exc
        except InvalidCommand as exc:  # the core refuses (e.g. an overlay with nothing playing, no opposite leg)
            raise telnyx_error(exc) from exc
        for pb in playbacks:
            self._playbacks[pb.id] = info
        return ok()

    async def playback_stop(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        call_id = request.match_info["call_control_id"]
        which = _enum(body, "stop", ("current", "all"), "all") or "all"
        overlay = bool(_opt_bool(body, "overlay", False))
        client_state = _client_state(body)
        self._call(call_id)
        self._remember_state(call_id, client_state)
        commands = self.server.commands
        if overlay and which == "current":  # the oldest overlay; "all" empties the overlay queue
            for pb in self.server.media.overlays_for(call_id)[:1]:
                commands.stop_playback(pb.id, by="api")
        else:
            commands.stop_playbacks(call_id, which, by="api", overlay=overlay)
        return ok()

    async def answer(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        call_id = request.match_info["call_control_id"]
        client_state = _client_state(body)
        webhook_url = _opt_str(body, "webhook_url")
        if webhook_url is not None and not webhook_url.lower().startswith(("http://", "https://")):
            raise TelnyxError("10003", "webhook_url must be an http(s) URL", "/webhook_url")
        call = self._call(call_id, answered=False)
        self._remember_state(call_id, client_state)
        if webhook_url:
            self._call_webhook[call_id] = webhook_url
        if call.state is CallState.ANSWERED:
            return ok()  # answered already (auto-answer): nothing left to do
        try:
            await self.server.sip.answer(call_id)
        except (RuntimeError, KeyError) as exc:
            raise TelnyxError("90018", f"The call can't be answered: {exc}", "/call_control_id") from exc
        return ok()

    async def hangup(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        call_id = request.match_info["call_control_id"]
        client_state = _client_state(body)
        self._call(call_id, answered=False)
        self._remember_state(call_id, client_state)
        await self.server.sip.hangup(call_id, cause="normal_clearing", by="api")
        return ok()

    async def reject(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        """Refuse a ringing inbound call with the SIP final response ``cause`` names (the core's hangup does it)."""
        call_id = request.match_info["call_control_id"]
        if body.get("cause") is None:
            raise TelnyxError("10004", "cause is required", "/cause")
        cause = _enum(body, "cause", tuple(REJECT_CAUSES)) or ""
        client_state = _client_state(body)
        call = self._call(call_id, answered=False)
        if call.state is CallState.ANSWERED:
            raise TelnyxError("90018", "This call has already been answered and can't be rejected; use hangup.",
                              "/call_control_id")
        if call.direction is not Direction.INBOUND:
            raise TelnyxError("90061", "Only an incoming call can be rejected; use hangup for an outgoing call.",
                              "/call_control_id")
        self._remember_state(call_id, client_state)
        await self.server.sip.hangup(call_id, cause=REJECT_CAUSES[cause], by="api")
        return ok()

    async def bridge(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        """Connect two answered calls through the node's RoomRegistry (the native bridge's core).

        Telnyx moves a call that is bridged elsewhere unless ``prevent_double_bridge``; a bridge
        is a new two-party room (the old one dissolves when one leg is left).
        """
        call_id = request.match_info["call_control_id"]
        other_id = _opt_str(body, "call_control_id")
        if not other_id:
            raise TelnyxError("10004", "call_control_id of the call to bridge with is required", "/call_control_id")
        client_state = _client_state(body)
        prevent_double = bool(_opt_bool(body, "prevent_double_bridge", False))
        a = self._call(call_id)
        if other_id == call_id:
            raise TelnyxError("90061", "a call cannot be bridged with itself", "/call_control_id")
        b = self.server.registry.get(other_id)
        if b is None or b.state is CallState.ENDED:
            raise TelnyxError("90018" if b else "90015", "the call to bridge with is not active", "/call_control_id")
        if b.state is not CallState.ANSWERED:
            raise TelnyxError("90034", "the call to bridge with has not been answered yet", "/call_control_id")
        rooms = self.server.rooms
        ra, rb = rooms.room_of(a.call_id), rooms.room_of(b.call_id)
        if ra is not None and ra is rb:
            self._remember_state(call_id, client_state)
            return ok()  # already connected to each other
        if prevent_double and rb is not None:
            raise TelnyxError("90061", "the call to bridge with is already bridged (prevent_double_bridge)",
                              "/prevent_double_bridge")
        self._remember_state(call_id, client_state)
        room = rooms.create(BRIDGE)
        try:
            rooms.join(room, [a, b], reason="bridge")
        except KeyError as exc:
            rooms.delete(room)
            raise TelnyxError("90018", "a call to bridge has no media any more", "/call_control_id") from exc
        return ok()

    async def public_key(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        assert self.signer is not None  # authorized implies enabled, which made the key
        return web.json_response({"data": {"public_key": self.signer.public_key_b64}})

    async def not_found(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        raise TelnyxError("10005", f"{request.method} {request.path} is not a route mediasrv serves")

    # -- webhooks ----------------------------------------------------------------------------
    EVENT_TYPES = {
        "call.initiated": "call.initiated",
        "call.answered": "call.answered",
        "call.hangup": "call.hangup",
        "call.bridged": "call.bridged",
        "playback.started": "call.playback.started",
        "playback.ended": "call.playback.ended",
        "dtmf.received": "call.dtmf.received",
    }

    def render(self, event: Event) -> Delivery | None:
        """An internal event → a signed Telnyx webhook (or None: not a Telnyx event / nowhere to send)."""
        event_type = self.EVENT_TYPES.get(event.type)
        if event_type is None or not self.api_key or self.signer is None:
            return None
        spoken = self._playbacks.get(event.data.get("playback_id", "")) if event.type.startswith("playback.") else None
        if spoken is not None and spoken.speak:
            event_type = event_type.replace(".playback.", ".speak.")
        url = self._call_webhook.get(event.call_id) or self.webhook_url
        if event.type == "call.hangup":
            with contextlib.suppress(RuntimeError):  # no loop: nothing to schedule, nothing to forget
                asyncio.get_running_loop().call_later(CALL_STATE_TTL_S, self._forget_call, event.call_id)
        payload: dict[str, Any] | None
        if event.type.startswith("playback."):
            payload = self._playback_payload(event)
        elif event.type in ("call.bridged", "dtmf.received"):
            payload = self._bridged_payload(event)
            if event.type == "dtmf.received":  # Telnyx's CallDtmfReceived payload: the ids, from, to, digit
                payload["digit"] = event.data.get("digit")
        else:
            payload = self._call_payload(event)
        if not url or payload is None:
            return None
        data = {
            "record_type": "event",
            "event_type": event_type,
            "id": str(uuid.UUID(hex=event.id)) if len(event.id) == 32 else event.id,
            "occurred_at": iso_z(event.occurred_at),
            "payload": payload,
        }
        spec = {"url": url, "data": data}
        return Delivery(url=url, build=self.build(spec), key=event.call_id, label=event_type, spec=spec)

    def build(self, spec: dict[str, Any]) -> Build:
        """Body and headers per attempt: the attempt in ``meta``, a fresh timestamp in the signature.
        Also rebuilds a webhook a previous run journaled (same key pair: it lives in the data dir)."""
        signer = self.signer
        if signer is None or not self.api_key:
            raise ValueError("the Telnyx dialect is disabled (no MEDIASRV_TELNYX_API_KEY)")
        data, url = spec["data"], spec["url"]

        def build(attempt: int) -> tuple[bytes, dict[str, str]]:
            body = json.dumps({"data": data, "meta": {"attempt": attempt, "delivered_to": url}}).encode()
            return body, {"Content-Type": "application/json", **signer.telnyx_headers(body)}

        return build

    def _forget_call(self, call_id: str) -> None:
        self._call_state.pop(call_id, None)
        self._call_webhook.pop(call_id, None)

    def _ids(self, call_id: str, sip_call_id: str | None) -> dict[str, Any]:
        return {
            "call_control_id": call_id,
            "call_leg_id": call_id.rsplit(":", 1)[-1],
            "call_session_id": sip_call_id,
            "connection_id": "mediasrv",
            "client_state": self._call_state.get(call_id),
        }

    def _call_payload(self, event: Event) -> dict[str, Any]:
        d = event.data
        inbound = d.get("direction") == Direction.INBOUND.value
        payload = self._ids(event.call_id, d.get("sip_call_id"))
        payload.update({
            "from": d.get("from"),
            "to": d.get("to"),
            "direction": "incoming" if inbound else "outgoing",
            "start_time": iso_z(d.get("created_at")),
        })
        if event.type == "call.initiated":
            payload["state"] = "parked" if inbound else "bridging"
        elif event.type == "call.answered":
            payload["state"] = "answered"
        else:
            by = d.get("hangup_by")
            if by in ("caller", "callee"):
                source = by
            elif by in ("api", "server"):
                source = "callee" if inbound else "caller"  # we are the callee of an inbound call
            else:
                source = "unknown"
            payload.update({
                "state": "hangup",
                "hangup_cause": HANGUP_CAUSES.get(d.get("hangup_cause") or "", "unspecified"),
                "hangup_source": source,
                "sip_hangup_cause": str(d["sip_code"]) if d.get("sip_code") else "unspecified",
            })
        return payload

    def _bridged_payload(self, event: Event) -> dict[str, Any]:
        call = self.server.registry.get(event.call_id)
        payload = self._ids(event.call_id, call.sip_call_id if call else None)
        payload.update({"from": call.from_uri if call else None, "to": call.to_uri if call else None})
        return payload

    def _playback_payload(self, event: Event) -> dict[str, Any] | None:
        d = event.data
        playback_id = d.get("playback_id", "")
        ended = event.type == "playback.ended"
        info = self._playbacks.pop(playback_id, None) if ended else self._playbacks.get(playback_id)
        if info is None:  # not a Telnyx command's playback: Telnyx reports only its own
            return None
        call = self.server.registry.get(event.call_id)
        payload = self._ids(event.call_id, call.sip_call_id if call else None)
        payload.update({
            "client_state": info.client_state,
            "media_url": info.media_url,
            "media_name": info.media_name,
            "overlay": bool(d.get("overlay", info.overlay)),
        })
        if info.speak:  # call.speak.*: ids, client_state and (ended) a status, nothing about media
            for name in ("media_url", "media_name", "overlay"):
                payload.pop(name)
            if ended:  # the SDK's CallSpeakEnded status is completed | call_hangup | cancelled_amd only:
                # a speak stopped (playback_stop, a key during a gather_using_speak prompt) is "completed"
                payload["status"] = "call_hangup" if d.get("status") == "call_hangup" else \
                    "completed" if d.get("status") in ("completed", "stopped") else playback_status(d)["status"]
            return payload
        if ended:
            payload.update(playback_status(d))
        return payload


def playback_status(d: dict[str, Any]) -> dict[str, Any]:
    """The internal end state → Telnyx's ``status`` and ``status_detail``."""
    status, reason, message = d.get("status"), d.get("reason") or "", d.get("message")
    if status == "completed":
        return {"status": "completed", "status_detail": None}
    if status == "stopped":
        return {"status": "cancelled", "status_detail": f"stopped by {d.get('stopped_by') or 'api'}"}
    if status == "call_hangup":
        return {"status": "call_hangup", "status_detail": None}
    if reason in ("http_404", "http_410", "media_not_found", "invalid_media_name"):
        return {"status": "file_not_found", "status_detail": message or reason}
    return {"status": "failed", "status_detail": message or reason or None}


async def _read_body(request: web.Request) -> dict[str, Any]:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise TelnyxError("10015", f"The request body is larger than {request.client_max_size} bytes "
                                   "(playback_content: use audio_url for long audio)", status=413) from exc
    try:
        return parse_json_object(raw)
    except BodyError as exc:
        raise TelnyxError("10015", f"The {exc}") from exc


TELNYX_KEY: web.AppKey[TelnyxDialect] = web.AppKey("telnyx", TelnyxDialect)

# Listed in /openapi.json under "x-dialects": each route and the native resource it maps onto.
_ACTIONS = "/v2/calls/{call_control_id}/actions/"
OPENAPI_DIALECT: dict[str, Any] = {
    "auth": "Authorization: Bearer <MEDIASRV_TELNYX_API_KEY>",
    "errors": '{"errors": [{"code", "title", "detail", "source": {"pointer"}}]}',
    "webhooks": "call.initiated, call.answered, call.bridged, call.hangup, call.playback.started, "
                "call.playback.ended, call.speak.started, call.speak.ended, call.dtmf.received, call.gather.ended; "
                "Ed25519 telnyx-signature-ed25519 + telnyx-timestamp",
    "routes": [
        {"method": "POST", "path": _ACTIONS + "playback_start", "maps_to": "POST /v1/calls/{call_id}/playbacks"},
        {"method": "POST", "path": _ACTIONS + "speak",
         "maps_to": "POST /v1/calls/{call_id}/playbacks {\"speak\": ...} (voices: mediasrv/api/voices.py)"},
        {"method": "POST", "path": _ACTIONS + "playback_stop", "maps_to": "DELETE /v1/calls/{call_id}/playbacks"},
        {"method": "POST", "path": _ACTIONS + "answer", "maps_to": "POST /v1/calls/{call_id}/answer"},
        {"method": "POST", "path": _ACTIONS + "hangup", "maps_to": "DELETE /v1/calls/{call_id}"},
        {"method": "POST", "path": _ACTIONS + "reject", "maps_to": "DELETE /v1/calls/{call_id} (ringing: SIP 603/486/404/480)"},
        {"method": "POST", "path": _ACTIONS + "bridge", "maps_to": "POST /v1/calls/{call_id}/bridge"},
        {"method": "GET", "path": "/v2/public_key", "maps_to": "mediasrv keys"},
    ],
}
