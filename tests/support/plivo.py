"""Plivo: test credentials, the SDK pointed at a server, and the signed-callback recorder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import plivo
import plivo.rest.client as prc
from aiohttp import web
from plivo.utils.signature_v3 import validate_v3_signature

from .server import Running, start_server, wait_until

AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"  # the SDK insists on 20 characters starting with MA (or SA)


@dataclass
class Callbacks:
    """A real callback receiver: method, URL, params and headers of each request."""

    url: str = ""
    got: list[dict[str, Any]] = field(default_factory=list)

    async def receive(self, request: web.Request) -> web.Response:
        form = await request.post() if request.method == "POST" else {}
        self.got.append({"method": request.method, "url": str(request.url), "form": dict(form),
                         "query": dict(request.query), "headers": dict(request.headers)})
        return web.Response(text="ok")

    def verified(self) -> list[dict[str, str]]:
        """Every callback's params, each checked with the SDK's own ``validate_v3_signature``."""
        out = []
        for c in self.got:
            h = c["headers"]
            params = dict(c["form"])
            assert validate_v3_signature(c["method"], c["url"], h["X-Plivo-Signature-V3-Nonce"], AUTH_TOKEN,
                                         h["X-Plivo-Signature-V3"], params), c
            out.append({**c["query"], **params})
        return out

    async def wait_for(self, pred: Any, timeout: float = 10.0) -> dict[str, str]:
        return await wait_until(lambda: next((p for p in self.verified() if pred(p)), None), timeout, "a callback")


def point_sdk_at(r: Running) -> None:
    local = f"{r.http}/v1/Account"
    prc.PLIVO_API_BASE_URI = prc.API_VOICE_BASE_URI = local
    prc.API_VOICE_BASE_URI_FALLBACK_1 = prc.API_VOICE_BASE_URI_FALLBACK_2 = local


async def plivo_server(tmp_path, **settings: Any) -> tuple[Running, plivo.RestClient]:
    r = await start_server(tmp_path, plivo_auth_id=AUTH_ID, plivo_auth_token=AUTH_TOKEN, **settings)
    point_sdk_at(r)
    return r, plivo.RestClient(auth_id=AUTH_ID, auth_token=AUTH_TOKEN)


AUTH_TOKEN = "plivo-token-for-tests"
