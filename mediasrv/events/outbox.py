"""Notifications raised inside a command or a clock tick group, delivered after it, in order.

Why: a command such as ``play()`` may start a playback at once (a cached prompt), and a clock
tick group may end several.  If the event went out from inside the call, every consumer (the
journal, SSE feeds, dialect renderers and listeners) would see ``playback.started`` before the
dialect that issued the command had recorded it.  An :class:`Outbox` keeps what was raised and
hands it on once the loop callback that raised it (the command's synchronous step, or the
clock's tick group) has returned: one ``loop.call_soon`` per batch.  Items raised while a batch
is being delivered (a listener that causes another event) join the end of the same batch, so the
order delivered is the order raised.  Without a running loop (tools, synchronous tests) there is
no command in progress to wait for: items are delivered at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("mediasrv.events")

T = TypeVar("T")


class Outbox(Generic[T]):
    """A FIFO of raised items, drained by *deliver* after the current loop callback."""

    __slots__ = ("_deliver", "_queue", "_scheduled", "_draining")

    def __init__(self, deliver: Callable[[T], None]) -> None:
        self._deliver = deliver
        self._queue: deque[T] = deque()
        self._scheduled = False  # a call_soon(flush) is pending
        self._draining = False  # flush() is running: new items join its batch

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, item: T) -> None:
        """Queue *item*; it is delivered after the loop callback running now has returned."""
        self._queue.append(item)
        if self._scheduled or self._draining:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: no command or tick group to wait for
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Deliver everything queued (and whatever that delivery raises), oldest first.

        Also called directly where a caller needs the queue empty now (a drain, shutdown).
        A failing delivery is logged and the rest still go out.
        """
        self._scheduled = False
        if self._draining:
            return  # re-entered from a delivery: the running flush picks the new items up
        self._draining = True
        try:
            queue = self._queue
            while queue:
                item = queue.popleft()
                try:
                    self._deliver(item)
                except Exception:  # noqa: BLE001 - one broken consumer must not stop the others' items
                    log.exception("delivering a queued notification failed")
        finally:
            self._draining = False
