"""The media address policy: every always-refused address, one by one, and the operator's deny list."""

from __future__ import annotations

import pytest

from mediasrv.media.addrpolicy import ALWAYS_DENIED, MediaAddressPolicy, parse_ip_literal

REFUSED = [
    "0.0.0.0", "0.1.2.3", "::", "255.255.255.255",
    "224.0.0.1", "239.255.255.250", "ff02::1", "ff05::1:3",
    "169.254.0.1", "169.254.169.254", "169.254.170.2", "fe80::1", "febf::1",
    "240.0.0.1", "250.1.2.3",
    "192.0.0.192", "100.100.100.200", "168.63.129.16", "fd00:ec2::254",
    # the same through an IPv6 socket (IPv4-mapped)
    "::ffff:169.254.169.254", "::ffff:192.0.0.192", "::ffff:100.100.100.200", "::ffff:168.63.129.16",
    "::ffff:224.0.0.1", "::ffff:255.255.255.255", "::ffff:0.0.0.0", "::ffff:240.0.0.1",
    # shared with the egress table: embeddings and the other clouds' IPv6 metadata addresses
    "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "fd00:ec2::253", "fd20:ce::254",
]
ALLOWED = ["127.0.0.1", "10.1.2.3", "192.168.1.10", "172.16.0.5", "8.8.8.8", "192.0.0.191", "100.100.100.199",
           "::1", "2001:db8::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1"]


@pytest.mark.parametrize("addr", REFUSED)
def test_always_refused(addr: str) -> None:
    assert MediaAddressPolicy().check(addr) is not None


@pytest.mark.parametrize("addr", ALLOWED)
def test_allowed_by_default(addr: str) -> None:
    assert MediaAddressPolicy().check(addr) is None


def test_every_listed_network_and_its_mapped_form_is_refused() -> None:
    policy = MediaAddressPolicy()
    for cidr, _ in ALWAYS_DENIED:
        first = cidr.split("/")[0]
        assert policy.check(first) is not None, cidr
        if ":" not in first:
            assert policy.check(f"::ffff:{first}") is not None, cidr


def test_deny_cidrs_and_bad_cidr() -> None:
    policy = MediaAddressPolicy(["10.0.0.0/8", "2001:db8::/32"])
    assert policy.check("10.9.9.9") == "denied by media_deny_cidrs"
    assert policy.check("::ffff:10.9.9.9") is not None and policy.check("2001:db8::5") is not None
    assert policy.check("11.0.0.1") is None
    assert policy.allows(("11.0.0.1", 4000)) and not policy.allows(("11.0.0.1", 0))
    assert not policy.allows(("11.0.0.1", 65536))
    with pytest.raises(ValueError, match="media_deny_cidrs"):
        MediaAddressPolicy(["nope"])


@pytest.mark.parametrize("text", ["host.example", "127.0.0.1\x00x", "fe80::1%eth0", "127.0.0.01", "", " 1.2.3.4",
                                  "１２７.0.0.1", "1.2.3.4/32"])
def test_not_ip_literals(text: str) -> None:
    assert parse_ip_literal(text) is None
    assert MediaAddressPolicy().check(text) == "not an IP address literal"
