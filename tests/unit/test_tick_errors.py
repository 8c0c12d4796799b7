"""A tick whose payload cannot be made: the playback ends failed with a reason, the leg keeps its timing.

The bad input is real: a source whose decoded PCM is stereo (two columns) where the player's
contract is mono int16, played as an overlay, so the player's mix raises mid-stream.  Nothing of
ours is mocked: real legs on loopback sockets, the real player, the C runner and the Python tick.
"""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from mediacodecs.codec import PCMU
from mediacodecs.g711 import ulaw_encode
from mediasrv.calls.registry import Call, Direction, NegotiatedMedia
from mediasrv.content.source import Media
from mediasrv.demo import free_port_pair
from mediasrv.media import MediaPlane, MediaSettings, PlayRequest
from mediasrv.media.clock import run_each
from mediasrv.media.plane import LegDriver
from mediasrv.media.player import Player, new_playback
from mediasrv.rtp import fastpath
from mediasrv.rtp.leg import PortAllocator, RtpLeg
from mediasrv.rtp.probe import analyse, open_capture

PORTS = PortAllocator("127.0.0.1", 37000, 37998)


def good_media(samples: int) -> Media:
    pcm = np.random.default_rng(3).integers(-9000, 9000, samples).astype(np.int16)
    return Media("good", pcm, {"PCMU": ulaw_encode(pcm)})


def stereo_media(samples: int) -> Media:
    """What a decoder that forgot to downmix would hand over: (samples, 2) PCM, mono-sized bytes."""
    pcm = np.random.default_rng(4).integers(-9000, 9000, (samples, 2)).astype(np.int16)
    return Media("stereo", pcm, {"PCMU": ulaw_encode(pcm[:, 0].copy())})


async def until(cond, timeout: float = 5.0) -> None:
    """Wait until *cond()* holds (a loaded shared machine can be slow to get there)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


def ready(m: Media) -> asyncio.Future[Media]:
    fut: asyncio.Future[Media] = asyncio.get_running_loop().create_future()
    fut.set_result(m)
    return fut


class Leg:
    """A real leg, player and driver sending to a receiver socket."""

    def __init__(self) -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.setblocking(False)
        rtp, rtcp = PORTS.bind_pair()
        self.leg = RtpLeg("c", rtp, rtcp)
        self.leg.seq, self.leg.timestamp = 65530, 0xFFFFF000
        self.leg.set_remote(self.rx.getsockname())
        self.events: list[tuple[str, str, str | None, str | None]] = []
        self.player = Player(PCMU, lambda t, pb: self.events.append((t, pb.state, pb.reason, pb.message)))
        self.driver = LegDriver(self.leg, self.player, True)
        self.errors: list[Exception] = []
        self.driver.on_tick_error = lambda driver, exc: self.errors.append(exc)

    def received(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.rx.recv(4096))
            except BlockingIOError:
                return out

    def close(self) -> None:
        PORTS.free(self.leg.port)
        self.leg.close(send_bye=False)
        self.rx.close()


@pytest.mark.parametrize("runner", ["c", "python"])
async def test_a_failing_tick_fails_the_playback_and_the_leg_keeps_its_timing(runner: str) -> None:
    t = Leg()
    run = fastpath.group_runner(run_each) if runner == "c" else run_each
    item = t.leg if runner == "c" else t.driver.tick
    try:
        main = new_playback("c", PlayRequest(url="main"), [ready(good_media(160 * 50))])
        t.player.enqueue(main)
        for _ in range(3):
            assert run((item,)) is None
        overlay = new_playback("c", PlayRequest(url="bad", overlay=True), [ready(stereo_media(160 * 50))])
        t.player.enqueue(overlay)
        for _ in range(5):
            assert run((item,)) is None  # the tick's failure is handled by the leg, not reported to the clock
        got = t.received()
    finally:
        t.close()
    assert len(got) == 8  # one packet every tick: nothing skipped, nothing extra
    seqs = [int.from_bytes(p[2:4], "big") for p in got]
    tss = [int.from_bytes(p[4:8], "big") for p in got]
    assert seqs == [(65530 + i) & 0xFFFF for i in range(8)]
    assert tss == [(0xFFFFF000 + 160 * i) & 0xFFFFFFFF for i in range(8)]
    assert got[0][12:] == good_media(160 * 50).encoded["PCMU"][:160]
    assert all(p[12:] == b"\xff" * 160 for p in got[3:])  # silence from the failed tick on
    for pb in (main, overlay):
        assert pb.state == "failed" and pb.reason == "internal_error"
        assert pb.message == "internal error: ValueError"
    ended = [e for e in t.events if e[0] == "playback.ended"]
    assert sorted(ended) == [("playback.ended", "failed", "internal_error", "internal error: ValueError")] * 2
    assert len(t.errors) == 1 and isinstance(t.errors[0], ValueError) and t.driver.tick_errors == 1
    assert t.leg.packets_sent == 8 and t.leg.bytes_sent == 8 * 160 and t.leg.send_errors == 0


async def test_the_media_plane_counts_it_and_the_call_goes_on(tmp_path) -> None:
    lo = free_port_pair()
    events: list[tuple[str, dict]] = []
    plane = MediaPlane(MediaSettings(rtp_port_lo=lo, rtp_port_hi=lo + 20, data_dir=str(tmp_path)),
                       emit=lambda t, c, d: events.append((t, d)))
    await plane.start()
    cap = await open_capture()
    try:
        (tmp_path / "media").mkdir()
        import soundfile
        pcm = np.random.default_rng(5).integers(-9000, 9000, 8000 * 5).astype(np.int16)
        soundfile.write(tmp_path / "media" / "n.wav", pcm, 8000, subtype="PCM_16")
        call = Call(Direction.INBOUND, "sip:a@x", "sip:b@x", "cid@x")
        call.media = NegotiatedMedia(("127.0.0.1", cap.port), PCMU, 0, ptime_ms=20)
        plane.allocate(call)
        plane.media_changed(call)
        main = plane.play(call.call_id, PlayRequest(media="n.wav"))[0]
        await until(lambda: main.state == "playing" and len(cap.packets) >= 3)
        player = plane._drivers[call.call_id].player
        player.enqueue(new_playback(call.call_id, PlayRequest(url="bad", overlay=True), [ready(stereo_media(8000))]))
        await until(lambda: main.ended)
        assert main.state == "failed" and main.reason == "internal_error"
        assert plane.metrics()["media_events"]["tick_errors"] == 1
        assert plane.clock.stats.tick_errors == 0  # the leg stayed on the clock
        n = len(cap.packets)
        await until(lambda: len(cap.packets) >= n + 5)  # and goes on sending
        plane.release(call)
    finally:
        cap.close()
        await plane.stop()
    report = analyse(cap.packets)
    assert report.seq_errors == 0 and report.ts_errors == 0 and report.ssrcs == 1
    ended = [d for t, d in events if t == "playback.ended"]
    assert [(d["status"], d["reason"], d["message"]) for d in ended] == [
        ("failed", "internal_error", "internal error: ValueError")] * 2
