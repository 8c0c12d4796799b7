"""End to end with a real softphone: baresip dials in, we play speech, baresip's recording matches it.

baresip (Debian v1.0.0) runs headless from a throw-away config dir: ``aufile`` feeds silence as
its microphone, ``aubridge`` is a null speaker, and the ``sndfile`` audio filter writes the
decoded far-end audio to ``<snd_path>/dump-<time>-dec.wav`` (8 kHz mono S16 for G.711).  In
this version ``aufile`` is a source only, so ``audio_player aufile,...`` cannot record.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile

from mediacodecs.resample import to_telephony
from tests.support.audio import align
from tests.support.baresip import PHRASE, baresip_config, stop_process
from tests.support.paths import require
from tests.support.server import Hooks, Running, start_server, wait_until

pytestmark = pytest.mark.integration

RATE = 8000
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
