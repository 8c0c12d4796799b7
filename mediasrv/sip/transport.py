"""Thin asyncio transport: UDP and TCP on one host:port, stream framing, CRLF keep-alives.

Everything protocol-related is in the sans-I/O core; this module only moves bytes.  It never looks
at the transport's class (uvloop's differ from asyncio's), only at the protocol callbacks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

from ..logsafe import SourceLimiter, clip
from .message import ParseError, framing_length
from .transaction import Dest

log = logging.getLogger("mediasrv.sip.transport")

MAX_HEADER = 65536
Receiver = Callable[[bytes, Dest], None]


def _is_keepalive(data: bytes) -> bool:
    return not data.strip(b"\r\n \t")


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
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
        self.pending: list[bytes] = []  # writes queued while connecting
        self.closed = False

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
        buf = self.buf
        buf += data
        while buf:
            if buf[0] in (13, 10):
                if buf.startswith(b"\r\n\r\n"):
                    self.write(b"\r\n")  # RFC 5626 double-CRLF ping -> single-CRLF pong
                    del buf[:4]
                    continue
                if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                    break  # maybe the start of a ping: wait
                del buf[:1]
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER:
                    self.owner.warn(self.peer[0], "TCP %s:%s: header section too large, closing", *self.peer)
                    self.close()
                    buf.clear()
                break
            try:
                length = framing_length(bytes(buf[: end + 2]))
            except ParseError as exc:
                self.owner.warn(self.peer[0], "TCP %s:%s: %s, closing", self.peer[0], self.peer[1], clip(exc.reason))
                self.owner.stats_malformed()
                self.close()
                buf.clear()
                break
            total = end + 4 + length
            if len(buf) < total:
                break
            msg = bytes(buf[:total])
            del buf[:total]
            self.owner.deliver(msg, Dest("tcp", self.peer, self.id))


class SipTransport:
    """Owns the UDP endpoint, the TCP listener and the TCP connections (in and out)."""

    def __init__(self, receive: Receiver, after_input: Callable[[], None], on_malformed: Callable[[], None]) -> None:
        self._receive = receive
        self._after = after_input
        self._on_malformed = on_malformed
        self.udp: asyncio.DatagramTransport | None = None
        self.server: asyncio.AbstractServer | None = None
        self.conns: dict[int, TcpConnection] = {}
        self.by_addr: dict[tuple[str, int], TcpConnection] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self.address: tuple[str, int] = ("", 0)
        self._log_limit = SourceLimiter(rate=1.0, burst=5)

    def warn(self, source: str, fmt: str, *args: object) -> None:
        """A warning about one peer: at most a few lines per second per source address."""
        allowed, suppressed = self._log_limit.allow(source)
        if allowed:
            log.warning(fmt + (f" ({suppressed} more suppressed)" if suppressed else ""), *args)

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
            self.udp = udp  # type: ignore[assignment]
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

    def stats_malformed(self) -> None:
        self._on_malformed()

    def deliver(self, data: bytes, dest: Dest) -> None:
        try:
            self._receive(data, dest)
        except Exception:  # noqa: BLE001 - one bad message must not kill the listener
            log.exception("error handling SIP message from %s:%s", *dest.addr)
        self._after()

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
                self.warn(addr[0], "TCP connect to %s:%s failed: %s", addr[0], addr[1], clip(exc))
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
