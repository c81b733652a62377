"""The ops of a layer normalization: MEAN over the last axis, SQUARED_DIFFERENCE, RSQRT and NEG (float and int8).

TFLite's converter writes Keras's ``LayerNormalization`` (axis -1) as MEAN over the last axis (keepdims),
SQUARED_DIFFERENCE of the input and that mean, MEAN again (the variance), ADD epsilon, RSQRT, MUL gamma, and
``x * r + (beta - mean * r)`` with a NEG of the mean, which its int8 file keeps in float (DEQUANTIZE, NEG,
QUANTIZE). tinycc reads that chain op by op and lowers its own Keras layer into the same chain.

int8 arithmetic (TFLite's reference kernels):

- ``mean`` over the last axis: QuantizedMeanOrSum, the arithmetic of the global MEAN (``mean_params``).
- ``squared_difference``: both operands shifted left 7 and scaled to twice the larger input scale (one rounding
  multiplier each), the difference squared in int32, then the output multiplier ``(2 max s)^2 / (2^14 s_out)``.
- ``rsqrt``: an integer Newton-Raphson inverse square root of ``q - zp_in`` (gemmlowp fixed point, 3 integer
  bits, five steps) times the multiplier ``1 / (sqrt(s_in) s_out)``; ``q == zp_in`` gives 127. A unary int8
  function, so tinycc runs it as a 256-entry table (the C kernel only looks it up). TFLite refuses inputs below
  the zero point; the table holds 127 there.
- ``neg``: the converter's float path (DEQUANTIZE, NEG, QUANTIZE) or tinycc's table rule, as a 256-entry table.
"""
from __future__ import annotations

import numpy as np

from . import fixedpoint
from .quant import multiply_by_quantized_multiplier, quantize_multiplier

F32 = np.float32
I32_MAX = (1 << 31) - 1
SQDIFF_LEFT_SHIFT = 7


def _wrap(v: int) -> int:
    return ((v + (1 << 31)) % (1 << 32)) - (1 << 31)


def _srdhm(a: int, b: int) -> int:
    return int(fixedpoint.mul(a, b))


def _mul_pot(x: int, e: int) -> int:
    """gemmlowp SaturatingRoundingMultiplyByPOT on one int32 (fixedpoint.sat_mul_pot)."""
    return int(fixedpoint.sat_mul_pot(x, e))


def inv_sqrt_multiplier(value: int) -> tuple[int, int]:
    """TFLite's GetInvSqrtQuantizedMultiplierExp(value, reverse_shift=-1): (multiplier, shift) of 1/sqrt(value)."""
    if value <= 1:
        return I32_MAX, 0
    shift = 11
    while value >= 1 << 29:
        value //= 4
        shift += 1
    pairs = (32 - value.bit_length() - 1) // 2 - 1
    shift -= pairs
    value <<= 2 * pairs
    x_in = value >> 1  # Q3.28
    half_in = _mul_pot(x_in, -1)
    half_three = (1 << 28) + (1 << 27)
    x = 1 << 28
    for _ in range(5):
        x3 = _mul_pot(_srdhm(_srdhm(x, x), x), 6)
        x = _mul_pot(_wrap(_srdhm(half_three, x) - _srdhm(half_in, x3)), 3)
    x = _srdhm(x, 1518500250)
    if shift < 0:
        x = _wrap(x << -shift)
        shift = 0
    return x, -shift


def rsqrt_params(in_scale: float, out_scale: float) -> tuple[int, int]:
    """TFLite's RSQRT output multiplier 1 / (sqrt(s_in) s_out) (float32 square root and product)."""
    return quantize_multiplier(1.0 / float(F32(np.sqrt(F32(in_scale))) * F32(out_scale)))


def rsqrt_table_s8(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """The int8 RSQRT outputs for the inputs -128..127 (index ``q + 128``)."""
    m, e = rsqrt_params(in_scale, out_scale)
    out = np.empty(256, np.int8)
    for i, q in enumerate(range(-128, 128)):
        v = q - in_zp
        if v <= 0:
            out[i] = 127
            continue
        im, ie = inv_sqrt_multiplier(v)
        data = int(multiply_by_quantized_multiplier(np.int64(1), im, ie + 20))
        r = int(multiply_by_quantized_multiplier(np.int64(data), m, e - 20)) + out_zp
        out[i] = min(max(r, -128), 127)
    return out


def sqdiff_params(s1: float, s2: float, so: float) -> dict:
    """TFLite's SQUARED_DIFFERENCE Prepare: the three (multiplier, shift) pairs (double arithmetic)."""
    twice = 2.0 * max(float(F32(s1)), float(F32(s2)))
    m1, e1 = quantize_multiplier(float(F32(s1)) / twice)
    m2, e2 = quantize_multiplier(float(F32(s2)) / twice)
    mo, eo = quantize_multiplier(twice * twice / ((1 << (2 * SQDIFF_LEFT_SHIFT)) * float(F32(so))))
    return {"m1": m1, "e1": e1, "m2": m2, "e2": e2, "mo": mo, "eo": eo}


def squared_difference_s8(a: np.ndarray, b: np.ndarray, z1: int, z2: int, zo: int, p: dict) -> np.ndarray:
    """int8 SQUARED_DIFFERENCE with broadcasting (int64 arrays keep int32 semantics: no product overflows)."""
    sa = multiply_by_quantized_multiplier((a.astype(np.int64) - z1) << SQDIFF_LEFT_SHIFT, p["m1"], p["e1"])
    sb = multiply_by_quantized_multiplier((b.astype(np.int64) - z2) << SQDIFF_LEFT_SHIFT, p["m2"], p["e2"])
    d = sa - sb
    r = multiply_by_quantized_multiplier(d * d, p["mo"], p["eo"]) + zo
    return np.clip(r, -128, 127).astype(np.int8)


def mean_last_s8(x: np.ndarray, in_zp: int, mult: int, shift: int, out_zp: int) -> np.ndarray:
    """int8 MEAN over the last axis (keepdims), ``mult``/``shift`` from ``mean_params`` with n = last dimension."""
    n = x.shape[-1]
    total = x.astype(np.int64).sum(axis=-1, keepdims=True) - in_zp * n
    return np.clip(multiply_by_quantized_multiplier(total, mult, shift) + out_zp, -128, 127).astype(np.int8)


def rsqrt_float(x: np.ndarray) -> np.ndarray:
    """float32 1 / sqrt(x)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (F32(1) / np.sqrt(np.asarray(x, F32))).astype(F32)
