"""RFC 3261 section 17 transactions (with the RFC 6026 "Accepted" states), sans-I/O.

A :class:`TransactionLayer` is given a ``send(bytes, Dest)`` function, a clock and a
:class:`TimerHeap`; it never touches sockets or sleeps, so tests drive every timer on a fake clock.
Each transaction sends its responses from one place (``respond``), in order, and absorbs
retransmissions by re-sending its last message.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .message import Request, Response
from .timers import Timer, TimerHeap

MAGIC = "z9hG4bK"


@dataclass(frozen=True, slots=True)
class Dest:
    """Where bytes go: a transport, the peer address and (TCP) the connection a request came on."""

    transport: str  # "udp" or "tcp"
    addr: tuple[str, int]
    conn: int | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


Send = Callable[[bytes, Dest], None]


class TxState(enum.StrEnum):
    """RFC 3261 section 17 transaction states (string-valued so logs and metrics read as before)."""

    NEW = "new"  # a client transaction not yet started
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"  # RFC 6026: a 2xx was sent/received, the INVITE transaction lingers
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class IllegalTransition(RuntimeError):
    """A transaction was asked to move between two states its machine does not connect."""


Table = Mapping[TxState, frozenset[TxState]]
_S = TxState


def _table(edges: dict[TxState, tuple[TxState, ...]]) -> Table:
    return {k: frozenset(v) for k, v in edges.items()}


# One table per machine (RFC 3261 figures 5-8 with RFC 6026's Accepted state); nothing else moves a state.
SERVER_INVITE: Table = _table({
    _S.PROCEEDING: (_S.ACCEPTED, _S.COMPLETED),
    _S.ACCEPTED: (_S.TERMINATED,),  # Timer L
    _S.COMPLETED: (_S.CONFIRMED, _S.TERMINATED),  # ACK; Timer H
    _S.CONFIRMED: (_S.TERMINATED,),  # Timer I (at once over TCP)
})
SERVER_NON_INVITE: Table = _table({
    _S.TRYING: (_S.PROCEEDING, _S.COMPLETED),
    _S.PROCEEDING: (_S.COMPLETED,),
    _S.COMPLETED: (_S.TERMINATED,),  # Timer J (at once over TCP)
})
CLIENT_INVITE: Table = _table({
    _S.NEW: (_S.CALLING,),
    _S.CALLING: (_S.PROCEEDING, _S.ACCEPTED, _S.COMPLETED, _S.TERMINATED),  # 1xx, 2xx, 3xx-6xx, Timer B
    _S.PROCEEDING: (_S.ACCEPTED, _S.COMPLETED, _S.TERMINATED),
    _S.ACCEPTED: (_S.TERMINATED,),  # Timer M
    _S.COMPLETED: (_S.TERMINATED,),  # Timer D
})
CLIENT_NON_INVITE: Table = _table({
    _S.NEW: (_S.TRYING,),
    _S.TRYING: (_S.PROCEEDING, _S.COMPLETED, _S.TERMINATED),  # 1xx, final, Timer F
    _S.PROCEEDING: (_S.COMPLETED, _S.TERMINATED),
    _S.COMPLETED: (_S.TERMINATED,),  # Timer K
})


class TransactionLayer:
    """Tables of live transactions plus the timer values they share."""

    def __init__(
        self,
        send: Send,
        clock: Callable[[], float],
        timers: TimerHeap,
        t1: float = 0.5,
        t2: float = 4.0,
        t4: float = 5.0,
        stats: dict[str, int] | None = None,
    ) -> None:
        self.send = send
        self.clock = clock
        self.timers = timers
        self.t1, self.t2, self.t4 = t1, t2, t4
        self.server: dict[tuple[Any, ...], ServerTx] = {}
        self.client: dict[tuple[str, str], ClientTx] = {}
        self.stats = stats if stats is not None else {}

    # -- helpers used by transactions -----------------------------------------------------------
    def after(self, delay: float, fn: Callable[[], None]) -> Timer:
        return self.timers.schedule(self.clock() + delay, fn)

    def retransmitted(self) -> None:
        self.stats["retransmissions"] = self.stats.get("retransmissions", 0) + 1

    # -- server side ----------------------------------------------------------------------------
    @staticmethod
    def server_key(req: Request, method: str | None = None) -> tuple[Any, ...]:
        """RFC 3261 17.2.3 matching; ACK and CANCEL pass method="INVITE" to find the INVITE."""
        m = method or ("INVITE" if req.method == "ACK" else req.method)
        top = req.vias[0]
        branch = top.branch
        if branch and branch.startswith(MAGIC) and len(branch) > len(MAGIC):
            return (branch, top.sent_by.lower(), m)
        # RFC 2543 fallback (badbranch, inv2543): Request-URI is left out so ACK/CANCEL still match.
        return ("2543", req.call_id, req.from_tag, req.cseq, top.raw, m)

    def find_server(self, req: Request, method: str | None = None) -> ServerTx | None:
        return self.server.get(self.server_key(req, method))

    def new_server(self, req: Request, dest: Dest) -> ServerTx:
        key = self.server_key(req)
        tx: ServerTx
        if req.method == "INVITE":
            tx = ServerInviteTx(self, key, req, dest)
        else:
            tx = ServerNonInviteTx(self, key, req, dest)
        self.server[key] = tx
        return tx

    # -- client side ----------------------------------------------------------------------------
    def new_client(
        self,
        method: str,
        branch: str,
        data: bytes,
        dest: Dest,
        on_response: Callable[[ClientTx, Response], None],
        on_timeout: Callable[[ClientTx], None],
        build_ack: Callable[[Response], bytes] | None = None,
    ) -> ClientTx:
        tx: ClientTx
        if method == "INVITE":
            tx = ClientInviteTx(self, (branch, method), data, dest, on_response, on_timeout, build_ack)
        else:
            tx = ClientNonInviteTx(self, (branch, method), data, dest, on_response, on_timeout)
        self.client[tx.key] = tx
        tx.start()
        return tx

    def match_response(self, resp: Response) -> ClientTx | None:
        branch = resp.vias[0].branch
        if branch is None:
            return None
        return self.client.get((branch, resp.cseq_method))


class _Tx:
    __slots__ = ("layer", "key", "dest", "_state", "_timers")

    TRANSITIONS: ClassVar[Table] = {}
    INITIAL: ClassVar[TxState] = TxState.NEW

    def __init__(self, layer: TransactionLayer, key: Any, dest: Dest) -> None:
        self.layer = layer
        self.key = key
        self.dest = dest
        self._state = self.INITIAL
        self._timers: dict[str, Timer] = {}

    @property
    def state(self) -> TxState:
        return self._state

    def _go(self, new: TxState) -> None:
        """Move to *new*; a move the machine's table does not list raises IllegalTransition."""
        if new not in self.TRANSITIONS.get(self._state, frozenset()):
            raise IllegalTransition(f"{type(self).__name__}: {self._state} -> {new}")
        self._state = new

    def _start(self, name: str, delay: float, fn: Callable[[], None]) -> None:
        old = self._timers.get(name)
        if old is not None:
            old.cancel()
        self._timers[name] = self.layer.after(delay, fn)

    def _stop(self, name: str) -> None:
        t = self._timers.pop(name, None)
        if t is not None:
            t.cancel()

    def _terminate(self) -> None:
        if self._state is TxState.TERMINATED:
            return
        self._go(TxState.TERMINATED)
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()
        self._unregister()

    def _unregister(self) -> None:
        raise NotImplementedError

    @property
    def terminated(self) -> bool:
        return self._state is TxState.TERMINATED


# ------------------------------------------------------------------------------------------------
# Server transactions


class ServerTx(_Tx):
    __slots__ = ("request", "last_response", "last_status", "context")

    def __init__(self, layer: TransactionLayer, key: Any, req: Request, dest: Dest) -> None:
        super().__init__(layer, key, dest)
        self.request = req
        self.last_response: bytes | None = None
        self.last_status = 0
        self.context: Any = None  # the TU's object (e.g. the call session)

    def _unregister(self) -> None:
        if self.layer.server.get(self.key) is self:
            del self.layer.server[self.key]

    def _send(self, data: bytes, status: int) -> None:
        self.last_response = data
        self.last_status = status
        self.layer.send(data, self.dest)

    def retransmission(self) -> None:
        """The same request again: re-send the last response, never hand it to the TU."""
        if self.last_response is not None and self.state != "confirmed":
            self.layer.retransmitted()
            self.layer.send(self.last_response, self.dest)

    @property
    def final_sent(self) -> bool:
        return self.last_status >= 200

    def respond(self, status: int, data: bytes) -> bool:
        raise NotImplementedError


class ServerInviteTx(ServerTx):
    """Proceeding -> (2xx) Accepted -> Terminated, or (3xx-6xx) Completed -> Confirmed -> Terminated.

    In Accepted the 2xx is retransmitted (T1 doubling, capped at T2) until :meth:`ack_2xx`; if no ACK
    comes within 64*T1, ``on_no_ack`` is called (the TU sends BYE).
    """

    __slots__ = ("on_no_ack", "acked", "_interval")
    TRANSITIONS = SERVER_INVITE
    INITIAL = TxState.PROCEEDING

    def __init__(self, layer: TransactionLayer, key: Any, req: Request, dest: Dest) -> None:
        super().__init__(layer, key, req, dest)
        self.on_no_ack: Callable[[ServerInviteTx], None] | None = None
        self.acked = False
        self._interval = layer.t1

    def respond(self, status: int, data: bytes) -> bool:
        if self.state != "proceeding":
            return False
        self._send(data, status)
        if status < 200:
            return True
        t1 = self.layer.t1
        if status < 300:
            self._go(TxState.ACCEPTED)
            self._interval = t1
            self._start("2xx", t1, self._retransmit_2xx)
            self._start("L", 64 * t1, self._timer_l)
        else:
            self._go(TxState.COMPLETED)
            if not self.dest.reliable:
                self._interval = t1
                self._start("G", t1, self._timer_g)
            self._start("H", 64 * t1, self._timer_h)
        return True

    def _retransmit_2xx(self) -> None:
        if self.acked or self.state != "accepted":
            return
        self.layer.retransmitted()
        self.layer.send(self.last_response or b"", self.dest)
        self._interval = min(self._interval * 2, self.layer.t2)
        self._start("2xx", self._interval, self._retransmit_2xx)

    def ack_2xx(self) -> None:
        """The dialog layer saw the ACK for our 2xx: stop retransmitting (stay to absorb INVITEs)."""
        self.acked = True
        self._stop("2xx")

    def _timer_l(self) -> None:
        acked = self.acked
        self._terminate()
        if not acked and self.on_no_ack is not None:
            self.on_no_ack(self)

    def _timer_g(self) -> None:
        if self.state != "completed":
            return
        self.layer.retransmitted()
        self.layer.send(self.last_response or b"", self.dest)
        self._interval = min(self._interval * 2, self.layer.t2)
        self._start("G", self._interval, self._timer_g)

    def _timer_h(self) -> None:
        self._terminate()

    def receive_ack(self) -> None:
        """ACK for a 3xx-6xx (same branch): absorbed here, never reaches the TU."""
        if self.state == "completed":
            self._go(TxState.CONFIRMED)
            self._stop("G")
            self._stop("H")
            if self.dest.reliable:
                self._terminate()
            else:
                self._start("I", self.layer.t4, self._terminate)


class ServerNonInviteTx(ServerTx):
    """Trying -> Proceeding -> Completed (final cached for Timer J = 64*T1 over UDP) -> Terminated."""

    __slots__ = ()
    TRANSITIONS = SERVER_NON_INVITE
    INITIAL = TxState.TRYING

    def respond(self, status: int, data: bytes) -> bool:
        if self.state not in ("trying", "proceeding"):
            return False
        self._send(data, status)
        if status < 200:
            if self.state is TxState.TRYING:
                self._go(TxState.PROCEEDING)
            return True
        self._go(TxState.COMPLETED)
        if self.dest.reliable:
            self._terminate()
        else:
            self._start("J", 64 * self.layer.t1, self._terminate)
        return True

    def retransmission(self) -> None:
        if self.state in ("proceeding", "completed"):
            super().retransmission()


# ------------------------------------------------------------------------------------------------
# Client transactions


class ClientTx(_Tx):
    __slots__ = ("data", "on_response", "on_timeout", "_interval", "context")

    def __init__(
        self,
        layer: TransactionLayer,
        key: tuple[str, str],
        data: bytes,
        dest: Dest,
        on_response: Callable[[ClientTx, Response], None],
        on_timeout: Callable[[ClientTx], None],
    ) -> None:
        super().__init__(layer, key, dest)
        self.data = data
        self.on_response = on_response
        self.on_timeout = on_timeout
        self._interval = layer.t1
        self.context: Any = None

    @property
    def branch(self) -> str:
        return self.key[0]

    def _unregister(self) -> None:
        if self.layer.client.get(self.key) is self:
            del self.layer.client[self.key]

    def start(self) -> None:
        raise NotImplementedError

    def receive(self, resp: Response) -> None:
        raise NotImplementedError

    def _timeout(self) -> None:
        if self.state in ("calling", "trying", "proceeding"):
            self._terminate()
            self.on_timeout(self)


class ClientInviteTx(ClientTx):
    """Calling (Timer A/B) -> Proceeding -> Accepted (2xx, Timer M) or Completed (ACK, Timer D)."""

    __slots__ = ("build_ack", "ack")
    TRANSITIONS = CLIENT_INVITE

    def __init__(
        self,
        layer: TransactionLayer,
        key: tuple[str, str],
        data: bytes,
        dest: Dest,
        on_response: Callable[[ClientTx, Response], None],
        on_timeout: Callable[[ClientTx], None],
        build_ack: Callable[[Response], bytes] | None,
    ) -> None:
        super().__init__(layer, key, data, dest, on_response, on_timeout)
        self.build_ack = build_ack
        self.ack: bytes | None = None

    def start(self) -> None:
        self._go(TxState.CALLING)
        self.layer.send(self.data, self.dest)
        if not self.dest.reliable:
            self._start("A", self.layer.t1, self._timer_a)
        self._start("B", 64 * self.layer.t1, self._timeout)

    def _timer_a(self) -> None:
        if self.state != "calling":
            return
        self.layer.retransmitted()
        self.layer.send(self.data, self.dest)
        self._interval *= 2
        self._start("A", self._interval, self._timer_a)

    def receive(self, resp: Response) -> None:
        st = resp.status
        if self.state in ("calling", "proceeding"):
            if st < 200:
                if self.state is TxState.CALLING:
                    self._go(TxState.PROCEEDING)
                self._stop("A")
                self.on_response(self, resp)
            elif st < 300:
                self._go(TxState.ACCEPTED)
                self._stop("A")
                self._stop("B")
                self._start("M", 64 * self.layer.t1, self._terminate)
                self.on_response(self, resp)
            else:
                self._go(TxState.COMPLETED)
                self._stop("A")
                self._stop("B")
                if self.build_ack is not None:
                    self.ack = self.build_ack(resp)
                    self.layer.send(self.ack, self.dest)
                self._start("D", 0 if self.dest.reliable else 32.0, self._terminate)
                self.on_response(self, resp)
        elif self.state == "accepted":
            if 200 <= st < 300:
                self.on_response(self, resp)  # retransmitted/forked 2xx: the TU re-ACKs
        elif self.state == "completed" and st >= 300 and self.ack is not None:
            self.layer.retransmitted()
            self.layer.send(self.ack, self.dest)


class ClientNonInviteTx(ClientTx):
    """Trying (Timer E/F) -> Proceeding -> Completed (Timer K) -> Terminated."""

    __slots__ = ()
    TRANSITIONS = CLIENT_NON_INVITE

    def start(self) -> None:
        self._go(TxState.TRYING)
        self.layer.send(self.data, self.dest)
        if not self.dest.reliable:
            self._start("E", self.layer.t1, self._timer_e)
        self._start("F", 64 * self.layer.t1, self._timeout)

    def _timer_e(self) -> None:
        if self.state not in ("trying", "proceeding"):
            return
        self.layer.retransmitted()
        self.layer.send(self.data, self.dest)
        t2 = self.layer.t2
        self._interval = t2 if self.state == "proceeding" else min(self._interval * 2, t2)
        self._start("E", self._interval, self._timer_e)

    def receive(self, resp: Response) -> None:
        if self.state not in ("trying", "proceeding"):
            return
        if resp.status < 200:
            if self.state is TxState.TRYING:
                self._go(TxState.PROCEEDING)
            self.on_response(self, resp)
            return
        self._go(TxState.COMPLETED)
        self._stop("E")
        self._stop("F")
        if self.dest.reliable:
            self._terminate()
        else:
            self._start("K", self.layer.t4, self._terminate)
        self.on_response(self, resp)
