"""End to end with a real softphone: baresip dials in, we play speech, baresip's recording matches it.

baresip (Debian v1.0.0) runs headless from a throw-away config dir: ``aufile`` feeds silence as
its microphone, ``aubridge`` is a null speaker, and the ``sndfile`` audio filter writes the
decoded far-end audio to ``<snd_path>/dump-<time>-dec.wav`` (8 kHz mono S16 for G.711).  In
this version ``aufile`` is a source only, so ``audio_player aufile,...`` cannot record.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile

from mediacodecs.resample import to_telephony

from .conftest import Hooks, Running, free_tcp_udp_port, require, start_server, wait_until

pytestmark = pytest.mark.integration

RATE = 8000
PHRASE = "The quick brown fox jumps over the lazy dog. Seven, eight, nine, ten."
MIN_CORRELATION = 0.9


def speech_wav(path: Path, tmp: Path) -> np.ndarray:
    """espeak-ng speech, mono int16 at 8 kHz, written to *path*; returns the samples."""
    espeak = require("espeak-ng")
    raw = tmp / "espeak.wav"
    subprocess.run([espeak, "-w", str(raw), PHRASE], check=True, timeout=30, capture_output=True)
    data, rate = soundfile.read(raw, dtype="int16")
    pcm = to_telephony(data, rate, RATE)
    assert pcm.size > RATE, f"espeak-ng produced only {pcm.size} samples"
    soundfile.write(path, pcm, RATE, subtype="PCM_16")
    return pcm


def baresip_config(cfg: Path, rec_dir: Path, silence: Path) -> tuple[Path, int]:
    """A headless, non-interactive baresip config dir: G.711 only, no sound card, no NAT helpers."""
    cfg.mkdir(parents=True, exist_ok=True)
    rec_dir.mkdir(parents=True, exist_ok=True)
    soundfile.write(silence, np.zeros(RATE * 120, dtype=np.int16), RATE, subtype="PCM_16")
    port = free_tcp_udp_port()
    (cfg / "config").write_text(
        "\n".join([
            "poll_method poll",
            f"sip_listen 127.0.0.1:{port}",
            "sip_transports udp",
            f"audio_source aufile,{silence}",
            "audio_player aubridge,nil",
            "audio_alert aubridge,nil",
            "ausrc_srate 8000",
            "auplay_srate 8000",
            "ausrc_channels 1",
            "auplay_channels 1",
            "audio_buffer 20-160",
            "module_path /usr/lib/baresip/modules",
            "module g711.so",
            "module aufile.so",
            "module aubridge.so",
            "module sndfile.so",
            "module_app account.so",
            "module_app menu.so",
            f"snd_path {rec_dir}",
            "",
        ])
    )
    (cfg / "accounts").write_text("<sip:baresip@127.0.0.1>;regint=0;audio_codecs=PCMU\n")
    (cfg / "contacts").write_text("")
    return cfg, port


def align(src: np.ndarray, rec: np.ndarray) -> tuple[int, float]:
    """Lag of *src* inside *rec* by FFT cross-correlation, and the normalized correlation there."""
    x = src.astype(np.float64)
    y = rec.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(x.size + y.size)))
    xc = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n)[: y.size - x.size + 1]
    lag = int(np.argmax(xc))
    seg = y[lag : lag + x.size]
    denom = np.sqrt(np.dot(x, x) * np.dot(seg, seg))
    return lag, float(np.dot(x, seg) / denom) if denom else 0.0


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def test_baresip_hears_the_playback(tmp_path: Path, webhooks: Hooks) -> None:
    baresip = require("baresip")
    r: Running = await start_server(tmp_path, webhook_url=webhooks.url)
    src = speech_wav(r.data_dir / "media" / "src.wav", tmp_path)
    cfg, _ = baresip_config(tmp_path / "baresip", tmp_path / "rec", tmp_path / "silence.wav")
    log = open(tmp_path / "baresip.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [baresip, "-f", str(cfg), "-t", "60", "-e", f"/dial sip:play@127.0.0.1:{r.sip_port}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )

    def baresip_log() -> str:
        log.flush()
        return (tmp_path / "baresip.log").read_text(errors="replace")[-3000:]

    try:
        try:
            call = await wait_until(
                lambda: next((c for c in r.server.registry.active() if c.state.value == "answered"), None),
                timeout=15, what="baresip's call to be answered",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; baresip log:\n{baresip_log()}") from None
        assert call.summary()["codec"] == "PCMU", call.summary()
        await asyncio.sleep(0.3)  # let baresip's RTP socket and decoder settle before the speech
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            async with s.post(f"{r.http}/v1/calls/{call.call_id}/playbacks", json={"media": "src.wav"}) as resp:
                body = await resp.json()
                assert resp.status in (200, 201, 202), body
            ended = await webhooks.wait_for(
                lambda e: e["type"] == "playback.ended" and e["call_id"] == call.call_id,
                timeout=src.size / RATE + 15,
            )
            assert ended["data"]["status"] == "completed", ended
            await asyncio.sleep(0.5)  # jitter buffer drain at baresip
            async with s.delete(f"{r.http}/v1/calls/{call.call_id}") as resp:
                assert resp.status == 200, await resp.text()
        await wait_until(lambda: not call.is_active, timeout=5, what="call to end")
        await asyncio.sleep(0.3)
    finally:
        stop_process(proc)
        log.close()
        await r.server.stop()

    recs = sorted((tmp_path / "rec").glob("dump-*-dec.wav"))
    assert recs, f"baresip recorded nothing; log:\n{(tmp_path / 'baresip.log').read_text(errors='replace')[-3000:]}"
    info = soundfile.info(recs[0])
    assert (info.samplerate, info.channels) == (RATE, 1), info
    rec, _ = soundfile.read(recs[0], dtype="int16")
    assert rec.size >= src.size, f"recording {rec.size / RATE:.2f}s shorter than source {src.size / RATE:.2f}s"
    lag, corr = align(src, rec)
    print(f"baresip recording {rec.size / RATE:.2f}s, source {src.size / RATE:.2f}s, lag {lag / RATE * 1000:.1f} ms, "
          f"normalized cross-correlation {corr:.4f}")
    assert lag + src.size <= rec.size
    assert corr >= MIN_CORRELATION, f"normalized cross-correlation {corr:.4f} < {MIN_CORRELATION}"
