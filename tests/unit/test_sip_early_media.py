"""Early media on inbound calls in the SIP core: 183 with SDP, the 200 repeating it, CANCEL, timeouts."""

from __future__ import annotations

import pytest

from mediasrv.calls.controller import CallSettings as CoreSettings
from mediasrv.calls.registry import CallState
from mediasrv.sip.message import Response
from tests.support.sip_harness import Harness, request, sdp


def _ringing(**settings: object) -> tuple[Harness, str]:
    h = Harness(CoreSettings(auto_answer=False, **settings))  # type: ignore[arg-type]
    h.feed(request(body=sdp()))
    assert h.statuses() == [100, 180]
    return h, next(h.registry.all()).call_id


def _responses(h: Harness) -> list[Response]:
    return [m for m in h.take() if isinstance(m, Response)]


def test_183_carries_the_answer_the_200_repeats_and_the_media_is_set_up_once_per_step() -> None:
    h, call_id = _ringing()
    call = h.registry.get(call_id)
    assert h.core.early_media(call_id) is True
    [progress] = _responses(h)
    assert progress.status == 183 and progress.get("content-type") == "application/sdp"
    assert b"m=audio" in progress.body and progress.get("require") is None and progress.get("rseq") is None
    assert call.state is CallState.RINGING and call.early_media
    assert ("call.early_media", call_id) in h.events
    assert h.media.changes == [(call_id, True)]  # RTP starts with the 183
    assert h.core.early_media(call_id) is False  # a second request changes nothing
    assert h.sent == []
    # the INVITE retransmitted: the transaction answers with its last provisional, the 183
    h.feed(request(body=sdp()))
    [again] = _responses(h)
    assert again.status == 183 and again.body == progress.body
    h.advance(30.0)  # no timer re-sends the unreliable 183 (no 100rel)
    assert h.sent == []
    h.core.answer(call_id)
    [ok] = _responses(h)
    assert ok.status == 200 and ok.body == progress.body, "the 200 must repeat the 183's SDP unchanged"
    assert ok.to_tag == progress.to_tag
    assert call.state is CallState.ANSWERED
    assert h.media.changes == [(call_id, True), (call_id, True)]
    assert [e for e, c in h.events if c == call_id] == ["call.initiated", "call.ringing", "call.early_media",
                                                         "call.answered"]


def test_cancel_during_early_media_ends_the_call_and_releases_it() -> None:
    h, call_id = _ringing()
    h.core.early_media(call_id)
    progress = _responses(h)[0]
    h.feed(request("CANCEL"))
    statuses = [r.status for r in _responses(h)]
    assert statuses == [200, 487]
    h.feed(request("ACK", to_tag=progress.to_tag))
    call = h.registry.get(call_id)
    assert (call.state, call.hangup_cause, call.hangup_by, call.sip_code) == (CallState.ENDED, "cancelled", "caller", 487)
    assert h.media.released == [call_id] and h.media._used == {}
    with pytest.raises(KeyError):
        h.core.early_media(call_id)


def test_the_ring_timeout_ends_a_call_in_early_media() -> None:
    h, call_id = _ringing(ring_timeout_s=20.0)
    h.core.early_media(call_id)
    h.take()
    h.advance(19.0)
    assert h.sent == [] and h.registry.get(call_id).state is CallState.RINGING
    h.advance(1.1)
    assert {r.status for r in _responses(h)} == {480}  # and Timer G's retransmissions of it
    call = h.registry.get(call_id)
    assert (call.hangup_cause, call.hangup_by) == ("no_answer", "server") and h.media._used == {}


def test_early_media_is_refused_without_an_offer_once_answered_and_for_100rel() -> None:
    h = Harness(CoreSettings(auto_answer=False))
    h.feed(request())  # delayed offer: our offer would have to go in an unreliable 183
    call_id = next(h.registry.all()).call_id
    h.take()
    with pytest.raises(RuntimeError, match="SDP offer"):
        h.core.early_media(call_id)
    assert h.sent == [] and h.registry.get(call_id).state is CallState.RINGING
    h.core.answer(call_id)
    h.take()
    with pytest.raises(RuntimeError, match="not a ringing inbound call"):
        h.core.early_media(call_id)
    # Require: 100rel is refused as before (420); Supported: 100rel gets the 183 unreliably
    h.feed(request(call_id="c2", branch="z9hG4bK-2", body=sdp(), extra="Require: 100rel\n"))
    refused = _responses(h)[-1]
    assert refused.status == 420 and refused.get("unsupported") == "100rel"
    h.feed(request(call_id="c3", branch="z9hG4bK-3", body=sdp(), extra="Supported: 100rel\n"))
    h.take()
    third = next(c for c in h.registry.all() if c.sip_call_id == "c3")
    h.core.early_media(third.call_id)
    [progress] = _responses(h)
    assert progress.status == 183 and progress.get("require") is None


def test_an_outbound_call_has_no_early_media_of_ours() -> None:
    h = Harness()
    session = h.core.start_call("sip:b@127.0.0.1:5062", ("127.0.0.1", 5062), lambda *a: None)
    with pytest.raises(RuntimeError):
        h.core.early_media(session.call.call_id)
