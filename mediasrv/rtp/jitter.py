"""A small jitter buffer for one inbound RTP stream: reorder, drop, decode G.711, play out PCM.

Sans-I/O: the leg's reader calls :meth:`JitterBuffer.push` with what arrived and the mixer
calls :meth:`JitterBuffer.pop` once per packet time.  Nothing here touches a socket or a clock.

Why this shape:
- Packets are placed by RTP *timestamp* (extended past the 32-bit wrap), not by arrival and
  not by counting packets, so a peer whose ptime differs from ours (30 ms in, 20 ms out), a
  lost packet or a silence-suppressed stretch all land at the right sample.  Sequence
  numbers (extended past their 16-bit wrap) detect duplicates.
- Play-out starts once ``target`` samples are buffered or ``target`` worth of pops have
  waited since the first packet (40 ms by default: two packets of margin on loopback and
  LANs), from the earliest timestamp seen, so any reordering within the target arrives in
  time, and a talkspurt shorter than the target still plays.  A packet whose samples were already played is dropped as too
  late.  When the buffer runs dry the play-out position *stops* (it does not run on into
  the future) and play-out restarts after ``target`` is buffered again: a sender whose
  clock is slower than ours costs a short silence now and then instead of a stream of
  too-late drops.  When more than ``high_water`` is buffered (a burst after a stall, or a
  faster sender clock) play-out skips ahead to ``target``, so delay cannot grow.
- Adaptive (``max_target_ms`` above ``target_ms``; the mixer uses 40 → 200 ms): each underrun
  adds one packet time to the target, and ``relax_s`` without one takes one back (dropping
  one packet time of delay), so a leg behind a jittery path, or a server whose event loop
  stalls now and then, settles at the delay it needs instead of cutting out repeatedly.
- Gaps inside the buffered span (a lost packet) play as silence, not as a repeat of the
  previous packet: G.711 has no loss concealment of its own and a repeated 20 ms frame
  turns a longer loss into a buzz; silence is what the talker's far end would hear on any
  PBX without PLC.
- A new SSRC, or a timestamp jump of more than ``resync`` samples either way (a peer that
  restarted its stream), resets the buffer onto the new stream.
- The buffer counts in the stream's RTP clock (``rate``) and decodes each payload to PCM at that
  rate, one sample per tick, so its arithmetic is the same for every codec: G.711 and G.722
  (whose RTP clock is 8 kHz: a G.722 stream has its own stateful decoder, FFmpeg's ``g722``
  then a 2x decimating FIR, fed in arrival order) to 8 kHz; a codec with a 16 kHz clock to
  16 kHz (the mixer brings that to its 8 kHz timeline).  Payload types decoded: the static ones
  (``mediacodecs.registry``) or the map given, of codecs at the buffer's clock rate.  Anything
  else (telephone-event, comfort noise 13, unknown) is counted and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mediacodecs.codec import PCM_RATE, Codec, FrameDecoder
from mediacodecs.registry import BY_NUMBER


@dataclass
class JitterStats:
    pushed: int = 0
    played: int = 0  # packets whose samples went out of pop()
    late: int = 0  # arrived after their samples were played
    duplicates: int = 0
    ignored: int = 0  # not G.711 (telephone-event, CN, unknown payload type)
    resets: int = 0  # SSRC change or timestamp jump
    underruns: int = 0  # pop() found nothing buffered while playing
    skipped_samples: int = 0  # dropped to bring the delay back to target
    jitter: float = 0.0  # RFC 3550 interarrival jitter estimate, in samples
    target: int = 0  # the current play-out delay target, in samples (adaptive buffers move it)

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


class JitterBuffer:
    """Reorders one stream's packets and hands out decoded int16 PCM, ``n`` samples at a time."""

    def __init__(self, rate: int = PCM_RATE, target_ms: int = 40, high_water_ms: int = 120, resync_ms: int = 1000,
                 decoders: dict[int, Codec] | None = None, max_target_ms: int = 0, relax_s: float = 10.0) -> None:
        self.rate = rate
        self.target = self.base_target = rate * target_ms // 1000
        self.high_water = max(self.target + 1, rate * high_water_ms // 1000)
        self._margin = self.high_water - self.target
        # Adaptive delay (max_target_ms > target_ms): each underrun adds one packet time to the
        # target, up to max_target_ms; relax_s of play-out without an underrun takes one back.
        self.max_target = max(self.target, rate * max_target_ms // 1000)
        self._relax = int(relax_s * rate)
        self._since_underrun = 0
        self.resync = rate * resync_ms // 1000
        known = decoders if decoders is not None else {pt: p.codec for pt, p in BY_NUMBER.items()}
        self._codecs = {pt: codec for pt, codec in known.items() if codec.clock_rate == rate}
        self._decoders: dict[int, FrameDecoder] = {}
        self.stats = JitterStats(target=self.target)
        self.ssrc: int | None = None
        self._reset()

    def _reset(self) -> None:
        # a fresh decoder per payload type: a new stream must not inherit G.722's predictor state
        wide = self.rate > PCM_RATE  # decode to the clock rate: one sample per RTP tick
        self._decoders = {pt: codec.decoder(wide) for pt, codec in self._codecs.items()}
        self._frames: dict[int, np.ndarray] = {}  # extended timestamp -> decoded samples
        self._seqs: set[int] = set()  # extended sequence numbers buffered (or recently played)
        self._play: int | None = None  # extended timestamp of the next sample to play
        self._end = 0  # extended timestamp just past the newest buffered sample
        self._ts_ref: int | None = None  # last extended timestamp seen, to extend the next one
        self._seq_ref: int | None = None
        self._playing = False
        self._waited = 0  # samples of time spent filling: a stream shorter than the target still plays
        self._started = False  # play-out has begun since the last reset: earlier packets are late
        self._transit: float | None = None

    # -- input -----------------------------------------------------------
    def push(self, seq: int, ts: int, payload: bytes, arrival: float, payload_type: int = 0,
             ssrc: int | None = None) -> bool:
        """Take one packet; returns whether it was buffered."""
        st = self.stats
        st.pushed += 1
        decode = self._decoders.get(payload_type)
        if decode is None:
            st.ignored += 1
            return False
        if ssrc is not None and ssrc != self.ssrc:
            if self.ssrc is not None:
                st.resets += 1
                self._reset()
            self.ssrc = ssrc
        if self._ts_ref is None:
            ets, eseq = ts, seq
        else:
            ets = self._ts_ref + ((ts - self._ts_ref + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            eseq = self._seq_ref + ((seq - self._seq_ref + 0x8000) & 0xFFFF) - 0x8000  # type: ignore[operator]
            ref = self._play if self._play is not None else self._ts_ref
            if abs(ets - ref) > self.resync:
                st.resets += 1
                self._reset()
                ets, eseq = ts, seq
        n = len(payload)
        if n == 0:
            return False
        play = self._play
        if self._started and ets < play:  # type: ignore[operator]
            st.late += 1
            return False
        if eseq in self._seqs or ets in self._frames:
            st.duplicates += 1
            return False
        self._update_jitter(ets, arrival)
        if self._ts_ref is None or ets > self._ts_ref:
            self._ts_ref, self._seq_ref = ets, eseq
        self._frames[ets] = decode(payload)
        self._seqs.add(eseq)
        if play is None:
            self._play, self._end = ets, ets + n
        else:
            if not self._started and ets < play:
                self._play = ets  # still filling the first time: play-out starts at the earliest sample
            if ets + n > self._end:
                self._end = ets + n
        return True

    def _update_jitter(self, ets: int, arrival: float) -> None:
        transit = arrival * self.rate - ets
        if self._transit is not None:
            d = abs(transit - self._transit)
            self.stats.jitter += (d - self.stats.jitter) / 16.0
        self._transit = transit

    # -- output ----------------------------------------------------------
    @property
    def buffered(self) -> int:
        """Samples from the play-out position to the end of the newest packet."""
        return 0 if self._play is None else max(0, self._end - self._play)

    def pop(self, n: int) -> np.ndarray | None:
        """The next *n* samples (int16), or None while there is nothing to play (filling or idle).

        Call once per packet time; a gap inside the buffered span plays as silence.
        """
        play = self._play
        if play is None:
            return None
        depth = self._end - play
        if not self._playing:
            self._waited += n
            if depth < self.target and (self._waited < self.target or depth <= 0):
                return None
            self._playing = self._started = True
        elif depth <= 0:
            self.stats.underruns += 1
            self._playing = False  # refill before playing again; the position waits here
            self._waited = 0
            if self.target < self.max_target:
                self._set_target(min(self.max_target, self.target + n))
            self._since_underrun = 0
            return None
        elif self.target > self.base_target:
            self._since_underrun += n
            if self._since_underrun >= self._relax:
                self._since_underrun = 0
                self._set_target(max(self.base_target, self.target - n))
                if depth > self.target + n:  # shed one packet time of delay
                    self.stats.skipped_samples += n
                    play = self._discard_before(play + n)
                    depth -= n
        if depth > self.high_water:
            skip = depth - self.target
            self.stats.skipped_samples += skip
            play = self._discard_before(play + skip)
        frames = self._frames
        frame = frames.pop(play, None)
        if frame is not None and len(frame) == n:  # the usual case: one packet, same size as ours
            self._play = play + n
            self.stats.played += 1
            self._forget_seqs()
            return frame
        out = np.zeros(n, dtype=np.int16)
        if frame is not None:  # put it back: the general path below copies what overlaps
            frames[play] = frame
        end = play + n
        for start in sorted(frames):
            if start >= end:
                break
            f = frames[start]
            stop = start + len(f)
            if stop <= play:
                del frames[start]
                continue
            lo, hi = max(start, play), min(stop, end)
            out[lo - play : hi - play] = f[lo - start : hi - start]
            if stop <= end:
                del frames[start]
                self.stats.played += 1
            else:  # keep the rest of a longer packet for the next pop
                del frames[start]
                frames[end] = f[end - start :]
        self._play = end
        self._forget_seqs()
        return out

    def _set_target(self, target: int) -> None:
        self.target = target
        self.high_water = target + self._margin
        self.stats.target = target

    def trim(self) -> None:
        """Drop what is buffered beyond ``target`` (nobody played out for a while: catch up to live)."""
        if self._play is not None and self._started and self._end - self._play > self.target:
            skip = self._end - self.target - self._play
            self.stats.skipped_samples += skip
            self._discard_before(self._end - self.target)

    def _discard_before(self, pos: int) -> int:
        for start in [s for s in self._frames if s < pos]:
            f = self._frames.pop(start)
            if start + len(f) > pos:
                self._frames[pos] = f[pos - start :]
        self._play = pos
        return pos

    def _forget_seqs(self) -> None:
        # Keep duplicate detection bounded: sequence numbers far behind the newest are
        # caught by the too-late check (their timestamps were played) instead.
        seqs = self._seqs
        if len(seqs) > 64 and self._seq_ref is not None:
            floor = self._seq_ref - 32
            self._seqs = {s for s in seqs if s >= floor}
