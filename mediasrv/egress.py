"""One egress policy for every outbound HTTP connection: audio fetches, webhooks, callbacks, BXML.

Why here and not in each caller: a URL that arrives in an API command (an audio URL, a Telnyx
``webhook_url``, a Plivo ``callback_url``, an ACS ``operationCallbackUri``, a BXML redirect) is
the API client's choice, and a server that connects wherever it is told can be made to POST to
the cloud metadata service or to an admin port on its own network.  Every session made by
:func:`new_session` checks each address it connects to *after* DNS (a resolver that drops
refused addresses, so the connection goes to exactly the address that was checked) and each IP
literal before connecting (aiohttp does not ask a resolver for those); a webhook session also
refuses to follow a redirect (a 3xx is a failed delivery with a reason).

Order of the checks (:meth:`AddressPolicy.refusal`): the always-refused table
(:mod:`mediasrv.egress_denylist`: link-local, metadata, multicast, ... and every IPv4 embedding
of them) > the purpose's deny list > a host an operator configured (its addresses are trusted) >
the purpose's allow list > refused if the address is in the not-public table (private, loopback,
CGNAT, ULA, ...) > allowed.  Two purposes with separate lists: ``fetch`` (audio URLs:
``fetch_allow_cidrs``/``fetch_deny_cidrs``) and ``webhook`` (webhooks, callbacks, BXML:
``webhook_allow_cidrs``/``webhook_deny_cidrs``; receivers often live on private networks).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from .egress_denylist import ALWAYS_REFUSED, NOT_PUBLIC, IPAddress, IPNetwork, embedded_ipv4, match

if TYPE_CHECKING:
    from .config import Settings

USER_AGENT = "mediasrv/0.1"
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Purpose(StrEnum):
    FETCH = "fetch"  # audio URLs (redirects followed by the fetcher, each hop checked)
    WEBHOOK = "webhook"  # webhooks, per-command callbacks, BXML callbacks (redirects never followed)


class EgressRefused(OSError):
    """A connection the policy refuses; an OSError so aiohttp hands it on as the connector error's cause."""

    def __init__(self, host: str, address: str, why: str) -> None:
        super().__init__(f"{host} is {why}" if host == address else f"{host} resolves to {address}, {why}")
        self.host, self.address, self.why = host, address, why


def _parse(address: str | IPAddress) -> IPAddress | None:
    """The address, or None for a scoped one (``fe80::1%eth0``: link-local by nature)."""
    if not isinstance(address, str):
        return address
    if "%" in address:
        return None
    return ipaddress.ip_address(address)


def origin_of(url: str) -> tuple[str, int] | None:
    """``(host, port)`` of an http(s) URL, lower-cased, the scheme's port by default; None if it is not one."""
    try:
        u = URL(url)
    except ValueError:
        return None
    if u.scheme not in ("http", "https") or not u.raw_host or u.port is None:
        return None
    return _host_key(u.raw_host), u.port


def _host_key(host: str) -> str:
    """A host as aiohttp hands it to the resolver (IDNA, maybe a trailing dot), compared case-free."""
    return host.lower().strip("[]").rstrip(".")


@dataclass(frozen=True)
class AddressPolicy:
    """Which peer addresses one purpose's connections may reach (see the module docstring for the order)."""

    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()
    trusted: frozenset[tuple[str, int]] = frozenset()  # (host, port) of URLs an operator configured
    purpose: Purpose = Purpose.FETCH

    @classmethod
    def from_cidrs(cls, allow: Iterable[str] = (), deny: Iterable[str] = (), purpose: Purpose = Purpose.FETCH,
                   trusted_urls: Iterable[str | None] = ()) -> AddressPolicy:
        trusted = frozenset(o for o in (origin_of(u) for u in trusted_urls if u) if o is not None)
        return cls(tuple(ipaddress.ip_network(c, strict=False) for c in allow),
                   tuple(ipaddress.ip_network(c, strict=False) for c in deny), trusted, purpose)

    def refusal(self, address: str | IPAddress, host: str | None = None, port: int | None = None) -> str | None:
        """Why a connection to *address* (reached as *host*:*port*) is refused, or None when it may go ahead."""
        try:
            ip = _parse(address)
        except ValueError:
            return "not an IP address"
        if ip is None:
            return "a scoped (link-local) address (always refused)"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # the destination really is the IPv4 address
        found = match(ip, ALWAYS_REFUSED)
        if found is not None:
            via = f" (as {found[0]})" if found[0] != str(ip) else ""
            return f"{found[1].owner}{via}, always refused"
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            candidates += [v4 for _, v4 in embedded_ipv4(ip)]
        if any(_within(a, net) for a in candidates for net in self.deny):
            return f"in {self.purpose}_deny_cidrs"
        if host is not None and port is not None and (_host_key(host), port) in self.trusted:
            return None  # an operator configured this host: its addresses are trusted
        if any(_within(ip, net) for net in self.allow):
            return None
        found = match(ip, NOT_PUBLIC)
        if found is not None:
            return f"not a public address: {found[1].owner} (allow it with {self.purpose}_allow_cidrs)"
        return None

    def check_literal(self, url: URL) -> None:
        """Refuse a URL whose host is a refused IP literal (names are checked by the resolver)."""
        host = (url.host or "").strip("[]")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return
        why = self.refusal(ip, host, url.port)
        if why is not None:
            raise EgressRefused(host, host, why)


def _within(ip: IPAddress, net: IPNetwork) -> bool:
    return ip.version == net.version and ip in net


class CheckingResolver(AbstractResolver):
    """Resolves with the default resolver and keeps only the addresses the policy allows."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed, refused = [], None
        for r in results:
            why = self.policy.refusal(r["host"], host, port)
            if why is None:
                allowed.append(r)
            elif refused is None:
                refused = EgressRefused(host, r["host"], why)
        if not allowed:
            raise refused or OSError(f"{host} has no address")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class EgressConnector(aiohttp.TCPConnector):
    """A TCP connector that checks IP literals itself and names through :class:`CheckingResolver`."""

    def __init__(self, policy: AddressPolicy, **kwargs: Any) -> None:
        super().__init__(resolver=CheckingResolver(policy), **kwargs)
        self.policy = policy

    async def connect(self, req: aiohttp.ClientRequest, traces: Any, timeout: aiohttp.ClientTimeout
                      ) -> Any:
        try:
            self.policy.check_literal(req.url)
        except EgressRefused as exc:
            raise aiohttp.ClientConnectorError(req.connection_key, exc) from None
        return await super().connect(req, traces, timeout)


class RedirectRefused(aiohttp.ClientError):
    """A webhook receiver answered a redirect; webhooks never follow one."""


async def _refuse_redirect(session: aiohttp.ClientSession, ctx: Any, params: aiohttp.TraceRequestRedirectParams
                           ) -> None:
    location = params.response.headers.get("Location", "")
    params.response.close()
    raise RedirectRefused(f"HTTP {params.response.status} redirect to {public_url(location)} not followed")


def new_session(policy: AddressPolicy, user_agent: str = USER_AGENT, limit: int = 100, limit_per_host: int = 0,
                refuse_redirects: bool | None = None, **session_kw: Any) -> aiohttp.ClientSession:
    """The only way mediasrv makes an outbound HTTP client: every connection under *policy*.

    A webhook session (or any with *refuse_redirects*) also refuses redirects even if a caller
    forgets ``allow_redirects=False``.
    """
    traces = []
    if refuse_redirects or (refuse_redirects is None and policy.purpose is Purpose.WEBHOOK):
        trace = aiohttp.TraceConfig()
        trace.on_request_redirect.append(_refuse_redirect)
        traces.append(trace)
    connector = EgressConnector(policy, limit=limit, limit_per_host=limit_per_host)
    return aiohttp.ClientSession(connector=connector, headers={"User-Agent": user_agent}, trace_configs=traces,
                                 trust_env=False, **session_kw)


def refusal_of(exc: BaseException) -> EgressRefused | None:
    """The policy refusal behind an aiohttp error (connector or DNS error), if that is what it was."""
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, EgressRefused):
        return exc.os_error
    cause = exc.__cause__ or exc.__context__
    return cause if isinstance(cause, EgressRefused) else None


def public_url(url: str | URL) -> str:
    """The URL as it may appear in messages and logs: no credentials, no query string."""
    try:
        u = URL(url) if isinstance(url, str) else url
        return str(u.with_user(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return str(url).split("?", 1)[0][:200]


@dataclass
class EgressSettings:
    """The operator's lists, and the URLs they configured (whose hosts are trusted for webhooks)."""

    fetch_allow_cidrs: list[str] = field(default_factory=list)
    fetch_deny_cidrs: list[str] = field(default_factory=list)
    webhook_allow_cidrs: list[str] = field(default_factory=list)
    webhook_deny_cidrs: list[str] = field(default_factory=list)
    configured_urls: list[str] = field(default_factory=list)

    @classmethod
    def from_settings(cls, s: Settings) -> EgressSettings:
        urls = [s.webhook_url, s.telnyx_webhook_url, s.acs_callback_url, s.bandwidth_answer_url]
        return cls(list(s.fetch_allow_cidrs), list(s.fetch_deny_cidrs), list(s.webhook_allow_cidrs),
                   list(s.webhook_deny_cidrs), [u for u in urls if u])


class Egress:
    """The server's two policies (``fetch`` and ``webhook``) and the session factory for each."""

    def __init__(self, settings: EgressSettings | None = None) -> None:
        self.settings = s = settings or EgressSettings()
        self.fetch = AddressPolicy.from_cidrs(s.fetch_allow_cidrs, s.fetch_deny_cidrs, Purpose.FETCH)
        self.webhook = AddressPolicy.from_cidrs(s.webhook_allow_cidrs, s.webhook_deny_cidrs, Purpose.WEBHOOK,
                                                s.configured_urls)

    def policy(self, purpose: Purpose) -> AddressPolicy:
        return self.fetch if purpose is Purpose.FETCH else self.webhook

    def session(self, purpose: Purpose, user_agent: str = USER_AGENT, **kw: Any) -> aiohttp.ClientSession:
        return new_session(self.policy(purpose), user_agent, **kw)
