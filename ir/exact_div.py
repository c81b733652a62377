"""The exact quotient of two float32 arrays rounded half to even, in integer arithmetic (the requantization of the
learned int8 backbone: ``tinycc.ir.deep``; C: ``tcc_bp_round_div`` in backends/c/runtime/tinycc_backprop.c).

Each float is split from its bits into sign, mantissa m < 2^24 and exponent e (value m * 2^e, subnormals
included); both mantissas are normalized to [2^23, 2^24), so that |b / s| = mb / ms * 2^d lies in
(2^(d-1), 2^(d+1)); then ``mb * 2^(d+1) = q * ms + r`` (integers, below 2^58) gives |b / s| = q / 2 + (odd * ms + r)
/ (2 ms) with ``odd`` the low bit of q, which rounds half to even against ms with no rounding error anywhere.

Why not ``rint(float64(b) / float64(s))``: the float64 quotient is correctly rounded, and b - h * s for a
half-integer h is a nonzero multiple of the coarser of the two floats' units, so the exact quotient is at least
1 / (4 ms) > 2^-26 from every half-integer it is not equal to; float64's half unit below 2^27 is at most 2^-27,
so the rounding cannot reach a half-integer and rint is exact there (int8 weights always are). Between 2^27 and
2^31 (an int32 bias) the half unit grows to 2^-23 and a quotient h + 1 / (2 ms) can round onto h and then to the
wrong even neighbour (tests/test_exact_div.py holds such pairs), and avr-libc's double is 32-bit anyway: one
integer method serves every target and the simulator.
"""
from __future__ import annotations

import numpy as np

_NORMAL = np.uint32(1 << 23)


def _split(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sign (0/1), mantissa m < 2^24, exponent e (|f| = m * 2^e) and kind (0 finite, 1 infinite, 2 NaN)."""
    u = np.ascontiguousarray(f, np.float32).view(np.uint32)
    field = (u >> np.uint32(23)) & np.uint32(0xFF)
    frac = u & np.uint32(0x7FFFFF)
    m = (frac | np.where(field > 0, _NORMAL, np.uint32(0))).astype(np.uint64)
    e = np.maximum(field.astype(np.int64), 1) - 150
    kind = np.where(field < 255, 0, np.where(frac > 0, 2, 1))
    return (u >> np.uint32(31)).astype(np.int64), m, e, kind


def _normalize(m: np.ndarray, e: np.ndarray) -> None:
    """Shift nonzero mantissas (in place) into [2^23, 2^24), lowering their exponents to match."""
    for _ in range(23):
        low = (m > 0) & (m < 1 << 23)
        if not low.any():
            return
        m[low] <<= np.uint64(1)
        e[low] -= 1


def round_div(b: np.ndarray, s: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """int64 array: the exact b / s (float32, broadcast) rounded half to even, clamped to [lo, hi] (lo < 0 < hi).
    NaN in either, inf / inf and 0 / 0 give 0; an infinite b or a zero s (b nonzero) the bound of the quotient's
    sign; a zero b or an infinite s 0."""
    b32, s32 = np.broadcast_arrays(np.asarray(b, np.float32), np.asarray(s, np.float32))
    shape = b32.shape
    sb, mb, eb, kb = _split(b32.reshape(-1))
    ss, ms, es, ks = _split(s32.reshape(-1))
    neg = (sb ^ ss) == 1
    big = np.where(neg, lo, hi).astype(np.int64)
    zero = (kb == 2) | (ks == 2) | ((kb == 1) & (ks == 1)) | ((mb == 0) & (ms == 0))
    huge = ~zero & ((kb == 1) | (ms == 0))
    zero |= ~huge & ((mb == 0) | (ks == 1))
    _normalize(mb, eb)
    _normalize(ms, es)
    d = eb - es
    huge |= ~zero & (d >= 33)
    zero |= ~huge & (d <= -2)
    run = ~zero & ~huge
    shift = np.where(run, d + 1, 0).astype(np.uint64)
    den = np.where(run, ms, 1)
    q, r = np.divmod(mb << shift, den)
    odd = q & np.uint64(1)
    n = q >> np.uint64(1)
    twice = odd * den + r
    n += (twice > den) | ((twice == den) & ((n & np.uint64(1)) == 1))
    mag = np.minimum(n, np.uint64(2**40)).astype(np.int64)
    out = np.where(neg, np.maximum(-mag, lo), np.minimum(mag, hi))
    out = np.where(huge, big, np.where(zero, 0, out))
    return out.reshape(shape)
