"""Delivery of dialect callbacks: POST a body to a URL the application chose, in order, retried.

The native webhook (events.py) has one URL for every event; vendor dialects instead post to a
URL named per command (ACS ``operationCallbackUri``) or per call, in the vendor's own body shape
and with the vendor's own headers (signatures).  This module knows nothing of any vendor: a
dialect hands it ready bytes and headers.  Posting never runs on the media clock's path: ``post``
only queues, and one task per ordering key sends that key's callbacks one after another.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

log = logging.getLogger("mediasrv.callbacks")

HeaderFactory = Callable[[bytes], Mapping[str, str]]  # signs the body at send time (fresh timestamps)


@dataclass
class Callback:
    url: str
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    sign: HeaderFactory | None = None


@dataclass
class CallbackSettings:
    timeout_s: float = 5.0
    max_attempts: int = 4
    backoff_s: float = 0.5  # doubled per attempt
    queue_limit: int = 1000  # per key; the oldest is dropped (and counted) beyond it


class CallbackSender:
    """Ordered (per key), retried POSTs of prepared bodies; ``close()`` drains briefly."""

    def __init__(self, settings: CallbackSettings | None = None, user_agent: str = "mediasrv/0.1") -> None:
        self.settings = settings or CallbackSettings()
        self._user_agent = user_agent
        self._pending: dict[str, deque[Callback]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.stats = {"queued": 0, "delivered": 0, "failed": 0, "dropped": 0}

    def post(self, key: str, callback: Callback) -> None:
        """Queue *callback* behind the earlier ones with the same *key* (e.g. a call id)."""
        pending = self._pending.setdefault(key, deque())
        if len(pending) >= self.settings.queue_limit:
            pending.popleft()
            self.stats["dropped"] += 1
        pending.append(callback)
        self.stats["queued"] += 1
        if key not in self._workers:
            self._workers[key] = asyncio.get_running_loop().create_task(self._run(key))

    async def _run(self, key: str) -> None:
        try:
            pending = self._pending[key]
            while pending:
                await self._deliver(pending[0])
                pending.popleft()
        finally:
            self._workers.pop(key, None)
            if not self._pending.get(key):
                self._pending.pop(key, None)

    async def _deliver(self, cb: Callback) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": self._user_agent})
        delay = self.settings.backoff_s
        for attempt in range(1, self.settings.max_attempts + 1):
            headers = {"Content-Type": cb.content_type, **cb.headers}
            if cb.sign is not None:
                headers.update(cb.sign(cb.body))
            try:
                async with self._session.post(
                    cb.url, data=cb.body, headers=headers, timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s)
                ) as resp:
                    await resp.read()
                    if resp.status < 300:
                        self.stats["delivered"] += 1
                        return
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        break  # refused; a retry will not change the receiver's mind
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.debug("callback attempt %d to %s failed: %s", attempt, cb.url.split("?", 1)[0], exc)
            if attempt < self.settings.max_attempts:
                await asyncio.sleep(delay)
                delay *= 2
        self.stats["failed"] += 1
        log.warning("callback to %s not delivered", cb.url.split("?", 1)[0])

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
