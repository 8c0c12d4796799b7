"""Audio sources end to end: the media store and cache APIs over HTTP, and SIPp callers hearing
inline base64 audio, an MP3 from a signed URL and stored media, with every failure reported."""

from __future__ import annotations

import base64
import hashlib

import aiohttp
import numpy as np
import pytest

from mediacodecs.g711 import ulaw_decode, ulaw_encode
from mediacodecs.resample import to_telephony
from mediasrv.api.errors import ApiError
from mediasrv.api.sources import parse_sources
from mediasrv.content.decode import decode_bytes
from mediasrv.rtp.probe import open_capture
from tests.support.audio import expected_payload
from tests.support.audio_fixtures import HTML_PAGE, mp3, sweep
from tests.support.http_origin import Origin, tone, wav
from tests.support.httpapi import req
from tests.support.server import Hooks, start_server
from tests.support.sipp import answered_calls, assert_stream_continuity, sipp_play_args, start_sipp

pytestmark = pytest.mark.integration


@pytest.fixture
async def origin():
    o = await Origin().start()
    yield o
    await o.close()


# -- the media store -------------------------------------------------------------------------------
async def test_media_store_put_get_list_delete_and_restart(tmp_path):
    r = await start_server(tmp_path)
    body = wav(tone(1.5), 8000)
    try:
        status, meta = await req("PUT", f"{r.http}/v1/media/greeting.wav", data=body)
        assert status == 201, meta
        assert meta["name"] == "greeting.wav" and meta["size"] == len(body)
        assert meta["sha256"] == hashlib.sha256(body).hexdigest()
        assert meta["duration_ms"] == 1500 and meta["sample_rate"] == 8000 and meta["channels"] == 1
        assert "wav" in meta["format"].lower() and meta["created_at"] > 0
        assert (r.data_dir / "media" / "greeting.wav").read_bytes() == body

        form = aiohttp.FormData()
        form.add_field("file", mp3(sweep(1.0, 16000), 16000), filename="x.mp3", content_type="audio/mpeg")
        status, meta2 = await req("PUT", f"{r.http}/v1/media/sweep.mp3", data=form)
        assert status == 201, meta2
        assert meta2["sample_rate"] == 16000 and abs(meta2["duration_ms"] - 1000) <= 30

        status, _ = await req("PUT", f"{r.http}/v1/media/greeting.wav", data=body)
        assert status == 200  # replaced

        status, err = await req("PUT", f"{r.http}/v1/media/page.wav", data=HTML_PAGE)
        assert status == 422 and err["error"]["code"] == "not_audio", err
        assert "text/html" in err["error"]["message"]
        status, err = await req("PUT", f"{r.http}/v1/media/empty.wav", data=b"")
        assert status == 400
        cut = mp3(sweep(1.0, 16000), 16000)
        status, err = await req("PUT", f"{r.http}/v1/media/cut.mp3", data=cut[: len(cut) - 100])
        assert status == 422 and err["error"]["code"] == "truncated", err  # decoded whole, not just sniffed
        for bad in ("..", ".hidden", "a..b", "%2e%2e%2fetc%2fpasswd", "x" * 201):
            status, err = await req("PUT", f"{r.http}/v1/media/{bad}", data=body)
            assert status in (400, 404), (bad, status)
            if status == 400:
                assert err["error"]["code"] == "invalid_media_name"
        status, err = await req("GET", f"{r.http}/v1/media/..%2f..%2fetc%2fpasswd")
        assert status in (400, 404)
        assert sorted(p.name for p in (r.data_dir / "media").iterdir() if p.is_file()) == ["greeting.wav",
                                                                                          "sweep.mp3"]

        status, listing = await req("GET", f"{r.http}/v1/media")
        assert [m["name"] for m in listing["media"]] == ["greeting.wav", "sweep.mp3"]
        decodes = r.server.media.loader.stats["decodes"]
        media = await r.server.media.loader.load(("greeting.wav"), "media")
        assert r.server.media.loader.stats["decodes"] == decodes  # decoded once, at upload
        assert np.array_equal(media.pcm, tone(1.5))
        status, one = await req("GET", f"{r.http}/v1/media/sweep.mp3")
        assert status == 200 and one["sha256"] == meta2["sha256"]
        status, _ = await req("GET", f"{r.http}/v1/media/nothing.wav")
        assert status == 404
    finally:
        await r.server.stop()

    r = await start_server(tmp_path)  # a restart keeps the store
    try:
        status, listing = await req("GET", f"{r.http}/v1/media")
        assert [m["name"] for m in listing["media"]] == ["greeting.wav", "sweep.mp3"]
        status, gone = await req("DELETE", f"{r.http}/v1/media/sweep.mp3")
        assert status == 200 and gone == {"deleted": "sweep.mp3"}
        status, _ = await req("DELETE", f"{r.http}/v1/media/sweep.mp3")
        assert status == 404
        status, listing = await req("GET", f"{r.http}/v1/media")
        assert [m["name"] for m in listing["media"]] == ["greeting.wav"]
    finally:
        await r.server.stop()


# -- the cache API --------------------------------------------------------------------------------
async def test_cache_prefetch_list_purge(tmp_path, origin):
    r = await start_server(tmp_path)
    try:
        url = origin.static("/hold.wav", wav(tone(1.0)), headers={"Cache-Control": "max-age=600"}, etag='"h1"')
        status, res = await req("POST", f"{r.http}/v1/media-cache/prefetch", json={"url": url})
        assert status == 200, res
        assert res["status"] == "ready" and res["cached"] is True and res["duration_ms"] == 1000
        assert res["entry"]["validators"]["etag"] == '"h1"' and res["entry"]["expires"] > 0
        status, listing = await req("GET", f"{r.http}/v1/media-cache")
        assert [e["key"] for e in listing["entries"]] == [f"url:{url}"]
        assert listing["entries"][0]["bytes"] > 0
        signed = origin.static("/s.wav", wav(tone(0.5))) + "?sig=SECRET"
        status, res = await req("POST", f"{r.http}/v1/media-cache/prefetch", json={"url": signed, "cache_id": "s"})
        assert status == 200 and res["entry"]["key"] == "id:s"
        status, listing = await req("GET", f"{r.http}/v1/media-cache")
        assert "SECRET" not in str(listing)
        status, res = await req("POST", f"{r.http}/v1/media-cache/prefetch", json={"cache_id": "s"})
        assert status == 200 and res["entry"]["key"] == "id:s"

        status, res = await req("POST", f"{r.http}/v1/media-cache/prefetch", json={"url": origin.url("/nope.wav")})
        assert status == 422 and res["error"]["code"] == "http_404"

        status, res = await req("DELETE", f"{r.http}/v1/media-cache", params={"url": url})
        assert status == 200 and res == {"purged": True}
        status, res = await req("DELETE", f"{r.http}/v1/media-cache", params={"cache_id": "s"})
        assert res == {"purged": True}
        status, listing = await req("GET", f"{r.http}/v1/media-cache")
        assert listing["entries"] == []
        status, res = await req("DELETE", f"{r.http}/v1/media-cache")
        assert status == 400
        assert origin.hits("/hold.wav") == 1
    finally:
        await r.server.stop()


def test_source_forms_validated():
    cases = [
        ({"content_base64": "@@@"}, "content_base64", 400),
        ({"sources": [{"url": "http://a/x.wav"}, {"content_base64": "!!"}]}, "sources[1].content_base64", 400),
        ({"url": "http://a/x.wav", "media": "b.wav"}, "media", 422),
        ({"url": "ftp://a/x.wav"}, "url", 400),
        ({"media": "../x"}, "media", 400),
        ({"url": "http://a/x.wav", "auth": {"username": 1}}, "auth.username", 400),
        ({"url": "http://a/x.wav", "cache": "yes"}, "cache", 400),
        ({"media": "a.wav", "cache_id": "x"}, "cache_id", 422),
        ({"content_base64": "UklGRg==", "audio_type": "speex"}, "audio_type", 422),
        ({}, "url", 400),
    ]
    for body, field, code in cases:
        with pytest.raises(ApiError) as info:
            parse_sources(body)
        assert (info.value.details.get("field"), info.value.status) == (field, code), body
    [spec] = parse_sources({"url": "http://a/x.wav?s=1", "cache": True, "cache_id": "k",
                            "auth": {"username": "u", "password": "hunter2"}})
    assert (spec.cache, spec.cache_id, spec.username, spec.password) == (True, "k", "u", "hunter2")
    assert "hunter2" not in repr(spec)
    [a, b] = parse_sources({"sources": [{"content_base64": "UklG\nRg==", "audio_type": "WAV"}, {"media": "x.wav"}]})
    assert a.content == b"RIFF" and a.audio_type == "wav" and b.media == "x.wav"


# -- SIPp callers hear it ------------------------------------------------------------------------------
async def test_sipp_hears_base64_mp3_and_stored_media(tmp_path, webhooks: Hooks, origin):
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    capture = await open_capture()
    try:
        inline = tone(0.6, freq=520, seed=5)
        x = sweep(1.0, 24000)
        mp3_body = mp3(x, 24000)
        mp3_url = origin.static("/prompt", mp3_body, content_type="binary/octet-stream") + "?X-Amz-Signature=zz"
        stored = tone(0.4, freq=700, seed=9)
        status, _ = await req("PUT", f"{r.http}/v1/media/stored.wav", data=wav(stored))
        assert status == 201
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=4500))
        [call] = await answered_calls(r, 1)
        status, pb = await req("POST", f"{r.http}/v1/calls/{call.call_id}/playbacks", json={"sources": [
            {"content_base64": base64.b64encode(wav(inline)).decode(), "audio_type": "wav"},
        ]})
        assert status == 201, pb
        for body in ({"url": mp3_url}, {"media": "stored.wav"}):
            status, _ = await req("POST", f"{r.http}/v1/calls/{call.call_id}/playbacks", json=body)
            assert status == 201
        await webhooks.wait_for(lambda e: len([x for x in webhooks.events if x["type"] == "playback.ended"]) == 3,
                                timeout=15)
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()

    ended = [e["data"] for e in webhooks.events if e["type"] == "playback.ended"]
    assert [e["status"] for e in ended] == ["completed"] * 3, ended
    payload = capture.payload()
    decoded_mp3 = decode_bytes(mp3_body, "mp3", "t")
    want = expected_payload(inline, "PCMU")[: len(ulaw_encode(inline)) // 160 * 160]
    at = payload.find(want)
    assert at >= 0 and at % 160 == 0, "the inline audio arrived bit-exact"
    mp3_bytes = ulaw_encode(decoded_mp3)
    at_mp3 = payload.find(mp3_bytes[: len(mp3_bytes) // 160 * 160])
    assert at_mp3 > at, "the MP3 arrived bit-exact (as decoded once) after the inline audio"
    assert payload.find(ulaw_encode(stored)[:3200]) > at_mp3, "then the stored file"
    # and the MP3 is the sweep it was made from (SNR against an offline reference resample)
    ref = to_telephony(np.round(x * 32767).astype(np.int16), 24000, 8000).astype(float)
    got = ulaw_decode(payload[at_mp3: at_mp3 + len(ref)]).astype(float)
    n = min(len(ref), len(got))
    snr = 10 * np.log10(np.sum(ref[:n] ** 2) / np.sum((ref[:n] - got[:n]) ** 2))
    assert snr > 15, f"SNR {snr:.1f} dB"
    assert_stream_continuity(capture)


async def test_failures_reported_as_failed_playbacks(tmp_path, webhooks: Hooks, origin):
    r = await start_server(tmp_path, webhook_url=webhooks.url, max_fetch_bytes=1 << 20)
    capture = await open_capture()
    try:
        page = b"<html><body>" + b"x" * 486 + b"</body></html>"
        urls = [
            origin.static("/page.wav", page, content_type="text/html"),
            origin.redirect("/meta", "http://169.254.169.254/latest/meta-data/"),
            origin.truncated("/cut.wav", wav(tone(1.0)), send=4000),
            origin.endless("/endless.wav", wav(tone(0.01))[:44]),
        ]
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=4000))
        [call] = await answered_calls(r, 1)
        for u in urls:
            status, _ = await req("POST", f"{r.http}/v1/calls/{call.call_id}/playbacks", json={"url": u})
            assert status == 201
        await webhooks.wait_for(lambda e: len([x for x in webhooks.events if x["type"] == "playback.ended"]) == 4,
                                timeout=20)
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    ended = [e["data"] for e in webhooks.events if e["type"] == "playback.ended"]
    assert [(e["status"], e["reason"]) for e in ended] == [
        ("failed", "not_audio"), ("failed", "forbidden_address"), ("failed", "truncated"), ("failed", "too_large")]
    assert ended[0]["message"] == "text/html, 512 bytes, not audio"
    assert all(e["message"] for e in ended)
    assert_stream_continuity(capture)


async def test_slow_origin_underruns_then_completes_with_every_sample(tmp_path, webhooks: Hooks, origin):
    """An origin slower than real time: playback starts early, pauses (silence) when it catches up with
    the download, and only reports completed once every sample was sent."""
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    capture = await open_capture()
    try:
        src = tone(2.0, freq=330, seed=3)
        body = wav(src)  # 32 KB at 16 KB/s of audio, served at ~10 KB/s
        url = origin.drip("/slow.wav", body, piece=2000, every_s=0.2)
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=5500))
        [call] = await answered_calls(r, 1)
        status, pb = await req("POST", f"{r.http}/v1/calls/{call.call_id}/playbacks", json={"url": url})
        assert status == 201
        started = await webhooks.wait_for(lambda e: e["type"] == "playback.started", timeout=5)
        ended = await webhooks.wait_for(lambda e: e["type"] == "playback.ended", timeout=10)
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    assert started["data"]["playback_id"] == pb["id"]
    assert ended["data"]["status"] == "completed" and ended["data"]["ms_played"] == 2000
    payload = capture.payload()
    # every sample arrived, in order, with silence packets only between whole packets of the audio
    packets = [payload[i:i + 160] for i in range(0, len(payload), 160)]
    is_audio = [p != bytes([0xFF]) * 160 for p in packets]
    first, last = is_audio.index(True), len(is_audio) - 1 - is_audio[::-1].index(True)
    assert not all(is_audio[first:last + 1]), "the download was slower than real time: there were underruns"
    assert expected_payload(src, "PCMU") in b"".join(p for p, a in zip(packets, is_audio, strict=True) if a)
    assert_stream_continuity(capture)
