"""The per-suite table and the findings list."""

from __future__ import annotations

from collections import Counter

from .oracle import Snapshot, SuiteResult


def _route(case: str) -> str:
    """``POST /v1/x [ctype] #12: body`` → ``POST /v1/x [ctype]`` (ids shortened)."""
    head = case.split(" #", 1)[0].split(" ctype:", 1)[0]
    return " ".join(p if len(p) < 60 else p[:30] + "…" for p in head.split(" "))


def _growth(b: Snapshot | None, a: Snapshot | None) -> str:
    if b is None or a is None:
        return "(crashed at the end)"
    return (f"fd {b.fds}→{a.fds} port {b.ports}→{a.ports} task {b.tasks}→{a.tasks} "
            f"rss {b.rss_kb // 1024}→{a.rss_kb // 1024}M")


def table(results: list[SuiteResult]) -> str:
    head = ("suite", "sent", "hang", "slow", "crash", "tb", "wrong", "5xx", "calls left", "growth before→after",
            "stray sip/rtp/ext", "s")
    rows = [head]
    for r in results:
        rows.append((r.name, str(r.sent), str(r.hangs), str(sum(f.kind == "slow" for f in r.findings)), str(r.crashes) + (f" ({r.restarts} restarts)" if r.restarts else ""), str(r.tracebacks), str(r.wrong),
                     str(r.http_5xx), str(r.calls_left), _growth(r.before, r.after),
                     f"{r.stray_sip}/{r.stray_rtp}/{r.stray_ext}", f"{r.seconds:.0f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def findings(results: list[SuiteResult], per_kind: int = 12) -> str:
    out: list[str] = []
    for r in results:
        if not r.findings:
            continue
        out.append(f"## {r.name}")
        by_kind: dict[str, list] = {}
        for f in r.findings:
            by_kind.setdefault(f.kind, []).append(f)
        for kind, fs in by_kind.items():
            out.append(f"  {kind}: {len(fs)}")
            if kind in ("traceback", "5xx"):
                key = (lambda f: f.detail[:110]) if kind == "traceback" else (lambda f: _route(f.case))
                distinct = Counter(key(f) for f in fs)
                out.append("    distinct: " + "; ".join(f"{k} x{n}" for k, n in distinct.most_common(10)))
            for f in fs[:per_kind]:
                out.append(f"    - {f.case}: {f.detail}".replace("\n", " ")[:400])
    return "\n".join(out)
