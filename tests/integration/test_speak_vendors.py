"""Speech through each vendor's official SDK against a SIPp call: the audio espeak-ng makes arrives
bit-exact, the vendor's events follow, bad input is the vendor's 4xx naming the field."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import telnyx
from telnyx.types import CallSpeakEndedWebhookEvent, CallSpeakStartedWebhookEvent

from mediasrv.probe import open_capture

from .conftest import wait_until
from .speech_ref import assert_spoken
from .test_playback_sipp import answered_calls, sipp_play_args, start_sipp
from .test_telnyx_sdk import CS1, SignedHooks, hooks, telnyx_server  # noqa: F401 - hooks is a fixture

pytestmark = pytest.mark.integration

SSML = "<speak>Goodbye <break time='100ms'/> for now</speak>"


async def _error(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with pytest.raises(Exception) as info:  # noqa: PT011 - each SDK's own error type, checked by the caller
        await asyncio.to_thread(fn, *args, **kwargs)
    return info.value


async def test_telnyx_speak(tmp_path, hooks: SignedHooks):  # noqa: F811
    r, client = await telnyx_server(tmp_path, hooks)
    actions = client.calls.actions
    capture = await open_capture()
    try:
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=4500))
        [call] = await answered_calls(r, 1)
        cid = call.call_id
        res = await asyncio.to_thread(actions.speak, cid, payload="Welcome to mediasrv.", voice="female",
                                      language="en-GB", client_state=CS1, command_id="s-1")
        assert res.data.result == "ok"
        await hooks.wait_for(lambda e: e.data.event_type == "call.speak.ended")
        res = await asyncio.to_thread(actions.speak, cid, payload=SSML, payload_type="ssml", voice="Polly.Matthew")
        assert res.data.result == "ok"
        await wait_until(lambda: hooks.types(cid).count("call.speak.ended") == 2, 10, "the second speak to end")
        bad = [
            (dict(payload="", voice="female"), "/payload"),
            (dict(payload="x" * 3001, voice="female"), "/payload"),
            (dict(payload="hi", voice="Polly.Nobody"), "/voice"),
            (dict(payload="hi", voice="female", language="xx-YY"), "/language"),
            (dict(payload="<speak><audio src='a'/></speak>", payload_type="ssml", voice="male"), "/payload"),
            (dict(payload="<speak>hi", payload_type="ssml", voice="male"), "/payload"),
        ]
        for kwargs, pointer in bad:
            e = await _error(actions.speak, cid, **kwargs)
            assert isinstance(e, telnyx.UnprocessableEntityError), (kwargs, e)
            assert e.body["errors"][0]["source"]["pointer"] == pointer, (kwargs, e.body)
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    payload = capture.payload()
    assert_spoken(payload, "Welcome to mediasrv.", voice="en-gb+f3")
    assert_spoken(payload, SSML, voice="en-us", ssml=True)
    events = [e for e in hooks.events(cid) if e.data.event_type.startswith("call.speak.")]
    assert [e.data.event_type for e in events] == ["call.speak.started", "call.speak.ended"] * 2
    assert all(isinstance(e, k) for e, k in zip(events, [CallSpeakStartedWebhookEvent, CallSpeakEndedWebhookEvent] * 2,
                                                    strict=True))
    assert events[0].data.payload.client_state == CS1 and events[1].data.payload.status == "completed"
    assert not any(e.data.event_type.startswith("call.playback.") for e in hooks.events(cid))
