"""gemmlowp-style fixed-point math (numpy, int64 arrays holding int32 values).

The integer logistic of TFLite Micro's int8 LOGISTIC kernel: input rescaled to a Q4.27 value,
logistic computed in fixed point (exp on negative values by a Taylor polynomial around -1/8
and a barrel shifter of exp(-2^k) constants; 1/(1+x) by three Newton-Raphson steps), output in
Q0.31 rounded to Q0.8 with zero point -128.
"""
from __future__ import annotations

import math

import numpy as np

from .quant import INT32_MAX, INT32_MIN, multiply_by_quantized_multiplier, rounding_divide_by_pot
from .quant import saturating_rounding_doubling_high_mul as _srdhm

Array = np.ndarray


def _wrap(x: Array) -> Array:
    return ((np.asarray(x, np.int64) + (1 << 31)) % (1 << 32)) - (1 << 31)


def mul(a: Array, b: Array | int) -> Array:
    return _srdhm(a, b)


def sat_mul_pot(x: Array, exponent: int) -> Array:
    """SaturatingRoundingMultiplyByPOT."""
    x = np.asarray(x, np.int64)
    if exponent == 0:
        return x
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    out = x << exponent
    out = np.where(x > threshold, INT32_MAX, out)
    return np.where(x < -threshold, INT32_MIN, out)


def rounding_half_sum(a: Array, b: Array | int) -> Array:
    s = np.asarray(a, np.int64) + np.asarray(b, np.int64)
    s = s + np.where(s >= 0, 1, -1)
    return np.where(s >= 0, s // 2, -((-s) // 2))


def _exp_quarter(a: Array) -> Array:
    """exp(a) for a in [-1/4, 0), Q0.31."""
    const_term, one_third = 1895147668, 715827883
    x = _wrap(a + (1 << 28))
    x2 = mul(x, x)
    x3 = mul(x2, x)
    x4 = mul(x2, x2)
    x4_over_4 = sat_mul_pot(x4, -2)
    poly = sat_mul_pot(_wrap(mul(_wrap(x4_over_4 + x3), one_third) + x2), -1)
    return _wrap(const_term + mul(const_term, _wrap(x + poly)))


_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401),
           (4, 242))


def exp_on_negative_values(a: Array, integer_bits: int) -> Array:
    """exp(a) for a <= 0 given in Q(integer_bits).(31-integer_bits); result Q0.31."""
    frac = 31 - integer_bits
    quarter = 1 << (frac - 2)
    a = np.asarray(a, np.int64)
    a_mod = _wrap((a & (quarter - 1)) - quarter)
    result = _exp_quarter(sat_mul_pot(a_mod, integer_bits))
    remainder = _wrap(a_mod - a)
    for exponent, mult in _BARREL:
        if integer_bits > exponent:
            bit = 1 << (frac + exponent)
            result = np.where((remainder & bit) != 0, mul(result, mult), result)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x(a: Array) -> Array:
    """1 / (1 + a) for a in (0, 1) in Q0.31; result Q0.31."""
    half_den = rounding_half_sum(a, INT32_MAX)
    x = _wrap(1515870810 + mul(half_den, -1010580540))  # Q2.29
    one_q2 = 1 << 29
    for _ in range(3):
        hdx = mul(half_den, x)
        x = _wrap(x + sat_mul_pot(mul(x, _wrap(one_q2 - hdx)), 2))
    return sat_mul_pot(x >> 1, 2)


def logistic_q(a: Array, integer_bits: int) -> Array:
    """gemmlowp logistic of a Q(integer_bits) value; Q0.31 result."""
    a = np.asarray(a, np.int64)
    pos = a > 0
    absx = np.where(pos, a, _wrap(-a))
    r_pos = one_over_one_plus_x(exp_on_negative_values(_wrap(-absx), integer_bits))
    r_neg = _wrap(INT32_MAX - r_pos)
    return np.where(a == 0, 1 << 30, np.where(pos, r_pos, r_neg))


def logistic_params(input_scale: float) -> tuple[int, int, int]:
    """(multiplier, left shift, input radius) as TFLite Micro's int8 LOGISTIC Prepare computes them."""
    real = float(np.float32(input_scale)) * float(1 << 27)
    q, shift = math.frexp(real)
    mult = int(math.copysign(math.floor(abs(q) * (1 << 31) + 0.5), q))
    # TFLite computes 15 * 2^27 / (1 << shift); a negative shift (input scale below 2^-28) is undefined
    # there, the mathematical value is used here, capped to int32 (then every input is inside the radius)
    radius = min(int(math.floor(math.ldexp(15.0 * (1 << 27), -shift))), (1 << 31) - 1)
    return mult, shift, radius


def logistic_s8(x: Array, input_zp: int, input_scale: float) -> Array:
    """int8 LOGISTIC (output scale 1/256, zero point -128), TFLite Micro's reference algorithm."""
    mult, shift, radius = logistic_params(input_scale)
    v = np.asarray(x, np.int64) - input_zp
    q4 = multiply_by_quantized_multiplier(v, mult, shift)
    out = rounding_divide_by_pot(logistic_q(q4, 4), 23) - 128
    out = np.clip(out, -128, 127)
    out = np.where(v <= -radius, -128, out)
    return np.where(v >= radius, 127, out).astype(np.int8)


def one_minus_x_over_one_plus_x(a: Array) -> Array:
    """(1 - a) / (1 + a) for a in (0, 1) in Q0.31; result Q0.31."""
    half_den = rounding_half_sum(a, INT32_MAX)
    x = _wrap(1515870810 + mul(half_den, -1010580540))
    one_q2 = 1 << 29
    for _ in range(3):
        hdx = mul(half_den, x)
        x = _wrap(x + sat_mul_pot(mul(x, _wrap(one_q2 - hdx)), 2))
    return sat_mul_pot(_wrap(x - one_q2), 2)


def tanh_q(a: Array, integer_bits: int) -> Array:
    """gemmlowp tanh of a Q(integer_bits) value; Q0.31 result."""
    a = np.asarray(a, np.int64)
    neg = a < 0
    n = np.where(neg, a, _wrap(-a))
    t = one_minus_x_over_one_plus_x(exp_on_negative_values(_wrap(n << 1), integer_bits))
    return np.where(a == 0, 0, np.where(neg, _wrap(-t), t))


def tanh_s8(x: Array, input_zp: int, input_scale: float) -> Array:
    """int8 TANH (output scale 1/128, zero point 0), TFLite Micro's reference algorithm."""
    mult, shift, radius = logistic_params(input_scale)
    v = np.asarray(x, np.int64) - input_zp
    q4 = multiply_by_quantized_multiplier(v, mult, shift)
    out = np.clip(rounding_divide_by_pot(tanh_q(q4, 4), 24), -128, 127)
    out = np.where(v <= -radius, -128, out)
    return np.where(v >= radius, 127, out).astype(np.int8)


def leaky_relu_params(input_scale: float, output_scale: float, alpha: float) -> tuple[int, int, int, int]:
    """(identity multiplier, shift, alpha multiplier, shift) as TFLite Micro's LEAKY_RELU Prepare (float math)."""
    from .quant import quantize_multiplier

    s_in, s_out, al = np.float32(input_scale), np.float32(output_scale), np.float32(alpha)
    alpha_real = float(np.float32(np.float32(s_in * al) / s_out))
    ident_real = float(np.float32(s_in / s_out))
    mi, ei = quantize_multiplier(ident_real)
    ma, ea = quantize_multiplier(alpha_real)
    return mi, ei, ma, ea


def leaky_relu_s8(x: Array, in_zp: int, out_zp: int, params: tuple[int, int, int, int]) -> Array:
    mi, ei, ma, ea = params
    v = np.asarray(x, np.int64) - in_zp
    pos = multiply_by_quantized_multiplier(v, mi, ei)
    negv = multiply_by_quantized_multiplier(v, ma, ea)
    return np.clip(np.where(v >= 0, pos, negv) + out_zp, -128, 127).astype(np.int8)
