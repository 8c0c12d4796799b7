"""The user agent's logic (UAS and UAC) over transactions and dialogs, sans-I/O.

:class:`SipCore` is fed ``receive(bytes, Dest)`` and timer deadlines, and emits bytes through the
``send`` function it was given.  It creates and ends :class:`~mediasrv.calls.Call` objects and tells
the registry and the media backend about them; the asyncio glue lives in ``transport.py``/``ua.py``.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..calls import Call, CallRegistry, CallState, Direction, MediaBackend, NegotiatedMedia, new_call_id
from ..logs import with_call_id
from ..logsafe import SourceLimiter, clip
from . import digest
from . import sdp as sdpmod
from .admission import Admission, AdmissionSettings, AuthOutcome
from .dialog import Dialog, uac_dialog, uas_dialog
from .digest import Credentials
from .guard import SourceLog
from .info import INFO_TYPES, InfoError, parse_info
from .message import (
    MAX_HEADER_BYTES,
    ParseError,
    Request,
    Response,
    build_request_head,
    parse,
    split_header_list,
)
from .timers import Timer, TimerHeap
from .transaction import ClientInviteTx, ClientTx, Dest, ServerInviteTx, ServerTx, TransactionLayer

log = logging.getLogger("mediasrv.sip")

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"
IN_DIALOG_OK = ("UPDATE", "INFO")
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


# Final statuses to an INVITE -> hangup cause (anything else: "rejected"; 401/407: "auth_failed").
FAILURE_CAUSES = {
    486: "busy", 600: "busy", 603: "declined", 607: "declined",
    408: "no_answer", 480: "no_answer", 404: "not_found", 604: "not_found", 484: "not_found",
    410: "not_found", 488: "incompatible_media", 606: "incompatible_media",
}

# Hanging up an unanswered inbound call refuses it: cause -> the final status the caller gets (else 480).
REFUSAL_CODES = {
    "rejected": 603, "decline": 603, "call_rejected": 603, "busy": 486, "not_found": 404,
    "temporarily_unavailable": 480,
}

# Headers a caller of start_call() may not add: the core writes these itself.
RESERVED_HEADERS = frozenset(
    h.lower() for h in (
        "Via", "v", "Max-Forwards", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Contact", "m",
        "Content-Length", "l", "Content-Type", "c", "Authorization", "Proxy-Authorization", "Allow",
        "User-Agent", "Route", "Record-Route", "Require", "Proxy-Require", "Supported", "k", "Expires",
    )
)
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")  # \Z: "$" would accept a name ending in "\n"


def failure_cause(status: int) -> str:
    return FAILURE_CAUSES.get(status, "rejected")


def check_user_headers(headers: dict[str, str]) -> str | None:
    """Why *headers* cannot go into an INVITE as they are, or None when they can."""
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN_RE.match(name):
            return f"bad header name {name!r}"
        if name.lower() in RESERVED_HEADERS:
            return f"header {name!r} is set by the server"
        if not isinstance(value, str) or any(c in value for c in "\r\n\x00"):
            return f"header {name!r}: value must be a string without CR, LF or NUL"
        if len(name) + len(value) > 1024:
            return f"header {name!r} is too long"
    return None


class CallFailed(Exception):
    """An outbound call ended without being answered (``code`` is the SIP status, 408 on timeout)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


@dataclass
class CoreSettings:
    host: str = "127.0.0.1"  # what we put in Via/Contact/SDP
    port: int = 5060
    auto_answer: bool = True
    max_calls: int | None = None
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    user_agent: str = "mediasrv/0.1"
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    # Why RTP must not go to an address (None: it may); the server wires the media address policy
    # (media/addrpolicy.py) in here. Checked for every SDP offer and answer before it is used.
    media_address_check: Callable[[str], str | None] | None = None
    # An inbound call left ringing (auto_answer off) this long is refused with 480, cause no_answer:
    # its port and sockets are not held for a caller that never CANCELs (0 = ring for ever).
    ring_timeout_s: float = 120.0
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)


ResultCallback = Callable[["Session", int, str], None]


@dataclass(eq=False)
class Session:
    """One call's signaling state."""

    call: Call
    inbound: bool
    local_tag: str
    dialog: Dialog | None = None
    invite_req: Request | None = None  # inbound: the initial INVITE
    invite_tx: ServerInviteTx | ClientInviteTx | None = None
    reinvite_tx: ServerInviteTx | None = None
    offer_plan: sdpmod.OfferPlan | None = None
    offer_sdp: sdpmod.Sdp | None = None
    sess_id: int = 0
    sdp_version: int = 0
    awaiting_ack_sdp: bool = False
    answered: bool = False
    ended: bool = False
    # outbound
    flow: Dest | None = None
    invite_fields: dict[str, Any] = field(default_factory=dict)
    ack_bytes: bytes | None = None
    provisional: bool = False
    cancel: tuple[str, str] | None = None  # (cause, by) once a CANCEL is wanted
    cancel_sent: bool = False
    on_result: ResultCallback | None = None
    result_sent: bool = False
    user_headers: list[tuple[str, str]] = field(default_factory=list)  # extra INVITE headers
    offer_body: bytes = b""  # our SDP offer, the same in every (authenticated) retry
    credentials: Credentials | None = None
    auth_attempts: int = 0
    early_media: bool = False  # outbound: an 18x carried the SDP answer; inbound: our 183 carried ours
    early_answer: bytes | None = None  # inbound: the SDP answer sent in the 183, repeated as is in the 200
    ring_timer: Timer | None = None  # inbound, ringing: ends the call after CoreSettings.ring_timeout_s


_RPORT_RE = re.compile(r";\s*rport(?=\s*(?:;|$))", re.I)


class SipCore:
    def __init__(
        self,
        settings: CoreSettings,
        registry: CallRegistry,
        media: MediaBackend,
        send: Callable[[bytes, Dest], None],
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.media = media
        # draining (a rolling restart): new INVITEs and OPTIONS probes get 503, so a front proxy
        # (Kamailio's dispatcher) sends new calls elsewhere; calls in progress carry on
        self.draining = False
        self._send_fn = send
        self.clock = clock
        self.timers = TimerHeap()
        self.stats: dict[str, int] = {
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
        self.tl = TransactionLayer(self._send, clock, self.timers, settings.t1, settings.t2, settings.t4, self.stats)
        self.dialogs: dict[tuple[str, str, str], Session] = {}
        self.sessions: dict[str, Session] = {}  # by Call.call_id
        self._ids = itertools.count(1)
        self._prefix = f"{random.getrandbits(40):010x}"
        self.source_log = SourceLog(log)
        self.admission = Admission(settings.admission)
        self._refusal_log = SourceLimiter(rate=1.0, burst=5)

    # -- ids --------------------------------------------------------------------------------------
    def _token(self) -> str:
        return f"{self._prefix}{next(self._ids):x}"

    def _branch(self) -> str:
        return "z9hG4bK" + self._token()

    # -- output -----------------------------------------------------------------------------------
    def _send(self, data: bytes, dest: Dest) -> None:
        if data[:4] == b"SIP/":
            self.stats["responses_out"] += 1
        else:
            self.stats["requests_out"] += 1
        self._send_fn(data, dest)

    def _contact(self, transport: str) -> str:
        s = self.settings
        host = f"[{s.host}]" if ":" in s.host else s.host
        tp = ";transport=tcp" if transport == "tcp" else ""
        return f"<sip:mediasrv@{host}:{s.port}{tp}>"

    def _via(self, transport: str, branch: str) -> str:
        s = self.settings
        host = f"[{s.host}]" if ":" in s.host else s.host
        return f"SIP/2.0/{transport.upper()} {host}:{s.port};branch={branch};rport"

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

    # -- input ------------------------------------------------------------------------------------
    def reject(self, data: bytes, dest: Dest, exc: ParseError) -> None:
        """A message the transport could not frame (over a limit, bad Content-Length): count, log
        and answer it statelessly as if it had failed to parse."""
        self._malformed(data, dest, exc)

    def receive(self, data: bytes, dest: Dest) -> None:
        """Feed one datagram or one framed stream message."""
        try:
            msg = parse(data, stream=dest.reliable)
        except ParseError as exc:
            self._malformed(data, dest, exc)
            return
        if isinstance(msg, Request):
            self.stats["requests_in"] += 1
            self._on_request(msg, dest)
        else:
            self.stats["responses_in"] += 1
            self._on_response(msg, dest)

    def _malformed(self, data: bytes, dest: Dest, exc: ParseError) -> None:
        self.stats["malformed"] += 1
        if exc.status in (413, 414, 513):
            self.stats["too_large"] += 1
        now = self.clock()
        self.source_log.log(
            logging.WARNING, dest.addr[0], "malformed SIP message from %s:%s: %s",
            dest.addr[0], dest.addr[1], clip(exc.reason),
        )
        resp = stateless_error(data, exc.status, exc.reason, dest, self.settings.user_agent)
        if resp is not None:
            if not self.admission.take(dest.addr[0], now):  # answers to garbage share the source's budget
                self.stats["rate_limited"] += 1
                return
            self._send(resp, dest)

    # -- requests ---------------------------------------------------------------------------------
    def _on_request(self, req: Request, dest: Dest) -> None:
        method = req.method
        tl = self.tl
        if method == "ACK":
            tx = tl.find_server(req)
            if isinstance(tx, ServerInviteTx) and tx.state in ("completed", "confirmed"):
                tx.receive_ack()
                return
            self._on_ack(req)
            return
        tx = tl.find_server(req)
        if tx is not None:
            self.stats["absorbed"] += 1
            tx.retransmission()
            return
        if not self._admit(req, dest):
            return
        tx = tl.new_server(req, dest)
        if method == "CANCEL":
            self._on_cancel(req, tx)
            return
        if req.uri.scheme not in SCHEMES:
            self._respond(tx, 416, self._token())
            return
        require = _required(req)
        if require:
            self._respond(tx, 420, self._token(), headers=[("Unsupported", ", ".join(require))])
            return
        if req.to_tag is not None:
            self._in_dialog(self.dialogs[(req.call_id, req.to_tag, req.from_tag or "")], req, tx)
            return
        self._new_invite(req, tx)

    def _options_headers(self, transport: str) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Accept", "application/sdp"), ("Contact", self._contact(transport))]

    def _options(self, tx: ServerTx) -> None:
        self._respond(tx, 200, self._token(), headers=self._options_headers(tx.dest.transport))

    # -- admission (admission.py): decided before any transaction, call, port or timer exists -----
    def _admit(self, req: Request, dest: Dest) -> bool:
        """True when *req* goes on to the stateful core; else it was answered statelessly or dropped.

        Only three kinds go on: an INVITE that starts a call (source allowed, digest checked when
        configured), a request inside a dialog we hold, and a CANCEL for a live INVITE. Everything
        else needs no dialog: it costs a token of its source's bucket and gets a stateless answer.
        """
        adm = self.admission
        ip = dest.addr[0]
        agent = adm.scanner(req)
        if agent is not None:
            self._refuse("refused_scanner", ip, f"{req.method} from scanner User-Agent {clip(agent, 60)!r}: dropped")
            return False
        method = req.method
        if req.to_tag is not None:
            if (req.call_id, req.to_tag, req.from_tag or "") in self.dialogs:
                return True
        elif method == "INVITE":
            return self._admit_invite(req, dest)
        elif method == "CANCEL" and self.tl.find_server(req, "INVITE") is not None:
            return True
        if not adm.take(ip, self.clock()):
            self._refuse("rate_limited", ip, f"{clip(method, 20)} over the per-source rate limit: dropped")
            return False
        self._stateless(req, dest)
        return False

    def _admit_invite(self, req: Request, dest: Dest) -> bool:
        adm = self.admission
        ip = dest.addr[0]
        now = self.clock()
        if not adm.source_allowed(ip):
            self._refuse("refused_source", ip, "INVITE from outside sip_allow_cidrs: 403")
            if adm.take(ip, now):
                self._stateless_reply(req, dest, 403)
            else:
                self.stats["rate_limited"] += 1
            return False
        if not adm.auth_enabled:
            return True
        result = adm.authenticate(req, now)
        if result.outcome is AuthOutcome.OK:
            self.stats["auth_ok"] += 1
            return True
        if result.outcome is AuthOutcome.FORBIDDEN:
            self._refuse("auth_failed", ip, f"INVITE user {clip(result.user, 40)!r}: {result.reason}: 403")
            if adm.take(ip, now):
                self._stateless_reply(req, dest, 403)
            else:
                self.stats["rate_limited"] += 1
            return False
        self.stats["auth_challenged"] += 1
        status, header = adm.challenge(now, stale=result.outcome is AuthOutcome.STALE)
        self._stateless_reply(req, dest, status, [header])
        return False

    def _stateless(self, req: Request, dest: Dest) -> None:
        """Answer a request that needs no dialog, keeping nothing (no server transaction, no Timer J)."""
        method = req.method
        require = _required(req)
        if req.uri.scheme not in SCHEMES:
            self._stateless_reply(req, dest, 416)
        elif require:
            self._stateless_reply(req, dest, 420, [("Unsupported", ", ".join(require))])
        elif method == "OPTIONS" and self.draining:
            self._stateless_reply(req, dest, 503, [("Retry-After", "5")])
        elif method == "OPTIONS":
            self._stateless_reply(req, dest, 200, self._options_headers(dest.transport))
        elif req.to_tag is not None or method in ("BYE", "UPDATE", "INFO", "PRACK", "CANCEL"):
            self._stateless_reply(req, dest, 481)
        else:  # REGISTER, SUBSCRIBE, MESSAGE, NOTIFY, REFER, unknown methods
            self._stateless_reply(req, dest, 405, [("Allow", ALLOW)])

    def _stateless_reply(
        self, req: Request, dest: Dest, status: int, headers: list[tuple[str, str]] | None = None
    ) -> None:
        self.stats["stateless_responses"] += 1
        self._send(self.response(req, status, dest, self.admission.to_tag(req), headers=headers), dest)

    def _refuse(self, kind: str, ip: str, text: str) -> None:
        """Count a refusal or drop; log it, at most a few lines per second per source."""
        self.stats[kind] += 1
        allowed, suppressed = self._refusal_log.allow(ip, self.clock())
        if allowed:
            more = f" ({suppressed} more from this source suppressed)" if suppressed else ""
            log.warning("SIP from %s: %s%s", clip(ip, 60), text, more)

    def _on_cancel(self, req: Request, tx: ServerTx) -> None:
        itx = self.tl.find_server(req, "INVITE")
        if not isinstance(itx, ServerInviteTx):
            self._respond(tx, 481, self._token())
            return
        session: Session | None = itx.context
        tag = session.local_tag if session is not None else self._token()
        self._respond(tx, 200, tag)
        if itx.state != "proceeding":
            return
        self._respond(itx, 487, tag)
        if session is not None and itx is session.invite_tx:
            self._end(session, "cancelled", "caller", 487)

    # -- new inbound call -------------------------------------------------------------------------
    def _new_invite(self, req: Request, tx: ServerTx) -> None:
        assert isinstance(tx, ServerInviteTx)
        self._respond(tx, 100)
        tag = self._token()
        offer = plan = None
        if req.body:
            ctype = (req.content_type or "").split(";")[0].strip().lower()
            enc = (req.get("content-encoding") or "identity").strip().lower()
            if ctype != "application/sdp" or enc not in ("identity", ""):
                self._respond(tx, 415, tag, headers=[("Accept", "application/sdp")])
                return
            try:
                offer, plan = self._plan_offer(req.body)
            except (sdpmod.SdpError, sdpmod.NoCommonCodec) as exc:
                self.stats["rejected"] += 1
                self.stats["sdp_refused"] += 1
                self._respond(tx, 488, tag, headers=[_sdp_warning(exc)])
                return
        accept = req.get("accept")
        if accept is not None and accept.strip():
            types = {a.split(";")[0].strip().lower() for a in accept.split(",")}
            if not types & {"application/sdp", "application/*", "*/*"}:
                self._respond(tx, 406, tag, headers=[("Accept", "application/sdp")])
                return
        existing = self.registry.by_sip_call_id(req.call_id)
        if existing is not None:
            self._respond(tx, 482, tag)
            return
        s = self.settings
        if self.draining or s.max_calls is not None and self.registry.active_count >= s.max_calls:
            self.stats["rejected"] += 1
            self._respond(tx, 503, tag, headers=[("Retry-After", "1")])
            return
        call = Call(
            direction=Direction.INBOUND,
            from_uri=req.from_.raw_uri,
            to_uri=req.to.raw_uri,
            sip_call_id=req.call_id,
            call_id=new_call_id(self.registry.node_id),
        )
        if req.from_.display:
            call.extra["from_display"] = req.from_.display
        call.extra["request_uri"] = req.uri_str
        session = Session(call=call, inbound=True, local_tag=tag, invite_req=req, invite_tx=tx)
        session.offer_sdp, session.offer_plan = offer, plan
        session.sess_id = random.getrandbits(31)
        session.sdp_version = 1
        tx.context = session
        tx.on_no_ack = self._no_ack
        self._take_call(session, tx, tag)

    @with_call_id(lambda session, *_: session.call.call_id)
    def _take_call(self, session: Session, tx: ServerInviteTx, tag: str) -> None:
        """A new inbound call from here on: registered, media allocated, answered or ringing."""
        call, s = session.call, self.settings
        self.stats["calls_in"] += 1
        self.registry.add(call)
        self.sessions[call.call_id] = session
        try:
            call.local_rtp = self.media.allocate(call)
        except Exception as exc:  # noqa: BLE001 - any media failure is a 503, never silence
            log.warning("media allocation failed: %s", exc)
            self.stats["rejected"] += 1
            self._respond(tx, 503, tag, headers=[("Retry-After", "1")])
            self._end(session, "rejected", "server", 503, release=False)
            return
        try:
            if s.auto_answer:
                self._answer(session)
            else:
                self._ring(session)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the call's resources go back
            log.warning("call failed during setup: %s", clip(repr(exc)))
            if tx.state == "proceeding":
                self._respond(tx, 500, tag)
            self._end(session, "media_error", "server", 500)

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

    def _apply_media(self, call: Call, media: NegotiatedMedia | None) -> bool:
        """Hand *media* to the media backend; False (logged) when the backend failed with it."""
        call.media = media
        try:
            self.media.media_changed(call)
        except Exception as exc:  # noqa: BLE001 - a media failure ends the call, it never escapes
            log.warning("media setup failed for %s: %s", call.call_id, clip(repr(exc)))
            return False
        return True

    def _dialog_for(self, session: Session) -> Dialog:
        if session.dialog is None:
            req = session.invite_req
            assert req is not None and session.invite_tx is not None
            to_value = f"{req.get('to')};tag={session.local_tag}"
            session.dialog = uas_dialog(req, session.local_tag, session.invite_tx.dest, to_value)
            self.dialogs[session.dialog.key] = session
        return session.dialog

    @with_call_id(lambda session: session.call.call_id)
    def _ring(self, session: Session) -> None:
        tx = session.invite_tx
        assert isinstance(tx, ServerInviteTx)
        self._dialog_for(session)
        self._respond(tx, 180, session.local_tag, headers=[("Contact", self._contact(tx.dest.transport))])
        self.registry.ringing(session.call)
        if self.settings.ring_timeout_s > 0:
            session.ring_timer = self.timers.schedule(self.clock() + self.settings.ring_timeout_s,
                                                      lambda: self._ring_timeout(session))

    @with_call_id(lambda session: session.call.call_id)
    def _ring_timeout(self, session: Session) -> None:
        session.ring_timer = None
        tx = session.invite_tx
        if session.ended or session.answered or not isinstance(tx, ServerInviteTx) or tx.state != "proceeding":
            return
        log.info("call %s rang for %.0f s unanswered: refusing it", session.call.call_id, self.settings.ring_timeout_s)
        self._respond(tx, 480, session.local_tag)
        self._end(session, "no_answer", "server", 480)

    @with_call_id(lambda session: session.call.call_id)
    def _progress(self, session: Session) -> None:
        """Early media on a ringing inbound call: 183 Session Progress with our SDP answer, RTP starts.

        The 183 goes unreliably (no 100rel: an INVITE that requires it was refused 420), so the
        200 repeats the very same answer (same o= id and version, RFC 3261 13.2.1 / RFC 6337 3.1)
        and the media plane carries on with the same stream. Only the INVITE's own retransmissions
        re-send it (the server transaction answers them with its last provisional).
        """
        tx = session.invite_tx
        assert isinstance(tx, ServerInviteTx) and session.offer_sdp is not None and session.offer_plan is not None
        call = session.call
        local = call.local_rtp or (self.settings.host, 0)
        body = sdpmod.build_answer(session.offer_sdp, session.offer_plan, local, session.sess_id, session.sdp_version)
        if not self._apply_media(call, session.offer_plan.media):
            self._respond(tx, 500, session.local_tag, headers=[("Warning", '399 mediasrv "media setup failed"')])
            self._end(session, "media_error", "server", 500)
            return
        self._dialog_for(session)
        session.early_answer = body
        self._respond(
            tx,
            183,
            session.local_tag,
            headers=[("Contact", self._contact(tx.dest.transport)), ("Content-Type", "application/sdp")],
            body=body,
        )
        session.early_media = True
        self.registry.early_media(call)

    @with_call_id(lambda session: session.call.call_id)
    def _answer(self, session: Session) -> None:
        tx = session.invite_tx
        assert isinstance(tx, ServerInviteTx)
        call = session.call
        local = call.local_rtp or (self.settings.host, 0)
        if session.offer_sdp is not None and session.offer_plan is not None:
            body = session.early_answer or sdpmod.build_answer(
                session.offer_sdp, session.offer_plan, local, session.sess_id, session.sdp_version
            )
            # the media is set up before the 200 goes: a failure is a 500, never a call already accepted
            if not self._apply_media(call, session.offer_plan.media):
                self._respond(tx, 500, session.local_tag, headers=[("Warning", '399 mediasrv "media setup failed"')])
                self._end(session, "media_error", "server", 500)
                return
        else:
            body = sdpmod.build_offer(local, self.settings.codecs, session.sess_id, session.sdp_version)
            session.awaiting_ack_sdp = True
        self._dialog_for(session)
        self._respond(
            tx,
            200,
            session.local_tag,
            headers=[
                ("Contact", self._contact(tx.dest.transport)),
                ("Allow", ALLOW),
                ("Content-Type", "application/sdp"),
            ],
            body=body,
        )
        session.answered = True
        self.registry.answered(call)

    @with_call_id(lambda tx: tx.context.call.call_id if tx.context is not None else None)
    def _no_ack(self, tx: ServerInviteTx) -> None:
        session: Session | None = tx.context
        if session is None or session.ended:
            return
        self.stats["no_ack"] += 1
        log.info("no ACK for our 2xx: hanging up")
        self._send_bye(session)
        self._end(session, "no_ack", "server", None)

    # -- in-dialog requests -----------------------------------------------------------------------
    @with_call_id(lambda session, *_: session.call.call_id)
    def _in_dialog(self, session: Session, req: Request, tx: ServerTx) -> None:
        dialog = session.dialog
        assert dialog is not None
        if dialog.remote_seq is not None and req.cseq <= dialog.remote_seq and req.method != "ACK":
            if not (req.cseq == dialog.remote_seq and req.method == "CANCEL"):
                self._respond(tx, 500, reason="CSeq Out of Order")
                return
        dialog.remote_seq = req.cseq
        m = req.method
        if m == "BYE":
            self._respond(tx, 200)
            self._stop_2xx(session)
            itx = session.invite_tx
            if isinstance(itx, ServerInviteTx) and itx.state == "proceeding":
                self._respond(itx, 487, session.local_tag)
            self._end(session, "normal_clearing", "caller" if session.inbound else "callee", None)
        elif m == "INVITE":
            assert isinstance(tx, ServerInviteTx)
            self._reinvite(session, req, tx)
        elif m == "OPTIONS":
            self._options(tx)
        elif m == "INFO" and req.body:
            self._info(session, req, tx)
        elif m in IN_DIALOG_OK:
            self._respond(tx, 200)
        else:
            self._respond(tx, 405, headers=[("Allow", ALLOW)])

    def _info(self, session: Session, req: Request, tx: ServerTx) -> None:
        """INFO with a DTMF body (application/dtmf-relay or application/dtmf): reported, answered 200;
        an unreadable DTMF body 400; any other body 200 as before (nothing to do with it)."""
        ctype = (req.content_type or "").split(";", 1)[0].strip().lower()
        if ctype not in INFO_TYPES:
            self._respond(tx, 200)
            return
        try:
            digit, duration_ms = parse_info(ctype, req.body)
        except InfoError as exc:
            self.stats["bad_info"] = self.stats.get("bad_info", 0) + 1
            log.debug("unreadable INFO DTMF body on %s: %s", session.call.call_id, exc)
            self._respond(tx, 400, reason="Bad DTMF Body")
            return
        report = getattr(self.media, "dtmf_info", None)
        if report is not None:
            report(session.call, digit, duration_ms)
        self._respond(tx, 200)

    def _stop_2xx(self, session: Session) -> None:
        for t in (session.invite_tx, session.reinvite_tx):
            if isinstance(t, ServerInviteTx):
                t.ack_2xx()

    def _reinvite(self, session: Session, req: Request, tx: ServerInviteTx) -> None:
        pending = session.reinvite_tx
        initial = session.invite_tx
        if (
            (pending is not None and pending.state == "accepted" and not pending.acked)
            or (isinstance(initial, ServerInviteTx) and initial.state in ("proceeding",))
            or (isinstance(initial, ServerInviteTx) and initial.state == "accepted" and not initial.acked)
        ):
            self._respond(tx, 491)
            return
        call = session.call
        offer = plan = None
        if req.body:
            try:
                offer, plan = self._plan_offer(req.body)
            except (sdpmod.SdpError, sdpmod.NoCommonCodec) as exc:
                self.stats["sdp_refused"] += 1
                self._respond(tx, 488, headers=[_sdp_warning(exc)])  # the call keeps its media
                return
            old = call.media
            if not self._apply_media(call, plan.media):
                self._apply_media(call, old)
                self._respond(tx, 500, headers=[("Warning", '399 mediasrv "media setup failed"')])
                return
        assert session.dialog is not None
        session.dialog.update_target(req)
        session.sdp_version += 1
        local = call.local_rtp or (self.settings.host, 0)
        if offer is not None and plan is not None:
            body = sdpmod.build_answer(offer, plan, local, session.sess_id, session.sdp_version)
        else:
            body = sdpmod.build_offer(local, self.settings.codecs, session.sess_id, session.sdp_version)
            session.awaiting_ack_sdp = True
        tx.context = session
        tx.on_no_ack = self._no_ack
        session.reinvite_tx = tx
        self._respond(
            tx,
            200,
            headers=[("Contact", self._contact(tx.dest.transport)), ("Allow", ALLOW), ("Content-Type", "application/sdp")],
            body=body,
        )

    def _on_ack(self, req: Request) -> None:
        session = self.dialogs.get((req.call_id, req.to_tag or "", req.from_tag or ""))
        if session is None:
            return  # stray ACK: absorbed
        self._ack_in_dialog(session, req)

    @with_call_id(lambda session, *_: session.call.call_id)
    def _ack_in_dialog(self, session: Session, req: Request) -> None:
        hit = False
        for t in (session.invite_tx, session.reinvite_tx):
            if isinstance(t, ServerInviteTx) and t.request.cseq == req.cseq and t.final_sent:
                if not t.acked:
                    hit = True
                t.ack_2xx()
        if session.dialog is not None:
            session.dialog.confirmed = True
        if hit and session.awaiting_ack_sdp:
            session.awaiting_ack_sdp = False
            try:
                if not req.body:
                    raise sdpmod.SdpError("ACK without the SDP answer")
                media = self._media_from_answer(req.body)
            except (sdpmod.SdpError, sdpmod.NoCommonCodec) as exc:
                log.info("bad SDP answer in ACK: %s; hanging up", clip(exc))
                self._send_bye(session)
                self._end(session, "bad_sdp", "server", 488)
                return
            if not self._apply_media(session.call, media):
                self._send_bye(session)
                self._end(session, "media_error", "server", None)

    # -- responses --------------------------------------------------------------------------------
    def _on_response(self, resp: Response, dest: Dest) -> None:
        tx = self.tl.match_response(resp)
        if tx is not None:
            tx.receive(resp)
            return
        if resp.cseq_method == "INVITE" and 200 <= resp.status < 300:
            # 2xx retransmission after our INVITE transaction is gone: re-ACK from the dialog.
            session = self.dialogs.get((resp.call_id, resp.from_tag or "", resp.to_tag or ""))
            if session is not None and session.ack_bytes is not None and session.dialog is not None:
                self.stats["retransmissions"] += 1
                self._send(session.ack_bytes, session.dialog.destination()[1])

    # -- outbound calls ---------------------------------------------------------------------------
    def start_call(
        self,
        to_uri: str,
        remote: tuple[str, int],
        on_result: ResultCallback,
        from_uri: str | None = None,
        transport: str = "udp",
        headers: dict[str, str] | None = None,
        credentials: Credentials | None = None,
    ) -> Session:
        """Send an INVITE to *to_uri* at *remote*; *on_result* gets (session, code, reason) once.

        *headers* are added to the INVITE (and to its authenticated retries) as they are; the
        caller has checked them (:func:`check_user_headers`).  With *credentials*, a 401/407 is
        answered once with a digest (a second challenge ends the call with cause ``auth_failed``).
        """
        s = self.settings
        transport = transport.lower()
        if transport not in ("udp", "tcp"):
            raise ValueError(f"unsupported transport {transport!r}")
        host = f"[{s.host}]" if ":" in s.host else s.host
        from_uri = from_uri or f"sip:mediasrv@{host}"
        sip_call_id = f"{self._token()}@{host}"
        call = Call(direction=Direction.OUTBOUND, from_uri=from_uri, to_uri=to_uri, sip_call_id=sip_call_id,
                    call_id=new_call_id(self.registry.node_id))
        tag = self._token()
        session = Session(call=call, inbound=False, local_tag=tag, on_result=on_result)
        session.sess_id = random.getrandbits(31)
        session.sdp_version = 1
        session.flow = Dest(transport, (remote[0], int(remote[1])))
        session.user_headers = list((headers or {}).items())
        session.credentials = credentials
        if s.max_calls is not None and self.registry.active_count >= s.max_calls:
            raise CallFailed(503, "max_calls reached")
        self.registry.add(call)
        self.sessions[call.call_id] = session
        self.stats["calls_out"] += 1
        try:
            call.local_rtp = self.media.allocate(call)
        except Exception as exc:  # noqa: BLE001
            self._end(session, "rejected", "server", 503, release=False)
            raise CallFailed(503, f"media allocation failed: {exc}") from exc
        session.offer_body = sdpmod.build_offer(call.local_rtp, s.codecs, session.sess_id, session.sdp_version)
        session.invite_fields = {"uri": to_uri, "from": f"<{from_uri}>;tag={tag}", "to": f"<{to_uri}>", "cseq": 0}
        self._send_invite(session, [])
        return session

    def _send_invite(self, session: Session, auth: list[tuple[str, str]]) -> None:
        """(Re)send the initial INVITE in a new transaction: next CSeq, new branch, *auth* headers."""
        assert session.flow is not None
        f = session.invite_fields
        f["cseq"] += 1
        transport = session.flow.transport
        branch = self._branch()
        f["via"] = via = self._via(transport, branch)
        uri, from_value, to_value, cseq = f["uri"], f["from"], f["to"], f["cseq"]
        sip_call_id = session.call.sip_call_id
        hdrs = [
            ("Via", via),
            ("Max-Forwards", "70"),
            ("From", from_value),
            ("To", to_value),
            ("Call-ID", sip_call_id),
            ("CSeq", f"{cseq} INVITE"),
            ("Contact", self._contact(transport)),
            ("User-Agent", self.settings.user_agent),
            ("Allow", ALLOW),
            *auth,
            *session.user_headers,
            ("Content-Type", "application/sdp"),
        ]
        data = build_request_head("INVITE", uri, hdrs, session.offer_body)

        def build_ack(resp: Response) -> bytes:
            return build_request_head(
                "ACK",
                uri,
                [
                    ("Via", via),
                    ("Max-Forwards", "70"),
                    ("From", from_value),
                    ("To", resp.get("to") or to_value),
                    ("Call-ID", sip_call_id),
                    ("CSeq", f"{cseq} ACK"),
                ],
            )

        tx = self.tl.new_client(
            "INVITE", branch, data, session.flow, self._uac_response, self._uac_timeout, build_ack
        )
        assert isinstance(tx, ClientInviteTx)
        tx.context = session
        session.invite_tx = tx
        session.provisional = False
        session.cancel_sent = False

    def _result(self, session: Session, code: int, reason: str) -> None:
        if not session.result_sent and session.on_result is not None:
            session.result_sent = True
            session.on_result(session, code, reason)

    @with_call_id(lambda tx, *_: tx.context.call.call_id)
    def _uac_response(self, tx: ClientTx, resp: Response) -> None:
        session: Session = tx.context
        if tx is not session.invite_tx:
            return  # a late response to an INVITE we already retried with credentials
        st = resp.status
        if st < 200:
            if st > 100 and not session.ended:
                self.registry.ringing(session.call)
                if resp.body:
                    self._uac_early_media(session, resp)
            session.provisional = True
            if session.cancel is not None and not session.cancel_sent:
                self._send_cancel(session)
            return
        if st < 300:
            self._uac_2xx(session, resp, tx)
            return
        if st in (401, 407) and self._retry_with_auth(session, resp):
            return
        if session.cancel is not None:
            cause, by = session.cancel
        elif st in (401, 407):
            cause, by = "auth_failed", "callee"
        else:
            cause, by = failure_cause(st), "callee"
        self._end(session, cause, by, st)
        self._result(session, st, resp.reason or REASONS.get(st, ""))

    def _retry_with_auth(self, session: Session, resp: Response) -> bool:
        """Answer a 401/407 with credentials (RFC 3261 22.2); False when we cannot or should not.

        Once credentials were sent, another challenge means they were refused, unless it says
        ``stale=true`` (the nonce expired, the password was fine): one such retry is allowed.
        """
        creds = session.credentials
        if creds is None or session.ended or session.cancel is not None:
            return False
        challenges = _challenges(resp)
        if not challenges:
            log.info("no usable digest challenge in %s", resp.status)
            return False
        if session.auth_attempts >= 1 and not (session.auth_attempts == 1 and all(ch.stale for ch in challenges)):
            return False
        session.auth_attempts += 1
        uri = session.invite_fields["uri"]
        auth = [
            (ch.header_name, digest.authorization(ch, creds, "INVITE", uri, body=session.offer_body))
            for ch in challenges
        ]
        self._send_invite(session, auth)
        return True

    def _uac_early_media(self, session: Session, resp: Response) -> None:
        """An SDP answer in a 18x (183 Session Progress): media may flow before the answer."""
        try:
            media = self._media_from_answer(resp.body)
        except (sdpmod.SdpError, sdpmod.NoCommonCodec) as exc:
            log.info("unusable SDP in %s: %s (ignored)", resp.status, clip(exc))
            return
        call = session.call
        if not self._apply_media(call, media):
            call.media = None
            return
        if not session.early_media:
            session.early_media = True
            self.registry.early_media(call)

    def _uac_2xx(self, session: Session, resp: Response, tx: ClientTx) -> None:
        if session.dialog is not None:
            if session.ack_bytes is not None and resp.to_tag == session.dialog.remote_tag:
                self.stats["retransmissions"] += 1
                self._send(session.ack_bytes, session.dialog.destination()[1])
            return
        f = session.invite_fields
        dialog = uac_dialog(f["from"], session.local_tag, f["cseq"], resp, tx.dest)
        dialog.may_send_to = self.admission.source_allowed  # a Contact/Record-Route elsewhere: the flow
        session.dialog = dialog
        self.dialogs[dialog.key] = session
        ruri, dest, routes = dialog.destination()
        hdrs = [("Via", self._via(dest.transport, self._branch())), ("Max-Forwards", "70")]
        hdrs += [("Route", r) for r in routes]
        hdrs += [
            ("From", dialog.local_party),
            ("To", dialog.remote_party),
            ("Call-ID", dialog.call_id),
            ("CSeq", f"{f['cseq']} ACK"),
        ]
        session.ack_bytes = build_request_head("ACK", ruri, hdrs)
        self._send(session.ack_bytes, dest)
        call = session.call
        if session.ended or session.cancel is not None:
            # Our CANCEL lost the race against the 2xx: confirm and hang up at once.
            cause, by = session.cancel or ("cancelled", "api")
            self._send_bye(session)
            self.dialogs.pop(dialog.key, None)  # _end() may already have run (call() gave up)
            self._end(session, cause, by, None)
            self._result(session, 487, "Request Terminated")
            return
        try:
            if resp.body:
                call.media = self._media_from_answer(resp.body)
            elif not session.early_media:  # the answer already came in a 183 (RFC 3261 13.2.1)
                raise sdpmod.SdpError("2xx without an SDP answer")
        except (sdpmod.SdpError, sdpmod.NoCommonCodec) as exc:
            self._send_bye(session)
            self._end(session, "bad_sdp", "server", 488)
            self._result(session, 488, f"unusable SDP answer: {exc}")
            return
        if not self._apply_media(call, call.media):
            self._send_bye(session)
            self._end(session, "media_error", "server", None)
            self._result(session, 500, "media setup failed")
            return
        session.answered = True
        self.registry.answered(call)
        self._result(session, 200, resp.reason)

    @with_call_id(lambda tx: tx.context.call.call_id)
    def _uac_timeout(self, tx: ClientTx) -> None:
        session: Session = tx.context
        if tx is not session.invite_tx:
            return
        cause, by = session.cancel or ("timeout", "server")
        self._end(session, cause, by, 408)
        self._result(session, 408, "Request Timeout")

    def cancel_call(
        self, session: Session, cause: str = "cancelled", by: str = "api", end_now: bool = False
    ) -> None:
        """Give up on an outbound call: CANCEL if unanswered (BYE if it was answered).

        With ``end_now`` (the caller of ``call()`` has already been told it failed) the Call ends at
        once instead of when the INVITE transaction does; a late provisional still gets its CANCEL
        and a late 2xx its ACK + BYE, so the peer is never left with a dangling call.
        """
        if session.ended:
            return
        if session.answered:
            self._send_bye(session)
            self._end(session, cause, by, None)
            return
        if session.cancel is None:
            session.cancel = (cause, by)
        if session.provisional and not session.cancel_sent:
            self._send_cancel(session)
        if end_now:
            cause, by = session.cancel  # an earlier hangup request keeps its cause
            self._end(session, cause, by, 408 if cause in ("timeout", "no_answer") else 487)

    def _send_cancel(self, session: Session) -> None:
        tx = session.invite_tx
        if not isinstance(tx, ClientInviteTx) or tx.state not in ("calling", "proceeding"):
            return
        session.cancel_sent = True
        f = session.invite_fields
        data = build_request_head(
            "CANCEL",
            f["uri"],
            [
                ("Via", f["via"]),
                ("Max-Forwards", "70"),
                ("From", f["from"]),
                ("To", f["to"]),
                ("Call-ID", session.call.sip_call_id),
                ("CSeq", f"{f['cseq']} CANCEL"),
            ],
        )
        self.tl.new_client("CANCEL", tx.branch, data, tx.dest, _ignore_response, _ignore_timeout)

    # -- hangup / answer API ----------------------------------------------------------------------
    def find(self, call_id: str) -> Session:
        session = self.sessions.get(call_id)
        if session is None:
            call = self.registry.by_sip_call_id(call_id)
            if call is not None:
                session = self.sessions.get(call.call_id)
        if session is None:
            raise KeyError(call_id)
        return session

    def _ringing(self, call_id: str, why: str) -> tuple[Session, ServerInviteTx]:
        """The session of a ringing inbound call and its INVITE transaction; RuntimeError otherwise."""
        session = self.find(call_id)
        tx = session.invite_tx
        if (
            not session.inbound
            or session.ended
            or session.answered
            or not isinstance(tx, ServerInviteTx)
            or tx.state != "proceeding"
        ):
            raise RuntimeError(f"call {call_id} {why}")
        return session, tx

    def answer(self, call_id: str) -> None:
        session, tx = self._ringing(call_id, "is not ringing")
        try:
            self._answer(session)
        except Exception as exc:  # noqa: BLE001 - the call ends and gives its resources back
            log.warning("answering %s failed: %s", call_id, clip(repr(exc)))
            if tx.state == "proceeding":
                self._respond(tx, 500, session.local_tag)
            self._end(session, "media_error", "server", 500)
        if session.ended:
            raise RuntimeError(f"call {call_id} could not be answered: media setup failed")

    def early_media(self, call_id: str) -> bool:
        """Start early media on a ringing inbound call (183 with SDP); False when it already has it.

        RuntimeError when the call is not a ringing inbound one, or its INVITE had no SDP offer
        (our offer would then have to go in an unreliable 183, which RFC 3261 13.2.1 forbids).
        """
        session, tx = self._ringing(call_id, "is not a ringing inbound call")
        if session.early_media:
            return False
        if session.offer_sdp is None or session.offer_plan is None:
            raise RuntimeError(f"call {call_id}: early media needs an SDP offer in the INVITE (this one had none)")
        try:
            self._progress(session)
        except Exception as exc:  # noqa: BLE001 - the call ends and gives its resources back
            log.warning("early media on %s failed: %s", call_id, clip(repr(exc)))
            if tx.state == "proceeding":
                self._respond(tx, 500, session.local_tag)
            self._end(session, "media_error", "server", 500)
        if session.ended:
            raise RuntimeError(f"call {call_id}: early media failed: media setup failed")
        return True

    def hangup(self, call_id: str, cause: str = "normal_clearing", by: str = "api") -> None:
        session = self.find(call_id)
        if session.ended:
            return
        if session.answered:
            self._stop_2xx(session)
            self._send_bye(session)
            self._end(session, cause, by, None)
        elif session.inbound:
            code = REFUSAL_CODES.get(cause, 480)
            tx = session.invite_tx
            if isinstance(tx, ServerInviteTx):
                self._respond(tx, code, session.local_tag)
            self._end(session, cause, by, code)
        else:
            if cause == "normal_clearing":
                cause = "cancelled"  # hanging up an unanswered outbound call is a CANCEL
            self.cancel_call(session, cause, by)

    def shutdown(self) -> None:
        """BYE every answered call, refuse/cancel the rest (cause server_shutdown)."""
        for session in list(self.sessions.values()):
            if not session.ended:
                self.hangup(session.call.call_id, "server_shutdown", "server")

    def _send_bye(self, session: Session, auth: list[tuple[str, str]] | None = None) -> None:
        dialog = session.dialog
        if dialog is None:
            return
        ruri, dest, routes = dialog.destination()
        hdrs = [("Via", self._via(dest.transport, branch := self._branch())), ("Max-Forwards", "70")]
        hdrs += [("Route", r) for r in routes]
        hdrs += [
            ("From", dialog.local_party),
            ("To", dialog.remote_party),
            ("Call-ID", dialog.call_id),
            ("CSeq", f"{dialog.next_seq()} BYE"),
            ("User-Agent", self.settings.user_agent),
            *(auth or []),
        ]
        data = build_request_head("BYE", ruri, hdrs)
        tx = self.tl.new_client("BYE", branch, data, dest, self._bye_response, _ignore_timeout)
        tx.context = (session, ruri, auth is not None)

    def _bye_response(self, tx: ClientTx, resp: Response) -> None:
        """A challenged BYE (some proxies and PBXes want every request authenticated) is retried once."""
        session, ruri, authenticated = tx.context
        creds = session.credentials
        if resp.status not in (401, 407) or authenticated or creds is None:
            return
        challenges = _challenges(resp)
        if challenges:
            self._send_bye(session, [(ch.header_name, digest.authorization(ch, creds, "BYE", ruri)) for ch in challenges])

    # -- the end ----------------------------------------------------------------------------------
    @with_call_id(lambda session, *_: session.call.call_id)
    def _end(self, session: Session, cause: str, by: str, code: int | None, release: bool = True) -> None:
        if session.ended:
            return
        session.ended = True
        if session.ring_timer is not None:
            session.ring_timer.cancel()
            session.ring_timer = None
        call = session.call
        if session.dialog is not None:
            self.dialogs.pop(session.dialog.key, None)
        self.sessions.pop(call.call_id, None)
        try:
            if call.state is not CallState.ENDED:
                self.registry.ended(call, cause, by, code)
        finally:  # a failing listener must not keep the call's ports and sockets
            if release:
                try:
                    self.media.release(call)
                except Exception as exc:  # noqa: BLE001 - a media bug must not break signaling
                    log.error("media.release failed: %s", clip(repr(exc)))


def _required(req: Request) -> list[str]:
    return [r.strip() for v in req.raw_all("require") for r in v.split(",") if r.strip()]


def _sdp_warning(exc: Exception) -> tuple[str, str]:
    """An SDP we cannot use is refused with 488 (RFC 3261 21.4.26); the Warning says why.

    No codec in common also carries the standard 305 (RFC 3261 20.43); the 399 names the reason.
    """
    text = re.sub(r'[^\x20-\x7e]|["\\]', " ", str(exc))[:120]
    value = f'399 mediasrv "unusable SDP: {text}"'
    if isinstance(exc, sdpmod.NoCommonCodec):
        value = f'305 mediasrv "Incompatible media format", {value}'
    return ("Warning", value)


def _challenges(resp: Response) -> list[digest.Challenge]:
    """The digest challenges of a 401/407 we can answer: at most one WWW- and one Proxy-Authenticate."""
    found = (
        digest.choose(resp.raw_all("www-authenticate")),
        digest.choose(resp.raw_all("proxy-authenticate"), proxy=True),
    )
    return [ch for ch in found if ch is not None]


def _ignore_response(tx: ClientTx, resp: Response) -> None:
    return None


def _ignore_timeout(tx: ClientTx) -> None:
    return None


_RAW_HDR_RE = re.compile(r"^(via|v|from|f|to|t|call-id|i|cseq)[ \t]*:[ \t]*(.*)$", re.I | re.M)


def stateless_error(data: bytes, status: int, reason: str, dest: Dest, server: str) -> bytes | None:
    """Best-effort 400/505 for a request we could not parse (nothing for responses or ACK)."""
    if data[:4] == b"SIP/" or data[:4] == b"ACK ":
        return None
    end = data.find(b"\r\n\r\n")
    # at most the header section a message may have: the answer to an oversized one costs no more
    head = data[: end if 0 <= end <= MAX_HEADER_BYTES else MAX_HEADER_BYTES].decode("utf-8", "replace")
    found: dict[str, str] = {}
    vias: list[str] = []
    names = {"v": "via", "f": "from", "t": "to", "i": "call-id"}
    for m in _RAW_HDR_RE.finditer(head):
        name = names.get(m.group(1).lower(), m.group(1).lower())
        value = m.group(2).strip()
        if name == "via":
            vias.append(value)
        else:
            found.setdefault(name, value)
    if not vias or len(found) < 4:
        return None
    to = found["to"]
    if ";tag=" not in to.replace(" ", ""):
        to += f";tag=e{random.getrandbits(32):x}"
    reason = re.sub(r"[\r\n]", " ", reason)[:100]
    lines = [f"SIP/2.0 {status} {REASONS.get(status, 'Bad Request')} ({reason})"]
    lines += [f"Via: {v}" for v in vias]
    lines += [f"From: {found['from']}", f"To: {to}", f"Call-ID: {found['call-id']}", f"CSeq: {found['cseq']}"]
    lines += [f"Server: {server}", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
