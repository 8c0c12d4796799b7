"""Audio sources → :class:`Media`: decoded 8 kHz PCM with its encodings, built while it decodes.

A :class:`Media` is what the clock plays: encoded payloads made once and only sliced per packet.
:class:`MediaBuilder` grows one while the body decodes (the loader hands it to the player once
~100 ms are ready, ``complete=False``); :func:`choose_decoder` picks the decoder from the bytes.
Failures are :class:`SourceError` with a machine-readable reason.  Loading (single flight,
claims, cache, store) is :mod:`mediasrv.content.loader`.

Memory for a 1-hour source: the raw body is never kept (each chunk is decoded and dropped);
the decoded 8 kHz PCM is 57.6 MB and each G.711 encoding 28.8 MB.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mediacodecs.codec import G722
from mediacodecs.g711 import alaw_encode, ulaw_encode

from . import decode
from .errors import SourceError

__all__ = ["Media", "MediaBuilder", "SourceError", "choose_decoder", "decode_base64", "media_from_pcm"]

RATE = 8000
NOT_AUDIO = ("html", "json", "xml", "text", "unknown")


@dataclass
class Media:
    """Decoded 8 kHz mono PCM with its encodings (G.711; G.722 from the 16 kHz decode when the loader
    is wideband), made once and shared by every play.  Every encoding has one byte per 8 kHz sample."""

    source: str
    pcm: np.ndarray
    encoded: dict[str, bytes] = field(default_factory=dict)
    # Streaming contract: while ``complete`` is False the media is still being decoded and
    # ``encoded[codec]`` may be a bytearray that only grows; a player that reaches its end
    # sends silence (an underrun, counted) instead of ending.  ``error`` is set if decoding
    # failed after playback started; the playback then ends failed with that reason.
    complete: bool = True
    error: SourceError | None = None

    @property
    def duration_ms(self) -> int:
        return int(len(self.pcm) * 1000 / RATE)

    @property
    def size_bytes(self) -> int:
        return self.pcm.nbytes + sum(len(b) for b in self.encoded.values())


def _encode_both(pcm: np.ndarray) -> tuple[bytes, bytes]:
    return ulaw_encode(pcm), alaw_encode(pcm)


def media_from_pcm(source: str, pcm: np.ndarray, wide: bool = False, pcm16: np.ndarray | None = None) -> Media:
    """Media from 8 kHz PCM; *wide*: with its G.722 encoding, from *pcm16* if given (else upsampled)."""
    ulaw, alaw = _encode_both(pcm)
    encoded = {"PCMU": ulaw, "PCMA": alaw}
    if wide:
        encoded["G722"] = G722.encode(pcm, pcm16)
    return Media(source, pcm, encoded)


def choose_decoder(head: bytes, declared: str | None, content_type: str | None, url_path: str | None,
                   size: int, source: str, max_seconds: float, wide: bool = False) -> Any:
    """A StreamDecoder for the bytes, or ``not_audio`` / ``unsupported_format`` saying what they are."""
    kind = decode.decide_type(head, declared, content_type, url_path)
    if kind in NOT_AUDIO or not head:
        raise SourceError("not_audio", decode.not_audio_message(head, content_type, size))
    return decode.StreamDecoder(kind, source, RATE, max_seconds, wide=wide)


# -- building a Media while it decodes ------------------------------------------------------------
class MediaBuilder:
    """Appends decoded PCM and its encodings to one growing :class:`Media`.

    The PCM lives in a buffer that doubles when full; growing it (a copy) happens in the
    executor, never on the clock's thread.  The encodings are bytearrays the player slices.
    """

    def __init__(self, source: str, wide: bool = False) -> None:
        self._buf = np.zeros(0, np.int16)
        self.samples = 0
        encoded: dict[str, Any] = {"PCMU": bytearray(), "PCMA": bytearray()}
        if wide:
            encoded["G722"] = bytearray()  # from the decoder's own 16 kHz stream; lags the PCM by < 20 ms
        self.media = Media(source, self._buf[:0], encoded, complete=False)

    def decode_step(self, decoder: Any, chunk: bytes | None) -> tuple[int, bytes, bytes, bytes]:
        """Blocking: decode *chunk* (None = end of body), store its PCM, return its encodings."""
        pcm = decoder.feed(chunk) if chunk is not None else decoder.finish()
        n = self.store(pcm)
        ulaw, alaw = _encode_both(pcm) if n else (b"", b"")
        g722 = decoder.take_g722() if getattr(decoder, "wide", False) else b""
        return n, ulaw, alaw, g722

    def store(self, pcm: np.ndarray) -> int:
        """Blocking: copy *pcm* after the samples so far (growing the buffer); not yet visible."""
        n = len(pcm)
        if n:
            need = self.samples + n
            if need > len(self._buf):
                grown = np.empty(max(need, 2 * len(self._buf), 10 * RATE), np.int16)
                grown[: self.samples] = self._buf[: self.samples]
                self._buf = grown
            self._buf[self.samples: need] = pcm
        return n

    def publish(self, n: int, ulaw: bytes, alaw: bytes, g722: bytes = b"") -> None:
        """On the loop's thread: make the new samples visible to players."""
        if n:
            self.samples += n
            self.media.pcm = self._buf[: self.samples]
            self.media.encoded["PCMU"] += ulaw
            self.media.encoded["PCMA"] += alaw
        if g722 and G722.name in self.media.encoded:
            self.media.encoded["G722"] += g722

    def trim(self) -> np.ndarray:
        """Blocking: the PCM without the buffer's spare capacity."""
        return self._buf[: self.samples].copy() if len(self._buf) > self.samples else self._buf


def decode_base64(value: str) -> bytes:
    """Strict base64 (standard or URL-safe alphabet, whitespace ignored)."""
    text = "".join(value.split())
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    return base64.b64decode(text, validate=True)
