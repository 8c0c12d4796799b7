"""G.722 with real peers: SIPp offering only payload type 9 and an independent receiver that compares
the RTP with FFmpeg's encoding of the same 16 kHz source; baresip (its g722 module) hearing a 16 kHz
prompt with its wideband content."""

from __future__ import annotations

import asyncio
import io
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile

from mediacodecs.resample import to_telephony
from mediasrv.rtp import fastpath
from tests.support.audio import align
from tests.support.baresip import PHRASE, baresip_config, stop_process
from tests.support.httpapi import api
from tests.support.paths import require
from tests.support.server import Hooks, Running, start_server, wait_until
from tests.support.talker import Talker

pytestmark = pytest.mark.integration

WIDE = 16000
CODECS = ["G722", "PCMU", "PCMA"]


def ffmpeg_g722(pcm16: np.ndarray) -> bytes:
    """FFmpeg's g722 encoder through PyAV's muxing path: the reference bytes."""
    out = io.BytesIO()
    with av.open(out, "w", format="g722") as container:
        stream = container.add_stream("g722", rate=WIDE, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm16.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = WIDE
        for pkt in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(pkt)
    return out.getvalue()


def speech16(tmp: Path) -> np.ndarray:
    """espeak-ng speech at 16 kHz mono int16."""
    espeak = require("espeak-ng")
    raw = tmp / "espeak.wav"
    subprocess.run([espeak, "-w", str(raw), PHRASE], check=True, timeout=30, capture_output=True)
    data, rate = soundfile.read(raw, dtype="int16")
    return to_telephony(data, rate, WIDE)


def band_energy(pcm: np.ndarray, rate: int, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(pcm), 1 / rate)
    return float(spec[(f >= lo) & (f < hi)].sum() / spec.sum())


async def test_sipp_g722_only_caller_receives_ffmpegs_encoding(tmp_path: Path) -> None:
    r: Running = await start_server(tmp_path, codecs=CODECS)
    src = speech16(tmp_path)
    soundfile.write(r.data_dir / "media" / "speech16.wav", src, WIDE, subtype="PCM_16")
    caller = Talker(tmp_path, "caller", 440, "G722", 2 * len(src) / WIDE + 1.5)  # offers only PT 9
    try:
        await caller.dial(r)
        before = fastpath.counters()["fast"]
        status, pb = await api(r, "POST", f"/v1/calls/{caller.call.call_id}/playbacks",
                               {"media": "speech16.wav", "loop": 2})
        assert status in (200, 201, 202), pb
        done = await wait_until(lambda: (p := r.server.media.get_playback(pb["id"])) is not None and p.ended and p,
                                len(src) / WIDE * 2 + 10, "playback end")
        assert done.state == "completed"
        sliced = fastpath.counters()["fast"] - before  # packets the C path sent by slicing the G.722 bytes
        assert r.server.media.fastpath_enabled and sliced >= 0.9 * len(src) / 160, sliced
        await caller.finish()  # SIPp hangs up after its pause
    finally:
        caller.close()
        await r.server.stop()
    assert caller.capture is not None
    pkts = caller.capture.packets
    assert pkts and all(p.pt == 9 and len(p.payload) == 160 for p in pkts)
    seqs = [p.seq for p in pkts]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False)), "lost or reordered packets"
    assert all((b.ts - a.ts) & 0xFFFFFFFF == 160 for a, b in zip(pkts, pkts[1:], strict=False))
    wire = b"".join(p.payload for p in pkts)
    ref = ffmpeg_g722(src)
    body = ref[: len(ref) - 160]  # all but the last packet, which is padded with G.722 silence
    first = wire.find(body)
    assert first >= 0, "FFmpeg's encoding of the source is not on the wire"
    second = wire.find(body, first + len(body))  # the loop: the same bytes again, on a packet boundary
    assert second > first and (second - first) % 160 == 0, (first, second)
    print(f"G.722 playback: {len(body)} bytes bit-exact with FFmpeg's g722 encoding, twice (loop=2)")


async def test_baresip_g722_hears_the_wideband_prompt(tmp_path: Path, webhooks: Hooks) -> None:
    baresip = require("baresip")
    r = await start_server(tmp_path, webhook_url=webhooks.url, codecs=CODECS)
    src = speech16(tmp_path)
    soundfile.write(r.data_dir / "media" / "speech16.wav", src, WIDE, subtype="PCM_16")
    cfg, _ = baresip_config(tmp_path / "baresip", tmp_path / "rec", tmp_path / "silence.wav")
    conf = (cfg / "config").read_text().replace("module g711.so", "module g711.so\nmodule g722.so")
    (cfg / "config").write_text(conf.replace("ausrc_srate 8000", "ausrc_srate 16000")
                                .replace("auplay_srate 8000", "auplay_srate 16000"))
    soundfile.write(tmp_path / "silence.wav", np.zeros(WIDE * 120, np.int16), WIDE, subtype="PCM_16")  # its mic
    (cfg / "accounts").write_text("<sip:baresip@127.0.0.1>;regint=0;audio_codecs=G722/16000/1,PCMU\n")
    log = open(tmp_path / "baresip.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([baresip, "-f", str(cfg), "-t", "60", "-e", f"/dial sip:play@127.0.0.1:{r.sip_port}"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        call = await wait_until(
            lambda: next((c for c in r.server.registry.active() if c.state.value == "answered"), None),
            timeout=15, what="baresip's call to be answered")
        assert call.summary()["codec"] == "G722", call.summary()
        await asyncio.sleep(0.3)
        status, pb = await api(r, "POST", f"/v1/calls/{call.call_id}/playbacks", {"media": "speech16.wav"})
        assert status in (200, 201, 202), pb
        ended = await webhooks.wait_for(lambda e: e["type"] == "playback.ended" and e["call_id"] == call.call_id,
                                        timeout=len(src) / WIDE + 15)
        assert ended["data"]["status"] == "completed", ended
        await asyncio.sleep(0.5)
        await api(r, "DELETE", f"/v1/calls/{call.call_id}")
        await wait_until(lambda: not call.is_active, timeout=5, what="call to end")
        await asyncio.sleep(0.3)
    finally:
        stop_process(proc)
        log.close()
        await r.server.stop()
    recs = sorted((tmp_path / "rec").glob("dump-*-dec.wav"))
    assert recs, (tmp_path / "baresip.log").read_text(errors="replace")[-3000:]
    rec, rate = soundfile.read(recs[0], dtype="int16")
    assert rate == WIDE, f"baresip decoded at {rate} Hz"
    lag, corr = align(src, rec)
    seg = rec[lag: lag + len(src)]
    hi_src, hi_rec = band_energy(src, WIDE, 4000, 7000), band_energy(seg, WIDE, 4000, 7000)
    print(f"baresip G.722: correlation {corr:.4f}, 4-7 kHz energy share source {hi_src:.4f} recording {hi_rec:.4f}")
    assert corr >= 0.9, corr
    assert hi_src > 0.005 and hi_rec > 0.5 * hi_src, (hi_src, hi_rec)  # the upper band went through
