"""The codec object: what SDP, the player, the jitter buffer and the mixer need to know of a codec.

One :class:`Codec` per payload format, looked up by name (:func:`get`) or static payload type;
``mediacodecs.registry`` maps payload type numbers and rtpmaps to these objects.  The packet
path counts payload bytes and RTP clock ticks, and every codec here carries one byte per tick,
so a packet's payload size is also its timestamp step: G.711 and G.722 (RFC 3551 4.5.2: the RTP
clock of G.722 runs at 8,000 Hz although the audio is sampled at 16 kHz) send 160 bytes per
20 ms; L8 at a 16 kHz clock (:data:`L8_16K`, registered on demand) sends 320.  The clock and the
slicing fast path (``_fastsend.c``) stay codec-blind; the player converts between bytes, ms and
the 8 kHz PCM of its per-packet path through the codec's methods (``bytes_per_ms``, ``pcm_of``).

G.722 is stateful ADPCM (ITU-T G.722 at 64 kbit/s: two sub-bands, each with its own
predictor), so a source is encoded once from start to end (:func:`g722_encode`, FFmpeg's
``g722`` encoder through PyAV: bit-exact with ``ffmpeg -c:a g722`` by construction) and a leg
slices that, while the per-packet path (mixing, volume, overlays, bridged audio) keeps one
encoder per leg (:class:`G722FrameEncoder`).  The per-packet path works on 8 kHz PCM (it is
upsampled 2x for a wideband encoder), so mixed audio on a wideband leg is narrowband in a
wideband codec; played sources sliced from their 16 kHz encoding are wideband.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import av
import numpy as np

from . import g711

__all__ = ["Codec", "CODECS", "PCM_RATE", "PCMU", "PCMA", "G722", "L8_16K", "get", "by_static_pt", "g722_encode",
           "g722_decode", "G722Stream", "G722FrameEncoder", "G722FrameDecoder", "Halfband", "l8_encode", "l8_decode"]

G722_FRAME = 320  # encoder frame (20 ms at 16 kHz); any even size up to 4096 would do


# -- 2x rate conversion for the per-packet path (stateful, zero extra latency beyond the filter) ---
def _halfband_taps(n: int = 48) -> np.ndarray:
    """Windowed-sinc low-pass at 3.8 kHz for 16 kHz samples (0.475 of Nyquist), Kaiser beta 8."""
    m = np.arange(n) - (n - 1) / 2
    h = 0.475 * np.sinc(0.475 * m) * np.kaiser(n, 8.0)
    return (h / h.sum()).astype(np.float64)


_TAPS = _halfband_taps()


class Halfband:
    """2x up- or down-sampling of int16 frames with a FIR that keeps its history between frames.

    Polyphase: upsampling runs the even and the odd taps over the input (no multiplications by the
    stuffed zeros), downsampling computes only the kept outputs; the output equals the zero-stuffed /
    full-rate filter's sample for sample."""

    __slots__ = ("up", "_hist", "_even", "_odd")

    def __init__(self, up: bool) -> None:
        self.up = up
        if up:
            self._even, self._odd = 2.0 * _TAPS[0::2], 2.0 * _TAPS[1::2]
            self._hist = np.zeros(len(self._even) - 1, np.float64)
        else:
            self._even, self._odd = _TAPS, _TAPS
            self._hist = np.zeros(len(_TAPS) - 1, np.float64)

    def __call__(self, pcm: np.ndarray) -> np.ndarray:
        buf = np.concatenate([self._hist, pcm.astype(np.float64)])
        self._hist = buf[len(buf) - len(self._hist):]
        if self.up:
            y = np.empty(2 * len(pcm))
            y[0::2] = np.convolve(buf, self._even, mode="valid")
            y[1::2] = np.convolve(buf, self._odd, mode="valid")
        else:
            y = np.convolve(buf, _TAPS, mode="valid")[1::2]
        np.clip(np.rint(y, out=y), -32768, 32767, out=y)
        return y.astype(np.int16)


# -- G.722 through PyAV ---------------------------------------------------------------------------
def _g722_ctx(frame_size: int = G722_FRAME) -> av.AudioCodecContext:
    ctx = av.CodecContext.create("g722", "w")
    ctx.sample_rate = 16000
    ctx.layout = "mono"
    ctx.format = "s16"
    ctx.options = {"frame_size": str(frame_size)}  # FFmpeg's g722 takes any even size up to 4096
    ctx.open()
    return ctx


def _frame(pcm: np.ndarray, pts: int) -> av.AudioFrame:
    f = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, np.int16).reshape(1, -1), format="s16",
                                   layout="mono")
    f.sample_rate = 16000
    f.pts = pts
    return f


class G722Stream:
    """16 kHz PCM in, G.722 bytes out, pushed piece by piece; the bytes equal :func:`g722_encode`
    of the whole PCM (one encoder, fed whole frames; the remainder waits for the next push)."""

    def __init__(self) -> None:
        self._ctx = _g722_ctx()
        self._rest = np.zeros(0, np.int16)
        self._pts = 0

    def push(self, pcm16: np.ndarray) -> bytes:
        x = np.concatenate([self._rest, np.asarray(pcm16, np.int16)]) if self._rest.size else np.asarray(pcm16,
                                                                                                           np.int16)
        whole = len(x) - len(x) % G722_FRAME
        self._rest = x[whole:].copy()
        out = bytearray()
        for i in range(0, whole, G722_FRAME):
            out += self._encode(x[i:i + G722_FRAME])
        return bytes(out)

    def finish(self) -> bytes:
        """The last (short) frame, padded to an even sample count, and the encoder flushed."""
        out = bytearray()
        if self._rest.size:
            rest = self._rest if self._rest.size % 2 == 0 else np.append(self._rest, np.int16(0))
            out += self._encode(rest)
            self._rest = np.zeros(0, np.int16)
        for p in self._ctx.encode(None):
            out += bytes(p)
        return bytes(out)

    def _encode(self, pcm: np.ndarray) -> bytes:
        data = b"".join(bytes(p) for p in self._ctx.encode(_frame(pcm, self._pts)))
        self._pts += len(pcm)
        return data


def g722_encode(pcm16: np.ndarray) -> bytes:
    """A whole 16 kHz int16 buffer → G.722 (one byte per two samples), from a fresh encoder."""
    s = G722Stream()
    return s.push(pcm16) + s.finish()


def g722_decode(data: bytes) -> np.ndarray:
    """G.722 bytes → 16 kHz int16 from a fresh decoder (FFmpeg's ``g722`` decoder)."""
    return G722FrameDecoder(wide=True)(data)


class G722FrameDecoder:
    """One inbound stream's decoder: payloads in arrival order → int16 at 8 kHz (or 16 kHz if wide)."""

    __slots__ = ("_ctx", "_down")

    def __init__(self, wide: bool = False) -> None:
        self._ctx = av.CodecContext.create("g722", "r")
        self._ctx.sample_rate = 16000
        self._ctx.layout = "mono"
        self._down = None if wide else Halfband(up=False)

    def __call__(self, payload: bytes) -> np.ndarray:
        frames = self._ctx.decode(av.Packet(bytes(payload)))
        pcm = (np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)
               if frames else np.zeros(0, np.int16))
        return pcm if self._down is None else self._down(pcm)


class G722FrameEncoder:
    """One leg's per-packet encoder: 8 kHz int16 frames → G.722 (upsampled 2x, then encoded)."""

    __slots__ = ("_ctx", "_up", "_n", "_pts")

    def __init__(self) -> None:
        self._up = Halfband(up=True)
        self._ctx: av.AudioCodecContext | None = None
        self._n = 0
        self._pts = 0

    def __call__(self, pcm8: np.ndarray) -> bytes:
        wide = self._up(pcm8)
        if len(wide) != self._n or self._ctx is None:  # a new packet size (ptime change): a new frame size
            self._ctx, self._n, self._pts = _g722_ctx(len(wide)), len(wide), 0
        out = b"".join(bytes(p) for p in self._ctx.encode(_frame(wide, self._pts)))
        self._pts += len(wide)
        return out


# -- the codec objects ----------------------------------------------------------------------------
FrameEncoder = Callable[[np.ndarray], bytes]
FrameDecoder = Callable[[bytes], np.ndarray]
PCM_RATE = 8000  # the per-packet path's PCM (mixing, volume, overlays, bridged audio, jitter buffer output)


def _g711_decoder(table: np.ndarray) -> FrameDecoder:
    return lambda payload: table[np.frombuffer(payload, dtype=np.uint8)]


@dataclass(frozen=True)
class Codec:
    """One audio payload format.

    ``clock_rate`` is the RTP (and SDP rtpmap) rate; ``sample_rate`` the audio's; ``bytes_per_tick``
    the payload bytes per RTP clock tick.  The player's offsets count payload bytes, so every
    conversion between bytes, milliseconds, RTP ticks and the 8 kHz PCM of the per-packet path goes
    through the methods below (for G.711 and G.722 all of them are "8 per ms").
    ``encode_table`` is set for table codecs (G.711): the player's per-packet path then indexes it
    directly (stateless).  A wideband codec brings ``wide_encode`` (a whole 16 kHz source, once),
    ``frame_encoder_factory`` (one leg's stateful encoder of 8 kHz frames) and ``decoder_factory``
    (one stream's decoder; ``wide``: to 16 kHz, else to 8 kHz).
    """

    name: str
    payload_type: int | None  # the static payload type (RFC 3551), None for a dynamic-only format
    clock_rate: int
    sample_rate: int
    silence: bytes = field(repr=False)  # 20 ms of encoded silence (a multiple of it for longer ptimes)
    encode_table: np.ndarray | None = field(default=None, repr=False, compare=False)
    decode_table: np.ndarray | None = field(default=None, repr=False, compare=False)
    bytes_per_tick: int = 1
    wide_encode: Callable[[np.ndarray], bytes] | None = field(default=None, repr=False, compare=False)
    frame_encoder_factory: Callable[[], FrameEncoder] | None = field(default=None, repr=False, compare=False)
    decoder_factory: Callable[[bool], FrameDecoder] | None = field(default=None, repr=False, compare=False)

    @property
    def wideband(self) -> bool:
        return self.sample_rate > PCM_RATE

    @property
    def rtpmap(self) -> str:
        """The encoding name and clock rate as an SDP rtpmap writes them (``PCMU/8000``)."""
        return f"{self.name}/{self.clock_rate}"

    @property
    def bytes_per_ms(self) -> int:
        """Payload bytes per millisecond: the unit of the player's offsets (8 for G.711 and G.722)."""
        return self.clock_rate * self.bytes_per_tick // 1000

    @property
    def ticks_per_ms(self) -> int:
        return self.clock_rate // 1000

    def ticks_per_packet(self, ptime_ms: int) -> int:
        return self.clock_rate * ptime_ms // 1000

    def samples_per_packet(self, ptime_ms: int) -> int:
        return self.sample_rate * ptime_ms // 1000

    def bytes_per_packet(self, ptime_ms: int) -> int:
        return self.ticks_per_packet(ptime_ms) * self.bytes_per_tick

    def ticks_of(self, nbytes: int) -> int:
        """RTP clock ticks that *nbytes* of payload span."""
        return nbytes // self.bytes_per_tick

    def pcm_of(self, nbytes: int) -> int:
        """8 kHz PCM samples that *nbytes* of payload span (the per-packet path's frame size)."""
        return nbytes * PCM_RATE // (self.clock_rate * self.bytes_per_tick)

    def bytes_of_pcm(self, samples: int) -> int:
        """Payload bytes for *samples* of 8 kHz PCM."""
        return samples * self.clock_rate * self.bytes_per_tick // PCM_RATE

    def silence_payload(self, nbytes: int) -> bytes:
        reps = -(-nbytes // len(self.silence))
        return (self.silence * reps)[:nbytes]

    def encode(self, pcm8: np.ndarray, pcm16: np.ndarray | None = None) -> bytes:
        """A whole source, once: a table codec from the 8 kHz PCM; a wideband one from the 16 kHz PCM
        when there is one (else the 8 kHz PCM upsampled), cut or padded to ``bytes_of_pcm(len(pcm8))``."""
        if self.encode_table is not None:
            return self.encode_table[np.ascontiguousarray(pcm8, np.int16).view(np.uint16)].tobytes()
        assert self.wide_encode is not None, f"{self.name} has neither a table nor a wideband encoder"
        if pcm16 is None:
            from .resample import resample  # noqa: PLC0415 - FFmpeg's aresample, off the clock

            pcm16 = resample(pcm8, PCM_RATE, self.sample_rate)
        return fit(self.wide_encode(pcm16), self.bytes_of_pcm(len(pcm8)), self)

    def frame_encoder(self) -> FrameEncoder:
        """A per-leg encoder of 8 kHz frames (stateful for a wideband codec; keep one per leg)."""
        if self.encode_table is not None:
            table = self.encode_table
            return lambda pcm: table.take(np.ascontiguousarray(pcm, np.int16).view(np.uint16)).tobytes()
        assert self.frame_encoder_factory is not None
        return self.frame_encoder_factory()

    def decoder(self, wide: bool = False) -> FrameDecoder:
        """A per-stream decoder of payloads to 8 kHz int16 (16 kHz if *wide* and the codec is wideband;
        stateful for a wideband codec: one per stream)."""
        if self.decode_table is not None:
            return _g711_decoder(self.decode_table)
        assert self.decoder_factory is not None
        return self.decoder_factory(wide)


def fit(data: bytes, nbytes: int, codec: Codec) -> bytes:
    """*data* cut or padded with the codec's silence to exactly *nbytes* (16 kHz and 8 kHz resamplings
    of one source may differ by a sample at the end)."""
    if len(data) >= nbytes:
        return data[:nbytes]
    return data + codec.silence_payload(nbytes - len(data))


def _g722_silence() -> bytes:
    """20 ms of the encoder's steady-state output for digital silence (decodes to |x| < 30)."""
    enc = g722_encode(np.zeros(16000, np.int16))
    return enc[-160:]


# -- L8 (RFC 3551 4.5.9): 8-bit linear PCM, offset binary (the most negative sample is 0) --------
def l8_encode(pcm: np.ndarray) -> bytes:
    """int16 → L8: the top 8 bits, rounded to nearest and saturated, plus 128."""
    x = (np.asarray(pcm, np.int32) + 128) >> 8
    return (np.clip(x, -128, 127) + 128).astype(np.uint8).tobytes()


def l8_decode(data: bytes) -> np.ndarray:
    """L8 → int16 (each byte's value minus 128, times 256)."""
    return ((np.frombuffer(data, np.uint8).astype(np.int16) - 128) << 8).astype(np.int16)


class L8FrameEncoder:
    """One leg's per-packet L8 encoder at 16 kHz: 8 kHz frames upsampled 2x, then quantized."""

    __slots__ = ("_up",)

    def __init__(self) -> None:
        self._up = Halfband(up=True)

    def __call__(self, pcm8: np.ndarray) -> bytes:
        return l8_encode(self._up(pcm8))


def _l8_decoder(wide: bool) -> FrameDecoder:
    if wide:
        return l8_decode
    down = Halfband(up=False)
    return lambda payload: down(l8_decode(payload))


PCMU = Codec("PCMU", 0, 8000, 8000, bytes([g711.SILENCE["PCMU"]]) * 160, g711.ULAW_ENCODE, g711.ULAW_DECODE)
PCMA = Codec("PCMA", 8, 8000, 8000, bytes([g711.SILENCE["PCMA"]]) * 160, g711.ALAW_ENCODE, g711.ALAW_DECODE)
G722 = Codec("G722", 9, 8000, 16000, _g722_silence(), wide_encode=g722_encode,
             frame_encoder_factory=G722FrameEncoder, decoder_factory=lambda wide: G722FrameDecoder(wide=wide))
# L8 at a 16 kHz RTP clock: a dynamic payload type only, negotiated by its rtpmap ``L8/16000``; a 20 ms
# packet is 320 bytes and advances the timestamp 320 (one byte per tick, twice G.711's rate).  Not
# spoken by default: ``mediacodecs.registry.register(L8_16K)`` makes it known (and configurable).
L8_16K = Codec("L8", None, 16000, 16000, b"\x80" * 320, wide_encode=l8_encode, frame_encoder_factory=L8FrameEncoder,
               decoder_factory=_l8_decoder)
CODECS: dict[str, Codec] = {c.name: c for c in (PCMU, PCMA, G722)}  # the codecs we speak (registry.register adds)
_BY_PT = {c.payload_type: c for c in CODECS.values() if c.payload_type is not None}


def get(name: str) -> Codec:
    """The codec called *name* (case-insensitive); KeyError for one we do not speak."""
    return CODECS[name.upper()]


def by_static_pt(pt: int) -> Codec | None:
    return _BY_PT.get(pt)
