"""Event model and delivery: webhooks (ordered per call, retried) and a live SSE feed.

Producers (the call registry, the media plane) call :meth:`EventBus.publish`, which
numbers the event and queues it (:mod:`mediasrv.events.outbox`): journal, SSE feeds, listeners and
sinks get it once the command or clock tick group that raised it has returned, in order, and
then only append to queues: nothing here runs on the media clock's path.  Webhooks go out through :class:`WebhookSink`s: the native one (``webhook_url``)
and any a vendor dialect adds with its own body shape, URL and signature.  One
delivery task per call and sink keeps that call's requests in order while a slow
receiver for one call never delays another call's.

With a :class:`~mediasrv.events.journal.Journal` (``EventBus(journal=...)``, then ``await bus.start()``) events
and deliveries are also persisted: every event is journaled (``seq`` continues across restarts, SSE clients
replay from it), and every delivery of a sink that can ``rebuild`` it is journaled as owed until the
receiver answered 2xx or the retries ran out.  ``start`` hands the deliveries a previous run still owed
back to their sinks, in their original order, ahead of anything new.  A delivery is rebuilt from its
``spec`` (plain JSON) per attempt, so signatures are fresh; the event id inside stays the same.
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
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import aiohttp

from ..egress import (
    AddressPolicy,
    Egress,
    EgressSettings,
    RedirectRefused,
    new_session,
    public_url,
    refusal_of,
)
from ..ops.logsafe import clip
from ..ops.timing import Timing
from .journal import Journal
from .outbox import Outbox

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


# a delivery's body and headers for one attempt; a coroutine function where building is costly (ACS's RSA)
Build = Callable[[int], tuple[bytes, dict[str, str]] | Awaitable[tuple[bytes, dict[str, str]]]]


@dataclass
class Delivery:
    """One HTTP request a sink makes for an event.

    ``build(attempt)`` gives the body and headers for each attempt (1, 2, ...), so a body
    that names its attempt or a signature over a timestamp is made fresh on every retry.  It may
    be a coroutine function: a costly signature (ACS's RSA, ~1 ms) is then made in a thread,
    not on the loop that paces RTP.
    """

    url: str
    build: Build
    key: str = ""  # ordering key: requests with one key go out one at a time, in order (the call id)
    method: str = "POST"
    label: str = ""  # for logs, e.g. the event type
    spec: dict[str, Any] | None = None  # JSON inputs of build(): with a sink's rebuild, makes it persistable
    id: str = ""  # outbox id; the sink names it (event id + sink) when empty


def new_webhook_session(policy: AddressPolicy) -> aiohttp.ClientSession:
    """Every sink's HTTP client: the egress webhook policy, no redirects, mediasrv's User-Agent."""
    return new_session(policy, refuse_redirects=True)


Render = Callable[[Event], Delivery | Iterable[Delivery] | None]
Rebuild = Callable[[dict[str, Any]], Build]


def native_build(spec: dict[str, Any]) -> Build:
    """The native webhook body from its spec: the event as JSON, the attempt in ``X-Mediasrv-Attempt``."""
    body = json.dumps(spec["event"]).encode()
    return lambda attempt: (body, {"Content-Type": "application/json", "X-Mediasrv-Attempt": str(attempt)})


def native_render(url: str) -> Render:
    """The native webhook: the event as JSON, the attempt number in ``X-Mediasrv-Attempt``."""

    def render(event: Event) -> Delivery:
        spec = {"event": event.to_dict()}
        return Delivery(url=url, build=native_build(spec), key=event.call_id, label=event.type, spec=spec)

    return render


class WebhookSink:
    """Delivers rendered events: ordered per key, retried with backoff, off the media path.

    ``render`` turns an event into zero or more :class:`Delivery`s when the bus delivers it, right
    after the command or tick group that raised it (so it sees that command's own records); the
    requests then go out from a task per key.  A 2xx
    answer is success; 4xx other than 408/429 stops the retries (the receiver refuses it).
    Requests go out under the egress ``webhook`` policy (:mod:`mediasrv.egress`): an address it
    refuses, or a 3xx answer (redirects are never followed), fails the delivery at once, with
    the reason in the journal, in :attr:`failures` and in the ``refused`` counter.
    """

    def __init__(self, render: Render, settings: WebhookSettings | None = None, name: str = "webhook",
                 rebuild: Rebuild | None = None, policy: AddressPolicy | None = None) -> None:
        self.render = render
        self.settings = settings or WebhookSettings()
        self.name = name
        self.rebuild = rebuild  # spec -> build; without it this sink's deliveries live in memory only
        self.journal: Journal | None = None  # set by EventBus.add_sink
        self.policy = policy  # EventBus.add_sink gives the bus's webhook policy to a sink made without one
        self._pending: dict[str, deque[Delivery]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.stats = {"delivered": 0, "delivery_failed": 0, "dropped": 0, "refused": 0}
        self.failures: deque[dict[str, Any]] = deque(maxlen=100)  # the latest failed deliveries, with reasons
        # first attempt to outcome, by outcome (mediasrv_webhook_delivery_seconds)
        self.delivery_time = {"delivered": Timing(), "failed": Timing()}

    def submit(self, event: Event) -> None:
        try:
            rendered = self.render(event)
        except Exception:  # a broken renderer must not break producers
            log.exception("%s: rendering %s failed", self.name, event.type)
            return
        if rendered is None:
            return
        for i, delivery in enumerate([rendered] if isinstance(rendered, Delivery) else rendered):
            if not delivery.id:
                delivery.id = f"{event.id}:{self.name}" + (f":{i}" if i else "")
            self.send(delivery)

    def send(self, delivery: Delivery) -> None:
        """Queue one request (also for requests that are not about a bus event)."""
        if not delivery.id:
            delivery.id = uuid.uuid4().hex
        if self._persisted(delivery):
            assert self.journal is not None
            self.journal.append({
                "t": "d", "id": delivery.id, "n": self.journal.next_n(), "sink": self.name, "key": delivery.key,
                "url": delivery.url, "method": delivery.method, "label": delivery.label, "spec": delivery.spec,
            })
        self._enqueue(delivery)

    def restore(self, record: dict[str, Any]) -> str | None:
        """Queue a delivery a previous run still owed (its journal record); None, or why it cannot be."""
        try:
            assert self.rebuild is not None
            build = self.rebuild(record["spec"])
        except Exception as exc:  # noqa: BLE001 - e.g. the dialect is now disabled: the record says why
            return f"cannot rebuild after restart: {type(exc).__name__}: {exc}"
        self._enqueue(Delivery(url=record["url"], build=build, key=record.get("key", ""),
                               method=record.get("method", "POST"), label=record.get("label", ""),
                               spec=record["spec"], id=record["id"]))
        return None

    def start(self) -> None:
        """Start a delivery task for every key with queued requests (those restored before the loop ran)."""
        loop = asyncio.get_running_loop()
        for key in self._pending:
            if key not in self._workers:
                self._workers[key] = loop.create_task(self._deliver_key(key))

    def _persisted(self, delivery: Delivery) -> bool:
        return self.journal is not None and self.rebuild is not None and delivery.spec is not None

    def _outcome(self, delivery: Delivery, ok: bool, reason: str | None = None) -> None:
        if self._persisted(delivery):
            assert self.journal is not None
            self.journal.append({"t": "r", "id": delivery.id, "ok": ok, "reason": reason})

    def _enqueue(self, delivery: Delivery) -> None:
        pending = self._pending.setdefault(delivery.key, deque())
        if len(pending) >= self.settings.queue_limit:
            # the head is in flight while this key's worker runs (it pops it when done): drop the next oldest
            i = 1 if delivery.key in self._workers and len(pending) > 1 else 0
            self._outcome(pending[i], False, f"dropped: more than {self.settings.queue_limit} queued")
            del pending[i]
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
            if self.policy is None:
                self.policy = Egress(EgressSettings(configured_urls=[u for u in [self.settings.url] if u])).webhook
            self._session = new_webhook_session(self.policy)
        delay = self.settings.backoff_s
        reason = "no attempt made"
        final = False  # a failure that retrying cannot fix
        t0 = time.perf_counter()
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                built = delivery.build(attempt)
                body, headers = await built if inspect.isawaitable(built) else built
                async with self._session.request(
                    delivery.method,
                    delivery.url,
                    data=body if delivery.method != "GET" else None,
                    headers=headers,
                    allow_redirects=False,  # a redirect could lead past the address policy
                    timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
                ) as resp:
                    await resp.read()
                    if resp.status < 300:
                        self.stats["delivered"] += 1
                        self.delivery_time["delivered"].observe(time.perf_counter() - t0)
                        self._outcome(delivery, True)
                        return
                    reason = f"HTTP {resp.status}"
                    if 300 <= resp.status < 400:
                        location = public_url(resp.headers.get("Location", ""))
                        reason = f"redirect not followed: HTTP {resp.status} to {location or '(no Location)'}"
                        final = True
                        break
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        reason = f"refused by the receiver: HTTP {resp.status}"
                        break  # the receiver refuses this request; retrying will not help
            except RedirectRefused as exc:
                reason, final = f"redirect not followed: {exc}", True
                break
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                refused = refusal_of(exc)
                if refused is not None:
                    reason, final = f"address refused by the egress policy: {refused}", True
                    self.stats["refused"] += 1
                    break
                if isinstance(exc, aiohttp.InvalidURL | ValueError):
                    reason, final = f"invalid URL: {type(exc).__name__}: {exc}", True
                    break
                reason = f"{type(exc).__name__}: {exc}"
                log.debug("%s attempt %d for %s failed: %s", self.name, attempt, delivery.label, exc)
            if attempt < self.settings.max_attempts:
                await asyncio.sleep(delay)
                delay *= 2
        else:
            reason = f"{reason} after {self.settings.max_attempts} attempts"
        self.stats["delivery_failed"] += 1
        self.delivery_time["failed"].observe(time.perf_counter() - t0)
        self._outcome(delivery, False, reason)
        self.failures.append({"id": delivery.id, "sink": self.name, "key": delivery.key, "label": delivery.label,
                              "url": public_url(delivery.url), "reason": reason, "final": final, "at": time.time()})
        log.warning("webhook given up: %s %s to %s: %s", self.name, clip(delivery.label), clip(public_url(delivery.url)),
                    clip(reason, 300), extra={"call_id": delivery.key or None, "event": "webhook.given_up"})

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
    """Fan-out of events to webhook sinks, SSE subscribers and in-process listeners (and the journal, if any).

    :meth:`publish` numbers the event and queues it in an :class:`~mediasrv.events.outbox.Outbox`; the fan-out
    runs once the command or clock tick group that published it has returned, in publishing order.  So
    a dialect that records its command after ``play()`` returns has that record when the command's own
    ``playback.started`` reaches it, and needs no buffer of events that came "too early".
    """

    def __init__(self, webhook: WebhookSettings | None = None, history: int = 2000,
                 journal: Journal | None = None, egress: Egress | None = None) -> None:
        self.webhook = webhook or WebhookSettings()
        self.journal = journal
        # the webhook policy every sink delivers under; alone (tests, tools) the configured URL's host is trusted
        self.egress = egress or Egress(EgressSettings(configured_urls=[u for u in [self.webhook.url] if u]))
        self._seq = itertools.count(1)
        self._history: deque[Event] = deque(maxlen=history)
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._listeners: list[Callable[[Event], None]] = []
        self._sinks: list[WebhookSink] = []
        self._published = 0
        self._outbox: Outbox[Event] = Outbox(self._deliver)
        self.restored = {"deliveries": 0, "unrestorable": 0, "last_seq": 0}
        self.last_seq = 0  # of the newest event, this run or (restored) an earlier one
        if self.webhook.url:
            self.add_sink(WebhookSink(native_render(self.webhook.url), self.webhook, "webhook", native_build))

    @property
    def sinks(self) -> list[WebhookSink]:
        return list(self._sinks)

    @property
    def stats(self) -> dict[str, int]:
        totals = {"published": self._published, "delivered": 0, "delivery_failed": 0, "dropped": 0}
        for sink in self._sinks:
            for k, v in sink.stats.items():
                totals[k] = totals.get(k, 0) + v
        return totals

    async def start(self) -> None:
        """Open the journal (off the loop), continue its ``seq``, re-queue the deliveries it still owes.

        Call it after every sink is added and before anything publishes: the owed deliveries go
        out first, in their original per-call order, and keep their ids.
        """
        if self.journal is not None:
            rec = await asyncio.get_running_loop().run_in_executor(None, self.journal.open)
            self._seq = itertools.count(rec.last_seq + 1)
            self.last_seq = rec.last_seq
            self.restored["last_seq"] = rec.last_seq
            sinks = {sink.name: sink for sink in self._sinks}
            for record in rec.pending:
                sink = sinks.get(str(record.get("sink")))
                why = (f"no sink {record.get('sink')!r} in this configuration" if sink is None
                       else sink.restore(record))
                if why is None:
                    self.restored["deliveries"] += 1
                    continue
                self.restored["unrestorable"] += 1
                log.warning("owed webhook %s not re-sent: %s", record.get("id"), why)
                self.journal.append({"t": "r", "id": record.get("id"), "ok": False, "reason": why})
            if rec.pending:
                log.info("re-sending %d webhook(s) a previous run still owed", self.restored["deliveries"])
        for sink in self._sinks:
            sink.start()

    # -- producing -------------------------------------------------------
    def publish(self, type_: str, call_id: str, data: dict[str, Any] | None = None) -> Event:
        """Number the event now; it reaches everyone after the current command or tick group."""
        event = Event(type=type_, call_id=call_id, data=dict(data or {}), seq=next(self._seq))
        self._published += 1
        self._outbox.put(event)
        return event

    def flush(self) -> None:
        """Deliver what is queued now (drain and shutdown; delivery otherwise follows on its own)."""
        self._outbox.flush()

    def _deliver(self, event: Event) -> None:
        self.last_seq = event.seq  # as delivered: an SSE feed opened now replays up to here, then goes live
        self._history.append(event)
        if self.journal is not None:
            self.journal.append({"t": "e", **event.to_dict()})
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

    def history(self, call_id: str | None = None) -> list[Event]:
        return [e for e in self._history if call_id is None or e.call_id == call_id]

    async def since(self, seq: int, call_id: str | None = None, limit: int = 10_000) -> list[dict[str, Any]]:
        """Events after *seq* (oldest first, at most *limit*): the journal (read in an executor; it
        also holds earlier runs) plus what is in memory but perhaps not yet written."""
        found: dict[int, dict[str, Any]] = {}
        if self.journal is not None:
            journaled = await asyncio.get_running_loop().run_in_executor(
                None, self.journal.read_events, seq, call_id, limit)
            found = {int(e["seq"]): e for e in journaled}
        for event in self.history(call_id):
            if event.seq > seq:
                found.setdefault(event.seq, event.to_dict())
        return [found[k] for k in sorted(found)[:limit]]

    # -- consuming -------------------------------------------------------
    def add_listener(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def failures(self) -> list[dict[str, Any]]:
        """The latest failed deliveries of every sink (oldest first), each with its reason."""
        return sorted((f for sink in self._sinks for f in sink.failures), key=lambda f: f["at"])

    def sink_settings(self) -> WebhookSettings:
        """The configured retry schedule and timeout (``MEDIASRV_WEBHOOK_*``), for a vendor dialect's sink."""
        return replace(self.webhook, url=None)

    def add_sink(self, sink: WebhookSink) -> WebhookSink:
        """Deliver every published event through *sink* (which renders, or skips, each one)."""
        if any(s.name == sink.name for s in self._sinks):
            raise ValueError(f"a sink named {sink.name!r} exists: the journal tells sinks apart by name")
        sink.journal = self.journal
        if sink.policy is None:
            sink.policy = self.egress.webhook
        self._sinks.append(sink)
        return sink

    def subscribe(self) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(q)

    def end_subscriptions(self) -> None:
        """Tell every live feed to finish (a ``None`` in its queue): at shutdown an SSE handler whose
        client has gone would otherwise hold the HTTP server's cleanup until its next keepalive.
        What is still queued goes to them first."""
        self.flush()
        for q in list(self._subscribers):
            q.put_nowait(None)  # type: ignore[arg-type]

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for queued webhooks to go out; used at shutdown and in tests."""
        self.flush()
        await asyncio.gather(*(sink.drain(timeout) for sink in self._sinks))

    async def close(self) -> None:
        """Stop the sinks (what they did not deliver stays owed in the journal), then flush the journal."""
        self.flush()
        await asyncio.gather(*(sink.close() for sink in self._sinks))
        if self.journal is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.journal.close)
