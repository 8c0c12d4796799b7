"""What to play: one source of a play command, dialect-neutral (the loader's input).

Its own module so the content pipeline (loader) and the real-time path (player) share it
without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .synth import SpeechSpec

__all__ = ["SourceSpec"]


@dataclass
class SourceSpec:
    """One thing to play: exactly one of ``url``, ``media`` (a stored name) or ``content`` (bytes)."""

    url: str | None = None
    media: str | None = None
    content: bytes | None = field(default=None, repr=False)  # inline audio, already base64-decoded
    audio_type: str | None = None  # declared type ("wav", "mp3", a MIME type): a hint, the bytes decide
    username: str | None = None  # HTTP Basic credentials for this URL only; never logged
    password: str | None = field(default=None, repr=False)
    cache: bool | None = None  # True: cache even without HTTP caching headers; False: never; None: RFC 9111
    cache_id: str | None = None  # caller's cache key (a rotating signed URL can share one entry)
    speech: SpeechSpec | None = None  # text to speech (synth.py), cached by engine, voice, rate and text
    tone: str | None = None  # a synthesized tone (tones.py grammar), e.g. "ring" or "440+480:2000/4000"
    digits: str | None = None  # in-band DTMF tones for these keys
    duration_ms: int | None = None  # tone: its length (default: one cadence cycle, 1 s when continuous)
    digit_ms: int = 100  # digits: each key's tone
    gap_ms: int = 100  # digits: silence between keys

    @property
    def synthesized(self) -> bool:
        return self.tone is not None or self.digits is not None

    def describe(self) -> str:
        if self.speech is not None:
            return self.speech.describe()
        if self.tone is not None:
            return f"tone:{self.tone}"
        if self.digits is not None:
            return f"digits:{self.digits}"
        if self.url is not None:
            return self.url.split("?", 1)[0]  # never the query string: signed URLs carry secrets there
        if self.media is not None:
            return f"media:{self.media}"
        return f"content:{len(self.content or b'')} bytes"
