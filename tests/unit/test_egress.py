"""The egress policy: the always-refused table address by address, every IPv4 embedding, the allow and
deny lists per purpose, trusted configured hosts, and real sessions against loopback receivers."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from mediasrv.egress import AddressPolicy, EgressRefused, Purpose, RedirectRefused, new_session, refusal_of
from mediasrv.egress_denylist import ALWAYS_REFUSED, NOT_PUBLIC, always_refused, embedded_ipv4

REPO = Path(__file__).resolve().parents[2]
EVERYTHING = ["0.0.0.0/0", "::/0"]

# (address, who uses it): each must be refused whatever the allow-lists say
NAMED = [
    ("169.254.169.254", "AWS EC2"), ("169.254.169.254", "GCP"), ("169.254.169.254", "Azure"),
    ("169.254.169.254", "OpenStack"), ("169.254.169.254", "DigitalOcean"), ("169.254.169.254", "Hetzner"),
    ("169.254.169.253", "AWS VPC DNS"), ("169.254.169.123", "AWS Time Sync"), ("169.254.170.2", "AWS ECS"),
    ("169.254.170.23", "EKS Pod Identity"), ("169.254.0.23", "Tencent"), ("169.254.42.42", "Scaleway"),
    ("169.254.1.1", "IPv4 link-local"), ("100.100.100.200", "Alibaba"), ("192.0.0.192", "Oracle Cloud"),
    ("168.63.129.16", "Azure WireServer"), ("0.0.0.0", "this network"), ("0.1.2.3", "this network"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"), ("fd00:ec2::254", "AWS EC2 instance metadata"), ("fd00:ec2::253", "AWS VPC DNS"),
    ("fd00:ec2::123", "AWS Time Sync"), ("fd00:ec2::23", "EKS Pod Identity"), ("fd20:ce::254", "GCP"),
    ("fd00:c1::a9fe:a9fe", "Oracle OCI"), ("fd00:42::42", "Scaleway"), ("fd00:a9fe:a9fe::1", "Linode"),
    ("fe80::1", "IPv6 link-local"), ("fe80::a9fe:a9fe", "IPv6 link-local"), ("::", "unspecified"),
    ("ff02::1", "IPv6 multicast"),
]
METADATA_V4 = ["169.254.169.254", "192.0.0.192", "100.100.100.200", "168.63.129.16", "169.254.170.2"]


def embeddings_of(v4: str) -> list[str]:
    """Every IPv6 spelling that delivers to (or may deliver to) *v4*."""
    n = int(ipaddress.IPv4Address(v4))
    b = ipaddress.IPv4Address(v4).packed
    hexv4 = f"{n >> 16:x}:{n & 0xFFFF:x}"
    out = [f"::ffff:{v4}", f"::{v4}", f"::ffff:0:{v4}", f"64:ff9b::{v4}", f"2002:{hexv4}::1",
           f"2001:0:4136:e378:8000:63bf:{(n ^ 0xFFFFFFFF) >> 16:x}:{(n ^ 0xFFFFFFFF) & 0xFFFF:x}",  # Teredo client
           f"2001:0:{hexv4}::1",  # Teredo server
           f"2001:db8:1:2:0:5efe:{hexv4}", f"2606:4700:1:2:200:5efe:{hexv4}"]  # ISATAP
    # local-use NAT64 at each RFC 6052 position
    for offsets in ((6, 7, 9, 10), (7, 9, 10, 11), (9, 10, 11, 12), (12, 13, 14, 15)):
        packed = bytearray(ipaddress.IPv6Address("64:ff9b:1::").packed)
        for i, byte in zip(offsets, b, strict=True):
            packed[i] = byte
        out.append(str(ipaddress.IPv6Address(bytes(packed))))
    return out


@pytest.mark.parametrize(("addr", "owner"), NAMED)
@pytest.mark.parametrize("purpose", list(Purpose))
def test_every_named_address_is_always_refused(addr: str, owner: str, purpose: Purpose) -> None:
    # allow everything, and even configure a URL on that very address: still refused
    policy = AddressPolicy.from_cidrs(EVERYTHING, (), purpose, [f"http://[{addr}]:80/" if ":" in addr
                                                              else f"http://{addr}:80/"])
    why = policy.refusal(addr, addr, 80)
    assert why is not None and "always refused" in why
    row = always_refused(addr)
    assert row is not None and owner in row.owner, (addr, row)


@pytest.mark.parametrize("row", ALWAYS_REFUSED, ids=lambda r: str(r.network))
def test_every_row_refuses_its_first_and_last_address(row) -> None:
    policy = AddressPolicy.from_cidrs(EVERYTHING)
    for ip in (row.network.network_address, row.network.broadcast_address):
        assert policy.refusal(ip) is not None, ip


@pytest.mark.parametrize("v4", METADATA_V4)
def test_every_ipv4_embedding_of_a_refused_address_is_refused(v4: str) -> None:
    policy = AddressPolicy.from_cidrs(EVERYTHING, (), Purpose.WEBHOOK)
    for v6 in embeddings_of(v4):
        assert ipaddress.IPv4Address(v4) in [a for _, a in embedded_ipv4(ipaddress.IPv6Address(v6))] \
            or ipaddress.IPv6Address(v6).ipv4_mapped == ipaddress.IPv4Address(v4), v6
        why = policy.refusal(v6)
        assert why is not None and "always refused" in why, (v6, why)


def test_public_addresses_and_their_embeddings_pass() -> None:
    policy = AddressPolicy()
    for addr in ("8.8.8.8", "1.1.1.1", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8",
                 "168.63.129.17", "9.9.9.9"):
        assert policy.refusal(addr) is None, addr


def test_independent_of_pythons_classification() -> None:
    """192.0.0.192 and 168.63.129.16 are refused whatever ``is_global`` says in this interpreter."""
    policy = AddressPolicy.from_cidrs(EVERYTHING)
    for addr in ("192.0.0.192", "168.63.129.16", "100.100.100.200"):
        assert policy.refusal(addr) is not None
    # and the tables never call ipaddress's classification
    for module in ("egress.py", "egress_denylist.py"):
        text = (REPO / "mediasrv" / module).read_text()
        assert not re.search(r"\.is_(global|private|link_local|reserved|multicast|loopback)\b", text), module


@pytest.mark.parametrize("row", NOT_PUBLIC, ids=lambda r: str(r.network))
def test_not_public_rows_refused_by_default_and_allowed_when_listed(row) -> None:
    # a sample inside the row that embeds only public IPv4 addresses (zeros would embed 0.0.0.0/8)
    offsets = [0, 1] if row.network.version == 4 else \
        [0, 1, 0x08080808, int(ipaddress.IPv6Address("::808:808:808:808:808")),
         int(ipaddress.IPv6Address("0:0:808:808::f7f7:f7f7"))]
    samples = [row.network.network_address + o for o in offsets if o < row.network.num_addresses]
    ip = next((a for a in samples if always_refused(a) is None), None)
    assert ip is not None, f"no address of {row.network} escapes the always-refused table"
    assert AddressPolicy(purpose=Purpose.WEBHOOK).refusal(ip) is not None
    allowed = AddressPolicy.from_cidrs([str(row.network)], (), Purpose.WEBHOOK)
    assert allowed.refusal(ip) is None, ip
    why = AddressPolicy(purpose=Purpose.WEBHOOK).refusal(ip)
    assert why is not None and "webhook_allow_cidrs" in why


def test_deny_beats_allow_and_trust_and_embeddings_are_denied_too() -> None:
    policy = AddressPolicy.from_cidrs(["10.0.0.0/8"], ["10.9.0.0/16", "8.8.8.0/24"], Purpose.WEBHOOK,
                                      ["http://10.9.0.1:8000/hook"])
    assert policy.refusal("10.1.1.1") is None
    assert policy.refusal("10.9.0.1", "10.9.0.1", 8000) == "in webhook_deny_cidrs"
    assert policy.refusal("2002:808:808::1") == "in webhook_deny_cidrs"  # 6to4 of 8.8.8.8
    assert policy.refusal("8.8.4.4") is None


def test_configured_host_is_trusted_on_its_port_only() -> None:
    policy = AddressPolicy.from_cidrs((), (), Purpose.WEBHOOK, ["http://hooks.internal:9000/x", "https://[::1]/y"])
    assert policy.refusal("10.0.0.5", "hooks.internal", 9000) is None
    assert policy.refusal("10.0.0.5", "HOOKS.internal", 9000) is None
    assert policy.refusal("10.0.0.5", "hooks.internal.", 9000) is None  # the root label changes nothing
    assert policy.refusal("10.0.0.5", "hooks.internal", 22) is not None
    assert policy.refusal("10.0.0.5", "other.internal", 9000) is not None
    assert policy.refusal("::1", "::1", 443) is None
    assert policy.refusal("169.254.169.254", "hooks.internal", 9000) is not None  # trust never opens metadata


def test_scoped_and_malformed_addresses() -> None:
    policy = AddressPolicy.from_cidrs(EVERYTHING)
    assert "scoped" in (policy.refusal("fe80::1%eth0") or "")
    assert policy.refusal("not-an-ip") == "not an IP address"


def test_readme_lists_every_always_refused_network() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Addresses never connected to", 1)[1].split("\n## ", 1)[0]
    for row in ALWAYS_REFUSED:
        assert f"`{row.network}`" in section, row.network


def test_no_http_client_outside_egress() -> None:
    """Every outbound HTTP connection goes through egress.new_session (demo.py and client.py, the CLI, are
    clients of our own API at an operator-given URL, not connections the server makes for a caller)."""
    offenders = []
    for path in (REPO / "mediasrv").rglob("*.py"):
        if path.name in ("egress.py", "demo.py", "client.py"):
            continue
        text = path.read_text()
        if re.search(r"aiohttp\.(ClientSession|TCPConnector|request)\(|ClientSession\(|TCPConnector\(", text):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


# -- real sessions -------------------------------------------------------------------------------
class Counting:
    def __init__(self) -> None:
        self.connections = 0


async def serve(host: str, handler, counter: Counting):
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    factory = runner.server

    def counted():
        counter.connections += 1
        return factory()

    srv = await asyncio.get_running_loop().create_server(counted, host, 0)
    return srv, runner, srv.sockets[0].getsockname()[1]


async def test_sessions_refuse_literals_names_and_redirects() -> None:
    victim = Counting()
    front = Counting()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    vsrv, vrunner, vport = await serve("127.0.0.2", ok, victim)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.2:{vport}/x")

    fsrv, frunner, fport = await serve("127.0.0.1", redirect, front)
    policy = AddressPolicy.from_cidrs(["127.0.0.1/32"], (), Purpose.WEBHOOK)
    session = new_session(policy)
    try:
        for url in (f"http://127.0.0.2:{vport}/", f"http://[::ffff:127.0.0.2]:{vport}/",
                    "http://169.254.169.254/latest/", "http://[fd00:ec2::254]/", "http://[::ffff:a9fe:a9fe]/",
                    "http://169.254.169.254./latest/", "http://2852039166/", "http://0xa9.0xfe.0xa9.0xfe/",
                    "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:a9fe:a9fe::1]/"):
            with pytest.raises(aiohttp.ClientError) as info:
                async with session.get(url):
                    pass
            refused = refusal_of(info.value)
            assert isinstance(refused, EgressRefused) or "not a canonical IPv4" in str(info.value), (url, info.value)
        # a name is checked after DNS: localhost resolves to loopback, refused without an allow-list
        strict = new_session(AddressPolicy(purpose=Purpose.WEBHOOK))
        try:
            with pytest.raises(aiohttp.ClientError) as info:
                async with strict.get(f"http://localhost:{fport}/"):
                    pass
            refused = refusal_of(info.value)
            assert isinstance(refused, EgressRefused) and "loopback" in refused.why
        finally:
            await strict.close()
        # a webhook session never follows a redirect, even when asked to
        with pytest.raises(RedirectRefused, match="302"):
            async with session.post(f"http://127.0.0.1:{fport}/", data=b"{}", allow_redirects=True):
                pass
        async with session.post(f"http://127.0.0.1:{fport}/", allow_redirects=False) as resp:
            assert resp.status == 302
        assert victim.connections == 0 and front.connections >= 1
        # the fetch purpose follows redirects only by hand (content/fetch.py), each hop checked by the connector
        fetch = new_session(AddressPolicy.from_cidrs(["127.0.0.1/32"]))
        try:
            with pytest.raises(aiohttp.ClientError) as info:
                async with fetch.get(f"http://127.0.0.1:{fport}/"):
                    pass
            assert refusal_of(info.value) is not None
        finally:
            await fetch.close()
        assert victim.connections == 0
    finally:
        await session.close()
        for srv, runner in ((vsrv, vrunner), (fsrv, frunner)):
            srv.close()
            await runner.cleanup()


def test_settings_carry_the_lists_and_configured_urls() -> None:
    from mediasrv.config import ConfigError, load_settings
    from mediasrv.egress import Egress, EgressSettings

    s = load_settings({}, {"MEDIASRV_WEBHOOK_ALLOW_CIDRS": "10.20.0.0/16, fd12::/16",
                           "MEDIASRV_WEBHOOK_DENY_CIDRS": "10.20.9.0/24",
                           "MEDIASRV_ACS_CALLBACK_URL": "http://acs-hooks.internal:7000/cb"})
    egress = Egress(EgressSettings.from_settings(s))
    assert egress.webhook.refusal("10.20.1.1") is None
    assert egress.webhook.refusal("10.20.9.1") == "in webhook_deny_cidrs"
    assert egress.webhook.refusal("192.168.1.1", "acs-hooks.internal", 7000) is None  # configured: trusted
    assert egress.fetch.refusal("10.20.1.1") is not None  # the fetch purpose has its own (empty) list
    with pytest.raises(ConfigError, match="(?i)webhook_allow_cidrs"):
        load_settings({}, {"MEDIASRV_WEBHOOK_ALLOW_CIDRS": "10.0.0.0/33"})
