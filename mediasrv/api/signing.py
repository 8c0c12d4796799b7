"""Webhook signatures the vendors' SDKs verify: Telnyx's Ed25519 and Plivo's HMAC-SHA256 (V2, V3).

The Ed25519 key pair is made once per data directory (``<data-dir>/keys/ed25519.pem``,
mode 0600) so the public key an application was given stays valid across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY_FILE = "ed25519.pem"


class Ed25519Signer:
    """The server's webhook signing key."""

    def __init__(self, private_key: Ed25519PrivateKey, path: Path | None = None) -> None:
        self._key = private_key
        self.path = path

    @classmethod
    def load_or_create(cls, data_dir: str | Path) -> Ed25519Signer:
        """Read ``<data_dir>/keys/ed25519.pem``, creating it (exclusively, 0600) on first use."""
        keys = Path(data_dir) / "keys"
        path = keys / KEY_FILE
        if not path.exists():
            keys.mkdir(parents=True, exist_ok=True)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first: use theirs
                pass
            else:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(pem)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
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
