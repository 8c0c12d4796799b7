"""G.711 µ-law and A-law with numpy lookup tables.

Decoding follows ITU-T G.711 (the classic segment/quantisation layout).  Encoding maps a
14-bit linear value to the code whose decoded value is nearest, with ties and segment
edges placed exactly where FFmpeg's ``pcm_mulaw``/``pcm_alaw`` encoders put them, so a
stream we send is bit-exact with what FFmpeg would produce from the same PCM.  Encoding is
one table lookup per sample (a 65,536-entry table indexed by the int16 sample's bits), so
the media clock never does arithmetic per sample.
"""

from __future__ import annotations

import numpy as np

_SIGN = 0x80
_SEG_MASK = 0x70
_QUANT_MASK = 0x0F
_ULAW_BIAS = 0x84
ULAW_MASK = 0xFF
ALAW_MASK = 0xD5


def _ulaw_to_linear(code: int) -> int:
    u = ~code & 0xFF
    t = ((u & _QUANT_MASK) << 3) + _ULAW_BIAS
    t <<= (u & _SEG_MASK) >> 4
    return _ULAW_BIAS - t if u & _SIGN else t - _ULAW_BIAS


def _alaw_to_linear(code: int) -> int:
    a = code ^ 0x55
    t = (a & _QUANT_MASK) << 4
    seg = (a & _SEG_MASK) >> 4
    if seg == 0:
        t += 8
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & _SIGN else -t


def _encode_table_14bit(to_linear, mask: int) -> np.ndarray:
    """Table over 14-bit linear values (index = (sample + 32768) >> 2) giving the nearest code.

    Walks the positive magnitudes once: between two adjacent codes the decision point is the
    midpoint of their decoded values (in the 14-bit domain, rounded as FFmpeg rounds it).
    """
    table = np.empty(16384, dtype=np.uint8)
    centre = 8192
    table[centre] = mask
    j = 1
    for i in range(127):
        lo = to_linear(i ^ mask)
        hi = to_linear((i + 1) ^ mask)
        edge = (lo + hi + 4) >> 3
        if edge > j:
            stop = min(edge, 8192)
            table[centre - stop + 1 : centre - j + 1] = i ^ (mask ^ 0x80)
            table[centre + j : centre + stop] = i ^ mask
            j = stop
    if j < 8192:
        table[centre - 8192 + 1 : centre - j + 1] = 127 ^ (mask ^ 0x80)
        table[centre + j : centre + 8192] = 127 ^ mask
    table[0] = table[1]
    return table


def _tables(to_linear, mask: int) -> tuple[np.ndarray, np.ndarray]:
    decode = np.array([to_linear(c) for c in range(256)], dtype=np.int16)
    enc14 = _encode_table_14bit(to_linear, mask)
    # index by the int16 sample's bit pattern viewed as uint16
    samples = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    encode = enc14[(samples + 32768) >> 2]
    return encode, decode


ULAW_ENCODE, ULAW_DECODE = _tables(_ulaw_to_linear, ULAW_MASK)
ALAW_ENCODE, ALAW_DECODE = _tables(_alaw_to_linear, ALAW_MASK)

SILENCE = {"PCMU": 0xFF, "PCMA": 0xD5}


def _as_index(pcm: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pcm, dtype=np.int16).view(np.uint16)


def ulaw_encode(pcm: np.ndarray) -> bytes:
    return ULAW_ENCODE[_as_index(pcm)].tobytes()


def alaw_encode(pcm: np.ndarray) -> bytes:
    return ALAW_ENCODE[_as_index(pcm)].tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    return ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes) -> np.ndarray:
    return ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


_TABLES = {"PCMU": (ULAW_ENCODE, ULAW_DECODE), "PCMA": (ALAW_ENCODE, ALAW_DECODE)}


def encode(codec: str, pcm: np.ndarray) -> bytes:
    """G.711 by name (tests and tools; the server uses :class:`mediacodecs.codec.Codec`)."""
    if codec not in _TABLES:
        raise ValueError(f"unsupported codec {codec!r}")
    return _TABLES[codec][0][_as_index(pcm)].tobytes()


def decode(codec: str, data: bytes) -> np.ndarray:
    if codec not in _TABLES:
        raise ValueError(f"unsupported codec {codec!r}")
    return _TABLES[codec][1][np.frombuffer(data, dtype=np.uint8)]


def silence_byte(codec: str) -> int:
    return SILENCE[codec]
