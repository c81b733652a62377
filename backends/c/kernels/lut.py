"""int8 LOGISTIC and TANH as a 256-entry flash table: the output is a function of the int8 input alone, so the
table holds TFLite Micro's fixed-point result (ir.fixedpoint, the int8 interpreter's own) for every input value
and the layer is one load per element instead of the exp/reciprocal iterations per element."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ....ir.fixedpoint import logistic_s8, tanh_s8
from ....ir.graph import Graph, Op
from ....ir.ops import OpKind
from ....ir.tensor import DType
from . import render

TABLE_BYTES = 256


def matches(g: Graph, op: Op) -> bool:
    return op.kind in (OpKind.SIGMOID, OpKind.TANH) and g.tensors[op.inputs[0]].dtype == DType.INT8


def table(g: Graph, op: Op) -> np.ndarray:
    """The layer's output for the inputs -128..127, in that order."""
    q = g.tensors[op.inputs[0]].quant
    fn = logistic_s8 if op.kind == OpKind.SIGMOID else tanh_s8
    return np.asarray(fn(np.arange(-128, 128), int(q.zero_point[0]), float(q.scale[0])), np.int8)


def emit(g: Graph, op: Op, arrays: Any) -> tuple[str, list[str]]:
    """The function's C text (name left as `{fn}`) and the call's arguments."""
    n = math.prod(g.tensors[op.inputs[0]].shape[1:])
    args = [arrays.ptr(op.inputs[0]), arrays.ptr(op.outputs[0]), arrays.array("lut", "int8_t", table(g, op))]
    return render("lut.c.j2", fn="{fn}", N=n, KIND=op.kind.value), args
