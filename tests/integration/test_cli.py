"""The operator commands in a real terminal (pexpect's pty) against a live server with a SIPp call."""

from __future__ import annotations

import logging
import os
import re
import sys

import pexpect
import pytest

from tests.support.audio import chirp_signal, wav_bytes
from tests.support.paths import REPO
from tests.support.server import hang_up_all, start_server
from tests.support.sipp import answered_calls, sipp_caller, start_sipp

pytestmark = pytest.mark.integration


TOKEN = "cli-secret"


def spawn(http: str, *args: str, token: str | None = TOKEN) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if k != "MEDIASRV_API_TOKEN"}
    env.update(PYTHONPATH=str(REPO), TERM="xterm", **({"MEDIASRV_API_TOKEN": token} if token else {}))
    return pexpect.spawn(sys.executable, ["-m", "mediasrv", *args, "--url", http], env=env, encoding="utf-8",
                         dimensions=(40, 160), timeout=15)


async def finish(child: pexpect.spawn) -> tuple[int, str]:
    await child.expect(pexpect.EOF, async_=True)
    child.close()
    out = child.before or ""
    return child.exitstatus, out


async def test_calls_play_top_events_stop_in_a_terminal(tmp_path):
    r = await start_server(tmp_path, api_token=TOKEN)
    (r.data_dir / "media" / "chirp.wav").write_bytes(wav_bytes(chirp_signal(20.0), 8000))
    sipp = await start_sipp(sipp_caller(r))
    children: list[pexpect.spawn] = []
    try:
        call_id = (await answered_calls(r, 1))[0].call_id

        child = spawn(r.http, "calls")
        await child.expect(re.escape(call_id) + r"\s+answered\s+inb", async_=True)
        await child.expect(r"1 call\(s\)", async_=True)
        assert (await finish(child))[0] == 0

        follow = spawn(r.http, "events", "--follow", "--call", call_id)
        children.append(follow)
        await follow.expect(r"call.answered\s+" + re.escape(call_id), async_=True)  # the history first

        child = spawn(r.http, "play", call_id, "chirp.wav")
        await child.expect(r"(p3:[\w.-]+:[0-9a-f]{32}) \w+ media:chirp.wav", async_=True)
        playback_id = child.match.group(1)
        assert (await finish(child))[0] == 0
        await follow.expect(r"playback.started\s+" + re.escape(call_id), async_=True)  # then live

        top = spawn(r.http, "top", "--interval", "0.3")
        children.append(top)
        await top.expect(r"LATE ms\s+MAX/60s\s+dBFS\s+PLAYBACK", async_=True)
        # progress and pacing come from the live server: a bar that moves, a lateness figure, a level
        await top.expect(r"answered\s+\d+:\d\d\s+(\d+\.\d\d)\s+\d+\.\d\d\s+-?\d+\s+media:chirp.wav \[#*-*\]\s+(\d+\.\d)/20\.0s",
                         async_=True)
        first = float(top.match.group(2))
        await top.expect(r"media:chirp.wav \[#*-*\]\s+(\d+\.\d)/20\.0s", async_=True)
        await top.expect(r"media:chirp.wav \[#*-*\]\s+(\d+\.\d)/20\.0s", async_=True)
        assert float(top.match.group(1)) > first
        top.send("q")
        status, out = await finish(top)
        assert status == 0 and "Traceback" not in out

        child = spawn(r.http, "stop", playback_id)
        await child.expect(playback_id + " stopped", async_=True)
        assert (await finish(child))[0] == 0
        await follow.expect(r"playback.ended\s+" + re.escape(call_id) + r" playback_id=" + playback_id
                            + r" status=stopped", async_=True)
        follow.sendintr()
        await finish(follow)

        # mistakes: one line and an exit code, never a traceback
        for args, token, code, pattern in [
            (("calls",), "wrong", 3, "unauthorized by .*: MEDIASRV_API_TOKEN is wrong"),
            (("top",), None, 3, "unauthorized by .*: MEDIASRV_API_TOKEN is not set"),
            (("events", "--follow"), "wrong", 3, "unauthorized"),
            (("play", "nope", "chirp.wav"), TOKEN, 4, "404 no call with id 'nope'"),
        ]:
            child = spawn(r.http, *args, token=token)
            status, out = await finish(child)
            assert status == code and re.search(pattern, out) and "Traceback" not in out, (args, status, out)
        child = pexpect.spawn(sys.executable, ["-m", "mediasrv", "calls", "--url", "http://127.0.0.1:9"],
                              env={**os.environ, "PYTHONPATH": str(REPO)}, encoding="utf-8", timeout=15)
        status, out = await finish(child)
        assert status == 1 and "cannot reach mediasrv at http://127.0.0.1:9" in out and "Traceback" not in out
    finally:
        for c in children:
            c.terminate(force=True)
        await hang_up_all(r)
        rc, out = await sipp
        await r.server.stop()
    assert rc == 0, out[-2000:]


async def test_cli_wording_loop_and_quiet_polling(tmp_path, caplog):
    """Issue 13's leftovers: `stop` of an unknown id, `--loop 0`, the unreachable message, and `top`'s
    polling kept out of the INFO access log while a command the operator gives stays in it."""
    caplog.set_level(logging.DEBUG, logger="mediasrv.access")
    r = await start_server(tmp_path, api_token=TOKEN)
    (r.data_dir / "media" / "chirp.wav").write_bytes(wav_bytes(chirp_signal(5.0), 8000))
    sipp = await start_sipp(sipp_caller(r))
    try:
        call_id = (await answered_calls(r, 1))[0].call_id
        status, out = await finish(spawn(r.http, "stop", "nosuchid"))
        assert status == 4 and "404 no playback or call with id 'nosuchid'" in out, out

        status, out = await finish(spawn(r.http, "play", call_id, "chirp.wav", "--loop", "0"))
        assert status == 2 and "'infinity' to play until stopped" in out and "Traceback" not in out, out
        child = spawn(r.http, "play", call_id, "chirp.wav", "--loop", "infinity")
        await child.expect(r"p3:\S+ \w+ media:chirp.wav", async_=True)
        assert (await finish(child))[0] == 0

        top = spawn(r.http, "top", "--once")
        await top.expect(r"calls 1 live, 0 ended", async_=True)
        await top.expect(r"media:chirp.wav \[#*-*\]\s+\d+\.\d/5\.0s loop ∞", async_=True)
        assert (await finish(top))[0] == 0
        status, out = await finish(spawn(r.http, "calls"))
        assert status == 0 and "1 call(s) live, 0 ended" in out and "loop ∞" in out, out

        cli = [rec for rec in caplog.records if rec.name == "mediasrv.access" and "mediasrv-cli/" in rec.getMessage()]
        polls = [rec for rec in cli if '"GET ' in rec.getMessage()]
        commands = [rec for rec in cli if '"POST ' in rec.getMessage()]
        assert polls and all(rec.levelno == logging.DEBUG for rec in polls), [rec.getMessage() for rec in polls]
        assert commands and all(rec.levelno == logging.INFO for rec in commands)

        status, out = await finish(pexpect.spawn(sys.executable, ["-m", "mediasrv", "calls", "--url", "http://127.0.0.1:9"],
                                                 env={**os.environ, "PYTHONPATH": str(REPO)}, encoding="utf-8",
                                                 timeout=15))
        assert status == 1 and "cannot reach mediasrv at http://127.0.0.1:9: connection refused" in out, out
        assert "ssl:default" not in out
    finally:
        await hang_up_all(r)
        await sipp
        await r.server.stop()
