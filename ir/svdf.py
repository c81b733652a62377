"""SVDF (TFLite's builtin 27): a rank-``rank`` factored fully connected layer over the last ``memory`` frames.

IR op ``svdf``: inputs x ``[N, F]``, ``w_feature [filters, F]``, ``w_time [filters, memory]``, optional ``bias
[units]`` (``filters = units * rank``); attributes ``rank``, ``activation`` ("none"/"relu"/"relu6", float only)
and, in int8, ``state_scale`` (the int16 activation state's scale; its zero point is 0). Output ``[N, units]``.

State: TFLite keeps a variable tensor ``[1, filters * memory]`` between Invoke calls. tinycc's semantics: **the N
rows of one run are N consecutive Invoke calls of one batch-1 stream that starts from a zero state** (TFLite
after ``reset_all_variables()``, then one Invoke per row). Per frame: the state shifts one column left, the new
column is ``w_feature @ x``, and ``out[u] = bias[u] + sum over the rank filters f of u of w_time[f] . state[f]``.

int8 (TFLite Micro's svdf_common.cc and TFLite's reference kernel): int8 x, w_feature int8, w_time int16, bias
int32 (scale state_scale * w_time scale), state int16. The feature product ``sum w_feature * (x - in_zp)`` is
requantized by ``in_scale * wf_scale / state_scale`` (float32 arithmetic, as the runtimes) and saturated to int16;
the time product (int32, wrapping) plus bias is requantized by ``state_scale * wt_scale / out_scale`` to int8.
The fused activation is NOT applied in int8 (neither runtime applies it; the output range does the clamping).
"""
from __future__ import annotations

import numpy as np

from .interpreter import _act  # the float fused activations (relu, relu6), as every float op
from .quant import multiply_by_quantized_multiplier, quantize_multiplier

Array = np.ndarray
F32 = np.float32


def svdf_float(x: Array, wf: Array, wt: Array, bias: Array | None, rank: int, activation: str) -> Array:
    """TFLite's float SVDF over the rows of ``x [N, F]`` as consecutive frames from a zero state."""
    filters, memory = wt.shape
    units = filters // rank
    state = np.zeros((filters, memory), F32)
    b = np.zeros(units, F32) if bias is None else bias.astype(F32)
    outs = []
    for row in x.astype(F32):
        state = np.concatenate([state[:, 1:], (wf.astype(F32) @ row).astype(F32)[:, None]], axis=1)
        per_filter = np.sum(state * wt.astype(F32), axis=1, dtype=F32)
        y = (b + per_filter.reshape(units, rank).sum(axis=1, dtype=F32)).astype(F32)
        outs.append(_act(y, activation))
    return np.stack(outs).astype(F32)


def svdf_params(in_scale: float, in_zp: int, wf_scale: float, wt_scale: float, state_scale: float,
                out_scale: float, out_zp: int) -> dict:
    """The two requantization multipliers as TFLite Micro's PrepareSvdf derives them (shared with the C emitter)."""
    s1 = F32(F32(in_scale) * F32(wf_scale)) / F32(state_scale)
    s2 = F32(F32(state_scale) * F32(wt_scale)) / F32(out_scale)
    return {"in_zp": int(in_zp), "out_zp": int(out_zp), "m1": quantize_multiplier(float(F32(s1))),
            "m2": quantize_multiplier(float(F32(s2)))}


def _wrap32(v: Array) -> Array:
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def svdf_int8(x: Array, wf: Array, wt: Array, bias: Array | None, rank: int, p: dict) -> Array:
    """TFLite Micro's integer SVDF (int16 state) over the rows of int8 ``x [N, F]`` from a zero state."""
    filters, memory = wt.shape
    units = filters // rank
    state = np.zeros((filters, memory), np.int64)
    b = np.zeros(units, np.int64) if bias is None else bias.astype(np.int64)
    wfi, wti = wf.astype(np.int64), wt.astype(np.int64)
    outs = []
    for row in x.astype(np.int64):
        feat = _wrap32(wfi @ (row - p["in_zp"]))
        feat = np.clip(multiply_by_quantized_multiplier(feat, *p["m1"]), -32768, 32767)
        state = np.concatenate([state[:, 1:], feat[:, None]], axis=1)
        per_filter = _wrap32(np.sum(state * wti, axis=1))
        acc = _wrap32(b + per_filter.reshape(units, rank).sum(axis=1))
        y = multiply_by_quantized_multiplier(acc, *p["m2"]) + p["out_zp"]
        outs.append(np.clip(y, -128, 127))
    return np.stack(outs).astype(np.int8)
