"""LSTM in float (Keras semantics) and in TFLite's integer form (int8 activations, int16 gates and cell state).

IR op ``lstm``: inputs x ``[N, T, F]``, ``w_in [4H, F]``, ``w_rec [4H, H]``, ``bias [4H]``, rows grouped by gate in
Keras's order i, f, c, o (also the order of TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM input tensors); attributes
``return_sequences`` (output ``[N, T, H]``, else the last step ``[N, H]``), ``cell_power`` (int8 only: the int16 cell
state scale is ``2**cell_power``) and ``cell_clip`` (0: none). Sigmoid gates, tanh cell input and output, no
peepholes, projection or layer norm. Every sample starts from a zero state (Keras's stateless LSTM).

int8 form: x and the output int8 asymmetric (the output's parameters are those of the hidden state); weights int8
symmetric with one scale per gate (per-axis parameters on axis 0, the H rows of a gate repeating its scale), bias
int32 with scale ``input_scale * w_in gate scale``. The arithmetic is TFLite Micro's integer LSTM (lstm_eval): per
gate, two fully connected products (input and hidden state) each requantized to int16 with scale 2^-12 (Q3.12) and
added with saturation; sigmoid and tanh by TFLite's int16 LOGISTIC/TANH (an interpolated 256-entry table, output
Q0.15); cell = f * c (scale 2^-15) + i * g (scale 2^-30 / cell scale), saturated to int16 (and clipped with
``cell_clip``); hidden = tanh(cell) * o requantized to the output's parameters.
"""
from __future__ import annotations

import math

import numpy as np

from .lstm_table import SIGMOID_TABLE_U16
from .quant import multiply_by_quantized_multiplier, quantize_multiplier

Array = np.ndarray
F32 = np.float32
GATE_SCALE = 2.0 ** -12  # int16 gate pre-activations: Q3.12
ACT_SCALE = 2.0 ** -15  # int16 gate activations: Q0.15
_TABLE = np.array(SIGMOID_TABLE_U16, np.int64)


def _sigmoid(x: Array) -> Array:
    with np.errstate(over="ignore"):
        return (F32(1) / (F32(1) + np.exp(-x))).astype(F32)


def lstm_float(x: Array, w_in: Array, w_rec: Array, bias: Array | None, return_sequences: bool,
               cells: list[Array] | None = None) -> Array:
    """Keras LSTM (sigmoid gates, tanh) on ``x [N, T, F]``; appends each step's cell state to ``cells`` if given."""
    n, steps, _ = x.shape
    units = w_rec.shape[1]
    h = np.zeros((n, units), F32)
    c = np.zeros((n, units), F32)
    b = np.zeros(4 * units, F32) if bias is None else bias.astype(F32)
    xw = (np.matmul(x.astype(F32), w_in.T.astype(F32)) + b).astype(F32)  # [N, T, 4H]
    outs = []
    for t in range(steps):
        z = (xw[:, t] + np.matmul(h, w_rec.T.astype(F32))).astype(F32)
        i, f, g, o = (z[:, k * units:(k + 1) * units] for k in range(4))
        c = (_sigmoid(f) * c + _sigmoid(i) * np.tanh(g)).astype(F32)
        h = (_sigmoid(o) * np.tanh(c)).astype(F32)
        if cells is not None:
            cells.append(c)
        outs.append(h)
    return np.stack(outs, axis=1) if return_sequences else h


# ---- TFLite's int16 LOGISTIC and TANH (reference_integer_ops, power-of-two input scale) ----------------------------
def _table_interp(a: Array, frac_bits: int, saturated: int) -> Array:
    """(table[a >> frac_bits] << frac_bits) + frac * (next - it); ``saturated`` from index 255 on."""
    uh = a >> frac_bits
    idx = np.minimum(uh, 254)
    ua, ub = _TABLE[idx], _TABLE[idx + 1]
    res = (ua << frac_bits) + (a & ((1 << frac_bits) - 1)) * (ub - ua)
    return np.where(uh >= 255, saturated, res)


def sigmoid_i16(x: Array) -> Array:
    """TFLite's int16 LOGISTIC on Q3.12 input (multiplier 3, no shift): Q0.15 output."""
    v = x.astype(np.int64) * 3
    r = _table_interp(np.abs(v), 9, 0x7FFF << 10)
    r = np.where(v >= 0, r + (1 << 9), (1 << 25) - r + (1 << 9) - 1)
    return (r >> 10).astype(np.int16)


def tanh_params(power: int) -> tuple[int, int]:
    """(input multiplier, right shift) of TFLite Micro's LSTM tanh on int16 with scale 2**power."""
    shift = (15 + power) - 3
    if shift < 0:
        return 3, -shift
    return 3 << shift, 0


def tanh_i16(x: Array, power: int) -> Array:
    """TFLite's int16 TANH of a value with scale 2**power: Q0.15 output."""
    mult, shift = tanh_params(power)
    rnd = (1 << (shift - 1)) if shift > 0 else 0
    v = (x.astype(np.int64) * mult + rnd) >> shift
    r = _table_interp(np.abs(v), 8, 0xFFFF << 8)
    r = np.where(v >= 0, r - (1 << 23) + (1 << 7), -r + (1 << 23) + (1 << 7) - 1)
    return (r >> 8).astype(np.int16)


# ---- integer LSTM -----------------------------------------------------------------------------------------------
def _mult(real: float) -> tuple[int, int]:
    return quantize_multiplier(real)


def lstm_params(in_scale: float, in_zp: int, w_in_scales: Array, w_rec_scales: Array, out_scale: float,
                out_zp: int, cell_power: int, cell_clip: float = 0.0) -> dict:
    """Every multiplier and shift of the integer LSTM, derived as TFLite Micro's Prepare does (shared with the C
    emitter). ``w_*_scales``: one float32 scale per gate (i, f, c, o)."""
    s_in = float(F32(in_scale))
    s_out = float(F32(out_scale))
    cell_scale = 2.0 ** cell_power
    gates = []
    for k in range(4):
        m_i, e_i = _mult(s_in * float(F32(w_in_scales[k])) / GATE_SCALE)
        m_r, e_r = _mult(s_out * float(F32(w_rec_scales[k])) / GATE_SCALE)
        gates.append((m_i, e_i, m_r, e_r))
    clip = 0
    if cell_clip > 0:
        clip = int(min(max(float(F32(cell_clip)) / cell_scale, -32768.0), 32767.0))
    return {"in_zp": int(in_zp), "out_zp": int(out_zp), "gates": gates,
            "fc": _mult(ACT_SCALE * cell_scale / cell_scale), "ic": _mult(ACT_SCALE * ACT_SCALE / cell_scale),
            "hidden": _mult(ACT_SCALE * ACT_SCALE / s_out), "cell_power": int(cell_power), "cell_clip": clip}


def _requant16(acc: Array, m: int, e: int) -> Array:
    return np.clip(multiply_by_quantized_multiplier(acc, m, e), -32768, 32767)


def lstm_int8(x: Array, w_in: Array, w_rec: Array, bias: Array | None, p: dict, return_sequences: bool) -> Array:
    """TFLite Micro's integer LSTM on int8 ``x [N, T, F]`` (see the module docstring); int8 output."""
    n, steps, _ = x.shape
    units = w_rec.shape[1]
    wi = w_in.astype(np.int64)
    wr = w_rec.astype(np.int64)
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
            pre.append(np.clip(_requant16(acc_in[:, sl], m_i, e_i) + _requant16(acc_rec[:, sl], m_r, e_r),
                               -32768, 32767))
        i, f, o = (sigmoid_i16(pre[k]).astype(np.int64) for k in (0, 1, 3))
        g = tanh_i16(pre[2], -12).astype(np.int64)
        c = _requant16(f * c, *p["fc"])
        c = np.clip(c + _requant16(i * g, *p["ic"]), -32768, 32767)
        if p["cell_clip"] > 0:
            c = np.clip(c, -p["cell_clip"], p["cell_clip"])
        tc = tanh_i16(c, p["cell_power"]).astype(np.int64)
        h = np.clip(multiply_by_quantized_multiplier(tc * o, *p["hidden"]) + p["out_zp"], -128, 127)
        outs.append(h)
    y = np.stack(outs, axis=1) if return_sequences else h
    return y.astype(np.int8)


def gate_scales(scales: Array, units: int) -> Array:
    """One scale per gate from per-axis weight scales (H rows per gate sharing it)."""
    s = np.broadcast_to(np.asarray(scales, np.float32), (4 * units,))
    return s[::units].copy()


def cell_power_for(max_abs: float) -> int:
    """The power-of-two int16 cell scale that holds ``max_abs``: 2**p with 32767 * 2**p >= max_abs (p <= -1)."""
    if not math.isfinite(max_abs) or max_abs <= 0:
        return -15
    return int(min(max(math.ceil(math.log2(max_abs / 32767.0)), -15), -1))
