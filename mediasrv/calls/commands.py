"""The typed command service: what every API dialect asks of a call, with domain errors.

Why it exists: the media plane signals "no media leg" with ``KeyError`` and a refused command
with ``PlayError`` (a ``ValueError``), so a handler that caught those also caught real bugs
(a ``KeyError`` raised by mistake inside ``play()`` surfaced as "call has no media").  Here
the preconditions are checked first and named (:class:`NoSuchCall`, :class:`CallEnded`,
:class:`CallNotAnswered`, :class:`NoSuchLeg`, :class:`NoSuchPlayback`,
:class:`InvalidCommand`); anything else raised by the core is a bug and propagates as one
(a 500, logged).  Each dialect maps these errors onto its vendor's own error shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..media.player import Playback, PlayError, PlayRequest
from .registry import Call, CallRegistry, CallState

if TYPE_CHECKING:
    from ..media import MediaPlane
    from ..media.ivr import Collect, CollectRequest, DtmfSender


class CommandError(Exception):
    """A command that cannot be carried out; ``call_id`` names the call (or leg) it is about."""

    def __init__(self, call_id: str, message: str) -> None:
        super().__init__(message)
        self.call_id = call_id
        self.message = message


class NoSuchCall(CommandError):
    """No call with this id on this node (never existed, or forgotten)."""

    def __init__(self, call_id: str) -> None:
        super().__init__(call_id, f"no call with id {call_id!r}")


class CallEnded(CommandError):
    """The call exists but has ended; ``cause`` is its hangup cause."""

    def __init__(self, call: Call) -> None:
        super().__init__(call.call_id, f"call {call.call_id!r} has ended ({call.hangup_cause})")
        self.cause = call.hangup_cause


class CallNotAnswered(CommandError):
    """The command needs an answered call and this one is still ringing (or being placed)."""

    def __init__(self, call_id: str) -> None:
        super().__init__(call_id, f"call {call_id!r} is not answered yet")


class NoSuchLeg(CommandError):
    """The call is live but has no media leg (not set up yet, or already released)."""

    def __init__(self, call_id: str) -> None:
        super().__init__(call_id, f"call {call_id!r} has no media leg")


class NoSuchPlayback(CommandError):
    """No playback with this id (``call_id`` holds the playback id)."""

    def __init__(self, playback_id: str) -> None:
        super().__init__(playback_id, f"no playback with id {playback_id!r}")


class InvalidCommand(CommandError):
    """The core refuses the command as asked: ``reason`` is its code, ``status`` the HTTP class (400/409/422)."""

    def __init__(self, call_id: str, reason: str, message: str, status: int = 422) -> None:
        super().__init__(call_id, message)
        self.reason = reason
        self.status = status

    @classmethod
    def of(cls, call_id: str, exc: PlayError) -> InvalidCommand:
        return cls(call_id, exc.reason, exc.message, exc.status)


# a target leg a command cannot reach, whichever way: dialects that do not tell these apart catch this
LegUnavailable = (NoSuchCall, CallEnded, NoSuchLeg)


@dataclass
class CommandService:
    """Call lookup and media commands over the registry and the media plane, with domain errors."""

    registry: CallRegistry
    media: MediaPlane

    # -- calls -------------------------------------------------------------
    def call(self, call_id: str) -> Call:
        call = self.registry.get(call_id)
        if call is None:
            raise NoSuchCall(call_id)
        return call

    def live_call(self, call_id: str, answered: bool = False) -> Call:
        """The call if it has not ended (and, with *answered*, is answered)."""
        call = self.call(call_id)
        if call.state is CallState.ENDED:
            raise CallEnded(call)
        if answered and call.state is not CallState.ANSWERED:
            raise CallNotAnswered(call_id)
        return call

    def leg_error(self, leg_id: str) -> CommandError:
        """Why *leg_id* has no media leg to command: unknown, ended, or live without media."""
        call = self.registry.get(leg_id)
        if call is None:
            return NoSuchCall(leg_id)
        if call.state is CallState.ENDED:
            return CallEnded(call)
        return NoSuchLeg(leg_id)

    def target_legs(self, call_id: str, target: str | list[str]) -> list[str]:
        """The legs a command on *call_id* lands on, each checked to have media."""
        try:
            return self.media.target_legs(call_id, target)
        except KeyError as exc:  # target_legs' documented signal: this leg has no media
            raise self.leg_error(str(exc.args[0]) if exc.args else call_id) from None
        except PlayError as exc:
            raise InvalidCommand.of(call_id, exc) from exc

    def require_leg(self, call_id: str) -> None:
        self.target_legs(call_id, "self")

    # -- playback ----------------------------------------------------------
    def check_play(self, call_id: str, request: PlayRequest) -> list[str]:
        """Everything play() checks before anything changes (used before a 183 goes out)."""
        legs = self.target_legs(call_id, request.target)
        try:
            request.validate()
        except PlayError as exc:
            raise InvalidCommand.of(call_id, exc) from exc
        return legs

    def play(self, call_id: str, request: PlayRequest) -> list[Playback]:
        """Start (or queue) *request*: one playback per target leg (values checked first, then legs)."""
        try:
            request.validate()
        except PlayError as exc:
            raise InvalidCommand.of(call_id, exc) from exc
        self.target_legs(call_id, request.target)
        try:
            return self.media.play(call_id, request)
        except PlayError as exc:
            raise InvalidCommand.of(call_id, exc) from exc

    def stop_playbacks(self, call_id: str, which: str = "current", by: str = "api",
                       overlay: bool = False) -> list[Playback]:
        """Stop the leg's current (or all, or its overlay) playbacks; nothing when it has no media."""
        if which not in ("current", "all"):
            raise InvalidCommand(call_id, "invalid_stop", "stop must be 'current' or 'all'", 400)
        return self.media.stop_playbacks(call_id, which, by=by, overlay=overlay)

    def playback(self, playback_id: str) -> Playback:
        playback = self.media.get_playback(playback_id)
        if playback is None:
            raise NoSuchPlayback(playback_id)
        return playback

    def stop_playback(self, playback_id: str, by: str = "api") -> bool:
        """Stop one playback; False when it had already ended."""
        self.playback(playback_id)
        return self.media.stop_playback(playback_id, by=by)

    def control(self, playback_id: str, op: str, ms: int | None = None, db: float | None = None) -> Playback:
        """pause | resume | restart | seek | skip | volume on one playback."""
        playback = self.playback(playback_id)
        try:
            return self.media.control(playback_id, op, ms=ms, db=db)
        except PlayError as exc:
            raise InvalidCommand.of(playback.call_id, exc) from exc

    def pause(self, playback_id: str) -> Playback:
        return self.control(playback_id, "pause")

    def resume(self, playback_id: str) -> Playback:
        return self.control(playback_id, "resume")

    # -- DTMF --------------------------------------------------------------
    def collect(self, call_id: str, request: CollectRequest) -> Collect:
        try:
            request.validate()
            self.require_leg(call_id)
            return self.media.collect(call_id, request)
        except PlayError as exc:
            raise InvalidCommand.of(call_id, exc) from exc

    def send_dtmf(self, call_id: str, digits: str, duration_ms: int, gap_ms: int | None = None) -> DtmfSender:
        """Queue *digits* on the leg (*gap_ms* between keys: the core's default when None)."""
        self.require_leg(call_id)
        try:
            if gap_ms is None:
                return self.media.send_dtmf(call_id, digits, duration_ms)
            return self.media.ivr.send_dtmf(call_id, digits, duration_ms, gap_ms)
        except PlayError as exc:
            raise InvalidCommand.of(call_id, exc) from exc
