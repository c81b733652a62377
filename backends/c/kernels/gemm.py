"""1x1 stride-1 convolutions and dense layers as a matrix product: pixels x inputs times inputs x outputs."""
from __future__ import annotations

from typing import Any

from ....ir.graph import Graph, Op
from ....ir.ops import OpKind
from . import render
from .common import layer_context, literals, widened_arg, widened_bytes


WIDEN_MAX_INPUTS = 256  # DSP path: two pixels widened once into 4 x inputs bytes of stack (at most 1 KiB)


def matches(g: Graph, op: Op) -> bool:
    if op.kind == OpKind.DENSE:
        return True
    if op.kind != OpKind.CONV2D or op.attrs.get("groups", 1) != 1:
        return False
    kh, kw = g.tensors[op.inputs[1]].shape[1:3]
    return (kh, kw) == (1, 1) and tuple(op.attrs["strides"]) == (1, 1)


def emit(g: Graph, op: Op, arrays: Any, widen: bool = True) -> tuple[str, list[str]]:
    """The function's C text (name left as `{fn}`) and the call's arguments (``widen``: the weights widened in
    flash where the assembly path reads them, else widened as it runs)."""
    ctx, args = layer_context(g, op, arrays, fold=True)  # no padding: the zero point folds into the bias
    ctx["P"] = ctx["OH"] * ctx["OW"]
    ctx["WIDEN"] = ctx["IC"] % 4 == 0 and ctx["IC"] <= WIDEN_MAX_INPUTS
    ctx["WWARG"] = widen and ww_used(g, op)
    ctx["RQH"] = ctx["WWARG"] and ctx["RQ"]  # the widened weights carry each pair's requantization
    if ctx["WWARG"]:
        args.append(widened_arg(g, op, arrays, ctx["IC"], ctx["_rq"] if ctx["RQH"] else None))
    return render("gemm.c.j2", fn="{fn}", **ctx), args


def ww_used(g: Graph, op: Op) -> bool:
    """Whether the assembly path reads weights widened at compile time (it widens the inputs, and there is a
    pair of output channels)."""
    ic = g.tensors[op.inputs[0]].shape[-1]
    return ic % 4 == 0 and ic <= WIDEN_MAX_INPUTS and g.tensors[op.inputs[1]].shape[0] >= 2  # a channel pair


def ww_bytes(g: Graph, op: Op, widen: bool = True) -> int:
    """Flash of the widened weights `emit` adds for `op` (0 without)."""
    if not widen or not ww_used(g, op):
        return 0
    return widened_bytes(g, op, g.tensors[op.inputs[0]].shape[-1], literals(g, op, fold=True)["RQ"])
