"""Untrusted text in log lines: clipped, escaped, and rate-limited per source.

A SIP peer or API client controls display names, URIs, header values and JSON strings; echoed
whole they let one request fill the log (a 4 KB display name per datagram) or forge lines
(CR/LF, terminal escapes). Everything that came off the wire goes through :func:`clip`, and
warnings about one source go through a :class:`SourceLimiter` so a flood from one address
costs a bounded number of lines.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

DEFAULT_LIMIT = 120


def clip(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """A printable, single-line rendering of *value*, at most about *limit* characters.

    Non-printable characters (CR, LF, NUL, escapes, bidi controls) are shown as ``\\xNN``-style
    escapes, so a line can neither be split nor recoloured; the length of what was cut is said.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value[: limit * 4]).decode("utf-8", "backslashreplace")
        total = len(value)
    else:
        text = str(value)
        total = len(text)
        text = text[: limit * 4]
    out: list[str] = []
    size = 0
    for ch in text:
        piece = ch if ch.isprintable() and ch != "\\" else ch.encode("unicode_escape").decode("ascii")
        if size + len(piece) > limit:
            break
        out.append(piece)
        size += len(piece)
    shown = "".join(out)
    if len(out) < total:
        return f"{shown}…(+{total - len(out)} more)"
    return shown


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    suppressed: int = 0


class SourceLimiter:
    """At most *burst* log lines per source, refilled at *rate* lines per second.

    Memory is bounded: the least recently seen sources beyond *max_sources* are forgotten.
    :meth:`allow` returns ``(allowed, suppressed_before)`` so the next allowed line can say how
    many were dropped in between.
    """

    def __init__(self, rate: float = 1.0, burst: int = 5, max_sources: int = 4096) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.suppressed_total = 0

    def allow(self, source: str, now: float | None = None) -> tuple[bool, int]:
        now = time.monotonic() if now is None else now
        b = self._buckets.get(source)
        if b is None:
            b = _Bucket(tokens=float(self.burst), updated=now)
            self._buckets[source] = b
            if len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
            b.tokens = min(float(self.burst), b.tokens + (now - b.updated) * self.rate)
            b.updated = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            dropped, b.suppressed = b.suppressed, 0
            return True, dropped
        b.suppressed += 1
        self.suppressed_total += 1
        return False, 0
