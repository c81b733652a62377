"""Op kinds of the tinycc IR: attribute schemas and shape inference.

Layouts are TFLite's: activations NHWC; Conv2D and TransposeConv2D weights ``[O, KH, KW, I/groups]``;
DepthwiseConv2D weights ``[1, KH, KW, C*M]``; Dense weights ``[O, I]``; biases ``[O]``.
Activations are separate ops after import; the ``fuse_activations`` pass folds
ReLU/ReLU6 into the ``activation`` attribute of Conv2D/DepthwiseConv2D/Dense/Add/Mul/Sub.
``slice`` takes ``length`` elements from ``begin`` along one ``axis`` (one output of TFLite's SPLIT/SPLIT_V).
``resize_nearest`` is TFLite's RESIZE_NEAREST_NEIGHBOR (``size`` = output height, width); ``resize_bilinear`` its
RESIZE_BILINEAR (same attributes; ``align_corners`` and ``half_pixel_centers`` not both, as TFLite requires).
``prelu`` takes ``x`` and a constant ``alpha`` shaped like ``x`` without its batch axis (1 on Keras's shared axes).
``elu``/``gelu`` run in int8 as a 256-entry table (``lut.py``; ``float_path``: the converter's DEQUANTIZE, float ELU,
QUANTIZE); so do ``softplus``, ``softsign``, ``selu``, ``mish`` and ``exponential`` (``LUT_KINDS``).
``mean`` is TFLite's MEAN over the last axis (keepdims); with ``squared_difference``, ``rsqrt`` and ``neg`` (int8 as
256-entry tables) it forms a layer normalization (``layernorm.py``).
``gru`` and ``simple_rnn`` are Keras's recurrent layers (layouts and integer form: ``recurrent.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

from .recurrent import gru_shape, simple_rnn_shape

Shape = tuple[int, ...]


class OpKind(str, Enum):
    CONV2D = "conv2d"
    DEPTHWISE_CONV2D = "depthwise_conv2d"
    DENSE = "dense"
    BATCH_NORM = "batch_norm"
    RELU = "relu"
    RELU6 = "relu6"
    LEAKY_RELU = "leaky_relu"
    SIGMOID = "sigmoid"
    HARD_SIGMOID = "hard_sigmoid"
    TANH = "tanh"
    SWISH = "swish"
    HARD_SWISH = "hard_swish"
    SOFTMAX = "softmax"
    MAX_POOL2D = "max_pool2d"
    AVG_POOL2D = "avg_pool2d"
    GLOBAL_AVG_POOL = "global_avg_pool"
    GLOBAL_MAX_POOL = "global_max_pool"
    FLATTEN = "flatten"
    RESHAPE = "reshape"
    ADD = "add"
    MUL = "mul"
    SUB = "sub"
    MAXIMUM = "maximum"
    MINIMUM = "minimum"
    RESIZE_NEAREST = "resize_nearest"
    RESIZE_BILINEAR = "resize_bilinear"
    TRANSPOSE = "transpose"
    SLICE = "slice"
    TRANSPOSE_CONV2D = "transpose_conv2d"
    CONCAT = "concat"
    PAD = "pad"
    DROPOUT = "dropout"
    RESCALE = "rescale"
    QUANTIZE = "quantize"
    DEQUANTIZE = "dequantize"
    GRU = "gru"
    SIMPLE_RNN = "simple_rnn"
    LSTM = "lstm"
    SVDF = "svdf"
    PRELU = "prelu"
    ELU = "elu"
    GELU = "gelu"
    SOFTPLUS = "softplus"
    SOFTSIGN = "softsign"
    SELU = "selu"
    MISH = "mish"
    EXPONENTIAL = "exponential"
    REVERSE = "reverse"
    MEAN = "mean"
    SQUARED_DIFFERENCE = "squared_difference"
    RSQRT = "rsqrt"
    NEG = "neg"


FUSABLE_ACTIVATIONS = ("none", "relu", "relu6")
# activations without a TFLite int8 builtin that tinycc runs as a 256-entry int8 table (lut.py), like ELU/GELU
MORE_LUT_KINDS = (OpKind.SOFTPLUS, OpKind.SOFTSIGN, OpKind.SELU, OpKind.MISH, OpKind.EXPONENTIAL)
LUT_KINDS = (OpKind.ELU, OpKind.GELU, OpKind.RSQRT, OpKind.NEG) + MORE_LUT_KINDS
ELEMENTWISE_UNARY = {
    OpKind.RELU, OpKind.RELU6, OpKind.LEAKY_RELU, OpKind.SIGMOID, OpKind.HARD_SIGMOID,
    OpKind.TANH, OpKind.SWISH, OpKind.HARD_SWISH, OpKind.DROPOUT, OpKind.RESCALE, *LUT_KINDS,
}


class ShapeError(ValueError):
    """Raised by shape inference; the caller adds the op name."""


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def conv_out_size(size: int, k: int, stride: int, dilation: int, padding: str) -> int:
    eff = (k - 1) * dilation + 1
    if padding == "same":
        return (size + stride - 1) // stride
    if padding == "valid":
        return (size - eff) // stride + 1
    raise ShapeError(f"unknown padding {padding!r}")


def same_padding(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite/Keras 'same' padding: (before, after); the extra pixel goes after."""
    eff = (k - 1) * dilation + 1
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def broadcast_shapes(a: Shape, b: Shape) -> Shape:
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise ShapeError(f"shapes {a} and {b} do not broadcast")
        out.append(max(x, y))
    return tuple(out)


def _same(shapes: list[Shape], attrs: dict) -> list[Shape]:
    return [shapes[0]]


def _conv(shapes: list[Shape], attrs: dict) -> list[Shape]:
    x, w = shapes[0], shapes[1]
    if len(x) != 4 or len(w) != 4:
        raise ShapeError(f"conv2d needs 4-D input and weights, got {x} and {w}")
    groups = attrs["groups"]
    if x[3] != w[3] * groups:
        raise ShapeError(f"input channels {x[3]} != weight channels {w[3]} x groups {groups}")
    if w[0] % groups:
        raise ShapeError(f"filters {w[0]} not divisible by groups {groups}")
    sh, sw = attrs["strides"]
    dh, dw = attrs["dilation"]
    oh = conv_out_size(x[1], w[1], sh, dh, attrs["padding"])
    ow = conv_out_size(x[2], w[2], sw, dw, attrs["padding"])
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"kernel larger than input {x}")
    return [(x[0], oh, ow, w[0])]


def _dwconv(shapes: list[Shape], attrs: dict) -> list[Shape]:
    x, w = shapes[0], shapes[1]
    m = attrs["depth_multiplier"]
    if len(x) != 4 or len(w) != 4 or w[0] != 1 or w[3] != x[3] * m:
        raise ShapeError(f"depthwise weights {w} do not match input {x} x multiplier {m}")
    sh, sw = attrs["strides"]
    dh, dw = attrs["dilation"]
    oh = conv_out_size(x[1], w[1], sh, dh, attrs["padding"])
    ow = conv_out_size(x[2], w[2], sw, dw, attrs["padding"])
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"kernel larger than input {x}")
    return [(x[0], oh, ow, w[3])]


def _dense(shapes: list[Shape], attrs: dict) -> list[Shape]:
    x, w = shapes[0], shapes[1]
    if len(w) != 2 or x[-1] != w[1]:
        raise ShapeError(f"dense weights {w} do not match input features {x[-1]}")
    return [tuple(x[:-1]) + (w[0],)]


def _pool(shapes: list[Shape], attrs: dict) -> list[Shape]:
    x = shapes[0]
    if len(x) != 4:
        raise ShapeError(f"pooling needs a 4-D input, got {x}")
    ph, pw = attrs["pool_size"]
    sh, sw = attrs["strides"]
    oh = conv_out_size(x[1], ph, sh, 1, attrs["padding"])
    ow = conv_out_size(x[2], pw, sw, 1, attrs["padding"])
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"pool window larger than input {x}")
    return [(x[0], oh, ow, x[3])]


def _global_pool(shapes: list[Shape], attrs: dict) -> list[Shape]:
    x = shapes[0]
    if len(x) != 4:
        raise ShapeError(f"global pooling needs a 4-D input, got {x}")
    return [(x[0], 1, 1, x[3]) if attrs["keepdims"] else (x[0], x[3])]


def _flatten(shapes: list[Shape], attrs: dict) -> list[Shape]:
    x = shapes[0]
    return [(x[0], math.prod(x[1:]))]


def _reshape(shapes: list[Shape], attrs: dict) -> list[Shape]:
    x = shapes[0]
    target = list(attrs["shape"])
    n = math.prod(x[1:])
    if target.count(-1) > 1:
        raise ShapeError("reshape allows at most one -1")
    if -1 in target:
        known = math.prod(d for d in target if d != -1)
        if known == 0 or n % known:
            raise ShapeError(f"cannot reshape {x} to {target}")
        target[target.index(-1)] = n // known
    if math.prod(target) != n:
        raise ShapeError(f"cannot reshape {x} to {tuple(target)}")
    return [(x[0],) + tuple(target)]


def _broadcast(shapes: list[Shape], attrs: dict) -> list[Shape]:
    return [broadcast_shapes(shapes[0], shapes[1])]


def _concat(shapes: list[Shape], attrs: dict) -> list[Shape]:
    axis = attrs["axis"]
    first = shapes[0]
    if not 0 < axis < len(first):
        raise ShapeError(f"concat axis {axis} out of range for rank {len(first)}")
    total = 0
    for s in shapes:
        if len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(s, first)) if i != axis):
            raise ShapeError(f"concat inputs {shapes} differ outside axis {axis}")
        total += s[axis]
    out = list(first)
    out[axis] = total
    return [tuple(out)]


def _mean_last(shapes: list[Shape], attrs: dict) -> list[Shape]:
    x = shapes[0]
    if len(x) < 2:
        raise ShapeError(f"mean over the last axis needs a rank-2 or higher input, got {x}")
    return [tuple(x[:-1]) + (1,)]


def _resize(shapes: list[Shape], attrs: dict) -> list[Shape]:
    x = shapes[0]
    if len(x) != 4:
        raise ShapeError(f"resize needs a 4-D input, got {x}")
    oh, ow = attrs["size"]
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"resize to {oh}x{ow}")
    return [(x[0], oh, ow, x[3])]


def _resize_bilinear(shapes: list[Shape], attrs: dict) -> list[Shape]:
    if attrs["align_corners"] and attrs["half_pixel_centers"]:
        raise ShapeError("bilinear resize with both align_corners and half_pixel_centers (TFLite allows one)")
    return _resize(shapes, attrs)


def _transpose(shapes: list[Shape], attrs: dict) -> list[Shape]:
    x, perm = shapes[0], attrs["perm"]
    if sorted(perm) != list(range(len(x))) or perm[0] != 0:
        raise ShapeError(f"transpose permutation {perm} of a rank-{len(x)} tensor must keep the batch axis first")
    return [tuple(x[p] for p in perm)]


def _slice(shapes: list[Shape], attrs: dict) -> list[Shape]:
    x, axis, begin, size = shapes[0], attrs["axis"], attrs["begin"], attrs["length"]
    if not 0 < axis < len(x) or begin < 0 or size <= 0 or begin + size > x[axis]:
        raise ShapeError(f"slice [{begin}, {begin + size}) of axis {axis} is outside {x}")
    return [tuple(size if i == axis else d for i, d in enumerate(x))]


def _reverse(shapes: list[Shape], attrs: dict) -> list[Shape]:
    x, axis = shapes[0], attrs["axis"]
    if not 0 < axis < len(x):
        raise ShapeError(f"reverse along axis {axis} of a rank-{len(x)} tensor (not the batch axis)")
    return [tuple(x)]


def transpose_conv_padding(out_size: int, k: int, stride: int, padding: str) -> int:
    """Rows (columns) TFLite's TRANSPOSE_CONV crops before the output: 'same' padding of a conv from the output."""
    if padding == "valid":
        return 0
    return max(((out_size + stride - 1) // stride - 1) * stride + k - out_size, 0) // 2


def _transpose_conv(shapes: list[Shape], attrs: dict) -> list[Shape]:
    x, w = shapes[0], shapes[1]
    if len(x) != 4 or len(w) != 4 or x[3] != w[3]:
        raise ShapeError(f"transpose_conv2d weights {w} do not match input {x}")
    oh, ow = attrs["out_size"]
    (sh, sw), k = attrs["strides"], w[1:3]
    for o, i, s, kk in ((oh, x[1], sh, k[0]), (ow, x[2], sw, k[1])):
        if conv_out_size(o, kk, s, 1, attrs["padding"]) != i:
            raise ShapeError(f"output size {o} is not a transposed {attrs['padding']} convolution of input size {i}")
    return [(x[0], oh, ow, w[0])]


def _pad(shapes: list[Shape], attrs: dict) -> list[Shape]:
    x = shapes[0]
    (t, b), (l, r) = attrs["paddings"]
    if len(x) != 4:
        raise ShapeError(f"zero padding needs a 4-D input, got {x}")
    return [(x[0], x[1] + t + b, x[2] + l + r, x[3])]


def _lstm(shapes: list[Shape], attrs: dict) -> list[Shape]:
    x, wi, wr = shapes[0], shapes[1], shapes[2]
    units = wr[1] if len(wr) == 2 else 0
    if len(x) != 3 or len(wi) != 2 or len(wr) != 2 or wi != (4 * units, x[2]) or wr != (4 * units, units) \
            or (len(shapes) > 3 and shapes[3] != (4 * units,)):
        raise ShapeError(f"lstm weights {wi}, {wr} do not match input {x} (expected [4H, F], [4H, H], bias [4H])")
    return [(x[0], x[1], units) if attrs["return_sequences"] else (x[0], units)]


def _svdf(shapes: list[Shape], attrs: dict) -> list[Shape]:
    x, wf, wt = shapes[0], shapes[1], shapes[2]
    rank = int(attrs["rank"])
    filters = wf[0] if len(wf) == 2 else 0
    units = filters // rank if rank > 0 else 0
    if len(x) != 2 or len(wf) != 2 or len(wt) != 2 or rank < 1 or filters % rank or wf[1] != x[1] \
            or wt[0] != filters or (len(shapes) > 3 and shapes[3] != (units,)):
        raise ShapeError(f"svdf weights {wf}, {wt} (rank {rank}) do not match input {x} "
                         "(expected [filters, F], [filters, memory], bias [filters / rank])")
    return [(x[0], units)]


def _prelu(shapes: list[Shape], attrs: dict) -> list[Shape]:
    """``alpha`` has the input's shape without the batch axis, 1 on shared axes (leading axes may be dropped)."""
    x, al = shapes[0], shapes[1]
    tail = tuple(x[1:])
    if len(al) > len(tail) or any(a not in (1, d) for a, d in zip(al[::-1], tail[::-1])):
        raise ShapeError(f"prelu alpha {al} does not broadcast to the input {x} without its batch axis")
    return [x]


@dataclass(frozen=True)
class OpDef:
    """Schema of one op kind."""

    kind: OpKind
    min_inputs: int
    max_inputs: int
    shape_fn: Callable[[list[Shape], dict], list[Shape]]
    defaults: dict = field(default_factory=dict)
    weight_inputs: tuple[int, ...] = ()  # indices of inputs that must be constants


_CONV_DEFAULTS = {"strides": (1, 1), "padding": "valid", "dilation": (1, 1), "activation": "none"}
_POOL_DEFAULTS = {"pool_size": (2, 2), "strides": (2, 2), "padding": "valid", "activation": "none"}

OP_DEFS: dict[OpKind, OpDef] = {
    d.kind: d
    for d in [
        OpDef(OpKind.CONV2D, 2, 3, _conv, {**_CONV_DEFAULTS, "groups": 1}, (1, 2)),
        OpDef(OpKind.DEPTHWISE_CONV2D, 2, 3, _dwconv, {**_CONV_DEFAULTS, "depth_multiplier": 1}, (1, 2)),
        OpDef(OpKind.DENSE, 2, 3, _dense, {"activation": "none"}, (1, 2)),
        OpDef(OpKind.BATCH_NORM, 5, 5, _same, {"epsilon": 1e-3}, (1, 2, 3, 4)),
        OpDef(OpKind.RELU, 1, 1, _same),
        OpDef(OpKind.RELU6, 1, 1, _same),
        OpDef(OpKind.LEAKY_RELU, 1, 1, _same, {"alpha": 0.3}),
        OpDef(OpKind.SIGMOID, 1, 1, _same),
        OpDef(OpKind.HARD_SIGMOID, 1, 1, _same),
        OpDef(OpKind.TANH, 1, 1, _same),
        OpDef(OpKind.SWISH, 1, 1, _same),
        OpDef(OpKind.HARD_SWISH, 1, 1, _same),
        OpDef(OpKind.SOFTMAX, 1, 1, _same, {"beta": 1.0}),
        OpDef(OpKind.MAX_POOL2D, 1, 1, _pool, dict(_POOL_DEFAULTS)),
        OpDef(OpKind.AVG_POOL2D, 1, 1, _pool, dict(_POOL_DEFAULTS)),
        OpDef(OpKind.GLOBAL_AVG_POOL, 1, 1, _global_pool, {"keepdims": False, "requantize": False}),
        OpDef(OpKind.GLOBAL_MAX_POOL, 1, 1, _global_pool, {"keepdims": False}),
        OpDef(OpKind.FLATTEN, 1, 1, _flatten),
        OpDef(OpKind.RESHAPE, 1, 1, _reshape, {"shape": ()}),
        OpDef(OpKind.ADD, 2, 2, _broadcast, {"activation": "none"}),
        OpDef(OpKind.MUL, 2, 2, _broadcast, {"activation": "none"}),
        OpDef(OpKind.SUB, 2, 2, _broadcast, {"activation": "none"}),
        OpDef(OpKind.MAXIMUM, 2, 2, _broadcast),
        OpDef(OpKind.MINIMUM, 2, 2, _broadcast),
        OpDef(OpKind.RESIZE_NEAREST, 1, 1, _resize,
              {"size": (1, 1), "align_corners": False, "half_pixel_centers": False}),
        OpDef(OpKind.RESIZE_BILINEAR, 1, 1, _resize_bilinear,
              {"size": (1, 1), "align_corners": False, "half_pixel_centers": False}),
        OpDef(OpKind.TRANSPOSE, 1, 1, _transpose, {"perm": (0,)}),
        OpDef(OpKind.TRANSPOSE_CONV2D, 2, 3, _transpose_conv,
              {"strides": (1, 1), "padding": "valid", "activation": "none", "out_size": (1, 1)}, (1, 2)),
        OpDef(OpKind.SLICE, 1, 1, _slice, {"axis": 1, "begin": 0, "length": 1}),
        OpDef(OpKind.REVERSE, 1, 1, _reverse, {"axis": 1}),
        OpDef(OpKind.MEAN, 1, 1, _mean_last),
        OpDef(OpKind.SQUARED_DIFFERENCE, 2, 2, _broadcast),
        OpDef(OpKind.RSQRT, 1, 1, _same),
        OpDef(OpKind.NEG, 1, 1, _same),
        OpDef(OpKind.CONCAT, 1, 64, _concat, {"axis": -1, "activation": "none"}),
        OpDef(OpKind.PAD, 1, 1, _pad, {"paddings": ((0, 0), (0, 0))}),
        OpDef(OpKind.DROPOUT, 1, 1, _same, {"rate": 0.0}),
        OpDef(OpKind.RESCALE, 1, 1, _same, {"scale": 1.0, "offset": 0.0}),
        OpDef(OpKind.QUANTIZE, 1, 1, _same),
        OpDef(OpKind.DEQUANTIZE, 1, 1, _same),
        OpDef(OpKind.GRU, 5, 5, gru_shape, {"return_sequences": False, "reset_after": True}, (1, 2, 3, 4)),
        OpDef(OpKind.SIMPLE_RNN, 4, 4, simple_rnn_shape, {"return_sequences": False}, (1, 2, 3)),
        OpDef(OpKind.PRELU, 2, 2, _prelu, {}, (1,)),
        OpDef(OpKind.ELU, 1, 1, _same, {"alpha": 1.0, "float_path": False}),
        OpDef(OpKind.GELU, 1, 1, _same, {"approximate": False}),
        *(OpDef(k, 1, 1, _same) for k in MORE_LUT_KINDS),
        OpDef(OpKind.LSTM, 3, 4, _lstm, {"return_sequences": False, "cell_power": 0, "cell_clip": 0.0}, (1, 2, 3)),
        OpDef(OpKind.SVDF, 3, 4, _svdf, {"rank": 1, "activation": "none", "state_scale": 0.0}, (1, 2, 3)),
    ]
}

_PAIR_ATTRS = ("strides", "dilation", "pool_size", "size", "out_size")


def normalize_attrs(kind: OpKind, attrs: dict) -> dict:
    """Fill defaults, canonicalise pairs and tuples; reject unknown attributes."""
    d = OP_DEFS[kind]
    unknown = set(attrs) - set(d.defaults)
    if unknown:
        raise ValueError(f"{kind.value}: unknown attributes {sorted(unknown)}")
    out = {**d.defaults, **attrs}
    for k in _PAIR_ATTRS:
        if k in out:
            out[k] = _pair(out[k])
    if "paddings" in out:
        out["paddings"] = tuple(_pair(p) for p in out["paddings"])
    if "shape" in out:
        out["shape"] = tuple(int(s) for s in out["shape"])
    if "perm" in out:
        out["perm"] = tuple(int(p) for p in out["perm"])
    if "activation" in out and out["activation"] not in FUSABLE_ACTIVATIONS:
        raise ValueError(f"{kind.value}: fused activation must be one of {FUSABLE_ACTIVATIONS}")
    for k in ("scale", "offset"):
        if k in out and isinstance(out[k], (list, tuple)):
            out[k] = tuple(float(v) for v in out[k])
    return out
