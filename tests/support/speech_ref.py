"""What a speak source must sound like, made independently of the server: espeak-ng's own output.

``reference_pcm`` runs espeak-ng directly and decodes its WAV with libsndfile and the one-shot
resampler (what the RTP must equal bit for bit: the pipeline is deterministic); ``sox_pcm`` resamples the same output
with SoX instead (an independent resampler: the RTP must correlate highly with it).
"""

from __future__ import annotations

import io
import subprocess

import numpy as np
import soundfile

from mediacodecs.g711 import ulaw_decode, ulaw_encode
from mediacodecs.resample import to_telephony
from mediasrv.content.synth import fix_wav_sizes

from .paths import require


def espeak_wav(text: str, voice: str = "en-us", rate: int = 175, ssml: bool = False) -> bytes:
    args = [require("espeak-ng"), "--stdout", "-b", "1", "-v", voice, "-s", str(rate)] + (["-m"] if ssml else [])
    return fix_wav_sizes(subprocess.run(args, input=text.encode(), capture_output=True, check=True,
                                        timeout=20).stdout)


def reference_pcm(text: str, voice: str = "en-us", rate: int = 175, ssml: bool = False) -> np.ndarray:
    """espeak-ng's WAV read by libsndfile and resampled in one shot: independent of the server's
    streaming WAV decoder, which must match it bit for bit."""
    data, wav_rate = soundfile.read(io.BytesIO(espeak_wav(text, voice, rate, ssml)), dtype="int16", always_2d=True)
    return to_telephony(data, wav_rate, 8000)


def sox_pcm(text: str, voice: str = "en-us", rate: int = 175, ssml: bool = False) -> np.ndarray:
    raw = subprocess.run([require("sox"), "-t", "wav", "-", "-r", "8000", "-t", "raw", "-e", "signed", "-b", "16",
                          "-c", "1", "-"], input=espeak_wav(text, voice, rate, ssml), capture_output=True, check=True,
                         timeout=20).stdout
    return np.frombuffer(raw, "<i2").astype(np.int16)


def assert_spoken(payload: bytes, text: str, voice: str = "en-us", rate: int = 175, ssml: bool = False,
                  times: int = 1) -> int:
    """The µ-law *payload* holds espeak-ng's audio for *text* bit-exact (*times* in a row, each source's
    last packet padded with silence), and it correlates with SoX's resampling of the same output;
    returns where it starts."""
    ref = reference_pcm(text, voice, rate, ssml)
    expected = ulaw_encode(ref)
    padded = expected + b"\xff" * (-len(expected) % 160)
    at = payload.find(padded * (times - 1) + expected)
    assert at >= 0, f"espeak-ng's audio for {text[:40]!r} ({voice}, {rate}) did not arrive bit-exact"
    got = ulaw_decode(payload[at:at + len(expected)]).astype(np.float64)
    other = sox_pcm(text, voice, rate, ssml).astype(np.float64)
    n = min(len(got), len(other))
    corr = max(float(np.corrcoef(got[lag:n], other[: n - lag])[0, 1]) for lag in range(0, 8))
    corr = max(corr, *(float(np.corrcoef(got[: n - lag], other[lag:n])[0, 1]) for lag in range(1, 8)))
    assert corr > 0.9, f"correlation with SoX's resampling of espeak-ng's output is only {corr:.3f}"
    return at
