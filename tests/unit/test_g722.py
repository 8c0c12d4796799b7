"""G.722: the codec object, bit-exactness with FFmpeg's encoder, the 16 kHz decode, SDP, the player's
encode-once path, the jitter buffer's decoder."""

from __future__ import annotations

import asyncio
import io

import av
import numpy as np
import pytest
import soundfile

from mediacodecs.codec import CODECS, G722, PCMU, G722FrameDecoder, G722Stream, g722_decode, g722_encode, get
from mediacodecs.resample import resample
from mediasrv.content.decode import decode_bytes
from mediasrv.content.source import MediaBuilder, choose_decoder, media_from_pcm
from mediasrv.media.player import Player, PlayRequest, new_playback
from mediasrv.rtp.jitter import JitterBuffer
from mediasrv.sip.sdp import build_answer, build_offer, negotiate_offer, parse_sdp


def sweep(rate: int, seconds: float = 1.5, lo: float = 100.0, hi: float = 7000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    k = np.log(hi / lo) / seconds
    return (9000 * np.sin(2 * np.pi * lo * (np.exp(k * t) - 1) / k)).astype(np.int16)


def ffmpeg_g722(pcm16: np.ndarray) -> bytes:
    """The reference: FFmpeg's g722 encoder through PyAV's muxing path (av.open, a g722 stream,
    PyAV's own frame sizes), written as a raw .g722 file."""
    out = io.BytesIO()
    with av.open(out, "w", format="g722") as container:
        stream = container.add_stream("g722", rate=16000, layout="mono")
        step = 1000  # not the encoder's frame size: PyAV re-frames, as ffmpeg does
        for i in range(0, len(pcm16), step):
            frame = av.AudioFrame.from_ndarray(pcm16[i:i + step].reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = 16000
            for pkt in stream.encode(frame):
                container.mux(pkt)
        for pkt in stream.encode(None):
            container.mux(pkt)
    return out.getvalue()


def wav(pcm: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, pcm, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_codec_objects() -> None:
    assert [(c.name, c.payload_type, c.clock_rate, c.sample_rate) for c in CODECS.values()] == [
        ("PCMU", 0, 8000, 8000), ("PCMA", 8, 8000, 8000), ("G722", 9, 8000, 16000)]
    for c in CODECS.values():  # one byte per RTP tick: 160 bytes and 160 ticks per 20 ms for all three
        assert (c.ticks_per_packet(20), c.bytes_per_packet(20)) == (160, 160)
    assert G722.samples_per_packet(20) == 320 and get("g722") is G722
    # the silence payload decodes to (near) digital silence, repeated packet after packet
    assert np.abs(g722_decode(G722.silence_payload(160 * 25))[160:]).max() < 64
    assert PCMU.silence_payload(5) == b"\xff" * 5


def test_encode_is_bit_exact_with_ffmpeg_and_independent_of_chunking() -> None:
    pcm = sweep(16000)
    ref = ffmpeg_g722(pcm)
    assert len(ref) == len(pcm) // 2
    assert g722_encode(pcm) == ref
    for piece in (1, 7, 320, 999, 5000):
        s = G722Stream()
        got = b"".join(s.push(pcm[i:i + piece]) for i in range(0, len(pcm), piece)) + s.finish()
        assert got == ref, piece


@pytest.mark.parametrize("rate", [16000, 48000, 8000])
def test_wide_decode_of_a_source_equals_ffmpeg_of_its_16k_resampling(rate: int) -> None:
    """16 kHz sources go to G.722 untouched (bit-exact with FFmpeg's encoding of the file's samples);
    others through one aresample to 16 kHz (never via 8 kHz), the same under any chunking."""
    src = sweep(rate)
    body = wav(src, rate)
    pcm16 = src if rate == 16000 else resample(src, rate, 16000)
    pcm8 = decode_bytes(body, "wav", "t", 8000)
    want = ffmpeg_g722(pcm16)[: len(pcm8)]
    for chunk in (100, 4096, len(body)):
        dec = choose_decoder(body[:4096], None, None, "x.wav", len(body), "t", 60.0, wide=True)
        b = MediaBuilder("t", wide=True)
        for i in range(0, len(body), chunk):
            b.publish(*b.decode_step(dec, body[i:i + chunk]))
        b.publish(*b.decode_step(dec, None))
        g = bytes(b.media.encoded["G722"])
        assert len(g) == b.samples == len(pcm8)  # one byte per 8 kHz sample: offsets shared with G.711
        assert g[: len(want) - 160] == want[: len(want) - 160], chunk  # all but the padded last packet
    # the 8 kHz output is unchanged by the wide decode
    assert np.array_equal(b.media.pcm, pcm8)


def test_wideband_content_survives() -> None:
    """A 6 kHz tone in a 16 kHz source is in the G.722 stream (it would be gone through 8 kHz)."""
    t = np.arange(16000) / 16000
    pcm = (8000 * np.sin(2 * np.pi * 6000 * t)).astype(np.int16)
    dec = choose_decoder(wav(pcm, 16000)[:4096], None, None, "x.wav", 0, "t", 60.0, wide=True)
    b = MediaBuilder("t", wide=True)
    b.publish(*b.decode_step(dec, wav(pcm, 16000)))
    b.publish(*b.decode_step(dec, None))
    out = g722_decode(bytes(b.media.encoded["G722"]))[1600:].astype(np.float64)
    spec = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert abs(np.fft.rfftfreq(len(out), 1 / 16000)[np.argmax(spec)] - 6000) < 20


def offer(fmts: str, *maps: str) -> bytes:
    lines = ["v=0", "o=x 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0", f"m=audio 4000 RTP/AVP {fmts}",
             *maps, "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()


def test_sdp_g722_offered_answered_and_preferred() -> None:
    codecs = ("G722", "PCMU", "PCMA")
    o = parse_sdp(offer("0 8 9 101", "a=rtpmap:9 G722/8000", "a=rtpmap:101 telephone-event/8000"))
    plan = negotiate_offer(o, codecs)
    assert plan.media.codec.name == "G722" and plan.media.payload_type == 9
    ans = build_answer(o, plan, ("127.0.0.1", 5000), 1, 1).decode()
    assert "m=audio 5000 RTP/AVP 9 0 8 101" in ans and "a=rtpmap:9 G722/8000" in ans
    # static 9 without an rtpmap; a G722/16000 rtpmap is not RFC 3551's G.722 and is not taken
    assert negotiate_offer(parse_sdp(offer("9")), codecs).media.codec.name == "G722"
    assert negotiate_offer(parse_sdp(offer("9 0", "a=rtpmap:9 G722/16000")), codecs).media.codec.name == "PCMU"
    # not configured: G.711 as before, in the offer's order
    assert negotiate_offer(o, ("PCMU", "PCMA")).media.codec.name == "PCMU"
    assert negotiate_offer(parse_sdp(offer("8 0 9")), ("PCMU", "PCMA")).media.codec.name == "PCMA"
    ours = build_offer(("127.0.0.1", 5000), codecs, 1, 1).decode()
    assert "m=audio 5000 RTP/AVP 9 0 8 101" in ours and "a=rtpmap:9 G722/8000" in ours


async def test_player_slices_the_encoding_and_loops() -> None:
    pcm16 = sweep(16000, 0.5)
    pcm8 = resample(pcm16, 16000, 8000)
    media = media_from_pcm("x", pcm8, True, pcm16)
    enc = media.encoded["G722"]
    assert enc[:len(enc) - 160] == g722_encode(pcm16)[:len(enc) - 160]
    player = Player(PCMU, lambda t, pb: None)
    player.set_codec(G722)
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(media)
    pb = new_playback("c", PlayRequest(url="u", loop=2), fut)
    player.enqueue(pb)
    out = []
    while (p := player.next_payload(160, 0, 0)) is not None:
        out.append(p)
    assert all(len(p) == 160 for p in out)
    n = -(-len(enc) // 160)
    pad = G722.silence_payload(n * 160 - len(enc))
    assert b"".join(out) == (enc + pad) * 2 and pb.state == "completed" and pb.ms_played == 2 * len(enc) // 8
    # volume: the per-packet path, one stateful encoder for the leg: valid G.722 of the scaled audio
    fut2 = asyncio.get_running_loop().create_future()
    fut2.set_result(media)
    player.enqueue(new_playback("c", PlayRequest(url="u", volume_db=-6.0), fut2))
    quiet = b"".join(iter(lambda: player.next_payload(160, 0, 0) or b"", b""))
    got = g722_decode(quiet).astype(np.float64)
    full = g722_decode(enc).astype(np.float64)
    ratio = np.sqrt(np.mean(got[800:-800] ** 2) / np.mean(full[800:-800] ** 2))
    assert 0.4 < ratio < 0.6, ratio


def test_jitter_buffer_decodes_g722() -> None:
    t = np.arange(16000) / 16000
    tone = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    enc = g722_encode(tone)
    jb = JitterBuffer(target_ms=40)
    popped = []
    for i in range(len(enc) // 160):  # one packet in, one packet time out, as the mixer does
        assert jb.push(i, i * 160, enc[i * 160:(i + 1) * 160], i * 0.02, payload_type=9, ssrc=1)
        if (x := jb.pop(160)) is not None:
            popped.append(x)
    out = np.concatenate(popped).astype(np.float64)
    assert len(out) > 6000 and jb.stats.ignored == 0 and jb.stats.skipped_samples == 0
    spec = np.abs(np.fft.rfft(out[400:] * np.hanning(len(out) - 400)))
    assert abs(np.fft.rfftfreq(len(out) - 400, 1 / 8000)[np.argmax(spec)] - 1000) < 10
    # packet by packet, the same as one decode of the whole stream (the decoder keeps its state)
    dec = G722FrameDecoder()
    assert np.array_equal(np.concatenate([dec(enc[i:i + 160]) for i in range(0, 1600, 160)]),
                          G722FrameDecoder()(enc[:1600]))


@pytest.mark.parametrize("processes", [0, 1])
async def test_wideband_loader_in_a_thread_and_in_a_worker_process(tmp_path, processes: int) -> None:
    """A stored 16 kHz WAV larger than the thread-decode limit goes to a worker process (processes=1):
    either way the media carries FFmpeg's G.722 encoding of the file's own samples."""
    from mediasrv.content.loader import MediaLoader
    from mediasrv.media.player import SourceSpec

    pcm = sweep(16000, 40.0)  # 1.28 MB of WAV: over THREAD_DECODE_BYTES
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "long.wav").write_bytes(wav(pcm, 16000))
    loader = MediaLoader.create(str(tmp_path), wideband=True, decode_processes=processes)
    try:
        if processes:
            loader.start_workers()
            for _ in range(500):
                if loader._workers is not None and loader._workers.available():
                    break
                await asyncio.sleep(0.02)
        media, _ = await loader.prefetch(SourceSpec(media="long.wav"))
        assert loader.stats["process_decodes"] == processes
        g = bytes(media.encoded["G722"])
        assert len(g) == len(media.pcm) == 320000
        assert g[:-160] == ffmpeg_g722(pcm)[: len(g) - 160]
    finally:
        await loader.close()
