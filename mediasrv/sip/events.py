"""What the SIP core tells its user: one dataclass per thing that happened to a call leg.

The core never decides what a call means for the rest of the server; it reports facts (an INVITE
was offered, a re-INVITE wants new media, the peer hung up) and waits for commands (answer, ring,
reject, hang up). ``sid`` names the core's session; the call controller keeps its own map.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..calls.registry import NegotiatedMedia


class EndReason(enum.Enum):
    """Why a session ended, as the protocol saw it (the controller maps it to a hangup cause)."""

    LOCAL = "local"  # a command ended it (reject, hang up, cancel)
    BYE = "bye"  # the peer sent BYE
    CANCELLED = "cancelled"  # CANCEL: theirs for a call we were offered, ours for one we placed
    REFUSED = "refused"  # our INVITE got a 3xx-6xx
    AUTH_FAILED = "auth_failed"  # our INVITE was challenged and we could not (or no longer) answer
    TIMEOUT = "timeout"  # our INVITE got no final response (Timer B)
    RING_TIMEOUT = "ring_timeout"  # an offered call rang longer than ring_timeout_s
    NO_ACK = "no_ack"  # our 2xx was never ACKed (Timer L)
    BAD_SDP = "bad_sdp"  # the SDP answer (2xx to our INVITE, or ACK to our offer) was unusable


@dataclass(frozen=True, slots=True)
class CallOffered:
    """A new INVITE passed every protocol check; the controller answers, rings or rejects it."""

    sid: str
    sip_call_id: str
    from_uri: str
    to_uri: str
    from_display: str | None
    request_uri: str
    media: NegotiatedMedia | None  # the media the INVITE's offer negotiates to (None: no offer)


@dataclass(frozen=True, slots=True)
class ProgressReceived:
    """A 101-199 to our INVITE (the call rings); ``media`` when it carried a usable SDP answer."""

    sid: str
    status: int
    media: NegotiatedMedia | None


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """A 2xx to our INVITE was ACKed; ``media`` is its SDP answer (None: the 2xx had none)."""

    sid: str
    media: NegotiatedMedia | None
    phrase: str


@dataclass(frozen=True, slots=True)
class MediaAnswered:
    """The ACK carried the answer to the SDP offer our 2xx made."""

    sid: str
    media: NegotiatedMedia


@dataclass(frozen=True, slots=True)
class ReinviteOffered:
    """A re-INVITE; ``media`` is what its offer negotiates to (None: no offer, we offer)."""

    sid: str
    media: NegotiatedMedia | None


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """An INFO carried a DTMF digit (application/dtmf-relay or application/dtmf)."""

    sid: str
    digit: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The session is over and forgotten.

    ``status`` is the SIP status that ended it, when one did; ``outcome`` is the final result of
    an INVITE we sent (status, phrase), for whoever placed the call.
    """

    sid: str
    reason: EndReason
    status: int | None
    outcome: tuple[int, str] | None = None


Event = CallOffered | ProgressReceived | CallAnswered | MediaAnswered | ReinviteOffered | DtmfReceived | CallEnded
