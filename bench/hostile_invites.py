"""Hostile INVITEs against ``mediasrv serve`` as a real process: fds, RTP ports and calls before/after.

For each class of hostile SDP (tests/integration/test_hostile_invites.py has the list, and the
same check in-process with asyncio task counts), 20 INVITEs from a raw UDP socket (each final
response ACKed; a 2xx ACKed and hung up with BYE), after a valid control class. Counts the
server process's open fds (/proc/<pid>/fd), RTP ports held and active calls (/metrics), and the
tracebacks in its log; datagrams that reached a denied address (127.0.0.2, which the server is
told to deny) are "stray".

    python bench/hostile_invites.py            # about 10 s
    python bench/hostile_invites.py --rounds 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mediasrv.demo import free_port_pair  # noqa: E402
from tests.support.ports import free_tcp_udp_port  # noqa: E402
from tests.support.rawsip import CLASSES, RawSip  # noqa: E402


def metric(http: str, name: str) -> int:
    """A gauge from /metrics (-1 when the server does not export it)."""
    text = urllib.request.urlopen(f"{http}/metrics", timeout=5).read().decode()  # noqa: S310 - loopback
    m = re.search(rf"^mediasrv_{name} ([0-9.e+]+)$", text, re.M)
    return int(float(m.group(1))) if m else -1


async def run(rounds: int) -> int:
    sip_port, lo = free_tcp_udp_port(), free_port_pair()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        http_port = s.getsockname()[1]
    http = f"http://127.0.0.1:{http_port}"
    data = Path(tempfile.mkdtemp(prefix="mediasrv-hostile-"))
    log_path = data / "server.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MEDIASRV_MEDIA_DENY_CIDRS": "127.0.0.2/32"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mediasrv", "serve", "--sip", f"127.0.0.1:{sip_port}", "--http", f"127.0.0.1:{http_port}",
             "--rtp-ports", f"{lo}-{lo + 200}", "--data-dir", str(data), "--log-level", "INFO"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    sip = RawSip(sip_port)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    stray = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stray.bind(("127.0.0.2", sink.getsockname()[1]))
    stray.setblocking(False)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                metric(http, "active_calls")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    print(log_path.read_text()[-2000:])
                    return 1
                await asyncio.sleep(0.1)

        def usage() -> tuple[int, int, int]:
            return (len(os.listdir(f"/proc/{proc.pid}/fd")), metric(http, "rtp_ports_in_use"),
                    metric(http, "active_calls"))

        def tracebacks() -> int:
            return log_path.read_text(errors="replace").count("Traceback")

        await sip.call(CLASSES["control"][0].replace("{rtp}", str(sink.getsockname()[1])))  # warm-up
        print(f"{rounds} INVITEs per class; server pid {proc.pid}")
        print(f"{'class':14} {'status':>9}  {'fds':>9}  {'ports':>6}  {'calls':>6}  tracebacks")
        grew = 0
        for name, (template, _) in CLASSES.items():
            body = template.replace("{rtp}", str(sink.getsockname()[1]))
            before, tb = usage(), tracebacks()
            statuses: dict[str, int] = {}
            for _ in range(rounds):
                try:
                    status = str((await asyncio.wait_for(sip.call(body), 6.0))[0])
                except (TimeoutError, AssertionError):
                    status = "none"
                statuses[status] = statuses.get(status, 0) + 1
            await asyncio.sleep(0.2)
            after = usage()
            grew += after[0] > before[0] or after[1] > before[1] or after[2] > 0
            shown = "/".join(f"{k}x{v}" for k, v in statuses.items())
            print(f"{name:14} {shown:>9}  {before[0]:>4}->{after[0]:<4} {before[1]:>2}->{after[1]:<3} "
                  f"{before[2]:>2}->{after[2]:<3}  {tracebacks() - tb}")
        strays = 0
        while True:
            try:
                stray.recvfrom(2048)
                strays += 1
            except BlockingIOError:
                break
        print(f"stray datagrams to the denied address: {strays}; classes with growth: {grew}")
        return 1 if grew or strays else 0
    finally:
        sip.close()
        sink.close()
        stray.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    return asyncio.run(asyncio.wait_for(run(args.rounds), 600))


if __name__ == "__main__":
    sys.exit(main())
