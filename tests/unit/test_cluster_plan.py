"""``mediasrv cluster``'s plan (ports, RTP split, dispatcher list, commands) and the shipped Kamailio config."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mediasrv.cluster.launcher import KAMAILIO_CFG, ClusterError, ClusterPlan

REPO = Path(__file__).resolve().parents[2]


def test_plan_gives_each_node_its_own_ports_and_dirs(tmp_path) -> None:
    plan = ClusterPlan(nodes=3, sip="127.0.0.1:5060", rtp_ports="20000-29999", data_dir=tmp_path, pin=True)
    sips = [s.sip_port for s in plan.specs]
    https = [s.http_port for s in plan.specs]
    assert sips == [5071, 5072, 5073] and https == [8081, 8082, 8083]
    ranges = [tuple(map(int, s.rtp_ports.split("-"))) for s in plan.specs]
    for (lo, hi), (lo2, _) in zip(ranges, ranges[1:]):
        assert lo % 2 == 0 and hi < lo2  # even starts, no overlap
    assert ranges[-1][1] <= 29999
    assert len({s.data_dir for s in plan.specs}) == 3 and all(s.cpu is not None for s in plan.specs)
    assert plan.dispatcher_list().splitlines()[1:] == [f"1 sip:127.0.0.1:{p} 0 0" for p in sips]
    first = plan.specs[0]
    env = plan.node_env(first)
    assert first.node_id not in env["MEDIASRV_CLUSTER_PEERS"] and plan.specs[1].node_id in env["MEDIASRV_CLUSTER_PEERS"]
    cmd = plan.node_command(first, ["--max-calls", "5"])
    assert cmd[-2:] == ["--max-calls", "5"] and "--node-id" in cmd and str(tmp_path / "media") in cmd


def test_bad_plans_refused() -> None:
    with pytest.raises(ClusterError):
        ClusterPlan(nodes=0)
    with pytest.raises(ClusterError):
        ClusterPlan(nodes=4, rtp_ports="20000-20005")


def test_shipped_kamailio_config_parses(tmp_path) -> None:
    """``kamailio -c`` loads every module the config names and checks the routing script."""
    assert (REPO / "deploy" / "kamailio" / "kamailio.cfg").resolve() == KAMAILIO_CFG.resolve()
    plan = ClusterPlan(nodes=2, sip="127.0.0.1:25060", data_dir=tmp_path)
    (tmp_path / "dispatcher.list").write_text(plan.dispatcher_list())
    cmd = plan.kamailio_command("/usr/sbin/kamailio", tmp_path)
    out = subprocess.run([cmd[0], "-c", *cmd[1:]], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr[-2000:]
