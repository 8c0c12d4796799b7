"""Malformed HTTP requests are refused with a 400 and one short log line, never a traceback.

aiohttp answers a request it cannot parse (bad Content-Length, a header line too long, an
invalid header character, garbage or TLS on the plain port) with a 400 itself, before any
route runs, and logs it with ``logger.exception``: a full traceback at ERROR for every such
request, which a scanner turns into a log flood.  :class:`BadRequestLogFilter` rewrites those
records into one clipped INFO line per request, rate-limited per source, and counts them.
Exceptions raised by our own handlers are left alone: those are bugs and keep their traceback.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

from ..ops.logsafe import SourceLimiter, clip


class BadRequestLogFilter(logging.Filter):
    """Turns aiohttp's traceback for an unparseable request into a short, rate-limited line."""

    def __init__(self, limiter: SourceLimiter | None = None) -> None:
        super().__init__()
        self.limiter = limiter or SourceLimiter(rate=0.2, burst=5)
        self.refused = 0  # malformed requests refused by the HTTP parser

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or not 400 <= (exc.code or 400) < 500:
            return True
        self.refused += 1
        source = str(record.args[0]) if isinstance(record.args, tuple) and record.args else "?"
        allowed, dropped = self.limiter.allow(source)
        if not allowed:
            return False
        record.msg = "malformed HTTP request from %s refused with %d: %s%s"
        record.args = (clip(source, 60), exc.code or 400, clip(exc.message or type(exc).__name__, 160),
                       f" ({dropped} more from it not logged)" if dropped else "")
        if record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text = None, None
        return True


def install(logger_name: str = "aiohttp.server") -> BadRequestLogFilter:
    """Put one filter on aiohttp's server logger (idempotent: a second server reuses it)."""
    logger = logging.getLogger(logger_name)
    for existing in logger.filters:
        if isinstance(existing, BadRequestLogFilter):
            return existing
    flt = BadRequestLogFilter()
    logger.addFilter(flt)
    return flt
