"""Run the harness inside a private network namespace so nothing it provokes leaves the machine.

Inside: loopback up, plus a veth pair whose ``rx`` end is the default route for IPv4 and IPv6.
Anything the server sends to a non-loopback address (RTP to 10.x named in an SDP, a DNS query for
a host name in a Contact, a TCP SYN to a Via host) lands on the ``rx`` end, where
:class:`ExternalTap` counts it by destination. That is the "stray send" oracle for addresses
outside loopback; loopback addresses named by inputs have listeners (oracle.StraySinks).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
from collections import Counter

ENV_FLAG = "ROBUSTNESS_IN_NETNS"
TX, RX = "rbtx0", "rbrx0"


def reexec_in_netns(argv: list[str]) -> int:
    """Run ``python -m robustness argv`` again under ``unshare -n``; returns its exit code."""
    env = {**os.environ, ENV_FLAG: "1"}
    # as root a plain network namespace; otherwise one inside a user namespace (root mapped to us)
    cmd = ["unshare", "-n" if os.geteuid() == 0 else "-rn", sys.executable, "-m", "robustness", *argv]
    return subprocess.call(cmd, env=env)


def in_netns() -> bool:
    return os.environ.get(ENV_FLAG) == "1"


def setup_namespace() -> None:
    """Loopback up; veth pair with the tx end as default route (no ARP, so every packet is sent)."""
    cmds = [
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "add", TX, "type", "veth", "peer", "name", RX],
        ["ip", "link", "set", TX, "arp", "off"],
        ["ip", "link", "set", TX, "up"],
        ["ip", "link", "set", RX, "up"],
        ["ip", "addr", "add", "198.18.255.1/32", "dev", TX],
        ["ip", "route", "add", "default", "dev", TX],
        ["ip", "-6", "route", "add", "default", "dev", TX],
    ]
    for cmd in cmds:
        subprocess.run(cmd, check=False, capture_output=True)


class DnsSink:
    """Answers NXDOMAIN at once for the namespace's resolvers (their addresses put on lo), counting
    each query in *tap* as ``dns <name>``: a lookup of a name an input carried is a stray send too,
    and an unanswered one would hold a socket and a task in the server for the resolver's timeout."""

    def __init__(self, tap: ExternalTap) -> None:
        self.tap = tap
        self._socks: list[socket.socket] = []
        self._stop = False

    def start(self) -> None:
        servers = []
        try:
            for line in open("/etc/resolv.conf"):
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and "." in parts[1]:
                    servers.append(parts[1])
        except OSError:
            return
        for ns in servers:
            if not ns.startswith("127."):
                subprocess.run(["ip", "addr", "add", f"{ns}/32", "dev", "lo"], check=False, capture_output=True)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((ns, 53))
            except OSError:
                s.close()
                continue
            s.settimeout(0.2)
            self._socks.append(s)
            threading.Thread(target=self._run, args=(s,), daemon=True, name=f"dns-sink-{ns}").start()

    def _run(self, s: socket.socket) -> None:
        while not self._stop:
            try:
                query, addr = s.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(query) < 12:
                continue
            self.tap.seen[f"dns {_qname(query)}"] += 1
            flags = 0x8183 | (query[2] & 0x01) << 8  # response, recursion available, NXDOMAIN; RD echoed
            reply = query[:2] + struct.pack("!H", flags) + query[4:6] + b"\x00\x00" * 3 + query[12:]
            try:
                s.sendto(reply, addr)
            except OSError:
                pass

    def stop(self) -> None:
        self._stop = True
        for s in self._socks:
            s.close()


def _qname(query: bytes) -> str:
    labels, i = [], 12
    while i < len(query) and query[i] and len(labels) < 64:
        n = query[i]
        labels.append(query[i + 1:i + 1 + n].decode("latin-1"))
        i += 1 + n
    return ".".join(labels)[:80] or "."


class ExternalTap:
    """Counts IPv4/IPv6 packets leaving through the default route, keyed by ``proto dst:port``."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self._sock: socket.socket | None = None
        self._stop = False
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        try:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            s.bind((RX, 0))
        except OSError:
            return False
        s.settimeout(0.2)
        self._sock = s
        self._thread = threading.Thread(target=self._run, daemon=True, name="external-tap")
        self._thread.start()
        return True

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop:
            try:
                frame = self._sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            key = describe(frame)
            if key:
                self.seen[key] += 1

    def total(self) -> int:
        return sum(self.seen.values())

    def stop(self) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join(1)
        if self._sock is not None:
            self._sock.close()


def describe(frame: bytes) -> str | None:
    """``udp 10.1.2.3:5060`` for an Ethernet frame carrying IPv4/IPv6 UDP/TCP; None for others."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack("!H", frame[12:14])[0]
    ip = frame[14:]
    if ethertype == 0x0800 and len(ip) >= 20:
        ihl = (ip[0] & 0x0F) * 4
        proto, dst = ip[9], socket.inet_ntop(socket.AF_INET, ip[16:20])
        l4 = ip[ihl:]
    elif ethertype == 0x86DD and len(ip) >= 40:
        proto, dst = ip[6], "[" + socket.inet_ntop(socket.AF_INET6, ip[24:40]) + "]"
        l4 = ip[40:]
        if proto == 58:  # ICMPv6 (neighbour/router solicitations): the kernel's, not the server's
            return None
    else:
        return None
    name = {17: "udp", 6: "tcp"}.get(proto)
    if name is None or len(l4) < 4:
        return None
    return f"{name} {dst}:{struct.unpack('!H', l4[2:4])[0]}"
