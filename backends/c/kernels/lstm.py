"""int8 ``lstm`` (TFLite Micro's integer LSTM, ``ir.lstm``) as one generated function: sizes, zero points and every
multiplier literal; weights, bias and TFLite's 256-entry sigmoid table (int32, 1 KiB of flash) as arguments.
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

TABLE_BYTES = 256 * 4


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
                  CELL_POWER=p["cell_power"], GATES=p["gates"], IN_ZP=p["in_zp"], OUT_ZP=p["out_zp"], FC=p["fc"],
                  IC=p["ic"], HID=p["hidden"], TANH=tanh_params(p["cell_power"]), CLIP=p["cell_clip"],
                  HAS_BIAS=len(op.inputs) > 3)
    args = [arrays.ptr(op.inputs[0]), arrays.ptr(op.outputs[0]), arrays.const(op.inputs[1]),
            arrays.const(op.inputs[2]), arrays.const(op.inputs[3]) if len(op.inputs) > 3 else "NULL",
            arrays.array("lut", "int32_t", np.array(SIGMOID_TABLE_U16, np.int32))]
    return code, args
