"""Avro longs as bytes: zig-zag, then base-128 little-endian varint.

Shared by the relay's outbox encoder and the compiled writers (``compiled.py``): the
common lengths are looked up, the rest unrolled up to six bytes.
"""

from __future__ import annotations

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def _varint(n: int) -> bytes:
    """Avro long: zigzag, then base-128 little-endian varint (unrolled up to 6 bytes:
    ids, and timestamps in milliseconds; a loop beyond)."""
    if not _INT64_MIN <= n <= _INT64_MAX:
        raise ValueError(f"{n} does not fit an Avro long")
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return bytes((z,))
    if z < 0x4000:
        return bytes((z & 0x7F | 0x80, z >> 7))
    if z < 0x200000:
        return bytes((z & 0x7F | 0x80, z >> 7 & 0x7F | 0x80, z >> 14))
    if z < 0x10000000:
        return bytes((z & 0x7F | 0x80, z >> 7 & 0x7F | 0x80, z >> 14 & 0x7F | 0x80, z >> 21))
    if z < 0x800000000:
        return bytes(
            (
                z & 0x7F | 0x80,
                z >> 7 & 0x7F | 0x80,
                z >> 14 & 0x7F | 0x80,
                z >> 21 & 0x7F | 0x80,
                z >> 28,
            )
        )
    if z < 0x40000000000:  # six bytes: timestamps in milliseconds (until the year 2248)
        return bytes(
            (
                z & 0x7F | 0x80,
                z >> 7 & 0x7F | 0x80,
                z >> 14 & 0x7F | 0x80,
                z >> 21 & 0x7F | 0x80,
                z >> 28 & 0x7F | 0x80,
                z >> 35,
            )
        )
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


# Most lengths and many ids are small: their encodings are looked up, not computed.
_SMALL = tuple(_varint(i) for i in range(1 << 14))
_SMALL_N = len(_SMALL)


def long_bytes(n: int) -> bytes:
    if 0 <= n < _SMALL_N:
        return _SMALL[n]
    return _varint(n)
