"""Early media on inbound calls with SIPp dialing in: 183 with SDP, RTP before the 200, one stream across it.

SIPp (sipp-scenarios/uac_early_*.xml) is the caller; its SDP points RTP at an independent receiver
(mediasrv.rtp.probe) in this process. Checked there: packets before the answer, one SSRC and continuous
sequence numbers and timestamps through the 183 -> 200 change, the prompt bit-exact; at the SIP
level (SIPp's -trace_msg log) the 200 repeating the 183's SDP; and that a CANCEL during early media
or the ring timeout ends the call and gives back its port and sockets.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mediasrv.rtp.probe import analyse, open_capture
from tests.support.audio import chirp_signal, expected_payload, wav_bytes
from tests.support.paths import SCENARIOS
from tests.support.server import Hooks, Running, start_server, wait_until
from tests.support.sipp import assert_stream_continuity, run_sipp

pytestmark = pytest.mark.integration

SILENCE = 0xFF  # PCMU


def sipp_args(r: Running, scenario: str, media_port: int, duration_ms: int, trace: Path | None = None,
              transport: str = "udp") -> list[str]:
    args = ["-t", "t1"] if transport == "tcp" else []
    args += [
        f"127.0.0.1:{r.sip_port}", "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", "0",
        "-set", "rtp_ip", "127.0.0.1", "-set", "rtp_port", str(media_port),
        "-d", str(duration_ms), "-m", "1", "-l", "1", "-timeout", "30s", "-timeout_error",
    ]
    if trace is not None:
        args += ["-trace_msg", "-message_file", str(trace)]
    return args


async def api(r: Running, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.request(method, f"{r.http}{path}", json=body) as resp:
        return resp.status, await resp.json()


async def ringing_call(r: Running) -> Any:
    return await wait_until(
        lambda: next((c for c in r.server.registry.active() if c.state.value == "ringing"), None), 10, "a ringing call"
    )


def udp_socket_fds() -> int:
    """This process's open UDP sockets (fds whose socket inode is in /proc/net/udp or udp6)."""
    inodes: set[str] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                inodes.update(line.split()[9] for line in list(f)[1:])
        except OSError:
            pass
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            count += 1
    return count


def port_is_free(port: int) -> bool:
    """Nothing holds the UDP port (a bind without SO_REUSEPORT fails while any socket is on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def sdp_bodies(trace: Path, status: int) -> list[str]:
    """The SDP bodies of the INVITE responses with *status* that SIPp received (its -trace_msg log)."""
    text = trace.read_text(errors="replace").replace("\r\n", "\n")
    bodies = []
    for chunk in re.split(r"\n-{20,}[^\n]*\n", text):
        msg = chunk[chunk.find("SIP/2.0 "):] if "SIP/2.0 " in chunk else ""
        if msg.startswith(f"SIP/2.0 {status} ") and re.search(r"(?im)^CSeq:\s*1 INVITE", msg):
            bodies.append(msg.split("\n\n", 1)[1].strip() if "\n\n" in msg else "")
    return bodies


async def test_prompt_starts_in_early_media_and_goes_on_through_the_answer(tmp_path: Path, webhooks: Hooks) -> None:
    r = await start_server(tmp_path, webhook_url=webhooks.url, auto_answer=False, codecs=["PCMU"])
    capture = await open_capture()
    trace = tmp_path / "early.log"
    src = chirp_signal(1.5)
    (r.data_dir / "media" / "prompt.wav").write_bytes(wav_bytes(src, 8000))
    try:
        sipp = asyncio.create_task(run_sipp(*sipp_args(r, "uac_early_media.xml", capture.port, 1200, trace), timeout=40))
        call = await ringing_call(r)
        await asyncio.sleep(0.2)
        assert capture.packets == [], "no RTP while the call only rings (180)"
        status, err = await api(r, "POST", f"/v1/calls/{call.call_id}/playbacks", {"media": "prompt.wav",
                                                                                    "early_media": False})
        assert status == 409 and err["error"]["code"] == "call_not_answered"
        status, pb = await api(r, "POST", f"/v1/calls/{call.call_id}/playbacks", {"media": "prompt.wav"})
        assert status == 201, pb
        assert call.state.value == "ringing" and call.early_media
        await wait_until(lambda: len(capture.packets) >= 30, 10, "early media RTP")  # 0.6 s into the prompt
        answer_sent_at = time.time()  # every packet that arrived before this came before the 200
        status, body = await api(r, "POST", f"/v1/calls/{call.call_id}/answer")
        assert status == 200 and body["state"] == "answered" and body["early_media"] is True
        status, err = await api(r, "POST", f"/v1/calls/{call.call_id}/early_media")
        assert status == 409 and err["error"]["code"] == "already_answered"
        ended = await webhooks.wait_for(lambda e: e["type"] == "playback.ended", timeout=10)
        code, out = await sipp
        assert code == 0, out[-3000:]
        await webhooks.wait_for(lambda e: e["type"] == "call.hangup", timeout=10)
        assert r.server.media.ports.in_use == 0
    finally:
        capture.close()
        await r.server.stop()

    pkts = capture.packets
    early = [p for p in pkts if p.arrival < answer_sent_at]
    assert len(early) >= 30, "RTP must flow before the 200"
    payload = capture.payload()
    expected = expected_payload(src, "PCMU")
    at = payload.find(expected)
    assert at >= 0, "the prompt did not arrive bit-exact"
    assert at % 160 == 0 and at // 160 < len(early), "the prompt started before the answer"
    assert at // 160 + len(expected) // 160 > len(early), "and went on after it"
    assert set(payload[:at]) <= {SILENCE} and set(payload[at + len(expected):]) <= {SILENCE}
    assert_stream_continuity(capture)  # one SSRC, seq and timestamp continuous, one marker (the first packet)
    gap_ms = (pkts[len(early)].arrival - early[-1].arrival) * 1000
    assert gap_ms < 80, f"a {gap_ms:.0f} ms hole in the stream at the answer"
    print("early media:", len(early), "packets before the 200;", analyse(pkts).line())

    assert ended["data"]["status"] == "completed" and abs(ended["data"]["ms_played"] - 1500) <= 20
    types = webhooks.of(call.call_id)
    assert types == ["call.initiated", "call.early_media", "playback.started", "call.answered", "playback.ended",
                     "call.hangup"], types
    hangup = next(e for e in webhooks.events if e["type"] == "call.hangup")
    assert hangup["data"]["hangup_by"] == "caller" and hangup["data"]["hangup_cause"] == "normal_clearing"
    [sdp183], [sdp200] = sdp_bodies(trace, 183), sdp_bodies(trace, 200)
    assert sdp183 and sdp183 == sdp200, "the 200 must repeat the 183's SDP (same o= id and version)"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_cancel_during_early_media_frees_the_port_and_sockets(tmp_path: Path, webhooks: Hooks,
                                                                    transport: str) -> None:
    r = await start_server(tmp_path, webhook_url=webhooks.url, auto_answer=False, codecs=["PCMU"])
    capture = await open_capture()
    (r.data_dir / "media" / "loop.wav").write_bytes(wav_bytes(chirp_signal(0.5), 8000))
    try:
        udp_before = udp_socket_fds()
        sipp = asyncio.create_task(run_sipp(*sipp_args(r, "uac_early_cancel.xml", capture.port, 1000,
                                                    transport=transport), timeout=40))
        call = await ringing_call(r)
        status, body = await api(r, "POST", f"/v1/calls/{call.call_id}/early_media")  # ARI progress / pre_answer
        assert status == 200 and body["state"] == "ringing" and body["early_media"] is True
        port = int(body["local_rtp"].rsplit(":", 1)[1])
        assert udp_socket_fds() == udp_before + 3  # RTP, its connected sending twin, RTCP
        status, pb = await api(r, "POST", f"/v1/calls/{call.call_id}/playbacks", {"media": "loop.wav",
                                                                                    "loop": "infinity"})
        assert status == 201, pb
        code, out = await sipp
        assert code == 0, out[-3000:]
        hangup = await webhooks.wait_for(lambda e: e["type"] == "call.hangup", timeout=10)
        ended = await webhooks.wait_for(lambda e: e["type"] == "playback.ended", timeout=10)
        assert (hangup["data"]["hangup_cause"], hangup["data"]["hangup_by"], hangup["data"]["sip_code"]) == (
            "cancelled", "caller", 487)
        assert ended["data"]["status"] == "call_hangup"
        assert len(capture.packets) > 20, "early media flowed until the CANCEL"
        assert r.server.media.ports.in_use == 0 and r.server.media.metrics()["legs"] == 0
        assert udp_socket_fds() == udp_before, "the leg's sockets must all be closed"
        assert port_is_free(port) and port_is_free(port + 1)
        assert r.server.sip.core.sessions == {} and r.server.sip.core.dialogs == {}
        assert webhooks.of(call.call_id)[:2] == ["call.initiated", "call.early_media"]
    finally:
        capture.close()
        await r.server.stop()


async def test_ring_timeout_not_rtp_timeout_ends_unanswered_early_media(tmp_path: Path, webhooks: Hooks) -> None:
    r = await start_server(tmp_path, webhook_url=webhooks.url, auto_answer=False, codecs=["PCMU"],
                           ring_timeout_s=2.0, rtp_timeout_s=0.5)
    capture = await open_capture()
    (r.data_dir / "media" / "p.wav").write_bytes(wav_bytes(chirp_signal(0.3), 8000))
    try:
        sipp = asyncio.create_task(run_sipp(*sipp_args(r, "uac_early_noanswer.xml", capture.port, 0), timeout=40))
        call = await ringing_call(r)
        status, pb = await api(r, "POST", f"/v1/calls/{call.call_id}/playbacks", {"media": "p.wav"})
        assert status == 201, pb
        code, out = await sipp  # SIPp sends no RTP: 1.5 s of silence from the caller before the 480
        assert code == 0, out[-3000:]
        hangup = await webhooks.wait_for(lambda e: e["type"] == "call.hangup", timeout=10)
        assert (hangup["data"]["hangup_cause"], hangup["data"]["sip_code"]) == ("no_answer", 480)
        assert r.server.media.metrics()["media_events"]["rtp_timeouts"] == 0
        assert r.server.media.ports.in_use == 0
        assert len(capture.packets) > 50  # early media ran until the ring timeout
    finally:
        capture.close()
        await r.server.stop()
