"""Plivo dialect (``/v1/Account/{auth_id}/...``): the official ``plivo`` SDK works against mediasrv unmodified.

Only translation happens here: Plivo's Play / stop-play requests become a
:class:`PlayRequest` or a stop on the media plane; playback events become Plivo-style
callbacks (form-encoded, signed ``X-Plivo-Signature-V3``) to the ``callback_url`` a
command gave; errors become ``{"api_id", "error"}``.  What the SDK sends and accepts is
recorded in ``shared/vendor-sdk-wire.md`` section 2.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from ..calls.commands import (
    CallEnded,
    CallNotAnswered,
    CommandError,
    InvalidCommand,
    LegUnavailable,
    NoSuchCall,
)
from ..calls.registry import Call
from ..content.synth import SpeechInputError, SpeechSpec, check
from ..events.bus import Build, Delivery, Event
from ..media.player import Playback, PlayRequest, SourceSpec
from .common import basic_credentials, same
from .dialect import Handler
from .errors import BodyError, parse_json_object
from .signing import plivo_headers
from .voices import cloud_voice, espeak_voice

if TYPE_CHECKING:
    from ..nodeview import Node

log = logging.getLogger("mediasrv.plivo")

LEGS = {"aleg": "self", "bleg": "opposite", "both": "both"}
# the core's hangup causes -> Plivo's HangupCause names
PLIVO_HANGUP_CAUSES = {
    "normal_clearing": "NORMAL_CLEARING",
    "cancelled": "ORIGINATOR_CANCEL",
    "busy": "USER_BUSY",
    "no_answer": "NO_ANSWER",
    "rtp_timeout": "MEDIA_TIMEOUT",
    "rejected": "CALL_REJECTED",
    "call_rejected": "CALL_REJECTED",
}


class PlivoError(Exception):
    """A failed request in Plivo's shape: ``{"api_id": ..., "error": "..."}``."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error

    def to_response(self) -> web.Response:
        return web.json_response({"api_id": str(uuid.uuid4()), "error": self.error}, status=self.status)


def plivo_error(exc: CommandError) -> PlivoError:
    """The command service's domain error as Plivo answers it."""
    if isinstance(exc, NoSuchCall):
        return PlivoError(404, "call not found")
    if isinstance(exc, CallEnded):
        return PlivoError(404, "call not found: it has ended")
    if isinstance(exc, CallNotAnswered):
        return PlivoError(409, "call is not answered yet")
    if isinstance(exc, InvalidCommand):
        return PlivoError(400, exc.message)
    return PlivoError(404, "call not found: it has no media")  # NoSuchLeg, NoSuchPlayback


@dataclass
class Callback:
    """Where a play command's events go, and what they say about it."""

    url: str
    method: str  # "POST" | "GET"
    api_id: str
    urls: str  # the URLs as one comma-separated string


# -- request validation ------------------------------------------------------------------------
def _bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise PlivoError(400, f"{name} must be true or false")


def parse_urls(value: Any) -> list[str]:
    """``urls``: a list, or one comma-separated string, of http(s) URLs."""
    if value is None:
        raise PlivoError(400, "urls is required")
    items = value if isinstance(value, list) else str(value).split(",") if isinstance(value, str) else None
    if items is None or not all(isinstance(u, str) for u in items):
        raise PlivoError(400, "urls must be a URL, a comma-separated string of URLs or a list of URLs")
    urls = [u.strip() for u in items if u.strip()]
    if not urls:
        raise PlivoError(400, "urls is required")
    for u in urls:
        if not u.lower().startswith(("http://", "https://")):
            raise PlivoError(400, f"invalid url {u!r}: urls must be http(s) URLs of .mp3 or .wav files")
    return urls


def parse_callback(body: dict[str, Any], api_id: str, urls: str = "") -> Callback | None:
    url = body.get("callback_url")
    if url in (None, ""):
        return None
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        raise PlivoError(400, "callback_url must be an http(s) URL")
    method = str(body.get("callback_method") or "POST").upper()
    if method not in ("GET", "POST"):
        raise PlivoError(400, "callback_method must be GET or POST")
    return Callback(url, method, api_id, urls)


def parse_play(body: dict[str, Any]) -> tuple[PlayRequest, list[str]]:
    """Plivo's Play body → the internal PlayRequest (urls in order as one playback)."""
    urls = parse_urls(body.get("urls"))
    length = body.get("length")
    length_s: float | None = None
    if length not in (None, ""):
        if isinstance(length, str) and length.strip().isdigit():
            length = int(length)
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise PlivoError(400, "length must be a positive integer (seconds)")
        length_s = float(length)
    legs = body.get("legs") or "aleg"
    if legs not in LEGS:
        raise PlivoError(400, f"legs must be aleg, bleg or both; got {legs!r}")
    loop = _bool(body, "loop", False)
    mix = _bool(body, "mix", True)
    request = PlayRequest(
        sources=[SourceSpec(url=u) for u in urls],
        loop=None if loop else 1,
        target=LEGS[legs],
        length_s=length_s,
        mix=mix,
    )
    return request, urls


def parse_speak(body: dict[str, Any]) -> PlayRequest:
    """Plivo's Speak body (text, voice WOMAN|MAN|Polly.*, language, type text|ssml, legs, loop, mix)."""
    text = body.get("text")
    if not isinstance(text, str):
        raise PlivoError(400, "text is required")
    voice_name = str(body.get("voice") or "WOMAN")
    language = str(body.get("language") or "en-US")
    if voice_name.upper() in ("WOMAN", "MAN"):
        voice = espeak_voice(language, "female" if voice_name.upper() == "WOMAN" else "male")
        if voice is None:
            raise PlivoError(400, f"language {language[:32]!r} is not supported")
    else:
        voice = cloud_voice(voice_name)
        if voice is None:
            raise PlivoError(400, f"voice {voice_name[:64]!r} is not supported: use WOMAN, MAN or a Polly voice")
    kind = str(body.get("type") or "text").lower()
    if kind not in ("text", "ssml"):
        raise PlivoError(400, f"type must be text or ssml; got {kind[:16]!r}")
    try:
        speech = check(SpeechSpec(text=text, voice=voice, ssml=kind == "ssml"))
    except SpeechInputError as exc:
        raise PlivoError(400, f"{'voice' if exc.field == 'voice' else 'text'}: {exc.message}") from exc
    legs = body.get("legs") or "aleg"
    if legs not in LEGS:
        raise PlivoError(400, f"legs must be aleg, bleg or both; got {legs!r}")
    return PlayRequest(sources=[SourceSpec(speech=speech)], loop=None if _bool(body, "loop", False) else 1,
                       target=LEGS[legs], mix=_bool(body, "mix", True))


async def read_body(request: web.Request) -> dict[str, Any]:
    """The SDK sends JSON (even on DELETE); other Plivo clients send a form: accept both."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PlivoError(413, f"request body is larger than {request.client_max_size} bytes") from exc
    if not raw.strip():
        return {}
    if request.content_type == "application/x-www-form-urlencoded":
        return dict(parse_qsl(raw.decode(errors="replace"), keep_blank_values=True))
    try:
        return parse_json_object(raw)
    except BodyError as exc:
        raise PlivoError(400, str(exc)) from exc


# -- the dialect -------------------------------------------------------------------------------
BodyHandler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


class PlivoDialect:
    def __init__(self, server: Node, auth_id: str | None, auth_token: str | None) -> None:
        self.server = server
        self.auth_id = auth_id
        self.auth_token = auth_token
        self._callbacks: dict[str, Callback] = {}  # playback id -> its command's callback
        self._stop_callbacks: dict[str, Callback] = {}  # playback id -> the callback of the stop that ended it
        self._hangup_callbacks: dict[str, Callback] = {}  # call id -> the hangup command's, until the call ends
        self._speaking: dict[str, set[str]] = {}  # call id -> its Speak playbacks (DELETE Speak stops these only)

    def authorized(self, request: web.Request) -> bool:
        """Basic auth whose user is our auth_id and equals the path's; constant-time compares."""
        creds = basic_credentials(request.headers.get("Authorization", ""))
        if not (self.auth_id and self.auth_token) or creds is None:
            return False
        user, password = creds
        path_id = request.match_info.get("auth_id", "")
        ok_user = same(user, self.auth_id)
        ok_path = same(path_id, self.auth_id)
        ok_token = same(password, self.auth_token)
        return ok_user and ok_path and ok_token

    # behind its error shape (mediasrv/api/dialect.py error_shape): the dialect's auth middleware
    async def auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.authorized(request):
            raise PlivoError(401, "authentication failed")
        return await handler(request)

    @staticmethod
    def route(handler: BodyHandler) -> Handler:
        """The handler called with the body (JSON or form) read."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            return await handler(request, await read_body(request))

        return wrapped

    def _call(self, call_uuid: str, answered: bool = True) -> Call:
        return self.server.commands.live_call(call_uuid, answered=answered)

    async def play(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        play, urls = parse_play(body)
        api_id = str(uuid.uuid4())
        callback = parse_callback(body, api_id, ",".join(urls))
        call = self._call(request.match_info["call_uuid"])
        playbacks = self._play(call, play)
        if callback is not None:
            for pb in playbacks:
                self._callbacks[pb.id] = callback
        return web.json_response({"message": "play started", "api_id": api_id}, status=202)

    def _play(self, call: Call, play: PlayRequest) -> list[Playback]:
        try:
            return self.server.commands.play(call.call_id, play)
        except LegUnavailable as exc:
            raise PlivoError(404, "call not found: it has no media") from exc
        except InvalidCommand as exc:  # the core refuses (e.g. bleg on a call that is not bridged)
            raise PlivoError(400, exc.message) from exc

    async def speak(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        """``POST …/Call/{uuid}/Speak/``: text to speech (mediasrv/api/voices.py maps the voice); 202."""
        play = parse_speak(body)
        api_id = str(uuid.uuid4())
        callback = parse_callback(body, api_id)
        call = self._call(request.match_info["call_uuid"])
        playbacks = self._play(call, play)
        mine = self._speaking.setdefault(call.call_id, set())
        for pb in playbacks:
            mine.add(pb.id)
            if callback is not None:
                self._callbacks[pb.id] = callback
        return web.json_response({"message": "speak started", "api_id": api_id}, status=202)

    async def stop_speak(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        """``DELETE …/Speak/``: stop this call's speech (its plays carry on); 204."""
        callback = parse_callback(body, str(uuid.uuid4()))
        call = self._call(request.match_info["call_uuid"])
        for pb_id in self._speaking.pop(call.call_id, set()):
            if self.server.commands.stop_playback(pb_id, by="api") and callback is not None:
                self._stop_callbacks[pb_id] = callback  # its PlayEnded is rendered after this command
        return web.Response(status=204)

    async def stop(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        callback = parse_callback(body, str(uuid.uuid4()))
        call = self._call(request.match_info["call_uuid"])
        for pb in self.server.commands.stop_playbacks(call.call_id, "all", by="api"):
            if callback is not None:
                self._stop_callbacks[pb.id] = callback  # its PlayEnded is rendered after this command
        return web.Response(status=204)

    async def hangup(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        """``DELETE …/Call/{uuid}/``: BYE (a ringing inbound call is refused) through the core's hangup; 204."""
        callback = parse_callback(body, str(uuid.uuid4()))
        call = self._call(request.match_info["call_uuid"], answered=False)
        if callback is not None:
            self._hangup_callbacks[call.call_id] = callback
        await self.server.sip.hangup(call.call_id, cause="normal_clearing", by="api")
        return web.Response(status=204)

    async def not_found(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        raise PlivoError(404, f"{request.method} {request.path} is not a resource mediasrv serves")

    # -- callbacks ---------------------------------------------------------------------------
    def render(self, event: Event) -> list[Delivery] | None:
        """A playback event → Plivo-style signed callbacks to the URLs its commands gave."""
        if event.type == "call.hangup":
            self._speaking.pop(event.call_id, None)
            hangup_cb = self._hangup_callbacks.pop(event.call_id, None)
            return [self._hangup_delivery(event, hangup_cb)] if hangup_cb is not None and self.auth_token else None
        if event.type not in ("playback.started", "playback.ended") or not self.auth_token:
            return None
        playback_id = event.data.get("playback_id", "")
        ended = event.type == "playback.ended"
        targets = []
        own = self._callbacks.pop(playback_id, None) if ended else self._callbacks.get(playback_id)
        if own is not None:
            targets.append(own)
        stopper = self._stop_callbacks.pop(playback_id, None) if ended else None
        if stopper is not None and event.data.get("status") == "stopped":
            targets.append(stopper)
        return [self._delivery(event, cb, own) for cb in targets] or None

    def _hangup_delivery(self, event: Event, cb: Callback) -> Delivery:
        """The hangup command's callback_url gets the Hangup callback Plivo sends to a call's hangup_url."""
        d = event.data
        answered, ended = d.get("answered_at"), d.get("ended_at")
        duration = str(int(round(ended - answered))) if answered and ended else "0"
        params = {
            "Event": "Hangup",
            "CallUUID": event.call_id,
            "RequestUUID": cb.api_id,
            "From": str(d.get("from") or ""),
            "To": str(d.get("to") or ""),
            "Direction": str(d.get("direction") or ""),
            "CallStatus": "completed" if answered else "cancel",
            "HangupCause": PLIVO_HANGUP_CAUSES.get(str(d.get("hangup_cause") or ""), "NORMAL_CLEARING"),
            "HangupSource": "API Request" if d.get("hangup_by") == "api" else str(d.get("hangup_by") or ""),
            "Duration": duration,
            "BillDuration": duration,
        }
        return self._signed(cb, params, event.call_id)

    def _delivery(self, event: Event, cb: Callback, own: Callback | None) -> Delivery:
        d = event.data
        params = {
            "Event": "PlayEnded" if event.type == "playback.ended" else "PlayStarted",
            "CallUUID": event.call_id,
            "RequestUUID": (own or cb).api_id,
            "PlaybackUUID": str(d.get("playback_id", "")),
            "URLs": (own or cb).urls or str(d.get("source", "")),
        }
        if event.type == "playback.ended":
            params["Status"] = str(d.get("status"))  # completed | stopped | failed | call_hangup
            params["PlayedMs"] = str(d.get("ms_played") or 0)
            if d.get("reason"):
                params["Reason"] = str(d["reason"])
                params["Detail"] = str(d.get("message") or "")
        else:
            params["Status"] = "playing"
        return self._signed(cb, params, event.call_id)

    def _signed(self, cb: Callback, params: dict[str, str], call_id: str) -> Delivery:
        """One callback request: GET puts the params in the query, POST in a form; signed V3 and V2."""
        url = cb.url
        if cb.method == "GET":
            url = url + ("&" if "?" in url else "?") + urlencode(params)
        spec = {"url": url, "method": cb.method, "params": params}
        return Delivery(url=url, build=self.build(spec), key=call_id, method=cb.method, label=params["Event"],
                        spec=spec)

    def build(self, spec: dict[str, Any]) -> Build:
        """Form body and a fresh nonce + signature per attempt; also for callbacks a previous run journaled."""
        if not self.auth_token:
            raise ValueError("the Plivo dialect is disabled (no MEDIASRV_PLIVO_AUTH_TOKEN)")
        token, url, method, params = self.auth_token, spec["url"], spec["method"], spec["params"]

        def build(attempt: int) -> tuple[bytes, dict[str, str]]:
            if method == "GET":
                return b"", plivo_headers("GET", url, {}, token)
            body = urlencode(params).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded", **plivo_headers("POST", url, params, token)}
            return body, headers

        return build


PLIVO_KEY: web.AppKey[PlivoDialect] = web.AppKey("plivo", PlivoDialect)

# Listed in /openapi.json under "x-dialects": each route and the native resource it maps onto.
_PLAY = "/v1/Account/{auth_id}/Call/{call_uuid}/Play/"
OPENAPI_DIALECT: dict[str, Any] = {
    "auth": "HTTP Basic <MEDIASRV_PLIVO_AUTH_ID>:<MEDIASRV_PLIVO_AUTH_TOKEN>; the user equals {auth_id}",
    "errors": '{"api_id", "error"}',
    "webhooks": "form callbacks to callback_url (PlayStarted, PlayEnded; Hangup for a hangup's callback_url), "
                "X-Plivo-Signature-V3 + nonce",
    "routes": [
        {"method": "POST", "path": _PLAY, "maps_to": "POST /v1/calls/{call_id}/playbacks"},
        {"method": "DELETE", "path": _PLAY, "maps_to": "DELETE /v1/calls/{call_id}/playbacks?stop=all"},
        {"method": "POST", "path": "/v1/Account/{auth_id}/Call/{call_uuid}/Speak/",
         "maps_to": "POST /v1/calls/{call_id}/playbacks {\"speak\": ...} (voices: mediasrv/api/voices.py)"},
        {"method": "DELETE", "path": "/v1/Account/{auth_id}/Call/{call_uuid}/Speak/",
         "maps_to": "DELETE /v1/playbacks/{id} for the call's speech"},
        {"method": "DELETE", "path": "/v1/Account/{auth_id}/Call/{call_uuid}/", "maps_to": "DELETE /v1/calls/{call_id}"},
    ],
}
