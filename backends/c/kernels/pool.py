"""Average pooling over the whole input (GLOBAL_AVG_POOL, or AVG_POOL2D whose window is the input)."""
from __future__ import annotations

import math
from typing import Any

from ....ir.graph import Graph, Op
from ....ir.ops import OpKind
from ....ir.quant import activation_range
from . import render


def matches(g: Graph, op: Op) -> bool:
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    if op.kind == OpKind.GLOBAL_AVG_POOL:
        return not op.attrs.get("requantize")
    if op.kind != OpKind.AVG_POOL2D or len(x.shape) != 4:
        return False
    # one output pixel whose window is exactly the input: no padded pixel is ever counted
    return tuple(y.shape[1:3]) == (1, 1) and tuple(op.attrs["pool_size"]) == tuple(x.shape[1:3])


def emit(g: Graph, op: Op, arrays: Any) -> tuple[str, list[str]]:
    """The function's C text (name left as `{fn}`) and the call's arguments."""
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    q = y.quant
    lo, hi = activation_range(op.attrs.get("activation", "none"), float(q.scale[0]), int(q.zero_point[0]))
    args = [arrays.ptr(op.inputs[0]), arrays.ptr(op.outputs[0]), str(lo), str(hi)]
    return render("pool.c.j2", fn="{fn}", N=math.prod(x.shape[1:-1]), C=x.shape[-1]), args
