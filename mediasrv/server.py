"""Wires signaling, media, events and HTTP together; start and graceful stop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from mediacodecs.codec import get as get_codec

from .api import acs_app, bandwidth_app, console, httplog, ivr, native, plivo_app, telnyx_app, topology
from .api import media as media_api
from .api.access import AccessLogger, call_context_middleware
from .api.auth import bearer_auth
from .api.errors import error_middleware
from .calls.commands import CommandService
from .calls.controller import SipSettings, SipUserAgent
from .calls.registry import Call, CallRegistry
from .calls.rooms import RoomRegistry
from .cluster.drain import Drain
from .cluster.forward import Forwarder
from .cluster.identity import NodeLock, claim_node_id, default_node_id
from .config import Settings, is_loopback
from .content.synth import EspeakEngine, get_engine, set_engine
from .egress import Egress, EgressSettings
from .events.bus import EventBus, WebhookSettings
from .events.journal import Journal, JournalSettings
from .media import MediaPlane, MediaSettings
from .ops import oplog, realtime
from .ops.gcpolicy import GcPolicy
from .ops.logs import call_context
from .ops.metrics import ServerCollector, make_registry
from .ops.timing import Timing, timing_middleware
from .sip.admission import AdmissionSettings

log = logging.getLogger("mediasrv.server")


class Server:
    """One mediasrv node: owns the registry, the event bus, the media plane, the SIP UA and the HTTP app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node_id = settings.node
        self.registry = CallRegistry(node_id=self.node_id)
        self._node_lock: NodeLock | None = None
        journal = Journal(JournalSettings(
            dir=Path(settings.data_dir) / "events",
            segment_bytes=settings.events_segment_bytes,
            max_bytes=settings.events_max_bytes,
            max_age_s=settings.events_max_age_s,
            fsync_interval_s=settings.events_fsync_interval_s,
        )) if settings.events_journal else None
        # one egress policy for every outbound HTTP connection (audio, webhooks, callbacks, BXML)
        self.egress = Egress(EgressSettings.from_settings(settings))
        self.events = EventBus(WebhookSettings(url=settings.webhook_url, timeout_s=settings.webhook_timeout_s,
                                               max_attempts=settings.webhook_max_attempts,
                                               backoff_s=settings.webhook_backoff_s), journal=journal,
                               egress=self.egress)
        sip_host, sip_port = settings.sip_addr
        lo, hi = settings.rtp_range
        self.media = MediaPlane(
            MediaSettings(
                host=sip_host,
                rtp_port_lo=lo,
                rtp_port_hi=hi,
                data_dir=settings.data_dir,
                node_id=self.node_id,
                media_dir=settings.media_dir or "",
                send_silence=settings.send_silence,
                rtp_timeout_s=settings.rtp_timeout_s,
                rtp_hold_timeout_s=settings.rtp_hold_timeout_s,
                symmetric_rtp=settings.symmetric_rtp,
                media_deny_cidrs=list(settings.media_deny_cidrs),
                fetch_timeout_s=settings.fetch_timeout_s,
                max_fetch_bytes=settings.max_fetch_bytes,
                max_audio_seconds=settings.max_audio_seconds,
                cache_bytes=settings.cache_bytes,
                disk_cache_bytes=settings.disk_cache_bytes,
                decode_processes=settings.decode_processes,
                rtcp_interval_s=settings.rtcp_interval_s,
                use_timerfd=settings.use_timerfd,
                fetch_connect_timeout_s=settings.fetch_connect_timeout_s,
                fetch_first_byte_timeout_s=settings.fetch_first_byte_timeout_s,
                fetch_allow_cidrs=list(settings.fetch_allow_cidrs),
                fetch_deny_cidrs=list(settings.fetch_deny_cidrs),
                wideband=any(get_codec(c).wideband for c in settings.codecs),
            ),
            emit=self._emit,
            on_rtp_timeout=self._on_rtp_timeout,
        )
        self.commands = CommandService(self.registry, self.media)  # what every API dialect asks of a call
        self.sip = SipUserAgent(
            SipSettings(
                host=sip_host,
                port=sip_port,
                auto_answer=settings.auto_answer,
                max_calls=settings.max_calls,
                codecs=tuple(settings.codecs),
                message_budget_ms=settings.sip_message_budget_ms,
                media_address_check=self.media.policy.check,
                ring_timeout_s=settings.ring_timeout_s,
                admission=AdmissionSettings(
                    allow_cidrs=tuple(settings.sip_allow_cidrs),
                    users=dict(settings.sip_users),
                    realm=settings.sip_realm,
                    auth_proxy=settings.sip_auth_proxy,
                    nonce_ttl_s=settings.sip_nonce_ttl_s,
                    rate_per_source=settings.sip_rate_per_source,
                    burst_per_source=settings.sip_burst_per_source,
                    max_sources=settings.sip_rate_max_sources,
                ),
            ),
            self.registry,
            self.media,
        )
        set_engine(EspeakEngine(timeout_s=settings.speech_timeout_s, concurrency=settings.speech_concurrency,
                                max_chars=settings.speech_max_chars))
        self.registry.subscribe(self._on_call_event)
        # the one owner of who hears whom (it wires the media plane's legs); the routes and dialects use it
        self.rooms = RoomRegistry(self.registry, self.media, self.events.publish)
        self.bad_requests = httplog.install()  # unparseable requests: one short line, no traceback
        self.http_timings: dict[tuple[str, str], Timing] = {}
        self.metrics_collector = ServerCollector(self)
        self.metrics_registry = make_registry(self.metrics_collector)
        self.forwarder = Forwarder(self)  # commands about another node's calls go to that node (cluster_peers)
        self.app = web.Application(middlewares=[call_context_middleware, timing_middleware(self.http_timings),
                                                error_middleware,
                                                bearer_auth(settings.api_token, settings.metrics_token),
                                                self.forwarder.middleware])
        self.app[native.SERVER_KEY] = self
        self.drain = Drain(self)  # POST /v1/drain or SIGUSR1: 503 to new calls, exit when the last one ends
        self.app.router.add_post("/v1/drain", self.drain.handle)
        native.add_routes(self.app)
        ivr.add_routes(self.app)
        topology.setup(self.app, self)  # outbound calls, bridges, rooms
        media_api.add_routes(self.app)
        for dialect in (telnyx_app, plivo_app, acs_app, bandwidth_app):
            dialect.setup(self.app, self)
        self.gc = GcPolicy(lambda: self.media.clock.core.active_count == 0, freeze=settings.gc_freeze)
        console.add_routes(self.app, settings.api_token)
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self.http_address: tuple[str, int] | None = None
        self.metrics_address: tuple[str, int] | None = None

    # -- events ----------------------------------------------------------
    def _emit(self, type_: str, call_id: str, data: dict[str, Any]) -> None:
        with call_context(call_id):
            oplog.playback_event(type_, data)
            self.events.publish(type_, call_id, data)

    def _on_call_event(self, type_: str, call: Call) -> None:
        with call_context(call.call_id):
            oplog.call_event(type_, call)
            self._publish_call_event(type_, call)

    def _publish_call_event(self, type_: str, call: Call) -> None:
        if type_ == "call.hangup":
            try:
                call.extra["final_stats"] = self.media.leg_stats(call.call_id)
            except KeyError:
                pass
        if type_ == "call.ringing":
            return  # internal state only; the native event set has no ringing event
        self.events.publish(type_, call.call_id, call.summary())

    def _on_rtp_timeout(self, call_id: str) -> None:
        asyncio.get_running_loop().create_task(self.sip.hangup(call_id, cause="rtp_timeout", by="server"))

    # -- lifecycle -------------------------------------------------------
    async def start(self) -> None:
        port_known = bool(self.settings.node_id) or self.settings.sip_addr[1] != 0
        if port_known:  # before anything listens: a duplicate node id never serves
            self._claim_node_id()
        await self.events.start()  # before SIP and HTTP: owed webhooks go first, seq continues
        await self.media.start()
        self.media.loader.start_workers()
        # the voice list is read once, off the loop, before the first speak command needs it
        await asyncio.get_running_loop().run_in_executor(None, get_engine().has_voice, "en")
        await self.sip.start()
        if not self.settings.node_id and self.settings.sip_addr[1] == 0:  # default id from the port really bound
            self._set_node_id(default_node_id(self.sip.address[1]))
        if not port_known:
            self._claim_node_id()
        host, port = self.settings.http_addr
        access: dict[str, Any] = ({"access_log": logging.getLogger("mediasrv.access"),
                                   "access_log_class": AccessLogger} if self.settings.access_log else {"access_log": None})
        self._runner = web.AppRunner(self.app, handle_signals=False, **access)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses
        self.http_address = (bound[0][0], bound[0][1]) if bound else (host, port)
        if self.settings.metrics_addr is not None:
            await self._start_metrics_listener(*self.settings.metrics_addr)
        if not self.settings.api_token and is_loopback(host):
            log.warning("HTTP API on %s:%s has no token: loopback only (set MEDIASRV_API_TOKEN)", *self.http_address)
        log.info(
            "mediasrv up: node %s, SIP %s:%s (UDP+TCP), HTTP %s:%s, RTP %s",
            self.node_id,
            *self.sip.address,
            *self.http_address,
            self.settings.rtp_ports,
        )
        self.gc.start()

    def _claim_node_id(self) -> None:
        if self.settings.cluster_dir:
            self._node_lock = claim_node_id(self.settings.cluster_dir, self.node_id,
                                            {"sip": self.settings.sip, "http": self.settings.http})

    def _set_node_id(self, node_id: str) -> None:
        self.node_id = self.registry.node_id = self.media.settings.node_id = node_id

    async def _start_metrics_listener(self, host: str, port: int) -> None:
        """``metrics_listen``: an address serving GET /metrics only (metrics_token, if set, is asked there)."""
        app = web.Application(middlewares=[error_middleware, bearer_auth(self.settings.metrics_token)])
        app[native.SERVER_KEY] = self
        app.add_routes([web.get("/metrics", native.metrics)])
        self._metrics_runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._metrics_runner.setup()
        site = web.TCPSite(self._metrics_runner, host, port)
        await site.start()
        bound = self._metrics_runner.addresses
        self.metrics_address = (bound[0][0], bound[0][1]) if bound else (host, port)
        log.info("metrics on http://%s:%s/metrics", *self.metrics_address)

    async def stop(self) -> None:
        await self.gc.stop()
        await self.sip.stop()
        await self.media.stop()
        self.events.end_subscriptions()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.events.close()
        await self.forwarder.close()
        if self._node_lock is not None:
            self._node_lock.release()
            self._node_lock = None

    def journal_health(self) -> dict[str, Any]:
        """For /healthz: is the event journal persisting, and why not."""
        journal = self.events.journal
        if journal is None:
            return {"state": "disabled"}
        return {"state": journal.state, "error": journal.error, "restored_deliveries": self.events.restored["deliveries"]}


async def run_forever(settings: Settings) -> None:
    """``mediasrv serve``: run until SIGINT/SIGTERM (or drained: SIGUSR1 / POST /v1/drain), then stop gracefully."""
    import signal

    server = Server(settings)
    await server.start()
    # threads/processes made before this never had it; SCHED_RESET_ON_FORK keeps any made later normal
    log.info("scheduling: %s", realtime.apply(settings.realtime_priority))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:  # pragma: no cover - non-POSIX
            pass
    try:
        loop.add_signal_handler(signal.SIGUSR1, server.drain.start)
    except NotImplementedError:  # pragma: no cover - non-POSIX
        pass
    drained = loop.create_task(server.drain.drained.wait())

    def on_drained(task: asyncio.Task[Any]) -> None:
        if not task.cancelled():
            log.info("drained: no call left, exiting")
            stop.set()

    drained.add_done_callback(on_drained)
    http_host, http_port = server.http_address or settings.http_addr
    print(f"mediasrv serving: node {server.node_id} SIP {server.sip.address[0]}:{server.sip.address[1]} "
          f"HTTP http://{http_host}:{http_port}", flush=True)
    await stop.wait()
    drained.cancel()
    log.info("stopping: %d call(s) get BYE, owed webhooks stay journaled", server.registry.active_count)
    await server.stop()
    log.info("stopped")
