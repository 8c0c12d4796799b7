"""ACS Call Automation DTMF through the official SDK on a real SIPp call: continuous recognition, recognize
(DTMF with a prompt, stop tones, max tones, initial silence, cancel) and send_dtmf_tones; keys pressed as
RFC 4733 from the call's RTP address, sent tones checked on the wire, callbacks parsed as CloudEvents and
deserialized with the SDK's own models."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from azure.communication.callautomation import CommunicationUserIdentifier, DtmfTone, FileSource, TextSource
from azure.communication.callautomation._generated import models as acs_models
from azure.core.exceptions import HttpResponseError

from mediasrv.rtp.probe import open_capture
from tests.support.acs import KEY, AcsEvents, acs_client
from tests.support.audio import chirp_signal, expected_payload, wav_bytes
from tests.support.dtmf_peer import KeyPresser
from tests.support.server import start_server
from tests.support.sipp import answered_calls, sipp_play_args, start_sipp, te_events

pytestmark = pytest.mark.integration

CALLER = CommunicationUserIdentifier("sipp")  # the SIPp caller's identity (From: sip:sipp@...)


def expect(fn: Any, *args: Any, **kwargs: Any) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as info:
        fn(*args, **kwargs)
    return info.value


async def test_continuous_recognize_and_send_tones(tmp_path, audio_origin, acs_events: AcsEvents):
    # start_continuous_dtmf_recognition takes no callback URL (SDK 1.6): its tones go to the call's default
    r = await start_server(tmp_path, acs_access_key=KEY, acs_callback_url=acs_events.url)
    capture = await open_capture()
    try:
        prompt = chirp_signal(1.5, seed=31)
        url = audio_origin.add("menu.wav", wav_bytes(prompt, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=6500))
        [call] = await answered_calls(r, 1)
        conn = acs_client(r).get_call_connection(call.call_id)
        presser = KeyPresser(capture.sock, call.local_rtp)
        cb = {"operation_callback_url": acs_events.url}

        bad = [
            (conn.start_recognizing_media, ("dtmf", CALLER), {"dtmf_max_tones_to_collect": 0},
             "recognizeOptions.dtmfOptions.maxTonesToCollect"),
            (conn.start_recognizing_media, ("dtmf", CALLER), {"dtmf_inter_tone_timeout": 61},
             "recognizeOptions.dtmfOptions.interToneTimeoutInSeconds"),
            (conn.start_recognizing_media, ("dtmf", CALLER), {"dtmf_stop_tones": ["pound", "hash"]},
             "recognizeOptions.dtmfOptions.stopTones[1]"),
            (conn.start_recognizing_media, ("speech", CALLER), {}, "recognizeInputType"),
            (conn.start_recognizing_media, ("dtmf", CALLER), {"play_prompt": FileSource("ftp://x/y.wav")},
             "playPrompt.file.uri"),
            (conn.start_recognizing_media, ("dtmf", CommunicationUserIdentifier("8:acs:nobody")), {},
             "recognizeOptions.targetParticipant"),
            (conn.send_dtmf_tones, (["one", "eleven"], CALLER), {}, "tones[1]"),
            (conn.send_dtmf_tones, (["one"], CommunicationUserIdentifier("8:acs:nobody")), {}, "targetParticipant"),
            (conn.start_continuous_dtmf_recognition, (CommunicationUserIdentifier("8:acs:nobody"),), {},
             "targetParticipant"),
        ]
        for fn, args, kwargs, target in bad:
            e = await asyncio.to_thread(expect, fn, *args, **kwargs)
            assert e.status_code == 400 and e.error.target == target, (target, e.error.message)

        # continuous: each key as it is pressed, until stopped
        assert await asyncio.to_thread(conn.start_continuous_dtmf_recognition, CALLER, operation_context="cont") is None
        for d in "1#*":
            await presser.press(d)
        await acs_events.wait_for("ContinuousDtmfRecognitionToneReceived", 3)
        await asyncio.to_thread(conn.stop_continuous_dtmf_recognition, CALLER, operation_context="cont", **cb)
        await acs_events.wait_for("ContinuousDtmfRecognitionStopped")
        await presser.press("5")  # not reported any more

        # recognize: the prompt, interrupted by the first key; "#" is the stop tone
        await asyncio.to_thread(
            conn.start_recognizing_media, "dtmf", CALLER, play_prompt=FileSource(url), interrupt_prompt=True,
            dtmf_max_tones_to_collect=4, dtmf_stop_tones=[DtmfTone.POUND], initial_silence_timeout=5,
            dtmf_inter_tone_timeout=3, operation_context="menu", **cb)
        await asyncio.sleep(0.5)
        for d in "42#":
            await presser.press(d)
        await acs_events.wait_for("RecognizeCompleted")
        await asyncio.to_thread(conn.start_recognizing_media, "dtmf", CALLER, dtmf_max_tones_to_collect=2,
                                play_prompt=TextSource(text="Enter two digits."), operation_context="two", **cb)
        for d in "78":
            await presser.press(d)
        await acs_events.wait_for("RecognizeCompleted", 2)
        await asyncio.to_thread(conn.start_recognizing_media, "dtmf", CALLER, initial_silence_timeout=1,
                                operation_context="silent", **cb)
        await acs_events.wait_for("RecognizeFailed")
        await asyncio.to_thread(conn.start_recognizing_media, "dtmf", CALLER, initial_silence_timeout=30,
                                operation_context="cancelled", **cb)
        await asyncio.to_thread(conn.cancel_all_media_operations)
        await acs_events.wait_for("RecognizeCanceled")

        sent = await asyncio.to_thread(conn.send_dtmf_tones, [DtmfTone.ONE, "pound", "a"], CALLER,
                                       operation_context="out", **cb)
        assert sent.operation_context == "out"
        await acs_events.wait_for("SendDtmfTonesCompleted")
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()

    by_type = {t: [e for e in acs_events.events if e.type == "Microsoft.Communication." + t] for t in (
        "ContinuousDtmfRecognitionToneReceived", "RecognizeCompleted", "RecognizeFailed", "RecognizeCanceled",
        "SendDtmfTonesCompleted", "ContinuousDtmfRecognitionStopped")}
    tones = [acs_models.ContinuousDtmfRecognitionToneReceived.deserialize(e.data)
             for e in by_type["ContinuousDtmfRecognitionToneReceived"]]
    assert [(t.tone, t.sequence_id, t.operation_context) for t in tones] == [
        ("one", 1, "cont"), ("pound", 2, "cont"), ("asterisk", 3, "cont")]
    assert tones[0].call_connection_id == call.call_id and tones[0].server_call_id
    completed = [acs_models.RecognizeCompleted.deserialize(e.data) for e in by_type["RecognizeCompleted"]]
    assert [(c.operation_context, c.recognition_type, c.dtmf_result.tones, c.result_information.sub_code)
            for c in completed] == [("menu", "dtmf", ["four", "two"], 8514), ("two", "dtmf", ["seven", "eight"], 8531)]
    [failed] = [acs_models.RecognizeFailed.deserialize(e.data) for e in by_type["RecognizeFailed"]]
    assert (failed.operation_context, failed.result_information.code, failed.result_information.sub_code) == (
        "silent", 400, 8510)
    [cancelled] = by_type["RecognizeCanceled"]
    assert cancelled.data["operationContext"] == "cancelled"
    [done] = [acs_models.SendDtmfTonesCompleted.deserialize(e.data) for e in by_type["SendDtmfTonesCompleted"]]
    assert done.operation_context == "out" and done.result_information.code == 200
    # the prompt was cut by the first key: less than its length reached the caller, from its start
    payload = capture.payload()
    ep = expected_payload(prompt, "PCMU")
    assert payload.find(ep[:1600]) >= 0 and payload.find(ep) < 0
    assert [ev[0].payload[0] for ev in te_events(capture.packets)] == [1, 11, 12]
