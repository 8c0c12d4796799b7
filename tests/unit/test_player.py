"""Player FIFO: queue order, loops, silence padding, stop current/all/by id, failures."""

import asyncio

import numpy as np

from mediacodecs.codec import PCMU
from mediacodecs.g711 import ulaw_encode
from mediasrv.content.source import Media, SourceError
from mediasrv.media.player import Player, PlayRequest, new_playback


def media(n: int, seed: int = 0) -> Media:
    pcm = np.random.default_rng(seed).integers(-20000, 20000, n).astype(np.int16)
    return Media("x", pcm, {"PCMU": ulaw_encode(pcm)})


async def ready(value) -> asyncio.Future:
    fut = asyncio.get_running_loop().create_future()
    if isinstance(value, Exception):
        fut.set_exception(value)
    else:
        fut.set_result(value)
    return fut


def drain(player: Player, packets: int) -> list:
    return [player.next_payload(160, seq, seq * 160) for seq in range(packets)]


async def test_queue_loop_and_padding():
    events: list = []
    player = Player(PCMU, lambda t, pb: events.append((t, pb.id)))
    m1, m2 = media(400, 1), media(160, 2)
    p1 = new_playback("c", PlayRequest(url="u1", loop=2), await ready(m1))
    p2 = new_playback("c", PlayRequest(url="u2"), await ready(m2))
    player.enqueue(p1)
    player.enqueue(p2)
    out = drain(player, 8)
    padded = m1.encoded["PCMU"] + b"\xff" * 80
    assert b"".join(out[:6]) == padded * 2
    assert out[6] == m2.encoded["PCMU"] and out[7] is None
    assert [t for t, _ in events] == ["playback.started", "playback.ended"] * 2
    assert p1.state == "completed" and p1.ms_played == 100 and p1.last_seq == 5
    assert p2.last_seq == 6 and p2.last_ts == 960


async def test_stop_current_all_and_by_id_race():
    events: list = []
    player = Player(PCMU, lambda t, pb: events.append((t, pb.id, pb.state)))
    pbs = [new_playback("c", PlayRequest(url=f"u{i}", loop=None), await ready(media(1600, i))) for i in range(3)]
    for pb in pbs:
        player.enqueue(pb)
    drain(player, 3)
    assert player.stop("current", "api") == [pbs[0]]
    assert pbs[0].state == "stopped" and pbs[0].stopped_by == "api"
    drain(player, 1)
    assert player.current is pbs[1]
    # a stale stop for the already-stopped playback is a no-op, never applied to the next one
    assert player.stop_one(pbs[0], "api") is False and player.current is pbs[1]
    assert player.stop_one(pbs[2], "api") is True and pbs[2].state == "stopped"  # queued one removed
    assert player.stop("all", "api") == [pbs[1]]
    assert drain(player, 2) == [None, None]


async def test_failed_source_then_next_plays_and_loading_waits():
    events: list = []
    player = Player(PCMU, lambda t, pb: events.append((t, pb.state, pb.reason)))
    bad = new_playback("c", PlayRequest(url="bad"), await ready(SourceError("http_404", "HTTP 404")))
    loading = asyncio.get_running_loop().create_future()
    later = new_playback("c", PlayRequest(url="slow"), loading)
    player.enqueue(bad)
    player.enqueue(later)
    assert player.next_payload(160, 0, 0) is None  # bad failed, slow one still loading → silence
    assert events == [("playback.ended", "failed", "http_404")]
    loading.set_result(media(160))
    assert player.next_payload(160, 1, 160) is not None
    player.end_all()
    assert later.state == "completed"
