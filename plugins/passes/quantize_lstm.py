"""Quantization of ``lstm`` ops for TFLite's integer LSTM (helpers of the ``calibrate`` and ``quantize_int8`` passes).

- weights: int8 symmetric, one scale per gate (max |w| of the gate's rows / 127), as the converter's per-tensor
  gate weights; bias int32 with scale input_scale * input-weight gate scale;
- output (= hidden state): the calibrated range, asymmetric int8 like any activation;
- cell state: int16 with a power-of-two scale 2**p holding the largest calibrated |cell| (TFLite's rule),
  -15 <= p <= -1 (TFLite's own kernel takes -15 <= p <= -9, a cell range up to 64; TFLite Micro's any).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...ir.calibration import sample_count, take_samples
from ...ir.graph import Graph, Op
from ...ir.interpreter import run
from ...ir.lstm import cell_power_for, lstm_float
from ...ir.ops import OpKind
from ...ir.quant import quantize_bias, quantize_weights
from ...ir.tensor import DType, QuantParams, Tensor


def cell_maxima(graph: Graph, samples: Any, batch_size: int = 64) -> dict[str, float]:
    """Largest |cell state| of every ``lstm`` op over the calibration samples (float graph; one array, or a dict
    of arrays by input name for a model with several inputs)."""
    ops = [o for o in graph.ops if o.kind == OpKind.LSTM]
    if not ops:
        return {}
    out: dict[str, float] = {o.name: 0.0 for o in ops}
    for i in range(0, sample_count(samples), max(1, batch_size)):
        env = run(graph, take_samples(samples, slice(i, i + batch_size)), outputs=[o.inputs[0] for o in ops])
        for o in ops:
            cells: list[np.ndarray] = []
            args = [env[o.inputs[0]]] + [graph.tensors[t].data for t in o.inputs[1:]]
            lstm_float(args[0], args[1], args[2], args[3] if len(args) > 3 else None, True, cells)
            out[o.name] = max(out[o.name], float(max(np.abs(c).max() for c in cells)))
    return out


def quantize_lstm(graph: Graph, op: Op, in_scale: float, cell_max: float | None) -> None:
    """Replace the float weights and bias of ``op`` by their int8/int32 forms; set its cell scale."""
    units = graph.tensors[op.inputs[2]].shape[1]
    gate_in = None
    for pos in (1, 2):
        w = graph.tensors[op.inputs[pos]]
        per_gate = np.array([np.abs(w.data[k * units:(k + 1) * units]).max() for k in range(4)], np.float32)
        per_gate = np.where(per_gate > 0, per_gate / np.float32(127), np.float32(1.0)).astype(np.float32)
        scales = np.repeat(per_gate, units).astype(np.float32)
        qw = Tensor(graph.unique_tensor_name(f"{w.name}_int8"), w.shape, DType.INT8,
                    quantize_weights(w.data, scales, 0), QuantParams(scales, np.zeros(scales.size, np.int64), 0))
        graph.add_tensor(qw)
        op.inputs[pos] = qw.name
        if pos == 1:
            gate_in = scales
    if len(op.inputs) > 3:
        b = graph.tensors[op.inputs[3]]
        qb, bs = quantize_bias(b.data, in_scale, gate_in)
        qbt = Tensor(graph.unique_tensor_name(f"{b.name}_int32"), b.shape, DType.INT32, qb,
                     QuantParams(bs, np.zeros(bs.size, np.int64), 0))
        graph.add_tensor(qbt)
        op.inputs[3] = qbt.name
    op.attrs["cell_power"] = cell_power_for(cell_max if cell_max is not None else 8.0)
