"""SIPp as a real caller: run a scenario, the uac_play.xml command line, waiting for answered calls,
and checks of the RTP stream that arrived."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from mediasrv.demo import free_port_pair
from mediasrv.rtp.probe import RtpCapture, analyse

from .paths import SCENARIOS, require
from .server import Running, wait_until


def sipp_caller(r: Running) -> list[str]:
    """uac_wait_bye.xml: one call that stays up until we hang it up (a test then lasts only as long as it needs)."""
    return [f"127.0.0.1:{r.sip_port}", "-sf", str(SCENARIOS / "uac_wait_bye.xml"), "-i", "127.0.0.1", "-p", "0",
            "-mp", str(free_port_pair()), "-m", "1", "-timeout", "60s", "-timeout_error"]


async def run_sipp(*args: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run SIPp to completion (bounded), return (exit code, combined output)."""
    sipp = require("sipp")
    proc = await asyncio.create_subprocess_exec(
        sipp, *args, "-nostdin", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "TERM": "dumb"},
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        raise AssertionError(f"SIPp did not finish in {timeout}s: {out.decode(errors='replace')[-2000:]}") from None
    return proc.returncode or 0, out.decode(errors="replace")


def sipp_play_args(r: Running, media_port: int, duration_ms: int, calls: int = 1, rate: int = 10) -> list[str]:
    """uac_play.xml: offers PCMU+PCMA with our capture socket as its media address, hangs up after -d."""
    return [
        f"127.0.0.1:{r.sip_port}",
        "-sf", str(SCENARIOS / "uac_play.xml"),
        "-i", "127.0.0.1", "-p", "0",
        "-set", "rtp_ip", "127.0.0.1", "-set", "rtp_port", str(media_port),
        "-d", str(duration_ms),
        "-m", str(calls), "-l", str(calls), "-r", str(rate),
        "-timeout", "60s", "-timeout_error",
    ]


async def start_sipp(args: list[str]) -> asyncio.Task[tuple[int, str]]:
    return asyncio.create_task(run_sipp(*args, timeout=90))


async def answered_calls(r: Running, n: int, timeout: float = 15.0) -> list[Any]:
    return await wait_until(
        lambda: (calls := [c for c in r.server.registry.active() if c.state.value == "answered"])
        and len(calls) >= n
        and calls,
        timeout,
        f"{n} answered calls",
    )


def assert_stream_continuity(capture: RtpCapture) -> None:
    report = analyse(capture.packets)
    assert report.ssrcs == 1, report.line()
    assert report.seq_errors == 0 and report.lost == 0, report.line()
    assert report.ts_errors == 0, report.line()
    assert capture.packets[0].marker, "first packet of the talkspurt must carry the marker bit"
    assert report.markers == 1, report.line()


def te_events(packets) -> list[list]:
    """The telephone-event packets grouped per event timestamp, parsed here (RFC 4733 §2.3)."""
    groups: dict[int, list] = {}
    for p in packets:
        if p.pt == 101:
            groups.setdefault(p.ts, []).append(p)
    return list(groups.values())
