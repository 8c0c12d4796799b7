"""The call controller's policy on top of the sans-I/O core: causes from protocol outcomes, draining."""

from __future__ import annotations

import pytest

from mediasrv.calls.controller import CallController, CallCore, CallSettings, Leg, failure_cause
from mediasrv.calls.registry import Call, CallRegistry, Direction, NullMedia
from mediasrv.sip.events import CallEnded, EndReason
from mediasrv.sip.message import Response, parse
from mediasrv.sip.transaction import Dest

INVITE = (
    b"INVITE sip:svc@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-cc1\r\n"
    b"From: <sip:a@127.0.0.1:5062>;tag=ft\r\nTo: <sip:svc@127.0.0.1>\r\nCall-ID: cc1\r\nCSeq: 1 INVITE\r\n"
    b"Contact: <sip:a@127.0.0.1:5062>\r\nContent-Length: 0\r\n\r\n"
)


class Media(NullMedia):
    """NullMedia with the DTMF hook the MediaBackend protocol names (it drops the digit)."""

    def dtmf_info(self, call: Call, digit: str, duration_ms: int) -> bool:
        return False


def _leg(inbound: bool) -> Leg:
    direction = Direction.INBOUND if inbound else Direction.OUTBOUND
    return Leg(call=Call(direction=direction, from_uri="sip:a@h", to_uri="sip:b@h", sip_call_id="x"), sid="s",
               inbound=inbound)


@pytest.mark.parametrize(("reason", "status", "inbound", "expected"), [
    (EndReason.BYE, None, True, ("normal_clearing", "caller")),
    (EndReason.BYE, None, False, ("normal_clearing", "callee")),
    (EndReason.CANCELLED, 487, True, ("cancelled", "caller")),
    (EndReason.REFUSED, 486, False, ("busy", "callee")),
    (EndReason.REFUSED, 404, False, ("not_found", "callee")),
    (EndReason.REFUSED, 500, False, ("rejected", "callee")),
    (EndReason.AUTH_FAILED, 407, False, ("auth_failed", "callee")),
    (EndReason.TIMEOUT, 408, False, ("timeout", "server")),
    (EndReason.RING_TIMEOUT, 480, True, ("no_answer", "server")),
    (EndReason.NO_ACK, None, True, ("no_ack", "server")),
    (EndReason.BAD_SDP, 488, True, ("bad_sdp", "server")),
])
def test_protocol_outcomes_map_to_hangup_causes(
    reason: EndReason, status: int | None, inbound: bool, expected: tuple[str, str]
) -> None:
    assert CallController._cause(_leg(inbound), CallEnded("s", reason, status)) == expected


def test_failure_causes_default_to_rejected() -> None:
    assert (failure_cause(603), failure_cause(488), failure_cause(599)) == ("declined", "incompatible_media", "rejected")


def test_draining_refuses_new_invites_with_503_and_makes_no_call() -> None:
    sent: list[bytes] = []
    registry = CallRegistry()
    core = CallCore(CallSettings(), registry, Media(), lambda data, dest: sent.append(data), lambda: 0.0)
    core.draining = True
    core.receive(INVITE, Dest("udp", ("127.0.0.1", 5062)))
    statuses = [m.status for m in map(parse, sent) if isinstance(m, Response)]
    assert statuses == [100, 503] and list(registry.all()) == [] and core.sessions == {}
    assert core.sip.sessions == {} and core.stats["rejected"] == 1
