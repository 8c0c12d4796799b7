"""Hostile SIP over real sockets: the reported 523-byte INVITEs, size limits over UDP and TCP,
TCP framing floods, and the per-message budget counter in /metrics."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import pytest

from tests.support.adversarial import invite, nul_display_invite
from tests.support.server import Running, start_server

pytestmark = pytest.mark.integration


def options(n: int) -> bytes:
    return (
        f"OPTIONS sip:svc@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-o{n}\r\n"
        f"From: <sip:t@127.0.0.1>;tag=o{n}\r\nTo: <sip:svc@127.0.0.1>\r\nCall-ID: opt{n}@t\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def udp_exchange(port: int, data: bytes, timeout: float = 2.0) -> bytes:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        await loop.sock_sendto(sock, data, ("127.0.0.1", port))
        reply, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), timeout)
        return reply


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = 3.0) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout)  # read() returns at EOF


async def metrics(r: Running) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"{r.http}/metrics") as resp:
        return await resp.text()


async def test_hostile_messages_get_quick_answers_and_the_server_keeps_answering(tmp_path: Path) -> None:
    # every message is "over budget"; the per-source rate limit (admission.py) is not under test
    r = await start_server(tmp_path, sip_message_budget_ms=0.000001, sip_rate_per_source=1e6, sip_burst_per_source=10**6)
    try:
        port = r.sip_port
        for i, where in enumerate(("from", "contact")):
            msg = nul_display_invite(where)
            assert len(msg) == 523
            reply = await udp_exchange(port, msg.replace(b"c1@peer", f"nul{i}@peer".encode()), timeout=1.0)
            assert reply.startswith(b"SIP/2.0 400 Bad Request (bad name-addr")
            assert (await udp_exchange(port, options(i))).startswith(b"SIP/2.0 200 OK")
        big = await udp_exchange(port, invite(ruri="sip:" + "a" * 3000 + "@h", call_id="big@peer"))
        assert big.startswith(b"SIP/2.0 414 Request-URI Too Long")

        # TCP: a header section that never ends is cut at 32 KiB with a 513, then the connection closes
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = invite(call_id="tcp1@peer").split(b"\r\n\r\n")[0] + b"\r\nX-Endless: "
        writer.write(head + b"a" * 40000)
        await writer.drain()
        got = await read_until_closed(reader)
        assert got.startswith(b"SIP/2.0 513 Message Too Large (header section larger than 32768 bytes")
        writer.close()

        # TCP: a Content-Length over the body limit is refused before the body is buffered
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(invite(call_id="tcp2@peer").replace(b"Content-Length: 0", b"Content-Length: 999999"))
        await writer.drain()
        assert (await read_until_closed(reader)).startswith(b"SIP/2.0 513 Message Too Large")
        writer.close()

        # TCP: a CRLF flood costs one pong, a ping gets one, and a message in 1-byte writes still works
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\r\n" * 32768)
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
        for byte in options(9).replace(b"UDP", b"TCP"):
            writer.write(bytes([byte]))
        await writer.drain()
        reply = await asyncio.wait_for(reader.readuntil(b"Content-Length: 0\r\n\r\n"), 2)
        assert reply.lstrip(b"\r\n").startswith(b"SIP/2.0 200 OK")  # after any pong still queued
        assert reply.count(b"\r\n") - reply.lstrip(b"\r\n").count(b"\r\n") <= 4  # a pong or two, not thousands
        writer.close()

        # TCP: 200 pipelined requests in one write are all answered (16 per turn of the loop)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(options(100 + i).replace(b"UDP", b"TCP") for i in range(200)))
        await writer.drain()
        answered = 0
        while answered < 200:
            reply = await asyncio.wait_for(reader.readuntil(b"Content-Length: 0\r\n\r\n"), 5)
            answered += reply.count(b"SIP/2.0 200 OK")
        writer.close()

        text = await metrics(r)
        assert "mediasrv_sip_too_large_total 3.0" in text
        over = next(line for line in text.splitlines() if line.startswith("mediasrv_sip_over_budget_total "))
        assert int(float(over.split()[1])) >= 5
        assert "mediasrv_sip_message_handling_max_seconds" in text
        assert r.server.registry.active_count == 0
    finally:
        await r.server.stop()
