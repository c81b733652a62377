"""Structural checks of a graph; every error names the op or tensor."""
from __future__ import annotations

from .graph import Graph, IRError
from .ops import OP_DEFS, OpKind
from .tensor import DType

_INT_KINDS = {DType.INT8, DType.UINT8, DType.INT16}


def verify(graph: Graph) -> None:
    """Raise IRError on dangling tensors, bad order, shape or dtype mismatches."""
    defined = set(graph.inputs)
    for name in graph.inputs:
        if name not in graph.tensors:
            raise IRError(f"graph input {name!r} has no tensor")
        if graph.tensors[name].is_const:
            raise IRError(f"graph input {name!r} is a constant")
    defined |= {n for n, t in graph.tensors.items() if t.is_const}
    names: set[str] = set()
    for op in graph.ops:
        if op.name in names:
            raise IRError(f"duplicate op name {op.name!r}")
        names.add(op.name)
        for i, t in enumerate(op.inputs):
            if t not in graph.tensors:
                raise IRError(f"{op.describe()}: input {i} {t!r} does not exist")
            if t not in defined:
                raise IRError(f"{op.describe()}: input {t!r} is used before it is produced")
        for i in OP_DEFS[op.kind].weight_inputs:
            if i < len(op.inputs) and not graph.tensors[op.inputs[i]].is_const:
                raise IRError(f"{op.describe()}: input {i} {op.inputs[i]!r} must be a constant")
        expected = graph._infer(op)
        if len(expected) != len(op.outputs):
            raise IRError(f"{op.describe()}: expects {len(expected)} outputs, has {len(op.outputs)}")
        for t, shape in zip(op.outputs, expected):
            if t not in graph.tensors:
                raise IRError(f"{op.describe()}: output {t!r} does not exist")
            if t in defined:
                raise IRError(f"{op.describe()}: output {t!r} is produced twice")
            ten = graph.tensors[t]
            if tuple(ten.shape) != tuple(shape):
                raise IRError(f"{op.describe()}: output {t!r} has shape {ten.shape}, inferred {tuple(shape)}")
            defined.add(t)
        _check_dtypes(graph, op)
    for t in graph.outputs:
        if t not in defined:
            raise IRError(f"graph output {t!r} is never produced")


def _check_dtypes(graph: Graph, op) -> None:
    x = graph.tensors[op.inputs[0]]
    y = graph.tensors[op.outputs[0]]
    if op.kind == OpKind.QUANTIZE:
        if y.dtype not in _INT_KINDS or y.quant is None:
            raise IRError(f"{op.describe()}: output must be int8/uint8/int16 with quantization parameters")
        return
    if op.kind == OpKind.DEQUANTIZE:
        if x.dtype not in _INT_KINDS or x.quant is None or y.dtype != DType.FLOAT32:
            raise IRError(f"{op.describe()}: must map a quantized int8/uint8/int16 tensor to float32")
        return
    if x.dtype == DType.FLOAT32:
        for t in op.inputs[1:]:
            if graph.tensors[t].dtype != DType.FLOAT32:
                raise IRError(f"{op.describe()}: float op with {graph.tensors[t].dtype.value} input {t!r}")
        if y.dtype != DType.FLOAT32:
            raise IRError(f"{op.describe()}: float op with {y.dtype.value} output")
    elif x.dtype in (DType.INT8, DType.INT16):
        if y.dtype != x.dtype:
            raise IRError(f"{op.describe()}: {x.dtype.value} op with {y.dtype.value} output")
        for t in [op.inputs[0], *op.outputs]:
            if graph.tensors[t].quant is None:
                raise IRError(f"{op.describe()}: {x.dtype.value} tensor {t!r} has no quantization parameters")
    else:
        raise IRError(f"{op.describe()}: unsupported input dtype {x.dtype.value}")
