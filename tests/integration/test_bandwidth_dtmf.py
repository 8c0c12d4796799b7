"""Bandwidth BXML ``<SendDtmf>`` and ``<Gather>`` through the official bandwidth-sdk on a real SIPp call: digits
on the wire as RFC 4733 (with the ``w`` pause), keys pressed from the call's RTP address, the ``gather``
callback parsed with the SDK's GatherCallback model, the document it answers played bit-exact."""

from __future__ import annotations

import asyncio

import pytest
from bandwidth.exceptions import BadRequestException
from bandwidth.models import DtmfCallback, GatherCallback
from bandwidth.models.bxml import (
    Bxml,
    Gather,
    PlayAudio,
    Response,
    SendDtmf,
    SpeakSentence,
    StartGather,
    StopGather,
)

from mediasrv.rtp.probe import open_capture
from tests.support.audio import chirp_signal, expected_payload, wav_bytes
from tests.support.bandwidth import ACCOUNT, CREDS, calls_api
from tests.support.dtmf_peer import KeyPresser
from tests.support.server import start_server, wait_until
from tests.support.sipp import answered_calls, sipp_play_args, start_sipp, te_events

pytestmark = pytest.mark.integration


async def test_send_dtmf_and_gather_with_callback(tmp_path, origin, webhooks):
    r = await start_server(tmp_path, webhook_url=webhooks.url, **CREDS)
    capture = await open_capture()
    try:
        menu, thanks = chirp_signal(1.5, seed=41), chirp_signal(0.4, seed=42)
        url_menu = origin.add("menu.wav", wav_bytes(menu, 8000), "audio/wav")
        origin.add("thanks.wav", wav_bytes(thanks, 8000), "audio/wav")
        done = chirp_signal(0.3, seed=43)
        url_done = origin.add("done.wav", wav_bytes(done, 8000), "audio/wav")
        gather_url = origin.add("bxml/gathered", Response([PlayAudio("../thanks.wav")]).to_bxml())
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=7000))
        [call] = await answered_calls(r, 1)
        api = calls_api(r)
        for verb, word in [(SendDtmf("12x"), "digits"), (SendDtmf("1", tone_duration=9000), "toneDuration"),
                           (Gather([PlayAudio(url_menu)], max_digits=0), "maxDigits"),
                           (Gather([PlayAudio(url_menu)], terminating_digits="x"), "terminatingDigits"),
                           (Gather([SpeakSentence("Hi", voice="nobody")]), "voice"),
                           (Gather([PlayAudio(url_menu)], input="speech"), "speech")]:
            with pytest.raises(BadRequestException) as info:
                await asyncio.to_thread(api.update_call_bxml, ACCOUNT, call.call_id, Bxml([verb]).to_bxml())
            assert word in info.value.data.description, (word, info.value.data.description)
        with pytest.raises(BadRequestException) as info:
            await asyncio.to_thread(api.update_call_bxml, ACCOUNT, call.call_id, "<Bxml><Gather><Hangup/></Gather></Bxml>")
        assert "<Hangup>" in info.value.data.description

        dtmf_url = origin.add("dtmf", "")  # the dtmf callbacks' answer is not run: empty
        bxml = Bxml([StartGather(dtmf_url, tag="keys"), SendDtmf("1w2", tone_duration=100, tone_interval=100),
                     Gather([PlayAudio(url_menu)], gather_url=gather_url, max_digits=4, terminating_digits="#",
                            first_digit_timeout=3, tag="menu")]).to_bxml()
        await asyncio.to_thread(api.update_call_bxml, ACCOUNT, call.call_id, bxml)
        await wait_until(lambda: any(e["type"] == "playback.started" for e in webhooks.events), 10, "the prompt")
        await asyncio.sleep(0.4)
        presser = KeyPresser(capture.sock, call.local_rtp)
        for d in "34#":
            await presser.press(d)
        await wait_until(lambda: len([e for e in webhooks.events if e["type"] == "playback.ended"]) >= 2, 10,
                         "the callback's document played")
        # a spoken prompt; no gatherUrl: the document goes on after the gather
        bxml = Bxml([StopGather(), Gather([SpeakSentence("Press one.", locale="en_US", gender="female")], max_digits=1,
                            first_digit_timeout=3), PlayAudio(url_done)]).to_bxml()
        await asyncio.to_thread(api.update_call_bxml, ACCOUNT, call.call_id, bxml)
        await wait_until(lambda: len([e for e in webhooks.events if e["type"] == "playback.started"]) >= 3, 10,
                         "the spoken prompt")
        await asyncio.sleep(0.3)
        await presser.press("1")
        await wait_until(lambda: len([e for e in webhooks.events if e["type"] == "playback.ended"]) >= 4, 10,
                         "the verb after the gather played")
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()

    [hit] = origin.hits("bxml/gathered")
    cb = GatherCallback.from_dict(hit["json"])
    assert (cb.event_type, cb.digits, cb.terminating_digit, cb.tag) == ("gather", "34", "#", "menu")
    assert cb.call_id == call.call_id and cb.account_id == ACCOUNT
    keys = [DtmfCallback.from_dict(h["json"]) for h in origin.hits("dtmf")]
    assert [(k.event_type, k.digit, k.tag) for k in keys] == [("dtmf", "3", "keys"), ("dtmf", "4", "keys"),
                                                              ("dtmf", "#", "keys")], "StopGather: not the 1"
    events = te_events(capture.packets)
    assert [ev[0].payload[0] for ev in events] == [1, 2]
    assert events[1][0].arrival - events[0][0].arrival >= 0.5 + 0.1, "w: half a second between the digits"
    payload = capture.payload()
    em = expected_payload(menu, "PCMU")
    assert payload.find(em[:2400]) >= 0 and payload.find(em) < 0, "the first key cut the prompt"
    assert payload.find(expected_payload(thanks, "PCMU")) > payload.find(em[:2400])
    ended = [e["data"] for e in webhooks.events if e["type"] == "playback.ended"]
    assert (ended[2]["status"], ended[2]["stopped_by"], ended[2]["digit"]) == ("stopped", "dtmf", "1"), ended[2]
    assert ended[3]["status"] == "completed" and payload.find(expected_payload(done, "PCMU")) > 0
