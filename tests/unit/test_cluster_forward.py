"""Which node a path names, and the egress policy of forwarding (only the configured peers)."""

from __future__ import annotations

from mediasrv.cluster.forward import owner_in_path
from mediasrv.egress import Egress, EgressSettings, Purpose


def test_owner_in_native_and_dialect_paths() -> None:
    assert owner_in_path("/v1/calls/v3:n1:abc/playbacks") == "n1"
    assert owner_in_path("/v1/playbacks/p3:n2:ff/control") == "n2"
    assert owner_in_path("/v1/rooms/r3:n3:00/join") == "n3"
    assert owner_in_path("/v2/calls/v3%3An4%3Aab/actions/playback_start") == "n4"  # Telnyx, percent-encoded
    assert owner_in_path("/calling/callConnections/v3:n5:ab:play") == "n5"  # ACS action suffix
    assert owner_in_path("/v1/Account/MA1/Call/v3:n6:ab/Play/") == "n6"  # Plivo
    for path in ("/v1/calls", "/v1/calls/abc", "/v1/media/a:b.wav", "/healthz", "/v1/calls/v3::x"):
        assert owner_in_path(path) is None


def test_cluster_egress_reaches_only_the_peers() -> None:
    egress = Egress(EgressSettings(cluster_peer_urls=["http://127.0.0.1:8082", "http://10.0.0.7:8081"]))
    policy = egress.policy(Purpose.CLUSTER)
    assert policy.refusal("127.0.0.1", "127.0.0.1", 8082) is None
    assert policy.refusal("10.0.0.7", "10.0.0.7", 8081) is None
    assert "cluster_peers" in (policy.refusal("127.0.0.1", "127.0.0.1", 8083) or "")
    assert "cluster_peers" in (policy.refusal("93.184.216.34", "example.com", 80) or "")
    metadata = Egress(EgressSettings(cluster_peer_urls=["http://169.254.169.254:80"])).policy(Purpose.CLUSTER)
    assert "always refused" in (metadata.refusal("169.254.169.254", "169.254.169.254", 80) or "")
    # the other purposes do not trust peers
    assert egress.policy(Purpose.WEBHOOK).refusal("127.0.0.1", "127.0.0.1", 8082) is not None
