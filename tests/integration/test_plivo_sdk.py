"""The official ``plivo`` SDK against mediasrv with a live SIPp call: audio, responses, signed callbacks, errors.

The SDK (requests) is synchronous; it runs in a thread while the server runs in the test's loop.
It has no base-URL setting, so its module globals are pointed at the server (as the README shows).
"""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import aiohttp
import plivo
import pytest

from mediasrv.demo import free_port_pair
from mediasrv.rtp.probe import open_capture
from tests.support.audio import assert_hears, chirp_signal, expected_payload, tone, wav_bytes
from tests.support.httpapi import native_bridge
from tests.support.paths import SCENARIOS, readme_block
from tests.support.plivo import AUTH_ID, AUTH_TOKEN, Callbacks, plivo_server, point_sdk_at
from tests.support.server import start_server, wait_until
from tests.support.sipp import answered_calls, assert_stream_continuity, sipp_play_args, start_sipp
from tests.support.talker import Talker, wall_time

pytestmark = pytest.mark.integration


async def test_play_loop_stop_and_signed_callbacks(tmp_path, callbacks: Callbacks, audio_origin):
    r, client = await plivo_server(tmp_path)
    capture = await open_capture()
    try:
        a = chirp_signal(0.5, seed=7)
        url_a = audio_origin.add("a.wav", wav_bytes(a, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=5000))
        [call] = await answered_calls(r, 1)
        cid = call.call_id
        res = await asyncio.to_thread(client.calls.play, cid, url_a, legs="aleg", loop=False, mix=True,
                                      callback_url=callbacks.url)
        assert res.message == "play started" and re.fullmatch(r"[0-9a-f-]{36}", res.api_id)
        # loop=true plays forever (a comma string of one URL; GET callbacks this time)
        res2 = await asyncio.to_thread(client.calls.start_playing, cid, urls=url_a + ",", loop=True,
                                       callback_url=callbacks.url, callback_method="GET")
        started = await callbacks.wait_for(lambda p: p["Event"] == "PlayStarted" and p["RequestUUID"] == res2.api_id)
        await asyncio.sleep(1.2)  # past the end of its first round: it is looping
        stopped = await asyncio.to_thread(client.calls.stop_playing, cid, callback_url=callbacks.url)
        assert stopped is None  # 204: the SDK returns None
        await callbacks.wait_for(lambda p: p["Event"] == "PlayEnded" and p["RequestUUID"] == res2.api_id)
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()

    payload = capture.payload()
    ea = expected_payload(a, "PCMU")
    at = payload.find(ea + ea + ea)
    assert at >= 0 and at % 160 == 0, "once, then looping: back to back and bit-exact"
    assert_stream_continuity(capture)

    got = callbacks.verified()
    first = [p for p in got if p["RequestUUID"] == res.api_id]
    assert [(p["Event"], p["Status"]) for p in first] == [("PlayStarted", "playing"), ("PlayEnded", "completed")]
    assert first[1]["CallUUID"] == cid and first[1]["URLs"] == url_a and abs(int(first[1]["PlayedMs"]) - 500) <= 20
    assert started["URLs"] == url_a and callbacks.got[2]["method"] == "GET"
    looped = [p for p in got if p["RequestUUID"] == res2.api_id and p["Event"] == "PlayEnded"]
    assert [p["Status"] for p in looped] == ["stopped", "stopped"]  # to its own URL and to the stop's
    assert int(looped[0]["PlayedMs"]) > 1000


async def test_errors_through_the_sdk(tmp_path, audio_origin):
    r, client = await plivo_server(tmp_path, auto_answer=False)
    url = audio_origin.add("long.wav", wav_bytes(chirp_signal(10.0), 8000))

    async def error_of(fn: Any, *args: Any, **kwargs: Any) -> Exception:
        with pytest.raises(plivo.exceptions.PlivoRestError) as info:
            await asyncio.to_thread(fn, *args, **kwargs)
        return info.value

    try:
        sipp = await start_sipp([
            f"127.0.0.1:{r.sip_port}", "-sf", str(SCENARIOS / "uac_wait_bye.xml"), "-i", "127.0.0.1", "-p", "0",
            "-mp", str(free_port_pair()), "-m", "1", "-timeout", "40s", "-timeout_error",
        ])
        call = await wait_until(lambda: next(iter(r.server.registry.active()), None), 10, "the call to ring")
        cid = call.call_id

        e = await error_of(client.calls.play, cid, url)
        assert isinstance(e, plivo.exceptions.InvalidRequestError) and "not answered" in str(e)
        async with aiohttp.ClientSession() as s, s.post(f"{r.http}/v1/calls/{cid}/answer") as resp:
            assert resp.status == 200
        e = await error_of(client.calls.play, "no-such-call", url)
        assert isinstance(e, plivo.exceptions.ResourceNotFoundError) and str(e) == "call not found"
        e = await error_of(client.calls.play, cid, url, legs="cleg")
        assert isinstance(e, plivo.exceptions.ValidationError) and "legs" in str(e)
        e = await error_of(client.calls.play, cid, "ftp://example.com/a.wav")
        assert isinstance(e, plivo.exceptions.ValidationError) and "invalid url" in str(e)
        e = await error_of(client.calls.play, cid, url, length=0)
        assert isinstance(e, plivo.exceptions.ValidationError) and "length" in str(e)

        # wrong token: 401, the same answer whether or not the call exists
        bad = plivo.RestClient(auth_id=AUTH_ID, auth_token="wrong")
        e1 = await error_of(bad.calls.play, cid, url)
        e2 = await error_of(bad.calls.play, "no-such-call", url)
        assert isinstance(e1, plivo.exceptions.AuthenticationError) and str(e1) == str(e2) == "authentication failed"
        other = plivo.RestClient(auth_id="MAYYYYYYYYYYYYYYYYYY", auth_token=AUTH_TOKEN)
        assert isinstance(await error_of(other.calls.stop_playing, cid), plivo.exceptions.AuthenticationError)
        # the Basic user must equal the path's auth_id (the SDK always sends both the same; a raw request)
        basic = "Basic " + base64.b64encode(f"{AUTH_ID}:{AUTH_TOKEN}".encode()).decode()
        async with aiohttp.ClientSession() as s, s.post(
            f"{r.http}/v1/Account/MAYYYYYYYYYYYYYYYYYY/Call/{cid}/Play/", json={"urls": url},
            headers={"Authorization": basic},
        ) as resp:
            assert resp.status == 401 and (await resp.json())["error"] == "authentication failed"

        res = await asyncio.to_thread(client.calls.play, cid, url)
        assert res.message == "play started"
        async with aiohttp.ClientSession() as s, s.delete(f"{r.http}/v1/calls/{cid}") as resp:
            assert resp.status == 200
        code, out = await sipp
        assert code == 0, out[-3000:]
        e = await error_of(client.calls.play, cid, url)
        assert isinstance(e, plivo.exceptions.ResourceNotFoundError) and "ended" in str(e)
        e = await error_of(client.calls.stop_playing, cid)
        assert isinstance(e, plivo.exceptions.ResourceNotFoundError)
    finally:
        await r.server.stop()

    r2 = await start_server(tmp_path / "off")  # no Plivo credentials: everything is refused
    try:
        point_sdk_at(r2)
        e = await error_of(client.calls.play, cid, url)
        assert isinstance(e, plivo.exceptions.AuthenticationError)
    finally:
        await r2.server.stop()


async def test_readme_snippet_runs_against_a_live_call(tmp_path, callbacks: Callbacks, audio_origin):
    r = await start_server(tmp_path, plivo_auth_id=AUTH_ID, plivo_auth_token=AUTH_TOKEN)
    capture = await open_capture()
    try:
        src = chirp_signal(0.6, seed=9)
        url = audio_origin.add("prompt.wav", wav_bytes(src, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=3000))
        [call] = await answered_calls(r, 1)
        code = readme_block("Plivo", 0)
        for old, new in (("http://127.0.0.1:8080", r.http), ("MAXXXXXXXXXXXXXXXXXX", AUTH_ID),
                         ("your-auth-token", AUTH_TOKEN), ("v3:node:call-id", call.call_id),
                         ("https://example.com/prompt.wav", url), ("https://app.example.com/plivo/play", callbacks.url)):
            assert old in code, old
            code = code.replace(old, new)
        scope: dict[str, Any] = {}
        await asyncio.to_thread(exec, compile(code, "README.md#plivo", "exec"), scope)
        assert scope["response"].message == "play started"
        ended = await callbacks.wait_for(lambda p: p["Event"] == "PlayEnded")
        c = callbacks.got[-1]
        verify = readme_block("Plivo", 1).replace("your-auth-token", AUTH_TOKEN)
        scope = {"method": c["method"], "url": c["url"], "headers": c["headers"], "params": dict(c["form"])}
        await asyncio.to_thread(exec, compile(verify, "README.md#plivo-verify", "exec"), scope)
        assert scope["valid"] is True
        code_, out = await sipp
        assert code_ == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    assert ended["Status"] == "completed"
    assert capture.payload().find(expected_payload(src, "PCMU")) >= 0


async def test_hangup_sends_bye_and_a_signed_hangup_callback(tmp_path, callbacks: Callbacks):
    """``calls.delete`` (the README's snippet): BYE seen by SIPp, 204 → None, a Hangup callback; then 404s."""
    r, client = await plivo_server(tmp_path)
    try:
        sipp = await start_sipp([
            f"127.0.0.1:{r.sip_port}", "-sf", str(SCENARIOS / "uac_wait_bye.xml"), "-i", "127.0.0.1", "-p", "0",
            "-mp", str(free_port_pair()), "-m", "1", "-timeout", "40s", "-timeout_error",
        ])
        [call] = await answered_calls(r, 1)
        cid = call.call_id
        code = readme_block("Plivo", 2)
        for old, new in (("MAXXXXXXXXXXXXXXXXXX", AUTH_ID), ("your-auth-token", AUTH_TOKEN),
                         ("v3:node:call-id", cid), ("https://app.example.com/plivo/hangup", callbacks.url)):
            assert old in code, old
            code = code.replace(old, new)
        scope: dict[str, Any] = {}
        await asyncio.to_thread(exec, compile(code, "README.md#plivo-hangup", "exec"), scope)
        rc, out = await sipp
        assert rc == 0, out[-3000:]  # SIPp received our BYE and answered it
        assert call.state.value == "ended" and (call.hangup_by, call.hangup_cause) == ("api", "normal_clearing")
        hung = await callbacks.wait_for(lambda p: p["Event"] == "Hangup")

        # the SDK's exact request, replayed raw: DELETE with a JSON body on the trailing-slash path
        basic = "Basic " + base64.b64encode(f"{AUTH_ID}:{AUTH_TOKEN}".encode()).decode()
        async with aiohttp.ClientSession() as s, s.delete(
            f"{r.http}/v1/Account/{AUTH_ID}/Call/{cid}/", json={"call_uuid": cid}, headers={"Authorization": basic},
        ) as resp:
            assert resp.status == 404
            body = await resp.json()
        assert body["error"] == "call not found: it has ended" and re.fullmatch(r"[0-9a-f-]{36}", body["api_id"])
        with pytest.raises(plivo.exceptions.ResourceNotFoundError, match="^call not found$"):
            await asyncio.to_thread(client.calls.hangup, "no-such-call")
        with pytest.raises(plivo.exceptions.ResourceNotFoundError, match="ended"):
            await asyncio.to_thread(client.calls.delete, cid)
        bad = plivo.RestClient(auth_id=AUTH_ID, auth_token="wrong")
        with pytest.raises(plivo.exceptions.AuthenticationError):
            await asyncio.to_thread(bad.calls.delete, cid)
    finally:
        await r.server.stop()
    assert "response" in scope and scope["response"] is None  # what the SDK makes of our 204
    assert callbacks.got[0]["method"] == "POST"
    assert hung["CallUUID"] == cid and hung["CallStatus"] == "completed"
    assert (hung["HangupCause"], hung["HangupSource"]) == ("NORMAL_CLEARING", "API Request")
    assert hung["Direction"] == "inbound" and int(hung["Duration"]) >= 0
    assert len([p for p in callbacks.verified() if p["Event"] == "Hangup"]) == 1


async def test_url_list_length_and_legs(tmp_path, callbacks: Callbacks, audio_origin):
    r, client = await plivo_server(tmp_path)
    capture = await open_capture()
    try:
        a, b = chirp_signal(0.4, seed=31), chirp_signal(0.3, seed=32)
        long_ = chirp_signal(2.0, seed=33)
        url_a, url_b = audio_origin.add("a.wav", wav_bytes(a, 8000)), audio_origin.add("b.wav", wav_bytes(b, 8000))
        url_long = audio_origin.add("long.wav", wav_bytes(long_, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=5000, calls=2, rate=20))
        x, y = await answered_calls(r, 2)
        # bleg of a call that is not bridged: refused
        with pytest.raises(plivo.exceptions.ValidationError):
            await asyncio.to_thread(client.calls.play, x.call_id, url_a, legs="bleg")
        await native_bridge(r, x.call_id, y.call_id)  # Plivo's API has no bridge call of its own
        # a list of URLs plays as one sequence, on both legs
        res = await asyncio.to_thread(client.calls.play, x.call_id, [url_a, url_b], legs="both",
                                      callback_url=callbacks.url)
        # length caps a 2 s file at 1 s, on the b leg only
        res2 = await asyncio.to_thread(client.calls.play, x.call_id, url_long, length=1, legs="bleg",
                                       callback_url=callbacks.url)
        await wait_until(lambda: len([p for p in callbacks.verified() if p["Event"] == "PlayEnded"]) == 3, 10,
                         "three PlayEnded callbacks")
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    ended = [p for p in callbacks.verified() if p["Event"] == "PlayEnded"]
    firsts = [p for p in ended if p["RequestUUID"] == res.api_id]
    assert sorted(p["CallUUID"] for p in firsts) == sorted([x.call_id, y.call_id])
    assert all(p["Status"] == "completed" and p["URLs"] == f"{url_a},{url_b}" for p in firsts)
    [capped] = [p for p in ended if p["RequestUUID"] == res2.api_id]
    assert capped["CallUUID"] == y.call_id and abs(int(capped["PlayedMs"]) - 1000) <= 20
    by_ssrc: dict[int, bytes] = {}
    for p in capture.packets:
        by_ssrc[p.ssrc] = by_ssrc.get(p.ssrc, b"") + p.payload
    ea, eb = expected_payload(a, "PCMU"), expected_payload(b, "PCMU")
    el = expected_payload(long_[:8000], "PCMU")
    heard = list(by_ssrc.values())
    assert len(heard) == 2 and all(h.find(ea + eb) >= 0 for h in heard), "a then b, bit-exact, on both legs"
    assert sum(h.find(ea + eb + el) >= 0 for h in heard) == 1, "only the b leg heard the first second of long"
    assert all(h.find(expected_payload(long_[:8160], "PCMU")) < 0 for h in heard), "and not a packet more"


async def test_mix_false_plays_alone_mix_true_over_the_call(tmp_path, callbacks: Callbacks, audio_origin):
    """Bridged talkers (SIPp pcap tones): mix=false, B hears only the prompt; mix=true, the prompt over A."""
    r, client = await plivo_server(tmp_path)
    a = Talker(tmp_path, "a", 440, "PCMU", 6.0)
    b = Talker(tmp_path, "b", 880, "PCMU", 6.0)
    try:
        prompt = chirp_signal(1.0, seed=41)
        beep = tone(1500, 1.0)
        url_prompt = audio_origin.add("prompt.wav", wav_bytes(prompt, 8000))
        url_beep = audio_origin.add("beep.wav", wav_bytes(beep, 8000))
        await asyncio.gather(a.dial(r), b.dial(r))
        await native_bridge(r, a.call.call_id, b.call.call_id)
        await asyncio.sleep(0.3)
        res = await asyncio.to_thread(client.calls.play, b.call.call_id, url_prompt, mix=False,
                                      callback_url=callbacks.url)
        await callbacks.wait_for(lambda p: p["Event"] == "PlayEnded" and p["RequestUUID"] == res.api_id)
        res2 = await asyncio.to_thread(client.calls.play, b.call.call_id, url_beep, mix=True,
                                       callback_url=callbacks.url)
        started = await callbacks.wait_for(lambda p: p["Event"] == "PlayStarted" and p["RequestUUID"] == res2.api_id)
        t0 = await wall_time()
        await asyncio.sleep(0.8)
        t1 = await wall_time()
        await asyncio.gather(a.finish(), b.finish())
    finally:
        a.close()
        b.close()
        await r.server.stop()
    assert started["Status"] == "playing"
    heard = b"".join(p.payload for p in b.capture.packets)
    assert heard.find(expected_payload(prompt, "PCMU")) >= 0, "mix=false: the prompt alone, bit-exact"
    assert_hears(b.heard(t0 + 0.1, t1), present=[440, 1500], absent=[880], who="B with mix=true")
