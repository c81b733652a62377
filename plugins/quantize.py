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
- hard_swish stays one int8 HARD_SWISH op (its own output parameters), as the converter emits it;
- a constant operand of add/sub/mul gets its own per-tensor asymmetric parameters, one of
  concat/maximum/minimum the output's;
- a QUANTIZE op after each float input and a DEQUANTIZE op before each output (options
  ``int8_input`` / ``int8_output`` / ``int8_io`` keep int8 at the boundaries). A final softmax
  stays float after the DEQUANTIZE when the output is float; with an int8 output it is TFLite's int8
  SOFTMAX (as is a softmax anywhere else in the graph).

Calibration data (``options["calib_data"]`` array, or ``options["calib"]`` spec): an ``.npz``
(key ``x_calib``, ``x_train``, ``x`` or its only array), an ``.npy``, a folder of images (resized to
the input size, values 0..255) or ``SOURCE:ARG`` from a registered calibration source. Values are
used as stored, never rescaled implicitly (a model's Rescaling layer may have been folded away,
so guessing would skew ranges silently); ``calib_scale`` multiplies them (e.g. 1/255). The first
``calib_limit`` (default 1000) samples are used.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pluggy

from ..errors import TinyccError, UnsupportedLayerError
from ..ir.calibration import OBSERVERS, CalibrationDataError, calibrate, check_samples
from ..ir.graph import Graph, Op
from ..ir.interpreter_int8 import FIXED_OUTPUT, INT8_KINDS, SAME_PARAMS
from ..ir.ops import OpKind
from ..ir.quant import (bias_fitting_scales, choose_activation_params, quantize, quantize_bias, quantize_weights,
                        symmetric_weight_scales)
from ..ir.tensor import DType, QuantParams, Tensor
from ..options import positive_float, positive_int
from ..output import check_output_file
from ..passes import Pass, PassContext

hookimpl = pluggy.HookimplMarker("tinycc")
log = logging.getLogger("tinycc.quantize")

# output parameters fixed by the TFLite int8 specification (scale, zero point)
FIXED_PARAMS: dict[OpKind, tuple[float, int]] = dict(FIXED_OUTPUT)
# ops whose int8 input and output share parameters: the interpreter's list plus RELU6, because TFLite
# Micro's int8 RELU6 only clamps to [q(0), q(6)] of the *input* parameters (no requantization); global
# average pooling is left out: it gets its own output parameters (TFLite's requantizing MEAN)
SHARED_KINDS = (SAME_PARAMS - {OpKind.GLOBAL_AVG_POOL}) | {OpKind.RELU6}
CALIB_KEYS = ("x_calib", "x_train", "x")
EVAL_KEYS = ("x_eval", "x_test", "x_val", "x")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


# ---- calibration data ----------------------------------------------------------
def _npz_array(path: Path, keys: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    """The first present key of ``keys`` (or the only array) and its ``y`` labels if stored."""
    with np.load(path, allow_pickle=False) as z:
        key = next((k for k in keys if k in z.files), z.files[0] if len(z.files) == 1 else None)
        if key is None:
            raise TinyccError(f"{path}: no array named {', '.join(keys)} (found {', '.join(z.files) or 'none'})")
        ykey = "y" + key[1:] if key.startswith("x") else None
        return z[key], (z[ykey] if ykey in z.files else None)


def _load_images(folder: Path, shape: tuple[int, ...] | None) -> np.ndarray:
    from PIL import Image

    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise TinyccError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    mode = "L" if shape is not None and len(shape) == 3 and shape[2] == 1 else "RGB"
    out = []
    for f in files:
        try:
            img = Image.open(f).convert(mode)
        except OSError as e:
            raise TinyccError(f"{f}: cannot read image ({e})") from None
        if shape is not None and len(shape) == 3:
            img = img.resize((shape[1], shape[0]), Image.BILINEAR)
        arr = np.asarray(img, np.float32)
        out.append(arr[..., None] if arr.ndim == 2 else arr)
    sizes = {a.shape for a in out}
    if len(sizes) > 1:
        raise TinyccError(f"{folder}: images have different sizes {sorted(sizes)}")
    return np.stack(out)


def load_data(spec: str, registry: Any = None, shape: tuple[int, ...] | None = None,
              keys: tuple[str, ...] = CALIB_KEYS) -> tuple[np.ndarray, np.ndarray | None]:
    """Samples (and labels when an .npz stores them) from a file, an image folder or a plugin source.

    ``shape`` is the model input without the batch axis (images are resized to it).
    """
    p = Path(spec)
    if not p.exists() and ":" in spec and registry is not None:
        name, arg = spec.split(":", 1)
        if name in registry.calibration_sources:
            return np.asarray(registry.calibration_sources[name].obj(arg)), None
        known = ", ".join(sorted(registry.calibration_sources)) or "none"
        raise TinyccError(f"{spec}: no such file, and {name!r} is no calibration source (registered: {known})")
    if not p.exists():
        raise TinyccError(f"{spec}: no such file or folder")
    if p.is_dir():
        return _load_images(p, shape), None
    try:
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False), None
        if p.suffix == ".npz":
            return _npz_array(p, keys)
    except TinyccError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise TinyccError(f"{spec}: cannot read ({e or type(e).__name__})") from None
    raise TinyccError(f"{spec}: expected an .npz or .npy file or a folder of images")


def load_samples(spec: str, registry: Any = None, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Calibration samples only (see :func:`load_data`)."""
    return load_data(spec, registry, shape)[0]


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


def samples_from_options(graph: Graph, options: dict[str, Any], registry: Any = None) -> np.ndarray:
    """Checked float32 calibration samples from ``calib_data`` or ``calib`` (+ scale and limit)."""
    x = options.get("calib_data")
    if x is None:
        spec = options.get("calib")
        if not spec:
            raise TinyccError("int8 quantization needs calibration data: pass --calib FILE "
                              "(.npz/.npy with samples in the model's input layout, or an image folder)")
        x = load_samples(str(spec), registry, graph.tensors[graph.inputs[0]].shape[1:])
    try:
        x = check_samples(graph, x)
    except CalibrationDataError as e:
        raise TinyccError(str(e)) from None
    scale = options.get("calib_scale")
    if scale is not None:
        x = x * np.float32(scale)
    limit = int(options["calib_limit"]) if options.get("calib_limit") is not None else 1000
    if limit < 1:
        raise TinyccError(f"calibration limit must be >= 1, got {limit}")
    return x[:limit]


# ---- passes --------------------------------------------------------------------
def _const(graph: Graph, name: str, value: Any) -> str:
    return graph.add_const(name, np.asarray(value, np.float32)).name


def int8_unsupported(graph: Graph) -> list[Op]:
    """Ops with no int8 kernel (a final softmax is fine: it stays float after the DEQUANTIZE)."""
    tail = {id(o) for o in _float_tail(graph)}
    return [o for o in graph.ops if o.kind not in INT8_KINDS and id(o) not in tail]


def check_int8_support(graph: Graph) -> None:
    """Raise UnsupportedLayerError naming the first layer that int8 cannot run."""
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
        x = samples_from_options(graph, ctx.options, ctx.session.registry if ctx.session else None)
        kind = ctx.option("observer", "minmax")
        if kind not in OBSERVERS:
            raise TinyccError(f"unknown observer {kind!r}; known: {', '.join(OBSERVERS)}")
        prog = None
        if ctx.progress:
            from tqdm import tqdm

            def prog(it: Any) -> Any:
                return tqdm(it, desc="calibrate", unit="batch", leave=False)
        try:
            ranges = calibrate(graph, x, OBSERVERS[kind](), int(ctx.option("calib_batch_size", 64)), prog)
        except CalibrationDataError as e:
            raise TinyccError(str(e)) from None
        ctx.results["calibrate"] = {"ranges": ranges, "samples": x, "observer": kind}
        log.info("calibrated %d tensors on %d samples (%s)", len(ranges), len(x), kind)
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


def activation_params(graph: Graph, ranges: dict[str, tuple[float, float]]) -> dict[str, QuantParams]:
    """Per-tensor int8 parameters of every activation (shared groups, fixed outputs)."""
    uf = _UnionFind()
    producers = graph.producers_map()
    for op in graph.ops:
        if op.kind in SHARED_KINDS:
            for t in op.inputs:
                if not graph.tensors[t].is_const:
                    uf.union(t, op.outputs[0])
    groups: dict[str, list[str]] = {}
    for t in graph.activations():
        groups.setdefault(uf.find(t), []).append(t)
    params: dict[str, QuantParams] = {}
    for members in groups.values():
        fixed_ops = [producers[t] for t in members if t in producers and producers[t].kind in FIXED_PARAMS]
        fixed = {FIXED_PARAMS[o.kind] for o in fixed_ops}
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
            s, zp = choose_activation_params(min(ranges[t][0] for t in members), max(ranges[t][1] for t in members))
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
        io = bool(ctx.option("int8_io", False))
        int8_in, int8_out = bool(ctx.option("int8_input", io)), bool(ctx.option("int8_output", io))
        tail = _float_tail(graph, int8_out)
        ctx.results["quantize_int8"] = {"float_graph": graph.copy()}
        kept = []
        for op in tail:  # the float softmax is cut off here and re-attached after the DEQUANTIZE
            graph.ops.remove(op)
            pos = graph.outputs.index(op.outputs[0])
            graph.outputs[pos] = op.inputs[0]
            kept.append((op, graph.tensors[op.outputs[0]], pos))
        params = activation_params(graph, ctx.results["calibrate"]["ranges"])
        per_tensor_dense = bool(ctx.option("dense_per_tensor", False))
        for op in list(graph.ops):
            self._quantize_consts(graph, op, params, per_tensor_dense)
        graph.prune_unused()
        for t in graph.activations():
            graph.tensors[t].quant = params[t]
            graph.tensors[t].dtype = DType.INT8
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
        return True

    @staticmethod
    def _quantize_consts(graph: Graph, op: Op, params: dict[str, QuantParams], per_tensor_dense: bool) -> None:
        if op.kind in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE, OpKind.TRANSPOSE_CONV2D):
            w = graph.tensors[op.inputs[1]]
            axis = {OpKind.CONV2D: 0, OpKind.DEPTHWISE_CONV2D: 3, OpKind.DENSE: 0, OpKind.TRANSPOSE_CONV2D: 0}[op.kind]
            if op.kind == OpKind.DENSE and per_tensor_dense:
                axis = None
            scales = symmetric_weight_scales(w.data, axis)
            if len(op.inputs) > 2:  # dead filters with a bias: the int32 bias must fit
                scales = bias_fitting_scales(graph.tensors[op.inputs[2]].data, float(params[op.inputs[0]].scale[0]),
                                             scales)
            qw = Tensor(graph.unique_tensor_name(f"{w.name}_int8"), w.shape, DType.INT8,
                        quantize_weights(w.data, scales, axis),
                        QuantParams(scales, np.zeros(scales.size, np.int64), axis))
            graph.add_tensor(qw)
            op.inputs[1] = qw.name
            if len(op.inputs) > 2:
                b = graph.tensors[op.inputs[2]]
                qb, bs = quantize_bias(b.data, float(params[op.inputs[0]].scale[0]), scales)
                qbt = Tensor(graph.unique_tensor_name(f"{b.name}_int32"), b.shape, DType.INT32, qb,
                             QuantParams(bs, np.zeros(bs.size, np.int64), None if axis is None else 0))
                graph.add_tensor(qbt)
                op.inputs[2] = qbt.name
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
                qc = Tensor(graph.unique_tensor_name(f"{t}_int8"), c.shape, DType.INT8, quantize(c.data, s, zp),
                            QuantParams([s], [zp]))
                graph.add_tensor(qc)
                op.inputs[i] = qc.name

    @staticmethod
    def _boundaries(graph: Graph, int8_input: bool, int8_output: bool) -> None:
        if not int8_input:
            for name in list(graph.inputs):
                t = graph.tensors[name]
                q = graph.add_tensor(Tensor(graph.unique_tensor_name(f"{name}_int8"), t.shape, DType.INT8,
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
    for p in PASSES:
        registry.add_pass(p)


@hookimpl
def tinycc_register_pipelines(registry: Any) -> None:
    registry.add_pipeline("int8", [p.name for p in PASSES])


@hookimpl
def tinycc_register_calibration_sources(registry: Any) -> None:
    registry.add_calibration_source("npz", _npz_source)


# ---- CLI: tinycc quantize --------------------------------------------------------
def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and ``os.replace`` (never a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is not what a plain open() would give
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def quantize_model(model: str, options: dict[str, Any], session: Any) -> tuple[Graph, PassContext]:
    """Load ``model``, run the cleanup pipeline (if registered) and the int8 pipeline."""
    from ..passes import run_pipeline

    if not os.path.exists(model):
        raise TinyccError(f"{model}: no such file")
    reg = session.registry
    graph = reg.frontend_for(model).load(model, options)
    if graph.meta.get("quantized"):
        raise TinyccError(f"{model}: already an int8 model; quantize takes the float model (.h5/.keras or a "
                          "float32 .tflite)")
    ctx = PassContext(options=options, session=session, progress=bool(options.get("progress")))
    if "cleanup" in reg.pipelines:
        run_pipeline(graph, reg.pipeline("cleanup"), ctx)
    run_pipeline(graph, reg.pipeline("int8"), ctx)
    return graph, ctx


def cmd_quantize(args: argparse.Namespace, session: Any) -> int:
    from .quant_report import build_report
    from .tflite_writer import write_tflite

    out = Path(args.output)
    check_output_file(out)
    options = {"calib": args.calib, "observer": args.observer, "int8_io": args.int8_io,
               "calib_scale": args.calib_scale, "calib_limit": args.calib_limit,
               "dense_per_tensor": args.dense_per_tensor, "progress": sys.stderr.isatty()}
    graph, ctx = quantize_model(args.model, options, session)
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
    write_atomic(out, data)
    if args.report:
        write_atomic(Path(args.report), (json.dumps(report.to_dict(), indent=1) + "\n").encode())
    sys.stdout.write(report.render() + "\n")
    sys.stdout.write(f"wrote {out} ({len(data):,} bytes)\n")
    return 0


@hookimpl
def tinycc_add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("quantize", help="int8-quantize a model into a .tflite file (with a report)")
    p.add_argument("model", help="model file (.h5/.keras or any registered frontend)")
    p.add_argument("--calib", required=True, help="calibration data: .npz/.npy, image folder, or SOURCE:ARG")
    p.add_argument("--observer", default="minmax", choices=sorted(OBSERVERS), help="range observer")
    p.add_argument("--calib-scale", type=positive_float,
                   help="multiply calibration/eval samples by this (e.g. 0.00392)")
    p.add_argument("--calib-limit", type=positive_int, default=1000, help="use at most this many calibration samples")
    p.add_argument("--eval", help="evaluation data (.npz with x/y or x_test/y_test) for float vs int8 accuracy")
    p.add_argument("--int8-io", action="store_true", help="int8 input and output tensors (no QUANTIZE/DEQUANTIZE)")
    p.add_argument("--dense-per-tensor", action="store_true", help="one weight scale per Dense layer")
    p.add_argument("-o", "--output", required=True, help="the .tflite file to write (atomically)")
    p.add_argument("--report", help="also write the quantization report as JSON here")
    p.set_defaults(func=cmd_quantize)
