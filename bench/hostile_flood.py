"""The media clock under a hostile SIP flood, and one source's OPTIONS while another floods.

Part 1: N calls (default 1,000) all playing a looped prompt on ``mediasrv serve``; in alternating
windows (``--repeats`` each, default 3, ``--window`` s each, default 10) nothing else happens
("quiet") or a flood process sends ``--rate`` (default 2,000) hostile datagrams/s to the SIP port
from 127.0.0.2: a fixed mix drawn from the robustness suites (mutated INVITE/OPTIONS/BYE/REGISTER,
PROTOS-style INVITEs, RFC 4475 torture messages, scanner OPTIONS/INVITEs). Per window, the clock's
lateness histogram from ``/metrics`` (``mediasrv_clock_tick_lateness_seconds``: buckets 0.5, 1,
2, 5, 10, 20 ms, so p99 is read as the bucket bound, interpolated linearly inside the bucket) and
the share of wake-ups more than one sub-slot late. Prints the median p99 per phase and their
ratio (target ≤ 1.2).

Part 2 (per-source): 10 OPTIONS/s (under the default per-source limit of 20/s) from 127.0.0.3 for ``--window`` s, alone and while 127.0.0.2
floods OPTIONS+REGISTER at ``--rate``/s: answered count and p99 answer time.

Calls are our raw INVITEs whose SDP names one UDP socket that is never read (the kernel drops
what overflows it; no ICMP), so the RTP costs the server what a real peer would.

    python bench/hostile_flood.py                       # 1,000 calls, 2,000/s, 3+3 windows of 10 s
    python bench/hostile_flood.py --calls 50 --window 3 --repeats 1 --rate 500   # smoke
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robustness import netns  # noqa: E402
from robustness.mutate import mutate  # noqa: E402
from robustness.sipcases import call_id, invite, protos_cases, torture_cases  # noqa: E402
from robustness.sipmsg import Targets, UdpPeer, ack_and_bye, header, request, sdp, status_of  # noqa: E402
from robustness.sut import ServerUnderTest  # noqa: E402

BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, float("inf"))


def hostile_mix(t: Targets, src: tuple[str, int], n: int = 4000, seed: int = 7, mix: str = "all") -> list[bytes]:
    """A fixed list of hostile datagrams (≤ 8 KB each), the same every run.

    ``no-nul`` leaves out those holding a NUL; ``benign`` is well-formed OPTIONS/REGISTER/BYE only
    (no calls: measures the cost of SIP volume alone, and works on a tree any input can hang).
    """
    rnd = random.Random(seed)
    seeds = [invite(t, src, 1).render(), request("OPTIONS", t, src).render(), request("BYE", t, src).render(),
             request("REGISTER", t, src).render()]
    if mix == "benign":
        return [request(rnd.choice(("OPTIONS", "REGISTER", "BYE")), t, src).render() for _ in range(n)]
    protos = [c.data for c in protos_cases(t, src) if len(c.data) <= 8000]
    torture = [c.data for c in torture_cases() if c.transport != "tcp" and len(c.data) <= 8000]
    scanner = [invite(t, src, 2, user_agent="friendly-scanner", method=m).render() for m in ("OPTIONS", "INVITE")]
    out: list[bytes] = []
    for _ in range(n):
        r = rnd.random()
        if r < 0.4:
            out.append(mutate(rnd.choice(seeds), rnd, 8000))
        elif r < 0.7:
            out.append(rnd.choice(protos))
        elif r < 0.9:
            out.append(rnd.choice(torture))
        else:
            out.append(rnd.choice(scanner))
    return [d for d in out if b"\x00" not in d] if mix == "no-nul" else out


def flood(port: int, rate: float, seconds: float, datagrams: list[bytes], src: str = "127.0.0.2") -> None:
    """Send *datagrams* round-robin at *rate*/s for *seconds* (paced in 1 ms steps); a child process."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.setblocking(False)
    t0 = time.monotonic()
    sent = 0
    while True:
        now = time.monotonic()
        if now - t0 >= seconds:
            break
        due = int((now - t0) * rate)
        while sent < due:
            try:
                s.sendto(datagrams[sent % len(datagrams)], ("127.0.0.1", port))
            except OSError:
                pass
            sent += 1
            try:
                while s.recv(65535):
                    pass
            except OSError:
                pass
        time.sleep(0.001)
    s.close()


def start_flood(port: int, rate: float, seconds: float, datagrams: list[bytes]) -> mp.Process:
    p = mp.Process(target=flood, args=(port, rate, seconds, datagrams), daemon=True)
    p.start()
    return p


class Unresponsive(RuntimeError):
    """/metrics did not answer: the server's event loop is blocked (e.g. by a backtracking input)."""


def lateness(sut: ServerUnderTest) -> tuple[list[float], float]:
    """Cumulative lateness bucket counts (BUCKETS order) and late ticks, from /metrics."""
    counts = [0.0] * len(BUCKETS)
    late = 0.0
    text = sut.metrics()
    if not text:
        raise Unresponsive("the server did not answer GET /metrics within 3 s")
    for line in text.splitlines():
        if line.startswith("mediasrv_clock_tick_lateness_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            if bound in BUCKETS:
                counts[BUCKETS.index(bound)] = float(line.split()[-1])
        elif line.startswith("mediasrv_clock_late_ticks_total"):
            late = float(line.split()[-1])
    return counts, late


def p99(before: list[float], after: list[float]) -> tuple[float, int]:
    """p99 (s) of the window from cumulative bucket deltas, linear inside the bucket; and the count."""
    delta = [a - b for a, b in zip(after, before, strict=True)]
    total = delta[-1]
    if total <= 0:
        return float("nan"), 0
    target = 0.99 * total
    lo, prev = 0.0, 0.0
    for bound, cum in zip(BUCKETS, delta, strict=True):
        if cum >= target:
            if bound == float("inf"):
                return 0.02, int(total)  # beyond the last bucket: reported as ≥ 20 ms
            frac = (target - prev) / max(cum - prev, 1e-9)
            return lo + frac * (bound - lo), int(total)
        lo, prev = bound, cum
    return float("nan"), int(total)


def place_calls(sut: ServerUnderTest, t: Targets, n: int, sink: tuple[str, int]) -> tuple[UdpPeer, list[bytes]]:
    peer = UdpPeer(("127.0.0.1", sut.sip_port))
    oks: list[bytes] = []
    for i in range(n):
        m = invite(t, peer.addr, i, body=sdp(*sink), contact=f"<sip:bench@{peer.addr[0]}:{peer.addr[1]}>")
        peer.send(m.render())
        end = time.monotonic() + 5
        while time.monotonic() < end:
            got = peer.recv_all(0.5)
            ok = next((g for g in got if status_of(g) == 200 and header(g, "call-id", "i") == call_id(m)), None)
            if ok:
                peer.send(ack_and_bye(ok, t, peer.addr)[0])
                oks.append(ok)
                break
    return peer, oks


def play_all(sut: ServerUnderTest) -> int:
    started = 0
    for cid in sut.call_ids():
        req = urllib.request.Request(f"{sut.http}/v1/calls/{cid}/playbacks", method="POST",
                                     data=json.dumps({"media": "prompt.wav", "loop": "infinity"}).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                started += resp.status == 201
        except OSError:
            pass
    return started


def options_rate(port: int, seconds: float, rate: float = 10.0) -> tuple[int, int, float]:
    """(sent, answered, p99 answer time s) for OPTIONS from 127.0.0.3 at *rate*/s."""
    t = Targets(port, 9, 9)
    peer = UdpPeer(("127.0.0.1", port), host="127.0.0.3")
    sent_at: dict[str, float] = {}
    took: list[float] = []
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < seconds:
        if i < (time.monotonic() - t0) * rate:
            m = request("OPTIONS", t, peer.addr)
            sent_at[call_id(m)] = time.monotonic()
            peer.send(m.render())
            i += 1
        for data in peer.recv_all(0.002):
            cid = header(data, "call-id", "i")
            if cid in sent_at and status_of(data) and status_of(data) >= 200:
                took.append(time.monotonic() - sent_at.pop(cid))
    for data in peer.recv_all(2.0):
        cid = header(data, "call-id", "i")
        if cid in sent_at:
            took.append(time.monotonic() - sent_at.pop(cid))
    peer.close()
    return i, len(took), (float(np.percentile(took, 99)) if took else float("nan"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=2000.0, help="hostile datagrams per second")
    ap.add_argument("--window", type=float, default=10.0, help="seconds per window")
    ap.add_argument("--repeats", type=int, default=3, help="windows per phase (alternating)")
    ap.add_argument("--mix", choices=("all", "no-nul", "benign"), default="all",
                    help="all: the suites' mix; no-nul: without inputs holding a NUL; benign: well-formed "
                         "OPTIONS/REGISTER/BYE only (for a tree whose parser any hostile input can block)")
    ap.add_argument("--no-netns", action="store_true", help="do not run inside a private network namespace")
    args = ap.parse_args()
    if not args.no_netns and not netns.in_netns():
        # the mix names foreign hosts (torture messages, SDP): inside a namespace nothing leaves the machine
        return subprocess.call(["unshare", "-n" if os.geteuid() == 0 else "-rn", sys.executable, __file__, *sys.argv[1:]],
                               env={**os.environ, netns.ENV_FLAG: "1"})
    if netns.in_netns():
        netns.setup_namespace()
    deadline = time.monotonic() + 120 + args.calls * 0.05 + 4 * args.repeats * args.window + 3 * args.window
    sut = ServerUnderTest(rtp_span=max(400, 2 * args.calls + 200), raise_sip_limits=False,
                          extra_env={"MEDIASRV_MAX_CALLS": str(args.calls + 500), "MEDIASRV_LOG_LEVEL": "ERROR",
                                     "MEDIASRV_RTP_TIMEOUT_S": "0"})  # the calls send no RTP
    (sut.data_dir / "media").mkdir(parents=True, exist_ok=True)
    tt = np.arange(10 * 8000) / 8000
    soundfile.write(sut.data_dir / "media" / "prompt.wav", (0.3 * np.sin(2 * np.pi * 440 * tt) * 32767).astype(np.int16),
                    8000, subtype="PCM_16")
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))  # never read: RTP lands here and overflows silently
    sink_rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sink_rtcp.bind(("127.0.0.1", sink.getsockname()[1] + 1))
    except OSError:
        pass
    sut.start()
    try:
        t = Targets(sut.sip_port, 9, 9)
        datagrams = hostile_mix(t, ("127.0.0.2", 5060), mix=args.mix)
        t0 = time.monotonic()
        peer, oks = place_calls(sut, t, args.calls, sink.getsockname())
        playing = play_all(sut)
        print(f"{len(oks)}/{args.calls} calls answered, {playing} playing ({time.monotonic() - t0:.0f} s)", flush=True)
        time.sleep(2)
        rows: dict[str, list[float]] = {"quiet": [], "flood": []}
        late_share: dict[str, list[float]] = {"quiet": [], "flood": []}
        for k in range(args.repeats):
            for phase in ("quiet", "flood") if k % 2 == 0 else ("flood", "quiet"):
                if time.monotonic() > deadline:
                    raise TimeoutError("bench deadline")
                b, lb = lateness(sut)
                proc = start_flood(sut.sip_port, args.rate, args.window, datagrams) if phase == "flood" else None
                time.sleep(args.window)
                if proc:
                    proc.join(args.window)
                    if proc.is_alive():
                        proc.kill()
                a, la = lateness(sut)
                value, n = p99(b, a)
                rows[phase].append(value)
                late_share[phase].append((la - lb) / max(n, 1))
                alive = "alive" if sut.alive() else "DEAD"
                print(f"  window {k + 1} {phase:5s}: p99 {value * 1e3:6.2f} ms over {n} wake-ups, "
                      f"late > 1 sub-slot {100 * late_share[phase][-1]:.2f} %  (server {alive})", flush=True)
        if not rows["quiet"] or not rows["flood"]:
            raise Unresponsive("no complete pair of windows")
        mq, mf = statistics.median(rows["quiet"]), statistics.median(rows["flood"])
        print(f"\nclock p99 lateness, {playing} playing calls, median of {args.repeats}: quiet {mq * 1e3:.2f} ms, "
              f"flood {args.rate:.0f}/s {mf * 1e3:.2f} ms, ratio {mf / mq:.2f} (target <= 1.2)")
        for m in oks:  # the calls end before part 2, so it measures SIP alone
            peer.send(ack_and_bye(m, t, peer.addr)[1])
        time.sleep(1 + args.calls / 500)
        # part 2: per-source
        opt_flood = [request("OPTIONS", t, ("127.0.0.2", 5060)).render(),
                     request("REGISTER", t, ("127.0.0.2", 5060)).render()]
        alone = options_rate(sut.sip_port, args.window)
        proc = start_flood(sut.sip_port, args.rate, args.window + 1, opt_flood)
        during = options_rate(sut.sip_port, args.window)
        proc.join(args.window + 5)
        print(f"OPTIONS from 127.0.0.3 at 10/s for {args.window:.0f} s: alone {alone[1]}/{alone[0]} answered, "
              f"p99 {alone[2] * 1e3:.1f} ms; while 127.0.0.2 floods {args.rate:.0f}/s: {during[1]}/{during[0]} answered, "
              f"p99 {during[2] * 1e3:.1f} ms")
        print(f"server: {'alive' if sut.alive() else 'DEAD'}, {sut.tracebacks()} tracebacks in its log ({sut.log_path})")
        peer.close()
    except Unresponsive as exc:
        print(f"\nFAILED: {exc}; the flood's mix blocked the server (--mix benign measures "
              f"SIP volume alone); server log: {sut.log_path}")
        return 1
    finally:
        sut.stop()
        sink.close()
        sink_rtcp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
