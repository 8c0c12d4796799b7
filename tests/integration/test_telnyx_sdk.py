"""The official ``telnyx`` SDK against mediasrv with a live SIPp call: audio, responses, signed webhooks, errors.

The SDK is synchronous (httpx); it runs in a thread while the server runs in the test's loop.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import telnyx
from telnyx.types import (
    CallAnsweredWebhookEvent,
    CallBridgedWebhookEvent,
    CallHangupWebhookEvent,
    CallInitiatedWebhookEvent,
    CallPlaybackEndedWebhookEvent,
    CallPlaybackStartedWebhookEvent,
)
from telnyx.types.calls import ActionRejectResponse, ActionStartPlaybackResponse, ActionStopPlaybackResponse

from mediacodecs.g711 import ulaw_encode
from mediasrv.api.telnyx import TELNYX_KEY
from mediasrv.demo import free_port_pair
from mediasrv.rtp.probe import open_capture
from tests.support.audio import assert_hears, chirp_signal, expected_payload, wav_bytes
from tests.support.paths import REPO, SCENARIOS, readme_block
from tests.support.server import start_server, wait_until
from tests.support.sipp import answered_calls, assert_stream_continuity, sipp_play_args, start_sipp
from tests.support.talker import Talker, wall_time
from tests.support.telnyx import API_KEY, CS1, CS2, CS3, SignedHooks, public_key, sdk_client, telnyx_server

pytestmark = pytest.mark.integration


async def test_play_queue_content_stop_and_signed_webhooks(tmp_path, hooks: SignedHooks, audio_origin):
    r, client = await telnyx_server(tmp_path, hooks)
    hooks.refuse = 1  # the first webhook (call.initiated) is refused once: retried, still in order
    actions = client.calls.actions
    capture = await open_capture()
    try:
        a, b = chirp_signal(0.5, seed=2), chirp_signal(0.3, seed=3)[::-1].copy()
        url_a = audio_origin.add("a.wav", wav_bytes(a, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=6000))
        [call] = await answered_calls(r, 1)
        cid = call.call_id
        res = await asyncio.to_thread(actions.start_playback, cid, audio_url=url_a, loop=2, client_state=CS1,
                                      command_id="cmd-1", target_legs="self", cache_audio=True)
        assert isinstance(res, ActionStartPlaybackResponse) and res.data.result == "ok"
        # the SDK's retry (same command_id) returns the original result and plays nothing more
        again = await asyncio.to_thread(actions.start_playback, cid, audio_url=url_a, loop=2, client_state=CS1,
                                        command_id="cmd-1")
        assert again.data.result == "ok"
        content = base64.b64encode(wav_bytes(b, 8000)).decode()
        res2 = await asyncio.to_thread(actions.start_playback, cid, playback_content=content, audio_type="wav")
        assert res2.data.result == "ok"
        (r.data_dir / "media" / "b.wav").write_bytes(wav_bytes(b, 8000))
        res_m = await asyncio.to_thread(actions.start_playback, cid, media_name="b.wav")
        assert res_m.data.result == "ok"
        res3 = await asyncio.to_thread(actions.start_playback, cid, audio_url=url_a, loop="infinity",
                                       client_state=CS2)
        assert res3.data.result == "ok"
        await hooks.wait_for(lambda e: e.data.event_type == "call.playback.started"
                             and e.data.payload.client_state == CS2)
        await asyncio.sleep(0.3)
        stop = await asyncio.to_thread(actions.stop_playback, cid, stop="all", client_state=CS3, command_id="s-1")
        assert isinstance(stop, ActionStopPlaybackResponse) and stop.data.result == "ok"
        await hooks.wait_for(lambda e: e.data.event_type == "call.playback.ended"
                             and e.data.payload.status == "cancelled")
        code, out = await sipp
        assert code == 0, out[-3000:]
        await hooks.wait_for(lambda e: e.data.event_type == "call.hangup")
    finally:
        capture.close()
        await r.server.stop()

    assert audio_origin.hits["a.wav"] == 1, "cache_audio: fetched once for three plays"
    payload = capture.payload()
    ea, eb = expected_payload(a, "PCMU"), expected_payload(b, "PCMU")
    at = payload.find(ea + ea + eb + eb)
    assert at >= 0 and at % 160 == 0, "loop 2, the base64 content, the stored media: back to back, bit-exact"
    assert payload[at + 2 * len(ea) + 2 * len(eb):].startswith(ea[: 160 * 10]), "then the infinite loop"
    assert_stream_continuity(capture)

    events = hooks.events(cid)
    assert [e.data.event_type for e in events] == [
        "call.initiated", "call.answered",
        "call.playback.started", "call.playback.ended",  # cmd-1 once, although sent twice
        "call.playback.started", "call.playback.ended",  # the base64 content
        "call.playback.started", "call.playback.ended",  # the stored media
        "call.playback.started", "call.playback.ended",  # the infinite loop, stopped
        "call.hangup",
    ]
    kinds = [CallInitiatedWebhookEvent, CallAnsweredWebhookEvent] + [
        CallPlaybackStartedWebhookEvent, CallPlaybackEndedWebhookEvent] * 4 + [CallHangupWebhookEvent]
    assert all(isinstance(e, k) for e, k in zip(events, kinds, strict=True)), [type(e).__name__ for e in events]
    p = [e.data.payload for e in events]
    assert p[0].direction == "incoming" and p[0].state == "parked" and p[0].call_control_id == cid
    assert (p[2].media_url, p[2].client_state, p[2].overlay) == (url_a, CS1, False)
    assert (p[3].status, p[3].media_url) == ("completed", url_a)
    assert (p[4].media_url, p[4].media_name, p[4].client_state) == (None, None, CS1)  # state sticks to the call
    assert p[5].status == "completed"
    assert (p[6].media_name, p[6].media_url, p[7].status) == ("b.wav", None, "completed")
    assert (p[8].client_state, p[9].status, p[9].client_state) == (CS2, "cancelled", CS2)
    assert p[10].hangup_source == "caller" and p[10].hangup_cause == "normal_clearing"
    assert p[10].client_state == CS3
    # the envelope: attempt counter and where it went; each signed over "{timestamp}|{body}"
    first_body, first_headers = hooks.raw[0]
    assert '"meta": {"attempt": 2, "delivered_to": "' + hooks.url in first_body  # re-signed on the retry
    assert '"meta": {"attempt": 1, "delivered_to": "' + hooks.url in hooks.raw[1][0]
    assert {"telnyx-signature-ed25519", "telnyx-timestamp"} <= {k.lower() for k in first_headers}
    with pytest.raises(ValueError, match="Signature verification failed"):
        client.webhooks.unwrap(first_body.replace("parked", "bridged"), headers=first_headers, key=hooks.key)


async def test_ringing_answer_errors_replay_and_hangup(tmp_path, hooks: SignedHooks, audio_origin):
    r, client = await telnyx_server(tmp_path, hooks, auto_answer=False)
    actions = client.calls.actions
    url = audio_origin.add("long.wav", wav_bytes(chirp_signal(10.0), 8000))

    async def error_of(fn: Any, *args: Any, **kwargs: Any) -> telnyx.APIStatusError:
        with pytest.raises(telnyx.APIStatusError) as info:
            await asyncio.to_thread(fn, *args, **kwargs)
        return info.value

    try:
        sipp = await start_sipp([
            f"127.0.0.1:{r.sip_port}", "-sf", str(SCENARIOS / "uac_wait_bye.xml"), "-i", "127.0.0.1", "-p", "0",
            "-mp", str(free_port_pair()), "-m", "1", "-timeout", "40s", "-timeout_error",
        ])
        call = await wait_until(lambda: next(iter(r.server.registry.active()), None), 10, "the call to ring")
        cid = call.call_id

        e = await error_of(actions.start_playback, cid, audio_url=url)
        assert isinstance(e, telnyx.UnprocessableEntityError) and e.status_code == 422
        assert e.body["errors"][0]["code"] == "90034"

        # answer's webhook_url takes this call's webhooks from now on
        per_call = hooks.url + "?per-call=1"
        assert (await asyncio.to_thread(actions.answer, cid, client_state=CS1, webhook_url=per_call)).data.result == "ok"
        answered = await hooks.wait_for(lambda e: e.data.event_type == "call.answered")
        assert answered.data.payload.client_state == CS1
        assert hooks.raw[-1][0].endswith(f'"meta": {{"attempt": 1, "delivered_to": "{per_call}"}}}}')
        # a body too large for the server still answers in Telnyx's shape
        e = await error_of(actions.start_playback, cid, playback_content="A" * (2 << 20), audio_type="wav")
        assert e.status_code == 413 and e.body["errors"][0]["code"] == "10015"

        e = await error_of(actions.start_playback, "v3:nobody:0000", audio_url=url)
        assert isinstance(e, telnyx.UnprocessableEntityError)
        assert e.body["errors"][0]["code"] == "90015"
        assert e.body["errors"][0]["source"] == {"pointer": "/call_control_id"}
        for loop, code in ((101, "10033"), (0, "10033"), ("forever", "10032")):
            e = await error_of(actions.start_playback, cid, audio_url=url, loop=loop)
            assert isinstance(e, telnyx.UnprocessableEntityError), loop
            err = e.body["errors"][0]
            assert (err["code"], err["source"]["pointer"]) == (code, "/loop") and "loop" in err["detail"]
        e = await error_of(actions.start_playback, cid)
        assert e.status_code == 422 and e.body["errors"][0]["code"] == "10004"
        e = await error_of(actions.start_playback, cid, audio_url=url, target_legs="sideways")
        assert e.body["errors"][0]["code"] == "10032" and e.body["errors"][0]["source"]["pointer"] == "/target_legs"
        assert "Error code: 422" in e.message

        # wrong credentials: 401, and the answer is the same whether or not the call exists
        bad = sdk_client(r, api_key="KEY_wrong")
        e1 = await error_of(bad.calls.actions.start_playback, cid, audio_url=url)
        e2 = await error_of(bad.calls.actions.start_playback, "v3:nobody:0000", audio_url=url)
        assert isinstance(e1, telnyx.AuthenticationError) and e1.status_code == 401
        assert e1.body == e2.body and e1.body["errors"][0]["code"] == "10009"

        # sources that cannot play: Telnyx's file_not_found and failed, with the reason in status_detail
        page = audio_origin.add("page.wav", b"<html><body>" + b"x" * 500 + b"</body></html>", "text/html")
        await asyncio.to_thread(actions.start_playback, cid, audio_url=f"{audio_origin.base}/missing.wav")
        await asyncio.to_thread(actions.start_playback, cid, audio_url=page)
        await asyncio.to_thread(actions.start_playback, cid, media_name="not-stored.wav")
        await wait_until(lambda: hooks.types(cid).count("call.playback.ended") == 3, 10, "three failed playbacks")
        failed = [e.data.payload for e in hooks.events(cid) if e.data.event_type == "call.playback.ended"]
        assert [p.status for p in failed] == ["file_not_found", "failed", "file_not_found"]
        assert "404" in failed[0].status_detail and "text/html" in failed[1].status_detail
        assert failed[2].media_name == "not-stored.wav" and failed[2].media_url is None

        # a replayed command_id: the original result, no second playback
        results = await asyncio.gather(*(asyncio.to_thread(actions.start_playback, cid, audio_url=url,
                                                            command_id="once") for _ in range(3)))
        assert [res.data.result for res in results] == ["ok"] * 3  # sent at once: still one playback
        await hooks.wait_for(lambda e: e.data.event_type == "call.playback.started")
        current, queued = r.server.media.playbacks_for(cid)
        assert current is not None and queued == []
        # cache_audio (default true) kept it; cache_audio=false fetches it again
        await asyncio.to_thread(actions.start_playback, cid, audio_url=url)
        await asyncio.to_thread(actions.start_playback, cid, audio_url=url, cache_audio=False)
        await wait_until(lambda: audio_origin.hits.get("long.wav") == 2, 5, "a second fetch")

        assert (await asyncio.to_thread(actions.hangup, cid, client_state=CS2)).data.result == "ok"
        hangup = await hooks.wait_for(lambda e: e.data.event_type == "call.hangup")
        ended = await hooks.wait_for(lambda e: e.data.event_type == "call.playback.ended"
                                     and e.data.payload.status == "call_hangup")
        code, out = await sipp
        assert code == 0, out[-3000:]

        e = await error_of(actions.start_playback, cid, audio_url=url)
        assert isinstance(e, telnyx.UnprocessableEntityError) and e.body["errors"][0]["code"] == "90018"
        assert e.body["errors"][0]["title"] == "Call has already ended"
        # the replay after the end still gets the original answer
        assert (await asyncio.to_thread(actions.start_playback, cid, audio_url=url, command_id="once")).data.result == "ok"
    finally:
        await r.server.stop()
    assert hangup.data.payload.hangup_source == "callee" and hangup.data.payload.client_state == CS2
    assert ended.data.payload.status == "call_hangup"
    assert hooks.types(cid).count("call.playback.started") == 1
    assert hooks.types(cid).count("call.playback.ended") == 6
    assert audio_origin.hits["long.wav"] == 2


def rejected_scenario(tmp_path: Path, code: int) -> Path:
    """uac_rejected.xml expecting *code* as the final answer to its INVITE (after a 180)."""
    text = (SCENARIOS / "uac_rejected.xml").read_text()
    assert '<recv response="603"/>' in text
    path = tmp_path / f"uac_rejected_{code}.xml"
    path.write_text(text.replace('<recv response="603"/>', f'<recv response="{code}"/>'))
    return path


async def test_reject_ringing_calls_with_603_and_486(tmp_path, hooks: SignedHooks):
    """reject on a ringing inbound call: the SIP final response SIPp expects; an answered or ended call: 90018."""
    r, client = await telnyx_server(tmp_path, hooks, auto_answer=False)
    actions = client.calls.actions

    async def error_of(fn: Any, *args: Any, **kwargs: Any) -> telnyx.APIStatusError:
        with pytest.raises(telnyx.APIStatusError) as info:
            await asyncio.to_thread(fn, *args, **kwargs)
        return info.value

    async def ringing_call(scenario: Path, seen: set[str]) -> tuple[asyncio.Task[tuple[int, str]], str]:
        sipp = await start_sipp([
            f"127.0.0.1:{r.sip_port}", "-sf", str(scenario), "-i", "127.0.0.1", "-p", "0",
            "-mp", str(free_port_pair()), "-m", "1", "-timeout", "40s", "-timeout_error",
        ])
        call = await wait_until(lambda: next((c for c in r.server.registry.active()
                                              if c.call_id not in seen and c.state.value == "ringing"), None),
                                10, "the call to ring")
        seen.add(call.call_id)
        return sipp, call.call_id

    seen: set[str] = set()
    try:
        sipp_603, c603 = await ringing_call(SCENARIOS / "uac_rejected.xml", seen)
        e = await error_of(actions.reject, c603, cause="NOPE")  # the SDK does not check its Literal: we do
        assert e.status_code == 422 and e.body["errors"][0]["code"] == "10032"
        assert e.body["errors"][0]["source"] == {"pointer": "/cause"}
        res = await asyncio.to_thread(actions.reject, c603, cause="CALL_REJECTED", client_state=CS1)
        assert isinstance(res, ActionRejectResponse) and res.data.result == "ok"
        code, out = await sipp_603
        assert code == 0, out[-3000:]  # SIPp got the 603 it waits for (anything else fails its call)

        sipp_486, c486 = await ringing_call(rejected_scenario(tmp_path, 486), seen)
        # the README's reject snippet, run as written (base URL, key and call id substituted)
        snippet = readme_block("Telnyx", 1)
        for old, new in (("http://127.0.0.1:8080", r.http), ("KEY0123_mediasrv_test", API_KEY),
                         ("v3:node:call-id", c486)):
            assert old in snippet, old
            snippet = snippet.replace(old, new)
        await asyncio.to_thread(exec, compile(snippet, "README.md#telnyx-reject", "exec"), {})
        code, out = await sipp_486
        assert code == 0, out[-3000:]

        e = await error_of(actions.reject, c603, cause="CALL_REJECTED")
        err = e.body["errors"][0]
        assert e.status_code == 422 and (err["code"], err["title"]) == ("90018", "Call has already ended")
        e = await error_of(actions.reject, "v3:nobody:0000", cause="CALL_REJECTED")
        assert e.body["errors"][0]["code"] == "90015"

        # answered: reject is refused (90018), hangup still works (SIPp waits for our BYE)
        sipp_bye, cans = await ringing_call(SCENARIOS / "uac_wait_bye.xml", seen)
        await asyncio.to_thread(actions.answer, cans)
        e = await error_of(actions.reject, cans, cause="CALL_REJECTED")
        assert e.status_code == 422 and e.body["errors"][0]["code"] == "90018"
        assert "answered" in e.body["errors"][0]["detail"]
        assert r.server.registry.get(cans).state.value == "answered"
        await asyncio.to_thread(actions.hangup, cans)
        code, out = await sipp_bye
        assert code == 0, out[-3000:]
        await wait_until(lambda: hooks.types(cans).count("call.hangup") == 1, 10, "the last call.hangup")
    finally:
        await r.server.stop()

    assert (r.server.registry.get(c603).sip_code, r.server.registry.get(c486).sip_code) == (603, 486)
    h603 = next(e for e in hooks.events(c603) if e.data.event_type == "call.hangup")
    h486 = next(e for e in hooks.events(c486) if e.data.event_type == "call.hangup")
    assert isinstance(h603, CallHangupWebhookEvent)
    p603, p486 = h603.data.payload, h486.data.payload
    assert (p603.hangup_cause, p603.sip_hangup_cause, p603.hangup_source) == ("call_rejected", "603", "callee")
    assert p603.client_state == CS1
    assert (p486.hangup_cause, p486.sip_hangup_cause) == ("user_busy", "486")
    assert hooks.types(c603) == ["call.initiated", "call.hangup"]  # never answered


async def test_disabled_without_key_and_cli_prints_public_key(tmp_path, hooks: SignedHooks):
    r = await start_server(tmp_path)  # no telnyx_api_key: the dialect refuses everything
    try:
        client = sdk_client(r, api_key="anything")
        with pytest.raises(telnyx.AuthenticationError) as info:
            await asyncio.to_thread(client.calls.actions.start_playback, "v3:x:y", audio_url="http://127.0.0.1/a.wav")
        assert info.value.body["errors"][0]["code"] == "10009"
        with pytest.raises(telnyx.AuthenticationError):
            await public_key(client)
        spec = await asyncio.to_thread(client.get, f"{r.http}/openapi.json", cast_to=object)
        routes = {(x["method"], x["path"]) for d in spec["x-dialects"].values() for x in d["routes"]}
        for action in ("playback_start", "playback_stop", "answer", "hangup", "reject", "bridge"):
            path = f"/v2/calls/{{call_control_id}}/actions/{action}"
            assert ("POST", path) in routes  # listed, and served:
            assert any(getattr(res, "canonical", None) == path for res in r.server.app.router.resources()), path
        assert ("POST", "/v1/Account/{auth_id}/Call/{call_uuid}/Play/") in routes
    finally:
        await r.server.stop()
    assert not (r.data_dir / "keys").exists(), "a disabled dialect makes no key"
    # `mediasrv keys` makes the pair once; the server then signs with it and serves the same key
    out = subprocess.run([sys.executable, "-m", "mediasrv", "keys", "--data-dir", str(r.data_dir)],
                         capture_output=True, text=True, timeout=30, cwd=REPO, check=True).stdout
    key = out.strip().splitlines()[-1]
    assert len(base64.b64decode(key)) == 32
    r2, client2 = await telnyx_server(tmp_path, hooks)
    try:
        assert await public_key(client2) == key == r2.server.app[TELNYX_KEY].signer.public_key_b64
    finally:
        await r2.server.stop()


async def test_readme_snippet_runs_against_a_live_call(tmp_path, hooks: SignedHooks, audio_origin):
    r, client = await telnyx_server(tmp_path, hooks)
    capture = await open_capture()
    try:
        src = chirp_signal(0.6, seed=5)
        url = audio_origin.add("prompt.wav", wav_bytes(src, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=3000))
        [call] = await answered_calls(r, 1)
        code = readme_block("Telnyx", 0)
        code = code.replace("http://127.0.0.1:8080", r.http).replace("KEY0123_mediasrv_test", API_KEY)
        code = code.replace("v3:node:call-id", call.call_id).replace("https://example.com/prompt.wav", url)
        scope: dict[str, Any] = {}
        await asyncio.to_thread(exec, compile(code, "README.md#telnyx", "exec"), scope)
        assert scope["response"].data.result == "ok"
        ended = await hooks.wait_for(lambda e: e.data.event_type == "call.playback.ended")
        # the README's verification snippet, fed one of our webhooks
        body, headers = hooks.raw[-1]
        verify = readme_block("Telnyx", 2).replace("http://127.0.0.1:8080", r.http)
        scope = {"raw_body": body, "request_headers": headers}
        await asyncio.to_thread(exec, compile(verify, "README.md#telnyx-verify", "exec"), scope)
        assert scope["event"].data.event_type == "call.playback.ended"
        code_, out = await sipp
        assert code_ == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    assert ended.data.payload.status == "completed"
    assert capture.payload().find(expected_payload(src, "PCMU")) >= 0


async def test_bridge_connects_two_talking_calls(tmp_path, hooks: SignedHooks):
    """SIPp callers saying 440 Hz and 880 Hz (pcap RTP); the SDK's bridge makes each hear the other."""
    r, client = await telnyx_server(tmp_path, hooks)
    actions = client.calls.actions
    a = Talker(tmp_path, "a", 440, "PCMU", 5.0)
    b = Talker(tmp_path, "b", 880, "PCMU", 5.0)
    c = Talker(tmp_path, "c", 1320, "PCMU", 5.0)
    try:
        await asyncio.gather(a.dial(r), b.dial(r), c.dial(r))
        aid, bid, cid = a.call.call_id, b.call.call_id, c.call.call_id
        for other, code in (("v3:nobody:1", "90015"), (aid, "90061")):
            with pytest.raises(telnyx.UnprocessableEntityError) as info:
                await asyncio.to_thread(actions.bridge, aid, call_control_id_to_bridge_with=other)
            assert info.value.body["errors"][0]["code"] == code
        res = await asyncio.to_thread(actions.bridge, aid, call_control_id_to_bridge_with=bid, client_state=CS1)
        assert res.data.result == "ok"
        t_join = await wall_time()
        await asyncio.sleep(1.5)
        t_end = await wall_time()
        # C may not take B away when the command says so
        with pytest.raises(telnyx.UnprocessableEntityError) as info:
            await asyncio.to_thread(actions.bridge, cid, call_control_id_to_bridge_with=bid,
                                    prevent_double_bridge=True)
        assert info.value.body["errors"][0]["source"]["pointer"] == "/prevent_double_bridge"
        assert r.server.media.peers_of(aid) == [bid]
        await asyncio.gather(a.finish(), b.finish(), c.finish())
    finally:
        for t in (a, b, c):
            t.close()
        await r.server.stop()
    assert_hears(a.heard(t_join + 0.3, t_end), present=[880], absent=[440, 1320], who="A bridged to B")
    assert_hears(b.heard(t_join + 0.3, t_end), present=[440], absent=[880, 1320], who="B bridged to A")
    assert not c.heard(t_join + 0.3, t_end).any(), "C is in no bridge: it hears silence"
    bridged = [e for e in hooks.events() if e.data.event_type == "call.bridged"]
    assert all(isinstance(e, CallBridgedWebhookEvent) for e in bridged)
    assert sorted(e.data.payload.call_control_id for e in bridged) == sorted([aid, bid])
    assert next(e for e in bridged if e.data.payload.call_control_id == aid).data.payload.client_state == CS1


def mixed_ulaw(main: np.ndarray, over: np.ndarray, at: int) -> bytes:
    """What an overlay of *over* starting at sample *at* of *main* sounds like on the wire (PCMU)."""
    seg = main[at: at + len(over)].astype(np.int32) + over.astype(np.int32)
    return ulaw_encode(np.clip(seg, -32768, 32767).astype(np.int16))


async def test_overlay_stop_current_and_overlay_stop(tmp_path, hooks: SignedHooks, audio_origin):
    r, client = await telnyx_server(tmp_path, hooks)
    actions = client.calls.actions
    capture = await open_capture()
    try:
        main, over, nxt = chirp_signal(1.0, seed=11), chirp_signal(0.4, seed=12) // 2, chirp_signal(0.3, seed=13)
        url_main = audio_origin.add("main.wav", wav_bytes(main, 8000))
        url_over = audio_origin.add("over.wav", wav_bytes(over, 8000))
        url_next = audio_origin.add("next.wav", wav_bytes(nxt, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=6000))
        [call] = await answered_calls(r, 1)
        cid = call.call_id
        # an overlay needs something playing underneath
        with pytest.raises(telnyx.UnprocessableEntityError) as info:
            await asyncio.to_thread(actions.start_playback, cid, audio_url=url_over, overlay=True)
        assert info.value.body["errors"][0]["source"]["pointer"] == "/overlay"
        await asyncio.to_thread(actions.start_playback, cid, audio_url=url_main, loop="infinity")
        await hooks.wait_for(lambda e: e.data.event_type == "call.playback.started")
        await asyncio.to_thread(actions.start_playback, cid, audio_url=url_over, overlay=True, loop="infinity",
                                client_state=CS1)
        await hooks.wait_for(lambda e: e.data.event_type == "call.playback.started" and e.data.payload.overlay)
        await asyncio.sleep(0.6)
        # stop only the overlay: the main playback goes on
        await asyncio.to_thread(actions.stop_playback, cid, overlay=True)
        over_end = await hooks.wait_for(lambda e: e.data.event_type == "call.playback.ended"
                                        and e.data.payload.overlay)
        assert r.server.media.playbacks_for(cid)[0] is not None
        # stop="current" on a new command: the looping main ends, the new one plays at once
        await asyncio.to_thread(actions.start_playback, cid, audio_url=url_next, stop="current")
        main_end = await hooks.wait_for(lambda e: e.data.event_type == "call.playback.ended"
                                        and e.data.payload.media_url == url_main)
        next_end = await hooks.wait_for(lambda e: e.data.event_type == "call.playback.ended"
                                        and e.data.payload.media_url == url_next)
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    assert (over_end.data.payload.status, over_end.data.payload.client_state) == ("cancelled", CS1)
    assert main_end.data.payload.status == "cancelled" and next_end.data.payload.status == "completed"
    payload = capture.payload()
    # somewhere the overlay was mixed over the main prompt (saturating), packet-aligned
    mixed = [payload.find(mixed_ulaw(np.concatenate([main, main]), over, k)[:1600]) for k in range(0, 8000, 160)]
    assert any(m >= 0 for m in mixed), "overlay mixed over the main playback"
    assert payload.find(expected_payload(nxt, "PCMU")) >= 0, "the stop=current command played right after"
    assert_stream_continuity(capture)


async def test_target_legs_on_a_bridge(tmp_path, hooks: SignedHooks, audio_origin):
    r, client = await telnyx_server(tmp_path, hooks)
    actions = client.calls.actions
    capture = await open_capture()
    try:
        both, opp = chirp_signal(0.4, seed=21), chirp_signal(0.4, seed=22)
        url_both = audio_origin.add("both.wav", wav_bytes(both, 8000))
        url_opp = audio_origin.add("opp.wav", wav_bytes(opp, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=4000, calls=2, rate=20))
        a, b = await answered_calls(r, 2)
        with pytest.raises(telnyx.UnprocessableEntityError) as info:  # not bridged yet: no opposite leg
            await asyncio.to_thread(actions.start_playback, a.call_id, audio_url=url_opp, target_legs="opposite")
        assert info.value.body["errors"][0]["source"]["pointer"] == "/target_legs"
        res = await asyncio.to_thread(actions.bridge, a.call_id, call_control_id_to_bridge_with=b.call_id)
        assert res.data.result == "ok"
        assert r.server.media.peers_of(a.call_id) == [b.call_id]
        await asyncio.to_thread(actions.start_playback, a.call_id, audio_url=url_both, target_legs="both")
        await asyncio.to_thread(actions.start_playback, a.call_id, audio_url=url_opp, target_legs="opposite")
        await wait_until(lambda: len([e for e in hooks.events() if e.data.event_type == "call.playback.ended"]) == 3,
                         10, "three playbacks ended")
        ssrc = {c.call_id: r.server.media.leg_stats(c.call_id)["ssrc"] for c in (a, b)}
        for bad, code in (("v3:nobody:1", "90015"), (a.call_id, "90061")):
            with pytest.raises(telnyx.UnprocessableEntityError) as info:
                await asyncio.to_thread(actions.bridge, a.call_id, call_control_id_to_bridge_with=bad)
            assert info.value.body["errors"][0]["code"] == code
        code_, out = await sipp
        assert code_ == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    ended = [e.data.payload for e in hooks.events() if e.data.event_type == "call.playback.ended"]
    assert sorted((p.call_control_id, p.media_url) for p in ended) == sorted(
        [(a.call_id, url_both), (b.call_id, url_both), (b.call_id, url_opp)])
    pa, pb = capture.payload(ssrc[a.call_id]), capture.payload(ssrc[b.call_id])
    eb, eo = expected_payload(both, "PCMU"), expected_payload(opp, "PCMU")
    assert pa.find(eb) >= 0 and pa.find(eo) < 0, "A heard 'both' and not what was sent to its opposite leg"
    assert pb.find(eb + eo) >= 0, "B heard 'both', then the 'opposite' play queued behind it"
