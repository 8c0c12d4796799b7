"""ACS Call Automation dialect, driven by the official azure-communication-callautomation SDK.

A real SIPp call is answered by mediasrv; the SDK (synchronous, so run in a thread) plays into it
through the ``{id}:play`` / ``:cancelAllMediaOperations`` routes; the RTP that arrived is decoded
and compared bit-exact; the callbacks are parsed with ``azure.core.messaging.CloudEvent.from_dict``
and the SDK's generated event models.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from azure.communication.callautomation import (
    CommunicationUserIdentifier,
    FileSource,
    PhoneNumberIdentifier,
    TextSource,
)
from azure.communication.callautomation._generated import models as acs_models
from azure.communication.callautomation.aio import CallAutomationClient as AioCallAutomationClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

from mediasrv.demo import free_port_pair
from mediasrv.rtp.probe import open_capture
from tests.support.acs import KEY, acs_client, signed_headers
from tests.support.audio import chirp_signal, expected_payload, wav_bytes
from tests.support.paths import REPO, SCENARIOS, readme_block
from tests.support.server import start_server
from tests.support.sipp import answered_calls, assert_stream_continuity, sipp_play_args, start_sipp

pytestmark = pytest.mark.integration


async def test_play_media_bit_exact_with_events(tmp_path, audio_origin, acs_events):
    r = await start_server(tmp_path, acs_access_key=KEY)
    capture = await open_capture()
    try:
        src, nxt = chirp_signal(1.0, seed=11), chirp_signal(0.3, seed=15)
        url = audio_origin.add("prompt.wav", wav_bytes(src, 8000))
        url2 = audio_origin.add("next.wav", wav_bytes(nxt, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=3000))
        [call] = await answered_calls(r, 1)
        conn = acs_client(r).get_call_connection(call.call_id)
        result = await asyncio.to_thread(
            conn.play_media, FileSource(url, play_source_cache_id="prompt-cache-1"),
            operation_context="ctx-play-1", operation_callback_url=acs_events.url,
        )
        assert result is None  # the SDK's whole answer to a 202
        # a second play queues behind the first (no interruptCallMediaOperation)
        await asyncio.to_thread(conn.play_media, FileSource(url2), operation_context="ctx-play-2",
                                operation_callback_url=acs_events.url)
        completed, _ = await acs_events.wait_for("PlayCompleted", 2)
        code, out = await sipp
        assert code == 0, out[-3000:]
        await acs_events.wait_for("CallDisconnected")
        claims = await asyncio.to_thread(acs_events.verify_all, r.http)  # every callback's JWT checks out
    finally:
        capture.close()
        await r.server.stop()

    payload = capture.payload()
    expected = expected_payload(src, "PCMU") + expected_payload(nxt, "PCMU")
    at = payload.find(expected)
    assert at >= 0 and at % 160 == 0, "the two files did not arrive bit-exact, back to back"
    assert set(payload[:at]) | set(payload[at + len(expected):]) <= {0xFF}, "only silence around them"
    assert_stream_continuity(capture)

    # the call's callback URI (the operations') also hears of its end
    assert acs_events.types() == ["PlayStarted", "PlayCompleted", "PlayStarted", "PlayCompleted", "CallDisconnected"]
    assert [e.data["operationContext"] for e in acs_events.plays] == ["ctx-play-1"] * 2 + ["ctx-play-2"] * 2
    started = acs_events.events[0]
    for ev in (started, completed):
        assert ev.source == f"calling/callConnections/{call.call_id}" and ev.specversion == "1.0"
        assert ev.data["callConnectionId"] == call.call_id
        assert ev.data["operationContext"] == "ctx-play-1"
        assert ev.data["serverCallId"] and ev.data["correlationId"]
    model = acs_models.PlayCompleted.deserialize(completed.data)
    assert model.call_connection_id == call.call_id and model.operation_context == "ctx-play-1"
    assert (model.result_information.code, model.result_information.sub_code) == (200, 0)
    assert started.data["correlationId"] == completed.data["correlationId"]
    assert len(claims) == 5 and len({c["jti"] for c in claims}) == 5 and all(c["aud"] == "mediasrv" for c in claims)


async def test_loop_cancel_and_failed_source(tmp_path, audio_origin, acs_events):
    """playOptions.loop repeats until cancelAllMediaOperations (PlayCanceled); a 404 file is PlayFailed."""
    r = await start_server(tmp_path, acs_access_key=KEY, acs_callback_url=acs_events.url)
    capture = await open_capture()
    try:
        src = chirp_signal(0.4, seed=12)
        url = audio_origin.add("loop.wav", wav_bytes(src, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=3500))
        [call] = await answered_calls(r, 1)
        conn = acs_client(r).get_call_connection(call.call_id)
        # no operation_callback_url: events go to MEDIASRV_ACS_CALLBACK_URL
        await asyncio.to_thread(conn.play_media, FileSource(url), loop=True, operation_context="looping")
        await acs_events.wait_for("PlayStarted")
        await asyncio.sleep(1.1)  # two full loops and a bit
        assert await asyncio.to_thread(conn.cancel_all_media_operations) is None
        [canceled] = await acs_events.wait_for("PlayCanceled")
        await asyncio.to_thread(conn.play_media, FileSource(f"{audio_origin.base}/missing.wav"),
                                operation_context="broken")
        [failed] = await acs_events.wait_for("PlayFailed")
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()

    once = expected_payload(src, "PCMU")
    assert capture.payload().find(once + once) >= 0, "the loop played the file back to back"
    assert canceled.data["operationContext"] == "looping"
    assert canceled.data["resultInformation"]["subCode"] == 8508
    model = acs_models.PlayFailed.deserialize(failed.data)
    assert model.operation_context == "broken" and model.failed_play_source_index == 0
    assert (model.result_information.code, model.result_information.sub_code) == (400, 8536)
    assert "http_404" in model.result_information.message
    assert acs_events.types() == ["PlayStarted", "PlayCanceled", "PlayFailed", "CallDisconnected"]


async def test_errors_through_the_sdk_and_raw_auth(tmp_path, audio_origin):
    r = await start_server(tmp_path, acs_access_key=KEY)
    off = await start_server(tmp_path / "off")  # no access key: the dialect refuses everything
    capture = await open_capture()
    try:
        url = audio_origin.add("p.wav", wav_bytes(chirp_signal(0.2), 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=2500))
        [call] = await answered_calls(r, 1)
        conn = acs_client(r).get_call_connection(call.call_id)

        def expect(exc_type: type[Exception], fn: Any, *args: Any, **kwargs: Any) -> Any:
            with pytest.raises(exc_type) as info:
                fn(*args, **kwargs)
            return info.value

        wrong = acs_client(r, base64.b64encode(b"not-the-key").decode()).get_call_connection(call.call_id)
        e = await asyncio.to_thread(expect, ClientAuthenticationError, wrong.play_media, FileSource(url))
        assert e.status_code == 401 and e.error.code == "Unauthorized"
        # no hint whether the call exists: an unknown call with a wrong key is the same 401
        e = await asyncio.to_thread(expect, ClientAuthenticationError,
                                    acs_client(r, base64.b64encode(b"x").decode()).get_call_connection("nope")
                                    .cancel_all_media_operations)
        assert e.status_code == 401
        e = await asyncio.to_thread(expect, ClientAuthenticationError,
                                    acs_client(off).get_call_connection(call.call_id).play_media, FileSource(url))
        assert e.status_code == 401 and "disabled" in e.error.message

        e = await asyncio.to_thread(expect, ResourceNotFoundError,
                                    acs_client(r).get_call_connection("v3:x:missing").play_media, FileSource(url))
        assert e.status_code == 404 and e.error.code == "8522"
        e = await asyncio.to_thread(expect, HttpResponseError, conn.play_media,
                                    TextSource(text="Hello", voice_name="en-US-NobodyNeural"))
        assert e.status_code == 400 and "no equivalent" in e.error.message  # speech: test_speak_vendors.py
        assert e.error.target == "playSources[0].text.voiceName"
        e = await asyncio.to_thread(expect, HttpResponseError, conn.play_media, FileSource(url),
                                    play_to=[PhoneNumberIdentifier("+14255550199")])
        assert e.status_code == 400 and "+14255550199" in e.error.message and e.error.target == "playTo[0]"
        e = await asyncio.to_thread(expect, HttpResponseError, conn.play_media, FileSource("ftp://x/y.wav"))
        assert e.status_code == 400 and e.error.target == "playSources[0].file.uri"
        e = await asyncio.to_thread(expect, HttpResponseError, conn.play_media, FileSource(url),
                                    operation_callback_url="/relative/hook")
        assert e.status_code == 400 and e.error.target == "operationCallbackUri"

        # the aio client signs the same way (and leaves interruptCallMediaOperation out)
        async with AioCallAutomationClient(r.http, AzureKeyCredential(KEY), retry_total=0) as aio:
            assert await aio.get_call_connection(call.call_id).play_media(FileSource(url)) is None

        play_url = f"{r.http}/calling/callConnections/{call.call_id}:play?api-version=2026-03-12"
        body = json.dumps({"playSources": [{"kind": "file", "file": {"uri": url}}], "playTo": []}).encode()
        async with aiohttp.ClientSession() as s:
            async def post(headers: dict[str, str], data: bytes = body) -> tuple[int, Any]:
                async with s.post(play_url, data=data, headers=headers) as resp:
                    raw = await resp.read()
                    return resp.status, json.loads(raw) if raw else None

            status, _ = await post(signed_headers("POST", play_url, body, KEY))
            assert status == 202  # the independent signer agrees with the server
            stale = formatdate(time.time() - 600, usegmt=True)
            status, err = await post(signed_headers("POST", play_url, body, KEY, date=stale))
            assert status == 401 and err["error"]["code"] == "Unauthorized"
            # signed over one body, sent with another: the hash no longer matches
            status, err = await post(signed_headers("POST", play_url, body, KEY), data=body.replace(b"[]", b"[ ]"))
            assert status == 401
            # a correctly hashed body whose hash header was not the one signed
            h = signed_headers("POST", play_url, body, KEY)
            h["x-ms-content-sha256"] = base64.b64encode(hashlib.sha256(b"{}").digest()).decode()
            status, _ = await post(h, data=b"{}")
            assert status == 401
            status, err = await post({})
            assert status == 401 and set(err) == {"error"}
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
        await off.server.stop()


async def test_legacy_play_audio(tmp_path, audio_origin, acs_events):
    """The 2021-08-30-preview ``/:playAudio`` body answers 202 running and reports PlayAudioResult."""
    r = await start_server(tmp_path, acs_access_key=KEY)
    capture = await open_capture()
    try:
        src = chirp_signal(0.5, seed=13)
        url = audio_origin.add("legacy.wav", wav_bytes(src, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=2500))
        [call] = await answered_calls(r, 1)
        target = f"{r.http}/calling/callConnections/{call.call_id}/:playAudio?api-version=2021-08-30-preview"
        body = json.dumps({"audioFileUri": url, "audioFileId": "legacy-1", "loop": False,
                           "operationContext": "old-ctx", "callbackUri": acs_events.url}).encode()
        async with aiohttp.ClientSession() as s, s.post(
                target, data=body, headers=signed_headers("POST", target, body, KEY)) as resp:
            assert resp.status == 202
            answer = await resp.json()
        assert answer["status"] == "running" and answer["operationContext"] == "old-ctx" and answer["operationId"]
        [result] = await acs_events.wait_for("PlayAudioResult")
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    assert result.data["status"] == "completed" and result.data["operationId"] == answer["operationId"]
    assert result.data["resultInfo"]["code"] == 200
    assert capture.payload().find(expected_payload(src, "PCMU")) >= 0


async def test_play_source_cache_id(tmp_path, audio_origin, acs_events):
    """playSourceCacheId names the cached audio: a rotated (re-signed) URL with the same id is not fetched again."""
    r = await start_server(tmp_path, acs_access_key=KEY, acs_callback_url=acs_events.url)
    capture = await open_capture()
    try:
        src = chirp_signal(0.4, seed=16)
        url = audio_origin.add("greet.wav", wav_bytes(src, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=2500))
        [call] = await answered_calls(r, 1)
        conn = acs_client(r).get_call_connection(call.call_id)
        for sig in ("a", "b"):
            await asyncio.to_thread(conn.play_media, FileSource(f"{url}?sig={sig}", play_source_cache_id="greet-1"))
        await acs_events.wait_for("PlayCompleted", 2)
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    assert audio_origin.hits["greet.wav"] == 1, "the second play came from the cache entry named by the id"
    once = expected_payload(src, "PCMU")
    assert capture.payload().find(once + once) >= 0


def caller_scenario(tmp_path: Path) -> Path:
    """uac_play.xml with the From user set by ``-set caller …`` (a leg's ACS identity)."""
    text = (SCENARIOS / "uac_play.xml").read_text()
    text = text.replace('variables="rtp_ip,rtp_port"', 'variables="rtp_ip,rtp_port,caller"')
    text = text.replace("<sip:sipp@[local_ip]:[local_port]>;tag", "<sip:[$caller]@[local_ip]:[local_port]>;tag")
    assert "[$caller]" in text
    path = tmp_path / "uac_play_caller.xml"
    path.write_text(text)
    return path


async def test_play_to_participants_of_a_bridged_call(tmp_path, audio_origin, acs_events):
    """playTo picks legs by SIP identity (phone number, communication user) across the call's room;
    an empty playTo plays to every leg; several playSources play back to back as one operation."""
    r = await start_server(tmp_path, acs_access_key=KEY, acs_callback_url=acs_events.url)
    cap_a, cap_b = await open_capture(), await open_capture()
    scenario = caller_scenario(tmp_path)
    user_b = "8:acs:e9d8a0f1-0000-0000-0000-000000000002"
    try:
        x, y = chirp_signal(0.4, seed=31), chirp_signal(0.3, seed=32)
        z1, z2 = chirp_signal(0.3, seed=33), chirp_signal(0.2, seed=34)
        urls = {n: audio_origin.add(f"{n}.wav", wav_bytes(s, 8000)) for n, s in
                (("x", x), ("y", y), ("z1", z1), ("z2", z2))}
        sipps = []
        for cap, caller in ((cap_a, "+14255550123"), (cap_b, urllib.parse.quote(user_b, safe=""))):
            args = sipp_play_args(r, cap.port, duration_ms=4500)
            args[args.index("-sf") + 1] = str(scenario)
            sipps.append(await start_sipp([*args, "-set", "caller", caller]))
            await answered_calls(r, len(sipps))
        calls = {c.from_uri.split("@")[0]: c for c in r.server.registry.active()}
        a = calls["sip:+14255550123"]
        b = next(c for c in calls.values() if c is not a)
        r.server.media.join_room("room-1", a.call_id)
        r.server.media.join_room("room-1", b.call_id)
        conn = acs_client(r).get_call_connection(a.call_id)  # the call connection is leg A
        await asyncio.to_thread(conn.play_media, FileSource(urls["x"]),
                                play_to=[CommunicationUserIdentifier(user_b)], operation_context="to-b")
        await acs_events.wait_for("PlayCompleted", 1)
        await asyncio.to_thread(conn.play_media, FileSource(urls["y"]), operation_context="to-all")
        await acs_events.wait_for("PlayCompleted", 2)
        await asyncio.to_thread(conn.play_media, [FileSource(urls["z1"]), FileSource(urls["z2"])],
                                play_to=[PhoneNumberIdentifier("+14255550123")], operation_context="to-a")
        await acs_events.wait_for("PlayCompleted", 3)
        for sipp in sipps:
            code, out = await sipp
            assert code == 0, out[-3000:]
    finally:
        cap_a.close()
        cap_b.close()
        await r.server.stop()

    pa, pb = cap_a.payload(), cap_b.payload()
    ex, ey = expected_payload(x, "PCMU"), expected_payload(y, "PCMU")
    assert pb.find(ex) >= 0 and pa.find(ex) < 0, "playTo=[communication user of B]: only B heard it"
    assert pa.find(ey) >= 0 and pb.find(ey) >= 0, "empty playTo: every leg heard it"
    z = expected_payload(z1, "PCMU")[: len(z1)] + expected_payload(z2, "PCMU")
    assert pa.find(z) >= 0 and pb.find(expected_payload(z2, "PCMU")) < 0, "two sources back to back, A only"
    contexts = [(e.type.rsplit(".", 1)[1], e.data["operationContext"]) for e in acs_events.plays]
    assert contexts == [("PlayStarted", "to-b"), ("PlayCompleted", "to-b"), ("PlayStarted", "to-all"),
                        ("PlayCompleted", "to-all"), ("PlayStarted", "to-a"), ("PlayCompleted", "to-a")]
    assert all(e.data["callConnectionId"] == a.call_id for e in acs_events.plays)
    gone = [e.data["callConnectionId"] for e in acs_events.events if e.type.endswith("CallDisconnected")]
    assert sorted(gone) == sorted([a.call_id, b.call_id])  # MEDIASRV_ACS_CALLBACK_URL: every call's end


async def test_interrupt_call_media_operation_barges_in(tmp_path, audio_origin, acs_events):
    """interruptCallMediaOperation=True: what plays (and what is queued) is canceled, the new play starts now."""
    r = await start_server(tmp_path, acs_access_key=KEY, acs_callback_url=acs_events.url)
    capture = await open_capture()
    try:
        long_, short = chirp_signal(6.0, seed=17), chirp_signal(0.4, seed=18)
        url_long = audio_origin.add("long.wav", wav_bytes(long_, 8000))
        url_short = audio_origin.add("short.wav", wav_bytes(short, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=3000))
        [call] = await answered_calls(r, 1)
        conn = acs_client(r).get_call_connection(call.call_id)
        await asyncio.to_thread(conn.play_media, FileSource(url_long), operation_context="long")
        await asyncio.to_thread(conn.play_media, FileSource(url_long), operation_context="queued")
        await acs_events.wait_for("PlayStarted")
        await asyncio.sleep(0.4)
        await asyncio.to_thread(conn.play_media, FileSource(url_short), operation_context="barge",
                                interrupt_call_media_operation=True)
        await acs_events.wait_for("PlayCompleted")
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    got = [(e.type.rsplit(".", 1)[1], e.data["operationContext"]) for e in acs_events.plays]
    assert got[0] == ("PlayStarted", "long") and got[-2:] == [("PlayStarted", "barge"), ("PlayCompleted", "barge")]
    assert sorted(got[1:3]) == [("PlayCanceled", "long"), ("PlayCanceled", "queued")], got
    payload = capture.payload()
    at = payload.find(expected_payload(short, "PCMU"))
    assert at > 0 and payload[:at].find(expected_payload(long_, "PCMU")[: 160 * 15]) >= 0, "long played, then short"
    assert_stream_continuity(capture)


async def test_readme_snippet_runs(tmp_path: Path, audio_origin, acs_events):
    """The README's ACS snippet, run as written (only the base URL, key, call id and URLs substituted)."""
    code = readme_block("Azure Communication Services")
    r = await start_server(tmp_path, acs_access_key=KEY)
    capture = await open_capture()
    try:
        src = chirp_signal(0.6, seed=14)
        url = audio_origin.add("readme.wav", wav_bytes(src, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=2500))
        [call] = await answered_calls(r, 1)
        for placeholder, value in (("http://127.0.0.1:8080", r.http), ("<MEDIASRV_ACS_ACCESS_KEY>", KEY),
                                   ("<call_id>", call.call_id), ("https://example.com/prompt.wav", url),
                                   ("https://app.example.com/acs/events", acs_events.url)):
            assert placeholder in code, placeholder
            code = code.replace(placeholder, value)
        await asyncio.to_thread(exec, compile(code, "README.md", "exec"), {})
        await acs_events.wait_for("PlayCompleted")
        rc, out = await sipp
        assert rc == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    assert capture.payload().find(expected_payload(src, "PCMU")) >= 0


def wait_bye_args(r: Any) -> list[str]:
    """uac_wait_bye.xml: a caller that stays until mediasrv hangs up (SIPp fails the call if no BYE comes)."""
    return [f"127.0.0.1:{r.sip_port}", "-sf", str(SCENARIOS / "uac_wait_bye.xml"), "-i", "127.0.0.1", "-p", "0",
            "-mp", str(free_port_pair()), "-m", "1", "-timeout", "40s", "-timeout_error"]


async def test_hang_up_sends_bye_and_call_disconnected(tmp_path, audio_origin, acs_events):
    """hang_up(is_for_everyone=False), the README's snippet: SIPp gets BYE, the SDK gets None (204), the
    call's callback URI (from its play) gets CallDisconnected; a second hang up is ACS's 404."""
    r = await start_server(tmp_path, acs_access_key=KEY)
    try:
        url = audio_origin.add("p.wav", wav_bytes(chirp_signal(0.2), 8000))
        sipp = await start_sipp(wait_bye_args(r))
        [call] = await answered_calls(r, 1)
        conn = acs_client(r).get_call_connection(call.call_id)
        await asyncio.to_thread(conn.play_media, FileSource(url), operation_context="hello",
                                operation_callback_url=acs_events.url)
        await acs_events.wait_for("PlayCompleted")
        code = readme_block("Azure Communication Services", 1)
        for placeholder, value in (("http://127.0.0.1:8080", r.http), ("<MEDIASRV_ACS_ACCESS_KEY>", KEY),
                                   ("<call_id>", call.call_id)):
            assert placeholder in code, placeholder
            code = code.replace(placeholder, value)
        scope: dict[str, Any] = {}
        await asyncio.to_thread(exec, compile(code, "README.md#acs-hang-up", "exec"), scope)
        assert "result" in scope and scope["result"] is None
        rc, out = await sipp
        assert rc == 0, out[-3000:]  # SIPp received the BYE it waits for
        assert (call.state.value, call.hangup_by, call.hangup_cause) == ("ended", "api", "normal_clearing")
        [gone] = await acs_events.wait_for("CallDisconnected")

        for everyone in (False, True):
            e = await asyncio.to_thread(expect, ResourceNotFoundError, conn.hang_up, everyone)
            assert e.status_code == 404 and e.error.code == "8522"
        e = await asyncio.to_thread(expect, ResourceNotFoundError,
                                    acs_client(r).get_call_connection("v3:x:missing").hang_up, True)
        assert e.status_code == 404 and e.error.code == "8522"
        wrong = acs_client(r, base64.b64encode(b"not-the-key").decode()).get_call_connection(call.call_id)
        e = await asyncio.to_thread(expect, ClientAuthenticationError, wrong.hang_up, False)
        assert e.status_code == 401
    finally:
        await r.server.stop()
    assert acs_events.types() == ["PlayStarted", "PlayCompleted", "CallDisconnected"]
    model = acs_models.CallDisconnected.deserialize(gone.data)
    assert model.call_connection_id == call.call_id and model.server_call_id and model.correlation_id
    assert (model.result_information.code, model.result_information.sub_code) == (200, 0)
    assert "normal_clearing by api" in model.result_information.message
    assert gone.source == f"calling/callConnections/{call.call_id}"


def expect(exc_type: type[Exception], fn: Any, *args: Any, **kwargs: Any) -> Any:
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    return info.value


async def test_terminate_ends_every_bridged_leg(tmp_path, audio_origin, acs_events):
    """hang_up(is_for_everyone=True) → ``:terminate``: BYE to this leg and the leg bridged with it;
    the loop playing on it ends PlayCanceled, then each leg's CallDisconnected; a repeat is a no-op 204."""
    r = await start_server(tmp_path, acs_access_key=KEY, acs_callback_url=acs_events.url)
    try:
        url = audio_origin.add("loop.wav", wav_bytes(chirp_signal(0.4), 8000))
        sipps = [await start_sipp(wait_bye_args(r))]
        await answered_calls(r, 1)
        sipps.append(await start_sipp(wait_bye_args(r)))
        a, b = await answered_calls(r, 2)
        r.server.media.join_room("room-t", a.call_id)
        r.server.media.join_room("room-t", b.call_id)
        conn = acs_client(r).get_call_connection(a.call_id)
        await asyncio.to_thread(conn.play_media, FileSource(url), loop=True, operation_context="looping")
        await acs_events.wait_for("PlayStarted")
        assert await asyncio.to_thread(conn.hang_up, True) is None
        for sipp in sipps:
            rc, out = await sipp
            assert rc == 0, out[-3000:]  # both callers got a BYE
        assert [c.state.value for c in (a, b)] == ["ended", "ended"]
        await acs_events.wait_for("CallDisconnected", 2)

        # the SDK's terminate carries Repeatability-Request-ID: the same id again is answered 204, once done
        target = f"{r.http}/calling/callConnections/{a.call_id}:terminate?api-version=2026-03-12"
        async with aiohttp.ClientSession() as s:
            for repeat_id, status in (("rep-1", 404), ("rep-1", 404)):
                h = signed_headers("POST", target, b"", KEY) | {"Repeatability-Request-ID": repeat_id}
                async with s.post(target, headers=h) as resp:
                    assert resp.status == status  # ended before: nothing was done, nothing remembered
            sipp3 = await start_sipp(wait_bye_args(r))
            [c] = [x for x in await answered_calls(r, 1) if x.call_id not in (a.call_id, b.call_id)]
            target3 = f"{r.http}/calling/callConnections/{c.call_id}:terminate?api-version=2026-03-12"
            for _ in range(2):
                h = signed_headers("POST", target3, b"", KEY) | {"Repeatability-Request-ID": "rep-2"}
                async with s.post(target3, headers=h) as resp:
                    assert resp.status == 204
            rc, out = await sipp3
            assert rc == 0, out[-3000:]
    finally:
        await r.server.stop()
    def of(call_id: str) -> list[str]:  # callbacks are ordered per call, not across calls
        return [e.type.rsplit(".", 1)[1] for e in acs_events.events if e.data["callConnectionId"] == call_id]

    assert of(a.call_id) == ["PlayStarted", "PlayCanceled", "CallDisconnected"]
    assert of(b.call_id) == of(c.call_id) == ["CallDisconnected"]
    assert len(acs_events.events) == 5


async def test_callback_jwt_verifies_against_served_jwks(tmp_path, audio_origin, acs_events):
    """The README's PyJWT check passes for our callbacks; a changed body, a forged signature or another
    audience fail; the JWKS key is the one ``mediasrv keys`` prints; a disabled dialect serves no keys."""
    r = await start_server(tmp_path, acs_access_key=KEY, acs_resource_id="b5ba2e2e-acs-resource",
                           acs_callback_url=acs_events.url)
    off = await start_server(tmp_path / "off")
    try:
        sipp = await start_sipp(wait_bye_args(r))
        [call] = await answered_calls(r, 1)
        await asyncio.to_thread(acs_client(r).get_call_connection(call.call_id).hang_up, False)
        rc, out = await sipp
        assert rc == 0, out[-3000:]
        await acs_events.wait_for("CallDisconnected")
        body, headers = acs_events.raw[0]
        verify = readme_block("Azure Communication Services", 2)
        for placeholder, value in (("http://127.0.0.1:8080", r.http),
                                   ("<MEDIASRV_ACS_RESOURCE_ID>", "b5ba2e2e-acs-resource")):
            assert placeholder in verify, placeholder
            verify = verify.replace(placeholder, value)
        compiled = compile(verify, "README.md#acs-verify", "exec")

        def run(h: dict[str, str], raw: bytes) -> dict[str, Any]:
            scope: dict[str, Any] = {"headers": h, "raw_body": raw}
            exec(compiled, scope)
            return scope["claims"]

        claims = await asyncio.to_thread(run, headers, body)
        tampered = body.replace(b"CallDisconnected", b"CallConnected")
        with pytest.raises(jwt.InvalidTokenError, match="body"):
            await asyncio.to_thread(run, headers, tampered)
        token = headers["Authorization"].removeprefix("Bearer ")
        head, payload, sig = token.split(".")
        forged_claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        forged_claims["content_sha256"] = base64.b64encode(hashlib.sha256(tampered).digest()).decode()
        forged = base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).rstrip(b"=").decode()
        with pytest.raises(jwt.InvalidSignatureError):  # the body's hash re-stated without our key
            await asyncio.to_thread(run, headers | {"Authorization": f"Bearer {head}.{forged}.{sig}"}, tampered)
        flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
        with pytest.raises(jwt.InvalidSignatureError):
            await asyncio.to_thread(run, headers | {"Authorization": f"Bearer {head}.{payload}.{flipped}"}, body)
        with pytest.raises(jwt.InvalidAudienceError):  # a token minted for another resource
            await asyncio.to_thread(acs_events.verify_all, r.http, "another-resource")

        async with aiohttp.ClientSession() as s:
            async with s.get(f"{r.http}/calling/.well-known/acsopenidconfiguration") as resp:
                config = await resp.json()
            async with s.get(f"{r.http}/calling/keys") as resp:
                jwks = await resp.json()
            async with s.get(f"{off.http}/calling/keys") as resp:
                assert resp.status == 404 and (await resp.json())["error"]["code"] == "NotFound"
    finally:
        await r.server.stop()
        await off.server.stop()
    assert claims["iss"] == config["issuer"] == r.http and config["jwks_uri"] == f"{r.http}/calling/keys"
    assert claims["aud"] == "b5ba2e2e-acs-resource" and claims["exp"] - claims["iat"] == 300
    [jwk] = jwks["keys"]
    assert jwt.get_unverified_header(token)["kid"] == jwk["kid"] and jwk["alg"] == "RS256" and jwk["kty"] == "RSA"
    assert not (off.data_dir / "keys").exists(), "a disabled dialect makes no key"
    out = subprocess.run([sys.executable, "-m", "mediasrv", "keys", "--data-dir", str(r.data_dir)],
                         capture_output=True, text=True, timeout=30, cwd=REPO, check=True).stdout
    lines = out.splitlines()
    assert f"kid {jwk['kid']}" in lines and json.loads(lines[lines.index(f"kid {jwk['kid']}") + 1]) == jwk
