"""Native API strict input: unknown fields, bad types and out-of-range values name the field.

One live call placed by our own UAC; every request goes over a real socket. The dialects stay
lenient (their vendors ignore unknown fields): checked for Telnyx in its own tests' shape here.
"""

from __future__ import annotations

import aiohttp
import pytest

from mediasrv.calls.controller import SipSettings, SipUserAgent
from mediasrv.calls.registry import CallRegistry
from mediasrv.rtp.probe import CaptureMedia
from tests.support.audio import wav_bytes
from tests.support.server import Running, wait_until

pytestmark = pytest.mark.integration


async def test_unknown_fields_and_bad_values_name_the_field(running: Running):
    r = running
    media = CaptureMedia()
    uac = SipUserAgent(SipSettings(host="127.0.0.1", port=0), CallRegistry(), media)
    await uac.start()
    try:
        call = await uac.call(f"sip:strict@127.0.0.1:{r.sip_port}", remote=("127.0.0.1", r.sip_port))
        server_call = await wait_until(lambda: r.server.registry.by_sip_call_id(call.sip_call_id), 5, "server call")
        cid = server_call.call_id
        play = f"/v1/calls/{cid}/playbacks"
        cases = [
            (play, {"media": "hello.wav", "loops": 3}, 400, "unknown_field", "loops",
             'unknown field "loops" (did you mean "loop"?)'),
            (play, {"media": "hello.wav", "volume": -6}, 400, "unknown_field", "volume",
             'unknown field "volume" (did you mean "volume_db"?)'),
            (play, {"media": "hello.wav", "loop": "infinity", "length": 5}, 400, "unknown_field", "length",
             'unknown field "length" (did you mean "length_s"?)'),
            (play, {"sources": [{"media": "a.wav", "cahce": True}]}, 400, "unknown_field", "sources[0].cahce",
             'unknown field "sources[0].cahce" (did you mean "sources[0].cache"?)'),
            (play, {"url": "http://127.0.0.1:1/a.wav", "auth": {"username": "u", "pasword": "p"}}, 400,
             "unknown_field", "auth.pasword", 'unknown field "auth.pasword" (did you mean "auth.password"?)'),
            (play, {"media": "hello.wav", "zzz": 1}, 400, "unknown_field", "zzz", None),
            (play, {"sources": [{"media": "a.wav"}], "url": "http://127.0.0.1:1/b.wav"}, 422, "conflicting_fields",
             "url", None),
            (play, {"media": "hello.wav", "volume_db": "loud"}, 400, "invalid_field", "volume_db", None),
            (play, {"media": "hello.wav", "volume_db": 99}, 422, "out_of_range", "volume_db", None),
            (play, {"media": "hello.wav", "length_s": -1}, 422, "out_of_range", "length_s", None),
            (play, {"media": "hello.wav", "overlay": "yes"}, 400, "invalid_field", "overlay", None),
            (play, {"media": "hello.wav", "loop": 1000}, 422, "out_of_range", "loop", None),
            ("/v1/calls", {"to": "sip:x@127.0.0.1:9", "timeout": 5}, 400, "unknown_field", "timeout",
             'unknown field "timeout" (did you mean "timeout_s"?)'),
            ("/v1/calls", {"to": "sip:x@127.0.0.1:9", "timeout_s": 0}, 422, "out_of_range", "timeout_s", None),
            (f"/v1/calls/{cid}/bridge", {"callid": "x"}, 400, "unknown_field", "callid",
             'unknown field "callid" (did you mean "call_id"?)'),
            ("/v1/rooms", {"name": "x"}, 400, "unknown_field", "name",
             'unknown field "name" (this request takes no fields)'),
            ("/v1/media-cache/prefetch", {"ur": "http://127.0.0.1:1/a.wav"}, 400, "unknown_field", "ur",
             'unknown field "ur" (did you mean "url"?)'),
        ]
        async with aiohttp.ClientSession() as s:
            for path, body, status, code, field, message in cases:
                async with s.post(f"{r.http}{path}", json=body) as resp:
                    got = (await resp.json())["error"]
                    assert (resp.status, got["code"], got["details"]["field"]) == (status, code, field), (body, got)
                    if message is not None:
                        assert got["message"] == message
            # the control endpoint too, on a real playback
            async with s.post(f"{r.http}{play}", json={"content_base64": _tone_b64(), "audio_type": "wav"}) as resp:
                assert resp.status == 201, await resp.text()
                pb = (await resp.json())["id"]
            async with s.post(f"{r.http}/v1/playbacks/{pb}/control", json={"op": "seek", "msec": 5}) as resp:
                got = (await resp.json())["error"]
                assert resp.status == 400 and got["message"] == 'unknown field "msec" (did you mean "ms"?)'
            async with s.post(f"{r.http}/v1/playbacks/{pb}/control", json={"op": "seek", "ms": -5}) as resp:
                assert resp.status == 422 and (await resp.json())["error"]["details"]["field"] == "ms"
    finally:
        await uac.stop()
        media.close_all()


def _tone_b64() -> str:
    import base64

    import numpy as np


    t = np.arange(8000) / 8000
    return base64.b64encode(wav_bytes((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16), 8000)).decode()
