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

from dataclasses import replace
from typing import Any

import numpy as np

from ..backend_api import MemoryFigures
from ..config import CompileConfig
from ..errors import BudgetError, TinyccError
from ..data import calibration_samples
from ..ir.deployment import BufferConfig, Deployment
from ..ir.graph import Graph, Op
from ..ir.memory_model import MemoryReport, inference_memory
from ..ir.ops import OpKind
from ..ir.tensor import DType, Tensor
from ..targets import code_table
from .stage import c_name, candidate_figures, check_budget, with_widening_fallback


def _strip_output_boundary(g: Graph, k: int = 0) -> None:
    """Make output ``k`` int8: drop a final DEQUANTIZE and a final int8 -> uint8 QUANTIZE at the same scale."""
    prod = g.producers_map()
    while g.outputs[k] in prod:
        op = prod[g.outputs[k]]
        src, dst = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        same_scale = (src.quant is not None and dst.quant is not None
                      and np.array_equal(src.quant.scale, dst.quant.scale))
        to_uint8 = (op.kind == OpKind.QUANTIZE and src.dtype == DType.INT8 and dst.dtype == DType.UINT8 and same_scale
                    and int(dst.quant.zero_point[0]) - int(src.quant.zero_point[0]) == 128)
        if not (op.kind == OpKind.DEQUANTIZE or to_uint8) or len(g.consumers(op.inputs[0])) > 1 \
                or op.inputs[0] in g.outputs:
            break
        g.ops.remove(op)
        g.outputs[k] = op.inputs[0]
        del g.tensors[op.outputs[0]]
        prod = g.producers_map()


def int8_model(graph: Graph, config: CompileConfig, session: Any,
               calib: Any = None) -> tuple[Graph, Any]:
    """The whole cleaned model as float input -> int8 output, and the calibration samples (a float model with
    several inputs: a list of arrays, one per input; an int8 file with several: none, its parameters stay)."""
    from .learning import _float_input, quantize_extractor

    g = graph.copy()
    if g.meta.get("quantized"):
        for k in range(len(g.outputs)):
            _strip_output_boundary(g, k)
        for k in range(1, len(g.inputs)):  # quantize_extractor gives input 0 its float input
            _float_input(g, k)
    if len(g.inputs) > 1 and g.meta.get("quantized"):  # the file's parameters; --calib gives the demo's inputs
        _float_input(g, 0)
        samples = []
        if calib is not None or config.quant.calib:
            x = calibration_samples(g, config.quant, calib, session.registry if session else None)
            samples = [x[t] for t in g.inputs]
    else:
        g, samples = quantize_extractor(g, config.with_quant(int8_input=False), session, calib)
        if isinstance(samples, dict):  # several inputs: one array each, in the model's input order
            samples = [samples[t] for t in g.inputs]
    for name in g.outputs:
        out = g.tensors[name]
        if out.dtype not in (DType.INT8, DType.INT16) or out.quant is None:
            raise TinyccError(f"--inference-only: the model's output {name!r} is not int8 after quantization "
                              f"({out.dtype.value})")
    return g, samples


def io_names(graph: Graph) -> tuple[list[str], list[str]]:
    """C parameter names of the model's inputs and outputs: positional, ``in_0``, ``in_1``, ..., ``out_0``, ...
    (nothing read from a model file becomes code; ``io_labels`` gives what the model calls them, for comments)."""
    return [f"in_{k}" for k in range(len(graph.inputs))], [f"out_{k}" for k in range(len(graph.outputs))]


def io_labels(graph: Graph) -> tuple[list[str], list[str]]:
    """What the model calls its inputs and outputs (``graph.meta['io_names']`` from the frontend, else the tensor
    names): model text, shown only through the escaping filters (comments, README)."""
    shown = graph.meta.get("io_names", {})
    return [shown.get(t, t) for t in graph.inputs], [shown.get(t, t) for t in graph.outputs]


def full_graph(dep: Deployment) -> Graph:
    """The deployed graph with its boundaries: float in/out (QUANTIZE ... DEQUANTIZE) or int8 in/out."""
    g = dep.extractor.copy()
    if dep.int8_io:
        for k in range(len(g.inputs)):
            first = g.consumers(g.inputs[k])
            if len(first) != 1 or first[0].kind != OpKind.QUANTIZE:
                raise TinyccError("--int8-io: the model's float input is not read by one QUANTIZE op")
            q = first[0]
            g.ops.remove(q)
            del g.tensors[g.inputs[k]]
            g.inputs[k] = q.outputs[0]
        return g
    for k, src in enumerate(list(g.outputs)):
        out = g.tensors[src]
        name = g.unique_tensor_name(f"{src}_float")
        g.add_tensor(Tensor(name, out.shape, DType.FLOAT32))
        g.ops.append(Op(g.unique_op_name(f"{src}/dequantize"), OpKind.DEQUANTIZE, [src], [name], {}, src))
        g.outputs[k] = name
    return g


def memory_report(graph: Graph, backend: Any, cand: Any, figures: MemoryFigures,
                  stack: tuple[int, bool, str] | None = None) -> MemoryReport:
    """The inference-only report of ``cand`` (``stack``: the stack line, None: not counted), as the backend
    adjusts it for what it deploys; the code estimate from the board's target."""
    r = inference_memory(graph, figures.arena, figures.state, figures.arena_detail, figures.scratch,
                         figures.state_exact, figures.tables, stack, code_table=code_table(cand.config.target))
    backend.adjust_report(r, cand, figures)
    return r


def _int8_io_advice(g: Graph, backend: Any, dep: Deployment, report: MemoryReport) -> str:
    """The budget error's first advice for float I/O: --int8-io, with the RAM it saves on ``backend`` (the
    same candidate sized again with int8 input and output)."""
    if dep.int8_io:
        return ""
    config = dep.config.with_quant(int8_input=True, int8_output=True)
    dep8 = replace(dep, int8_io=True, config=config)
    cand, figures = candidate_figures(backend, g, None, config, full_graph(dep8))
    saved = report.total("ram") - memory_report(g, backend, cand, figures).total("ram")
    return f"--int8-io (int8 input and output) saves {saved:,} B of RAM. " if saved > 0 else ""


def build_inference(graph: Graph, config: CompileConfig, session: Any, backend: Any,
                    calib: np.ndarray | None = None) -> Deployment:
    """Quantize the whole model, size it on ``backend`` and check the budget (`with_widening_fallback`)."""
    return with_widening_fallback(_build_inference, graph, config, session, backend, calib)


def _build_inference(graph: Graph, config: CompileConfig, session: Any, backend: Any,
                     calib: np.ndarray | None = None) -> Deployment:
    if (len(graph.inputs) > 1 or len(graph.outputs) > 1) and not getattr(backend, "multi_io", False):
        reg = session.registry if session else None
        able = sorted(n for n, e in reg.backends.items() if getattr(e.obj, "multi_io", False)) if reg else []
        raise TinyccError(f"--inference-only: a model with {len(graph.inputs)} inputs and {len(graph.outputs)} "
                          f"outputs deploys to targets with a multi-input API ({', '.join(able) or 'none'}), "
                          f"not {backend.name!r}")
    g, samples = int8_model(graph, config, session, calib)
    dep = Deployment(name=c_name(graph.name), extractor=g, feature_quant=g.tensors[g.outputs[0]].quant,
                     classifier=[], num_classes=0, buffer=BufferConfig(0), inference_only=True,
                     int8_io=config.int8_io, config=config, board=config.board,
                     meta={"cut": None, "source": graph.meta.get("source", {}), "samples": [a[:16] for a in samples] if isinstance(samples, list) else samples[:16],
                           "io_names": io_names(graph), "io_labels": io_labels(graph)})
    cand, figures = candidate_figures(backend, g, None, config, full_graph(dep))
    report = memory_report(g, backend, cand, figures)
    dep.plan, dep.figures = cand.plan, figures
    dep.memory = {"report": report.table(), **report.to_dict()}  # what the sources measured for the stack show
    stack = backend.stack_bytes(dep)
    unstacked = report
    if stack is not None:
        report = memory_report(g, backend, cand, figures, stack)
    advice = "Try pruning (--ratio, --budget) or a bigger board"
    try:
        check_budget(report, config, advice)
    except BudgetError:  # float I/O: say first what int8 I/O saves
        check_budget(report, config, _int8_io_advice(g, backend, dep, unstacked) + advice)
    dep.memory = {"report": report.table(), **report.to_dict(), "inference_only": True, "int8_io": dep.int8_io}
    return dep


def quantize_inputs(dep: Deployment, x: np.ndarray, k: int = 0) -> np.ndarray:
    """Float inputs (of model input ``k``) quantized as the model's input QUANTIZE does (run_int8's kernel)."""
    from ..ir.interpreter_int8 import run_int8

    g = dep.extractor.copy()
    q = g.consumers(g.inputs[k])[0]
    g.ops = [q]
    g.inputs = [q.inputs[0]]
    g.outputs = [q.outputs[0]]
    g.prune_unused()
    return run_int8(g, {g.inputs[0]: np.asarray(x, np.float32)})[q.outputs[0]]
