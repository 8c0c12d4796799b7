"""``/metrics``: a prometheus_client registry per server and one collector reading its internal stats.

Why a collector and not counters updated in place: the hot paths (the media clock, the SIP
core, the loader) already keep plain integers and fixed-bucket histograms; reading them at
scrape time costs nothing between scrapes and nothing per packet.  Every family is one
quantity (no ``kind`` label mixing unrelated counts); the names are listed in the README's
Metrics section and kept stable.
"""

from __future__ import annotations

import asyncio
import functools
import platform
import time
from collections.abc import Iterable, Iterator
from importlib import metadata
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..content.synth import get_engine
from ..media.ivr import DROP_REASONS
from .gcpolicy import PAUSE_BUCKETS
from .textformat import render_family
from .timing import LOOP_BOUNDS, LoopMeter, Timing

if TYPE_CHECKING:
    from ..nodeview import Node, Refreshable

# The text exposition format Prometheus scrapes (0.0.4); prometheus_client's default type names 1.0.0.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

SOURCE_COUNTERS = {
    "fetches": "Audio sources fetched over HTTP(S) (each download, cached or not)",
    "cache_hits": "Audio sources served from the decoded-audio cache without fetching",
    "disk_hits": "Audio sources read back from the on-disk cache tier",
    "revalidations": "Cached audio sources revalidated with the origin (conditional requests)",
    "coalesced": "Source loads that joined one already in flight (single-flight)",
    "decodes": "Audio sources decoded",
    "process_decodes": "Audio sources decoded in a worker process",
    "failures": "Source loads that failed (the playback fails with a reason)",
    "cancelled": "Downloads dropped because every playback that wanted them ended",
    "synthesized": "Tone and digits sources synthesized (not found in their small LRU)",
    "syntheses": "speak sources synthesized (not found in the cache)",
}
SPEECH_COUNTERS = {
    "syntheses": "Speech engine runs (espeak-ng child processes started)",
    "timeouts": "Syntheses killed at speech_timeout_s",
    "failures": "Syntheses that failed (the playback fails with speech_error)",
    "queued": "Syntheses that waited for a free slot (speech_concurrency)",
}
SIP_COUNTERS = {
    "requests_in": "SIP requests received",
    "responses_in": "SIP responses received",
    "requests_out": "SIP requests sent",
    "responses_out": "SIP responses sent",
    "retransmissions": "SIP retransmissions sent",
    "absorbed": "SIP retransmissions received and absorbed by a transaction",
    "malformed": "SIP datagrams or stream messages that did not parse",
    "calls_in": "Inbound INVITEs that started a call",
    "calls_out": "Outbound calls placed",
    "rejected": "Inbound requests refused (4xx/5xx)",
    "no_ack": "Answered INVITEs whose ACK never came",
    "sdp_refused": "Offers refused for their SDP (no common codec, refused media address)",
    "refused_source": "INVITEs from outside sip_allow_cidrs (403)",
    "refused_scanner": "Requests from scanner User-Agents, dropped unanswered",
    "auth_challenged": "INVITEs challenged for digest credentials (401/407)",
    "auth_failed": "INVITEs with wrong digest credentials (403)",
    "auth_ok": "INVITEs whose digest credentials checked",
    "rate_limited": "Requests dropped by the per-source rate limits",
    "stateless_responses": "Responses sent without keeping transaction state",
    "bad_info": "SIP INFO DTMF bodies that could not be read (answered 400)",
    "too_large": "SIP messages over a size limit (413/414/513; over TCP the connection is closed)",
    "over_budget": "Inbound SIP messages whose handling took more CPU time than sip_message_budget_ms",
}
DTMF_DROPS = DROP_REASONS  # one list: media/ivr.py keeps the running totals by these reasons
MEDIA_COUNTERS = {
    "rtp_timeouts": "Calls hung up for no inbound RTP/RTCP",
    "latched": "Symmetric RTP moves (the far end's media address latched to where it sends from)",
    "refused_remotes": "RTP destinations the media address policy refused",
    "release_errors": "Errors releasing a leg's ports or sockets",
    "tick_errors": "Leg ticks whose payload could not be made (what was playing ended failed; the leg went on)",
}
WEBHOOK_COUNTERS = {
    "delivered": ("webhooks_delivered", "Webhook requests the receiver accepted (2xx)"),
    "delivery_failed": ("webhooks_failed", "Webhook requests given up on (refused or out of attempts)"),
    "dropped": ("webhooks_dropped", "Webhook requests dropped from a full per-call queue"),
    "refused": ("webhooks_refused", "Webhook requests whose address the egress policy refused (not retried)"),
}
JOURNAL_COUNTERS = {
    "appended": "Records appended to the event journal",
    "written": "Records written to the event journal's files",
    "batches": "Batched writes to the event journal",
    "fsyncs": "fsync calls on the event journal",
    "write_errors": "Failed writes to the event journal",
    "dropped": "Journal records dropped (journal unavailable or queue full)",
    "unencodable": "Records that could not be encoded for the journal",
    "corrupt_lines": "Corrupt lines skipped when reading the journal back",
    "carried_forward": "Owed deliveries carried into a new journal segment",
    "segments_deleted": "Journal segments deleted by retention",
}


@functools.cache
def version() -> str:
    try:
        return metadata.version("mediasrv")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _histogram(name: str, doc: str, labels: list[str], series: Iterable[tuple[list[str], Timing]]) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=labels)
    for values, timing in series:
        fam.add_metric(values, timing.buckets(), timing.total)
    return fam


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counters(prefix: str, docs: dict[str, str], stats: dict[str, int], what: str) -> Iterator[Metric]:
    """One counter family per key: the documented ones always, any newer key with a generic help."""
    for key in [*docs, *(k for k in stats if k not in docs and isinstance(stats[k], int | float))]:
        yield _counter(f"{prefix}_{key}_total", docs.get(key, f"{what}: {key}"), stats.get(key, 0))


class ServerCollector(Collector):
    """Reads one :class:`Server`'s counters at scrape time."""

    def __init__(self, server: Node) -> None:
        self.server = server
        # per-leg sums, made by refresh() in slices before a scrape collects (None: summed
        # while collecting, as a synchronous exposition() does)
        self.live: tuple[int, int, int] | None = None
        # how long each sliced scrape held the event loop (exposition_async's slices summed)
        self.scrape_loop_time = Timing(LOOP_BOUNDS)
        self.scrape_longest_slice = 0.0  # of the last scrape

    async def refresh(self, chunk: int = 128, meter: LoopMeter | None = None) -> None:
        """Make the per-leg sums 128 legs at a time with the loop let in between (see live_counts); the
        calls by state are kept by the registry."""
        pause = meter.pause if meter is not None else None
        self.live = await self.server.media.live_counts(chunk, pause)

    async def gap(self) -> None:
        """Between slices: back right after a media clock wake-up, when a slice delays none."""
        await self.server.media.clock.gap()

    def scraped(self, meter: LoopMeter) -> None:
        self.scrape_loop_time.observe(meter.stop())
        self.scrape_longest_slice = meter.longest

    def forget(self) -> None:
        self.live = None

    def collect(self) -> Iterator[Metric]:
        s = self.server
        info = GaugeMetricFamily("mediasrv_build_info", "mediasrv version and runtime (value 1)",
                                 labels=["version", "python", "clock", "fastpath"])
        info.add_metric([version(), platform.python_version(), s.media.clock.mechanism,
                         str(s.media.fastpath_enabled).lower()], 1)
        yield info
        yield from self._calls()
        yield from self._media()
        yield from self._sources()
        yield from self._dtmf()
        yield from self._sip()
        yield from self._events()
        yield from self._gc()
        bad = getattr(s, "bad_requests", None)
        yield _counter("mediasrv_http_malformed_requests_total",
                       "Requests the HTTP parser refused with a 400 (bad framing or headers; logged rate-limited)",
                       bad.refused if bad is not None else 0)
        yield _histogram("mediasrv_metrics_scrape_loop_seconds",
                         "Time each /metrics response held the event loop (its slices summed; the process_* "
                         "part, made in a thread at most every 10 s, is left out)", [], [([], self.scrape_loop_time)])
        yield _gauge("mediasrv_metrics_scrape_longest_slice_seconds",
                     "The longest the last /metrics response held the event loop at a time", self.scrape_longest_slice)
        yield _histogram("mediasrv_http_request_duration_seconds",
                         "HTTP API request latency by method and route template (SSE streams left out)",
                         ["method", "route"], ((list(k), t) for k, t in sorted(s.http_timings.items())))

    def _calls(self) -> Iterator[Metric]:
        s = self.server
        yield _gauge("mediasrv_active_calls", "Calls not yet ended", s.registry.active_count)
        try:  # scraped on the loop's thread; anywhere else there is no loop to count tasks of
            tasks = len(asyncio.all_tasks())
        except RuntimeError:
            tasks = None
        if tasks is not None:
            yield _gauge("mediasrv_asyncio_tasks", "asyncio tasks alive (robustness/ checks it for leaks)", tasks)
        by_state = GaugeMetricFamily("mediasrv_calls", "Calls not yet ended, by state", labels=["state"])
        for state, n in s.registry.live_state_counts().items():  # kept by the registry: O(1)
            by_state.add_metric([state.value], n)
        yield by_state

    def _media(self) -> Iterator[Metric]:
        media = self.server.media
        m = media.metrics(self.live)
        yield _gauge("mediasrv_rtp_legs", "RTP legs on the media clock", m["legs"])
        yield _gauge("mediasrv_rtp_ports_in_use", "RTP/RTCP port pairs held by live legs", m.get("ports_in_use", 0))
        yield from _counters("mediasrv_media", MEDIA_COUNTERS, m.get("media_events") or {}, "Media plane")
        yield _gauge("mediasrv_playing_legs", "Legs with a main playback current",
                     media.playing_legs if self.live is None else self.live[2])
        yield _counter("mediasrv_rtp_packets_sent_total", "RTP packets sent", m["packets_sent"])
        yield _counter("mediasrv_rtp_packets_received_total", "RTP packets received", m["packets_received"])
        clock = media.clock.stats
        yield _counter("mediasrv_clock_ticks_total", "Media clock sub-slots (1 ms) processed", clock.ticks)
        yield _counter("mediasrv_clock_wakeups_total", "Media clock wake-ups", clock.wakeups)
        yield _counter("mediasrv_clock_late_ticks_total", "Sub-slots with packets to send run more than 1 ms after their deadline",
                       clock.late_ticks)
        yield _counter("mediasrv_clock_tick_errors_total", "Leg ticks that raised (the leg is taken off the clock)",
                       clock.tick_errors)
        hist = clock.histogram()
        lateness = HistogramMetricFamily("mediasrv_clock_tick_lateness_seconds",
                                         "How late each clock wake-up sent its first packets after their deadline")
        lateness.add_metric([], hist["buckets"], hist["sum"])  # type: ignore[arg-type]
        yield lateness
        played = CounterMetricFamily("mediasrv_playbacks_total", "Playbacks that ended, by final status",
                                     labels=["status"])
        for status, n in sorted(m["playbacks_by_status"].items()):
            played.add_metric([status], n)
        yield played
        cache = media.loader.cache
        cache_bytes = GaugeMetricFamily("mediasrv_cache_bytes", "Decoded audio held by the cache, by tier",
                                        labels=["tier"])
        cache_bytes.add_metric(["memory"], cache.memory_used)
        cache_bytes.add_metric(["disk"], cache.disk_used)
        yield cache_bytes
        limit = GaugeMetricFamily("mediasrv_cache_limit_bytes", "Cache size limit, by tier", labels=["tier"])
        limit.add_metric(["memory"], cache.memory_bytes)
        limit.add_metric(["disk"], cache.disk_bytes)
        yield limit
        yield _gauge("mediasrv_cache_entries", "Entries in the decoded-audio cache", len(cache.entries))

    def _sources(self) -> Iterator[Metric]:
        loader = self.server.media.loader
        yield from _counters("mediasrv_source", SOURCE_COUNTERS, loader.stats, "Audio source loader")
        yield from _counters("mediasrv_speech", SPEECH_COUNTERS, getattr(get_engine(), "stats", {}), "Speech engine")
        yield _histogram("mediasrv_source_load_seconds", "Successful audio source loads, start to fully decoded",
                         [], [([], loader.load_time)])

    def _dtmf(self) -> Iterator[Metric]:
        ivr = self.server.media.ivr
        t = ivr.totals
        received = CounterMetricFamily("mediasrv_dtmf_received_total", "Key presses reported (dtmf.received), by method",
                                       labels=["method"])
        received.add_metric(["rfc4733"], t["received_rfc4733"])
        received.add_metric(["info"], t["received_info"])
        yield received
        sent = CounterMetricFamily("mediasrv_dtmf_sent_digits_total", "Digits sent into calls, by method",
                                   labels=["method"])
        sent.add_metric(["rfc4733"], t["sent_rfc4733"])
        sent.add_metric(["inband"], t["sent_inband"])
        yield sent
        yield _counter("mediasrv_dtmf_barge_ins_total", "Playbacks stopped by a key press (barge_in)", t["barge_ins"])
        drops = ivr.drops()
        dropped = CounterMetricFamily("mediasrv_dtmf_dropped_packets_total",
                                      "Telephone-event packets dropped, by reason (duplicates: retransmitted ends and "
                                      "late updates, as RFC 4733 senders make them)", labels=["reason"])
        for reason in DTMF_DROPS:
            dropped.add_metric([reason], drops.get(reason, 0))
        yield dropped

    def _sip(self) -> Iterator[Metric]:
        yield from _counters("mediasrv_sip", SIP_COUNTERS, getattr(self.server.sip, "stats", {}) or {}, "SIP core")
        budget = getattr(self.server.sip, "budget", None)
        if budget is not None:
            yield _gauge("mediasrv_sip_message_handling_max_seconds",
                         "Most CPU time one inbound SIP message took to handle since start (sip/guard.py)", budget.max_s)

    def _events(self) -> Iterator[Metric]:
        events = self.server.events
        ev = events.stats
        yield _counter("mediasrv_events_published_total", "Events published", ev.get("published", 0))
        for key, (name, doc) in WEBHOOK_COUNTERS.items():
            yield _counter(f"mediasrv_{name}_total", doc, ev.get(key, 0))
        yield _histogram("mediasrv_webhook_delivery_seconds",
                         "Webhook requests, first attempt to outcome (retries included), by sink and result",
                         ["sink", "result"],
                         (([sink.name, result], t) for sink in events.sinks for result, t in sink.delivery_time.items()
                          if t.count))  # a sink's series appear with its first delivery (most dialects stay unused)
        journal = events.journal
        yield _gauge("mediasrv_events_journal_up", "1 while events are persisted, 0 while only in memory (see /healthz)",
                     int(journal is not None and journal.state == "ok"))
        if journal is not None:
            yield from _counters("mediasrv_events_journal", JOURNAL_COUNTERS, journal.stats, "Event journal")

    def _gc(self) -> Iterator[Metric]:
        g = self.server.gc.metrics()
        yield _gauge("mediasrv_gc_frozen_objects", "Objects frozen out of the GC (gcpolicy.py; an upper bound)",
                     g["frozen_objects"])
        yield _counter("mediasrv_gc_reclaims_total", "Unfreeze + full collections (when idle, or the backstop)",
                       g["reclaims"])
        pauses = HistogramMetricFamily("mediasrv_gc_pause_seconds", "Cyclic GC collection pauses by generation",
                                       labels=["generation"])
        longest = GaugeMetricFamily("mediasrv_gc_pause_max_seconds", "Longest cyclic GC collection pause by generation",
                                    labels=["generation"])
        for gen, p in g["pauses"].items():
            running, buckets = 0, []
            for le, n in zip([*map(str, PAUSE_BUCKETS), "+Inf"], p.counts, strict=True):
                running += n
                buckets.append((le, running))
            pauses.add_metric([str(gen)], buckets, p.total_s)
            longest.add_metric([str(gen)], p.max_s)
        yield pauses
        yield longest


def make_registry(collector: ServerCollector) -> CollectorRegistry:
    """A server's registry: its own collector plus process_*, python_info and python_gc_* (no globals)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


# process_* (CPU, RSS, open fds, ...) is made off the loop and at most every PROCESS_REFRESH_S:
# counting open fds lists /proc/self/fd, 4.4 ms with 1,500 calls' sockets (measured), and even in a
# thread the GIL it holds meanwhile delays the media clock (p99 1.8-4 ms with a scrape a second).
_PROCESS_REGISTRY = CollectorRegistry(auto_describe=False)
ProcessCollector(registry=_PROCESS_REGISTRY)
PROCESS_REFRESH_S = 10.0
_process_cache: tuple[float, bytes] | None = None


def exposition(registry: CollectorRegistry) -> bytes:
    return b"".join(render_family(family) for family in registry.collect()) + generate_latest(_PROCESS_REGISTRY)


async def exposition_async(registry: CollectorRegistry, collector: Refreshable | None = None) -> bytes:
    """The same text, made one family at a time with the event loop let in between.

    Why: the whole scrape is a few milliseconds of Python on the loop that also runs the media
    clock (4-5 ms at 1,500 calls with prometheus_client rendering each family; see textformat.py
    for the renderer used instead), a wake-up that falls in it is late by as much; in slices of one
    family or 128 legs the clock's wake-ups run in between, and with the collector's ``gap`` each
    slice starts right after a wake-up, in the clock's idle time, so that it delays none.
    """
    parts = []
    meter = LoopMeter(collector.gap if collector is not None else None)
    if collector is not None:
        await collector.refresh(meter=meter)  # the per-call and per-leg sums, sliced
    try:
        for family in registry.collect():  # the collectors yield lazily: collecting is sliced too
            parts.append(render_family(family))
            await meter.pause()
    finally:
        if collector is not None:
            collector.forget()
            collector.scraped(meter)
    global _process_cache
    now = time.monotonic()
    if _process_cache is None or now - _process_cache[0] >= PROCESS_REFRESH_S:
        _process_cache = (now, await asyncio.to_thread(generate_latest, _PROCESS_REGISTRY))
    parts.append(_process_cache[1])
    return b"".join(parts)
