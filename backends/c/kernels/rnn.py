"""tinycc's integer GRU and SimpleRNN (ir/recurrent.py) as one generated function per layer: steps, features, units,
zero points and the output requantization are literals; weights, per-row multipliers, biases and the two
513-entry int16 sigmoid/tanh tables (one copy per model) are flash arrays. The int16 state (two or three vectors
of ``H``) lives on the stack. Every target runs it (whatever ``--kernels``): there is no generic runtime kernel
for it."""
from __future__ import annotations

from typing import Any

from ....ir.graph import Graph, Op
from ....ir.interpreter_int8 import recurrent_params
from ....ir.ops import OpKind
from ....ir.recurrent import SIGMOID_LUT, TANH_LUT
from ..layout import fold_constants
from . import Kernel, render

KINDS = (OpKind.GRU, OpKind.SIMPLE_RNN)


def table_bytes(g: Graph) -> int:
    """Flash of the int16 sigmoid (with a GRU) and tanh (with any recurrent layer) tables: one each per model."""
    kinds = {op.kind for op in g.ops}
    return 2 * TANH_LUT.size * ((OpKind.GRU in kinds) + bool(kinds & set(KINDS)))


def _table(arrays: Any, role: str, values: Any) -> str:
    """The model's one flash copy of a table (named after the first layer that reads it)."""
    shared = arrays.shared
    if role not in shared:
        shared[role] = arrays.array(role, "int16_t", values)
    return shared[role]


def stack_bytes(g: Graph, op: Op) -> int:
    """The state vectors the function keeps on the stack."""
    units = g.tensors[op.inputs[2]].shape[1]
    return 2 * units * (3 if op.kind == OpKind.GRU and not op.attrs["reset_after"] else 2)


def emit(g: Graph, op: Op, arrays: Any) -> tuple[str, list[str]]:
    """The function's C text (name left as ``{fn}``) and the call's arguments."""
    x = g.tensors[op.inputs[0]]
    p = recurrent_params(g, op)
    gru = op.kind == OpKind.GRU
    ctx = {"fn": "{fn}", "KIND": op.kind.value, "T": x.shape[1], "F": x.shape[2], "H": p["r"].shape[1],
           "SEQ": op.attrs["return_sequences"], "RESET_AFTER": op.attrs.get("reset_after", True),
           "IN_ZP": p["in_zp"], "OUT_ZP": p["out_zp"], "MO": p["mo"], "EO": p["eo"]}
    args = [arrays.ptr(op.inputs[0]), arrays.ptr(op.outputs[0]), arrays.const(op.inputs[1]),
            arrays.const(op.inputs[2]), arrays.const(op.inputs[3]), arrays.const(op.inputs[4]) if gru else "NULL",
            arrays.array("mult", "int32_t", p["mx"]), arrays.array("shift", "int32_t", p["ex"]),
            arrays.array("state_mult", "int32_t", p["mh"]), arrays.array("state_shift", "int32_t", p["eh"]),
            _table(arrays, "sigmoid", SIGMOID_LUT) if gru else "NULL", _table(arrays, "tanh", TANH_LUT)]
    return render("rnn.c.j2", **ctx), args


def kernel_call(g: Graph, op: Op, arrays: Any, kernels: list[Kernel]) -> tuple[Kernel, list[str]]:
    """The layer's function (shared with an earlier layer of the same code) and the call's arguments."""
    code, args = emit(g, op, arrays)
    code = fold_constants(code)
    for k in kernels:
        if k.code == code.replace("{fn}", k.fn):
            k.layers.append(op.name)
            return k, args
    fn = f"tcc_layer_{len(kernels)}"
    kernels.append(Kernel(fn, code.replace("{fn}", fn), "rnn", [op.name]))
    return kernels[-1], args
