"""CPU cost of one LegDriver.tick per case: the fast path, idle, and each slow-path composition.

The leg is a stand-in whose ``transmit`` does nothing, so the figure is the tick's own Python
and numpy work (header, slicing, mixing, encoding), not the kernel's sendto.  Each case runs
``--ticks`` ticks ``--repeat`` times and reports the minimum (the least-disturbed run on a
shared machine).  Compare a branch with another checkout by running this file against each
(``PYTHONPATH=<checkout> python bench/tick_cost.py``): the cases that checkout lacks are skipped.

    python bench/tick_cost.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

if not os.environ.get("PYTHONPATH"):  # PYTHONPATH=<other checkout> measures that checkout instead
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mediacodecs.codec import PCMU  # noqa: E402
from mediacodecs.g711 import ulaw_encode  # noqa: E402
from mediasrv.content.source import Media  # noqa: E402
from mediasrv.media.plane import LegDriver  # noqa: E402
from mediasrv.media.player import Player, PlayRequest, new_playback  # noqa: E402


class NullLeg:
    """What LegDriver.tick touches on an RtpLeg, with a transmit that sends nothing."""

    def __init__(self) -> None:
        self.seq, self.timestamp, self.payload_type, self.ssrc = 0, 0, 0, 1
        self.marker_next = False
        self.packets_sent = self.bytes_sent = self.send_errors = 0

    def transmit(self, data: bytes) -> None:
        pass

    def skip(self, n: int) -> None:
        self.timestamp += n


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticks", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    pcm = np.random.default_rng(1).integers(-9000, 9000, 8000 * 60).astype(np.int16)
    media = Media("bench", pcm, {"PCMU": ulaw_encode(pcm)})
    frame = np.random.default_rng(2).integers(-9000, 9000, 160).astype(np.int16)
    loop = asyncio.get_running_loop()

    def play(d: LegDriver, **kw: object) -> None:
        fut = loop.create_future()
        fut.set_result(media)
        d.player.enqueue(new_playback("c", PlayRequest(url="u", loop=None, **kw), fut))  # type: ignore[arg-type]

    def bridged(d: LegDriver) -> None:
        d.call_audio = lambda n: frame

    cases: list[tuple[str, Callable[[LegDriver], None]]] = [
        ("idle (silence)", lambda d: None),
        ("fast path: one playback", lambda d: play(d)),
        ("bridged, nothing playing", bridged),
        ("bridged + playback", lambda d: (bridged(d), play(d))),
        ("playback at -6 dB", lambda d: play(d, volume_db=-6.0)),
        ("playback + overlay", lambda d: (play(d), play(d, overlay=True))),
        ("paused playback", lambda d: (play(d), d.player.pause(d.player.current))),  # type: ignore[attr-defined]
    ]
    print(f"{'case':28} {'us/tick':>8}")
    for name, setup in cases:
        driver = LegDriver(NullLeg(), Player(PCMU, lambda t, pb: None), True)  # type: ignore[arg-type]
        try:
            setup(driver)
        except (AttributeError, TypeError) as exc:  # a checkout without that feature
            print(f"{name:28} {'n/a':>8}  ({type(exc).__name__})")
            continue
        best = float("inf")
        for _ in range(args.repeat):
            t = time.perf_counter()
            for _ in range(args.ticks):
                driver.tick()
            best = min(best, (time.perf_counter() - t) / args.ticks)
        print(f"{name:28} {best * 1e6:8.3f}")


if __name__ == "__main__":
    asyncio.run(main())
