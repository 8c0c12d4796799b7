"""Bandwidth Voice dialect: BXML on live calls (``PUT …/bxml``, redirects, answer callbacks).

Only translation lives here: a BXML document becomes a short script of internal commands
(``PlayAudio`` → :class:`PlayRequest` on the call's leg, ``Pause`` → wait, ``Hangup`` → SIP BYE,
``Redirect`` → fetch the next document), run per call off the media path; errors take
Bandwidth's ``{"type", "description", "id"}`` shape.  XML is parsed with defusedxml and a size
cap: no DTDs, no entities, nothing fetched for a document that carries them.
Request shapes and accepted responses: ../shared/vendor-sdk-wire.md §4.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element, ParseError

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from ..calls.commands import (
    CallEnded,
    CallNotAnswered,
    CommandError,
    InvalidCommand,
    LegUnavailable,
    NoSuchCall,
)
from ..calls.registry import Call, CallState, Direction
from ..content.synth import SpeechInputError, SpeechSpec, check
from ..egress import Purpose, RedirectRefused, refusal_of
from ..events.bus import Event
from ..media.player import PlayRequest, SourceSpec
from ..ops.logsafe import clip
from .common import basic_matches, iso_z
from .dialect import Handler
from .errors import BodyError, parse_json_object
from .voices import BANDWIDTH as BANDWIDTH_VOICES
from .voices import espeak_voice

if TYPE_CHECKING:
    from ..nodeview import Node

log = logging.getLogger("mediasrv.bandwidth")

MAX_BXML_BYTES = 64 * 1024
MAX_DOCUMENTS_PER_RUN = 50  # redirects that only lead to more redirects end here
MAX_PAUSE_S = 3600.0
FETCH_TIMEOUT_S = 10.0
TOKEN_TTL_S = 3600


class BandwidthError(Exception):
    def __init__(self, status: int, type_: str, description: str) -> None:
        super().__init__(description)
        self.status, self.type, self.description = status, type_, description

    def to_response(self) -> web.Response:
        body = {"type": self.type, "description": self.description, "id": str(uuid.uuid4())}
        return web.json_response(body, status=self.status)


def bandwidth_error(exc: CommandError) -> BandwidthError:
    """The command service's domain error as Bandwidth answers it."""
    if isinstance(exc, NoSuchCall):
        return BandwidthError(404, "not-found", f"call {exc.call_id!r} not found")
    if isinstance(exc, CallEnded):
        return BandwidthError(409, "conflict", f"call {exc.call_id!r} has already ended")
    if isinstance(exc, CallNotAnswered):
        return BandwidthError(409, "conflict", f"call {exc.call_id!r} is not answered yet")
    if isinstance(exc, InvalidCommand):
        return BandwidthError(400, "validation", exc.message)
    return BandwidthError(409, "conflict", exc.message)  # NoSuchLeg, NoSuchPlayback


# -- BXML -----------------------------------------------------------------------
@dataclass
class Play:
    url: str
    username: str | None = None
    password: str | None = None
    speech: SpeechSpec | None = None  # <SpeakSentence>: played like PlayAudio, from the speech source


def speak_sentence(el: Element, where: str) -> Play:
    """``<SpeakSentence voice="susan" locale="en_US" gender="female">text</SpeakSentence>`` (voices.py's table)."""
    text = "".join(el.itertext())
    name = el.get("voice")
    if name is not None:
        entry = BANDWIDTH_VOICES.get(name.strip().lower())
        voice = espeak_voice(*entry) if entry else None
    else:
        voice = espeak_voice(el.get("locale", "en_US"), el.get("gender", "female"))
    if voice is None:
        what = f"voice {name[:32]!r}" if name is not None else f"locale {el.get('locale', '')[:32]!r}"
        raise BandwidthError(400, "validation", f"{where}: {what} is not supported")
    try:
        return Play("", speech=check(SpeechSpec(text=text, voice=voice)))
    except SpeechInputError as exc:
        field = "voice" if exc.field == "voice" else "text"
        raise BandwidthError(400, "validation", f"{where}: {field}: {exc.message}") from exc


@dataclass
class Pause:
    seconds: float


@dataclass
class Hangup:
    pass


@dataclass
class Redirect:
    url: str
    method: str = "POST"
    username: str | None = None
    password: str | None = None
    tag: str | None = None


@dataclass
class Unsupported:
    verb: str


class ScriptVerb:
    """A verb another module runs (bandwidth_dtmf.py: SendDtmf, Gather): ``run`` returns True to go on,
    False to stop the script, or a new document's verbs to run instead (a callback's answer)."""

    async def run(self, dialect: BandwidthDialect, script: Script) -> bool | list[Verb]:
        raise NotImplementedError


Verb = Play | Pause | Hangup | Redirect | Unsupported | ScriptVerb
# tag -> parser(element, base_url, where) for verbs other modules add (bandwidth_dtmf.py)
EXTRA_VERBS: dict[str, Callable[[Element, str | None, str], Verb]] = {}


def _absolute(url: str, base: str | None, where: str) -> str:
    url = url.strip()
    full = urllib.parse.urljoin(base, url) if base else url
    if urllib.parse.urlsplit(full).scheme.lower() not in ("http", "https"):
        raise BandwidthError(400, "validation", f"{where}: {url!r} is not an absolute http(s) URL"
                             + ("" if base or urllib.parse.urlsplit(url).scheme else
                                " (relative URLs need a document fetched from a URL)"))
    return full


def parse_bxml(raw: bytes, root: str, base_url: str | None = None) -> list[Verb]:
    """A BXML document → its verbs; 400 for anything unsafe or malformed.

    *root* is ``Bxml`` (``PUT …/bxml``) or ``Response`` (documents fetched from callbacks);
    relative URLs resolve against *base_url*, the URL the document came from.
    """
    if len(raw) > MAX_BXML_BYTES:
        raise BandwidthError(400, "validation", f"BXML larger than {MAX_BXML_BYTES} bytes")
    try:
        doc: Element = fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise BandwidthError(400, "validation", f"BXML refused: DTDs and entities are not allowed ({exc})") from exc
    except ParseError as exc:
        raise BandwidthError(400, "validation", f"BXML is not well-formed XML: {exc}") from exc
    except (LookupError, ValueError) as exc:  # an unknown encoding= in the XML declaration (expat raises LookupError)
        raise BandwidthError(400, "validation", f"BXML refused: {clip(exc, 120)}") from exc
    if doc.tag != root:
        raise BandwidthError(400, "validation", f"the BXML root element must be <{root}>, not <{doc.tag}>")
    verbs: list[Verb] = []
    for i, el in enumerate(doc):
        where = f"<{el.tag}> (verb {i + 1})"
        if el.tag == "PlayAudio":
            verbs.append(Play(_absolute(el.text or "", base_url, where), el.get("username"), el.get("password")))
        elif el.tag == "SpeakSentence":
            verbs.append(speak_sentence(el, where))
        elif el.tag == "Pause":
            try:
                seconds = float(el.get("duration", "1"))
            except ValueError:
                seconds = -1.0
            if not 0 <= seconds <= MAX_PAUSE_S:
                raise BandwidthError(400, "validation", f"{where}: duration must be 0-{MAX_PAUSE_S:g} seconds")
            verbs.append(Pause(seconds))
        elif el.tag == "Hangup":
            verbs.append(Hangup())
        elif el.tag == "Redirect":
            method = el.get("redirectMethod", "POST").upper()
            if method not in ("GET", "POST"):
                raise BandwidthError(400, "validation", f"{where}: redirectMethod must be GET or POST")
            verbs.append(Redirect(_absolute(el.get("redirectUrl", ""), base_url, where), method,
                                  el.get("username"), el.get("password"), el.get("tag")))
        elif el.tag in EXTRA_VERBS:
            verbs.append(EXTRA_VERBS[el.tag](el, base_url, where))
        else:
            verbs.append(Unsupported(el.tag))
    return verbs


# -- running scripts -----------------------------------------------------------------
@dataclass
class Script:
    """The BXML currently executing on one call (a new document replaces it)."""

    call_id: str
    task: asyncio.Task[None] | None = None
    playbacks: set[str] = field(default_factory=set)


async def _read_capped(stream: aiohttp.StreamReader) -> bytes:
    """At most MAX_BXML_BYTES + 1 bytes (enough for parse_bxml to refuse an oversized document)."""
    buf = bytearray()
    while len(buf) <= MAX_BXML_BYTES:
        chunk = await stream.read(MAX_BXML_BYTES + 1 - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _user(uri: str) -> str:
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    return urllib.parse.unquote(rest.split("@", 1)[0].split(";", 1)[0])


class BandwidthDialect:
    def __init__(self, server: Node) -> None:
        self.server = server
        s = server.settings
        self.username, self.password = s.bandwidth_username, s.bandwidth_password
        self.account_id = s.bandwidth_account_id
        self.answer_url = s.bandwidth_answer_url
        self._scripts: dict[str, Script] = {}
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tokens: dict[str, float] = {}  # OAuth2 bearer token → expiry (monotonic)
        self._initiated: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        # callbacks go to the application under the egress webhook policy (the answer URL's host is trusted
        # as configured; redirectUrl and <Redirect> URLs from API callers and BXML must pass webhook_allow_cidrs)

    @property
    def enabled(self) -> bool:
        return bool(self.username and self.password)

    # -- auth ------------------------------------------------------------
    def _basic_ok(self, header: str) -> bool:
        return self.enabled and basic_matches(header, self.username or "", self.password or "")

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        if not self.enabled:
            raise BandwidthError(401, "unauthorized", "the Bandwidth dialect is disabled "
                                 "(MEDIASRV_BANDWIDTH_USERNAME / MEDIASRV_BANDWIDTH_PASSWORD are not set)")
        if header.lower().startswith("bearer "):
            expiry = self._tokens.get(header[7:].strip())
            if expiry is not None and expiry > time.monotonic():
                return
        elif self._basic_ok(header):
            return
        raise BandwidthError(401, "unauthorized", "missing or wrong credentials")

    def _account(self, request: web.Request) -> str:
        account = request.match_info["account_id"]
        if self.account_id and account != self.account_id:
            raise BandwidthError(403, "forbidden", f"these credentials are not valid for account {account!r}")
        return account

    def _call(self, call_id: str) -> Call:
        try:
            return self.server.commands.live_call(call_id, answered=True)
        except CommandError as exc:
            raise bandwidth_error(exc) from None

    # -- HTTP: the auth middleware (behind error_shape, mediasrv/api/dialect.py), then the routes ---------
    async def auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Basic or an OAuth2 bearer token everywhere but the token endpoint (Basic only, its own errors)."""
        if request.match_info.route.resource is None or request.match_info.route.resource.canonical != TOKEN_PATH:
            self._authenticate(request)
        return await handler(request)

    async def token(self, request: web.Request) -> web.Response:
        """OAuth2 client-credentials: the SDK's ``client_id``/``client_secret`` are the dialect's user/password."""
        if not self._basic_ok(request.headers.get("Authorization", "")):
            return web.json_response({"error": "invalid_client"}, status=401)
        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "invalid_request", "error_description": "body too large"}, status=413)
        except (ValueError, LookupError, AssertionError, HttpProcessingError):  # bad multipart, charset, encoding
            return web.json_response({"error": "invalid_request", "error_description": "malformed form body"},
                                     status=400)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
        self._tokens[token] = now + TOKEN_TTL_S
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_TTL_S})

    async def update_bxml(self, request: web.Request) -> web.Response:
        self._account(request)
        raw = await _read_capped(request.content)
        verbs = parse_bxml(raw, "Bxml")
        call = self._call(request.match_info["call_id"])
        self.start(call.call_id, verbs)
        return web.Response(status=204)

    async def update_call(self, request: web.Request) -> web.Response:
        self._account(request)
        body = await self._json(request)
        call = self._call(request.match_info["call_id"])
        state = body.get("state", "active")
        if state not in ("active", "completed"):
            raise BandwidthError(400, "validation", "state must be 'active' or 'completed'")
        if state == "completed":
            await self.server.sip.hangup(call.call_id, cause="normal_clearing", by="api")
            return web.Response(status=200)
        url = body.get("redirectUrl")
        if url is not None:
            redirect = Redirect(
                _absolute(str(url), None, "redirectUrl"), str(body.get("redirectMethod") or "POST").upper(),
                body.get("username"), body.get("password"), body.get("tag"),
            )
            if redirect.method not in ("GET", "POST"):
                raise BandwidthError(400, "validation", "redirectMethod must be GET or POST")
            self.start(call.call_id, [redirect])
        return web.Response(status=200)

    async def fallback(self, request: web.Request) -> web.Response:
        raise BandwidthError(404, "not-found", "no such Voice API resource")

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise BandwidthError(400, "validation", "request body too large") from exc
        try:
            return parse_json_object(raw)
        except BodyError as exc:
            raise BandwidthError(400, "validation", str(exc)) from exc

    # -- scripts -----------------------------------------------------------
    def start(self, call_id: str, verbs: list[Verb]) -> None:
        """Run *verbs* on the call, replacing (and silencing) whatever BXML ran there before."""
        old = self._scripts.pop(call_id, None)
        if old is not None and old.task is not None:
            old.task.cancel()
        script = Script(call_id)
        self._scripts[call_id] = script
        script.task = asyncio.get_running_loop().create_task(self._run(script, verbs))

    async def _run(self, script: Script, verbs: list[Verb]) -> None:
        documents = 1
        try:
            i = 0
            while i < len(verbs):
                verb = verbs[i]
                if isinstance(verb, Play):
                    batch: list[Play] = []
                    while i < len(verbs) and isinstance(verbs[i], Play):
                        batch.append(verbs[i])  # type: ignore[arg-type]
                        i += 1
                    if not await self._play(script, batch):
                        return
                    continue
                if isinstance(verb, Pause):
                    await asyncio.sleep(verb.seconds)
                elif isinstance(verb, Hangup):
                    await self.server.sip.hangup(script.call_id, cause="normal_clearing", by="api")
                    return
                elif isinstance(verb, Redirect):
                    documents += 1
                    if documents > MAX_DOCUMENTS_PER_RUN:
                        self._error(script.call_id, "Redirect", f"more than {MAX_DOCUMENTS_PER_RUN} documents "
                                    "without end; stopped")
                        return
                    fetched = await self._fetch(script.call_id, "redirect", verb.url, verb.method,
                                                verb.username, verb.password, verb.tag)
                    if fetched is None:
                        return
                    verbs, i = fetched[0], 0  # URLs in it were resolved against its own URL
                    continue
                elif isinstance(verb, ScriptVerb):
                    outcome = await verb.run(self, script)
                    if outcome is False:
                        return
                    if isinstance(outcome, list):  # a callback answered with a new document: it replaces this one
                        documents += 1
                        verbs, i = outcome, 0
                        continue
                else:
                    self._error(script.call_id, verb.verb, f"BXML verb <{verb.verb}> is not supported; skipped")
                i += 1
        except asyncio.CancelledError:
            for pb_id in script.playbacks:  # replaced by a newer document: its audio stops too
                self.server.commands.stop_playback(pb_id, by="api")
            raise
        finally:
            if self._scripts.get(script.call_id) is script:
                del self._scripts[script.call_id]

    async def _play(self, script: Script, batch: list[Play]) -> bool:
        """Queue consecutive PlayAudio verbs back to back (no gap), then wait until all have ended."""
        ids: list[str] = []
        for verb in batch:
            spec = SourceSpec(speech=verb.speech) if verb.speech is not None else \
                SourceSpec(url=verb.url, username=verb.username, password=verb.password)
            try:
                playbacks = self.server.commands.play(script.call_id, PlayRequest(sources=[spec]))
            except LegUnavailable:
                return False  # the call's leg is gone
            except InvalidCommand as exc:
                self._error(script.call_id, "SpeakSentence" if verb.speech else "PlayAudio",
                            f"cannot play {spec.describe()}: {exc}")
                continue
            ids += [pb.id for pb in playbacks]
        script.playbacks.update(ids)
        loop = asyncio.get_running_loop()
        waits = []
        for pb_id in ids:
            pb = self.server.media.get_playback(pb_id)
            if pb is not None and pb.ended:
                continue
            fut = self._waiters[pb_id] = loop.create_future()
            waits.append(fut)
        try:
            ended = await asyncio.gather(*waits)
        finally:
            for pb_id in ids:
                self._waiters.pop(pb_id, None)
        script.playbacks.difference_update(ids)
        return all(e.get("status") != "call_hangup" for e in ended)

    def _error(self, call_id: str, verb: str, message: str, url: str | None = None) -> None:
        log.warning("BXML on %s: %s", call_id, message)
        self.server.events.publish("bxml.error", call_id, {"verb": verb, "message": message,
                                                           "url": url.split("?", 1)[0] if url else None})

    # -- callbacks to the application ------------------------------------------
    def callback_body(self, event_type: str, call: Call, tag: str | None = None) -> dict[str, Any]:
        host, port = self.server.http_address or ("127.0.0.1", 0)
        account = self.account_id or ""
        body: dict[str, Any] = {
            "eventType": event_type,
            "eventTime": iso_z(time.time(), fraction=False),
            "accountId": account,
            "applicationId": "mediasrv",
            "from": _user(call.from_uri),
            "to": _user(call.to_uri),
            "direction": "inbound" if call.direction is Direction.INBOUND else "outbound",
            "callId": call.call_id,
            "callUrl": f"http://{host}:{port}/api/v2/accounts/{account}/calls/{call.call_id}",
            "startTime": iso_z(call.created_at, fraction=False),
            "sipCallId": call.sip_call_id,
        }
        if event_type != "initiate":
            body["answerTime"] = iso_z(call.answered_at, fraction=False)
        if tag is not None:
            body["tag"] = tag
        return body

    async def _fetch(self, call_id: str, event_type: str, url: str, method: str = "POST",
                     username: str | None = None, password: str | None = None,
                     tag: str | None = None, extra: dict[str, Any] | None = None) -> tuple[list[Verb], str] | None:
        """Send the callback, parse the ``<Response>`` it returns; None (and an error event) on failure."""
        call = self.server.registry.get(call_id)
        if call is None or call.state is CallState.ENDED:
            return None
        body = self.callback_body(event_type, call, tag)
        body.update(extra or {})  # the event's own fields (gather: digits, terminatingDigit)
        if self._session is None or self._session.closed:
            self._session = self.server.egress.session(Purpose.WEBHOOK, "mediasrv-bandwidth/0.1")
        auth = aiohttp.BasicAuth(username, password or "") if username else None
        try:
            kwargs: dict[str, Any] = (
                {"params": {k: str(v) for k, v in body.items() if v is not None}} if method == "GET" else {"json": body}
            )
            async with self._session.request(
                method, url, auth=auth, allow_redirects=False,  # a redirect could lead past the address policy
                timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S), **kwargs
            ) as resp:
                raw = await _read_capped(resp.content)
                if 300 <= resp.status < 400:
                    self._error(call_id, event_type, f"callback answered HTTP {resp.status}: redirect not followed",
                                url)
                    return None
                if resp.status >= 300:
                    self._error(call_id, event_type, f"callback answered HTTP {resp.status}", url)
                    return None
        except RedirectRefused as exc:
            self._error(call_id, event_type, f"callback failed: {exc}", url)
            return None
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            refused = refusal_of(exc)
            if refused is not None:
                self._error(call_id, event_type, f"callback refused: {refused}", url)
            elif isinstance(exc, aiohttp.ClientConnectorError):
                self._error(call_id, event_type, f"callback refused: cannot connect: {exc}", url)
            else:
                self._error(call_id, event_type, f"callback failed: {exc.__class__.__name__}: {exc}", url)
            return None
        if not raw.strip():
            return [], url  # an empty answer: nothing more to do
        try:
            return parse_bxml(raw, "Response", base_url=url), url
        except BandwidthError as exc:
            self._error(call_id, event_type, exc.description, url)
            return None

    async def _answer_flow(self, call: Call, event_type: str) -> None:
        assert self.answer_url
        fetched = await self._fetch(call.call_id, event_type, self.answer_url)
        if fetched is None:
            return
        if call.state is CallState.RINGING:  # ring-and-wait mode: the BXML answers the call
            try:
                await self.server.sip.answer(call.call_id)
            except RuntimeError as exc:
                self._error(call.call_id, event_type, f"cannot answer: {exc}")
                return
        if self.server.registry.get(call.call_id) and call.state is CallState.ANSWERED:
            self.start(call.call_id, fetched[0])

    # -- listeners ---------------------------------------------------------------
    def on_call(self, type_: str, call: Call) -> None:
        """Registry listener: answer callbacks, and no script outlives its call."""
        if type_ == "call.hangup":
            self._initiated.discard(call.call_id)
            script = self._scripts.pop(call.call_id, None)
            if script is not None and script.task is not None:
                script.task.cancel()
            return
        if not self.answer_url or not self.enabled or call.call_id in self._initiated:
            return
        inbound = call.direction is Direction.INBOUND
        # ring-and-wait mode: ask the application while ringing; its BXML then answers the call
        trigger = "call.ringing" if inbound and not self.server.settings.auto_answer else "call.answered"
        if type_ == trigger:
            self._initiated.add(call.call_id)
            asyncio.get_running_loop().create_task(self._answer_flow(call, "initiate" if inbound else "answer"))

    def on_event(self, event: Event) -> None:
        """Event-bus listener: wakes the script waiting for a playback to end."""
        if event.type == "playback.ended":
            fut = self._waiters.get(event.data.get("playback_id", ""))
            if fut is not None and not fut.done():
                fut.set_result(event.data)

    async def close(self) -> None:
        for script in list(self._scripts.values()):
            if script.task is not None:
                script.task.cancel()
        if self._session is not None:
            await self._session.close()


BANDWIDTH_KEY: web.AppKey[BandwidthDialect] = web.AppKey("bandwidth")
TOKEN_PATH = "/api/v2/oauth2/token"

# Listed in /openapi.json under "x-dialects": each route and the native resource it maps onto.
_CALL = "/api/v2/accounts/{account_id}/calls/{call_id}"
OPENAPI_DIALECT: dict[str, Any] = {
    "auth": "HTTP Basic MEDIASRV_BANDWIDTH_USERNAME:PASSWORD, or Bearer from POST /api/v2/oauth2/token",
    "errors": '{"type", "description", "id"}',
    "webhooks": "initiate/answer callbacks to MEDIASRV_BANDWIDTH_ANSWER_URL; the returned BXML is executed",
    "routes": [
        {"method": "PUT", "path": _CALL + "/bxml",
         "maps_to": "BXML verbs: PlayAudio -> POST /v1/calls/{call_id}/playbacks, Hangup -> DELETE /v1/calls/{call_id}"},
        {"method": "POST", "path": _CALL, "maps_to": "redirectUrl -> fetch BXML; state=completed -> DELETE /v1/calls/{call_id}"},
        {"method": "POST", "path": "/api/v2/oauth2/token", "maps_to": "client-credentials token for Bearer auth"},
    ],
}
