"""ACS Call Automation DTMF: continuous recognition, ``:recognize`` (DTMF), ``:sendDtmfTones``.

Translation onto the core's IVR (media/ivr.py), in ACS's wire shapes (what the
``azure-communication-callautomation`` SDK sends and accepts):

- ``:startContinuousDtmfRecognition`` / ``:stopContinuousDtmfRecognition`` (200): each key the
  target participant presses becomes ``ContinuousDtmfRecognitionToneReceived`` (tone names as
  ACS's DtmfTone enum: "one", "pound", "asterisk", and a per-call ``sequenceId``); stopping sends
  ``ContinuousDtmfRecognitionStopped``.
- ``:recognize`` with ``recognizeInputType`` "dtmf" (202): the core's play-and-collect on the
  target's leg; ``RecognizeCompleted`` (``dtmfResult.tones``, 8531 max tones / 8514 stop tone),
  ``RecognizeFailed`` (8510 initial silence, 8532 inter-digit timeout) or ``RecognizeCanceled``
  (``:cancelAllMediaOperations``, a newer recognize).  Speech and choices need a recognizer
  mediasrv does not have: refused naming ``recognizeInputType``.
- ``:sendDtmfTones`` (202, ``{"operationContext"}``): the core's DTMF out (RFC 4733, or in-band
  tones when the far end offered no telephone-event) → ``SendDtmfTonesCompleted``.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..calls.commands import InvalidCommand, LegUnavailable
from ..calls.registry import Call
from ..events.bus import Event
from ..media.collect import CollectRequest
from ..media.player import PlayRequest, SourceSpec
from .acs import (
    CANCELED,
    COMPLETED,
    AcsError,
    _optional_str,
    _optional_url,
    _result,
    _source,
    matches,
    parse_identifier,
)

if TYPE_CHECKING:
    from .acs import AcsDialect
    from .dialect import Dialect

TONE_NAMES = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
              "7": "seven", "8": "eight", "9": "nine", "A": "a", "B": "b", "C": "c", "D": "d", "#": "pound",
              "*": "asterisk"}
TONE_KEYS = {v: k for k, v in TONE_NAMES.items()}
MAX_TONES = 128  # maxTonesToCollect and tones sent (the core caps a send at 64)
SEND_TONE_MS = 100
# resultInformation (code, subCode, message) as ACS documents them for recognize and DTMF
MAX_TONES_RECEIVED = (200, 8531, "Action completed, max digits received.")
STOP_TONE = (200, 8514, "Action completed as stop tone was detected.")
INITIAL_SILENCE = (400, 8510, "Action failed, initial silence timeout reached.")
INTER_DIGIT = (400, 8532, "Action failed, inter-digit silence timeout reached.")
TONE_RECEIVED = (200, 0, "Success")
CONTINUOUS_STOPPED = (200, 0, "Continuous DTMF recognition stopped.")
SEND_FAILED = (400, 8508, "Action failed, the operation was canceled.")


@dataclass
class Operation:
    """Where one DTMF operation's events go."""

    call_id: str  # the call connection
    leg: str  # the target participant's leg
    context: str | None
    callback: str | None
    sequence: int = 0  # continuous recognition: the last sequenceId sent


def _tone(name: Any, where: str) -> str:
    key = TONE_KEYS.get(name.lower()) if isinstance(name, str) else None
    if key is None:
        raise AcsError(400, "BadRequest", f"{where} must be a DTMF tone name (zero..nine, a..d, pound, asterisk)",
                       where)
    return key


def _seconds(options: dict[str, Any], name: str, where: str, default: int, lo: int, hi: int) -> int:
    value = options.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise AcsError(400, "BadRequest", f"{where} must be an integer between {lo} and {hi}", where)
    return value


class AcsDtmf:
    def __init__(self, dialect: AcsDialect) -> None:
        self.d = dialect
        self.server = dialect.server
        self._continuous: dict[str, Operation] = {}  # leg -> continuous recognition on it
        self._recognitions: dict[str, Operation] = {}  # collect id -> its recognize
        self._sends: dict[str, Operation] = {}  # leg -> the send in progress on it

    def operations(self) -> dict[tuple[str, str], Callable[[str, dict[str, Any]], web.Response]]:
        return {("POST", ":startContinuousDtmfRecognition"): self.start_continuous,
                ("POST", ":stopContinuousDtmfRecognition"): self.stop_continuous,
                ("POST", ":recognize"): self.recognize,
                ("POST", ":sendDtmfTones"): self.send_tones}

    # -- helpers ------------------------------------------------------------------------------------
    def _target(self, call: Call, body: dict[str, Any], where: str = "targetParticipant") -> str:
        """The leg of the participant named: the call connection's own or one bridged with it."""
        item = body.get("targetParticipant")
        if item is None:
            raise AcsError(400, "BadRequest", f"{where} is required", where)
        identity = parse_identifier(item, where)
        for leg in [call.call_id, *self.server.media.peers_of(call.call_id)]:
            c = self.server.registry.get(leg)
            if c is not None and matches(identity, c):
                return leg
        raise AcsError(400, "BadRequest", f"{where}: {identity[1]} is not a participant of this call", where)

    def _operation(self, call: Call, leg: str, body: dict[str, Any]) -> Operation:
        context = _optional_str(body, "operationContext")
        callback = _optional_url(body, "operationCallbackUri")
        if callback:
            self.d._call_callbacks[call.call_id] = callback
        url = callback or self.d._call_callbacks.get(call.call_id) or self.server.settings.acs_callback_url
        return Operation(call.call_id, leg, context, url)

    def _send(self, op: Operation, kind: str, result: tuple[int, int, str], **extra: Any) -> None:
        if not op.callback:
            return
        call = self.server.registry.get(op.call_id)
        sip_call_id = call.sip_call_id if call else op.call_id
        data = {"callConnectionId": op.call_id, "serverCallId": base64.b64encode(sip_call_id.encode()).decode(),
                "correlationId": str(uuid.uuid5(uuid.NAMESPACE_URL, op.call_id)), "operationContext": op.context,
                "resultInformation": _result(result), **extra}
        self.d._post(op.call_id, op.callback, kind, data)

    # -- continuous recognition ---------------------------------------------------------------------
    def start_continuous(self, call_id: str, body: dict[str, Any]) -> web.Response:
        call = self.d._live_call(call_id)
        leg = self._target(call, body)
        self._continuous[leg] = self._operation(call, leg, body)
        return web.Response(status=200)

    def stop_continuous(self, call_id: str, body: dict[str, Any]) -> web.Response:
        call = self.d._live_call(call_id)
        leg = self._target(call, body)
        running = self._continuous.pop(leg, None)
        if running is not None:
            op = self._operation(call, leg, body)
            self._send(op, "ContinuousDtmfRecognitionStopped", CONTINUOUS_STOPPED)
        return web.Response(status=200)

    # -- recognize ------------------------------------------------------------------------------------
    def recognize(self, call_id: str, body: dict[str, Any]) -> web.Response:
        kind = body.get("recognizeInputType")
        if kind is None:
            raise AcsError(400, "BadRequest", "recognizeInputType is required", "recognizeInputType")
        if not isinstance(kind, str) or kind.lower() != "dtmf":
            raise AcsError(400, "BadRequest", f"recognizeInputType {kind!r} is not supported: mediasrv recognizes "
                                              "DTMF only (no speech recognizer)", "recognizeInputType")
        options = body.get("recognizeOptions")
        if not isinstance(options, dict):
            raise AcsError(400, "BadRequest", "recognizeOptions must be an object", "recognizeOptions")
        dtmf = options.get("dtmfOptions") or {}
        if not isinstance(dtmf, dict):
            raise AcsError(400, "BadRequest", "recognizeOptions.dtmfOptions must be an object",
                           "recognizeOptions.dtmfOptions")
        w = "recognizeOptions.dtmfOptions."
        max_tones = _seconds(dtmf, "maxTonesToCollect", w + "maxTonesToCollect", 1, 1, MAX_TONES)
        inter = _seconds(dtmf, "interToneTimeoutInSeconds", w + "interToneTimeoutInSeconds", 2, 1, 60)
        initial = _seconds(options, "initialSilenceTimeoutInSeconds",
                           "recognizeOptions.initialSilenceTimeoutInSeconds", 5, 1, 300)
        stop = dtmf.get("stopTones") or []
        if not isinstance(stop, list):
            raise AcsError(400, "BadRequest", w + "stopTones must be a list of tone names", w + "stopTones")
        stop_keys = "".join(_tone(t, f"{w}stopTones[{i}]") for i, t in enumerate(stop))
        interrupt_prompt = options.get("interruptPrompt", False)
        if not isinstance(interrupt_prompt, bool):
            raise AcsError(400, "BadRequest", "recognizeOptions.interruptPrompt must be a boolean",
                           "recognizeOptions.interruptPrompt")
        interrupt = body.get("interruptCallMediaOperation", False)
        if not isinstance(interrupt, bool):
            raise AcsError(400, "BadRequest", "interruptCallMediaOperation must be a boolean",
                           "interruptCallMediaOperation")
        prompts = body.get("playPrompts") or ([body["playPrompt"]] if body.get("playPrompt") is not None else [])
        if not isinstance(prompts, list):
            raise AcsError(400, "BadRequest", "playPrompts must be a list", "playPrompts")
        specs = [self._prompt(item, i, "playPrompts" in body) for i, item in enumerate(prompts)]
        call = self.d._live_call(call_id)
        leg = self._target(call, options, "recognizeOptions.targetParticipant")
        op = self._operation(call, leg, body)
        request = CollectRequest(
            prompt=PlayRequest(sources=specs) if specs else None, min_digits=0, max_digits=max_tones,
            terminators=stop_keys, first_digit_timeout_ms=initial * 1000, inter_digit_timeout_ms=inter * 1000,
            barge_in=interrupt_prompt, command_id=op.context,
        )
        if interrupt:
            self.server.commands.stop_playbacks(leg, "all", by="api")
        try:
            collect = self.server.commands.collect(leg, request)
        except LegUnavailable as exc:
            raise AcsError(400, "8501", "the call has no media leg") from exc
        except InvalidCommand as exc:
            raise AcsError(exc.status, exc.reason, str(exc)) from exc
        self._recognitions[collect.id] = op
        return web.Response(status=202)

    @staticmethod
    def _prompt(item: Any, i: int, listed: bool) -> SourceSpec:
        """A prompt parsed as play's sources are, its errors naming ``playPrompt``/``playPrompts[i]``."""
        try:
            return _source(item, i)
        except AcsError as exc:
            name = f"playPrompts[{i}]" if listed else "playPrompt"
            exc.message = exc.message.replace(f"playSources[{i}]", name)
            if exc.target:
                exc.target = exc.target.replace(f"playSources[{i}]", name)
            raise

    def cancel(self, call_id: str) -> None:
        """``:cancelAllMediaOperations``: the call's running recognitions end ``RecognizeCanceled``."""
        for collect_id, op in list(self._recognitions.items()):
            if op.call_id == call_id:
                self.server.media.ivr.stop_collect(collect_id)

    # -- send -------------------------------------------------------------------------------------------
    def send_tones(self, call_id: str, body: dict[str, Any]) -> web.Response:
        tones = body.get("tones")
        if not isinstance(tones, list) or not tones:
            raise AcsError(400, "BadRequest", "tones must be a non-empty list of tone names", "tones")
        if len(tones) > 64:
            raise AcsError(400, "BadRequest", "tones: at most 64 tones in one request", "tones")
        digits = "".join(_tone(t, f"tones[{i}]") for i, t in enumerate(tones))
        call = self.d._live_call(call_id)
        leg = self._target(call, body)
        op = self._operation(call, leg, body)
        try:
            self.server.commands.send_dtmf(leg, digits, SEND_TONE_MS)
        except LegUnavailable as exc:
            raise AcsError(400, "8501", "the participant has no media leg") from exc
        except InvalidCommand as exc:
            raise AcsError(exc.status, exc.reason, str(exc), "tones") from exc
        self._sends[leg] = op
        return web.json_response({"operationContext": op.context}, status=202)

    # -- events -----------------------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        """Bus listener: key presses, collects and sends of the operations above → ACS events."""
        if event.type == "dtmf.received":
            op = self._continuous.get(event.call_id)
            if op is not None:
                op.sequence += 1
                self._send(op, "ContinuousDtmfRecognitionToneReceived", TONE_RECEIVED,
                           tone=TONE_NAMES.get(str(event.data.get("digit")), ""), sequenceId=op.sequence)
        elif event.type == "collect.ended":
            op = self._recognitions.pop(str(event.data.get("id")), None)
            if op is not None:
                self._recognized(op, event.data)
        elif event.type == "dtmf.sent":
            op = self._sends.pop(event.call_id, None)
            if op is not None:
                self._send(op, "SendDtmfTonesCompleted", COMPLETED)
        elif event.type == "call.hangup":
            self._continuous.pop(event.call_id, None)
            op = self._sends.pop(event.call_id, None)
            if op is not None:  # the digits never all went out
                self._send(op, "SendDtmfTonesFailed", SEND_FAILED)

    def _recognized(self, op: Operation, d: dict[str, Any]) -> None:
        reason, digits = d.get("reason"), str(d.get("digits") or "")
        tones = {"recognitionType": "dtmf", "dtmfResult": {"tones": [TONE_NAMES[c] for c in digits]}}
        if reason == "max_digits":
            self._send(op, "RecognizeCompleted", MAX_TONES_RECEIVED, **tones)
        elif reason == "terminator":
            self._send(op, "RecognizeCompleted", STOP_TONE, **tones)
        elif reason == "timeout":
            self._send(op, "RecognizeFailed", INTER_DIGIT if digits else INITIAL_SILENCE)
        elif reason == "stopped":
            self._send(op, "RecognizeCanceled", CANCELED)
        # call_hangup: CallDisconnected says it; ACS sends no events for a call after that


def setup(unit: Dialect, dialect: AcsDialect) -> AcsDtmf:
    dtmf = AcsDtmf(dialect)
    dialect.extra_operations.update(dtmf.operations())
    dialect.cancel_hooks.append(dtmf.cancel)
    unit.on_event.append(dtmf.on_event)
    return dtmf


_CONN = "/calling/callConnections/{call_connection_id}"
OPENAPI_ROUTES = [
    {"method": "POST", "path": _CONN + ":startContinuousDtmfRecognition",
     "maps_to": "dtmf.received events of the target participant (ContinuousDtmfRecognitionToneReceived)"},
    {"method": "POST", "path": _CONN + ":stopContinuousDtmfRecognition", "maps_to": "(stops the above)"},
    {"method": "POST", "path": _CONN + ":recognize", "maps_to": "POST /v1/calls/{call_id}/collect (DTMF only)"},
    {"method": "POST", "path": _CONN + ":sendDtmfTones", "maps_to": "POST /v1/calls/{call_id}/dtmf"},
]
