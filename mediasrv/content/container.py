"""FLAC, Ogg (Vorbis, Opus, FLAC), MP4/M4A (AAC) and ADTS AAC through FFmpeg's demuxers (PyAV).

Why a thread: FFmpeg's demuxers pull bytes (``read``) while our decoders are pushed bytes
(``feed``). Each :class:`ContainerDecoder` runs PyAV's demux/decode loop in its own thread over
a file-like object that blocks until ``feed`` brings more; ``feed`` hands the bytes over and
waits until the thread has used them all (it is blocked reading again) or ended, so the two
take turns like coroutines: the output of a feed is deterministic, and no decoding happens
between calls. The decoder runs where StreamDecoder runs (a decode worker process, off the
media clock's GIL).

Streamed: FLAC, Ogg and ADTS are read front to back and play while they download. MP4 keeps
its index (``moov``) anywhere, often at the end, so an MP4 is buffered whole and decoded at
the end of the body (within ``max_fetch_bytes``).

Truncation, which FFmpeg conceals: a FLAC that decodes to fewer samples than its STREAMINFO
declares, an Ogg stream whose last page is cut short or lacks the end-of-stream flag, an MP4
whose index is missing or whose track decodes to clearly less than its declared duration, and
an ADTS stream whose last frame is shorter than its header says are ``truncated``.
"""

from __future__ import annotations

import io
import threading
from fractions import Fraction

import av
import numpy as np

from .errors import SourceError

CONTAINER_KINDS = ("flac", "ogg", "mp4", "aac")
STREAMED = ("flac", "ogg", "aac")
_FORMATS = {"flac": "flac", "ogg": "ogg", "mp4": "mp4", "aac": "aac"}
_TAIL = 1 << 16  # bytes of the stream's end kept for the Ogg/ADTS end checks
_MP4_BRANDS = (b"M4A ", b"M4B ", b"mp42", b"mp41", b"isom", b"iso2", b"iso5", b"iso6", b"dash", b"MSNV",
               b"3gp4", b"3gp5", b"3gp6", b"3g2a", b"f4a ", b"M4P ", b"avc1", b"qt  ")


def sniff_container(head: bytes) -> str | None:
    """flac | ogg | mp4 | aac from the magic bytes, or None."""
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[4:8] == b"ftyp" and head[8:12] in _MP4_BRANDS:
        return "mp4"
    if len(head) >= 7 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0 and _adts_length(head) >= 7:
        return "aac"
    return None


def _adts_length(b: bytes | bytearray) -> int:
    """The frame length an ADTS header declares (header included)."""
    return ((b[3] & 0x03) << 11) | (b[4] << 3) | (b[5] >> 5)


def _mp4_cut_box(body: memoryview | bytes) -> str | None:
    """The top-level MP4 box that runs past the end of *body* (a cut-short file), or None."""
    pos, n = 0, len(body)
    while pos + 8 <= n:
        size = int.from_bytes(body[pos:pos + 4], "big")
        name = bytes(body[pos + 4:pos + 8]).decode("latin-1")
        if size == 1 and pos + 16 <= n:
            size = int.from_bytes(body[pos + 8:pos + 16], "big")
        elif size == 0:
            return None  # to the end of the file
        if size < 8:
            return None
        if pos + size > n:
            return f"box {name!r} holds {n - pos} of its {size} bytes"
        pos += size
    return f"{n - pos} stray bytes at the end" if pos != n else None


def _flac_total_samples(head: bytes) -> int | None:
    """STREAMINFO's total sample count (0 = unknown → None)."""
    if len(head) < 26 or head[:4] != b"fLaC" or head[4] & 0x7F != 0:
        return None
    total = int.from_bytes(head[18:26], "big") & ((1 << 36) - 1)
    return total or None


class _Pipe(io.RawIOBase):
    """The demuxer's side: ``read`` blocks until the feeder brings bytes or says the end came."""

    def __init__(self, owner: ContainerDecoder) -> None:
        self.owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        o = self.owner
        with o.cond:
            while not o.buf and not o.eof and not o.aborted:
                o.waiting = True
                o.cond.notify_all()
                o.cond.wait()
            o.waiting = False
            if o.aborted:
                raise SourceError("internal_error", "decode abandoned")
            n = min(len(b), len(o.buf))
            b[:n] = o.buf[:n]
            del o.buf[:n]
            return n


class ContainerDecoder:
    """Bytes in (``feed``), (rate, channels, label, mono int16 at the source rate) out."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.cond = threading.Condition()
        self.buf = bytearray()
        self.eof = False
        self.aborted = False
        self.waiting = False
        self.done = False
        self.error: BaseException | None = None
        self.out: list[np.ndarray] = []
        self.rate: int | None = None
        self.channels: int | None = None
        self.label: str | None = None
        self.decoded = 0
        self.declared: int | None = None  # samples the container says it holds, when it says
        self.head = bytearray()
        self.tail = bytearray()
        self.whole = bytearray() if kind not in STREAMED else None
        self._thread: threading.Thread | None = None

    # -- the feeder's side --------------------------------------------------------------------
    def feed(self, chunk: bytes | bytearray | memoryview) -> list[np.ndarray]:
        data = bytes(chunk)
        if len(self.head) < 64:
            self.head += data[:64 - len(self.head)]
        self.tail += data
        del self.tail[:-_TAIL]
        if self.whole is not None:  # MP4: decoded at the end, from the whole body
            self.whole += data
            return []
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, args=(_Pipe(self),), daemon=True,
                                            name=f"decode-{self.kind}")
            self._thread.start()
        with self.cond:
            self.buf += data
            self.cond.notify_all()
            while not self.done and not (self.waiting and not self.buf):
                self.cond.wait()
        return self._take()

    def finish(self) -> list[np.ndarray]:
        if self.whole is not None:
            body, self.whole = bytes(self.whole), None
            if not body:
                raise SourceError("not_audio", "empty body, 0 bytes, not audio")
            cut = _mp4_cut_box(body)
            if cut is not None:
                raise SourceError("truncated", f"MP4 ends early: {cut}")
            self._run(io.BytesIO(body))
        else:
            if self._thread is None:
                raise SourceError("not_audio", "empty body, 0 bytes, not audio")
            with self.cond:
                self.eof = True
                self.cond.notify_all()
            self._thread.join()
        out = self._take()
        self._check_end()
        return out

    def close(self) -> None:
        """Abandon the decode: the thread's next read ends it."""
        with self.cond:
            self.aborted = True
            self.cond.notify_all()

    def _take(self) -> list[np.ndarray]:
        with self.cond:
            out, self.out = self.out, []
            error = self.error
        if error is not None:
            raise error
        return out

    # -- the demuxer's side (its own thread, or the caller's for MP4) ------------------------------
    def _run(self, fileobj: io.RawIOBase | io.BytesIO) -> None:
        try:
            self._demux(fileobj)
        except SourceError as exc:
            self._fail(exc)
        except av.FFmpegError as exc:
            # the demuxer wanted bytes past the end of the body, or an MP4 box runs past it
            eof = isinstance(exc, av.error.EOFError)
            ogg_started = self.kind == "ogg" and len(self.head) > 5 and self.head[5] & 0x02  # a BOS page
            truncated = (eof and (self.label is not None or ogg_started)) or (
                isinstance(fileobj, io.BytesIO) and _mp4_cut_box(fileobj.getbuffer()) is not None)
            why = f"{self.kind} ends early ({_mp4_cut_box(fileobj.getbuffer())})" if truncated and isinstance(
                fileobj, io.BytesIO) else f"{self.kind}: {type(exc).__name__}: {exc}"
            self._fail(SourceError("truncated" if truncated else "decode_error", why))
        except Exception as exc:  # noqa: BLE001 - any decoder failure is this source's failure
            self._fail(SourceError("decode_error", f"{self.kind}: {type(exc).__name__}: {exc}"))
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def _fail(self, exc: SourceError) -> None:
        with self.cond:
            if self.error is None:
                self.error = exc

    def _demux(self, fileobj: io.RawIOBase | io.BytesIO) -> None:
        buffered = io.BufferedReader(fileobj, 4096) if isinstance(fileobj, io.RawIOBase) else fileobj
        # a small probe: the stream's parameters are in its first headers, and playing starts sooner
        options = {"probesize": "4096", "analyzeduration": "0"} if self.kind in STREAMED else {}
        with av.open(buffered, mode="r", format=_FORMATS[self.kind], options=options,
                     buffer_size=4096) as container:
            streams = container.streams.audio
            if not streams:
                raise SourceError("unsupported_format", f"{self.kind} container holds no audio stream")
            stream = streams[0]
            codec = stream.codec_context.name
            self.label = f"{self.kind}/{codec}" if self.kind not in ("flac", "aac") or codec != self.kind \
                else self.kind
            if self.kind == "flac":
                self.declared = _flac_total_samples(bytes(self.head))
            elif self.kind == "mp4" and stream.duration and stream.time_base:
                self.declared = int(stream.duration * Fraction(stream.time_base) * (stream.rate or 1))
            errors = decoded_packets = 0
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    errors += 1
                    continue
                decoded_packets += 1
                for frame in frames:
                    self._frame(frame)
            try:
                for frame in stream.codec_context.decode(None):
                    self._frame(frame)
            except av.FFmpegError:
                errors += 1
            if decoded_packets == 0:
                raise SourceError("decode_error", f"no {self.label} packet could be decoded")
            if errors > max(3, decoded_packets // 10):
                raise SourceError("decode_error", f"{errors} corrupt {self.label} packets")

    def _frame(self, frame: av.AudioFrame) -> None:
        x = frame.to_ndarray()
        channels = len(frame.layout.channels)
        x = x.T if frame.format.is_planar else x.reshape(-1, channels)
        if x.dtype.kind == "f":
            mono = np.clip(np.rint(x.astype(np.float64).mean(axis=1) * 32768.0), -32768, 32767).astype(np.int16)
        elif x.dtype == np.int32:
            mono = np.clip(np.rint(x.astype(np.float64).mean(axis=1) / 65536.0), -32768, 32767).astype(np.int16)
        elif channels == 1 and x.dtype == np.int16:
            mono = x[:, 0].copy()
        else:
            mono = np.clip(np.rint(x.astype(np.float64).mean(axis=1)), -32768, 32767).astype(np.int16)
        with self.cond:
            if self.rate is None:
                self.rate, self.channels = frame.sample_rate, channels
            elif frame.sample_rate != self.rate:
                raise SourceError("unsupported_format", f"{self.label}: sample rate changes mid-stream")
            self.decoded += mono.size
            self.out.append(mono)

    # -- the end checks -----------------------------------------------------------------------------
    def _check_end(self) -> None:
        if self.kind == "flac" and self.declared is not None and self.decoded < self.declared:
            raise SourceError("truncated", f"FLAC decodes to {self.decoded} of the {self.declared} samples "
                                           "its STREAMINFO declares")
        if self.kind == "mp4" and self.declared is not None and self.rate and \
                self.decoded < self.declared - max(4096, self.declared // 50):
            raise SourceError("truncated", f"MP4 track decodes to {self.decoded} of about {self.declared} samples")
        if self.kind == "ogg":
            self._check_ogg_end(bytes(self.tail))
        if self.kind == "aac":
            self._check_adts_end(bytes(self.tail))

    @staticmethod
    def _check_ogg_end(tail: bytes) -> None:
        at = tail.rfind(b"OggS")
        while at >= 0:
            if len(tail) - at >= 27 and tail[at + 4] == 0:
                nsegs = tail[at + 26]
                if len(tail) - at < 27 + nsegs:
                    raise SourceError("truncated", "Ogg stream ends inside a page header")
                size = 27 + nsegs + sum(tail[at + 27:at + 27 + nsegs])
                if at + size > len(tail):
                    raise SourceError("truncated", f"Ogg stream ends inside its last page "
                                                   f"({len(tail) - at} of {size} bytes)")
                if not tail[at + 5] & 0x04:
                    raise SourceError("truncated", "Ogg stream ends without its end-of-stream page")
                return
            at = tail.rfind(b"OggS", 0, at)
        raise SourceError("truncated", "no complete Ogg page at the end of the stream")

    @staticmethod
    def _check_adts_end(tail: bytes) -> None:
        """Walk the ADTS frames of the tail from a confirmed sync: the last one must be whole."""
        at = tail.find(b"\xff")
        while 0 <= at < len(tail) - 7:
            pos = at
            ok = 0
            while pos + 7 <= len(tail) and tail[pos] == 0xFF and tail[pos + 1] & 0xF6 == 0xF0:
                length = _adts_length(tail[pos:pos + 7])
                if length < 7:
                    break
                if pos + length > len(tail):
                    if ok >= 2:
                        raise SourceError("truncated", f"ADTS last frame cut short: {len(tail) - pos} of "
                                                       f"{length} bytes")
                    break
                pos += length
                ok += 1
            if ok >= 2 and pos == len(tail):
                return
            at = tail.find(b"\xff", at + 1)
        raise SourceError("decode_error", "the stream does not end with whole ADTS frames")
