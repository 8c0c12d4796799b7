"""The pure parts of the ACS and Bandwidth dialects: HMAC checks, identities, BXML parsing."""

from __future__ import annotations

import base64
import hashlib
import hmac
from email.utils import formatdate

import pytest

from mediasrv.api.acs import matches, parse_identifier, sdk_signed_path, verify_hmac
from mediasrv.api.bandwidth import (
    MAX_BXML_BYTES,
    BandwidthError,
    Pause,
    Play,
    Redirect,
    Unsupported,
    parse_bxml,
)
from mediasrv.calls import Call, Direction

KEY = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
NOW = 1_800_000_000.0


def signed(method: str, path: str, body: bytes, key: str = KEY, when: float = NOW, host: str = "h:1") -> dict[str, str]:
    date = formatdate(when, usegmt=True)
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    sts = f"{method}\n{path}\n{date};{host};{digest}"
    sig = base64.b64encode(hmac.new(base64.b64decode(key), sts.encode(), hashlib.sha256).digest()).decode()
    return {"x-ms-date": date, "x-ms-content-sha256": digest, "Host": host,
            "Authorization": f"HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={sig}"}


def test_hmac_accepts_the_recipe_and_refuses_every_change():
    path, body = "/calling/callConnections/v3%3Aa%3Ab:play?api-version=2026-03-12", b'{"playSources":[]}'
    h = signed("POST", path, body)
    assert verify_hmac("POST", path, h, body, KEY, now=NOW) is None
    assert verify_hmac("POST", path, h, body, KEY, now=NOW + 290) is None  # inside the skew limit
    assert verify_hmac("POST", path, h, body, KEY, now=NOW + 301) == "x-ms-date outside the allowed clock skew"
    assert verify_hmac("POST", path, h, body + b" ", KEY, now=NOW) == "x-ms-content-sha256 does not match the body"
    assert verify_hmac("PUT", path, h, body, KEY, now=NOW) == "signature mismatch"
    assert verify_hmac("POST", path.replace("2026", "2025"), h, body, KEY, now=NOW) == "signature mismatch"
    other = base64.b64encode(b"another key").decode()
    assert verify_hmac("POST", path, h, body, other, now=NOW) == "signature mismatch"
    assert verify_hmac("POST", path, {**h, "Host": "evil:1"}, body, KEY, now=NOW) == "signature mismatch"
    assert verify_hmac("POST", path, {**h, "Authorization": "Bearer x"}, body, KEY, now=NOW) is not None
    assert verify_hmac("POST", path, {**h, "x-ms-date": "yesterday"}, body, KEY, now=NOW) is not None


def test_sdk_signed_path_quotes_the_id_like_the_sdk():
    raw = "/calling/callConnections/v3:a:b:play?api-version=1"
    assert sdk_signed_path("callConnections/v3:a:b:play", raw) == "/calling/callConnections/v3%3Aa%3Ab:play?api-version=1"
    assert sdk_signed_path("callConnections/v3:a:b/:playAudio", "/x?q=1") == (
        "/calling/callConnections/v3%3Aa%3Ab/:playAudio?q=1")
    assert sdk_signed_path("other", raw) is None


def test_identities_match_the_remote_sip_user():
    inbound = Call(Direction.INBOUND, "sip:+14255550123@10.0.0.1;user=phone", "sip:ivr@mediasrv", "c1")
    outbound = Call(Direction.OUTBOUND, "sip:mediasrv@host", "sip:8%3Aacs%3Auser-1@host", "c2")
    phone = parse_identifier({"rawId": "4:+14255550123", "phoneNumber": {"value": "+14255550123"}}, "playTo[0]")
    user = parse_identifier({"rawId": "8:acs:user-1", "communicationUser": {"id": "8:acs:user-1"}}, "playTo[1]")
    assert phone == ("phone", "+14255550123") and user == ("user", "8:acs:user-1")
    assert matches(phone, inbound) and not matches(phone, outbound)
    assert matches(user, outbound) and not matches(user, inbound)
    assert parse_identifier({"rawId": "4:+1555"}, "x") == ("phone", "+1555")
    with pytest.raises(Exception, match="only phoneNumber and communicationUser"):
        parse_identifier({"microsoftTeamsUser": {"userId": "x"}}, "playTo[0]")


def test_bxml_verbs_and_relative_urls():
    doc = (b'<Response><PlayAudio username="u" password="p">a.wav</PlayAudio><Pause duration="1.5"/>'
           b'<Redirect redirectUrl="/next" redirectMethod="get" tag="t"/><SpeakSentence>hi</SpeakSentence>'
           b"<Hangup/></Response>")
    verbs = parse_bxml(doc, "Response", base_url="https://app.example/bxml/answer")
    assert verbs[0] == Play("https://app.example/bxml/a.wav", "u", "p")
    assert verbs[1] == Pause(1.5)
    assert verbs[2] == Redirect("https://app.example/next", "GET", None, None, "t")
    assert verbs[3] == Unsupported("SpeakSentence")
    assert type(verbs[4]).__name__ == "Hangup"


@pytest.mark.parametrize("doc, why", [
    (b"<Response/>", "root element must be <Bxml>"),
    (b"<Bxml><PlayAudio>a.wav</PlayAudio></Bxml>", "not an absolute http"),
    (b"<Bxml><PlayAudio>file:///etc/passwd</PlayAudio></Bxml>", "not an absolute http"),
    (b'<Bxml><Pause duration="x"/></Bxml>', "duration"),
    (b'<Bxml><Redirect redirectUrl="http://a/b" redirectMethod="PUT"/></Bxml>', "redirectMethod"),
    (b"<Bxml><PlayAudio>", "not well-formed"),
    (b'<!DOCTYPE a [<!ENTITY x "y">]><Bxml>&x;</Bxml>', "not allowed"),
    (b'<!DOCTYPE a [<!ENTITY x SYSTEM "http://127.0.0.1/x">]><Bxml>&x;</Bxml>', "not allowed"),
    (b'<!DOCTYPE Bxml SYSTEM "http://127.0.0.1/bxml.dtd"><Bxml/>', "not allowed"),
    (b"<Bxml>" + b" " * MAX_BXML_BYTES + b"</Bxml>", "larger than"),
])
def test_bxml_refusals(doc, why):
    with pytest.raises(BandwidthError, match=why) as info:
        parse_bxml(doc, "Bxml")
    assert info.value.status == 400 and info.value.type == "validation"
