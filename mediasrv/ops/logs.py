"""Operator logging: the call id from a context variable on every record, text or JSON lines.

Work for one call (the SIP core handling its dialog, an API handler for it, the media plane's
events for it) runs under :func:`call_context`, and :class:`CallIdFilter` copies the id onto
every record logged meanwhile, so no message has to paste it in. asyncio copies context
variables into the tasks it creates, so a task started for a call keeps its id.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

call_id_var: ContextVar[str | None] = ContextVar("mediasrv_call_id", default=None)

# attributes every LogRecord has; anything else was passed with extra= and goes into JSON lines
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "call_id"}


@contextmanager
def call_context(call_id: str | None) -> Iterator[None]:
    """Records logged inside carry *call_id* (nested contexts restore the outer one)."""
    token = call_id_var.set(call_id)
    try:
        yield
    finally:
        call_id_var.reset(token)


def bind_call(call_id: str | None) -> None:
    """Set the call id for the rest of the current task (an API handler, a per-call task)."""
    call_id_var.set(call_id)


class CallIdFilter(logging.Filter):
    """Puts ``record.call_id`` on every record: an explicit ``extra={"call_id": ...}`` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "call_id", None) is None:
            record.call_id = call_id_var.get()
        return True


class TextFormatter(logging.Formatter):
    """``2026-12-06T19:50:01.123Z INFO mediasrv.sip [call=abc] message``: the call only when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        call = getattr(record, "call_id", None)
        line = f"{ts} {record.levelname} {record.name}{f' [call={call}]' if call else ''}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, call_id, and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call = getattr(record, "call_id", None)
        if call:
            out["call_id"] = call
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "INFO", fmt: str = "text", stream: Any = None) -> None:
    """Configure the root logger once for ``mediasrv serve`` (replacing any earlier handlers)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(CallIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # ours is mediasrv.access


def with_call_id(get: Callable[..., str | None]) -> Callable[[F], F]:
    """Decorate a method whose arguments name a call: records logged inside carry its id.

    *get* receives the method's arguments after ``self``; the id is set for the call and reset
    after it (synchronous protocol callbacks share one context, so nothing may leak).
    """

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kw: Any) -> Any:
            token = call_id_var.set(get(*args))
            try:
                return fn(self, *args, **kw)
            finally:
                call_id_var.reset(token)

        return wrapper  # type: ignore[return-value]

    return deco
