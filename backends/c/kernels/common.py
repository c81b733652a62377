"""What every int8 convolution-like kernel template needs, as literals: geometry, zero points, tables."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ....ir.graph import Graph, Op
from ....ir.interpreter_int8 import conv_params
from ....ir.ops import OpKind, same_padding


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


def accumulator_bound(g: Graph, op: Op) -> int:
    """The largest |bias + sum((x - zp) * w)| any output channel can reach (|x - zp| <= 255)."""
    w = np.abs(g.tensors[op.inputs[1]].data.astype(np.int64))
    per_channel = w.reshape(-1, w.shape[-1]).sum(axis=0) if op.kind == OpKind.DEPTHWISE_CONV2D else \
        w.reshape(w.shape[0], -1).sum(axis=1)
    b = np.abs(g.tensors[op.inputs[2]].data.astype(np.int64)) if len(op.inputs) > 2 else 0
    return int((b + 255 * per_channel).max())


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
    ctx = dict(geo, PER_CHANNEL=len(p["mult"]) > 1, HAS_BIAS=has_bias, RIGHT_ONLY=bool((p["shift"] <= 0).all()),
               FOLDED=folded is not None, FULL_RANGE=tuple(p["act"]) == (-128, 127))
    right = -p["shift"]
    ctx["ROUND_FAST"] = bool(ctx["RIGHT_ONLY"] and right.min() >= 1 and right.max() <= 30
                             and accumulator_bound(g, op) + (1 << int(right.max() - 1)) + 1 < 2**31)
    ctx["ACC30"] = bool(ctx["ROUND_FAST"] and accumulator_bound(g, op) < 2**30)  # tcc_requant_rf30 may double it
    weights = arrays.const(op.inputs[1])  # flash tables in the order of the arguments
    if rq_tables is not None:
        args = [arrays.ptr(op.inputs[0]), arrays.ptr(op.outputs[0]), weights,
                "NULL" if rq_tables[0] is None else arrays.array("bias", "int32_t", rq_tables[0]),
                arrays.array("mult", "int32_t", rq_tables[1]), "NULL",
                str(p["in_zp"]), str(p["out_zp"]), str(p["act"][0]), str(p["act"][1])]
        return ctx, args
    if folded is not None:
        bias = arrays.array("bias", "int32_t", folded)
    else:
        bias = arrays.const(op.inputs[2]) if has_bias else "NULL"
    args = [arrays.ptr(op.inputs[0]), arrays.ptr(op.outputs[0]), weights, bias,
            arrays.array("mult", "int32_t", p["mult"]), arrays.array("shift", "int32_t", p["shift"]),
            str(p["in_zp"]), str(p["out_zp"]), str(p["act"][0]), str(p["act"][1])]
    return ctx, args
