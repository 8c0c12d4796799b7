"""The SIP user agent the server uses: settings, start/stop, answer, hangup and outbound calls.

It glues the sans-I/O :class:`~mediasrv.sip.core.SipCore` to the asyncio transport and arms one
``loop.call_at`` for the core's earliest timer deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..calls import Call, CallRegistry, MediaBackend
from .admission import AdmissionSettings, opening_hint
from .core import CallFailed, CoreSettings, Session, SipCore
from .digest import Credentials
from .guard import MessageBudget
from .transaction import Dest
from .transport import SipTransport

__all__ = ["SipSettings", "SipUserAgent", "CallFailed", "Credentials"]

log = logging.getLogger("mediasrv.sip")


@dataclass
class SipSettings:
    host: str = "127.0.0.1"
    port: int = 5060
    auto_answer: bool = True
    max_calls: int | None = None
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    user_agent: str = "mediasrv/0.1"
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    message_budget_ms: float = 5.0  # inbound messages handled slower than this are counted and logged
    media_address_check: Callable[[str], str | None] | None = None  # see CoreSettings
    ring_timeout_s: float = 120.0  # see CoreSettings
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)


def _advertised_host(host: str) -> str:
    """A wildcard bind cannot go into Via/Contact/SDP: use the address that routes outwards."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    fam = socket.AF_INET6 if host == "::" else socket.AF_INET
    with contextlib.suppress(OSError), socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.connect(("2001:db8::1" if fam == socket.AF_INET6 else "192.0.2.1", 9))
        return s.getsockname()[0]
    return "::1" if fam == socket.AF_INET6 else "127.0.0.1"


class SipUserAgent:
    def __init__(self, settings: SipSettings, registry: CallRegistry, media: MediaBackend) -> None:
        self.settings = settings
        self.registry = registry
        self.media = media
        self._loop: asyncio.AbstractEventLoop | None = None
        self.core = SipCore(
            CoreSettings(
                host=_advertised_host(settings.host),
                port=settings.port,
                auto_answer=settings.auto_answer,
                max_calls=settings.max_calls,
                codecs=tuple(settings.codecs),
                user_agent=settings.user_agent,
                t1=settings.t1,
                t2=settings.t2,
                t4=settings.t4,
                media_address_check=settings.media_address_check,
                ring_timeout_s=settings.ring_timeout_s,
                admission=settings.admission,
            ),
            registry,
            media,
            self._send,
            self._now,
        )
        self.stats: dict[str, int] = self.core.stats
        self.budget = MessageBudget(self.core.stats, settings.message_budget_ms / 1000.0, self.core.source_log)
        self._transport = SipTransport(self.core.receive, self._arm, self.core.reject, self.budget)
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self._address: tuple[str, int] = (settings.host, settings.port)
        self._started = False

    # -- plumbing ---------------------------------------------------------------------------------
    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else time.monotonic()

    def _send(self, data: bytes, dest: Dest) -> None:
        self._transport.send(data, dest)

    def _arm(self) -> None:
        loop = self._loop
        if loop is None:
            return
        deadline = self.core.timers.next_deadline()
        if deadline is None or deadline >= self._armed_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = deadline
        self._timer = loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._armed_at = math.inf
        assert self._loop is not None
        try:
            self.core.timers.run_due(self._loop.time() + 0.001)
        finally:
            self._arm()

    # -- public API -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind UDP and TCP on settings.host:port (port 0: one free port for both)."""
        self._loop = asyncio.get_running_loop()
        host, port = await self._transport.bind(self.settings.host, self.settings.port)
        self._address = (host, port)
        self.core.settings.port = port
        self._started = True
        hint = opening_hint(host, self.settings.admission.allow_cidrs)
        if hint is not None:
            log.warning("%s", hint)

    @property
    def address(self) -> tuple[str, int]:
        return self._address

    async def stop(self) -> None:
        """BYE every answered call (cause server_shutdown), give the BYEs a moment, close sockets."""
        if not self._started:
            return
        self._started = False
        self.core.shutdown()
        self._arm()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(2.0, 4 * self.settings.t1)
        while loop.time() < deadline and any(
            tx.key[1] in ("BYE", "CANCEL") and tx.state in ("trying", "proceeding")
            for tx in self.core.tl.client.values()
        ):
            await asyncio.sleep(0.02)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._armed_at = math.inf
        await self._transport.close()

    async def answer(self, call_id: str) -> None:
        """Answer a ringing inbound call. KeyError if unknown, RuntimeError if it is not ringing."""
        try:
            self.core.answer(call_id)
        finally:
            self._arm()

    async def early_media(self, call_id: str) -> bool:
        """183 with SDP on a ringing inbound call (False: it already had it). KeyError / RuntimeError as answer."""
        try:
            return self.core.early_media(call_id)
        finally:
            self._arm()

    async def hangup(self, call_id: str, cause: str = "normal_clearing", by: str = "api") -> None:
        """BYE (answered), CANCEL (outbound unanswered), 480/603 (inbound unanswered)."""
        try:
            self.core.hangup(call_id, cause, by)
        finally:
            self._arm()

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

        def on_result(session: Session, code: int, reason: str) -> None:
            if handle is not None:
                handle.cancel()

        def give_up(session: Session) -> None:
            if session.ended or session.answered:
                return
            cause = "no_answer" if session.call.state.value == "ringing" else "timeout"
            self.core.cancel_call(session, cause, "server", end_now=True)
            self._arm()

        try:
            session = self.core.start_call(to_uri, remote, on_result, from_uri, transport, headers, credentials)
        finally:
            self._arm()
        if not session.ended:
            handle = loop.call_later(timeout, give_up, session)
        return session.call

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

        def on_result(session: Session, code: int, reason: str) -> None:
            if fut.done():
                return
            if code == 200:
                fut.set_result(session.call)
            else:
                fut.set_exception(CallFailed(code, reason))

        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            session = self.core.start_call(to_uri, remote, on_result, from_uri, transport, headers, credentials)
        finally:
            self._arm()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            self.core.cancel_call(session, "timeout", "server", end_now=True)
            self._arm()
            raise CallFailed(408, "Request Timeout") from None
        except asyncio.CancelledError:
            self.core.cancel_call(session, "cancelled", "api", end_now=True)
            self._arm()
            raise
