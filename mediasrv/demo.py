"""``mediasrv demo``: a whole call on loopback with nothing but ``pip install .``.

Starts a server on free loopback ports, dials it with our own UAC, asks the HTTP API to
play a prompt synthesized here, records what the caller received to a WAV file and
prints how the packets were paced.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time

import aiohttp
import numpy as np
import soundfile

from mediacodecs.g711 import decode, encode

from .calls.controller import SipSettings, SipUserAgent
from .calls.registry import CallRegistry
from .config import Settings
from .events.bus import Event
from .rtp.probe import CaptureMedia, analyse
from .server import Server

RATE = 8000


def synth_prompt(seconds: float = 3.0) -> np.ndarray:
    """A short chime (a rising arpeggio with a soft envelope), int16 at 8 kHz."""
    notes = [523.25, 659.25, 783.99, 1046.5]
    per = int(RATE * seconds / len(notes))
    t = np.arange(per) / RATE
    env = np.minimum(1.0, t / 0.01) * np.exp(-3.0 * t)
    parts = [0.5 * np.sin(2 * np.pi * f * t) * env for f in notes]
    return (np.concatenate(parts) * 32767).astype(np.int16)


def free_port_pair() -> int:
    """An even UDP port whose odd neighbour is free too, for a small RTP range."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1] & ~1
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, socket.socket(
                socket.AF_INET, socket.SOCK_DGRAM
            ) as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            if port + 40 < 65535:
                return port
        except OSError:
            continue
    raise RuntimeError("no free UDP port pair")


async def run_demo(out_path: str, codec: str = "PCMU") -> int:
    data_dir = tempfile.mkdtemp(prefix="mediasrv-demo-")
    os.makedirs(os.path.join(data_dir, "media"), exist_ok=True)
    prompt = synth_prompt()
    soundfile.write(os.path.join(data_dir, "media", "chime.wav"), prompt, RATE, subtype="PCM_16")

    rtp_lo = free_port_pair()
    settings = Settings(sip="127.0.0.1:0", http="127.0.0.1:0", rtp_ports=f"{rtp_lo}-{rtp_lo + 40}",
                        data_dir=data_dir, codecs=[codec],
                        fetch_allow_cidrs=["127.0.0.0/8", "::1/128"])  # everything here is on loopback
    server = Server(settings)
    await server.start()
    sip_host, sip_port = server.sip.address
    http_host, http_port = server.http_address or settings.http_addr
    http = f"http://{http_host}:{http_port}"
    print(f"server: SIP udp/tcp {sip_host}:{sip_port}, HTTP {http}")

    capture_media = CaptureMedia()
    caller = SipUserAgent(SipSettings(host="127.0.0.1", port=0, codecs=(codec,), user_agent="mediasrv-demo-uac"),
                          CallRegistry(), capture_media)
    await caller.start()
    ended = asyncio.Event()
    events: list[str] = []

    def on_event(event: Event) -> None:
        events.append(event.type)
        if event.type == "playback.ended":
            ended.set()

    server.events.add_listener(on_event)
    try:
        call = await caller.call(f"sip:demo@{sip_host}:{sip_port}", remote=(sip_host, sip_port),
                                 from_uri="sip:caller@127.0.0.1")
        await asyncio.sleep(0.1)
        server_call = server.registry.by_sip_call_id(call.sip_call_id)
        assert server_call is not None
        async with aiohttp.ClientSession() as http_client:
            started = time.monotonic()
            async with http_client.post(f"{http}/v1/calls/{server_call.call_id}/playbacks",
                                        json={"media": "chime.wav"}) as resp:
                playback = await resp.json()
                print(f"POST /v1/calls/{{id}}/playbacks -> {resp.status} {playback['id']} {playback['state']}")
            await asyncio.wait_for(ended.wait(), timeout=30)
            await asyncio.sleep(0.2)
            async with http_client.get(f"{http}/v1/calls/{server_call.call_id}") as resp:
                summary = await resp.json()
        await caller.hangup(call.call_id)
        await asyncio.sleep(0.2)
        elapsed = time.monotonic() - started
    finally:
        await caller.stop()
        capture_media.close_all()
        await server.stop()

    capture = capture_media.captures[call.call_id]
    received = decode(codec, capture.payload())
    soundfile.write(out_path, received, RATE, subtype="PCM_16")
    report = analyse(capture.packets)
    print(f"call {server_call.call_id}: codec {summary['codec']}, sent {summary.get('packets_sent')} packets")
    print(f"events: {' -> '.join(events)}")
    print(f"received {len(received) / RATE:.2f} s of audio in {elapsed:.2f} s -> {out_path}")
    print(f"pacing: {report.line()}")
    exact = encode(codec, prompt) in capture.payload()
    print(f"the prompt arrived bit-exact ({codec} of the 8 kHz source): {'yes' if exact else 'NO'}")
    ok = exact and report.lost == 0 and report.ssrcs == 1 and "playback.ended" in events
    print("demo OK" if ok else "demo FAILED")
    return 0 if ok else 1
