"""The loader's cache against a real origin: single-flight, RFC 9111 freshness, 304 reuse, cache ids,
the disk tier, byte-bounded LRU, and every failure reason of a URL source."""

from __future__ import annotations

import asyncio
import email.utils
import time
from pathlib import Path

import numpy as np
import pytest

from mediacodecs.g711 import ulaw_encode
from mediacodecs.resample import to_telephony
from mediasrv.content.cache import FORCED_TTL_S, freshness
from mediasrv.content.errors import SourceError
from mediasrv.content.loader import MediaLoader
from mediasrv.content.source import Media
from mediasrv.media.player import SourceSpec
from tests.support.audio_fixtures import HTML_PAGE, hostile, mp3, sweep
from tests.support.http_origin import Origin, tone, wav, wav_header

LOOPBACK = ["127.0.0.0/8", "::1/128"]


@pytest.fixture
async def origin():
    o = await Origin().start()
    yield o
    await o.close()


@pytest.fixture
async def loader(tmp_path: Path):
    ld = MediaLoader.create(str(tmp_path), allow_cidrs=LOOPBACK)
    yield ld
    await ld.close()


def http_date(t: float) -> str:
    return email.utils.formatdate(t, usegmt=True)


async def finished(loader: MediaLoader, spec: SourceSpec) -> Media:
    """The media once fully decoded (raises the SourceError, whether it came before or after the start)."""
    media = await loader.load_source(spec)
    while not media.complete:
        if media.error is not None:
            raise media.error
        await asyncio.sleep(0.01)
    return media


async def reason(loader: MediaLoader, spec: SourceSpec) -> SourceError:
    with pytest.raises(SourceError) as info:
        await finished(loader, spec)
    return info.value


# -- RFC 9111 freshness (pure) --------------------------------------------------------------------
NOW = 1_800_000_000.0


@pytest.mark.parametrize("headers, force, cache_id, store, ttl", [
    ({"Cache-Control": "max-age=60"}, None, None, True, 60),
    ({"Cache-Control": "max-age=60, s-maxage=10"}, None, None, True, 10),  # we are a shared cache
    ({"Cache-Control": "max-age=60", "Age": "45"}, None, None, True, 15),
    ({"Cache-Control": "max-age=60", "Date": http_date(NOW - 20)}, None, None, True, 40),
    ({"Expires": http_date(NOW + 120), "Date": http_date(NOW)}, None, None, True, 120),
    ({"Expires": "0"}, None, None, False, None),  # invalid Expires = already expired, no validator
    ({"Cache-Control": "max-age=60", "Expires": http_date(NOW + 999)}, None, None, True, 60),
    ({"Cache-Control": "no-store, max-age=60"}, True, "id1", False, None),
    ({"Cache-Control": "private, max-age=60"}, None, None, False, None),
    ({"Cache-Control": "no-cache", "ETag": '"v1"'}, None, None, True, 0),
    ({"ETag": '"v1"'}, None, None, True, 0),  # validator only: stored, revalidated on each use
    ({}, None, None, False, None),  # no caching headers: not cached
    ({}, True, None, True, FORCED_TTL_S),  # Telnyx cache_audio
    ({}, None, "acs-id", True, FORCED_TTL_S),  # ACS playSourceCacheId
    ({"Cache-Control": "max-age=60"}, False, None, False, None),  # cache=false wins
])
def test_freshness(headers, force, cache_id, store, ttl):
    f = freshness(headers, NOW, force, cache_id)
    assert f.store is store, f.why
    if store:
        assert max(0.0, f.fresh_until - NOW) == pytest.approx(ttl, abs=1)


@pytest.mark.parametrize("headers, force, store", [
    ({"Cache-Control": "max-age=60"}, None, False),  # RFC 9111 §3.5: not shareable by default
    ({"Cache-Control": "public, max-age=60"}, None, True),
    ({"Cache-Control": "s-maxage=60"}, None, True),
    ({"Cache-Control": "max-age=60"}, True, True),  # the command asked
])
def test_responses_to_credentials(headers, force, store):
    assert freshness(headers, NOW, force, None, authorized=True).store is store


@pytest.mark.parametrize("name", sorted(hostile()))
async def test_hostile_bodies_fail_with_their_reason(loader, origin, name):
    body, kind, expected = hostile()[name]
    ctype = {"wav": "audio/wav", "mp3": "audio/mpeg", "html": "text/html", "ogg": "audio/ogg", "flac": "audio/flac"}[kind]
    err = await reason(loader, SourceSpec(url=origin.static(f"/{name}", body, content_type=ctype)))
    assert err.reason == expected, err.message


# -- the loader -----------------------------------------------------------------------------------
async def test_twenty_concurrent_cold_plays_one_origin_request(loader, origin):
    src = tone(2.0)
    url = origin.static("/one.wav", wav(src))
    futures = [loader.load_source(SourceSpec(url=url)) for _ in range(20)]
    medias = await asyncio.gather(*futures)
    assert origin.hits("/one.wav") == 1
    assert all(m is medias[0] for m in medias)
    await finished(loader, SourceSpec(url=url))
    assert loader.stats["decodes"] == 1
    assert np.array_equal(medias[0].pcm, src)


async def test_credentials_never_shared_with_other_requests(loader, origin):
    origin.echo_auth("/private.wav", wav(tone(0.5)))
    url = origin.url("/private.wav")
    with_auth = loader.load_source(SourceSpec(url=url, username="alice", password="pw"))
    without = loader.load_source(SourceSpec(url=url))
    other = loader.load_source(SourceSpec(url=url, username="alice", password="other"))
    same = loader.load_source(SourceSpec(url=url, username="alice", password="pw"))
    assert same is with_auth and without is not with_auth and other is not with_auth
    assert len((await with_auth).pcm) == 4000
    with pytest.raises(SourceError) as info:
        await without
    assert info.value.reason == "http_401"
    await other  # the origin only checks that some credentials came
    assert origin.hits("/private.wav") == 3 and not loader.cache.entries


async def test_max_age_then_revalidation_304_reuses_decoded_audio(loader, origin):
    url = origin.static("/ma.wav", wav(tone(0.5)), headers={"Cache-Control": "max-age=1"}, etag='"v1"')
    first = await finished(loader, SourceSpec(url=url))
    again = await finished(loader, SourceSpec(url=url))
    assert origin.hits("/ma.wav") == 1 and again is first  # within max-age: no request at all
    await asyncio.sleep(1.1)
    third = await finished(loader, SourceSpec(url=url))
    assert origin.hits("/ma.wav") == 2  # expired: one conditional request
    assert origin.headers_of("/ma.wav")[1]["If-None-Match"] == '"v1"'
    assert loader.stats["revalidations"] == 1 and loader.stats["decodes"] == 1  # the 304 decoded nothing
    assert third is first
    await finished(loader, SourceSpec(url=url))  # the 304's max-age made it fresh again
    assert origin.hits("/ma.wav") == 2


async def test_ready_media_only_when_fresh_in_memory(loader, origin, tmp_path):
    url = origin.static("/r.wav", wav(tone(0.3)), headers={"Cache-Control": "max-age=600"})
    assert loader.ready_media(SourceSpec(url=url)) is None
    media = await finished(loader, SourceSpec(url=url))
    assert loader.ready_media(SourceSpec(url=url)) is media
    assert loader.ready_media(SourceSpec(url=url, cache=False)) is None
    (tmp_path / "media").mkdir(exist_ok=True)
    (tmp_path / "media" / "s.wav").write_bytes(wav(tone(0.2)))
    assert loader.ready_media(SourceSpec(media="s.wav")) is None
    stored = await finished(loader, SourceSpec(media="s.wav"))
    assert loader.ready_media(SourceSpec(media="s.wav")) is stored
    assert loader.ready_media(SourceSpec(media="../x")) is None


async def test_last_modified_revalidation(loader, origin):
    lm = http_date(time.time() - 3600)
    url = origin.static("/lm.wav", wav(tone(0.3)), headers={"Cache-Control": "no-cache"}, last_modified=lm)
    await finished(loader, SourceSpec(url=url))
    await finished(loader, SourceSpec(url=url))
    assert origin.hits("/lm.wav") == 2
    assert origin.headers_of("/lm.wav")[1]["If-Modified-Since"] == lm
    assert loader.stats["revalidations"] == 1 and loader.stats["decodes"] == 1


async def test_changed_resource_is_decoded_again(loader, origin):
    url = origin.static("/ch.wav", wav(tone(0.3)), headers={"Cache-Control": "max-age=0"}, etag='"a"')
    await finished(loader, SourceSpec(url=url))
    new = tone(0.4, freq=600)
    origin.static("/ch.wav", wav(new), headers={"Cache-Control": "max-age=0"}, etag='"b"')
    media = await finished(loader, SourceSpec(url=url))
    assert loader.stats["decodes"] == 2 and np.array_equal(media.pcm, new)


async def test_no_caching_headers_not_cached_unless_asked(loader, origin):
    url = origin.static("/plain.wav", wav(tone(0.3)))
    await finished(loader, SourceSpec(url=url))
    await finished(loader, SourceSpec(url=url))
    assert origin.hits("/plain.wav") == 2
    await finished(loader, SourceSpec(url=url, cache=True))
    await finished(loader, SourceSpec(url=url, cache=True))
    await finished(loader, SourceSpec(url=url))  # the forced entry now serves every play of the URL
    assert origin.hits("/plain.wav") == 3


async def test_cache_false_bypasses_and_no_store_never_stored(loader, origin):
    url = origin.static("/ns.wav", wav(tone(0.3)), headers={"Cache-Control": "no-store"})
    await finished(loader, SourceSpec(url=url, cache=True))
    await finished(loader, SourceSpec(url=url, cache=True))
    assert origin.hits("/ns.wav") == 2 and not loader.cache.entries
    url2 = origin.static("/ok.wav", wav(tone(0.3)), headers={"Cache-Control": "max-age=600"})
    await finished(loader, SourceSpec(url=url2))
    await finished(loader, SourceSpec(url=url2, cache=False))
    assert origin.hits("/ok.wav") == 2


async def test_signed_urls_share_one_entry_by_cache_id(loader, origin):
    origin.static("/signed.wav", wav(tone(0.3)))
    for sig in ("a1", "b2", "c3"):
        await finished(loader, SourceSpec(url=origin.url(f"/signed.wav?sig={sig}&exp={sig}"), cache_id="greeting"))
    assert origin.hits("/signed.wav") == 1
    assert list(loader.cache.entries) == ["id:greeting"]
    listed = loader.cache.list()[0]
    assert listed["key"] == "id:greeting" and "sig=" not in listed["source"]


async def test_disk_tier_serves_after_eviction_and_restart(tmp_path, origin):
    src = tone(1.0)
    url = origin.static("/disk.wav", wav(src), headers={"Cache-Control": "max-age=600"}, etag='"d"')
    small = MediaLoader.create(str(tmp_path), cache_bytes=1000, allow_cidrs=LOOPBACK)  # too small to hold it in memory
    try:
        await finished(small, SourceSpec(url=url))
        for _ in range(100):
            if small.cache.entries.get(f"url:{url}") and small.cache.entries[f"url:{url}"].on_disk:
                break
            await asyncio.sleep(0.01)
        media = await finished(small, SourceSpec(url=url))
        assert small.stats["disk_hits"] == 1 and np.array_equal(media.pcm, src)
    finally:
        await small.close()
    restarted = MediaLoader.create(str(tmp_path), allow_cidrs=LOOPBACK)
    try:
        media = await finished(restarted, SourceSpec(url=url))
        assert np.array_equal(media.pcm, src) and restarted.stats["disk_hits"] == 1
        assert restarted.stats["decodes"] == 0
        assert origin.hits("/disk.wav") == 1
        assert await restarted.purge(url=url)
        await finished(restarted, SourceSpec(url=url))
        assert origin.hits("/disk.wav") == 2
    finally:
        await restarted.close()


async def test_memory_lru_bounded_by_bytes(tmp_path, origin):
    one_second = 8000 * 2 + 2 * 8000  # PCM + two G.711 encodings
    ld = MediaLoader.create(str(tmp_path), cache_bytes=int(2.5 * one_second), allow_cidrs=LOOPBACK)
    try:
        for name in ("a", "b", "c"):
            url = origin.static(f"/{name}.wav", wav(tone(1.0, freq=300 + 100 * len(name))),
                                headers={"Cache-Control": "max-age=600"})
            await finished(ld, SourceSpec(url=url))
        assert ld.cache.memory_used <= 2.5 * one_second
        assert ld.cache.media(f"url:{origin.url('/a.wav')}") is None  # least recently used went first
        assert ld.cache.media(f"url:{origin.url('/c.wav')}") is not None
    finally:
        await ld.close()


async def test_streaming_starts_before_the_body_has_arrived(loader, origin):
    x = sweep(3.0, 16000)
    body = wav(np.round(x[:, 0] * 32767).astype(np.int16), 16000)
    url = origin.drip("/drip.wav", body, piece=16000, every_s=0.1)  # ~1.5 s of transfer
    started = time.monotonic()
    media = await loader.load_source(SourceSpec(url=url))
    first = time.monotonic() - started
    assert not media.complete and first < 0.5
    assert isinstance(media.encoded["PCMU"], bytearray)
    await finished(loader, SourceSpec(url=url))
    assert media.complete and len(media.encoded["PCMU"]) == len(media.pcm) == 24000
    ref = to_telephony(np.round(x * 32767).astype(np.int16), 16000, 8000)
    assert np.abs(media.pcm.astype(int) - ref.astype(int)).max() <= 1


async def test_mp3_url_with_signed_query_and_no_content_type(loader, origin):
    x = sweep(1.0, 22050)
    url = origin.static("/clip", mp3(x, 22050), content_type=None) + "?X-Amz-Signature=abc.wav"
    media = await finished(loader, SourceSpec(url=url))
    assert abs(len(media.pcm) - 8000) <= 2


async def test_endless_body_fails_too_large_after_playback_started(tmp_path, origin):
    ld = MediaLoader.create(str(tmp_path), max_fetch_bytes=1 << 20, allow_cidrs=LOOPBACK)
    try:
        url = origin.endless("/endless.wav", wav_header())  # a WAV header claiming 4 GB, then 10 GB of zeros
        media = await ld.load_source(SourceSpec(url=url))
        assert not media.complete  # it started playing at once
        err = await reason(ld, SourceSpec(url=url))
        assert err.reason == "too_large" and media.error is err
        assert len(media.pcm) <= (1 << 20) // 2  # bounded by the size limit
    finally:
        await ld.close()


async def ready_workers(loader: MediaLoader) -> None:
    loader.start_workers()
    for _ in range(500):
        if loader._workers is not None and loader._workers.available():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("decoder process not ready in 10 s")


async def test_large_sources_decode_in_a_worker_process_bit_exact(loader, origin):
    x = sweep(45.0, 16000)  # 1.4 MB: above the thread threshold
    pcm16 = np.round(x[:, 0] * 32767).astype(np.int16)
    url = origin.static("/big.wav", wav(pcm16, 16000))
    await ready_workers(loader)
    media = await finished(loader, SourceSpec(url=url))
    assert loader.stats["process_decodes"] == 1
    ref = to_telephony(pcm16, 16000, 8000)
    assert np.array_equal(media.pcm, ref)
    assert bytes(media.encoded["PCMU"]) == ulaw_encode(ref)


async def test_a_dead_decoder_process_fails_one_source_only(loader, origin):
    body = wav(tone(80.0))  # 1.28 MB: above the thread threshold
    url = origin.drip("/slow-big.wav", body, piece=64_000, every_s=0.05)
    await ready_workers(loader)
    media = await loader.load_source(SourceSpec(url=url))
    assert loader.stats["process_decodes"] == 1
    [worker] = loader._workers._workers
    worker.proc.kill()
    err = await reason(loader, SourceSpec(url=url))
    assert err.reason == "decode_error" and "decoder process died" in err.message and media.error is err
    again = await finished(loader, SourceSpec(url=origin.static("/ok.wav", wav(tone(80.0)))))
    assert len(again.pcm) == 80 * 8000


# -- failure reasons ------------------------------------------------------------------------------
async def test_not_audio_message(loader, origin):
    body = b"<html><body>" + b"x" * 486 + b"</body></html>"
    assert len(body) == 512
    err = await reason(loader, SourceSpec(url=origin.static("/page.wav", body, content_type="text/html")))
    assert err.reason == "not_audio" and err.message == "text/html, 512 bytes, not audio"
    err = await reason(loader, SourceSpec(url=origin.static("/404.mp3", HTML_PAGE, content_type="audio/mpeg")))
    assert err.reason == "not_audio" and "text/html" in err.message


async def test_failure_reasons(tmp_path, origin):
    ld = MediaLoader.create(str(tmp_path), max_fetch_bytes=1 << 20, max_audio_seconds=2.0, fetch_timeout_s=1.0,
                     allow_cidrs=LOOPBACK)
    try:
        cases = {
            "decode_error": origin.static("/random.mp3", np.random.default_rng(1).integers(0, 256, 30_000)
                                          .astype(np.uint8).tobytes(), content_type="audio/mpeg"),
            "truncated": origin.truncated("/cut.wav", wav(tone(1.0)), send=5000),
            "too_long": origin.static("/long.wav", wav(tone(3.0))),
            "fetch_timeout": origin.drip("/drip.wav", wav(tone(1.0)), piece=200, every_s=0.05),
            "http_404": origin.url("/missing.wav"),
            "http_500": origin.status("/boom.wav", 500),
            "too_many_redirects": origin.redirect("/loop", "/loop"),
            "forbidden_address": origin.redirect("/meta", "http://169.254.169.254/latest/meta-data/"),
            "unsupported_format": origin.static("/adpcm.wav", hostile()["wav_adpcm"][0]),  # Ogg plays now
        }
        results = await asyncio.gather(*(reason(ld, SourceSpec(url=u)) for u in cases.values()))
        assert {k: e.reason for k, e in zip(cases, results, strict=True)} == {k: k for k in cases}
        assert all(e.message for e in results)
    finally:
        await ld.close()


async def test_inline_content_and_stored_media(loader, tmp_path):
    src = tone(0.5)
    media = await finished(loader, SourceSpec(content=wav(src), audio_type="wav"))
    assert np.array_equal(media.pcm, src)
    err = await reason(loader, SourceSpec(content=b"hello there, not audio at all"))
    assert err.reason == "not_audio"
    (tmp_path / "media").mkdir(exist_ok=True)
    (tmp_path / "media" / "hi.wav").write_bytes(wav(src))
    a = await finished(loader, SourceSpec(media="hi.wav"))
    b = await finished(loader, SourceSpec(media="hi.wav"))
    assert a is b and loader.stats["decodes"] == 2  # one for the content, one for the stored file
    err = await reason(loader, SourceSpec(media="nope.wav"))
    assert err.reason == "media_not_found"
    err = await reason(loader, SourceSpec(media="../secret"))
    assert err.reason == "invalid_media_name"
