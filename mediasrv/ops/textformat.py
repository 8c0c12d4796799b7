"""Prometheus text format 0.0.4 for one metric family, byte for byte as prometheus_client writes it.

Why not ``prometheus_client.generate_latest`` on the loop: it validates and escapes every metric
and label name with regular expressions on every sample (about 12 µs a line, measured with
cProfile: 2.3 ms for the server's ~190 lines, and more when called once per family as the sliced
scrape does), on the thread that also runs the media clock.  Our families' names are fixed and
valid, so they are checked once per name and cached; label values are still escaped.  A family
with a name that is not a plain legacy name goes to ``generate_latest`` unchanged.
``tests/unit/test_textformat.py`` checks the output against ``generate_latest``'s for every family
a running server exposes, plus edge cases (escapes, infinities, timestamps, OpenMetrics samples).
"""

from __future__ import annotations

import re

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = ["render_family"]

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_plain_names: dict[str, bool] = {}  # name -> a legacy name that needs no escaping (bounded: our names)
_plain_labels: dict[str, bool] = {}
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")  # OpenMetrics-only samples: moved to their own gauge
# OpenMetrics family type -> (name suffix, type) in the 0.0.4 text format; other types are kept as they are
_TEXT_FORMAT_TYPES = {
    "counter": ("_total", "counter"),
    "info": ("_info", "gauge"),
    "stateset": ("", "gauge"),
    "gaugehistogram": ("", "histogram"),
    "unknown": ("", "untyped"),
}


def _is_plain(name: str, cache: dict[str, bool], pattern: re.Pattern[str]) -> bool:
    known = cache.get(name)
    if known is None:
        known = bool(pattern.match(name))
        if len(cache) < 10_000:
            cache[name] = known
    return known


class _Single:
    """One family shaped as a registry, for ``generate_latest``."""

    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> list[Metric]:
        return [self.family]


def _escape_value(v: str) -> str:
    if "\\" in v or "\n" in v or '"' in v:
        return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return v


def _line(s: Sample) -> str:
    if s.labels:
        labels = "{" + ",".join(f'{k}="{_escape_value(v)}"' for k, v in sorted(s.labels.items())) + "}"
    else:
        labels = ""
    stamp = f" {int(float(s.timestamp) * 1000):d}" if s.timestamp is not None else ""
    return f"{s.name}{labels} {floatToGoString(s.value)}{stamp}\n"


def _plain_family(metric: Metric) -> bool:
    if not _is_plain(metric.name, _plain_names, _METRIC_NAME):
        return False
    for s in metric.samples:
        if not _is_plain(s.name, _plain_names, _METRIC_NAME):
            return False
        for k in s.labels:
            if not _is_plain(k, _plain_labels, _LABEL_NAME):
                return False
    return True


def render_family(metric: Metric) -> bytes:
    """The family's ``# HELP``/``# TYPE`` lines and samples, as ``generate_latest`` renders them."""
    if not _plain_family(metric):
        return generate_latest(_Single(metric))
    suffix_and_kind = _TEXT_FORMAT_TYPES.get(metric.type)
    name, kind = metric.name, metric.type
    if suffix_and_kind is not None:
        name, kind = name + suffix_and_kind[0], suffix_and_kind[1]
    doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
    out = [f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"]
    extra: dict[str, list[str]] = {}
    for s in metric.samples:
        for suffix in _OM_SUFFIXES:
            if s.name == metric.name + suffix:
                extra.setdefault(suffix, []).append(_line(s))
                break
        else:
            out.append(_line(s))
    for suffix, lines in sorted(extra.items()):
        out.append(f"# HELP {metric.name}{suffix} {doc}\n# TYPE {metric.name}{suffix} gauge\n")
        out.extend(lines)
    return "".join(out).encode("utf-8")
