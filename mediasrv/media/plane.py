"""The media plane: RTP legs, their players and the one clock; the server's MediaBackend."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mediacodecs.codec import PCM_RATE, PCMU, Codec
from mediacodecs.registry import BY_NUMBER, DEFAULT_PTIME_MS

from ..calls.registry import Call, CallState, NegotiatedMedia
from ..content.loader import Claim, MediaLoader
from ..content.source import Media
from ..rtp import fastpath
from ..rtp.leg import PortAllocator, RtpLeg
from ..rtp.packet import HEADER
from .addrpolicy import MediaAddressPolicy
from .clock import MediaClock, Scheduled, Tickable, run_each
from .collect import Collect, CollectRequest
from .dtmf import DtmfSender
from .ivr import IvrControl
from .mixer import Mixer
from .player import Playback, PlaybackStateError, Player, PlayError, PlayRequest, SourceSpec, new_playback

log = logging.getLogger("mediasrv.media")

Emit = Callable[[str, str, dict[str, Any]], None]
HOUSEKEEPING_CHUNK = 32  # legs handled per event-loop turn by the once-a-second housekeeping
_pack_header = HEADER.pack
UNNEGOTIATED = PCMU  # a leg's codec until SDP has settled one (nothing is sent before that)
LEVEL_MS = 100  # the level meter's window


@dataclass
class MediaSettings:
    host: str = "127.0.0.1"
    rtp_port_lo: int = 20000
    rtp_port_hi: int = 29999
    data_dir: str = "./data"
    node_id: str = ""  # named in playback ids (p3:<node>:…); empty: a bare random id
    media_dir: str = ""  # the named-media store (shared between nodes); empty: <data_dir>/media
    send_silence: bool = True
    rtp_timeout_s: float = 30.0  # no RTP/RTCP from the peer for this long: hang up (0 = off)
    rtp_hold_timeout_s: float = 300.0  # the same while the call is on hold (sendonly/inactive/c=0.0.0.0)
    symmetric_rtp: bool = False  # send to where the peer's RTP comes from (once it comes), policy permitting
    media_deny_cidrs: list[str] = field(default_factory=list)  # on top of the always-refused addresses
    fetch_timeout_s: float = 30.0
    max_fetch_bytes: int = 250 * 1024 * 1024
    max_audio_seconds: float = 3600.0
    cache_bytes: int = 512 * 1024 * 1024  # decoded audio kept in memory
    disk_cache_bytes: int = 4 * 1024 * 1024 * 1024  # decoded audio kept under <data-dir>/cache
    fetch_allow_cidrs: list[str] = field(default_factory=list)
    fetch_deny_cidrs: list[str] = field(default_factory=list)
    decode_processes: int = 1  # worker processes for long decodes (0: decode in threads of this process)
    fetch_connect_timeout_s: float = 5.0
    fetch_first_byte_timeout_s: float = 10.0
    rtcp_interval_s: float = 5.0
    use_timerfd: bool = True
    wideband: bool = False  # G.722 is negotiable: sources are also decoded at 16 kHz and G.722-encoded


@dataclass
class MediaParts:
    """What a :class:`MediaPlane` works with but does not own the making of: RTP ports, the remote
    address policy, the clock and the source loader.  Passed in, so tests can hand it their own
    (a clock they drive themselves: fake time); :meth:`from_settings` builds the server's."""

    ports: PortAllocator
    policy: MediaAddressPolicy
    clock: MediaClock
    loader: MediaLoader

    @classmethod
    def from_settings(cls, settings: MediaSettings) -> MediaParts:
        return cls(
            ports=PortAllocator(settings.host, settings.rtp_port_lo, settings.rtp_port_hi),
            policy=MediaAddressPolicy(list(settings.media_deny_cidrs)),
            clock=MediaClock(use_timerfd=settings.use_timerfd),
            loader=MediaLoader.create(
                settings.data_dir, settings.fetch_timeout_s, settings.max_fetch_bytes, settings.cache_bytes,
                max_audio_seconds=settings.max_audio_seconds, disk_cache_bytes=settings.disk_cache_bytes,
                allow_cidrs=settings.fetch_allow_cidrs, deny_cidrs=settings.fetch_deny_cidrs,
                decode_processes=settings.decode_processes, connect_timeout_s=settings.fetch_connect_timeout_s,
                first_byte_timeout_s=settings.fetch_first_byte_timeout_s, wideband=settings.wideband,
                media_dir=settings.media_dir or None,
            ),
        )


class LegDriver(Tickable):
    """What the clock ticks for one call: the player's next payload, or silence, onto the leg.

    The leg's packet state (RtpLeg, a C PacketState) is the one copy of what is sent: the C
    clock runner does the simple ticks from it and calls :meth:`tick` (``leg.on_tick``) for the
    rest; :meth:`tick` reads and writes the same fields, so it is also the reference the C side is
    tested against (tests/unit/test_fastsend.py).  A tick whose payload cannot be made (a bug,
    a bad source) fails what the player was playing and sends silence: the leg keeps its timing.
    """

    __slots__ = ("leg", "player", "silence_payload", "_send_silence", "entry", "hold_since", "_call_audio",
                 "negotiated", "held", "call", "last_slow", "tx", "_tx_done", "applied", "on_tick_error",
                 "tick_errors")

    def __init__(self, leg: RtpLeg, player: Player, send_silence: bool) -> None:
        self.leg = leg
        self.player = player
        leg.samples = player.codec.bytes_per_packet(DEFAULT_PTIME_MS)
        self.silence_payload = player.codec.silence_payload(leg.samples)
        self._send_silence = send_silence
        leg.silence = self.silence_payload if send_silence else None
        leg.on_tick = self.tick  # what the C runner cannot do alone (cleared by leg.close())
        player.attach(leg)  # the player hands its slices to the leg
        self.entry: Scheduled | None = None
        self.hold_since: float | None = None
        self._call_audio: Callable[[int], Any] | None = None
        self.negotiated = False  # media_changed has run: the inactivity timeout applies from then on
        self.held = False  # not sendrecv both ways: the (longer) hold timeout applies
        self.call: Call | None = None
        self.last_slow: bytes | None = None  # the slow path's last payload (the level meter reads it)
        self.tx: DtmfSender | None = None  # digits being sent: they take the leg's ticks (the player is held)
        self._tx_done: Callable[[], None] | None = None
        self.applied: NegotiatedMedia | None = None  # what media_changed last set up (a copy)
        self.on_tick_error: Callable[[LegDriver, Exception], None] | None = None  # the plane counts and logs
        self.tick_errors = 0  # ticks whose payload could not be made (each ended what was playing)

    @property
    def samples(self) -> int:
        """RTP ticks per packet, which is also bytes per packet for every codec we speak."""
        return self.leg.samples

    @property
    def send_silence(self) -> bool:
        return self._send_silence

    @send_silence.setter
    def send_silence(self, value: bool) -> None:
        self._send_silence = value
        self.leg.silence = self.silence_payload if value else None

    @property
    def call_audio(self) -> Callable[[int], Any] | None:
        """What this leg hears from the call (the mix of its room's other legs), set by the mixer
        while the leg is bridged: called with a sample count, returns int16 PCM or None."""
        return self._call_audio

    @call_audio.setter
    def call_audio(self, fn: Callable[[int], Any] | None) -> None:
        self._call_audio = fn
        self.player.bridged = fn is not None  # a bridged leg never takes the fast path

    def configure(self, codec: Codec, payload_type: int, ptime_ms: int) -> None:
        # ``samples`` is bytes per packet, which tick() also steps the RTP timestamp by: right for every
        # codec with one byte per RTP tick (G.711, G.722 whose RTP clock is 8 kHz, L8 at any clock), so the
        # clock and the C sender need nothing codec-specific.  Wider samples need the packet state to
        # carry both numbers.
        if codec.bytes_per_tick != 1:
            raise ValueError(f"{codec.name}: {codec.bytes_per_tick} bytes per RTP tick; the packet path sends one")
        samples = codec.bytes_per_packet(ptime_ms)
        self.leg.samples = samples
        self.leg.payload_type = payload_type
        self.player.set_codec(codec)
        self.silence_payload = codec.silence_payload(samples)
        self.send_silence = self._send_silence

    def start_tx(self, sender: DtmfSender, done: Callable[[], None]) -> None:
        """Send *sender*'s packets from the next tick on; the playback waits (held) until they are out."""
        self.tx, self._tx_done = sender, done
        self.player.held = True  # busy: the C runner hands this leg's ticks to tick() meanwhile

    def _send_tx(self, tx: DtmfSender) -> bool:
        leg = self.leg
        pkt = tx.next(leg.timestamp)
        if pkt is None:
            done, self.tx, self._tx_done = self._tx_done, None, None
            self.player.held = False
            leg.marker_next = True  # the audio resumes as a new talkspurt
            if done is not None:
                asyncio.get_running_loop().call_soon(done)
            return False
        b1 = pkt.payload_type | 0x80 if pkt.marker else pkt.payload_type
        try:
            leg.transmit(_pack_header(0x80, b1, leg.seq, pkt.timestamp, leg.ssrc) + pkt.payload)
            leg.packets_sent += 1
            leg.bytes_sent += len(pkt.payload)
        except OSError:
            leg.send_errors += 1
        leg.marker_next = False
        leg.seq = (leg.seq + 1) & 0xFFFF
        leg.timestamp = (leg.timestamp + leg.samples) & 0xFFFFFFFF
        return True

    def tick(self) -> None:
        # The same decisions as the C tick (rtp/_fastsend.c state_tick), on the same fields, plus
        # what only Python does: DTMF out and the player's slow path.
        leg = self.leg
        n = leg.samples
        seq = leg.seq
        ts = leg.timestamp
        try:
            if self.tx is not None and self._send_tx(self.tx):
                return
            data = leg.slice_data  # handed over by the player: one main playback at 0 dB, nothing else
            if data is not None and (off := leg.slice_offset) + n < leg.slice_end:
                payload: bytes | bytearray | None = data[off : off + n]
                leg.slice_offset = off + n
                leg.slice_played += n
                leg.slice_last_seq = seq
                leg.slice_last_ts = ts
            elif leg.busy:
                # the slow path: boundaries, loops, the cap, overlays, volume, pause, bridged call audio
                # (bridged with nothing playing: what the room's other legs say, encoded once)
                payload = self.last_slow = self.player.next_payload(n, seq, ts, self._call_audio)
            else:
                payload = None
        except Exception as exc:  # noqa: BLE001 - one leg's bad source or bug: that playback fails, not the leg
            self._tick_failed(exc)
            payload = None
        if payload is None:
            payload = leg.silence
            if payload is None:
                leg.skip(n)
                return
        if leg.marker_next:
            b1 = leg.payload_type | 0x80
            leg.marker_next = False
        else:
            b1 = leg.payload_type
        try:
            leg.transmit(_pack_header(0x80, b1, seq, ts, leg.ssrc) + payload)
            leg.packets_sent += 1
            leg.bytes_sent += n
        except OSError:  # full socket buffer or unreachable peer: this packet is lost, nothing else is
            leg.send_errors += 1
        leg.seq = (seq + 1) & 0xFFFF
        leg.timestamp = (ts + n) & 0xFFFFFFFF

    def _tick_failed(self, exc: Exception) -> None:
        """The payload could not be made: end what is playing ``failed``, keep the leg's timing."""
        if self.tx is not None:  # digits being sent stop here (not reported as sent); the audio resumes
            self.tx = self._tx_done = None
            self.player.held = False
        self.tick_errors += 1
        self.player.fail_all(f"internal error: {type(exc).__name__}")
        if self.on_tick_error is not None:
            self.on_tick_error(self, exc)


def _early_media(call: Call | None) -> bool:
    """Media before the answer (183 with SDP, either direction): the RTP timeout counts from the answer.

    An outbound call's ring time is the caller's timeout; an inbound one's is ``ring_timeout_s``.
    """
    return call is not None and call.state is not CallState.ANSWERED


def _releaser(claims: list[Claim]) -> Callable[[], None]:
    """A playback's ``on_finished``: give back its claims (the last claim on a load nobody else wants cancels it)."""

    def release() -> None:
        for claim in claims:
            claim.release()

    return release


def _raise_fd_limit() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ImportError, ValueError, OSError):
        pass


class MediaPlane:
    """Implements :class:`mediasrv.calls.registry.MediaBackend` plus the playback commands the API needs."""

    def __init__(self, settings: MediaSettings, emit: Emit, on_rtp_timeout: Callable[[str], None] | None = None,
                 parts: MediaParts | None = None) -> None:
        """*parts*: the collaborators (a test passes its own, e.g. a clock it drives itself);
        default :meth:`MediaParts.from_settings`."""
        self.settings = settings
        self._emit = emit
        self._on_rtp_timeout = on_rtp_timeout
        parts = parts or MediaParts.from_settings(settings)
        self.ports = parts.ports
        self.policy = parts.policy
        self.clock = parts.clock
        # legs in the simple state (one playback sliced, or silence) are sent by C; LegDriver.tick is the reference
        self.clock.core.run_group = fastpath.group_runner(run_each)
        self.fastpath_enabled = self.clock.core.run_group is not run_each
        self.loader = parts.loader
        self._drivers: dict[str, LegDriver] = {}
        self._playbacks: dict[str, Playback] = {}
        self._ended_ids: list[str] = []
        self._by_status: Counter[str] = Counter()
        self._totals = {"packets_sent": 0, "packets_received": 0, "rtp_timeouts": 0, "latched": 0,
                        "refused_remotes": 0, "release_errors": 0, "tick_errors": 0}
        self._tasks: list[asyncio.Task[None]] = []
        self._timed_out: set[str] = set()
        # N-1 mixing on the clock's timeline: sample position = current sub-slot (1 ms) x 8 (PCM at 8 kHz)
        self.mixer = Mixer(now=lambda: self.clock.core.next_tick * (PCM_RATE // 1000))
        self.ivr = IvrControl(self, emit)

    # -- lifecycle -------------------------------------------------------
    async def start(self) -> None:
        _raise_fd_limit()  # three sockets per leg: 1,500 legs need more than the usual soft limit of 1,024
        loop = asyncio.get_running_loop()
        self.clock.start(loop)
        self.clock.core.on_error = lambda item, exc: log.error("leg tick failed: %r", exc)
        self._tasks.append(loop.create_task(self._housekeeping()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for call_id in list(self._drivers):
            self._close_leg(call_id, state="call_hangup")
        self.clock.stop()
        await self.loader.close()

    async def _housekeeping(self) -> None:
        """RTCP sender reports and the RTP inactivity timeout, once a second (off the clock's path)."""
        last_sr = time.monotonic()
        period = min(1.0, self.settings.rtcp_interval_s)
        for limit in (self.settings.rtp_timeout_s, self.settings.rtp_hold_timeout_s):
            if limit > 0:
                period = min(period, limit / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            send_sr = now - last_sr >= self.settings.rtcp_interval_s
            if send_sr:
                last_sr = now
            for i, (call_id, driver) in enumerate(list(self._drivers.items())):
                if i and i % HOUSEKEEPING_CHUNK == 0:
                    # Hand the loop back between chunks: 1,500 sender reports in one callback
                    # would hold the clock's wake-up for tens of milliseconds every interval.
                    await asyncio.sleep(0)
                    if self._drivers.get(call_id) is not driver:
                        continue  # ended while we yielded
                leg = driver.leg
                if send_sr and leg.remote is not None and leg.packets_sent:
                    leg.send_rtcp(leg.sender_report())
                # Nothing from the peer (RTP or RTCP) for too long: the call is hung up (cause
                # rtp_timeout). Held calls get the longer hold timeout; a call whose media was
                # never negotiated (awaiting the ACK's answer) is the SIP layer's to end.
                timeout = self.settings.rtp_hold_timeout_s if driver.held else self.settings.rtp_timeout_s
                if (timeout > 0 and driver.negotiated and call_id not in self._timed_out
                        and now - leg.stats.last_inbound > timeout and not _early_media(driver.call)):
                    self._timed_out.add(call_id)
                    self._totals["rtp_timeouts"] += 1
                    log.info("call %s: no RTP/RTCP for %.0f s%s: hanging up", call_id, now - leg.stats.last_inbound,
                             " (on hold)" if driver.held else "",
                             extra={"call_id": call_id, "event": "rtp_timeout"})
                    if self._on_rtp_timeout is not None:
                        self._on_rtp_timeout(call_id)

    # -- MediaBackend ----------------------------------------------------
    def allocate(self, call: Call) -> tuple[str, int]:
        """A leg for *call*; on any failure half-way everything taken so far is given back."""
        if call.call_id in self._drivers:
            raise RuntimeError(f"call {call.call_id} already has a media leg")
        rtp, rtcp = self.ports.bind_pair()
        port = rtp.getsockname()[1]
        leg: RtpLeg | None = None
        try:
            leg = RtpLeg(call.call_id, rtp, rtcp)
            leg.start_receiving(asyncio.get_running_loop())
            player = Player(UNNEGOTIATED, self._on_playback_event)
            driver = LegDriver(leg, player, self.settings.send_silence)
            driver.on_tick_error = self._on_tick_error
            driver.call = call
            self._drivers[call.call_id] = driver
            self.ivr.attach(call.call_id, driver)
        except BaseException:
            self.ports.free(port)
            if leg is not None:
                leg.close(send_bye=False)
            else:
                rtp.close()
                rtcp.close()
            raise
        return (self.settings.host, leg.port)

    def check_remote(self, remote: tuple[str, int]) -> str | None:
        """Why RTP must not go to *remote*, or None (the media address policy, plus the port range)."""
        if not 0 < remote[1] < 65536:
            return f"port {remote[1]} out of range"
        return self.policy.check(remote[0])

    def media_changed(self, call: Call) -> None:
        """Apply negotiated media. ValueError (nothing changed) for a destination the policy refuses."""
        driver = self._drivers.get(call.call_id)
        media = call.media
        if driver is None or media is None:
            return
        leg = driver.leg
        if driver.negotiated and media == driver.applied:
            # The same media again: the 200 after our 183 (or theirs), a session refresh. The stream
            # goes on untouched (no re-encode, no marker, a symmetric-RTP latch kept); only the
            # inactivity timeout counts from now, so it starts at the answer.
            leg.stats.last_inbound = time.monotonic()
            return
        if media.remote_addr is not None:
            # the SIP layer checked this already; checked again here so no path can skip it
            why = self.check_remote(media.remote_addr)
            if why is None:
                try:
                    leg.check_remote(media.remote_addr)
                except ValueError as exc:
                    why = str(exc)
            if why is not None:
                self._totals["refused_remotes"] += 1
                raise ValueError(f"media destination refused: {why}")
        driver.configure(media.codec, media.payload_type, media.ptime_ms)
        leg.set_remote(media.remote_addr)
        leg.sdp_remote = media.remote_addr
        leg.latch = self._latch_allowed if self.settings.symmetric_rtp and media.remote_addr is not None else None
        leg.te_pt = media.telephone_event_pt
        leg.stats.last_inbound = time.monotonic()
        driver.negotiated = True
        driver.applied = dataclasses.replace(media)
        driver.held = not (media.send_enabled and media.recv_enabled and media.remote_addr is not None)
        sending = media.send_enabled and media.remote_addr is not None
        if sending and driver.entry is None:
            if driver.hold_since is not None:  # resume: time went on while we were silent
                leg.skip(int((time.monotonic() - driver.hold_since) * media.codec.clock_rate))
                driver.hold_since = None
            leg.marker_next = True
            # with the C runner the clock holds the leg's packet state (it calls driver.tick as on_tick)
            driver.entry = self.clock.add(driver, media.ptime_ms, leg if self.fastpath_enabled else None)
        elif not sending and driver.entry is not None:
            self.clock.remove(driver.entry)
            driver.entry = None
            driver.hold_since = time.monotonic()

    def _on_tick_error(self, driver: LegDriver, exc: Exception) -> None:
        """A leg's tick could not make its payload (LegDriver._tick_failed): counted, logged."""
        self._totals["tick_errors"] += 1
        call_id = driver.leg.call_id
        if driver.tick_errors == 1:  # the first with its traceback; a lasting fault must not flood the log
            log.error("call %s: tick failed, what was playing ended failed, the leg goes on: %r", call_id, exc,
                      exc_info=exc, extra={"call_id": call_id, "event": "tick_error"})
        else:
            log.debug("call %s: tick failed again (%d): %r", call_id, driver.tick_errors, exc)

    def _latch_allowed(self, addr: tuple[str, int]) -> bool:
        allowed = self.check_remote(addr) is None
        if allowed:
            self._totals["latched"] += 1
        return allowed

    def release(self, call: Call) -> None:
        """Never raises: each step runs whatever the one before did, so the sockets and port always go back."""
        self._close_leg(call.call_id, state="call_hangup")

    def _close_leg(self, call_id: str, state: str) -> None:
        driver = self._drivers.pop(call_id, None)
        if driver is None:
            return
        leg = driver.leg
        steps: list[tuple[str, Callable[[], object]]] = [
            ("clock", lambda: self._unschedule(driver)),
            ("dtmf", lambda: self._end_dtmf(call_id, driver)),  # its collect ends call_hangup, before the prompts
            ("playbacks", lambda: driver.player.end_all(state)),
            ("room", lambda: self.leave_room(call_id)),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the rest of the release must still happen
                self._totals["release_errors"] += 1
                log.error("releasing %s: %s failed: %r", call_id, what, exc)
        self._totals["packets_sent"] += leg.packets_sent
        self._totals["packets_received"] += leg.stats.packets_received
        self.ports.free(leg.port)
        leg.close(send_bye=leg.remote is not None)  # never raises
        self._timed_out.discard(call_id)

    def _end_dtmf(self, call_id: str, driver: LegDriver) -> None:
        driver.leg.on_event = None
        driver.tx = driver._tx_done = None
        self.ivr.detach(call_id)

    def _unschedule(self, driver: LegDriver) -> None:
        if driver.entry is not None:
            entry, driver.entry = driver.entry, None
            # driver.entry.item is the driver: without this, every ended call left a reference cycle
            # for the cyclic GC, which must then traverse it (see mediasrv/ops/gcpolicy.py)
            self.clock.remove(entry)

    # -- playback commands -----------------------------------------------
    def target_legs(self, call_id: str, target: str | list[str]) -> list[str]:
        """The legs a command aimed at *call_id* lands on; KeyError names a leg that is not there."""
        if call_id not in self._drivers:
            raise KeyError(call_id)
        if isinstance(target, list):
            legs = list(dict.fromkeys(target))
            if not legs:
                raise PlayError("invalid_target", "target list is empty")
        elif target == "self":
            legs = [call_id]
        elif target == "opposite":
            legs = sorted(self.peers_of(call_id))
            if not legs:
                raise PlayError("no_opposite_leg", f"call {call_id} is not bridged: it has no opposite leg", 409)
        elif target in ("both", "room"):
            legs = [call_id, *sorted(self.peers_of(call_id))]
        else:
            raise PlayError("invalid_target", f"unknown target {target!r}")
        for leg in legs:
            if leg not in self._drivers:
                raise KeyError(leg)
        return legs

    def play(self, call_id: str, request: PlayRequest) -> list[Playback]:
        """Start (or queue) *request* on its target legs: one playback per target leg.

        Everything is checked before anything changes: KeyError when a target leg has no media
        leg, :class:`PlayError` for bad values or an overlay on a leg with nothing playing.  The
        sources are loaded once and shared by every target leg; all playbacks carry one
        ``command_id``.  ``stop`` stops what is current on each target leg at this moment first
        (the main queue for a main play; the overlays for an overlay play); ``stopped_by`` is then
        the new playback's id on that leg.  Each playback holds a claim on each of its sources'
        loads until it ends; when the last claim on a load goes and nothing else wants it (no
        prefetch), the download and decode are cancelled (:meth:`MediaLoader._release`).
        """
        request.validate()
        legs = self.target_legs(call_id, request.target)
        drivers = [self._drivers[leg] for leg in legs]
        if request.overlay:
            for leg, driver in zip(legs, drivers, strict=True):
                if not driver.player.has_main():
                    raise PlayError("nothing_playing",
                                    f"an overlay needs a playing non-overlay playback on leg {leg}")
        command_id = request.command_id or uuid.uuid4().hex
        loads = [self._claim(spec) for spec in request.sources]
        futures = [c.future for c in loads]
        # every leg's claims are taken before any playback can end (and release its own)
        claims = [loads, *([c.another() for c in loads] for _ in legs[1:])]
        playbacks = []
        for leg, driver, leg_claims in zip(legs, drivers, claims, strict=True):
            playback = new_playback(leg, request, futures, command_id=command_id, node_id=self.settings.node_id,
                                    per_ms=driver.player.codec.bytes_per_ms)
            self._playbacks[playback.id] = playback
            playback.on_finished = _releaser(leg_claims)  # its claims go back when it ends, however it ends
            if request.stop is not None:
                driver.player.stop(request.stop, by=playback.id, overlay=request.overlay)
            driver.player.enqueue(playback)
            playbacks.append(playback)
        return playbacks

    def _claim(self, spec: SourceSpec) -> Claim:
        """A claim on the loader's load, or on an already resolved future for audio decoded in memory.

        A cached prompt then starts at the leg's very next tick, instead of after the loader's
        task (and, for stored media, its stat in the executor) has had its turn on the loop.
        Each playback holds one claim per source until it ends (its ``on_finished``).
        """
        media = self.loader.ready_media(spec)  # a cached prompt starts at the very next tick
        if media is None:
            return self.loader.claim(spec)
        fut: asyncio.Future[Media] = asyncio.get_running_loop().create_future()
        fut.set_result(media)
        return Claim(fut)

    # -- DTMF (media/ivr.py) -----------------------------------------------
    def dtmf_info(self, call: Call, digit: str, duration_ms: int) -> bool:
        """A SIP INFO key press on *call* (MediaBackend); False when it has no media leg."""
        return self.ivr.on_info(call.call_id, digit, duration_ms)

    def collect(self, call_id: str, request: CollectRequest) -> Collect:
        return self.ivr.collect(call_id, request)

    def send_dtmf(self, call_id: str, digits: str, duration_ms: int) -> DtmfSender:
        return self.ivr.send_dtmf(call_id, digits, duration_ms)

    def stop_playback(self, playback_id: str, by: str = "api") -> bool:
        """Stop this playback; False (a no-op) when it already ended, never applied to another one."""
        pb = self._playbacks.get(playback_id)
        if pb is None or pb.ended:
            return False
        driver = self._drivers.get(pb.call_id)
        return driver.player.stop_one(pb, by) if driver else False

    def stop_playbacks(self, call_id: str, which: str = "current", by: str = "api",
                       overlay: bool = False) -> list[Playback]:
        """Stop what is current on the leg now (``current``/``all``), or its overlays."""
        driver = self._drivers.get(call_id)
        return driver.player.stop(which, by, overlay=overlay) if driver else []

    def control(self, playback_id: str, op: str, ms: int | None = None, db: float | None = None) -> Playback:
        """pause | resume | restart | seek (absolute ms) | skip (relative ms) | volume (dB).

        KeyError: unknown playback; PlaybackStateError: ended / not started / leg gone;
        PlayError: a bad value (seek past the end, volume out of range).
        """
        pb = self._playbacks[playback_id]
        driver = self._drivers.get(pb.call_id)
        if pb.ended or driver is None:
            raise PlaybackStateError("playback_ended", f"playback {playback_id} has ended ({pb.state})")
        player = driver.player
        if op == "pause":
            player.pause(pb)
        elif op == "resume":
            player.resume(pb)
        elif op == "restart":
            player.restart(pb)
        elif op in ("seek", "skip"):
            if ms is None:
                raise PlayError("missing_field", f"{op} needs 'ms'", 400)
            (player.seek if op == "seek" else player.skip)(pb, ms)
        elif op == "volume":
            if db is None:
                raise PlayError("missing_field", "volume needs 'db'", 400)
            player.set_volume(pb, db)
        else:
            raise PlayError("invalid_op", f"unknown control op {op!r}", 400)
        return pb

    def position_ms(self, playback_id: str) -> int | None:
        """Where a playing playback is within its source list, or None when not playing."""
        pb = self._playbacks.get(playback_id)
        driver = self._drivers.get(pb.call_id) if pb is not None else None
        if pb is None or driver is None or pb.state != "playing":
            return None
        return driver.player.position(pb) // pb.per_ms

    def get_playback(self, playback_id: str) -> Playback | None:
        return self._playbacks.get(playback_id)

    def playbacks_for(self, call_id: str) -> tuple[Playback | None, list[Playback]]:
        driver = self._drivers.get(call_id)
        if driver is None:
            return None, []
        return driver.player.current, list(driver.player.queue)

    def overlays_for(self, call_id: str) -> list[Playback]:
        driver = self._drivers.get(call_id)
        return list(driver.player.overlays) if driver else []

    # -- wiring: which leg mixes are connected (told by the room registry, rooms.py) ------------
    def join_room(self, room_id: str, call_id: str) -> None:
        """Connect *call_id*'s leg to the mix of *room_id*: it hears the mix of the other legs there.

        The leg's inbound RTP feeds that mix from now on, and its ``call_audio`` hook answers with
        the N-1 mix (see media/mixer.py).  Who is in which room is the room registry's to decide
        (it calls this); the plane keeps only the wiring.
        """
        driver = self._drivers.get(call_id)
        if driver is None:
            raise KeyError(call_id)
        self.leave_room(call_id)
        codec = driver.player.codec
        # what the leg's peer may send: any static payload type, and the one negotiated (maybe dynamic)
        decoders = {pt: p.codec for pt, p in BY_NUMBER.items()} | {driver.leg.payload_type: codec}
        source, listen = self.mixer.join(room_id, call_id, codec.pcm_of(driver.samples), decoders,
                                         clock_rate=codec.clock_rate)
        driver.leg.on_rtp = source.push
        source.pull = driver.leg.poll_inbound
        driver.call_audio = listen

    def leave_room(self, call_id: str) -> None:
        """Disconnect *call_id*'s leg from its mix: the others stop hearing it at their next tick."""
        self.mixer.leave(call_id)
        driver = self._drivers.get(call_id)
        if driver is not None:
            driver.leg.on_rtp = None
            driver.call_audio = None

    def peers_of(self, call_id: str) -> list[str]:
        """The legs wired to the same mix as *call_id* (its "opposite" legs), in joining order."""
        return self.mixer.peers_of(call_id)

    def leg_stats(self, call_id: str) -> dict[str, Any]:
        driver = self._drivers[call_id]
        stats = driver.leg.counters()
        stats["ssrc"] = driver.leg.ssrc
        stats["dtmf"] = self.ivr.stats(call_id)
        source = self.mixer.source(call_id)
        if source is not None:  # bridged: how its inbound audio fared in the jitter buffer
            stats["jitter_buffer"] = {**source.jitter.stats.as_dict(), "pops": source.pops}
        return stats

    def monitor(self, call_id: str) -> dict[str, Any]:
        """What the live page plots for one leg: its last minute of pacing and the level it sends now.

        Both are worked out here, on request: pacing from the clock's per-second history of its
        sub-slots (media/clock.py PacingHistory), the level from the audio around the playback's
        position (fast path) or the slow path's last payload; nothing is added per packet.
        """
        driver = self._drivers[call_id]
        entry = driver.entry
        now = time.monotonic()
        pacing = ([{"age_s": round(now - start, 3), "max_lateness_ms": round(late * 1000, 3)}
                   for start, late in self.clock.core.pacing_of(entry)] if entry is not None and entry.active else [])
        return {"call_id": call_id, "ptime_ms": driver.samples // driver.player.codec.bytes_per_ms, "pacing": pacing,
                "level_dbfs": self._level(driver)}

    @staticmethod
    def _level(driver: LegDriver) -> float | None:
        """RMS of the last ~100 ms sent, dBFS; None while nothing but silence goes out."""
        player = driver.player
        codec = player.codec
        pb = player.fast
        if pb is not None:
            data = pb.data[max(0, pb.offset - LEVEL_MS * codec.bytes_per_ms):pb.offset]
        elif player.busy and driver.last_slow is not None:
            data = driver.last_slow
        else:
            return None
        if not data:
            return None
        pcm = codec.decoder(wide=True)(bytes(data)).astype(np.float64)
        rms = float(np.sqrt(np.mean(pcm * pcm)))
        return round(20 * math.log10(rms / 32768.0), 1) if rms >= 1.0 else -90.0

    @property
    def playing_legs(self) -> int:
        """Legs with a main playback current (overlays alone and bridged audio not counted)."""
        return sum(1 for d in self._drivers.values() if d.player.current is not None)

    async def live_counts(self, chunk: int = 128,
                          pause: Callable[[], Awaitable[None]] | None = None) -> tuple[int, int, int]:
        """(packets sent, packets received, playing legs) over the live legs, summed *chunk* legs at a time
        with the event loop let in between (through *pause*, default ``asyncio.sleep(0)``): at 1,500 legs
        the three sums in one go held the loop (and so the media clock's wake-ups) for about a millisecond
        on every /metrics scrape."""
        drivers = list(self._drivers.values())
        sent = recv = playing = 0
        for i in range(0, len(drivers), chunk):
            for d in drivers[i:i + chunk]:
                sent += d.leg.packets_sent
                recv += d.leg.stats.packets_received
                playing += d.player.current is not None
            await (pause() if pause is not None else asyncio.sleep(0))
        return sent, recv, playing

    def metrics(self, live: tuple[int, int, int] | None = None) -> dict[str, Any]:
        """Counters for /metrics; *live* is :meth:`live_counts` if the caller has it (else summed here)."""
        if live is None:
            live_sent = sum(d.leg.packets_sent for d in self._drivers.values())
            live_recv = sum(d.leg.stats.packets_received for d in self._drivers.values())
        else:
            live_sent, live_recv = live[0], live[1]
        s = self.clock.stats
        return {
            "legs": len(self._drivers),
            "clock_mechanism": self.clock.mechanism,
            "packets_sent": self._totals["packets_sent"] + live_sent,
            "packets_received": self._totals["packets_received"] + live_recv,
            "ticks": s.ticks,
            "late_ticks": s.late_ticks,
            "lateness_histogram": s.histogram(),
            "playbacks_by_status": dict(self._by_status),
            "loader": dict(self.loader.stats),
            "ports_in_use": self.ports.in_use,
            # hangups for inactivity, symmetric-RTP moves, destinations refused by the policy, release steps that failed
            "media_events": {k: self._totals[k] for k in ("rtp_timeouts", "latched", "refused_remotes", "release_errors",
                                                          "tick_errors")},
        }

    # -- events ----------------------------------------------------------
    def _on_playback_event(self, type_: str, pb: Playback) -> None:
        data: dict[str, Any] = {
            "playback_id": pb.id, "source": pb.source, "command_id": pb.command_id, "target": pb.target,
            "overlay": pb.overlay,
        }
        if type_ in ("playback.paused", "playback.resumed"):
            data.update(ms_played=pb.ms_played, last_seq=pb.last_seq, last_ts=pb.last_ts)
        elif type_ == "playback.ended":
            self.ivr.playback_ended(pb)
            self._by_status[pb.state] += 1
            data.update(
                status=pb.state, reason=pb.reason, message=pb.message, ms_played=pb.ms_played,
                last_seq=pb.last_seq, last_ts=pb.last_ts, stopped_by=pb.stopped_by,
                failed_source_index=pb.failed_source_index, underruns=pb.underruns,
            )
            if pb.digit is not None:
                data["digit"] = pb.digit
            self._ended_ids.append(pb.id)
            while len(self._ended_ids) > 10_000:  # keep ended playbacks answerable for a while, bounded
                self._playbacks.pop(self._ended_ids.pop(0), None)
        self._emit(type_, pb.call_id, data)
