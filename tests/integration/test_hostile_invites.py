"""Hostile INVITEs against a real server on loopback: a clear 488 before anything is allocated, and no
fd, port or task left behind by any class of them (issues 14 and 15).

Each class is sent 20 times from a raw UDP socket; open fds (/proc/self/fd: the server runs in this
process, on real sockets), RTP ports held and asyncio tasks are counted before and after, and must
not grow. A valid control run (answered, ACKed, hung up by BYE) goes first and must not grow either.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from mediasrv.calls import CallState

from .conftest import Running, start_server, wait_until

SDP = ("v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\n{c}t=0 0\r\nm=audio {port} RTP/AVP {pts}\r\n"
       "a=rtpmap:0 PCMU/8000\r\n")


def offer(c: str = "c=IN IP4 127.0.0.1\r\n", port: str = "{rtp}", pts: str = "0") -> str:
    return SDP.format(c=c, port=port, pts=pts)


# class -> (SDP template, expected final status); {rtp} is replaced by a port the test owns
CLASSES: dict[str, tuple[str, int]] = {
    "control": (offer(), 200),
    "nul_in_c": (offer(c="c=IN IP4 127.0.0.1\x00AAAAAAAA\r\n"), 488),
    "port_65535": (offer(port="65535"), 200),
    "port_0": (offer(port="0"), 488),
    "port_70000": (offer(port="70000"), 488),
    "hostname_in_c": (offer(c="c=IN IP4 media.attacker.example\r\n"), 488),
    "multicast_c": (offer(c="c=IN IP4 239.1.2.3\r\n"), 488),
    "metadata_c": (offer(c="c=IN IP4 169.254.169.254\r\n"), 488),
    "denied_cidr": (offer(c="c=IN IP4 127.0.0.2\r\n"), 488),  # the server runs with media_deny_cidrs 127.0.0.2/32
    "ip6_in_ip4": (offer(c="c=IN IP4 ::1\r\n"), 488),
    "missing_c": (offer(c=""), 488),
    "bad_codecs": (offer(pts="18 97 abc \u00b2 99999999999"), 488),
}
ROUNDS = 20


@dataclass
class Usage:
    fds: int
    ports: int
    tasks: int
    calls: int


def usage(r: Running) -> Usage:
    return Usage(len(os.listdir("/proc/self/fd")), r.server.media.ports.in_use, len(asyncio.all_tasks()),
                 r.server.registry.active_count)


class RawSip:
    """A SIP UAC by hand on one UDP socket: what an attacker (or SIPVicious) sends."""

    def __init__(self, sip_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.server = ("127.0.0.1", sip_port)

    def close(self) -> None:
        self.sock.close()

    def _headers(self, method: str, call_id: str, branch: str, cseq: int, to_tag: str | None) -> str:
        to = "<sip:svc@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
        return (f"{method} sip:svc@127.0.0.1:{self.server[1]} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport\r\n"
                f"From: <sip:x@127.0.0.1>;tag=ft\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
                f"CSeq: {cseq} {method}\r\nContact: <sip:x@127.0.0.1:{self.port}>\r\nMax-Forwards: 70\r\n")

    def send(self, method: str, call_id: str, branch: str, cseq: int = 1, to_tag: str | None = None,
             body: str = "") -> None:
        head = self._headers(method, call_id, branch, cseq, to_tag)
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        data = f"{head}{ctype}Content-Length: {len(body.encode())}\r\n\r\n{body}".encode()
        self.sock.sendto(data, self.server)

    async def final(self, call_id: str, cseq_method: str, timeout: float = 5.0) -> tuple[int, str, str]:
        """(status, To tag, whole text) of the first final response for *call_id* / *cseq_method*."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no final response to {cseq_method} {call_id}")
            data, _ = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 65535), left)
            text = data.decode("utf-8", "replace")
            head = text.split("\r\n\r\n", 1)[0]
            if f"Call-ID: {call_id}\r\n" not in head + "\r\n" or not text.startswith("SIP/2.0 "):
                continue  # a retransmission or a BYE from the server for an earlier call
            status = int(text.split(" ", 2)[1])
            cseq = next(ln for ln in head.split("\r\n") if ln.lower().startswith("cseq:"))
            if status < 200 or not cseq.endswith(cseq_method):
                continue
            to = next(ln for ln in head.split("\r\n") if ln.lower().startswith("to:"))
            tag = to.split(";tag=", 1)[1].split(";")[0] if ";tag=" in to else ""
            return status, tag, text

    async def call(self, body: str) -> tuple[int, str]:
        """INVITE; a final non-2xx is ACKed; a 2xx is ACKed and hung up with BYE. (status, response text)."""
        call_id = uuid.uuid4().hex
        branch = "z9hG4bK" + uuid.uuid4().hex[:12]
        self.send("INVITE", call_id, branch, body=body)
        status, tag, text = await self.final(call_id, "INVITE")
        if status >= 300:
            self.send("ACK", call_id, branch, to_tag=tag)
            return status, text
        self.send("ACK", call_id, "z9hG4bK" + uuid.uuid4().hex[:12], to_tag=tag)
        self.send("BYE", call_id, "z9hG4bK" + uuid.uuid4().hex[:12], cseq=2, to_tag=tag)
        bye, _, _ = await self.final(call_id, "BYE")
        assert bye == 200
        return status, text


@pytest.fixture
async def server(tmp_path: Path) -> Running:
    # no webhook receiver: its connections would be noise in the fd count
    r = await start_server(tmp_path, media_deny_cidrs=["127.0.0.2/32"])
    yield r
    await r.server.stop()


async def test_hostile_invites_are_refused_and_leak_nothing(server: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sip = RawSip(server.sip_port)
    rtp_sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # where the accepted calls' RTP goes
    rtp_sink.bind(("127.0.0.1", 0))
    stray = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the denied address: must never hear from us
    stray.bind(("127.0.0.2", rtp_sink.getsockname()[1]))
    stray.setblocking(False)
    table: list[tuple[str, Usage, Usage, int]] = []
    try:
        await sip.call(offer().replace("{rtp}", str(rtp_sink.getsockname()[1])))  # warm-up (first-call imports, pools)
        await asyncio.sleep(0.1)
        for name, (template, expected) in CLASSES.items():
            body = template.replace("{rtp}", str(rtp_sink.getsockname()[1]))
            before = usage(server)
            for _ in range(ROUNDS):
                status, text = await sip.call(body)
                assert status == expected, (name, text[:400])
                if status == 488:
                    warning = next(ln for ln in text.split("\r\n") if ln.startswith("Warning:"))
                    assert '399 mediasrv "unusable SDP: ' in warning, (name, warning)
            await asyncio.sleep(0.05)  # let the readers' removal and any task settle
            after = usage(server)
            table.append((name, before, after, expected))
        await asyncio.sleep(0.1)
        with pytest.raises(BlockingIOError):
            stray.recvfrom(2048)  # nothing was sent to the address only a refused SDP named
    finally:
        sip.close()
        rtp_sink.close()
        stray.close()
    report = "\n".join(f"{n:14} {e}  fds {b.fds}->{a.fds}  ports {b.ports}->{a.ports}  tasks {b.tasks}->{a.tasks}  "
                       f"calls {b.calls}->{a.calls}" for n, b, a, e in table)
    print("\n" + report)
    for name, before, after, _ in table:
        grew = {k: (getattr(before, k), getattr(after, k)) for k in ("fds", "ports", "tasks")
                if getattr(after, k) > getattr(before, k)}
        assert not grew and after.ports == 0 and after.calls == 0, (name, grew, report)
    stats = server.server.sip.stats
    assert stats["sdp_refused"] == ROUNDS * sum(1 for _, e in CLASSES.values() if e == 488)
    assert all(c.state is CallState.ENDED for c in server.server.registry.all())
    tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not tracebacks, [r.getMessage() for r in tracebacks]


async def test_reinvite_with_hostile_sdp_is_488_and_the_call_keeps_its_media(server: Running) -> None:
    sip = RawSip(server.sip_port)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    good = offer().replace("{rtp}", str(sink.getsockname()[1]))
    try:
        call_id = uuid.uuid4().hex
        sip.send("INVITE", call_id, "z9hG4bK-inv1", body=good)
        status, tag, _ = await sip.final(call_id, "INVITE")
        assert status == 200
        sip.send("ACK", call_id, "z9hG4bK-ack1", to_tag=tag)
        call = server.server.registry.by_sip_call_id(call_id)
        assert call is not None and call.media is not None
        remote = call.media.remote_addr
        hostile = [template.replace("{rtp}", "4000") for name, (template, code) in CLASSES.items() if code == 488]
        for n, body in enumerate(hostile, start=2):
            sip.send("INVITE", call_id, f"z9hG4bK-re{n}", cseq=n, to_tag=tag, body=body)
            status, _, text = await sip.final(call_id, "INVITE")
            assert status == 488, text[:300]
            sip.send("ACK", call_id, f"z9hG4bK-re{n}", cseq=n, to_tag=tag)
        assert call.state is CallState.ANSWERED and call.media.remote_addr == remote
        await wait_until(lambda: server.server.media.leg_stats(call.call_id)["packets_sent"] > 2, 5.0, "RTP")
        sip.send("BYE", call_id, "z9hG4bK-bye", cseq=99, to_tag=tag)
        assert (await sip.final(call_id, "BYE"))[0] == 200
        assert server.server.media.ports.in_use == 0
    finally:
        sip.close()
        sink.close()
