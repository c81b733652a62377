"""tinycc's integer GRU/SimpleRNN constants (ir/recurrent.py): int8 weights symmetric per row (gate unit) for the
input and recurrent kernels, int32 biases in Q3.12 (clamped to +-2^24, far beyond the gates' saturation at +-8).
The input and output parameters are the activations' own (calibrated like any op's output)."""
from __future__ import annotations

import numpy as np

from ...ir.graph import Graph, Op
from ...ir.quant import quantize_weights, symmetric_weight_scales
from ...ir.recurrent import GATE_FRAC
from ...ir.tensor import DType, QuantParams, Tensor

BIAS_LIMIT = 1 << 24


def quantize_recurrent(graph: Graph, op: Op) -> None:
    """Replace the float kernels and biases of one ``gru``/``simple_rnn`` op by their integer form."""
    for i in (1, 2):
        w = graph.tensors[op.inputs[i]]
        scales = symmetric_weight_scales(w.data, 0)
        qw = Tensor(graph.unique_tensor_name(f"{w.name}_int8"), w.shape, DType.INT8,
                    quantize_weights(w.data, scales, 0), QuantParams(scales, np.zeros(scales.size, np.int64), 0))
        graph.add_tensor(qw)
        op.inputs[i] = qw.name
    for i in range(3, len(op.inputs)):
        b = graph.tensors[op.inputs[i]]
        q = np.clip(np.round(b.data.astype(np.float64) * (1 << GATE_FRAC)), -BIAS_LIMIT, BIAS_LIMIT).astype(np.int32)
        qb = Tensor(graph.unique_tensor_name(f"{b.name}_q12"), b.shape, DType.INT32, q,
                    QuantParams([1.0 / (1 << GATE_FRAC)], [0]))
        graph.add_tensor(qb)
        op.inputs[i] = qb.name
