"""Free loopback ports and port runs for servers, SIPp and captures (probed by binding, then released)."""

from __future__ import annotations

import random
import socket


def free_tcp_udp_port() -> int:
    """A port free for both UDP and TCP on loopback (SIP listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind(("127.0.0.1", port))
                    return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def free_run(n: int, lo: int = 33000, hi: int = 60000) -> int:
    """A base port in [lo, hi) with base..base+n-1 free for UDP and TCP on loopback."""
    for _ in range(200):
        base = random.randrange(lo, hi)
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + n):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(socket.AF_INET, kind)
                    socks.append(s)
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port run")


def free_media_block() -> int:
    """A port M with M, M+2 free for SIPp's own media sockets and M+4 for our capture."""
    for _ in range(200):
        m = random.randrange(30000, 60000, 2)
        socks = []
        try:
            for off in (0, 1, 2, 3, 4, 5):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", m + off))
            return m
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free media port block")


def free_block(size: int = 200, attempts: int = 50) -> int:
    """The start of a port block whose first ports are free now (a bench may hold thousands)."""
    for _ in range(attempts):
        lo = random.randrange(30000, 60000 - size, 2)
        free = 0
        for port in range(lo, lo + 40):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                    free += 1
                except OSError:
                    pass
        if free == 40:
            return lo
    raise RuntimeError("no free block of UDP ports")
