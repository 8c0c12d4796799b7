"""Does speech synthesis move other calls' pacing?  N playing calls, windows idle vs under speak commands.

A fresh ``mediasrv serve`` (pinned to CPU 1 like pacing.py; the espeak-ng children inherit the
pin, so they compete with the media clock for that CPU at nice +10: the worst case), N calls
(default 200) each playing a looped 10 s prompt to pacing.py's C receiver; rounds of two
windows in one run: A idle, B while a client sends ``speak`` commands with new text (each a
cold synthesis: a child process, its WAV decoded) every ``--interval`` seconds to one of the
calls (queued behind its prompt: the synthesis and decode happen at once, the audio never
plays, so every stream measured is the prompt).  Prints every window, syntheses per B window,
and the ratio of the median p99s (target <= 1.1).

    python bench/speak_pacing.py                         # N=200, 3 rounds of 5 s windows, a speak every 100 ms
    python bench/speak_pacing.py --calls 50 --window 3 --rounds 1     # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pacing  # noqa: E402
from first_packet import place_calls, start_receiver, start_server  # noqa: E402
from pacing import BENCH_CPU, SERVER_CPU, ReceiverPorts, Row, build, cpu_seconds, free_port, reap, watchdog  # noqa: E402

from mediasrv.calls import CallRegistry  # noqa: E402
from mediasrv.content.synth import fix_wav_sizes  # noqa: E402
from mediasrv.sip.ua import SipSettings, SipUserAgent  # noqa: E402

TEXT = "Thank you for calling. Your reference number is {n}. Please stay on the line, an agent will be with you soon."


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def run(n: int, window: float, rounds: int, interval: float, receiver_exe: Path, mode: str) -> None:
    data = Path(tempfile.mkdtemp(prefix="mediasrv-speak-pacing-"))
    server, http, sip_port = start_server(data, n, ["--no-silence"])
    uac = SipUserAgent(SipSettings(host="127.0.0.1", port=free_port(socket.SOCK_DGRAM, n), user_agent="mediasrv-bench"),
                       CallRegistry(), ReceiverPorts())
    await uac.start()
    loop = asyncio.get_running_loop()
    calls = []
    rows: dict[str, Row] = {}
    spoken: list[int] = []
    try:
        calls = await place_calls(uac, sip_port, n)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{http}/v1/calls") as resp:
                ids = [c["call_id"] for c in (await resp.json())["calls"] if c["state"] == "answered"]
            sem = asyncio.Semaphore(50)

            async def play(cid: str) -> int:
                async with sem, s.post(f"{http}/v1/calls/{cid}/playbacks",
                                       json={"media": "prompt.wav", "loop": "infinity"}) as resp:
                    return resp.status

            statuses = await asyncio.gather(*(play(c) for c in ids))
            print(f"{len(calls)} calls, {statuses.count(201)} playing the looped prompt", flush=True)
            await asyncio.sleep(2.0)
            counter = 0

            wav = subprocess.run(["espeak-ng", "--stdout", TEXT.format(n=0)], capture_output=True, check=True).stdout
            wav_b64 = base64.b64encode(fix_wav_sizes(wav)).decode()

            async def speaker() -> None:
                nonlocal counter
                while True:
                    counter += 1
                    if mode == "espeak-only":  # the engine's process alone, same CPU and nice, no server work
                        proc = await asyncio.create_subprocess_exec(
                            "taskset", "-c", SERVER_CPU, "nice", "-n", "10", "espeak-ng", "--stdout",
                            TEXT.format(n=counter), stdout=asyncio.subprocess.DEVNULL)
                        await proc.wait()
                    else:
                        body = {"speak": {"text": TEXT.format(n=counter)}} if mode == "speak" else \
                            {"content_base64": wav_b64, "audio_type": "wav"}  # mode wav: the decode alone
                        async with s.post(f"{http}/v1/calls/{ids[0]}/playbacks", json=body) as resp:
                            assert resp.status == 201, await resp.text()
                    await asyncio.sleep(interval)

            for rnd in range(rounds):
                for kind in ("A", "B"):
                    name = f"{kind}{rnd + 1} " + ("idle" if kind == "A" else mode)
                    rx = await start_receiver(receiver_exe, n, window)
                    await asyncio.sleep(1.5)  # the receiver skips each stream's first second
                    async with s.get(f"{http}/metrics") as resp:
                        before = metric(await resp.text(), "mediasrv_speech_syntheses_total")
                    task = asyncio.ensure_future(speaker()) if kind == "B" else None
                    c0 = cpu_seconds(server.pid)
                    rx.start_window()
                    await asyncio.sleep(window)
                    cpu = cpu_seconds(server.pid) - c0
                    if task is not None:
                        task.cancel()
                    stats = await loop.run_in_executor(None, rx.result)
                    rx.stop()
                    rows[name] = Row(name, n, len(ids), stats, cpu, stats["window_s"] or window, 0.0)
                    await asyncio.sleep(0.5)
                    async with s.get(f"{http}/metrics") as resp:
                        after = metric(await resp.text(), "mediasrv_speech_syntheses_total")
                    if kind == "B":
                        spoken.append(int(after - before))
                    await s.delete(f"{http}/v1/calls/{ids[0]}/playbacks?stop=all")
                    async with s.post(f"{http}/v1/calls/{ids[0]}/playbacks",
                                      json={"media": "prompt.wav", "loop": "infinity"}) as resp:
                        assert resp.status == 201
        print(f"syntheses per B window ({window:g} s, one command every {interval * 1000:.0f} ms): "
              f"{', '.join(map(str, spoken))}")
        print(f"{'window':22} {'packets':>8} {'deliv%':>6} {'lost':>5} {'p50 ms':>6} {'p99 ms':>6} {'max ms':>7} "
              f"{'CPU %':>5}")
        for name, r in rows.items():
            p50, p99, mx, _ = r.percentiles()
            print(f"{name:22} {r.stats['packets']:8d} {r.delivered_pct:6.1f} {r.stats['lost']:5d} {p50:6.2f} "
                  f"{p99:6.2f} {mx:7.2f} {r.cpu_pct:5.1f}")
        a = [r.p99 for k, r in rows.items() if k.startswith("A")]
        b = [r.p99 for k, r in rows.items() if k.startswith("B")]
        print(f"p99 median idle {np.median(a):.2f} ms, median under speak {np.median(b):.2f} ms: "
              f"ratio {np.median(b) / np.median(a):.2f} (per round: "
              f"{', '.join(f'{y / x:.2f}' for x, y in zip(a, b, strict=True))})")
    finally:
        for call in calls:
            try:
                await uac.hangup(call.call_id)
            except Exception:  # noqa: BLE001 - already ended
                pass
        await asyncio.sleep(1.0)
        await uac.stop()
        reap(server, 15)
        shutil.rmtree(data, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--window", type=float, default=5.0, help="seconds per pacing window")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between speak commands in B windows")
    ap.add_argument("--receiver-base", type=int, default=30600)
    ap.add_argument("--mode", choices=("speak", "espeak-only", "wav"), default="speak",
                    help="B windows: speak commands; espeak-ng runs alone (pinned and niced like the server's "
                         "children); or the same WAV as inline content (the decode alone)")
    args = ap.parse_args()
    for tool in ("gcc", "taskset", "espeak-ng"):
        if shutil.which(tool) is None:
            print(f"{tool} is required", file=sys.stderr)
            return 1
    pacing.RECEIVER_BASE = args.receiver_base
    watchdog(300)
    os.sched_setaffinity(0, {int(BENCH_CPU)})
    tmp = Path(tempfile.mkdtemp(prefix="mediasrv-bench-c-"))
    try:
        receiver_exe, _ = build(tmp)
        asyncio.run(run(args.calls, args.window, args.rounds, args.interval, receiver_exe, args.mode))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
