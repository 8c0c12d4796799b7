"""One settings object: defaults < TOML file < environment (MEDIASRV_*) < command-line flags."""

from __future__ import annotations

import difflib
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any

from mediacodecs.codec import CODECS as CODEC_OBJECTS


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it."""


def parse_hostport(value: str, default_port: int) -> tuple[str, int]:
    """``"127.0.0.1:5060"``, ``"[::1]:5060"``, ``":5060"`` or ``"host"`` → (host, port)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, port = value.split(":")
    elif value.count(":") > 1:  # bare IPv6 address
        host, port = value, ""
    else:
        host, port = value, ""
    try:
        return host or "127.0.0.1", int(port) if port else default_port
    except ValueError as exc:
        raise ConfigError(f"bad HOST:PORT {value!r}") from exc


def parse_port_range(value: str) -> tuple[int, int]:
    try:
        lo_s, hi_s = value.split("-")
        lo, hi = int(lo_s), int(hi_s)
    except ValueError as exc:
        raise ConfigError(f"bad port range {value!r}, expected LO-HI") from exc
    if not (1024 <= lo < hi <= 65535):
        raise ConfigError(f"bad port range {value!r}")
    return lo, hi


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Settings:
    sip: str = "127.0.0.1:5060"
    http: str = "127.0.0.1:8080"
    rtp_ports: str = "20000-29999"
    config: str | None = None
    data_dir: str = "./data"
    max_calls: int | None = None
    auto_answer: bool = True
    api_token: str | None = None
    # scraping without the API token: a read-only bearer token good for GET /metrics only, and/or a
    # separate HOST:PORT serving only /metrics (no token there unless metrics_token is set)
    metrics_token: str | None = None
    metrics_listen: str | None = None
    webhook_url: str | None = None
    # every webhook sink (native and vendor dialects): attempts, first back-off (doubled per retry), per-request timeout
    webhook_max_attempts: int = 5
    webhook_backoff_s: float = 0.5
    webhook_timeout_s: float = 5.0
    # event journal under <data-dir>/events/ (events persisted, owed webhooks re-sent after a restart)
    events_journal: bool = True
    events_segment_bytes: int = 4 * 1024 * 1024
    events_max_bytes: int = 64 * 1024 * 1024
    events_max_age_s: float = 7 * 86400.0
    events_fsync_interval_s: float = 1.0
    send_silence: bool = True
    # media that ends (media/plane.py): no RTP/RTCP from the peer for this long → hangup, cause rtp_timeout
    rtp_timeout_s: float = 30.0  # 0 = off
    rtp_hold_timeout_s: float = 300.0  # the same while the call is on hold (sendonly/recvonly/inactive/c=0.0.0.0)
    symmetric_rtp: bool = False  # send to where the peer's RTP comes from (comedia), if the media policy allows it
    media_deny_cidrs: list[str] = field(default_factory=list)  # media destinations refused on top of the always-refused
    ring_timeout_s: float = 120.0  # an inbound call left ringing (auto_answer off) this long is refused 480; 0 = never
    codecs: list[str] = field(default_factory=lambda: ["PCMU", "PCMA"])
    use_uvloop: bool = True
    realtime_priority: int = 0  # SCHED_FIFO priority for the media clock's thread; 0 = normal (realtime.py)
    gc_freeze: bool = True  # freeze long-lived objects so GC pauses stay off the media clock (gcpolicy.py)
    log_level: str = "INFO"  # debug, info, warning, error, critical
    log_format: str = "text"  # text: one human line per record; json: one JSON object per line
    access_log: bool = True  # one INFO line per HTTP request (logger mediasrv.access)
    # audio fetching and caching (issue 4)
    fetch_timeout_s: float = 30.0
    max_fetch_bytes: int = 250 * 1024 * 1024
    max_audio_seconds: float = 3600.0
    cache_bytes: int = 512 * 1024 * 1024
    disk_cache_bytes: int = 4 * 1024 * 1024 * 1024  # decoded audio kept under <data-dir>/cache
    fetch_connect_timeout_s: float = 5.0  # audio URL: TCP/TLS connect (capped by fetch_timeout_s)
    fetch_first_byte_timeout_s: float = 10.0  # audio URL: wait for the answer, and longest pause mid-body
    decode_processes: int = 1  # decoder worker processes; 0 = decode in threads of the server process
    rtcp_interval_s: float = 5.0  # RTCP sender reports per leg
    use_timerfd: bool = True  # the media clock sleeps on a timerfd (false: the loop's call_at)
    fetch_allow_cidrs: list[str] = field(default_factory=list)  # checked first; e.g. ["127.0.0.0/8"] in tests
    fetch_deny_cidrs: list[str] = field(default_factory=list)  # on top of the always-refused link-local/metadata
    # text to speech (content/synth.py): the speak source
    speech_timeout_s: float = 10.0  # one synthesis (the child process is killed past it)
    speech_concurrency: int = 2  # syntheses at once; more speak commands queue
    speech_max_chars: int = 3000  # characters of text (of SSML: its spoken text)
    sip_message_budget_ms: float = 5.0  # an inbound SIP message taking more CPU is counted and logged (sip/guard.py)
    # webhooks, per-command callback URLs and BXML callbacks (egress.py): receivers on private networks
    # are refused unless listed here; hosts of the configured *_URL settings are trusted as they are
    webhook_allow_cidrs: list[str] = field(default_factory=list)
    webhook_deny_cidrs: list[str] = field(default_factory=list)
    # outbound calls (issue 5): digest credentials answered to 401/407 challenges
    sip_username: str | None = None
    sip_password: str | None = None
    # who may place calls (sip/admission.py): INVITE source networks, digest auth, per-source limits
    sip_allow_cidrs: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    sip_users: dict[str, str] = field(default_factory=dict)  # user -> password; non-empty: INVITEs need digest
    sip_realm: str = "mediasrv"
    sip_auth_proxy: bool = False  # challenge with 407 Proxy-Authenticate instead of 401 WWW-Authenticate
    sip_nonce_ttl_s: float = 300.0
    sip_rate_per_source: float = 20.0  # dialog-less requests (OPTIONS, REGISTER, ...) per second per source
    sip_burst_per_source: int = 100
    sip_rate_max_sources: int = 4096
    # vendor dialects (issue 6); a dialect without credentials answers 401 to everything
    telnyx_api_key: str | None = None
    telnyx_webhook_url: str | None = None
    plivo_auth_id: str | None = None
    plivo_auth_token: str | None = None
    acs_access_key: str | None = None
    acs_callback_url: str | None = None
    acs_resource_id: str | None = None  # the "aud" of our callback JWTs (ACS: the resource's immutable id)
    acs_issuer: str | None = None  # "iss" and the JWKS's base URL; default http://<http host:port>
    bandwidth_account_id: str | None = None
    bandwidth_username: str | None = None
    bandwidth_password: str | None = None
    bandwidth_answer_url: str | None = None
    # scale-out (issue 11, mediasrv/cluster/): the token in every call/room/playback id (default <host>-<SIP port>);
    # a directory where live nodes hold a lock per node id (duplicates refused at start); other nodes' HTTP URLs
    node_id: str | None = None
    cluster_dir: str | None = None
    cluster_peers: dict[str, str] = field(default_factory=dict)  # node_id -> http://host:port of that node's API
    media_dir: str | None = None  # named media store; default <data-dir>/media (share it between nodes)

    # derived views ------------------------------------------------------
    @property
    def node(self) -> str:
        """This node's id: ``node_id`` or ``<host>-<SIP port>``."""
        from .cluster.identity import default_node_id

        return self.node_id or default_node_id(self.sip_addr[1])

    @property
    def sip_addr(self) -> tuple[str, int]:
        return parse_hostport(self.sip, 5060)

    @property
    def http_addr(self) -> tuple[str, int]:
        return parse_hostport(self.http, 8080)

    @property
    def metrics_addr(self) -> tuple[str, int] | None:
        return parse_hostport(self.metrics_listen, 9090) if self.metrics_listen else None

    @property
    def rtp_range(self) -> tuple[int, int]:
        return parse_port_range(self.rtp_ports)

    def validate(self) -> None:
        """Every field against its accepted values, then the checks that span fields."""
        for f in fields(self):
            check_value(f.name, getattr(self, f.name), f.name)
        self.metrics_addr  # noqa: B018 - parse to validate
        if self.metrics_token is not None and self.api_token is not None and self.metrics_token == self.api_token:
            raise ConfigError("metrics_token must differ from api_token (it is the read-only one)")
        if not self.api_token and not is_loopback(self.http_addr[0]):
            raise ConfigError(
                f"refusing to serve the HTTP API on {self.http} without a token: "
                "set MEDIASRV_API_TOKEN (or api_token in the config file), or bind a loopback address"
            )
        if self.events_max_bytes < self.events_segment_bytes:
            raise ConfigError(f"events_max_bytes ({self.events_max_bytes}) must be >= events_segment_bytes "
                              f"({self.events_segment_bytes})")
        if not isinstance(self.sip_users, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in self.sip_users.items()
        ):
            raise ConfigError('sip_users must map user names to password strings ([mediasrv.sip_users] alice = "pw")')



# -- typing and accepted values, one place -------------------------------------------------------
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
CODECS = tuple(CODEC_OBJECTS)  # PCMU, PCMA, G722 (mediacodecs.codec)
# read straight from the environment elsewhere (not settings), so not "unknown"
OTHER_ENV = frozenset({"MEDIASRV_FASTPATH"})
# flags whose name is not --<setting-name-with-dashes>
FLAG_NAMES = {"auto_answer": "--ring", "send_silence": "--no-silence", "rtp_timeout_s": "--rtp-timeout",
              "use_uvloop": "--asyncio"}


def _kind(name: str) -> tuple[str, bool]:
    """(base type, optional) of a Settings field, from its annotation."""
    annotation = str({f.name: f.type for f in fields(Settings)}[name])
    parts = [p.strip() for p in annotation.split("|")]
    optional = "None" in parts
    base = next(p for p in parts if p != "None")
    return base, optional


def _accepted(name: str) -> str:
    """The accepted values of a setting, as said in error messages."""
    base, optional = _kind(name)
    if name in _CHECKS:
        text = _CHECKS[name][1]
    elif base == "bool":
        text = "true, false, 1, 0, yes, no, on, off"
    elif base == "int":
        text = "an integer"
    elif base == "float":
        text = "a number"
    elif base == "list[str]":
        text = "a comma-separated list"
    elif base == "dict[str, str]":
        text = "user:password[,user:password...] (a TOML table in the file)"
    else:
        text = "a string"
    return text + (" (or unset)" if optional and name in _CHECKS else "")


def _convert(name: str, raw: Any, label: str) -> Any:
    """A raw value (string from the environment or a flag, or a TOML value) as the field's type."""
    base, optional = _kind(name)

    def bad(what: str) -> ConfigError:
        return ConfigError(f"{label}: {raw!r} is not {what}; accepted: {_accepted(name)}")

    if raw is None:
        if optional:
            return None
        raise bad("a value")
    if base == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in TRUE_WORDS + FALSE_WORDS:
            return raw.strip().lower() in TRUE_WORDS
        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
        raise bad("a boolean")
    if base == "int":
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            try:
                return int(raw.strip().replace("_", ""))
            except ValueError:
                pass
        raise bad("an integer")
    if base == "float":
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            value = float(raw)
        elif isinstance(raw, str):
            try:
                value = float(raw.strip())
            except ValueError:
                raise bad("a number") from None
        else:
            raise bad("a number")
        if value != value or value in (float("inf"), float("-inf")):
            raise bad("a finite number")
        return value
    if name == "cluster_peers" and isinstance(raw, str):  # "node-a=http://127.0.0.1:8081,node-b=http://..."
        peers = [p.split("=", 1) for p in raw.split(",") if p.strip()]
        if all(len(p) == 2 and p[0].strip() for p in peers):
            return {n.strip(): u.strip() for n, u in peers}
        raise bad("node=url pairs")
    if base == "dict[str, str]":
        if isinstance(raw, dict):
            return raw
        if isinstance(raw, str):  # "user:password,user2:password2" (TOML tables take any password)
            pairs = [p.split(":", 1) for p in raw.split(",") if p.strip()]
            if all(len(p) == 2 and p[0].strip() for p in pairs):
                return {u.strip(): pw for u, pw in pairs}
        raise bad("user:password pairs")
    if base == "list[str]":
        if isinstance(raw, str):
            return [p.strip() for p in raw.split(",") if p.strip()]
        if isinstance(raw, list) and all(isinstance(p, str) for p in raw):
            return [p.strip() for p in raw]
        raise bad("a list of strings")
    if not isinstance(raw, str):
        raise bad("a string")
    return raw


def _hostport(value: str) -> bool:
    try:
        _, port = parse_hostport(value, 1)
    except ConfigError:
        return False
    return 0 <= port <= 65535


def _port_range(value: str) -> bool:
    try:
        parse_port_range(value)
    except ConfigError:
        return False
    return True


def _cidr(value: str) -> bool:
    try:
        ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        return False
    return True


def _url(value: str | None) -> bool:
    return value is None or value.lower().startswith(("http://", "https://"))


# setting -> (is this value acceptable?, the accepted values in words); types are checked before
def _node_id(v: Any) -> bool:
    from .cluster.identity import valid_node_id

    return isinstance(v, str) and valid_node_id(v)


_CHECKS: dict[str, tuple[Any, str]] = {
    "node_id": (_node_id, "a short token: letters, digits, '_', '.', '-' (up to 48; no ':')"),
    "cluster_peers": (lambda v: isinstance(v, dict) and all(_node_id(k) and isinstance(u, str) and _url(u)
                                                            for k, u in v.items()),
                      "node=http://host:port[,node=url...] (a TOML table in the file)"),
    "sip": (_hostport, "HOST:PORT, [IPv6]:PORT, :PORT or HOST"),
    "http": (_hostport, "HOST:PORT, [IPv6]:PORT, :PORT or HOST"),
    "metrics_listen": (_hostport, "HOST:PORT, [IPv6]:PORT, :PORT or HOST"),
    "rtp_ports": (_port_range, "LO-HI with 1024 <= LO < HI <= 65535"),
    "max_calls": (lambda v: v is None or v >= 1, "an integer >= 1"),
    "webhook_url": (_url, "an http:// or https:// URL"),
    "telnyx_webhook_url": (_url, "an http:// or https:// URL"),
    "acs_callback_url": (_url, "an http:// or https:// URL"),
    "bandwidth_answer_url": (_url, "an http:// or https:// URL"),
    "webhook_max_attempts": (lambda v: v >= 1, "an integer >= 1"),
    "webhook_backoff_s": (lambda v: v >= 0, "a number of seconds >= 0"),
    "webhook_timeout_s": (lambda v: v > 0, "a number of seconds > 0"),
    "events_segment_bytes": (lambda v: v >= 4096, "an integer >= 4096"),
    "events_max_bytes": (lambda v: v >= 4096, "an integer >= 4096 (and >= events_segment_bytes)"),
    "events_max_age_s": (lambda v: v > 0, "a number of seconds > 0"),
    "events_fsync_interval_s": (lambda v: v >= 0, "a number of seconds >= 0 (0: every batch)"),
    "rtp_timeout_s": (lambda v: v >= 0, "a number of seconds >= 0 (0: off)"),
    "sip_message_budget_ms": (lambda v: v >= 0, "a number of milliseconds >= 0 (0: do not count)"),
    "rtp_hold_timeout_s": (lambda v: v >= 0, "a number of seconds >= 0 (0: off)"),
    "ring_timeout_s": (lambda v: v >= 0, "a number of seconds >= 0 (0: ring for ever)"),
    "media_deny_cidrs": (lambda v: all(_cidr(c) for c in v), "comma-separated networks such as 10.0.0.0/8,::1/128"),
    "webhook_allow_cidrs": (lambda v: all(_cidr(c) for c in v), "comma-separated networks such as 10.0.0.0/8,::1/128"),
    "webhook_deny_cidrs": (lambda v: all(_cidr(c) for c in v), "comma-separated networks such as 10.0.0.0/8,::1/128"),
    "sip_allow_cidrs": (lambda v: all(_cidr(c) for c in v), "comma-separated networks such as 10.0.0.0/8,::1/128"),
    "sip_nonce_ttl_s": (lambda v: v > 0, "a number of seconds > 0"),
    "sip_rate_per_source": (lambda v: v > 0, "a number of requests per second > 0"),
    "sip_burst_per_source": (lambda v: v >= 1, "an integer >= 1"),
    "sip_rate_max_sources": (lambda v: v >= 1, "an integer >= 1"),
    "codecs": (lambda v: bool(v) and all(c in CODEC_OBJECTS for c in v), f"a non-empty list of {', '.join(CODECS)}"),
    "realtime_priority": (lambda v: 0 <= v <= 99, "0 (normal scheduling) or 1-99"),
    "log_level": (lambda v: v.lower() in LOG_LEVELS, ", ".join(LOG_LEVELS)),
    "log_format": (lambda v: v.lower() in LOG_FORMATS, ", ".join(LOG_FORMATS)),
    "fetch_timeout_s": (lambda v: v > 0, "a number of seconds > 0"),
    "max_fetch_bytes": (lambda v: v >= 1, "an integer >= 1"),
    "max_audio_seconds": (lambda v: v > 0, "a number of seconds > 0"),
    "cache_bytes": (lambda v: v >= 0, "an integer >= 0"),
    "disk_cache_bytes": (lambda v: v >= 0, "an integer >= 0 (0: no on-disk tier)"),
    "fetch_connect_timeout_s": (lambda v: v > 0, "a number of seconds > 0"),
    "fetch_first_byte_timeout_s": (lambda v: v > 0, "a number of seconds > 0"),
    "decode_processes": (lambda v: 0 <= v <= 64, "0 (decode in threads) to 64"),
    "rtcp_interval_s": (lambda v: 0.5 <= v <= 3600, "a number of seconds from 0.5 to 3600"),
    "fetch_allow_cidrs": (lambda v: all(_cidr(c) for c in v), "comma-separated networks such as 10.0.0.0/8,::1/128"),
    "fetch_deny_cidrs": (lambda v: all(_cidr(c) for c in v), "comma-separated networks such as 10.0.0.0/8,::1/128"),
}


def check_value(name: str, value: Any, label: str) -> None:
    """ConfigError naming *label* and the accepted values if *value* is not acceptable for *name*."""
    check = _CHECKS.get(name)
    if check is None or value is None and _kind(name)[1]:
        return
    if not check[0](value):
        shown: Any = value
        if isinstance(value, list):  # name the offending item, not the whole list
            shown = next((v for v in value if not check[0]([v])), ",".join(value))
        raise ConfigError(f"{label}: bad value {shown!r}; accepted: {check[1]}")


def env_name(name: str) -> str:
    return "MEDIASRV_" + name.upper()


def flag_name(name: str) -> str:
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_env_warnings(environ: dict[str, str] | None = None) -> list[str]:
    """One line per ``MEDIASRV_*`` variable that no setting reads: a misspelling must not pass silently."""
    env = os.environ if environ is None else environ
    known = {env_name(f.name) for f in fields(Settings)} | OTHER_ENV
    tails = sorted(k.removeprefix("MEDIASRV_") for k in known)  # compare what follows the common prefix
    out = []
    for key in sorted(env):
        if key.startswith("MEDIASRV_") and key not in known:
            close = difflib.get_close_matches(key.removeprefix("MEDIASRV_"), tails, n=1, cutoff=0.6)
            out.append(f"unknown environment variable {key} is ignored"
                       + (f" (did you mean MEDIASRV_{close[0]}?)" if close else ""))
    return out


def load_settings(flags: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Merge every layer; ``flags`` holds only what was given on the command line.

    Every value is typed and checked here, and a bad one is a ConfigError naming where it came
    from (the flag, the environment variable or the file's key) and the values accepted.
    """
    env = os.environ if environ is None else environ
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    names = [f.name for f in fields(Settings)]
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    config_file = flags.get("config") or env.get("MEDIASRV_CONFIG")
    if config_file:
        try:
            with open(config_file, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        section = data.get("mediasrv", data)
        for key, raw in section.items():
            key = key.replace("-", "_")
            if key not in names:
                raise ConfigError(f"unknown setting {key!r} in {config_file}{_suggest(key, names)}")
            labels[key] = f"{key} in {config_file}"
            values[key] = _convert(key, raw, labels[key])
        values["config"] = config_file
    for name in names:
        raw = env.get(env_name(name))
        if raw is not None and raw != "":
            labels[name] = env_name(name)
            values[name] = _convert(name, raw, labels[name])
    for name, raw in flags.items():
        labels[name] = flag_name(name)
        values[name] = _convert(name, raw, labels[name])
    for name, value in values.items():
        check_value(name, value, labels.get(name, name))
    if "log_level" in values:
        values["log_level"] = values["log_level"].upper()
    if "log_format" in values:
        values["log_format"] = values["log_format"].lower()
    settings = Settings(**values)
    settings.validate()
    return settings
