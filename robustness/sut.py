"""The server under test: ``python -m mediasrv serve`` as a subprocess, and what can be read of it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# which checkout's mediasrv to run (compare trees with one harness): ROBUSTNESS_SERVER_PATH or this repo
SERVER_PATH = Path(os.environ.get("ROBUSTNESS_SERVER_PATH") or REPO)

# Dialect credentials the HTTP suites sign with (the server gets them through MEDIASRV_* env).
TELNYX_KEY = "KEYrobustness"
PLIVO_ID, PLIVO_TOKEN = "MArobustness", "plivo-token"
ACS_KEY_B64 = "cm9idXN0bmVzcy1hY3Mta2V5LTMyLWJ5dGVzLWxvbmchIQ=="
BW_ACCOUNT, BW_USER, BW_PASS = "9900001", "bwuser", "bwpass"


def free_port(kind: int = socket.SOCK_DGRAM, both: bool = True) -> int:
    """A loopback port free for UDP (and TCP when *both*)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if not both:
                return port
            other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
            try:
                with socket.socket(socket.AF_INET, other) as t:
                    t.bind(("127.0.0.1", port))
                    return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def free_range(n: int) -> int:
    """Start of *n* consecutive loopback UDP ports that look free (best effort)."""
    for _ in range(50):
        base = 30000 + (os.getpid() * 7919 + int(time.time() * 1000)) % 25000
        ok = True
        for p in range(base, base + n, max(1, n // 16)):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free RTP range")


def _addr(hex_addr: str) -> str:
    """``0100007F:1F90`` (from /proc/net/tcp) → ``127.0.0.1:8080``; IPv6 left as hex."""
    host, port = hex_addr.split(":")
    if len(host) == 8:
        host = ".".join(str(int(host[i:i + 2], 16)) for i in (6, 4, 2, 0))
    return f"{host}:{int(port, 16)}"


@dataclass
class ServerUnderTest:
    """Starts, probes and stops one server; stderr/stdout go to ``log_path`` (the traceback oracle)."""

    extra_env: dict[str, str] = field(default_factory=dict)
    rtp_span: int = 400
    raise_sip_limits: bool = True
    proc: subprocess.Popen[bytes] | None = None
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="robustness-")))
    sip_port: int = 0
    http_port: int = 0
    rtp_lo: int = 0
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def rtp_hi(self) -> int:
        return self.rtp_lo + self.rtp_span

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(SERVER_PATH) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "MEDIASRV_SIP": f"127.0.0.1:{self.sip_port}",
            "MEDIASRV_HTTP": f"127.0.0.1:{self.http_port}",
            "MEDIASRV_RTP_PORTS": f"{self.rtp_lo}-{self.rtp_hi}",
            "MEDIASRV_DATA_DIR": str(self.data_dir),
            "MEDIASRV_LOG_LEVEL": "WARNING",
            "MEDIASRV_FETCH_ALLOW_CIDRS": "127.0.0.0/8",
            "MEDIASRV_TELNYX_API_KEY": TELNYX_KEY,
            "MEDIASRV_PLIVO_AUTH_ID": PLIVO_ID,
            "MEDIASRV_PLIVO_AUTH_TOKEN": PLIVO_TOKEN,
            "MEDIASRV_ACS_ACCESS_KEY": ACS_KEY_B64,
            "MEDIASRV_BANDWIDTH_ACCOUNT_ID": BW_ACCOUNT,
            "MEDIASRV_BANDWIDTH_USERNAME": BW_USER,
            "MEDIASRV_BANDWIDTH_PASSWORD": BW_PASS,
            "MEDIASRV_EVENTS_JOURNAL": "false",
            **self.sip_limits(),
            **self.extra_env,
        }

    def sip_limits(self) -> dict[str, str]:
        """Every input must reach the parsers: the per-source limit (sip/admission.py) would drop most
        of a fuzzer's dialog-less requests, and the oracle's own probes. The REGISTER-flood
        reproducer and bench/hostile_flood.py run with the defaults (``raise_sip_limits=False``)."""
        if not self.raise_sip_limits:
            return {}
        return {"MEDIASRV_SIP_RATE_PER_SOURCE": "1000000", "MEDIASRV_SIP_BURST_PER_SOURCE": "1000000"}

    def start(self, timeout: float = 20.0) -> None:
        (self.data_dir / "media").mkdir(parents=True, exist_ok=True)
        if not self.sip_port:
            self.sip_port = free_port()
            self.http_port = free_port(socket.SOCK_STREAM, both=False)
            self.rtp_lo = free_range(self.rtp_span + 1)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "mediasrv", "serve"], env=self.env(),
                                     stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir)
        log.close()
        self.starts += 1
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.http + "/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not answer /healthz: " + self.log_tail())

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        """Kill (it may be hung) and start again on the same ports."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- what can be observed ---------------------------------------------------
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 2000) -> str:
        return self.log_text()[-n:]

    def tracebacks(self) -> int:
        return self.log_text().count("Traceback")

    def fds(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return -1

    def fd_targets(self) -> dict[str, str]:
        """fd → what it is (``socket tcp 127.0.0.1:5000->127.0.0.1:8080``, a path, ``pipe:[…]``), to name growth."""
        out: dict[str, str] = {}
        sockets: dict[str, str] = {}
        for table in ("tcp", "tcp6", "udp", "udp6"):
            try:
                lines = Path(f"/proc/{self.pid}/net/{table}").read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                parts = line.split()
                sockets[parts[9]] = f"{table} {_addr(parts[1])}->{_addr(parts[2])}"
        try:
            for fd in os.listdir(f"/proc/{self.pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    target = "socket " + sockets.get(target[8:-1], target)
                out[fd] = target
        except OSError:
            pass
        return out

    def rss_kb(self) -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return -1

    def rtp_ports(self) -> int:
        """UDP sockets this process holds inside the RTP range (read from /proc/PID/net/udp{,6})."""
        try:
            inodes = set()
            for fd in os.listdir(f"/proc/{self.pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
            count = 0
            for table in ("udp", "udp6"):
                lines = Path(f"/proc/{self.pid}/net/{table}").read_text().splitlines()[1:]
                for line in lines:
                    parts = line.split()
                    port = int(parts[1].rsplit(":", 1)[1], 16)
                    if parts[9] in inodes and self.rtp_lo <= port <= self.rtp_hi:
                        count += 1
            return count
        except OSError:
            return -1

    def get_json(self, path: str, timeout: float = 3.0) -> dict | None:
        try:
            with urllib.request.urlopen(self.http + path, timeout=timeout) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError):
            return None

    def active_calls(self) -> int:
        body = self.get_json("/healthz")
        return int(body["active_calls"]) if body else -1

    def call_ids(self) -> list[str]:
        body = self.get_json("/v1/calls") or {}
        return [c["call_id"] for c in body.get("calls", []) if c.get("state") not in ("ended",)]

    def metrics(self) -> str:
        try:
            with urllib.request.urlopen(self.http + "/metrics", timeout=3) as resp:
                return resp.read().decode()
        except OSError:
            return ""

    def tasks(self) -> int:
        """``mediasrv_asyncio_tasks`` from /metrics (-1 when the server does not expose it)."""
        for line in self.metrics().splitlines():
            if line.startswith("mediasrv_asyncio_tasks "):
                return int(float(line.split()[1]))
        return -1

    def hangup_all(self, settle_s: float = 5.0) -> None:
        """End every call through the API (as an operator would) and wait for them to go."""
        for cid in self.call_ids():
            req = urllib.request.Request(f"{self.http}/v1/calls/{cid}", method="DELETE")
            try:
                urllib.request.urlopen(req, timeout=3).close()
            except OSError:
                pass
        end = time.monotonic() + settle_s
        while time.monotonic() < end and self.active_calls() > 0:
            time.sleep(0.1)
