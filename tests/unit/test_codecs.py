"""G.711 bit-exact with FFmpeg over every input; resampling quality; payload registry."""

import av
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from mediacodecs import g711
from mediacodecs.resample import resample, to_mono, to_telephony

ALL_PCM = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
ALL_CODES = bytes(range(256))


def _ffmpeg_encode(name: str, pcm: np.ndarray) -> bytes:
    ctx = av.CodecContext.create(name, "w")
    ctx.sample_rate, ctx.layout, ctx.format = 8000, "mono", "s16"
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 8000
    return b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])


def _ffmpeg_decode(name: str, data: bytes) -> np.ndarray:
    ctx = av.CodecContext.create(name, "r")
    ctx.sample_rate, ctx.layout = 8000, "mono"
    return np.concatenate([f.to_ndarray().ravel() for f in ctx.decode(av.Packet(data))])


def test_ulaw_bit_exact_with_ffmpeg_all_inputs():
    assert g711.ulaw_encode(ALL_PCM) == _ffmpeg_encode("pcm_mulaw", ALL_PCM)
    assert np.array_equal(g711.ulaw_decode(ALL_CODES), _ffmpeg_decode("pcm_mulaw", ALL_CODES))


def test_alaw_bit_exact_with_ffmpeg_all_inputs():
    assert g711.alaw_encode(ALL_PCM) == _ffmpeg_encode("pcm_alaw", ALL_PCM)
    assert np.array_equal(g711.alaw_decode(ALL_CODES), _ffmpeg_decode("pcm_alaw", ALL_CODES))


def test_silence_codes_decode_to_near_zero():
    assert abs(int(g711.ulaw_decode(bytes([g711.silence_byte("PCMU")]))[0])) == 0
    assert abs(int(g711.alaw_decode(bytes([g711.silence_byte("PCMA")]))[0])) <= 8


@given(st.binary(max_size=4000), st.sampled_from(["PCMU", "PCMA"]))
def test_decode_encode_round_trip_is_identity_on_codes(data, codec):
    # Every code decodes to a value that encodes back to the same code (except A-law/µ-law negative zero).
    pcm = g711.decode(codec, data)
    again = g711.encode(codec, pcm)
    back = g711.decode(codec, again)
    assert np.array_equal(back, pcm)


@given(st.lists(st.integers(-32768, 32767), max_size=2000), st.sampled_from(["PCMU", "PCMA"]))
def test_encode_error_is_bounded_by_the_segment(samples, codec):
    pcm = np.array(samples, dtype=np.int16)
    out = g711.decode(codec, g711.encode(codec, pcm)).astype(np.int32)
    err = np.abs(out - pcm.astype(np.int32))
    assert np.all(err <= np.maximum(16, np.abs(pcm.astype(np.int32)) // 16 + 8))


def _tones(rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return 0.3 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 1900 * t) + 0.2 * np.sin(2 * np.pi * 3100 * t)


def test_resampling_quality_against_analytic_reference():
    for rate in (16000, 44100, 48000):
        src = (_tones(rate, 2.0) * 32767).astype(np.int16)
        out = resample(src, rate, 8000).astype(np.float64) / 32767
        ref = _tones(8000, 2.0)[: len(out)]
        core = slice(400, len(out) - 400)
        snr = 10 * np.log10(np.sum(ref[core] ** 2) / np.sum((out[core] - ref[core]) ** 2))
        assert len(out) == 16000 and snr > 60, (rate, snr)


def test_same_rate_is_bit_exact_and_mixdown():
    pcm = (np.random.default_rng(0).normal(0, 3000, 8000)).astype(np.int16)
    assert np.array_equal(resample(pcm, 8000, 8000), pcm)
    stereo = np.stack([pcm, pcm], axis=1)
    assert np.array_equal(to_telephony(stereo, 8000), pcm)
    assert to_mono(np.array([[1.0, -1.0]], dtype=np.float32)).tolist() == [0.0]
    assert len(to_telephony(pcm, 8000, 16000)) == 16000
