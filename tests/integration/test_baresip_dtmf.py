"""baresip presses keys into a call: its console (the ``cons`` module, on a UDP port) types the digits,
baresip sends them as RFC 4733 telephone-events; mediasrv reports each once, with its duration."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.baresip import baresip_config, stop_process
from tests.support.paths import require
from tests.support.ports import free_tcp_udp_port
from tests.support.server import Hooks, Running, start_server, wait_until

pytestmark = pytest.mark.integration


async def test_baresip_sends_rfc4733_digits(tmp_path: Path, webhooks: Hooks) -> None:
    baresip = require("baresip")
    r: Running = await start_server(tmp_path, webhook_url=webhooks.url)
    cfg, _ = baresip_config(tmp_path / "baresip", tmp_path / "rec", tmp_path / "silence.wav")
    cons_port = free_tcp_udp_port()
    with (cfg / "config").open("a") as f:
        # net_interface 127.0.0.1: else baresip's SDP names another interface's address while its RTP leaves
        # from 127.0.0.1, and mediasrv drops packets that do not come from the negotiated address
        f.write(f"net_interface 127.0.0.1\nmodule cons.so\ncons_listen 127.0.0.1:{cons_port}\n")
    log = open(tmp_path / "baresip.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [baresip, "-f", str(cfg), "-t", "40", "-e", f"/dial sip:keys@127.0.0.1:{r.sip_port}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    console = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        call = await wait_until(
            lambda: next((c for c in r.server.registry.active() if c.state.value == "answered"), None),
            timeout=15, what="baresip's call to be answered",
        )
        assert call.media.telephone_event_pt is not None, "baresip offers telephone-event"
        await asyncio.sleep(0.5)
        # the console has no key release: baresip ends a digit's event when the next key is pressed
        # (the last one, "0", is still being sent when the test ends)
        for key in "15#0":
            console.sendto(key.encode(), ("127.0.0.1", cons_port))
            await asyncio.sleep(0.3)
        assert call.media.remote_addr[0] == "127.0.0.1", call.media.remote_addr
        await wait_until(lambda: len([e for e in webhooks.events if e["type"] == "dtmf.received"]) >= 3,
                         timeout=5, what="three dtmf.received")
        await asyncio.sleep(0.5)
    finally:
        console.close()
        stop_process(proc)
        log.close()
        await r.server.stop()
    got = [e["data"] for e in webhooks.events if e["type"] == "dtmf.received"]
    assert [g["digit"] for g in got][:3] == ["1", "5", "#"], (got, (tmp_path / "baresip.log").read_text()[-2000:])
    assert all(g["method"] == "rfc4733" and g["duration_ms"] > 0 for g in got), got
