"""DTMF out with the vendors' pause characters (Telnyx ``send_dtmf``, Plivo ``send_digits``): ``w`` waits
0.5 s and ``W`` 1 s between digits.

Each run of keys is one core send (media/ivr.py ``send_dtmf``); the next starts once the previous
is out (``dtmf.sent``) and the pause has passed.  The first run goes out at once, so the request
itself gets the command service's refusals (a send already going on: InvalidCommand 409; no media: NoSuchLeg).  A later run
that cannot start (the call ended, another send took the leg meanwhile) drops the rest, logged.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING

from ..calls.commands import CommandError
from ..events.bus import Event
from ..ops.logsafe import clip

if TYPE_CHECKING:
    from ..nodeview import Node

log = logging.getLogger("mediasrv.dtmf")

KEYS = "0123456789*#ABCD"
PAUSES = {"w": 0.5, "W": 1.0}


def split(digits: str) -> list[tuple[str, float]]:
    """``"12w3W"`` → ``[("12", 0.5), ("3", 1.0)]``: each run of keys and the pause after it ("" for a leading pause)."""
    out: list[tuple[str, float]] = []
    run = ""
    for c in digits:
        if c in PAUSES:
            out.append((run, PAUSES[c]))
            run = ""
        else:
            run += c.upper()
    if run:
        out.append((run, 0.0))
    return out


def valid(digits: str, max_keys: int = 64) -> bool:
    keys = [c for c in digits if c not in PAUSES]
    return bool(keys) and len(digits) <= 2 * max_keys and len(keys) <= max_keys and all(c.upper() in KEYS for c in keys)


class PausedSender:
    def __init__(self, server: Node) -> None:
        self.server = server
        self._sent: dict[str, asyncio.Future[None]] = {}  # call id -> the run going out now
        server.events.add_listener(self._on_event)

    def _on_event(self, event: Event) -> None:
        if event.type in ("dtmf.sent", "call.hangup"):
            fut = self._sent.pop(event.call_id, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _send(self, call_id: str, keys: str, duration_ms: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.server.commands.send_dtmf(call_id, keys, duration_ms)  # raises before anything is registered
        self._sent[call_id] = fut
        return fut

    def start(self, call_id: str, digits: str, duration_ms: int) -> None:
        """Send *digits* (validated by :func:`valid`); the command service's errors from the first run."""
        runs = split(digits)
        first: asyncio.Future[None] | None = None
        if runs and runs[0][0]:
            first = self._send(call_id, runs[0][0], duration_ms)
        if len(runs) > 1 or (runs and runs[0][1]):
            asyncio.get_running_loop().create_task(self._rest(call_id, runs, first, duration_ms))

    async def _rest(self, call_id: str, runs: list[tuple[str, float]], first: asyncio.Future[None] | None,
                    duration_ms: int) -> None:
        if first is not None:
            await first
        for i, (keys, pause) in enumerate(runs):
            if i > 0 and keys:
                if self.server.registry.get(call_id) is None:
                    return
                try:
                    await self._send(call_id, keys, duration_ms)
                except CommandError as exc:
                    log.warning("DTMF to %s: %d digit run(s) after a pause not sent: %s", clip(call_id, 80),
                                len(runs) - i, clip(str(exc), 200))
                    return
            if pause:
                await asyncio.sleep(pause)


_SENDERS: weakref.WeakKeyDictionary[Node, PausedSender] = weakref.WeakKeyDictionary()


def sender(server: Node) -> PausedSender:
    """The server's one PausedSender (made, and its bus listener added, on first use)."""
    s = _SENDERS.get(server)
    if s is None:
        s = _SENDERS[server] = PausedSender(server)
    return s
