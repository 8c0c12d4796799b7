"""Helpers every dialect shares: loop counts, Basic credentials, ISO-8601 times.

Each dialect used to carry its own copy of these; here they are written once and raise
plain signals (:class:`BadLoop`, None) that each dialect renders in its vendor's error shape.
Looking up the call a command names is the command service's job (mediasrv/calls/commands.py).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from datetime import UTC, datetime
from typing import Any

from ..media.player import MAX_LOOP

__all__ = ["MAX_LOOP", "BadLoop", "basic_credentials", "basic_matches", "iso_z", "parse_loop", "same"]


class BadLoop(Exception):
    """A loop value that is not a count: ``out_of_range`` tells an integer outside 1..MAX_LOOP from a wrong type."""

    def __init__(self, value: Any, out_of_range: bool) -> None:
        super().__init__(f"loop must be between 1 and {MAX_LOOP}, got {value}" if out_of_range else "bad loop")
        self.value = value
        self.out_of_range = out_of_range


def parse_loop(value: Any, forever: tuple[str, ...] = ("infinity",), digit_strings: bool = False) -> int | None:
    """None → 1; one of *forever* (any case) → None (forever); an integer 1..MAX_LOOP → itself.

    With *digit_strings*, ``" 5 "`` counts as 5 (Telnyx's SDK may send the count as text).
    """
    if value is None:
        return 1
    if isinstance(value, str):
        text = value.strip().lower()
        if text in forever:
            return None
        if digit_strings and text.lstrip("-").isdigit():
            value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadLoop(value, out_of_range=False)
    if not 1 <= value <= MAX_LOOP:
        raise BadLoop(value, out_of_range=True)
    return value


def basic_credentials(header: str) -> tuple[str, str] | None:
    """``Authorization: Basic <base64 user:password>`` → (user, password), or None when it is not that."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def same(given: str, expected: str) -> bool:
    """Constant-time string compare."""
    return hmac.compare_digest(given.encode(), expected.encode())


def basic_matches(header: str, user: str, password: str) -> bool:
    """Whether *header* carries exactly these Basic credentials (both compared in constant time)."""
    creds = basic_credentials(header)
    if creds is None:
        return False
    ok_user = same(creds[0], user)
    ok_password = same(creds[1], password)
    return ok_user and ok_password


def iso_z(ts: float | None, fraction: bool = True) -> str | None:
    """A UNIX time as UTC ISO-8601 with ``Z``; *fraction* always prints microseconds (else only when non-zero).

    None (and, without *fraction*, 0) → None: the time is not known.
    """
    if ts is None or (not fraction and not ts):
        return None
    when = datetime.fromtimestamp(ts, UTC)
    if fraction:
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return when.isoformat().replace("+00:00", "Z")

