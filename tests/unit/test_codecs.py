"""G.711 bit-exact with FFmpeg over every input; resampling quality; payload registry."""

import av
import numpy as np
import pytest
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


def _sweep(rate: int, seconds: float = 4.0, f0: float = 50.0, f1: float = 3500.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    k = np.log(f1 / f0) / seconds
    return 0.5 * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)


def _band_limited_reference(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Offline ideal resampler: keep the spectrum below the target Nyquist, inverse FFT at the new length."""
    m = int(round(len(x) * to_rate / from_rate))
    spectrum = np.fft.rfft(x)
    out = np.zeros(m // 2 + 1, complex)
    k = min(len(spectrum), len(out))
    out[:k] = spectrum[:k]
    return np.fft.irfft(out, m) * (m / len(x))


@pytest.mark.parametrize("from_rate,to_rate,min_snr", [
    (16000, 8000, 66), (22050, 8000, 66), (44100, 8000, 66), (48000, 8000, 66),
    (44100, 16000, 78), (48000, 16000, 78), (8000, 16000, 78),
])
def test_resampling_snr_of_a_sweep_against_band_limited_reference(from_rate, to_rate, min_snr):
    src = np.round(_sweep(from_rate) * 32767).astype(np.int16)
    ref = _band_limited_reference(src / 32767, from_rate, to_rate)
    out = resample(src, from_rate, to_rate) / 32767
    assert len(out) == len(ref)
    core = slice(200, len(ref) - 200)
    snr = 10 * np.log10(np.sum(ref[core] ** 2) / np.sum((out[core] - ref[core]) ** 2))
    assert snr > min_snr, (from_rate, to_rate, snr)


def test_same_rate_is_bit_exact_and_mixdown():
    pcm = (np.random.default_rng(0).normal(0, 3000, 8000)).astype(np.int16)
    assert np.array_equal(resample(pcm, 8000, 8000), pcm)
    stereo = np.stack([pcm, pcm], axis=1)
    assert np.array_equal(to_telephony(stereo, 8000), pcm)
    assert to_mono(np.array([[1.0, -1.0]], dtype=np.float32)).tolist() == [0.0]
    assert len(to_telephony(pcm, 8000, 16000)) == 16000


def test_mixdown_of_any_channel_count_averages():
    six = np.tile(np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]], np.float32), (10, 1))
    assert np.allclose(to_mono(six), 0.35)
    quad = np.full((8000, 4), 16384, np.int16)
    quad[:, 3] = -16384
    assert np.all(np.abs(to_telephony(quad, 8000) - 8192) <= 1)


def test_payload_type_registry():
    from mediacodecs.registry import BY_NUMBER, STATIC

    assert STATIC["PCMU"].pt == 0 and STATIC["PCMA"].pt == 8 and BY_NUMBER[8].name == "PCMA"
    assert g711.silence_byte("PCMU") == 0xFF and g711.silence_byte("PCMA") == 0xD5
