"""One call leg's signaling state inside the SIP core: a phase enum plus what the protocol must remember."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from . import sdp as sdpmod
from .dialog import Dialog
from .digest import Credentials
from .message import Request
from .timers import Timer
from .transaction import ClientInviteTx, Dest, ServerInviteTx


class Phase(enum.Enum):
    """Where a leg is. One value at a time: these used to be five booleans that could disagree."""

    OFFERED = "offered"  # inbound: INVITE received, the controller has not decided yet
    RINGING = "ringing"  # inbound: 180 sent
    EARLY = "early"  # inbound: 183 with our SDP answer sent (the 200 repeats it)
    CALLING = "calling"  # outbound: INVITE sent, no provisional yet
    PROCEEDING = "proceeding"  # outbound: a provisional came
    CANCELLING = "cancelling"  # outbound: CANCEL wanted; sent at the first provisional
    CANCELLED = "cancelled"  # outbound: CANCEL sent, waiting for the 487 (or a 2xx that lost the race)
    ANSWERED = "answered"  # a 2xx went (inbound) or came (outbound)
    ENDED = "ended"


UNANSWERED_IN = frozenset({Phase.OFFERED, Phase.RINGING, Phase.EARLY})
UNANSWERED_OUT = frozenset({Phase.CALLING, Phase.PROCEEDING, Phase.CANCELLING, Phase.CANCELLED})


@dataclass(eq=False)
class Session:
    """One leg: its dialog, its INVITE transactions, its SDP session id and version."""

    sid: str
    inbound: bool
    local_tag: str
    sip_call_id: str
    phase: Phase
    label: str = ""  # the controller's name for the call (logs carry it)
    dialog: Dialog | None = None
    invite_req: Request | None = None  # inbound: the initial INVITE
    invite_tx: ServerInviteTx | ClientInviteTx | None = None
    reinvite_tx: ServerInviteTx | None = None
    offer_plan: sdpmod.OfferPlan | None = None  # inbound: the INVITE's offer, negotiated
    offer_sdp: sdpmod.Sdp | None = None
    reinvite_wait: tuple[ServerInviteTx, sdpmod.Sdp | None, sdpmod.OfferPlan | None] | None = None  # awaits a command
    local_rtp: tuple[str, int] | None = None  # our RTP address, from the answer/INVITE command
    sess_id: int = 0
    sdp_version: int = 1
    awaiting_ack_sdp: bool = False  # our 2xx made the offer: the answer comes in the ACK
    early_answer: bytes | None = None  # inbound: the SDP answer sent in the 183, repeated as is in the 200
    ring_timer: Timer | None = None  # inbound, ringing: ends the call after CoreSettings.ring_timeout_s
    # outbound
    flow: Dest | None = None
    uri: str = ""  # Request-URI and To of our INVITE
    from_uri: str = ""
    from_value: str = ""
    to_value: str = ""
    cseq: int = 0
    via: str = ""  # the Via of our current INVITE (a CANCEL repeats it)
    ack_bytes: bytes | None = None
    user_headers: list[tuple[str, str]] = field(default_factory=list)  # extra INVITE headers
    offer_body: bytes = b""  # our SDP offer, the same in every (authenticated) retry
    credentials: Credentials | None = None
    auth_attempts: int = 0

    @property
    def ended(self) -> bool:
        return self.phase is Phase.ENDED

    @property
    def answered(self) -> bool:
        return self.phase is Phase.ANSWERED
