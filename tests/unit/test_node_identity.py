"""Node identity (issue 11): ids name their node; a node id held by a live process is refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mediasrv.calls.registry import CallRegistry, owner_of
from mediasrv.cluster.identity import NodeIdError, claim_node_id, default_node_id, valid_node_id
from mediasrv.config import ConfigError, load_settings


def test_default_node_id_is_host_and_port_and_safe() -> None:
    assert default_node_id(5062, "Media_Box.example.org") == "media-box-5062"
    assert valid_node_id(default_node_id(5060))
    assert load_settings({"sip": "127.0.0.1:5071"}, environ={}).node.endswith("-5071")
    assert load_settings({"node_id": "edge-1"}, environ={}).node == "edge-1"


@pytest.mark.parametrize("bad", ["", "a:b", "a/b", "x" * 49, "-lead", "sp ace"])
def test_bad_node_ids_refused(bad: str) -> None:
    assert not valid_node_id(bad)
    if bad:
        with pytest.raises(ConfigError, match="node.id"):
            load_settings({"node_id": bad}, environ={})


def test_cluster_peers_from_env() -> None:
    s = load_settings(environ={"MEDIASRV_CLUSTER_PEERS": "a=http://127.0.0.1:1,b=http://127.0.0.1:2"})
    assert s.cluster_peers == {"a": "http://127.0.0.1:1", "b": "http://127.0.0.1:2"}
    with pytest.raises(ConfigError):
        load_settings(environ={"MEDIASRV_CLUSTER_PEERS": "a=ftp://x"})


def test_owner_of_ids() -> None:
    assert owner_of("v3:node-a:abc") == "node-a"
    assert owner_of("p3:n.b:0f") == "n.b"
    assert owner_of("r3:x:1") == "x"
    for bad in ("", "v3:", "v3:a", "v3::x", "zz:a:b", "0123abcd"):
        assert owner_of(bad) is None
    assert CallRegistry(node_id="here").node_id == "here"


def test_duplicate_node_id_refused_while_holder_lives(tmp_path) -> None:
    lock = claim_node_id(tmp_path, "n1", {"http": "h1"})
    with pytest.raises(NodeIdError, match="already used by a live node"):
        claim_node_id(tmp_path, "n1")
    other = claim_node_id(tmp_path, "n2")  # another id is fine
    lock.release()
    again = claim_node_id(tmp_path, "n1")  # released: free again
    again.release()
    other.release()


def test_lock_of_a_killed_process_is_free(tmp_path) -> None:
    code = ("import sys,time; from mediasrv.cluster.identity import claim_node_id;"
            f"claim_node_id({str(tmp_path)!r}, 'k'); print('held', flush=True); time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(NodeIdError):
            claim_node_id(tmp_path, "k")
        proc.kill()  # SIGKILL: the kernel drops the flock
        proc.wait(5)
        claim_node_id(tmp_path, "k").release()
    finally:
        proc.kill()
        proc.wait(5)
