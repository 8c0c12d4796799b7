"""Who may talk to the SIP port, decided before the core allocates anything.

- **Source allow-list** for new INVITEs (trunks, SBCs; default loopback only): anyone else gets a
  stateless 403 and nothing is kept.
- **Scanners** (SIPVicious ``friendly-scanner`` and friends, by User-Agent) are dropped silently
  whatever they send.
- **Per-source token buckets** for requests that need no dialog (OPTIONS, REGISTER, SUBSCRIBE,
  unknown methods, stray BYEs) and for refusals: excess is dropped silently and counted, and one
  source's flood only empties its own bucket. Buckets live in an LRU with a cap, so memory per
  source is bounded.
- **Optional digest authentication** of INVITEs (RFC 7616 / RFC 2617 via :mod:`.digest`) with
  stateless nonces: ``<ms-timestamp>.<HMAC(secret, timestamp)>``; an expired nonce with the right
  password is re-challenged with ``stale=true``, a wrong password is a 403. An exact replay of an
  accepted answer (same nonce, nc, cnonce and response) is challenged again (small bounded cache).

Answers here are stateless (no server transaction, no Timer J): the To-tag is an HMAC of the
request's identifiers so a retransmission gets the same tag (RFC 3261 8.2.7).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from . import digest
from .message import ParseError, Request, parse_name_addr

DEFAULT_ALLOW_CIDRS = ("127.0.0.0/8", "::1/128")

# User-Agent substrings of SIP scanners (lower-case). SIPVicious svmap/svwar/svcrack send
# "friendly-scanner" (older) or "sipvicious"; the others are common war-dialers seen on the Internet.
SCANNER_AGENTS = ("friendly-scanner", "sipvicious", "sipcli", "sip-scan", "sipscan", "iwar", "sundayddr", "pplsip")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_cidrs(values: list[str] | tuple[str, ...]) -> list[IpNetwork]:
    """``["203.0.113.0/24", "::1"]`` -> networks; ValueError names the bad entry."""
    out: list[IpNetwork] = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(v.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"bad network {v!r}: {exc}") from None
    return out


def only_loopback(networks: list[IpNetwork]) -> bool:
    return all(n.network_address.is_loopback and n.broadcast_address.is_loopback for n in networks)


def opening_hint(host: str, allow_cidrs: list[str] | tuple[str, ...]) -> str | None:
    """The start-up line for a SIP listener reachable from outside that only loopback may call."""
    try:
        loopback_host = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback_host = host == "localhost"
    if loopback_host or not only_loopback(parse_cidrs(allow_cidrs)):
        return None
    return (
        f"SIP listens on {host} but only loopback may place calls (INVITEs from elsewhere get 403): "
        "open it to your trunks with MEDIASRV_SIP_ALLOW_CIDRS=203.0.113.0/24,2001:db8::/32 "
        '(or sip_allow_cidrs = ["203.0.113.0/24"] under [mediasrv] in the TOML file, or --sip-allow-cidrs)'
    )


@dataclass
class AdmissionSettings:
    allow_cidrs: tuple[str, ...] = DEFAULT_ALLOW_CIDRS
    users: dict[str, str] = field(default_factory=dict)  # digest auth of INVITEs when not empty
    realm: str = "mediasrv"
    auth_proxy: bool = False  # challenge with 407 + Proxy-Authenticate instead of 401 + WWW-Authenticate
    nonce_ttl_s: float = 300.0
    rate_per_source: float = 20.0  # dialog-less requests per second per source address
    burst_per_source: int = 100
    max_sources: int = 4096  # buckets kept (least recently seen forgotten beyond this)
    secret: bytes = b""  # nonce/To-tag HMAC key; empty: random per process


class AuthOutcome(enum.Enum):
    OK = "ok"
    CHALLENGE = "challenge"  # no (usable) credentials, unknown/forged nonce, replay
    STALE = "stale"  # right password, expired nonce
    FORBIDDEN = "forbidden"  # unknown user, wrong password, wrong realm/uri, bad form


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: AuthOutcome
    reason: str = ""
    user: str = ""


class Admission:
    """The admission policy of one SIP listener (sans-I/O; the core calls it with the clock)."""

    def __init__(self, settings: AdmissionSettings | None = None) -> None:
        self.settings = s = settings or AdmissionSettings()
        self.networks = parse_cidrs(s.allow_cidrs)
        self.secret = s.secret or secrets.token_bytes(32)
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # ip -> [tokens, updated]
        self._replays: OrderedDict[tuple[str, str, str, str], None] = OrderedDict()

    # -- who --------------------------------------------------------------------------------------
    def source_allowed(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in n for n in self.networks)

    @staticmethod
    def scanner(req: Request) -> str | None:
        """The User-Agent if it is a known scanner's, else None."""
        ua = req.get("user-agent")
        if ua is None:
            return None
        low = ua.lower()
        return ua if any(s in low for s in SCANNER_AGENTS) else None

    # -- how often --------------------------------------------------------------------------------
    def take(self, ip: str, now: float) -> bool:
        """One token from *ip*'s bucket; False (drop) when it is empty."""
        s = self.settings
        b = self._buckets.get(ip)
        if b is None:
            b = [float(s.burst_per_source), now]
            self._buckets[ip] = b
            if len(self._buckets) > s.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(ip)
            b[0] = min(float(s.burst_per_source), b[0] + (now - b[1]) * s.rate_per_source)
            b[1] = now
        if b[0] >= 1.0:
            b[0] -= 1.0
            return True
        return False

    @property
    def sources_tracked(self) -> int:
        return len(self._buckets)

    # -- stateless answers ------------------------------------------------------------------------
    def to_tag(self, req: Request) -> str:
        """The same To-tag for the same request (and its retransmissions), nothing stored."""
        top = req.vias[0]
        key = f"{req.call_id}\x00{req.from_tag}\x00{top.branch}\x00{req.cseq}".encode("utf-8", "surrogateescape")
        return "s" + hmac.new(self.secret, key, hashlib.sha256).hexdigest()[:15]

    # -- digest -----------------------------------------------------------------------------------
    @property
    def auth_enabled(self) -> bool:
        return bool(self.settings.users)

    def _nonce_mac(self, stamp: str) -> str:
        return hmac.new(self.secret, b"nonce\x00" + stamp.encode(), hashlib.sha256).hexdigest()[:32]

    def nonce(self, now: float) -> str:
        stamp = f"{int(now * 1000):x}"
        return f"{stamp}.{self._nonce_mac(stamp)}"

    def _nonce_time(self, nonce: str) -> float | None:
        stamp, dot, mac = nonce.partition(".")
        if not dot or not stamp or len(stamp) > 16 or not _same(mac, self._nonce_mac(stamp)):
            return None
        try:
            return int(stamp, 16) / 1000.0
        except ValueError:
            return None

    def challenge(self, now: float, stale: bool = False) -> tuple[int, tuple[str, str]]:
        """(status, header) of a digest challenge: 401 WWW-Authenticate, or 407 Proxy-Authenticate."""
        s = self.settings
        realm = s.realm.replace("\\", "\\\\").replace('"', '\\"')
        value = f'Digest realm="{realm}", nonce="{self.nonce(now)}", algorithm=MD5, qop="auth"'
        if stale:
            value += ", stale=true"
        if s.auth_proxy:
            return 407, ("Proxy-Authenticate", value)
        return 401, ("WWW-Authenticate", value)

    def authenticate(self, req: Request, now: float) -> AuthResult:
        """Check the request's digest credentials for our realm (RFC 7616 3.4 / RFC 3261 22)."""
        s = self.settings
        name = "proxy-authorization" if s.auth_proxy else "authorization"
        params: dict[str, str] | None = None
        for value in req.raw_all(name):
            scheme, _, rest = value.strip().partition(" ")
            if scheme.lower() != "digest":
                continue
            try:
                p = digest._params(rest)  # noqa: SLF001 - the module's own auth-param parser
            except digest.DigestError:
                return AuthResult(AuthOutcome.FORBIDDEN, "unparseable credentials")
            if p.get("realm") == s.realm:
                params = p
                break
        if params is None:
            return AuthResult(AuthOutcome.CHALLENGE, "no credentials for our realm")
        user = params.get("username", "")
        nonce = params.get("nonce", "")
        issued = self._nonce_time(nonce)
        if issued is None:
            return AuthResult(AuthOutcome.CHALLENGE, "unknown nonce", user)
        password = s.users.get(user)
        if password is None:
            return AuthResult(AuthOutcome.FORBIDDEN, "unknown user", user)
        qop = params.get("qop", "").lower() or None
        cnonce = params.get("cnonce", "")
        if qop not in (None, "auth", "auth-int") or (qop is not None and (not cnonce or "nc" not in params)):
            return AuthResult(AuthOutcome.FORBIDDEN, "unsupported qop or missing cnonce/nc", user)
        try:
            nc = int(params.get("nc", "1"), 16)
        except ValueError:
            return AuthResult(AuthOutcome.FORBIDDEN, "bad nc", user)
        ch = digest.Challenge(
            realm=s.realm, nonce=nonce, algorithm=params.get("algorithm", "MD5") or "MD5", qop=(qop,) if qop else ()
        )
        if not ch.supported or params.get("userhash", "").lower() == "true":
            return AuthResult(AuthOutcome.FORBIDDEN, "unsupported algorithm", user)
        uri = params.get("uri", "")
        expected = digest.response(ch, digest.Credentials(user, password), req.method, uri, cnonce, nc, req.body)
        if not _same(expected, params.get("response", "").lower()):
            return AuthResult(AuthOutcome.FORBIDDEN, "wrong password", user)
        if not _same_target(uri, req):
            return AuthResult(AuthOutcome.FORBIDDEN, "digest uri is not the Request-URI", user)
        if now - issued > s.nonce_ttl_s or issued - now > 5.0:
            return AuthResult(AuthOutcome.STALE, "nonce expired", user)
        key = (nonce, cnonce, f"{nc:x}", expected)
        if key in self._replays:
            return AuthResult(AuthOutcome.CHALLENGE, "replayed credentials", user)
        self._replays[key] = None
        if len(self._replays) > 8192:
            self._replays.popitem(last=False)
        return AuthResult(AuthOutcome.OK, "", user)


def _same(a: str, b: str) -> bool:
    """Constant-time comparison that also takes non-ASCII text (compare_digest on str refuses it)."""
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape"))


def _same_target(uri: str, req: Request) -> bool:
    """The digest ``uri`` names this request: the Request-URI itself, or (as SIPp and some phones
    send) a URI with the same host and port (e.g. ``sip:host:port`` for ``sip:user@host:port``)."""
    if uri == req.uri_str:
        return True
    try:
        named = parse_name_addr(f"<{uri}>").uri
    except ParseError:
        return False
    target = req.uri
    return named.host_plain.lower() == target.host_plain.lower() and (named.port or 5060) == (target.port or 5060)
