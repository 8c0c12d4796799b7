"""The addresses outbound connections never reach, and those they reach only when allowed, as data.

Why a table and not ``ipaddress``'s ``is_global`` / ``is_private``: Python's classification changes
between versions (3.11 called Oracle's metadata address ``192.0.0.192`` global; 3.12.4 and 3.13
changed several ranges), and it knows nothing of the cloud services that sit on ordinary
addresses (Azure's ``168.63.129.16`` is public space, Alibaba's ``100.100.100.200`` is CGNAT).
Every decision here is plain network membership on these tables, so it stays the same whatever
the interpreter.  ``ALWAYS_REFUSED`` is meant to be imported by other policies too (the media
plane's RTP destination policy): each entry names its network and who uses it.

An IPv6 address can carry an IPv4 destination (IPv4-mapped, IPv4-compatible, NAT64, 6to4,
Teredo, ISATAP); :func:`embedded_ipv4` extracts every such candidate so the tables apply to it too.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class DeniedNet:
    """One refused network and whose it is (shown in refusals, listed in the README)."""

    network: IPNetwork
    owner: str

    def __contains__(self, ip: IPAddress) -> bool:
        return ip.version == self.network.version and ip in self.network


def _t(*rows: tuple[str, str]) -> tuple[DeniedNet, ...]:
    return tuple(DeniedNet(ipaddress.ip_network(net), owner) for net, owner in rows)


# Refused for every purpose, whatever an allow-list says.  Specific service addresses are listed
# even when a wider row covers them, so a refusal names the service and the tests check each one.
ALWAYS_REFUSED: tuple[DeniedNet, ...] = _t(
    ("169.254.169.254/32", "instance metadata: AWS EC2, GCP, Azure IMDS, OpenStack, DigitalOcean, Hetzner, "
                           "Oracle OCI, IBM Cloud, Huawei, Vultr, Linode/Akamai, Exoscale"),
    ("169.254.169.253/32", "AWS VPC DNS resolver"),
    ("169.254.169.123/32", "AWS Time Sync (NTP)"),
    ("169.254.170.2/32", "AWS ECS task metadata and credentials"),
    ("169.254.170.23/32", "AWS EKS Pod Identity agent"),
    ("169.254.0.23/32", "Tencent Cloud metadata"),
    ("169.254.42.42/32", "Scaleway metadata"),
    ("169.254.0.0/16", "IPv4 link-local (RFC 3927): where most clouds put their metadata services"),
    ("100.100.100.200/32", "Alibaba Cloud metadata"),
    ("192.0.0.192/32", "Oracle Cloud metadata (Classic)"),
    ("168.63.129.16/32", "Azure WireServer / platform DNS and health probes"),
    ("0.0.0.0/8", "'this network' (RFC 1122); 0.0.0.0 reaches the local host"),
    ("224.0.0.0/4", "IPv4 multicast"),
    ("255.255.255.255/32", "IPv4 limited broadcast"),
    ("240.0.0.0/4", "IPv4 reserved (class E)"),
    ("fd00:ec2::254/128", "AWS EC2 instance metadata (IPv6)"),
    ("fd00:ec2::253/128", "AWS VPC DNS resolver (IPv6)"),
    ("fd00:ec2::123/128", "AWS Time Sync (NTP, IPv6)"),
    ("fd00:ec2::23/128", "AWS EKS Pod Identity agent (IPv6)"),
    ("fd20:ce::254/128", "GCP metadata (IPv6)"),
    ("fd00:c1::a9fe:a9fe/128", "Oracle OCI instance metadata (IPv6)"),
    ("fd00:42::42/128", "Scaleway metadata (IPv6)"),
    ("fd00:a9fe:a9fe::1/128", "Linode/Akamai metadata (IPv6)"),
    ("fe80::/10", "IPv6 link-local (OpenStack and Linode also serve metadata on fe80::a9fe:a9fe)"),
    ("::/128", "IPv6 unspecified"),
    ("ff00::/8", "IPv6 multicast"),
)

# Refused unless the purpose's allow-list (or a configured URL's host) admits them: networks that
# are not the public Internet.  Operators open the ones their receivers live on.
NOT_PUBLIC: tuple[DeniedNet, ...] = _t(
    ("127.0.0.0/8", "IPv4 loopback"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("100.64.0.0/10", "carrier-grade NAT shared space (RFC 6598)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.2.0/24", "documentation TEST-NET-1"),
    ("198.51.100.0/24", "documentation TEST-NET-2"),
    ("203.0.113.0/24", "documentation TEST-NET-3"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("192.88.99.0/24", "deprecated 6to4 relay anycast"),
    ("::1/128", "IPv6 loopback"),
    ("::/96", "IPv4-compatible IPv6 (deprecated)"),
    ("::ffff:0:0:0/96", "IPv4-translated IPv6 (RFC 2765)"),
    ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001::/23", "IETF protocol assignments: Teredo, benchmarking, ORCHID"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("5f00::/16", "SRv6 SIDs (RFC 9602)"),
    ("fc00::/7", "unique local (private IPv6)"),
    ("fec0::/10", "site-local (deprecated)"),
)

_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
# RFC 6052 §2.2: where the IPv4 bytes sit for each NAT64 prefix length (byte 8, the "u" octet, is skipped)
_RFC6052_OFFSETS = {48: (6, 7, 9, 10), 56: (7, 9, 10, 11), 64: (9, 10, 11, 12), 96: (12, 13, 14, 15)}
_ISATAP_IIDS = (b"\x00\x00\x5e\xfe", b"\x02\x00\x5e\xfe")

# How each IPv4 embedding is recognised (for the README; the code is embedded_ipv4 below)
EMBEDDINGS: tuple[tuple[str, str], ...] = (
    ("::ffff:0:0/96", "IPv4-mapped: the last 32 bits"),
    ("::/96", "IPv4-compatible (deprecated): the last 32 bits"),
    ("::ffff:0:0:0/96", "IPv4-translated: the last 32 bits"),
    ("64:ff9b::/96", "NAT64 well-known prefix: the last 32 bits"),
    ("64:ff9b:1::/48", "local-use NAT64: the IPv4 at every RFC 6052 position (/48, /56, /64, /96)"),
    ("2002::/16", "6to4: bits 16-47"),
    ("2001::/32", "Teredo: the server (bits 32-63) and the client (last 32 bits, inverted)"),
    ("any ::0:5efe:a.b.c.d / ::200:5efe:a.b.c.d", "ISATAP interface identifier: the last 32 bits"),
)


def _v4(packed: bytes, offsets: tuple[int, ...] = (12, 13, 14, 15)) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(bytes(packed[i] for i in offsets))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """Every IPv4 address *ip* may deliver to through a transition mechanism, with the mechanism's name."""
    packed = ip.packed
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if ip in _MAPPED:
        found.append(("IPv4-mapped", _v4(packed)))
    elif ip in _TRANSLATED:
        found.append(("IPv4-translated", _v4(packed)))
    elif ip in _COMPATIBLE and int(ip) > 1:  # :: and ::1 are themselves, not embeddings
        found.append(("IPv4-compatible", _v4(packed)))
    if ip in _NAT64:
        found.append(("NAT64", _v4(packed)))
    if ip in _NAT64_LOCAL:
        found += [(f"local NAT64 /{n}", _v4(packed, offs)) for n, offs in _RFC6052_OFFSETS.items()]
    if ip in _SIX_TO_FOUR:
        found.append(("6to4", _v4(packed, (2, 3, 4, 5))))
    if ip in _TEREDO:
        found.append(("Teredo server", _v4(packed, (4, 5, 6, 7))))
        found.append(("Teredo client", ipaddress.IPv4Address(int.from_bytes(packed[12:16], "big") ^ 0xFFFFFFFF)))
    if packed[8:12] in _ISATAP_IIDS:
        found.append(("ISATAP", _v4(packed)))
    return found


def match(ip: IPAddress, table: tuple[DeniedNet, ...]) -> tuple[str, DeniedNet] | None:
    """The first row of *table* holding *ip* or an IPv4 address it embeds: (what matched, the row)."""
    candidates: list[tuple[str, IPAddress]] = [(str(ip), ip)]
    if isinstance(ip, ipaddress.IPv6Address):
        candidates += [(f"{ip} ({how} {v4})", v4) for how, v4 in embedded_ipv4(ip)]
    for label, addr in candidates:
        for row in table:
            if addr in row:
                return label, row
    return None


def always_refused(address: str | IPAddress) -> DeniedNet | None:
    """The ALWAYS_REFUSED row for *address* (or an IPv4 it embeds), or None: for other policies to reuse."""
    ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
    found = match(ip, ALWAYS_REFUSED)
    return found[1] if found else None
