"""Bearer-token auth for the native API (constant-time compare).

Three ways in, all checked against the same secret: ``Authorization: Bearer <api_token>``; for
GET/HEAD only, the ``mediasrv_token`` cookie that the live page's login form sets (a browser's
EventSource cannot add headers; SameSite=Strict and GET-only keep it from being a CSRF vector);
and ``metrics_token``, a second read-only token good for ``GET /metrics`` alone.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .common import same as same_secret
from .errors import ApiError

# the console checks its cookie itself: without one it answers its login form (401), not JSON
OPEN_PATHS = frozenset({"/healthz", "/openapi.json", "/console", "/console/login"})
COOKIE = "mediasrv_token"
# Vendor dialects authenticate their own way (api/<vendor>.py); the native token does not apply there.
# api/dialect.py mount() refuses a dialect whose prefix is not listed here.
DIALECT_PREFIXES = ("/v2/", "/v1/Account/", "/calling/", "/api/v2/")


def is_dialect_path(path: str) -> bool:
    return path.startswith(DIALECT_PREFIXES)


def bearer_auth(token: str | None, metrics_token: str | None = None) -> Any:
    """Middleware requiring the API token (header, or cookie for GETs) when one is configured."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if token and request.path not in OPEN_PATHS and not is_dialect_path(request.path):
            scheme, _, value = request.headers.get("Authorization", "").partition(" ")
            value = value.strip() if scheme.lower() == "bearer" else ""
            if not value and request.method in ("GET", "HEAD"):
                value = request.cookies.get(COOKIE, "")
            ok = bool(value) and same_secret(value, token)
            if not ok and metrics_token and request.path == "/metrics" and request.method in ("GET", "HEAD"):
                ok = bool(value) and same_secret(value, metrics_token)
            if not ok:
                raise ApiError(401, "unauthorized", "missing or wrong bearer token")
        return await handler(request)

    return middleware
