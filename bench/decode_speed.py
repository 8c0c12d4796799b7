"""Decode + resample speed per audio format, and memory while streaming a 1-hour MP3.

For each format, `--seconds` (60) of a test signal (a 50 Hz-3.5 kHz sweep plus a 440 Hz tone and a
little noise, so the MP3 encoder has real work) is encoded with tests/support/audio_fixtures.py, then
decoded by mediasrv.content.decode.StreamDecoder fed in 64 KiB chunks, to 8 kHz and to 16 kHz.
Reported: the decoded length, × real time (audio seconds per wall second, best of `--repeat`),
and how many bytes (and wall ms, decode only) it takes before the first PCM comes out when the
body arrives 1 KiB at a time.

The 1-hour row: a 60 s MP3 (44.1 kHz stereo 128 kbps, no ID3/Xing) is repeated 60 times into a
temp file (57.6 MB), which is read and decoded in 64 KiB chunks; the output is discarded (the
cache keeps it, not the decoder).  Reported: wall time, × real time, and the growth of the
process's RSS (sampled from /proc/self/status after every chunk) over its value before decoding,
plus the tracemalloc peak of allocations made during the decode.

The sleeper table: a thread that sleeps 1 ms at a time (as the media clock's thread waits for its
next deadline) measures how late it wakes: idle, while this process decodes an MP3 without pause
in another thread (competing for CPU and the GIL), and while a child process does the same decode
(CPU only).  Thread ≈ process means the GIL is not what delays the clock.

    python bench/decode_speed.py                 # the table in bench/README.md
    python bench/decode_speed.py --seconds 10 --hour-minutes 5     # smoke run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mediasrv.content.decode import CHUNK, StreamDecoder, decode_bytes, sniff  # noqa: E402
from tests.support import audio_fixtures as af

WAV_CASES = [  # (encoding, rate, channels)
    ("s16", 8000, 1), ("mulaw", 8000, 1), ("alaw", 8000, 1), ("u8", 11025, 1), ("s16", 16000, 1),
    ("s16", 22050, 1), ("s16", 44100, 2), ("s24", 48000, 2), ("s32", 48000, 2), ("f32", 48000, 2),
    ("f32", 44100, 6),
]
MP3_CASES = [(8000, 1, 16_000), (16000, 1, 32_000), (22050, 1, 64_000), (44100, 2, 128_000), (48000, 2, 192_000)]


def signal(seconds: float, rate: int, channels: int) -> np.ndarray:
    x = 0.45 * af.sweep(seconds, rate)[:, 0] + 0.2 * af.tone(440, seconds, rate)[:, 0]
    x += np.random.default_rng(0).normal(0, 0.01, x.size)
    return np.stack([x * (1 - 0.05 * k) for k in range(channels)], axis=1)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def decode_stream(body: bytes, rate: int) -> float:
    """Wall seconds to decode *body* fed in 64 KiB chunks."""
    view = memoryview(body)
    t0 = time.perf_counter()
    dec = StreamDecoder(sniff(body[:4096]), "bench", rate)
    for i in range(0, len(view), CHUNK):
        dec.feed(view[i:i + CHUNK])
    dec.finish()
    return time.perf_counter() - t0


def first_pcm(body: bytes, step: int = 1024) -> tuple[int, float]:
    """(bytes, wall ms) until the first PCM comes out when the body arrives *step* bytes at a time."""
    t0 = time.perf_counter()
    dec = StreamDecoder(sniff(body[:4096]), "bench", 8000)
    for i in range(0, len(body), step):
        if dec.feed(body[i:i + step]).size:
            return min(i + step, len(body)), (time.perf_counter() - t0) * 1000
    return len(body), (time.perf_counter() - t0) * 1000


def row(label: str, body: bytes, seconds: float, repeat: int) -> str:
    n = decode_bytes(body, sniff(body[:4096]), "bench").size
    cells = [label, f"{len(body) / 1e6:.2f}", f"{n / 8000:.3f}"]
    for rate in (8000, 16000):
        cells.append(f"{seconds / min(decode_stream(body, rate) for _ in range(repeat)):,.0f}")
    nbytes, ms = first_pcm(body)
    cells.append(f"{nbytes / 1024:.0f} KiB / {ms:.1f} ms")
    return "| " + " | ".join(cells) + " |"


def hour_mp3(minutes: int) -> str:
    base = af.mp3(signal(60.0, 44100, 2), 44100, id3=False, xing=False, bitrate=128_000)
    with tempfile.NamedTemporaryFile(suffix=".mp3", delete=False) as f:
        for _ in range(minutes):
            f.write(base)
        path = f.name
    del base
    size = os.path.getsize(path)
    try:
        start = rss_kib()
        wall, n, growth = _decode_file(path, trace=False)
        _, _, traced_peak = _decode_file(path, trace=True)  # a second pass: tracemalloc slows decoding
    finally:
        os.unlink(path)
    audio = n / 8000
    return (f"| {minutes} min MP3 44.1 kHz stereo 128 kbps, {size / 1e6:.1f} MB, 64 KiB chunks | {audio:,.1f} s | "
            f"{wall:.1f} s | {audio / wall:,.0f} | {start / 1024:.0f} MiB | {growth / 1024:.1f} MiB | "
            f"{traced_peak / 1e6:.2f} MB |")


def _decode_file(path: str, trace: bool) -> tuple[float, int, int]:
    """(wall s, output samples, RSS growth KiB or tracemalloc peak bytes) for one streamed decode."""
    dec = StreamDecoder("mp3", "hour", 8000, max_seconds=4 * 3600)  # 60 copies carry 60 encoder delays
    before = peak = rss_kib()
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    n = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                n += dec.feed(chunk).size
                if not trace:
                    peak = max(peak, rss_kib())
        n += dec.finish().size
        wall = time.perf_counter() - t0
        if trace:
            return wall, n, tracemalloc.get_traced_memory()[1]
    finally:
        if trace:
            tracemalloc.stop()
    return wall, n, peak - before


def _sleeper(stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        time.sleep(0.001)
        out.append((time.perf_counter() - t - 0.001) * 1000)


_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[3])
from mediasrv.content.decode import CHUNK, StreamDecoder
body = open(sys.argv[1], 'rb').read()
end = time.perf_counter() + float(sys.argv[2])
while time.perf_counter() < end:
    dec = StreamDecoder('mp3', 'gil', 8000)
    for i in range(0, len(body), CHUNK):
        dec.feed(body[i:i + CHUNK])
    dec.finish()
"""


def gil_rows(seconds: float, rounds: int = 2) -> list[str]:
    """Wake-up lateness of a thread sleeping 1 ms at a time: idle, while this process decodes an MP3
    in another thread (CPU + GIL), and while a child process does the same decode (CPU only)."""
    mp3 = af.mp3(signal(20.0, 44100, 2), 44100, bitrate=128_000)
    with tempfile.NamedTemporaryFile(suffix=".mp3", delete=False) as f:
        f.write(mp3)
        path = f.name
    root = str(Path(__file__).resolve().parent.parent)
    rows = []
    try:
        for rnd in range(rounds):
            for mode in ("idle", "MP3 decode in a thread", "MP3 decode in a child process"):
                stop, late = threading.Event(), []
                th = threading.Thread(target=_sleeper, args=(stop, late))
                th.start()
                t_end = time.perf_counter() + seconds
                if mode == "idle":
                    time.sleep(seconds)
                elif "thread" in mode:
                    while time.perf_counter() < t_end:
                        dec = StreamDecoder("mp3", "gil", 8000)
                        for i in range(0, len(mp3), CHUNK):
                            dec.feed(mp3[i:i + CHUNK])
                        dec.finish()
                else:
                    subprocess.run([sys.executable, "-c", _CHILD, path, str(seconds), root], check=True)
                stop.set()
                th.join()
                a = np.array(late)
                rows.append(f"| {rnd + 1} | {mode} | {len(a)} | {np.percentile(a, 50):.3f} | "
                            f"{np.percentile(a, 90):.3f} | {np.percentile(a, 99):.3f} | {a.max():.2f} |")
    finally:
        os.unlink(path)
    return rows


def format_table(seconds: float, repeat: int) -> None:
    print(f"{seconds:g} s of audio per row, fed in 64 KiB chunks; x real time = best of {repeat}\n")
    print("| format | MB | decoded s | x RT → 8 kHz | x RT → 16 kHz | first PCM (1 KiB feeds): bytes / wall |")
    print("|---|---|---|---|---|---|")
    for enc, rate, ch in WAV_CASES:
        fix = af.wav(signal(seconds, rate, ch), rate, enc)
        print(row(f"WAV {enc} {rate / 1000:g} kHz {ch} ch", fix.body, seconds, repeat), flush=True)
    for rate, ch, kbps in MP3_CASES:
        body = af.mp3(signal(seconds, rate, ch), rate, bitrate=kbps)
        print(row(f"MP3 {rate / 1000:g} kHz {ch} ch {kbps // 1000} kbps", body, seconds, repeat), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="audio per format row (0 = skip the table)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--gil-seconds", type=float, default=5.0, help="per row of the sleeper table (0 = skip)")
    ap.add_argument("--hour-minutes", type=int, default=60, help="length of the long MP3 (0 = skip)")
    ap.add_argument("--only-long", action="store_true", help="just the long-MP3 row (run in a fresh process)")
    args = ap.parse_args()
    if args.only_long:
        print(hour_mp3(args.hour_minutes), flush=True)
        return
    if args.seconds:
        format_table(args.seconds, args.repeat)
    if args.gil_seconds:
        print("\n| round | 1 ms sleeper thread, while | wakes | late p50 ms | p90 ms | p99 ms | max ms |")
        print("|---|---|---|---|---|---|---|")
        for line in gil_rows(args.gil_seconds):
            print(line, flush=True)
    if args.hour_minutes:
        print("\n| long file | decoded | wall | x RT | RSS before | RSS growth | tracemalloc peak |")
        print("|---|---|---|---|---|---|---|")
        # a fresh process, so that memory freed by the rows above cannot hide the decoder's growth
        subprocess.run([sys.executable, __file__, "--only-long", "--hour-minutes", str(args.hour_minutes)],
                       check=True)


if __name__ == "__main__":
    main()
