"""The media plane's IVR part: DTMF in (RFC 4733 and SIP INFO), barge-in, play-and-collect, DTMF out.

Everything here runs on the event loop, never inside the clock's per-packet path except
:meth:`LegDriver.tick`'s check of ``driver.tx`` (a DTMF send in progress takes the leg's ticks).

- Inbound telephone-events reach :meth:`IvrControl.on_packet` straight from the leg's socket
  reader; a press's first packet stops a playback that named its key (barge-in, before the
  leg's next tick), and its end (once, see media/dtmf.py) emits ``dtmf.received`` and feeds a
  running collect.  SIP INFO digits arrive through :meth:`on_info` as whole presses.
- A collect (media/collect.py) plays its prompt as an ordinary playback with barge-in and ends
  in one ``collect.ended``.
- DTMF out: a :class:`~mediasrv.media.dtmf.DtmfSender` on the driver; the player is held (the
  audio does not advance) until it is done, then ``dtmf.sent``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..content.tones import dtmf_pcm
from ..rtp.leg import RtpLeg
from .clock import Scheduled
from .collect import Collect, CollectRequest
from .dtmf import DetectorStats, DtmfSender, DtmfSignal, TelephoneEventDetector
from .player import Playback, Player, PlayError, PlayRequest

log = logging.getLogger("mediasrv.media")

Emit = Callable[[str, str, dict[str, Any]], None]
MAX_SEND_DIGITS = 64
DROP_REASONS = ("duplicates", "malformed", "unsupported", "inconsistent", "absurd", "flood")


def _drop_counts(stats: DetectorStats) -> tuple[int, ...]:
    return tuple(getattr(stats, reason) for reason in DROP_REASONS)


@dataclass(eq=False)
class LegDtmf:
    detector: TelephoneEventDetector = field(default_factory=TelephoneEventDetector)
    timer: asyncio.TimerHandle | None = None
    collect: Collect | None = None
    collect_timer: asyncio.TimerHandle | None = None


class IvrDriver(Protocol):
    """What the IVR uses of a leg's driver (media/plane.py's LegDriver): declared here, structurally,
    so that ivr.py does not import plane.py, which imports it."""

    @property
    def leg(self) -> RtpLeg: ...
    @property
    def player(self) -> Player: ...
    @property
    def tx(self) -> DtmfSender | None: ...
    @property
    def entry(self) -> Scheduled | None: ...
    @property
    def samples(self) -> int: ...
    @property
    def silence_payload(self) -> bytes: ...
    def start_tx(self, sender: DtmfSender, done: Callable[[], None]) -> None: ...


class IvrPlane(Protocol):
    """What the IVR uses of the media plane (media/plane.py's MediaPlane, which owns an IvrControl)."""

    @property
    def _drivers(self) -> Mapping[str, IvrDriver]: ...
    def play(self, call_id: str, request: PlayRequest) -> list[Playback]: ...
    def stop_playback(self, playback_id: str, by: str = "api") -> bool: ...


class IvrControl:
    def __init__(self, plane: IvrPlane, emit: Emit) -> None:
        self.plane = plane
        self._emit = emit
        self._legs: dict[str, LegDtmf] = {}
        self._collects: dict[str, Collect] = {}  # by id, ended ones kept (bounded) for GET
        self._ended: list[str] = []
        self._prompt_of: dict[str, Collect] = {}  # prompt playback id -> its collect
        self.totals: dict[str, int] = {"received_rfc4733": 0, "received_info": 0, "barge_ins": 0,
                                       "sent_rfc4733": 0, "sent_inband": 0}
        # telephone-event packets dropped, by why, over every leg (live and ended): kept as running
        # totals as packets arrive, so a /metrics scrape costs the same at 1,500 calls as at one
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)

    # -- legs ------------------------------------------------------------------------------------
    def attach(self, call_id: str, driver: IvrDriver) -> None:
        state = self._legs[call_id] = LegDtmf()

        def on_event(ts: int, payload: bytes) -> None:
            state.detector.clock_rate = driver.player.codec.clock_rate  # events count in the audio's clock
            self.on_packet(call_id, state, ts, payload)

        driver.leg.on_event = on_event

    def detach(self, call_id: str) -> None:
        state = self._legs.pop(call_id, None)
        if state is None:
            return
        if state.timer is not None:
            state.timer.cancel()
        if state.collect is not None:
            self._end_collect(state, "call_hangup")

    def drops(self) -> dict[str, int]:
        """Telephone-event packets dropped, by why (live legs and ended ones); O(1), not per leg."""
        return dict(self.dropped)

    def stats(self, call_id: str) -> dict[str, Any] | None:
        state = self._legs.get(call_id)
        return state.detector.stats.as_dict() if state else None

    # -- DTMF in ---------------------------------------------------------------------------------
    def on_packet(self, call_id: str, state: LegDtmf, ts: int, payload: bytes) -> None:
        now = time.monotonic()
        before = _drop_counts(state.detector.stats)
        signals = state.detector.feed(ts, payload, now)
        after = _drop_counts(state.detector.stats)
        if after != before:  # only bad or repeated packets pay for the update
            for reason, b, a in zip(DROP_REASONS, before, after, strict=True):
                self.dropped[reason] += a - b
        for signal in signals:
            self._signal(call_id, state, signal, "rfc4733")
        self._arm(call_id, state)

    def on_info(self, call_id: str, digit: str, duration_ms: int) -> bool:
        """A SIP INFO key press (already parsed); False when the call has no media leg."""
        state = self._legs.get(call_id)
        if state is None:
            return False
        self._signal(call_id, state, DtmfSignal("start", digit, 0), "info")
        self._signal(call_id, state, DtmfSignal("end", digit, 0, duration_ms, "info"), "info")
        return True

    def _arm(self, call_id: str, state: LegDtmf) -> None:
        deadline = state.detector.next_deadline()
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        if deadline is not None:
            loop = asyncio.get_running_loop()
            state.timer = loop.call_later(max(0.0, deadline - time.monotonic()) + 0.001, self._poll, call_id, state)

    def _poll(self, call_id: str, state: LegDtmf) -> None:
        state.timer = None
        if self._legs.get(call_id) is not state:
            return
        for signal in state.detector.poll(time.monotonic()):
            self._signal(call_id, state, signal, "rfc4733")
        self._arm(call_id, state)

    def _signal(self, call_id: str, state: LegDtmf, signal: DtmfSignal, method: str) -> None:
        driver = self.plane._drivers.get(call_id)
        if driver is None:
            return
        if signal.kind == "start":
            if driver.player.barge_in(signal.digit):
                self.totals["barge_ins"] += 1
            return
        self.totals[f"received_{method}"] += 1
        self._emit("dtmf.received", call_id, {"digit": signal.digit, "duration_ms": signal.duration_ms,
                                              "method": method})
        collect = state.collect
        if collect is not None and collect.digit(signal.digit, time.monotonic()):
            self._end_collect(state, collect.reason or "stopped")
        elif collect is not None:
            self._arm_collect(state)

    # -- collect ---------------------------------------------------------------------------------
    def collect(self, call_id: str, request: CollectRequest) -> Collect:
        """Start a collect (replacing a running one, which ends ``stopped``); KeyError: no media leg."""
        request.validate()
        state = self._legs.get(call_id)
        if state is None or call_id not in self.plane._drivers:
            raise KeyError(call_id)
        prompt = request.prompt
        if prompt is not None:
            prompt.target = "self"
            prompt.overlay = False
            if request.barge_in and prompt.barge_in is None:
                prompt.barge_in = "any"
            prompt.validate()
        if state.collect is not None:
            self._end_collect(state, "stopped")
        c = Collect(request, call_id)
        if prompt is not None:
            for pb in self.plane.play(call_id, prompt):
                if not pb.ended:
                    c.prompt_ids.add(pb.id)
                    self._prompt_of[pb.id] = c
        state.collect = c
        self._collects[c.id] = c
        c.start(time.monotonic())
        self._arm_collect(state)
        return c

    def get_collect(self, collect_id: str) -> Collect | None:
        return self._collects.get(collect_id)

    def stop_collect(self, collect_id: str) -> bool:
        c = self._collects.get(collect_id)
        state = self._legs.get(c.call_id) if c is not None else None
        if c is None or c.ended or state is None or state.collect is not c:
            return False
        self._end_collect(state, "stopped")
        return True

    def playback_ended(self, pb: Playback) -> None:
        c = self._prompt_of.pop(pb.id, None)
        if c is None or c.ended:
            return
        c.prompt_ended(pb.id, time.monotonic())
        state = self._legs.get(c.call_id)
        if state is not None and state.collect is c:
            self._arm_collect(state)

    def _arm_collect(self, state: LegDtmf) -> None:
        if state.collect_timer is not None:
            state.collect_timer.cancel()
            state.collect_timer = None
        c = state.collect
        if c is None or c.deadline is None:
            return
        loop = asyncio.get_running_loop()
        state.collect_timer = loop.call_later(max(0.0, c.deadline - time.monotonic()), self._collect_due, state, c)

    def _collect_due(self, state: LegDtmf, c: Collect) -> None:
        state.collect_timer = None
        if state.collect is c and c.expire(time.monotonic()):
            self._end_collect(state, "timeout")
        elif state.collect is c:
            self._arm_collect(state)

    def _end_collect(self, state: LegDtmf, reason: str) -> None:
        c = state.collect
        if c is None:
            return
        state.collect = None
        if state.collect_timer is not None:
            state.collect_timer.cancel()
            state.collect_timer = None
        if c.reason is None:
            c.reason = reason
        for pid in list(c.prompt_ids):  # a prompt still playing when the collect is over has nothing to ask
            self._prompt_of.pop(pid, None)
            if c.reason not in ("call_hangup",):
                self.plane.stop_playback(pid, by="collect")
        c.prompt_ids.clear()
        self._ended.append(c.id)
        while len(self._ended) > 10_000:
            self._collects.pop(self._ended.pop(0), None)
        self._emit("collect.ended", c.call_id, c.to_dict())

    # -- DTMF out --------------------------------------------------------------------------------
    def send_dtmf(self, call_id: str, digits: str, duration_ms: int, gap_ms: int = 60) -> DtmfSender:
        """Queue *digits* on the leg: RFC 4733 when the far end offered telephone-event, else tones.

        KeyError: no media leg; PlayError: bad digits/duration (422) or a send already running (409).
        """
        driver = self.plane._drivers.get(call_id)
        if driver is None:
            raise KeyError(call_id)
        digits = digits.upper()
        if not digits or len(digits) > MAX_SEND_DIGITS or any(c not in "0123456789*#ABCD" for c in digits):
            raise PlayError("invalid_field", f"digits must be 1-{MAX_SEND_DIGITS} DTMF keys (0-9, *, #, A-D)")
        if not 40 <= duration_ms <= 2000:
            raise PlayError("out_of_range", f"duration_ms must be between 40 and 2000, got {duration_ms}")
        if driver.tx is not None:
            raise PlayError("dtmf_in_progress", "digits are being sent on this call already", 409)
        if driver.entry is None:
            raise PlayError("not_sending", "the call's media is not flowing (on hold or no remote address)", 409)
        leg = driver.leg
        silence = driver.silence_payload
        per_ms = driver.player.codec.ticks_per_ms
        if leg.te_pt is not None:
            sender = DtmfSender(digits, duration_ms, gap_ms, driver.samples, leg.payload_type, silence, te_pt=leg.te_pt,
                                ticks_per_ms=per_ms)
        else:
            pcm = dtmf_pcm(digits, duration_ms, gap_ms)
            encoded = driver.player.encode(pcm)
            sender = DtmfSender(digits, duration_ms, gap_ms, driver.samples, leg.payload_type, silence, inband=encoded,
                                ticks_per_ms=per_ms)
        driver.start_tx(sender, lambda: self._sent(call_id, sender))
        return sender

    def _sent(self, call_id: str, sender: DtmfSender) -> None:
        self.totals[f"sent_{sender.method}"] += len(sender.digits)
        self._emit("dtmf.sent", call_id, {"digits": sender.digits, "method": sender.method})
