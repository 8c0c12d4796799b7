"""Bounded logging about SIP sources and the per-message time budget.

Anyone who reaches the SIP port chooses what we log about them and how often: every warning
about a source goes through :class:`SourceLog` (a per-source limit plus an overall one, so
spoofed sources cannot multiply the lines), and message text only ever appears clipped.

:class:`MessageBudget` times the handling of each inbound message.  The parsers are linear
and the limits in ``message.py`` bound their input, so no message should come near the budget;
one that does is counted (``over_budget`` in the SIP counters, shown in ``/metrics``) and
logged with its first line, so a new slow path shows up in production rather than as a stall.
The budget is on the CPU time our thread spent (``time.thread_time``), not on wall time: on a
busy host the thread is also preempted mid-message, which is not a slow path of ours and was
reported as one (a WARNING on a first, idle call); the line gives both.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ..ops.logsafe import SourceLimiter, clip

__all__ = ["SourceLog", "MessageBudget", "first_line"]


class SourceLog:
    """Warnings about sources: at most *burst* lines per source (refilled at *rate*/s) and at most
    *total_burst* lines overall (refilled at *total_rate*/s); each allowed line says how many
    were dropped before it."""

    def __init__(
        self,
        logger: logging.Logger,
        rate: float = 0.2,
        burst: int = 3,
        total_rate: float = 5.0,
        total_burst: int = 20,
    ) -> None:
        self.logger = logger
        self.per_source = SourceLimiter(rate=rate, burst=burst)
        self.overall = SourceLimiter(rate=total_rate, burst=total_burst, max_sources=1)
        self._overall_dropped = 0

    @property
    def suppressed(self) -> int:
        return self.per_source.suppressed_total + self.overall.suppressed_total

    def log(self, level: int, source: str, fmt: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``fmt % args`` about *source* unless a limit says no; True when it was logged.

        The caller clips message text in *args*; *source* is an address we saw, not their text.
        """
        ok, dropped = self.per_source.allow(source)
        if not ok:
            return False
        ok_all, dropped_all = self.overall.allow("*")
        if not ok_all:
            self._overall_dropped += 1
            return False
        dropped_all += self._overall_dropped
        self._overall_dropped = 0
        extra = ""
        if dropped or dropped_all:
            extra = f" ({dropped} earlier lines about {source} and {dropped_all} overall suppressed)"
        self.logger.log(level, fmt + "%s", *args, extra, exc_info=exc_info)
        return True


def first_line(data: bytes) -> str:
    """The start line of a raw message, clipped for a log line."""
    end = data.find(b"\r\n", 0, 512)
    return clip(data[: end if end >= 0 else 512], 100)


@dataclass
class MessageBudget:
    """Times each inbound message's handling against *limit_s*; counts and logs the ones over it."""

    stats: dict[str, int]
    limit_s: float
    log: SourceLog
    max_s: float = 0.0  # the slowest message handled so far
    handled: int = 0

    def __post_init__(self) -> None:
        self.stats.setdefault("over_budget", 0)

    def start(self) -> tuple[float, float]:
        return time.thread_time(), time.perf_counter()

    def done(self, started: tuple[float, float], data: bytes, source: tuple[str, int]) -> float:
        """Account one message whose handling began at *started*; returns the CPU seconds it took."""
        elapsed = time.thread_time() - started[0]
        self.handled += 1
        if elapsed > self.max_s:
            self.max_s = elapsed
        if self.limit_s > 0 and elapsed > self.limit_s:
            self.stats["over_budget"] += 1
            self.log.log(
                logging.WARNING,
                source[0],
                "SIP message from %s:%s took %.3g ms of CPU (budget %.3g ms; %.3g ms wall), %d bytes: %s",
                source[0],
                source[1],
                elapsed * 1000.0,
                self.limit_s * 1000.0,
                (time.perf_counter() - started[1]) * 1000.0,
                len(data),
                first_line(data),
            )
        return elapsed
