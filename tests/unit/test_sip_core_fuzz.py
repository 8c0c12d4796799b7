"""Whole-core robustness: mutated SIP dialogues fed to SipCore never raise (a bad packet may only be
answered or dropped) and every call it created ends exactly once with its port released."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediasrv.calls.controller import CallSettings as CoreSettings
from tests.support.sip_harness import Harness, request, sdp

HOLD = sdp(extra="a=sendonly\r\n", v=2)


def _dialogue() -> list[str]:
    """A full inbound call: INVITE, ACK, hold re-INVITE, its ACK, OPTIONS, BYE; to-tag 'T' is fixed up."""
    return [
        request(body=sdp()),
        request("ACK", to_tag="T", cseq=1),
        request("INVITE", branch="z9hG4bK-2", to_tag="T", cseq=2, body=HOLD),
        request("ACK", branch="z9hG4bK-2", to_tag="T", cseq=2),
        request("OPTIONS", branch="z9hG4bK-3", to_tag="T", cseq=3),
        request("CANCEL", cseq=1),
        request("BYE", branch="z9hG4bK-4", to_tag="T", cseq=4),
    ]


@st.composite
def mutation(draw: st.DrawFn) -> tuple[int, int, str, bytes]:
    which = draw(st.integers(0, 6))
    pos = draw(st.integers(0, 400))
    op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "drop", "dup"]))
    data = draw(st.binary(min_size=1, max_size=6) | st.sampled_from([b" ", b"\r\n", b";", b":", b"0", b"\x00"]))
    return which, pos, op, data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation(), max_size=4), st.booleans(), st.floats(0, 40))
def test_mutated_dialogues_never_raise_and_calls_end_once(
    muts: list[tuple[int, int, str, bytes]], auto: bool, wait: float
) -> None:
    h = Harness(CoreSettings(auto_answer=auto, t1=0.5))
    msgs = [bytearray(m.replace("\n", "\r\n").replace("\r\r\n", "\r\n").encode()) for m in _dialogue()]
    dropped: set[int] = set()
    dups: set[int] = set()
    for which, pos, op, data in muts:
        b = msgs[which]
        i = min(pos, max(len(b) - 1, 0))
        if op == "flip" and b:
            b[i : i + 1] = data[:1]
        elif op == "insert":
            b[i:i] = data
        elif op == "delete":
            del b[i : i + len(data) * 3]
        elif op == "truncate":
            del b[i:]
        elif op == "drop":
            dropped.add(which)
        else:
            dups.add(which)
    tag = None
    for n, raw in enumerate(msgs):
        if n in dropped:
            continue
        if tag is not None:
            raw = bytearray(bytes(raw).replace(b"tag=T\r", f"tag={tag}\r".encode()))
        for _ in range(2 if n in dups else 1):
            h.feed_bytes(bytes(raw))
        if n == 0:
            for msg, *_ in h.sent:
                if msg is not None and getattr(msg, "to_tag", None):
                    tag = msg.to_tag
            if not auto and h.core.sessions:
                h.core.answer(next(iter(h.core.sessions)))
        h.advance(0.1)
    h.advance(wait)
    h.core.shutdown()
    h.advance(64 * 0.5 + 10)
    calls = list(h.registry.all())
    assert all(not c.is_active for c in calls)
    hangups = [cid for ev, cid in h.events if ev == "call.hangup"]
    assert sorted(hangups) == sorted(c.call_id for c in calls)
    assert sorted(h.media.released) == sorted(c.call_id for c in calls)
    assert not h.core.sessions and not h.core.dialogs


def test_unmutated_dialogue_is_a_whole_call() -> None:
    """The fuzzer's base dialogue really exercises answer, hold and caller BYE."""
    h = Harness()
    msgs = _dialogue()
    h.feed(msgs[0])
    tag = next(m.to_tag for m in h.take() if m is not None and m.to_tag)
    for text in msgs[1:]:
        h.feed(text.replace("tag=T\n", f"tag={tag}\n"))
    (call,) = h.registry.all()
    assert [ev for ev, _ in h.events] == ["call.initiated", "call.answered", "call.hangup"]
    assert call.hangup_by == "caller" and call.media is not None and call.media.send_enabled is False
    assert [cid for cid, _ in h.media.changes] == [call.call_id] * 2
