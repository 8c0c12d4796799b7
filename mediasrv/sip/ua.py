"""asyncio glue for one SIP core: the transport (the only socket code) and its timers.

:class:`UserAgent` feeds the sans-I/O :class:`~mediasrv.sip.core.SipCore` what the transport
reads, and arms one ``loop.call_at`` for the core's earliest timer deadline. Calls and their
policy are the call controller's (mediasrv/calls/controller.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .admission import AdmissionSettings, opening_hint
from .core import CallFailed, SipCore
from .digest import Credentials
from .guard import MessageBudget
from .transaction import Dest, TxState
from .transport import SipTransport

__all__ = ["UaSettings", "UserAgent", "CallFailed", "Credentials"]

log = logging.getLogger("mediasrv.sip")


@dataclass
class UaSettings:
    host: str = "127.0.0.1"
    port: int = 5060
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    user_agent: str = "mediasrv/0.1"
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    message_budget_ms: float = 5.0  # inbound messages handled slower than this are counted and logged
    media_address_check: Callable[[str], str | None] | None = None  # see CoreSettings
    ring_timeout_s: float = 120.0  # see CoreSettings
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)

    def core_fields(self) -> dict[str, Any]:
        """The fields of a CoreSettings for these (the advertised host for a wildcard bind)."""
        return {
            "host": _advertised_host(self.host),
            "port": self.port,
            "codecs": tuple(self.codecs),
            "user_agent": self.user_agent,
            "t1": self.t1,
            "t2": self.t2,
            "t4": self.t4,
            "media_address_check": self.media_address_check,
            "ring_timeout_s": self.ring_timeout_s,
            "admission": self.admission,
        }


def _advertised_host(host: str) -> str:
    """A wildcard bind cannot go into Via/Contact/SDP: use the address that routes outwards."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    fam = socket.AF_INET6 if host == "::" else socket.AF_INET
    with contextlib.suppress(OSError), socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.connect(("2001:db8::1" if fam == socket.AF_INET6 else "192.0.2.1", 9))
        return s.getsockname()[0]
    return "::1" if fam == socket.AF_INET6 else "127.0.0.1"


class UserAgent:
    """One SipCore on the asyncio transport; *shutdown* ends every call before the sockets close."""

    def __init__(self, settings: UaSettings, core: SipCore, shutdown: Callable[[], None]) -> None:
        self.settings = settings
        self.core = core
        self._shutdown = shutdown
        self._loop: asyncio.AbstractEventLoop | None = None
        self.budget = MessageBudget(core.stats, settings.message_budget_ms / 1000.0, core.source_log)
        self._transport = SipTransport(core.receive, self._arm, core.unframed, self.budget)
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self._address: tuple[str, int] = (settings.host, settings.port)
        self._started = False

    # -- plumbing ---------------------------------------------------------------------------------
    def now(self) -> float:
        return self._loop.time() if self._loop is not None else time.monotonic()

    def send(self, data: bytes, dest: Dest) -> None:
        self._transport.send(data, dest)

    @contextlib.contextmanager
    def kicking(self) -> Iterator[None]:
        """Run a command on the core, then re-arm the timer for whatever it scheduled."""
        try:
            yield
        finally:
            self._arm()

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

    # -- lifecycle --------------------------------------------------------------------------------
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
        """End every call (the shutdown callback), give the BYEs a moment, close sockets."""
        if not self._started:
            return
        self._started = False
        self._shutdown()
        self._arm()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(2.0, 4 * self.settings.t1)
        while loop.time() < deadline and any(
            tx.key[1] in ("BYE", "CANCEL") and tx.state in (TxState.TRYING, TxState.PROCEEDING)
            for tx in self.core.tl.client.values()
        ):
            await asyncio.sleep(0.02)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._armed_at = math.inf
        await self._transport.close()
