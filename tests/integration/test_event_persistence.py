"""Persisted events against a real ``python -m mediasrv serve`` process: webhooks owed when the server is
killed (SIGKILL by PID) or stopped (SIGTERM) arrive exactly once after a restart on the same data dir, in
per-call order, native and Telnyx-signed (verified by the official SDK); SSE resumes across the restart;
a data dir whose journal cannot be written (file-size limit: EFBIG) keeps delivering from memory."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import telnyx
from aiohttp import web

from mediasrv.calls.controller import SipSettings, SipUserAgent
from mediasrv.calls.registry import CallRegistry
from mediasrv.demo import free_port_pair
from mediasrv.events.journal import decode_line, iter_lines
from mediasrv.rtp.probe import CaptureMedia
from tests.support.paths import REPO
from tests.support.ports import free_tcp_udp_port
from tests.support.server import start_server, wait_until

pytestmark = pytest.mark.integration

API_KEY = "KEY0123_mediasrv_test"


@dataclass
class Receiver:
    """A real aiohttp webhook receiver on a fixed port; it can be down (nothing listening) or answer 500."""

    port: int
    status: int = 204
    native: list[dict[str, Any]] = field(default_factory=list)  # accepted (2xx) native webhooks
    telnyx_raw: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # accepted Telnyx ones, raw
    refused: int = 0
    runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def up(self) -> None:
        async def native(request: web.Request) -> web.Response:
            if self.status >= 300:
                self.refused += 1
            else:
                self.native.append(await request.json())
            return web.Response(status=self.status)

        async def telnyx_hook(request: web.Request) -> web.Response:
            if self.status >= 300:
                self.refused += 1
            else:
                self.telnyx_raw.append(((await request.read()).decode(), dict(request.headers)))
            return web.Response(status=self.status)

        app = web.Application()
        app.router.add_post("/hook", native)
        app.router.add_post("/telnyx", telnyx_hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


def unused_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    proc: asyncio.subprocess.Process
    http: str
    sip_port: int


async def serve(data_dir: Path, receiver: Receiver, log: Path, fsize_limit: int | None = None,
                **env: str) -> Proc:
    """``python -m mediasrv serve`` on free ports; returns once it printed its HTTP address."""
    sip_port = free_tcp_udp_port()
    lo = free_port_pair()
    args = [sys.executable, "-m", "mediasrv", "serve", "--sip", f"127.0.0.1:{sip_port}", "--http", "127.0.0.1:0",
            "--rtp-ports", f"{lo}-{lo + 40}", "--data-dir", str(data_dir), "--webhook-url", f"{receiver.base}/hook"]
    environ = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1",
               "MEDIASRV_TELNYX_API_KEY": API_KEY, "MEDIASRV_TELNYX_WEBHOOK_URL": f"{receiver.base}/telnyx", **env}

    def limit_file_size() -> None:  # runs in the child only; Python ignores SIGXFSZ, so writes fail with EFBIG
        if fsize_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))

    with open(log, "ab") as err:
        proc = await asyncio.create_subprocess_exec(*args, env=environ, stdout=asyncio.subprocess.PIPE, stderr=err,
                                                    preexec_fn=limit_file_size)
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    except TimeoutError:
        proc.kill()
        raise AssertionError(f"server did not start: {log.read_text()[-2000:]}") from None
    assert "HTTP http://" in line, (line, log.read_text()[-2000:])
    return Proc(proc, line.split("HTTP ", 1)[1].strip(), sip_port)


async def stop(p: Proc, sig: signal.Signals) -> int:
    os.kill(p.proc.pid, sig)  # by PID: only the process this test started
    return await asyncio.wait_for(p.proc.wait(), 30)


async def place_calls(p: Proc, n: int) -> list[str]:
    """n calls from our own UAC, each answered and hung up; returns the server's call ids."""
    media = CaptureMedia()
    uac = SipUserAgent(SipSettings(host="127.0.0.1", port=0), CallRegistry(), media)
    await uac.start()
    sip_ids = []
    try:
        for i in range(n):
            call = await uac.call(f"sip:persist{i}@127.0.0.1:{p.sip_port}", remote=("127.0.0.1", p.sip_port))
            sip_ids.append(call.sip_call_id)
            await uac.hangup(call.call_id)
    finally:
        await uac.stop()
        media.close_all()

    async def history() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as s, s.get(f"{p.http}/v1/events",
                                                      headers={"Accept": "application/json"}) as resp:
            return (await resp.json())["events"]

    events: list[dict[str, Any]] = []
    for _ in range(250):
        events = await history()
        if sum(e["type"] == "call.hangup" for e in events) >= n:
            break
        await asyncio.sleep(0.02)
    ids = [e["call_id"] for e in events if e["type"] == "call.initiated" and e["data"].get("sip_call_id") in sip_ids]
    assert len(ids) == n, events
    return ids


async def events_of(p: Proc) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(f"{p.http}/v1/events", headers={"Accept": "application/json"}) as r:
        return (await r.json())["events"]


def journaled(data_dir: Path) -> list[dict[str, Any]]:
    out = []
    for seg in sorted((data_dir / "events").glob("*.jsonl")):
        for line, _ in iter_lines(seg.read_bytes()):
            rec = decode_line(line)
            if rec is not None:
                out.append(rec)
    return out


async def telnyx_verified(p: Proc, receiver: Receiver) -> list[Any]:
    client = telnyx.Telnyx(api_key=API_KEY, base_url=f"{p.http}/v2")
    body = await asyncio.to_thread(client.get, "/public_key", cast_to=object)
    key = body["data"]["public_key"]
    return [client.webhooks.unwrap(raw, headers=headers, key=key) for raw, headers in receiver.telnyx_raw]


def assert_once_in_order(receiver: Receiver, expected: list[dict[str, Any]], telnyx_events: list[Any]) -> None:
    want_ids = sorted(e["id"] for e in expected)
    assert sorted(e["id"] for e in receiver.native) == want_ids  # every owed webhook, exactly once
    for call_id in {e["call_id"] for e in expected}:
        mine = [e for e in expected if e["call_id"] == call_id]
        got = [e for e in receiver.native if e["call_id"] == call_id]
        assert [e["seq"] for e in got] == [e["seq"] for e in mine]  # per-call order
        assert [e["type"] for e in got] == ["call.initiated", "call.answered", "call.hangup"]
        tel = [e for e in telnyx_events if e.data.payload.call_control_id == call_id]
        assert [e.data.event_type for e in tel] == ["call.initiated", "call.answered", "call.hangup"]
    # Telnyx ids are the event ids (as UUIDs): stable across the restart, so receivers can dedupe
    assert sorted(e.data.id.replace("-", "") for e in telnyx_events) == want_ids


async def test_sigkill_with_receiver_down_then_restart_delivers_each_once_and_sse_resumes(tmp_path):
    data, log = tmp_path / "data", tmp_path / "server.log"
    receiver = Receiver(unused_tcp_port())  # down: connection refused
    p1 = await serve(data, receiver, log)
    try:
        call_ids = await place_calls(p1, 2)
        expected = [e for e in await events_of(p1) if e["call_id"] in call_ids]
        assert len(expected) == 6
        # the journal thread has the events and both sinks' deliveries on disk (no fsync needed for SIGKILL)
        await wait_until(lambda: sum(r.get("t") == "d" for r in journaled(data)) >= 12, 5, "deliveries journaled")
    finally:
        assert await stop(p1, signal.SIGKILL) == -signal.SIGKILL

    await receiver.up()
    p2 = await serve(data, receiver, log)
    try:
        await wait_until(lambda: len(receiver.native) >= 6 and len(receiver.telnyx_raw) >= 6, 15, "owed webhooks")
        await asyncio.sleep(0.5)  # room for any duplicate to show up
        assert_once_in_order(receiver, expected, await telnyx_verified(p2, receiver))
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{p2.http}/healthz") as resp:
                health = await resp.json()
            assert health["events_journal"]["state"] == "ok" and health["events_journal"]["restored_deliveries"] == 12

            # SSE resume across the restart: Last-Event-ID of the first event -> the other five from the
            # previous run, then live events of this run with seq continuing after them
            first = min(e["seq"] for e in expected)
            async with s.get(f"{p2.http}/v1/events", headers={"Accept": "text/event-stream",
                                                               "Last-Event-ID": str(first)}) as resp:
                seen: list[tuple[int, str]] = []  # (SSE id, event id)

                async def read_until(n: int) -> None:
                    sse_id = -1
                    while len(seen) < n:
                        line = (await asyncio.wait_for(resp.content.readline(), 10)).decode().strip()
                        if line.startswith("id: "):
                            sse_id = int(line[4:])
                        elif line.startswith("data: "):
                            event = json.loads(line[6:])
                            assert event["seq"] == sse_id
                            seen.append((sse_id, event["id"]))

                await read_until(5)
                assert [i for _, i in seen] == [e["id"] for e in sorted(expected, key=lambda e: e["seq"])][1:]
                new_call = (await place_calls(p2, 1))[0]
                await read_until(8)
            assert [s_ for s_, _ in seen[5:]] == sorted(s_ for s_, _ in seen[5:])
            assert min(s_ for s_, _ in seen[5:]) > max(e["seq"] for e in expected)  # seq kept increasing
            async with s.get(f"{p2.http}/v1/events", params={"since": str(first), "call_id": new_call},
                             headers={"Accept": "application/json"}) as resp:
                assert [e["type"] for e in (await resp.json())["events"]] == [
                    "call.initiated", "call.answered", "call.hangup"]
            async with s.get(f"{p2.http}/v1/events", params={"since": "99999999"},
                             headers={"Accept": "application/json"}) as resp:
                assert (await resp.json())["events"] == []  # newer than anything: nothing to replay, no error
            async with s.get(f"{p2.http}/v1/events", params={"since": "x"},
                             headers={"Accept": "application/json"}) as resp:
                assert resp.status == 400 and (await resp.json())["error"]["details"]["field"] == "since"
    finally:
        assert await stop(p2, signal.SIGTERM) == 0
        await receiver.down()


async def test_graceful_stop_while_receiver_answers_500_then_restart(tmp_path):
    data, log = tmp_path / "data", tmp_path / "server.log"
    receiver = Receiver(unused_tcp_port(), status=500)
    await receiver.up()
    p1 = await serve(data, receiver, log)
    try:
        call_ids = await place_calls(p1, 2)
        expected = [e for e in await events_of(p1) if e["call_id"] in call_ids]
        await wait_until(lambda: receiver.refused >= 4, 5, "first attempts refused")
    finally:
        assert await stop(p1, signal.SIGTERM) == 0  # graceful: the queues are cancelled, the journal flushed
    assert receiver.native == [] and receiver.telnyx_raw == []

    receiver.status = 204
    p2 = await serve(data, receiver, log)
    try:
        await wait_until(lambda: len(receiver.native) >= 6 and len(receiver.telnyx_raw) >= 6, 15, "owed webhooks")
        await asyncio.sleep(0.5)
        # signatures are made per attempt: the SDK's unwrap checks them and their (fresh) timestamp
        assert_once_in_order(receiver, expected, await telnyx_verified(p2, receiver))
    finally:
        assert await stop(p2, signal.SIGTERM) == 0
        await receiver.down()
    # after a clean run nothing is owed: a third start re-sends nothing
    p3 = await serve(data, receiver, log)
    try:
        async with aiohttp.ClientSession() as s, s.get(f"{p3.http}/healthz") as resp:
            assert (await resp.json())["events_journal"]["restored_deliveries"] == 0
    finally:
        assert await stop(p3, signal.SIGTERM) == 0


async def test_journal_write_failure_keeps_serving_from_memory(tmp_path):
    """RLIMIT_FSIZE makes every write past 3 kB fail with EFBIG, as a full disk fails with ENOSPC."""
    data, log = tmp_path / "data", tmp_path / "server.log"
    receiver = Receiver(unused_tcp_port())
    await receiver.up()
    p = await serve(data, receiver, log, fsize_limit=3000)
    try:
        call_ids = await place_calls(p, 1)  # its events and deliveries are more than 3 kB: the writes fail
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{p.http}/healthz") as resp:
                health = await resp.json()
            assert health["status"] == "ok"
            assert health["events_journal"]["state"] == "failing", health
            assert "File too large" in health["events_journal"]["error"]
            async with s.get(f"{p.http}/metrics") as resp:
                text = await resp.text()
            assert "mediasrv_events_journal_up 0" in text
            assert 'mediasrv_events_journal_write_errors_total 0.0' not in text
            assert 'mediasrv_events_journal_write_errors_total ' in text
        call_ids += await place_calls(p, 2)  # calls go on; so do their webhooks
        await wait_until(lambda: len(receiver.native) >= 9 and len(receiver.telnyx_raw) >= 9, 10, "webhooks")
        assert sorted({e["call_id"] for e in receiver.native}) == sorted(call_ids)
    finally:
        assert await stop(p, signal.SIGTERM) == 0
        await receiver.down()
    assert "event journal: writing to" in log.read_text()


async def test_sse_resume_id_from_a_lost_journal_still_gets_live_events(tmp_path):
    """A client whose Last-Event-ID is newer than anything here (the data dir was wiped) is not starved."""

    r = await start_server(tmp_path)
    try:
        target = Proc(proc=None, http=r.http, sip_port=r.sip_port)  # type: ignore[arg-type]
        async with aiohttp.ClientSession() as s, s.get(
                f"{r.http}/v1/events", headers={"Accept": "text/event-stream", "Last-Event-ID": "99999999"}) as resp:
            call_id = (await place_calls(target, 1))[0]
            kinds = []
            while len(kinds) < 3:
                line = (await asyncio.wait_for(resp.content.readline(), 10)).decode().strip()
                if line.startswith("data: ") and json.loads(line[6:])["call_id"] == call_id:
                    kinds.append(json.loads(line[6:])["type"])
        assert kinds == ["call.initiated", "call.answered", "call.hangup"]
    finally:
        await r.server.stop()
