"""Player semantics at exact sample positions: multi-source, loop, length, stop, overlay, controls, mix."""

from __future__ import annotations

import asyncio
import io
import random
import socket

import numpy as np
import pytest
import soundfile

from mediacodecs.codec import PCMU
from mediacodecs.g711 import ulaw_encode
from mediasrv.calls.registry import Call, Direction, NegotiatedMedia
from mediasrv.content.source import Media, SourceError
from mediasrv.media import MediaPlane, MediaSettings
from mediasrv.media.plane import LegDriver
from mediasrv.media.player import (
    PlaybackStateError,
    Player,
    PlayError,
    PlayRequest,
    SourceSpec,
    db_gain,
    new_playback,
)
from mediasrv.rtp.leg import PortAllocator, RtpLeg

N = 160
SIL = b"\xff" * N


def pcm_of(n: int, seed: int, amp: int = 12000) -> np.ndarray:
    return np.random.default_rng(seed).integers(-amp, amp, n).astype(np.int16)


def media(pcm: np.ndarray) -> Media:
    return Media("x", pcm, {"PCMU": ulaw_encode(pcm)})


def ready(value) -> asyncio.Future:
    fut = asyncio.get_running_loop().create_future()
    if isinstance(value, Exception):
        fut.set_exception(value)
    else:
        fut.set_result(value)
    return fut


def packets(pcm: np.ndarray) -> bytes:
    """What a source sounds like on the wire: encoded, its last packet padded with silence."""
    enc = ulaw_encode(pcm)
    return enc + b"\xff" * ((-len(enc)) % N)


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def __call__(self, type_: str, pb) -> None:
        self.events.append((type_, pb.id, pb.state))


def make_player() -> tuple[Player, Log]:
    log = Log()
    return Player(PCMU, log), log


def drain(player: Player, count: int, call_audio=None, start: int = 0) -> list[bytes | None]:
    return [player.next_payload(N, seq, seq * N, call_audio) for seq in range(start, start + count)]


def joined(out: list[bytes | None]) -> bytes:
    return b"".join(SIL if p is None else p for p in out)


def play(player: Player, sources, **kw):
    futures = [ready(s) for s in sources]
    pb = new_playback("c", PlayRequest(url="u", **kw), futures)
    player.enqueue(pb)
    return pb


async def test_sources_in_order_each_on_a_packet_boundary_loop_over_the_list():
    player, log = make_player()
    a, b = pcm_of(200, 1), pcm_of(100, 2)
    pb = play(player, [media(a), media(b)], loop=2)
    out = drain(player, 7)
    assert joined(out[:6]) == (packets(a) + packets(b)) * 2
    assert out[6] is None
    assert pb.state == "completed" and pb.ms_played == 75 and pb.last_seq == 5
    assert [e[0] for e in log.events] == ["playback.started", "playback.ended"]


async def test_failing_source_ends_failed_with_its_index_after_the_earlier_ones():
    player, log = make_player()
    a = pcm_of(320, 3)
    pb = play(player, [media(a), SourceError("http_404", "HTTP 404"), media(pcm_of(160, 4))])
    out = drain(player, 3)
    assert joined(out[:2]) == ulaw_encode(a) and out[2] is None
    assert pb.state == "failed" and pb.failed_source_index == 1 and pb.reason == "http_404"
    assert pb.last_seq == 1
    # a first source that fails never starts
    first = play(player, [SourceError("not_audio", "text/html")])
    assert first.state == "failed" and first.failed_source_index == 0 and first.started_at is None


async def test_length_cap_ends_completed_with_reason_length_mid_packet():
    player, _ = make_player()
    a = pcm_of(300, 5)
    pb = play(player, [media(a)], loop=None, length_s=0.05)  # 400 samples over a 300-sample loop
    out = drain(player, 4)
    expected = ulaw_encode(a[:160]) + ulaw_encode(a[160:]) + b"\xff" * 20 + ulaw_encode(a[:100]) + b"\xff" * 60
    assert joined(out[:3]) == expected and out[3] is None
    assert (pb.state, pb.reason, pb.ms_played, pb.last_seq) == ("completed", "length", 50, 2)


async def test_stop_current_all_and_stale_stop_is_a_no_op():
    player, _ = make_player()
    pbs = [play(player, [media(pcm_of(1600, i))], loop=None) for i in range(3)]
    drain(player, 2)
    assert player.stop("current", "cmd-1") == [pbs[0]] and pbs[0].stopped_by == "cmd-1"
    assert player.current is pbs[1] and pbs[1].state == "playing"  # the queue moved on at the stop
    out = drain(player, 1, start=2)
    assert out[0] == ulaw_encode(pcm_of(1600, 1)[:N])  # next in the queue started at the next packet
    assert player.stop_one(pbs[0], "late") is False and pbs[0].stopped_by == "cmd-1"
    assert player.current is pbs[1] and pbs[1].state == "playing"
    assert player.stop("all", "cmd-2") == [pbs[1], pbs[2]]
    assert drain(player, 1) == [None]


async def test_overlay_sums_with_saturation_and_outlives_the_main():
    player, log = make_player()
    main = np.full(480, 20000, np.int16)
    main[:160] = pcm_of(160, 6, 8000)
    over = np.full(800, 20000, np.int16)
    over[:160] = pcm_of(160, 7, 8000)
    pm = play(player, [media(main)])
    po = play(player, [media(over)], overlay=True)
    out = drain(player, 3)
    s = main[:160].astype(np.int32) + over[:160]
    assert out[0] == ulaw_encode(s.astype(np.int16))
    assert out[1] == ulaw_encode(np.full(160, 32767, np.int16))  # 40000 saturates
    assert pm.state == "completed" and po.state == "playing"
    out += drain(player, 2, start=3)
    assert out[3] == ulaw_encode(over[480:640]) and out[4] == ulaw_encode(over[640:])
    assert po.state == "completed" and po.last_seq == 4 and pm.last_seq == 2
    assert [(t, i) for t, i, _ in log.events] == [
        ("playback.started", pm.id), ("playback.started", po.id), ("playback.ended", pm.id),
        ("playback.ended", po.id)]


async def test_stop_with_overlay_stops_overlays_only():
    player, _ = make_player()
    pm = play(player, [media(pcm_of(1600, 8))])
    o1 = play(player, [media(pcm_of(1600, 9))], overlay=True)
    o2 = play(player, [media(pcm_of(1600, 10))], overlay=True)
    drain(player, 2)
    assert player.stop("current", "x", overlay=True) == [o1, o2]
    assert pm.state == "playing" and player.fast is pm
    out = drain(player, 1, start=2)
    assert out[0] == ulaw_encode(pcm_of(1600, 8)[320:480])


async def test_pause_resume_seek_skip_restart_positions():
    player, log = make_player()
    a, b = pcm_of(800, 11), pcm_of(800, 12)
    pb = play(player, [media(a), media(b)])
    drain(player, 2)
    player.pause(pb)
    assert player.pause(pb) is False and drain(player, 3) == [None] * 3 and pb.ms_played == 40
    player.resume(pb)
    assert drain(player, 1)[0] == ulaw_encode(a[320:480])
    player.seek(pb, 130)  # 1040 samples: 240 into the second source
    assert drain(player, 1)[0] == ulaw_encode(b[240:400])
    player.skip(pb, -45)  # back 360 samples: 40 into the second source
    assert player.position(pb) == 840
    assert drain(player, 1)[0] == ulaw_encode(b[40:200])
    player.skip(pb, -1000)  # clamped at the start
    assert drain(player, 1)[0] == ulaw_encode(a[:160])
    with pytest.raises(PlayError) as exc:
        player.seek(pb, 200)
    assert exc.value.reason == "seek_past_end"
    player.restart(pb)
    assert drain(player, 1)[0] == ulaw_encode(a[:160])
    assert [t for t, _, _ in log.events] == ["playback.started", "playback.paused", "playback.resumed"]
    player.stop_one(pb, "api")
    with pytest.raises(PlaybackStateError):
        player.pause(pb)


async def test_volume_applies_in_pcm_and_leaves_the_fast_path():
    player, _ = make_player()
    a = pcm_of(800, 13, 30000)
    pb = play(player, [media(a)])
    assert player.fast is pb
    player.set_volume(pb, -6.0)
    assert player.fast is None
    out = drain(player, 1)[0]
    expected = np.clip((a[:160].astype(np.float32) * db_gain(-6.0)).astype(np.int32), -32768, 32767)
    assert out == ulaw_encode(expected.astype(np.int16))
    player.set_volume(pb, 12.0)  # +12 dB of a loud source saturates
    out = drain(player, 1, start=1)[0]
    expected = np.clip((a[160:320].astype(np.float32) * db_gain(12.0)).astype(np.int32), -32768, 32767)
    assert out == ulaw_encode(expected.astype(np.int16))
    with pytest.raises(PlayError):
        player.set_volume(pb, 40.0)
    player.set_volume(pb, 0.0)
    assert player.fast is pb


async def test_call_audio_mix_false_and_duck():
    frame = pcm_of(160, 14, 6000)
    calls: list[int] = []

    def call_audio(n: int) -> np.ndarray:
        calls.append(n)
        return frame

    player, _ = make_player()
    assert drain(player, 1, call_audio)[0] == ulaw_encode(frame)  # bridged, nothing plays: the peer
    a = pcm_of(480, 15, 6000)
    play(player, [media(a)])
    assert drain(player, 1, call_audio)[0] == ulaw_encode((a[:160].astype(np.int32) + frame).astype(np.int16))
    player.stop("all", "x")
    play(player, [media(a)], mix=False)
    assert drain(player, 1, call_audio)[0] == ulaw_encode(a[:160])  # only the playback
    player.stop("all", "x")
    play(player, [media(a)], duck_db=20.0)
    ducked = (frame.astype(np.float32) * db_gain(-20.0)).astype(np.int32)
    assert drain(player, 1, call_audio)[0] == ulaw_encode((a[:160].astype(np.int32) + ducked).astype(np.int16))
    player.stop("all", "x")
    assert drain(player, 1, call_audio)[0] == ulaw_encode(frame)  # the call audio is back after
    assert calls == [160] * 5
    assert drain(player, 1, lambda n: None) == [None]  # bridged but the peer is silent


async def test_streaming_media_underruns_then_completes_or_fails():
    player, _ = make_player()
    a = pcm_of(480, 16)
    enc = ulaw_encode(a)
    growing = Media("s", a, {"PCMU": bytearray(enc[:200])}, complete=False)
    pb = play(player, [growing])
    out = drain(player, 3)
    assert out[0] == enc[:160] and out[1] is None and out[2] is None and pb.underruns == 2
    growing.encoded["PCMU"] += enc[200:]
    growing.complete = True
    out = drain(player, 3, start=3)
    assert joined(out) == enc[160:] + b"\xff" * 160 and pb.state == "completed" and pb.last_seq == 4
    broken = Media("s", a, {"PCMU": bytearray(enc[:200])}, complete=False)
    pb2 = play(player, [broken])
    drain(player, 1)
    broken.error = SourceError("decode_error", "truncated MP3 frame")
    assert drain(player, 1) == [None]
    assert (pb2.state, pb2.reason, pb2.failed_source_index) == ("failed", "decode_error", 0)


class RecordingLeg:
    """A real RtpLeg on loopback, connected to a receiver: ``sent`` is what went out on the wire."""

    def __init__(self) -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.setblocking(False)
        self.ports = PortAllocator("127.0.0.1", 38000, 38998)
        self.leg = RtpLeg("c", *self.ports.bind_pair())
        self.leg.seq = self.leg.timestamp = 0
        self.leg.set_remote(self.rx.getsockname())
        self._sent: list[bytes] = []

    @property
    def sent(self) -> list[bytes]:
        while True:
            try:
                self._sent.append(self.rx.recv(4096)[12:])
            except BlockingIOError:
                return self._sent

    def close(self) -> None:
        self.leg.close(send_bye=False)
        self.rx.close()


async def test_leg_driver_fast_and_slow_paths_agree_and_bridged_idle_sends_call_audio():
    leg = RecordingLeg()
    try:
        driver = LegDriver(leg.leg, Player(PCMU, lambda t, pb: None), send_silence=True)
        a = pcm_of(1000, 17)
        pb = play(driver.player, [media(a)], loop=2)
        for _ in range(15):
            driver.tick()
        assert b"".join(leg.sent) == packets(a) * 2 + SIL
        assert pb.state == "completed" and pb.last_seq == 13
        frame = pcm_of(160, 18, 3000)
        driver.call_audio = lambda n: frame
        driver.tick()
        assert leg.sent[-1] == ulaw_encode(frame)
    finally:
        leg.close()


# -- the plane: targets, overlay gate, stop on play, events, controls -----------------------
def wav(pcm: np.ndarray) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, pcm, 8000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture
async def plane(tmp_path):
    lo = random.randrange(30000, 60000, 2)
    events: list[tuple[str, str, dict]] = []
    p = MediaPlane(MediaSettings(rtp_port_lo=lo, rtp_port_hi=lo + 40, data_dir=str(tmp_path)),
                   emit=lambda t, c, d: events.append((t, c, d)))
    p.events = events  # type: ignore[attr-defined]
    await p.start()
    yield p
    await p.stop()


def leg(plane: MediaPlane) -> str:
    call = Call(Direction.INBOUND, "sip:a@x", "sip:b@x", f"{random.random()}@x")
    call.media = NegotiatedMedia(None, PCMU, 0)  # no remote: the clock never ticks it, the test does
    plane.allocate(call)
    return call.call_id


def content(pcm: np.ndarray) -> SourceSpec:
    return SourceSpec(content=wav(pcm))


async def settle(plane: MediaPlane, playbacks) -> None:
    """Wait for the playbacks' first sources to load, then tick their legs once (the clock does not run)."""
    await asyncio.gather(*(pb.futures[0] for pb in playbacks))
    for call_id in dict.fromkeys(pb.call_id for pb in playbacks):
        plane._drivers[call_id].player.next_payload(160, 0, 0)


async def test_plane_targets_overlay_gate_stop_on_play_and_events(plane):
    a, b, c = leg(plane), leg(plane), leg(plane)
    plane.join_room("r", a)
    plane.join_room("r", b)
    tone = pcm_of(1600, 19)
    with pytest.raises(PlayError) as exc:
        plane.play(a, PlayRequest(sources=[content(tone)], overlay=True))
    assert exc.value.reason == "nothing_playing" and exc.value.status == 422
    with pytest.raises(PlayError) as exc:
        plane.play(c, PlayRequest(sources=[content(tone)], target="opposite"))
    assert exc.value.status == 409
    with pytest.raises(KeyError):
        plane.play(a, PlayRequest(sources=[content(tone)], target=[a, "nope"]))
    with pytest.raises(PlayError):
        plane.play(a, PlayRequest(sources=[content(tone)], loop=101))
    assert plane.events == []  # nothing changed by a refused command

    both = plane.play(a, PlayRequest(sources=[content(tone)], target="both", command_id="cmd-1", loop=None))
    assert [p.call_id for p in both] == [a, b] and {p.command_id for p in both} == {"cmd-1"}
    await settle(plane, both)
    assert [p.call_id for p in plane.play(a, PlayRequest(sources=[content(tone)], target="opposite"))] == [b]
    [over] = plane.play(a, PlayRequest(sources=[content(tone)], overlay=True))
    await settle(plane, [over])
    [nxt] = plane.play(a, PlayRequest(sources=[content(tone)], stop="all", command_id="cmd-3"))
    await settle(plane, [nxt])
    assert both[0].state == "stopped" and both[0].stopped_by == nxt.id
    assert over.state == "playing"  # stop on a main play leaves the overlays alone
    assert plane.stop_playback(both[0].id) is False and nxt.state == "playing"  # stale stop: no-op
    assert both[1].state == "playing"  # the other leg's copy is untouched

    plane.control(nxt.id, "pause")
    plane.control(nxt.id, "seek", ms=100)
    assert plane._drivers[a].player.position(nxt) == 800 and plane.position_ms(nxt.id) == 100
    with pytest.raises(PlayError):
        plane.control(nxt.id, "seek", ms=200)
    with pytest.raises(PlaybackStateError):
        plane.control(both[0].id, "resume")
    with pytest.raises(KeyError):
        plane.control("nope", "pause")
    plane.release(Call(Direction.INBOUND, "", "", "", call_id=a))
    assert nxt.state == "call_hangup" and over.state == "call_hangup"

    types = [(t, d["playback_id"]) for t, c_, d in plane.events if c_ == a]
    assert types == [
        ("playback.started", both[0].id), ("playback.started", over.id), ("playback.ended", both[0].id),
        ("playback.started", nxt.id), ("playback.paused", nxt.id), ("playback.ended", nxt.id),
        ("playback.ended", over.id),
    ]
    ended = next(d for t, c_, d in plane.events if t == "playback.ended" and d["playback_id"] == both[0].id)
    assert ended["status"] == "stopped" and ended["stopped_by"] == nxt.id and ended["command_id"] == "cmd-1"
    assert ended["target"] == "both"


async def test_three_parts_and_loud_gain_saturate_both_ways():
    player, _ = make_player()
    hi, lo = np.full(160, 20000, np.int16), np.full(160, -20000, np.int16)
    play(player, [media(hi)])
    play(player, [media(hi)], overlay=True)
    play(player, [media(hi)], overlay=True, volume_db=6.0)  # 39905: with gain > 1 the generic path clips
    assert drain(player, 1, lambda n: hi)[0] == ulaw_encode(np.full(160, 32767, np.int16))  # 99905
    play(player, [media(lo)])
    play(player, [media(lo)], overlay=True)
    assert drain(player, 1)[0] == ulaw_encode(np.full(160, -32768, np.int16))


async def test_a_cached_prompt_starts_at_once_and_a_changed_file_is_reloaded(plane, tmp_path):
    a = leg(plane)
    media_dir = tmp_path / "media"
    media_dir.mkdir(exist_ok=True)
    (media_dir / "p.wav").write_bytes(wav(pcm_of(800, 20)))
    [first] = plane.play(a, PlayRequest(media="p.wav"))
    assert first.state == "queued"  # not decoded yet: the loader's task has not run
    await settle(plane, [first])
    await plane.loader.prefetch(SourceSpec(media="p.wav"))  # the loader's decode has finished: cached
    hits = plane.loader.stats["cache_hits"]
    [second] = plane.play(a, PlayRequest(media="p.wav", stop="all"))
    assert plane.loader.stats["cache_hits"] == hits + 1
    assert second.state == "playing" and second.started_at is not None  # in memory: on the wire next tick
    new = pcm_of(960, 21)
    (media_dir / "p.wav").write_bytes(wav(new))  # another file: the in-memory copy is stale
    [third] = plane.play(a, PlayRequest(media="p.wav", stop="all"))
    assert third.state == "queued"
    await settle(plane, [third])
    await plane.loader.prefetch(SourceSpec(media="p.wav"))
    assert np.array_equal(third.futures[0].result().pcm, new)
