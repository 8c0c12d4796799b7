"""The calling role: INVITEs we originate, their digest retries, CANCEL, and the ACK for their 2xx.

:meth:`UacSide.prepare_call` names a new leg (its SIP Call-ID is known before anything is sent,
so the controller can register the call and allocate media), :meth:`UacSide.send_invite` sends
the INVITE with our SDP offer, :meth:`UacSide.cancel` gives up on it. What comes back is told
as :class:`ProgressReceived`, :class:`CallAnswered` and :class:`CallEnded`.
"""

from __future__ import annotations

import logging
import random
import re

from ..ops.logs import with_call_id
from ..ops.logsafe import clip
from . import digest
from . import sdp as sdpmod
from .base import ALLOW, REASONS, CoreBase, challenges, ignore_response, ignore_timeout
from .dialog import uac_dialog
from .digest import Credentials
from .events import CallAnswered, EndReason, ProgressReceived
from .message import Response, build_request_head
from .session import Phase, Session
from .transaction import ClientInviteTx, ClientTx, Dest, TxState

log = logging.getLogger("mediasrv.sip")

# Headers a caller of prepare_call() may not add: the core writes these itself.
RESERVED_HEADERS = frozenset(
    h.lower() for h in (
        "Via", "v", "Max-Forwards", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Contact", "m",
        "Content-Length", "l", "Content-Type", "c", "Authorization", "Proxy-Authorization", "Allow",
        "User-Agent", "Route", "Record-Route", "Require", "Proxy-Require", "Supported", "k", "Expires",
    )
)
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")  # \Z: "$" would accept a name ending in "\n"

_CANCELLING = (Phase.CANCELLING, Phase.CANCELLED)


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


class UacSide(CoreBase):
    # -- commands ---------------------------------------------------------------------------------
    def prepare_call(
        self,
        to_uri: str,
        remote: tuple[str, int],
        from_uri: str | None = None,
        transport: str = "udp",
        headers: dict[str, str] | None = None,
        credentials: Credentials | None = None,
    ) -> Session:
        """A new outbound leg to *to_uri* at *remote*; nothing is sent until :meth:`send_invite`.

        *headers* go into the INVITE (and its authenticated retries) as they are; the caller has
        checked them (:func:`check_user_headers`). With *credentials*, a 401/407 is answered once
        with a digest (a second challenge ends the leg, EndReason.AUTH_FAILED).
        """
        transport = transport.lower()
        if transport not in ("udp", "tcp"):
            raise ValueError(f"unsupported transport {transport!r}")
        host = self._host()
        from_uri = from_uri or f"sip:mediasrv@{host}"
        tag = self._token()
        session = Session(
            sid=self._token(), inbound=False, local_tag=tag, sip_call_id=f"{self._token()}@{host}",
            phase=Phase.CALLING, sess_id=random.getrandbits(31), flow=Dest(transport, (remote[0], int(remote[1]))),
            uri=to_uri, from_uri=from_uri, from_value=f"<{from_uri}>;tag={tag}", to_value=f"<{to_uri}>",
            user_headers=list((headers or {}).items()), credentials=credentials,
        )
        self._add(session)
        return session

    def discard(self, sid: str) -> None:
        """Forget a prepared leg whose INVITE was never sent (no event: nothing happened on the wire)."""
        session = self.sessions.pop(sid, None)
        if session is not None:
            session.phase = Phase.ENDED
            if self._by_call_id.get(session.sip_call_id) is session:
                del self._by_call_id[session.sip_call_id]

    def send_invite(self, sid: str, local_rtp: tuple[str, int]) -> None:
        """Send the INVITE with our SDP offer for RTP at *local_rtp*."""
        session = self.session(sid)
        session.local_rtp = local_rtp
        session.offer_body = sdpmod.build_offer(local_rtp, self.settings.codecs, session.sess_id, session.sdp_version)
        self._send_invite(session, [])

    def cancel(self, sid: str) -> None:
        """Give up on an unanswered outbound leg: CANCEL now if a provisional came, else at the first one.

        A final response (487, or a 2xx that lost the race: ACK + BYE) ends it; nothing when it
        already ended or is cancelling.
        """
        session = self.sessions.get(sid)
        if session is None or session.phase not in (Phase.CALLING, Phase.PROCEEDING):
            return
        if session.phase is Phase.PROCEEDING:
            self._send_cancel(session)
        else:
            session.phase = Phase.CANCELLING

    # -- sending ----------------------------------------------------------------------------------
    def _send_invite(self, session: Session, auth: list[tuple[str, str]]) -> None:
        """(Re)send the initial INVITE in a new transaction: next CSeq, new branch, *auth* headers."""
        assert session.flow is not None
        session.cseq += 1
        transport = session.flow.transport
        branch = self._branch()
        session.via = via = self._via(transport, branch)
        uri, from_value, to_value, cseq = session.uri, session.from_value, session.to_value, session.cseq
        sip_call_id = session.sip_call_id
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
            """The ACK of a 3xx-6xx belongs to the INVITE transaction: same branch, same Request-URI."""
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
        if session.phase is Phase.PROCEEDING:
            session.phase = Phase.CALLING

    def _send_cancel(self, session: Session) -> None:
        tx = session.invite_tx
        if not isinstance(tx, ClientInviteTx) or tx.state not in (TxState.CALLING, TxState.PROCEEDING):
            return
        session.phase = Phase.CANCELLED
        data = build_request_head(
            "CANCEL",
            session.uri,
            [
                ("Via", session.via),
                ("Max-Forwards", "70"),
                ("From", session.from_value),
                ("To", session.to_value),
                ("Call-ID", session.sip_call_id),
                ("CSeq", f"{session.cseq} CANCEL"),
            ],
        )
        self.tl.new_client("CANCEL", tx.branch, data, tx.dest, ignore_response, ignore_timeout)

    # -- responses --------------------------------------------------------------------------------
    @with_call_id(lambda tx, *_: tx.context.label)
    def _uac_response(self, tx: ClientTx, resp: Response) -> None:
        session: Session = tx.context
        if tx is not session.invite_tx:
            return  # a late response to an INVITE we already retried with credentials
        st = resp.status
        if st < 200:
            if st > 100 and not session.ended:
                media = None
                if resp.body:
                    try:
                        media = self._media_from_answer(resp.body)
                    except (sdpmod.SdpError, sdpmod.NoCommonCodec) as exc:
                        log.info("unusable SDP in %s: %s (ignored)", st, clip(exc))
                self._emit(ProgressReceived(session.sid, st, media))
            if session.phase is Phase.CALLING:
                session.phase = Phase.PROCEEDING
            elif session.phase is Phase.CANCELLING:
                self._send_cancel(session)
            return
        if st < 300:
            self._uac_2xx(session, resp, tx)
            return
        if st in (401, 407) and self._retry_with_auth(session, resp):
            return
        if session.phase in _CANCELLING:
            reason = EndReason.CANCELLED
        elif st in (401, 407):
            reason = EndReason.AUTH_FAILED
        else:
            reason = EndReason.REFUSED
        self._end(session, reason, st, (st, resp.reason or REASONS.get(st, "")))

    def _retry_with_auth(self, session: Session, resp: Response) -> bool:
        """Answer a 401/407 with credentials (RFC 3261 22.2); False when we cannot or should not.

        Once credentials were sent, another challenge means they were refused, unless it says
        ``stale=true`` (the nonce expired, the password was fine): one such retry is allowed.
        """
        creds = session.credentials
        if creds is None or session.phase not in (Phase.CALLING, Phase.PROCEEDING):
            return False
        found = challenges(resp)
        if not found:
            log.info("no usable digest challenge in %s", resp.status)
            return False
        if session.auth_attempts >= 1 and not (session.auth_attempts == 1 and all(ch.stale for ch in found)):
            return False
        session.auth_attempts += 1
        auth = [
            (ch.header_name, digest.authorization(ch, creds, "INVITE", session.uri, body=session.offer_body))
            for ch in found
        ]
        self._send_invite(session, auth)
        return True

    def _uac_2xx(self, session: Session, resp: Response, tx: ClientTx) -> None:
        if session.dialog is not None:
            if session.ack_bytes is not None and resp.to_tag == session.dialog.remote_tag:
                self.stats["retransmissions"] += 1
                self._send(session.ack_bytes, session.dialog.destination()[1])
            return
        dialog = uac_dialog(session.from_value, session.local_tag, session.cseq, resp, tx.dest)
        dialog.may_send_to = self.admission.source_allowed  # a Contact/Record-Route elsewhere: the flow
        session.dialog = dialog
        self.dialogs[dialog.key] = session
        ack = dialog.request("ACK", self._via_for(self._branch()), cseq=session.cseq)
        session.ack_bytes = ack.data
        self._send(ack.data, ack.dest)
        if session.phase in _CANCELLING or session.ended:
            # Our CANCEL lost the race against the 2xx: confirm and hang up at once.
            self._send_bye(session)
            self.dialogs.pop(dialog.key, None)
            self._end(session, EndReason.CANCELLED, None, (487, "Request Terminated"))
            return
        try:
            media = self._media_from_answer(resp.body) if resp.body else None
        except (sdpmod.SdpError, sdpmod.NoCommonCodec) as exc:
            self._send_bye(session)
            self._end(session, EndReason.BAD_SDP, 488, (488, f"unusable SDP answer: {exc}"))
            return
        session.phase = Phase.ANSWERED
        self._emit(CallAnswered(session.sid, media, resp.reason))

    @with_call_id(lambda tx: tx.context.label)
    def _uac_timeout(self, tx: ClientTx) -> None:
        session: Session = tx.context
        if tx is not session.invite_tx:
            return
        reason = EndReason.CANCELLED if session.phase in _CANCELLING else EndReason.TIMEOUT
        self._end(session, reason, 408, (408, "Request Timeout"))

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
