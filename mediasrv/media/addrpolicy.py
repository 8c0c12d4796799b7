"""Where RTP may be sent: the media address policy.

A SIP peer names the address our RTP goes to (the SDP ``c=``/``m=`` lines, or, with symmetric
RTP, the source of its packets). Without a check anyone who reaches the SIP port can make the
server stream 50 packets/s at a third party, at a metadata service or at a whole multicast
group. Every media destination therefore passes :meth:`MediaAddressPolicy.check` before it is
used: in the SIP layer before a call is accepted (refused → 488), and again in the media plane
before a leg is pointed at it (defence in depth).

Always refused, whatever the configuration: the egress policy's table
(``egress_denylist.ALWAYS_REFUSED``: unspecified, broadcast, multicast, link-local, reserved
(240/4) and every cloud metadata / platform service address, and any IPv4 address of those
embedded in an IPv6 one), which does not depend on how Python's ``ipaddress`` classifies
addresses. ``media_deny_cidrs`` adds the operator's own networks. Loopback and
private networks are allowed: trunks and SBCs live there.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..egress_denylist import ALWAYS_REFUSED, match

__all__ = ["ALWAYS_DENIED", "MediaAddressPolicy", "parse_ip_literal"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The always-refused list is the egress policy's (egress_denylist.ALWAYS_REFUSED): one table, with
# who uses each address, applied to RTP destinations and to outbound HTTP alike, IPv4 addresses
# embedded in IPv6 (mapped, NAT64, 6to4, Teredo, ...) included. Kept here as (cidr, owner) pairs
# for callers that list it.
ALWAYS_DENIED: tuple[tuple[str, str], ...] = tuple((str(row.network), row.owner) for row in ALWAYS_REFUSED)


def _mapped(net: ipaddress.IPv4Network) -> ipaddress.IPv6Network:
    """``::ffff:a.b.c.d/(96+n)``: the same IPv4 network as an IPv6 socket would reach it."""
    return ipaddress.IPv6Network((int(ipaddress.IPv6Address("::ffff:0:0")) | int(net.network_address),
                                  96 + net.prefixlen))


def parse_ip_literal(text: str) -> IpAddress | None:
    """*text* as an IP literal, or None: no host names, no IPv6 zone ids (``%eth0``), nothing else."""
    if not text or "%" in text or not text.isascii() or not text.isprintable():
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass
class MediaAddressPolicy:
    """Refuses media destinations on the always-denied list or in ``deny_cidrs``."""

    deny_cidrs: list[str] = field(default_factory=list)
    _deny: list[tuple[IpNetwork, str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        deny: list[tuple[IpNetwork, str]] = []
        for cidr in self.deny_cidrs:
            try:
                net = ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(f"bad CIDR in media_deny_cidrs: {cidr!r}") from exc
            deny.append((net, "denied by media_deny_cidrs"))
            if isinstance(net, ipaddress.IPv4Network):
                deny.append((_mapped(net), "denied by media_deny_cidrs (IPv4-mapped)"))
        self._deny = deny

    def check(self, host: str) -> str | None:
        """Why RTP must not go to *host*, or None when it may (*host* must be an IP literal)."""
        ip = parse_ip_literal(host)
        if ip is None:
            return "not an IP address literal"
        found = match(ip, ALWAYS_REFUSED)
        if found is not None:
            return f"{found[1].owner} address"
        for net, why in self._deny:
            if ip.version == net.version and ip in net:
                return why
        return None

    def allows(self, addr: tuple[str, int]) -> bool:
        """Whether *addr* (host, port) is a usable RTP destination."""
        return 0 < addr[1] < 65536 and self.check(addr[0]) is None
