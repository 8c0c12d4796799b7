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
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pacing  # noqa: E402
from ab_pacing import LOOPED_PROMPT, ab_windows, looped_calls, print_ab  # noqa: E402
from pacing import BENCH_CPU, SERVER_CPU, build, watchdog  # noqa: E402

from mediasrv.content.synth import fix_wav_sizes  # noqa: E402

TEXT = "Thank you for calling. Your reference number is {n}. Please stay on the line, an agent will be with you soon."


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def run(n: int, window: float, rounds: int, interval: float, receiver_exe: Path, mode: str) -> None:
    spoken: list[int] = []
    async with looped_calls(n, "mediasrv-speak-pacing-") as lc:
        s, http, ids = lc.session, lc.http, lc.ids
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

        task: asyncio.Future | None = None
        before_count = 0.0

        async def syntheses() -> float:
            async with s.get(f"{http}/metrics") as resp:
                return metric(await resp.text(), "mediasrv_speech_syntheses_total")

        async def before(kind: str, name: str) -> None:
            nonlocal task, before_count
            before_count = await syntheses()
            task = asyncio.ensure_future(speaker()) if kind == "B" else None

        async def after(kind: str, name: str) -> None:
            if task is not None:
                task.cancel()
            await asyncio.sleep(0.5)
            if kind == "B":
                spoken.append(int(await syntheses() - before_count))
            await s.delete(f"{http}/v1/calls/{ids[0]}/playbacks?stop=all")
            async with s.post(f"{http}/v1/calls/{ids[0]}/playbacks", json=LOOPED_PROMPT) as resp:
                assert resp.status == 201

        rows = await ab_windows(lc, rounds, window, receiver_exe, mode, before, after)
    print(f"syntheses per B window ({window:g} s, one command every {interval * 1000:.0f} ms): "
          f"{', '.join(map(str, spoken))}")
    print_ab(rows, "under speak")


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
