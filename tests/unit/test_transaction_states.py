"""The transaction state machines: every move is in a table, and a move outside it raises."""

from __future__ import annotations

import pytest

from mediasrv.sip.message import Request, Response, parse
from mediasrv.sip.timers import TimerHeap
from mediasrv.sip.transaction import (
    CLIENT_INVITE,
    CLIENT_NON_INVITE,
    SERVER_INVITE,
    SERVER_NON_INVITE,
    ClientInviteTx,
    Dest,
    IllegalTransition,
    ServerInviteTx,
    TransactionLayer,
    TxState,
)

UDP = Dest("udp", ("127.0.0.1", 5062))
INVITE = (
    b"INVITE sip:svc@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-t1\r\n"
    b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:svc@127.0.0.1>\r\nCall-ID: t1\r\nCSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _layer() -> tuple[TransactionLayer, list[bytes], list[float]]:
    sent: list[bytes] = []
    now = [0.0]
    return TransactionLayer(lambda d, dest: sent.append(d), lambda: now[0], TimerHeap()), sent, now


def test_tables_end_in_terminated_and_never_leave_it() -> None:
    for table in (SERVER_INVITE, SERVER_NON_INVITE, CLIENT_INVITE, CLIENT_NON_INVITE):
        assert TxState.TERMINATED not in table  # no way out of terminated
        reachable = set().union(*table.values())
        assert TxState.TERMINATED in reachable
        for state in table:  # every state the table names can still reach terminated
            seen, todo = set(), [state]
            while todo:
                s = todo.pop()
                seen.add(s)
                todo.extend(table.get(s, frozenset()) - seen)
            assert TxState.TERMINATED in seen, state


def test_server_invite_walks_its_table_and_refuses_a_jump() -> None:
    layer, sent, _ = _layer()
    req = parse(INVITE)
    assert isinstance(req, Request)
    tx = layer.new_server(req, UDP)
    assert isinstance(tx, ServerInviteTx) and tx.state is TxState.PROCEEDING
    assert tx.respond(486, b"SIP/2.0 486 Busy Here\r\n\r\n")
    assert tx.state is TxState.COMPLETED
    with pytest.raises(IllegalTransition):
        tx._go(TxState.ACCEPTED)  # a completed INVITE transaction can never accept
    tx.receive_ack()
    assert tx.state is TxState.CONFIRMED
    assert not tx.respond(200, b"late")  # a final already went: nothing more is sent
    assert sent == [b"SIP/2.0 486 Busy Here\r\n\r\n"]


def test_client_invite_moves_only_by_the_table() -> None:
    layer, sent, _ = _layer()
    tx = layer.new_client("INVITE", "z9hG4bK-c1", INVITE, UDP, lambda t, r: None, lambda t: None)
    assert isinstance(tx, ClientInviteTx) and tx.state is TxState.CALLING and sent == [INVITE]
    ok = parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-c1\r\n"
               b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:svc@127.0.0.1>;tag=2\r\nCall-ID: t1\r\n"
               b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(ok, Response)
    tx.receive(ok)
    assert tx.state is TxState.ACCEPTED
    with pytest.raises(IllegalTransition):
        tx._go(TxState.PROCEEDING)
    with pytest.raises(IllegalTransition):
        tx.start()  # a started transaction cannot start again
    tx._terminate()
    tx._terminate()  # terminating twice is no move at all
    assert tx.terminated and layer.client == {}
