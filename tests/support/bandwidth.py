"""Bandwidth: test credentials, the SDK's Calls API client, and the audio/BXML origin that records requests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from bandwidth import ApiClient, Configuration
from bandwidth.api.calls_api import CallsApi

from .server import Hooks

ACCOUNT = "9900000"


USER, PASSWORD = "api-user", "api-pass"


CREDS = {"bandwidth_account_id": ACCOUNT, "bandwidth_username": USER, "bandwidth_password": PASSWORD}


@dataclass
class Origin:
    """Serves audio and BXML; records every request (method, path, JSON body, Authorization)."""

    base: str = ""
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def add(self, path: str, body: bytes | str, ctype: str = "application/xml") -> str:
        self.files[path] = (body.encode() if isinstance(body, str) else body, ctype)
        return f"{self.base}/{path}"

    async def serve(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.requests.append({"method": request.method, "path": request.path, "query": dict(request.query),
                              "auth": request.headers.get("Authorization"),
                              "json": (await request.json()) if raw else None})
        name = request.match_info["name"]
        if name.startswith("private/") and request.headers.get("Authorization") != "Basic dTpw":  # u:p
            return web.Response(status=401)
        if name not in self.files:
            return web.Response(status=404)
        body, ctype = self.files[name]
        return web.Response(body=body, content_type=ctype)

    def hits(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == "/" + path]


def calls_api(r: Any, **auth: Any) -> CallsApi:
    auth = auth or {"username": USER, "password": PASSWORD}
    config = Configuration(host=f"{r.http}/api/v2", ignore_operation_servers=True, **auth)
    return CallsApi(ApiClient(config))


def played(hooks: Hooks, n: int) -> Callable[[], bool]:
    return lambda: len([e for e in hooks.events if e["type"] == "playback.ended"]) >= n
