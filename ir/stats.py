"""Per-op statistics: parameters, MACs, activation bytes."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .graph import Graph, Op
from .ops import OpKind


@dataclass
class OpStats:
    name: str
    kind: str
    origin: str
    output_shape: tuple[int, ...]
    params: int
    param_bytes: int
    macs: int
    activation_bytes: int
    dtype: str = ""  # the output's element type (int8, float32, ...)


def op_macs(graph: Graph, op: Op) -> int:
    """Multiply-accumulates of one inference (batch 1)."""
    out = graph.tensors[op.outputs[0]]
    n_out = math.prod(out.shape[1:])
    if op.kind == OpKind.CONV2D:
        w = graph.tensors[op.inputs[1]].shape
        return n_out * w[1] * w[2] * w[3]
    if op.kind == OpKind.DEPTHWISE_CONV2D:
        w = graph.tensors[op.inputs[1]].shape
        return n_out * w[1] * w[2]
    if op.kind == OpKind.DENSE:
        return n_out * graph.tensors[op.inputs[1]].shape[1]
    if op.kind == OpKind.LSTM:  # per step: 4H gate rows over the input and the hidden state
        x, w_rec = graph.tensors[op.inputs[0]].shape, graph.tensors[op.inputs[2]].shape
        return x[1] * w_rec[0] * (x[2] + w_rec[1])
    if op.kind == OpKind.TRANSPOSE_CONV2D:  # every input pixel times the whole kernel
        x, w = graph.tensors[op.inputs[0]].shape, graph.tensors[op.inputs[1]].shape
        return math.prod(x[1:3]) * math.prod(w)
    if op.kind in (OpKind.GRU, OpKind.SIMPLE_RNN):  # every step: the input and the state times their kernels
        steps = graph.tensors[op.inputs[0]].shape[1]
        return steps * (graph.tensors[op.inputs[1]].size + graph.tensors[op.inputs[2]].size)
    return 0


# Estimated instructions of tinycc's int8 C kernels per MAC (conv, depthwise, dense) and per output element (the
# other ops), fitted to the instructions per call measured under QEMU Cortex-M4 (benchmarks/results/backends.md;
# within about 10 % on the benchmark models, see plugins/applications/search/feasibility.py)
INSTR_PER_MAC = {OpKind.CONV2D: 24, OpKind.DEPTHWISE_CONV2D: 60, OpKind.DENSE: 24,
                 OpKind.GRU: 11, OpKind.SIMPLE_RNN: 11,  # recurrent: the sensor GRU of tests/test_recurrent.py
                 OpKind.LSTM: 5}  # LSTM: 5.3 measured (49x10 -> LSTM(32), gates and cell included)
INSTR_PER_ELEMENT = {OpKind.SIGMOID: 400, OpKind.TANH: 400, OpKind.MUL: 100, OpKind.ADD: 60}
OTHER_PER_ELEMENT = 20  # quantize, pooling, relu, ... per output element


def op_instructions(graph: Graph, op: Op) -> int:
    """Estimated Cortex-M4 instructions of one int8 op (batch 1), from its MACs or its output elements."""
    if op.kind in INSTR_PER_MAC:
        return INSTR_PER_MAC[op.kind] * op_macs(graph, op)
    return INSTR_PER_ELEMENT.get(op.kind, OTHER_PER_ELEMENT) * math.prod(graph.tensors[op.outputs[0]].shape[1:])


def op_stats(graph: Graph, op: Op) -> OpStats:
    consts = [graph.tensors[t] for t in op.inputs if graph.tensors[t].is_const]
    out = graph.tensors[op.outputs[0]]
    return OpStats(
        name=op.name,
        kind=op.kind.value,
        origin=op.origin,
        output_shape=tuple(out.shape),
        params=sum(t.size for t in consts),
        param_bytes=sum(t.nbytes for t in consts),
        macs=op_macs(graph, op),
        activation_bytes=math.prod(out.shape[1:]) * out.dtype.itemsize,
        dtype=out.dtype.value,
    )


def graph_stats(graph: Graph) -> list[OpStats]:
    """Stats per op in schedule order. A constant shared by two ops counts once (first user)."""
    seen: set[str] = set()
    rows = []
    for op in graph.ops:
        s = op_stats(graph, op)
        dup = [graph.tensors[t] for t in op.inputs if graph.tensors[t].is_const and t in seen]
        s.params -= sum(t.size for t in dup)
        s.param_bytes -= sum(t.nbytes for t in dup)
        seen.update(t for t in op.inputs if graph.tensors[t].is_const)
        rows.append(s)
    return rows


def totals(graph: Graph) -> dict[str, int]:
    rows = graph_stats(graph)
    return {
        "params": sum(r.params for r in rows),
        "param_bytes": sum(r.param_bytes for r in rows),
        "macs": sum(r.macs for r in rows),
        "activation_bytes": sum(r.activation_bytes for r in rows),
        "max_activation_bytes": max((r.activation_bytes for r in rows), default=0),
    }
