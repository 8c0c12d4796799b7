"""A bounded run of the robustness harness (robustness/): every suite at a fraction of its inputs
against a live ``mediasrv serve``, inside a private network namespace. The full run is
``python -m robustness`` (and ``--long`` for ≥10^5 mutated inputs per protocol)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCALE = "0.1"


def test_bounded_robustness_run_finds_nothing(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "robustness", "--scale", SCALE, "--json", str(out), "--save", str(tmp_path / "inputs")],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0 and out.exists(), f"harness failed: {proc.stderr[-3000:]}"
    results = json.loads(out.read_text())
    assert {r["name"].split(" ")[0] for r in results} >= {"torture", "PROTOS", "advisory", "mutation", "RTP/RTCP",
                                                            "HTTP", "BXML", "audio"}
    problems = []
    for r in results:
        assert r["sent"] > 0, r["name"]
        # calls_left is not a fault by itself (a fuzzed INVITE can be answered and its caller never hang up);
        # what such calls hold is checked after they are hung up (growth). stray_rtp is RTP to the
        # address an INVITE's SDP named, which a call does unless symmetric RTP is on.
        # stray_ext of the HTTP-side suites is egress an API client asked for (a mutated audio URL's
        # host): the metadata addresses are checked there as "wrong" (the egress check) instead.
        keys = ("hangs", "crashes", "tracebacks", "wrong", "http_5xx", "stray_sip")
        if r["name"].split(" ")[0] not in ("HTTP", "BXML", "audio"):
            keys += ("stray_ext",)
        counts = {k: r[k] for k in keys}
        # "slow" (an OPTIONS answered 0.5-7 s after one input) is reported but not failed on here: on a
        # loaded 2-core machine a scheduling stall looks the same; a hang is ≥ 7 s without an answer
        growth = [f for f in r["findings"] if f["kind"] in ("growth", "unreproduced-hang", "unreproduced-traceback")]
        if any(counts.values()) or growth:
            first = [f"{f['kind']}: {f['case']}: {f['detail'][:160]}" for f in r["findings"]][:6]
            problems.append(f"{r['name']}: {counts} {first}")
    assert not problems, "\n" + proc.stdout[:6000]
