"""Thin asyncio transport: UDP and TCP on one host:port, stream framing, CRLF keep-alives.

Everything protocol-related is in the sans-I/O core; this module only moves bytes.  It never looks
at the transport's class (uvloop's differ from asyncio's), only at the protocol callbacks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Callable

from ..ops.logsafe import clip
from .guard import MessageBudget, SourceLog
from .message import MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_MESSAGE_BYTES, ParseError, framing_length
from .transaction import Dest

log = logging.getLogger("mediasrv.sip.transport")

Receiver = Callable[[bytes, Dest], None]
Rejecter = Callable[[bytes, Dest, ParseError], None]
MAX_BATCH = 16  # stream messages handled per turn of the event loop, per connection
_CRLF_RUN = re.compile(rb"[\r\n]*")


def _is_keepalive(data: bytes) -> bool:
    return not data.strip(b"\r\n \t")


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if _is_keepalive(data):
            return  # RFC 5626 CRLF keep-alive over UDP: nothing to answer
        self.owner.deliver(data, Dest("udp", (addr[0], addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class TcpConnection(asyncio.Protocol):
    """One TCP connection: Content-Length framing, partial reads, several messages per read."""

    def __init__(self, owner: SipTransport, conn_id: int) -> None:
        self.owner = owner
        self.id = conn_id
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.buf = bytearray()
        self.scanned = 0  # where the search for the end of the header section resumes
        self.need = -1  # the current message's total length once its header section is complete
        self.pending: list[bytes] = []  # writes queued while connecting
        self.closed = False
        self.paused = False  # reading paused until the next loop turn (MAX_BATCH)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (peer[0], peer[1])
        self.owner.register(self)
        for data in self.pending:
            transport.write(data)  # type: ignore[attr-defined]
        self.pending.clear()

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.owner.unregister(self)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        """Frame messages out of the stream.

        Linear in the bytes received: the search for the blank line resumes where the last one
        stopped, and a message's length is worked out once, when its header section is complete
        (not again on every read while its body trickles in).  At most MAX_HEADER_BYTES of header
        and MAX_MESSAGE_BYTES in all are buffered: beyond that the peer gets a 513 and the
        connection is closed (the stream cannot be resynchronised).  At most MAX_BATCH messages
        are handled per turn of the event loop: a read full of pipelined messages pauses reading
        and goes on at the next turn, so one connection cannot hold the loop for all of them.
        """
        if self.closed:
            return
        self.buf += data
        if not self.paused:
            self._frame()

    def _frame(self) -> None:
        buf = self.buf
        handled = 0
        while buf and not self.closed:
            if handled >= MAX_BATCH:
                self._yield()
                return
            if self.need < 0:
                if buf[0] in (13, 10):
                    self._blank_lines()
                    if not buf or buf[0] in (13, 10):
                        break
                    continue
                end = buf.find(b"\r\n\r\n", self.scanned)
                if end < 0:
                    self.scanned = max(0, len(buf) - 3)
                    if len(buf) > MAX_HEADER_BYTES:
                        self._refuse(bytes(buf[:MAX_HEADER_BYTES]), f"header section larger than {MAX_HEADER_BYTES} bytes")
                    break
                self.scanned = 0
                if end + 4 > MAX_HEADER_BYTES:
                    self._refuse(bytes(buf[: end + 4]), f"header section larger than {MAX_HEADER_BYTES} bytes")
                    break
                try:
                    length = framing_length(bytes(buf[: end + 2]))
                except ParseError as exc:
                    self._refuse(bytes(buf[: end + 4]), exc.reason, exc.status)
                    break
                if length > MAX_BODY_BYTES or end + 4 + length > MAX_MESSAGE_BYTES:
                    self._refuse(bytes(buf[: end + 4]), f"message of {end + 4 + length} bytes is over the limit")
                    break
                self.need = end + 4 + length
            if len(buf) < self.need:
                break
            msg = bytes(buf[: self.need])
            del buf[: self.need]
            self.need = -1
            self.owner.deliver(msg, Dest("tcp", self.peer, self.id))
            handled += 1

    def _yield(self) -> None:
        """Stop reading and finish the buffer at the next turn of the loop."""
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()
        asyncio.get_running_loop().call_soon(self._resume)

    def _resume(self) -> None:
        self.paused = False
        if self.closed:
            return
        self._frame()
        if not self.paused and not self.closed and self.transport is not None:
            self.transport.resume_reading()

    def _blank_lines(self) -> None:
        """CR/LF between messages: a double CRLF is an RFC 5626 ping (answered with one CRLF),
        other CR/LF bytes are dropped, and what may be the start of a ping is kept for the next
        read.  A long run (a flood) is dropped at C speed with one pong at most."""
        buf = self.buf
        run = _CRLF_RUN.match(buf).end()  # type: ignore[union-attr]
        if run > 8:
            if b"\r\n\r\n" in buf[:run]:
                self.write(b"\r\n")
            keep = 3 if run == len(buf) else 0  # a ping may go on in the next read
            del buf[: run - keep]
        while buf and buf[0] in (13, 10):
            if buf.startswith(b"\r\n\r\n"):
                self.write(b"\r\n")  # RFC 5626 double-CRLF ping -> single-CRLF pong
                del buf[:4]
                continue
            if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                return  # maybe the start of a ping: wait
            del buf[:1]

    def _refuse(self, head: bytes, reason: str, status: int = 513) -> None:
        self.owner.reject(head, Dest("tcp", self.peer, self.id), ParseError(f"{reason}, closing", status))
        self.buf.clear()
        self.need = -1
        self.scanned = 0
        self.close()


class SipTransport:
    """Owns the UDP endpoint, the TCP listener and the TCP connections (in and out)."""

    def __init__(
        self, receive: Receiver, after_input: Callable[[], None], reject: Rejecter, budget: MessageBudget
    ) -> None:
        self._receive = receive
        self._after = after_input
        self._reject = reject
        self.budget = budget
        self.source_log: SourceLog = budget.log
        self.udp: asyncio.DatagramTransport | None = None
        self.server: asyncio.AbstractServer | None = None
        self.conns: dict[int, TcpConnection] = {}
        self.by_addr: dict[tuple[str, int], TcpConnection] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self.address: tuple[str, int] = ("", 0)

    async def bind(self, host: str, port: int) -> tuple[str, int]:
        """Bind UDP then TCP on the same port (with port 0, retry until both get the same number)."""
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for _ in range(50):
            udp, _proto = await loop.create_datagram_endpoint(lambda: UdpProtocol(self), local_addr=(host, port))
            actual = udp.get_extra_info("sockname")[1]
            try:
                self.server = await loop.create_server(lambda: self._new_conn(), host, actual)
            except OSError as exc:
                udp.close()
                last = exc
                if port != 0:
                    raise
                continue
            self.udp = udp
            self.address = (host, actual)
            return self.address
        raise last or OSError("could not bind SIP UDP and TCP on one port")

    def _new_conn(self) -> TcpConnection:
        return TcpConnection(self, next(self._ids))

    def register(self, conn: TcpConnection) -> None:
        self.conns[conn.id] = conn
        self.by_addr[conn.peer] = conn

    def unregister(self, conn: TcpConnection) -> None:
        self.conns.pop(conn.id, None)
        if self.by_addr.get(conn.peer) is conn:
            del self.by_addr[conn.peer]

    def reject(self, head: bytes, dest: Dest, exc: ParseError) -> None:
        """A stream message that cannot be framed: the core counts, logs and answers it."""
        try:
            self._reject(head, dest, exc)
        except Exception:  # noqa: BLE001 - one bad message must not kill the listener
            self.source_log.log(logging.ERROR, dest.addr[0], "error rejecting SIP message from %s:%s",
                                dest.addr[0], dest.addr[1], exc_info=True)
        self._after()

    def deliver(self, data: bytes, dest: Dest) -> None:
        started = self.budget.start()
        try:
            self._receive(data, dest)
        except Exception:  # noqa: BLE001 - one bad message must not kill the listener
            self.source_log.log(logging.ERROR, dest.addr[0], "error handling SIP message from %s:%s",
                                dest.addr[0], dest.addr[1], exc_info=True)
        self._after()
        self.budget.done(started, data, dest.addr)

    def send(self, data: bytes, dest: Dest) -> None:
        if dest.transport == "udp":
            if self.udp is not None and not self.udp.is_closing():
                self.udp.sendto(data, dest.addr)
            return
        conn = self.conns.get(dest.conn) if dest.conn is not None else None
        if conn is None or conn.closed:
            conn = self.by_addr.get(dest.addr)
        if conn is None or conn.closed:
            conn = self._connect(dest.addr)
        conn.write(data)

    def _connect(self, addr: tuple[str, int]) -> TcpConnection:
        conn = self._new_conn()
        conn.peer = addr
        self.by_addr[addr] = conn
        loop = asyncio.get_running_loop()

        async def connect() -> None:
            try:
                await loop.create_connection(lambda: conn, addr[0], addr[1])
            except OSError as exc:
                self.source_log.log(logging.WARNING, addr[0], "TCP connect to %s:%s failed: %s",
                                    addr[0], addr[1], clip(exc))
                conn.closed = True
                if self.by_addr.get(addr) is conn:
                    del self.by_addr[addr]

        task = loop.create_task(connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return conn

    async def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
        if self.server is not None:
            self.server.close()
        for conn in list(self.conns.values()):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
            except (TimeoutError, Exception):  # noqa: BLE001
                pass
