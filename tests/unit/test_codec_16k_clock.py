"""A codec with a 16 kHz RTP clock (L8/16000, RFC 3551 4.5.9) slots in through its Codec object alone.

SDP negotiates it on a dynamic payload type, the leg sends 320-byte packets whose timestamps step
320, the jitter buffer and the mixer take it in, DTMF counts in its clock, and the media clock
(ClockCore / MediaPlane's clock) is the one every G.711 leg uses, untouched.
"""

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from mediacodecs import registry
from mediacodecs.codec import L8_16K, PCMU, Halfband, l8_decode, l8_encode
from mediasrv.calls.registry import Call, Direction, NegotiatedMedia
from mediasrv.content.source import Media
from mediasrv.demo import free_port_pair
from mediasrv.media import MediaPlane, MediaSettings, PlayRequest
from mediasrv.media.clock import ClockCore
from mediasrv.media.dtmf import DtmfSender
from mediasrv.media.mixer import MixSource
from mediasrv.media.plane import LegDriver
from mediasrv.media.player import Player, new_playback
from mediasrv.rtp.jitter import JitterBuffer
from mediasrv.rtp.probe import analyse, bind_capture_with_rtcp
from mediasrv.sip.sdp import (
    NoCommonCodec,
    build_answer,
    build_offer,
    media_from_answer,
    negotiate_offer,
    parse_sdp,
)


@pytest.fixture
def l8() -> Iterator[None]:
    registry.register(L8_16K)
    yield
    registry.unregister(L8_16K)


def offer(fmts: str, *maps: str) -> bytes:
    lines = ["v=0", "o=x 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0", f"m=audio 4000 RTP/AVP {fmts}",
             *maps, "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()


def tone(hz: float, rate: int, seconds: float, amp: float = 8000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def peak_hz(pcm: np.ndarray, rate: int) -> float:
    x = pcm.astype(np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spec)])


def test_codec_attributes_are_per_tick_and_per_byte() -> None:
    c = L8_16K
    assert (c.payload_type, c.clock_rate, c.sample_rate, c.bytes_per_tick, c.rtpmap) == (None, 16000, 16000, 1, "L8/16000")
    assert (c.ticks_per_packet(20), c.bytes_per_packet(20), c.samples_per_packet(20)) == (320, 320, 320)
    assert (c.bytes_per_ms, c.ticks_per_ms, c.pcm_of(320), c.bytes_of_pcm(160)) == (16, 16, 160, 320)
    assert (PCMU.bytes_per_ms, PCMU.pcm_of(160), PCMU.bytes_of_pcm(160)) == (8, 160, 160)  # G.711: all "8 per ms"
    # RFC 3551 4.5.9: offset binary, the most negative sample is 0, zero is 128
    assert l8_encode(np.array([-32768, -256, 0, 255, 256, 32767], np.int16)) == bytes([0, 127, 128, 129, 129, 255])
    assert l8_decode(bytes([0, 128, 255])).tolist() == [-32768, 0, 32512]
    assert l8_decode(c.silence_payload(640)).max() == 0 and len(c.silence) == c.bytes_per_packet(20)
    # a whole source: 8 kHz PCM upsampled to 16 kHz, two bytes per 8 kHz sample, the tone kept
    pcm8 = tone(1000, 8000, 0.5)
    enc = c.encode(pcm8)
    assert len(enc) == 2 * len(pcm8) and abs(peak_hz(l8_decode(enc), 16000) - 1000) < 5


def test_sdp_negotiates_l8_16000_on_a_dynamic_payload_type(l8: None) -> None:
    o = parse_sdp(offer("96 0 101 102", "a=rtpmap:96 L8/16000", "a=rtpmap:101 telephone-event/8000",
                        "a=rtpmap:102 telephone-event/16000", "a=fmtp:102 0-15"))
    plan = negotiate_offer(o, ("L8", "PCMU"))
    m = plan.media
    assert m.codec is L8_16K and m.payload_type == 96 and m.clock_rate == 16000
    assert m.telephone_event_pt == 102  # the telephone-event at the audio's clock rate (RFC 4733 2.1)
    ans = build_answer(o, plan, ("127.0.0.1", 5000), 1, 1).decode()
    assert "m=audio 5000 RTP/AVP 96 0 102" in ans and "a=rtpmap:96 L8/16000" in ans
    assert "a=rtpmap:102 telephone-event/16000" in ans and "a=fmtp:102 0-15" in ans
    # a wideband codec we speak goes first; the peer's order among narrowband ones is kept
    assert negotiate_offer(parse_sdp(offer("0 96", "a=rtpmap:96 L8/16000")), ("PCMU", "L8")).media.codec is L8_16K
    # L8 at another clock is not this codec; not configured: G.711 as before
    assert negotiate_offer(parse_sdp(offer("96 0", "a=rtpmap:96 L8/8000")), ("L8", "PCMU")).media.codec is PCMU
    assert negotiate_offer(o, ("PCMU",)).media.codec is PCMU
    # our offer: a dynamic number for L8, telephone-event at each clock rate offered
    ours = build_offer(("127.0.0.1", 5000), ("L8", "PCMU"), 1, 1).decode()
    assert "m=audio 5000 RTP/AVP 96 0 101 97" in ours and "a=rtpmap:96 L8/16000" in ours
    assert "a=rtpmap:101 telephone-event/16000" in ours and "a=rtpmap:97 telephone-event/8000" in ours
    # and the peer's answer to it
    answer = parse_sdp(offer("96 101", "a=rtpmap:96 L8/16000", "a=rtpmap:101 telephone-event/16000"))
    got = media_from_answer(answer, ("L8", "PCMU"))
    assert (got.codec, got.payload_type, got.telephone_event_pt) == (L8_16K, 96, 101)


def test_an_unregistered_codec_is_not_negotiated() -> None:
    with pytest.raises(NoCommonCodec):
        negotiate_offer(parse_sdp(offer("96", "a=rtpmap:96 L8/16000")), ("L8", "PCMU"))
    assert "L8" not in build_offer(("127.0.0.1", 5000), ("L8", "PCMU"), 1, 1).decode()


class Leg:
    """Stands in for RtpLeg: records (payload type, seq, timestamp, payload) of what tick() sends."""

    def __init__(self) -> None:
        self.seq, self.timestamp, self.payload_type, self.ssrc = 0, 1000, 0, 7
        self.marker_next = False
        self.packets_sent = self.bytes_sent = self.send_errors = 0
        self.sent: list[tuple[int, int, int, bytes]] = []

    def transmit(self, data: bytes) -> None:
        self.sent.append((data[1] & 0x7F, int.from_bytes(data[2:4]), int.from_bytes(data[4:8]), data[12:]))

    def skip(self, n: int) -> None:
        self.timestamp += n


async def test_one_clock_drives_a_16k_leg_and_a_g711_leg() -> None:
    """The same ClockCore (fake time) ticks both legs every 20 ms; only the codec objects differ."""
    core = ClockCore(t0=0.0)
    drivers = {}
    for codec, pt in ((PCMU, 0), (L8_16K, 96)):
        leg = Leg()
        driver = LegDriver(leg, Player(PCMU, lambda t, pb: None), send_silence=True)  # type: ignore[arg-type]
        driver.configure(codec, pt, 20)
        core.add(driver, 20)
        drivers[codec.name] = (driver, leg)
    pcm8 = tone(1000, 8000, 0.3)
    for name, (driver, _) in drivers.items():
        media = Media("t", pcm8, {"PCMU": PCMU.encode(pcm8)})
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(media)
        driver.player.enqueue(new_playback("c", PlayRequest(url="u"), fut, per_ms=driver.player.codec.bytes_per_ms))
        assert driver.player.fast is not None, name  # the fast path (a slice per tick) serves both
    core.run_until(0.499)  # 25 packet times (the legs sit in different 1 ms sub-slots)
    for name, size in (("PCMU", 160), ("L8", 320)):
        driver, leg = drivers[name]
        assert len(leg.sent) == 25  # every 20 ms for 0.5 s, whatever the codec
        assert all(len(p) == size for _, _, _, p in leg.sent)
        assert all(b[1] - a[1] == 1 and b[2] - a[2] == size for a, b in zip(leg.sent, leg.sent[1:], strict=False))
    _, l8leg = drivers["L8"]
    assert {pt for pt, _, _, _ in l8leg.sent} == {96}
    played = b"".join(p for _, _, _, p in l8leg.sent[:15])  # 0.3 s of tone, then silence
    assert played == L8_16K.encode(pcm8) and abs(peak_hz(l8_decode(played), 16000) - 1000) < 5
    assert b"".join(p for _, _, _, p in l8leg.sent[15:]) == L8_16K.silence_payload(10 * 320)


async def test_player_positions_count_in_the_codec_bytes_per_ms() -> None:
    player = Player(L8_16K, lambda t, pb: None)
    pcm8 = tone(500, 8000, 1.0)
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(Media("t", pcm8))
    pb = new_playback("c", PlayRequest(url="u", length_s=0.5, volume_db=-6.0), fut)  # made at 8 per ms: rescaled
    player.enqueue(pb)
    out = [player.next_payload(320, i, i * 320) for i in range(10)]  # the per-packet (volume) path
    assert all(p is not None and len(p) == 320 for p in out)
    assert pb.ms_played == 200 and pb.to_dict()["position_ms"] == 200
    player.seek(pb, 100)
    assert pb.offset == 1600 and player.position(pb) == 1600
    while player.next_payload(320, 0, 0) is not None:
        pass
    assert pb.state == "completed" and pb.reason == "length" and pb.ms_played == 500
    got = l8_decode(b"".join(p for p in out if p is not None)).astype(np.float64)
    assert abs(peak_hz(got, 16000) - 500) < 10
    rms = np.sqrt(np.mean(got[400:] ** 2)) / np.sqrt(np.mean(pcm8.astype(np.float64) ** 2))
    assert 0.4 < rms < 0.6, rms  # -6 dB


def test_jitter_buffer_and_mixer_take_a_16k_clock_stream() -> None:
    wide = tone(1000, 16000, 1.0)
    enc = l8_encode(wide)
    jb = JitterBuffer(16000, target_ms=40, decoders={96: L8_16K})
    assert jb.target == 640  # counted in the stream's clock
    source = MixSource("a", jb, 160)  # the mixer's timeline is 8 kHz: 160 samples per 20 ms
    heard = []
    for i in range(len(enc) // 320):
        source.push(i, 5000 + i * 320, 0xABC, 96, enc[i * 320:(i + 1) * 320])
        frame = source.read(160 * i, 160)
        if frame is not None:
            heard.append(frame.copy())
    out = np.concatenate(heard)
    assert jb.stats.ignored == 0 and jb.stats.late == 0 and len(out) >= 160 * 40
    assert abs(peak_hz(out[400:], 8000) - 1000) < 10
    # a G.711 payload type on the same buffer is not decoded: its clock is not the stream's
    assert not jb.push(99, 0, b"\xff" * 160, 0.0, payload_type=0, ssrc=0xABC) and jb.stats.ignored == 1


def test_dtmf_events_count_in_the_codec_clock() -> None:
    sender = DtmfSender("5", 100, 60, L8_16K.bytes_per_packet(20), 96, L8_16K.silence, te_pt=101,
                        ticks_per_ms=L8_16K.ticks_per_ms)
    durations = []
    while (pkt := sender.next(0)) is not None:
        if pkt.payload_type == 101:
            durations.append(int.from_bytes(pkt.payload[2:4]))
    assert max(durations) == 1600 and durations[0] == 320  # 100 ms at 16 kHz, one packet (20 ms) first


async def test_media_plane_sends_l8_16000_on_loopback(tmp_path) -> None:
    lo = free_port_pair()
    plane = MediaPlane(MediaSettings(rtp_port_lo=lo, rtp_port_hi=lo + 20, data_dir=str(tmp_path)),
                       emit=lambda t, c, d: None)
    await plane.start()
    cap, rtcp = bind_capture_with_rtcp()
    try:
        (tmp_path / "media").mkdir()
        import soundfile

        soundfile.write(tmp_path / "media" / "t.wav", tone(1000, 8000, 0.4), 8000, subtype="PCM_16")
        call = Call(Direction.INBOUND, "sip:a@x", "sip:b@x", "l8@x")
        call.media = NegotiatedMedia(("127.0.0.1", cap.port), L8_16K, 96)
        plane.allocate(call)
        plane.media_changed(call)
        pb = plane.play(call.call_id, PlayRequest(media="t.wav"))[0]
        await asyncio.sleep(0.7)
        assert pb.state == "completed" and pb.ms_played == 400
        assert plane.monitor(call.call_id)["ptime_ms"] == 20
        plane.release(call)
    finally:
        cap.close()
        rtcp.close()
        await plane.stop()
    packets = cap.packets
    assert len(packets) > 20 and all(p.pt == 96 and len(p.payload) == 320 for p in packets)
    report = analyse(packets, 20, 320)
    assert report.seq_errors == 0 and report.ts_errors == 0
    audio = l8_decode(b"".join(p.payload for p in packets))
    loud = audio[np.abs(audio) > 2000]
    assert len(loud) > 4000 and abs(peak_hz(audio, 16000) - 1000) < 5


def test_halfband_keeps_a_tone_through_up_and_down() -> None:
    up, down = Halfband(up=True), Halfband(up=False)
    x = tone(700, 8000, 0.2)
    y = down(up(x))
    assert len(y) == len(x) and abs(peak_hz(y[100:], 8000) - 700) < 10
