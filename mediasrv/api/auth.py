"""Bearer-token auth for the native API (constant-time compare)."""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from .errors import ApiError

OPEN_PATHS = frozenset({"/healthz", "/openapi.json"})
# Vendor dialects authenticate their own way (api/<vendor>.py); the native token does not apply there.
DIALECT_PREFIXES = ("/v2/", "/v1/Account/", "/calling/", "/api/v2/")


def is_dialect_path(path: str) -> bool:
    return path.startswith(DIALECT_PREFIXES)


def bearer_auth(token: str | None) -> Any:
    """Middleware requiring ``Authorization: Bearer <token>`` when a token is configured."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if token and request.path not in OPEN_PATHS and not is_dialect_path(request.path):
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
                raise ApiError(401, "unauthorized", "missing or wrong bearer token")
        return await handler(request)

    return middleware
