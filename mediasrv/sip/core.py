"""The SIP core, sans-I/O: bytes and time in, bytes and events out, commands from its user.

:class:`SipCore` is fed ``receive(bytes, Dest)`` and timer deadlines (its :class:`TimerHeap`),
and sends bytes through the ``send`` function it was given. Here: parsing, admission (before
any state is kept) and the stateless answers; the INVITE-serving role is :mod:`.uas`, the calling
role :mod:`.uac`, what both share :mod:`.base`. It holds no call, registry or media object:
what happens to a call is told as :mod:`.events`, and the call controller answers with commands.
"""

from __future__ import annotations

import logging
import random
import re

from ..ops.logsafe import clip
from .admission import AuthOutcome
from .base import (  # _RPORT_RE: fuzzed by tests/adversarial.py
    _RPORT_RE,
    ALLOW,
    REASONS,
    SCHEMES,
    CoreBase,
    CoreSettings,
)
from .message import MAX_HEADER_BYTES, ParseError, Request, parse
from .transaction import Dest, ServerInviteTx, TxState
from .uac import CallFailed, UacSide, check_user_headers
from .uas import SipStateError, UasSide

log = logging.getLogger("mediasrv.sip")

__all__ = ["SipCore", "CoreSettings", "CallFailed", "SipStateError", "check_user_headers", "stateless_error",
           "_RPORT_RE"]


class SipCore(UasSide, UacSide, CoreBase):
    # -- input ------------------------------------------------------------------------------------
    def unframed(self, data: bytes, dest: Dest, exc: ParseError) -> None:
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
            if isinstance(tx, ServerInviteTx) and tx.state in (TxState.COMPLETED, TxState.CONFIRMED):
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


def _required(req: Request) -> list[str]:
    return [r.strip() for v in req.raw_all("require") for r in v.split(",") if r.strip()]


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
