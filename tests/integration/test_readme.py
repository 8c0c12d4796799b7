"""The README's API examples, run as written: real curl (and sox, base64) against ``mediasrv serve``.

Two calls placed by SIPp stand for ``$CALL`` and ``$OTHER``; ``$PLAYBACK`` is the call's current
playback (or the last one a play answered), ``$COLLECT`` the last collect started and ``$ROOM`` a
room made beforehand. Only the port
numbers are changed (free ones instead of 8080 and 8000). The server runs with the allow the
README documents for its loopback URL example (``MEDIASRV_FETCH_ALLOW_CIDRS=127.0.0.0/8``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import sys

import aiohttp
import pytest

from tests.support.paths import REPO, SCENARIOS, require
from tests.support.ports import free_tcp_udp_port
from tests.support.server import start_serve
from tests.support.sipp import run_sipp

pytestmark = pytest.mark.integration

# the commands that answer an error on purpose, and why
EXPECTED_ERRORS = {
    "/answer": "already_answered",  # the README says: with --ring; this server auto-answers
    "/early_media": "already_answered",  # the same: with --ring
    "/media-cache/prefetch": None,  # cdn.example.com: an illustration, not reachable from here
}
EXTERNAL = "cdn.example.com"  # plays of it are accepted (201) and then fail: nothing to fetch from here


def readme_commands() -> list[str]:
    """The logical shell commands of the README's "The API by example" block (continuations joined)."""
    text = (REPO / "README.md").read_text()
    block = text.split("## The API by example\n", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands: list[str] = []
    pending = ""
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending = f"{pending}\n{line}" if pending else line
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on on the next line
            continue
        commands.append(pending)
        pending = ""
    assert not pending, pending
    return commands


def json_docs(text: str) -> list[object]:
    """Every JSON document in *text* (``a ; b`` prints two)."""
    decoder, docs, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)
    return docs


async def test_readme_curl_examples_run_as_written(tmp_path):
    for tool in ("curl", "sox", "base64"):
        require(tool)
    commands = readme_commands()
    assert len(commands) > 30 and sum("/playbacks" in c for c in commands) >= 10
    work = tmp_path / "work"
    work.mkdir()
    origin_port = free_tcp_udp_port()
    origin = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "http.server", str(origin_port), "--bind", "127.0.0.1", "--directory", str(work),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    proc, http, sip_port = await start_serve(tmp_path, "--log-level", "warning",
                                             env={"MEDIASRV_FETCH_ALLOW_CIDRS": "127.0.0.0/8"})
    sipp = asyncio.create_task(run_sipp(
        f"127.0.0.1:{sip_port}", "-sf", str(SCENARIOS / "uac_wait_bye.xml"), "-i", "127.0.0.1", "-p", "0",
        "-m", "2", "-l", "2", "-r", "10", "-timeout", "60s", timeout=70))
    played: dict[str, str] = {}  # playback id -> the command that made it
    try:
        async with aiohttp.ClientSession() as s:
            async def get(path: str) -> dict:
                async with s.get(f"{http}{path}") as resp:
                    return await resp.json()

            calls: list[str] = []
            for _ in range(200):
                calls = [c["call_id"] for c in (await get("/v1/calls?state=answered"))["calls"]]
                if len(calls) == 2:
                    break
                await asyncio.sleep(0.05)
            assert len(calls) == 2, calls
            async with s.post(f"{http}/v1/rooms") as resp:
                room = (await resp.json())["room_id"]
            env = {**os.environ, "CALL": calls[0], "OTHER": calls[1], "ROOM": room, "PLAYBACK": "", "COLLECT": ""}
            env.pop("MEDIASRV_API_TOKEN", None)
            port = http.rsplit(":", 1)[1]
            for command in commands:
                run = command.replace("localhost:8080", f"localhost:{port}").replace(
                    "127.0.0.1:8000", f"127.0.0.1:{origin_port}")
                if "$PLAYBACK" in command:  # the one playing now, else the last one a play answered
                    current = (await get(f"/v1/calls/{calls[0]}"))["current_playback"]
                    if current:
                        env["PLAYBACK"] = current["id"]
                streaming = "curl -sN" in command
                if streaming:
                    run = f"timeout 2 {run}"
                shell = await asyncio.create_subprocess_exec(
                    "bash", "-c", run, cwd=work, env=env, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE)
                out_b, err_b = await asyncio.wait_for(shell.communicate(), 40)
                out = out_b.decode()
                if streaming:  # killed by timeout after 2 s: the stream was open and flushed
                    assert shell.returncode == 124 and out.startswith(": stream open\n\n"), (command, out)
                    continue
                assert shell.returncode == 0, (command, out, err_b.decode())
                if "/metrics" in command:
                    assert "mediasrv_active_calls" in out
                    continue
                if "sox " in command:
                    continue
                docs = json_docs(out)
                assert docs, command
                errors = [d["error"] for d in docs if isinstance(d, dict) and "error" in d]
                expected = next((code for key, code in EXPECTED_ERRORS.items() if key in command), "none")
                if expected == "none":
                    assert not errors, (command, errors)
                elif expected is not None:
                    assert [e["code"] for e in errors] == [expected], (command, errors)
                for doc in docs:
                    if isinstance(doc, dict) and "prompt_playbacks" in doc:  # a collect
                        env["COLLECT"] = doc["id"]
                    if isinstance(doc, dict) and "playbacks" in doc:
                        for pb in doc["playbacks"]:
                            played[pb["id"]] = command
                            env["PLAYBACK"] = pb["id"]
                            if "127.0.0.1:8000" in command:  # as a person would: see it play before going on
                                for _ in range(100):
                                    state = await get(f"/v1/playbacks/{pb['id']}")
                                    if state["ms_played"] > 0 or state["state"] not in ("queued", "playing"):
                                        break
                                    await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)  # let the URL and inline plays get going (or fail)
            outcomes = {pid: (await get(f"/v1/playbacks/{pid}")) for pid in played}
            for pid, pb in outcomes.items():
                if EXTERNAL in played[pid]:
                    assert pb["state"] in ("failed", "queued", "stopped", "call_hangup"), pb
                else:  # every other example really played (or was stopped / ended with its call)
                    assert pb["state"] != "failed", (played[pid], pb)
            assert any("127.0.0.1:8000" in c and outcomes[p]["ms_played"] > 0 for p, c in played.items()), \
                "the URL example played nothing"
            async with s.delete(f"{http}/v1/calls/{calls[1]}") as resp:
                assert resp.status == 200
        code, out = await sipp
        assert code == 0, out[-1500:]
    finally:
        if not sipp.done():
            sipp.cancel()
        origin.send_signal(signal.SIGTERM)
        await origin.wait()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert not re.search(r"Traceback", err.decode()), err.decode()[-3000:]
