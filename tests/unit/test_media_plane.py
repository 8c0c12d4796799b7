"""MediaPlane on loopback sockets: ptime, hold/resume, silence off, RTCP BYE, foreign packets dropped."""

import asyncio
import dataclasses
import socket

import numpy as np

from mediacodecs.codec import get
from mediacodecs.g711 import alaw_encode
from mediasrv.calls.registry import Call, Direction, NegotiatedMedia
from mediasrv.demo import free_port_pair
from mediasrv.media import MediaParts, MediaPlane, MediaSettings, PlayRequest
from mediasrv.media.clock import MediaClock
from mediasrv.rtp.probe import analyse, bind_capture_with_rtcp, open_capture
from tests.support.media_plane import advance, loaded


async def _plane(tmp_path, **kw) -> tuple[MediaPlane, list]:
    lo = free_port_pair()
    events: list = []
    plane = MediaPlane(MediaSettings(rtp_port_lo=lo, rtp_port_hi=lo + 20, data_dir=str(tmp_path), **kw),
                       emit=lambda t, c, d: events.append((t, d)))
    await plane.start()
    return plane, events


def _call(port: int, codec="PCMU", pt=0, ptime=20) -> Call:
    call = Call(Direction.INBOUND, "sip:a@x", "sip:b@x", "cid@x")
    call.media = NegotiatedMedia(("127.0.0.1", port), get(codec), pt, ptime_ms=ptime)
    return call


async def test_pcma_ptime30_stored_media_and_hold(tmp_path):
    plane, events = await _plane(tmp_path)
    cap, rtcp = bind_capture_with_rtcp()
    try:
        (tmp_path / "media").mkdir()
        import soundfile
        pcm = np.random.default_rng(5).integers(-9000, 9000, 2400).astype(np.int16)
        soundfile.write(tmp_path / "media" / "n.wav", pcm, 8000, subtype="PCM_16")
        call = _call(cap.port, "PCMA", 8, 30)
        host, port = plane.allocate(call)
        assert port % 2 == 0
        plane.media_changed(call)
        pb = plane.play(call.call_id, PlayRequest(media="n.wav"))[0]
        await asyncio.sleep(0.6)
        assert pb.state == "completed"
        call.media.send_enabled = False  # hold
        plane.media_changed(call)
        await asyncio.sleep(0.1)
        n_hold = len(cap.packets)
        await asyncio.sleep(0.2)
        assert len(cap.packets) == n_hold  # nothing while on hold
        call.media.send_enabled = True
        plane.media_changed(call)
        await asyncio.sleep(0.2)
        # a foreign sender cannot redirect or disturb us
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as evil:
            evil.sendto(b"\x80\x00" + bytes(170), ("127.0.0.1", port))
        await asyncio.sleep(0.05)
        stats = plane.leg_stats(call.call_id)
        assert stats["dropped_foreign"] == 1 and stats["packets_received"] == 0
        plane.release(call)
        await asyncio.sleep(0.05)
        bye = rtcp.recv(1500)
    finally:
        cap.close()
        rtcp.close()
        await plane.stop()
    assert alaw_encode(pcm) in cap.payload()
    assert all(p.pt == 8 and len(p.payload) == 240 for p in cap.packets)
    markers = [i for i, p in enumerate(cap.packets) if p.marker]
    assert markers == [0, n_hold]  # start, and the first packet after hold
    before = analyse(cap.packets[:n_hold], 30, 240)
    assert before.seq_errors == 0 and before.ts_errors == 0
    gap_ts = (cap.packets[n_hold].ts - cap.packets[n_hold - 1].ts) & 0xFFFFFFFF
    assert gap_ts > 240 * 5  # the timestamp moved on with the time spent on hold
    assert cap.packets[n_hold].seq == (cap.packets[n_hold - 1].seq + 1) & 0xFFFF
    assert bye[1] == 200 and 203 in bye  # SR then BYE in one compound packet
    assert [t for t, _ in events] == ["playback.started", "playback.ended"]


def _fake_time_plane(tmp_path, **kw) -> tuple[MediaPlane, list]:
    """A plane whose clock is never started: time moves only when the test calls :func:`advance`.

    Its parts are built by the test (here the defaults from settings, plus a clock without timerfd
    that is never armed); the legs still send on real loopback sockets.
    """
    lo = free_port_pair()
    events: list = []
    settings = MediaSettings(rtp_port_lo=lo, rtp_port_hi=lo + 20, data_dir=str(tmp_path), **kw)
    parts = dataclasses.replace(MediaParts.from_settings(settings), clock=MediaClock(use_timerfd=False))
    plane = MediaPlane(settings, emit=lambda t, c, d: events.append((t, d)), parts=parts)
    return plane, events


async def _arrived(cap, n: int) -> None:
    """Let the loop read what the legs sent (loopback delivery is immediate; no pacing is waited for)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while len(cap.packets) < n and loop.time() < deadline:
        await asyncio.sleep(0)
    for _ in range(10):  # a few more turns: nothing else may arrive
        await asyncio.sleep(0)


async def test_no_silence_mode_marks_each_talkspurt(tmp_path):
    plane, events = _fake_time_plane(tmp_path, send_silence=False)
    cap = await open_capture()
    try:
        (tmp_path / "media").mkdir()
        import soundfile
        soundfile.write(tmp_path / "media" / "t.wav", np.full(800, 1000, np.int16), 8000, subtype="PCM_16")
        call = _call(cap.port)
        plane.allocate(call)
        plane.media_changed(call)
        advance(plane, 100)
        await _arrived(cap, 0)
        assert cap.packets == [] and plane.leg_stats(call.call_id)["packets_sent"] == 0
        for _ in range(2):
            pb = plane.play(call.call_id, PlayRequest(media="t.wav"))[0]
            await loaded(pb)
            advance(plane, 300)
            assert pb.state == "completed"
        await _arrived(cap, 10)
        plane.release(call)
    finally:
        cap.close()
        await plane.stop()
    assert len(cap.packets) == 10 and [p.marker for p in cap.packets].count(True) == 2
    assert cap.packets[5].marker and (cap.packets[5].ts - cap.packets[4].ts) & 0xFFFFFFFF > 160
