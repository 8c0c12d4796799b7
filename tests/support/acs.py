"""Azure Communication Services: the test key, the SDK client, the callback recorder and an independent
HMAC signer for raw requests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from azure.communication.callautomation import (
    CallAutomationClient,
)
from azure.core.credentials import AzureKeyCredential
from azure.core.messaging import CloudEvent

from .server import wait_until

KEY = base64.b64encode(b"mediasrv-acs-test-key-0123456789").decode()


@dataclass
class AcsEvents:
    """A real HTTP receiver for ACS callbacks: each POST body is a JSON array of CloudEvents."""

    url: str = ""
    bodies: list[Any] = field(default_factory=list)
    raw: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)  # body and headers, as received

    @property
    def events(self) -> list[CloudEvent]:
        return [CloudEvent.from_dict(e) for body in self.bodies for e in body]

    @property
    def plays(self) -> list[CloudEvent]:
        """The play operations' events (not CallDisconnected)."""
        return [e for e in self.events if e.type != "Microsoft.Communication.CallDisconnected"]

    def types(self) -> list[str]:
        return [e.type.removeprefix("Microsoft.Communication.") for e in self.events]

    def verify_all(self, base: str, audience: str = "mediasrv") -> list[dict[str, Any]]:
        """Every callback's JWT checked with PyJWT against the server's OpenID configuration and JWKS."""
        config = json.loads(urllib.request.urlopen(f"{base}/calling/.well-known/acsopenidconfiguration").read())
        jwks = jwt.PyJWKClient(config["jwks_uri"])
        return [verify_callback(jwks, config["issuer"], audience, headers, body) for body, headers in self.raw]

    async def receive(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.raw.append((raw, dict(request.headers)))
        self.bodies.append(json.loads(raw))
        return web.Response(status=200)

    async def wait_for(self, type_: str, n: int = 1, timeout: float = 10.0) -> list[CloudEvent]:
        await wait_until(lambda: self.types().count(type_) >= n, timeout, f"{n} {type_} callbacks")
        return [e for e in self.events if e.type == "Microsoft.Communication." + type_]


def verify_callback(jwks: jwt.PyJWKClient, issuer: str, audience: str, headers: dict[str, str],
                    body: bytes) -> dict[str, Any]:
    """What a receiver does (ACS's recipe: OIDC JWT validation), plus the body binding of content_sha256."""
    scheme, _, token = headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    key = jwks.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=issuer,
                        options={"require": ["iss", "aud", "iat", "exp"]})
    if claims["content_sha256"] != base64.b64encode(hashlib.sha256(body).digest()).decode():
        raise jwt.InvalidTokenError("body does not match the token")
    return claims


def acs_client(r: Any, key: str = KEY) -> CallAutomationClient:
    # Plain http works only through the constructor (a connection string forces https); no retries.
    return CallAutomationClient(r.http, AzureKeyCredential(key), retry_total=0)


def signed_headers(method: str, url: str, body: bytes, key: str, date: str | None = None,
                   content_hash: str | None = None) -> dict[str, str]:
    """An independent ACS HMAC signer (the recipe in vendor-sdk-wire.md §3) for raw requests."""
    parsed = aiohttp.client.URL(url)
    path_and_query = parsed.raw_path + (f"?{parsed.raw_query_string}" if parsed.raw_query_string else "")
    host = f"{parsed.host}:{parsed.port}"
    date = date or formatdate(usegmt=True)
    content_hash = content_hash or base64.b64encode(hashlib.sha256(body).digest()).decode()
    to_sign = f"{method}\n{path_and_query}\n{date};{host};{content_hash}"
    sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
    return {
        "x-ms-date": date,
        "x-ms-content-sha256": content_hash,
        "Authorization": f"HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={sig}",
        "Content-Type": "application/json",
    }
