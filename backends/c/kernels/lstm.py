"""int8 ``lstm`` (TFLite Micro's integer LSTM, ``ir.lstm``) as one generated function: sizes, zero points and every
multiplier literal; weights, the biases with the zero points folded in (int32, input and recurrent) and TFLite's
256-entry sigmoid table (int32, 1 KiB of flash) as arguments.
The emitter calls it for every LSTM whatever ``--kernels`` says (the generic runtime has no LSTM loop)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ....ir.graph import Graph, Op
from ....ir.interpreter_int8 import lstm_op_params
from ....ir.lstm import tanh_params
from ....ir.lstm_table import SIGMOID_TABLE_U16
from ....ir.ops import OpKind
from ....ir.tensor import DType
from . import render

TABLE_BYTES = 256 * 4  # the sigmoid table, int32


def table_bytes(g: Graph, op: Op) -> int:
    """Flash beyond the graph's own weights and bias: the sigmoid table, the gates' multipliers and shifts, the
    recurrent bias (4H int32) and, for a layer without bias, the input bias."""
    units = g.tensors[op.inputs[2]].shape[1]
    return TABLE_BYTES + 64 + 16 * units * (1 if len(op.inputs) > 3 else 2)  # + 16 gate multipliers/shifts


def matches(g: Graph, op: Op) -> bool:
    return op.kind == OpKind.LSTM and g.tensors[op.inputs[0]].dtype == DType.INT8


def state_bytes(g: Graph, op: Op) -> int:
    """Static RAM of the kernel: hidden state (int8), cell state and four gates (int16)."""
    return g.tensors[op.inputs[2]].shape[1] * (1 + 2 + 8)


def emit(g: Graph, op: Op, arrays: Any) -> tuple[str, list[str]]:
    """The function's C text (name left as ``{fn}``) and the call's arguments."""
    x = g.tensors[op.inputs[0]]
    p = lstm_op_params(g, op)
    units = g.tensors[op.inputs[2]].shape[1]
    code = render("lstm.c.j2", fn="{fn}", T=x.shape[1], F=x.shape[2], H=units, SEQ=op.attrs["return_sequences"],
                  CELL_POWER=p["cell_power"], OUT_ZP=p["out_zp"], FC=p["fc"],
                  IC=p["ic"], HID=p["hidden"], TANH=tanh_params(p["cell_power"]), CLIP=p["cell_clip"])
    rows = np.zeros(4 * units, np.int64) if len(op.inputs) < 4 else g.tensors[op.inputs[3]].data.astype(np.int64)
    bias_in = rows - p["in_zp"] * g.tensors[op.inputs[1]].data.astype(np.int64).sum(axis=1)
    bias_rec = -p["out_zp"] * g.tensors[op.inputs[2]].data.astype(np.int64).sum(axis=1)
    args = [arrays.ptr(op.inputs[0]), arrays.ptr(op.outputs[0]), arrays.const(op.inputs[1]),
            arrays.const(op.inputs[2]), arrays.array("bias", "int32_t", bias_in),
            arrays.array("bias_rec", "int32_t", bias_rec),
            arrays.array("mult", "int32_t", np.array([[gt[j] for gt in p["gates"]] for j in range(4)]).reshape(-1)),
            arrays.array("lut", "int32_t", np.array(SIGMOID_TABLE_U16, np.int32))]
    return code, args
