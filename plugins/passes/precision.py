"""Activation precision of the quantize pass: which ops run with int16 activations (TFLite's 16x8) and the
requantize (QUANTIZE) ops between int8 and int16 parts of a mixed model.

``QuantConfig.activations == "int16"`` makes every op int16; ``QuantConfig.int16_layers`` names layers (their
origin or op name, or ``first``/``last``: the first/last layer with weights) kept in int16 in an int8 model.
Ops that share their input's parameters (pooling, reshape, pad, concatenation, ...) follow their input's
precision. Where a tensor meets an op of the other precision it is requantized: int16 -> int8 by a QUANTIZE
op (TFLite's Requantize), int8 -> int16 by DEQUANTIZE + QUANTIZE through float32 (TFLite's QUANTIZE refuses
an int8 input with an int16 output; TFLite Micro would take it, but the file must run in both). int16 tensors
are symmetric (zero point 0, scale max|x| / 32767, as the converter's 16x8 mode).
"""
from __future__ import annotations

import numpy as np

from ...config import QuantConfig
from ...errors import TinyccError, UnsupportedLayerError
from ...ir.graph import Graph
from ...ir.interpreter_int8 import INT16_KINDS
from ...ir.ops import OpKind
from ...ir.quant import INT32_MAX, round_half_away
from ...ir.tensor import DType, QuantParams

WEIGHTED = (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE, OpKind.TRANSPOSE_CONV2D)


def int16_ops(graph: Graph, quant: QuantConfig, shared: frozenset | set) -> set[str]:
    """Names of the ops whose activations are int16 (empty for a plain int8 model)."""
    if quant.activations == "int16":
        return {o.name for o in graph.ops}
    if not quant.int16_layers:
        return set()
    weighted = [o for o in graph.ops if o.kind in WEIGHTED]
    chosen: set[str] = set()
    for name in quant.int16_layers:
        if name in ("first", "last") and weighted:
            hits = [weighted[0] if name == "first" else weighted[-1]]
        else:
            hits = [o for o in graph.ops if name in (o.origin, o.name)]
        if not hits:
            layers = list(dict.fromkeys(o.origin for o in graph.ops))
            more = f", ... ({len(layers)} layers)" if len(layers) > 8 else ""
            raise TinyccError(f"--int16-layers: {name!r} names no layer of the quantized graph (the on-device "
                              f"classifier is float); layers: {', '.join(layers[:8])}{more}")
        chosen |= {o.name for o in hits}
    wide_t: set[str] = set()
    for op in graph.ops:  # ops that copy their input's parameters follow its precision
        if op.name not in chosen and op.kind in shared:
            srcs = [t for t in op.inputs if not graph.tensors[t].is_const]
            if srcs and srcs[0] in wide_t:
                chosen.add(op.name)
        if op.name in chosen:
            wide_t.update(op.outputs)
    return chosen


def check_int16_support(graph: Graph, wide: set[str]) -> None:
    """Raise UnsupportedLayerError naming the first int16 layer that has no int16 kernel."""
    bad = [o for o in graph.ops if o.name in wide and o.kind not in INT16_KINDS]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UnsupportedLayerError(f"layer {bad[0].origin!r} ({bad[0].kind.value}) has no int16 kernel{more}; "
                                    "`tinycc ops` lists the int16 kernels")


def tensor_precision(graph: Graph, wide: set[str]) -> set[str]:
    """Activations that are int16: outputs of int16 ops, and graph inputs whose first reader is int16."""
    out = {t for o in graph.ops if o.name in wide for t in o.outputs}
    readers = graph.consumers_map()
    for name in graph.inputs:
        first = readers.get(name) or []
        if first and first[0].name in wide:
            out.add(name)
    return out


def insert_requantize(graph: Graph, wide: set[str], wide_t: set[str], ranges: dict) -> set[str]:
    """A requantization wherever a tensor is read by an op of the other precision; the new tensor gets the
    source's calibrated range (its own parameters in its own type). Returns the float32 tensors it made."""
    made: dict[tuple[str, bool], str] = {}
    floats: set[str] = set()
    for op in list(graph.ops):
        if op.kind in (OpKind.QUANTIZE, OpKind.DEQUANTIZE):
            continue
        for i, t in enumerate(op.inputs):
            if graph.tensors[t].is_const or (t in wide_t) == (op.name in wide):
                continue
            key = (t, op.name in wide)
            if key not in made:
                src = t
                if key[1]:  # int8 -> float32 -> int16
                    mid = graph.unique_tensor_name(f"{t}/float")
                    d = graph.add_op(OpKind.DEQUANTIZE, [t], graph.unique_op_name(mid), {}, origin=op.origin,
                                     output_name=mid, index=graph.ops.index(op))
                    src = d.outputs[0]
                    floats.add(src)
                    ranges[src] = ranges[t]
                new = graph.unique_tensor_name(f"{t}/{'int16' if key[1] else 'int8'}")
                q = graph.add_op(OpKind.QUANTIZE, [src], graph.unique_op_name(new), {}, origin=op.origin,
                                 output_name=new, index=graph.ops.index(op))
                made[key] = q.outputs[0]
                ranges[made[key]] = ranges[t]
                if key[1]:
                    wide_t.add(made[key])
                    wide.add(q.name)
            op.inputs[i] = made[key]
    return floats


def int16_params(rmin: float, rmax: float) -> tuple[float, int]:
    """Symmetric int16 parameters as TFLite's 16x8 quantization: scale max(|min|, |max|) / 32767, zero point 0."""
    m = max(abs(float(rmin)), abs(float(rmax)))
    return (float(np.float32(m) / np.float32(32767.0)), 0) if m > 0 else (1.0, 0)


def quantize_bias64(b: np.ndarray, input_scale: float, weight_scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 bias of a 16x8 op, scale input_scale * weight_scale[c] (float32 product, as the converter)."""
    scales = (np.float32(input_scale) * weight_scales.astype(np.float32)).astype(np.float32)
    q = round_half_away(np.asarray(b, np.float64) / scales.astype(np.float64))
    lim = float(INT32_MAX) * (1 << 16)  # far inside int64, and inside the 16x8 multiplier's 2^47 bound
    return np.clip(q, -lim, lim).astype(np.int64), scales


def set_dtypes(graph: Graph, params: dict[str, QuantParams], wide_t: set[str], floats: set[str]) -> None:
    """Give every activation but ``floats`` its integer type and parameters."""
    for t in graph.activations():
        if t in floats:
            continue
        graph.tensors[t].quant = params[t]
        graph.tensors[t].dtype = DType.INT16 if t in wide_t else DType.INT8
