"""Payload types we speak: static G.711 and the dynamic telephone-event."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PayloadType:
    name: str
    pt: int
    clock_rate: int = 8000


STATIC = {"PCMU": PayloadType("PCMU", 0), "PCMA": PayloadType("PCMA", 8)}
BY_NUMBER = {p.pt: p for p in STATIC.values()}
TELEPHONE_EVENT_DEFAULT_PT = 101
