"""baresip as a headless, non-interactive SIP peer (config directory, stopping it)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import soundfile

from .ports import free_tcp_udp_port

PHRASE = "The quick brown fox jumps over the lazy dog. Seven, eight, nine, ten."


RATE = 8000


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


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
