"""Payload types: the one place that maps RTP payload type numbers and SDP rtpmaps to codec objects.

A :class:`PayloadType` is a codec as one stream carries it: the :class:`~mediacodecs.codec.Codec`
and the number the offer/answer settled on (its static number, or a dynamic one named by an
rtpmap).  SDP reads offers through :func:`codec_for` and numbers its own offers with
:func:`offer_types`; the jitter buffer decodes by :data:`BY_NUMBER` unless told the negotiated map.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .codec import CODECS, Codec

__all__ = ["PayloadType", "STATIC", "BY_NUMBER", "DYNAMIC", "PTIMES", "DEFAULT_PTIME_MS", "TELEPHONE_EVENT", "TELEPHONE_EVENT_DEFAULT_PT",
           "register", "unregister", "codec_for", "offer_types", "telephone_event_types"]

TELEPHONE_EVENT = "TELEPHONE-EVENT"  # RFC 4733's encoding name, upper-cased as rtpmaps are compared
TELEPHONE_EVENT_DEFAULT_PT = 101
DYNAMIC = range(96, 128)  # RFC 3551 3: the dynamic payload type numbers
# packet times: RTP/SDP facts, not codec facts (every codec here packs any of them)
PTIMES = (10, 20, 30, 40)  # the a=ptime values we take from an offer
DEFAULT_PTIME_MS = 20


@dataclass(frozen=True)
class PayloadType:
    codec: Codec
    pt: int

    @property
    def name(self) -> str:
        return self.codec.name

    @property
    def clock_rate(self) -> int:
        return self.codec.clock_rate

    def rtpmap(self) -> str:
        """The value of this payload type's ``a=rtpmap`` line (``0 PCMU/8000``)."""
        return f"{self.pt} {self.codec.rtpmap}"


STATIC = {c.name: PayloadType(c, c.payload_type) for c in CODECS.values() if c.payload_type is not None}
BY_NUMBER = {p.pt: p for p in STATIC.values()}


def register(codec: Codec) -> None:
    """Speak *codec* from now on: SDP offers and answers it (by its static number or its rtpmap), the
    configuration accepts its name.  A name already taken by another codec is a ValueError."""
    known = CODECS.get(codec.name)
    if known is not None and known is not codec:
        raise ValueError(f"another codec is registered as {codec.name}")
    CODECS[codec.name] = codec
    if codec.payload_type is not None:
        STATIC[codec.name] = BY_NUMBER[codec.payload_type] = PayloadType(codec, codec.payload_type)


def unregister(codec: Codec) -> None:
    """Stop speaking *codec* (tests that registered one give it back)."""
    if CODECS.get(codec.name) is codec:
        del CODECS[codec.name]
        if codec.payload_type is not None:
            STATIC.pop(codec.name, None)
            BY_NUMBER.pop(codec.payload_type, None)


def codec_for(pt: int, rtpmap: tuple[str, int] | None) -> Codec | None:
    """The codec an offer means by *pt*: its rtpmap (name, clock rate; rate 0 = unreadable) when it
    has one, else the static assignment; None for a format we do not speak (or a wrong clock rate:
    ``G722/16000`` is not RFC 3551's G.722)."""
    if rtpmap is not None:
        name, rate = rtpmap
        codec = CODECS.get(name.upper())
        return codec if codec is not None and rate in (codec.clock_rate, 0) else None
    static = BY_NUMBER.get(pt)
    return static.codec if static is not None else None


def offer_types(codecs: Iterable[Codec]) -> list[PayloadType]:
    """Numbers for our own offer: the static one where there is one, else the next free dynamic number
    (the default telephone-event number left free)."""
    free = (pt for pt in DYNAMIC if pt != TELEPHONE_EVENT_DEFAULT_PT)
    return [PayloadType(c, c.payload_type if c.payload_type is not None else next(free)) for c in codecs]


def telephone_event_types(rates: Iterable[int], taken: Iterable[int]) -> dict[int, int]:
    """One telephone-event payload type per audio clock rate (RFC 4733 2.1: events share the audio
    stream's clock): 101 for the first, then free dynamic numbers."""
    used = set(taken)
    out: dict[int, int] = {}
    for rate in dict.fromkeys(rates):
        pt = TELEPHONE_EVENT_DEFAULT_PT if TELEPHONE_EVENT_DEFAULT_PT not in used else next(
            p for p in DYNAMIC if p not in used)
        used.add(pt)
        out[rate] = pt
    return out
