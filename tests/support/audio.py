"""Test signals (chirp, tones) as PCM or WAV, the G.711 bytes a prompt must arrive as, and spectral checks
of what a caller heard."""

from __future__ import annotations

import io

import numpy as np
import soundfile

from mediacodecs.g711 import alaw_encode, ulaw_encode

RATE = 8000  # the telephony rate every helper here works at


def wav_bytes(pcm: np.ndarray, rate: int, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    data = pcm if channels == 1 else np.stack([pcm] * channels, axis=1)
    soundfile.write(buf, data, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def chirp_signal(seconds: float = 1.0, rate: int = 8000, seed: int = 1) -> np.ndarray:
    """A chirp plus a little noise: every packet differs, so misalignment cannot pass."""
    t = np.arange(int(seconds * rate)) / rate
    chirp = 0.4 * np.sin(2 * np.pi * (200 * t + 1500 * t * t / max(seconds, 1e-3)))
    noise = np.random.default_rng(seed).normal(0, 0.02, t.size)
    return (np.clip(chirp + noise, -1, 1) * 32767).astype(np.int16)


# -- a tone as RTP in a pcap file (libpcap format, Ethernet/IPv4/UDP) ----------
def tone(hz: float, seconds: float, amp: float = 0.25) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def power_at(pcm: np.ndarray, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    freqs = np.fft.rfftfreq(len(pcm), 1 / RATE)
    return float(spectrum[(freqs > hz - 20) & (freqs < hz + 20)].max())


def assert_hears(pcm: np.ndarray, present: list[float], absent: list[float], who: str) -> None:
    assert len(pcm) >= RATE // 2, f"{who} received only {len(pcm)} samples"
    loudest_absent = max([power_at(pcm, hz) for hz in absent] + [1.0])
    for hz in present:
        p = power_at(pcm, hz)
        assert p > 100 * loudest_absent, f"{who}: {hz} Hz at {p:.0f} vs absent tones at {loudest_absent:.0f}"
    # nothing but the expected tones: they hold nearly all the energy
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm)))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / RATE)
    near = np.zeros_like(freqs, dtype=bool)
    for hz in present:
        near |= np.abs(freqs - hz) < 40
    assert spectrum[near].sum() > 0.97 * spectrum.sum(), f"{who} hears more than {present}"


def align(src: np.ndarray, rec: np.ndarray) -> tuple[int, float]:
    """Lag of *src* inside *rec* by FFT cross-correlation, and the normalized correlation there."""
    x = src.astype(np.float64)
    y = rec.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(x.size + y.size)))
    xc = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n)[: y.size - x.size + 1]
    lag = int(np.argmax(xc))
    seg = y[lag : lag + x.size]
    denom = np.sqrt(np.dot(x, x) * np.dot(seg, seg))
    return lag, float(np.dot(x, seg) / denom) if denom else 0.0


SILENCE = {"PCMU": 0xFF, "PCMA": 0xD5}


def expected_payload(pcm: np.ndarray, codec: str) -> bytes:
    enc = ulaw_encode(pcm) if codec == "PCMU" else alaw_encode(pcm)
    pad = (-len(enc)) % 160
    return enc + bytes([SILENCE[codec]]) * pad
