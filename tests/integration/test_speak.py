"""The native ``speak`` source against a SIPp call: espeak-ng's audio arrives bit-exact, cached, bad input named."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from mediasrv.rtp.probe import open_capture
from tests.support.httpapi import post_play
from tests.support.server import Hooks, Running, start_server, wait_until
from tests.support.sipp import answered_calls, assert_stream_continuity, sipp_play_args, start_sipp
from tests.support.speech_ref import assert_spoken

pytestmark = pytest.mark.integration

SENTENCE = "Press one for sales."
SSML = '<speak>Hello <break time="200ms"/> <prosody rate="slow">world</prosody></speak>'


async def test_speak_text_and_ssml_reach_the_caller_bit_exact_and_cached(tmp_path, webhooks: Hooks):
    """Text twice in one list (synthesized once), SSML with a variant voice, a cached repeat that starts at
    the next tick; then every kind of bad speak input on the same call, refused with its field named."""
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    capture = await open_capture()
    try:
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=6000))
        [call] = await answered_calls(r, 1)
        speak = {"text": SENTENCE, "voice": "en-us", "rate": 190}
        status, body = await post_play(r, call.call_id, {"sources": [{"speak": speak}, {"speak": speak}]})
        assert status == 201, body
        assert body["source"].startswith("speak:en-us:190:text")
        await webhooks.wait_for(lambda e: e["type"] == "playback.ended", timeout=15)
        stats = r.server.media.loader.stats
        assert stats["syntheses"] == 1, "the second source is the same speech: synthesized once"
        status, body = await post_play(r, call.call_id, {"speak": {"ssml": SSML, "voice": "en-gb+f3"}})
        assert status == 201, body
        await webhooks.wait_for(lambda e: e["type"] == "playback.ended" and e["data"]["playback_id"] == body["id"],
                                timeout=15)
        status, body = await post_play(r, call.call_id, {"speak": speak})  # cached: starts at the next tick
        assert status == 201 and body["state"] == "playing", body
        assert stats["syntheses"] == 2
        await assert_refusals(r, call.call_id)
        assert stats["syntheses"] == 2, "nothing refused reached the engine"
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    payload = capture.payload()
    at = assert_spoken(payload, SENTENCE, rate=190, times=2)
    assert at % 160 == 0
    assert_spoken(payload, SSML, voice="en-gb+f3", ssml=True)
    assert_stream_continuity(capture)
    ended = [e for e in webhooks.events if e["type"] == "playback.ended"]
    assert [e["data"]["status"] for e in ended][:2] == ["completed", "completed"]


async def test_a_burst_of_speak_commands_queues_on_the_engine(tmp_path, webhooks: Hooks):
    """20 different sentences at once: at most ``speech_concurrency`` children run; each plays, none fails."""
    r = await start_server(tmp_path, webhook_url=webhooks.url, speech_concurrency=2)
    capture = await open_capture()
    try:
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=3000))
        [call] = await answered_calls(r, 1)
        results = await asyncio.gather(*(post_play(r, call.call_id, {"speak": {"text": f"number {i}", "rate": 450}})
                                         for i in range(20)))
        assert all(status == 201 for status, _ in results), results
        from mediasrv.content.synth import get_engine  # noqa: PLC0415

        engine = get_engine()
        cache = r.server.media.loader.cache
        await wait_until(lambda: sum(k.startswith("speak:") for k in cache.entries) == 20, 15, "20 syntheses")
        assert engine.stats["syntheses"] == 20 and engine.stats["queued"] > 0, engine.stats  # type: ignore[attr-defined]
        assert r.server.media.loader.stats["failures"] == 0
        await webhooks.wait_for(lambda e: e["type"] == "playback.ended", timeout=10)
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    ended = [e for e in webhooks.events if e["type"] == "playback.ended"]
    assert len(ended) == 20 and ended[0]["data"]["status"] == "completed", ended[0]
    assert {e["data"]["status"] for e in ended} <= {"completed", "call_hangup"}  # the queue outlasts the call
    assert_spoken(capture.payload(), "number 0", rate=450)


BAD_SPEAK = [
    ({"speak": {"text": ""}}, 400, "speak.text"),
    ({"speak": {"text": "   "}}, 400, "speak.text"),
    ({"speak": {"text": "a" * 3001}}, 422, "speak.text"),
    ({"speak": {"text": "hi", "voice": "en-US-JennyNeural"}}, 422, "speak.voice"),
    ({"speak": {"text": "hi", "voice": "en-us+nosuchvariant"}}, 422, "speak.voice"),
    ({"speak": {"text": "hi", "rate": 10}}, 422, "speak.rate"),
    ({"speak": {"text": "hi", "rate": "fast"}}, 400, "speak.rate"),
    ({"speak": {"ssml": "<speak>hi"}}, 422, "speak.ssml"),
    ({"speak": {"ssml": "<speak><audio src='http://x/a.wav'/></speak>"}}, 422, "speak.ssml"),
    ({"speak": {"ssml": '<!DOCTYPE s [<!ENTITY e "x">]><speak>&e;</speak>'}}, 422, "speak.ssml"),
    ({"speak": {"ssml": "<speak>" + "a" * 20000 + "</speak>"}}, 422, "speak.ssml"),
    ({"speak": {"text": "hi", "ssml": "<speak>hi</speak>"}}, 400, "speak.text"),
    ({"speak": {}}, 400, "speak.text"),
    ({"speak": "hello"}, 400, "speak"),
    ({"speak": {"text": "hi", "pitch": 3}}, 400, "speak.pitch"),
    ({"speak": {"text": "hi"}, "url": "http://127.0.0.1/a.wav"}, 422, "url"),
    ({"sources": [{"speak": {"text": "ok"}}, {"speak": {"text": "hi", "voice": "xx"}}]}, 422, "sources[1].speak.voice"),
]


async def assert_refusals(r: Running, call_id: str) -> None:
    async with aiohttp.ClientSession() as s:
        for body, status, field in BAD_SPEAK:
            async with s.post(f"{r.http}/v1/calls/{call_id}/playbacks", json=body) as resp:
                err = (await resp.json())["error"]
                assert (resp.status, err["details"]["field"]) == (status, field), (body, resp.status, err)
