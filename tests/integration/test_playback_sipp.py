"""End to end with real SIPp dialing in: HTTP play → RTP on the wire → bit-exact G.711 at an independent receiver."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from mediasrv.rtp.probe import analyse, open_capture
from tests.support.audio import SILENCE, chirp_signal, expected_payload, wav_bytes
from tests.support.httpapi import post_play
from tests.support.server import Hooks, Running, start_server, wait_until
from tests.support.sipp import answered_calls, assert_stream_continuity, sipp_play_args, start_sipp

pytestmark = pytest.mark.integration


async def _play_and_check(tmp_path, webhooks: Hooks, audio_origin, codec: str) -> None:
    r = await start_server(tmp_path, webhook_url=webhooks.url, codecs=[codec])
    capture = await open_capture()
    try:
        src = chirp_signal(1.0)
        url = audio_origin.add("chirp.wav", wav_bytes(src, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=3000))
        [call] = await answered_calls(r, 1)
        assert call.media.codec.name == codec
        status, playback = await post_play(r, call.call_id, {"url": url})
        assert status == 201, playback
        assert playback["state"] in ("queued", "playing")
        await webhooks.wait_for(lambda e: e["type"] == "playback.ended", timeout=10)
        code, out = await sipp
        assert code == 0, out[-3000:]
        await webhooks.wait_for(lambda e: e["type"] == "call.hangup", timeout=10)
    finally:
        capture.close()
        await r.server.stop()

    payload = capture.payload()
    expected = expected_payload(src, codec)
    at = payload.find(expected)
    assert at >= 0, "the played audio did not arrive bit-exact"
    assert at % 160 == 0, "playback must start on a packet boundary"
    before, after = payload[:at], payload[at + len(expected):]
    assert set(before) <= {SILENCE[codec]} and set(after) <= {SILENCE[codec]}, "only silence around the prompt"
    assert_stream_continuity(capture)

    types = webhooks.of(call.call_id)
    assert types == ["call.initiated", "call.answered", "playback.started", "playback.ended", "call.hangup"], types
    ended = next(e for e in webhooks.events if e["type"] == "playback.ended")
    assert ended["data"]["status"] == "completed"
    assert abs(ended["data"]["ms_played"] - 1000) <= 20
    hangup = next(e for e in webhooks.events if e["type"] == "call.hangup")
    assert hangup["data"]["hangup_by"] == "caller"


async def test_play_url_pcmu_bit_exact(tmp_path, webhooks, audio_origin):
    await _play_and_check(tmp_path, webhooks, audio_origin, "PCMU")


async def test_play_url_pcma_bit_exact(tmp_path, webhooks, audio_origin):
    await _play_and_check(tmp_path, webhooks, audio_origin, "PCMA")


async def test_loop_queue_and_stop(tmp_path, webhooks, audio_origin):
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    capture = await open_capture()
    try:
        a, b = chirp_signal(0.5, seed=2), chirp_signal(0.3, seed=3)[::-1].copy()
        url_a = audio_origin.add("a.wav", wav_bytes(a, 8000))
        # the second source is a stored media file, not a URL
        (r.data_dir / "media" / "b.wav").write_bytes(wav_bytes(b, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=6000))
        [call] = await answered_calls(r, 1)
        s1, p1 = await post_play(r, call.call_id, {"url": url_a, "loop": 2})
        s2, p2 = await post_play(r, call.call_id, {"media": "b.wav"})
        s3, p3 = await post_play(r, call.call_id, {"url": url_a, "loop": "infinity"})
        assert (s1, s2, s3) == (201, 201, 201)
        assert p2["state"] == "queued"
        await webhooks.wait_for(lambda e: e["type"] == "playback.started" and e["data"]["playback_id"] == p3["id"])
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as s:
            async with s.delete(f"{r.http}/v1/playbacks/{p3['id']}") as resp:
                assert resp.status == 200 and (await resp.json())["stopped_now"] is True
            ended3 = await webhooks.wait_for(
                lambda e: e["type"] == "playback.ended" and e["data"]["playback_id"] == p3["id"])
            # a second stop of an ended playback is a no-op, reported as such
            async with s.delete(f"{r.http}/v1/playbacks/{p3['id']}") as resp:
                assert resp.status == 200 and (await resp.json())["stopped_now"] is False
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()

    assert ended3["data"]["status"] == "stopped"
    payload = capture.payload()
    ea, eb = expected_payload(a, "PCMU"), expected_payload(b, "PCMU")
    at = payload.find(ea + ea + eb)
    assert at >= 0 and at % 160 == 0, "loop 2 then the queued file, back to back, bit-exact"
    tail = payload[at + 2 * len(ea) + len(eb):]
    assert tail.startswith(ea[: 160 * 10]), "the infinite loop started right after"
    assert_stream_continuity(capture)
    order = [(e["type"], e["data"].get("playback_id")) for e in webhooks.events if e["type"].startswith("playback.")]
    assert order[:6] == [
        ("playback.started", p1["id"]), ("playback.ended", p1["id"]),
        ("playback.started", p2["id"]), ("playback.ended", p2["id"]),
        ("playback.started", p3["id"]), ("playback.ended", p3["id"]),
    ]


async def test_hangup_during_playback(running: Running, webhooks: Hooks, audio_origin):
    r = running
    capture = await open_capture()
    try:
        url = audio_origin.add("long.wav", wav_bytes(chirp_signal(10.0), 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=1500))
        [call] = await answered_calls(r, 1)
        status, playback = await post_play(r, call.call_id, {"url": url})
        assert status == 201
        code, out = await sipp
        assert code == 0, out[-3000:]
        ended = await webhooks.wait_for(lambda e: e["type"] == "playback.ended")
        await webhooks.wait_for(lambda e: e["type"] == "call.hangup")
    finally:
        capture.close()
    assert ended["data"]["status"] == "call_hangup"
    assert 0 < ended["data"]["ms_played"] < 2000
    # the ended call answers 409 in the native error shape
    async with aiohttp.ClientSession() as s, s.post(f"{r.http}/v1/calls/{call.call_id}/playbacks", json={"url": url}) as resp:
        assert resp.status == 409
        assert (await resp.json())["error"]["code"] == "call_ended"


async def test_bad_url_fails_and_call_carries_on(running: Running, webhooks: Hooks, audio_origin):
    r = running
    capture = await open_capture()
    try:
        audio_origin.add("page.wav", b"<html><body>" + b"x" * 500 + b"</body></html>", "text/html")
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=2500))
        [call] = await answered_calls(r, 1)
        for name in ("missing.wav", "page.wav"):
            status, _ = await post_play(r, call.call_id, {"url": f"{audio_origin.base}/{name}"})
            assert status == 201
        status, _ = await post_play(r, call.call_id, {"url": "http://127.0.0.1:9/unreachable.wav"})
        assert status == 201
        await wait_until(lambda: len([e for e in webhooks.events if e["type"] == "playback.ended"]) == 3, 15,
                         "three failed playbacks")
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
    ended = [e["data"] for e in webhooks.events if e["type"] == "playback.ended"]
    assert [e["status"] for e in ended] == ["failed"] * 3
    assert ended[0]["reason"] == "http_404"
    assert ended[1]["reason"] == "not_audio" and "text/html" in ended[1]["message"]
    assert ended[2]["reason"] in ("unreachable", "fetch_error", "connect_error")
    assert_stream_continuity(capture)  # silence kept flowing, unbroken


async def test_fifty_concurrent_calls_all_playing(running: Running, webhooks: Hooks, audio_origin):
    r = running
    capture = await open_capture()
    n = 50
    try:
        src = chirp_signal(2.0)
        url = audio_origin.add("chirp.wav", wav_bytes(src, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=5000, calls=n, rate=50))
        calls = await answered_calls(r, n, timeout=20)
        results = await asyncio.gather(*(post_play(r, c.call_id, {"url": url}) for c in calls))
        assert all(status == 201 for status, _ in results)
        await wait_until(lambda: len([e for e in webhooks.events if e["type"] == "playback.ended"]) >= n, 20,
                         "all playbacks ended")
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
    ended = [e["data"] for e in webhooks.events if e["type"] == "playback.ended"]
    assert all(e["status"] == "completed" for e in ended)
    by_ssrc: dict[int, list] = {}
    for p in capture.packets:
        by_ssrc.setdefault(p.ssrc, []).append(p)
    assert len(by_ssrc) == n
    expected = expected_payload(src, "PCMU")
    for packets in by_ssrc.values():
        report = analyse(packets)
        assert report.lost == 0 and report.seq_errors == 0 and report.ts_errors == 0, report.line()
        assert expected in b"".join(p.payload for p in packets)
