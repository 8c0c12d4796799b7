"""DTMF with real peers: SIPp places the call; RFC 4733 from a UDP socket (with loss, malformed packets),
SIP INFO from a SIPp scenario; events on the native webhook and Telnyx's signed ``call.dtmf.received``."""

from __future__ import annotations

import asyncio
import random
import struct

import aiohttp
import pytest
from telnyx.types import CallDtmfReceivedWebhookEvent

from mediasrv.demo import free_port_pair
from mediasrv.rtp.probe import analyse, open_capture
from tests.support.audio import chirp_signal, expected_payload, wav_bytes
from tests.support.dtmf_peer import KeyPresser
from tests.support.paths import SCENARIOS
from tests.support.pcap_writer import write_pcap
from tests.support.server import Hooks, start_server
from tests.support.sipp import answered_calls, run_sipp, sipp_play_args, start_sipp, te_events
from tests.support.telnyx import API_KEY, SignedHooks, public_key, sdk_client

pytestmark = pytest.mark.integration


def dtmf_events(webhooks: Hooks, call_id: str) -> list[dict]:
    return [e["data"] for e in webhooks.events if e["type"] == "dtmf.received" and e["call_id"] == call_id]


async def test_rfc4733_with_loss_each_press_once_and_telnyx_webhook(tmp_path, webhooks: Hooks, hooks: SignedHooks):
    r = await start_server(tmp_path, webhook_url=webhooks.url, telnyx_api_key=API_KEY, telnyx_webhook_url=hooks.url)
    client = sdk_client(r)
    hooks.client, hooks.key = client, await public_key(client)
    capture = await open_capture()
    try:
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=5000))
        [call] = await answered_calls(r, 1)
        presser = KeyPresser(capture.sock, call.local_rtp, loss=0.05, rng=random.Random(12))
        rng = random.Random(3)
        digits = "".join(rng.choice("0123456789*#ABCD") for _ in range(40))
        for i, d in enumerate(digits):
            await presser.press(d, updates=rng.randint(2, 6))
            if i % 10 == 5:  # bad input in between: short, not a key, absurd duration, a zero-length end
                presser.raw(b"\x01\x0a")
                presser.raw(bytes([40, 10, 0, 160]))
                presser.raw(bytes([3, 10, 0xFF, 0xFF]))
                presser.raw(bytes([3, 0x8A, 0, 0]))
        await asyncio.sleep(0.8)  # the last press's timeout, if its ends were lost
        got = dtmf_events(webhooks, call.call_id)
        stats = r.server.media.leg_stats(call.call_id)["dtmf"]
        async with aiohttp.ClientSession() as s, s.get(f"{r.http}/metrics") as resp:
            metrics = await resp.text()
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()

    assert presser.dropped > 0, "the run must actually lose packets"
    assert "".join(e["digit"] for e in got) == digits, (len(got), presser.dropped)
    assert all(e["method"] == "rfc4733" and 0 < e["duration_ms"] <= 140 for e in got)
    assert stats["malformed"] == 4 and stats["unsupported"] == 4 and stats["absurd"] == 8, stats
    assert 'mediasrv_dtmf_received_total{method="rfc4733"} 40.0' in metrics
    # the call's own audio went on undisturbed: one stream, no gaps
    report = analyse([p for p in capture.packets if p.pt == 0])
    assert report.ssrcs == 1 and report.seq_errors == 0 and report.ts_errors == 0, report.line()
    telnyx_dtmf = [e for e in hooks.events(call.call_id) if e.data.event_type == "call.dtmf.received"]
    assert all(isinstance(e, CallDtmfReceivedWebhookEvent) for e in telnyx_dtmf)
    assert "".join(e.data.payload.digit for e in telnyx_dtmf) == digits
    p = telnyx_dtmf[0].data.payload
    assert p.call_control_id == call.call_id and p.from_ and p.to and p.call_session_id == call.sip_call_id


async def test_sip_info_dtmf_from_sipp(tmp_path, webhooks: Hooks):
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    capture = await open_capture()
    try:
        code, out = await run_sipp(
            f"127.0.0.1:{r.sip_port}", "-sf", str(SCENARIOS / "uac_info_dtmf.xml"), "-i", "127.0.0.1", "-p", "0",
            "-set", "rtp_ip", "127.0.0.1", "-set", "rtp_port", str(capture.port), "-d", "300",
            "-m", "1", "-l", "1", "-timeout", "30s", "-timeout_error", timeout=40)
        assert code == 0, out[-3000:]
        await webhooks.wait_for(lambda e: e["type"] == "call.hangup")
    finally:
        capture.close()
        await r.server.stop()
    [call_id] = {e["call_id"] for e in webhooks.events}
    assert dtmf_events(webhooks, call_id) == [
        {"digit": "5", "duration_ms": 160, "method": "info"},
        {"digit": "#", "duration_ms": 250, "method": "info"},
    ]


async def post(r, path: str, body: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.post(f"{r.http}{path}", json=body) as resp:
        return resp.status, await resp.json()


def last_arrival_of(capture, audio: bytes) -> float:
    """Kernel arrival time of the last captured packet whose payload is a packet of *audio*."""
    chunks = {audio[i : i + 160] for i in range(0, len(audio) - 159, 160)}
    return max(p.arrival for p in capture.packets if p.payload in chunks)


async def test_barge_in_stops_within_a_packet_time_current_and_all(tmp_path, webhooks: Hooks, audio_origin):
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    capture = await open_capture()
    try:
        long_a, short_b = chirp_signal(4.0, seed=4), chirp_signal(0.4, seed=5)
        url_a = audio_origin.add("a.wav", wav_bytes(long_a, 8000))
        url_b = audio_origin.add("b.wav", wav_bytes(short_b, 8000))
        url_c = audio_origin.add("c.wav", wav_bytes(chirp_signal(4.0, seed=6), 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=4500))
        [call] = await answered_calls(r, 1)
        cid = call.call_id
        presser = KeyPresser(capture.sock, call.local_rtp)
        status, a = await post(r, f"/v1/calls/{cid}/playbacks", {"url": url_a, "barge_in": "#*0"})
        assert status == 201 and a["barge_in"] == "#*0", a
        status, b = await post(r, f"/v1/calls/{cid}/playbacks", {"url": url_b})
        assert status == 201
        await webhooks.wait_for(lambda e: e["type"] == "playback.started" and e["data"]["playback_id"] == a["id"])
        await asyncio.sleep(0.4)
        await presser.press("5")  # not one of a's keys: it plays on
        await asyncio.sleep(0.2)
        assert r.server.media.get_playback(a["id"]).state == "playing"
        await presser.press("#")
        ended_a = await webhooks.wait_for(lambda e: e["type"] == "playback.ended" and e["data"]["playback_id"] == a["id"])
        ended_b = await webhooks.wait_for(lambda e: e["type"] == "playback.ended" and e["data"]["playback_id"] == b["id"])
        # barge_in_stops "all": the queued prompt behind goes too
        _, c = await post(r, f"/v1/calls/{cid}/playbacks", {"url": url_c, "barge_in": "any", "barge_in_stops": "all"})
        _, d = await post(r, f"/v1/calls/{cid}/playbacks", {"url": url_b})
        await webhooks.wait_for(lambda e: e["type"] == "playback.started" and e["data"]["playback_id"] == c["id"])
        await asyncio.sleep(0.3)
        await presser.press("1")
        ended_c = await webhooks.wait_for(lambda e: e["type"] == "playback.ended" and e["data"]["playback_id"] == c["id"])
        ended_d = await webhooks.wait_for(lambda e: e["type"] == "playback.ended" and e["data"]["playback_id"] == d["id"])
        status, bad = await post(r, f"/v1/calls/{cid}/playbacks", {"url": url_b, "barge_in": "#x"})
        assert status == 422 and bad["error"]["details"]["field"] == "barge_in"
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()

    ea = expected_payload(long_a, "PCMU")
    assert ended_a["data"]["status"] == "stopped" and ended_a["data"]["stopped_by"] == "dtmf"
    assert ended_a["data"]["digit"] == "#" and ended_a["data"]["ms_played"] < 2000
    assert ended_b["data"]["status"] == "completed", "barge_in_stops current: the queue moves on"
    latency = last_arrival_of(capture, ea[: ended_a["data"]["ms_played"] * 8]) - presser.first_packet_at[1]
    assert latency <= 0.045, f"the prompt went on {latency * 1000:.1f} ms after the digit's first packet"
    assert (ended_c["data"]["stopped_by"], ended_c["data"]["digit"]) == ("dtmf", "1")
    assert (ended_d["data"]["status"], ended_d["data"]["stopped_by"], ended_d["data"]["digit"]) == ("stopped", "dtmf", "1")
    assert [e["digit"] for e in dtmf_events(webhooks, cid)] == ["5", "#", "1"]


async def test_play_and_collect(tmp_path, webhooks: Hooks, audio_origin):
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    capture = await open_capture()

    async def ended(collect_id: str) -> dict:
        e = await webhooks.wait_for(lambda e: e["type"] == "collect.ended" and e["data"]["id"] == collect_id)
        return e["data"]

    try:
        url = audio_origin.add("menu.wav", wav_bytes(chirp_signal(2.0, seed=8), 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=4500))
        [call] = await answered_calls(r, 1)
        cid = call.call_id
        presser = KeyPresser(capture.sock, call.local_rtp)
        for body, field in [({"min_digits": 5, "max_digits": 3}, "min_digits"), ({"max_digits": 0}, "max_digits"),
                            ({"terminator": "x"}, "terminator"), ({"first_digit_timeout_ms": 0}, "first_digit_timeout_ms"),
                            ({"prompt": {"url": "ftp://x"}}, "prompt.url"), ({"prompt": {"url": url, "overlay": True}},
                                                                              "prompt.overlay")]:
            status, err = await post(r, f"/v1/calls/{cid}/collect", body)
            assert status in (400, 422) and err["error"]["details"]["field"] == field, (body, err)
        status, c1 = await post(r, f"/v1/calls/{cid}/collect", {
            "prompt": {"url": url}, "max_digits": 4, "terminator": "#", "first_digit_timeout_ms": 3000})
        assert status == 201 and c1["state"] == "collecting" and len(c1["prompt_playbacks"]) == 1, c1
        await webhooks.wait_for(lambda e: e["type"] == "playback.started")
        await asyncio.sleep(0.3)
        for d in "12#":
            await presser.press(d)
        e1 = await ended(c1["id"])
        prompt_end = await webhooks.wait_for(lambda e: e["type"] == "playback.ended")
        _, c2 = await post(r, f"/v1/calls/{cid}/collect", {"max_digits": 3, "command_id": "pin"})
        for d in "789":
            await presser.press(d)
        e2 = await ended(c2["id"])
        _, c3 = await post(r, f"/v1/calls/{cid}/collect", {"first_digit_timeout_ms": 300})
        e3 = await ended(c3["id"])
        _, c4 = await post(r, f"/v1/calls/{cid}/collect", {"inter_digit_timeout_ms": 300, "min_digits": 2})
        await presser.press("4")
        e4 = await ended(c4["id"])
        _, c5 = await post(r, f"/v1/calls/{cid}/collect", {"first_digit_timeout_ms": 60000})
        _, c6 = await post(r, f"/v1/calls/{cid}/collect", {"first_digit_timeout_ms": 60000})  # replaces c5
        e5 = await ended(c5["id"])
        code, out = await sipp
        assert code == 0, out[-3000:]
        e6 = await ended(c6["id"])
    finally:
        capture.close()
        await r.server.stop()

    assert (e1["digits"], e1["reason"], e1["valid"]) == ("12", "terminator", True)
    assert prompt_end["data"]["stopped_by"] == "dtmf" and prompt_end["data"]["digit"] == "1"
    assert (e2["digits"], e2["reason"], e2["command_id"]) == ("789", "max_digits", "pin")
    assert (e3["digits"], e3["reason"], e3["valid"]) == ("", "timeout", False)
    assert (e4["digits"], e4["reason"], e4["valid"]) == ("4", "timeout", False)
    assert (e5["reason"], e6["reason"]) == ("stopped", "call_hangup")
    assert [e["type"] for e in webhooks.events if e["type"] == "collect.ended"] == ["collect.ended"] * 6


async def test_dtmf_out_rfc4733_on_the_media_clock(tmp_path, webhooks: Hooks, audio_origin):
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    capture = await open_capture()
    try:
        prompt = chirp_signal(1.5, seed=9)
        url = audio_origin.add("p.wav", wav_bytes(prompt, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=3200))
        [call] = await answered_calls(r, 1)
        cid = call.call_id
        await post(r, f"/v1/calls/{cid}/playbacks", {"url": url})
        await webhooks.wait_for(lambda e: e["type"] == "playback.started")
        await asyncio.sleep(0.3)
        status, sent = await post(r, f"/v1/calls/{cid}/dtmf", {"digits": "123#", "duration_ms": 100})
        assert status == 202 and sent["method"] == "rfc4733", sent
        status, busy = await post(r, f"/v1/calls/{cid}/dtmf", {"digits": "9"})
        assert status == 409 and busy["error"]["code"] == "dtmf_in_progress"
        status, bad = await post(r, f"/v1/calls/{cid}/dtmf", {"digits": "12x"})
        assert status == 422 and bad["error"]["details"]["field"] == "digits"
        await webhooks.wait_for(lambda e: e["type"] == "dtmf.sent", timeout=5)
        ended = await webhooks.wait_for(lambda e: e["type"] == "playback.ended", timeout=5)
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()

    pkts = capture.packets
    seqs = [p.seq for p in pkts]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:])), "one sequence across audio and events"
    assert len({p.ssrc for p in pkts}) == 1
    events = te_events(pkts)
    assert [e[0].payload[0] for e in events] == [1, 2, 3, 11]
    for ev in events:
        durs = [int.from_bytes(p.payload[2:4], "big") for p in ev]
        ends = [p for p in ev if p.payload[1] & 0x80]
        assert ev[0].marker and not any(p.marker for p in ev[1:])
        assert durs == [160, 320, 480, 640, 800, 800, 800] and len(ends) == 3 and ends == ev[-3:]
        first = pkts.index(ev[0])
        # the event timestamp is the media clock at its first packet: the previous packet's + 160
        assert ev[0].ts == (pkts[first - 1].ts + 160) & 0xFFFFFFFF
    after = pkts.index(events[-1][-1]) + 1
    assert pkts[after].pt == 0 and pkts[after].ts == (events[-1][0].ts + 7 * 160) & 0xFFFFFFFF
    # the prompt waited: with the silence and events taken out, it is whole and bit-exact
    audio = b"".join(p.payload for p in pkts if p.pt == 0 and p.payload != b"\xff" * 160)
    assert expected_payload(prompt, "PCMU") in audio
    assert ended["data"]["status"] == "completed" and abs(ended["data"]["ms_played"] - 1500) <= 20


async def test_dtmf_out_inband_when_no_telephone_event(tmp_path, webhooks: Hooks):
    import numpy as np

    from mediacodecs.g711 import decode as g711_decode
    from mediasrv.content.tones import DTMF_FREQS

    r = await start_server(tmp_path, webhook_url=webhooks.url)
    capture = await open_capture()
    try:
        args = sipp_play_args(r, capture.port, duration_ms=1500)
        args[args.index("-sf") + 1] = str(SCENARIOS / "uac_play_no_te.xml")
        sipp = await start_sipp(args)
        [call] = await answered_calls(r, 1)
        status, sent = await post(r, f"/v1/calls/{call.call_id}/dtmf", {"digits": "19#", "duration_ms": 100})
        assert status == 202 and sent["method"] == "inband", sent
        await webhooks.wait_for(lambda e: e["type"] == "dtmf.sent", timeout=5)
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()
    assert all(p.pt == 0 for p in capture.packets)
    toned = [p for p in capture.packets if p.payload != b"\xff" * 160]
    assert len(toned) == 3 * 5  # three 100 ms tones (the 60 ms gaps between them are silence)
    pcm = g711_decode("PCMU", b"".join(p.payload for p in capture.packets[capture.packets.index(toned[0]):]))
    freqs = np.fft.rfftfreq(800, 1 / 8000)
    for k, d in enumerate("19#"):
        seg = pcm[k * 1280 : k * 1280 + 800].astype(float)
        spec = np.abs(np.fft.rfft(seg * np.hanning(800)))
        top = sorted(freqs[np.argsort(spec)[-40:]])
        lo, hi = DTMF_FREQS[d]
        assert any(abs(f - lo) < 15 for f in top) and any(abs(f - hi) < 15 for f in top), (d, top)
        assert not any(abs(f - 1633) < 15 for f in top) or hi == 1633


async def test_tone_and_digits_sources_and_offset(tmp_path, webhooks: Hooks, audio_origin):
    import numpy as np

    from mediacodecs.g711 import decode as g711_decode
    from mediasrv.content.tones import DTMF_FREQS

    r = await start_server(tmp_path, webhook_url=webhooks.url)
    capture = await open_capture()
    try:
        prompt = chirp_signal(1.0, seed=10)
        url = audio_origin.add("p.wav", wav_bytes(prompt, 8000))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=3800))
        [call] = await answered_calls(r, 1)
        cid = call.call_id
        for body, field in [({"tone": "440+:100/100"}, "tone"), ({"tone": "ring/zz"}, "tone"),
                            ({"digits": "12x"}, "digits"), ({"tone": "ring", "url": url}, "url"),
                            ({"tone": "busy", "cache": True}, "cache"), ({"url": url, "offset_ms": -1}, "offset_ms"),
                            ({"sources": [{"url": url}, {"digits": "1", "digit_ms": 10}]}, "sources[1].digits")]:
            status, err = await post(r, f"/v1/calls/{cid}/playbacks", body)
            assert status in (400, 422) and err["error"]["details"]["field"] == field, (body, err)
        status, pb = await post(r, f"/v1/calls/{cid}/playbacks", {"sources": [
            {"tone": "440+480:400/200"}, {"digits": "5#", "digit_ms": 200, "gap_ms": 100}, {"tone": "busy/de",
                                                                                              "duration_ms": 200}]})
        assert status == 201 and pb["source"] == "tone:440+480:400/200, digits:5#, tone:busy/de", pb
        await webhooks.wait_for(lambda e: e["type"] == "playback.ended" and e["data"]["playback_id"] == pb["id"])
        status, off = await post(r, f"/v1/calls/{cid}/playbacks", {"url": url, "offset_ms": 600, "loop": 2})
        assert status == 201
        ended = await webhooks.wait_for(lambda e: e["type"] == "playback.ended" and e["data"]["playback_id"] == off["id"])
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()

    payload = capture.payload()
    e = expected_payload(prompt, "PCMU")
    at = payload.find(e[4800:] + e)
    assert at >= 0 and at % 160 == 0, "offset_ms applies to the first iteration only"
    assert ended["data"]["ms_played"] == 400 + 1000

    pcm = g711_decode("PCMU", payload).astype(float)
    start = next(i for i in range(0, len(pcm), 160) if np.abs(pcm[i : i + 160]).max() > 500)

    def peaks(seg: np.ndarray, k: int = 2) -> list[float]:
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
        freqs = np.fft.rfftfreq(len(seg), 1 / 8000)
        out: list[float] = []
        for i in np.argsort(spec)[::-1]:
            if all(abs(freqs[i] - f) > 40 for f in out):
                out.append(float(freqs[i]))
            if len(out) == k:
                return sorted(out)
        return sorted(out)

    s = start
    assert peaks(pcm[s : s + 3200]) == pytest.approx([440, 480], abs=5)  # 400 ms of ring-back tone
    assert np.abs(pcm[s + 3200 + 80 : s + 4800 - 80]).max() < 50  # its 200 ms off
    d = s + 4800  # the digits source starts on the next packet boundary (4800 is one)
    assert peaks(pcm[d : d + 1600]) == pytest.approx(list(DTMF_FREQS["5"]), abs=10)
    assert peaks(pcm[d + 2400 : d + 4000]) == pytest.approx(list(DTMF_FREQS["#"]), abs=10)
    b = d + 4000
    assert peaks(pcm[b : b + 1600], 1) == pytest.approx([425], abs=10)  # German busy, 200 ms


def _press_rtp(digit: str, ts: int, seq: int, updates: int = 4) -> list[bytes]:
    event = "0123456789*#ABCD".index(digit)
    out = []
    for k in range(1, updates + 1):
        out.append(struct.pack("!BBHII", 0x80, 101 | (0x80 if k == 1 else 0), seq, ts, 0xABCDEF)
                   + struct.pack("!BBH", event, 10, k * 160))
        seq += 1
    for _ in range(3):
        out.append(struct.pack("!BBHII", 0x80, 101, seq, ts, 0xABCDEF) + struct.pack("!BBH", event, 0x8A, (updates + 1) * 160))
        seq += 1
    return out


async def test_sipp_plays_rfc4733_from_a_pcap(tmp_path, webhooks: Hooks):
    """SIPp itself sends the key presses (play_pcap_audio), from a pcap written now: "1" whole, "5" with all
    three end packets lost (reported when "#" starts), "#" with its first two packets lost."""
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    try:
        pkts = _press_rtp("1", 160_000, 100) + _press_rtp("5", 161_600, 107)[:4] + _press_rtp("#", 163_200, 114)[2:]
        write_pcap(tmp_path / "keys.pcap", [(0.2 + 0.02 * i, p) for i, p in enumerate(pkts)])
        scenario = tmp_path / "uac_pcap_dtmf.xml"
        scenario.write_text((SCENARIOS / "uac_pcap_dtmf.xml").read_text().replace("PCAP_FILE", str(tmp_path / "keys.pcap")))
        media_port = free_port_pair()
        code, out = await run_sipp(
            f"127.0.0.1:{r.sip_port}", "-sf", str(scenario), "-i", "127.0.0.1", "-p", "0", "-mi", "127.0.0.1",
            "-mp", str(media_port), "-d", "1500", "-m", "1", "-l", "1", "-timeout", "30s", "-timeout_error",
            timeout=40)
        assert code == 0, out[-3000:]
        await webhooks.wait_for(lambda e: e["type"] == "call.hangup")
    finally:
        await r.server.stop()
    [call_id] = {e["call_id"] for e in webhooks.events}
    assert dtmf_events(webhooks, call_id) == [
        {"digit": "1", "duration_ms": 100, "method": "rfc4733"},
        {"digit": "5", "duration_ms": 80, "method": "rfc4733"},
        {"digit": "#", "duration_ms": 100, "method": "rfc4733"},
    ]
