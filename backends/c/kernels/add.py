"""Element-wise ADD of two same-shape activations, the fixed-point steps inlined (no 64-bit helper calls).

Each input's scaled operand (TFLite: (x - zp) << 20, multiplied and shifted towards twice the larger input
scale) depends on its int8 value alone, so where the sum's bounds allow it the two operands come from 256-entry
flash tables computed at compile time with the int8 interpreter's arithmetic (`tables`), doubled so that the
sum feeds one rounding high multiply (smmulr on Cortex-M4/M7); the output zero point is folded into the rounding
constant. Otherwise (bounds not proved) every step runs per element."""
from __future__ import annotations

from typing import Any

import numpy as np

from ....ir.graph import Graph, Op
from ....ir.interpreter_int8 import add_params
from ....ir.ops import OpKind
from ....ir.quant import activation_range, rounding_divide_by_pot, saturating_rounding_doubling_high_mul
from . import render

TABLE_BYTES = 2 * 256 * 4  # two int32 tables per layer


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


def _scaled(zp: int, m: int, e: int) -> np.ndarray:
    """TFLite's scaled operand of every int8 input value -128..127 (int64)."""
    v = (np.arange(-128, 128, dtype=np.int64) - zp) * (1 << 20)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(v, m), -e).astype(np.int64)


def tables(g: Graph, op: Op) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The doubled operand tables of both inputs and the output rounding constant (half the output step plus
    the output zero point times the step), or None where a sum, the high multiply's input or the rounding add
    could leave 32 bits."""
    (s1, z1), (s2, z2), (so, zo) = (_q(g, t) for t in (*op.inputs, op.outputs[0]))
    p = add_params(s1, s2, so)
    ta, tb = _scaled(z1, p["m1"], p["e1"]), _scaled(z2, p["m2"], p["e2"])
    ro = -p["eo"]
    if ro > 30:
        return None
    c = ((1 << ro) >> 1) + zo * (1 << ro)
    s_max = int(np.abs(ta).max() + np.abs(tb).max())  # |sa + sb|; the high multiply's result is at most that + 1
    if 2 * s_max >= 2**31 or s_max + 1 + abs(c) + 1 >= 2**31:
        return None
    return 2 * ta, 2 * tb, c


def table_bytes(g: Graph, op: Op) -> int:
    """Flash of the layer's operand tables (0 where the kernel computes the operands per element)."""
    return TABLE_BYTES if matches(g, op) and tables(g, op) is not None else 0


def emit(g: Graph, op: Op, arrays: Any, table: bool = True) -> tuple[str, list[str]]:
    """The function's C text (name left as `{fn}`) and the call's arguments (``table``: the operand-table form
    where it applies, else always the parametric one)."""
    (s1, z1), (s2, z2), (so, zo) = (_q(g, t) for t in (*op.inputs, op.outputs[0]))
    p = add_params(s1, s2, so)
    lo, hi = activation_range(op.attrs.get("activation", "none"), so, zo)
    n = g.tensors[op.outputs[0]].size
    args = [arrays.ptr(op.inputs[0]), arrays.ptr(op.inputs[1]), arrays.ptr(op.outputs[0])]
    tabs = tables(g, op) if table else None
    if tabs is not None:
        ta, tb, c = tabs
        args += [arrays.array("ta", "int32_t", ta), arrays.array("tb", "int32_t", tb)]
        args += [str(v) for v in (p["mo"], c, -p["eo"], lo, hi)]
        return render("add_table.c.j2", fn="{fn}", N=n, R0=p["eo"] == 0, FULL_RANGE=(lo, hi) == (-128, 127)), args
    args += [str(v) for v in (z1, z2, p["m1"], -p["e1"], p["m2"], -p["e2"], p["mo"], -p["eo"], zo, lo, hi)]
    rights = {k: -p[k] for k in ("e1", "e2", "eo")}
    fast = all(0 <= r <= 30 for r in rights.values())  # the short forms' preconditions (see add.c.j2)
    # a right shift of 0 gets its own form; the others stay arguments (layers of one shape share the function)
    flags = {f"R{n}": 0 if rights[k] == 0 else 1 for n, k in (("A", "e1"), ("B", "e2"), ("O", "eo"))}
    return render("add.c.j2", fn="{fn}", N=n, FAST=fast, **flags), args
