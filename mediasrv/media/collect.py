"""Play-and-collect: digits gathered against limits and timeouts (sans-I/O; the plane arms the timer).

A collect waits for its prompt (if any) to end before the first-digit timeout starts, as
FreeSWITCH ``play_and_get_digits`` and ARI do; digits pressed during the prompt count (and, with
``barge_in``, stop it).  It ends exactly once, with the digits and why:

- ``max_digits``: that many digits arrived;
- ``terminator``: a terminator key arrived (not included in ``digits``);
- ``timeout``: no first digit within ``first_digit_timeout_ms`` of the prompt's end, or no next one
  within ``inter_digit_timeout_ms``;
- ``call_hangup`` / ``stopped`` (a newer collect or a stop command).

``valid`` says whether ``min_digits`` were collected.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from .dtmf import DIGITS
from .player import PlayError, PlayRequest

MAX_DIGITS = 128
MAX_TIMEOUT_MS = 3_600_000


@dataclass
class CollectRequest:
    prompt: PlayRequest | None = None
    min_digits: int = 1
    max_digits: int = 128
    terminators: str = "#"  # any of these ends the collect; "" for none
    first_digit_timeout_ms: int = 5000
    inter_digit_timeout_ms: int = 5000
    barge_in: bool = True  # a digit stops the prompt
    command_id: str | None = None

    def validate(self) -> None:
        """PlayError (422) naming the field for limits no caller could satisfy."""
        if not 1 <= self.max_digits <= MAX_DIGITS:
            raise PlayError("out_of_range", f"max_digits must be between 1 and {MAX_DIGITS}, got {self.max_digits}")
        if not 0 <= self.min_digits <= self.max_digits:
            raise PlayError("out_of_range",
                            f"min_digits must be between 0 and max_digits ({self.max_digits}), got {self.min_digits}")
        for name in ("first_digit_timeout_ms", "inter_digit_timeout_ms"):
            value = getattr(self, name)
            if not 1 <= value <= MAX_TIMEOUT_MS:
                raise PlayError("out_of_range", f"{name} must be between 1 and {MAX_TIMEOUT_MS}, got {value}")
        bad = [c for c in self.terminators if c not in DIGITS]
        if bad:
            raise PlayError("invalid_field", f"terminator must be DTMF keys (0-9, *, #, A-D), got {bad[0]!r}")


@dataclass(eq=False)
class Collect:
    request: CollectRequest
    call_id: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    digits: str = ""
    reason: str | None = None
    prompt_ids: set[str] = field(default_factory=set)  # the prompt's playbacks still going
    deadline: float | None = None  # when the running timeout fires (None: the prompt is still playing)

    @property
    def ended(self) -> bool:
        return self.reason is not None

    def start(self, now: float) -> None:
        if not self.prompt_ids:
            self.deadline = now + self.request.first_digit_timeout_ms / 1000

    def prompt_ended(self, playback_id: str, now: float) -> None:
        self.prompt_ids.discard(playback_id)
        if not self.prompt_ids and self.deadline is None and not self.ended:
            wait = self.request.inter_digit_timeout_ms if self.digits else self.request.first_digit_timeout_ms
            self.deadline = now + wait / 1000

    def digit(self, d: str, now: float) -> bool:
        """One key press; True when it ended the collect."""
        if self.ended:
            return False
        if d in self.request.terminators:
            self.reason = "terminator"
            return True
        self.digits += d
        if len(self.digits) >= self.request.max_digits:
            self.reason = "max_digits"
            return True
        if not self.prompt_ids:
            self.deadline = now + self.request.inter_digit_timeout_ms / 1000
        return False

    def expire(self, now: float) -> bool:
        if self.ended or self.deadline is None or now < self.deadline:
            return False
        self.reason = "timeout"
        return True

    def to_dict(self) -> dict[str, Any]:
        r = self.request
        return {
            "id": self.id, "call_id": self.call_id, "command_id": r.command_id, "digits": self.digits,
            "reason": self.reason, "state": "ended" if self.ended else "collecting",
            "valid": len(self.digits) >= r.min_digits, "min_digits": r.min_digits, "max_digits": r.max_digits,
            "terminators": r.terminators, "first_digit_timeout_ms": r.first_digit_timeout_ms,
            "inter_digit_timeout_ms": r.inter_digit_timeout_ms, "barge_in": r.barge_in,
        }
