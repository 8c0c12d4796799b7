"""The call controller: what calls mean to this server, on top of the sans-I/O SIP core.

The SIP core (mediasrv/sip/) reports what happened on the wire as events and takes commands.
This module owns everything that is policy rather than protocol: answering (auto-answer or ring
and wait for an ``answer`` command), limits (``max_calls``, draining), the mapping of SIP
outcomes to hangup causes, the :class:`~mediasrv.calls.registry.CallRegistry` and media allocation. It is
the only place that turns a SIP leg into a :class:`~mediasrv.calls.registry.Call`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..ops.logs import call_context
from ..ops.logsafe import clip
from ..sip.base import MEDIA_FAILED, CoreSettings
from ..sip.core import CallFailed, SipCore, SipStateError
from ..sip.digest import Credentials
from ..sip.events import (
    CallAnswered,
    CallEnded,
    CallOffered,
    DtmfReceived,
    EndReason,
    Event,
    MediaAnswered,
    ProgressReceived,
    ReinviteOffered,
)
from ..sip.transaction import Dest
from ..sip.ua import UaSettings, UserAgent
from .registry import Call, CallRegistry, CallState, Direction, MediaBackend, NegotiatedMedia, new_call_id

log = logging.getLogger("mediasrv.sip")

__all__ = ["CallController", "CallCore", "CallSettings", "CallFailed", "Credentials", "Leg", "SipSettings",
           "SipStateError", "SipUserAgent"]

# Final statuses to an INVITE -> hangup cause (anything else: "rejected"; 401/407: "auth_failed").
FAILURE_CAUSES = {
    486: "busy", 600: "busy", 603: "declined", 607: "declined",
    408: "no_answer", 480: "no_answer", 404: "not_found", 604: "not_found", 484: "not_found",
    410: "not_found", 488: "incompatible_media", 606: "incompatible_media",
}

# Hanging up an unanswered inbound call refuses it: cause -> the final status the caller gets (else 480).
REFUSAL_CODES = {
    "rejected": 603, "decline": 603, "call_rejected": 603, "busy": 486, "not_found": 404,
    "temporarily_unavailable": 480,
}

RETRY_AFTER = [("Retry-After", "1")]


def failure_cause(status: int) -> str:
    return FAILURE_CAUSES.get(status, "rejected")


@dataclass
class CallSettings(CoreSettings):
    """The SIP core's settings plus the controller's policy."""

    auto_answer: bool = True
    max_calls: int | None = None


@dataclass(frozen=True, slots=True)
class Ending:
    """Why the controller itself ended a leg: the cause it reports, and overrides of the SIP facts."""

    cause: str
    by: str
    code: int | None = None  # None: the status the core reports
    outcome: tuple[int, str] | None = None  # for the dialer, instead of the core's


ResultCallback = Callable[["Leg", int, str], None]


@dataclass(eq=False)
class Leg:
    """One call as the controller sees it: the Call, the SIP session that carries it, its progress."""

    call: Call
    sid: str
    inbound: bool
    allocated: bool = False  # media.allocate() succeeded: release() is owed
    early_media: bool = False  # media flows before the answer (our 183, or an SDP answer in their 18x)
    answered: bool = False
    ended: bool = False  # the Call ended (the SIP session may still be winding down)
    ending: Ending | None = None
    cancel: tuple[str, str] | None = None  # outbound: (cause, by) of the first give-up
    on_result: ResultCallback | None = None
    result_sent: bool = False


class CallController:
    """Consumes the core's events, issues its commands, keeps the registry and the media in step."""

    def __init__(self, core: SipCore, settings: CallSettings, registry: CallRegistry, media: MediaBackend) -> None:
        self.core = core
        self.settings = settings
        self.registry = registry
        self.media = media
        self.legs: dict[str, Leg] = {}  # live calls, by Call.call_id
        self._by_sid: dict[str, Leg] = {}  # until the SIP session ends
        core.on_event = self.handle

    # -- events in --------------------------------------------------------------------------------
    def handle(self, event: Event) -> None:
        if isinstance(event, CallOffered):
            self._offered(event)
            return
        leg = self._by_sid.get(event.sid)
        if leg is None:
            return  # a session refused before it became a call
        with call_context(leg.call.call_id):
            if isinstance(event, CallEnded):
                self._session_ended(leg, event)
            elif leg.ended:
                return  # the Call ended at once (end_now): the session only cleans up
            elif isinstance(event, ProgressReceived):
                self._progress(leg, event)
            elif isinstance(event, CallAnswered):
                self._answered(leg, event)
            elif isinstance(event, MediaAnswered):
                if not self._apply(leg.call, event.media):
                    self._end_by_us(leg, Ending("media_error", "server"))
            elif isinstance(event, ReinviteOffered):
                self._reinvite(leg, event)
            elif isinstance(event, DtmfReceived):
                report = getattr(self.media, "dtmf_info", None)
                if report is not None:
                    report(leg.call, event.digit, event.duration_ms)

    def _offered(self, ev: CallOffered) -> None:
        s, core = self.settings, self.core
        if core.draining or s.max_calls is not None and self.registry.active_count >= s.max_calls:
            core.stats["rejected"] += 1
            core.reject(ev.sid, 503, RETRY_AFTER)
            return
        call = Call(direction=Direction.INBOUND, from_uri=ev.from_uri, to_uri=ev.to_uri,
                    sip_call_id=ev.sip_call_id, call_id=new_call_id(self.registry.node_id))
        if ev.from_display:
            call.extra["from_display"] = ev.from_display
        call.extra["request_uri"] = ev.request_uri
        leg = Leg(call=call, sid=ev.sid, inbound=True)
        core.set_label(ev.sid, call.call_id)
        with call_context(call.call_id):
            self._take(leg)

    def _take(self, leg: Leg) -> None:
        """A new inbound call from here on: registered, media allocated, answered or ringing."""
        call, core = leg.call, self.core
        core.stats["calls_in"] += 1
        self._register(leg)
        try:
            call.local_rtp = self.media.allocate(call)
        except Exception as exc:  # noqa: BLE001 - any media failure is a 503, never silence
            log.warning("media allocation failed: %s", exc)
            core.stats["rejected"] += 1
            self._end_by_us(leg, Ending("rejected", "server"), 503, RETRY_AFTER)
            return
        leg.allocated = True
        try:
            if self.settings.auto_answer:
                self._answer(leg)
            else:
                core.ring(leg.sid)
                self.registry.ringing(call)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the call's resources go back
            log.warning("call failed during setup: %s", clip(repr(exc)))
            self._end_by_us(leg, Ending("media_error", "server"), 500)

    def _register(self, leg: Leg) -> None:
        self.registry.add(leg.call)
        self.legs[leg.call.call_id] = leg
        self._by_sid[leg.sid] = leg

    def _answer(self, leg: Leg) -> None:
        """The caller's media is set up before the 200 goes: a failure is a 500, never a call already accepted."""
        media = self.core.offered_media(leg.sid)
        if media is not None and not self._apply(leg.call, media):
            self._end_by_us(leg, Ending("media_error", "server"), 500, [MEDIA_FAILED])
            return
        self.core.answer(leg.sid, self._local(leg))
        leg.answered = True
        self.registry.answered(leg.call)

    def _local(self, leg: Leg) -> tuple[str, int]:
        return leg.call.local_rtp or (self.core.settings.host, 0)

    def _progress(self, leg: Leg, ev: ProgressReceived) -> None:
        """A 18x to our INVITE: the call rings; an SDP answer in it starts media before the answer."""
        call = leg.call
        self.registry.ringing(call)
        if ev.media is None:
            return
        if not self._apply(call, ev.media):
            call.media = None
            return
        if not leg.early_media:
            leg.early_media = True
            self.registry.early_media(call)

    def _answered(self, leg: Leg, ev: CallAnswered) -> None:
        call = leg.call
        if ev.media is None and not leg.early_media:  # the answer may come in a 183 (RFC 3261 13.2.1)
            self._end_by_us(leg, Ending("bad_sdp", "server", 488,
                                        (488, "unusable SDP answer: 2xx without an SDP answer")))
            return
        if not self._apply(call, ev.media if ev.media is not None else call.media):
            self._end_by_us(leg, Ending("media_error", "server", None, (500, "media setup failed")))
            return
        leg.answered = True
        self.registry.answered(call)
        self._result(leg, 200, ev.phrase)

    def _reinvite(self, leg: Leg, ev: ReinviteOffered) -> None:
        call = leg.call
        if ev.media is not None:
            old = call.media
            if not self._apply(call, ev.media):
                self._apply(call, old)
                self.core.refuse_reinvite(leg.sid, 500, [MEDIA_FAILED])
                return
        self.core.accept_reinvite(leg.sid)

    def _session_ended(self, leg: Leg, ev: CallEnded) -> None:
        self._by_sid.pop(leg.sid, None)
        ending = leg.ending
        if ending is None and leg.cancel is not None:
            ending = Ending(*leg.cancel)
        if ending is not None:
            cause, by = ending.cause, ending.by
            code = ending.code if ending.code is not None else ev.status
        else:
            cause, by = self._cause(leg, ev)
            code = ev.status
        self._finish(leg, cause, by, code)
        outcome = ending.outcome if ending is not None and ending.outcome is not None else ev.outcome
        if outcome is not None:
            self._result(leg, *outcome)

    @staticmethod
    def _cause(leg: Leg, ev: CallEnded) -> tuple[str, str]:
        """A hangup cause and who caused it, from what the protocol saw."""
        reason = ev.reason
        if reason is EndReason.BYE:
            return "normal_clearing", "caller" if leg.inbound else "callee"
        if reason is EndReason.CANCELLED:
            return "cancelled", "caller" if leg.inbound else "api"
        if reason is EndReason.REFUSED:
            return failure_cause(ev.status or 0), "callee"
        if reason is EndReason.AUTH_FAILED:
            return "auth_failed", "callee"
        if reason is EndReason.RING_TIMEOUT:
            return "no_answer", "server"
        if reason is EndReason.LOCAL:
            return "normal_clearing", "api"
        return reason.value, "server"  # timeout, no_ack, bad_sdp

    # -- the end ----------------------------------------------------------------------------------
    def _end_by_us(
        self, leg: Leg, ending: Ending, status: int | None = None, headers: list[tuple[str, str]] | None = None
    ) -> None:
        """End *leg* from this side: a final *status* while unanswered inbound, else BYE (or CANCEL)."""
        leg.ending = leg.ending or ending
        if status is not None:
            self.core.reject(leg.sid, status, headers)
        else:
            self.core.hangup(leg.sid)

    def _finish(self, leg: Leg, cause: str, by: str, code: int | None) -> None:
        """The Call ends: registry told, media released (once, even when a listener fails)."""
        if leg.ended:
            return
        leg.ended = True
        call = leg.call
        if self.legs.get(call.call_id) is leg:
            del self.legs[call.call_id]
        try:
            if call.state is not CallState.ENDED:
                self.registry.ended(call, cause, by, code)
        finally:  # a failing listener must not keep the call's ports and sockets
            if leg.allocated:
                try:
                    self.media.release(call)
                except Exception as exc:  # noqa: BLE001 - a media bug must not break signaling
                    log.error("media.release failed: %s", clip(repr(exc)))

    def _result(self, leg: Leg, code: int, reason: str) -> None:
        if not leg.result_sent and leg.on_result is not None:
            leg.result_sent = True
            leg.on_result(leg, code, reason)

    def _apply(self, call: Call, media: NegotiatedMedia | None) -> bool:
        """Hand *media* to the media backend; False (logged) when the backend failed with it."""
        call.media = media
        try:
            self.media.media_changed(call)
        except Exception as exc:  # noqa: BLE001 - a media failure ends the call, it never escapes
            log.warning("media setup failed for %s: %s", call.call_id, clip(repr(exc)))
            return False
        return True

    # -- commands from the API --------------------------------------------------------------------
    def find(self, call_id: str) -> Leg:
        """The live call by our call id or its SIP Call-ID; KeyError when there is none."""
        leg = self.legs.get(call_id)
        if leg is None:
            call = self.registry.by_sip_call_id(call_id)
            if call is not None:
                leg = self.legs.get(call.call_id)
        if leg is None:
            raise KeyError(call_id)
        return leg

    def _ringing(self, call_id: str, why: str) -> Leg:
        leg = self.find(call_id)
        if not leg.inbound or leg.ended or leg.answered or not self.core.is_ringing(leg.sid):
            raise RuntimeError(f"call {call_id} {why}")
        return leg

    def answer(self, call_id: str) -> None:
        """Answer a ringing inbound call. KeyError if unknown, RuntimeError if it is not ringing."""
        leg = self._ringing(call_id, "is not ringing")
        with call_context(leg.call.call_id):
            try:
                self._answer(leg)
            except Exception as exc:  # noqa: BLE001 - the call ends and gives its resources back
                log.warning("answering %s failed: %s", call_id, clip(repr(exc)))
                self._end_by_us(leg, Ending("media_error", "server"), 500)
        if leg.ended:
            raise RuntimeError(f"call {call_id} could not be answered: media setup failed")

    def early_media(self, call_id: str) -> bool:
        """Start early media on a ringing inbound call (183 with SDP); False when it already has it.

        RuntimeError when the call is not a ringing inbound one, or its INVITE had no SDP offer
        (our offer would then have to go in an unreliable 183, which RFC 3261 13.2.1 forbids).
        """
        leg = self._ringing(call_id, "is not a ringing inbound call")
        if leg.early_media:
            return False
        media = self.core.offered_media(leg.sid)
        if media is None:
            raise RuntimeError(f"call {call_id}: early media needs an SDP offer in the INVITE (this one had none)")
        with call_context(leg.call.call_id):
            try:
                if not self._apply(leg.call, media):
                    self._end_by_us(leg, Ending("media_error", "server"), 500, [MEDIA_FAILED])
                else:
                    self.core.early_media(leg.sid, self._local(leg))
                    leg.early_media = True
                    self.registry.early_media(leg.call)
            except Exception as exc:  # noqa: BLE001 - the call ends and gives its resources back
                log.warning("early media on %s failed: %s", call_id, clip(repr(exc)))
                self._end_by_us(leg, Ending("media_error", "server"), 500)
        if leg.ended:
            raise RuntimeError(f"call {call_id}: early media failed: media setup failed")
        return True

    def hangup(self, call_id: str, cause: str = "normal_clearing", by: str = "api") -> None:
        """BYE (answered), CANCEL (outbound unanswered), 480/603/... (inbound unanswered)."""
        leg = self.find(call_id)
        if leg.ended:
            return
        with call_context(leg.call.call_id):
            if leg.answered:
                self._end_by_us(leg, Ending(cause, by))
            elif leg.inbound:
                self._end_by_us(leg, Ending(cause, by), REFUSAL_CODES.get(cause, 480))
            else:
                if cause == "normal_clearing":
                    cause = "cancelled"  # hanging up an unanswered outbound call is a CANCEL
                self.cancel_call(leg, cause, by)

    def shutdown(self) -> None:
        """BYE every answered call, refuse/cancel the rest (cause server_shutdown)."""
        for leg in list(self.legs.values()):
            if not leg.ended:
                self.hangup(leg.call.call_id, "server_shutdown", "server")

    def start_call(
        self,
        to_uri: str,
        remote: tuple[str, int],
        on_result: ResultCallback,
        from_uri: str | None = None,
        transport: str = "udp",
        headers: dict[str, str] | None = None,
        credentials: Credentials | None = None,
    ) -> Leg:
        """Place a call: INVITE to *to_uri* at *remote*; *on_result* gets (leg, code, reason) once.

        Raises CallFailed(503) at max_calls or when no media can be allocated.
        """
        core, s = self.core, self.settings
        session = core.prepare_call(to_uri, remote, from_uri, transport, headers, credentials)
        call = Call(direction=Direction.OUTBOUND, from_uri=session.from_uri, to_uri=to_uri,
                    sip_call_id=session.sip_call_id, call_id=new_call_id(self.registry.node_id))
        if s.max_calls is not None and self.registry.active_count >= s.max_calls:
            core.discard(session.sid)
            raise CallFailed(503, "max_calls reached")
        leg = Leg(call=call, sid=session.sid, inbound=False, on_result=on_result)
        core.set_label(session.sid, call.call_id)
        self._register(leg)
        core.stats["calls_out"] += 1
        with call_context(call.call_id):
            try:
                call.local_rtp = self.media.allocate(call)
            except Exception as exc:  # noqa: BLE001
                core.discard(session.sid)
                self._by_sid.pop(session.sid, None)
                self._finish(leg, "rejected", "server", 503)
                raise CallFailed(503, f"media allocation failed: {exc}") from exc
            leg.allocated = True
            core.send_invite(session.sid, call.local_rtp)
        return leg

    def cancel_call(self, leg: Leg, cause: str = "cancelled", by: str = "api", end_now: bool = False) -> None:
        """Give up on an outbound call: CANCEL if unanswered (BYE if it was answered).

        With ``end_now`` (the caller of ``call()`` has already been told it failed) the Call ends at
        once instead of when the INVITE transaction does; a late provisional still gets its CANCEL
        and a late 2xx its ACK + BYE, so the peer is never left with a dangling call.
        """
        if leg.ended:
            return
        if leg.answered:
            self._end_by_us(leg, Ending(cause, by))
            return
        if leg.cancel is None:
            leg.cancel = (cause, by)
        self.core.cancel(leg.sid)
        if end_now and not leg.ended:
            cause, by = leg.cancel  # an earlier hangup request keeps its cause
            self._finish(leg, cause, by, 408 if cause in ("timeout", "no_answer") else 487)


class CallCore:
    """The sans-I/O signaling unit the server drives: a SIP core and its call controller, wired.

    Bytes and time in (:meth:`receive`, :attr:`timers`), bytes out through *send*; the call
    commands (answer, hangup, start_call, ...) are the controller's.
    """

    def __init__(
        self,
        settings: CallSettings,
        registry: CallRegistry,
        media: MediaBackend,
        send: Callable[[bytes, Dest], None],
        clock: Callable[[], float],
    ) -> None:
        self.sip = SipCore(settings, send, clock)
        self.controller = CallController(self.sip, settings, registry, media)
        self.settings = settings
        self.registry = registry
        self.media = media
        self.receive = self.sip.receive
        self.unframed = self.sip.unframed
        self.timers = self.sip.timers
        self.stats = self.sip.stats
        self.tl = self.sip.tl
        self.dialogs = self.sip.dialogs
        self.source_log = self.sip.source_log
        self.sessions = self.controller.legs  # live calls by call id
        self.answer = self.controller.answer
        self.early_media = self.controller.early_media
        self.hangup = self.controller.hangup
        self.shutdown = self.controller.shutdown
        self.start_call = self.controller.start_call
        self.cancel_call = self.controller.cancel_call

    @property
    def draining(self) -> bool:
        """Draining (a rolling restart): new INVITEs and OPTIONS probes get 503, calls carry on."""
        return self.sip.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.sip.draining = value


# -- the asyncio side -----------------------------------------------------------------------------
@dataclass
class SipSettings(UaSettings):
    """The user agent's settings plus the controller's policy."""

    auto_answer: bool = True
    max_calls: int | None = None


class SipUserAgent:
    """The SIP side of a node: a :class:`CallCore` on the asyncio transport (:class:`UserAgent`)."""

    def __init__(self, settings: SipSettings, registry: CallRegistry, media: MediaBackend) -> None:
        self.settings = settings
        self.registry = registry
        self.media = media
        core_settings = CallSettings(auto_answer=settings.auto_answer, max_calls=settings.max_calls,
                                     **settings.core_fields())
        self.core = CallCore(core_settings, registry, media, self._send, self._now)
        self.ua = UserAgent(settings, self.core.sip, self.core.shutdown)
        self.stats: dict[str, int] = self.core.stats
        self.budget = self.ua.budget

    def _send(self, data: bytes, dest: Dest) -> None:
        self.ua.send(data, dest)

    def _now(self) -> float:
        return self.ua.now()

    @property
    def address(self) -> tuple[str, int]:
        return self.ua.address

    async def start(self) -> None:
        """Bind UDP and TCP on settings.host:port (port 0: one free port for both)."""
        await self.ua.start()

    async def stop(self) -> None:
        """BYE every answered call (cause server_shutdown), give the BYEs a moment, close sockets."""
        await self.ua.stop()

    async def answer(self, call_id: str) -> None:
        """Answer a ringing inbound call. KeyError if unknown, RuntimeError if it is not ringing."""
        with self.ua.kicking():
            self.core.answer(call_id)

    async def early_media(self, call_id: str) -> bool:
        """183 with SDP on a ringing inbound call (False: it already had it). KeyError / RuntimeError as answer."""
        with self.ua.kicking():
            return self.core.early_media(call_id)

    async def hangup(self, call_id: str, cause: str = "normal_clearing", by: str = "api") -> None:
        """BYE (answered), CANCEL (outbound unanswered), 480/603 (inbound unanswered)."""
        with self.ua.kicking():
            self.core.hangup(call_id, cause, by)

    def dial(
        self,
        to_uri: str,
        *,
        remote: tuple[str, int],
        from_uri: str | None = None,
        transport: str = "udp",
        headers: dict[str, str] | None = None,
        credentials: Credentials | None = None,
        timeout: float = 32.0,
    ) -> Call:
        """Start an outbound call and return its Call at once (state ``initiated``).

        What happens next is only told through the registry (ringing, early media, answered,
        ended).  Unanswered after *timeout* seconds: CANCEL, cause ``no_answer`` if it rang,
        else ``timeout``.  Raises CallFailed (503) when no call can be started.
        """
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def on_result(leg: Leg, code: int, reason: str) -> None:
            if handle is not None:
                handle.cancel()

        def give_up(leg: Leg) -> None:
            if leg.ended or leg.answered:
                return
            cause = "no_answer" if leg.call.state is CallState.RINGING else "timeout"
            with self.ua.kicking():
                self.core.cancel_call(leg, cause, "server", end_now=True)

        with self.ua.kicking():
            leg = self.core.start_call(to_uri, remote, on_result, from_uri, transport, headers, credentials)
        if not leg.ended:
            handle = loop.call_later(timeout, give_up, leg)
        return leg.call

    async def call(
        self,
        to_uri: str,
        *,
        remote: tuple[str, int],
        from_uri: str | None = None,
        transport: str = "udp",
        headers: dict[str, str] | None = None,
        credentials: Credentials | None = None,
        timeout: float = 32.0,
    ) -> Call:
        """Place an outbound call; return it once answered or raise CallFailed(code, reason)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Call] = loop.create_future()

        def on_result(leg: Leg, code: int, reason: str) -> None:
            if fut.done():
                return
            if code == 200:
                fut.set_result(leg.call)
            else:
                fut.set_exception(CallFailed(code, reason))

        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        with self.ua.kicking():
            leg = self.core.start_call(to_uri, remote, on_result, from_uri, transport, headers, credentials)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            with self.ua.kicking():
                self.core.cancel_call(leg, "timeout", "server", end_now=True)
            raise CallFailed(408, "Request Timeout") from None
        except asyncio.CancelledError:
            with self.ua.kicking():
                self.core.cancel_call(leg, "cancelled", "api", end_now=True)
            raise

