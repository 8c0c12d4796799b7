"""Media that ends: a call whose peer sends no RTP is hung up (cause rtp_timeout, BYE, webhook says so);
a held call gets the longer hold timeout."""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

from tests.support.rawsip import RawSip, offer
from tests.support.server import Hooks, start_server


async def test_silent_peer_is_hung_up_with_cause_rtp_timeout(tmp_path: Path, webhooks: Hooks) -> None:
    r = await start_server(tmp_path, webhook_url=webhooks.url, rtp_timeout_s=1.0, rtp_hold_timeout_s=30.0)
    sip = RawSip(r.sip_port)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    body = offer().replace("{rtp}", str(sink.getsockname()[1]))
    try:
        ids = {}
        for name, extra in (("talking", ""), ("held", "a=sendonly\r\n")):
            call_id = uuid.uuid4().hex
            sip.send("INVITE", call_id, f"z9hG4bK-{name}", body=body + extra)
            status, tag, _ = await sip.final(call_id, "INVITE")
            assert status == 200
            sip.send("ACK", call_id, f"z9hG4bK-ack-{name}", to_tag=tag)
            call = r.server.registry.by_sip_call_id(call_id)
            assert call is not None
            ids[name] = call.call_id
        # the server's BYE arrives on our socket, and the webhook names the cause
        loop = asyncio.get_running_loop()
        data, _ = await asyncio.wait_for(loop.sock_recvfrom(sip.sock, 65535), 6.0)
        assert data.startswith(b"BYE ")
        hangup = await webhooks.wait_for(lambda e: e["type"] == "call.hangup", 6.0)
        assert hangup["call_id"] == ids["talking"]
        assert (hangup["data"]["hangup_cause"], hangup["data"]["hangup_by"]) == ("rtp_timeout", "server")
        await asyncio.sleep(1.0)
        held = r.server.registry.get(ids["held"])
        assert held is not None and held.is_active  # on hold: 30 s, not 1 s
        assert r.server.media.metrics()["media_events"]["rtp_timeouts"] == 1
    finally:
        sip.close()
        sink.close()
        await r.server.stop()
