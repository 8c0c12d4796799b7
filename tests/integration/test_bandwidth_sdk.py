"""Bandwidth Voice dialect, driven by the official bandwidth-sdk (OpenAPI-generated, synchronous).

Real SIPp calls, a real HTTP origin for audio and BXML documents (it counts every request, so
"nothing was fetched" is observable), the RTP that arrived decoded and compared bit-exact,
callbacks parsed with the SDK's own callback models.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from bandwidth.api.calls_api import CallsApi
from bandwidth.exceptions import (
    ApiException,
    BadRequestException,
    ConflictException,
    ForbiddenException,
    NotFoundException,
    UnauthorizedException,
)
from bandwidth.models import InitiateCallback, RedirectCallback, UpdateCall
from bandwidth.models.bxml import Bxml, Hangup, Pause, PlayAudio, Record, Redirect, Response

from mediasrv.rtp.probe import open_capture
from tests.support.audio import chirp_signal, expected_payload, wav_bytes
from tests.support.bandwidth import ACCOUNT, CREDS, PASSWORD, USER, calls_api, played
from tests.support.paths import SCENARIOS, readme_block
from tests.support.server import start_server, wait_until
from tests.support.sipp import answered_calls, assert_stream_continuity, sipp_play_args, start_sipp

pytestmark = pytest.mark.integration


def wait_bye_scenario(tmp_path: Path) -> Path:
    """uac_wait_bye.xml (the server hangs up) with the media address set to our capture socket."""
    text = (SCENARIOS / "uac_wait_bye.xml").read_text()
    text = text.replace("[media_ip]", "[$rtp_ip]").replace("[media_port]", "[$rtp_port]")
    text = re.sub(r"(<scenario [^>]*>)", r'\1\n  <Global variables="rtp_ip,rtp_port" />', text, count=1)
    path = tmp_path / "uac_wait_bye_capture.xml"
    path.write_text(text)
    return path


async def test_update_call_bxml_and_redirect(tmp_path, origin, webhooks):
    """PUT …/bxml with two PlayAudio verbs: back to back, bit-exact; then update_call(redirectUrl)."""
    r = await start_server(tmp_path, webhook_url=webhooks.url, **CREDS)
    capture = await open_capture()
    try:
        a, b, c = chirp_signal(0.5, seed=21), chirp_signal(0.3, seed=22), chirp_signal(0.4, seed=23)
        url_a = origin.add("a.wav", wav_bytes(a, 8000), "audio/wav")
        url_b = origin.add("b.wav", wav_bytes(b, 8000), "audio/wav")
        origin.add("c.wav", wav_bytes(c, 8000), "audio/wav")
        # a relative PlayAudio URL resolves against the URL that returned the document
        next_url = origin.add("bxml/next", Response([PlayAudio("../c.wav")]).to_bxml())
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=4000))
        [call] = await answered_calls(r, 1)
        api = calls_api(r)
        bxml = Bxml([PlayAudio(url_a), PlayAudio(url_b)]).to_bxml()
        info = await asyncio.to_thread(api.update_call_bxml_with_http_info, ACCOUNT, call.call_id, bxml)
        assert info.status_code == 204 and info.data is None
        await wait_until(played(webhooks, 2), 10, "both PlayAudio verbs played")
        result = await asyncio.to_thread(api.update_call, ACCOUNT, call.call_id,
                                         UpdateCall(redirect_url=next_url, redirect_method="POST", tag="t1"))
        assert result is None
        await wait_until(played(webhooks, 3), 10, "the redirected document played")
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()

    payload = capture.payload()
    ea, eb, ec = (expected_payload(x, "PCMU") for x in (a, b, c))
    at = payload.find(ea + eb)
    assert at >= 0 and at % 160 == 0, "several PlayAudio verbs play in succession, bit-exact, no gap"
    assert payload.find(ec, at + len(ea) + len(eb)) > 0, "the redirect's document played after them"
    assert_stream_continuity(capture)
    ended = [e["data"]["status"] for e in webhooks.events if e["type"] == "playback.ended"]
    assert ended == ["completed"] * 3
    [redirect] = origin.hits("bxml/next")
    cb = RedirectCallback.from_dict(redirect["json"])
    assert (cb.event_type, cb.call_id, cb.account_id, cb.tag) == ("redirect", call.call_id, ACCOUNT, "t1")
    assert cb.answer_time is not None and cb.direction.value == "inbound"


@pytest.mark.parametrize("auto_answer", [True, False], ids=["auto-answer", "ring-then-bxml-answers"])
async def test_answer_url_runs_response(tmp_path, origin, webhooks, auto_answer):
    """An inbound call POSTs ``initiate`` to the answer URL and runs the returned ``<Response>``:
    PlayAudio, Redirect (relative), Pause, PlayAudio, an unknown verb (error event), Hangup.
    Without auto-answer the call rings until the application's BXML arrives, which answers it."""
    a, b = chirp_signal(0.4, seed=24), chirp_signal(0.3, seed=25)
    origin.add("audio/a.wav", wav_bytes(a, 8000), "audio/wav")
    origin.add("audio/b.wav", wav_bytes(b, 8000), "audio/wav")
    answer_url = origin.add("app/answer", Response([PlayAudio("../audio/a.wav"), Redirect("step2")]).to_bxml())
    origin.add("app/step2", Response([Pause(0.5), PlayAudio("/audio/b.wav"), Record(), Hangup()]).to_bxml())
    r = await start_server(tmp_path, webhook_url=webhooks.url, bandwidth_answer_url=answer_url,
                           auto_answer=auto_answer, **CREDS)
    capture = await open_capture()
    try:
        sipp = await start_sipp([f"127.0.0.1:{r.sip_port}", "-sf", str(wait_bye_scenario(tmp_path)),
                                 "-i", "127.0.0.1", "-p", "0", "-set", "rtp_ip", "127.0.0.1",
                                 "-set", "rtp_port", str(capture.port), "-m", "1", "-timeout", "30s",
                                 "-timeout_error"])
        code, out = await sipp
        assert code == 0, out[-3000:]  # SIPp got the BYE that <Hangup/> sent
        hangup = await webhooks.wait_for(lambda e: e["type"] == "call.hangup")
    finally:
        capture.close()
        await r.server.stop()
    assert hangup["data"]["hangup_by"] == "api"
    call_id = hangup["call_id"]
    types = webhooks.of(call_id)
    assert types == ["call.initiated", "call.answered", "playback.started", "playback.ended", "playback.started",
                     "playback.ended", "bxml.error", "call.hangup"], types
    error = next(e for e in webhooks.events if e["type"] == "bxml.error")
    assert error["data"]["verb"] == "Record" and "not supported" in error["data"]["message"]

    [initiate] = origin.hits("app/answer")
    cb = InitiateCallback.from_dict(initiate["json"])
    assert (cb.event_type, cb.call_id, cb.account_id, cb.var_from) == ("initiate", call_id, ACCOUNT, "sipp")
    assert initiate["method"] == "POST" and cb.direction.value == "inbound"
    assert "answerTime" not in initiate["json"]  # initiate comes before the answer
    assert RedirectCallback.from_dict(origin.hits("app/step2")[0]["json"]).event_type == "redirect"

    payload = capture.payload()
    ea, eb = expected_payload(a, "PCMU"), expected_payload(b, "PCMU")
    at_a, at_b = payload.find(ea), payload.find(eb)
    assert at_a >= 0 and at_b > at_a, "both files arrived bit-exact, in order"
    gap = payload[at_a + len(ea):at_b]
    assert set(gap) <= {0xFF} and len(gap) >= 0.45 * 8000, f"Pause 0.5 s: {len(gap) / 8000:.2f} s of silence"
    assert_stream_continuity(capture)


async def test_new_bxml_replaces_the_running_one(tmp_path, origin, webhooks):
    """A new ``PUT …/bxml`` replaces the running document: its audio stops, the new one plays;
    an empty ``<Bxml/>`` is how an application silences the call."""
    r = await start_server(tmp_path, webhook_url=webhooks.url, **CREDS)
    capture = await open_capture()
    try:
        long_, short = chirp_signal(8.0, seed=28), chirp_signal(0.4, seed=29)
        url_long = origin.add("long.wav", wav_bytes(long_, 8000), "audio/wav")
        url_short = origin.add("short.wav", wav_bytes(short, 8000), "audio/wav")
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=3500))
        [call] = await answered_calls(r, 1)
        api = calls_api(r)
        await asyncio.to_thread(api.update_call_bxml, ACCOUNT, call.call_id,
                                Bxml([PlayAudio(url_long), PlayAudio(url_long)]).to_bxml())
        await webhooks.wait_for(lambda e: e["type"] == "playback.started")
        await asyncio.sleep(0.5)
        await asyncio.to_thread(api.update_call_bxml, ACCOUNT, call.call_id, Bxml([PlayAudio(url_short)]).to_bxml())
        await wait_until(played(webhooks, 3), 10, "the old document's playbacks ended, the new one played")
        await asyncio.to_thread(api.update_call_bxml, ACCOUNT, call.call_id, Bxml([PlayAudio(url_long)]).to_bxml())
        await wait_until(lambda: len([e for e in webhooks.events if e["type"] == "playback.started"]) >= 3, 10,
                         "third document playing")
        await asyncio.sleep(0.3)
        await asyncio.to_thread(api.update_call_bxml, ACCOUNT, call.call_id, Bxml([]).to_bxml())
        await wait_until(played(webhooks, 4), 10, "the empty document stopped it")
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    ended = [e["data"]["status"] for e in webhooks.events if e["type"] == "playback.ended"]
    assert ended == ["stopped", "stopped", "completed", "stopped"], ended
    assert capture.payload().find(expected_payload(short, "PCMU")) >= 0
    assert_stream_continuity(capture)

async def test_play_audio_basic_auth(tmp_path, origin, webhooks):
    """``<PlayAudio username password>``: the credentials go to that URL only."""
    r = await start_server(tmp_path, webhook_url=webhooks.url, **CREDS)
    capture = await open_capture()
    try:
        src = chirp_signal(0.4, seed=26)
        url = origin.add("private/p.wav", wav_bytes(src, 8000), "audio/wav")
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=2500))
        [call] = await answered_calls(r, 1)
        bxml = Bxml([PlayAudio(url, username="u", password="p")]).to_bxml()
        assert 'username="u"' in bxml
        await asyncio.to_thread(calls_api(r).update_call_bxml, ACCOUNT, call.call_id, bxml)
        ended = await webhooks.wait_for(lambda e: e["type"] == "playback.ended")
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    assert ended["data"]["status"] == "completed", ended
    assert origin.hits("private/p.wav")[0]["auth"] == "Basic dTpw"
    assert capture.payload().find(expected_payload(src, "PCMU")) >= 0


BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Bxml><PlayAudio>{url}?&lol3;</PlayAudio></Bxml>"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE Bxml [<!ENTITY ext SYSTEM "{url}">]>
<Bxml><PlayAudio>{url}</PlayAudio><PlayAudio>&ext;</PlayAudio></Bxml>"""


async def test_errors_through_the_sdk(tmp_path, origin, webhooks):
    r = await start_server(tmp_path, webhook_url=webhooks.url, **CREDS)
    off = await start_server(tmp_path / "off")  # no credentials configured: 401 to everything
    capture = await open_capture()
    try:
        url = origin.add("e.wav", wav_bytes(chirp_signal(0.2), 8000), "audio/wav")
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=3000))
        [call] = await answered_calls(r, 1)
        ok = Bxml([PlayAudio(url)]).to_bxml()

        def expect(exc_type: type[ApiException], api: CallsApi, body: str, call_id: str = call.call_id,
                   account: str = ACCOUNT) -> ApiException:
            with pytest.raises(exc_type) as info:
                api.update_call_bxml(account, call_id, body)
            return info.value

        async def check(exc_type: type[ApiException], status: int, type_: str, *args: Any, **kw: Any) -> Any:
            e = await asyncio.to_thread(expect, exc_type, *args, **kw)
            assert e.status == status and e.data is not None, (e.status, e.body)
            assert e.data.type == type_ and e.data.id and e.data.description
            return e

        await check(UnauthorizedException, 401, "unauthorized", calls_api(r, username=USER, password="wrong"), ok)
        # no hint whether the call exists
        await check(UnauthorizedException, 401, "unauthorized", calls_api(r, username="x", password="y"), ok,
                    call_id="nope")
        e = await check(UnauthorizedException, 401, "unauthorized", calls_api(off), ok)
        assert "disabled" in e.data.description
        await check(ForbiddenException, 403, "forbidden", calls_api(r), ok, account="1111111")
        await check(NotFoundException, 404, "not-found", calls_api(r), ok, call_id="v3:x:missing")
        e = await check(BadRequestException, 400, "validation", calls_api(r), Response([PlayAudio(url)]).to_bxml())
        assert "<Bxml>" in e.data.description
        await check(BadRequestException, 400, "validation", calls_api(r), Bxml([PlayAudio("relative.wav")]).to_bxml())
        await check(BadRequestException, 400, "validation", calls_api(r), "<Bxml><PlayAudio>")
        await check(BadRequestException, 400, "validation", calls_api(r), "<Bxml>" + " " * 70_000 + "</Bxml>")
        for doc in (BOMB.format(url=url), EXTERNAL.format(url=url)):
            e = await check(BadRequestException, 400, "validation", calls_api(r), doc)
            assert "not allowed" in e.data.description
        assert origin.requests == [], "a refused document fetched nothing"
        await check(BadRequestException, 400, "validation", calls_api(r), Bxml([Pause(-1)]).to_bxml())
        # a Redirect to a cloud metadata address is refused by the fetch address policy: an error event
        await asyncio.to_thread(calls_api(r).update_call_bxml, ACCOUNT, call.call_id,
                                Bxml([Redirect("http://169.254.169.254/latest/bxml")]).to_bxml())
        refused = await webhooks.wait_for(lambda e: e["type"] == "bxml.error")
        assert "metadata" in refused["data"]["message"] and refused["data"]["verb"] == "redirect"

        # OAuth2 client credentials: the SDK fetches a token from our token endpoint, then uses Bearer
        oauth = calls_api(r, client_id=USER, client_secret=PASSWORD, access_token_url=f"{r.http}/api/v2/oauth2/token")
        await asyncio.to_thread(oauth.update_call_bxml, ACCOUNT, call.call_id, ok)
        await webhooks.wait_for(lambda e: e["type"] == "playback.ended")
        assert [q["path"] for q in origin.requests] == ["/e.wav"]
        code, out = await sipp
        assert code == 0, out[-3000:]
        await webhooks.wait_for(lambda e: e["type"] == "call.hangup")
        # an ended call: 409
        await check(ConflictException, 409, "conflict", calls_api(r), ok)
        with pytest.raises(ConflictException):
            await asyncio.to_thread(calls_api(r).update_call, ACCOUNT, call.call_id, UpdateCall(state="completed"))
    finally:
        capture.close()
        await r.server.stop()
        await off.server.stop()


async def test_readme_snippet_runs(tmp_path, origin, webhooks):
    code = readme_block("Bandwidth")
    r = await start_server(tmp_path, webhook_url=webhooks.url, **CREDS)
    capture = await open_capture()
    try:
        src = chirp_signal(0.5, seed=27)
        url = origin.add("readme.wav", wav_bytes(src, 8000), "audio/wav")
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=2500))
        [call] = await answered_calls(r, 1)
        for placeholder, value in (("http://127.0.0.1:8080", r.http), ("<MEDIASRV_BANDWIDTH_ACCOUNT_ID>", ACCOUNT),
                                   ("<MEDIASRV_BANDWIDTH_USERNAME>", USER), ("<MEDIASRV_BANDWIDTH_PASSWORD>", PASSWORD),
                                   ("<call_id>", call.call_id), ("https://example.com/prompt.wav", url)):
            assert placeholder in code, placeholder
            code = code.replace(placeholder, value)
        await asyncio.to_thread(exec, compile(code, "README.md", "exec"), {})
        ended = await webhooks.wait_for(lambda e: e["type"] == "playback.ended")
        rc, out = await sipp
        assert rc == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    assert ended["data"]["status"] == "completed"
    assert capture.payload().find(expected_payload(src, "PCMU")) >= 0
