"""Where RTP may be sent: the media address policy.

A SIP peer names the address our RTP goes to (the SDP ``c=``/``m=`` lines, or, with symmetric
RTP, the source of its packets). Without a check anyone who reaches the SIP port can make the
server stream 50 packets/s at a third party, at a metadata service or at a whole multicast
group. Every media destination therefore passes :meth:`MediaAddressPolicy.check` before it is
used: in the SIP layer before a call is accepted (refused → 488), and again in the media plane
before a leg is pointed at it (defence in depth).

Always refused, whatever the configuration (the list is data, checked by its own test address
by address, and does not depend on how Python's ``ipaddress`` classifies addresses, which
changed between releases): unspecified, broadcast, multicast, link-local, reserved (240/4) and
the cloud metadata / link-local service addresses, plus each IPv4 entry's IPv4-mapped
(``::ffff:a.b.c.d``) form. ``media_deny_cidrs`` adds the operator's own networks. Loopback and
private networks are allowed: trunks and SBCs live there.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

__all__ = ["ALWAYS_DENIED", "MediaAddressPolicy", "parse_ip_literal"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# (network, why): the reason goes into the 488's Warning and the log line.
ALWAYS_DENIED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),
    ("::/128", "unspecified"),
    ("255.255.255.255/32", "broadcast"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
    ("169.254.0.0/16", "link-local"),  # includes 169.254.169.254 (AWS, GCP, Azure, OpenStack, ...) and 169.254.170.2 (ECS)
    ("fe80::/10", "link-local"),
    ("240.0.0.0/4", "reserved"),
    ("192.0.0.192/32", "cloud metadata (Oracle Cloud)"),
    ("100.100.100.200/32", "cloud metadata (Alibaba Cloud)"),
    ("168.63.129.16/32", "cloud platform service (Azure WireServer)"),
    ("fd00:ec2::254/128", "cloud metadata (AWS IPv6)"),
    ("fd00:ec2::23/128", "cloud DNS (AWS IPv6)"),
)


def _mapped(net: ipaddress.IPv4Network) -> ipaddress.IPv6Network:
    """``::ffff:a.b.c.d/(96+n)``: the same IPv4 network as an IPv6 socket would reach it."""
    return ipaddress.IPv6Network((int(ipaddress.IPv6Address("::ffff:0:0")) | int(net.network_address),
                                  96 + net.prefixlen))


def _compile(entries: tuple[tuple[str, str], ...]) -> list[tuple[IpNetwork, str]]:
    out: list[tuple[IpNetwork, str]] = []
    for cidr, why in entries:
        net = ipaddress.ip_network(cidr)
        out.append((net, why))
        if isinstance(net, ipaddress.IPv4Network):
            out.append((_mapped(net), why + " (IPv4-mapped)"))
    return out


_ALWAYS = _compile(ALWAYS_DENIED)


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
        for net, why in _ALWAYS:
            if ip.version == net.version and ip in net:
                return f"{why} address"
        for net, why in self._deny:
            if ip.version == net.version and ip in net:
                return why
        return None

    def allows(self, addr: tuple[str, int]) -> bool:
        """Whether *addr* (host, port) is a usable RTP destination."""
        return 0 < addr[1] < 65536 and self.check(addr[0]) is None
