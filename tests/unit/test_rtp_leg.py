"""PortAllocator and RtpLeg on real loopback sockets."""

import socket

import pytest

from mediasrv.rtp.leg import PortAllocator, RtpLeg
from mediasrv.rtp.packet import parse


def _free_block(size: int = 8) -> int:
    """An even port starting *size* consecutive ports that are free right now (other tests run too)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            lo = s.getsockname()[1] & ~1
        held = []
        try:
            for port in range(lo, lo + size):
                t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(t)
                t.bind(("127.0.0.1", port))
            return lo
        except OSError:
            continue
        finally:
            for t in held:
                t.close()
    raise RuntimeError("no free block of ports")


def test_even_ports_rtcp_bound_and_busy_ports_skipped():
    lo = _free_block()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", lo))  # the pair holding this busy port must be skipped
    alloc = PortAllocator("127.0.0.1", lo, lo + 8)
    pairs = [alloc.bind_pair() for _ in range(3)]
    try:
        ports = [rtp.getsockname()[1] for rtp, _ in pairs]
        assert all(p % 2 == 0 for p in ports) and lo not in ports
        assert [rtcp.getsockname()[1] for _, rtcp in pairs] == [p + 1 for p in ports]
        with pytest.raises(RuntimeError):
            alloc.bind_pair()
        alloc.free(ports[0])
        pairs[0][0].close()
        pairs[0][1].close()
        rtp, rtcp = alloc.bind_pair()
        pairs[0] = (rtp, rtcp)
        assert rtp.getsockname()[1] == ports[0]
    finally:
        probe.close()
        for a, b in pairs:
            a.close()
            b.close()


def test_port_held_by_another_reuseport_socket_is_skipped():
    """Another process's SO_REUSEPORT socket (a second mediasrv on an overlapping range) must not share a port."""
    lo = _free_block()
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", lo))
    alloc = PortAllocator("127.0.0.1", lo, lo + 4)
    rtp, rtcp = alloc.bind_pair()
    try:
        assert rtp.getsockname()[1] == lo + 2
    finally:
        for s in (other, rtp, rtcp):
            s.close()


def test_leg_header_fields_continuity_and_random_start():
    alloc = PortAllocator("127.0.0.1", 41000, 41100)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(1)
    legs = [RtpLeg(f"c{i}", *alloc.bind_pair()) for i in range(2)]
    try:
        assert len({(leg.ssrc, leg.seq, leg.timestamp) for leg in legs}) == 2  # random per leg
        leg = legs[0]
        leg.payload_type = 8
        leg.set_remote(peer.getsockname())
        seq0, ts0 = leg.seq, leg.timestamp
        leg.send(b"\xd5" * 160, 160)
        leg.send(b"\xd5" * 160, 160)
        leg.skip(160)  # a packet time with nothing sent: the next one starts a talkspurt
        leg.send(b"\xd5" * 160, 160)
        got = []
        for _ in range(3):
            data, addr = peer.recvfrom(2048)
            got.append(parse(data))
            assert addr[1] == leg.port  # symmetric RTP: sent from the advertised port
        assert [h.marker for h in got] == [True, False, True]
        assert [h.seq for h in got] == [seq0, (seq0 + 1) & 0xFFFF, (seq0 + 2) & 0xFFFF]
        assert [h.timestamp for h in got] == [ts0, (ts0 + 160) % 2**32, (ts0 + 480) % 2**32]
        assert {h.ssrc for h in got} == {leg.ssrc} and {h.payload_type for h in got} == {8}
        assert leg.packets_sent == 3 and leg.bytes_sent == 480
    finally:
        peer.close()
        for leg in legs:
            leg.close(send_bye=False)
