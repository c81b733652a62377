"""The integer LSTM of TFLite's own interpreter (``run_int8(..., flavor="tflite")``; ir/lstm.py is TFLite Micro's).

TFLite (tf.lite / LiteRT, its 8x8_16 LSTM kernel) computes the gates with the same int16 Q3.12 products as TFLite
Micro, but differs in four places, each of which can move an output by one step:
- sigmoid and tanh are gemmlowp's int16 fixed-point functions (exp by a polynomial and a barrel shifter, 1/(1+x)
  by Newton-Raphson), not the interpolated table; the cell tanh runs on Q(15+p).(-p) directly;
- the cell update rounds once: f * c >> 15 and i * g >> (30 + p) (rounding divide by a power of two);
- the effective scales are float32 products (TFLite Micro's gate scales are double);
- the hidden scale is 2^-15 / s * 2^-15 in float32 with s the effective-hidden-scale intermediate (the output's).
"""
from __future__ import annotations

import numpy as np

from .quant import multiply_by_quantized_multiplier, quantize_multiplier, rounding_divide_by_pot

Array = np.ndarray
F32 = np.float32
_MAX16 = (1 << 15) - 1


def _w16(x: Array) -> Array:
    """int16 wrap-around (gemmlowp's plain add/sub/neg on int16)."""
    return ((np.asarray(x, np.int64) + (1 << 15)) % (1 << 16)) - (1 << 15)


def _mul(a: Array, b: Array | int) -> Array:
    """SaturatingRoundingDoublingHighMul on int16."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b
    s = ab + np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    out = np.where(s >= 0, s >> 15, -((-s) >> 15))
    return np.where((a == b) & (a == -(1 << 15)), _MAX16, out)


def _pot(x: Array, exponent: int) -> Array:
    """SaturatingRoundingMultiplyByPOT on int16."""
    x = np.asarray(x, np.int64)
    if exponent == 0:
        return x
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    return np.clip(x << exponent, -(1 << 15), _MAX16)


def _const(raw32: int) -> int:
    """A gemmlowp constant given as its int32 raw value, rescaled to int16 (rounding divide by 2^16)."""
    return int(rounding_divide_by_pot(np.int64(raw32), 16))


def _exp_quarter(a: Array) -> Array:
    """exp(a) for a in [-1/4, 0) (Q0.15)."""
    const_term, one_third = _const(1895147668), _const(715827883)
    x = _w16(a + (1 << 12))
    x2 = _mul(x, x)
    x3 = _mul(x2, x)
    x4 = _mul(x2, x2)
    poly = _pot(_w16(_mul(_w16(_pot(x4, -2) + x3), one_third) + x2), -1)
    return np.clip(const_term + _mul(const_term, _w16(x + poly)), -(1 << 15), _MAX16)  # saturating on int16


_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401),
           (4, 242))


def _exp_neg(a: Array, integer_bits: int) -> Array:
    """exp(a) for a <= 0 in Q(integer_bits).(15 - integer_bits); Q0.15 result."""
    frac = 15 - integer_bits
    quarter = 1 << (frac - 2)
    a = np.asarray(a, np.int64)
    a_mod = _w16((a & (quarter - 1)) - quarter)
    result = _exp_quarter(_pot(a_mod, integer_bits))
    remainder = _w16(a_mod - a)
    for exponent, mult in _BARREL:
        if integer_bits > exponent:
            result = np.where((remainder & (1 << (frac + exponent))) != 0, _mul(result, _const(mult)), result)
    if integer_bits > 5:
        result = np.where(a < _const(-(1 << (36 - integer_bits))), 0, result)
    return np.where(a == 0, _MAX16, result)


def _newton(a: Array) -> Array:
    """1 / ((1 + a) / 2) for a in [0, 1) (Q0.15), Q2.13."""
    s = a + _MAX16
    half = (s + np.where(s >= 0, 1, -1)) // 2  # RoundingHalfSum (sum >= 0 here)
    x = _w16(_const(1515870810) + _mul(half, _const(-1010580540)))
    for _ in range(3):
        x = _w16(x + _pot(_mul(x, _w16((1 << 13) - _mul(half, x))), 2))
    return x


def sigmoid_i16(x: Array) -> Array:
    """gemmlowp logistic of a Q3.12 int16 value; Q0.15 result."""
    x = np.asarray(x, np.int64)
    pos = x > 0
    r = _pot(_newton(_exp_neg(_w16(-np.where(pos, x, _w16(-x))), 3)), 1)
    return np.where(x == 0, 1 << 14, np.where(pos, r, _w16(_MAX16 - r)))


def tanh_i16(x: Array, integer_bits: int) -> Array:
    """gemmlowp tanh of a Q(integer_bits) int16 value; Q0.15 result."""
    x = np.asarray(x, np.int64)
    neg = x < 0
    n = np.where(neg, x, _w16(-x))
    t = _pot(_w16(_newton(_exp_neg(n, integer_bits + 1)) - (1 << 13)), 2)
    return np.where(x == 0, 0, np.where(neg, _w16(-t), t))


def lstm_params_tflite(in_scale: float, in_zp: int, w_in_scales: Array, w_rec_scales: Array, out_scale: float,
                       out_zp: int, cell_power: int, cell_clip: float = 0.0) -> dict:
    """TFLite's Prepare of the 8x8_16 LSTM without layer norm: float32 effective scales, gate scale 2^-12."""
    inter = F32(2.0 ** -12)
    gates = []
    for k in range(4):
        m_i, e_i = quantize_multiplier(float(F32(F32(w_in_scales[k]) * F32(in_scale)) / inter))
        m_r, e_r = quantize_multiplier(float(F32(F32(w_rec_scales[k]) * F32(out_scale)) / inter))
        gates.append((m_i, e_i, m_r, e_r))
    hidden = F32(F32(F32(2.0 ** -15) / F32(out_scale)) * F32(2.0 ** -15))
    clip = 0
    if cell_clip > 0:
        clip = int(min(max(float(F32(cell_clip)) / 2.0 ** cell_power, -32768.0), 32767.0))
    return {"in_zp": int(in_zp), "out_zp": int(out_zp), "gates": gates, "hidden": quantize_multiplier(float(hidden)),
            "cell_power": int(cell_power), "cell_clip": clip}


def lstm_int8_tflite(x: Array, w_in: Array, w_rec: Array, bias: Array | None, p: dict,
                     return_sequences: bool) -> Array:
    """TFLite's integer LSTM on int8 ``x [N, T, F]``; int8 output."""
    n, steps, _ = x.shape
    units = w_rec.shape[1]
    if not 0 <= 15 + p["cell_power"] <= 6:
        raise ValueError(f"TFLite's integer LSTM needs a cell scale from 2^-15 to 2^-9, got 2^{p['cell_power']}")
    wi, wr = w_in.astype(np.int64), w_rec.astype(np.int64)
    b = np.zeros(4 * units, np.int64) if bias is None else bias.astype(np.int64)
    h = np.full((n, units), p["out_zp"], np.int64)
    c = np.zeros((n, units), np.int64)
    xin = x.astype(np.int64) - p["in_zp"]
    outs = []
    for t in range(steps):
        acc_in = xin[:, t] @ wi.T + b
        acc_rec = (h - p["out_zp"]) @ wr.T
        pre = []
        for k in range(4):
            m_i, e_i, m_r, e_r = p["gates"][k]
            sl = slice(k * units, (k + 1) * units)
            g_in = np.clip(multiply_by_quantized_multiplier(acc_in[:, sl], m_i, e_i), -32768, 32767)
            pre.append(np.clip(g_in + multiply_by_quantized_multiplier(acc_rec[:, sl], m_r, e_r), -32768, 32767))
        i, f, o = (sigmoid_i16(pre[k]) for k in (0, 1, 3))
        g = tanh_i16(pre[2], 3)
        c = np.clip(rounding_divide_by_pot(f * c, 15), -32768, 32767)
        c = np.clip(c + np.clip(rounding_divide_by_pot(i * g, 30 + p["cell_power"]), -32768, 32767), -32768, 32767)
        if p["cell_clip"] > 0:
            c = np.clip(c, -p["cell_clip"], p["cell_clip"])
        tc = tanh_i16(c, 15 + p["cell_power"])
        h = np.clip(multiply_by_quantized_multiplier(o * tc, *p["hidden"]) + p["out_zp"], -128, 127)
        outs.append(h)
    y = np.stack(outs, axis=1) if return_sequences else h
    return y.astype(np.int8)
