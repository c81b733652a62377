"""int16 (TFLite's 16x8) LOGISTIC, TANH and SOFTMAX: table-driven integer kernels bit-exact with TFLite's
reference kernels and TFLite Micro.

Facts (from the public reference kernels; the softmax tables computed here by formula, the sigmoid table see below):

* LOGISTIC / TANH: input and output zero point 0, output scale 1/32768. The input is rescaled so that 12288
  (3 * 4096) is 1.0: with a power-of-two input scale 2^-12 (logistic) or 2^-12 / 2^-11 (tanh) the multiplier is
  3 << left_shift and no shift, otherwise ``multiplier = scale * 12288`` doubled (left_shift + 1) while
  <= 32767 / 2, truncated to an integer; ``x = (q * multiplier + round) >> left_shift``. A 256-entry table of
  sigmoid(i / 24) in Q0.16 is interpolated linearly on |x| (9 fraction bits for logistic, 8 for
  tanh = 2 sigmoid(2x) - 1); the sign is restored by symmetry.
* SOFTMAX: input zero point 0, output zero point 0 and scale 1/32768. ``input_diff = q - max`` is rescaled by
  QuantizeMultiplier(scale * beta / (10 / 65535)) so that [-65535, 0] is [-10, 0], recentred by +32767 and looked
  up in a 513-entry exp table over [-10, 0]; the int32 sum of the Q0.15 exps is normalised (count leading zeros),
  its reciprocal looked up in a 513-entry 1/(1+x) table over [0, 1], and each exp rescaled by it.
  A 513-entry table samples f at 512 equal steps, each entry biased by half the error of linear interpolation
  at the step's midpoint; lookups interpolate with 7 fraction bits.

TFLite and TFLite Micro differ in SOFTMAX only: TFLite computes its two tables in double, TFLite Micro in float32
(2 entries of the 1/(1+x) table differ by one, measured), and TFLite multiplies input scale and beta in float32
before the division in double, TFLite Micro in double (equal when beta is 1, as in Keras' softmax).

Not computed by formula: TFLite's 256-entry sigmoid table of LOGISTIC/TANH equals ``round(65536 sigmoid(i/24))``
in 212 entries and is one larger in 44 (tuned for the interpolation; measured here on every int16 input, the same
values as ``ir/lstm_table.py``, which the integer LSTM already uses): the kernels read that table. With the
formula's table (:func:`sigmoid_table_formula`) they would be within one output step, not bit-exact.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .lstm_table import SIGMOID_TABLE_U16
from .quant import multiply_by_quantized_multiplier

Array = np.ndarray

OUT_SCALE = 1.0 / 32768.0  # every output of the three ops: Q0.15, zero point 0


def sigmoid_table() -> Array:
    """TFLite's 256 uint16 values of sigmoid(i / 24) in Q0.16 (``ir/lstm_table.py``, shared with the LSTM)."""
    return np.array(SIGMOID_TABLE_U16, np.int64)


def sigmoid_table_formula() -> Array:
    """round(65536 sigmoid(i / 24)) saturated to 65535: what the formula gives (44 entries below TFLite's table)."""
    i = np.arange(256, dtype=np.float64)
    return np.minimum(np.floor(65536.0 / (1.0 + np.exp(-i / 24.0)) + 0.5), 65535).astype(np.int64)


def _round(v: float) -> float:
    """TfLiteRound: half away from zero."""
    return math.copysign(math.floor(abs(v) + 0.5), v)


def lut513(func: Callable[[float], float], lo: float, hi: float, single: bool = False) -> Array:
    """A 513-entry int16 table of ``func`` over [lo, hi] (outputs in [-1, 1] as Q0.15), interpolation-biased;
    ``single``: every step in float32 (TFLite Micro) instead of double (TFLite)."""
    t: Callable[[float], float] = (lambda v: float(np.float32(v))) if single else float
    f = (lambda v: t(func(t(v)))) if single else func
    lo, hi = t(lo), t(hi)
    step = t(t(hi - lo) / 512)
    half, inv = t(step / 2), 32768.0
    table = np.zeros(513, np.int64)
    for i in range(512):
        at = t(t(i * step) + lo)
        val, mid, nxt = f(at), f(t(at + half)), f(t(t((i + 1) * step) + lo))
        sample = _round(t(val * inv))
        interp = _round(t(t(t(nxt * inv) + sample) / 2))
        bias = _round(t(t(interp - _round(t(mid * inv))) / 2))
        table[i] = min(max(sample - bias, -32768), 32767)
    table[512] = min(max(_round(t(f(hi) * inv)), -32768), 32767)
    return table


def exp_table(flavor: str = "tflm") -> Array:
    """exp over [-10, 0] (513 entries; float32 arithmetic for TFLite Micro, double for TFLite)."""
    single = flavor != "tflite"
    return lut513((lambda v: float(np.float32(math.exp(v)))) if single else math.exp, -10.0, 0.0, single)


def reciprocal_table(flavor: str = "tflm") -> Array:
    """1 / (1 + x) over [0, 1] (513 entries; float32 for TFLite Micro, double for TFLite)."""
    single = flavor != "tflite"
    if single:
        return lut513(lambda v: float(np.float32(1.0) / (np.float32(1.0) + np.float32(v))), 0.0, 1.0, True)
    return lut513(lambda v: 1.0 / (1.0 + v), 0.0, 1.0)


def lut_lookup(v: Array, table: Array) -> Array:
    """Interpolated lookup of int16 values ``v`` in a 513-entry table."""
    v = np.asarray(v, np.int64)
    idx = 256 + (v >> 7)
    base = table[idx]
    return base + (((table[idx + 1] - base) * (v & 0x7F) + 64) >> 7)


def _checked_log2(x: float) -> tuple[bool, int]:
    """TFLite's CheckedLog2 in float32: (x is a power of two within 1e-3 in log2, the rounded log2)."""
    f32 = np.float32
    lg = f32(f32(np.log(f32(x))) * f32(f32(1.0) / f32(np.log(f32(2.0)))))
    r = f32(_round(float(lg)))
    return bool(abs(f32(lg - r)) < f32(1e-3)), int(r)


def sigmoid_tanh_params(input_scale: float, tanh: bool) -> tuple[int, int]:
    """(multiplier, left_shift) of an int16 LOGISTIC (``tanh`` False) or TANH; multiplier 0 = power-of-two case."""
    pot, lg = _checked_log2(input_scale)
    shift = 12 + lg
    if pot and (shift == 0 or (tanh and shift == 1)):
        return 0, shift
    mult, shift = float(np.float32(input_scale)) * 4096.0 * 3.0, 0
    while mult <= 32767.0 / 2.0 and shift <= 30:
        shift, mult = shift + 1, mult * 2.0
    return int(mult), shift


def _scaled_input(q: Array, mult: int, shift: int) -> Array:
    if mult == 0:
        mult, shift = 3 << shift, 0
    rnd = 1 << (shift - 1) if shift > 0 else 0
    return (np.asarray(q, np.int64) * mult + rnd) >> shift


def _table_lookup(q: Array, mult: int, shift: int, table: Array | None, frac: int, saturated: int
                  ) -> tuple[Array, Array]:
    """(x, r): the scaled input x and |x| looked up in the sigmoid table with ``frac`` fraction bits, linearly
    interpolated (``saturated`` from step 255 on), as tcc_sigmoid_tanh_s16 does."""
    t = sigmoid_table() if table is None else table
    x = _scaled_input(q, mult, shift)
    a = np.abs(x)
    uh = np.minimum(a >> frac, 254)
    ua, ub = t[uh], t[uh + 1]
    return x, np.where((a >> frac) >= 255, saturated, (ua << frac) + (a & ((1 << frac) - 1)) * (ub - ua))


def logistic_s16(q: Array, mult: int, shift: int, table: Array | None = None) -> Array:
    """int16 LOGISTIC (output Q0.15)."""
    x, r = _table_lookup(q, mult, shift, table, 9, 0x7FFF << 10)
    r = np.where(x >= 0, r + (1 << 9), (1 << 25) - r + (1 << 9) - 1)
    return (r >> 10).astype(np.int16)


def tanh_s16(q: Array, mult: int, shift: int, table: Array | None = None) -> Array:
    """int16 TANH (output Q0.15): 2 sigmoid(2x) - 1 on the sigmoid table."""
    x, r = _table_lookup(q, mult, shift, table, 8, 0xFFFF << 8)
    r = np.where(x >= 0, r - (1 << 23) + (1 << 7), -r + (1 << 23) + (1 << 7) - 1)
    return (r >> 8).astype(np.int16)


def softmax_s16_params(input_scale: float, beta: float, flavor: str = "tflm") -> tuple[int, int]:
    """(multiplier, shift) rescaling input differences so that [-65535, 0] is [-10, 0]."""
    from .quant import quantize_multiplier

    if flavor == "tflite":
        prod = float(np.float32(np.float32(input_scale) * np.float32(beta)))
    else:
        prod = float(np.float32(input_scale)) * float(np.float32(beta))
    return quantize_multiplier(prod / (10.0 / 65535.0))


def _clz32(v: Array) -> Array:
    v = np.asarray(v, np.int64)
    bits = np.zeros(v.shape, np.int64)
    nz = v > 0
    bits[nz] = np.floor(np.log2(v[nz].astype(np.float64))).astype(np.int64)
    # exact correction of the float log2 near powers of two
    bits = np.where(nz & ((np.int64(1) << (bits + 1)) <= v), bits + 1, bits)
    bits = np.where(nz & ((np.int64(1) << bits) > v), bits - 1, bits)
    return np.where(nz, 31 - bits, 32)


def softmax_s16(x: Array, mult: int, shift: int, exp_lut: Array | None = None,
                recip_lut: Array | None = None, flavor: str = "tflm") -> Array:
    """int16 SOFTMAX over the last axis (output Q0.15); the tables default to ``flavor``'s."""
    el = exp_table(flavor) if exp_lut is None else exp_lut
    rl = reciprocal_table(flavor) if recip_lut is None else recip_lut
    x = np.asarray(x, np.int64)
    diff = x - x.max(axis=-1, keepdims=True)
    scaled = multiply_by_quantized_multiplier(diff, mult, shift)
    e = lut_lookup(np.clip(scaled + 32767, -32768, 32767), el)
    total = e.sum(axis=-1, keepdims=True)
    h = _clz32(total)
    shifted = ((total << (h - 1)) + (1 << 13)) >> 14
    recip = lut_lookup(np.clip(shifted - ((1 << 15) + (1 << 16)), -32768, 32767), rl)
    rs = 31 - h
    out = (e * recip + (np.int64(1) << (rs - 1))) >> rs
    return np.clip(out, 0, 32767).astype(np.int16)
