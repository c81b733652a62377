"""Keras frontend: `.h5` (legacy HDF5) and `.keras` files into the float IR.

Sequential and functional models, nested models inlined. Activations given as ``activation=``
become separate ops named ``<layer>_act``; the ``fuse_activations`` pass fuses them later.
Keras ``Conv2D(groups=C)`` with ``filters == C`` lowers to depthwise; other group counts stay a
grouped ``conv2d``. ``keras.ops`` arithmetic between layers (``x + 3.0``, ``x * c``) becomes
``rescale``/``add``/``mul``. Files written by Keras 2 get their config repaired first
(``keras_legacy``).
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pluggy

from ...errors import TinyccError, UnsupportedLayerError
from ...ir.graph import Graph, IRError
from ...ir.ops import OpKind
from .keras_legacy import check_zip_sizes, repaired_copy
from .keras_recurrent import CONVERTERS as RECURRENT_CONVERTERS
from .keras_bidir import bidirectional
from .keras_lstm import convert_lstm

hookimpl = pluggy.HookimplMarker("tinycc")
log = logging.getLogger("tinycc.keras")

_ACTIVATIONS = {
    "linear": None, "relu": OpKind.RELU, "relu6": OpKind.RELU6, "sigmoid": OpKind.SIGMOID,
    "hard_sigmoid": OpKind.HARD_SIGMOID, "tanh": OpKind.TANH, "swish": OpKind.SWISH, "silu": OpKind.SWISH,
    "hard_swish": OpKind.HARD_SWISH, "hard_silu": OpKind.HARD_SWISH, "softmax": OpKind.SOFTMAX,
    "leaky_relu": OpKind.LEAKY_RELU, "elu": OpKind.ELU, "gelu": OpKind.GELU, "softplus": OpKind.SOFTPLUS,
    "softsign": OpKind.SOFTSIGN, "selu": OpKind.SELU, "mish": OpKind.MISH, "exponential": OpKind.EXPONENTIAL,
}


def _activation_name(fn: Any) -> str:
    if fn is None:
        return "linear"
    if isinstance(fn, str):
        return fn
    return getattr(fn, "__name__", str(fn))


class _Builder:
    """Converts Keras layers into IR ops, keeping a map from Keras tensors to IR tensor names."""

    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.names: dict[int, str] = {}

    # -- helpers ---------------------------------------------------------
    def const(self, name: str, value: Any) -> str:
        return self.g.add_const(name, np.asarray(value, dtype=np.float32)).name

    def op(self, kind: OpKind, inputs: list[str], name: str, origin: str, attrs: dict | None = None) -> str:
        try:
            return self.g.add_op(kind, inputs, name, attrs or {}, origin=origin).outputs[0]
        except IRError as e:
            raise UnsupportedLayerError(f"layer {origin!r} cannot be imported: {e}") from None

    def activation(self, x: str, fn: Any, layer: Any, name: str, origin: str) -> str:
        act = _activation_name(fn)
        if act not in _ACTIVATIONS:
            raise UnsupportedLayerError(
                f"layer {origin!r} ({type(layer).__name__}) uses activation {act!r}; supported activations: "
                f"{', '.join(sorted(_ACTIVATIONS))}")
        kind = _ACTIVATIONS[act]
        if kind is None:
            return x
        attrs = {"alpha": 0.2} if kind == OpKind.LEAKY_RELU else {}
        return self.op(kind, [x], name, origin, attrs)

    # -- model traversal -------------------------------------------------
    def model(self, model: Any, inputs: list[str], prefix: str) -> list[str]:
        import keras

        functional = model if not isinstance(model, keras.Sequential) else getattr(model, "_functional", None)
        if functional is None:  # a Sequential built without an Input: a plain chain
            x = inputs
            for layer in model.layers:
                x = self.layer(layer, x, prefix)
            return x
        for kt, name in zip(functional.inputs, inputs):
            self.names[id(kt)] = name
        order = {id(op): i for i, op in enumerate(functional.operations)}
        for depth in sorted(functional._nodes_by_depth, reverse=True):
            nodes = sorted(functional._nodes_by_depth[depth], key=lambda n: order.get(id(n.operation), 0))
            for node in nodes:
                layer = node.operation
                if isinstance(layer, keras.layers.InputLayer):
                    continue
                ins = [self.names[id(t)] for t in node.input_tensors]
                if isinstance(layer, keras.layers.Layer):
                    outs = self.layer(layer, ins, prefix)
                else:  # a keras.ops call recorded in the graph (x + 3.0, x * c, ...)
                    outs = [_operation(self, node, f"{prefix}{layer.name}")]
                if len(outs) != len(node.output_tensors):
                    raise UnsupportedLayerError(f"layer {layer.name!r} ({type(layer).__name__}) has several outputs")
                for t, name in zip(node.output_tensors, outs):
                    self.names[id(t)] = name
        return [self.names[id(t)] for t in functional.outputs]

    def layer(self, layer: Any, ins: list[str], prefix: str) -> list[str]:
        import keras

        if isinstance(layer, keras.Model):
            return self.model(layer, ins, f"{prefix}{layer.name}/")
        return self.convert(layer, ins, prefix)

    def convert(self, layer: Any, ins: list[str], prefix: str) -> list[str]:
        """One layer (a Keras object, or its config read directly: ``keras_direct``) into IR ops."""
        cls = type(layer).__name__
        conv = _CONVERTERS.get(cls)
        if conv is None:
            raise UnsupportedLayerError(
                f"layer {prefix}{layer.name!r} of class {cls} is not supported; `tinycc ops` lists the supported "
                "layers")
        if getattr(layer, "data_format", "channels_last") not in ("channels_last", None):
            raise UnsupportedLayerError(f"layer {prefix}{layer.name!r} ({cls}) uses data_format "
                                        f"{layer.data_format!r}; only channels_last is supported")
        return [conv(self, layer, ins, f"{prefix}{layer.name}")]


# ---- layer converters ------------------------------------------------------
def _w(v: Any) -> np.ndarray:
    return np.asarray(v.numpy() if hasattr(v, "numpy") else v, dtype=np.float32)


def _conv2d(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    k = _w(l.kernel)  # KH KW I/g O
    cin = b.g.tensors[ins[0]].shape[-1]
    groups = int(getattr(l, "groups", 1))
    bias = [b.const(f"{name}/bias", _w(l.bias))] if l.use_bias else []
    common = {"strides": tuple(l.strides), "padding": l.padding, "dilation": tuple(l.dilation_rate)}
    if l.padding not in ("same", "valid"):
        raise UnsupportedLayerError(f"layer {name!r} (Conv2D) uses padding {l.padding!r}")
    if groups > 1 and groups == cin == l.filters:
        w = b.const(f"{name}/kernel", k.reshape(1, k.shape[0], k.shape[1], cin))
        x = b.op(OpKind.DEPTHWISE_CONV2D, [ins[0], w] + bias, name, name, {**common, "depth_multiplier": 1})
    else:
        w = b.const(f"{name}/kernel", k.transpose(3, 0, 1, 2))
        x = b.op(OpKind.CONV2D, [ins[0], w] + bias, name, name, {**common, "groups": groups})
    return b.activation(x, l.activation, l, f"{name}_act", name)


def _conv2d_transpose(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    """Conv2DTranspose: kernel [KH, KW, O, I] -> [O, KH, KW, I] (TFLite's TRANSPOSE_CONV layout)."""
    if tuple(l.dilation_rate) != (1, 1) or l.padding not in ("same", "valid"):
        raise UnsupportedLayerError(f"layer {name!r} (Conv2DTranspose): only dilation 1 with 'same' or 'valid' "
                                    "padding is supported")
    _, h, w_, _ = b.g.tensors[ins[0]].shape
    k = _w(l.kernel)
    (sh, sw), (kh, kw) = tuple(l.strides), k.shape[:2]
    extra = tuple(l.output_padding) if getattr(l, "output_padding", None) is not None else (0, 0)
    size = tuple((n * s if l.padding == "same" else (n - 1) * s + kk) + e
                 for n, s, kk, e in ((h, sh, kh, extra[0]), (w_, sw, kw, extra[1])))
    wt = b.const(f"{name}/kernel", k.transpose(2, 0, 1, 3))
    bias = [b.const(f"{name}/bias", _w(l.bias))] if l.use_bias else []
    x = b.op(OpKind.TRANSPOSE_CONV2D, [ins[0], wt] + bias, name, name,
             {"strides": (sh, sw), "padding": l.padding, "out_size": size})
    return b.activation(x, l.activation, l, f"{name}_act", name)


def _depthwise(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    k = _w(l.kernel)  # KH KW C M
    kh, kw, c, m = k.shape
    w = b.const(f"{name}/kernel", k.reshape(1, kh, kw, c * m))
    bias = [b.const(f"{name}/bias", _w(l.bias))] if l.use_bias else []
    x = b.op(OpKind.DEPTHWISE_CONV2D, [ins[0], w] + bias, name, name,
             {"strides": tuple(l.strides), "padding": l.padding, "dilation": tuple(l.dilation_rate),
              "depth_multiplier": int(l.depth_multiplier)})
    return b.activation(x, l.activation, l, f"{name}_act", name)


def _dense(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    w = b.const(f"{name}/kernel", _w(l.kernel).T)
    bias = [b.const(f"{name}/bias", _w(l.bias))] if l.use_bias else []
    x = b.op(OpKind.DENSE, [ins[0], w] + bias, name, name)
    return b.activation(x, l.activation, l, f"{name}_act", name)


def _batchnorm(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    rank = len(b.g.tensors[ins[0]].shape)
    axes = l.axis if isinstance(l.axis, (list, tuple)) else [l.axis]
    if [a % rank for a in axes] != [rank - 1]:
        raise UnsupportedLayerError(f"layer {name!r} (BatchNormalization) normalises axis {l.axis}; "
                                    "only the last (channel) axis is supported")
    c = b.g.tensors[ins[0]].shape[-1]
    gamma = _w(l.gamma) if l.gamma is not None else np.ones(c, np.float32)
    beta = _w(l.beta) if l.beta is not None else np.zeros(c, np.float32)
    consts = [b.const(f"{name}/{n}", v) for n, v in
              (("gamma", gamma), ("beta", beta), ("mean", _w(l.moving_mean)), ("variance", _w(l.moving_variance)))]
    return b.op(OpKind.BATCH_NORM, [ins[0]] + consts, name, name, {"epsilon": float(l.epsilon)})


def _layernorm(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    """LayerNormalization over the last axis, lowered into the op chain TFLite's converter writes (MEAN,
    SQUARED_DIFFERENCE, MEAN, ADD epsilon, RSQRT, MUL gamma, NEG, MUL, ADD beta, MUL, ADD; ir/layernorm.py)."""
    x = ins[0]
    rank = len(b.g.tensors[x].shape)
    axes = l.axis if isinstance(l.axis, (list, tuple)) else [l.axis]
    if [int(a) % rank for a in axes] != [rank - 1]:
        raise UnsupportedLayerError(f"layer {name!r} (LayerNormalization) normalises axis {l.axis}; "
                                    "only the last axis is supported")
    if getattr(l, "rms_scaling", False):
        raise UnsupportedLayerError(f"layer {name!r} (LayerNormalization) uses rms_scaling=True; not supported")
    mean = b.op(OpKind.MEAN, [x], f"{name}/mean", name)
    sq = b.op(OpKind.SQUARED_DIFFERENCE, [x, mean], f"{name}/squared_difference", name)
    var = b.op(OpKind.MEAN, [sq], f"{name}/variance", name)
    eps = b.const(f"{name}/epsilon", np.array([l.epsilon], np.float32))
    r = b.op(OpKind.RSQRT, [b.op(OpKind.ADD, [var, eps], f"{name}/add", name)], f"{name}/rsqrt", name)
    if l.gamma is not None:
        r = b.op(OpKind.MUL, [r, b.const(f"{name}/gamma", _w(l.gamma))], f"{name}/mul", name)
    shift = b.op(OpKind.MUL, [b.op(OpKind.NEG, [mean], f"{name}/neg", name), r], f"{name}/mul_1", name)
    if l.beta is not None:
        shift = b.op(OpKind.ADD, [shift, b.const(f"{name}/beta", _w(l.beta))], f"{name}/add_1", name)
    return b.op(OpKind.ADD, [b.op(OpKind.MUL, [x, r], f"{name}/mul_2", name), shift], name, name)


def _relu(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    mx = None if l.max_value is None else float(l.max_value)
    slope = float(getattr(l, "negative_slope", 0.0) or 0.0)
    thr = float(getattr(l, "threshold", 0.0) or 0.0)
    if thr == 0.0 and slope == 0.0 and mx is None:
        return b.op(OpKind.RELU, ins, name, name)
    if thr == 0.0 and slope == 0.0 and mx == 6.0:
        return b.op(OpKind.RELU6, ins, name, name)
    if thr == 0.0 and mx is None and slope > 0:
        return b.op(OpKind.LEAKY_RELU, ins, name, name, {"alpha": slope})
    raise UnsupportedLayerError(f"layer {name!r} (ReLU) with max_value={mx}, negative_slope={slope}, "
                                f"threshold={thr} is not supported (plain ReLU, ReLU(6) or leaky only)")


def _leaky(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    alpha = getattr(l, "negative_slope", None)
    alpha = getattr(l, "alpha", 0.3) if alpha is None else alpha
    return b.op(OpKind.LEAKY_RELU, ins, name, name, {"alpha": float(alpha)})


def _elu(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    return b.op(OpKind.ELU, ins, name, name, {"alpha": float(getattr(l, "alpha", 1.0))})


def _prelu(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    """PReLU: alpha has the input's shape without the batch axis, 1 on ``shared_axes`` (as Keras stores it)."""
    alpha = _w(l.alpha)
    want = tuple(b.g.tensors[ins[0]].shape[1:])
    if alpha.ndim > len(want):
        alpha = alpha.reshape(alpha.shape[alpha.ndim - len(want):])
    return b.op(OpKind.PRELU, [ins[0], b.const(f"{name}/alpha", alpha)], name, name)


def _activation(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    out = b.activation(ins[0], l.activation, l, name, name)
    if out == ins[0]:  # linear: keep the layer as an identity so its name survives
        return b.op(OpKind.DROPOUT, ins, name, name)
    return out


def _softmax(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    axis = l.axis if isinstance(l.axis, int) else (l.axis[0] if len(l.axis) == 1 else None)
    rank = len(b.g.tensors[ins[0]].shape)
    if axis is None or axis % rank != rank - 1:
        raise UnsupportedLayerError(f"layer {name!r} (Softmax) over axis {l.axis}: only the last axis is supported")
    return b.op(OpKind.SOFTMAX, ins, name, name)


def _pool(kind: OpKind) -> Callable[[_Builder, Any, list[str], str], str]:
    def conv(b: _Builder, l: Any, ins: list[str], name: str) -> str:
        return b.op(kind, ins, name, name, {"pool_size": tuple(l.pool_size),
                                            "strides": tuple(l.strides or l.pool_size), "padding": l.padding})
    return conv


def _global(kind: OpKind) -> Callable[[_Builder, Any, list[str], str], str]:
    def conv(b: _Builder, l: Any, ins: list[str], name: str) -> str:
        return b.op(kind, ins, name, name, {"keepdims": bool(getattr(l, "keepdims", False))})
    return conv


def _flatten(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    return b.op(OpKind.FLATTEN, ins, name, name)


def _reshape(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    return b.op(OpKind.RESHAPE, ins, name, name, {"shape": tuple(int(d) for d in l.target_shape)})


def _binary(kind: OpKind) -> Callable[[_Builder, Any, list[str], str], str]:
    def conv(b: _Builder, l: Any, ins: list[str], name: str) -> str:
        x = ins[0]
        for i, y in enumerate(ins[1:]):
            last = i == len(ins) - 2
            x = b.op(kind, [x, y], name if last else f"{name}_{i}", name)
        return x
    return conv


def _subtract(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    return b.op(OpKind.SUB, ins, name, name)


_RESIZE_KINDS = {"nearest": OpKind.RESIZE_NEAREST, "bilinear": OpKind.RESIZE_BILINEAR}


def _upsampling(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    """UpSampling2D: TF's resize (half-pixel centres), nearest or bilinear (RESIZE_BILINEAR, as the converter)."""
    kind = _RESIZE_KINDS.get(getattr(l, "interpolation", "nearest"))
    if kind is None:
        raise UnsupportedLayerError(f"layer {name!r} (UpSampling2D) uses interpolation {l.interpolation!r}; "
                                    "only 'nearest' and 'bilinear' are supported")
    _, h, w, _ = b.g.tensors[ins[0]].shape
    fh, fw = (int(v) for v in l.size)
    return b.op(kind, ins, name, name, {"size": (h * fh, w * fw), "half_pixel_centers": True})


def _resizing(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    """Keras Resizing, nearest or bilinear (no antialiasing): TF's resize (half-pixel centres), no crop or pad."""
    kind = _RESIZE_KINDS.get(l.interpolation)
    if kind is None or getattr(l, "crop_to_aspect_ratio", False) or getattr(l, "pad_to_aspect_ratio", False) \
            or getattr(l, "antialias", False):
        raise UnsupportedLayerError(f"layer {name!r} (Resizing): only interpolation 'nearest' or 'bilinear' without "
                                    "cropping, padding or antialiasing is supported")
    return b.op(kind, ins, name, name, {"size": (int(l.height), int(l.width)), "half_pixel_centers": True})


def _normalization(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    """Keras Normalization as a per-channel affine (RESCALE): (x - mean) / max(sqrt(var), eps), or its inverse."""
    import keras

    shape = b.g.tensors[ins[0]].shape
    c = shape[-1]
    axes = tuple(a % len(shape) for a in (l.axis if isinstance(l.axis, (list, tuple)) else (l.axis,)))
    if axes != (len(shape) - 1,):
        raise UnsupportedLayerError(f"layer {name!r} (Normalization) normalises axis {l.axis}; only the last "
                                    "(channel) axis is supported")
    mean = np.broadcast_to(_w(l.mean).reshape(-1), (c,)).astype(np.float64)
    std = np.maximum(np.sqrt(np.broadcast_to(_w(l.variance).reshape(-1), (c,)).astype(np.float64)),
                     keras.backend.epsilon())
    scale, offset = (std, mean) if getattr(l, "invert", False) else (1.0 / std, -mean / std)
    return b.op(OpKind.RESCALE, ins, name, name, {"scale": tuple(float(v) for v in scale),
                                                  "offset": tuple(float(v) for v in offset)})


def _permute(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    return b.op(OpKind.TRANSPOSE, ins, name, name, {"perm": (0,) + tuple(int(d) for d in l.dims)})


def _cropping(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    """Cropping2D / Cropping1D: one slice op per cropped axis (rows, then columns)."""
    crops = [tuple(int(v) for v in c) for c in (l.cropping if type(l).__name__ == "Cropping2D" else [l.cropping])]
    x = ins[0]
    cuts = [(axis, c) for axis, c in enumerate(crops, start=1) if c != (0, 0)]
    if not cuts:
        return b.op(OpKind.DROPOUT, ins, name, name)
    for i, (axis, (lo, hi)) in enumerate(cuts):
        n = b.g.tensors[x].shape[axis] - lo - hi
        x = b.op(OpKind.SLICE, [x], name if i == len(cuts) - 1 else f"{name}_axis{axis}", name,
                 {"axis": axis, "begin": lo, "length": n})
    return x


def _concat(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    return b.op(OpKind.CONCAT, ins, name, name, {"axis": int(l.axis)})


def _zeropad(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    (t, bt), (lf, r) = l.padding
    return b.op(OpKind.PAD, ins, name, name, {"paddings": ((int(t), int(bt)), (int(lf), int(r)))})


def _dropout(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    return b.op(OpKind.DROPOUT, ins, name, name, {"rate": float(getattr(l, "rate", 0.0))})


def _rescaling(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    def val(v: Any) -> Any:
        a = np.asarray(v, dtype=np.float64).reshape(-1)
        return float(a[0]) if a.size == 1 else tuple(float(x) for x in a)
    return b.op(OpKind.RESCALE, ins, name, name, {"scale": val(l.scale), "offset": val(l.offset)})


def _separable(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    """SeparableConv2D = DepthwiseConv2D (no bias) then a 1x1 Conv2D with the layer's bias."""
    dk, pk = _w(l.depthwise_kernel), _w(l.pointwise_kernel)  # KH KW C M, 1 1 C*M F
    kh, kw, c, m = dk.shape
    if l.padding not in ("same", "valid"):
        raise UnsupportedLayerError(f"layer {name!r} (SeparableConv2D) uses padding {l.padding!r}")
    dw = b.const(f"{name}/depthwise_kernel", dk.reshape(1, kh, kw, c * m))
    x = b.op(OpKind.DEPTHWISE_CONV2D, [ins[0], dw], f"{name}_dw", name,
             {"strides": tuple(l.strides), "padding": l.padding, "dilation": tuple(l.dilation_rate),
              "depth_multiplier": int(m)})
    pw = b.const(f"{name}/pointwise_kernel", pk.transpose(3, 0, 1, 2))
    bias = [b.const(f"{name}/bias", _w(l.bias))] if l.use_bias else []
    x = b.op(OpKind.CONV2D, [x, pw] + bias, name, name,
             {"strides": (1, 1), "padding": "valid", "dilation": (1, 1), "groups": 1})
    return b.activation(x, l.activation, l, f"{name}_act", name)


# ---- 1-D layers: run as 2-D ops on [N, 1, L, C] between channel-preserving reshapes ----------
def _rank3(b: _Builder, x: str, name: str, cls: str) -> tuple[int, int]:
    shape = b.g.tensors[x].shape
    if len(shape) != 3:
        raise UnsupportedLayerError(f"layer {name!r} ({cls}) needs a [steps, channels] input, got {shape[1:]}")
    return int(shape[1]), int(shape[2])


def _as_2d(b: _Builder, x: str, name: str, cls: str) -> str:
    steps, ch = _rank3(b, x, name, cls)
    return b.op(OpKind.RESHAPE, [x], f"{name}_2d", name, {"shape": (1, steps, ch)})


def _as_1d(b: _Builder, x: str, name: str) -> str:
    _, h, w, c = b.g.tensors[x].shape
    return b.op(OpKind.RESHAPE, [x], name, name, {"shape": (h * w, c)})


def _causal_pad(b: _Builder, l: Any, x: str, name: str, kernel: int) -> tuple[str, str]:
    if l.padding != "causal":
        if l.padding not in ("same", "valid"):
            raise UnsupportedLayerError(f"layer {name!r} ({type(l).__name__}) uses padding {l.padding!r}")
        return x, l.padding
    left = int(l.dilation_rate[0]) * (kernel - 1)
    if left == 0:
        return x, "valid"
    return b.op(OpKind.PAD, [x], f"{name}_causal_pad", name, {"paddings": ((0, 0), (left, 0))}), "valid"


def _conv1d(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    k = _w(l.kernel)  # K I/g O
    groups = int(getattr(l, "groups", 1))
    _, cin = _rank3(b, ins[0], name, "Conv1D")
    x, padding = _causal_pad(b, l, _as_2d(b, ins[0], name, "Conv1D"), name, k.shape[0])
    bias = [b.const(f"{name}/bias", _w(l.bias))] if l.use_bias else []
    common = {"strides": (1, int(l.strides[0])), "padding": padding, "dilation": (1, int(l.dilation_rate[0]))}
    if groups > 1 and groups == cin == l.filters:
        w = b.const(f"{name}/kernel", k.reshape(1, 1, k.shape[0], cin))
        x = b.op(OpKind.DEPTHWISE_CONV2D, [x, w] + bias, f"{name}_conv", name, {**common, "depth_multiplier": 1})
    else:
        w = b.const(f"{name}/kernel", k.transpose(2, 0, 1)[:, None])  # O 1 K I/g
        x = b.op(OpKind.CONV2D, [x, w] + bias, f"{name}_conv", name, {**common, "groups": groups})
    return _as_1d(b, b.activation(x, l.activation, l, f"{name}_act", name), name)


def _depthwise1d(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    k = _w(l.kernel)  # K C M
    kk, c, m = k.shape
    x, padding = _causal_pad(b, l, _as_2d(b, ins[0], name, "DepthwiseConv1D"), name, kk)
    w = b.const(f"{name}/kernel", k.reshape(1, 1, kk, c * m))
    bias = [b.const(f"{name}/bias", _w(l.bias))] if l.use_bias else []
    x = b.op(OpKind.DEPTHWISE_CONV2D, [x, w] + bias, f"{name}_conv", name,
             {"strides": (1, int(l.strides[0])), "padding": padding, "dilation": (1, int(l.dilation_rate[0])),
              "depth_multiplier": int(m)})
    return _as_1d(b, b.activation(x, l.activation, l, f"{name}_act", name), name)


def _separable1d(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    """SeparableConv1D = the depthwise 1-D convolution (no bias) then a 1x1 convolution with the layer's bias."""
    dk, pk = _w(l.depthwise_kernel), _w(l.pointwise_kernel)  # K C M, 1 C*M F
    kk, c, m = dk.shape
    x, padding = _causal_pad(b, l, _as_2d(b, ins[0], name, "SeparableConv1D"), name, kk)
    dw = b.const(f"{name}/depthwise_kernel", dk.reshape(1, 1, kk, c * m))
    x = b.op(OpKind.DEPTHWISE_CONV2D, [x, dw], f"{name}_dw", name,
             {"strides": (1, int(l.strides[0])), "padding": padding, "dilation": (1, int(l.dilation_rate[0])),
              "depth_multiplier": int(m)})
    pw = b.const(f"{name}/pointwise_kernel", pk.transpose(2, 0, 1)[:, None])  # F 1 1 C*M
    bias = [b.const(f"{name}/bias", _w(l.bias))] if l.use_bias else []
    x = b.op(OpKind.CONV2D, [x, pw] + bias, f"{name}_conv", name,
             {"strides": (1, 1), "padding": "valid", "dilation": (1, 1), "groups": 1})
    return _as_1d(b, b.activation(x, l.activation, l, f"{name}_act", name), name)


def _pool1d(kind: OpKind) -> Callable[[_Builder, Any, list[str], str], str]:
    def conv(b: _Builder, l: Any, ins: list[str], name: str) -> str:
        x = _as_2d(b, ins[0], name, type(l).__name__)
        stride = l.strides or l.pool_size
        x = b.op(kind, [x], f"{name}_pool", name, {"pool_size": (1, int(l.pool_size[0])),
                                                   "strides": (1, int(stride[0])), "padding": l.padding})
        return _as_1d(b, x, name)
    return conv


def _global1d(kind: OpKind) -> Callable[[_Builder, Any, list[str], str], str]:
    def conv(b: _Builder, l: Any, ins: list[str], name: str) -> str:
        x = _as_2d(b, ins[0], name, type(l).__name__)
        if not getattr(l, "keepdims", False):
            return b.op(kind, [x], name, name, {"keepdims": False})
        x = b.op(kind, [x], f"{name}_pool", name, {"keepdims": True})
        return b.op(OpKind.RESHAPE, [x], name, name, {"shape": (1, b.g.tensors[x].shape[-1])})
    return conv


def _zeropad1d(b: _Builder, l: Any, ins: list[str], name: str) -> str:
    left, right = (int(v) for v in l.padding)
    x = _as_2d(b, ins[0], name, "ZeroPadding1D")
    return _as_1d(b, b.op(OpKind.PAD, [x], f"{name}_pad", name, {"paddings": ((0, 0), (left, right))}), name)


# ---- keras.ops calls in functional models (Keras 3 records `x + 3.0` as an operation, not a layer) ----
_ARITH = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply", "TrueDivide": "divide", "Divide": "divide"}


def _const_value(v: Any, channels: int) -> float | tuple[float, ...] | None:
    """A constant operand as a scalar or a per-channel tuple; None if it broadcasts otherwise."""
    a = np.asarray(v, dtype=np.float64)
    if a.size == 1:
        return float(a.reshape(-1)[0])
    if a.shape[-1] == channels and a.size == channels:
        return tuple(float(x) for x in a.reshape(-1))
    return None


def _operation(b: _Builder, node: Any, name: str) -> str:
    """Elementwise add/subtract/multiply/divide: two tensors -> ADD/MUL, a tensor and a constant -> RESCALE."""
    import keras

    op = type(node.operation).__name__
    args, kwargs = node.arguments.args, node.arguments.kwargs
    kind = _ARITH.get(op)
    if kind is None or len(args) != 2 or kwargs:
        raise UnsupportedLayerError(
            f"operation {name!r} ({op}) is not supported; supported keras.ops calls between layers: "
            f"{', '.join(sorted(_ARITH))} of two tensors or of a tensor and a constant")
    tensors = [isinstance(a, keras.KerasTensor) for a in args]
    if all(tensors):
        if kind not in ("add", "multiply", "subtract"):
            raise UnsupportedLayerError(f"operation {name!r} ({op}) of two tensors is not supported "
                                        "(add, multiply, subtract)")
        ins = [b.names[id(a)] for a in args]
        return b.op({"add": OpKind.ADD, "multiply": OpKind.MUL, "subtract": OpKind.SUB}[kind], ins, name, name)
    x = b.names[id(args[tensors.index(True)])]
    c = _const_value(args[tensors.index(False)], b.g.tensors[x].shape[-1])
    first = not tensors[0]  # the constant is the left operand
    if c is None or (kind == "divide" and first):
        raise UnsupportedLayerError(f"operation {name!r} ({op}) with a constant of shape "
                                    f"{np.shape(args[tensors.index(False)])} is not supported (scalar or per-channel; "
                                    "no constant divided by a tensor)")
    arr = np.asarray(c, np.float64)
    scale, offset = {"add": (1.0, arr), "multiply": (arr, 0.0), "divide": (1.0 / arr, 0.0),
                     "subtract": (-1.0, arr) if first else (1.0, -arr)}[kind]

    def val(v: Any) -> Any:
        a = np.asarray(v, np.float64).reshape(-1)
        return float(a[0]) if a.size == 1 else tuple(float(t) for t in a)
    return b.op(OpKind.RESCALE, [x], name, name, {"scale": val(scale), "offset": val(offset)})


_CONVERTERS: dict[str, Callable[[_Builder, Any, list[str], str], str]] = {
    "Conv2D": _conv2d, "DepthwiseConv2D": _depthwise, "Dense": _dense, "BatchNormalization": _batchnorm,
    "LayerNormalization": _layernorm,
    "ReLU": _relu, "LeakyReLU": _leaky, "PReLU": _prelu, "ELU": _elu, "Activation": _activation, "Softmax": _softmax,
    "MaxPooling2D": _pool(OpKind.MAX_POOL2D), "AveragePooling2D": _pool(OpKind.AVG_POOL2D),
    "GlobalAveragePooling2D": _global(OpKind.GLOBAL_AVG_POOL), "GlobalMaxPooling2D": _global(OpKind.GLOBAL_MAX_POOL),
    "Flatten": _flatten, "Reshape": _reshape, "Add": _binary(OpKind.ADD), "Multiply": _binary(OpKind.MUL),
    "Subtract": _subtract, "Maximum": _binary(OpKind.MAXIMUM), "Minimum": _binary(OpKind.MINIMUM),
    "UpSampling2D": _upsampling, "Normalization": _normalization, "Resizing": _resizing, "Permute": _permute,
    "Conv2DTranspose": _conv2d_transpose, "Cropping2D": _cropping, "Cropping1D": _cropping,
    "Concatenate": _concat, "ZeroPadding2D": _zeropad, "Dropout": _dropout, "SpatialDropout2D": _dropout,
    "GaussianNoise": _dropout, "GaussianDropout": _dropout, "Rescaling": _rescaling, "InputLayer": _dropout,
    "SeparableConv2D": _separable, "SeparableConv1D": _separable1d, "Conv1D": _conv1d, "DepthwiseConv1D": _depthwise1d,
    "MaxPooling1D": _pool1d(OpKind.MAX_POOL2D), "AveragePooling1D": _pool1d(OpKind.AVG_POOL2D),
    "GlobalAveragePooling1D": _global1d(OpKind.GLOBAL_AVG_POOL),
    "GlobalMaxPooling1D": _global1d(OpKind.GLOBAL_MAX_POOL), "ZeroPadding1D": _zeropad1d,
    **RECURRENT_CONVERTERS,
    "LSTM": convert_lstm, "Bidirectional": bidirectional,
}
SUPPORTED_LAYERS = tuple(sorted(_CONVERTERS))


def graph_from_keras_model(model: Any, name: str | None = None) -> Graph:
    """Lower an in-memory Keras model to a verified float IR graph."""
    from ...ir.verify import verify

    g = Graph(name or model.name)
    inputs = []
    for i, kt in enumerate(model.inputs):
        shape = tuple(kt.shape)
        if any(d is None for d in shape[1:]):
            raise UnsupportedLayerError(f"model input {i} has an unknown dimension {shape}; give a fixed input shape")
        base = getattr(kt, "name", None) or f"input_{i}"
        inputs.append(g.add_input(g.unique_tensor_name(base), (1,) + tuple(int(d) for d in shape[1:])).name)
    b = _Builder(g)
    g.outputs = b.model(model, inputs, "")
    for i, out in enumerate(g.outputs):
        if out in g.inputs:
            raise UnsupportedLayerError(f"model output {i} is its input: nothing to compile")
    verify(g)
    return g


_DESERIALIZING = re.compile(r"deserializing class '([\w.>]+)' using config=\{'name': '([^']*)'")


def _shorten(text: str, limit: int) -> str:
    """``text`` up to ``limit`` characters, cut at a sentence (or word) end, never mid-word."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = cut.rfind(". ")
    return cut[:end + 1] if end > limit // 3 else cut.rsplit(" ", 1)[0] + " ..."


def _lambda_layers(path: Path) -> list[str]:
    """Names of the Lambda layers in a .keras / .h5 model's config (read without running any code)."""
    import json

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                config = json.loads(z.read("config.json"))
        else:
            import h5py

            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
                config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except Exception:  # unreadable config: the caller reports the original error
        return []
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda" and isinstance(node.get("config"), dict):
                names.append(str(node["config"].get("name")))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(config)
    return list(dict.fromkeys(names))


def _check_file(path: str) -> Path:
    """The checks every Keras file passes before anything reads it (existence, format, zip sizes)."""
    p = Path(path)
    if not p.exists():
        raise TinyccError(f"{path}: no such file")
    if p.suffix.lower() == ".keras" and not zipfile.is_zipfile(p):
        raise TinyccError(f"{path}: not a .keras file (expected a zip archive)")
    if zipfile.is_zipfile(p):
        check_zip_sizes(p)  # declared sizes first: nothing is unpacked from a zip bomb
    if p.suffix.lower() == ".h5":
        with open(p, "rb") as f:
            if f.read(8) != b"\x89HDF\r\n\x1a\n":
                raise TinyccError(f"{path}: not an HDF5 file")
    return p


def _load_keras(path: str) -> Any:
    import keras

    p = _check_file(path)
    try:
        with tempfile.TemporaryDirectory(prefix="tinycc-keras2-") as tmp:
            src = repaired_copy(p, Path(tmp)) or p  # Keras 2 configs repaired for Keras 3
            return keras.models.load_model(str(src), compile=False, safe_mode=True)
    except UnsupportedLayerError as e:
        raise UnsupportedLayerError(f"{path}: {e}") from None
    except Exception as e:  # Keras/h5py raise many types for corrupt or foreign files
        full = " ".join(str(e).split())
        where = _DESERIALIZING.search(full)
        if where and "Exception encountered:" in full:  # name the layer, not its whole config
            reason = _shorten(full.split("Exception encountered:")[-1].strip(), 200)
            raise TinyccError(f"{path}: cannot read layer {where.group(2)!r} ({where.group(1)}): {reason}") from None
        lambdas = _lambda_layers(p) if "Lambda" in full else []
        if lambdas:
            raise UnsupportedLayerError(
                f"{path}: Lambda layer{'s' if len(lambdas) > 1 else ''} {', '.join(map(repr, lambdas))} "
                "(Python code in the model): tinycc does not load Python code (Keras safe mode) and cannot compile "
                "it; replace the Lambda with built-in Keras layers") from None
        msg = _shorten(full, 200) or type(e).__name__
        if "Unknown layer" in msg or "Could not locate class" in msg:
            raise UnsupportedLayerError(f"{path}: {msg}") from None
        raise TinyccError(f"{path}: cannot read the Keras model ({type(e).__name__}: {msg})") from None


def load_keras_file(path: str, direct: bool = True) -> Graph:
    """The float IR of a `.h5`/`.keras` file: read directly (config and weights, no TensorFlow) where
    ``keras_direct`` covers the model, else through Keras. ``direct=False``: always through Keras."""
    from .keras_direct import NotCovered, load_direct

    _check_file(path)
    if direct:
        try:
            return load_direct(path, Path(path).stem)
        except NotCovered as e:
            log.info("%s: read through Keras (%s)", Path(path).name, e)
        except (OSError, ValueError, KeyError, TypeError, UnsupportedLayerError, IRError) as e:
            log.info("%s: read through Keras (%s: %s)", Path(path).name, type(e).__name__, e)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return graph_from_keras_model(_load_keras(path), Path(path).stem)


class KerasFrontend:
    """Frontend for `.h5` and `.keras` model files."""

    name = "keras"
    extensions = (".h5", ".keras")

    def supported_ops(self) -> list[tuple[str, str, list[str]]]:
        """What ``tinycc ops`` lists: (what, dtypes, names)."""
        return [("layers", "float32", list(SUPPORTED_LAYERS)),
                ("activations (activation= and Activation layers)", "float32", sorted(_ACTIVATIONS))]

    def load(self, path: str) -> Graph:
        g = load_keras_file(path)
        g.meta["source"] = {"format": "keras", "path": Path(path).name}
        return g


@hookimpl
def tinycc_register_frontends(registry: Any) -> None:
    registry.add_frontend(KerasFrontend())
