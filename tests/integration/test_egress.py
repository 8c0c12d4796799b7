"""Per-command callback URLs under the egress policy, on a live server with a SIPp call.

Telnyx ``webhook_url``, Plivo ``callback_url`` and ACS ``operationCallbackUri`` pointing at metadata
addresses, at an IPv4-mapped metadata address, at a name that resolves to refused loopback, and at
a receiver that answers 302 to a refused address: nothing connects (receivers count TCP
connections) and each delivery is recorded failed with its reason.  The configured webhook URL's
host is trusted by configuration and still receives.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mediasrv.demo import free_port_pair
from tests.support.acs import KEY as ACS_KEY
from tests.support.acs import signed_headers
from tests.support.paths import SCENARIOS
from tests.support.server import Running, start_server, wait_until
from tests.support.sipp import answered_calls, start_sipp

pytestmark = pytest.mark.integration

TELNYX_KEY = "KEY_egress_test"
PLIVO_ID, PLIVO_TOKEN = "MAXXXXXXXXXXXXXXXXXX", "plivo-egress-token"


@dataclass
class Receiver:
    """A real aiohttp receiver whose listening socket counts every TCP connection it accepts."""

    url: str = ""
    connections: int = 0
    requests: list[str] = field(default_factory=list)


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[Receiver, Receiver]]:
    """(configured receiver on 127.0.0.1 that can also answer 302, victim on 127.0.0.2 that must stay untouched)."""
    made: list[Any] = []
    victim, configured = Receiver(), Receiver()

    async def start(rec: Receiver, host: str, handler: Any) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        assert runner.server is not None
        handler_factory = runner.server

        def factory() -> Any:
            rec.connections += 1
            return handler_factory()

        srv = await asyncio.get_running_loop().create_server(factory, host, 0)
        made.append((srv, runner))
        rec.url = f"http://{host}:{srv.sockets[0].getsockname()[1]}"

    async def record(request: web.Request) -> web.Response:
        victim.requests.append(request.path)
        return web.Response(status=204)

    async def hooks(request: web.Request) -> web.Response:
        configured.requests.append(request.path_qs)
        if request.path == "/redirect":
            raise web.HTTPFound(f"{victim.url}/stolen")
        return web.Response(status=204)

    await start(victim, "127.0.0.2", record)
    await start(configured, "127.0.0.1", hooks)
    yield configured, victim
    for srv, runner in made:
        srv.close()
        await srv.wait_closed()
        await runner.cleanup()


def failures(r: Running) -> list[dict[str, Any]]:
    return r.server.events.failures()


async def test_per_command_callbacks_to_refused_addresses_never_connect(tmp_path: Path, receivers, audio_origin):
    configured, victim = receivers
    # loopback is NOT in webhook_allow_cidrs here: only the configured webhook host is trusted
    r = await start_server(tmp_path, webhook_url=f"{configured.url}/configured", webhook_allow_cidrs=[],
                           telnyx_api_key=TELNYX_KEY, plivo_auth_id=PLIVO_ID, plivo_auth_token=PLIVO_TOKEN,
                           acs_access_key=ACS_KEY, webhook_backoff_s=0.05)
    missing = audio_origin.add("gone.wav", b"not audio", "text/plain")  # a playback that ends at once (failed)
    localhost_url = victim.url.replace("127.0.0.2", "localhost")
    try:
        sipp = await start_sipp([f"127.0.0.1:{r.sip_port}", "-sf", str(SCENARIOS / "uac_wait_bye.xml"),
                                 "-i", "127.0.0.1", "-p", "0", "-mp", str(free_port_pair()), "-m", "1",
                                 "-timeout", "40s", "-timeout_error"])
        call = (await answered_calls(r, 1))[0]
        cid = call.call_id
        async with aiohttp.ClientSession() as s:
            telnyx = {"Authorization": f"Bearer {TELNYX_KEY}"}
            async with s.post(f"{r.http}/v2/calls/{cid}/actions/answer", headers=telnyx,
                              json={"webhook_url": "http://169.254.169.254/latest/meta-data/"}) as resp:
                assert resp.status == 200, await resp.text()
            async with s.post(f"{r.http}/v2/calls/{cid}/actions/playback_start", headers=telnyx,
                              json={"audio_url": missing}) as resp:
                assert resp.status == 200, await resp.text()

            plivo = {"Authorization": "Basic " + base64.b64encode(f"{PLIVO_ID}:{PLIVO_TOKEN}".encode()).decode()}
            for callback in ("http://192.0.0.192/latest/meta-data/", f"{configured.url}/redirect"):
                async with s.post(f"{r.http}/v1/Account/{PLIVO_ID}/Call/{cid}/Play/", headers=plivo,
                                  json={"urls": missing, "callback_url": callback}) as resp:
                    assert resp.status == 202, await resp.text()

            play_url = f"{r.http}/calling/callConnections/{cid}:play?api-version=2024-09-15"
            for callback in ("http://[::ffff:169.254.169.254]/metadata/instance", f"{localhost_url}/acs"):
                body = json.dumps({"playSources": [{"kind": "file", "file": {"uri": missing}}],
                                   "operationCallbackUri": callback}).encode()
                async with s.post(play_url, data=body, headers=signed_headers("POST", play_url, body, ACS_KEY)) as resp:
                    assert resp.status == 202, await resp.text()

            def reasons(fragment: str) -> list[str]:
                return [f["reason"] for f in failures(r) if fragment in f["url"]]

            await wait_until(lambda: reasons("169.254.169.254/latest") and reasons("192.0.0.192")
                             and reasons("ffff") and reasons("localhost") and reasons("/redirect"), 15,
                             "every refused delivery recorded")
            # the configured URL (trusted by configuration, on loopback) still receives the native events
            await wait_until(lambda: any(p.startswith("/configured") for p in configured.requests), 10,
                             "native webhooks")
            async with s.delete(f"{r.http}/v1/calls/{cid}") as resp:
                assert resp.status in (200, 202, 204), await resp.text()
        code, out = await sipp
        assert code == 0, out[-2000:]
        await r.server.events.drain(5)

        def only(fragment: str, expect: str) -> None:
            got = reasons(fragment)
            assert got and all(expect in reason for reason in got), (fragment, got)

        only("169.254.169.254/latest", "instance metadata")  # Telnyx webhook_url
        only("192.0.0.192", "Oracle Cloud metadata")  # Plivo callback_url (Python calls it global)
        only("ffff", "instance metadata")  # ACS operationCallbackUri, IPv4-mapped
        only("localhost", "loopback")  # a name: refused after DNS
        only("/redirect", "redirect not followed: HTTP 302")
        assert all(f["final"] for f in failures(r)), failures(r)  # no retries for refusals
        assert r.server.events.stats["refused"] >= 4
        assert victim.connections == 0 and victim.requests == []  # nothing ever reached 127.0.0.2 / localhost
        assert any(p == "/redirect" for p in configured.requests)  # the 302 itself came from the trusted host
        journal = (r.data_dir / "events").glob("*")
        text = "".join(p.read_text(errors="replace") for p in journal if p.is_file())
        assert "Oracle Cloud metadata" in text  # the outcome is journaled with its reason
    finally:
        await r.server.stop()


async def test_bxml_redirect_url_under_the_webhook_policy(tmp_path: Path, receivers):
    """Bandwidth: the configured answer URL is trusted; a redirectUrl from the API must pass the webhook list."""
    configured, victim = receivers
    r = await start_server(tmp_path, webhook_allow_cidrs=[], bandwidth_username="u", bandwidth_password="p",
                           bandwidth_account_id="acc", bandwidth_answer_url=f"{configured.url}/answer")
    try:
        sipp = await start_sipp([f"127.0.0.1:{r.sip_port}", "-sf", str(SCENARIOS / "uac_wait_bye.xml"),
                                 "-i", "127.0.0.1", "-p", "0", "-mp", str(free_port_pair()), "-m", "1",
                                 "-timeout", "40s", "-timeout_error"])
        call = (await answered_calls(r, 1))[0]
        await wait_until(lambda: any(p.startswith("/answer") for p in configured.requests), 10, "the answer callback")
        auth = {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
        async with aiohttp.ClientSession(headers=auth) as s:
            for target in (f"{victim.url}/bxml", "http://192.0.0.192/latest/", f"{configured.url}/redirect"):
                async with s.post(f"{r.http}/api/v2/accounts/acc/calls/{call.call_id}",
                                  json={"redirectUrl": target}) as resp:
                    assert resp.status == 200, await resp.text()
                await wait_until(lambda t=target: [e for e in r.server.events.history(call.call_id)
                                                   if e.type == "bxml.error" and e.data.get("url") == t], 10,
                                 f"the refusal of {target}")
            async with s.post(f"{r.http}/api/v2/accounts/acc/calls/{call.call_id}", json={"state": "completed"}):
                pass
        code, out = await sipp
        assert code == 0, out[-2000:]
        errors = {e.data["url"]: e.data["message"] for e in r.server.events.history(call.call_id)
                  if e.type == "bxml.error"}
        assert "not a public address" in errors[f"{victim.url}/bxml"]
        assert "Oracle Cloud metadata" in errors["http://192.0.0.192/latest/"]
        assert "redirect not followed" in errors[f"{configured.url}/redirect"]
        assert victim.connections == 0
    finally:
        await r.server.stop()
