"""Bearer-token auth for the native API (constant-time compare)."""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from .errors import ApiError

OPEN_PATHS = frozenset({"/healthz", "/openapi.json"})


def bearer_auth(token: str | None) -> Any:
    """Middleware requiring ``Authorization: Bearer <token>`` when a token is configured."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if token and request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
                raise ApiError(401, "unauthorized", "missing or wrong bearer token")
        return await handler(request)

    return middleware
