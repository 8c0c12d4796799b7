"""Playback semantics over real SIPp calls, checked on the RTP an independent receiver captured.

Queue + stop current/all, multi-source with loop and length, overlays (exact sums and spectrum),
pause/resume/seek/skip/restart/volume at packet positions, targets on an inbound leg bridged to an
outbound one (PCMU and PCMA), mix/duck over bridged call audio (SIPp callers talking from pcaps),
hangup mid-play, event order and the native API's errors for bad commands.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import numpy as np
import pytest

from mediacodecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from mediasrv.rtp.probe import CapturedPacket, open_capture
from tests.support.audio import chirp_signal, power_at, wav_bytes
from tests.support.paths import SCENARIOS
from tests.support.ports import free_tcp_udp_port
from tests.support.server import Hooks, Running, start_server
from tests.support.sipp import answered_calls, assert_stream_continuity, run_sipp, sipp_play_args, start_sipp
from tests.support.talker import Talker

pytestmark = pytest.mark.integration

N = 160
SIL = b"\xff" * N


def tone(freq: float, seconds: float, amp: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def padded(pcm: np.ndarray) -> bytes:
    enc = ulaw_encode(pcm)
    return enc + b"\xff" * ((-len(enc)) % N)


async def api(r: Running, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.request(method, f"{r.http}{path}", json=body) as resp:
        return resp.status, await resp.json()


def store(r: Running, name: str, pcm: np.ndarray) -> None:
    (r.data_dir / "media" / name).write_bytes(wav_bytes(pcm, 8000))


def ended(hooks: Hooks, playback_id: str) -> dict[str, Any] | None:
    return next((e["data"] for e in hooks.events
                 if e["type"] == "playback.ended" and e["data"]["playback_id"] == playback_id), None)


async def wait_ended(hooks: Hooks, playback_id: str, timeout: float = 10.0) -> dict[str, Any]:
    e = await hooks.wait_for(lambda e: e["type"] == "playback.ended" and e["data"]["playback_id"] == playback_id,
                             timeout)
    return e["data"]


def by_seq(packets: list[CapturedPacket]) -> dict[int, bytes]:
    return {p.seq: p.payload for p in packets}


def index_of(packets: list[CapturedPacket], payload: bytes) -> int:
    found = [i for i, p in enumerate(packets) if p.payload == payload]
    assert len(found) == 1, f"expected one packet with that audio, found {len(found)}"
    return found[0]


def level(pcm: np.ndarray, freq: float) -> float:
    """Magnitude of *freq* in *pcm* (Hann-windowed DFT bin), normalised per sample."""
    win = np.hanning(len(pcm))
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * win))
    k = int(round(freq * len(pcm) / 8000))
    return float(spec[max(k - 2, 0): k + 3].max() / len(pcm))


async def test_queue_stop_current_all_sources_loop_length_and_errors(tmp_path, webhooks: Hooks):
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    capture = await open_capture()
    try:
        a, b, c, d = (chirp_signal(s, seed=i) for i, s in ((2, 2.0), (3, 0.5), (4, 0.5), (5, 0.3)))
        for name, pcm in (("a.wav", a), ("b.wav", b), ("c.wav", c), ("d.wav", d)):
            store(r, name, pcm)
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=5000))
        [call] = await answered_calls(r, 1)
        cid = call.call_id
        base = f"/v1/calls/{cid}/playbacks"
        for body, status, code in [
            ({"media": "a.wav", "overlay": True}, 422, "nothing_playing"),
            ({"media": "a.wav", "loop": 0}, 422, "out_of_range"),
            ({"media": "a.wav", "loop": 101}, 422, "out_of_range"),
            ({"media": "a.wav", "length_s": -1}, 422, "out_of_range"),
            ({"media": "a.wav", "volume_db": 99}, 422, "out_of_range"),
            ({"media": "a.wav", "target": ["v3:x:nope"]}, 404, "call_not_found"),
            ({"media": "a.wav", "target_legs": "opposite"}, 409, "no_opposite_leg"),
            ({"media": "a.wav", "target": "sideways"}, 400, "invalid_field"),
            ({"media": "a.wav", "stop": "some"}, 400, "invalid_field"),
            ({"media": "a.wav", "overlay": "yes"}, 400, "invalid_field"),
        ]:
            got, err = await api(r, "POST", base, body)
            assert (got, err["error"]["code"]) == (status, code), (body, err)
        got, err = await api(r, "POST", "/v1/playbacks/nope/control", {"op": "pause"})
        assert (got, err["error"]["code"]) == (404, "playback_not_found")

        s1, p_a = await api(r, "POST", base, {"media": "a.wav", "loop": "infinity", "command_id": "A"})
        assert s1 == 201 and p_a["command_id"] == "A" and [p["id"] for p in p_a["playbacks"]] == [p_a["id"]]
        _, p_b = await api(r, "POST", base, {"media": "b.wav"})
        _, p_c = await api(r, "POST", base, {"media": "c.wav"})
        assert p_b["state"] == p_c["state"] == "queued"
        await asyncio.sleep(0.3)
        status, stopped = await api(r, "DELETE", f"{base}?stop=current&command_id=stop-1")
        assert status == 200 and [p["id"] for p in stopped["stopped"]] == [p_a["id"]]
        await webhooks.wait_for(lambda e: e["type"] == "playback.started" and e["data"]["playback_id"] == p_b["id"])
        await asyncio.sleep(0.1)
        s4, p_d = await api(r, "POST", base, {"sources": [{"media": "d.wav"}, {"media": "b.wav"}], "loop": 2,
                                              "length_s": 1.0, "stop": "all"})
        assert s4 == 201
        e_d = await wait_ended(webhooks, p_d["id"])
        status, again = await api(r, "DELETE", f"/v1/playbacks/{p_a['id']}")
        assert status == 200 and again["stopped_now"] is False  # stale stop: a no-op, reported as such
        got, err = await api(r, "POST", f"/v1/playbacks/{p_d['id']}/control", {"op": "pause"})
        assert (got, err["error"]["code"]) == (409, "playback_ended")
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()

    e_a, e_b, e_c = ended(webhooks, p_a["id"]), ended(webhooks, p_b["id"]), ended(webhooks, p_c["id"])
    assert e_a and e_b and e_c
    assert (e_a["status"], e_a["stopped_by"], e_a["command_id"]) == ("stopped", "stop-1", "A")
    assert (e_b["status"], e_b["stopped_by"]) == ("stopped", p_d["id"])
    assert (e_c["status"], e_c["stopped_by"], e_c["last_seq"]) == ("stopped", p_d["id"], None)  # never sent
    assert (e_d["status"], e_d["reason"], e_d["ms_played"]) == ("completed", "length", 1000)

    seqs = by_seq(capture.packets)
    enc_a, enc_b = ulaw_encode(a), ulaw_encode(b)
    # the packet after A's last one is B's first: "stop current" moved the queue on at the next tick
    assert seqs[(e_a["last_seq"] + 1) & 0xFFFF] == enc_b[:N]
    last_a = seqs[e_a["last_seq"]]
    assert last_a in {enc_a[i:i + N] for i in range(0, len(enc_a), N)}
    # D: sources in order, each padded to a packet, capped at 1.0 s inside the second loop
    expected_d = padded(d) + padded(b) + ulaw_encode(d[:8000 - 2400 - 4000])
    payload = capture.payload()
    at = payload.find(expected_d)
    assert at >= 0 and at % N == 0
    assert payload[at + len(expected_d): at + len(expected_d) + N] == SIL
    assert seqs[e_d["last_seq"]] == ulaw_encode(d[1440:1600])
    assert_stream_continuity(capture)
    order = [(e["type"], e["data"]["playback_id"]) for e in webhooks.events if e["type"].startswith("playback.")]
    assert order == [
        ("playback.started", p_a["id"]), ("playback.ended", p_a["id"]),
        ("playback.started", p_b["id"]), ("playback.ended", p_b["id"]), ("playback.ended", p_c["id"]),
        ("playback.started", p_d["id"]), ("playback.ended", p_d["id"]),
    ]


async def test_overlays_sum_exactly_and_stop_overlay_only(tmp_path, webhooks: Hooks):
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    capture = await open_capture()
    try:
        main, over1, over2 = tone(1000, 3.0), tone(440, 0.6), tone(600, 1.0)
        store(r, "main.wav", main)
        store(r, "o1.wav", over1)
        store(r, "o2.wav", over2)
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=4500))
        [call] = await answered_calls(r, 1)
        base = f"/v1/calls/{call.call_id}/playbacks"
        _, p_m = await api(r, "POST", base, {"media": "main.wav"})
        await asyncio.sleep(0.4)
        s1, p_o1 = await api(r, "POST", base, {"media": "o1.wav", "overlay": True})
        assert s1 == 201 and p_o1["overlay"] is True
        e_o1 = await wait_ended(webhooks, p_o1["id"])
        s2, p_o2 = await api(r, "POST", base, {"media": "o2.wav", "overlay": True, "loop": "infinity"})
        assert s2 == 201
        await asyncio.sleep(0.3)
        status, stopped = await api(r, "DELETE", f"{base}?overlay=true")
        assert status == 200 and [p["id"] for p in stopped["stopped"]] == [p_o2["id"]]
        status, playing = await api(r, "GET", f"/v1/playbacks/{p_m['id']}")
        assert playing["state"] == "playing"  # the main playback carried on
        e_m = await wait_ended(webhooks, p_m["id"])
        e_o2 = ended(webhooks, p_o2["id"])
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()

    assert e_o1["status"] == "completed" and e_m["status"] == "completed"
    assert e_o2 and e_o2["status"] == "stopped"
    seqs = by_seq(capture.packets)
    first_m = (e_m["last_seq"] - 149) & 0xFFFF  # 3 s = 150 packets
    first_o1 = (e_o1["last_seq"] - 29) & 0xFFFF  # 0.6 s = 30 packets
    for k in range(30):
        seq = (first_o1 + k) & 0xFFFF
        mo = ((seq - first_m) & 0xFFFF) * N
        mixed = np.clip(main[mo:mo + N].astype(np.int32) + over1[k * N:(k + 1) * N], -32768, 32767)
        assert seqs[seq] == ulaw_encode(mixed.astype(np.int16)), f"overlay packet {k} is not main + overlay"
    assert seqs[(first_o1 - 1) & 0xFFFF] == ulaw_encode(main[((first_o1 - 1 - first_m) & 0xFFFF) * N:][:N])
    during = np.concatenate([ulaw_decode(seqs[(first_o1 + k) & 0xFFFF]) for k in range(5, 25)])
    after = np.concatenate([ulaw_decode(seqs[(e_o1["last_seq"] + k) & 0xFFFF]) for k in range(1, 11)])
    assert level(during, 440) > 0.2 * level(during, 1000) and level(during, 1000) > 1000
    assert level(after, 440) < 0.02 * level(after, 1000)
    o2_packets = [ulaw_decode(seqs[s]) for s in seqs if 0 < (s - e_o1["last_seq"]) & 0xFFFF
                  and (s - e_o2["last_seq"]) & 0xFFFF >= 0x8000]
    assert o2_packets and level(np.concatenate(o2_packets[-10:]), 600) > 1000
    tail = np.concatenate([ulaw_decode(seqs[(e_o2["last_seq"] + k) & 0xFFFF]) for k in range(1, 11)])
    assert level(tail, 600) < 0.02 * level(tail, 1000)  # the overlay stopped, the main went on
    assert_stream_continuity(capture)


async def test_pause_resume_seek_skip_volume_restart_positions(tmp_path, webhooks: Hooks):
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    capture = await open_capture()
    src = chirp_signal(4.0, seed=9)
    enc = ulaw_encode(src)
    pos: dict[str, int] = {}
    try:
        store(r, "long.wav", src)
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=5000))
        [call] = await answered_calls(r, 1)
        _, pb = await api(r, "POST", f"/v1/calls/{call.call_id}/playbacks", {"media": "long.wav"})
        ctl = f"/v1/playbacks/{pb['id']}/control"
        await asyncio.sleep(0.3)
        for op, args, pause_s in [
            ("pause", {}, 0.2), ("resume", {}, 0.2), ("seek", {"ms": 2000}, 0.2), ("skip", {"ms": -1000}, 0.2),
            ("volume", {"db": -6}, 0.3), ("volume", {"db": 0}, 0.2), ("restart", {}, 0.2),
        ]:
            status, body = await api(r, "POST", ctl, {"op": op, **args})
            assert status == 200, body
            pos[f"{op}{args.get('db', '')}"] = body["position_ms"] * 8
            await asyncio.sleep(pause_s)
        assert pos["seek"] == 16000
        for body, code in [({"op": "seek", "ms": 4000}, 422), ({"op": "seek", "ms": -5}, 422),
                           ({"op": "volume", "db": 50}, 422), ({"op": "jump"}, 400), ({"op": "seek"}, 400)]:
            status, err = await api(r, "POST", ctl, body)
            assert status == code, (body, err)
        status, _ = await api(r, "DELETE", f"/v1/playbacks/{pb['id']}")
        e = await wait_ended(webhooks, pb["id"])
        code, out = await sipp
        assert code == 0, out[-3000:]
    finally:
        capture.close()
        await r.server.stop()

    pk = capture.packets
    # pause: the packet before the pause position, then silence, then the very next samples
    p = pos["pause"]
    i = index_of(pk, enc[p - N:p])
    j = next(k for k in range(i + 1, len(pk)) if pk[k].payload != SIL)
    assert 8 <= j - i - 1 <= 30, f"{j - i - 1} silent packets for a 0.2 s pause"
    assert pk[j].payload == enc[p:p + N], "resume continues at the exact sample where pause stopped"
    # seek to 2000 ms and skip back 1000 ms: the next packet starts at exactly that sample
    i = index_of(pk, enc[16000:16000 + N])
    assert pk[i - 1].payload != enc[16000 - N:16000]
    s = pos["skip"]
    moved = s + 8000 - pos["seek"]  # what played between seek and skip (about 0.2 s), before going back 1 s
    assert moved % N == 0 and 0 <= moved <= 60 * N, moved
    i = index_of(pk, enc[s:s + N])
    assert pk[i - 1].payload != enc[s - N:s]
    # volume -6 dB: the same samples at half amplitude, in PCM; then 0 dB is bit-exact again
    v, w = pos["volume-6"], pos["volume0"]
    i = index_of(pk, enc[v - N:v])
    quiet = np.concatenate([ulaw_decode(pk[i + 1 + k].payload) for k in range((w - v) // N)]).astype(np.float64)
    ref = src[v:w].astype(np.float64)
    ratio = float(np.sqrt((quiet ** 2).mean() / (ref ** 2).mean()))
    assert abs(ratio - 10 ** (-6 / 20)) < 0.03, ratio
    assert pk[i + 1 + (w - v) // N].payload == enc[w:w + N]
    # restart: back to the first sample
    starts = [k for k, q in enumerate(pk) if q.payload == enc[:N]]
    assert len(starts) == 2 and pos["restart"] == 0
    before = pk[starts[1] - 1].payload
    assert any(before == enc[o:o + N] for o in range(w, w + 60 * N, N)), "restarted from where it was playing"
    assert e["status"] == "stopped" and e["stopped_by"] == "api"
    order = [e["type"] for e in webhooks.events if e["type"].startswith("playback.")]
    assert order == ["playback.started", "playback.paused", "playback.resumed", "playback.ended"]
    assert_stream_continuity(capture)


async def test_targets_on_an_inbound_and_an_outbound_leg_bridged(tmp_path, webhooks: Hooks):
    """A dials in (SIPp UAC, PCMU); the server dials B (SIPp UAS, PCMA) and bridges them."""
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    cap_a, cap_b = await open_capture(), await open_capture()
    try:
        beep = chirp_signal(0.4, seed=11)
        store(r, "beep.wav", beep)
        sipp_a = await start_sipp(sipp_play_args(r, cap_a.port, duration_ms=5000))
        port_b = free_tcp_udp_port()
        sipp_b = asyncio.create_task(run_sipp(
            "-sf", str(SCENARIOS / "uas_early_media.xml"), "-i", "127.0.0.1", "-p", str(port_b), "-m", "1",
            "-set", "rtp_ip", "127.0.0.1", "-set", "rtp_port", str(cap_b.port), "-d", "300", "-timeout", "30s",
            timeout=45))
        await asyncio.sleep(0.4)
        [a] = await answered_calls(r, 1)
        status, call_b = await api(r, "POST", "/v1/calls", {"to": f"sip:svc@127.0.0.1:{port_b}"})
        assert status == 201, call_b
        b = call_b["call_id"]
        await webhooks.wait_for(lambda e: e["call_id"] == b and e["type"] == "call.answered")
        status, room = await api(r, "POST", f"/v1/calls/{a.call_id}/bridge", {"call_id": b})
        assert status == 200, room
        results = []
        for target in ("opposite", "self", "both"):
            status, body = await api(r, "POST", f"/v1/calls/{a.call_id}/playbacks",
                                     {"media": "beep.wav", "target_legs": target, "command_id": target})
            assert status == 201, body
            results.append(body)
            for p in body["playbacks"]:
                await wait_ended(webhooks, p["id"])
        status, body = await api(r, "POST", f"/v1/calls/{b}/playbacks", {"media": "beep.wav", "target": "opposite"})
        assert status == 201 and [p["call_id"] for p in body["playbacks"]] == [a.call_id]
        await wait_ended(webhooks, body["id"])
        status, _ = await api(r, "DELETE", f"/v1/calls/{b}")
        assert status == 200
        code, out = await sipp_b
        assert code == 0, out[-3000:]
        code, out = await sipp_a
        assert code == 0, out[-3000:]
    finally:
        cap_a.close()
        cap_b.close()
        await r.server.stop()

    legs = {t: [p["call_id"] for p in body["playbacks"]] for t, body in zip(("opposite", "self", "both"), results,
                                                                            strict=True)}
    assert legs == {"opposite": [b], "self": [a.call_id], "both": [a.call_id, b]}
    assert {p.pt for p in cap_b.packets} == {8}
    assert cap_a.payload().count(padded(beep)) == 3  # self, both, and B's "opposite"
    enc_b = alaw_encode(beep)
    assert cap_b.payload().count(enc_b + b"\xd5" * ((-len(enc_b)) % N)) == 2  # opposite and both, in PCMA
    both = [e["data"] for e in webhooks.events if e["type"] == "playback.ended" and e["data"]["command_id"] == "both"]
    assert {e["playback_id"] for e in both} == {p["id"] for p in results[2]["playbacks"]}
    assert all(e["target"] == "both" and e["status"] == "completed" for e in both)


async def test_caller_hangup_mid_play_reports_hangup_first_and_ends_everything(tmp_path, webhooks: Hooks):
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    capture = await open_capture()
    try:
        store(r, "long.wav", chirp_signal(10.0, seed=12))
        store(r, "o.wav", tone(600, 10.0))
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=1500))
        [call] = await answered_calls(r, 1)
        base = f"/v1/calls/{call.call_id}/playbacks"
        _, main = await api(r, "POST", base, {"media": "long.wav"})
        _, queued = await api(r, "POST", base, {"media": "long.wav"})
        _, over = await api(r, "POST", base, {"media": "o.wav", "overlay": True})
        code, out = await sipp
        assert code == 0, out[-3000:]
        hangup = await webhooks.wait_for(lambda e: e["type"] == "call.hangup")
        await wait_ended(webhooks, over["id"])
    finally:
        capture.close()
        await r.server.stop()
    assert hangup["data"]["hangup_by"] == "caller"
    order = [(e["type"], e["data"].get("playback_id")) for e in webhooks.events]
    assert order[2:] == [
        ("playback.started", main["id"]), ("playback.started", over["id"]), ("call.hangup", None),
        ("playback.ended", main["id"]), ("playback.ended", queued["id"]), ("playback.ended", over["id"]),
    ]
    ends = {e["data"]["playback_id"]: e["data"] for e in webhooks.events if e["type"] == "playback.ended"}
    assert all(e["status"] == "call_hangup" for e in ends.values())
    last = capture.packets[-1]
    assert ends[main["id"]]["last_seq"] == ends[over["id"]]["last_seq"] == last.seq  # both were on the last packet
    assert ends[queued["id"]]["last_seq"] is None and 1000 < ends[main["id"]]["ms_played"] < 2000


async def test_mix_true_false_and_duck_over_bridged_call_audio(tmp_path, webhooks: Hooks):
    """A (440 Hz, PCMU) and B (880 Hz, PCMA) talk through a bridge; a 1 kHz prompt plays on top."""

    r = await start_server(tmp_path, webhook_url=webhooks.url)
    a = Talker(tmp_path, "a", 440, "PCMU", 7.0)
    b = Talker(tmp_path, "b", 880, "PCMA", 7.0)
    try:
        store(r, "k.wav", tone(1000, 1.0))
        await asyncio.gather(a.dial(r), b.dial(r))
        status, room = await api(r, "POST", f"/v1/calls/{a.call.call_id}/bridge", {"call_id": b.call.call_id})
        assert status == 200, room
        await asyncio.sleep(0.5)
        ids = {}
        for name, body in [("mix", {"mix": True}), ("nomix", {"mix": False, "target": "both"}),
                           ("duck", {"duck_db": 20})]:
            status, pb = await api(r, "POST", f"/v1/calls/{a.call.call_id}/playbacks", {"media": "k.wav", **body})
            assert status == 201, pb
            ids[name] = [p["id"] for p in pb["playbacks"]]
            for pid in ids[name]:
                await wait_ended(webhooks, pid)
            await asyncio.sleep(0.4)
        await asyncio.gather(a.finish(), b.finish())
    finally:
        a.close()
        b.close()
        await r.server.stop()

    def heard(t: Talker, last_seq: int, first: int, last: int) -> np.ndarray:
        """Decoded audio of packets last_seq+first .. last_seq+last (relative to a playback's last packet)."""
        assert t.capture is not None
        want = {(last_seq + k) & 0xFFFF for k in range(first, last + 1)}
        payload = b"".join(p.payload for p in t.capture.packets if p.seq in want)
        assert len(payload) == len(want) * N
        return ulaw_decode(payload) if t.codec == "PCMU" else alaw_decode(payload)

    def end(pid: str) -> int:
        e = ended(webhooks, pid)
        assert e is not None and e["status"] == "completed" and e["ms_played"] == 1000
        return e["last_seq"]

    # mix=true on A: A hears B's 880 Hz and the prompt; B is not a target and hears A only
    la = end(ids["mix"][0])
    during = heard(a, la, -44, -5)
    assert power_at(during, 1000) > 10 * power_at(during, 440) and power_at(during, 880) > 10 * power_at(during, 440)
    # mix=false on both legs: each hears only the prompt while it plays, the other leg again after
    for t, pid, other in ((a, ids["nomix"][0], 880), (b, ids["nomix"][1], 440)):
        last = end(pid)
        during = heard(t, last, -44, -5)
        after = heard(t, last, 10, 19)
        assert power_at(during, 1000) > 1000 * max(power_at(during, other), 1.0), t.name
        assert power_at(after, other) > 100 * max(power_at(after, 1000), 1.0), t.name
    # duck 20 dB: B's voice on A is lowered about ten times in amplitude, not removed
    ld = end(ids["duck"][0])
    ducked, normal = heard(a, ld, -44, -5), heard(a, ld, 10, 19 + 30)
    ratio = power_at(ducked, 880) / power_at(normal, 880) * (len(normal) / len(ducked))
    assert 0.07 < ratio < 0.14, ratio
    assert power_at(ducked, 1000) > 5 * power_at(ducked, 880)  # 8000 against 8192 / 10
