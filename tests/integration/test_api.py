"""The native HTTP API against a live call placed by our own UAC: shapes, errors, auth, metrics."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from mediasrv.calls.controller import SipSettings, SipUserAgent
from mediasrv.calls.registry import Call, CallRegistry
from mediasrv.rtp.probe import CaptureMedia
from tests.support.server import Running, start_server, wait_until

pytestmark = pytest.mark.integration


async def _dial(r: Running) -> tuple[SipUserAgent, CaptureMedia, Call, str]:
    media = CaptureMedia()
    uac = SipUserAgent(SipSettings(host="127.0.0.1", port=0), CallRegistry(), media)
    await uac.start()
    call = await uac.call(f"sip:api@127.0.0.1:{r.sip_port}", remote=("127.0.0.1", r.sip_port))
    server_call = await wait_until(lambda: r.server.registry.by_sip_call_id(call.sip_call_id), 5, "server call")
    return uac, media, call, server_call.call_id


async def test_call_resource_and_errors(running: Running):
    r = running
    uac, media, uac_call, call_id = await _dial(r)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{r.http}/v1/calls") as resp:
                assert resp.status == 200
                assert [c["call_id"] for c in (await resp.json())["calls"]] == [call_id]
            async with s.get(f"{r.http}/v1/calls/{call_id}") as resp:
                call = await resp.json()
            assert call["state"] == "answered" and call["direction"] == "inbound"
            assert call["codec"] == "PCMU" and call["remote_rtp"].startswith("127.0.0.1:")
            assert call["sip_call_id"] and call["current_playback"] is None and call["queued_playbacks"] == []
            assert "packets_sent" in call and "packets_received" in call

            cases = [
                ("get", "/v1/calls/nope", None, 404, "call_not_found"),
                ("post", "/v1/calls/nope/playbacks", {"url": "http://x/a.wav"}, 404, "call_not_found"),
                ("post", f"/v1/calls/{call_id}/playbacks", b"{not json", 400, "bad_json"),
                ("post", f"/v1/calls/{call_id}/playbacks", b"[1,2]", 400, "bad_json"),
                ("post", f"/v1/calls/{call_id}/playbacks", {}, 400, "missing_field"),
                ("post", f"/v1/calls/{call_id}/playbacks", {"url": "ftp://x/a.wav"}, 400, "invalid_field"),
                ("post", f"/v1/calls/{call_id}/playbacks", {"url": "http://x/a.wav", "loop": 0}, 422, "out_of_range"),
                ("post", f"/v1/calls/{call_id}/playbacks", {"url": "http://x/a.wav", "loop": 101}, 422, "out_of_range"),
                ("post", f"/v1/calls/{call_id}/playbacks", {"url": "http://x/a.wav", "loop": "x"}, 400, "invalid_field"),
                ("get", "/v1/playbacks/nope", None, 404, "playback_not_found"),
                ("delete", "/v1/playbacks/nope", None, 404, "playback_not_found"),
                ("delete", f"/v1/calls/{call_id}/playbacks?stop=some", None, 400, "invalid_field"),
                ("post", f"/v1/calls/{call_id}/answer", None, 409, "already_answered"),
                ("get", "/v1/nothing-here", None, 404, "not_found"),
            ]
            for method, path, body, status, code in cases:
                kwargs = {"data": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
                async with s.request(method, f"{r.http}{path}", **kwargs) as resp:
                    got = await resp.json()
                    assert (resp.status, got["error"]["code"]) == (status, code), (method, path, got)

            async with s.delete(f"{r.http}/v1/calls/{call_id}") as resp:
                assert resp.status == 200
            await wait_until(lambda: not r.server.registry.get(call_id).is_active, 5, "call ended")
            await wait_until(lambda: not uac_call.is_active, 5, "the UAC saw our BYE")
            assert uac_call.hangup_by == "callee"
            async with s.delete(f"{r.http}/v1/calls/{call_id}") as resp:
                assert resp.status == 409 and (await resp.json())["error"]["code"] == "call_ended"
            async with s.get(f"{r.http}/metrics") as resp:
                text = await resp.text()
            assert "mediasrv_active_calls 0" in text
            assert "mediasrv_rtp_packets_sent_total" in text
            async with s.get(f"{r.http}/openapi.json") as resp:
                spec = await resp.json()
            assert spec["openapi"].startswith("3.") and "/v1/calls/{call_id}/playbacks" in spec["paths"]
            assert set(spec["x-dialects"]) == {"telnyx", "plivo", "acs", "bandwidth"}
            for dialect in spec["x-dialects"].values():  # every listed route is served
                for route in dialect["routes"]:
                    assert any(getattr(res, "canonical", "") == route["path"] or route["path"].startswith("/calling/")
                               for res in r.server.app.router.resources()), route
            async with s.get(f"{r.http}/healthz") as resp:
                assert (await resp.json())["status"] == "ok"
    finally:
        await uac.stop()
        media.close_all()


async def test_bearer_token(tmp_path):
    r = await start_server(tmp_path, api_token="s3cret")
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{r.http}/v1/calls") as resp:
                assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"
            async with s.get(f"{r.http}/v1/calls", headers={"Authorization": "Bearer wrong"}) as resp:
                assert resp.status == 401
            async with s.get(f"{r.http}/v1/calls", headers={"Authorization": "Bearer s3cret"}) as resp:
                assert resp.status == 200
            async with s.get(f"{r.http}/healthz") as resp:
                assert resp.status == 200
    finally:
        await r.server.stop()


async def test_ring_then_answer_by_api(tmp_path):
    r = await start_server(tmp_path, auto_answer=False)
    media = CaptureMedia()
    uac = SipUserAgent(SipSettings(host="127.0.0.1", port=0), CallRegistry(), media)
    await uac.start()
    try:
        dialing = asyncio.create_task(uac.call(f"sip:ring@127.0.0.1:{r.sip_port}", remote=("127.0.0.1", r.sip_port)))
        ringing = await wait_until(lambda: next(iter(r.server.registry.active()), None), 5, "ringing call")
        await asyncio.sleep(0.2)
        assert not dialing.done() and ringing.state.value == "ringing"
        async with aiohttp.ClientSession() as s:
            # early_media=false: a play on a ringing call is refused (by default it would pre-answer, 183)
            async with s.post(f"{r.http}/v1/calls/{ringing.call_id}/playbacks",
                              json={"url": "http://x/a.wav", "early_media": False}) as resp:
                assert resp.status == 409 and (await resp.json())["error"]["code"] == "call_not_answered"
            async with s.post(f"{r.http}/v1/calls/{ringing.call_id}/playbacks",
                              json={"url": "http://x/a.wav", "early_media": "yes"}) as resp:
                assert resp.status == 400 and (await resp.json())["error"]["details"]["field"] == "early_media"
            assert not ringing.early_media
            async with s.post(f"{r.http}/v1/calls/{ringing.call_id}/early_media") as resp:
                assert resp.status == 200 and (await resp.json())["early_media"] is True
            # our own UAC takes the 183's SDP as early media, before the answer
            await wait_until(lambda: any(c.early_media for c in uac.registry.active()), 5, "UAC early media")
            assert not dialing.done() and ringing.state.value == "ringing"
            async with s.post(f"{r.http}/v1/calls/{ringing.call_id}/answer") as resp:
                assert resp.status == 200
        call = await asyncio.wait_for(dialing, 5)
        assert call.state.value == "answered" and ringing.state.value == "answered"
        await uac.hangup(call.call_id)
        await wait_until(lambda: not ringing.is_active, 5, "hangup")
        assert ringing.hangup_by == "caller"
    finally:
        await uac.stop()
        media.close_all()
        await r.server.stop()


async def test_events_stream_over_sse(running: Running):
    r = running
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{r.http}/v1/events", headers={"Accept": "text/event-stream"}) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
            uac, media, uac_call, call_id = await _dial(r)
            try:
                await uac.hangup(uac_call.call_id)
                seen: list[tuple[str, str]] = []
                while len(seen) < 3:
                    line = (await asyncio.wait_for(resp.content.readline(), 5)).decode().strip()
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        seen.append((kind, json.loads(line[6:])["call_id"]))
            finally:
                await uac.stop()
                media.close_all()
    assert seen == [("call.initiated", call_id), ("call.answered", call_id), ("call.hangup", call_id)]
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{r.http}/v1/events?call_id={call_id}", headers={"Accept": "application/json"}) as resp:
            history = [e["type"] for e in (await resp.json())["events"]]
    assert history == ["call.initiated", "call.answered", "call.hangup"]
