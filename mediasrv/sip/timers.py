"""One heap of deadlines for every SIP timer (A-K, 2xx retransmission): the sans-I/O core never
sleeps; the transport arms a single ``loop.call_at`` for :meth:`TimerHeap.next_deadline`."""

from __future__ import annotations

import heapq
from collections.abc import Callable


class Timer:
    __slots__ = ("when", "fn", "cancelled")

    def __init__(self, when: float, fn: Callable[[], None]) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class TimerHeap:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = 0

    def schedule(self, when: float, fn: Callable[[], None]) -> Timer:
        t = Timer(when, fn)
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, t))
        return t

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run_due(self, now: float) -> int:
        """Fire every timer due at *now*; return how many fired."""
        heap = self._heap
        fired = 0
        while heap and heap[0][0] <= now:
            _, _, t = heapq.heappop(heap)
            if not t.cancelled:
                t.cancelled = True
                fired += 1
                t.fn()
        return fired

    def __len__(self) -> int:
        return sum(1 for _, _, t in self._heap if not t.cancelled)
