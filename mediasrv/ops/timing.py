"""Latency histograms kept by the code that times things, read by the metrics collector.

Why not prometheus_client's Histogram directly: the server may run several times in one process
(tests), each with its own registry, and the components that time things (the loader, webhook
sinks, the HTTP layer) should not know about exposition.  A :class:`Timing` is a few counters;
``mediasrv/ops/metrics.py`` turns them into histogram families at scrape time.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

# seconds; wide enough for a 1 ms API call and a 30 s download
DEFAULT_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Timing:
    """A fixed-bucket histogram: ``counts[i]`` observations ≤ ``bounds[i]`` (not cumulative), the last one +Inf."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = DEFAULT_BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative (le, count) pairs ending with +Inf, as exposition wants them."""
        out, running = [], 0
        for le, n in zip([*map(str, self.bounds), "+Inf"], self.counts):
            running += n
            out.append((le, running))
        return out

    @property
    def count(self) -> int:
        return sum(self.counts)


# seconds; for work done on the event loop in slices (a /metrics scrape: ~1-10 ms in all)
LOOP_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class LoopMeter:
    """Sums the time a sliced task holds the event loop: from each resumption to its next yield.

    Why: a task that lets the loop in between slices (``await meter.pause()``) is best judged by
    how long it held the loop, i.e. kept the media clock waiting, not by its wall time, which
    includes everything that ran in between."""

    __slots__ = ("held", "longest", "_since", "_yield")

    def __init__(self, yield_to_loop: Callable[[], Awaitable[None]] | None = None) -> None:
        """*yield_to_loop*: how to let the loop in (default ``asyncio.sleep(0)``; the media clock's ``gap``)."""
        self.held = self.longest = 0.0
        self._since = time.perf_counter()
        self._yield = yield_to_loop

    def _account(self) -> None:
        now = time.perf_counter()
        slice_s = now - self._since
        self.held += slice_s
        if slice_s > self.longest:
            self.longest = slice_s
        self._since = now

    async def pause(self) -> None:
        self._account()
        await (self._yield() if self._yield is not None else asyncio.sleep(0))
        self._since = time.perf_counter()

    def stop(self) -> float:
        self._account()
        return self.held


def route_label(request: web.Request) -> tuple[str, str]:
    """(method, route template) with bounded cardinality: an unmatched path is one label, whatever was asked."""
    route = request.match_info.route
    resource = route.resource
    if resource is None:
        return "other", "unmatched"
    return route.method, resource.canonical


def timing_middleware(timings: dict[tuple[str, str], Timing]) -> Any:
    """Time every HTTP request by route template (SSE streams are left out: they last as long as the client)."""

    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        t0 = time.perf_counter()
        streamed = False
        try:
            resp = await handler(request)
            streamed = resp.content_type == "text/event-stream"
            return resp
        finally:
            if not streamed:
                key = route_label(request)
                timing = timings.get(key)
                if timing is None:
                    timing = timings[key] = Timing()
                timing.observe(time.perf_counter() - t0)

    return middleware
