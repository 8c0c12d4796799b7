"""Audio fixtures generated at test time: tones, sweeps, espeak-ng speech, WAV in every encoding,
MP3 at all nine MPEG rates (PyAV + libmp3lame), and hostile bodies.

WAV files are written by hand (not by soundfile) so the tests control every header field: odd
chunks, WAVE_FORMAT_EXTENSIBLE, RF64, unknown or lying data sizes.  Sample values are returned
alongside so a test can compute the exact expected decode.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import av
import numpy as np
import soundfile

from mediacodecs.g711 import ALAW_DECODE, ULAW_DECODE, alaw_encode, ulaw_encode

WAV_ENCODINGS = ("u8", "s16", "s24", "s32", "f32", "f64", "mulaw", "alaw")
WAV_RATES = (8000, 11025, 16000, 22050, 44100, 48000)
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
CHANNEL_COUNTS = (1, 2, 6)


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5, channels: int = 1) -> np.ndarray:
    """A sine as float64 (frames, channels) in [-1, 1]; channel k is scaled by 1 - 0.1 k."""
    t = np.arange(int(round(seconds * rate))) / rate
    x = amp * np.sin(2 * np.pi * freq * t)
    return np.stack([x * (1 - 0.1 * k) for k in range(channels)], axis=1)


def sweep(seconds: float, rate: int, f0: float = 50.0, f1: float = 3500.0, amp: float = 0.5,
          channels: int = 1) -> np.ndarray:
    """Exponential sine sweep, float64 (frames, channels)."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    k = np.log(f1 / f0)
    x = amp * np.sin(2 * np.pi * f0 * seconds / k * (np.exp(t * k / seconds) - 1))
    return np.stack([x] * channels, axis=1)


def speech_wav(text: str = "Your call is important to us. Please hold.") -> bytes:
    """espeak-ng speech as a WAV body (22.05 kHz s16 mono). Raises if espeak-ng is missing."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed; the speech fixtures need it")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run([exe, "-w", str(path), text], check=True, capture_output=True, timeout=30)
        return path.read_bytes()


@dataclass
class WavFixture:
    body: bytes
    rate: int
    channels: int
    encoding: str
    samples: np.ndarray  # what the file stores, as (frames, channels) of the encoding's dtype

    def int16_channels(self) -> np.ndarray:
        """The stored samples in int16 scale (float64), (frames, channels): the decode reference."""
        s = self.samples
        if self.encoding == "u8":
            return (s.astype(np.float64) - 128) * 256
        if self.encoding == "s16":
            return s.astype(np.float64)
        if self.encoding in ("s24",):
            return s.astype(np.float64) / 256
        if self.encoding == "s32":
            return s.astype(np.float64) / 65536
        if self.encoding in ("f32", "f64"):
            return s.astype(np.float64) * 32768
        table = ULAW_DECODE if self.encoding == "mulaw" else ALAW_DECODE
        return table[s].astype(np.float64)


def _quantise(x: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "u8":
        return np.clip(np.round(x * 127) + 128, 0, 255).astype(np.uint8)
    if encoding == "s16":
        return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
    if encoding == "s24":
        return np.clip(np.round(x * 8388607), -8388608, 8388607).astype(np.int32)
    if encoding == "s32":
        return np.clip(np.round(x * 2147483647), -2147483648, 2147483647).astype(np.int32)
    if encoding == "f32":
        return x.astype(np.float32)
    if encoding == "f64":
        return x.astype(np.float64)
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
    enc = ulaw_encode if encoding == "mulaw" else alaw_encode
    return np.frombuffer(enc(pcm.reshape(-1)), np.uint8).reshape(x.shape)


_TAGS = {"u8": (1, 8), "s16": (1, 16), "s24": (1, 24), "s32": (1, 32), "f32": (3, 32), "f64": (3, 64),
         "mulaw": (7, 8), "alaw": (6, 8)}


def _payload(samples: np.ndarray, encoding: str) -> bytes:
    if encoding == "s24":
        v = samples.astype("<i4").reshape(-1).view(np.uint8).reshape(-1, 4)[:, :3]
        return v.tobytes()
    dt = {"u8": "u1", "s16": "<i2", "s32": "<i4", "f32": "<f4", "f64": "<f8", "mulaw": "u1", "alaw": "u1"}
    return samples.astype(dt[encoding]).tobytes()


def chunk(cid: bytes, body: bytes) -> bytes:
    """One RIFF chunk with its pad byte when the size is odd."""
    return cid + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")


def wav(x: np.ndarray, rate: int, encoding: str = "s16", *, extensible: bool = False,
        extra_before: list[tuple[bytes, bytes]] | None = None, extra_after: list[tuple[bytes, bytes]] | None = None,
        data_size: int | None = None, rf64: bool = False, riff_size: int | None = None) -> WavFixture:
    """A WAV body from float samples (frames, channels), with control over the header's fields."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    samples = _quantise(x, encoding)
    channels = x.shape[1]
    tag, bits = _TAGS[encoding]
    width = bits // 8
    block = channels * width
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * block, block, bits)
    if extensible:
        mask = (1 << channels) - 1
        guid = struct.pack("<H", tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt += struct.pack("<HHI", 22, bits, mask) + guid
    elif tag != 1:
        fmt += struct.pack("<H", 0)
    payload = _payload(samples, encoding)
    chunks = b"".join(chunk(c, b) for c, b in (extra_before or []))
    declared = len(payload) if data_size is None else data_size
    if rf64:
        ds64 = struct.pack("<QQQI", 0, len(payload), samples.shape[0], 0)
        chunks = chunk(b"ds64", ds64) + chunks
        declared = 0xFFFFFFFF
    data = b"data" + struct.pack("<I", declared) + payload + (b"\x00" if len(payload) % 2 else b"")
    tail = b"".join(chunk(c, b) for c, b in (extra_after or []))
    body = chunk(b"fmt ", fmt) + chunks + data + tail
    magic = b"RF64" if rf64 else b"RIFF"
    size = 0xFFFFFFFF if rf64 else (len(body) + 4 if riff_size is None else riff_size)
    return WavFixture(magic + struct.pack("<I", size) + b"WAVE" + body, rate, channels, encoding, samples)


def mp3(x: np.ndarray, rate: int, *, id3: bool = True, xing: bool = True, bitrate: int | None = None) -> bytes:
    """MP3 (libmp3lame through PyAV) from float samples (frames, channels 1 or 2)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    layout = "mono" if x.shape[1] == 1 else "stereo"
    buf = io.BytesIO()
    opts = {} if id3 else {"id3v2_version": "0"}
    if not xing:
        opts["write_xing"] = "0"
    with av.open(buf, "w", format="mp3", options=opts) as out:
        stream = out.add_stream("libmp3lame", rate=rate, layout=layout)
        if bitrate:
            stream.bit_rate = bitrate
        if id3:
            out.metadata["title"] = "mediasrv test tone"
        pcm = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
        for i in range(0, len(pcm), 4608):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[i:i + 4608]).reshape(1, -1),
                                               format="s16", layout=layout)
            frame.sample_rate = rate
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


# format -> (PyAV muxer, encoder, sample rate); Vorbis comes from sox (FFmpeg's own encoder is experimental)
ENCODED_FORMATS = {
    "flac": ("flac", "flac", 44100),
    "opus": ("ogg", "libopus", 48000),
    "vorbis": (None, None, 44100),
    "m4a": ("ipod", "aac", 44100),
    "aac": ("adts", "aac", 44100),
}


def encoded(x: np.ndarray, fmt: str) -> bytes:
    """Mono float samples at ENCODED_FORMATS[fmt]'s rate, encoded at test time (PyAV, or sox for Vorbis)."""
    muxer, codec, rate = ENCODED_FORMATS[fmt]
    pcm = np.clip(np.round(np.asarray(x, dtype=np.float64).reshape(-1) * 32767), -32768, 32767).astype(np.int16)
    if muxer is None:
        with tempfile.TemporaryDirectory() as d:
            src, dst = os.path.join(d, "in.wav"), os.path.join(d, "out.ogg")
            soundfile.write(src, pcm, rate, subtype="PCM_16")
            subprocess.run(["sox", src, dst], check=True, timeout=60)
            with open(dst, "rb") as fh:
                return fh.read()
    assert codec is not None  # only the sox case (Vorbis) has none
    buf = io.BytesIO()
    with av.open(buf, "w", format=muxer) as out:
        stream = cast(av.AudioStream, out.add_stream(codec, rate=rate, layout="mono"))
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
             b"<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>\n")


def hostile() -> dict[str, tuple[bytes, str, str]]:
    """name → (body, kind to decode it as, expected SourceError reason)."""
    rng = np.random.default_rng(4)
    good = mp3(tone(440, 1.0, 22050), 22050, id3=False)
    claim_4gb = wav(tone(440, 0.2, 8000), 8000, data_size=0xFFFFFFF0, riff_size=0xFFFFFFF8).body
    random = rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    return {
        "zero_bytes": (b"", "wav", "not_audio"),
        "wav_claims_4gb": (claim_4gb, "wav", "truncated"),
        "wav_header_only": (claim_4gb[:30], "wav", "truncated"),
        "mp3_truncated": (good[:len(good) - 100], "mp3", "truncated"),
        "random_as_mp3": (random, "mp3", "decode_error"),
        "random_as_wav": (random, "wav", "not_audio"),
        "html_page": (HTML_PAGE, "html", "not_audio"),
        "html_as_wav": (HTML_PAGE, "wav", "not_audio"),
        "ogg_garbage": (b"OggS" + bytes(100), "ogg", "decode_error"),
        "flac_garbage": (b"fLaC" + bytes(60), "flac", "decode_error"),
        "wav_adpcm": (wav(tone(440, 0.1, 8000), 8000).body.replace(b"\x01\x00\x01\x00", b"\x02\x00\x01\x00", 1),
                      "wav", "unsupported_format"),
        "wav_no_samples": (wav(np.zeros((0, 1)), 8000).body, "wav", "decode_error"),
    }
