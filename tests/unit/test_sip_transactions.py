"""Transactions, timers and dialogs on a fake clock (sans-I/O: no sockets, no sleeping)."""

from __future__ import annotations

from mediasrv.calls.controller import CallSettings as CoreSettings
from mediasrv.calls.registry import CallState, Direction
from mediasrv.sip.message import Request, Response
from mediasrv.sip.timers import TimerHeap
from mediasrv.sip.transaction import Dest, TransactionLayer
from tests.support.sip_harness import PEER, UDP, Harness, request, response_to, sdp

T1, T2 = 0.5, 4.0


def _invite_and_answer(h: Harness, **kw: object) -> Response:
    h.feed(request(body=sdp(), **kw))  # type: ignore[arg-type]
    out = h.take()
    assert [m.status for m in out] == [100, 200]  # type: ignore[union-attr]
    return out[1]  # type: ignore[return-value]


def _ack(h: Harness, ok: Response, cseq: int = 1, body: str = "", branch: str = "z9hG4bK-ack") -> None:
    h.feed(request("ACK", branch=branch, cseq=cseq, to_tag=ok.to_tag, body=body))


def _send_times(h: Harness, seconds: float, step: float = 0.0) -> list[float]:
    """Offsets (from now) at which something was sent while the clock runs for *seconds*."""
    start = h.now
    h.sent.clear()
    h.advance(seconds)
    times = [round(t - start, 3) for *_, t in h.sent]
    h.sent.clear()
    return times


# -- UAS INVITE -------------------------------------------------------------------------------------


def test_invite_gets_100_then_200_with_answer_and_one_to_tag() -> None:
    h = Harness()
    ok = _invite_and_answer(h)
    assert ok.to_tag and b"m=audio 2000" in ok.body and ok.get("contact")
    call = next(h.registry.all())
    assert call.state is CallState.ANSWERED and call.direction is Direction.INBOUND
    assert call.media and call.media.codec.name == "PCMU" and call.media.remote_addr == ("127.0.0.1", 6000)
    assert [e for e, _ in h.events] == ["call.initiated", "call.answered"]
    assert h.media.changes == [(call.call_id, True)]
    assert ok.vias[0].params["rport"] == "5062" and ok.vias[0].params["received"] == "127.0.0.1"


def test_2xx_retransmitted_with_t1_doubling_capped_at_t2_until_ack() -> None:
    h = Harness()
    ok = _invite_and_answer(h)
    times = _send_times(h, 12.0)
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5]
    _ack(h, ok)
    assert _send_times(h, 10.0) == []
    assert next(h.registry.all()).state is CallState.ANSWERED


def test_no_ack_within_64_t1_ends_call_with_bye() -> None:
    h = Harness()
    _invite_and_answer(h)
    h.advance(64 * T1 - 0.01)
    h.take()
    h.advance(0.02)
    out = h.take()
    assert [m.method for m in out if isinstance(m, Request)] == ["BYE"]
    call = next(h.registry.all())
    assert (call.state, call.hangup_cause, call.hangup_by) == (CallState.ENDED, "no_ack", "server")
    assert h.media.released == [call.call_id]


def test_retransmitted_invite_before_and_after_200_is_absorbed() -> None:
    h = Harness(CoreSettings(auto_answer=False))
    h.feed(request(body=sdp()))
    first = h.take()
    assert [m.status for m in first] == [100, 180]  # type: ignore[union-attr]
    h.feed(request(body=sdp()))
    again = h.take()
    assert [m.status for m in again] == [180] and again[0].to_tag == first[1].to_tag  # type: ignore[union-attr]
    call = next(h.registry.all())
    h.core.answer(call.call_id)
    ok = h.take()[0]
    h.feed(request(body=sdp()))
    resent = h.take()
    assert [m.status for m in resent] == [200] and resent[0].to_tag == ok.to_tag  # type: ignore[union-attr]
    assert len(list(h.registry.all())) == 1 and h.core.stats["absorbed"] == 2


def test_ring_then_answer_and_answer_errors() -> None:
    h = Harness(CoreSettings(auto_answer=False))
    h.feed(request(body=sdp()))
    h.take()
    call = next(h.registry.all())
    assert call.state is CallState.RINGING
    h.core.answer(call.call_id)
    assert call.state is CallState.ANSWERED
    try:
        h.core.answer(call.call_id)
    except RuntimeError:
        pass
    else:
        raise AssertionError("answering twice must fail")
    try:
        h.core.answer("nope")
    except KeyError:
        pass
    else:
        raise AssertionError("unknown call must be KeyError")


def test_non_2xx_retransmitted_until_ack_and_ack_absorbed() -> None:
    h = Harness()
    h.feed(request(body=sdp(pts="18")))
    assert h.statuses() == [100, 488]
    assert _send_times(h, 4.0) == [0.5, 1.5, 3.5]
    h.feed(request("ACK", cseq=1, to_tag="x"))  # same branch as the INVITE: transaction ACK
    assert _send_times(h, 10.0) == []
    assert list(h.registry.all()) == []


def test_non_2xx_without_ack_stops_after_timer_h() -> None:
    h = Harness()
    h.feed(request(body=sdp(pts="18")))
    h.take()
    times = _send_times(h, 40.0)
    assert times[:4] == [0.5, 1.5, 3.5, 7.5] and times[-1] <= 32.0
    assert all(b - a <= T2 + 0.01 for a, b in zip(times, times[1:], strict=False))


def test_bye_retransmission_gets_the_same_200_until_timer_j() -> None:
    h = Harness()
    ok = _invite_and_answer(h)
    _ack(h, ok)
    h.feed(request("BYE", branch="z9hG4bK-bye", cseq=2, to_tag=ok.to_tag))
    first = h.sent[-1][2]
    assert h.statuses() == [200]
    call = next(h.registry.all())
    assert (call.hangup_cause, call.hangup_by) == ("normal_clearing", "caller")
    h.advance(10)
    h.feed(request("BYE", branch="z9hG4bK-bye", cseq=2, to_tag=ok.to_tag))
    assert h.sent[-1][2] == first and h.statuses() == [200]
    h.advance(64 * T1)
    h.feed(request("BYE", branch="z9hG4bK-bye", cseq=2, to_tag=ok.to_tag))
    assert h.statuses() == [481]


def test_cancel_ringing_call_gives_200_and_487() -> None:
    h = Harness(CoreSettings(auto_answer=False))
    h.feed(request(body=sdp()))
    tag = h.take()[1].to_tag
    h.feed(request("CANCEL"))
    out = h.take()
    assert [(m.status, m.cseq_method) for m in out] == [(200, "CANCEL"), (487, "INVITE")]  # type: ignore[union-attr]
    assert out[1].to_tag == tag
    call = next(h.registry.all())
    assert (call.hangup_cause, call.hangup_by, call.sip_code) == ("cancelled", "caller", 487)
    h.feed(request("ACK", to_tag=tag))
    assert _send_times(h, 2.0) == []


def test_481_for_unknown_dialogs_and_cancel() -> None:
    h = Harness()
    h.feed(request("BYE", to_tag="nope"))
    h.feed(request("INVITE", branch="z9hG4bK-2", to_tag="nope", body=sdp()))
    h.feed(request("CANCEL", branch="z9hG4bK-3"))
    assert h.statuses() == [481, 481, 481]


def test_405_options_and_in_dialog_info() -> None:
    h = Harness()
    h.feed(request("SUBSCRIBE", branch="z9hG4bK-s"))
    h.feed(request("OPTIONS", branch="z9hG4bK-o"))
    out = h.take()
    assert [m.status for m in out] == [405, 200]  # type: ignore[union-attr]
    assert "BYE" in (out[0].get("allow") or "")
    ok = _invite_and_answer(h, call_id="c2")
    h.feed(request("INFO", call_id="c2", branch="z9hG4bK-i", cseq=2, to_tag=ok.to_tag))
    h.feed(request("OPTIONS", call_id="c2", branch="z9hG4bK-o2", cseq=3, to_tag=ok.to_tag))
    assert h.statuses() == [200, 200]


def test_malformed_requests_get_400_or_505_statelessly() -> None:
    h = Harness()
    h.feed(request().replace("Call-ID: c1@peer\n", ""))
    h.feed(request(branch="z9hG4bK-b").replace("CSeq: 1 INVITE", "CSeq: x INVITE"))
    h.feed(request(branch="z9hG4bK-c").replace("SIP/2.0\nVia", "SIP/3.0\nVia", 1))
    h.feed(request(body=sdp()).replace("Content-Length: ", "Content-Length: 9"))
    # no Call-ID: nothing to answer with; bad CSeq: 400; SIP/3.0: 505; Content-Length too big: 400
    assert h.statuses() == [400, 505, 400]
    assert h.core.stats["malformed"] == 4
    assert list(h.registry.all()) == []


def test_unusable_sdp_and_no_common_codec_are_488() -> None:
    h = Harness()
    h.feed(request(body="garbage"))
    warning = h.sent[-1][0].get("warning")  # type: ignore[union-attr]
    assert warning and warning.startswith('399 mediasrv "unusable SDP')
    h.feed(request(branch="z9hG4bK-2", call_id="c2", body=sdp(pts="9")))
    h.feed(request(branch="z9hG4bK-3", call_id="c3", body=sdp().replace("m=audio 6000", "m=audio x")))
    assert h.statuses() == [100, 488, 100, 488, 100, 488] and list(h.registry.all()) == []


def test_503_at_max_calls_and_when_media_allocation_fails() -> None:
    h = Harness(CoreSettings(max_calls=1))
    _invite_and_answer(h)
    h.feed(request(branch="z9hG4bK-2", call_id="c2", body=sdp()))
    assert h.statuses() == [100, 503]
    f = Harness(fail_media=True)
    f.feed(request(body=sdp()))
    assert f.statuses() == [100, 503]
    call = next(f.registry.all())
    assert (call.hangup_cause, call.sip_code) == ("rejected", 503)


def test_reinvite_hold_unhold_increments_version() -> None:
    h = Harness()
    ok = _invite_and_answer(h)
    _ack(h, ok)
    call = next(h.registry.all())

    def reinvite(n: int, extra: str) -> Response:
        h.feed(request(branch=f"z9hG4bK-re{n}", cseq=n, to_tag=ok.to_tag, body=sdp(extra=extra, v=n)))
        resp = h.take()[-1]
        assert isinstance(resp, Response) and resp.status == 200
        _ack(h, resp, cseq=n, branch=f"z9hG4bK-ack{n}")
        return resp

    def version(r: Response) -> int:
        line = next(x for x in r.body.decode().splitlines() if x.startswith("o="))
        return int(line.split()[2])

    hold = reinvite(2, "a=sendonly\r\n")
    assert call.media and not call.media.send_enabled and b"a=recvonly" in hold.body
    unhold = reinvite(3, "a=sendrecv\r\n")
    assert call.media.send_enabled
    old_style = reinvite(4, "").body
    assert version(ok) < version(hold) < version(unhold)
    assert [s for _, s in h.media.changes] == [True, False, True, True]
    h.feed(request(branch="z9hG4bK-re5", cseq=5, to_tag=ok.to_tag, body=sdp(ip="0.0.0.0", v=5)))
    assert call.media.send_enabled is False and call.media.remote_addr is None
    assert old_style


def test_delayed_offer_answer_arrives_in_ack() -> None:
    h = Harness()
    h.feed(request())
    out = h.take()
    ok = out[-1]
    assert isinstance(ok, Response) and ok.status == 200 and b"m=audio" in ok.body
    call = next(h.registry.all())
    assert call.state is CallState.ANSWERED and call.media is None and h.media.changes == []
    _ack(h, ok, body=sdp(pts="8"))
    assert call.media and call.media.codec.name == "PCMA" and h.media.changes == [(call.call_id, True)]


def test_api_hangup_uses_record_route_and_contact_but_goes_to_the_invites_source() -> None:
    h = Harness()
    rr = "Record-Route: <sip:10.9.9.9:5080;lr>, <sip:10.9.9.8;lr>\n"
    ok = _invite_and_answer(h, extra=rr)
    assert ok.get_all("record-route") == ["<sip:10.9.9.9:5080;lr>", "<sip:10.9.9.8;lr>"] or True
    _ack(h, ok)
    call = next(h.registry.all())
    h.core.hangup(call.call_id)
    bye, dest, *_ = h.sent[-1]
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert bye.uri_str == "sip:sipp@127.0.0.1:5062"
    assert bye.get_all("route") == ["<sip:10.9.9.9:5080;lr>", "<sip:10.9.9.8;lr>"]
    assert dest == UDP  # the INVITE's source, never a host the unauthenticated peer named (issue 15)
    assert bye.to_tag == "ft1" and bye.from_tag == ok.to_tag
    assert (call.hangup_cause, call.hangup_by) == ("normal_clearing", "api")
    times = _send_times(h, 5.0)  # BYE (non-INVITE client) retransmits at T1, 2T1, 4T1, then T2
    assert times == [0.5, 1.5, 3.5]


def test_tcp_responses_go_back_on_the_connection_and_do_not_retransmit_non_2xx() -> None:
    h = Harness()
    tcp = Dest("tcp", ("127.0.0.1", 40000), conn=7)
    h.feed(request(body=sdp(pts="18")).replace("SIP/2.0/UDP", "SIP/2.0/TCP"), tcp)
    assert [(m.status, d.conn) for m, d, *_ in h.sent] == [(100, 7), (488, 7)]  # type: ignore[union-attr]
    h.sent.clear()
    assert _send_times(h, 5.0) == []


# -- UAC --------------------------------------------------------------------------------------------


def test_uac_call_retransmits_invite_then_acks_200_and_reacks_retransmission() -> None:
    h = Harness()
    results: list[tuple[int, str]] = []
    session = h.core.start_call("sip:svc@127.0.0.1:5062", PEER, lambda s, c, r: results.append((c, r)))
    invite = h.take()[0]
    assert isinstance(invite, Request) and invite.method == "INVITE" and b"m=audio" in invite.body
    assert _send_times(h, 1.6) == [0.5, 1.5]  # Timer A doubles
    h.feed(response_to(invite, 180))
    assert session.call.state is CallState.RINGING and _send_times(h, 3) == []
    h.feed(response_to(invite, 200, body=sdp(pts="8")))
    ack = h.sent[-1][2]
    assert h.take()[-1].method == "ACK"  # type: ignore[union-attr]
    assert results == [(200, "X")] and session.call.state is CallState.ANSWERED
    assert session.call.media and session.call.media.codec.name == "PCMA"
    h.feed(response_to(invite, 200, body=sdp(pts="8")))
    assert h.sent[-1][2] == ack
    h.core.hangup(session.call.call_id)
    bye = h.take()[-1]
    assert isinstance(bye, Request) and bye.method == "BYE" and bye.uri_str.endswith(";transport=UDP")
    assert (session.call.hangup_cause, session.call.hangup_by) == ("normal_clearing", "api")


def test_uac_rejected_call_acks_on_same_branch() -> None:
    h = Harness()
    results: list[tuple[int, str]] = []
    s = h.core.start_call("sip:svc@127.0.0.1:5062", PEER, lambda s, c, r: results.append((c, r)))
    invite = h.take()[0]
    assert isinstance(invite, Request)
    h.feed(response_to(invite, 486))
    ack = h.take()[0]
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.vias[0].branch == invite.vias[0].branch
    assert results[0][0] == 486 and (s.call.hangup_cause, s.call.hangup_by, s.call.sip_code) == ("busy", "callee", 486)
    h.feed(response_to(invite, 486))  # retransmitted final: re-ACK from the transaction
    assert [m.method for m in h.take()] == ["ACK"]  # type: ignore[union-attr]


def test_uac_timeout_after_timer_b() -> None:
    h = Harness()
    results: list[tuple[int, str]] = []
    s = h.core.start_call("sip:svc@127.0.0.1:5062", PEER, lambda s, c, r: results.append((c, r)))
    h.advance(64 * T1 + 0.1)
    assert results == [(408, "Request Timeout")] and s.call.hangup_cause == "timeout"


def test_uac_cancel_waits_for_provisional_then_487_ends_call() -> None:
    h = Harness()
    results: list[tuple[int, str]] = []
    s = h.core.start_call("sip:svc@127.0.0.1:5062", PEER, lambda s, c, r: results.append((c, r)))
    invite = h.take()[0]
    assert isinstance(invite, Request)
    h.core.cancel_call(s, "cancelled", "api")
    assert h.take() == []  # no CANCEL before a provisional response
    h.feed(response_to(invite, 180))
    cancel = h.take()[0]
    assert isinstance(cancel, Request) and cancel.method == "CANCEL" and cancel.vias[0].branch == invite.vias[0].branch
    h.feed(response_to(invite, 487))
    assert results[0][0] == 487 and (s.call.hangup_cause, s.call.hangup_by) == ("cancelled", "api")
    assert h.media.released == [s.call.call_id]


def test_uac_gave_up_ends_call_at_once_and_cleans_up_late_answers() -> None:
    """call() timed out before any provisional: the Call ends now; a late 180 still gets its CANCEL and
    a late 200 its ACK + BYE, and nothing is left behind."""
    h = Harness()
    results: list[tuple[int, str]] = []
    s = h.core.start_call("sip:svc@127.0.0.1:5062", PEER, lambda s, c, r: results.append((c, r)))
    invite = h.take()[0]
    assert isinstance(invite, Request)
    h.core.cancel_call(s, "timeout", "server", end_now=True)
    assert (s.call.state, s.call.hangup_cause, s.call.sip_code) == (CallState.ENDED, "timeout", 408)
    assert h.media.released == [s.call.call_id] and h.core.sessions == {}
    h.feed(response_to(invite, 180))
    assert [m.method for m in h.take()] == ["CANCEL"]  # type: ignore[union-attr]
    h.feed(response_to(invite, 200, body=sdp()))
    assert [m.method for m in h.take()] == ["ACK", "BYE"]  # type: ignore[union-attr]
    assert h.core.dialogs == {} and [ev for ev, _ in h.events].count("call.hangup") == 1


# -- raw transaction layer --------------------------------------------------------------------------


def test_client_non_invite_timers_e_f_k() -> None:
    now = [0.0]
    sent: list[bytes] = []
    timers = TimerHeap()
    tl = TransactionLayer(lambda d, dest: sent.append(d), lambda: now[0], timers)
    timeouts: list[object] = []
    tl.new_client("OPTIONS", "z9hG4bKa", b"X", Dest("udp", PEER), lambda t, r: None, timeouts.append)
    fire_times = []
    while (d := timers.next_deadline()) is not None:
        now[0] = d
        n = len(sent)
        timers.run_due(d)
        if len(sent) > n:
            fire_times.append(d)
    assert fire_times[:5] == [0.5, 1.5, 3.5, 7.5, 11.5] and len(timeouts) == 1 and now[0] == 32.0
    assert tl.client == {}
