"""What both roles of the SIP core share: settings, counters, ids, response building, SDP checks, events out.

Nothing here knows about calls, registries or media backends: a session ends by emitting
:class:`~mediasrv.sip.events.CallEnded`, and whoever consumes the events (the call controller)
decides what that means.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..calls.registry import NegotiatedMedia
from ..ops.logsafe import SourceLimiter, clip
from . import digest
from . import sdp as sdpmod
from .admission import Admission, AdmissionSettings
from .events import CallEnded, EndReason, Event
from .guard import SourceLog
from .message import Request, Response, split_header_list
from .session import Phase, Session
from .timers import TimerHeap
from .transaction import ClientTx, Dest, ServerTx, TransactionLayer

log = logging.getLogger("mediasrv.sip")

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"
SCHEMES = ("sip", "sips", "tel")

REASONS = {
    100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 407: "Proxy Authentication Required",
    405: "Method Not Allowed", 406: "Not Acceptable", 408: "Request Timeout", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error", 503: "Service Unavailable",
    505: "Version Not Supported", 513: "Message Too Large", 603: "Decline",
}

MEDIA_FAILED = ("Warning", '399 mediasrv "media setup failed"')


@dataclass
class CoreSettings:
    """The protocol's settings; answering policy and limits belong to the call controller."""

    host: str = "127.0.0.1"  # what we put in Via/Contact/SDP
    port: int = 5060
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    user_agent: str = "mediasrv/0.1"
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    # Why RTP must not go to an address (None: it may); the server wires the media address policy
    # (media/addrpolicy.py) in here. Checked for every SDP offer and answer before it is used.
    media_address_check: Callable[[str], str | None] | None = None
    # An inbound call left ringing this long is refused with 480 (EndReason.RING_TIMEOUT): its port
    # and sockets are not held for a caller that never CANCELs (0 = ring for ever).
    ring_timeout_s: float = 120.0
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)


def new_stats() -> dict[str, int]:
    return {
        "requests_in": 0,
        "responses_in": 0,
        "requests_out": 0,
        "responses_out": 0,
        "retransmissions": 0,
        "absorbed": 0,
        "malformed": 0,
        "calls_in": 0,
        "calls_out": 0,
        "rejected": 0,
        "no_ack": 0,
        "too_large": 0,  # messages over a size limit (413/414/513, or a TCP stream closed for it)
        "over_budget": 0,  # messages whose handling took longer than the budget (guard.py)
        "sdp_refused": 0,
        # admission (admission.py): refusals and drops before any state is kept
        "refused_source": 0,
        "refused_scanner": 0,
        "auth_challenged": 0,
        "auth_failed": 0,
        "auth_ok": 0,
        "rate_limited": 0,
        "stateless_responses": 0,
    }


_RPORT_RE = re.compile(r";\s*rport(?=\s*(?:;|$))", re.I)


class CoreBase:
    """State and helpers of the sans-I/O core: bytes and time in, bytes and events out."""

    def __init__(
        self,
        settings: CoreSettings,
        send: Callable[[bytes, Dest], None],
        clock: Callable[[], float],
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.settings = settings
        # draining (a rolling restart): new INVITEs and OPTIONS probes get 503, so a front proxy
        # (Kamailio's dispatcher) sends new calls elsewhere; calls in progress carry on
        self.draining = False
        self._send_fn = send
        self.clock = clock
        self.timers = TimerHeap()
        self.stats = new_stats()
        self.tl = TransactionLayer(self._send, clock, self.timers, settings.t1, settings.t2, settings.t4, self.stats)
        self.dialogs: dict[tuple[str, str, str], Session] = {}
        self.sessions: dict[str, Session] = {}  # by sid
        self._by_call_id: dict[str, Session] = {}  # live sessions by SIP Call-ID
        self._ids = itertools.count(1)
        self._prefix = f"{random.getrandbits(40):010x}"
        self.source_log = SourceLog(log)
        self.admission = Admission(settings.admission)
        self._refusal_log = SourceLimiter(rate=1.0, burst=5)
        self.on_event = on_event
        self._events: deque[Event] = deque()
        self._dispatching = False

    # -- events out -------------------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        """Queue *event*; with a handler, deliver the queue in order (never re-entrantly)."""
        self._events.append(event)
        if self.on_event is None or self._dispatching:
            return
        self._dispatching = True
        try:
            while self._events:
                self.on_event(self._events.popleft())
        finally:
            self._dispatching = False

    def events(self) -> Iterator[Event]:
        """Take the events queued so far (used when no handler was given: tests, other drivers)."""
        while self._events:
            yield self._events.popleft()

    # -- ids --------------------------------------------------------------------------------------
    def _token(self) -> str:
        return f"{self._prefix}{next(self._ids):x}"

    def _branch(self) -> str:
        return "z9hG4bK" + self._token()

    def session(self, sid: str) -> Session:
        """The live session *sid*; KeyError when there is none (it ended, or never was)."""
        return self.sessions[sid]

    def set_label(self, sid: str, label: str) -> None:
        """Name the session in log records (the controller's call id)."""
        self.sessions[sid].label = label

    def _add(self, session: Session) -> None:
        self.sessions[session.sid] = session
        self._by_call_id[session.sip_call_id] = session

    # -- output -----------------------------------------------------------------------------------
    def _send(self, data: bytes, dest: Dest) -> None:
        if data[:4] == b"SIP/":
            self.stats["responses_out"] += 1
        else:
            self.stats["requests_out"] += 1
        self._send_fn(data, dest)

    def _host(self) -> str:
        h = self.settings.host
        return f"[{h}]" if ":" in h else h

    def _contact(self, transport: str) -> str:
        tp = ";transport=tcp" if transport == "tcp" else ""
        return f"<sip:mediasrv@{self._host()}:{self.settings.port}{tp}>"

    def _via(self, transport: str, branch: str) -> str:
        return f"SIP/2.0/{transport.upper()} {self._host()}:{self.settings.port};branch={branch};rport"

    def _via_for(self, branch: str) -> Callable[[str], str]:
        return lambda transport: self._via(transport, branch)

    def response(
        self,
        req: Request,
        status: int,
        dest: Dest,
        to_tag: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        reason: str | None = None,
    ) -> bytes:
        """Build a response: Via (with received/rport, RFC 3581), From, To (+tag), Call-ID, CSeq copied."""
        lines = [f"SIP/2.0 {status} {reason or REASONS.get(status, 'Unknown')}"]
        first = True
        for k, v in req.headers:
            if k == "via":
                if first:
                    first = False
                    items = split_header_list(v)
                    items[0] = self._received(items[0].strip(), req, dest)
                    v = ",".join(items)
                lines.append(f"Via: {v}")
        for k, name in (("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq")):
            v = req.get(k) or ""
            if k == "to" and to_tag and req.to_tag is None:
                v = f"{v};tag={to_tag}"
            lines.append(f"{name}: {v}")
        if 100 < status < 300 and req.method == "INVITE" and req.to_tag is None:
            # a dialog-making response carries the request's Record-Route, in order (RFC 3261 12.1.1):
            # behind a proxy (Kamailio) the caller's ACK and BYE then come back through it
            lines.extend(f"Record-Route: {v}" for k, v in req.headers if k == "record-route")
        lines.append(f"Server: {self.settings.user_agent}")
        if headers:
            lines.extend(f"{k}: {v}" for k, v in headers)
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body

    @staticmethod
    def _received(top: str, req: Request, dest: Dest) -> str:
        via = req.vias[0]
        ip, port = dest.addr[0], dest.addr[1]
        if "rport" in via.params and via.params["rport"] is None:
            top = _RPORT_RE.sub(f";rport={port}", top, count=1)
            if "received" not in via.params:
                top += f";received={ip}"
        elif via.host.strip("[]") != ip and "received" not in via.params:
            top += f";received={ip}"
        return top

    def _respond(self, tx: ServerTx, status: int, to_tag: str | None = None, **kw: Any) -> None:
        tx.respond(status, self.response(tx.request, status, tx.dest, to_tag, **kw))

    # -- SDP checks -------------------------------------------------------------------------------
    def _plan_offer(self, body: bytes) -> tuple[sdpmod.Sdp, sdpmod.OfferPlan]:
        """Parse and negotiate an SDP offer, and check where it wants RTP sent (raises to refuse)."""
        offer = sdpmod.parse_sdp(body)
        plan = sdpmod.negotiate_offer(offer, self.settings.codecs)
        self._check_media(plan.media)
        return offer, plan

    def _media_from_answer(self, body: bytes) -> NegotiatedMedia:
        """The media of an SDP answer to our offer, checked like an offer's."""
        media = sdpmod.media_from_answer(sdpmod.parse_sdp(body), self.settings.codecs)
        self._check_media(media)
        return media

    def _check_media(self, media: NegotiatedMedia) -> None:
        """Refuse (SdpError) a destination of the wrong family or one the media address policy denies."""
        if media.remote_addr is None:
            return  # hold (c=0.0.0.0): nothing will be sent
        host = media.remote_addr[0]
        if (":" in host) != (":" in self.settings.host):
            raise sdpmod.SdpError(f"connection address {host} is not of this server's address family")
        check = self.settings.media_address_check
        why = check(host) if check is not None else None
        if why is not None:
            raise sdpmod.SdpError(f"media address {host} refused: {why}")

    # -- the end ----------------------------------------------------------------------------------
    def _end(
        self, session: Session, reason: EndReason, status: int | None, outcome: tuple[int, str] | None = None
    ) -> None:
        """Forget *session* (its dialog, its ring timer) and say so, once."""
        if session.ended:
            return
        session.phase = Phase.ENDED
        if session.ring_timer is not None:
            session.ring_timer.cancel()
            session.ring_timer = None
        if session.dialog is not None:
            self.dialogs.pop(session.dialog.key, None)
        self.sessions.pop(session.sid, None)
        if self._by_call_id.get(session.sip_call_id) is session:
            del self._by_call_id[session.sip_call_id]
        self._emit(CallEnded(session.sid, reason, status, outcome))

    def _send_bye(self, session: Session, auth: list[tuple[str, str]] | None = None) -> None:
        """BYE in the session's dialog (either role may hang up); a challenged BYE is retried once."""
        dialog = session.dialog
        if dialog is None:
            return
        branch = self._branch()
        out = dialog.request("BYE", self._via_for(branch), [("User-Agent", self.settings.user_agent), *(auth or [])])
        tx = self.tl.new_client("BYE", branch, out.data, out.dest, self._bye_response, ignore_timeout)
        tx.context = (session, out.ruri, auth is not None)

    def _bye_response(self, tx: ClientTx, resp: Response) -> None:
        """Some proxies and PBXes want every request authenticated: answer one challenge to a BYE."""
        session, ruri, authenticated = tx.context
        creds = session.credentials
        if resp.status not in (401, 407) or authenticated or creds is None:
            return
        found = challenges(resp)
        if found:
            self._send_bye(session, [(ch.header_name, digest.authorization(ch, creds, "BYE", ruri)) for ch in found])

    def _refuse(self, kind: str, ip: str, text: str) -> None:
        """Count a refusal or drop; log it, at most a few lines per second per source."""
        self.stats[kind] += 1
        allowed, suppressed = self._refusal_log.allow(ip, self.clock())
        if allowed:
            more = f" ({suppressed} more from this source suppressed)" if suppressed else ""
            log.warning("SIP from %s: %s%s", clip(ip, 60), text, more)


def challenges(resp: Response) -> list[digest.Challenge]:
    """The digest challenges of a 401/407 we can answer: at most one WWW- and one Proxy-Authenticate."""
    found = (
        digest.choose(resp.raw_all("www-authenticate")),
        digest.choose(resp.raw_all("proxy-authenticate"), proxy=True),
    )
    return [ch for ch in found if ch is not None]


def ignore_response(tx: ClientTx, resp: Response) -> None:
    return None


def ignore_timeout(tx: ClientTx) -> None:
    return None
