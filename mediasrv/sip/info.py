"""SIP INFO key presses (sans-I/O): ``application/dtmf-relay`` and ``application/dtmf`` bodies.

Not RFC 6086 Info Packages: the legacy bodies that PBXs and SBCs send (Cisco's dtmf-relay
``Signal=5`` / ``Duration=160``, and a bare key).  The SIP core answers a readable one 200 and
hands the key to the media backend (``MediaBackend.dtmf_info``), an unreadable one 400.
"""

from __future__ import annotations

import re

DIGITS = "0123456789*#ABCD"  # RFC 4733 event codes 0-15, the same keys

INFO_TYPES = ("application/dtmf-relay", "application/dtmf")
MAX_INFO_DURATION_MS = 10_000
_SIGNAL_RE = re.compile(r"^\s*signal\s*=\s*(\S+)\s*$", re.I | re.M)
_DURATION_RE = re.compile(r"^\s*duration\s*=\s*(\d{1,6})\s*$", re.I | re.M)


class InfoError(ValueError):
    """An INFO DTMF body we cannot read (the SIP layer answers it with a 4xx)."""


def parse_info(content_type: str, body: bytes, default_ms: int = 250) -> tuple[str, int]:
    """An INFO body → (digit, duration_ms).

    ``application/dtmf-relay``: ``Signal=5`` and ``Duration=160`` lines (Cisco; the duration in ms,
    250 when absent); ``application/dtmf``: the key alone (``5``, or its event code ``0``-``15``).
    """
    text = body[:512].decode("ascii", "replace")
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "application/dtmf-relay":
        m = _SIGNAL_RE.search(text)
        if m is None:
            raise InfoError("no Signal= line")
        key = m.group(1)
        d = _DURATION_RE.search(text)
        duration = int(d.group(1)) if d else default_ms
    elif ctype == "application/dtmf":
        key = text.strip()
        duration = default_ms
    else:
        raise InfoError(f"unsupported content type {ctype!r}")
    digit = info_digit(key)
    if not 0 < duration <= MAX_INFO_DURATION_MS:
        raise InfoError(f"duration {duration} ms out of range")
    return digit, duration


def info_digit(key: str) -> str:
    key = key.strip().upper()
    if len(key) == 1 and key in DIGITS:
        return key
    if key.isdigit() and int(key) < len(DIGITS):
        return DIGITS[int(key)]
    raise InfoError(f"not a DTMF key: {key[:16]!r}")
