"""Event model and delivery: webhooks (ordered per call, retried) and a live SSE feed.

Producers (the call registry, the media plane) call :meth:`EventBus.publish`, which
only appends to queues and returns at once: nothing here runs on the media clock's
path.  One delivery task per call keeps that call's events in order while a slow
webhook receiver for one call never delays another call's events.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

log = logging.getLogger("mediasrv.events")


@dataclass
class Event:
    """One thing that happened to a call, in the native shape."""

    type: str
    call_id: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    seq: int = 0  # server-wide order
    occurred_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WebhookSettings:
    url: str | None = None
    timeout_s: float = 5.0
    max_attempts: int = 5
    backoff_s: float = 0.5  # doubled per attempt
    queue_limit: int = 10_000  # per call; oldest dropped (and counted) beyond it


class EventBus:
    """Fan-out of events to webhook delivery, SSE subscribers and in-process listeners."""

    def __init__(self, webhook: WebhookSettings | None = None, history: int = 2000) -> None:
        self.webhook = webhook or WebhookSettings()
        self._seq = itertools.count(1)
        self._history: deque[Event] = deque(maxlen=history)
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._listeners: list[Callable[[Event], None]] = []
        self._pending: dict[str, deque[Event]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.stats = {"published": 0, "delivered": 0, "delivery_failed": 0, "dropped": 0}

    # -- producing -------------------------------------------------------
    def publish(self, type_: str, call_id: str, data: dict[str, Any] | None = None) -> Event:
        event = Event(type=type_, call_id=call_id, data=dict(data or {}), seq=next(self._seq))
        self.stats["published"] += 1
        self._history.append(event)
        for q in list(self._subscribers):
            if q.qsize() < 10_000:
                q.put_nowait(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not break producers
                log.exception("event listener failed")
        if self.webhook.url:
            self._enqueue_webhook(event)
        return event

    def history(self, call_id: str | None = None) -> list[Event]:
        return [e for e in self._history if call_id is None or e.call_id == call_id]

    # -- consuming -------------------------------------------------------
    def add_listener(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def subscribe(self) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(q)

    # -- webhooks --------------------------------------------------------
    def _enqueue_webhook(self, event: Event) -> None:
        pending = self._pending.setdefault(event.call_id, deque())
        if len(pending) >= self.webhook.queue_limit:
            pending.popleft()
            self.stats["dropped"] += 1
        pending.append(event)
        if event.call_id not in self._workers:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._workers[event.call_id] = loop.create_task(self._deliver_call(event.call_id))

    async def _deliver_call(self, call_id: str) -> None:
        try:
            pending = self._pending[call_id]
            while pending:
                await self._deliver(pending[0])
                pending.popleft()
        finally:
            self._workers.pop(call_id, None)
            if not self._pending.get(call_id):
                self._pending.pop(call_id, None)

    async def _deliver(self, event: Event) -> None:
        assert self.webhook.url
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": "mediasrv/0.1"})
        body = json.dumps(event.to_dict()).encode()
        delay = self.webhook.backoff_s
        for attempt in range(1, self.webhook.max_attempts + 1):
            try:
                async with self._session.post(
                    self.webhook.url,
                    data=body,
                    headers={"Content-Type": "application/json", "X-Mediasrv-Attempt": str(attempt)},
                    timeout=aiohttp.ClientTimeout(total=self.webhook.timeout_s),
                ) as resp:
                    await resp.read()
                    if resp.status < 300:
                        self.stats["delivered"] += 1
                        return
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        break  # the receiver refuses this event; retrying will not help
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.debug("webhook attempt %d for %s failed: %s", attempt, event.type, exc)
            if attempt < self.webhook.max_attempts:
                await asyncio.sleep(delay)
                delay *= 2
        self.stats["delivery_failed"] += 1
        log.warning("webhook %s for call %s not delivered", event.type, event.call_id)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for queued webhooks to go out; used at shutdown and in tests."""
        workers = list(self._workers.values())
        if workers:
            await asyncio.wait(workers, timeout=timeout)

    async def close(self) -> None:
        await self.drain(timeout=2.0)
        for task in list(self._workers.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()
