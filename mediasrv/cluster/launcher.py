"""``mediasrv cluster --nodes N``: Kamailio in front of N mediasrv nodes on one host, stopped together.

Each node is its own ``mediasrv serve`` process (one event loop, one core): its own SIP port, RTP
range, HTTP port and data dir under ``<data-dir>/nodes/<node_id>``, optionally pinned to one CPU.
The named-media store (``<data-dir>/media``) and the node-id lock directory (``<data-dir>/cluster``)
are shared; every node learns the others' HTTP URLs (``cluster_peers``) so a command sent to any
node reaches the call's owner. Kamailio (config: ``kamailio.cfg`` next to this file, also
``deploy/kamailio/``) listens on the cluster's SIP address and dispatches over the nodes.
Stopping (Ctrl-C, SIGTERM) sends SIGTERM to every child by PID, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import parse_hostport, parse_port_range
from .identity import default_node_id

KAMAILIO_CFG = Path(__file__).with_name("kamailio.cfg")


class ClusterError(RuntimeError):
    """The cluster cannot start; the message says why."""


@dataclass
class NodeSpec:
    node_id: str
    sip_port: int
    http_port: int
    rtp_ports: str
    data_dir: Path
    cpu: int | None = None

    def http_url(self, host: str) -> str:
        return f"http://{host}:{self.http_port}"


@dataclass
class ClusterPlan:
    """Where everything goes; pure data, so it is testable without starting anything."""

    nodes: int
    sip: str = "127.0.0.1:5060"  # Kamailio's listening address, the one callers use
    http_base: int = 8081  # node i serves HTTP on http_base + i
    node_sip_base: int = 5071  # node i's SIP port (Kamailio sends to it)
    rtp_ports: str = "20000-29999"  # split evenly between nodes
    data_dir: Path = Path("./data")
    pin: bool = False
    ping_interval_s: int = 2
    node_timeout_ms: int = 2000
    specs: list[NodeSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ClusterError("--nodes must be >= 1")
        host, _ = self.sip_addr
        lo, hi = parse_port_range(self.rtp_ports)
        span = ((hi - lo + 1) // self.nodes) & ~1  # even: RTP even, RTCP odd
        if span < 4:
            raise ClusterError(f"RTP range {self.rtp_ports} is too small for {self.nodes} nodes")
        cpus = sorted(os.sched_getaffinity(0))
        for i in range(self.nodes):
            sip_port = self.node_sip_base + i
            node_id = default_node_id(sip_port)
            start = lo + (lo & 1) + i * span
            self.specs.append(NodeSpec(
                node_id=node_id, sip_port=sip_port, http_port=self.http_base + i,
                rtp_ports=f"{start}-{start + span - 1}", data_dir=self.data_dir / "nodes" / node_id,
                cpu=cpus[i % len(cpus)] if self.pin else None,
            ))

    @property
    def sip_addr(self) -> tuple[str, int]:
        return parse_hostport(self.sip, 5060)

    @property
    def host(self) -> str:
        return self.sip_addr[0]

    def peers(self) -> dict[str, str]:
        return {s.node_id: s.http_url(self.host) for s in self.specs}

    def dispatcher_list(self) -> str:
        """Set 1, one destination per node (flags 0, priority 0)."""
        lines = ["# written by `mediasrv cluster`: set destination flags priority"]
        h = f"[{self.host}]" if ":" in self.host else self.host
        lines += [f"1 sip:{h}:{s.sip_port} 0 0" for s in self.specs]
        return "\n".join(lines) + "\n"

    def node_command(self, spec: NodeSpec, extra: list[str]) -> list[str]:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return [sys.executable, "-m", "mediasrv", "serve", "--sip", f"{h}:{spec.sip_port}",
                "--http", f"{h}:{spec.http_port}", "--rtp-ports", spec.rtp_ports, "--data-dir", str(spec.data_dir),
                "--node-id", spec.node_id, "--cluster-dir", str(self.data_dir / "cluster"),
                "--media-dir", str(self.data_dir / "media"), *extra]

    def node_env(self, spec: NodeSpec) -> dict[str, str]:
        peers = ",".join(f"{n}={u}" for n, u in self.peers().items() if n != spec.node_id)
        return {**os.environ, "MEDIASRV_CLUSTER_PEERS": peers}

    def kamailio_command(self, kamailio: str, run_dir: Path, cfg: Path = KAMAILIO_CFG) -> list[str]:
        host, port = self.sip_addr
        h = f"[{host}]" if ":" in host else host
        return [kamailio, "-f", str(cfg), "-DD", "-E", "-l", f"udp:{h}:{port}", "-l", f"tcp:{h}:{port}",
                "-Y", str(run_dir), "-P", str(run_dir / "kamailio.pid"),
                "-A", f'DS_LIST="{run_dir / "dispatcher.list"}"', "-A", f"DS_PING_INTERVAL={self.ping_interval_s}",
                "-A", f"NODE_TIMEOUT_MS={self.node_timeout_ms}"]


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Cluster:
    """The running processes of one plan; :meth:`stop` ends exactly those, by PID."""

    def __init__(self, plan: ClusterPlan, extra_args: list[str] | None = None, kamailio: str | None = None,
                 log_dir: Path | None = None) -> None:
        self.plan = plan
        self.extra = list(extra_args or [])
        self.kamailio_bin = kamailio or shutil.which("kamailio") or "/usr/sbin/kamailio"
        self.run_dir = plan.data_dir / "cluster"
        self.log_dir = log_dir
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        self.kamailio: subprocess.Popen[bytes] | None = None

    def _spawn(self, cmd: list[str], name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = open(self.log_dir / f"{name}.log", "ab") if self.log_dir else None  # noqa: SIM115 - the child owns it
        try:
            # own session: a terminal's Ctrl-C reaches only us, and we stop the children in order
            return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                    start_new_session=True)
        finally:
            if out is not None:
                out.close()

    def start(self, ready_timeout_s: float = 30.0) -> None:
        if not Path(self.kamailio_bin).exists():
            raise ClusterError(f"kamailio not found ({self.kamailio_bin}): apt-get install kamailio")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.plan.data_dir / "media").mkdir(parents=True, exist_ok=True)
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "dispatcher.list").write_text(self.plan.dispatcher_list())
        try:
            for spec in self.plan.specs:
                spec.data_dir.mkdir(parents=True, exist_ok=True)
                self.start_node(spec)
            deadline = time.monotonic() + ready_timeout_s
            for spec in self.plan.specs:
                while not _port_open(self.plan.host, spec.http_port):
                    proc = self.nodes[spec.node_id]
                    if proc.poll() is not None:
                        raise ClusterError(f"node {spec.node_id} exited with {proc.returncode} at start")
                    if time.monotonic() > deadline:
                        raise ClusterError(f"node {spec.node_id} not up after {ready_timeout_s} s")
                    time.sleep(0.05)
            self.kamailio = self._spawn(self.plan.kamailio_command(self.kamailio_bin, self.run_dir), "kamailio")
            time.sleep(0.3)
            if self.kamailio.poll() is not None:
                raise ClusterError(f"kamailio exited with {self.kamailio.returncode} at start (see its log)")
        except BaseException:
            self.stop()
            raise

    def start_node(self, spec: NodeSpec) -> subprocess.Popen[bytes]:
        proc = self._spawn(self.plan.node_command(spec, self.extra), spec.node_id, self.plan.node_env(spec))
        if spec.cpu is not None:
            os.sched_setaffinity(proc.pid, {spec.cpu})  # its threads and decoder processes inherit it
        self.nodes[spec.node_id] = proc
        return proc

    def stop_node(self, node_id: str, sig: int = signal.SIGTERM, grace_s: float = 10.0) -> int | None:
        proc = self.nodes.get(node_id)
        return None if proc is None else _end(proc, sig, grace_s)

    def stop(self, grace_s: float = 10.0) -> None:
        """Kamailio first (no new calls), then the nodes, each by its PID."""
        if self.kamailio is not None:
            _end(self.kamailio, signal.SIGTERM, grace_s)
        for proc in self.nodes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.nodes.values():
            _end(proc, signal.SIGTERM, grace_s)

    def summary(self) -> str:
        host, port = self.plan.sip_addr
        lines = [f"mediasrv cluster: SIP {host}:{port} (Kamailio pid {self.kamailio.pid if self.kamailio else '-'})"]
        for spec in self.plan.specs:
            proc = self.nodes.get(spec.node_id)
            pin = f" cpu {spec.cpu}" if spec.cpu is not None else ""
            lines.append(f"  node {spec.node_id}: SIP {host}:{spec.sip_port} HTTP {spec.http_url(host)} "
                         f"RTP {spec.rtp_ports} pid {proc.pid if proc else '-'}{pin}")
        return "\n".join(lines)


def _end(proc: subprocess.Popen[bytes], sig: int, grace_s: float) -> int | None:
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            return proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)
    return proc.returncode


def run(plan: ClusterPlan, extra_args: list[str], log_dir: Path | None = None) -> int:
    """Start, print where everything is, wait for Ctrl-C/SIGTERM (or Kamailio ending), stop all."""
    cluster = Cluster(plan, extra_args, log_dir=log_dir)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        cluster.start()
        print(cluster.summary(), flush=True)
        reported: set[str] = set()
        while not stopping:
            if cluster.kamailio is not None and cluster.kamailio.poll() is not None:
                print(f"mediasrv cluster: kamailio exited ({cluster.kamailio.returncode}); stopping", file=sys.stderr)
                return 1
            for node_id, proc in cluster.nodes.items():
                if proc.poll() is not None and node_id not in reported:
                    reported.add(node_id)  # Kamailio's probes take it out; the others carry on
                    print(f"mediasrv cluster: node {node_id} exited ({proc.returncode})", file=sys.stderr, flush=True)
            time.sleep(0.2)
        return 0
    except ClusterError as exc:
        print(f"mediasrv cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
        for s, h in old.items():
            signal.signal(s, h)
        print("mediasrv cluster: stopped", flush=True)
