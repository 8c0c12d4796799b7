"""Our text-format renderer writes exactly what prometheus_client's generate_latest writes."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
    SummaryMetricFamily,
    UnknownMetricFamily,
)

from mediasrv.ops.textformat import _Single, render_family
from tests.support.server import start_server


def same(family: Metric) -> None:
    assert render_family(family) == generate_latest(_Single(family)), family


async def test_every_family_a_running_server_exposes(tmp_path):
    r = await start_server(tmp_path)
    try:
        families = list(r.server.metrics_registry.collect())
        assert len(families) > 50
        for family in families:
            same(family)
    finally:
        await r.server.stop()


def test_the_library_collectors_and_every_family_type():
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    for family in registry.collect():
        same(family)
    c = CounterMetricFamily("c", "a counter\nwith a newline and a \\ backslash", labels=["a", "b"], created=1.5)
    c.add_metric(["x", 'quote " and \\ and \n'], 3, timestamp=1700000000.25)
    same(c)
    h = HistogramMetricFamily("h", "hist", labels=["route"])
    h.add_metric(["/v1/calls/{call_id}"], [("0.001", 1), ("+Inf", 4)], 0.5)
    same(h)
    g = GaugeMetricFamily("g", "gauge")
    for v in (0, -0.0, 1e-9, 123456789012.0, 1e21, math.inf, -math.inf, math.nan, 7):
        g.add_metric([], v)
    same(g)
    i = InfoMetricFamily("build", "info", value={"version": "1.2"})
    same(i)
    s = StateSetMetricFamily("ss", "states", value={"a": True, "b": False})
    same(s)
    gh = GaugeHistogramMetricFamily("gh", "gh", buckets=[("1", 2), ("+Inf", 3)], gsum_value=4)
    same(gh)
    same(SummaryMetricFamily("sm", "summary", count_value=3, sum_value=1.5))
    same(UnknownMetricFamily("u", "unknown", value=2))


def test_a_name_that_is_not_a_plain_legacy_name_goes_to_the_library():
    g = GaugeMetricFamily("my.metric", "dotted (needs escaping)")
    g.add_metric([], 1)
    same(g)


@given(st.text(max_size=40), st.floats(allow_nan=False) | st.integers(-10**12, 10**12))
def test_any_label_value_and_number(value, number):
    g = GaugeMetricFamily("mediasrv_test", "property", labels=["v"])
    g.add_metric([value], number)
    same(g)
