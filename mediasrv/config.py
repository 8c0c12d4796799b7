"""One settings object: defaults < TOML file < environment (MEDIASRV_*) < command-line flags."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any

from mediacodecs.codec import CODECS


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
    log_level: str = "INFO"
    # audio fetching and caching (issue 4)
    fetch_timeout_s: float = 30.0
    max_fetch_bytes: int = 250 * 1024 * 1024
    max_audio_seconds: float = 3600.0
    cache_bytes: int = 512 * 1024 * 1024
    fetch_allow_cidrs: list[str] = field(default_factory=list)  # checked first; e.g. ["127.0.0.0/8"] in tests
    fetch_deny_cidrs: list[str] = field(default_factory=list)  # on top of the always-refused link-local/metadata
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

    # derived views ------------------------------------------------------
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
        self.sip_addr, self.http_addr, self.rtp_range, self.metrics_addr  # noqa: B018 - parse to validate
        if self.metrics_token is not None and self.api_token is not None and self.metrics_token == self.api_token:
            raise ConfigError("metrics_token must differ from api_token (it is the read-only one)")
        if not self.api_token and not is_loopback(self.http_addr[0]):
            raise ConfigError(
                f"refusing to serve the HTTP API on {self.http} without a token: "
                "set MEDIASRV_API_TOKEN (or api_token in the config file), or bind a loopback address"
            )
        unknown = [c for c in self.codecs if c not in CODECS]
        if unknown:
            raise ConfigError(f"unsupported codecs {unknown}")
        if self.max_calls is not None and self.max_calls < 1:
            raise ConfigError("max_calls must be >= 1")
        if self.webhook_max_attempts < 1 or self.webhook_backoff_s < 0 or self.webhook_timeout_s <= 0:
            raise ConfigError("webhook_max_attempts must be >= 1, webhook_backoff_s >= 0 and webhook_timeout_s > 0")
        if not 0 <= self.realtime_priority <= 99:
            raise ConfigError("realtime_priority must be 0 (off) or 1-99")
        if self.events_segment_bytes < 4096 or self.events_max_bytes < self.events_segment_bytes:
            raise ConfigError("events_segment_bytes must be >= 4096 and events_max_bytes >= events_segment_bytes")
        if self.rtp_timeout_s < 0 or self.rtp_hold_timeout_s < 0 or self.ring_timeout_s < 0:
            raise ConfigError("rtp_timeout_s, rtp_hold_timeout_s and ring_timeout_s must be >= 0 (0 = off)")
        for cidr in self.media_deny_cidrs:
            try:
                ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError as exc:
                raise ConfigError(f"bad CIDR in media_deny_cidrs: {cidr!r}") from exc
        try:
            for cidr in self.sip_allow_cidrs:
                ipaddress.ip_network(cidr.strip(), strict=False)
        except (ValueError, AttributeError) as exc:
            raise ConfigError(f"sip_allow_cidrs: {exc}") from None
        if not isinstance(self.sip_users, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in self.sip_users.items()
        ):
            raise ConfigError('sip_users must map user names to password strings ([mediasrv.sip_users] alice = "pw")')
        if self.sip_nonce_ttl_s <= 0 or self.sip_rate_per_source <= 0 or self.sip_burst_per_source < 1:
            raise ConfigError("sip_nonce_ttl_s and sip_rate_per_source must be > 0, sip_burst_per_source >= 1")
        if self.sip_rate_max_sources < 1:
            raise ConfigError("sip_rate_max_sources must be >= 1")
        for name in ("fetch_allow_cidrs", "fetch_deny_cidrs", "webhook_allow_cidrs", "webhook_deny_cidrs"):
            for cidr in getattr(self, name):
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError as exc:
                    raise ConfigError(f"{name}: {cidr!r} is not an address or network") from exc
        if self.events_max_age_s <= 0 or self.events_fsync_interval_s < 0:
            raise ConfigError("events_max_age_s must be > 0 and events_fsync_interval_s >= 0")


def _coerce(name: str, raw: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if isinstance(raw, str):
        if "bool" in str(kind):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if "int" in str(kind) and "str" not in str(kind):
            return int(raw)
        if "float" in str(kind):
            return float(raw)
        if "dict" in str(kind):  # "user:password,user2:password2" (TOML tables take any password)
            pairs = [p.split(":", 1) for p in raw.split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError(f"{name}: expected user:password[,user:password...]")
            return {u.strip(): pw for u, pw in pairs}
        if "list" in str(kind):
            return [p.strip() for p in raw.split(",") if p.strip()]
    return raw


def load_settings(flags: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Merge every layer; ``flags`` holds only what was given on the command line."""
    env = os.environ if environ is None else environ
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    names = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
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
                raise ConfigError(f"unknown setting {key!r} in {config_file}")
            values[key] = _coerce(key, raw)
        values["config"] = config_file
    for name in names:
        raw = env.get("MEDIASRV_" + name.upper())
        if raw is not None and raw != "":
            try:
                values[name] = _coerce(name, raw)
            except ValueError as exc:
                raise ConfigError(f"bad value for MEDIASRV_{name.upper()}: {raw!r}") from exc
    for name, raw in flags.items():
        values[name] = _coerce(name, raw)
    settings = Settings(**values)
    settings.validate()
    return settings
