"""int8 full-integer quantization: passes ``lower_for_int8``, ``calibrate``, ``quantize_int8``
(pipeline ``int8``), calibration data sources and the ``tinycc quantize`` command.

Rules (TFLite int8 specification, as the TF 2.21 converter applies it):
- weights symmetric int8 in [-127, 127], scale max|w|/127, zero point 0, per output channel for
  Conv2D and TransposeConv2D (axis 0), DepthwiseConv2D (axis 3) and Dense (axis 0; ``dense_per_tensor`` gives one
  scale); a scale is raised where the int32 bias would not fit (``bias_fitting_scales``: filters
  that BatchNorm folding shrank to ~0); int32 biases with scale input_scale * weight_scale[c],
  zero point 0;
- activations asymmetric int8 from calibrated ranges (widened to include 0, zero point nudged);
- max/avg pool, global max pool, reshape/flatten, pad, concatenate, maximum/minimum, nearest-neighbour
  resize and relu6 share one set of
  parameters between their inputs and output (computed from the union of their ranges; relu6
  because TFLite Micro's int8 RELU6 clamps without requantizing);
- global average pooling gets its own (calibrated) output parameters, as the converter's MEAN: where
  they differ from the input's it becomes TFLite's requantizing MEAN (``requantize``), else an
  AVERAGE_POOL_2D over the whole map;
- softmax/sigmoid get 1/256 and -128, tanh 1/128 and 0; pools/reshapes/pads after them inherit
  these; a concatenation mixing them with other tensors would need a requantize op and is refused;
- GRU and SimpleRNN take tinycc's integer form (``quantize_recurrent``; docs/architecture.md, "Recurrent layers");
- lstm: per-gate int8 weights, int16 cell state of power-of-two scale from the calibrated cell range
  (``quantize_lstm``), output parameters calibrated (TFLite's integer LSTM);
- hard_swish stays one int8 HARD_SWISH op (its own output parameters), as the converter emits it;
- a constant operand of add/sub/mul gets its own per-tensor asymmetric parameters, one of
  concat/maximum/minimum the output's;
- int16 activations (``QuantConfig.activations`` int16, or ``int16_layers`` of an int8 model; see
  ``precision.py``): symmetric int16 (zero point 0, scale max|x|/32767), int8 weights as above, int64 biases
  (TFLite's 16x8 as the converter writes it); requantizing QUANTIZE ops between int8 and int16 parts; int16
  SOFTMAX/LOGISTIC/TANH outputs get TFLite's fixed scale 1/32768, zero point 0 (``FIXED_OUTPUT16``);
- a QUANTIZE op after each float input and a DEQUANTIZE op before each output (``QuantConfig.int8_input`` /
  ``int8_output`` keep int8 at the boundaries). A final softmax
  stays float after the DEQUANTIZE when the output is float; with an int8 output it is TFLite's int8
  SOFTMAX (as is a softmax anywhere else in the graph).

Calibration data (``PassContext.calib`` array, else the ``QuantConfig.calib`` spec; ``tinycc.data``): an ``.npz``
(key ``x_calib``, ``x_train``, ``x`` or its only array), an ``.npy``, a folder of images (resized to
the input size, values 0..255) or ``SOURCE:ARG`` from a registered calibration source. Values are
used as stored, never rescaled implicitly (a model's Rescaling layer may have been folded away,
so guessing would skew ranges silently); ``QuantConfig.calib_scale`` multiplies them (e.g. 1/255). The first
``QuantConfig.calib_limit`` samples are used.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pluggy

from ...errors import TinyccError, UnsupportedLayerError
from ...ir.calibration import (OBSERVERS, CalibrationDataError, calibrate, check_sample_size, check_samples,
                               sample_count)
from ...ir.graph import Graph, Op
from ...ir.interpreter_int8 import FIXED_OUTPUT, FIXED_OUTPUT16, INT8_KINDS, SAME_PARAMS
from ...ir.ops import OpKind
from ...ir.quant import (bias_fitting_scales, choose_activation_params, quantize, quantize_bias, quantize_weights,
                        symmetric_weight_scales)
from ...ir.tensor import DType, QuantParams, Tensor
from ...options import layer_names, path_text, positive_float, positive_int
from ...output import check_output_file, write_atomic
from ...config import ACTIVATIONS, CompileConfig, QuantConfig
from ...data import CALIB_KEYS, EVAL_KEYS, calibration_samples, load_data, load_samples  # noqa: F401
from ...passes import Pass, PassContext
from .quantize_recurrent import quantize_recurrent
from .quantize_lstm import cell_maxima, quantize_lstm
from .precision import (check_int16_support, insert_requantize, int16_ops, int16_params, quantize_bias64, set_dtypes,
                        tensor_precision)

hookimpl = pluggy.HookimplMarker("tinycc")
log = logging.getLogger("tinycc.quantize")

# output parameters fixed by the TFLite int8 specification (scale, zero point)
FIXED_PARAMS: dict[OpKind, tuple[float, int]] = dict(FIXED_OUTPUT)
# ops whose int8 input and output share parameters: the interpreter's list plus RELU6, because TFLite
# Micro's int8 RELU6 only clamps to [q(0), q(6)] of the *input* parameters (no requantization); global
# average pooling is left out: it gets its own output parameters (TFLite's requantizing MEAN)
SHARED_KINDS = (SAME_PARAMS - {OpKind.GLOBAL_AVG_POOL}) | {OpKind.RELU6}


def _npz_source(arg: str) -> np.ndarray:
    """``npz:FILE.npz:KEY``: one named array of an .npz file."""
    path, _, key = arg.rpartition(":")
    if not path or not key:
        raise TinyccError(f"npz:{arg}: expected npz:FILE.npz:KEY")
    if not Path(path).is_file():
        raise TinyccError(f"npz:{arg}: {path}: no such file")
    with np.load(path, allow_pickle=False) as z:
        if key not in z.files:
            raise TinyccError(f"npz:{arg}: no array {key!r} (found {', '.join(z.files)})")
        return z[key]


# ---- passes --------------------------------------------------------------------
def _const(graph: Graph, name: str, value: Any) -> str:
    return graph.add_const(name, np.asarray(value, np.float32)).name


def int8_unsupported(graph: Graph) -> list[Op]:
    """Ops with no int8 kernel (a final softmax is fine: it stays float after the DEQUANTIZE)."""
    tail = {id(o) for o in _float_tail(graph)}
    return [o for o in graph.ops if o.kind not in INT8_KINDS and id(o) not in tail]


def check_int8_support(graph: Graph) -> None:
    """Raise UnsupportedLayerError naming the first layer that int8 cannot run."""
    svdf = next((op for op in graph.ops if op.kind == OpKind.SVDF), None)
    if svdf is not None:  # its int16 state scale would need calibrating: only converter/published int8 files run
        raise UnsupportedLayerError(f"layer {svdf.origin!r} (svdf): tinycc does not quantize SVDF itself; compile "
                                    "an int8 .tflite file with the SVDF already quantized (int16 state)")
    bad = int8_unsupported(graph)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UnsupportedLayerError(f"layer {bad[0].origin!r} ({bad[0].kind.value}) has no int8 kernel{more}; "
                                    "`tinycc ops` lists the int8 kernels")


def _float_tail(graph: Graph, int8_output: bool = False) -> list[Op]:
    """Final softmax ops that stay float after the DEQUANTIZE: graph outputs read by nobody, when the output
    is float (with an int8 output, or without an int8 softmax kernel, they would be int8 ops)."""
    if int8_output and OpKind.SOFTMAX in INT8_KINDS:
        return []
    readers = graph.consumers_map()
    return [o for o in graph.ops if o.kind == OpKind.SOFTMAX and o.outputs[0] in graph.outputs
            and not readers.get(o.outputs[0])]


def lower_for_int8(graph: Graph) -> bool:
    """Rewrite float ops into ops with int8 kernels (float results equal to rounding).

    hard_sigmoid -> add 3 (fused relu6), mul 1/6; hard_swish (only without an int8 kernel for it) -> the
    same times x; swish -> sigmoid times x (once int8 has a sigmoid kernel); batch_norm -> mul + add
    (per-channel constants); rescale -> mul + add; dropout is removed.
    """
    changed = False
    for op in list(graph.ops):
        chain = _chain(graph, op)
        if op.kind == OpKind.DROPOUT:
            graph.bypass(op)
        elif chain is not None and all(OpKind(k) in INT8_KINDS for k, _, _ in chain):
            _replace(graph, op, chain)
        else:
            continue
        changed = True
    graph.prune_unused()
    return changed


Chain = list[tuple[str, list[str | None], dict[str, Any]]]


def _chain(graph: Graph, op: Op) -> Chain | None:
    """The replacement as (kind, extra operands, attributes); None stands for the op's own input."""
    n, k = op.name, op.kind
    relu6_of_x_plus_3: Chain = [("add", [_const(graph, f"{n}/three", [3.0])], {"activation": "relu6"}),
                                ("mul", [_const(graph, f"{n}/sixth", [1.0 / 6.0])], {})] \
        if k in (OpKind.HARD_SIGMOID, OpKind.HARD_SWISH) else []
    if k == OpKind.HARD_SIGMOID:
        return relu6_of_x_plus_3
    if k == OpKind.HARD_SWISH and k not in INT8_KINDS:
        return relu6_of_x_plus_3 + [("mul", [None], {})]
    if k == OpKind.SWISH:
        return [("sigmoid", [], {}), ("mul", [None], {})]
    if k == OpKind.BATCH_NORM:
        g, b, m, v = (graph.tensors[t].data.astype(np.float64) for t in op.inputs[1:5])
        scale = g / np.sqrt(v + op.attrs["epsilon"])
        return [("mul", [_const(graph, f"{n}/scale", scale)], {}),
                ("add", [_const(graph, f"{n}/offset", b - m * scale)], {})]
    if k == OpKind.RESCALE:
        c = graph.tensors[op.inputs[0]].shape[-1]
        s = np.broadcast_to(np.asarray(op.attrs["scale"], np.float32), (c,))
        o = np.broadcast_to(np.asarray(op.attrs["offset"], np.float32), (c,))
        chain: Chain = []
        if np.any(s != 1.0):
            chain.append(("mul", [_const(graph, f"{n}/scale", s)], {}))
        if np.any(o != 0.0) or not chain:
            chain.append(("add", [_const(graph, f"{n}/offset", o)], {}))
        return chain
    return None


def _replace(graph: Graph, op: Op, chain: Chain) -> None:
    idx = graph.ops.index(op)
    graph.ops.remove(op)
    src = x = op.inputs[0]
    final = op.outputs[0]
    graph.tensors.pop(final)
    for i, (kind, extra, attrs) in enumerate(chain):
        operands = [x] + [src if e is None else e for e in extra]
        new = graph.add_op(kind, operands, f"{op.name}/{kind}", attrs, origin=op.origin,
                           output_name=final if i == len(chain) - 1 else None, index=idx + i)
        x = new.outputs[0]


class LowerForInt8(Pass):
    """:func:`lower_for_int8`, then fail early (before calibration) on ops int8 cannot run."""

    name = "lower_for_int8"
    description = "lower hard_sigmoid/swish/hard_swish, BatchNorm, Rescaling, Dropout for int8"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        if graph.meta.get("quantized"):  # an imported int8 model is already in the quantized form
            return False
        changed = lower_for_int8(graph)
        check_int8_support(graph)
        return changed


class Calibrate(Pass):
    name = "calibrate"
    description = "record per-tensor float ranges on representative data"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        if graph.meta.get("quantized"):  # imported int8 model: its parameters come from the file
            return False
        x = calibration_samples(graph, ctx.config.quant, ctx.calib, ctx.session.registry if ctx.session else None)
        kind = ctx.config.quant.observer
        if kind not in OBSERVERS:
            raise TinyccError(f"unknown observer {kind!r}; known: {', '.join(OBSERVERS)}")
        prog = None
        if ctx.progress:
            from tqdm import tqdm

            def prog(it: Any) -> Any:
                return tqdm(it, desc="calibrate", unit="batch", leave=False)
        try:
            ranges = calibrate(graph, x, OBSERVERS[kind](), ctx.config.quant.calib_batch_size, prog)
        except CalibrationDataError as e:
            raise TinyccError(str(e)) from None
        cells = cell_maxima(graph, x, ctx.config.quant.calib_batch_size)
        ctx.results["calibrate"] = {"ranges": ranges, "samples": x, "observer": kind, "lstm_cells": cells}
        log.info("calibrated %d tensors on %d samples (%s)", len(ranges), sample_count(x), kind)
        return False


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _shared_groups(graph: Graph) -> list[list[str]]:
    """The activations that must share one set of parameters (joined through the ops of SHARED_KINDS)."""
    uf = _UnionFind()
    for op in graph.ops:
        if op.kind in SHARED_KINDS:
            for t in op.inputs:
                if not graph.tensors[t].is_const:
                    uf.union(t, op.outputs[0])
    groups: dict[str, list[str]] = {}
    for t in graph.activations():
        groups.setdefault(uf.find(t), []).append(t)
    return list(groups.values())


def requantize_fixed_outputs(graph: Graph, ranges: dict[str, tuple[float, float]],
                             wide: set[str] | None = None) -> int:
    """Where the output of a fixed-parameter op (sigmoid, tanh, softmax: TFLite's int8 specification fixes their
    output scale and zero point) would have to share its parameters with tensors of other parameters (a
    concatenation with another branch, through pads and reshapes), a requantizing QUANTIZE (int8 -> int8) after
    it, as TFLite's converter writes: the op keeps its fixed output, the branch gets the group's calibrated ones.
    Returns how many were inserted (int16 groups are left to ``activation_params``, which refuses them)."""
    producers = graph.producers_map()
    inserted = 0
    for members in _shared_groups(graph):
        if wide and members[0] in wide:
            continue
        fixed = [t for t in members if t in producers and producers[t].kind in FIXED_PARAMS]
        free = [t for t in members if t not in producers or
                (producers[t].kind not in SHARED_KINDS and producers[t].kind not in FIXED_PARAMS)]
        if len({FIXED_PARAMS[producers[t].kind] for t in fixed}) < 2 and not (fixed and free):
            continue
        for t in fixed:
            readers = graph.consumers(t)
            if not readers:  # a graph output read by nothing: nothing shares it
                continue
            op = producers[t]
            new = graph.unique_tensor_name(f"{t}/requantized")
            q = graph.add_op(OpKind.QUANTIZE, [t], graph.unique_op_name(new), {}, origin=op.origin,
                             output_name=new, index=graph.ops.index(op) + 1)
            for r in readers:
                r.inputs = [new if i == t else i for i in r.inputs]
            ranges[q.outputs[0]] = ranges[t]
            inserted += 1
    return inserted


def activation_params(graph: Graph, ranges: dict[str, tuple[float, float]],
                      wide: set[str] | None = None) -> dict[str, QuantParams]:
    """Per-tensor int8 parameters of every activation (shared groups, fixed outputs); symmetric int16 ones for
    the tensors in ``wide``."""
    producers = graph.producers_map()
    params: dict[str, QuantParams] = {}
    for members in _shared_groups(graph):
        fixed_ops = [producers[t] for t in members if t in producers and producers[t].kind in FIXED_PARAMS]
        table = {**FIXED_PARAMS, **FIXED_OUTPUT16} if wide and members[0] in wide else FIXED_PARAMS  # int16: Q0.15
        fixed = {table[o.kind] for o in fixed_ops}
        free = [t for t in members if t not in producers or
                (producers[t].kind not in SHARED_KINDS and producers[t].kind not in FIXED_PARAMS)]
        if len(fixed) > 1 or (fixed and free):
            raise UnsupportedLayerError(
                f"layer {fixed_ops[0].origin!r}: its {fixed_ops[0].kind.value} output has fixed int8 parameters but "
                f"must share them with tensor {(free or members)[0]!r} (that needs a requantize op)")
        if fixed:
            s, zp = fixed.pop()
        else:
            missing = [t for t in members if t not in ranges]
            if missing:
                raise TinyccError(f"no calibrated range for tensor {missing[0]!r} (run calibrate on this graph)")
            lo, hi = min(ranges[t][0] for t in members), max(ranges[t][1] for t in members)
            s, zp = int16_params(lo, hi) if wide and members[0] in wide else choose_activation_params(lo, hi)
        for t in members:
            params[t] = QuantParams([s], [zp])
    return params


class QuantizeInt8(Pass):
    name = "quantize_int8"
    description = "full-integer int8 quantization of the graph (TFLite int8 specification)"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        if graph.meta.get("quantized"):  # imported int8 model (e.g. a converter .tflite): nothing to do
            return False
        if "calibrate" not in ctx.results:
            raise TinyccError("quantize_int8 needs the calibrate pass to run first")
        check_int8_support(graph)
        int8_in, int8_out = ctx.config.quant.int8_input, ctx.config.quant.int8_output
        tail = _float_tail(graph, int8_out)
        ctx.results["quantize_int8"] = {"float_graph": graph.copy()}
        kept = []
        for op in tail:  # the float softmax is cut off here and re-attached after the DEQUANTIZE
            graph.ops.remove(op)
            pos = graph.outputs.index(op.outputs[0])
            graph.outputs[pos] = op.inputs[0]
            kept.append((op, graph.tensors[op.outputs[0]], pos))
        wide = int16_ops(graph, ctx.config.quant, SHARED_KINDS)
        check_int16_support(graph, wide)
        ranges = dict(ctx.results["calibrate"]["ranges"])
        wide_t = tensor_precision(graph, wide)
        floats = insert_requantize(graph, wide, wide_t, ranges)
        requantize_fixed_outputs(graph, ranges, wide_t)
        params = activation_params(graph, ranges, wide_t)
        per_tensor_dense = ctx.config.quant.dense_per_tensor
        cells = ctx.results["calibrate"].get("lstm_cells", {})
        for op in list(graph.ops):
            if op.kind == OpKind.LSTM:
                quantize_lstm(graph, op, float(params[op.inputs[0]].scale[0]), cells.get(op.name))
            self._quantize_consts(graph, op, params, per_tensor_dense, op.name in wide)
        graph.prune_unused()
        set_dtypes(graph, params, wide_t, floats)
        for op in graph.ops:
            if op.kind == OpKind.GLOBAL_AVG_POOL:  # TFLite's MEAN where the parameters differ
                op.attrs["requantize"] = not params[op.inputs[0]].equals(params[op.outputs[0]])
        self._boundaries(graph, int8_in, int8_out)
        for op, out, pos in kept:
            op.inputs = [graph.outputs[pos]]
            if out.name not in graph.tensors:
                graph.add_tensor(out)
            graph.ops.append(op)
            graph.outputs[pos] = out.name
        graph.meta["quantized"] = "int8"
        if wide:
            graph.meta["activations"] = "int16" if ctx.config.quant.activations == "int16" else "mixed"
        return True

    @staticmethod
    def _quantize_consts(graph: Graph, op: Op, params: dict[str, QuantParams], per_tensor_dense: bool,
                         wide: bool = False) -> None:
        if op.kind in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE, OpKind.TRANSPOSE_CONV2D):
            w = graph.tensors[op.inputs[1]]
            axis = {OpKind.CONV2D: 0, OpKind.DEPTHWISE_CONV2D: 3, OpKind.DENSE: 0, OpKind.TRANSPOSE_CONV2D: 0}[op.kind]
            if op.kind == OpKind.DENSE and per_tensor_dense:
                axis = None
            scales = symmetric_weight_scales(w.data, axis)
            if len(op.inputs) > 2 and not wide:  # dead filters with a bias: the int32 bias must fit
                scales = bias_fitting_scales(graph.tensors[op.inputs[2]].data, float(params[op.inputs[0]].scale[0]),
                                             scales)
            qw = Tensor(graph.unique_tensor_name(f"{w.name}_int8"), w.shape, DType.INT8,
                        quantize_weights(w.data, scales, axis),
                        QuantParams(scales, np.zeros(scales.size, np.int64), axis))
            graph.add_tensor(qw)
            op.inputs[1] = qw.name
            if len(op.inputs) > 2:
                b = graph.tensors[op.inputs[2]]
                qb, bs = (quantize_bias64 if wide else quantize_bias)(b.data, float(params[op.inputs[0]].scale[0]),
                                                                      scales)
                qbt = Tensor(graph.unique_tensor_name(f"{b.name}_{qb.dtype}"), b.shape, DType(str(qb.dtype)), qb,
                             QuantParams(bs, np.zeros(bs.size, np.int64), None if axis is None else 0))
                graph.add_tensor(qbt)
                op.inputs[2] = qbt.name
        elif op.kind in (OpKind.GRU, OpKind.SIMPLE_RNN):
            quantize_recurrent(graph, op)
        elif op.kind == OpKind.PRELU:  # alpha: one symmetric int8 scale, as the converter writes it
            a = graph.tensors[op.inputs[1]]
            scales = symmetric_weight_scales(a.data, None)
            qa = Tensor(graph.unique_tensor_name(f"{a.name}_int8"), a.shape, DType.INT8,
                        quantize_weights(a.data, scales, None), QuantParams(scales, np.zeros(1, np.int64)))
            graph.add_tensor(qa)
            op.inputs[1] = qa.name
        elif op.kind in (OpKind.ADD, OpKind.MUL, OpKind.SUB, OpKind.CONCAT, OpKind.MAXIMUM, OpKind.MINIMUM):
            for i, t in enumerate(op.inputs):
                c = graph.tensors[t]
                if not c.is_const or c.dtype != DType.FLOAT32:
                    continue
                if op.kind in SHARED_KINDS:  # compared/copied raw: the output's parameters
                    q = params[op.outputs[0]]
                    s, zp = float(q.scale[0]), int(q.zero_point[0])
                else:
                    s, zp = choose_activation_params(float(c.data.min()), float(c.data.max()))
                dt = DType.INT16 if wide else DType.INT8
                if wide and op.kind not in SHARED_KINDS:
                    s, zp = int16_params(float(c.data.min()), float(c.data.max()))
                qc = Tensor(graph.unique_tensor_name(f"{t}_{dt.value}"), c.shape, dt, quantize(c.data, s, zp, dt.value),
                            QuantParams([s], [zp]))
                graph.add_tensor(qc)
                op.inputs[i] = qc.name

    @staticmethod
    def _boundaries(graph: Graph, int8_input: bool, int8_output: bool) -> None:
        if not int8_input:
            for name in list(graph.inputs):
                t = graph.tensors[name]
                q = graph.add_tensor(Tensor(graph.unique_tensor_name(f"{name}_{t.dtype.value}"), t.shape, t.dtype,
                                            quant=t.quant))
                graph.replace_uses(name, q.name)
                graph.ops.insert(0, Op(graph.unique_op_name(f"{name}_quantize"), OpKind.QUANTIZE, [name], [q.name],
                                       {}, origin=name))
                t.dtype, t.quant = DType.FLOAT32, None
        if not int8_output:
            for i, name in enumerate(list(graph.outputs)):
                t = graph.tensors[name]
                out = graph.add_tensor(Tensor(graph.unique_tensor_name(f"{name}_float"), t.shape, DType.FLOAT32))
                graph.ops.append(Op(graph.unique_op_name(f"{name}_dequantize"), OpKind.DEQUANTIZE, [name],
                                    [out.name], {}, origin=name))
                graph.outputs[i] = out.name


PASSES = (LowerForInt8, Calibrate, QuantizeInt8)


@hookimpl
def tinycc_register_passes(registry: Any) -> None:
    """lower_for_int8 in ``pre_quantize``; calibrate then quantize_int8 in ``quantize`` (the pipeline ``int8``)."""
    registry.add_pass(LowerForInt8, "pre_quantize")
    registry.add_pass(Calibrate, "quantize")
    registry.add_pass(QuantizeInt8, "quantize", after="calibrate")


@hookimpl
def tinycc_register_calibration_sources(registry: Any) -> None:
    registry.add_calibration_source("npz", _npz_source)


# ---- CLI: tinycc quantize --------------------------------------------------------
def quantize_model(model: str, quant: QuantConfig, session: Any, progress: bool = False,
                   calib: np.ndarray | None = None) -> tuple[Graph, PassContext]:
    """Load ``model``, run the cleanup pipeline (if registered) and the int8 pipeline (``calib``: calibration
    samples as an array, else ``quant.calib`` is loaded)."""
    from ...passes import run_pipeline

    if not os.path.exists(model):
        raise TinyccError(f"{model}: no such file")
    reg = session.registry
    graph = reg.frontend_for(model).load(model)
    if graph.meta.get("quantized"):
        raise TinyccError(f"{model}: already an int8 model; quantize takes the float model (.h5/.keras or a "
                          "float32 .tflite)")
    # the whole model quantized, no on-device learning (an int8 input is allowed)
    ctx = PassContext(session=session, config=CompileConfig(learning=None, quant=quant), calib=calib,
                      progress=progress)
    run_pipeline(graph, reg.pipeline("cleanup"), ctx)
    run_pipeline(graph, reg.pipeline("int8"), ctx)
    return graph, ctx


def cmd_quantize(args: argparse.Namespace, session: Any) -> int:
    from .quant_report import add_baseline, build_report
    from ...tflite_writer import write_tflite

    out = Path(args.output)
    check_output_file(out)
    if args.report is not None:
        check_output_file(Path(args.report))  # never a device, folder or symlink; before any work
    quant = QuantConfig(calib=args.calib, observer=args.observer, int8_input=args.int8_io, int8_output=args.int8_io,
                        calib_scale=args.calib_scale, calib_limit=args.calib_limit,
                        dense_per_tensor=args.dense_per_tensor, activations=args.activations or "int8",
                        int16_layers=args.int16_layers or ())
    graph, ctx = quantize_model(args.model, quant, session, progress=sys.stderr.isatty())
    data = write_tflite(graph)  # raises for ops TFLite cannot run, before anything is written
    ex = ey = None
    if args.eval:
        fg = ctx.results["quantize_int8"]["float_graph"]
        ex, ey = load_data(args.eval, session.registry, fg.tensors[fg.inputs[0]].shape[1:], EVAL_KEYS)
        try:
            ex = check_samples(fg, ex, "evaluation data")
        except CalibrationDataError as e:
            raise TinyccError(str(e)) from None
        if args.calib_scale is not None:
            ex = ex * np.float32(args.calib_scale)
    report = build_report(ctx.results["quantize_int8"]["float_graph"], graph, ctx.results["calibrate"]["samples"],
                          ex, ey)
    if graph.meta.get("activations"):  # int16 or mixed: the all-int8 quantization beside it shows the gain
        base, bctx = quantize_model(args.model, replace(quant, activations="int8", int16_layers=()), session)
        add_baseline(report, build_report(bctx.results["quantize_int8"]["float_graph"], base,
                                          bctx.results["calibrate"]["samples"]))
    write_atomic(out, data)
    if args.report:
        write_atomic(Path(args.report), (json.dumps(report.to_dict(), indent=1) + "\n").encode())
    sys.stdout.write(report.render() + "\n")
    sys.stdout.write(f"wrote {out} ({len(data):,} bytes)\n")
    return 0


@hookimpl
def tinycc_add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("quantize", help="int8- (or int16-) quantize a model into a .tflite file (with a report)")
    p.add_argument("model", help="model file (.h5/.keras or any registered frontend)")
    p.add_argument("--calib", required=True, help="calibration data: .npz/.npy, image folder, or SOURCE:ARG")
    p.add_argument("--observer", default="minmax", choices=sorted(OBSERVERS), help="range observer")
    p.add_argument("--calib-scale", type=positive_float,
                   help="multiply calibration/eval samples by this (e.g. 0.00392)")
    p.add_argument("--calib-limit", type=positive_int, default=1000, help="use at most this many calibration samples")
    p.add_argument("--eval", help="evaluation data (.npz with x/y or x_test/y_test) for float vs int8 accuracy")
    p.add_argument("--int8-io", action="store_true", help="int8 input and output tensors (no QUANTIZE/DEQUANTIZE)")
    p.add_argument("--dense-per-tensor", action="store_true", help="one weight scale per Dense layer")
    p.add_argument("--activations", choices=ACTIVATIONS,
                   help="activation type: int8 (default) or int16 (TFLite's 16x8: int8 weights, int64 bias)")
    p.add_argument("--int16-layers", type=layer_names, metavar="NAME,NAME",
                   help="keep these layers (or first, last) in int16 in an int8 model; the report shows the gain")
    p.add_argument("-o", "--output", type=path_text, required=True, help="the .tflite file to write (atomically)")
    p.add_argument("--report", type=path_text, help="also write the quantization report as JSON here")
    p.set_defaults(func=cmd_quantize)
