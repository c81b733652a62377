"""int16 MAX_POOL_2D as generated per-layer C: literal shapes, windows clipped at the padding (the padded taps are
never read, as TFLite skips them), two channels per word (ssub16 + sel on DSP cores: runtime/tinycc_gen.h
``tcc16_max2``), bit-exact with the portable ``tcc_pool_s16``."""
from __future__ import annotations

from typing import Any

from ....ir.graph import Graph, Op
from ....ir.ops import OpKind, same_padding
from ....ir.quant import activation_range
from ....ir.tensor import DType
from . import render


def matches(g: Graph, op: Op) -> bool:
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    return op.kind == OpKind.MAX_POOL2D and x.dtype == DType.INT16 and y.dtype == DType.INT16 and \
        len(x.shape) == 4


def emit(g: Graph, op: Op, arrays: Any) -> tuple[str, list[str]]:
    """The function's C text (name left as `{fn}`) and the call's arguments (input, output)."""
    x, y, a = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]], op.attrs
    (ph, pw), (sh, sw) = a["pool_size"], a["strides"]
    same = a["padding"] == "same"
    q = y.quant
    lo, hi = activation_range(a.get("activation", "none"), float(q.scale[0]), int(q.zero_point[0]), -32768, 32767)
    ctx = {"IH": x.shape[1], "IW": x.shape[2], "C": x.shape[3], "OH": y.shape[1], "OW": y.shape[2], "KH": ph,
           "KW": pw, "SH": sh, "SW": sw, "PT": same_padding(x.shape[1], ph, sh, 1)[0] if same else 0,
           "PL": same_padding(x.shape[2], pw, sw, 1)[0] if same else 0, "LO": int(lo), "HI": int(hi)}
    return render("pool16.c.j2", fn="{fn}", **ctx), [arrays.ptr(op.inputs[0]), arrays.ptr(op.outputs[0])]
