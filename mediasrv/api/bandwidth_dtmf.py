"""BXML ``<SendDtmf>`` and ``<Gather>`` for the Bandwidth dialect's interpreter (bandwidth.py).

- ``<SendDtmf toneDuration="200" toneInterval="400">12w3#</SendDtmf>``: the core's DTMF out
  (RFC 4733 when the far end offered telephone-event, else in-band tones); ``w`` waits 0.5 s and
  ``W`` 1 s between digits, as Bandwidth documents; the script goes on when the digits are out.
- ``<Gather gatherUrl=… terminatingDigits="#" maxDigits="5" interDigitTimeout="5"
  firstDigitTimeout="5" repeatCount="1" tag=…><PlayAudio>…</PlayAudio></Gather>`` (or ``<SpeakSentence>``): the core's
  play-and-collect; a key stops the prompt; with no key at all the prompt plays again, up to
  ``repeatCount`` times.  Then a ``gather`` callback (``digits``, ``terminatingDigit``) goes to
  ``gatherUrl`` and the ``<Response>`` it answers replaces the rest of the document; without a
  ``gatherUrl`` the document goes on.  Nested ``<SpeakSentence>`` prompts are spoken (the
  speech source); speech *input* needs a recognizer mediasrv does not have: refused (400).

- ``<StartGather dtmfUrl=… dtmfMethod tag username password/>``: from then on (across later
  documents, until ``<StopGather/>`` or the end of the call) each key is a ``dtmf`` callback
  (``digit``) to ``dtmfUrl``, in order; its answer is not run.

Bad attributes are refused when the document is parsed (400 ``validation`` naming the verb and
attribute), before anything on the call changes.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ..calls.commands import InvalidCommand, LegUnavailable
from ..events.bus import Event
from ..media.collect import CollectRequest
from ..media.player import PlayRequest, SourceSpec
from .bandwidth import EXTRA_VERBS, BandwidthError, Play, ScriptVerb, _absolute, speak_sentence

if TYPE_CHECKING:
    from .bandwidth import BandwidthDialect, Script, Verb

KEYS = "0123456789*#ABCD"
MAX_SEND_DIGITS = 50


def _number(el: Element, name: str, where: str, default: float, lo: float, hi: float) -> float:
    raw = el.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise BandwidthError(400, "validation", f"{where}: {name} must be a number between {lo:g} and {hi:g}")
    return value


@dataclass
class Waits:
    """Futures the verbs wait on, resolved by the event-bus listener."""

    sent: dict[str, asyncio.Future[None]] = field(default_factory=dict)  # call id -> its send's end
    collects: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)  # collect id -> its end
    last_digit: dict[str, str] = field(default_factory=dict)  # call id -> the latest key pressed
    continuous: dict[str, StartGather] = field(default_factory=dict)  # call id -> its <StartGather>
    chain: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # call id -> its latest dtmf callback


_WAITS: weakref.WeakKeyDictionary[BandwidthDialect, Waits] = weakref.WeakKeyDictionary()


def _waits(dialect: BandwidthDialect) -> Waits:
    return _WAITS.setdefault(dialect, Waits())


def listener(dialect: BandwidthDialect) -> Callable[[Event], None]:
    waits = _waits(dialect)

    def on_event(event: Event) -> None:
        if event.type == "dtmf.received":
            digit = waits.last_digit[event.call_id] = str(event.data.get("digit") or "")
            start = waits.continuous.get(event.call_id)
            if start is not None:  # one callback per key, in order (each waits for the one before)
                prev = waits.chain.get(event.call_id)
                waits.chain[event.call_id] = asyncio.get_running_loop().create_task(
                    start.notify(dialect, event.call_id, digit, prev))
        elif event.type == "dtmf.sent":
            fut = waits.sent.pop(event.call_id, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif event.type == "collect.ended":
            cfut = waits.collects.pop(str(event.data.get("id")), None)
            if cfut is not None and not cfut.done():
                cfut.set_result(event.data)
        elif event.type == "call.hangup":
            waits.last_digit.pop(event.call_id, None)
            waits.continuous.pop(event.call_id, None)
            waits.chain.pop(event.call_id, None)
            fut = waits.sent.pop(event.call_id, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    return on_event


# -- <SendDtmf> ------------------------------------------------------------------------------------------
@dataclass
class SendDtmf(ScriptVerb):
    digits: str
    tone_ms: int
    interval_ms: int

    async def run(self, dialect: BandwidthDialect, script: Script) -> bool | list[Verb]:
        waits = _waits(dialect)
        loop = asyncio.get_running_loop()
        run = ""
        for c in self.digits + "|":  # "|": flush the last run of keys
            if c in KEYS:
                run += c
                continue
            if run:
                fut = waits.sent[script.call_id] = loop.create_future()
                try:
                    dialect.server.commands.send_dtmf(script.call_id, run, self.tone_ms, self.interval_ms)
                except LegUnavailable:
                    return False  # the call's leg is gone
                except InvalidCommand as exc:
                    waits.sent.pop(script.call_id, None)
                    dialect._error(script.call_id, "SendDtmf", f"cannot send digits: {exc}")
                    return True
                await fut
                run = ""
            if c in "wW":
                await asyncio.sleep(0.5 if c == "w" else 1.0)
        return dialect.server.registry.get(script.call_id) is not None


def parse_send_dtmf(el: Element, base_url: str | None, where: str) -> SendDtmf:
    raw = (el.text or "").strip()
    if not raw or len(raw) > MAX_SEND_DIGITS or any(c not in KEYS and c not in "wW" for c in raw.upper()):
        raise BandwidthError(400, "validation", f"{where}: the digits must be 1-{MAX_SEND_DIGITS} of 0-9, *, #, "
                             "A-D, w (0.5 s pause), W (1 s pause)")
    digits = "".join(c if c in "wW" else c.upper() for c in raw)
    # Bandwidth allows 50-5000 ms tones; the core's sender caps a tone at 2000 ms
    tone = _number(el, "toneDuration", where, 200, 50, 2000)
    interval = _number(el, "toneInterval", where, 400, 50, 5000)
    return SendDtmf(digits, int(tone), int(interval))


# -- <Gather> ----------------------------------------------------------------------------------------------
@dataclass
class Gather(ScriptVerb):
    url: str | None
    method: str
    username: str | None
    password: str | None
    tag: str | None
    terminators: str
    max_digits: int
    inter_digit_s: float
    first_digit_s: float
    repeat_count: int
    prompts: list[Play]

    async def run(self, dialect: BandwidthDialect, script: Script) -> bool | list[Verb]:
        waits = _waits(dialect)
        result: dict[str, Any] = {}
        for _ in range(self.repeat_count):
            request = CollectRequest(
                prompt=PlayRequest(sources=[SourceSpec(speech=p.speech) if p.speech is not None else
                                            SourceSpec(url=p.url, username=p.username, password=p.password)
                                            for p in self.prompts]) if self.prompts else None,
                min_digits=0, max_digits=self.max_digits, terminators=self.terminators,
                first_digit_timeout_ms=max(1, int(self.first_digit_s * 1000)),
                inter_digit_timeout_ms=int(self.inter_digit_s * 1000), barge_in=True,
            )
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            try:
                collect = dialect.server.commands.collect(script.call_id, request)
            except LegUnavailable:
                return False
            except InvalidCommand as exc:
                dialect._error(script.call_id, "Gather", f"cannot gather: {exc}")
                return True
            waits.collects[collect.id] = fut
            try:
                result = await fut
            except asyncio.CancelledError:  # a newer document replaced this one: the gather ends with it
                waits.collects.pop(collect.id, None)
                dialect.server.media.ivr.stop_collect(collect.id)
                raise
            if result.get("reason") == "call_hangup":
                return False
            if result.get("digits") or result.get("reason") != "timeout":
                break
        terminating = waits.last_digit.get(script.call_id, "") if result.get("reason") == "terminator" else ""
        if not self.url:
            return True
        fetched = await dialect._fetch(script.call_id, "gather", self.url, self.method, self.username,
                                       self.password, self.tag,
                                       extra={"digits": result.get("digits") or "", "terminatingDigit": terminating})
        if fetched is None:
            return False
        return fetched[0]


def parse_gather(el: Element, base_url: str | None, where: str) -> Gather:
    kind = (el.get("input") or "dtmf").lower()
    if kind != "dtmf":
        raise BandwidthError(400, "validation", f"{where}: input={kind!r} is not supported: mediasrv gathers DTMF "
                             "only (no speech recognizer)")
    url = el.get("gatherUrl")
    method = (el.get("gatherMethod") or "POST").upper()
    if method not in ("GET", "POST"):
        raise BandwidthError(400, "validation", f"{where}: gatherMethod must be GET or POST")
    terminators = el.get("terminatingDigits") or ""
    if len(terminators) > len(KEYS) or any(c not in KEYS for c in terminators.upper()):
        raise BandwidthError(400, "validation", f"{where}: terminatingDigits must be DTMF keys (0-9, *, #, A-D)")
    prompts: list[Play] = []
    for child in el:
        cw = f"{where} <{child.tag}>"
        if child.tag == "PlayAudio":
            prompts.append(Play(_absolute(child.text or "", base_url, cw), child.get("username"),
                                child.get("password")))
        elif child.tag == "SpeakSentence":
            prompts.append(speak_sentence(child, cw))
        else:
            raise BandwidthError(400, "validation", f"{cw}: only <PlayAudio> and <SpeakSentence> may be nested "
                                 "in <Gather>")
    repeat = int(_number(el, "repeatCount", where, 1, 1, 25))
    if repeat * max(1, len(prompts)) > 20:
        raise BandwidthError(400, "validation", f"{where}: repeatCount times the nested verbs must not exceed 20")
    return Gather(
        url=_absolute(url, base_url, where + " gatherUrl") if url else None, method=method,
        username=el.get("username"), password=el.get("password"), tag=el.get("tag"),
        terminators=terminators.upper(), max_digits=int(_number(el, "maxDigits", where, 50, 1, 50)),
        inter_digit_s=_number(el, "interDigitTimeout", where, 5, 1, 60),
        first_digit_s=_number(el, "firstDigitTimeout", where, 5, 0, 60), repeat_count=repeat, prompts=prompts,
    )


# -- <StartGather> / <StopGather> -----------------------------------------------------------------------------
@dataclass
class StartGather(ScriptVerb):
    """Every key pressed from now on (across later documents, until <StopGather> or the end of the
    call) is a ``dtmf`` callback (``digit``) to ``dtmfUrl``; what it answers is not run."""

    url: str
    method: str
    username: str | None
    password: str | None
    tag: str | None

    async def run(self, dialect: BandwidthDialect, script: Script) -> bool | list[Verb]:
        _waits(dialect).continuous[script.call_id] = self
        return True

    async def notify(self, dialect: BandwidthDialect, call_id: str, digit: str,
                     prev: asyncio.Task[None] | None) -> None:
        if prev is not None:
            await asyncio.shield(prev)
        await dialect._fetch(call_id, "dtmf", self.url, self.method, self.username, self.password, self.tag,
                             extra={"digit": digit})


@dataclass
class StopGather(ScriptVerb):
    async def run(self, dialect: BandwidthDialect, script: Script) -> bool | list[Verb]:
        _waits(dialect).continuous.pop(script.call_id, None)
        return True


def parse_start_gather(el: Element, base_url: str | None, where: str) -> StartGather:
    method = (el.get("dtmfMethod") or "POST").upper()
    if method not in ("GET", "POST"):
        raise BandwidthError(400, "validation", f"{where}: dtmfMethod must be GET or POST")
    return StartGather(_absolute(el.get("dtmfUrl", ""), base_url, where + " dtmfUrl"), method,
                       el.get("username"), el.get("password"), el.get("tag"))


EXTRA_VERBS.update({"SendDtmf": parse_send_dtmf, "Gather": parse_gather, "StartGather": parse_start_gather,
                    "StopGather": lambda el, base_url, where: StopGather()})
