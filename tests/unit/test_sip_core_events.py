"""The SIP core alone, without sockets and without a call controller: bytes and time in, bytes and
events out, commands in. Nothing here creates a Call, a registry or a media leg."""

from __future__ import annotations

import pytest

from mediasrv.sip.core import CoreSettings, SipCore, SipStateError
from mediasrv.sip.events import (
    CallAnswered,
    CallEnded,
    CallOffered,
    DtmfReceived,
    EndReason,
    Event,
    MediaAnswered,
    ProgressReceived,
    ReinviteOffered,
)
from mediasrv.sip.message import Request, Response, parse
from mediasrv.sip.session import Phase
from mediasrv.sip.transaction import Dest

PEER = Dest("udp", ("127.0.0.1", 5062))
OFFER = (
    "v=0\r\no=peer 1 {v} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
)
LOCAL_RTP = ("127.0.0.1", 20000)


class Wire:
    """A core on a fake clock; what it sends is parsed into a list."""

    def __init__(self, **settings: object) -> None:
        self.now = 10.0
        self.out: list[Request | Response] = []
        self.core = SipCore(CoreSettings(**settings), self._send, lambda: self.now)  # type: ignore[arg-type]

    def _send(self, data: bytes, dest: Dest) -> None:
        msg = parse(data, stream=True)
        assert msg is not None
        self.out.append(msg)

    def feed(self, text: str) -> None:
        self.core.receive(text.encode(), PEER)

    def take(self) -> list[Request | Response]:
        out, self.out = self.out, []
        return out

    def statuses(self) -> list[int]:
        return [m.status for m in self.take() if isinstance(m, Response)]

    def events(self) -> list[Event]:
        return list(self.core.events())

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while (d := self.core.timers.next_deadline()) is not None and d <= target:
            self.now = d
            self.core.timers.run_due(d)
        self.now = target


def req(method: str, *, cseq: int = 1, branch: str = "z9hG4bK-e1", to_tag: str | None = None,
        body: str = "", ctype: str = "application/sdp", cseq_method: str | None = None) -> str:
    to = "<sip:svc@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    ct = f"Content-Type: {ctype}\n" if body else ""
    return (
        f"{method} sip:svc@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch={branch}\n"
        f"From: <sip:a@127.0.0.1:5062>;tag=ft\nTo: {to}\nCall-ID: ev1\nCSeq: {cseq} {cseq_method or method}\n"
        f"Contact: <sip:a@127.0.0.1:5062>\nMax-Forwards: 70\n{ct}Content-Length: {len(body.encode())}\n\n"
    ).replace("\n", "\r\n").replace("\r\r\n", "\r\n") + body


def offered(w: Wire) -> CallOffered:
    w.feed(req("INVITE", body=OFFER.format(v=1)))
    assert w.statuses() == [100]  # nothing more until a command says what to do
    (ev,) = w.events()
    assert isinstance(ev, CallOffered) and ev.sip_call_id == "ev1" and ev.media is not None
    assert ev.media.codec.name == "PCMU" and ev.media.remote_addr == ("127.0.0.1", 6000)
    return ev


def answered(w: Wire) -> tuple[CallOffered, str]:
    ev = offered(w)
    w.core.answer(ev.sid, LOCAL_RTP)
    (ok,) = w.take()
    assert isinstance(ok, Response) and ok.status == 200 and b"m=audio 20000 " in ok.body
    assert ok.to_tag is not None
    w.feed(req("ACK", to_tag=ok.to_tag, branch="z9hG4bK-ack"))
    assert w.take() == [] and w.events() == []  # the offer was in the INVITE: the ACK carries nothing
    return ev, ok.to_tag


def test_offered_call_rings_then_answers_then_the_peer_hangs_up() -> None:
    w = Wire()
    ev = offered(w)
    assert w.core.session(ev.sid).phase is Phase.OFFERED
    w.core.ring(ev.sid)
    assert w.statuses() == [180] and w.core.session(ev.sid).phase is Phase.RINGING
    w.core.answer(ev.sid, LOCAL_RTP)
    (ok,) = w.take()
    assert isinstance(ok, Response) and ok.status == 200 and w.core.session(ev.sid).phase is Phase.ANSWERED
    w.feed(req("ACK", to_tag=ok.to_tag, branch="z9hG4bK-ack"))
    w.feed(req("BYE", cseq=2, to_tag=ok.to_tag, branch="z9hG4bK-bye"))
    assert w.statuses() == [200]
    assert w.events() == [CallEnded(ev.sid, EndReason.BYE, None)]
    assert w.core.sessions == {} and w.core.dialogs == {}


def test_reject_sends_the_status_and_ends_the_session() -> None:
    w = Wire()
    ev = offered(w)
    w.core.reject(ev.sid, 486)
    assert w.statuses() == [486]
    assert w.events() == [CallEnded(ev.sid, EndReason.LOCAL, 486)]
    w.core.reject(ev.sid, 486)  # ending twice is nothing
    assert w.take() == [] and w.events() == []
    with pytest.raises(SipStateError):
        w.core.ring(ev.sid)


def test_commands_a_phase_does_not_allow_raise() -> None:
    w = Wire()
    ev, _ = answered(w)
    with pytest.raises(SipStateError):
        w.core.answer(ev.sid, LOCAL_RTP)  # answered already
    with pytest.raises(SipStateError):
        w.core.accept_reinvite(ev.sid)  # no re-INVITE pending
    assert w.take() == []


def test_caller_cancel_is_487_and_an_event() -> None:
    w = Wire()
    ev = offered(w)
    w.core.ring(ev.sid)
    w.take()
    w.feed(req("CANCEL"))
    assert sorted(w.statuses()) == [200, 487]
    assert w.events() == [CallEnded(ev.sid, EndReason.CANCELLED, 487)]


def test_ring_timeout_refuses_with_480() -> None:
    w = Wire(ring_timeout_s=30.0)
    ev = offered(w)
    w.core.ring(ev.sid)
    w.take()
    w.advance(29.0)
    assert w.take() == []
    w.advance(1.2)  # past the deadline, before Timer G would repeat the 480
    assert w.statuses() == [480]
    assert w.events() == [CallEnded(ev.sid, EndReason.RING_TIMEOUT, 480)]


def test_reinvite_waits_for_a_command() -> None:
    w = Wire()
    ev, tag = answered(w)
    w.feed(req("INVITE", cseq=2, to_tag=tag, branch="z9hG4bK-re2", body=OFFER.format(v=2).replace("0 8", "8")))
    assert w.take() == []  # no 200 before the controller has set the new media up
    (re,) = w.events()
    assert isinstance(re, ReinviteOffered) and re.media is not None and re.media.codec.name == "PCMA"
    w.core.accept_reinvite(ev.sid)
    (ok,) = w.take()
    assert isinstance(ok, Response) and ok.status == 200 and b"o=mediasrv" in ok.body
    w.feed(req("ACK", cseq=2, to_tag=tag, branch="z9hG4bK-re2a"))
    w.feed(req("INVITE", cseq=3, to_tag=tag, branch="z9hG4bK-re3", body=OFFER.format(v=3)))
    assert isinstance(w.events()[0], ReinviteOffered)
    w.core.refuse_reinvite(ev.sid, 500)
    assert w.statuses() == [500] and w.core.session(ev.sid).phase is Phase.ANSWERED


def test_our_offer_in_the_200_is_answered_in_the_ack() -> None:
    w = Wire()
    w.feed(req("INVITE"))
    (ev,) = w.events()
    assert isinstance(ev, CallOffered) and ev.media is None
    w.take()
    w.core.answer(ev.sid, LOCAL_RTP)
    (ok,) = w.take()
    assert isinstance(ok, Response) and b"m=audio 20000 " in ok.body
    w.feed(req("ACK", to_tag=ok.to_tag, branch="z9hG4bK-ack", body=OFFER.format(v=1)))
    (ans,) = w.events()
    assert isinstance(ans, MediaAnswered) and ans.media.remote_addr == ("127.0.0.1", 6000)


def test_dtmf_info_is_an_event_then_200() -> None:
    w = Wire()
    ev, tag = answered(w)
    w.feed(req("INFO", cseq=2, to_tag=tag, branch="z9hG4bK-i", body="Signal=5\r\nDuration=160\r\n",
               ctype="application/dtmf-relay"))
    assert w.events() == [DtmfReceived(ev.sid, "5", 160)]
    assert w.statuses() == [200]


def test_outbound_leg_progress_answer_and_our_bye() -> None:
    w = Wire()
    session = w.core.prepare_call("sip:b@127.0.0.1:5062", ("127.0.0.1", 5062))
    assert w.take() == []  # nothing on the wire before the controller has allocated media
    w.core.send_invite(session.sid, LOCAL_RTP)
    (invite,) = w.take()
    assert isinstance(invite, Request) and invite.method == "INVITE" and b"m=audio 20000 " in invite.body

    def reply(status: int, body: str = "") -> str:
        lines = [f"SIP/2.0 {status} X"] + [f"{k}: {v}" for k, v in invite.headers if k in ("via", "from", "call-id")]
        lines += [f"To: {invite.get('to')};tag=tt", f"CSeq: {invite.cseq} INVITE", "Contact: <sip:b@127.0.0.1:5062>"]
        lines += ["Content-Type: application/sdp"] if body else []
        return "\r\n".join([*lines, f"Content-Length: {len(body)}", "", body])

    w.feed(reply(180))
    assert w.events() == [ProgressReceived(session.sid, 180, None)] and session.phase is Phase.PROCEEDING
    w.feed(reply(200, OFFER.format(v=1).replace("0 8", "8")))
    assert [m.method for m in w.take() if isinstance(m, Request)] == ["ACK"]
    (ans,) = w.events()
    assert isinstance(ans, CallAnswered) and ans.media is not None and ans.media.codec.name == "PCMA"
    w.core.hangup(session.sid)
    (bye,) = w.take()
    assert isinstance(bye, Request) and bye.method == "BYE" and bye.cseq == invite.cseq + 1
    assert w.events() == [CallEnded(session.sid, EndReason.LOCAL, None)]


def test_outbound_cancel_waits_for_a_provisional() -> None:
    w = Wire()
    session = w.core.prepare_call("sip:b@127.0.0.1:5062", ("127.0.0.1", 5062))
    w.core.send_invite(session.sid, LOCAL_RTP)
    w.take()
    w.core.cancel(session.sid)
    assert w.take() == [] and session.phase is Phase.CANCELLING
    w.advance(64 * 0.5 + 1)  # Timer B: the INVITE is given up; the event says it was being cancelled
    (end,) = w.events()
    assert isinstance(end, CallEnded) and end.reason is EndReason.CANCELLED and end.outcome == (408, "Request Timeout")


def test_handler_gets_events_in_order_never_reentrantly() -> None:
    w = Wire()
    seen: list[str] = []

    def handler(ev: Event) -> None:
        seen.append(type(ev).__name__)
        if isinstance(ev, CallOffered):
            w.core.reject(ev.sid, 603)  # its CallEnded is delivered after this handler returns
            seen.append("rejected")

    w.core.on_event = handler
    w.feed(req("INVITE", body=OFFER.format(v=1)))
    assert seen == ["CallOffered", "rejected", "CallEnded"] and w.statuses() == [100, 603]
