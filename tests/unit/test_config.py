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
        with pytest.raises(ConfigError, match="(?i)events_"):
            load_settings({}, environ=env)


# -- one place for types and accepted values; the command line prints one line and exits 2 --------
@pytest.mark.parametrize("raw,expected", [("true", True), ("FALSE", False), ("1", True), ("0", False),
                                          ("yes", True), ("no", False), ("On", True), ("off", False)])
def test_boolean_forms(raw, expected):
    assert load_settings({}, environ={"MEDIASRV_AUTO_ANSWER": raw}).auto_answer is expected


@pytest.mark.parametrize("env,message", [
    ({"MEDIASRV_AUTO_ANSWER": "ture"},
     "MEDIASRV_AUTO_ANSWER: 'ture' is not a boolean; accepted: true, false, 1, 0, yes, no, on, off"),
    ({"MEDIASRV_FETCH_ALLOW_CIDRS": "127.0.0.0/8,not-a-cidr"},
     "MEDIASRV_FETCH_ALLOW_CIDRS: bad value 'not-a-cidr'; accepted: comma-separated networks"),
    ({"MEDIASRV_LOG_LEVEL": "verbose"},
     "MEDIASRV_LOG_LEVEL: bad value 'verbose'; accepted: debug, info, warning, error, critical"),
    ({"MEDIASRV_MAX_CALLS": "many"}, "MEDIASRV_MAX_CALLS: 'many' is not an integer"),
    ({"MEDIASRV_WEBHOOK_TIMEOUT_S": "nan"}, "MEDIASRV_WEBHOOK_TIMEOUT_S: 'nan' is not a finite number"),
    ({"MEDIASRV_WEBHOOK_URL": "ftp://x"}, "MEDIASRV_WEBHOOK_URL: bad value 'ftp://x'; accepted: an http://"),
    ({"MEDIASRV_CODECS": "PCMU,G729"}, "MEDIASRV_CODECS: bad value 'G729'"),
])
def test_bad_env_values_name_the_variable_and_the_accepted_values(env, message):
    with pytest.raises(ConfigError) as info:
        load_settings({}, environ=env)
    assert str(info.value).startswith(message)


def test_bad_flag_and_file_values_name_their_origin(tmp_path):
    with pytest.raises(ConfigError, match="^--log-level: bad value 'verbose'"):
        load_settings({"log_level": "verbose"}, environ={})
    cfg = tmp_path / "m.toml"
    cfg.write_text('auto_answer = "maybe"\n')
    with pytest.raises(ConfigError, match=f"^auto_answer in {cfg}: 'maybe' is not a boolean"):
        load_settings({"config": str(cfg)}, environ={})
    cfg.write_text('auto_anwser = true\n')
    with pytest.raises(ConfigError, match="did you mean 'auto_answer'"):
        load_settings({"config": str(cfg)}, environ={})


def test_unknown_environment_names_are_warned_about_with_a_suggestion():
    from mediasrv.config import unknown_env_warnings

    env = {"MEDIASRV_AUTOANSWER": "1", "MEDIASRV_HTTP": "x", "MEDIASRV_FASTPATH": "0", "MEDIASRV_ZZZ": "1", "PATH": "/"}
    assert unknown_env_warnings(env) == [
        "unknown environment variable MEDIASRV_AUTOANSWER is ignored (did you mean MEDIASRV_AUTO_ANSWER?)",
        "unknown environment variable MEDIASRV_ZZZ is ignored",
    ]


def test_command_line_prints_one_line_and_exits_2():
    import os
    import subprocess
    import sys

    cases = [
        (["--log-level", "verbose"], {},
         "mediasrv: --log-level: bad value 'verbose'; accepted: debug, info, warning, error, critical"),
        ([], {"MEDIASRV_FETCH_ALLOW_CIDRS": "not-a-cidr"},
         "mediasrv: MEDIASRV_FETCH_ALLOW_CIDRS: bad value 'not-a-cidr'; accepted: comma-separated networks such "
         "as 10.0.0.0/8,::1/128"),
        ([], {"MEDIASRV_AUTO_ANSWER": "ture"},
         "mediasrv: MEDIASRV_AUTO_ANSWER: 'ture' is not a boolean; accepted: true, false, 1, 0, yes, no, on, off"),
    ]
    for args, env, line in cases:
        proc = subprocess.run([sys.executable, "-m", "mediasrv", "serve", *args], capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=30)
        assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", line + "\n")
    proc = subprocess.run([sys.executable, "-m", "mediasrv", "--version"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith("mediasrv ") and proc.stdout.split()[1][0].isdigit()


def test_media_settings_reach_the_media_plane(tmp_path):
    from mediasrv.server import Server

    env = {"MEDIASRV_DISK_CACHE_BYTES": "1048576", "MEDIASRV_DECODE_PROCESSES": "0", "MEDIASRV_RTCP_INTERVAL_S": "2.5",
           "MEDIASRV_USE_TIMERFD": "off", "MEDIASRV_FETCH_CONNECT_TIMEOUT_S": "1.5",
           "MEDIASRV_FETCH_FIRST_BYTE_TIMEOUT_S": "4", "MEDIASRV_DATA_DIR": str(tmp_path),
           "MEDIASRV_EVENTS_JOURNAL": "false"}
    server = Server(load_settings({}, environ=env))
    loader = server.media.loader
    assert loader.cache.disk_bytes == 1048576 and loader._workers is None
    assert (server.media.settings.rtcp_interval_s, server.media.clock._use_timerfd) == (2.5, False)
    fetch = loader.fetcher.settings
    assert (fetch.connect_timeout_s, fetch.first_byte_timeout_s, fetch.read_idle_timeout_s) == (1.5, 4.0, 4.0)
    for env_bad in ({"MEDIASRV_DECODE_PROCESSES": "-1"}, {"MEDIASRV_RTCP_INTERVAL_S": "0.1"},
                    {"MEDIASRV_DISK_CACHE_BYTES": "-5"}):
        with pytest.raises(ConfigError, match="accepted"):
            load_settings({}, environ=env_bad)


def test_media_settings_defaults_env_and_refusals():
    s = load_settings({}, environ={})
    assert (s.rtp_timeout_s, s.rtp_hold_timeout_s, s.symmetric_rtp, s.media_deny_cidrs) == (30.0, 300.0, False, [])
    s = load_settings({}, environ={"MEDIASRV_MEDIA_DENY_CIDRS": "10.0.0.0/8, 2001:db8::/32",
                                   "MEDIASRV_SYMMETRIC_RTP": "true", "MEDIASRV_RTP_TIMEOUT_S": "0"})
    assert s.media_deny_cidrs == ["10.0.0.0/8", "2001:db8::/32"] and s.symmetric_rtp and s.rtp_timeout_s == 0
    with pytest.raises(ConfigError, match="(?i)media_deny_cidrs"):
        load_settings({}, environ={"MEDIASRV_MEDIA_DENY_CIDRS": "10.0.0.0/33"})
    with pytest.raises(ConfigError, match="(?i)rtp_hold_timeout_s"):
        load_settings({}, environ={"MEDIASRV_RTP_HOLD_TIMEOUT_S": "-1"})
