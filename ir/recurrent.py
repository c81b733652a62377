"""GRU and SimpleRNN: shapes, the float kernels (Keras's arithmetic) and tinycc's integer form.

IR layout (gate order z, r, h as Keras): ``gru`` inputs ``[x [N, T, F], W [3H, F], R [3H, H], b [3H], rb [3H]]``
(``rb`` the recurrent bias of ``reset_after``, zeros otherwise); ``simple_rnn`` inputs ``[x, W [H, F], R [H, H],
b [H]]`` with tanh. Output ``[N, H]`` or, with ``return_sequences``, ``[N, T, H]``. The initial state is zero.

Integer form (TFLite has no integer GRU; docs/architecture.md, "Recurrent layers"): x int8 (its own scale and
zero point), W and R int8 symmetric per row (gate unit), b and rb int32 in Q3.12 (scale 2^-12). The hidden state
is int16 Q0.15 (scale 2^-15: GRU and tanh-SimpleRNN states stay in (-1, 1)). Per step every gate pre-activation is
``MBQM(sum((x - zx) * W), mx) + MBQM(sum(h * R), mh) + b`` in Q3.12, saturated to int16; sigmoid and tanh read a
513-entry int16 table over [-8, 8) with linear interpolation (Q0.15 out); products of Q0.15 values round
``(p + 2^14) >> 15``. The int8 output requantizes the Q0.15 state to the output's calibrated scale and zero point.
All of it is integer arithmetic, so :func:`run_int8_gru` and the generated C agree bit for bit.
"""
from __future__ import annotations

import numpy as np

from .quant import multiply_by_quantized_multiplier, quantize_multiplier

Array = np.ndarray
F32 = np.float32
GATE_FRAC = 12  # gate pre-activations and biases: Q3.12
STATE_FRAC = 15  # hidden state, sigmoid and tanh outputs: Q0.15
LUT_SHIFT = 7  # 512 table segments of 128 Q3.12 steps (1/32 each)
TERM_LIMIT = 1 << 28  # each rescaled term is clamped here first, so int32 sums never overflow
MAX_UNITS = 256  # sum(h * R) < 256 * 2^15 * 127 < 2^31
LUT_SIZE = (1 << (16 - LUT_SHIFT)) + 1  # 513 entries: -8 .. +8 inclusive


def gru_shape(shapes: list[tuple[int, ...]], attrs: dict) -> list[tuple[int, ...]]:
    return _rnn_shape(shapes, attrs, 3)


def simple_rnn_shape(shapes: list[tuple[int, ...]], attrs: dict) -> list[tuple[int, ...]]:
    return _rnn_shape(shapes, attrs, 1)


def _rnn_shape(shapes: list[tuple[int, ...]], attrs: dict, gates: int) -> list[tuple[int, ...]]:
    from .ops import ShapeError

    x, w, r = shapes[0], shapes[1], shapes[2]
    if len(x) != 3:
        raise ShapeError(f"a recurrent layer needs a [steps, features] input, got {x[1:]}")
    if len(w) != 2 or len(r) != 2 or w[0] % gates or w[1] != x[2] or r != (w[0], w[0] // gates):
        raise ShapeError(f"recurrent weights {w} and {r} do not match input {x} with {gates} gate(s)")
    h = w[0] // gates
    if any(s != (w[0],) for s in shapes[3:]):
        raise ShapeError(f"recurrent biases {shapes[3:]} must have {w[0]} values")
    return [(x[0], x[1], h) if attrs["return_sequences"] else (x[0], h)]


# ---- float (Keras) ------------------------------------------------------------------------------------------
def _sigmoid(v: Array) -> Array:
    with np.errstate(over="ignore"):
        return (F32(1) / (F32(1) + np.exp(-v))).astype(F32)


def gru_float(x: Array, w: Array, r: Array, b: Array, rb: Array, attrs: dict) -> Array:
    """Keras GRU (recurrent activation sigmoid, activation tanh), reset_after either way."""
    n, steps, _ = x.shape
    units = r.shape[1]
    h = np.zeros((n, units), F32)
    seq = []
    for t in range(steps):
        xm = (x[:, t] @ w.T + b).astype(F32)
        if attrs["reset_after"]:
            hm = (h @ r.T + rb).astype(F32)
            z = _sigmoid(xm[:, :units] + hm[:, :units])
            rr = _sigmoid(xm[:, units:2 * units] + hm[:, units:2 * units])
            hh = np.tanh(xm[:, 2 * units:] + rr * hm[:, 2 * units:])
        else:
            hm = (h @ r[:2 * units].T).astype(F32)
            z = _sigmoid(xm[:, :units] + hm[:, :units])
            rr = _sigmoid(xm[:, units:2 * units] + hm[:, units:])
            hh = np.tanh(xm[:, 2 * units:] + (rr * h) @ r[2 * units:].T)
        h = (z * h + (F32(1) - z) * hh).astype(F32)
        seq.append(h)
    return np.stack(seq, 1) if attrs["return_sequences"] else h


def simple_rnn_float(x: Array, w: Array, r: Array, b: Array, attrs: dict) -> Array:
    """Keras SimpleRNN with tanh: h = tanh(x W + b + h R)."""
    n, steps, _ = x.shape
    h = np.zeros((n, r.shape[1]), F32)
    seq = []
    for t in range(steps):
        h = np.tanh((x[:, t] @ w.T + b + h @ r.T).astype(F32)).astype(F32)
        seq.append(h)
    return np.stack(seq, 1) if attrs["return_sequences"] else h


# ---- integer ------------------------------------------------------------------------------------------------
def _table(fn) -> Array:
    pts = (np.arange(LUT_SIZE, dtype=np.float64) * (1 << LUT_SHIFT) - 32768) / (1 << GATE_FRAC)
    return np.clip(np.round(fn(pts) * (1 << STATE_FRAC)), -32768, 32767).astype(np.int16)


SIGMOID_LUT = _table(lambda v: 1.0 / (1.0 + np.exp(-v)))
TANH_LUT = _table(np.tanh)


def lut_eval(lut: Array, v: Array) -> Array:
    """Table with linear interpolation: v int16 Q3.12 -> Q0.15 (int64 arrays)."""
    u = np.asarray(v, np.int64) + 32768
    i, frac = u >> LUT_SHIFT, u & ((1 << LUT_SHIFT) - 1)
    lo = lut.astype(np.int64)[i]
    hi = lut.astype(np.int64)[i + 1]
    return lo + (((hi - lo) * frac + (1 << (LUT_SHIFT - 1))) >> LUT_SHIFT)


def _sat16(v: Array) -> Array:
    return np.clip(v, -32768, 32767)


def _term(v: Array) -> Array:
    return np.clip(v, -TERM_LIMIT, TERM_LIMIT)


def _qmul15(a: Array, b: Array) -> Array:
    """Product of Q0.15 by Qm.n, back in Qm.n: (a * b + 2^14) >> 15."""
    return (a * b + (1 << (STATE_FRAC - 1))) >> STATE_FRAC


def row_multipliers(reals: Array) -> tuple[Array, Array]:
    pairs = [quantize_multiplier(float(v)) for v in reals]
    return np.array([m for m, _ in pairs], np.int64), np.array([e for _, e in pairs], np.int64)


def int_params(in_scale: float, w_scales: Array, r_scales: Array, out_scale: float) -> dict:
    """The integer layer's multipliers: input part and state part per row into Q3.12, state Q0.15 to the output."""
    to_gate = float(1 << GATE_FRAC)
    mx, ex = row_multipliers(float(np.float32(in_scale)) * w_scales.astype(np.float64) * to_gate)
    mh, eh = row_multipliers(r_scales.astype(np.float64) * to_gate / float(1 << STATE_FRAC))
    mo, eo = quantize_multiplier(1.0 / (float(1 << STATE_FRAC) * float(np.float32(out_scale))))
    return {"mx": mx, "ex": ex, "mh": mh, "eh": eh, "mo": mo, "eo": eo}


def run_int(kind: str, xq: Array, in_zp: int, w: Array, r: Array, b: Array, rb: Array | None, p: dict,
            out_zp: int, return_sequences: bool, reset_after: bool) -> Array:
    """The integer GRU ('gru') or SimpleRNN ('simple_rnn') on an int8 batch [N, T, F]; int8 output."""
    n, steps, _ = xq.shape
    units = r.shape[1]
    w64, r64, b64 = w.astype(np.int64), r.astype(np.int64), b.astype(np.int64)
    rb64 = rb.astype(np.int64) if rb is not None else np.zeros_like(b64)
    mbqm = multiply_by_quantized_multiplier
    h = np.zeros((n, units), np.int64)
    outs = []
    for t in range(steps):
        ax = _term(mbqm((xq[:, t].astype(np.int64) - in_zp) @ w64.T, p["mx"], p["ex"])) + b64
        if kind == "simple_rnn":
            h = lut_eval(TANH_LUT, _sat16(ax + _term(mbqm(h @ r64.T, p["mh"], p["eh"]))))
        else:
            hz = slice(0, 2 * units) if not reset_after else slice(0, 3 * units)
            ah = _term(mbqm(h @ r64[hz].T, p["mh"][hz], p["eh"][hz])) + rb64[hz]
            z = lut_eval(SIGMOID_LUT, _sat16(ax[:, :units] + ah[:, :units]))
            rr = lut_eval(SIGMOID_LUT, _sat16(ax[:, units:2 * units] + ah[:, units:2 * units]))
            if reset_after:
                cand = ax[:, 2 * units:] + _qmul15(rr, ah[:, 2 * units:])
            else:
                rh = _qmul15(rr, h)
                hs = slice(2 * units, 3 * units)
                cand = ax[:, 2 * units:] + _term(mbqm(rh @ r64[hs].T, p["mh"][hs], p["eh"][hs]))
            hh = lut_eval(TANH_LUT, _sat16(cand))
            h = hh + _qmul15(z, h - hh)
        if return_sequences or t == steps - 1:
            outs.append(np.clip(mbqm(h, p["mo"], p["eo"]) + out_zp, -128, 127).astype(np.int8))
    return np.stack(outs, 1) if return_sequences else outs[-1]
