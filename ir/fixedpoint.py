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


def _reciprocal_half_den(a: Array) -> Array:
    """1 / ((1 + a) / 2) for a in (0, 1) in Q2.29: three Newton-Raphson steps (gemmlowp)."""
    half_den = rounding_half_sum(a, INT32_MAX)
    x = _wrap(1515870810 + mul(half_den, -1010580540))  # Q2.29
    for _ in range(3):
        hdx = mul(half_den, x)
        x = _wrap(x + sat_mul_pot(mul(x, _wrap((1 << 29) - hdx)), 2))
    return x


def one_over_one_plus_x(a: Array) -> Array:
    """1 / (1 + a) for a in (0, 1) in Q0.31; result Q0.31."""
    return sat_mul_pot(_reciprocal_half_den(a) >> 1, 2)


def logistic_q(a: Array, integer_bits: int) -> Array:
    """gemmlowp logistic of a Q(integer_bits) value; Q0.31 result."""
    a = np.asarray(a, np.int64)
    pos = a > 0
    absx = np.where(pos, a, _wrap(-a))
    r_pos = one_over_one_plus_x(exp_on_negative_values(_wrap(-absx), integer_bits))
    r_neg = _wrap(INT32_MAX - r_pos)
    return np.where(a == 0, 1 << 30, np.where(pos, r_pos, r_neg))


def input_radius(integer_bits: int, left_shift: int) -> int:
    """TFLite's CalculateInputRadius: (2^ib - 1) * 2^(31 - ib) / 2^left_shift, floored.

    A negative shift (input scales below 2^-28) is undefined in TFLite's formula; the mathematical value
    is used here, capped to int32 (every input is then inside the radius).
    """
    value = math.ldexp(float((1 << integer_bits) - 1) * (1 << (31 - integer_bits)), -left_shift)
    return min(int(math.floor(value)), (1 << 31) - 1)


def logistic_params(input_scale: float) -> tuple[int, int, int]:
    """(multiplier, left shift, input radius) as TFLite Micro's int8 LOGISTIC Prepare computes them."""
    real = float(np.float32(input_scale)) * float(1 << 27)
    q, shift = math.frexp(real)
    mult = int(math.copysign(math.floor(abs(q) * (1 << 31) + 0.5), q))
    return mult, shift, input_radius(4, shift)


def logistic_s8(x: Array, input_zp: int, input_scale: float) -> Array:
    """int8 LOGISTIC (output scale 1/256, zero point -128), TFLite Micro's reference algorithm."""
    mult, shift, radius = logistic_params(input_scale)
    v = np.asarray(x, np.int64) - input_zp
    q4 = multiply_by_quantized_multiplier(v, mult, shift)
    out = rounding_divide_by_pot(logistic_q(q4, 4), 23) - 128
    out = np.clip(out, -128, 127)
    out = np.where(v >= radius, 127, out)  # TFLite Micro tests v <= -radius first: it wins when radius is 0
    return np.where(v <= -radius, -128, out).astype(np.int8)


def one_minus_x_over_one_plus_x(a: Array) -> Array:
    """(1 - a) / (1 + a) for a in (0, 1) in Q0.31; result Q0.31."""
    return sat_mul_pot(_wrap(_reciprocal_half_den(a) - (1 << 29)), 2)


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
    out = np.where(v >= radius, 127, out)  # as in logistic_s8: v <= -radius wins when radius is 0
    return np.where(v <= -radius, -128, out).astype(np.int8)


def leaky_relu_params(input_scale: float, output_scale: float, alpha: float,
                      flavor: str = "tflm") -> tuple[int, int, int, int]:
    """(identity multiplier, shift, alpha multiplier, shift) as LEAKY_RELU's Prepare computes them from the float32
    scales and alpha: TFLite (flavor "tflite") divides in float32; TFLite Micro's interpreter (flavor "tflm", and
    tinycc's C) gives the results of double division - measured: with float32 ratios 213 of 30 x 65,536 int16
    outputs differ from it by one (none of the int8 ones), with double ratios none (tests/test_published_tflm.py,
    SEANet's int16 LEAKY_RELU)."""
    from .quant import quantize_multiplier

    s_in, s_out, al = np.float32(input_scale), np.float32(output_scale), np.float32(alpha)
    if flavor == "tflite":
        alpha_real = float(np.float32(np.float32(s_in * al) / s_out))
        ident_real = float(np.float32(s_in / s_out))
    else:
        alpha_real = float(s_in) * float(al) / float(s_out)
        ident_real = float(s_in) / float(s_out)
    mi, ei = quantize_multiplier(ident_real)
    ma, ea = quantize_multiplier(alpha_real)
    return mi, ei, ma, ea


def leaky_relu_s8(x: Array, in_zp: int, out_zp: int, params: tuple[int, int, int, int],
                  dt: type = np.int8) -> Array:
    """TFLite's quantized LEAKY_RELU; ``dt`` np.int16 for the 16x8 form (same arithmetic, int16 clamp)."""
    mi, ei, ma, ea = params
    v = np.asarray(x, np.int64) - in_zp
    pos = multiply_by_quantized_multiplier(v, mi, ei)
    negv = multiply_by_quantized_multiplier(v, ma, ea)
    info = np.iinfo(dt)
    return np.clip(np.where(v >= 0, pos, negv) + out_zp, info.min, info.max).astype(dt)


def prelu_params(input_scale: float, alpha_scale: float, output_scale: float) -> tuple[int, int, int, int]:
    """(identity multiplier, shift, alpha multiplier, shift) as TFLite's PRELU Prepare: in/out and in*alpha/out."""
    from .quant import quantize_multiplier

    s_in, s_al, s_out = (float(np.float32(v)) for v in (input_scale, alpha_scale, output_scale))
    m1, e1 = quantize_multiplier(s_in / s_out)
    m2, e2 = quantize_multiplier(s_in * s_al / s_out)
    return m1, e1, m2, e2


def prelu_s8(x: Array, alpha: Array, in_zp: int, alpha_zp: int, out_zp: int,
             params: tuple[int, int, int, int]) -> Array:
    """TFLite's int8 PRELU: x - zp >= 0 scaled by in/out, else (x - zp) * (alpha - alpha_zp) by in*alpha/out.

    ``alpha`` broadcasts against ``x`` from the trailing axes (no batch axis)."""
    m1, e1, m2, e2 = params
    v = np.asarray(x, np.int64) - in_zp
    a = np.broadcast_to(np.asarray(alpha, np.int64) - alpha_zp, v.shape[1:])
    pos = multiply_by_quantized_multiplier(v, m1, e1)
    negv = multiply_by_quantized_multiplier(v * a, m2, e2)
    return np.clip(np.where(v >= 0, pos, negv) + out_zp, -128, 127).astype(np.int8)


def softmax_params(input_scale: float, beta: float) -> tuple[int, int, int]:
    """(input multiplier, left shift, diff_min) as TFLite's int8 SOFTMAX Prepare computes them (Q5.26 input)."""
    from .quant import quantize_multiplier

    real = min(float(beta) * float(np.float32(input_scale)) * float(1 << 26), float((1 << 31) - 1))
    mult, shift = quantize_multiplier(real)
    return mult, shift, -input_radius(5, shift)


def softmax_s8(x: Array, input_scale: float, beta: float) -> Array:
    """int8 SOFTMAX over the last axis (output scale 1/256, zero point -128), TFLite's reference algorithm."""
    mult, shift, diff_min = softmax_params(input_scale, beta)
    xi = np.asarray(x, np.int64)
    diff = xi - xi.max(axis=-1, keepdims=True)
    use = diff >= diff_min
    scaled = multiply_by_quantized_multiplier(diff, mult, shift)  # shift >= 0: one rounding, as TFLite
    e = np.where(use, exp_on_negative_values(scaled, 5), 0)  # Q0.31
    total = _wrap(rounding_divide_by_pot(e, 12).sum(axis=-1, keepdims=True))  # Q12.19 accumulator
    clz = 32 - np.floor(np.log2(np.maximum(total, 1))).astype(np.int64) - 1
    clz = np.where(total <= 0, np.where(total == 0, 32, 0), clz)
    bits_over_unit = 12 - clz
    shifted_minus_one = _wrap(((total << clz) & 0xFFFFFFFF) - (1 << 31))
    recip = one_over_one_plus_x(shifted_minus_one)
    exponent = bits_over_unit + 31 - 8
    out = rounding_divide_by_pot(mul(recip, e), exponent) - 128
    return np.where(use, np.clip(out, -128, 127), -128).astype(np.int8)


def _i16(x: Array) -> Array:
    return ((np.asarray(x, np.int64) + (1 << 15)) % (1 << 16)) - (1 << 15)


def _srdhm16(a: Array, b: int) -> Array:
    """gemmlowp SaturatingRoundingDoublingHighMul on int16."""
    ab = np.asarray(a, np.int64) * b
    s = ab + np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    out = np.where(s >= 0, s >> 15, -((-s) >> 15))
    return np.where((np.asarray(a) == b) & (b == -(1 << 15)), (1 << 15) - 1, _i16(out))


def _sat_shift16(v: Array, amount: int) -> Array:
    return np.clip(np.asarray(v, np.int64) * (1 << amount), -(1 << 15), (1 << 15) - 1)


def _int16_multiplier(real: float) -> tuple[int, int]:
    from .quant import quantize_multiplier

    m32, e = quantize_multiplier(real)
    m16 = (1 << 15) - 1 if m32 >= (1 << 31) - 1 - (1 << 15) else (m32 + (1 << 15)) >> 16
    return m16, e


def hard_swish_params(input_scale: float, output_scale: float) -> tuple[int, int, int, int]:
    """(output multiplier, its exponent, reluish multiplier, its exponent) as TFLite's int8 HARD_SWISH Prepare."""
    hires = np.float32(1.0 / 128.0) * np.float32(input_scale)
    out_m, out_e = _int16_multiplier(float(np.float32(hires / np.float32(output_scale))))
    rel_m, rel_e = _int16_multiplier(float(np.float32(hires / np.float32(3.0 / 32768.0))))
    return out_m, out_e, rel_m, rel_e


def hard_swish_s8(x: Array, in_zp: int, out_zp: int, params: tuple[int, int, int, int]) -> Array:
    """int8 HARD_SWISH, TFLite's reference kernel (int16 fixed point)."""
    out_m, out_e, rel_m, rel_e = params
    v = _i16(np.asarray(x, np.int64) - in_zp)
    hires = _i16(v * (1 << 7))
    pre_out = _srdhm16(hires, out_m)
    rel = hires
    if rel_e > 0:
        rel = _sat_shift16(rel, rel_e - 1)
    rel = _srdhm16(rel, rel_m)
    if rel_e > 0:
        rel = _sat_shift16(rel, 1)
    if rel_e < 0:
        rel = rounding_divide_by_pot(rel, -rel_e)
    rel = _i16((rel + (1 << 15)) >> 1)
    ab = rel * pre_out
    prod = np.where(ab >= 0, ab >> 15, -((-ab) >> 15))
    prod = np.where((rel == pre_out) & (rel == -(1 << 15)), (1 << 15) - 1, _i16(prod))
    out = rounding_divide_by_pot(prod, -out_e) + out_zp
    return np.clip(out, -128, 127).astype(np.int8)
