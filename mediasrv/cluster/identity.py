"""Node identity: the token every call, room and playback id carries, and refusing a duplicate at start.

Why a lock file: two live nodes with one node id would each answer for the other's ids. The simplest
honest check is an exclusive ``flock`` on ``<cluster_dir>/nodes/<node_id>.lock``, held for the node's
whole life: the kernel drops it when the process dies (even on SIGKILL), so a crashed node never
blocks its own restart, and a second live node with the same id fails at start. On one host any
directory works; across hosts ``cluster_dir`` must be on a shared filesystem with working POSIX/BSD
locks (NFSv4, CephFS, GlusterFS). Without ``cluster_dir`` only the default id's uniqueness holds
(host name + SIP port: two nodes of one host cannot bind one SIP port).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

NODE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,47}")


class NodeIdError(RuntimeError):
    """The node id is unusable or already held by another live node."""


def valid_node_id(node_id: str) -> bool:
    """A short token safe in ids (no ':'), URLs, file names and SIP headers."""
    return bool(NODE_ID_RE.fullmatch(node_id))


def default_node_id(sip_port: int, hostname: str | None = None) -> str:
    """``<short host name>-<SIP port>``, reduced to the safe alphabet (unique per host: one SIP port each)."""
    host = (hostname or socket.gethostname()).split(".")[0].lower()
    host = re.sub(r"[^a-z0-9-]+", "-", host).strip("-")[:32] or "node"
    return f"{host}-{sip_port}"


@dataclass
class NodeLock:
    """The held lock of one live node id (released by :meth:`release` or by the process ending)."""

    node_id: str
    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            try:
                self.path.unlink(missing_ok=True)
            finally:
                os.close(self.fd)
                self.fd = -1


def claim_node_id(cluster_dir: str | Path, node_id: str, info: dict[str, object] | None = None) -> NodeLock:
    """Take ``<cluster_dir>/nodes/<node_id>.lock`` or raise :class:`NodeIdError` naming the holder."""
    if not valid_node_id(node_id):
        raise NodeIdError(f"node_id {node_id!r} is not a short token (letters, digits, '_', '.', '-'; up to 48)")
    nodes = Path(cluster_dir) / "nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    path = nodes / f"{node_id}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
        finally:
            os.close(fd)
        raise NodeIdError(f"node_id {node_id!r} is already used by a live node ({holder}); "
                          "give every node its own node_id") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), **(info or {})}).encode(), 0)
    return NodeLock(node_id, path, fd)
