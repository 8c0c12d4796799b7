"""Seeded byte and token mutations: case *i* of a run with seed *s* is always the same input."""

from __future__ import annotations

import random
import re

INTERESTING_BYTES = b"\x00\xff\x7f\x80\r\n:; <>@%\"',=[]\\/\t"
INTERESTING_INTS = (b"0", b"-1", b"65535", b"65536", b"2147483647", b"2147483648", b"4294967296",
                    b"18446744073709551616", b"9" * 40, b"-2147483649")
LONG_RUNS = (b"a", b"A0", b" ", b"\t", b":", b"<", b"\"", b"%", b"@", b";", b",", b"=", b"\\", b"!")
_NUM = re.compile(rb"\d+")


def _line_op(data: bytearray, rnd: random.Random) -> bytearray:
    lines = bytes(data).split(b"\n")
    if len(lines) < 2:
        return data
    i = rnd.randrange(len(lines))
    op = rnd.randrange(4)
    if op == 0:
        lines.insert(i, lines[i])  # duplicate a line
    elif op == 1:
        del lines[i]
    elif op == 2:
        j = rnd.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    else:
        lines[i:i + 1] = [lines[i]] * rnd.choice((10, 100, 1000))
    return bytearray(b"\n".join(lines))


def mutate(seed_input: bytes, rnd: random.Random, max_len: int = 60000) -> bytes:
    """1-4 stacked mutations of *seed_input*: flips, interesting bytes/integers, long token runs
    followed by a byte that breaks the token (what makes backtracking show), splices, line ops."""
    data = bytearray(seed_input)
    for _ in range(rnd.choice((1, 1, 2, 3, 4))):
        n = len(data)
        op = rnd.randrange(10)
        pos = rnd.randrange(n + 1) if n else 0
        if op == 0 and n:
            data[min(pos, n - 1)] ^= 1 << rnd.randrange(8)
        elif op == 1 and n:
            data[min(pos, n - 1)] = rnd.choice(INTERESTING_BYTES)
        elif op == 2 and n:
            end = min(n, pos + rnd.choice((1, 2, 4, 16, 64, 512)))
            del data[pos:end]
        elif op == 3:
            data[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.choice((1, 2, 8, 32))))
        elif op == 4:
            run = rnd.choice(LONG_RUNS) * rnd.choice((64, 512, 2048, 8192))
            data[pos:pos] = run + bytes([rnd.choice(INTERESTING_BYTES)])
        elif op == 5:
            nums = list(_NUM.finditer(data))
            if nums:
                m = rnd.choice(nums)
                data[m.start():m.end()] = rnd.choice(INTERESTING_INTS)
        elif op == 6 and n:
            a = rnd.randrange(n)
            b = min(n, a + rnd.randrange(1, 256))
            data[pos:pos] = data[a:b] * rnd.choice((1, 2, 16))
        elif op == 7:
            data = _line_op(data, rnd)
        elif op == 8 and n:
            del data[rnd.randrange(n):]  # truncate
        else:
            data[pos:pos] = rnd.choice((b"\r\n", b"\r\n\r\n", b"\x00", b"\n", b"\r", b"%s%n%x"))
    return bytes(data[:max_len])
