"""DTMF figures: key presses detected under loss, and barge-in latency.

An in-process server; SIPp (uac_play.xml) dials ``--calls`` + ``--background`` calls whose SDP
names this script's receiver, which also presses the keys (RFC 4733 packets written by
tests/support/dtmf_peer.py, not by the server's code).

1. ``--presses`` key presses spread over the calls (concurrently), each packet lost with
   probability ``--loss``: how many ``dtmf.received`` events came, and whether each call's
   digits arrived exactly once and in order.
2. ``--barge`` rounds (spread over the calls): play a 5 s tone with ``barge_in: any``, press a
   key 150-350 ms later; latency = kernel arrival time of the last packet of the tone at the
   receiver minus the wall time the key's first packet was sent (<= 0: the digit beat the
   tone's next packet), and to the first packet without it (silence: when the stop took effect
   on the wire).  ``--background`` other calls play a looped tone meanwhile.

    python bench/dtmf.py --calls 10 --presses 1000 --loss 0.05 --barge 300 --background 0
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mediasrv.config import Settings  # noqa: E402
from mediasrv.demo import free_port_pair  # noqa: E402
from mediasrv.media.player import PlayRequest, SourceSpec  # noqa: E402
from mediasrv.rtp.probe import open_capture  # noqa: E402
from mediasrv.server import Server  # noqa: E402
from tests.support.dtmf_peer import DIGITS, KeyPresser  # noqa: E402
from tests.support.ports import free_tcp_udp_port  # noqa: E402
from tests.support.sipp import run_sipp  # noqa: E402

SILENCE = b"\xff" * 160


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="dtmf-bench-"))
    lo = free_port_pair()
    total = args.calls + args.background
    server = Server(Settings(sip=f"127.0.0.1:{free_tcp_udp_port()}", http="127.0.0.1:0",
                             rtp_ports=f"{lo}-{lo + 4 * total + 100}", data_dir=str(tmp / "data"),
                             events_journal=False))
    await server.start()
    events = server.events.subscribe()
    received: dict[str, list[str]] = {}
    ended: dict[str, asyncio.Future[None]] = {}

    async def pump() -> None:
        while (e := await events.get()) is not None:
            if e.type == "dtmf.received":
                received.setdefault(e.call_id, []).append(e.data["digit"])
            elif e.type == "playback.ended" and e.data["playback_id"] in ended:
                fut = ended[e.data["playback_id"]]
                if not fut.done():
                    fut.set_result(None)

    pump_task = asyncio.create_task(pump())
    capture = await open_capture()
    # the background calls' audio goes to a socket nobody reads (the kernel drops what overflows),
    # not through this process's receiver, which shares the server's event loop
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))

    def dial(port: int, n: int) -> asyncio.Task[tuple[int, str]]:
        return asyncio.create_task(run_sipp(
            f"127.0.0.1:{server.sip.address[1]}", "-sf", str(REPO / "sipp-scenarios" / "uac_play.xml"),
            "-i", "127.0.0.1", "-p", "0", "-set", "rtp_ip", "127.0.0.1", "-set", "rtp_port", str(port),
            "-d", "600000", "-m", str(n), "-l", str(n), "-r", "50", "-timeout", "900s", timeout=900))

    async def up(n: int) -> None:
        deadline = time.monotonic() + 60
        while sum(1 for c in server.registry.active() if c.state.value == "answered") < n:
            if time.monotonic() > deadline:
                raise SystemExit("calls did not come up")
            await asyncio.sleep(0.05)

    sipps = [dial(capture.port, args.calls)]
    try:
        await up(args.calls)
        work = sorted(server.registry.active(), key=lambda c: c.created_at)
        if args.background:
            sipps.append(dial(sink.getsockname()[1], args.background))
            await up(total)
        background = [c for c in server.registry.active() if c not in work]
        for c in background:
            server.media.play(c.call_id, PlayRequest(sources=[SourceSpec(tone="440+480:2000/4000")], loop=None))

        # -- 1. presses under loss ---------------------------------------------------------
        rng = random.Random(1)
        plan = {c.call_id: "" for c in work}
        for i in range(args.presses):
            plan[work[i % len(work)].call_id] += rng.choice(DIGITS)
        pressers = {c.call_id: KeyPresser(capture.sock, c.local_rtp, loss=args.loss, ssrc=0x1000 + i,
                                          rng=random.Random(100 + i)) for i, c in enumerate(work)}
        t0 = time.monotonic()

        async def press_all(call_id: str) -> None:
            p = pressers[call_id]
            for d in plan[call_id]:
                await p.press(d, updates=rng.randint(2, 8), spacing_s=0.005)

        await asyncio.gather(*(press_all(cid) for cid in plan))
        await asyncio.sleep(1.0)  # a last press whose end packets were lost is reported after 0.5 s
        took = time.monotonic() - t0
        got = sum(len(received.get(cid, [])) for cid in plan)
        exact = sum(1 for cid, digits in plan.items() if "".join(received.get(cid, [])) == digits)
        lost = sum(p.dropped for p in pressers.values())
        sent = sum(p.sent for p in pressers.values())
        print(f"presses: {args.presses} over {len(work)} calls in {took:.1f} s, packets sent {sent}, "
              f"lost on purpose {lost} ({100 * lost / max(1, sent + lost):.1f} %)")
        print(f"  dtmf.received: {got}; calls whose digits arrived exactly once and in order: {exact}/{len(work)}")
        print(f"  totals: {server.media.ivr.totals}; telephone-event packets dropped: {server.media.ivr.drops()}")

        # -- 2. barge-in latency ----------------------------------------------------------------
        ssrc_of = {c.call_id: server.media.leg_stats(c.call_id)["ssrc"] for c in work}
        latencies: list[float] = []
        effective: list[float] = []  # digit's first packet -> first packet without the prompt (silence)
        quiet = {c.call_id: KeyPresser(capture.sock, c.local_rtp, ssrc=0x2000 + i, ts=10_000 + i)
                 for i, c in enumerate(work)}
        brng = random.Random(2)

        async def barge_rounds(call_id: str, rounds: int) -> None:
            for _ in range(rounds):
                [pb] = server.media.play(call_id, PlayRequest(sources=[SourceSpec(tone="440", duration_ms=5000)],
                                                              barge_in="any"))
                fut = ended[pb.id] = asyncio.get_running_loop().create_future()
                await asyncio.sleep(brng.uniform(0.15, 0.35))
                p = quiet[call_id]
                await p.press(brng.choice(DIGITS), updates=3, spacing_s=0.02)
                t_press = p.first_packet_at[-1]
                await asyncio.wait_for(fut, 5)
                await asyncio.sleep(0.1)
                ssrc = ssrc_of[call_id]
                recent = []
                for pk in reversed(capture.packets):  # only the last second: a scan must not hold the loop
                    if pk.arrival < t_press - 1:
                        break
                    if pk.ssrc == ssrc:
                        recent.append(pk)
                last = max(pk.arrival for pk in recent if pk.payload != SILENCE)
                latencies.append(last - t_press)
                effective.append(min(pk.arrival for pk in recent if pk.payload == SILENCE and pk.arrival > last) - t_press)

        per = [args.barge // len(work) + (1 if i < args.barge % len(work) else 0) for i in range(len(work))]
        await asyncio.gather(*(barge_rounds(c.call_id, n) for c, n in zip(work, per, strict=True)))
        ms = np.array(latencies) * 1000
        print(f"barge-in: {len(ms)} rounds on {len(work)} calls, {len(background)} other calls playing; "
              f"digit's first packet sent -> last packet of the prompt received: "
              f"p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms "
              f"(min {ms.min():.1f})")
        eff = np.array(effective) * 1000
        print(f"  digit's first packet sent -> first packet without the prompt received: p50 {np.percentile(eff, 50):.1f} ms, "
              f"p99 {np.percentile(eff, 99):.1f} ms, max {eff.max():.1f} ms")
    finally:
        for c in list(server.registry.active()):
            await server.sip.hangup(c.call_id, cause="normal_clearing", by="api")
        await asyncio.sleep(0.5)
        for task in sipps:
            task.cancel()
        sink.close()
        pump_task.cancel()
        capture.close()
        await server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--presses", type=int, default=1000)
    ap.add_argument("--loss", type=float, default=0.05)
    ap.add_argument("--barge", type=int, default=300)
    ap.add_argument("--background", type=int, default=0)
    asyncio.run(main(ap.parse_args()))
