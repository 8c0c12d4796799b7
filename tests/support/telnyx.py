"""Telnyx: the test API key, the SDK client pointed at a server, and the signed-webhook recorder."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from typing import Any, cast

import telnyx
from aiohttp import web

from .server import Running, start_server, wait_until

API_KEY = "KEY0123_mediasrv_test"


CS1, CS2, CS3 = (base64.b64encode(s).decode() for s in (b"first", b"second", b"third"))


@dataclass
class SignedHooks:
    """A real webhook receiver that keeps each request's raw body and headers (signatures are over the raw body)."""

    url: str = ""
    raw: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    client: telnyx.Telnyx | None = None
    key: str | None = None
    refuse: int = 0  # answer this many deliveries with 503 first (the sender must retry, re-signed)

    async def receive(self, request: web.Request) -> web.Response:
        if self.refuse > 0:
            self.refuse -= 1
            return web.Response(status=503)
        self.raw.append(((await request.read()).decode(), dict(request.headers)))
        return web.Response(status=200)

    def events(self, call_id: str | None = None) -> list[Any]:
        """Every webhook so far, verified and parsed by the SDK's own ``webhooks.unwrap``."""
        assert self.client is not None and self.key is not None
        out: list[Any] = [self.client.webhooks.unwrap(body, headers=headers, key=self.key) for body, headers in self.raw]
        return [e for e in out if call_id is None or e.data.payload.call_control_id == call_id]

    def types(self, call_id: str) -> list[str]:
        return [e.data.event_type for e in self.events(call_id)]

    async def wait_for(self, pred: Any, timeout: float = 10.0) -> Any:
        return await wait_until(lambda: next((e for e in self.events() if pred(e)), None), timeout, "a webhook")


def sdk_client(r: Running, api_key: str = API_KEY) -> telnyx.Telnyx:
    return telnyx.Telnyx(api_key=api_key, base_url=f"{r.http}/v2")


async def public_key(client: telnyx.Telnyx) -> str:
    """``GET /v2/public_key`` through the SDK's own generic request method."""
    body = await asyncio.to_thread(client.get, "/public_key", cast_to=object)
    return cast(dict[str, Any], body)["data"]["public_key"]


async def telnyx_server(tmp_path, hooks: SignedHooks, **settings: Any) -> tuple[Running, telnyx.Telnyx]:
    r = await start_server(tmp_path, telnyx_api_key=API_KEY, telnyx_webhook_url=hooks.url, **settings)
    client = sdk_client(r)
    hooks.client, hooks.key = client, await public_key(client)
    return r, client
