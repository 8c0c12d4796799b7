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

from mediasrv.calls.registry import CallState
from tests.support.rawsip import CLASSES, RawSip, offer
from tests.support.server import Running, start_server, wait_until

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
