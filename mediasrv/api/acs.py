"""Azure Communication Services Call Automation dialect: play / cancel on a call connection.

Only translation lives here: an ACS request (HMAC-signed, ``{id}:play`` style paths) becomes a
:class:`PlayRequest` for the media plane, the media plane's playback events become ACS
CloudEvents (``Microsoft.Communication.Play*``) posted to the operation's callback URI, and
errors take ACS's ``{"error": {"code", "message"}}`` shape.  A call's ``call_id`` is its
``callConnectionId``.  Request shapes and accepted responses: ../shared/vendor-sdk-wire.md §3.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import urllib.parse
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..calls.commands import (
    CallEnded,
    CallNotAnswered,
    CommandError,
    InvalidCommand,
    LegUnavailable,
    NoSuchCall,
)
from ..calls.registry import Call, Direction
from ..content.synth import DEFAULT_VOICE, SpeechInputError, SpeechSpec, check
from ..events.bus import Build, Delivery, Event, WebhookSink
from ..media.player import PlayRequest, SourceSpec
from ..ops.logsafe import SourceLimiter, clip
from .dialect import Handler
from .errors import BodyError, parse_json_object
from .signing import RsaJwtSigner
from .voices import cloud_voice, espeak_voice

if TYPE_CHECKING:
    from ..nodeview import Node

log = logging.getLogger("mediasrv.acs")

OPENID_PATH = "/calling/.well-known/acsopenidconfiguration"  # where ACS publishes its own
JWKS_PATH = "/calling/keys"
DEFAULT_AUDIENCE = "mediasrv"  # "aud" when MEDIASRV_ACS_RESOURCE_ID is not set
REPEAT_MEMORY = 10_000  # Repeatability-Request-IDs remembered
# (method, action suffix) of every operation served on a call connection
OPERATIONS = {("POST", ":play"), ("POST", ":cancelAllMediaOperations"), ("POST", "/:playAudio"),
              ("POST", ":terminate"), ("DELETE", "")}
MAX_CLOCK_SKEW_S = 300.0  # x-ms-date further than this from our clock is refused (replays)
EVENT_PREFIX = "Microsoft.Communication."
# resultInformation (code, subCode, message) as ACS documents them for play outcomes
COMPLETED = (200, 0, "Action completed successfully.")
CANCELED = (400, 8508, "Action failed, the operation was canceled.")
FILE_INVALID = (400, 8535, "Action failed, file format is invalid.")
FILE_UNREACHABLE = (400, 8536, "Action failed, file could not be downloaded.")
UNKNOWN_FAILURE = (500, 9999, "Unknown internal server error.")
DOWNLOAD_REASONS = ("http_", "unreachable", "fetch_", "connect", "timeout", "too_large", "forbidden", "blocked")


class AcsError(Exception):
    """An error in ACS's shape; ``target`` names the offending field."""

    def __init__(self, status: int, code: str, message: str, target: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.target = status, code, message, target

    def to_response(self) -> web.Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            error["target"] = self.target
            error["details"] = [{"code": "InvalidField", "message": self.message, "target": self.target}]
        return web.json_response({"error": error}, status=self.status)


def acs_error(exc: CommandError) -> AcsError:
    """The command service's domain error as ACS answers it."""
    if isinstance(exc, NoSuchCall | CallEnded):
        return AcsError(404, "8522", f"call connection {exc.call_id!r} was not found or has ended")
    if isinstance(exc, CallNotAnswered):
        return AcsError(400, "8501", "Action is not valid when call is not in Established state.")
    if isinstance(exc, InvalidCommand):
        return AcsError(exc.status, exc.reason, exc.message)
    return AcsError(400, "8501", "the call has no media leg")  # NoSuchLeg, NoSuchPlayback


# -- auth ---------------------------------------------------------------------
_REFUSALS_LOGGED = SourceLimiter(rate=0.2, burst=5)

def verify_hmac(
    method: str, path_and_query: str, headers: Any, body: bytes, key_b64: str, now: float | None = None
) -> str | None:
    """Check ACS's HMAC-SHA256 request signature; None when valid, else why not (for the log only).

    The string to sign is ``VERB\\npath?query\\nx-ms-date;host;x-ms-content-sha256`` over the raw
    (still percent-encoded) path and the raw body bytes, as the SDK's HMACCredentialsPolicy builds it.
    """
    auth = headers.get("Authorization", "")
    scheme, _, rest = auth.partition(" ")
    if scheme != "HMAC-SHA256":
        return "not an HMAC-SHA256 Authorization header"
    try:
        parts = dict(p.split("=", 1) for p in rest.split("&"))
        signed = parts["SignedHeaders"].split(";")
        given = parts["Signature"]
    except (KeyError, ValueError):
        return "malformed Authorization header"
    content_hash = headers.get("x-ms-content-sha256", "")
    if base64.b64encode(hashlib.sha256(body).digest()).decode() != content_hash:
        return "x-ms-content-sha256 does not match the body"
    date = headers.get("x-ms-date", "")
    try:
        sent = parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return "missing or unparsable x-ms-date"
    if abs((time.time() if now is None else now) - sent) > MAX_CLOCK_SKEW_S:
        return "x-ms-date outside the allowed clock skew"
    values = {"x-ms-date": date, "host": headers.get("Host", ""), "x-ms-content-sha256": content_hash}
    if set(signed) != set(values):
        return "SignedHeaders must be x-ms-date;host;x-ms-content-sha256"
    to_sign = f"{method.upper()}\n{path_and_query}\n" + ";".join(values[h] for h in signed)
    try:
        key = base64.b64decode(key_b64)
    except ValueError:
        return "server access key is not base64"
    expected = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest()).decode()
    return None if hmac.compare_digest(expected, given) else "signature mismatch"


ACTIONS = ("play", "cancelAllMediaOperations", "terminate",
           # acs_dtmf.py
           "startContinuousDtmfRecognition", "stopContinuousDtmfRecognition", "recognize", "sendDtmfTones")


def split_connection(rest: str) -> tuple[str, str]:
    """``{id}:play`` → (id, ":play"); ``{id}/:playAudio`` → (id, "/:playAudio"); ``{id}`` → (id, "").

    Our call ids contain colons (``v3:node:hex``), so only a known action after the last one is a suffix.
    """
    if rest.endswith("/:playAudio"):
        return rest[: -len("/:playAudio")], "/:playAudio"
    call_id, sep, action = rest.rpartition(":")
    if sep and action in ACTIONS:
        return call_id, ":" + action
    return rest, ""


def sdk_signed_path(tail: str, raw_path: str) -> str | None:
    """The path and query as the SDK signed them: the id quoted with ``safe=""``.

    The SDK signs ``v3%3Anode%3Aid:play`` but its aio transport (yarl) re-quotes the URL and
    sends ``v3:node:id:play``; both name the same call, so the signature is checked against
    this form when the raw path does not match.
    """
    if not tail.startswith("callConnections/"):
        return None
    call_id, suffix = split_connection(tail[len("callConnections/"):])
    query = raw_path.partition("?")[2]
    path = "/calling/callConnections/" + urllib.parse.quote(call_id, safe="") + suffix
    return f"{path}?{query}" if query else path


# -- identities ----------------------------------------------------------------
def _user_part(uri: str) -> str:
    """``sip:+1425@host;x`` → ``+1425``; ``tel:+1425`` → ``+1425``; percent-decoded."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    user = rest.split("@", 1)[0] if "@" in rest else rest
    return urllib.parse.unquote(user.split(";", 1)[0])


def leg_identity(call: Call) -> str:
    """The participant a leg stands for: the remote party (caller if inbound, callee if outbound)."""
    return _user_part(call.from_uri if call.direction is Direction.INBOUND else call.to_uri)


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def parse_identifier(item: Any, where: str) -> tuple[str, str]:
    """An ACS CommunicationIdentifierModel → ("phone", "+1…") or ("user", "8:acs:…")."""
    if not isinstance(item, dict):
        raise AcsError(400, "BadRequest", f"{where} must be an identifier object", where)
    phone, user = item.get("phoneNumber"), item.get("communicationUser")
    if isinstance(phone, dict) and isinstance(phone.get("value"), str):
        return "phone", phone["value"]
    if isinstance(user, dict) and isinstance(user.get("id"), str):
        return "user", user["id"]
    raw = item.get("rawId")
    if isinstance(raw, str) and raw:
        return ("phone", raw[2:]) if raw.startswith("4:") else ("user", raw)
    raise AcsError(400, "BadRequest", f"{where}: only phoneNumber and communicationUser identifiers are supported",
                   where)


def matches(identity: tuple[str, str], call: Call) -> bool:
    kind, value = identity
    mine = leg_identity(call)
    if kind == "phone":
        return bool(_digits(value)) and _digits(mine) == _digits(value)
    return mine == value


# -- play requests ---------------------------------------------------------------
def _source(item: Any, i: int) -> SourceSpec:
    where = f"playSources[{i}]"
    if not isinstance(item, dict):
        raise AcsError(400, "BadRequest", f"{where} must be an object", where)
    kind = str(item.get("kind", "file")).lower()
    if kind in ("text", "ssml"):
        return _speech_source(item, kind, where)
    if kind != "file":
        raise AcsError(400, "BadRequest", f"{where}.kind must be 'file', 'text' or 'ssml'", f"{where}.kind")
    file = item.get("file")
    uri = file.get("uri") if isinstance(file, dict) else None
    if not isinstance(uri, str) or not uri.lower().startswith(("http://", "https://")):
        raise AcsError(400, "BadRequest", f"{where}.file.uri must be an http(s) URL", f"{where}.file.uri")
    cache_id = item.get("playSourceCacheId")
    if cache_id is not None and not isinstance(cache_id, str):
        raise AcsError(400, "BadRequest", f"{where}.playSourceCacheId must be a string", f"{where}.playSourceCacheId")
    return SourceSpec(url=uri, cache_id=cache_id or None)


def _speech_source(item: dict[str, Any], kind: str, where: str) -> SourceSpec:
    """TextSource ``{"kind": "text", "text": {"text", "voiceName", "sourceLocale", "voiceKind"}}`` or
    SsmlSource ``{"kind": "ssml", "ssml": {"ssmlText"}}`` → a speech source (voices: api/voices.py)."""
    inner = item.get(kind)
    if not isinstance(inner, dict):
        raise AcsError(400, "BadRequest", f"{where}.{kind} must be an object", f"{where}.{kind}")
    body_name = "text" if kind == "text" else "ssmlText"
    body = inner.get(body_name)
    if not isinstance(body, str):
        raise AcsError(400, "BadRequest", f"{where}.{kind}.{body_name} is required", f"{where}.{kind}.{body_name}")
    voice = DEFAULT_VOICE
    if inner.get("customVoiceEndpointId"):
        raise AcsError(400, "BadRequest", "custom voice endpoints are not available on this server",
                       f"{where}.{kind}.customVoiceEndpointId")
    if kind == "text":
        name, locale, gender = (inner.get(k) for k in ("voiceName", "sourceLocale", "voiceKind"))
        if name is not None:
            mapped = cloud_voice(name) if isinstance(name, str) else None
            if mapped is None:
                raise AcsError(400, "BadRequest", f"voiceName {str(name)[:64]!r} has no equivalent on this server",
                               f"{where}.text.voiceName")
            voice = mapped
        elif locale is not None or gender is not None:
            mapped = espeak_voice(locale if isinstance(locale, str) else "en-US", gender if isinstance(gender, str)
                                  else None)
            if mapped is None:
                raise AcsError(400, "BadRequest", f"sourceLocale {str(locale)[:32]!r} is not supported",
                               f"{where}.text.sourceLocale")
            voice = mapped
    try:
        speech = check(SpeechSpec(text=body, voice=voice, ssml=kind == "ssml"))
    except SpeechInputError as exc:
        target = f"{where}.{kind}.voiceName" if exc.field == "voice" else f"{where}.{kind}.{body_name}"
        raise AcsError(400, "BadRequest", exc.message, target) from exc
    return SourceSpec(speech=speech)


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise AcsError(400, "BadRequest", f"{name} must be a string", name)
    return value


def _optional_url(body: dict[str, Any], name: str) -> str | None:
    value = _optional_str(body, name)
    if value is not None and not value.lower().startswith(("http://", "https://")):
        raise AcsError(400, "BadRequest", f"{name} must be an http(s) URL", name)
    return value


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        return parse_json_object(raw)
    except BodyError as exc:
        raise AcsError(400, "BadRequest", str(exc)) from exc


# -- operations and events ---------------------------------------------------------
@dataclass
class PlayOperation:
    """One ACS play command: its playbacks (one per target leg) and where its events go."""

    call_id: str
    context: str | None
    callback_url: str | None
    playback_ids: set[str]
    legacy_id: str | None = None  # the 2021 preview API's operationId (its own event shape)
    started: bool = False
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)


def _result(code: tuple[int, int, str], detail: str | None = None) -> dict[str, Any]:
    status, sub, message = code
    return {"code": status, "subCode": sub, "message": f"{message} {detail}".strip() if detail else message}


def failure_result(reason: str | None, message: str | None) -> dict[str, Any]:
    reason = reason or ""
    detail = f"({reason}: {message})" if message else f"({reason})" if reason else None
    if reason in ("not_audio", "decode_error", "unsupported_format"):
        return _result(FILE_INVALID, detail)
    if reason.startswith(DOWNLOAD_REASONS):
        return _result(FILE_UNREACHABLE, detail)
    return _result(UNKNOWN_FAILURE, detail)


class AcsDialect:
    def __init__(self, server: Node, signer: RsaJwtSigner | None = None) -> None:
        self.server = server
        self.key = server.settings.acs_access_key
        self.signer = signer  # signs every callback (Authorization: Bearer <RS256 JWT>)
        self.audience = server.settings.acs_resource_id or DEFAULT_AUDIENCE
        self._call_callbacks: dict[str, str] = {}  # call id → the latest operationCallbackUri given for it
        self._repeats: OrderedDict[str, None] = OrderedDict()  # Repeatability-Request-IDs of terminates done
        # ACS events are made here (one per operation, not per bus event): the sink only delivers them,
        # ordered per call and retried; the bus drains and closes it with the others.
        self.sink = server.events.add_sink(WebhookSink(lambda _event: None, server.events.sink_settings(), "acs",
                                                       rebuild=self.build))
        self._ops: dict[str, PlayOperation] = {}  # playback id → its operation
        # operations other modules serve on a call connection (acs_dtmf.py): (method, action) -> handler
        self.extra_operations: dict[tuple[str, str], Callable[[str, dict[str, Any]], web.Response]] = {}
        self.cancel_hooks: list[Callable[[str], None]] = []  # also run by :cancelAllMediaOperations

    # -- HTTP: the auth middleware (behind error_shape, mediasrv/api/dialect.py), then the one route ------
    async def auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The HMAC over method, path, date and body, for every operation (the key documents are public)."""
        tail = request.match_info.get("tail")
        if tail is not None:
            try:
                body = await request.read()  # kept by aiohttp: the operation reads it again for free
            except web.HTTPRequestEntityTooLarge as exc:
                raise AcsError(413, "RequestEntityTooLarge", "request body too large") from exc
            self._authenticate(request, body, tail)
        return await handler(request)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        tail = request.match_info["tail"]
        if not tail.startswith("callConnections/"):
            raise AcsError(404, "NotFound", "no such Call Automation operation")
        call_id, action = split_connection(tail[len("callConnections/"):])
        extra = self.extra_operations.get((request.method, action))
        if not call_id or "/" in call_id or ((request.method, action) not in OPERATIONS and extra is None):
            raise AcsError(404, "NotFound", "no such Call Automation operation")
        if "api-version" not in request.query:
            raise AcsError(400, "BadRequest", "the api-version query parameter is required", "api-version")
        if extra is not None:
            return extra(call_id, _json_object(body))
        if action == "/:playAudio":
            return self._play_legacy(call_id, _json_object(body))
        if action == ":play":
            return self._play(call_id, _json_object(body))
        if action == ":cancelAllMediaOperations":
            return self._cancel_all(call_id)
        everyone = action == ":terminate"
        return await self._hang_up(call_id, everyone, request.headers.get("Repeatability-Request-ID"))

    def _authenticate(self, request: web.Request, body: bytes, tail: str) -> None:
        if not self.key:
            raise AcsError(401, "Unauthorized", "the ACS dialect is disabled (MEDIASRV_ACS_ACCESS_KEY is not set)")
        why = verify_hmac(request.method, request.raw_path, request.headers, body, self.key)
        canonical = sdk_signed_path(tail, request.raw_path)
        if why == "signature mismatch" and canonical and canonical != request.raw_path:
            why = verify_hmac(request.method, canonical, request.headers, body, self.key)
        if why is not None:
            allowed, dropped = _REFUSALS_LOGGED.allow(request.remote or "?")
            if allowed:  # one line per refused request, a few per source: a scanner cannot flood the log
                log.info("ACS request from %s refused: %s%s", clip(request.remote, 60), why,
                         f" ({dropped} more from it not logged)" if dropped else "")
            raise AcsError(401, "Unauthorized", "request signature is missing, stale or wrong")

    async def _hang_up(self, call_id: str, everyone: bool, repeat_id: str | None) -> web.Response:
        """``hang_up(False)``: BYE this leg; ``hang_up(True)`` (``:terminate``): BYE every leg in its room too.

        Both go through the core's hangup (a ringing inbound leg is refused instead).  A terminate
        retried with the same Repeatability-Request-ID answers 204 again without doing anything.
        """
        if everyone and repeat_id and repeat_id in self._repeats:
            return web.Response(status=204)
        call = self.server.commands.live_call(call_id)
        legs = [call.call_id, *(self.server.media.peers_of(call.call_id) if everyone else [])]
        for i, leg in enumerate(legs):
            try:
                await self.server.sip.hangup(leg, cause="normal_clearing", by="api")
            except KeyError as exc:  # ended meanwhile: only the call connection itself is an error
                if i == 0:
                    raise AcsError(404, "8522", f"call connection {call_id!r} has ended") from exc
        if everyone and repeat_id:
            self._repeats[repeat_id] = None
            while len(self._repeats) > REPEAT_MEMORY:
                self._repeats.popitem(last=False)
        return web.Response(status=204)

    def _live_call(self, call_id: str) -> Call:
        try:
            return self.server.commands.live_call(call_id, answered=True)
        except CommandError as exc:
            raise acs_error(exc) from None

    def _targets(self, call: Call, play_to: Any) -> str | list[str]:
        legs = [call.call_id, *self.server.media.peers_of(call.call_id)]
        if play_to is None or play_to == []:
            return "self" if len(legs) == 1 else legs
        if not isinstance(play_to, list):
            raise AcsError(400, "BadRequest", "playTo must be a list of identifiers", "playTo")
        chosen: list[str] = []
        for i, item in enumerate(play_to):
            identity = parse_identifier(item, f"playTo[{i}]")
            found = [leg for leg in legs if (c := self.server.registry.get(leg)) is not None and matches(identity, c)]
            if not found:
                raise AcsError(400, "BadRequest", f"playTo[{i}]: {identity[1]} is not a participant of this call",
                               f"playTo[{i}]")
            chosen += [leg for leg in found if leg not in chosen]
        return "self" if chosen == [call.call_id] else chosen

    def _play(self, call_id: str, body: dict[str, Any]) -> web.Response:
        sources = body.get("playSources")
        if not isinstance(sources, list) or not sources:
            raise AcsError(400, "BadRequest", "playSources must be a non-empty list", "playSources")
        specs = [_source(item, i) for i, item in enumerate(sources)]
        options = body.get("playOptions") or {}
        if not isinstance(options, dict) or not isinstance(options.get("loop", False), bool):
            raise AcsError(400, "BadRequest", "playOptions.loop must be a boolean", "playOptions.loop")
        interrupt = body.get("interruptCallMediaOperation", False)
        if not isinstance(interrupt, bool):
            raise AcsError(400, "BadRequest", "interruptCallMediaOperation must be a boolean",
                           "interruptCallMediaOperation")
        context = _optional_str(body, "operationContext")
        callback = _optional_url(body, "operationCallbackUri")
        call = self._live_call(call_id)
        request = PlayRequest(
            sources=specs,
            loop=None if options.get("loop") else 1,
            target=self._targets(call, body.get("playTo")),
            stop="all" if interrupt else None,  # barge-in: what was playing or queued is canceled
            command_id=context,
        )
        self._start(call, request, context, callback)
        return web.Response(status=202)

    def _play_legacy(self, call_id: str, body: dict[str, Any]) -> web.Response:
        """The 2021-08-30-preview ``/:playAudio`` body: one file, loop flag, callbackUri."""
        uri = body.get("audioFileUri")
        if not isinstance(uri, str) or not uri.lower().startswith(("http://", "https://")):
            raise AcsError(400, "BadRequest", "audioFileUri must be an http(s) URL", "audioFileUri")
        loop = body.get("loop", False)
        if not isinstance(loop, bool):
            raise AcsError(400, "BadRequest", "loop must be a boolean", "loop")
        cache_id = _optional_str(body, "audioFileId")
        context = _optional_str(body, "operationContext")
        callback = _optional_url(body, "callbackUri")
        call = self._live_call(call_id)
        request = PlayRequest(sources=[SourceSpec(url=uri, cache_id=cache_id or None)], loop=None if loop else 1,
                              command_id=context)
        op = self._start(call, request, context, callback, legacy=True)
        return web.json_response(
            {"operationId": op.legacy_id, "status": "running", "operationContext": context,
             "resultInfo": {"code": 202, "subcode": 0, "message": "Action is accepted."}},
            status=202,
        )

    def _start(self, call: Call, request: PlayRequest, context: str | None, callback: str | None,
               legacy: bool = False) -> PlayOperation:
        try:
            playbacks = self.server.commands.play(call.call_id, request)
        except LegUnavailable as exc:
            raise AcsError(400, "8501", "the call has no media leg") from exc
        except InvalidCommand as exc:  # a command the core cannot carry out as asked
            raise acs_error(exc) from exc
        if callback:
            self._call_callbacks[call.call_id] = callback
        op = PlayOperation(call.call_id, context, callback or self.server.settings.acs_callback_url,
                           {pb.id for pb in playbacks}, legacy_id=str(uuid.uuid4()) if legacy else None)
        for pb in playbacks:
            self._ops[pb.id] = op  # before any of their events: the bus delivers after this command
        return op

    def _cancel_all(self, call_id: str) -> web.Response:
        self._live_call(call_id)
        for pb_id, op in list(self._ops.items()):  # its operations, on whichever legs they play
            if op.call_id == call_id:
                self.server.commands.stop_playback(pb_id, by="api")
        self.server.commands.stop_playbacks(call_id, "all", by="api")  # and anything else on this leg
        for hook in self.cancel_hooks:
            hook(call_id)
        return web.Response(status=202)

    # -- events ----------------------------------------------------------
    def on_event(self, event: Event) -> None:
        """Event-bus listener (runs after the command or tick group that raised the event: bookkeeping and a queued POST)."""
        if event.type == "call.hangup":
            url = self._call_callbacks.pop(event.call_id, None) or self.server.settings.acs_callback_url
            if url and self.key:
                try:  # after the playback events the same hangup publishes next (its PlayCanceled first)
                    asyncio.get_running_loop().call_soon(self._disconnected, event, url)
                except RuntimeError:
                    self._disconnected(event, url)
            return
        if not event.type.startswith("playback."):
            return
        pb_id = event.data.get("playback_id")
        op = self._ops.get(pb_id)  # type: ignore[arg-type]
        if op is None:  # not an ACS operation's playback
            return
        if event.type == "playback.started" and not op.started:
            op.started = True
            if op.legacy_id is None:
                self._send(op, "PlayStarted", _result(COMPLETED))
        elif event.type == "playback.ended" and pb_id not in op.outcomes:
            op.outcomes[pb_id] = event.data  # type: ignore[index]
            if len(op.outcomes) == len(op.playback_ids):
                for done in op.playback_ids:
                    self._ops.pop(done, None)
                self._finish(op)

    def _finish(self, op: PlayOperation) -> None:
        outcomes = list(op.outcomes.values())
        failed = next((o for o in outcomes if o.get("status") == "failed"), None)
        if failed is not None:
            self._send(op, "PlayFailed", failure_result(failed.get("reason"), failed.get("message")),
                       failedPlaySourceIndex=int(failed.get("failed_source_index") or 0))
        elif any(o.get("status") != "completed" for o in outcomes):
            self._send(op, "PlayCanceled", _result(CANCELED))
        else:
            self._send(op, "PlayCompleted", _result(COMPLETED))

    def _disconnected(self, event: Event, url: str) -> None:
        """``CallDisconnected`` to the call's callback URI, saying who ended it and why."""
        d = event.data
        detail = f"{d.get('hangup_cause') or 'ended'} by {d.get('hangup_by') or 'unknown'}"
        result: dict[str, Any] = {"code": 200, "subCode": 0, "message": f"The conversation has ended ({detail})."}
        if d.get("sip_code"):
            result["sipDetails"] = {"code": int(d["sip_code"]), "message": detail}
        data = {
            "callConnectionId": event.call_id,
            "serverCallId": base64.b64encode(str(d.get("sip_call_id") or event.call_id).encode()).decode(),
            "correlationId": str(uuid.uuid5(uuid.NAMESPACE_URL, event.call_id)),
            "resultInformation": result,
        }
        self._post(event.call_id, url, "CallDisconnected", data)

    def _send(self, op: PlayOperation, kind: str, result: dict[str, Any], **extra: Any) -> None:
        if not op.callback_url:
            return
        call = self.server.registry.get(op.call_id)
        sip_call_id = call.sip_call_id if call else op.call_id
        if op.legacy_id is not None:  # the preview API reported one PlayAudioResult per operation
            status = {"PlayCompleted": "completed"}.get(kind, "failed")
            type_ = "PlayAudioResult"
            data: dict[str, Any] = {
                "operationId": op.legacy_id, "status": status, "operationContext": op.context,
                "resultInfo": {"code": result["code"], "subcode": result["subCode"], "message": result["message"]},
                "callConnectionId": op.call_id,
            }
        else:
            type_ = kind
            data = {
                "callConnectionId": op.call_id,
                "serverCallId": base64.b64encode(sip_call_id.encode()).decode(),
                "correlationId": str(uuid.uuid5(uuid.NAMESPACE_URL, op.call_id)),
                "operationContext": op.context,
                "resultInformation": result,
                **extra,
            }
        self._post(op.call_id, op.callback_url, type_, data)

    def _post(self, call_id: str, url: str, type_: str, data: dict[str, Any]) -> None:
        """One CloudEvent in a JSON array, ordered per call, with a fresh RS256 JWT on every attempt."""
        subject = f"calling/callConnections/{call_id}"
        event_id, event_type = str(uuid.uuid4()), EVENT_PREFIX + type_
        event: dict[str, Any] = {
            "id": event_id,
            "source": subject,
            "type": event_type,
            "data": data,
            "time": datetime.now(UTC).isoformat(),
            "specversion": "1.0",
            "datacontenttype": "application/json",
            "subject": subject,
        }
        spec = {"events": [event]}
        self.sink.send(Delivery(url=url, build=self.build(spec), key=call_id, label=event_type, spec=spec,
                                id=event_id))

    def build(self, spec: dict[str, Any]) -> Build:
        """A CloudEvents batch from its journaled spec (also the sink's ``rebuild`` after a restart): the
        same body on every attempt, with a fresh RS256 JWT each time."""
        body = json.dumps(spec["events"]).encode()

        async def build(_attempt: int) -> tuple[bytes, dict[str, str]]:
            headers = {"Content-Type": "application/json"}
            if self.signer is not None:  # RSA signing releases the GIL: in a thread it leaves the loop alone
                token = await asyncio.get_running_loop().run_in_executor(
                    None, self.signer.token, self.issuer, self.audience, body)
                headers["Authorization"] = "Bearer " + token
            return body, headers

        return build

    # -- callback authentication (OpenID configuration + JWKS, as ACS publishes them) ------------------
    @property
    def issuer(self) -> str:
        """``iss`` of our tokens and the base of jwks_uri: MEDIASRV_ACS_ISSUER, else our HTTP address."""
        configured = self.server.settings.acs_issuer
        if configured:
            return configured.rstrip("/")
        host, port = self.server.http_address or self.server.settings.http_addr
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def openid_configuration(self, request: web.Request) -> web.Response:
        if self.signer is None:
            return DISABLED.to_response()
        return web.json_response({
            "issuer": self.issuer,
            "jwks_uri": self.issuer + JWKS_PATH,
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "claims_supported": ["iss", "aud", "iat", "nbf", "exp", "jti", "content_sha256"],
        })

    async def jwks(self, request: web.Request) -> web.Response:
        if self.signer is None:
            return DISABLED.to_response()
        return web.json_response(self.signer.jwks, headers={"Cache-Control": "public, max-age=3600"})


ACS_KEY: web.AppKey[AcsDialect] = web.AppKey("acs")
DISABLED = AcsError(404, "NotFound", "the ACS dialect is disabled (MEDIASRV_ACS_ACCESS_KEY is not set)")

# Listed in /openapi.json under "x-dialects": each route and the native resource it maps onto.
_CONN = "/calling/callConnections/{call_connection_id}"
OPENAPI_DIALECT: dict[str, Any] = {
    "auth": "HMAC-SHA256 with MEDIASRV_ACS_ACCESS_KEY over the raw path+query, x-ms-date (5 min skew) and body hash",
    "errors": '{"error": {"code", "message"}}',
    "webhooks": "CloudEvents 1.0 arrays (PlayStarted, PlayCompleted, PlayFailed, PlayCanceled, CallDisconnected) to "
                "operationCallbackUri or MEDIASRV_ACS_CALLBACK_URL; Authorization: Bearer <RS256 JWT> "
                "(iss, aud = MEDIASRV_ACS_RESOURCE_ID, iat, exp, content_sha256), keys at " + JWKS_PATH,
    "routes": [
        {"method": "POST", "path": _CONN + ":play", "maps_to": "POST /v1/calls/{call_id}/playbacks (target list)"},
        {"method": "POST", "path": _CONN + ":cancelAllMediaOperations",
         "maps_to": "DELETE /v1/calls/{call_id}/playbacks?stop=all"},
        {"method": "POST", "path": _CONN + "/:playAudio", "maps_to": "POST /v1/calls/{call_id}/playbacks"},
        {"method": "DELETE", "path": _CONN, "maps_to": "DELETE /v1/calls/{call_id}"},
        {"method": "POST", "path": _CONN + ":terminate",
         "maps_to": "DELETE /v1/calls/{call_id}, and every leg bridged with it"},
        {"method": "GET", "path": OPENID_PATH, "maps_to": "OpenID configuration (issuer, jwks_uri) for callback JWTs"},
        {"method": "GET", "path": JWKS_PATH, "maps_to": "JWKS: the RS256 key of `mediasrv keys`"},
    ],
}
