"""Synthesized sources: call-progress tones and in-band DTMF, as 8 kHz int16 PCM.

Tone spec grammar (``{"tone": ...}``)::

    tone    := name | spec
    name    := ("dial" | "ring" | "busy" | "congestion" | "callwaiting") ["/" country]   (country: us uk de fr)
    spec    := freqs [":" cadence]
    freqs   := freq ("+" freq)* ["@" level]        freq: 1-3999 Hz; level: dBm0 per frequency, -60..0
                                                   (default -13); freqs "0" is silence
    cadence := ms "/" ms ("/" ms "/" ms)*          on, off, on, off ... (each 1-60000 ms)

``440+480:2000/4000`` is the US ring-back (2 s of 440 + 480 Hz, 4 s of silence).  A source is one
cadence cycle, or ``duration_ms`` of it repeated (cut to whole cycles' time); a tone without a
cadence lasts ``duration_ms`` (default 1 s).  Loop the playback for a continuous tone (ARI's
``tone:`` plays until stopped).

Digits (``{"digits": "123#"}``): each key's two DTMF frequencies (ITU-T Q.23) at -7 / -5 dBm0 for
``digit_ms`` (default 100), ``gap_ms`` of silence between keys (default 100).
"""

from __future__ import annotations

import re

import numpy as np

RATE = 8000
MAX_TONE_MS = 600_000
DEFAULT_LEVEL = -13.0

# Call-progress tones by country (ITU-T E.180 supplement values).
NAMED: dict[str, dict[str, str]] = {
    "us": {"dial": "350+440", "ring": "440+480:2000/4000", "busy": "480+620:500/500",
           "congestion": "480+620:250/250", "callwaiting": "440:300/9700"},
    "uk": {"dial": "350+440", "ring": "400+450:400/200/400/2000", "busy": "400:375/375",
           "congestion": "400:400/350/225/525", "callwaiting": "400:100/3000"},
    "de": {"dial": "425", "ring": "425:1000/4000", "busy": "425:480/480",
           "congestion": "425:240/240", "callwaiting": "425:200/200/200/5000"},
    "fr": {"dial": "440", "ring": "440:1500/3500", "busy": "440:500/500",
           "congestion": "440:250/250", "callwaiting": "440:300/10000"},
}

DTMF_FREQS = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}
MAX_DIGITS = 64

_SPEC_RE = re.compile(r"^(\d{1,4}(?:\+\d{1,4}){0,3})(?:@(-?\d{1,2}(?:\.\d+)?))?(?::(\d{1,5}(?:/\d{1,5})*))?$")


class ToneError(ValueError):
    """A tone or digits spec we cannot synthesize (the API's 422, naming the field)."""


def _amplitude(dbm0: float) -> float:
    # 0 dBm0 is a sine 3.14 dB below the G.711 full-scale sine (ITU-T G.711 Table 5/6)
    return 32767.0 * 10 ** ((dbm0 - 3.14) / 20)


def _sines(freqs: tuple[float, ...], level: float, samples: int, phase0: int = 0) -> np.ndarray:
    t = (np.arange(samples) + phase0) / RATE
    out = np.zeros(samples, np.float64)
    amp = _amplitude(level)
    for f in freqs:
        if f > 0:
            out += amp * np.sin(2 * np.pi * f * t)
    return out


def resolve(spec: str) -> str:
    """A name (``ring``, ``busy/uk``) → its spec; a spec unchanged."""
    name, _, country = spec.strip().lower().partition("/")
    if name in NAMED["us"]:
        table = NAMED.get(country or "us")
        if table is None:
            raise ToneError(f"unknown country {country!r} for tone {name!r} (known: {', '.join(sorted(NAMED))})")
        return table[name]
    return spec.strip()


def tone_pcm(spec: str, duration_ms: int | None = None) -> np.ndarray:
    """The tone *spec* (a name or the grammar above) as int16 PCM."""
    m = _SPEC_RE.match(resolve(spec))
    if m is None:
        raise ToneError(f"not a tone spec: {spec[:64]!r} (e.g. \"440+480:2000/4000\" or \"ring\")")
    freqs = tuple(float(f) for f in m.group(1).split("+"))
    if any(not 0 <= f < RATE / 2 for f in freqs) or (len(freqs) > 1 and 0 in freqs):
        raise ToneError("tone frequencies must be 1-3999 Hz (or a lone 0 for silence)")
    level = float(m.group(2)) if m.group(2) else DEFAULT_LEVEL
    if not -60 <= level <= 0:
        raise ToneError(f"tone level must be -60..0 dBm0, got {level:g}")
    cadence = [int(x) for x in m.group(3).split("/")] if m.group(3) else []
    if cadence and (len(cadence) % 2 or any(not 1 <= c <= 60_000 for c in cadence)):
        raise ToneError("a cadence is on/off pairs of 1-60000 ms")
    if duration_ms is not None and not 1 <= duration_ms <= MAX_TONE_MS:
        raise ToneError(f"duration_ms must be 1-{MAX_TONE_MS}")
    if not cadence:
        n = (duration_ms or 1000) * 8
        return np.round(_sines(freqs, level, n)).astype(np.int16)
    parts = []
    pos = 0
    for i, ms in enumerate(cadence):
        n = ms * 8
        parts.append(_sines(freqs, level, n, pos) if i % 2 == 0 else np.zeros(n))
        pos += n
    cycle = np.round(np.concatenate(parts)).astype(np.int16)
    if duration_ms is None:
        return cycle
    total = duration_ms * 8
    reps = -(-total // len(cycle))
    return np.tile(cycle, reps)[:total]


def dtmf_pcm(digits: str, digit_ms: int = 100, gap_ms: int = 100) -> np.ndarray:
    """In-band DTMF: each key's row and column frequencies, silence between keys."""
    if not digits or len(digits) > MAX_DIGITS:
        raise ToneError(f"digits must be 1-{MAX_DIGITS} DTMF keys")
    bad = [c for c in digits.upper() if c not in DTMF_FREQS]
    if bad:
        raise ToneError(f"not a DTMF key: {bad[0]!r} (0-9, *, #, A-D)")
    if not 40 <= digit_ms <= 2000 or not 0 <= gap_ms <= 2000:
        raise ToneError("digit_ms must be 40-2000 and gap_ms 0-2000")
    on, off = digit_ms * 8, gap_ms * 8
    out = []
    for i, d in enumerate(digits.upper()):
        if i:
            out.append(np.zeros(off))
        lo, hi = DTMF_FREQS[d]
        t = np.arange(on) / RATE
        out.append(_amplitude(-7) * np.sin(2 * np.pi * lo * t) + _amplitude(-5) * np.sin(2 * np.pi * hi * t))
    return np.round(np.concatenate(out)).astype(np.int16)
