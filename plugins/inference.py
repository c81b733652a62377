"""Inference-only deployment (``compile --inference-only [--int8-io]``): the whole model in int8.

No cut, no trainable classifier, no replay buffer, no training state. The deployment's ``extractor`` is the
whole model in the form every backend already emits: float input -> QUANTIZE -> int8 ops -> int8 output
(a final softmax is TFLite's int8 SOFTMAX). ``full_graph`` adds the boundaries the deployed program has:
float I/O (default) ends in a DEQUANTIZE, as TFLite's converter writes it with float I/O; ``--int8-io``
drops the input QUANTIZE (int8 input and output, as the converter's ``inference_input_type=int8``).
That graph is what ``run_int8`` runs, what the ``tflm`` backend writes and what the C code equals.

A float model (Keras, float .tflite) is calibrated and quantized by the ``int8`` pipeline; an imported
full-integer .tflite keeps its parameters (an integer input gets a float input with a QUANTIZE to the same
parameters, the output DEQUANTIZE, and a final int8 -> uint8 QUANTIZE at the same scale, are dropped).
"""
from __future__ import annotations

import logging

import math
from typing import Any

import numpy as np

from ..errors import TinyccError
from ..ir.calibration import test_vector_count
from ..ir.deployment import BufferConfig, Deployment
from ..ir.graph import Graph, Op
from ..ir.memory_model import MemoryReport, inference_memory
from ..targets import code_table
from ..ir.ops import OpKind
from ..ir.tensor import DType, Tensor


def _strip_output_boundary(g: Graph) -> None:
    """Make the output int8: drop a final DEQUANTIZE and a final int8 -> uint8 QUANTIZE at the same scale."""
    prod = g.producers_map()
    while g.outputs[0] in prod:
        op = prod[g.outputs[0]]
        src, dst = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        same_scale = (src.quant is not None and dst.quant is not None
                      and np.array_equal(src.quant.scale, dst.quant.scale))
        to_uint8 = (op.kind == OpKind.QUANTIZE and src.dtype == DType.INT8 and dst.dtype == DType.UINT8 and same_scale
                    and int(dst.quant.zero_point[0]) - int(src.quant.zero_point[0]) == 128)
        if not (op.kind == OpKind.DEQUANTIZE or to_uint8) or len(g.consumers(op.inputs[0])) > 1:
            break
        g.ops.remove(op)
        g.outputs[0] = op.inputs[0]
        del g.tensors[op.outputs[0]]
        prod = g.producers_map()


def int8_model(graph: Graph, options: dict[str, Any], session: Any) -> tuple[Graph, np.ndarray]:
    """The whole cleaned model as float input -> int8 output, and the calibration samples."""
    from .ondevice import quantize_extractor

    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise TinyccError(f"--inference-only needs a model with one input and one output (this one has "
                          f"{len(graph.inputs)} inputs, {len(graph.outputs)} outputs)")
    g = graph.copy()
    if g.meta.get("quantized"):
        _strip_output_boundary(g)
    opts = {k: v for k, v in options.items() if k not in ("int8_io", "int8_input")}
    g, samples = quantize_extractor(g, opts, session)
    out = g.tensors[g.outputs[0]]
    if out.dtype != DType.INT8 or out.quant is None:
        raise TinyccError(f"--inference-only: the model's output {g.outputs[0]!r} is not int8 after quantization "
                          f"({out.dtype.value})")
    return g, samples


def full_graph(dep: Deployment) -> Graph:
    """The deployed graph with its boundaries: float in/out (QUANTIZE ... DEQUANTIZE) or int8 in/out."""
    g = dep.extractor.copy()
    if dep.int8_io:
        first = g.consumers(g.inputs[0])
        if len(first) != 1 or first[0].kind != OpKind.QUANTIZE:
            raise TinyccError("--int8-io: the model's float input is not read by one QUANTIZE op")
        q = first[0]
        g.ops.remove(q)
        del g.tensors[g.inputs[0]]
        g.inputs[0] = q.outputs[0]
        return g
    out = g.tensors[g.outputs[0]]
    name = g.unique_tensor_name(f"{g.outputs[0]}_float")
    g.add_tensor(Tensor(name, out.shape, DType.FLOAT32))
    g.ops.append(Op(g.unique_op_name(f"{g.outputs[0]}/dequantize"), OpKind.DEQUANTIZE, [g.outputs[0]], [name], {},
                    g.outputs[0]))
    g.outputs[0] = name
    return g


def memory_report(dep_graph: Graph, backend: Any, arena: int, options: dict[str, Any],
                  spec: Any = None, stack: Any = None, dep: Deployment | None = None) -> MemoryReport:
    """The inference-only report; ``spec``: the board's ``tinycc.targets.Target`` (its code-size table);
    ``stack``: the report's stack line (None: not counted)."""
    state = backend.inference_state_bytes(dep_graph, options) if backend else 0
    scratch = backend.scratch_bytes(dep_graph, options) if backend else 0
    tables = backend.table_bytes(dep_graph, options) if hasattr(backend, "table_bytes") else 0
    r = inference_memory(dep_graph, arena, state, getattr(backend, "arena_detail", "int8 activations, planned"),
                         scratch, bool(getattr(backend, "runtime_state_exact", True)), tables, stack,
                         code_table=code_table(spec))
    if dep is not None and hasattr(backend, "adjust_report"):
        backend.adjust_report(r, dep, options, False)
    return r


def _int8_io_advice(g: Graph, backend: Any, options: dict[str, Any]) -> str:
    """The budget error's first advice for float I/O: --int8-io, with the RAM it saves on ``backend``."""
    if options.get("int8_io") or backend is None:
        return ""
    saved = backend.inference_state_bytes(g, options) - backend.inference_state_bytes(g, {**options, "int8_io": True})
    return f"--int8-io (int8 input and output) saves {saved:,} B of RAM. " if saved > 0 else ""


def build_inference(graph: Graph, options: dict[str, Any], session: Any, backend: Any) -> Deployment:
    """Quantize the whole model, size it on ``backend`` and check the budget."""
    from .ondevice import _budget, _c_name, _check_budget, _target, stack_line

    g, samples = int8_model(graph, options, session)
    dep = Deployment(name=_c_name(graph.name), extractor=g, feature_quant=g.tensors[g.outputs[0]].quant,
                     classifier=[], num_classes=0, buffer=BufferConfig(0), inference_only=True,
                     int8_io=bool(options.get("int8_io")),
                     meta={"cut": None, "source": graph.meta.get("source", {}), "samples": samples[:16]})
    arena = backend.inference_arena_bytes(dep, options) if backend else 0
    spec = _target(options, session)
    report = memory_report(g, backend, arena, options, spec, dep=dep)
    dep.memory = {"report": report.table(), **report.to_dict()}  # what the sources measured for the stack show
    stack = stack_line(backend, dep, options, session) if backend else None
    report = memory_report(g, backend, arena, options, spec, stack, dep)
    ram, flash, where = _budget(options, session)
    _check_budget(report, ram, flash, where, _int8_io_advice(g, backend, options)
                  + "Try pruning (--ratio, --budget) or a bigger board")
    dep.memory = {"report": report.table(), **report.to_dict(), "inference_only": True, "int8_io": dep.int8_io}
    return dep


def test_inputs(dep: Deployment, options: dict[str, Any]) -> np.ndarray:
    """Float inputs the demo embeds: options['test_vectors'] (x or (x, y)) or calibration samples."""
    tv = options.get("test_vectors")
    x = tv[0] if isinstance(tv, tuple) else tv
    if x is None:
        x = dep.meta.get("samples", np.zeros((0,)))
    x = np.asarray(x, np.float32)
    shape = tuple(dep.extractor.tensors[dep.extractor.inputs[0]].shape[1:])
    if x.size == 0:
        logging.getLogger("tinycc.inference").warning("no calibration data (--calib): the demo's only test vector is all zeros; pass --calib DATA to embed "
                    "real samples")
        x = np.zeros((1,) + shape, np.float32)
    return x[:test_vector_count(math.prod(shape), int(options.get("test_count") or 8))].reshape((-1,) + shape)


def quantize_inputs(dep: Deployment, x: np.ndarray) -> np.ndarray:
    """Float inputs quantized as the model's input QUANTIZE does (run_int8's kernel)."""
    from ..ir.interpreter_int8 import run_int8

    g = dep.extractor.copy()
    q = g.consumers(g.inputs[0])[0]
    g.ops = [q]
    g.outputs = [q.outputs[0]]
    g.prune_unused()
    return run_int8(g, {g.inputs[0]: np.asarray(x, np.float32)})[q.outputs[0]]
