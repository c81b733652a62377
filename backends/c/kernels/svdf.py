"""int8 ``svdf`` (TFLite Micro's integer SVDF, ``ir.svdf``) as one generated function per layer: sizes, zero points
and both multipliers as literals, the int16 state in the function's own static RAM (so layers never share one,
even of the same geometry) with a ``_reset`` function that zeroes it. The emitter calls it for every SVDF whatever
``--kernels`` says (the generic runtime has no SVDF)."""
from __future__ import annotations

from typing import Any

from ....ir.graph import Graph, Op
from ....ir.interpreter_int8 import svdf_op_params
from ....ir.ops import OpKind
from ....ir.tensor import DType
from . import render


def matches(g: Graph, op: Op) -> bool:
    return op.kind == OpKind.SVDF and g.tensors[op.inputs[0]].dtype == DType.INT8


def state_bytes(g: Graph, op: Op) -> int:
    """Static RAM of the kernel: the int16 state, filters x memory."""
    return 2 * g.tensors[op.inputs[2]].size


def table_bytes(g: Graph, op: Op) -> int:
    """Flash beyond the graph's own weights and bias: none (the multipliers are literals)."""
    return 0


def emit(g: Graph, op: Op, arrays: Any) -> tuple[str, list[str]]:
    """The function's C text (name left as ``{fn}``) and the call's arguments."""
    p = svdf_op_params(g, op)
    filters, memory = g.tensors[op.inputs[2]].shape
    rank = int(op.attrs["rank"])
    bias = len(op.inputs) > 3
    code = render("svdf.c.j2", fn="{fn}", POS=g.ops.index(op), F=g.tensors[op.inputs[0]].shape[1], FILTERS=filters,
                  MEMORY=memory, RANK=rank, UNITS=filters // rank, IN_ZP=p["in_zp"], OUT_ZP=p["out_zp"],
                  M1=p["m1"], M2=p["m2"], BIAS=bias)
    args = [arrays.ptr(op.inputs[0]), arrays.ptr(op.outputs[0]), arrays.const(op.inputs[1]),
            arrays.const(op.inputs[2])] + ([arrays.const(op.inputs[3])] if bias else [])
    return code, args
