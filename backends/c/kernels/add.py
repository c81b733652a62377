"""Element-wise ADD of two same-shape activations, the fixed-point steps inlined (no 64-bit helper calls)."""
from __future__ import annotations

from typing import Any

from ....ir.graph import Graph, Op
from ....ir.interpreter_int8 import add_params
from ....ir.ops import OpKind
from ....ir.quant import activation_range
from . import render


def _q(g: Graph, t: str) -> tuple[float, int]:
    q = g.tensors[t].quant
    return float(q.scale[0]), int(q.zero_point[0])


def matches(g: Graph, op: Op) -> bool:
    if op.kind != OpKind.ADD or len(op.inputs) != 2:
        return False
    y = g.tensors[op.outputs[0]]
    if any(g.tensors[t].is_const or g.tensors[t].shape != y.shape for t in op.inputs):
        return False
    (s1, _), (s2, _), (so, _) = (_q(g, t) for t in (*op.inputs, op.outputs[0]))
    p = add_params(s1, s2, so)
    return max(p["e1"], p["e2"], p["eo"]) <= 0  # right shifts only (a left output shift stays generic)


def emit(g: Graph, op: Op, arrays: Any) -> tuple[str, list[str]]:
    """The function's C text (name left as `{fn}`) and the call's arguments."""
    (s1, z1), (s2, z2), (so, zo) = (_q(g, t) for t in (*op.inputs, op.outputs[0]))
    p = add_params(s1, s2, so)
    lo, hi = activation_range(op.attrs.get("activation", "none"), so, zo)
    args = [arrays.ptr(op.inputs[0]), arrays.ptr(op.inputs[1]), arrays.ptr(op.outputs[0])]
    args += [str(v) for v in (z1, z2, p["m1"], -p["e1"], p["m2"], -p["e2"], p["mo"], -p["eo"], zo, lo, hi)]
    rights = {k: -p[k] for k in ("e1", "e2", "eo")}
    fast = all(0 <= r <= 30 for r in rights.values())  # the short forms' preconditions (see add.c.j2)
    # a right shift of 0 gets its own form; the others stay arguments (layers of one shape share the function)
    flags = {f"R{n}": 0 if rights[k] == 0 else 1 for n, k in (("A", "e1"), ("B", "e2"), ("O", "eo"))}
    return render("add.c.j2", fn="{fn}", N=g.tensors[op.outputs[0]].size, FAST=fast, **flags), args
