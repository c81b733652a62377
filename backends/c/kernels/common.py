"""What every int8 convolution-like kernel template needs, as literals: geometry, zero points, tables."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ....ir.graph import Graph, Op
from ....ir.interpreter_int8 import conv_params
from ....ir.ops import OpKind, same_padding
from ....ir.quant import multiply_by_quantized_multiplier


def folded_bias(g: Graph, op: Op, in_zp: int) -> np.ndarray | None:
    """bias - in_zp * sum(weights) per output channel (the zero point folded in: exact in int32), or None when
    there is no bias tensor to replace (flash stays as the memory model counts it) or a sum could overflow."""
    if len(op.inputs) < 3 or in_zp == 0:
        return None
    w = g.tensors[op.inputs[1]].data.astype(np.int64)
    w = w.reshape(w.shape[0], -1)
    b = g.tensors[op.inputs[2]].data.astype(np.int64)
    folded = b - in_zp * w.sum(axis=1)
    bound = np.abs(b) + 256 * np.abs(w).sum(axis=1)  # every partial sum of bias' + x*w, and of the reference
    return folded if int(bound.max()) < 2**31 else None


def _weight_sums(g: Graph, op: Op) -> np.ndarray:
    """sum(|w|) per output channel."""
    w = np.abs(g.tensors[op.inputs[1]].data.astype(np.int64))
    return w.reshape(-1, w.shape[-1]).sum(axis=0) if op.kind == OpKind.DEPTHWISE_CONV2D else \
        w.reshape(w.shape[0], -1).sum(axis=1)


def accumulator_bound(g: Graph, op: Op, bias: np.ndarray | None = None) -> int:
    """The largest |bias + sum((x - zp) * w)| any output channel can reach (|x - zp| <= 255); ``bias``: the
    values the kernel adds instead of the bias tensor's."""
    if bias is None and len(op.inputs) > 2:
        bias = g.tensors[op.inputs[2]].data
    b = np.abs(np.asarray(bias, np.int64)) if bias is not None else 0
    return int((b + 255 * _weight_sums(g, op)).max())


def constant_channels(g: Graph, op: Op, p: dict, bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray,
                                                                                   np.ndarray | None] | None:
    """Per-channel requantization where some output channels have all-zero weights (pruned filters: their output
    is a constant, TFLite's requantization of the bias alone, often with a huge bias and shift that defeat the short
    rounding forms): those channels get bias 4 (k - out_zp), multiplier 2^30 and shift -1, which give the same
    constant k exactly (a high multiply by 2^30 halves an even value, the shift halves it again). Returns
    (mult, shift, bias) rewritten, bias None when there is none (then k is the output zero point), or None when
    no channel is constant or the requantization is per tensor."""
    const = _weight_sums(g, op) == 0
    if len(p["mult"]) <= 1 or not const.any():
        return None
    acc = np.asarray(bias, np.int64) if bias is not None else np.zeros(len(const), np.int64)
    k = np.clip(multiply_by_quantized_multiplier(acc, p["mult"], p["shift"]) + p["out_zp"], *p["act"])
    mult, shift = p["mult"].copy(), p["shift"].copy()
    mult[const], shift[const] = 1 << 30, -1
    if bias is None:
        return (mult, shift, None) if (k[const] == p["out_zp"]).all() else None
    new_bias = acc.copy()
    new_bias[const] = 4 * (k[const] - p["out_zp"])
    return mult, shift, new_bias


def layer_context(g: Graph, op: Op, arrays: Any, fold: bool = False,
                  rq_tables: tuple[np.ndarray | None, np.ndarray] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The template's literals (shapes at batch 1, strides, dilation, top/left padding, whether the bias exists
    and the requantization is per channel, whether the input zero point is folded into the bias: `fold` asks for
    it, for kernels without padding) and the call's arguments: input and output pointers, the flash arrays
    (weights, bias or NULL, multipliers, shifts), input and output zero points, activation range. ``rq_tables``
    (a kernel's own bias and requantization tables, same element counts as the tables they replace): they are
    passed as bias and multipliers, the shifts as NULL."""
    x, y, wt = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]], g.tensors[op.inputs[1]]
    p = conv_params(g, op)
    a = op.attrs
    if op.kind == OpKind.DENSE:
        rows = math.prod(x.shape[1:-1])
        geo = {"IH": rows, "IW": 1, "IC": x.shape[-1], "OH": rows, "OW": 1, "OC": y.shape[-1], "KH": 1, "KW": 1,
               "SH": 1, "SW": 1, "DH": 1, "DW": 1, "PT": 0, "PL": 0}
    else:
        kh, kw = wt.shape[1:3]
        (sh, sw), (dh, dw) = a["strides"], a["dilation"]
        same = a["padding"] == "same"
        geo = {"IH": x.shape[1], "IW": x.shape[2], "IC": x.shape[3], "OH": y.shape[1], "OW": y.shape[2],
               "OC": y.shape[3], "KH": kh, "KW": kw, "SH": sh, "SW": sw, "DH": dh, "DW": dw,
               "PT": same_padding(x.shape[1], kh, sh, dh)[0] if same else 0,
               "PL": same_padding(x.shape[2], kw, sw, dw)[0] if same else 0}
    has_bias = len(op.inputs) > 2
    folded = folded_bias(g, op, p["in_zp"]) if fold else None
    bias_vals = folded if folded is not None else (g.tensors[op.inputs[2]].data if has_bias else None)
    const = constant_channels(g, op, p, bias_vals)
    mult, shift = (const[0], const[1]) if const is not None else (p["mult"], p["shift"])
    if const is not None and has_bias:
        bias_vals = const[2]
    ctx = dict(geo, PER_CHANNEL=len(mult) > 1, HAS_BIAS=has_bias, RIGHT_ONLY=bool((shift <= 0).all()),
               FOLDED=folded is not None, FULL_RANGE=tuple(p["act"]) == (-128, 127))
    right = -shift
    bound = accumulator_bound(g, op, bias_vals)
    ctx["ROUND_FAST"] = bool(ctx["RIGHT_ONLY"] and right.min() >= 1 and right.max() <= 30
                             and bound + (1 << int(right.max() - 1)) + 1 < 2**31)
    ctx["ACC30"] = bool(ctx["ROUND_FAST"] and bound < 2**30)  # tcc_requant_rf30 may double it
    # some channel shifts by 0 (no rounding step): tcc_requant_rf0 rounds 2h by right + 1 >= 1, the same value
    ctx["ROUND_0"] = bool(ctx["RIGHT_ONLY"] and not ctx["ROUND_FAST"] and right.min() == 0 and right.max() <= 29
                          and 2 * bound + (1 << int(right.max())) + 1 < 2**31)
    # Cortex-M4/M7 blocks read each channel pair's requantization from a header of the widened weights
    # (rq_headers): the short rounding form with the output zero point folded into its rounding constant
    zp_ok = bool(ctx["ACC30"] and bound + (1 << int(right.max() - 1)) + 128 * (1 << int(right.max())) + 1 < 2**31)
    ctx["RQ"] = bool(ctx["ACC30"] and ctx["PER_CHANNEL"] and zp_ok)
    ctx["_rq"] = (bias_vals if has_bias else np.zeros(len(mult), np.int64), mult, right, p["out_zp"])
    weights = arrays.const(op.inputs[1])  # flash tables in the order of the arguments
    if rq_tables is not None:
        args = [arrays.ptr(op.inputs[0]), arrays.ptr(op.outputs[0]), weights,
                "NULL" if rq_tables[0] is None else arrays.array("bias", "int32_t", rq_tables[0]),
                arrays.array("mult", "int32_t", rq_tables[1]), "NULL",
                str(p["in_zp"]), str(p["out_zp"]), str(p["act"][0]), str(p["act"][1])]
        return ctx, args
    if folded is not None or (const is not None and has_bias):  # bias values of the kernel's own
        bias = arrays.array("bias", "int32_t", bias_vals)
    else:
        bias = arrays.const(op.inputs[2]) if has_bias else "NULL"
    args = [arrays.ptr(op.inputs[0]), arrays.ptr(op.outputs[0]), weights, bias,
            arrays.array("mult", "int32_t", mult), arrays.array("shift", "int32_t", shift),
            str(p["in_zp"]), str(p["out_zp"]), str(p["act"][0]), str(p["act"][1])]
    return ctx, args


WIDEN_GUARD = "TCC_DSP_ASM"  # the widened weights exist where the assembly loops run (Cortex-M4/M7 with GCC)
# a table only the portable path of its kernel reads (the assembly path reads the widened copy instead): defined
# where the assembly loops are not built, so that every core compiles exactly one copy (the memory report's figure)
PORTABLE_GUARD = f"!{WIDEN_GUARD}"
ROLE_ARGS = {"w": 2, "bias": 3, "mult": 4, "shift": 5}  # `layer_context`'s call arguments by role


def portable_args(arrays: Any, args: list[str], roles: tuple[str, ...]) -> list[str]:
    """``args`` (`layer_context`'s order) with the tables of ``roles`` (of "w", "bias", "mult", "shift": those the
    assembly path does not read) passed by ``arrays.portable``: TCC_PORTABLE(name), NULL where the assembly loops
    are built, the table itself defined only where they are not."""
    out = list(args)
    for role in roles:
        i = ROLE_ARGS[role]
        if out[i] != "NULL":
            out[i] = arrays.portable(out[i])
    return out


def widened_pairs(w: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` (a multiple of 4) weights of each output channel of ``w`` (channels x inputs, int8) widened
    to int16 pairs in the lane order of the widened inputs (tcc_widen2: inputs 0/2 in one word, 1/3 in the next),
    for channel pairs: per pair and four inputs, channel 0's two words then channel 1's (TCC_DOT2X2_WW). An odd
    last channel is left out (its dot product reads the int8 weights). int32 words, low half first."""
    oc = w.shape[0] - w.shape[0] % 2
    v = w[:oc, :n].astype(np.int64).reshape(oc // 2, 2, n // 4, 4)  # pair, channel, group, input
    lo = np.stack([v[..., 0], v[..., 1]], axis=-1) & 0xFFFF  # (pair, channel, group, word): inputs 0 / 1
    hi = np.stack([v[..., 2], v[..., 3]], axis=-1) & 0xFFFF  # inputs 2 / 3
    words = (lo | (hi << 16)).astype(np.uint32).view(np.int32)
    return words.transpose(0, 2, 1, 3).reshape(-1)  # pair, group, channel, word


def widened_bytes(g: Graph, op: Op, n: int, rq: bool = False) -> int:
    """Flash of `widened_pairs` for `op`'s weights (4 bytes per two weights), with the rq_headers row of every pair."""
    w = g.tensors[op.inputs[1]]
    oc = w.shape[0] - w.shape[0] % 2
    return oc * n * 2 + (oc // 2 * RQ_WORDS * 4 if rq else 0)


class _NoArrays:
    """An ArrayMaker that makes nothing: `layer_context`'s literals without emitting tables."""

    def const(self, tensor: str) -> str:
        return tensor

    def ptr(self, tensor: str) -> str:
        return tensor

    def array(self, base: str, ctype: str, values: Any, flash: bool = True, guard: str = "") -> str:
        return base

    def portable(self, name: str) -> str:
        return name


def literals(g: Graph, op: Op, fold: bool = False) -> dict[str, Any]:
    """`layer_context`'s template literals alone (no table is emitted)."""
    return layer_context(g, op, _NoArrays(), fold)[0]


RQ_WORDS = 8  # rq_headers: bias, multiplier, rounding constant and right shift of both channels of a pair


def rq_headers(rq: tuple, pairs: int) -> np.ndarray:
    """The requantization of channel pairs 0..pairs-1 as the assembly blocks read it, one row of RQ_WORDS each:
    2b0 2b1 m0 m1 c0 c1 r0 r1 (the bias doubled, as the weights are), where c = 2^(r-1) + out_zp * 2^r (tcc_rq30d:
    the zero point folded into the rounding constant)."""
    bias, mult, right, ozp = rq
    n = 2 * pairs
    r = np.asarray(right, np.int64)[:n]
    c = (np.int64(1) << (r - 1)) + np.int64(ozp) * (np.int64(1) << r)
    cols = [2 * np.asarray(bias, np.int64)[:n], np.asarray(mult, np.int64)[:n], c, r]
    return np.concatenate([v.reshape(pairs, 2) for v in cols], axis=1)


def widened_arg(g: Graph, op: Op, arrays: Any, n: int, rq: tuple | None = None,
                order: list[int] | None = None) -> str:
    """The call's argument for the layer's widened weights (a flash table defined under WIDEN_GUARD); ``n`` past
    the weights per channel pads them with zeros; ``order`` (n entries): the weight (index in the channel's
    window) at each position, -1 for a zero weight."""
    w = g.tensors[op.inputs[1]].data.reshape(g.tensors[op.inputs[1]].shape[0], -1)
    if n > w.shape[1]:  # a window padded to whole words: zero weights
        w = np.concatenate([w, np.zeros((w.shape[0], n - w.shape[1]), w.dtype)], axis=1)
    if order is not None:  # the last column is a zero weight where the window was padded (else appended)
        zero = np.zeros((w.shape[0], 1), w.dtype)
        w = np.concatenate([w, zero], axis=1)[:, [i if i >= 0 else w.shape[1] for i in order]]
    # with the pair headers the accumulators are kept doubled (bias and weights, |2w| <= 256 fits int16), which
    # the requantization's high multiply wants (tcc_rq30d: no doubling per output)
    words = widened_pairs(w.astype(np.int64) * (2 if rq is not None else 1), n)
    if rq is not None:  # each pair's rq_headers row before its weights
        pairs = words.reshape(-1, n)
        words = np.concatenate([rq_headers(rq, len(pairs)), pairs], axis=1).reshape(-1)
    name = arrays.array("ww", "int32_t", words, guard=WIDEN_GUARD)
    return f"TCC_WW({name})"
