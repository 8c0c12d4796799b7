"""Who may place calls, floods and SIP egress, against a real server over real sockets (issues 14/15).

SIPp and the raw senders bind other loopback addresses (127.0.0.2, ...) to act as other sources.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from mediasrv.calls.registry import CallState
from tests.support.paths import REPO, SCENARIOS
from tests.support.server import Running, start_server, wait_until
from tests.support.sipp import run_sipp

SDP = (
    "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _invite(port: int, call_id: str, cseq: int, via_host: str, contact: str, transport: str = "UDP",
            extra: str = "") -> bytes:
    return (
        f"INVITE sip:svc@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via_host};branch=z9hG4bK{call_id}\r\n"
        f"From: <sip:a@example.com>;tag=f{call_id}\r\nTo: <sip:svc@127.0.0.1:{port}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: {contact}\r\nMax-Forwards: 70\r\n{extra}"
        f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n{SDP}"
    ).encode()


async def _metric(r: Running, kind: str) -> float:
    """One SIP counter as GET /metrics shows it."""
    async with aiohttp.ClientSession() as http, http.get(f"{r.http}/metrics") as resp:
        text = await resp.text()
    line = f"mediasrv_sip_{kind}_total "
    for ln in text.splitlines():
        if ln.startswith(line):
            return float(ln[len(line):])
    raise AssertionError(f"no {kind} counter in /metrics")


def _sipp(port: int, scenario: str, source: str, *extra: str) -> list[str]:
    return [f"127.0.0.1:{port}", "-sf", str(SCENARIOS / scenario), "-i", source, "-p", "0",
            "-timeout", "20s", "-timeout_error", *extra]


async def test_invite_from_a_disallowed_source_gets_403_and_the_server_holds_nothing(tmp_path: Path) -> None:
    r = await start_server(tmp_path, sip_allow_cidrs=["127.0.0.1/32"])
    try:
        await asyncio.sleep(0.2)
        fds = _fds()
        code, out = await run_sipp(*_sipp(r.sip_port, "uac_expect_403.xml", "127.0.0.2", "-m", "3", "-r", "20"))
        assert code == 0, out[-2000:]
        await asyncio.sleep(0.3)
        assert list(r.server.registry.all()) == [] and r.server.media._drivers == {}
        assert r.server.sip.core.tl.server == {} and not r.server.sip.core.sessions
        assert _fds() == fds
        assert await _metric(r, "refused_source") >= 3
        # a scanner's INVITE (SIPVicious User-Agent) from an allowed address: no answer, no call, no port
        scanner = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        scanner.bind(("127.0.0.1", 0))
        scanner.setblocking(False)
        me = f"127.0.0.1:{scanner.getsockname()[1]}"
        scanner.sendto(_invite(r.sip_port, "svmap1", 1, me, f"<sip:100@{me}>", extra="User-Agent: friendly-scanner\r\n"),
                       ("127.0.0.1", r.sip_port))
        await asyncio.sleep(0.5)
        try:
            answer = scanner.recv(65535)
        except BlockingIOError:
            answer = b""
        scanner.close()
        assert answer == b"" and list(r.server.registry.all()) == [] and r.server.media._drivers == {}
        assert await _metric(r, "refused_scanner") == 1
        # the allowed source still places calls
        code, out = await run_sipp(*_sipp(r.sip_port, "uac_play.xml", "127.0.0.1", "-m", "1", "-d", "200",
                                          "-set", "rtp_ip", "127.0.0.1", "-set", "rtp_port", "40000"))
        assert code == 0, out[-2000:]
        (call,) = r.server.registry.all()
        assert call.hangup_by == "caller"
    finally:
        await r.server.stop()


@pytest.mark.parametrize("proxy", [False, True], ids=["401", "407"])
async def test_digest_auth_with_sipp_accepts_the_password_and_refuses_a_wrong_one(tmp_path: Path, proxy: bool) -> None:
    r = await start_server(tmp_path, sip_users={"alice": "s3cret"}, sip_realm="mediasrv.test", sip_auth_proxy=proxy)
    try:
        code, out = await run_sipp(*_sipp(r.sip_port, "uac_auth.xml", "127.0.0.1", "-m", "1",
                                          "-au", "alice", "-ap", "s3cret"))
        assert code == 0, out[-3000:]
        (call,) = r.server.registry.all()
        assert call.state is CallState.ENDED and call.hangup_by == "caller"
        code, out = await run_sipp(*_sipp(r.sip_port, "uac_auth_refused.xml", "127.0.0.1", "-m", "1",
                                          "-au", "alice", "-ap", "wrong"))
        assert code == 0, out[-3000:]
        assert len(list(r.server.registry.all())) == 1
        assert (await _metric(r, "auth_ok"), await _metric(r, "auth_failed")) == (1, 1)
        assert await _metric(r, "auth_challenged") >= 2
        # OPTIONS stays unauthenticated (health checks)
        code, out = await run_sipp(*_sipp(r.sip_port, "uac_options.xml", "127.0.0.1", "-m", "1"))
        assert code == 0, out[-2000:]
    finally:
        await r.server.stop()


async def test_options_answered_within_2s_while_another_source_floods(tmp_path: Path) -> None:
    r = await start_server(tmp_path)
    target = f"127.0.0.1:{r.sip_port}"
    loop = asyncio.get_running_loop()
    flooder = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "bench" / "sip_flood.py"), "flood", "--target", target,
        "--source", "127.0.0.2", "--rate", "2000", "--seconds", "5", stdout=subprocess.DEVNULL,
    )
    answers: dict[bytes, float] = {}

    class Probe(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if data.startswith(b"SIP/2.0 200"):
                branch = data.split(b"branch=", 1)[1].split(b";", 1)[0].split(b"\r", 1)[0]
                answers.setdefault(branch, loop.time())

    transport, _ = await loop.create_datagram_endpoint(Probe, local_addr=("127.0.0.1", 0))
    sent: dict[bytes, float] = {}
    try:
        await asyncio.sleep(0.3)
        for n in range(45):  # 4.5 s of probes, all while the flood runs
            branch = f"z9hG4bKprobe{n}".encode()
            msg = (
                f"OPTIONS sip:svc@{target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch={branch.decode()};rport\r\n"
                f"From: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <sip:svc@{target}>\r\nCall-ID: probe{n}\r\n"
                "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            sent[branch] = loop.time()
            transport.sendto(msg, ("127.0.0.1", r.sip_port))
            for delay in (0.5, 1.5):  # retransmitted like a SIP client's Timer E (a datagram may be lost)
                loop.call_later(delay, lambda b=branch, m=msg: b in answers or transport.sendto(m, ("127.0.0.1", r.sip_port)))
            await asyncio.sleep(0.1)
        await asyncio.wait_for(flooder.wait(), 30)
        await asyncio.sleep(0.5)
        latencies = sorted(answers[b] - t for b, t in sent.items() if b in answers)
        assert len(latencies) == len(sent), f"{len(sent) - len(latencies)} OPTIONS unanswered"
        assert latencies[-1] < 2.0
        assert await _metric(r, "rate_limited") > 2000  # most of the 10,000 flood datagrams were dropped
    finally:
        transport.close()
        if flooder.returncode is None:
            flooder.kill()
            await flooder.wait()
        await r.server.stop()


async def test_call_with_invite_cseq_at_2_31_minus_1_is_ended_by_the_peers_bye(tmp_path: Path) -> None:
    r = await start_server(tmp_path)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    me = f"127.0.0.1:{sock.getsockname()[1]}"
    loop = asyncio.get_running_loop()

    async def recv() -> bytes:
        return await asyncio.wait_for(loop.sock_recv(sock, 65535), 2.0)

    try:
        sock.sendto(_invite(r.sip_port, "top", 2147483647, me, f"<sip:a@{me}>"), ("127.0.0.1", r.sip_port))
        while not (resp := await recv()).startswith(b"SIP/2.0 200"):
            pass
        to = next(ln for ln in resp.split(b"\r\n") if ln.lower().startswith(b"to:")).decode()
        common = f"From: <sip:a@example.com>;tag=ftop\r\n{to}\r\nCall-ID: top\r\nMax-Forwards: 70\r\n"
        sock.sendto((f"ACK sip:svc@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKack\r\n{common}"
                     "CSeq: 2147483647 ACK\r\nContent-Length: 0\r\n\r\n").encode(), ("127.0.0.1", r.sip_port))
        sock.sendto((f"BYE sip:svc@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbye\r\n{common}"
                     "CSeq: 2147483648 BYE\r\nContent-Length: 0\r\n\r\n").encode(), ("127.0.0.1", r.sip_port))
        while b"BYE" not in (resp := await recv()).split(b"CSeq:", 1)[1].split(b"\r\n", 1)[0]:
            pass
        assert resp.startswith(b"SIP/2.0 200")
        (call,) = r.server.registry.all()
        assert call.state is CallState.ENDED and (call.hangup_cause, call.hangup_by) == ("normal_clearing", "caller")
        sock.sendto(_invite(r.sip_port, "huge", 2**32, me, f"<sip:a@{me}>"), ("127.0.0.1", r.sip_port))
        assert (await recv()).startswith(b"SIP/2.0 400")
    finally:
        sock.close()
        await r.server.stop()


async def test_tcp_invites_that_reset_never_make_the_server_contact_the_contact_host(tmp_path: Path) -> None:
    """The advisory repro: 20 TCP connections send INVITEs naming 127.0.0.99 and reset; the calls
    are hung up for the missing ACK, and nothing (TCP or UDP) reaches 127.0.0.99."""
    trap_tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    trap_tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    trap_tcp.bind(("127.0.0.99", 0))
    trap_port = trap_tcp.getsockname()[1]
    trap_tcp.listen(64)
    trap_tcp.setblocking(False)
    trap_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    trap_udp.bind(("127.0.0.99", trap_port))
    trap_udp.setblocking(False)
    r = await start_server(tmp_path)
    core = r.server.sip.core
    core.tl.t1 = 0.05  # Timer L (64*T1) in 3.2 s instead of 32 s
    trap = f"127.0.0.99:{trap_port}"
    try:
        for i in range(20):
            c = socket.create_connection(("127.0.0.1", r.sip_port))
            contact = f"<sip:x@{trap};transport=tcp>" if i % 2 else f"<sip:x@attacker.invalid:{trap_port};transport=tcp>"
            rr = f"Record-Route: <sip:{trap};transport=tcp;lr>\r\n"
            c.sendall(_invite(r.sip_port, f"adv{i}", 1, trap, contact, "TCP", rr))
            await asyncio.sleep(0.02)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()  # RST
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.sendto(_invite(r.sip_port, "advu", 1, trap, f"<sip:x@{trap}>", extra=f"Record-Route: <sip:{trap};lr>\r\n"),
                   ("127.0.0.1", r.sip_port))
        udp.close()
        await wait_until(lambda: core.stats["no_ack"] == 21, timeout=15, what="the 21 calls hung up for no ACK")
        await asyncio.sleep(1.0)  # the BYEs (and any retransmission) go out meanwhile
        assert all(c.state is CallState.ENDED for c in r.server.registry.all())
        accepted = []
        try:
            accepted.append(trap_tcp.accept())
        except BlockingIOError:
            pass
        try:
            datagram = trap_udp.recv(65535)
        except BlockingIOError:
            datagram = b""
        assert accepted == [] and datagram == b"", "the server sent to a host only the attacker named"
        assert core.stats["requests_out"] >= 21  # the BYEs were sent (to the sources)
    finally:
        trap_tcp.close()
        trap_udp.close()
        t0 = time.monotonic()
        await r.server.stop()
        assert time.monotonic() - t0 < 10
