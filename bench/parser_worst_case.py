"""The slowest single adversarial input per parser of untrusted input, in µs (issue 14).

Runs every case of tests/support/adversarial.py (the same inputs tests/unit/test_parser_adversarial.py
bounds at 50 ms each), timing each as the fastest of three runs, and prints one row per parser:
cases run, the slowest case's time and label, and the median case.

    PYTHONPATH=. python3 bench/parser_worst_case.py [--size BYTES] [--only PREFIX]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.adversarial import SIZE, all_cases, timed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=SIZE, help="bytes per adversarial run (default 64 KiB)")
    ap.add_argument("--only", default="", help="only parsers whose name starts with this")
    args = ap.parse_args()
    logging.disable(logging.CRITICAL)  # the SIP core logs what it refuses; not what is measured
    started = time.perf_counter()
    results: dict[str, list[tuple[float, str, int]]] = {}
    for case in all_cases(args.size):
        if not case.parser.startswith(args.only):
            continue
        results.setdefault(case.parser, []).append((timed(case.run), case.label, case.size))
    print(f"{'parser':38} {'cases':>6} {'median µs':>10} {'worst µs':>10}  worst input (bytes)")
    for parser, rows in results.items():
        worst = max(rows)
        median = statistics.median(r[0] for r in rows)
        label = worst[1] if len(worst[1]) <= 60 else worst[1][:57] + "..."
        print(f"{parser:38} {len(rows):6d} {median * 1e6:10.0f} {worst[0] * 1e6:10.0f}  {label} ({worst[2]})")
    print(f"\n{sum(len(r) for r in results.values())} cases in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
