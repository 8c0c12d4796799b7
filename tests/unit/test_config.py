"""Settings layering: defaults < TOML < env < flags, and the refusal to serve unauthenticated off loopback."""

import pytest

from mediasrv.config import ConfigError, load_settings, parse_hostport


def test_defaults_are_loopback():
    s = load_settings({}, environ={})
    assert s.sip_addr == ("127.0.0.1", 5060)
    assert s.http_addr == ("127.0.0.1", 8080)
    assert s.rtp_range == (20000, 29999)
    assert s.auto_answer is True


def test_layers_in_order(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('sip = "127.0.0.1:5070"\nhttp = "127.0.0.1:9000"\nmax_calls = 7\n')
    env = {"MEDIASRV_CONFIG": str(cfg), "MEDIASRV_HTTP": "127.0.0.1:9100", "MEDIASRV_AUTO_ANSWER": "false"}
    s = load_settings({"http": "127.0.0.1:9200"}, environ=env)
    assert s.sip_addr == ("127.0.0.1", 5070)  # from the file
    assert s.max_calls == 7
    assert s.auto_answer is False  # env
    assert s.http_addr == ("127.0.0.1", 9200)  # flag beats env beats file


def test_refuses_public_bind_without_token():
    with pytest.raises(ConfigError, match="without a token"):
        load_settings({"http": "0.0.0.0:8080"}, environ={})
    s = load_settings({"http": "0.0.0.0:8080"}, environ={"MEDIASRV_API_TOKEN": "secret"})
    assert s.api_token == "secret"


@pytest.mark.parametrize("bad", [{"rtp_ports": "5-4"}, {"rtp_ports": "abc"}, {"sip": "host:notaport"}])
def test_bad_values_are_named(bad):
    with pytest.raises(ConfigError):
        load_settings(bad, environ={})


def test_unknown_key_in_file(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('nonsense = 1\n')
    with pytest.raises(ConfigError, match="nonsense"):
        load_settings({"config": str(cfg)}, environ={})


def test_hostport_forms():
    assert parse_hostport("[::1]:5062", 5060) == ("::1", 5062)
    assert parse_hostport("::1", 5060) == ("::1", 5060)
    assert parse_hostport(":5099", 5060) == ("127.0.0.1", 5099)


def test_event_journal_settings_from_env_and_their_limits():
    s = load_settings({}, environ={"MEDIASRV_EVENTS_JOURNAL": "false", "MEDIASRV_EVENTS_MAX_BYTES": "8388608",
                                   "MEDIASRV_EVENTS_FSYNC_INTERVAL_S": "0"})
    assert (s.events_journal, s.events_max_bytes, s.events_fsync_interval_s) == (False, 8388608, 0.0)
    for env in ({"MEDIASRV_EVENTS_SEGMENT_BYTES": "100"}, {"MEDIASRV_EVENTS_MAX_BYTES": "4096"},
                {"MEDIASRV_EVENTS_FSYNC_INTERVAL_S": "-1"}, {"MEDIASRV_EVENTS_MAX_AGE_S": "0"}):
        with pytest.raises(ConfigError, match="events_"):
            load_settings({}, environ=env)


def test_media_settings_defaults_env_and_refusals():
    s = load_settings({}, environ={})
    assert (s.rtp_timeout_s, s.rtp_hold_timeout_s, s.symmetric_rtp, s.media_deny_cidrs) == (30.0, 300.0, False, [])
    s = load_settings({}, environ={"MEDIASRV_MEDIA_DENY_CIDRS": "10.0.0.0/8, 2001:db8::/32",
                                   "MEDIASRV_SYMMETRIC_RTP": "true", "MEDIASRV_RTP_TIMEOUT_S": "0"})
    assert s.media_deny_cidrs == ["10.0.0.0/8", "2001:db8::/32"] and s.symmetric_rtp and s.rtp_timeout_s == 0
    with pytest.raises(ConfigError, match="media_deny_cidrs"):
        load_settings({}, environ={"MEDIASRV_MEDIA_DENY_CIDRS": "10.0.0.0/33"})
    with pytest.raises(ConfigError, match="rtp_timeout_s"):
        load_settings({}, environ={"MEDIASRV_RTP_HOLD_TIMEOUT_S": "-1"})
