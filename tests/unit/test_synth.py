"""The speech engine with real child processes: espeak-ng itself, and a stand-in program that hangs."""

from __future__ import annotations

import asyncio
import os
import stat
import struct
from pathlib import Path

import pytest
import soundfile

from mediasrv.api.voices import cloud_voice, espeak_voice, language_voice
from mediasrv.content.errors import SourceError
from mediasrv.content.loader import MediaLoader
from mediasrv.content.synth import (
    EspeakEngine,
    SpeechInputError,
    SpeechSpec,
    check,
    fix_wav_sizes,
    set_engine,
)
from mediasrv.media.player import SourceSpec


def hanging_engine(tmp_path: Path, seconds: int = 30) -> tuple[Path, Path]:
    """A program in espeak-ng's place that records its pid and nice value, then hangs."""
    pidfile = tmp_path / "pid"
    script = tmp_path / "fake-espeak"
    script.write_text(f"#!/bin/sh\necho $$ $(cut -d' ' -f19 /proc/$$/stat) > {pidfile}\nexec sleep {seconds}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, pidfile


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state not in ("Z", "X")


async def test_espeak_output_is_valid_wav_with_true_sizes():
    wav = await EspeakEngine().synthesize("Hello there.", "en-us", 175, False)
    riff, data_at = struct.unpack_from("<I", wav, 4)[0], wav.find(b"data")
    assert riff == len(wav) - 8 and struct.unpack_from("<I", wav, data_at + 4)[0] == len(wav) - data_at - 8
    info = soundfile.info(__import__("io").BytesIO(wav))
    assert info.samplerate == 22050 and info.channels == 1 and 0.5 < info.duration < 3
    assert fix_wav_sizes(b"not a wav") == b"not a wav"


async def test_timeout_kills_the_child_and_reports_it(tmp_path):
    script, pidfile = hanging_engine(tmp_path)
    engine = EspeakEngine(binary=str(script), timeout_s=0.5)
    with pytest.raises(SourceError) as info:
        await engine.synthesize("hi", "en-us", 175, False)
    assert info.value.reason == "speech_timeout" and engine.stats["timeouts"] == 1
    pid, nice = map(int, pidfile.read_text().split())
    assert nice == 10, "the child runs at nice +10"
    assert not alive(pid), "the timed-out child is gone"


async def test_a_cancelled_speak_load_kills_the_child(tmp_path):
    script, pidfile = hanging_engine(tmp_path)
    set_engine(EspeakEngine(binary=str(script), timeout_s=30))
    loader = MediaLoader.create(str(tmp_path / "data"), decode_processes=0)
    try:
        claim = loader.claim(SourceSpec(speech=SpeechSpec("hello")))
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            await asyncio.sleep(0.01)
        pid = int(pidfile.read_text().split()[0])
        claim.release()  # the only playback that wanted it went away
        for _ in range(200):
            if not alive(pid):
                break
            await asyncio.sleep(0.01)
        assert not alive(pid)
        assert loader.stats["cancelled"] == 1
    finally:
        set_engine(EspeakEngine())
        await loader.close()


async def test_concurrency_is_bounded(tmp_path):
    engine = EspeakEngine(concurrency=1)
    results = await asyncio.gather(*(engine.synthesize(f"word {i}", "en-us", 450, False) for i in range(4)))
    assert all(r[:4] == b"RIFF" for r in results) and engine.stats["queued"] >= 1


def test_check_names_the_field():
    engine = EspeakEngine()
    for spec, field in [
        (SpeechSpec(""), "text"), (SpeechSpec("a" * 3001), "text"), (SpeechSpec("a\0b"), "text"),
        (SpeechSpec("hi", voice="zz"), "voice"), (SpeechSpec("hi", voice="en-us+zz"), "voice"),
        (SpeechSpec("hi", rate=79), "rate"), (SpeechSpec("hi", rate=451), "rate"),
        (SpeechSpec("<speak><foo/>hi</speak>", ssml=True), "ssml"),
        (SpeechSpec("<voice>hi</voice>", ssml=True), "ssml"),
        (SpeechSpec('<speak xmlns:x="urn:x"><x:mark/>hi</speak>', ssml=True), "ssml"),
        (SpeechSpec("<speak> </speak>", ssml=True), "ssml"),
        (SpeechSpec("<speak>" + "a" * 3001 + "</speak>", ssml=True), "ssml"),
    ]:
        with pytest.raises(SpeechInputError) as info:
            check(spec, engine)
        assert info.value.field == field, (spec, info.value)
    ok = '<speak xmlns="http://www.w3.org/2001/10/synthesis"><p><s>Hi <emphasis>there</emphasis></s></p>' \
         '<say-as interpret-as="characters">abc</say-as><prosody rate="slow">x</prosody></speak>'
    assert check(SpeechSpec(ok, ssml=True), engine).ssml
    assert check(SpeechSpec("hi", voice="en-gb-x-rp+f3", rate=80), engine)


def test_vendor_voice_table():
    assert espeak_voice("en-US", "female") == "en-us+f3" and espeak_voice("en_GB", "male") == "en-gb"
    assert language_voice("es-MX") == "es-419" and language_voice("de-DE") == "de" and language_voice("arb") == "ar"
    assert language_voice("xx-YY") is None
    assert cloud_voice("Polly.Joanna") == "en-us+f3" and cloud_voice("Polly.Brian-Neural") == "en-gb"
    assert cloud_voice("en-US-JennyNeural") == "en-us+f3" and cloud_voice("Azure.de-DE-ConradNeural") == "de"
    assert cloud_voice("en-US-NobodyNeural") is None and cloud_voice("Polly.Nobody") is None
