"""Our webhook signatures, checked by the vendors' own verifiers (telnyx, plivo SDKs) and PyJWT."""

import base64
import hashlib
import json
import os
import stat

import jwt
import pytest
import telnyx
from plivo.utils import validate_signature
from plivo.utils.signature_v3 import validate_v3_signature

from mediasrv.api.signing import Ed25519Signer, RsaJwtSigner, plivo_headers


def test_key_pair_made_once_and_private(tmp_path):
    a = Ed25519Signer.load_or_create(tmp_path)
    b = Ed25519Signer.load_or_create(tmp_path)
    assert a.public_key_b64 == b.public_key_b64 and len(a.public_key_raw) == 32
    assert stat.S_IMODE(os.stat(tmp_path / "keys" / "ed25519.pem").st_mode) == 0o600


def test_rsa_key_made_once_private_and_published_with_its_thumbprint(tmp_path):
    a = RsaJwtSigner.load_or_create(tmp_path)
    b = RsaJwtSigner.load_or_create(tmp_path)
    assert a.jwks == b.jwks and a.kid == b.kid
    assert stat.S_IMODE(os.stat(tmp_path / "keys" / "acs-rs256.pem").st_mode) == 0o600
    jwk = a.jwk
    assert (jwk["kty"], jwk["alg"], jwk["use"], jwk["e"]) == ("RSA", "RS256", "sig", "AQAB")
    assert len(base64.urlsafe_b64decode(jwk["n"] + "==")) == 256  # 2048 bits
    # RFC 7638: SHA-256 over the required members, lexicographic, no whitespace
    members = '{"e":"' + jwk["e"] + '","kty":"RSA","n":"' + jwk["n"] + '"}'
    assert a.kid == base64.urlsafe_b64encode(hashlib.sha256(members.encode()).digest()).decode().rstrip("=")


def test_rs256_token_verifies_with_pyjwt_and_expires(tmp_path):
    signer = RsaJwtSigner.load_or_create(tmp_path)
    body = b'[{"type": "Microsoft.Communication.CallDisconnected"}]'
    token = signer.token("http://127.0.0.1:8080", "res-1", body)
    key = jwt.PyJWK(signer.jwk).key
    claims = jwt.decode(token, key, algorithms=["RS256"], audience="res-1", issuer="http://127.0.0.1:8080")
    assert claims["content_sha256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert claims["exp"] - claims["iat"] == 300 and jwt.get_unverified_header(token)["kid"] == signer.kid
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key, algorithms=["RS256"], audience="res-2")
    with pytest.raises(jwt.ExpiredSignatureError):
        old = signer.token("http://127.0.0.1:8080", "res-1", body, now=1_000_000)
        jwt.decode(old, key, algorithms=["RS256"], audience="res-1")
    other = RsaJwtSigner.load_or_create(tmp_path / "other")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, jwt.PyJWK(other.jwk).key, algorithms=["RS256"], audience="res-1")


def test_telnyx_sdk_verifies_our_signature(tmp_path):
    signer = Ed25519Signer.load_or_create(tmp_path)
    body = json.dumps({"data": {"event_type": "call.playback.ended", "payload": {"status": "completed"}}})
    headers = signer.telnyx_headers(body.encode())
    client = telnyx.Telnyx(api_key="k", base_url="http://127.0.0.1:9/v2")
    event = client.webhooks.unwrap(body, headers=headers, key=signer.public_key_b64)
    assert event.data.event_type == "call.playback.ended"
    with pytest.raises(ValueError, match="Signature verification failed"):
        client.webhooks.unwrap(body.replace("completed", "failed"), headers=headers, key=signer.public_key_b64)
    old = signer.telnyx_headers(body.encode(), now=1_000_000)
    with pytest.raises(ValueError, match="too old"):
        client.webhooks.unwrap(body, headers=old, key=signer.public_key_b64)


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/cb", "http://127.0.0.1:8000/cb/?b=2&a=1&a=0"])
@pytest.mark.parametrize("params", [{}, {"CallUUID": "v3:x:1", "Event": "PlayEnded", "Status": "completed"}])
def test_plivo_sdk_verifies_our_signature(method, url, params):
    h = plivo_headers(method, url, dict(params), "tok3n")
    assert validate_v3_signature(method, url, h["X-Plivo-Signature-V3-Nonce"], "tok3n",
                                 h["X-Plivo-Signature-V3"], dict(params))
    assert not validate_v3_signature(method, url, h["X-Plivo-Signature-V3-Nonce"], "other",
                                     h["X-Plivo-Signature-V3"], dict(params))
    assert validate_signature(url, h["X-Plivo-Signature-V2-Nonce"], h["X-Plivo-Signature-V2"], "tok3n")
