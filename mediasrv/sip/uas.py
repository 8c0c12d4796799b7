"""The INVITE-serving role: calls offered to us, their answers, and the requests inside their dialogs.

Facts go out as events (:class:`CallOffered`, :class:`ReinviteOffered`, :class:`MediaAnswered`,
:class:`DtmfReceived`, :class:`CallEnded`); the decisions come back as commands (:meth:`ring`,
:meth:`early_media`, :meth:`answer`, :meth:`reject`, :meth:`accept_reinvite`, ...).
"""

from __future__ import annotations

import logging
import random
import re

from ..calls.registry import NegotiatedMedia
from ..ops.logs import with_call_id
from ..ops.logsafe import clip
from . import sdp as sdpmod
from .base import ALLOW, MEDIA_FAILED, CoreBase
from .dialog import Dialog, uas_dialog
from .events import CallOffered, DtmfReceived, EndReason, MediaAnswered, ReinviteOffered
from .info import INFO_TYPES, InfoError, parse_info
from .message import Request
from .session import UNANSWERED_IN, Phase, Session
from .transaction import ServerInviteTx, ServerTx, TxState

log = logging.getLogger("mediasrv.sip")

IN_DIALOG_OK = ("UPDATE", "INFO")


class SipStateError(RuntimeError):
    """A command that the session's phase does not allow (answering a call that is not ringing, ...)."""


class UasSide(CoreBase):
    # -- queries the controller asks before deciding ----------------------------------------------
    def is_ringing(self, sid: str) -> bool:
        """An inbound session not answered yet whose INVITE can still get a final response."""
        s = self.sessions.get(sid)
        tx = s.invite_tx if s is not None else None
        return (
            s is not None
            and s.inbound
            and s.phase in UNANSWERED_IN
            and isinstance(tx, ServerInviteTx)
            and tx.state is TxState.PROCEEDING
        )

    def offered_media(self, sid: str) -> NegotiatedMedia | None:
        """What the INVITE's SDP offer negotiated to (None: it had no offer)."""
        plan = self.session(sid).offer_plan
        return plan.media if plan is not None else None

    def _ringing(self, sid: str) -> tuple[Session, ServerInviteTx]:
        if not self.is_ringing(sid):
            raise SipStateError(f"session {sid} is not an unanswered inbound call")
        session = self.sessions[sid]
        assert isinstance(session.invite_tx, ServerInviteTx)
        return session, session.invite_tx

    # -- commands ---------------------------------------------------------------------------------
    def ring(self, sid: str) -> None:
        """180 Ringing; refused with 480 after ``ring_timeout_s`` unless answered or ended first."""
        session, tx = self._ringing(sid)
        self._dialog_for(session)
        self._respond(tx, 180, session.local_tag, headers=[("Contact", self._contact(tx.dest.transport))])
        session.phase = Phase.RINGING
        if self.settings.ring_timeout_s > 0 and session.ring_timer is None:
            session.ring_timer = self.timers.schedule(self.clock() + self.settings.ring_timeout_s,
                                                      lambda: self._ring_timeout(session))

    def early_media(self, sid: str, local_rtp: tuple[str, int]) -> None:
        """183 Session Progress with our SDP answer (the caller's media must already be set up).

        The 183 goes unreliably (no 100rel: an INVITE that requires it was refused 420), so the
        200 repeats the very same answer (same o= id and version, RFC 3261 13.2.1 / RFC 6337 3.1).
        Only the INVITE's own retransmissions re-send it (the server transaction answers them with
        its last provisional).
        """
        session, tx = self._ringing(sid)
        if session.offer_sdp is None or session.offer_plan is None:
            raise SipStateError(f"session {sid}: early media needs an SDP offer in the INVITE")
        session.local_rtp = local_rtp
        body = sdpmod.build_answer(session.offer_sdp, session.offer_plan, local_rtp, session.sess_id,
                                   session.sdp_version)
        self._dialog_for(session)
        session.early_answer = body
        self._respond(
            tx,
            183,
            session.local_tag,
            headers=[("Contact", self._contact(tx.dest.transport)), ("Content-Type", "application/sdp")],
            body=body,
        )
        session.phase = Phase.EARLY

    def answer(self, sid: str, local_rtp: tuple[str, int]) -> None:
        """200 OK with our SDP answer (or our offer, when the INVITE had none: the answer comes in the ACK)."""
        session, tx = self._ringing(sid)
        session.local_rtp = local_rtp
        if session.offer_sdp is not None and session.offer_plan is not None:
            body = session.early_answer or sdpmod.build_answer(
                session.offer_sdp, session.offer_plan, local_rtp, session.sess_id, session.sdp_version
            )
        else:
            body = sdpmod.build_offer(local_rtp, self.settings.codecs, session.sess_id, session.sdp_version)
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
        session.phase = Phase.ANSWERED
        if session.ring_timer is not None:
            session.ring_timer.cancel()
            session.ring_timer = None

    def reject(self, sid: str, status: int, headers: list[tuple[str, str]] | None = None) -> None:
        """End an unanswered inbound session with a final *status* (nothing when it already ended)."""
        session = self.sessions.get(sid)
        if session is None or session.ended:
            return
        tx = session.invite_tx
        if isinstance(tx, ServerInviteTx) and tx.state is TxState.PROCEEDING:
            self._respond(tx, status, session.local_tag, headers=headers)
        self._end(session, EndReason.LOCAL, status)

    def hangup(self, sid: str) -> None:
        """BYE an answered session (nothing when it already ended)."""
        session = self.sessions.get(sid)
        if session is None or session.ended:
            return
        self._stop_2xx(session)
        self._send_bye(session)
        self._end(session, EndReason.LOCAL, None)

    def accept_reinvite(self, sid: str) -> None:
        """200 to the pending re-INVITE: our answer to its offer, or a new offer of ours."""
        session = self.session(sid)
        if session.reinvite_wait is None:
            raise SipStateError(f"session {sid} has no re-INVITE pending")
        tx, offer, plan = session.reinvite_wait
        session.reinvite_wait = None
        assert session.dialog is not None
        session.dialog.update_target(tx.request)
        session.sdp_version += 1
        local = session.local_rtp or (self.settings.host, 0)
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

    def refuse_reinvite(self, sid: str, status: int, headers: list[tuple[str, str]] | None = None) -> None:
        """A final error to the pending re-INVITE; the call goes on as it was."""
        session = self.session(sid)
        if session.reinvite_wait is None:
            raise SipStateError(f"session {sid} has no re-INVITE pending")
        tx = session.reinvite_wait[0]
        session.reinvite_wait = None
        self._respond(tx, status, headers=headers)

    # -- CANCEL -----------------------------------------------------------------------------------
    def _on_cancel(self, req: Request, tx: ServerTx) -> None:
        itx = self.tl.find_server(req, "INVITE")
        if not isinstance(itx, ServerInviteTx):
            self._respond(tx, 481, self._token())
            return
        session: Session | None = itx.context
        tag = session.local_tag if session is not None else self._token()
        self._respond(tx, 200, tag)
        if itx.state is not TxState.PROCEEDING:
            return
        self._respond(itx, 487, tag)
        if session is not None and itx is session.invite_tx:
            self._end(session, EndReason.CANCELLED, 487)

    # -- a new INVITE -----------------------------------------------------------------------------
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
                self._respond(tx, 488, tag, headers=[sdp_warning(exc)])
                return
        accept = req.get("accept")
        if accept is not None and accept.strip():
            types = {a.split(";")[0].strip().lower() for a in accept.split(",")}
            if not types & {"application/sdp", "application/*", "*/*"}:
                self._respond(tx, 406, tag, headers=[("Accept", "application/sdp")])
                return
        if req.call_id in self._by_call_id:  # a merged or looped request (RFC 3261 8.2.2.2)
            self._respond(tx, 482, tag)
            return
        session = Session(sid=self._token(), inbound=True, local_tag=tag, sip_call_id=req.call_id,
                          phase=Phase.OFFERED, invite_req=req, invite_tx=tx, offer_sdp=offer, offer_plan=plan,
                          sess_id=random.getrandbits(31))
        tx.context = session
        tx.on_no_ack = self._no_ack
        self._add(session)
        self._emit(CallOffered(
            sid=session.sid,
            sip_call_id=req.call_id,
            from_uri=req.from_.raw_uri,
            to_uri=req.to.raw_uri,
            from_display=req.from_.display or None,
            request_uri=req.uri_str,
            media=plan.media if plan is not None else None,
        ))

    def _dialog_for(self, session: Session) -> Dialog:
        if session.dialog is None:
            req = session.invite_req
            assert req is not None and session.invite_tx is not None
            to_value = f"{req.get('to')};tag={session.local_tag}"
            session.dialog = uas_dialog(req, session.local_tag, session.invite_tx.dest, to_value)
            self.dialogs[session.dialog.key] = session
        return session.dialog

    @with_call_id(lambda session: session.label)
    def _ring_timeout(self, session: Session) -> None:
        session.ring_timer = None
        if not self.is_ringing(session.sid):
            return
        log.info("call %s rang for %.0f s unanswered: refusing it", session.label, self.settings.ring_timeout_s)
        tx = session.invite_tx
        assert isinstance(tx, ServerInviteTx)
        self._respond(tx, 480, session.local_tag)
        self._end(session, EndReason.RING_TIMEOUT, 480)

    @with_call_id(lambda tx: tx.context.label if tx.context is not None else None)
    def _no_ack(self, tx: ServerInviteTx) -> None:
        session: Session | None = tx.context
        if session is None or session.ended:
            return
        self.stats["no_ack"] += 1
        log.info("no ACK for our 2xx: hanging up")
        self._send_bye(session)
        self._end(session, EndReason.NO_ACK, None)

    # -- in-dialog requests -----------------------------------------------------------------------
    @with_call_id(lambda session, *_: session.label)
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
            if isinstance(itx, ServerInviteTx) and itx.state is TxState.PROCEEDING:
                self._respond(itx, 487, session.local_tag)
            self._end(session, EndReason.BYE, None)
        elif m == "INVITE":
            assert isinstance(tx, ServerInviteTx)
            self._reinvite(session, req, tx)
        elif m == "OPTIONS":
            self._respond(tx, 200, self._token(), headers=self._options_headers(tx.dest.transport))
        elif m == "INFO" and req.body:
            self._info(session, req, tx)
        elif m in IN_DIALOG_OK:
            self._respond(tx, 200)
        else:
            self._respond(tx, 405, headers=[("Allow", ALLOW)])

    def _options_headers(self, transport: str) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Accept", "application/sdp"), ("Contact", self._contact(transport))]

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
            log.debug("unreadable INFO DTMF body on %s: %s", session.label, exc)
            self._respond(tx, 400, reason="Bad DTMF Body")
            return
        self._emit(DtmfReceived(session.sid, digit, duration_ms))
        self._respond(tx, 200)

    def _stop_2xx(self, session: Session) -> None:
        for t in (session.invite_tx, session.reinvite_tx):
            if isinstance(t, ServerInviteTx):
                t.ack_2xx()

    def _reinvite(self, session: Session, req: Request, tx: ServerInviteTx) -> None:
        pending = session.reinvite_tx
        initial = session.invite_tx
        if (
            session.reinvite_wait is not None
            or (pending is not None and pending.state is TxState.ACCEPTED and not pending.acked)
            or (isinstance(initial, ServerInviteTx) and initial.state is TxState.PROCEEDING)
            or (isinstance(initial, ServerInviteTx) and initial.state is TxState.ACCEPTED and not initial.acked)
        ):
            self._respond(tx, 491)
            return
        offer = plan = None
        if req.body:
            try:
                offer, plan = self._plan_offer(req.body)
            except (sdpmod.SdpError, sdpmod.NoCommonCodec) as exc:
                self.stats["sdp_refused"] += 1
                self._respond(tx, 488, headers=[sdp_warning(exc)])  # the call keeps its media
                return
        session.reinvite_wait = (tx, offer, plan)
        self._emit(ReinviteOffered(session.sid, plan.media if plan is not None else None))

    def _on_ack(self, req: Request) -> None:
        session = self.dialogs.get((req.call_id, req.to_tag or "", req.from_tag or ""))
        if session is None:
            return  # stray ACK: absorbed
        self._ack_in_dialog(session, req)

    @with_call_id(lambda session, *_: session.label)
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
                self._end(session, EndReason.BAD_SDP, 488)
                return
            self._emit(MediaAnswered(session.sid, media))


def sdp_warning(exc: Exception) -> tuple[str, str]:
    """An SDP we cannot use is refused with 488 (RFC 3261 21.4.26); the Warning says why.

    No codec in common also carries the standard 305 (RFC 3261 20.43); the 399 names the reason.
    """
    text = re.sub(r'[^\x20-\x7e]|["\\]', " ", str(exc))[:120]
    value = f'399 mediasrv "unusable SDP: {text}"'
    if isinstance(exc, sdpmod.NoCommonCodec):
        value = f'305 mediasrv "Incompatible media format", {value}'
    return ("Warning", value)


__all__ = ["UasSide", "SipStateError", "MEDIA_FAILED", "sdp_warning"]
