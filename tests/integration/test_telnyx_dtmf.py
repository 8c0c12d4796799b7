"""Telnyx DTMF commands through the official SDK on a real SIPp call: ``gather_using_audio`` (keys pressed
as RFC 4733 from the call's RTP address, prompts checked bit-exact on the wire), ``gather_stop``,
``send_dtmf`` (the telephone-events on the wire), and the SDK's errors naming the field."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
import telnyx
from telnyx.types import CallGatherEndedWebhookEvent, CallSpeakEndedWebhookEvent
from telnyx.types.calls import ActionGatherUsingAudioResponse, ActionSendDtmfResponse

from mediasrv.rtp.probe import open_capture
from tests.support.audio import chirp_signal, expected_payload, wav_bytes
from tests.support.dtmf_peer import KeyPresser
from tests.support.sipp import answered_calls, sipp_play_args, start_sipp, te_events
from tests.support.telnyx import SignedHooks, telnyx_server

pytestmark = pytest.mark.integration

CS = base64.b64encode(b"gather-state").decode()


async def error_of(fn: Any, *args: Any, **kwargs: Any) -> telnyx.APIStatusError:
    with pytest.raises(telnyx.APIStatusError) as info:
        await asyncio.to_thread(fn, *args, **kwargs)
    return info.value


def pointer(exc: telnyx.APIStatusError) -> str:
    return exc.body["errors"][0]["source"]["pointer"]  # type: ignore[index]


async def test_gather_using_audio_stop_and_send_dtmf(tmp_path, hooks: SignedHooks, audio_origin):
    r, client = await telnyx_server(tmp_path, hooks)
    actions = client.calls.actions
    capture = await open_capture()

    def gathered(n: int) -> Any:
        return hooks.wait_for(lambda e: sum(x.data.event_type == "call.gather.ended" for x in hooks.events()) >= n)

    try:
        menu, short, again, invalid = (chirp_signal(s, seed=k) for k, s in ((21, 1.5), (22, 0.3), (23, 0.3), (24, 0.4)))
        url_menu = audio_origin.add("menu.wav", wav_bytes(menu, 8000))
        url_short = audio_origin.add("short.wav", wav_bytes(short, 8000))
        url_again = audio_origin.add("again.wav", wav_bytes(again, 8000))
        url_invalid = audio_origin.add("invalid.wav", wav_bytes(invalid, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=9500))
        [call] = await answered_calls(r, 1)
        cid = call.call_id
        presser = KeyPresser(capture.sock, call.local_rtp)

        bad = [({"audio_url": url_short, "minimum_digits": 5, "maximum_digits": 3}, "/minimum_digits"),
               ({"audio_url": url_short, "maximum_digits": 0}, "/maximum_digits"),
               ({"audio_url": url_short, "valid_digits": "12x"}, "/valid_digits"),
               ({"audio_url": url_short, "terminating_digit": "##"}, "/terminating_digit"),
               ({"audio_url": url_short, "timeout_millis": 0}, "/timeout_millis"),
               ({"minimum_digits": 1}, "/audio_url"),
               ({"audio_url": "ftp://x/y.wav"}, "/audio_url"),
               ({"audio_url": url_short, "media_name": "m"}, "/media_name")]
        for kwargs, field in bad:
            exc = await error_of(actions.gather_using_audio, cid, **kwargs)
            assert isinstance(exc, telnyx.UnprocessableEntityError) and pointer(exc) == field, (kwargs, exc.body)
        for kwargs, field in [({"digits": "12x"}, "/digits"), ({"digits": "ww"}, "/digits"),
                              ({"digits": "1", "duration_millis": 50}, "/duration_millis")]:
            exc = await error_of(actions.send_dtmf, cid, **kwargs)
            assert exc.status_code == 422 and pointer(exc) == field, (kwargs, exc.body)
        unknown = await error_of(actions.stop_gather, "v3:no-such-call")
        assert unknown.status_code == 422 and unknown.body["errors"][0]["code"] == "90015"  # type: ignore[index]

        # 1: keys during the prompt stop it (barge-in); "#" ends the gather: valid
        res = await asyncio.to_thread(actions.gather_using_audio, cid, audio_url=url_menu, maximum_digits=4,
                                      terminating_digit="#", client_state=CS, command_id="g1")
        assert isinstance(res, ActionGatherUsingAudioResponse) and res.data.result == "ok"
        await hooks.wait_for(lambda e: e.data.event_type == "call.playback.started")
        await asyncio.sleep(0.3)
        for d in "12#":
            await presser.press(d)
        await gathered(1)
        # 2: "9" is not a valid digit: invalid.wav then the prompt again, then "12#" is valid
        await asyncio.to_thread(actions.gather_using_audio, cid, audio_url=url_short, valid_digits="123",
                                minimum_digits=2, invalid_audio_url=url_invalid, maximum_tries=2)
        for d in "9#":
            await presser.press(d)
        await hooks.wait_for(lambda e: e.data.event_type == "call.playback.started"
                             and e.data.payload.media_url == url_invalid)  # the retry's prompt: invalid + short
        await asyncio.sleep(0.3)
        for d in "12#":
            await presser.press(d)
        await gathered(2)
        # 3: no input: the prompt twice (maximum_tries), then timeout
        await asyncio.to_thread(actions.gather_using_audio, cid, audio_url=url_again, timeout_millis=300,
                                maximum_tries=2)
        await gathered(3)
        # 4: gather_stop: cancelled
        await asyncio.to_thread(actions.gather_using_audio, cid, audio_url=url_short, timeout_millis=60000)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(actions.stop_gather, cid)
        await gathered(4)
        # 5: gather_using_speak: the prompt is speech (call.speak.* webhooks), the digits the same
        exc = await error_of(actions.gather_using_speak, cid, payload="Press one", voice="robot")
        assert exc.status_code == 422 and pointer(exc) == "/voice", exc.body
        await asyncio.to_thread(actions.gather_using_speak, cid, payload="Press one or two, then pound.",
                                voice="female", language="en-US", maximum_digits=1, client_state=CS)
        await hooks.wait_for(lambda e: e.data.event_type == "call.speak.started")
        await asyncio.sleep(0.3)
        await presser.press("2")
        await gathered(5)
        sent = await asyncio.to_thread(actions.send_dtmf, cid, digits="1w#", duration_millis=100)
        assert isinstance(sent, ActionSendDtmfResponse) and sent.data.result == "ok"
        await asyncio.sleep(1.2)
        # 6, 7: plain gather (no prompt): the gather_id comes back; timeout_millis bounds the whole gather
        await asyncio.to_thread(actions.gather, cid, maximum_digits=3, gather_id="g-plain")
        for d in "789":
            await presser.press(d)
        await gathered(6)
        await asyncio.to_thread(actions.gather, cid, timeout_millis=400, initial_timeout_millis=60000)
        await gathered(7)
        # 8: still gathering when the caller hangs up
        await asyncio.to_thread(actions.gather_using_audio, cid, audio_url=url_short, timeout_millis=60000)
        code, out = await sipp
        assert code == 0, out[-3000:]
        await gathered(8)
    finally:
        capture.close()
        await r.server.stop()

    ended = [e for e in hooks.events(cid) if e.data.event_type == "call.gather.ended"]
    assert all(isinstance(e, CallGatherEndedWebhookEvent) for e in ended)
    got = [(e.data.payload.digits, e.data.payload.status) for e in ended]
    assert got == [("12", "valid"), ("12", "valid"), ("", "timeout"), ("", "cancelled"), ("2", "valid"),
                   ("789", "valid"), ("", "timeout"), ("", "call_hangup")], got
    assert ended[5].data.payload.to_dict().get("gather_id") == "g-plain"
    p = ended[0].data.payload
    assert p.client_state == CS and p.call_control_id == cid and p.call_session_id == call.sip_call_id and p.from_
    assert audio_origin.hits["invalid.wav"] == 1
    # cut by the key; the SDK's CallSpeakEnded knows only completed | call_hangup | cancelled_amd
    speak_end = next(e for e in hooks.events(cid) if e.data.event_type == "call.speak.ended")
    assert isinstance(speak_end, CallSpeakEndedWebhookEvent)
    assert speak_end.data.payload.client_state == CS and speak_end.data.payload.status == "completed"
    payload = capture.payload()
    e_menu = expected_payload(menu, "PCMU")
    assert payload.find(e_menu[:1600]) >= 0 and payload.find(e_menu) < 0, "the first key cut the prompt"
    assert payload.count(expected_payload(again, "PCMU")) == 2, "no input: the prompt played maximum_tries times"
    e_inv, e_short = expected_payload(invalid, "PCMU"), expected_payload(short, "PCMU")
    assert payload.find(e_inv[:1600]) >= 0, "the invalid prompt was played"
    assert payload.find(e_short) >= 0
    te = te_events(capture.packets)
    assert [ev[0].payload[0] for ev in te] == [1, 11], "send_dtmf went out as RFC 4733 events"
    assert all(int.from_bytes(ev[-1].payload[2:4], "big") == 800 for ev in te), "duration_millis=100"
    assert te[1][0].arrival - te[0][0].arrival >= 0.5 + 0.1, "w: half a second between the digits"
