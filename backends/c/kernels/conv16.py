"""int16-activation (TFLite 16x8) convolution, depthwise convolution (depth multiplier 1) and dense layers as
generated per-layer C: literal shapes, sums in int32 where the layer's weights and bias bound them (checked
here), TFLite's int64 requantization rewritten as one high multiply, an add and a shift (runtime/tinycc_gen.h
``tcc16_rq``), bit-exact with the portable ``tcc_conv2d_s16`` / ``tcc_dwconv2d_s16`` / ``tcc_fc_s16``.

Where the assembly loops are built (TCC_DSP_ASM: Cortex-M4/M7 with GCC) the kernels read the weights widened
to int16 at compile time (a second copy in flash, counted by `ww_bytes`; none with --no-widen): a convolution
or dense layer does one ``smlad`` per two inputs and output channel (four channels share each input pair), a
depthwise layer one ``smlabb``/``smlatt`` per tap and channel (two channels per pair of words). Elsewhere, or
without the copy, the same loops multiply the int8 weights one by one. Layers whose sums could leave int32, whose
requantization shifts by less than 17, with dilation, groups or a depth multiplier keep the portable call."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ....ir.graph import Graph, Op
from ....ir.interpreter_int8 import conv_params
from ....ir.ops import OpKind, same_padding
from ....ir.tensor import DType
from . import render
from .common import WIDEN_GUARD, portable_args

KINDS = (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE)
UNROLL_TAPS = 25  # depthwise windows up to this many taps: an interior pixel's taps unrolled (literal offsets)


def is_int16(g: Graph, op: Op) -> bool:
    """An op of the int16 path (backends/c/emit16.py): int16 input or output (not an int8 SVDF's int16 weights)."""
    return op.kind != OpKind.SVDF and any(g.tensors[t].dtype == DType.INT16 for t in [*op.inputs, *op.outputs])


def requant_tables(mult: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per channel (m, t) with TFLite's int64 MultiplyByQuantizedMultiplier(a, mult, shift) ==
    (hi32(a * m) + 2^(t-1)) >> t for every int32 a, or None where the form does not apply (total shift < 17)."""
    mult, shift = np.asarray(mult, np.int64), np.asarray(shift, np.int64)
    reduced = np.where(mult < 0x7FFF0000, (mult + (1 << 15)) >> 16, 0x7FFF)
    total = 15 - shift
    if int(total.min()) < 17 or int(total.max()) > 62:
        return None
    s = np.maximum(0, 33 - total)
    t = total + s - 32
    return (reduced << s).astype(np.int64), t.astype(np.int64)


def uniform_tables(mult: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, int] | None:
    """`requant_tables` with one t for every channel (the multipliers scaled to fit): (m per channel, t), or None
    where the channels' total shifts spread too far (each m = reduced << s needs 0 <= s <= 16)."""
    mult, shift = np.asarray(mult, np.int64), np.asarray(shift, np.int64)
    if requant_tables(mult, shift) is None:
        return None
    reduced = np.where(mult < 0x7FFF0000, (mult + (1 << 15)) >> 16, 0x7FFF)
    total = 15 - shift
    t = max(1, int(total.max()) - 32)
    if t > int(total.min()) - 16:
        return None
    return (reduced << (t + 32 - total)).astype(np.int64), t


def _sum_bound(g: Graph, op: Op) -> np.ndarray:
    """|bias| + 32768 * sum|w| per output channel: the largest |partial sum| of the layer's int32 accumulator."""
    w = np.abs(g.tensors[op.inputs[1]].data.astype(np.int64))
    per = w.reshape(-1, w.shape[-1]).sum(axis=0) if op.kind == OpKind.DEPTHWISE_CONV2D else \
        w.reshape(w.shape[0], -1).sum(axis=1)
    b = np.abs(g.tensors[op.inputs[2]].data.astype(np.int64)) if len(op.inputs) > 2 else 0
    return b + 32768 * per


def matches(g: Graph, op: Op) -> bool:
    if op.kind not in KINDS or g.tensors[op.inputs[0]].dtype != DType.INT16 or \
            g.tensors[op.outputs[0]].dtype != DType.INT16 or not g.tensors[op.inputs[1]].is_const:
        return False
    a = op.attrs
    if op.kind == OpKind.CONV2D and a.get("groups", 1) != 1:
        return False
    if op.kind == OpKind.DEPTHWISE_CONV2D and a.get("depth_multiplier", 1) != 1:
        return False
    if op.kind != OpKind.DENSE and tuple(a["dilation"]) != (1, 1):
        return False
    p = conv_params(g, op)
    if p["in_zp"] or p["out_zp"] or requant_tables(p["mult"], p["shift"]) is None:
        return False
    return int(_sum_bound(g, op).max()) < 2**31


def ww_bytes(g: Graph, op: Op, widen: bool = True) -> int:
    """Flash of the weights widened to int16 (the layer's weights once more; 0 with --no-widen)."""
    return 2 * g.tensors[op.inputs[1]].size if widen else 0


def _geometry(g: Graph, op: Op) -> dict[str, int]:
    x, y, a = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]], op.attrs
    if op.kind == OpKind.DENSE:
        rows = math.prod(x.shape[1:-1])
        return {"IH": rows, "IW": 1, "IC": x.shape[-1], "OH": rows, "OW": 1, "OC": y.shape[-1], "KH": 1, "KW": 1,
                "SH": 1, "SW": 1, "PT": 0, "PL": 0}
    kh, kw = g.tensors[op.inputs[1]].shape[1:3]
    (sh, sw) = a["strides"]
    same = a["padding"] == "same"
    return {"IH": x.shape[1], "IW": x.shape[2], "IC": x.shape[3], "OH": y.shape[1], "OW": y.shape[2],
            "OC": y.shape[3], "KH": kh, "KW": kw, "SH": sh, "SW": sw,
            "PT": same_padding(x.shape[1], kh, sh, 1)[0] if same else 0,
            "PL": same_padding(x.shape[2], kw, sw, 1)[0] if same else 0}


def _clipped(n_out: int, stride: int, pad: int, k: int, n_in: int) -> bool:
    """Whether some output row/column's window leaves the input (its taps are clipped)."""
    return any(o * stride - pad < 0 or o * stride - pad + k > n_in for o in range(n_out))


def emit(g: Graph, op: Op, arrays: Any, widen: bool = True) -> tuple[str, list[str]]:
    """The function's C text (name left as `{fn}`) and the call's arguments: input, output, int8 weights, bias
    (or NULL), the (m, t) requantization tables in place of the multipliers and shifts (same sizes), the widened
    weights (TCC_WW: NULL where the assembly loops are not built; NULL with --no-widen)."""
    geo = _geometry(g, op)
    p = conv_params(g, op)
    m, t = requant_tables(p["mult"], p["shift"])
    uni = uniform_tables(p["mult"], p["shift"])
    if uni is not None:  # one literal shift: the multipliers scaled to it (the shift table then holds t alone)
        m, t = uni[0], np.full(len(m), uni[1], np.int64)
    ctx = dict(geo, KIND={OpKind.CONV2D: "conv", OpKind.DENSE: "conv", OpKind.DEPTHWISE_CONV2D: "dw"}[op.kind],
               OP=op.kind.value, PER_CHANNEL=len(m) > 1, HAS_BIAS=len(op.inputs) > 2, WIDE=widen,
               LO=int(p["act"][0]), HI=int(p["act"][1]),
               CLIP_Y=_clipped(geo["OH"], geo["SH"], geo["PT"], geo["KH"], geo["IH"]),
               CLIP_X=_clipped(geo["OW"], geo["SW"], geo["PL"], geo["KW"], geo["IW"]),
               UNROLL=geo["KH"] * geo["KW"] <= UNROLL_TAPS, T=uni[1] if uni is not None else 0)
    ctx["PAIR"] = ctx["KIND"] == "conv" and geo["OW"] > 1  # neighbouring pixels with the same taps: one block
    w = g.tensors[op.inputs[1]]
    args = [arrays.ptr(op.inputs[0]), arrays.ptr(op.outputs[0]), arrays.const(op.inputs[1]),
            arrays.const(op.inputs[2]) if len(op.inputs) > 2 else "NULL",
            arrays.array("mult", "int32_t", m), arrays.array("shift", "int32_t", t)]
    if widen:
        name = arrays.array("ww", "int16_t", w.data.reshape(-1).astype(np.int16), guard=WIDEN_GUARD)
        # the assembly path reads the int16 copy alone, but for a depthwise layer's last channels (not 4)
        args = portable_args(arrays, args, ("w",) if ctx["KIND"] == "conv" or ctx["OC"] % 4 == 0 else ())
        args.append(f"TCC_WW({name})")
    else:
        args.append("NULL")
    return render("conv16.c.j2", fn="{fn}", **ctx), args
