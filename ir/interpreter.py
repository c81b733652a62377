"""Float32 reference interpreter: numpy execution of any float IR graph on a batch (NHWC)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import lut, recurrent
from .graph import Graph, IRError, Op
from .ops import MORE_LUT_KINDS, OpKind, same_padding
from .layernorm import rsqrt_float
from .resize_bilinear import resize_bilinear_float

Array = np.ndarray
F32 = np.float32


def _act(x: Array, activation: str) -> Array:
    if activation == "relu":
        return np.maximum(x, F32(0))
    if activation == "relu6":
        return np.clip(x, F32(0), F32(6))
    return x


def _pad_input(x: Array, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, padding: str,
               value: float = 0.0) -> Array:
    if padding != "same":
        return x
    pt, pb = same_padding(x.shape[1], kh, sh, dh)
    pl, pr = same_padding(x.shape[2], kw, sw, dw)
    if pt or pb or pl or pr:
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)
    return x


def _windows(x: Array, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int) -> Array:
    """View [N, OH, OW, KH, KW, C] of the (already padded) input."""
    n, h, w, c = x.shape
    oh = (h - ((kh - 1) * dh + 1)) // sh + 1
    ow = (w - ((kw - 1) * dw + 1)) // sw + 1
    s = x.strides
    return np.lib.stride_tricks.as_strided(
        x, (n, oh, ow, kh, kw, c), (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]), writeable=False)


def conv2d(x: Array, w: Array, b: Array | None, attrs: dict) -> Array:
    """w: [O, KH, KW, I/groups]."""
    o, kh, kw, ig = w.shape
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilation"]
    g = attrs.get("groups", 1)
    xp = _pad_input(x, kh, kw, sh, sw, dh, dw, attrs["padding"])
    win = _windows(xp, kh, kw, sh, sw, dh, dw)
    if g == 1:
        y = np.tensordot(win, w, axes=([3, 4, 5], [1, 2, 3]))
    else:
        og = o // g
        n, oh, ow = win.shape[:3]
        wg = win.reshape(n, oh, ow, kh, kw, g, ig)
        wt = w.reshape(g, og, kh, kw, ig)
        y = np.einsum("nhwijgc,gkijc->nhwgk", wg, wt, optimize=True).reshape(n, oh, ow, o)
    y = y.astype(F32)
    if b is not None:
        y = y + b
    return _act(y, attrs["activation"])


def transpose_conv_acc(x: Array, w: Array, attrs: dict, dtype: type) -> Array:
    """Scatter of every input pixel times the kernel into the output (TFLite's TRANSPOSE_CONV), before bias."""
    from .ops import transpose_conv_padding

    n, ih, iw, _ = x.shape
    o, kh, kw, _ = w.shape
    (sh, sw), (oh, ow) = attrs["strides"], attrs["out_size"]
    pt = transpose_conv_padding(oh, kh, sh, attrs["padding"])
    pl = transpose_conv_padding(ow, kw, sw, attrs["padding"])
    full = np.zeros((n, max((ih - 1) * sh + kh, pt + oh), max((iw - 1) * sw + kw, pl + ow), o), dtype)
    for ky in range(kh):
        for kx in range(kw):
            full[:, ky:ky + (ih - 1) * sh + 1:sh, kx:kx + (iw - 1) * sw + 1:sw] += \
                np.tensordot(x, w[:, ky, kx, :], axes=([3], [1])).astype(dtype)
    return full[:, pt:pt + oh, pl:pl + ow]


def depthwise_conv2d(x: Array, w: Array, b: Array | None, attrs: dict) -> Array:
    """w: [1, KH, KW, C*M]."""
    _, kh, kw, cm = w.shape
    m = attrs["depth_multiplier"]
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilation"]
    xp = _pad_input(x, kh, kw, sh, sw, dh, dw, attrs["padding"])
    win = _windows(xp, kh, kw, sh, sw, dh, dw)  # n oh ow kh kw c
    wr = w.reshape(kh, kw, cm // m, m)
    y = np.einsum("nhwijc,ijcm->nhwcm", win, wr, optimize=True)
    y = y.reshape(y.shape[0], y.shape[1], y.shape[2], cm).astype(F32)
    if b is not None:
        y = y + b
    return _act(y, attrs["activation"])


def dense(x: Array, w: Array, b: Array | None, attrs: dict) -> Array:
    y = np.matmul(x, w.T).astype(F32)
    if b is not None:
        y = y + b
    return _act(y, attrs["activation"])


def pool(x: Array, attrs: dict, kind: str) -> Array:
    (ph, pw), (sh, sw) = attrs["pool_size"], attrs["strides"]
    if kind == "max":
        xp = _pad_input(x, ph, pw, sh, sw, 1, 1, attrs["padding"], value=-np.inf)
        return _act(_windows(xp, ph, pw, sh, sw, 1, 1).max(axis=(3, 4)), attrs["activation"])
    xp = _pad_input(x, ph, pw, sh, sw, 1, 1, attrs["padding"])
    ones = _pad_input(np.ones((1,) + x.shape[1:3] + (1,), F32), ph, pw, sh, sw, 1, 1, attrs["padding"])
    s = _windows(xp, ph, pw, sh, sw, 1, 1).sum(axis=(3, 4))
    cnt = _windows(ones, ph, pw, sh, sw, 1, 1).sum(axis=(3, 4))
    return _act((s / cnt).astype(F32), attrs["activation"])


def nearest_index(out_size: int, in_size: int, align_corners: bool, half_pixel: bool) -> Array:
    """Source index of each output row/column of TFLite's RESIZE_NEAREST_NEIGHBOR (float32 arithmetic)."""
    if align_corners and out_size > 1:
        scale = F32(in_size - 1) / F32(out_size - 1)
    else:
        scale = F32(in_size) / F32(out_size)
    pos = (np.arange(out_size, dtype=F32) + F32(0.5 if half_pixel else 0.0)) * scale
    idx = np.floor(pos)
    if align_corners:  # TfLiteRound (half away from zero; pos >= 0); pos - floor(pos) is exact
        idx = idx + (pos - idx >= F32(0.5))
    idx = np.minimum(idx.astype(np.int64), in_size - 1)
    return np.maximum(idx, 0) if half_pixel else idx


def resize_nearest(x: Array, attrs: dict) -> Array:
    oh, ow = attrs["size"]
    ac, hp = attrs["align_corners"], attrs["half_pixel_centers"]
    ys, xs = nearest_index(oh, x.shape[1], ac, hp), nearest_index(ow, x.shape[2], ac, hp)
    return np.ascontiguousarray(x[:, ys][:, :, xs])


def sigmoid(x: Array) -> Array:
    with np.errstate(over="ignore"):  # exp overflow gives inf and a correct 0
        return (F32(1) / (F32(1) + np.exp(-x))).astype(F32)


def softmax(x: Array, beta: float = 1.0) -> Array:
    z = (x - x.max(axis=-1, keepdims=True)) * F32(beta)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(F32)


def _rescale(x: Array, attrs: dict) -> Array:
    scale = np.asarray(attrs["scale"], F32)
    offset = np.asarray(attrs["offset"], F32)
    return (x * scale + offset).astype(F32)


def _batch_norm(x: Array, gamma: Array, beta: Array, mean: Array, var: Array, eps: float) -> Array:
    inv = (gamma / np.sqrt(var + F32(eps))).astype(F32)
    return ((x - mean) * inv + beta).astype(F32)


_UNARY: dict[OpKind, Callable[[Array, dict], Array]] = {
    OpKind.RELU: lambda x, a: np.maximum(x, F32(0)),
    OpKind.RELU6: lambda x, a: np.clip(x, F32(0), F32(6)),
    OpKind.LEAKY_RELU: lambda x, a: np.where(x >= 0, x, x * F32(a["alpha"])).astype(F32),
    OpKind.SIGMOID: lambda x, a: sigmoid(x),
    OpKind.HARD_SIGMOID: lambda x, a: (np.clip(x + F32(3), F32(0), F32(6)) / F32(6)).astype(F32),
    OpKind.TANH: lambda x, a: np.tanh(x),
    OpKind.SWISH: lambda x, a: (x * sigmoid(x)).astype(F32),
    OpKind.HARD_SWISH: lambda x, a: (x * (np.clip(x + F32(3), F32(0), F32(6)) / F32(6))).astype(F32),
    OpKind.SOFTMAX: lambda x, a: softmax(x, a["beta"]),
    OpKind.MAX_POOL2D: lambda x, a: pool(x, a, "max"),
    OpKind.AVG_POOL2D: lambda x, a: pool(x, a, "avg"),
    OpKind.GLOBAL_AVG_POOL: lambda x, a: x.mean(axis=(1, 2), keepdims=a["keepdims"], dtype=F32),
    OpKind.GLOBAL_MAX_POOL: lambda x, a: x.max(axis=(1, 2), keepdims=a["keepdims"]),
    OpKind.FLATTEN: lambda x, a: x.reshape(x.shape[0], -1),
    OpKind.RESHAPE: lambda x, a: x.reshape((x.shape[0],) + tuple(a["shape"])),
    OpKind.PAD: lambda x, a: np.pad(x, ((0, 0), tuple(a["paddings"][0]), tuple(a["paddings"][1]), (0, 0))),
    OpKind.DROPOUT: lambda x, a: x,
    OpKind.RESIZE_NEAREST: resize_nearest,
    OpKind.RESIZE_BILINEAR: resize_bilinear_float,
    OpKind.SLICE: lambda x, a: np.ascontiguousarray(np.take(x, range(a["begin"], a["begin"] + a["length"]), a["axis"])),
    OpKind.TRANSPOSE: lambda x, a: np.ascontiguousarray(np.transpose(x, a["perm"])),
    OpKind.REVERSE: lambda x, a: np.ascontiguousarray(np.flip(x, a["axis"])),
    OpKind.RESCALE: _rescale,
    OpKind.ELU: lambda x, a: lut.elu(x, a["alpha"]),
    OpKind.GELU: lambda x, a: lut.gelu(x, a["approximate"]),
    OpKind.MEAN: lambda x, a: x.mean(axis=-1, keepdims=True, dtype=F32),
    OpKind.RSQRT: lambda x, a: rsqrt_float(x),
    OpKind.NEG: lambda x, a: (-x).astype(F32),
    **{k: (lambda x, a, f=lut.FUNCTIONS[k.value]: f(x)) for k in MORE_LUT_KINDS},
}


def _batch(shape: tuple[int, ...], n: int) -> tuple[int, ...]:
    return (n,) + tuple(shape[1:])


def eval_op(op: Op, args: list[Array], graph: Graph) -> Array:
    """Evaluate one float op on already-fetched input arrays."""
    k, a = op.kind, op.attrs
    if k in _UNARY:
        return _UNARY[k](args[0], a)
    bias = args[3] if k == OpKind.LSTM and len(args) > 3 else (args[2] if len(args) > 2 else None)
    if k == OpKind.CONV2D:
        return conv2d(args[0], args[1], bias, a)
    if k == OpKind.DEPTHWISE_CONV2D:
        return depthwise_conv2d(args[0], args[1], bias, a)
    if k == OpKind.TRANSPOSE_CONV2D:
        y = transpose_conv_acc(args[0], args[1], a, F32)
        return _act(y + bias if bias is not None else y, a["activation"])
    if k == OpKind.DENSE:
        return dense(args[0], args[1], bias, a)
    if k == OpKind.BATCH_NORM:
        return _batch_norm(*args, eps=a["epsilon"])
    if k == OpKind.ADD:
        return _act((args[0] + args[1]).astype(F32), a["activation"])
    if k == OpKind.MUL:
        return _act((args[0] * args[1]).astype(F32), a["activation"])
    if k == OpKind.SUB:
        return _act((args[0] - args[1]).astype(F32), a["activation"])
    if k == OpKind.SQUARED_DIFFERENCE:
        return np.square((args[0] - args[1]).astype(F32)).astype(F32)
    if k == OpKind.PRELU:
        return np.where(args[0] >= 0, args[0], args[0] * args[1]).astype(F32)
    if k == OpKind.MAXIMUM:
        return np.maximum(args[0], args[1]).astype(F32)
    if k == OpKind.MINIMUM:
        return np.minimum(args[0], args[1]).astype(F32)
    if k == OpKind.GRU:
        return recurrent.gru_float(*args, a)
    if k == OpKind.SIMPLE_RNN:
        return recurrent.simple_rnn_float(*args, a)
    if k == OpKind.LSTM:
        from .lstm import lstm_float

        return lstm_float(args[0], args[1], args[2], bias if len(args) > 3 else None, a["return_sequences"])
    if k == OpKind.SVDF:  # the rows are consecutive frames of one stream from a zero state (ir/svdf.py)
        from .svdf import svdf_float

        return svdf_float(args[0], args[1], args[2], args[3] if len(args) > 3 else None, a["rank"], a["activation"])
    if k == OpKind.CONCAT:
        n = max(x.shape[0] for x in args)
        return np.concatenate([np.broadcast_to(x, _batch(x.shape, n)) for x in args], axis=a["axis"])
    raise IRError(f"{op.describe()}: no float kernel for {k.value}")


def run(graph: Graph, inputs: dict[str, Array] | Array, outputs: list[str] | None = None) -> dict[str, Array]:
    """Execute ``graph`` on a batch; return the requested tensors (default: graph outputs)."""
    if not isinstance(inputs, dict):
        if len(graph.inputs) != 1:
            raise ValueError("graph has several inputs: pass a dict")
        inputs = {graph.inputs[0]: inputs}
    want = list(outputs or graph.outputs)
    env: dict[str, Array] = {}
    for name in graph.inputs:
        if name not in inputs:
            raise ValueError(f"missing input {name!r}")
        x = np.asarray(inputs[name], dtype=F32)
        exp = graph.tensors[name].shape[1:]
        if tuple(x.shape[1:]) != tuple(exp):
            raise ValueError(f"input {name!r}: expected shape (N, {', '.join(map(str, exp))}), got {x.shape}")
        env[name] = x
    last_use = {}
    for i, op in enumerate(graph.ops):
        for t in op.inputs:
            last_use[t] = i
    keep = set(want)
    for i, op in enumerate(graph.ops):
        args = [env[t] if t in env else graph.tensors[t].data for t in op.inputs]
        if any(v is None for v in args):
            missing = [t for t, v in zip(op.inputs, args) if v is None]
            raise IRError(f"{op.describe()}: input {missing[0]!r} has no value")
        env[op.outputs[0]] = np.ascontiguousarray(eval_op(op, args, graph), dtype=F32)
        for t in op.inputs:
            if last_use.get(t) == i and t not in keep and t in env and t not in graph.inputs:
                del env[t]
    missing = [t for t in want if t not in env]
    if missing:
        raise KeyError(f"tensors not computed: {missing}")
    return {t: env[t] for t in want}
