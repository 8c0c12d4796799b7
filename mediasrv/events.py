"""Event model and delivery: webhooks (ordered per call, retried) and a live SSE feed.

Producers (the call registry, the media plane) call :meth:`EventBus.publish`, which
only appends to queues and returns at once: nothing here runs on the media clock's
path.  Webhooks go out through :class:`WebhookSink`s: the native one (``webhook_url``)
and any a vendor dialect adds with its own body shape, URL and signature.  One
delivery task per call and sink keeps that call's requests in order while a slow
receiver for one call never delays another call's.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
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


@dataclass
class Delivery:
    """One HTTP request a sink makes for an event.

    ``build(attempt)`` gives the body and headers for each attempt (1, 2, ...), so a body
    that names its attempt or a signature over a timestamp is made fresh on every retry.  It may
    be a coroutine function: a costly signature (ACS's RSA, ~1 ms) is then made in a thread,
    not on the loop that paces RTP.
    """

    url: str
    build: Callable[[int], tuple[bytes, dict[str, str]] | Awaitable[tuple[bytes, dict[str, str]]]]
    key: str = ""  # ordering key: requests with one key go out one at a time, in order (the call id)
    method: str = "POST"
    label: str = ""  # for logs, e.g. the event type


Render = Callable[[Event], Delivery | Iterable[Delivery] | None]


def native_render(url: str) -> Render:
    """The native webhook: the event as JSON, the attempt number in ``X-Mediasrv-Attempt``."""

    def render(event: Event) -> Delivery:
        body = json.dumps(event.to_dict()).encode()
        return Delivery(
            url=url,
            build=lambda attempt: (body, {"Content-Type": "application/json", "X-Mediasrv-Attempt": str(attempt)}),
            key=event.call_id,
            label=event.type,
        )

    return render


class WebhookSink:
    """Delivers rendered events: ordered per key, retried with backoff, off the media path.

    ``render`` turns an event into zero or more :class:`Delivery`s at publish time (so it
    sees the state of that moment); the requests then go out from a task per key.  A 2xx
    answer is success; 4xx other than 408/429 stops the retries (the receiver refuses it).
    """

    def __init__(self, render: Render, settings: WebhookSettings | None = None, name: str = "webhook") -> None:
        self.render = render
        self.settings = settings or WebhookSettings()
        self.name = name
        self._pending: dict[str, deque[Delivery]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.stats = {"delivered": 0, "delivery_failed": 0, "dropped": 0}

    def submit(self, event: Event) -> None:
        try:
            rendered = self.render(event)
        except Exception:  # a broken renderer must not break producers
            log.exception("%s: rendering %s failed", self.name, event.type)
            return
        if rendered is None:
            return
        for delivery in [rendered] if isinstance(rendered, Delivery) else rendered:
            self.send(delivery)

    def send(self, delivery: Delivery) -> None:
        """Queue one request (also for requests that are not about a bus event)."""
        pending = self._pending.setdefault(delivery.key, deque())
        if len(pending) >= self.settings.queue_limit:
            pending.popleft()
            self.stats["dropped"] += 1
        pending.append(delivery)
        if delivery.key not in self._workers:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._workers[delivery.key] = loop.create_task(self._deliver_key(delivery.key))

    async def _deliver_key(self, key: str) -> None:
        try:
            pending = self._pending[key]
            while pending:
                await self._deliver(pending[0])
                pending.popleft()
        finally:
            self._workers.pop(key, None)
            if not self._pending.get(key):
                self._pending.pop(key, None)

    async def _deliver(self, delivery: Delivery) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": "mediasrv/0.1"})
        delay = self.settings.backoff_s
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                built = delivery.build(attempt)
                body, headers = await built if inspect.isawaitable(built) else built
                async with self._session.request(
                    delivery.method,
                    delivery.url,
                    data=body if delivery.method != "GET" else None,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
                ) as resp:
                    await resp.read()
                    if resp.status < 300:
                        self.stats["delivered"] += 1
                        return
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        break  # the receiver refuses this request; retrying will not help
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                log.debug("%s attempt %d for %s failed: %s", self.name, attempt, delivery.label, exc)
            if attempt < self.settings.max_attempts:
                await asyncio.sleep(delay)
                delay *= 2
        self.stats["delivery_failed"] += 1
        log.warning("%s %s for %s not delivered", self.name, delivery.label, delivery.key)

    async def drain(self, timeout: float = 5.0) -> None:
        workers = list(self._workers.values())
        if workers:
            await asyncio.wait(workers, timeout=timeout)

    async def close(self) -> None:
        await self.drain(timeout=2.0)
        for task in list(self._workers.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()


class EventBus:
    """Fan-out of events to webhook sinks, SSE subscribers and in-process listeners."""

    def __init__(self, webhook: WebhookSettings | None = None, history: int = 2000) -> None:
        self.webhook = webhook or WebhookSettings()
        self._seq = itertools.count(1)
        self._history: deque[Event] = deque(maxlen=history)
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._listeners: list[Callable[[Event], None]] = []
        self._sinks: list[WebhookSink] = []
        self._published = 0
        if self.webhook.url:
            self.add_sink(WebhookSink(native_render(self.webhook.url), self.webhook, "webhook"))

    @property
    def stats(self) -> dict[str, int]:
        totals = {"published": self._published, "delivered": 0, "delivery_failed": 0, "dropped": 0}
        for sink in self._sinks:
            for k, v in sink.stats.items():
                totals[k] = totals.get(k, 0) + v
        return totals

    # -- producing -------------------------------------------------------
    def publish(self, type_: str, call_id: str, data: dict[str, Any] | None = None) -> Event:
        event = Event(type=type_, call_id=call_id, data=dict(data or {}), seq=next(self._seq))
        self._published += 1
        self._history.append(event)
        for q in list(self._subscribers):
            if q.qsize() < 10_000:
                q.put_nowait(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not break producers
                log.exception("event listener failed")
        for sink in self._sinks:
            sink.submit(event)
        return event

    def history(self, call_id: str | None = None) -> list[Event]:
        return [e for e in self._history if call_id is None or e.call_id == call_id]

    # -- consuming -------------------------------------------------------
    def add_listener(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def add_sink(self, sink: WebhookSink) -> WebhookSink:
        """Deliver every published event through *sink* (which renders, or skips, each one)."""
        self._sinks.append(sink)
        return sink

    def subscribe(self) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(q)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for queued webhooks to go out; used at shutdown and in tests."""
        await asyncio.gather(*(sink.drain(timeout) for sink in self._sinks))

    async def close(self) -> None:
        await asyncio.gather(*(sink.close() for sink in self._sinks))
