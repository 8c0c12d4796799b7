"""FLAC, Ogg (Vorbis, Opus), M4A and ADTS AAC: sniffed, streamed where the container allows, and
failing with the same reasons and limits as WAV and MP3 (truncated, too_long, decode_error)."""

from __future__ import annotations

import numpy as np
import pytest

from mediasrv.content.decode import StreamDecoder, decode_bytes, describe_audio, sniff
from mediasrv.content.source import SourceError
from tests.support.audio_fixtures import ENCODED_FORMATS, encoded, sweep

KIND = {"flac": "flac", "opus": "ogg", "vorbis": "ogg", "m4a": "mp4", "aac": "aac"}
LABEL = {"flac": "flac", "opus": "ogg/opus", "vorbis": "ogg/vorbis", "m4a": "mp4/aac", "aac": "aac"}
STREAMED = {"flac", "opus", "vorbis", "aac"}


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return {f: encoded(sweep(6.0, ENCODED_FORMATS[f][2])[:, 0], f) for f in ENCODED_FORMATS}


@pytest.mark.parametrize("fmt", sorted(ENCODED_FORMATS))
def test_sniffed_described_and_streamed(files, fmt):
    body = files[fmt]
    assert sniff(body[:4096]) == KIND[fmt]
    meta = describe_audio(body)
    assert meta["format"] == LABEL[fmt] and meta["channels"] == 1
    assert meta["sample_rate"] == ENCODED_FORMATS[fmt][2] and abs(meta["duration_ms"] - 6000) < 60
    dec = StreamDecoder(KIND[fmt], fmt)
    before_end = 0
    for i in range(0, len(body), 4096):
        before_end += dec.feed(body[i:i + 4096]).size
    total = before_end + dec.finish().size
    assert abs(total - 48000) < 400
    if fmt in STREAMED:  # most of it played before the body ended
        assert before_end > total * 0.6, (before_end, total)
    else:  # MP4: buffered whole, decoded at the end
        assert before_end == 0


@pytest.mark.parametrize("fmt", sorted(ENCODED_FORMATS))
def test_cut_short_is_truncated(files, fmt):
    body = files[fmt]
    for cut in (len(body) // 2, len(body) - 3):
        with pytest.raises(SourceError) as err:
            decode_bytes(body[:cut], KIND[fmt], fmt)
        assert err.value.reason == "truncated", (cut, err.value.message)


@pytest.mark.parametrize("fmt", sorted(ENCODED_FORMATS))
def test_too_long_and_garbage(files, fmt):
    with pytest.raises(SourceError) as err:
        decode_bytes(files[fmt], KIND[fmt], fmt, max_seconds=2.0)
    assert err.value.reason == "too_long"
    garbage = files[fmt][:64] + np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8).tobytes()
    with pytest.raises(SourceError) as err:
        decode_bytes(garbage, KIND[fmt], fmt)
    assert err.value.reason in ("decode_error", "truncated")


def test_abandoned_stream_ends_its_thread(files):
    import gc
    import threading

    before = {t.name for t in threading.enumerate()}
    dec = StreamDecoder("flac", "x")
    dec.feed(files["flac"][:50000])
    assert any(t.name == "decode-flac" for t in threading.enumerate())
    del dec
    gc.collect()
    for _ in range(100):
        if not [t for t in threading.enumerate() if t.name == "decode-flac" and t.name not in before]:
            break
        threading.Event().wait(0.01)
    assert not [t for t in threading.enumerate() if t.name == "decode-flac"]


async def test_decoded_in_a_worker_process_as_in_process(files):
    """Long files decode in the worker processes (decodeproc.py): same samples, same failure reason."""
    from mediasrv.content.decodeproc import DecodeWorkers

    workers = DecodeWorkers(1)
    workers.start()
    try:
        for fmt in ("opus", "m4a"):
            body = files[fmt]
            remote = await workers.open(KIND[fmt], fmt, 8000, 3600.0)
            parts = [(await remote.step(body[i:i + 16384]))[0] for i in range(0, len(body), 16384)]
            parts.append((await remote.step(None))[0])
            assert np.array_equal(np.concatenate(parts), decode_bytes(body, KIND[fmt], fmt))
        remote = await workers.open("flac", "cut", 8000, 3600.0)
        with pytest.raises(SourceError) as err:
            await remote.step(files["flac"][: len(files["flac"]) // 2])
            await remote.step(None)
        assert err.value.reason == "truncated"
    finally:
        workers.close()
