"""FLAC, Ogg/Vorbis, Ogg/Opus, M4A (AAC) and ADTS AAC played into a SIPp call.

Each file is encoded at test time (PyAV, sox for Vorbis) from a sweep, reaches the server a
different way (URL: streamed; inline base64; the media store), and must arrive in the call's RTP
bit-exact as the server's decoder makes it, and close to the sweep it was made from (FLAC:
identical to the offline resample; the lossy ones: SNR at the best small alignment).
"""

from __future__ import annotations

import base64

import numpy as np
import pytest

from mediacodecs.g711 import ulaw_decode, ulaw_encode
from mediacodecs.resample import to_telephony
from mediasrv.content.decode import decode_bytes, sniff
from mediasrv.rtp.probe import open_capture
from tests.support.audio_fixtures import ENCODED_FORMATS, encoded, sweep
from tests.support.http_origin import Origin
from tests.support.httpapi import req
from tests.support.server import Hooks, start_server
from tests.support.sipp import answered_calls, assert_stream_continuity, sipp_play_args, start_sipp

pytestmark = pytest.mark.integration

SECONDS = 0.8
# format -> (how it reaches the server, Content-Type or audio_type, minimum SNR in dB)
PLAN = {
    "flac": ("url", "audio/flac", None),  # lossless: exact
    "vorbis": ("url", "application/octet-stream", 15.0),
    "opus": ("base64", "opus", 20.0),
    "m4a": ("media", None, 20.0),
    "aac": ("url", "audio/aac", 10.0),  # raw ADTS keeps the encoder's 1024-sample priming
}


def _snr(ref: np.ndarray, got: np.ndarray, max_lag: int = 400) -> float:
    best = -np.inf
    for lag in range(0, max_lag):
        a = got[lag:]
        n = min(len(a), len(ref)) - 100
        err = np.sum((ref[:n] - a[:n]) ** 2)
        best = max(best, np.inf if err == 0 else 10 * np.log10(np.sum(ref[:n] ** 2) / err))
    return best


async def test_every_format_arrives_as_decoded(tmp_path, webhooks: Hooks):
    origin = await Origin().start()
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    capture = await open_capture()
    bodies = {f: encoded(sweep(SECONDS, ENCODED_FORMATS[f][2], f0=100 + 40 * i)[:, 0], f)
              for i, f in enumerate(PLAN)}
    try:
        status, meta = await req("PUT", f"{r.http}/v1/media/prompt.m4a", data=bodies["m4a"])
        assert status == 201 and meta["format"] == "mp4/aac", meta
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=int(len(PLAN) * SECONDS * 1000) + 2500))
        [call] = await answered_calls(r, 1)
        sources = []
        for fmt, (how, label, _) in PLAN.items():
            if how == "url":
                sources.append({"url": origin.static(f"/{fmt}", bodies[fmt], content_type=label)})
            elif how == "base64":
                sources.append({"content_base64": base64.b64encode(bodies[fmt]).decode(), "audio_type": label})
            else:
                sources.append({"media": "prompt.m4a"})
        status, pb = await req("POST", f"{r.http}/v1/calls/{call.call_id}/playbacks", json={"sources": sources})
        assert status == 201, pb
        ended = await webhooks.wait_for(lambda e: e["type"] == "playback.ended", timeout=20)
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
        await origin.close()
    assert ended["data"]["status"] == "completed", ended
    payload = capture.payload()
    at = -1
    for i, fmt in enumerate(PLAN):
        body = bodies[fmt]
        decoded = decode_bytes(body, sniff(body[:4096]), fmt)
        want = ulaw_encode(decoded)
        found = payload.find(want[: len(want) // 160 * 160], at + 1)
        assert found > at, f"{fmt} did not arrive bit-exact (as decoded) after the previous source"
        at = found
        rate = ENCODED_FORMATS[fmt][2]
        ref = to_telephony(np.round(sweep(SECONDS, rate, f0=100 + 40 * i)[:, 0] * 32767).astype(np.int16), rate, 8000)
        minimum = PLAN[fmt][2]
        if minimum is None:
            assert np.array_equal(decoded, ref), f"{fmt} is lossless: the decode equals the offline resample"
        else:
            got = ulaw_decode(payload[found: found + len(decoded)]).astype(float)
            snr = _snr(ref.astype(float), got)
            assert snr > minimum, f"{fmt}: SNR {snr:.1f} dB"
    assert_stream_continuity(capture)
