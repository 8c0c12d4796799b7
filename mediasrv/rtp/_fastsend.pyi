"""Types of the C extension mediasrv/rtp/_fastsend.c (see that file and fastpath.py)."""

from collections.abc import Callable

class PacketState:
    fd: int
    seq: int
    marker_next: bool
    busy: bool
    ssrc: int
    timestamp: int
    payload_type: int
    samples: int
    slice_data: bytes | bytearray | None
    slice_offset: int
    slice_end: int
    slice_played: int
    slice_last_seq: int | None
    slice_last_ts: int | None
    silence: bytes | None
    packets_sent: int
    bytes_sent: int
    send_errors: int
    on_tick: Callable[[], object] | None
    def __call__(self) -> object: ...

def run_group(items: tuple[Callable[[], object], ...], /) -> list[tuple[Callable[[], object], Exception]] | None: ...
def counters() -> dict[str, int]: ...
def send_packet(fd: int, b1: int, seq: int, ts: int, ssrc: int, data: bytes, off: int, n: int, /) -> None: ...
