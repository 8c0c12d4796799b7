"""MediaPlane end to end on loopback: WAVs served by a real aiohttp server, RTP read by an independent probe."""

from __future__ import annotations

import asyncio
import io
import socket
import struct

import numpy as np
import pytest
import soundfile
from aiohttp import web
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket

from mediacodecs.g711 import encode, silence_byte
from mediasrv.media import PlayRequest
from mediasrv.media.clock import MediaClock
from mediasrv.media.player import SourceSpec
from tests.support.media_plane import Plane

SOURCE = np.random.default_rng(7).integers(-12000, 12000, 4100).astype(np.int16)  # 25.6 packets


def wav_bytes(pcm: np.ndarray, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, pcm, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class AudioServer:
    """A real HTTP server for audio URLs, counting requests per path."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.routes: dict[str, tuple[int, str, bytes]] = {}
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        status, ctype, body = self.routes.get(request.path, (404, "text/plain", b"not found"))
        if request.path == "/slow.wav":
            await asyncio.sleep(0.3)
        return web.Response(status=status, body=body, content_type=ctype)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"


@pytest.fixture
async def server():
    srv = AudioServer()
    srv.routes["/a.wav"] = (200, "audio/wav", wav_bytes(SOURCE))
    srv.routes["/slow.wav"] = srv.routes["/a.wav"]
    stereo = np.stack([SOURCE, SOURCE], axis=1)
    srv.routes["/stereo44.wav"] = (200, "audio/wav", wav_bytes(np.repeat(stereo, 2, axis=0), 16000))
    srv.routes["/page.html"] = (200, "text/html", b"<html>" + b"x" * 506)
    srv.routes["/broken.wav"] = (200, "audio/wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(8))
    srv.routes["/ogg.wav"] = (200, "audio/ogg", b"OggS" + bytes(200))
    await srv.start()
    yield srv
    await srv.runner.cleanup()  # type: ignore[union-attr]


@pytest.fixture
async def plane(tmp_path):
    p = Plane(data_dir=str(tmp_path))
    await p.plane.start()
    yield p
    await p.plane.stop()
    for cap in p.captures:
        cap.close()
    for sock in p.rtcp_socks.values():
        sock.close()


@pytest.fixture
async def fake_time_plane(tmp_path):
    """A plane on fake time: its clock is never started, the test moves it (Plane.advance)."""
    p = Plane(clock=MediaClock(use_timerfd=False), data_dir=str(tmp_path))
    yield p
    await p.plane.stop()
    for cap in p.captures:
        cap.close()
    for sock in p.rtcp_socks.values():
        sock.close()


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
async def test_url_playback_is_bit_exact_and_continuous(plane, server, codec):
    call, cap = await plane.call(codec)
    await asyncio.sleep(0.1)  # some silence first
    pb = plane.plane.play(call.call_id, PlayRequest(url=server.base + "/a.wav"))[0]
    assert pb.state == "queued" and plane.plane.playbacks_for(call.call_id)[1] == [pb]
    ended = await plane.wait_ended(pb.id)
    await asyncio.sleep(0.1)  # and silence after
    # what the leg had sent at this instant; its last packets may still be on their way to the capture
    stats = dict(plane.plane.leg_stats(call.call_id))
    for _ in range(200):
        if len(cap.packets) >= stats["packets_sent"]:
            break
        await asyncio.sleep(0.005)
    packets = list(cap.packets)[: stats["packets_sent"]]
    assert len({p.ssrc for p in packets}) == 1
    assert [i for i, p in enumerate(packets) if p.marker] == [0]
    for a, b in zip(packets, packets[1:]):
        assert b.seq == (a.seq + 1) & 0xFFFF and b.ts == (a.ts + 160) & 0xFFFFFFFF
    assert all(len(p.payload) == 160 for p in packets)
    last = next(i for i, p in enumerate(packets) if p.seq == ended["last_seq"])
    assert packets[last].ts == ended["last_ts"]
    audio = b"".join(p.payload for p in packets[last - 25 : last + 1])
    pad = bytes([silence_byte(codec)]) * (26 * 160 - len(SOURCE))
    assert audio == encode(codec, SOURCE) + pad  # exactly what was encoded, then silence padding
    silence = bytes([silence_byte(codec)]) * 160
    assert packets[last - 26].payload == silence and packets[last + 1].payload == silence
    types = [(t, d["playback_id"]) for t, _, d in plane.events]
    assert types == [("playback.started", pb.id), ("playback.ended", pb.id)]
    assert ended["status"] == "completed" and ended["ms_played"] == 512 and ended["reason"] is None
    assert ended["source"] == server.base + "/a.wav" and ended["stopped_by"] is None
    assert pb.to_dict()["state"] == "completed" and plane.plane.get_playback(pb.id) is pb
    assert stats["packets_sent"] == len(packets) and stats["bytes_sent"] == 160 * len(packets)


async def test_failures_end_with_reasons_and_the_call_keeps_silence(plane, server):
    call, cap = await plane.call()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there
    cases = {
        "/missing.wav": "http_404",
        "/page.html": "not_audio",
        "/broken.wav": "decode_error",
        "/ogg.wav": "decode_error",  # Ogg plays now; an Ogg magic followed by zeros is no stream
    }
    pbs = {path: plane.plane.play(call.call_id, PlayRequest(url=server.base + path))[0] for path in cases}
    unreachable = plane.plane.play(call.call_id, PlayRequest(url=f"http://127.0.0.1:{dead_port}/x.wav"))[0]
    bad_name = plane.plane.play(call.call_id, PlayRequest(media="../etc/passwd"))[0]
    missing = plane.plane.play(call.call_id, PlayRequest(media="nope.wav"))[0]
    for path, reason in cases.items():
        d = await plane.wait_ended(pbs[path].id)
        assert (d["status"], d["reason"]) == ("failed", reason), (path, d)
    assert plane.ended(pbs["/page.html"].id)["message"] == "text/html, 512 bytes, not audio"
    assert (await plane.wait_ended(unreachable.id))["reason"] == "unreachable"
    assert (await plane.wait_ended(bad_name.id))["reason"] == "invalid_media_name"
    assert (await plane.wait_ended(missing.id))["reason"] == "media_not_found"
    n = len(cap.packets)
    await asyncio.sleep(0.1)
    assert len(cap.packets) >= n + 3 and cap.packets[-1].payload == b"\xff" * 160  # silence goes on
    assert not any(t == "playback.started" for t, _, _ in plane.events)
    assert plane.plane.metrics()["playbacks_by_status"] == {"failed": 7}


async def test_single_flight_stereo_resampled_and_cache(plane, server):
    (c1, _), (c2, _) = await plane.call(), await plane.call()
    url = server.base + "/stereo44.wav"
    cached = [SourceSpec(url=url, cache=True)]  # no caching headers: cached only on request (issue 4)
    p1 = plane.plane.play(c1.call_id, PlayRequest(sources=cached))[0]
    p2 = plane.plane.play(c2.call_id, PlayRequest(sources=cached))[0]
    d1, d2 = await plane.wait_ended(p1.id), await plane.wait_ended(p2.id)
    assert server.hits[url[len(server.base):]] == 1  # one fetch shared by both plays
    assert d1["status"] == d2["status"] == "completed" and abs(d1["ms_played"] - 512) <= 2
    p3 = plane.plane.play(c1.call_id, PlayRequest(sources=cached))[0]
    await plane.wait_ended(p3.id)
    assert server.hits["/stereo44.wav"] == 1  # served from the cache


async def test_loop_stop_by_id_race_and_hangup(fake_time_plane, server):
    plane = fake_time_plane
    call, cap = await plane.call()
    url = server.base + "/a.wav"
    looping = plane.plane.play(call.call_id, PlayRequest(url=url, loop=None))[0]
    queued = plane.plane.play(call.call_id, PlayRequest(url=url, loop=3))[0]
    last = plane.plane.play(call.call_id, PlayRequest(url=url))[0]
    await plane.loaded(looping)  # fetched and decoded: off the clock, which has not moved
    assert looping.state == "queued" and looping.ms_played == 0
    plane.advance(1300)  # more than two passes of the file
    assert looping.state == "playing" and looping.ms_played > 1000
    assert plane.plane.stop_playback(looping.id) is True
    assert plane.plane.stop_playback(looping.id) is False  # stale: never applied to the next one
    assert queued.state in ("queued", "playing") and plane.plane.get_playback(looping.id).stopped_by == "api"
    plane.advance(100)
    current, waiting = plane.plane.playbacks_for(call.call_id)
    assert current is queued and waiting == [last]
    plane.plane.release(call)
    ends = [(d["playback_id"], d["status"]) for t, _, d in plane.events if t == "playback.ended"]
    assert ends == [(looping.id, "stopped"), (queued.id, "call_hangup"), (last.id, "call_hangup")]
    assert plane.plane.stop_playback(last.id) is False
    with pytest.raises(KeyError):
        plane.plane.play(call.call_id, PlayRequest(url=url))[0]


async def test_stop_current_and_all(plane, server):
    call, _ = await plane.call()
    url = server.base + "/a.wav"
    pbs = [plane.plane.play(call.call_id, PlayRequest(url=url, loop=None))[0] for _ in range(3)]
    await asyncio.sleep(0.2)
    assert plane.plane.stop_playbacks(call.call_id, "current", by="test") == [pbs[0]]
    await asyncio.sleep(0.05)
    assert pbs[1].state == "playing"
    assert plane.plane.stop_playbacks(call.call_id, "all") == pbs[1:]
    assert [p.state for p in pbs] == ["stopped"] * 3 and pbs[0].stopped_by == "test"


async def test_inbound_rtp_rtcp_accounting_and_malformed(plane):
    call, cap = await plane.call()
    port = call.local_rtp[1]
    peer = cap.sock  # the negotiated remote address
    for seq in range(5):
        peer.sendto(struct.pack("!BBHII", 0x80, 0, 1000 + seq, seq * 160, 42) + bytes(160), ("127.0.0.1", port))
    peer.sendto(b"\x40\x00junk", ("127.0.0.1", port))  # version 1
    ssrc = plane.plane.leg_stats(call.call_id)["ssrc"]
    rr = RtcpRrPacket(ssrc=42, reports=[RtcpReceiverInfo(ssrc=ssrc, fraction_lost=64, packets_lost=3,
                                                         highest_sequence=1, jitter=77, lsr=0, dlsr=0)])
    rtcp = plane.rtcp_socks[cap.port]
    rtcp.sendto(bytes(rr), ("127.0.0.1", port + 1))
    await asyncio.sleep(0.1)
    stats = plane.plane.leg_stats(call.call_id)
    assert stats["packets_received"] == 5 and stats["bytes_received"] == 800
    assert stats["malformed"] == 1 and stats["dropped_foreign"] == 0
    assert stats["rtcp"]["fraction_lost"] == 0.25 and stats["rtcp"]["jitter"] == 77
    assert stats["rtcp"]["packets_lost"] == 3
    assert plane.plane.metrics()["packets_received"] == 5


async def test_rtp_timeout_calls_back_once(tmp_path):
    # Generous margins: the housekeeping task checks every timeout/4, and a loaded CI machine
    # can delay it by a few hundred ms; the assertions are about "reset by a packet" and "once".
    p = Plane(data_dir=str(tmp_path), rtp_timeout_s=1.0)
    await p.plane.start()
    try:
        call, cap = await p.call()
        await asyncio.sleep(0.6)
        cap.sock.sendto(struct.pack("!BBHII", 0x80, 0, 1, 0, 42) + bytes(160), call.local_rtp)
        await asyncio.sleep(0.6)
        assert p.timeouts == []  # 1.2 s after the start, but only 0.6 s after the inbound packet
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while not p.timeouts and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert p.timeouts == [call.call_id]
        await asyncio.sleep(1.0)
        assert p.timeouts == [call.call_id]
    finally:
        await p.plane.stop()
        for cap in p.captures:
            cap.close()


async def test_rtcp_sender_reports_are_sent(tmp_path):
    p = Plane(data_dir=str(tmp_path), rtcp_interval_s=0.2)
    await p.plane.start()
    try:
        call, cap = await p.call()
        rtcp = p.rtcp_socks[cap.port]
        await asyncio.sleep(0.5)
        reports = []
        while True:
            try:
                reports.append(rtcp.recv(1500))
            except BlockingIOError:
                break
        assert len(reports) >= 1 and all(r[1] == 200 for r in reports)
        ssrc, packet_count = struct.unpack_from("!I", reports[-1], 4)[0], struct.unpack_from("!I", reports[-1], 20)[0]
        assert ssrc == cap.packets[0].ssrc and 0 < packet_count <= len(cap.packets)
    finally:
        await p.plane.stop()
        for cap in p.captures:
            cap.close()
        for sock in p.rtcp_socks.values():
            sock.close()
