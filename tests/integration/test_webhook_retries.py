"""The webhook retry schedule comes from the configuration (MEDIASRV_WEBHOOK_*), for every sink."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from mediasrv.config import ConfigError, load_settings
from tests.support.ports import free_tcp_udp_port
from tests.support.server import serve_app, start_server, wait_until

pytestmark = pytest.mark.integration


async def test_configured_attempts_and_backoff(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[float, str, str]] = []  # (loop time, event type, attempt header)

    async def refuse(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((asyncio.get_running_loop().time(), body["type"], request.headers.get("X-Mediasrv-Attempt", "")))
        return web.Response(status=503)

    app = web.Application()
    app.router.add_post("/hook", refuse)
    runner, base = await serve_app(app)
    r = await start_server(tmp_path, webhook_url=f"{base}/hook", webhook_max_attempts=3, webhook_backoff_s=0.2)
    try:
        # an outbound call to a port nobody answers: call.initiated now, call.hangup at its timeout
        async with aiohttp.ClientSession() as s, s.post(f"{r.http}/v1/calls", json={
                "to": f"sip:nobody@127.0.0.1:{free_tcp_udp_port()}", "timeout_s": 1}) as resp:
            assert resp.status == 201, await resp.text()
        await wait_until(lambda: sum(t == "call.hangup" for _, t, _ in seen) == 3, 20, "three hangup attempts")
        await asyncio.sleep(1.0)  # and no fourth
        for kind in ("call.initiated", "call.hangup"):
            attempts = [(t0, a) for t0, t, a in seen if t == kind]
            assert [a for _, a in attempts] == ["1", "2", "3"], seen
            gaps = [b[0] - a[0] for a, b in zip(attempts, attempts[1:])]
            assert gaps[0] >= 0.18 and gaps[1] >= 0.38, gaps  # 0.2 s, then doubled
        await wait_until(lambda: sum("webhook given up" in m.getMessage() for m in caplog.records) >= 2, 5, "logged")
        given_up = [m for m in caplog.records if m.getMessage().startswith("webhook given up: webhook call.hangup")]
        assert given_up and given_up[0].levelname == "WARNING"
        assert "HTTP 503 after 3 attempts" in given_up[0].getMessage() and given_up[0].call_id
        assert r.server.events.sink_settings().max_attempts == 3
        assert all(s.settings.max_attempts == 3 for s in r.server.events._sinks)
    finally:
        await r.server.stop()
        await runner.cleanup()


def test_bad_retry_settings_are_refused() -> None:
    for env in ({"MEDIASRV_WEBHOOK_MAX_ATTEMPTS": "0"}, {"MEDIASRV_WEBHOOK_TIMEOUT_S": "0"},
                {"MEDIASRV_WEBHOOK_BACKOFF_S": "-1"}):
        with pytest.raises(ConfigError):
            load_settings({}, env)
    assert load_settings({}, {"MEDIASRV_WEBHOOK_MAX_ATTEMPTS": "9"}).webhook_max_attempts == 9
