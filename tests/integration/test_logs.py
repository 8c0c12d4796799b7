"""Operator logs from a real ``mediasrv serve`` process: one SIPp call, a play, a refused fetch, a BYE.

Every line that concerns the call carries its id (from the logging context, not pasted into
the message); the JSON format gives one object per line; the access log has one line per
request; attacker-chosen text is clipped and escaped.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket

import aiohttp
import numpy as np
import pytest
from yarl import URL

from mediasrv.ops.logs import CallIdFilter, JsonFormatter, TextFormatter, call_context
from tests.support.audio import wav_bytes
from tests.support.paths import SCENARIOS
from tests.support.server import start_serve
from tests.support.sipp import run_sipp

pytestmark = pytest.mark.integration


async def test_one_call_in_json_lines(tmp_path):
    proc, http, sip_port = await start_serve(tmp_path, "--log-format", "json",
                                             env={"MEDIASRV_AUTOANSWER": "1"})  # misspelt: warned
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    try:
        sipp = asyncio.create_task(run_sipp(
            f"127.0.0.1:{sip_port}", "-sf", str(SCENARIOS / "uac_play.xml"), "-i", "127.0.0.1", "-p", "0",
            "-set", "rtp_ip", "127.0.0.1", "-set", "rtp_port", str(rtp.getsockname()[1]), "-d", "2500",
            "-m", "1", "-timeout", "30s", "-timeout_error", timeout=40))
        async with aiohttp.ClientSession() as s:
            async def calls() -> list:
                async with s.get(f"{http}/v1/calls?state=answered") as resp:
                    return (await resp.json())["calls"]

            call_id = None
            for _ in range(100):
                found = await calls()
                if found:
                    call_id = found[0]["call_id"]
                    break
                await asyncio.sleep(0.05)
            assert call_id, "no answered call"
            t = np.arange(4000) / 8000
            wav = wav_bytes((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16), 8000)
            play = {"content_base64": base64.b64encode(wav).decode(), "audio_type": "wav"}
            async with s.post(f"{http}/v1/calls/{call_id}/playbacks", json=play) as resp:
                assert resp.status == 201
            async with s.post(f"{http}/v1/calls/{call_id}/playbacks", json={"url": "http://127.0.0.1:9/a.wav"}) as resp:
                assert resp.status == 201  # refused by the address policy: the playback fails
            async with s.get(URL(f"{http}/v1/x%0D%0AINFO%20forged%20line", encoded=True)) as resp:
                assert resp.status == 404
            async with s.post(f"{http}/v1/calls/{call_id}/playbacks", json={"media": "x.wav", "loops": 2}) as resp:
                assert resp.status == 400
        code, out = await sipp
        assert code == 0, out[-2000:]
    finally:
        rtp.close()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = err.decode().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    ours = [r for r in records if r.get("call_id") == call_id]
    msgs = [r["msg"] for r in ours]

    def one(prefix: str) -> dict:
        hits = [r for r in ours if r["msg"].startswith(prefix)]
        assert hits, (prefix, msgs)
        return hits[0]

    offered = one("call offered: from ")
    assert offered["logger"] == "mediasrv.calls" and offered["direction"] == "inbound"
    assert one("call answered: PCMU")["codec"] == "PCMU"
    assert one("playback started: ")["event"] == "playback.started"
    done = [r for r in ours if r["msg"].startswith("playback ended: ") and r["status"] == "completed"]
    assert done and 400 <= done[0]["ms_played"] <= 600
    failed = [r for r in ours if r["msg"].startswith("playback ended: ") and r["status"] == "failed"]
    assert failed and failed[0]["reason"]
    assert one("fetch failed: ")["reason"] == failed[0]["reason"]
    ended = one("call ended: cause normal_clearing by caller")
    assert ended["cause"] == "normal_clearing" and ended["by"] == "caller"
    access = [r for r in ours if r["logger"] == "mediasrv.access"]
    assert len(access) == 3 and {r["http_status"] for r in access} == {201, 400}
    assert any("/v1/x\\r\\nINFO forged line" in r["msg"] for r in records)  # escaped, on one line
    assert not any(line.startswith("INFO forged") for line in lines)
    assert any(r["msg"].startswith("unknown environment variable MEDIASRV_AUTOANSWER is ignored (did you mean "
                                   "MEDIASRV_AUTO_ANSWER?)") for r in records)
    # GET /v1/calls names no call: its access lines carry none
    assert all(r.get("call_id") is None for r in records if r["msg"].startswith('127.0.0.1 "GET /v1/calls'))


async def test_no_access_log_and_text_format(tmp_path):
    proc, http, _ = await start_serve(tmp_path, "--no-access-log", "--log-level", "DEBUG")
    try:
        async with aiohttp.ClientSession() as s, s.get(f"{http}/healthz") as resp:
            assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    text = err.decode()
    assert "mediasrv up: node " in text and ", SIP " in text and "/healthz" not in text
    assert all(line[:4].isdigit() and "Z " in line for line in text.splitlines() if line)


def test_formatters_carry_the_context_call_id():
    import logging

    record = logging.LogRecord("mediasrv.sip", logging.INFO, __file__, 1, "no ACK for %s", ("2xx",), None)
    with call_context("abc123"):
        CallIdFilter().filter(record)
    assert TextFormatter().format(record).endswith(" INFO mediasrv.sip [call=abc123]: no ACK for 2xx")
    assert json.loads(JsonFormatter().format(record))["call_id"] == "abc123"
    bare = logging.LogRecord("mediasrv.server", logging.INFO, __file__, 1, "up", (), None)
    CallIdFilter().filter(bare)
    assert "[call=" not in TextFormatter().format(bare) and "call_id" not in json.loads(JsonFormatter().format(bare))
