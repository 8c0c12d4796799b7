"""Speech through each vendor's official SDK against a SIPp call: the audio espeak-ng makes arrives
bit-exact, the vendor's events follow, bad input is the vendor's 4xx naming the field."""

from __future__ import annotations

import asyncio
from typing import Any

import plivo
import pytest
import telnyx
from azure.communication.callautomation import SsmlSource, TextSource
from azure.core.exceptions import HttpResponseError
from bandwidth.exceptions import BadRequestException
from bandwidth.models.bxml import Bxml, SpeakSentence
from telnyx.types import CallSpeakEndedWebhookEvent, CallSpeakStartedWebhookEvent

from mediacodecs.g711 import ulaw_encode
from mediasrv.rtp.probe import open_capture
from tests.support.acs import KEY, AcsEvents, acs_client
from tests.support.bandwidth import ACCOUNT, CREDS, calls_api, played
from tests.support.plivo import Callbacks, plivo_server
from tests.support.server import Hooks, start_server, wait_until
from tests.support.sipp import answered_calls, sipp_play_args, start_sipp
from tests.support.speech_ref import assert_spoken, reference_pcm
from tests.support.telnyx import CS1, SignedHooks, telnyx_server

pytestmark = pytest.mark.integration

SSML = "<speak>Goodbye <break time='100ms'/> for now</speak>"


async def _error(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with pytest.raises(Exception) as info:  # noqa: PT011 - each SDK's own error type, checked by the caller
        await asyncio.to_thread(fn, *args, **kwargs)
    return info.value


async def test_telnyx_speak(tmp_path, hooks: SignedHooks):
    r, client = await telnyx_server(tmp_path, hooks)
    actions = client.calls.actions
    capture = await open_capture()
    try:
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=4500))
        [call] = await answered_calls(r, 1)
        cid = call.call_id
        res = await asyncio.to_thread(actions.speak, cid, payload="Welcome to mediasrv.", voice="female",
                                      language="en-GB", client_state=CS1, command_id="s-1")
        assert res.data.result == "ok"
        await hooks.wait_for(lambda e: e.data.event_type == "call.speak.ended")
        res = await asyncio.to_thread(actions.speak, cid, payload=SSML, payload_type="ssml", voice="Polly.Matthew")
        assert res.data.result == "ok"
        await wait_until(lambda: hooks.types(cid).count("call.speak.ended") == 2, 10, "the second speak to end")
        bad = [
            (dict(payload="", voice="female"), "/payload"),
            (dict(payload="x" * 3001, voice="female"), "/payload"),
            (dict(payload="hi", voice="Polly.Nobody"), "/voice"),
            (dict(payload="hi", voice="female", language="xx-YY"), "/language"),
            (dict(payload="<speak><audio src='a'/></speak>", payload_type="ssml", voice="male"), "/payload"),
            (dict(payload="<speak>hi", payload_type="ssml", voice="male"), "/payload"),
        ]
        for kwargs, pointer in bad:
            e = await _error(actions.speak, cid, **kwargs)
            assert isinstance(e, telnyx.UnprocessableEntityError), (kwargs, e)
            assert e.body["errors"][0]["source"]["pointer"] == pointer, (kwargs, e.body)
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    payload = capture.payload()
    assert_spoken(payload, "Welcome to mediasrv.", voice="en-gb+f3")
    assert_spoken(payload, SSML, voice="en-us", ssml=True)
    events = [e for e in hooks.events(cid) if e.data.event_type.startswith("call.speak.")]
    assert [e.data.event_type for e in events] == ["call.speak.started", "call.speak.ended"] * 2
    assert all(isinstance(e, k) for e, k in zip(events, [CallSpeakStartedWebhookEvent, CallSpeakEndedWebhookEvent] * 2,
                                                    strict=True))
    assert events[0].data.payload.client_state == CS1
    assert events[1].data.payload.status == events[3].data.payload.status == "completed"
    assert not any(e.data.event_type.startswith("call.playback.") for e in hooks.events(cid))


async def test_acs_text_and_ssml_sources(tmp_path, acs_events: AcsEvents):
    r = await start_server(tmp_path, acs_access_key=KEY)
    capture = await open_capture()
    try:
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=4500))
        [call] = await answered_calls(r, 1)
        conn = acs_client(r).get_call_connection(call.call_id)
        sources = [TextSource(text="Your call is important.", voice_name="en-US-JennyNeural"),
                   TextSource(text="Please hold.", source_locale="en-GB", voice_kind="male"),
                   SsmlSource(ssml_text=SSML)]
        await asyncio.to_thread(conn.play_media, sources, operation_context="tts-1",
                                operation_callback_url=acs_events.url)
        [done] = await acs_events.wait_for("PlayCompleted", 1)
        assert done.data["operationContext"] == "tts-1" and done.data["resultInformation"]["code"] == 200
        bad = [
            (TextSource(text=""), "playSources[0].text.text"),
            (TextSource(text="x" * 3001), "playSources[0].text.text"),
            (TextSource(text="hi", voice_name="en-US-NobodyNeural"), "playSources[0].text.voiceName"),
            (TextSource(text="hi", source_locale="xx-YY"), "playSources[0].text.sourceLocale"),
            (SsmlSource(ssml_text="<speak><audio src='a'/></speak>"), "playSources[0].ssml.ssmlText"),
            (SsmlSource(ssml_text="<speak>hi"), "playSources[0].ssml.ssmlText"),
        ]
        for source, target in bad:
            e = await _error(conn.play_media, source)
            assert isinstance(e, HttpResponseError) and e.status_code == 400, (target, e)
            assert e.error.target == target, (target, e.error)
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    payload = capture.payload()
    assert_spoken(payload, "Your call is important.", voice="en-us+f3")
    assert_spoken(payload, "Please hold.", voice="en-gb")
    assert_spoken(payload, SSML, ssml=True)
    assert acs_events.types()[:2] == ["PlayStarted", "PlayCompleted"]


async def test_plivo_speak_and_stop_speaking(tmp_path, callbacks: Callbacks):
    r, client = await plivo_server(tmp_path)
    capture = await open_capture()
    try:
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=3000))
        [call] = await answered_calls(r, 1)
        cid = call.call_id
        res = await asyncio.to_thread(client.calls.speak, cid, "Hello from Plivo.", voice="MAN", language="en-US",
                                      callback_url=callbacks.url)
        assert res.message == "speak started" and res.api_id
        await callbacks.wait_for(lambda p: p["Event"] == "PlayEnded" and p["RequestUUID"] == res.api_id)
        res2 = await asyncio.to_thread(client.calls.start_speaking, cid, SSML, voice="Polly.Amy", type="ssml",
                                       loop=True, callback_url=callbacks.url)
        await callbacks.wait_for(lambda p: p["Event"] == "PlayStarted" and p["RequestUUID"] == res2.api_id)
        await asyncio.sleep(0.3)
        assert await asyncio.to_thread(client.calls.stop_speaking, cid) is None  # 204
        ended = await callbacks.wait_for(lambda p: p["Event"] == "PlayEnded" and p["RequestUUID"] == res2.api_id)
        assert ended["Status"] == "stopped"
        bad = [
            (("",), {}, "text"),
            (("x" * 3001,), {}, "text"),
            (("hi",), {"voice": "Polly.Nobody"}, "voice"),
            (("hi",), {"language": "xx-YY"}, "language"),
            (("<speak><audio src='a'/></speak>",), {"type": "ssml"}, "audio"),
            (("hi",), {"type": "mp3"}, "type"),
        ]
        for args, kwargs, word in bad:
            e = await _error(client.calls.speak, cid, *args, **kwargs)
            assert isinstance(e, plivo.exceptions.ValidationError) and word in str(e), (args, kwargs, e)
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    payload = capture.payload()
    assert_spoken(payload, "Hello from Plivo.")
    looped = ulaw_encode(reference_pcm(SSML, "en-gb+f3", ssml=True))
    assert payload.find(looped[:1600]) >= 0, "the SSML's first 200 ms, before it was stopped"


async def test_bandwidth_speak_sentence(tmp_path, webhooks: Hooks):
    r = await start_server(tmp_path, webhook_url=webhooks.url, **CREDS)
    capture = await open_capture()
    try:
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=3500))
        [call] = await answered_calls(r, 1)
        api = calls_api(r)
        bxml = Bxml([SpeakSentence("Thanks for waiting.", voice="julie"),
                     SpeakSentence("Goodbye.", locale="en_GB", gender="male")]).to_bxml()
        info = await asyncio.to_thread(api.update_call_bxml_with_http_info, ACCOUNT, call.call_id, bxml)
        assert info.status_code == 204
        await wait_until(played(webhooks, 2), 10, "both SpeakSentence verbs played")
        bad = [
            (SpeakSentence(""), "text"),
            (SpeakSentence("x" * 3001), "text"),
            (SpeakSentence("hi", voice="nobody"), "voice"),
            (SpeakSentence("hi", locale="xx_YY"), "locale"),
        ]
        for verb, word in bad:
            with pytest.raises(BadRequestException) as e:
                await asyncio.to_thread(api.update_call_bxml, ACCOUNT, call.call_id, Bxml([verb]).to_bxml())
            assert e.value.status == 400 and e.value.data.type == "validation" and word in e.value.data.description
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    payload = capture.payload()
    at = assert_spoken(payload, "Thanks for waiting.", voice="en-us+f3")
    assert payload.find(ulaw_encode(reference_pcm("Goodbye.", "en-gb")), at) > at, "in order, one after the other"
    assert [e["data"]["status"] for e in webhooks.events if e["type"] == "playback.ended"] == ["completed"] * 2
