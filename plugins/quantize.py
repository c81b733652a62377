"""int8 full-integer quantization as passes: ``lower_for_int8``, ``calibrate``, ``quantize_int8``.

Rules (TFLite int8 specification): weights symmetric int8 in [-127, 127], per output channel for
Conv2D (axis 0) and DepthwiseConv2D (axis 3), per tensor for Dense (what TFLite Micro's
reference FULLY_CONNECTED expects everywhere); int32 biases with scale input*weight scale and
zero point 0; activations asymmetric int8 from calibrated ranges (widened to include 0);
pooling, reshape/flatten, pad and concatenate share one set of parameters between inputs and
output (the union of their ranges); a QUANTIZE op after each float input and a DEQUANTIZE op
before each output (``int8_io`` keeps int8 at the boundaries).

Calibration data: ``options["calib_data"]`` (an array) or ``options["calib"]``: an ``.npz``
(key ``x_calib``, ``x_train``, ``x`` or the only array), an ``.npy``, a folder of images, or
``SOURCE:ARG`` for a plugin source. Values are used as they are (no implicit scaling): give
the model what it was trained on; a model that rescales itself takes raw pixels.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pluggy

from ..errors import TinyccError, UnsupportedLayerError
from ..ir.calibration import OBSERVERS, calibrate
from ..ir.graph import Graph, Op
from ..ir.interpreter_int8 import INT8_KINDS, SAME_PARAMS
from ..ir.ops import OpKind
from ..ir.quant import (choose_activation_params, quantize_bias, quantize_weights, symmetric_weight_scales)
from ..ir.tensor import DType, QuantParams, Tensor
from ..passes import Pass, PassContext

hookimpl = pluggy.HookimplMarker("tinycc")
log = logging.getLogger("tinycc.quantize")


# ---- calibration data ----------------------------------------------------------
def load_samples(spec: str, registry: Any = None) -> np.ndarray:
    """Read calibration samples from a file, a folder of images or a plugin source."""
    p = Path(spec)
    if not p.exists() and ":" in spec and registry is not None:
        name, arg = spec.split(":", 1)
        if name in registry.calibration_sources:
            return np.asarray(registry.calibration_sources[name].obj(arg))
    if not p.exists():
        raise TinyccError(f"calibration data {spec}: no such file or folder")
    if p.is_dir():
        return _load_images(p)
    try:
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                for key in ("x_calib", "x_train", "x"):
                    if key in z.files:
                        return z[key]
                if len(z.files) == 1:
                    return z[z.files[0]]
                raise TinyccError(f"calibration data {spec}: no array named x_calib, x_train or x "
                                  f"(found {', '.join(z.files)})")
    except TinyccError:
        raise
    except Exception as e:
        raise TinyccError(f"calibration data {spec}: cannot read ({type(e).__name__}: {e})") from None
    raise TinyccError(f"calibration data {spec}: expected .npz, .npy or a folder of images")


def _load_images(folder: Path) -> np.ndarray:
    from PIL import Image

    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not files:
        raise TinyccError(f"calibration data {folder}: no images (.png/.jpg/.bmp) found")
    return np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) for f in files])


def check_samples(graph: Graph, x: Any, what: str = "calibration data") -> np.ndarray:
    """Validate samples against the graph input: numeric, finite, non-empty, right shape."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise TinyccError(f"{what}: dtype {x.dtype} is not numeric")
    if x.size == 0 or x.shape[0] == 0:
        raise TinyccError(f"{what}: empty (no samples)")
    want = graph.tensors[graph.inputs[0]].shape[1:]
    if x.ndim == len(want) and tuple(x.shape) == tuple(want):
        x = x[None]
    if tuple(x.shape[1:]) != tuple(want):
        if x.ndim == len(want) and want[-1] == 1 and tuple(x.shape[1:]) == tuple(want[:-1]):
            x = x[..., None]
        else:
            raise TinyccError(f"{what}: samples have shape {tuple(x.shape[1:])}, the model expects {tuple(want)}")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        idx = np.unique(np.nonzero(bad)[0])
        raise TinyccError(f"{what}: {int(bad.sum())} NaN/Inf values in {len(idx)} samples (first: sample {idx[0]})")
    return x


# ---- passes --------------------------------------------------------------------
def _const(graph: Graph, name: str, value: Any) -> str:
    return graph.add_const(name, np.asarray(value, np.float32)).name


class LowerForInt8(Pass):
    """Rewrite float ops with no int8 kernel into ops that have one (float semantics kept)."""

    name = "lower_for_int8"
    description = "lower hard_sigmoid, BatchNorm and Rescaling into ADD/MUL/RELU6 for int8"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        changed = False
        for op in list(graph.ops):
            if op.kind == OpKind.HARD_SIGMOID:
                self._replace(graph, op, [("add", [_const(graph, f"{op.name}/three", [3.0])]), ("relu6", []),
                                          ("mul", [_const(graph, f"{op.name}/sixth", [1.0 / 6.0])])])
            elif op.kind == OpKind.BATCH_NORM:
                g, b, m, v = (graph.tensors[t].data.astype(np.float64) for t in op.inputs[1:5])
                scale = g / np.sqrt(v + op.attrs["epsilon"])
                self._replace(graph, op, [("mul", [_const(graph, f"{op.name}/scale", scale)]),
                                          ("add", [_const(graph, f"{op.name}/offset", b - m * scale)])])
            elif op.kind == OpKind.RESCALE:
                c = graph.tensors[op.inputs[0]].shape[-1]
                s = np.broadcast_to(np.asarray(op.attrs["scale"], np.float32), (c,))
                o = np.broadcast_to(np.asarray(op.attrs["offset"], np.float32), (c,))
                self._replace(graph, op, [("mul", [_const(graph, f"{op.name}/scale", s)]),
                                          ("add", [_const(graph, f"{op.name}/offset", o)])])
            else:
                continue
            changed = True
        graph.prune_unused()
        return changed

    @staticmethod
    def _replace(graph: Graph, op: Op, chain: list[tuple[str, list[str]]]) -> None:
        idx = graph.ops.index(op)
        graph.ops.remove(op)
        x = op.inputs[0]
        final = op.outputs[0]
        graph.tensors.pop(final)
        for i, (kind, extra) in enumerate(chain):
            last = i == len(chain) - 1
            new = graph.add_op(kind, [x] + extra, f"{op.name}/{kind}", origin=op.origin,
                               output_name=final if last else None, index=idx + i)
            x = new.outputs[0]


class Calibrate(Pass):
    name = "calibrate"
    description = "record per-tensor float ranges on representative data"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        x = ctx.options.get("calib_data")
        if x is None:
            spec = ctx.option("calib")
            if not spec:
                raise TinyccError("int8 quantization needs calibration data: pass --calib FILE "
                                  "(.npz/.npy with samples in the model's input layout, or an image folder)")
            x = load_samples(spec, ctx.session.registry if ctx.session else None)
        x = check_samples(graph, x)
        limit = int(ctx.option("calib_limit", 1000))
        x = x[:limit]
        kind = ctx.option("observer", "minmax")
        if kind not in OBSERVERS:
            raise TinyccError(f"unknown observer {kind!r}; known: {', '.join(OBSERVERS)}")
        prog = None
        if ctx.progress:
            from tqdm import tqdm

            prog = lambda it: tqdm(it, desc="calibrate", unit="batch", leave=False)  # noqa: E731
        ctx.results["calibrate"] = {"ranges": calibrate(graph, x, OBSERVERS[kind](), progress=prog),
                                    "samples": x, "observer": kind}
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


class QuantizeInt8(Pass):
    name = "quantize_int8"
    description = "full-integer int8 quantization of the graph (TFLite int8 specification)"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        if "calibrate" not in ctx.results:
            raise TinyccError("quantize_int8 needs the calibrate pass to run first")
        ranges = dict(ctx.results["calibrate"]["ranges"])
        for op in graph.ops:
            if op.kind not in INT8_KINDS:
                raise UnsupportedLayerError(
                    f"layer {op.origin!r} ({op.kind.value}) has no int8 kernel; int8 supports: "
                    f"{', '.join(sorted(k.value for k in INT8_KINDS))}")
        act = [t for t in graph.activations()]
        uf = _UnionFind()
        for op in graph.ops:
            if op.kind in SAME_PARAMS:
                for t in op.inputs:
                    if not graph.tensors[t].is_const:
                        uf.union(t, op.outputs[0])
        groups: dict[str, list[str]] = {}
        for t in act:
            groups.setdefault(uf.find(t), []).append(t)
        params: dict[str, QuantParams] = {}
        for members in groups.values():
            lo = min(ranges[t][0] for t in members)
            hi = max(ranges[t][1] for t in members)
            s, zp = choose_activation_params(lo, hi)
            for t in members:
                params[t] = QuantParams([s], [zp])
        for op in list(graph.ops):
            self._quantize_consts(graph, op, params)
        for t in act:
            ten = graph.tensors[t]
            ten.quant = params[t]
            ten.dtype = DType.INT8
        io = bool(ctx.option("int8_io", False))
        self._boundaries(graph, bool(ctx.option("int8_input", io)), bool(ctx.option("int8_output", io)))
        graph.meta["quantized"] = "int8"
        return True

    @staticmethod
    def _quantize_consts(graph: Graph, op: Op, params: dict[str, QuantParams]) -> None:
        if op.kind in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE):
            w = graph.tensors[op.inputs[1]]
            axis = {OpKind.CONV2D: 0, OpKind.DEPTHWISE_CONV2D: 3, OpKind.DENSE: None}[op.kind]
            scales = symmetric_weight_scales(w.data, axis)
            qw = Tensor(graph.unique_tensor_name(f"{w.name}_int8"), w.shape, DType.INT8,
                        quantize_weights(w.data, scales, axis),
                        QuantParams(scales, np.zeros(scales.size, np.int64), axis))
            graph.add_tensor(qw)
            op.inputs[1] = qw.name
            if len(op.inputs) > 2:
                b = graph.tensors[op.inputs[2]]
                in_s = float(params[op.inputs[0]].scale[0])
                qb, bs = quantize_bias(b.data, in_s, scales)
                qbt = Tensor(graph.unique_tensor_name(f"{b.name}_int32"), b.shape, DType.INT32, qb,
                             QuantParams(bs, np.zeros(bs.size, np.int64), None if axis is None else 0))
                graph.add_tensor(qbt)
                op.inputs[2] = qbt.name
        elif op.kind in (OpKind.ADD, OpKind.MUL, OpKind.CONCAT):
            for i, t in enumerate(op.inputs):
                c = graph.tensors[t]
                if not c.is_const or c.dtype != DType.FLOAT32:
                    continue
                s, zp = choose_activation_params(float(c.data.min()), float(c.data.max()))
                if op.kind == OpKind.CONCAT:
                    s, zp = float(params[op.outputs[0]].scale[0]), int(params[op.outputs[0]].zero_point[0])
                from ..ir.quant import quantize as q

                qc = Tensor(graph.unique_tensor_name(f"{t}_int8"), c.shape, DType.INT8, q(c.data, s, zp),
                            QuantParams([s], [zp]))
                graph.add_tensor(qc)
                op.inputs[i] = qc.name
        graph.prune_unused()

    @staticmethod
    def _boundaries(graph: Graph, int8_input: bool, int8_output: bool) -> None:
        for i, name in enumerate(list(graph.inputs)):
            t = graph.tensors[name]
            if int8_input:
                continue
            q = Tensor(graph.unique_tensor_name(f"{name}_int8"), t.shape, DType.INT8, quant=t.quant)
            graph.add_tensor(q)
            graph.replace_uses(name, q.name)
            graph.ops.insert(0, Op(graph.unique_op_name(f"{name}_quantize"), OpKind.QUANTIZE, [name], [q.name],
                                   {}, origin=name))
            t.dtype, t.quant = DType.FLOAT32, None
        if int8_output:
            return
        for i, name in enumerate(list(graph.outputs)):
            t = graph.tensors[name]
            out = graph.add_tensor(Tensor(graph.unique_tensor_name(f"{name}_float"), t.shape, DType.FLOAT32))
            graph.ops.append(Op(graph.unique_op_name(f"{name}_dequantize"), OpKind.DEQUANTIZE, [name], [out.name],
                                {}, origin=name))
            graph.outputs[i] = out.name


PASSES = (LowerForInt8, Calibrate, QuantizeInt8)


@hookimpl
def tinycc_register_passes(registry: Any) -> None:
    for p in PASSES:
        registry.add_pass(p)


@hookimpl
def tinycc_register_pipelines(registry: Any) -> None:
    registry.add_pipeline("int8", [p.name for p in PASSES])
