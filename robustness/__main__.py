"""``python -m robustness [--long] [--suites a,b] [--json out.json]``: run suites, print the table."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

from . import netns
from .oracle import StraySinks
from .report import findings, table
from .sipmsg import Targets
from .sut import ServerUnderTest, free_port

SUITES = ["torture", "protos", "advisories", "sip-udp", "sip-tcp", "sdp", "rtp", "http", "bxml", "audio"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m robustness", description=__doc__)
    ap.add_argument("--long", action="store_true", help="≥10^5 mutated inputs per protocol (hours)")
    ap.add_argument("--suites", default=",".join(SUITES), help=f"comma-separated, from {SUITES}")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the default run's inputs (pytest: 0.2)")
    ap.add_argument("--json", help="write the results (with every finding's input) here")
    ap.add_argument("--save", metavar="DIR", help="write each finding's input to DIR/<suite>/<n>.bin")
    ap.add_argument("--no-netns", action="store_true",
                    help="run in the current network namespace (stray sends outside loopback go out for real)")
    ap.add_argument("--replay", nargs="+", metavar="FILE",
                    help="send these saved inputs (--save's .bin files) to a fresh server over UDP, one at a time, "
                         "and print what the oracle says of each")
    ap.add_argument("--server-path", help="run the mediasrv of this checkout (default: this repo's)")
    ap.add_argument("--env", action="append", default=[], metavar="MEDIASRV_X=V", help="extra server settings")
    args = ap.parse_args(argv)
    if args.server_path:
        os.environ["ROBUSTNESS_SERVER_PATH"] = os.path.abspath(args.server_path)
        from . import sut as sut_module
        sut_module.SERVER_PATH = Path(os.environ["ROBUSTNESS_SERVER_PATH"])
    if not args.no_netns and not netns.in_netns():
        return netns.reexec_in_netns(argv)
    tap = None
    if netns.in_netns():
        netns.setup_namespace()
        tap = netns.ExternalTap()
        if not tap.start():
            tap = None
        else:
            dns = netns.DnsSink(tap)
            dns.start()
    random.seed(args.seed)  # call-ids, tags, branches: the seeds the mutators start from
    if args.replay:
        return replay(args.replay)
    chosen = [s.strip() for s in args.suites.split(",") if s.strip()]
    unknown = set(chosen) - set(SUITES)
    if unknown:
        ap.error(f"unknown suites {sorted(unknown)}")
    sut = ServerUnderTest(extra_env=dict(e.split("=", 1) for e in args.env))
    from .httpsuites import Origin
    origin = Origin()
    origin.start()
    sut.start()
    t = Targets(sip_port=sut.sip_port, stray_sip=free_port(), stray_rtp=free_port())
    sinks = StraySinks(t)
    from . import advisories, httpsuites, sipsuites
    h = sipsuites.Harness(sut, t, sinks, tap, long=args.long, seed=args.seed, scale=args.scale)
    runners = {
        "torture": sipsuites.suite_torture, "protos": sipsuites.suite_protos, "advisories": advisories.suite_advisories,
        "sip-udp": sipsuites.suite_mut_udp, "sip-tcp": sipsuites.suite_mut_tcp, "sdp": sipsuites.suite_mut_sdp,
        "rtp": sipsuites.suite_rtp,
        "http": lambda h: httpsuites.suite_http(h, origin), "bxml": lambda h: httpsuites.suite_bxml(h, origin),
        "audio": lambda h: httpsuites.suite_audio(h, origin),
    }
    t0 = time.monotonic()
    try:
        for name in chosen:
            print(f"# suite {name} ...", file=sys.stderr, flush=True)
            runners[name](h)
    finally:
        sinks.close()
        origin.stop()
        if tap:
            tap.stop()
        sut.stop()
    print(table(h.results))
    print()
    print(findings(h.results))
    if tap and tap.seen:
        print("\nsent outside loopback (by destination):", dict(tap.seen.most_common(20)))
    if sinks.where:
        print("arrived at addresses only inputs named:", dict(sinks.where.most_common(20)))
    print(f"\n{sum(r.sent for r in h.results)} inputs in {time.monotonic() - t0:.0f} s; server log: {sut.log_path}")
    if args.save:
        save_inputs(h.results, args.save)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([asdict(r) for r in h.results], fh, indent=1)
    return 0


def replay(files: list[str]) -> int:
    """One saved input at a time over UDP; prints status, OPTIONS probe time, new tracebacks."""
    from .oracle import last_exception, probe
    from .sipmsg import UdpPeer, status_of

    sut = ServerUnderTest()
    sut.start()
    t = Targets(sut.sip_port, free_port(), free_port())
    bad = 0
    try:
        for name in files:
            data = Path(name).read_bytes()
            tb0 = sut.tracebacks()
            peer = UdpPeer(("127.0.0.1", sut.sip_port))
            peer.send(data)
            got = [status_of(d) for d in peer.recv_all(0.3)]
            peer.close()
            took = probe(sut, t)
            tb = sut.tracebacks() - tb0
            verdict = ("HANG" if took is None else "slow" if took > 0.5 else "ok") + (f", {tb} traceback(s): "
                                                                                       f"{last_exception(sut.log_text())}" if tb else "")
            bad += verdict != "ok"
            print(f"{name}: {len(data)} bytes, answered {got or 'nothing'}, OPTIONS after "
                  f"{'-' if took is None else f'{took * 1000:.0f} ms'}: {verdict}", flush=True)
            if took is None:
                sut.restart()
    finally:
        sut.stop()
    return 1 if bad else 0


def save_inputs(results: list, where: str) -> None:
    import re
    from pathlib import Path

    for r in results:
        d = Path(where) / re.sub(r"[^A-Za-z0-9._-]+", "_", r.name)
        for i, f in enumerate(x for x in r.findings if x.input):
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:03d}-{f.kind}.bin").write_bytes(f.input.encode("latin-1"))
            (d / f"{i:03d}-{f.kind}.txt").write_text(f"{f.case}\n{f.detail}\n")


if __name__ == "__main__":
    sys.exit(main())
