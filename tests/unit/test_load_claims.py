"""Claims on in-flight loads against a real trickling origin: the last release cancels (connection
closed, partial media freed at once, single-flight entry gone), a shared or kept load goes on."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import numpy as np
import pytest

from mediasrv.content.loader import MediaLoader
from mediasrv.content.source import Media
from mediasrv.media.player import SourceSpec
from tests.support.http_origin import Origin, tone, wav

LOOPBACK = ["127.0.0.0/8", "::1/128"]
SRC = tone(20.0, freq=350, seed=4)
BODY = wav(SRC)  # 320 KB at 40 KB/s: 8 s to download whole


@pytest.fixture
async def origin():
    o = await Origin().start()
    yield o
    await o.close()


@pytest.fixture
async def loader(tmp_path: Path):
    ld = MediaLoader.create(str(tmp_path), allow_cidrs=LOOPBACK, decode_processes=0)
    yield ld
    await ld.close()


async def until(pred, timeout: float = 5.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < end, "condition not reached"
        await asyncio.sleep(0.01)


async def complete(media: Media) -> Media:
    while not media.complete:
        assert media.error is None, media.error
        await asyncio.sleep(0.02)
    return media


async def test_last_release_cancels_and_frees_the_partial_media_without_the_cyclic_gc(loader, origin):
    url = origin.trickle("/a.wav", BODY, piece=4000, every_s=0.1)
    claim = loader.claim(SourceSpec(url=url))
    media = await asyncio.wait_for(claim.future, 5)
    assert not media.complete and len(media.pcm) >= 800
    alive = weakref.ref(media)
    del media
    gc.disable()  # the partial media must go by reference counting, not wait for a GC pass
    try:
        claim.release()
        claim.release()  # idempotent
        del claim  # (the playback's claims go with it)
        [t] = origin.transfers["/a.wav"]
        await until(lambda: t.closed_at is not None)
        await until(lambda: alive() is None, 2.0)
    finally:
        gc.enable()
    assert t.sent < len(BODY) // 4 and not t.finished
    assert loader._inflight == {}
    assert loader.stats["cancelled"] == 1 and loader.stats["failures"] == 0

    again = loader.claim(SourceSpec(url=url))  # a fresh download, not the cancelled one
    await asyncio.wait_for(again.future, 5)
    assert len(origin.transfers["/a.wav"]) == 2
    again.release()


async def test_a_shared_load_goes_on_when_one_claim_goes(loader, origin):
    url = origin.trickle("/b.wav", BODY, piece=32000, every_s=0.05)
    a, b = loader.claim(SourceSpec(url=url)), loader.claim(SourceSpec(url=url))
    assert loader.stats["coalesced"] == 1
    extra = b.another()  # the same source on a second leg
    await asyncio.wait_for(a.future, 5)
    a.release()
    b.release()
    media = await asyncio.wait_for(complete(await extra.future), 10)
    assert np.array_equal(media.pcm, SRC)
    [t] = origin.transfers["/b.wav"]
    await until(lambda: t.finished)  # the origin's last sleep after the last piece
    assert t.sent == len(BODY) and t.closed_at is None
    extra.release()  # after completion: nothing to cancel
    assert loader.stats["cancelled"] == 0


async def test_prefetch_and_load_keep_a_load_cache_true_does_not(loader, origin):
    kept = origin.trickle("/c.wav", BODY, piece=32000, every_s=0.05)
    prefetch = asyncio.ensure_future(loader.prefetch(SourceSpec(url=kept, cache=True)))
    await asyncio.sleep(0)
    claim = loader.claim(SourceSpec(url=kept))
    await asyncio.wait_for(claim.future, 5)
    claim.release()
    media, entry = await asyncio.wait_for(prefetch, 10)
    assert media.complete and entry is not None and np.array_equal(media.pcm, SRC)

    other = origin.trickle("/d.wav", BODY, piece=32000, every_s=0.05)
    future = loader.load_source(SourceSpec(url=other))  # an in-process caller that holds no claim
    claim = loader.claim(SourceSpec(url=other))
    await asyncio.wait_for(claim.future, 5)
    claim.release()
    assert np.array_equal((await complete(await future)).pcm, SRC)
    assert loader.stats["cancelled"] == 0

    cached = origin.trickle("/e.wav", BODY, piece=4000, every_s=0.1)
    claim = loader.claim(SourceSpec(url=cached, cache=True, cache_id="e"))
    await asyncio.wait_for(claim.future, 5)
    claim.release()
    [t] = origin.transfers["/e.wav"]
    await until(lambda: t.closed_at is not None)
    assert loader.stats["cancelled"] == 1 and loader.cache.get("id:e") is None


async def test_release_before_the_load_ran_sends_nothing(loader, origin):
    url = origin.trickle("/f.wav", BODY, piece=4000, every_s=0.1)
    claim = loader.claim(SourceSpec(url=url))
    claim.release()
    assert claim.future.cancelled()
    await asyncio.sleep(0.3)
    assert origin.hits("/f.wav") == 0 and loader._inflight == {} and not loader._tasks
    assert loader.stats["failures"] == 0


async def test_many_fast_downloads_all_stop_at_once(loader, origin):
    """Fast bodies keep reads completing while the cancels land (on 3.11 ``wait_for`` can swallow a
    cancel then): every load still stops, its connection closes and its partial media goes."""
    body = wav(tone(300.0, freq=250, seed=6))  # 4.8 MB each at ~3 MB/s: none finishes
    urls = [origin.trickle(f"/fast{i}.wav", body, piece=64000, every_s=0.02) for i in range(20)]
    claims = [loader.claim(SourceSpec(url=u)) for u in urls]
    alive = [weakref.ref(await asyncio.wait_for(c.future, 5)) for c in claims]
    await asyncio.sleep(1.0)
    gc.disable()
    try:
        for c in claims:
            c.release()
        del claims, c
        await until(lambda: not loader._tasks, 3.0)
        await until(lambda: all(a() is None for a in alive), 2.0)
    finally:
        gc.enable()
    transfers = [origin.transfers[f"/fast{i}.wav"][0] for i in range(20)]
    await until(lambda: all(t.closed_at is not None for t in transfers), 2.0)
    assert not any(t.finished for t in transfers)
    assert loader.stats["cancelled"] == 20 and loader.stats["failures"] == 0
