"""The SIP user agent against real SIPp over UDP and TCP on loopback (NullMedia, no RTP)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mediasrv.calls.controller import CallFailed, SipSettings, SipUserAgent
from mediasrv.calls.registry import Call, CallRegistry, CallState, NullMedia
from tests.support.paths import SCENARIOS, require
from tests.support.ports import free_tcp_udp_port

pytestmark = pytest.mark.integration


def sipp_path() -> str:
    return require("sipp")


free_port = free_tcp_udp_port


class Recording(NullMedia):
    """NullMedia that records media_changed (send_enabled) per call."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1", 31000, 33000)
        self.changes: list[bool] = []

    def media_changed(self, call: Call) -> None:
        self.changes.append(bool(call.media and call.media.send_enabled))


class Sipp:
    """One SIPp process we started (killed by PID only, if it overruns)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def result(self, timeout: float = 60.0) -> tuple[int, str]:
        try:
            out, _ = await asyncio.wait_for(self.proc.communicate(), timeout)
        except TimeoutError:
            self.proc.kill()
            out, _ = await self.proc.communicate()
            raise AssertionError(f"SIPp overran: {out.decode(errors='replace')[-2000:]}") from None
        return self.proc.returncode or 0, out.decode(errors="replace")


async def sipp(*args: str) -> Sipp:
    assert "-m" in args and "-timeout" in args, "every SIPp run is bounded"
    proc = await asyncio.create_subprocess_exec(
        sipp_path(), *args, "-nostdin",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "TERM": "dumb"},
    )
    return Sipp(proc)


def counts(out: str) -> tuple[int, int]:
    ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", out)
    failed = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", out)
    assert ok and failed, out[-2000:]
    return int(ok[-1]), int(failed[-1])


async def passed(s: Sipp, calls: int, timeout: float = 60.0) -> str:
    code, out = await s.result(timeout)
    assert code == 0, out[-3000:]
    assert counts(out) == (calls, 0), out[-3000:]
    return out


async def wait_until(pred: Callable[[], Any], timeout: float = 10.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := pred()):
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)
    return value


class Env:
    def __init__(self, ua: SipUserAgent, registry: CallRegistry, media: Recording) -> None:
        self.ua, self.registry, self.media = ua, registry, media

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.ua.address[1]}"

    def uac(self, scenario: str, *extra: str, calls: int = 1, timeout_s: int = 30) -> list[str]:
        return [
            self.target, "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", "0",
            "-m", str(calls), "-timeout", f"{timeout_s}s", "-timeout_error", *extra,
        ]

    def calls(self) -> list[Call]:
        return list(self.registry.all())


async def make_env(**settings: Any) -> Env:
    registry, media = CallRegistry(), Recording()
    ua = SipUserAgent(SipSettings(host="127.0.0.1", port=0, **settings), registry, media)
    await ua.start()
    return Env(ua, registry, media)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = await make_env()
    yield e
    await e.ua.stop()


@pytest.fixture
async def ring_env() -> AsyncIterator[Env]:
    e = await make_env(auto_answer=False)
    yield e
    await e.ua.stop()


PLAY = ("-set", "rtp_ip", "127.0.0.1", "-set", "rtp_port", "40000")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_call_in_and_caller_hangs_up(env: Env, transport: str) -> None:
    extra = ("-t", "t1") if transport == "tcp" else ()
    await passed(await sipp(*env.uac("uac_play.xml", *PLAY, "-d", "300", *extra)), 1)
    (call,) = env.calls()
    assert call.state is CallState.ENDED and (call.hangup_cause, call.hangup_by) == ("normal_clearing", "caller")
    assert call.media and call.media.remote_addr == ("127.0.0.1", 40000) and call.media.codec.name == "PCMU"
    assert call.media.telephone_event_pt == 101 and call.answered_at


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_api_hangup_sends_bye(env: Env, transport: str) -> None:
    extra = ("-t", "t1") if transport == "tcp" else ()
    s = await sipp(*env.uac("uac_wait_bye.xml", *extra))
    call = await wait_until(lambda: next((c for c in env.calls() if c.state is CallState.ANSWERED), None))
    await asyncio.sleep(0.2)
    await env.ua.hangup(call.call_id)
    await passed(s, 1)
    assert (call.hangup_cause, call.hangup_by) == ("normal_clearing", "api")


async def test_cancel_while_ringing(ring_env: Env) -> None:
    await passed(await sipp(*ring_env.uac("uac_cancel.xml")), 1)
    (call,) = ring_env.calls()
    assert (call.hangup_cause, call.hangup_by, call.sip_code) == ("cancelled", "caller", 487)


async def test_ring_then_api_answer(ring_env: Env) -> None:
    s = await sipp(*ring_env.uac("uac_play.xml", *PLAY, "-d", "200"))
    call = await wait_until(lambda: next((c for c in ring_env.calls() if c.state is CallState.RINGING), None))
    with pytest.raises(KeyError):
        await ring_env.ua.answer("no-such-call")
    await ring_env.ua.answer(call.call_id)
    with pytest.raises(RuntimeError):
        await ring_env.ua.answer(call.call_id)
    await passed(s, 1)


async def test_options(env: Env) -> None:
    await passed(await sipp(*env.uac("uac_options.xml")), 1)
    assert env.calls() == []


async def test_reinvite_hold_unhold(env: Env, tmp_path: Path) -> None:
    trace = tmp_path / "hold.log"
    s = await sipp(*env.uac("uac_hold.xml", "-d", "500", "-trace_msg", "-message_file", str(trace)))
    await passed(s, 1)
    assert env.media.changes == [True, False, True]
    text = trace.read_text(errors="replace")
    versions = [int(v) for v in re.findall(r"o=mediasrv \d+ (\d+) IN", text)]
    assert len(versions) >= 3 and versions[:3] == sorted(set(versions[:3])), versions
    assert "a=recvonly" in text  # our answer to a=sendonly


async def test_delayed_offer(env: Env) -> None:
    await passed(await sipp(*env.uac("uac_delayed_offer.xml", "-d", "300")), 1)
    (call,) = env.calls()
    assert call.media and call.media.codec.name == "PCMU" and env.media.changes == [True]


async def test_488_when_no_common_codec(env: Env) -> None:
    await passed(await sipp(*env.uac("uac_g729.xml")), 1)
    assert env.calls() == []


async def test_503_at_max_calls() -> None:
    e = await make_env(max_calls=1)
    try:
        first = await sipp(*e.uac("uac_wait_bye.xml"))
        call = await wait_until(lambda: next((c for c in e.calls() if c.state is CallState.ANSWERED), None))
        await passed(await sipp(*e.uac("uac_expect_503.xml")), 1)
        await e.ua.hangup(call.call_id)
        await passed(first, 1)
    finally:
        await e.ua.stop()


async def test_ten_percent_loss_zero_failures(env: Env) -> None:
    s = await sipp(*env.uac("uac_load.xml", "-r", "20", "-l", "40", "-d", "500", "-lost", "10", calls=40, timeout_s=90))
    await passed(s, 40, timeout=120)
    assert env.ua.stats["retransmissions"] > 0
    ended = [c for c in env.calls() if c.state is CallState.ENDED]
    assert all(c.hangup_cause == "normal_clearing" for c in ended)
    # SIPp's simulated loss can swallow a call's ACK and every copy of its BYE and still count the call
    # as successful (its trace shows no BYE ever leaving); our side then ends such a call itself after
    # 64*T1 without ACK (cause no_ack, covered by the unit tests). Allow a couple of those here.
    assert len(ended) >= 38


async def test_200_concurrent_calls(env: Env) -> None:
    peak = 0

    def watch(event: str, call: Call) -> None:
        nonlocal peak
        peak = max(peak, env.registry.active_count)

    env.registry.subscribe(watch)
    s = await sipp(*env.uac("uac_load.xml", "-r", "100", "-l", "200", "-d", "3000", calls=200, timeout_s=60))
    await passed(s, 200)
    assert peak >= 200 and env.registry.active_count == 0


async def test_outbound_calls_to_sipp_uas_with_loss() -> None:
    """Our UAC against SIPp dropping 5 % of the INVITEs, ACKs and BYEs it receives and of the 200s it sends.

    Every call must be answered, ACKed and hung up: our INVITE and BYE retransmissions, re-ACKs of
    retransmitted 200s and absorption of duplicate 200s are what make that happen.  The scenario
    (``uas_loss.xml``) exempts SIPp's 180 from the loss; why is in the file (a SIPp 3.6 quirk that
    made this test fail in CI with ``-lost 5`` on every message).
    """
    env = await make_env(t1=1.0)
    try:
        await _outbound_with_loss(env)
    finally:
        await env.ua.stop()


async def _outbound_with_loss(env: Env) -> None:
    port = free_port()
    n = 30
    s = await sipp("-sf", str(SCENARIOS / "uas_loss.xml"), "-i", "127.0.0.1", "-p", str(port), "-m", str(n),
                   "-timeout", "60s")
    await asyncio.sleep(0.3)

    async def one() -> Call:
        call = await env.ua.call(f"sip:service@127.0.0.1:{port}", remote=("127.0.0.1", port), timeout=20)
        await asyncio.sleep(0.3)
        await env.ua.hangup(call.call_id)
        return call

    calls = await asyncio.gather(*(one() for _ in range(n)))
    await passed(s, n, timeout=90)
    for c in calls:
        assert c.direction.value == "outbound" and c.media and c.media.codec.name == "PCMU"
        assert (c.hangup_cause, c.hangup_by) == ("normal_clearing", "api")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_outbound_call_remote_hangs_up_and_rejections(env: Env, transport: str) -> None:
    port = free_port()
    extra = ("-t", "t1") if transport == "tcp" else ()
    s = await sipp("-sf", str(SCENARIOS / "uas_answer.xml"), "-i", "127.0.0.1", "-p", str(port), "-m", "1",
                   "-timeout", "30s", *extra)
    await asyncio.sleep(0.3)
    call = await env.ua.call(f"sip:svc@127.0.0.1:{port}", remote=("127.0.0.1", port), transport=transport)
    assert call.state is CallState.ANSWERED and env.registry.by_sip_call_id(call.sip_call_id) is call
    await env.ua.hangup(call.call_id)
    await passed(s, 1)
    # nobody listening: the UDP INVITE is retransmitted until the call() timeout cancels it
    with pytest.raises(CallFailed) as err:
        await env.ua.call("sip:x@127.0.0.1", remote=("127.0.0.1", free_port()), timeout=1.0)
    assert err.value.code == 408


async def test_stop_hangs_up_answered_calls() -> None:
    e = await make_env()
    s = await sipp(*e.uac("uac_wait_bye.xml"))
    call = await wait_until(lambda: next((c for c in e.calls() if c.state is CallState.ANSWERED), None))
    await e.ua.stop()
    await passed(s, 1)
    assert (call.hangup_cause, call.hangup_by) == ("server_shutdown", "server")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_outbound_call_callee_hangs_up(env: Env, transport: str) -> None:
    port = free_port()
    extra = ("-t", "t1") if transport == "tcp" else ()
    s = await sipp("-sf", str(SCENARIOS / "uas_bye.xml"), "-i", "127.0.0.1", "-p", str(port), "-m", "1",
                   "-d", "300", "-timeout", "30s", *extra)
    await asyncio.sleep(0.3)
    call = await env.ua.call(f"sip:svc@127.0.0.1:{port}", remote=("127.0.0.1", port), transport=transport)
    assert call.media and call.media.codec.name == "PCMU" and call.media.telephone_event_pt == 101
    await passed(s, 1)
    await wait_until(lambda: not call.is_active, 5)
    assert (call.hangup_cause, call.hangup_by) == ("normal_clearing", "callee")
