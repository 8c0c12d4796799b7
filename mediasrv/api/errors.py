"""Native API errors: one exception type, one JSON shape, never a 500 for bad input."""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection
from typing import Any

from aiohttp import web

from ..calls.commands import (
    CallEnded,
    CallNotAnswered,
    CommandError,
    InvalidCommand,
    NoSuchCall,
    NoSuchLeg,
    NoSuchPlayback,
)


class ApiError(Exception):
    """An error the client caused (or can act on), rendered as ``{"error": {...}}``."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def to_response(self) -> web.Response:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return web.json_response({"error": body}, status=self.status)


def command_error(exc: CommandError) -> ApiError:
    """The command service's domain error in the native shape."""
    if isinstance(exc, NoSuchCall):
        return ApiError(404, "call_not_found", exc.message)
    if isinstance(exc, CallEnded):
        return ApiError(409, "call_ended", exc.message)
    if isinstance(exc, CallNotAnswered):
        return ApiError(409, "call_not_answered", "the call must be answered first")
    if isinstance(exc, NoSuchLeg):
        return ApiError(409, "no_media", "the call has no media leg")
    if isinstance(exc, NoSuchPlayback):
        return ApiError(404, "playback_not_found", "no playback with that id")
    if isinstance(exc, InvalidCommand):
        return ApiError(exc.status, exc.reason, exc.message)
    return ApiError(409, "command_refused", exc.message)


class BodyError(ValueError):
    """A request body that is not a JSON object; each dialect renders it in its own error shape."""


# aiohttp's own cap on a request body (client_max_size) is the same 1 MiB; this one also holds for
# bodies read some other way.  No API body nests more than a few levels.
MAX_JSON_BYTES = 1 << 20
MAX_JSON_DEPTH = 32


def _depth_over(body: Any, limit: int) -> bool:
    """Whether containers nest deeper than *limit* (iterative: a deep body cannot recurse here)."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """*raw* as a JSON object (an empty body is ``{}``), or BodyError saying what was wrong with it.

    Linear in the body (the C decoder, then one pass over the containers); a body over
    MAX_JSON_BYTES, nested deeper than MAX_JSON_DEPTH (the decoder's own limit is a RecursionError
    near 1,000) or holding an integer too long to convert is a BodyError, never a 500.
    """
    if len(raw) > MAX_JSON_BYTES:
        raise BodyError(f"request body is larger than {MAX_JSON_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BodyError(f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise BodyError(f"request body nests deeper than {MAX_JSON_DEPTH} levels") from exc
    except ValueError as exc:  # e.g. an integer over sys.get_int_max_str_digits() digits
        raise BodyError(f"request body is not usable JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BodyError("request body must be a JSON object")
    if _depth_over(body, MAX_JSON_DEPTH):
        raise BodyError(f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    return body


def unknown_field(name: str, known: Collection[str], prefix: str = "") -> ApiError:
    """A 400 naming *name*, with the closest of *known* as a suggestion when one is close enough."""
    path = f"{prefix}.{name}" if prefix else name
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    details: dict[str, Any] = {"field": path}
    if close:
        details["suggestion"] = f"{prefix}.{close[0]}" if prefix else close[0]
        hint = f' (did you mean "{details["suggestion"]}"?)'
    else:
        hint = f" (known fields: {', '.join(sorted(known))})" if known else " (this request takes no fields)"
    return ApiError(400, "unknown_field", f"unknown field {json.dumps(path)}{hint}", **details)


def check_fields(obj: dict[str, Any], known: Collection[str], prefix: str = "") -> None:
    """Refuse a field the native API does not know: a misspelling must not pass silently.

    Only the native API is strict; the vendor dialects ignore unknown fields as their vendors do.
    """
    for name in obj:
        if name not in known:
            raise unknown_field(str(name), known, prefix)


async def read_json_object(request: web.Request, known: Collection[str] | None = None) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what was wrong with it.

    With *known*, any other top-level field is a 400 naming it (see :func:`check_fields`).
    """
    try:
        body = parse_json_object(await request.read())
    except BodyError as exc:
        raise ApiError(400, "bad_json", str(exc)) from exc
    if known is not None:
        check_fields(body, known)
    return body


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.to_response()
    except CommandError as exc:  # a handler that let the command service's error through: the native shape
        return command_error(exc).to_response()
    except ConnectionResetError:  # the client went away mid-body: nobody to answer, nothing to log loudly
        return ApiError(400, "incomplete_request", "the connection closed before the request body ended").to_response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "http_error")
        return ApiError(exc.status, code, exc.reason).to_response()
