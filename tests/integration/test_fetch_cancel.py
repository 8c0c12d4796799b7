"""Stopping a playback (or hanging up) cancels a download nobody else wants: real SIPp calls, the real
HTTP API, and a real aiohttp origin that trickles the body and records how much it sent and when the
client went away.  Shared downloads, explicit prefetches and worker-process decodes included."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mediasrv.rtp.probe import open_capture
from tests.support.audio import expected_payload
from tests.support.http_origin import Origin, tone, wav
from tests.support.httpapi import req
from tests.support.server import Hooks, start_server, wait_until
from tests.support.sipp import answered_calls, sipp_play_args, start_sipp

pytestmark = pytest.mark.integration

DISCONNECT_BOUND_S = 2.0  # generous: the close is seen within one origin poll (20 ms) in practice


@pytest.fixture
async def origin():
    o = await Origin().start()
    yield o
    await o.close()


def ended_events(webhooks: Hooks) -> dict[str, dict]:
    return {e["data"]["playback_id"]: e["data"] for e in webhooks.events if e["type"] == "playback.ended"}


async def wait_started(webhooks: Hooks, playback_id: str) -> None:
    await webhooks.wait_for(lambda e: e["type"] == "playback.started" and e["data"]["playback_id"] == playback_id,
                            timeout=10)


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def test_stop_and_hangup_cancel_the_download_and_a_new_play_fetches_afresh(tmp_path, webhooks, origin):
    """Stop → the origin sees the connection close at once, having sent a fraction of the body; the
    play asked for ``cache: true``, which does not keep a download alive, so nothing is cached.  A new
    play of the same URL fetches afresh and plays from the start; the caller hanging up cancels it."""
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    loader = r.server.media.loader
    capture = await open_capture()
    loop = asyncio.get_running_loop()
    src = tone(60.0, freq=410, seed=11)
    body = wav(src)  # 960 KB: under 1 MB, decoded in a thread
    url = origin.trickle("/long.wav", body, piece=8000, every_s=0.1)  # 80 KB/s: 12 s for the whole body
    try:
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=5000))
        [call] = await answered_calls(r, 1)
        status, pb1 = await req("POST", f"{r.http}/v1/calls/{call.call_id}/playbacks",
                                json={"url": url, "cache": True})
        assert status == 201, pb1
        await wait_started(webhooks, pb1["id"])
        await asyncio.sleep(0.8)
        stopped_at = loop.time()
        status, res = await req("DELETE", f"{r.http}/v1/playbacks/{pb1['id']}")
        assert status == 200 and res["stopped_now"] is True, res
        first = origin.transfers["/long.wav"][0]
        await wait_until(lambda: first.closed_at is not None, 5, "the origin to see the first download close")
        assert first.closed_at is not None and first.closed_at - stopped_at < DISCONNECT_BOUND_S
        assert not first.finished and first.sent < len(body) // 4, (first.sent, len(body))
        assert loader.stats["cancelled"] == 1 and loader.stats["failures"] == 0
        status, listing = await req("GET", f"{r.http}/v1/media-cache")
        assert listing["entries"] == [], "a cancelled download leaves nothing in the cache"

        status, pb2 = await req("POST", f"{r.http}/v1/calls/{call.call_id}/playbacks", json={"url": url})
        assert status == 201, pb2
        await wait_started(webhooks, pb2["id"])
        assert len(origin.transfers["/long.wav"]) == 2, "the new play started a fresh fetch"
        code, out = await sipp  # SIPp hangs up at 5 s, mid-download
        assert code == 0, out[-3000:]
        hung_up_at = loop.time()
        second = origin.transfers["/long.wav"][1]
        await wait_until(lambda: second.closed_at is not None, 5, "the origin to see the second download close")
        assert second.closed_at is not None and second.closed_at - hung_up_at < DISCONNECT_BOUND_S
        assert not second.finished and second.sent < len(body) // 2, (second.sent, len(body))
        await webhooks.wait_for(lambda e: e["data"].get("playback_id") == pb2["id"] and e["type"] == "playback.ended")
        assert loader.stats["cancelled"] == 2 and loader.stats["failures"] == 0
    finally:
        capture.close()
        await r.server.stop()
    ended = ended_events(webhooks)
    assert (ended[pb1["id"]]["status"], ended[pb1["id"]]["stopped_by"]) == ("stopped", "api")
    assert ended[pb2["id"]]["status"] == "call_hangup"
    assert not [e for e in ended.values() if e["status"] == "failed"]
    head = expected_payload(src[:4000], "PCMU")  # the first 0.5 s, 25 whole packets
    payload = capture.payload()
    at = payload.find(head)
    assert at >= 0 and payload.find(head, at + 1) > at, "both plays started from the first sample"


async def test_worker_process_decode_is_stopped_with_the_download(tmp_path, webhooks, origin):
    """A body over 1 MB decodes in a worker process: stop-all closes the download and the worker drops
    the stream (its own count), spends no more CPU on it, and serves the next play; an API hangup
    cancels that one too."""
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    loader = r.server.media.loader
    workers = loader._workers
    assert workers is not None
    capture = await open_capture()
    loop = asyncio.get_running_loop()
    body = wav(tone(90.0, freq=300, seed=12))  # 1.44 MB: a worker-process decode
    url = origin.trickle("/big.wav", body, piece=16000, every_s=0.05)  # 320 KB/s: 4.5 s for all of it
    try:
        await wait_until(workers.available, 10, "a ready decoder process")
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=8000))
        [call] = await answered_calls(r, 1)
        status, pb1 = await req("POST", f"{r.http}/v1/calls/{call.call_id}/playbacks", json={"url": url})
        assert status == 201, pb1
        await wait_started(webhooks, pb1["id"])
        assert loader.stats["process_decodes"] == 1
        assert await workers.open_streams() == 1
        await asyncio.sleep(0.5)
        stopped_at = loop.time()
        status, res = await req("DELETE", f"{r.http}/v1/calls/{call.call_id}/playbacks", params={"stop": "all"})
        assert status == 200 and [p["id"] for p in res["stopped"]] == [pb1["id"]], res
        first = origin.transfers["/big.wav"][0]
        await wait_until(lambda: first.closed_at is not None, 5, "the origin to see the download close")
        assert first.closed_at is not None and first.closed_at - stopped_at < DISCONNECT_BOUND_S
        assert not first.finished and first.sent < len(body) // 2, (first.sent, len(body))
        await wait_until(lambda: not loader._inflight, 5, "the single-flight entry to go")
        assert await workers.open_streams() == 0, "the worker dropped the cancelled stream"
        [pid] = workers.pids()
        before = cpu_ticks(pid)
        await asyncio.sleep(1.0)
        assert cpu_ticks(pid) - before <= 2, "the worker spends no CPU once the stream is cancelled"

        status, pb2 = await req("POST", f"{r.http}/v1/calls/{call.call_id}/playbacks", json={"url": url})
        assert status == 201, pb2
        await wait_started(webhooks, pb2["id"])
        assert loader.stats["process_decodes"] == 2 and workers.pids() == [pid], "the same worker decodes again"
        await asyncio.sleep(0.3)
        hangup_at = loop.time()
        status, _ = await req("DELETE", f"{r.http}/v1/calls/{call.call_id}")
        assert status in (200, 202, 204)
        second = origin.transfers["/big.wav"][1]
        await wait_until(lambda: second.closed_at is not None, 5, "the origin to see the second download close")
        assert second.closed_at is not None and second.closed_at - hangup_at < DISCONNECT_BOUND_S
        await wait_until(lambda: not loader._inflight, 5, "the single-flight entry to go")
        assert await workers.open_streams() == 0
        await sipp  # uac_play.xml expects to send the BYE itself: our hangup makes it count a failed call
    finally:
        capture.close()
        await r.server.stop()
    ended = ended_events(webhooks)
    assert ended[pb1["id"]]["status"] == "stopped" and ended[pb2["id"]]["status"] == "call_hangup"
    assert loader.stats["cancelled"] == 2 and loader.stats["failures"] == 0


async def test_shared_download_survives_one_stop_and_the_other_call_hears_every_sample(tmp_path, webhooks, origin):
    """Two calls play one URL (one download): one stops, the download goes on to the end and the other
    call's RTP payload is the G.711 of the source, bit-exact."""
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    loader = r.server.media.loader
    capture = await open_capture()
    src = tone(3.0, freq=520, seed=21)
    body = wav(src)  # 48 KB at 40 KB/s: the download outlives the stop
    url = origin.trickle("/shared.wav", body, piece=4000, every_s=0.1)
    try:
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=6000, calls=2, rate=50))
        a, b = await answered_calls(r, 2)
        status, pa = await req("POST", f"{r.http}/v1/calls/{a.call_id}/playbacks", json={"url": url})
        assert status == 201, pa
        status, pb = await req("POST", f"{r.http}/v1/calls/{b.call_id}/playbacks", json={"url": url})
        assert status == 201, pb
        assert loader.stats["coalesced"] == 1
        await wait_started(webhooks, pa["id"])
        await wait_started(webhooks, pb["id"])
        await asyncio.sleep(0.3)
        status, res = await req("DELETE", f"{r.http}/v1/playbacks/{pa['id']}")
        assert status == 200 and res["stopped_now"] is True
        await webhooks.wait_for(lambda e: e["type"] == "playback.ended" and e["data"]["playback_id"] == pb["id"],
                                timeout=10)
        ssrc_b = r.server.media.leg_stats(b.call_id)["ssrc"]
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    [transfer] = origin.transfers["/shared.wav"]
    assert transfer.finished and transfer.sent == len(body) and transfer.closed_at is None
    ended = ended_events(webhooks)
    assert ended[pa["id"]]["status"] == "stopped"
    assert ended[pb["id"]]["status"] == "completed" and ended[pb["id"]]["ms_played"] == 3000
    assert loader.stats["cancelled"] == 0 and loader.stats["failures"] == 0
    payload_b = capture.payload(ssrc_b)
    assert expected_payload(src, "PCMU") in payload_b, "the other call heard the source bit-exact"


async def test_prefetch_keeps_the_download_when_the_play_sharing_it_stops(tmp_path, webhooks, origin):
    """An explicit prefetch wants the result: a play that shared its download and stopped does not
    cancel it; the prefetch answers ready and the next play is a cache hit (no new request)."""
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    loader = r.server.media.loader
    capture = await open_capture()
    body = wav(tone(4.0, freq=600, seed=31))  # 64 KB at 40 KB/s
    url = origin.trickle("/pre.wav", body, piece=4000, every_s=0.1)
    try:
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=5000))
        [call] = await answered_calls(r, 1)
        prefetch = asyncio.create_task(req("POST", f"{r.http}/v1/media-cache/prefetch", json={"url": url}))
        await wait_until(lambda: origin.hits("/pre.wav") == 1, 5, "the prefetch to reach the origin")
        status, p1 = await req("POST", f"{r.http}/v1/calls/{call.call_id}/playbacks", json={"url": url})
        assert status == 201, p1
        assert loader.stats["coalesced"] == 1, "the play shares the prefetch's download"
        await wait_started(webhooks, p1["id"])
        status, res = await req("DELETE", f"{r.http}/v1/playbacks/{p1['id']}")
        assert status == 200 and res["stopped_now"] is True
        status, ready = await asyncio.wait_for(prefetch, 10)
        assert status == 200 and ready["status"] == "ready" and ready["cached"] is True, ready
        assert ready["duration_ms"] == 4000
        status, p2 = await req("POST", f"{r.http}/v1/calls/{call.call_id}/playbacks", json={"url": url})
        assert status == 201
        await wait_started(webhooks, p2["id"])
        status, _ = await req("DELETE", f"{r.http}/v1/playbacks/{p2['id']}")
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    [transfer] = origin.transfers["/pre.wav"]
    assert transfer.finished and transfer.sent == len(body)
    assert origin.hits("/pre.wav") == 1, "the second play came from the cache"
    assert loader.stats["cancelled"] == 0 and loader.stats["failures"] == 0
    ended = ended_events(webhooks)
    assert ended[p1["id"]]["status"] == "stopped" and ended[p2["id"]]["status"] == "stopped"
