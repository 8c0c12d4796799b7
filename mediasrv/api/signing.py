"""Webhook signatures the vendors' SDKs verify: Telnyx's Ed25519, Plivo's HMAC-SHA256 (V2, V3)
and ACS's RS256 JWT.

Each key pair is made once per data directory (``<data-dir>/keys/ed25519.pem`` and
``<data-dir>/keys/acs-rs256.pem``, mode 0600) so the public key an application was given (or
fetched from the JWKS) stays valid across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY_FILE = "ed25519.pem"
RSA_KEY_FILE = "acs-rs256.pem"
JWT_LIFETIME_S = 300  # ACS's callback tokens live five minutes; a fresh one per delivery attempt


def _load_or_create_pem(data_dir: str | Path, name: str, generate: Callable[[], Any]) -> tuple[Any, Path]:
    """Read ``<data_dir>/keys/<name>``, creating it (exclusively, 0600) on first use."""
    keys = Path(data_dir) / "keys"
    path = keys / name
    if not path.exists():
        keys.mkdir(parents=True, exist_ok=True)
        pem = generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            pass
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
    return serialization.load_pem_private_key(path.read_bytes(), password=None), path


class Ed25519Signer:
    """The server's webhook signing key."""

    def __init__(self, private_key: Ed25519PrivateKey, path: Path | None = None) -> None:
        self._key = private_key
        self.path = path

    @classmethod
    def load_or_create(cls, data_dir: str | Path) -> Ed25519Signer:
        """Read ``<data_dir>/keys/ed25519.pem``, creating it (exclusively, 0600) on first use."""
        key, path = _load_or_create_pem(data_dir, KEY_FILE, Ed25519PrivateKey.generate)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(key, path)

    @property
    def public_key_raw(self) -> bytes:
        return self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def public_key_b64(self) -> str:
        """What Telnyx calls the public key: base64 of the 32 raw bytes."""
        return base64.b64encode(self.public_key_raw).decode()

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def telnyx_headers(self, body: bytes, now: float | None = None) -> dict[str, str]:
        """``telnyx-signature-ed25519`` over ``"{timestamp}|{body}"`` and ``telnyx-timestamp``."""
        ts = str(int(time.time() if now is None else now))
        sig = self.sign(ts.encode() + b"|" + body)
        return {"telnyx-signature-ed25519": base64.b64encode(sig).decode(), "telnyx-timestamp": ts}


# -- ACS ----------------------------------------------------------------------------------------
class RsaJwtSigner:
    """The server's RS256 key for ACS callback tokens, published as a JWKS (kid = RFC 7638 thumbprint)."""

    def __init__(self, private_key: rsa.RSAPrivateKey, path: Path | None = None) -> None:
        self._key = private_key
        self.path = path
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        members = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"), sort_keys=True)
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(members.encode()).digest()).rstrip(b"=").decode()
        self.jwk: dict[str, str] = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                                    "n": jwk["n"], "e": jwk["e"]}

    @classmethod
    def load_or_create(cls, data_dir: str | Path) -> RsaJwtSigner:
        """Read ``<data_dir>/keys/acs-rs256.pem`` (RSA 2048), creating it (exclusively, 0600) on first use."""
        key, path = _load_or_create_pem(
            data_dir, RSA_KEY_FILE, lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{path} does not hold an RSA private key")
        return cls(key, path)

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk]}

    def token(self, issuer: str, audience: str, body: bytes, now: float | None = None) -> str:
        """A five-minute RS256 JWT; ``content_sha256`` (base64 SHA-256 of the body) binds it to one request."""
        iat = int(time.time() if now is None else now)
        claims = {
            "iss": issuer,
            "aud": audience,
            "iat": iat,
            "nbf": iat,
            "exp": iat + JWT_LIFETIME_S,
            "jti": str(uuid.uuid4()),
            "content_sha256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})


# -- Plivo --------------------------------------------------------------------------------------
def _sorted_query(params: dict[str, list[str]]) -> str:
    return "&".join(f"{k}={v}" for k in sorted(params) for v in sorted(params[k]))


def plivo_v3_signature(method: str, url: str, params: dict[str, str], nonce: str, auth_token: str) -> str:
    """``X-Plivo-Signature-V3``: HMAC-SHA256(auth_token) over the URL, the sorted params and the nonce.

    POST: the URL without its query, then ``?`` and the sorted query (``?`` also when there are
    params), ``.`` when both exist, then ``key+value`` of the sorted params.  GET: the params
    are merged into the sorted query.  Then ``"." + nonce``; the digest is base64-encoded.
    """
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    query = parse_qs(parts.query, keep_blank_values=True)
    if method.upper() == "GET":
        for k, v in params.items():
            query.setdefault(k, []).append(v)
        q = _sorted_query(query)
        signed = base + ("?" + q if q else "")
    else:
        q = _sorted_query(query)
        if q or params:
            base += "?" + q
        if q and params:
            base += "."
        signed = base + "".join(f"{k}{params[k]}" for k in sorted(params))
    mac = hmac.new(auth_token.encode(), f"{signed}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def plivo_v2_signature(url: str, nonce: str, auth_token: str) -> str:
    """Legacy ``X-Plivo-Signature-V2``: HMAC-SHA256 over the URL without its query, then the nonce."""
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return base64.b64encode(hmac.new(auth_token.encode(), (base + nonce).encode(), hashlib.sha256).digest()).decode()


def plivo_headers(method: str, url: str, params: dict[str, str], auth_token: str) -> dict[str, str]:
    """The signature headers Plivo puts on a callback (a fresh nonce each time)."""
    nonce = secrets.token_hex(10)
    return {
        "X-Plivo-Signature-V3": plivo_v3_signature(method, url, params, nonce, auth_token),
        "X-Plivo-Signature-V3-Nonce": nonce,
        "X-Plivo-Signature-V2": plivo_v2_signature(url, nonce, auth_token),
        "X-Plivo-Signature-V2-Nonce": nonce,
    }
