"""Plivo ``calls.send_digits`` through the official SDK on real SIPp calls: the digits on the wire as RFC 4733
events, ``leg="bleg"`` on the bridged leg, and the SDK's errors for bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import plivo
import pytest

from mediasrv.rtp.probe import open_capture
from tests.support.httpapi import native_bridge
from tests.support.plivo import plivo_server
from tests.support.sipp import answered_calls, sipp_play_args, start_sipp, te_events

pytestmark = pytest.mark.integration


async def error_of(fn: Any, *args: Any, **kwargs: Any) -> Exception:
    with pytest.raises(plivo.exceptions.PlivoRestError) as info:
        await asyncio.to_thread(fn, *args, **kwargs)
    return info.value


async def test_send_digits_aleg_bleg_and_errors(tmp_path):
    r, client = await plivo_server(tmp_path)
    capture = await open_capture()
    try:
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=3000, calls=2))
        a, b = await answered_calls(r, 2)
        for kwargs, word in [({"digits": "12x"}, "digits"), ({"digits": "ww"}, "digits"),
                             ({"digits": "1", "leg": "cleg"}, "leg"), ({"digits": "1", "leg": "bleg"}, "bridged")]:
            e = await error_of(client.calls.send_digits, a.call_id, **kwargs)
            assert isinstance(e, plivo.exceptions.ValidationError) and word in str(e), (kwargs, e)
        e = await error_of(client.calls.send_digits, "no-such-call", "1")
        assert isinstance(e, plivo.exceptions.ResourceNotFoundError)

        res = await asyncio.to_thread(client.calls.send_digits, a.call_id, "19W#")
        assert res.message == "digits sent" and res.api_id
        e = await error_of(client.calls.send_digits, a.call_id, "5")  # the first send is still going out
        assert isinstance(e, plivo.exceptions.InvalidRequestError) and "digits" in str(e)
        await native_bridge(r, a.call_id, b.call_id)
        await asyncio.to_thread(client.calls.send_digits, a.call_id, "*7", leg="bleg")
        await asyncio.sleep(1.6)
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()

    ssrc_of = {p.ssrc for p in capture.packets if p.pt == 101}
    assert len(ssrc_of) == 2, "events on both legs"
    per_leg = {s: [ev[0].payload[0] for ev in te_events([p for p in capture.packets if p.ssrc == s])]
               for s in ssrc_of}
    assert sorted(per_leg.values()) == sorted([[1, 9, 11], [10, 7]]), per_leg
    [a_ssrc] = [s for s, v in per_leg.items() if v == [1, 9, 11]]
    ev = te_events([p for p in capture.packets if p.ssrc == a_ssrc])
    assert ev[2][0].arrival - ev[1][-1].arrival >= 1.0, "W: a second before the #"
