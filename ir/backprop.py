"""Training beyond the head: a float tail of the network (convolution blocks + the Dense chain) trained with SGD.

The tail is the part of a graph after a cut tensor: Conv2D (groups 1), DepthwiseConv2D, Dense (each with a
fused ``none``/``relu``/``relu6`` activation), ReLU, ReLU6, Sigmoid, Swish, HardSigmoid, Softplus, Softsign, SELU,
Mish, Exponential, and Add, Sub and Mul
(element-wise with numpy broadcasting: a constant operand, or two tensors of one rank, e.g. ``[N,H,W,C] +
[N,1,1,C]``; fused activation), AvgPool2D,
MaxPool2D, GlobalAveragePooling, Flatten, Reshape, Dropout (identity) and a final Softmax (ignored: the last
Dense gives the logits). Every value is float32, NHWC, in TFLite layouts (Conv2D ``[O, KH, KW, I]``,
Depthwise ``[1, KH, KW, C*M]``, Dense ``[O, I]``); the parameters start from the graph's float weights or the
dequantized int8 ones (``from_graph``).

Loss: softmax cross-entropy on the logits with integer labels, mean over the batch (Keras
``SparseCategoricalCrossentropy``), as ``tinycc.ir.train``'s ``ce`` head.

Backward (reverse op order; a tensor read by several ops sums their gradients)::

    fused activation:  dz = dy * (y > 0)            relu;  dy * (0 < y < 6)  relu6
    conv:   dW[o, i, j, c] = sum_{n,h,w} dz[n,h,w,o] x_pad[n, h*sh + i*dh, w*sw + j*dw, c];  db[o] = sum dz[..., o]
            dx_pad[n, h*sh + i*dh, w*sw + j*dw, c] += sum_o dz[n,h,w,o] W[o, i, j, c]   (padding cropped)
    depthwise: the same per channel (W[0, i, j, c*M + m] reads input channel c)
    dense:  dW = dz^T x;  db = sum_n dz;  dx = dz W
    add:    both inputs receive dz; sub: dx0 = dz, dx1 = -dz (a constant operand, e.g. of a quantized hard
            sigmoid, receives nothing)
    mul:    dx0 = dz * x1, dx1 = dz * x0
            (add, sub, mul: a broadcast input's gradient summed over the axes it was broadcast along)
    sigmoid: dx = dy * y * (1 - y);  swish (x * sigmoid(x)): dx = dy * s * (1 + x * (1 - s)), s = sigmoid(x)
    hard sigmoid (clip(x + 3, 0, 6) / 6): dx = dy / 6 where -3 < x < 3
    softplus: dx = dy * sigmoid(x);  softsign: dy / (1 + |x|)^2;  selu: dy * scale * (x < 0 ? alpha * exp(x) : 1)
    mish: dx = dy * (t + x * sigmoid(x) * (1 - t^2)), t = tanh(softplus(x));  exponential: dy * exp(x)
    avg pool: each window's dz / (valid pixels of the window) to each valid pixel; GAP: dz / (H*W)
    max pool: dz to the window's first maximum (row-major), as TensorFlow's MaxPoolGrad

What trains (``mode``): ``blocks`` every weight and bias of the tail; ``bias`` every bias of the tail plus the
last Dense layer's weights (TinyTL); ``subset`` (a ``Trained`` per op, the sparse updates of ``--train sparse``)
overrides both: an op absent from it trains nothing, a channel subset updates only those rows of the weight.
The SGD step ``p = p - lr * dp`` (``rates``: a rate per op) uses the gradients of the old parameters and is
refused, changing nothing, when any updated value would not be finite (as ``Classifier.sgd_step``).

Quantize/Dequantize ops (of an int8 graph viewed in float) are the identity on values; an Add/Mul constant of
an int8 graph is its dequantized value (``const_value``).

``known``: tensors whose values are given instead of computed in float (e.g. the dequantized outputs of the
int8 kernels, when the weights stay int8 and only biases learn): the forward pass takes them as they are and
the backward pass differentiates the float ops at those values (masks and maximum positions from them).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .graph import Graph, Op
from .interpreter import _pad_input, _windows, eval_op
from .lut import SELU_ALPHA, SELU_SCALE
from .ops import MORE_LUT_KINDS, OpKind, same_padding
from .quant import dequantize
from .tensor import DType

F32 = np.float32
TAIL_MODES = ("blocks", "bias")
PARAM_KINDS = (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE)
TAIL_KINDS = set(PARAM_KINDS) | {OpKind.RELU, OpKind.RELU6, OpKind.ADD, OpKind.AVG_POOL2D, OpKind.MAX_POOL2D,
                                  OpKind.GLOBAL_AVG_POOL, OpKind.FLATTEN, OpKind.RESHAPE, OpKind.DROPOUT,
                                  OpKind.SOFTMAX, OpKind.QUANTIZE, OpKind.DEQUANTIZE, OpKind.SIGMOID, OpKind.SWISH,
                                  OpKind.HARD_SIGMOID, OpKind.MUL, OpKind.SUB, *MORE_LUT_KINDS}
BINARY_KINDS = (OpKind.ADD, OpKind.SUB, OpKind.MUL)
IDENTITY_KINDS = (OpKind.FLATTEN, OpKind.RESHAPE, OpKind.DROPOUT, OpKind.QUANTIZE, OpKind.DEQUANTIZE)


def act_derivative(kind: OpKind, x: np.ndarray) -> np.ndarray:
    """The derivative of a softplus/softsign/selu/mish/exponential at its input ``x``, in float32 (TensorFlow's
    gradients; SELU's at 0 is ``scale``, as TensorFlow's)."""
    x = np.asarray(x, F32)
    with np.errstate(over="ignore", invalid="ignore"):
        s = (F32(1) / (F32(1) + np.exp(-x))).astype(F32)
        if kind == OpKind.SOFTPLUS:
            return s
        if kind == OpKind.SOFTSIGN:
            d = (F32(1) / (F32(1) + np.abs(x))).astype(F32)
            return (d * d).astype(F32)
        if kind == OpKind.SELU:
            return np.where(x < 0, F32(SELU_SCALE * SELU_ALPHA) * np.exp(np.minimum(x, F32(0))),
                            F32(SELU_SCALE)).astype(F32)
        if kind == OpKind.MISH:
            t = np.tanh(np.logaddexp(F32(0), x)).astype(F32)
            return (t + x * s * (F32(1) - t * t)).astype(F32)
        return np.exp(x).astype(F32)  # exponential


class NoBackward(ValueError):
    """An op after the cut has no backward pass (the message names the op and the layer it came from)."""


@dataclass(frozen=True)
class Trained:
    """What of one parameter op trains in a sparse subset: its bias, and the output channels of its weight
    (``None``: every channel, ``()``: the weight is frozen). The other channels keep their values."""

    bias: bool = True
    channels: tuple[int, ...] | None = ()


def out_axis(op: Op) -> int:
    """The output-channel axis of a parameter op's weight (TFLite layouts)."""
    return 3 if op.kind == OpKind.DEPTHWISE_CONV2D else 0


@dataclass
class Param:
    """Float weight and bias of one Conv2D / DepthwiseConv2D / Dense op of the tail."""

    weight: np.ndarray
    bias: np.ndarray


def float_params(graph: Graph, op: Op) -> Param:
    """The op's float weight and bias (dequantized per channel when int8; zero bias when absent)."""
    w = graph.tensors[op.inputs[1]]
    b = graph.tensors[op.inputs[2]] if len(op.inputs) > 2 else None
    out = w.shape[3] if op.kind == OpKind.DEPTHWISE_CONV2D else w.shape[0]
    if w.dtype == DType.FLOAT32:
        wf = np.array(w.data, F32)
    else:
        if w.quant is None:
            raise ValueError(f"{op.describe()}: int8 weights without quantization parameters")
        axis = 3 if op.kind == OpKind.DEPTHWISE_CONV2D else 0
        shape = [1] * w.data.ndim
        shape[axis] = -1
        wf = dequantize(w.data, w.quant.scale.reshape(shape), w.quant.zero_point.reshape(shape)).astype(F32)
    if b is None:
        return Param(wf, np.zeros(out, F32))
    if b.dtype == DType.FLOAT32:
        return Param(wf, np.array(b.data, F32))
    return Param(wf, dequantize(b.data, b.quant.scale, b.quant.zero_point).astype(F32))


def const_value(graph: Graph, t: str) -> np.ndarray:
    """A constant operand's float32 value (an Add/Mul constant of an int8 graph, e.g. a lowered hard sigmoid's 3
    and 1/6, dequantized: per tensor, or per axis along ``quant.axis``)."""
    c = graph.tensors[t]
    if c.dtype == DType.FLOAT32 or c.quant is None:
        return np.asarray(c.data, F32)
    scale, zp = c.quant.scale, c.quant.zero_point
    if c.quant.axis is not None and scale.size > 1:
        shape = [1] * np.ndim(c.data)
        shape[c.quant.axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return dequantize(c.data, scale, zp).astype(F32)


def _mask(y: np.ndarray, act: str) -> np.ndarray | None:
    if act == "relu":
        return y > 0
    if act == "relu6":
        return (y > 0) & (y < 6)
    return None


def _unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """``g`` summed over the axes an operand of ``shape`` was broadcast along (numpy rules), float32."""
    g = np.asarray(g, F32)
    while g.ndim > len(shape):
        g = g.sum(axis=0, dtype=F32)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return (g.sum(axis=axes, keepdims=True, dtype=F32) if axes else g).astype(F32)


def _pads(x_shape: tuple, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, padding: str) -> tuple:
    if padding != "same":
        return 0, 0, 0, 0
    return same_padding(x_shape[1], kh, sh, dh) + same_padding(x_shape[2], kw, sw, dw)


def _scatter(dxp: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, oh: int, ow: int,
             part) -> None:
    """dxp[:, h*sh + i*dh, w*sw + j*dw, :] += part(i, j) for every kernel position (i, j)."""
    for i in range(kh):
        for j in range(kw):
            dxp[:, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw, :] += part(i, j)


def _crop(dxp: np.ndarray, pads: tuple, shape: tuple) -> np.ndarray:
    pt, _, pl, _ = pads
    return dxp[:, pt:pt + shape[1], pl:pl + shape[2], :]


def conv_backward(x: np.ndarray, w: np.ndarray, dz: np.ndarray, attrs: dict, depthwise: bool, need_w: bool = True,
                  need_x: bool = True) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """(dx, dW, db) of a Conv2D (groups 1) or DepthwiseConv2D from dz = dloss/d(pre-activation output); dW is None
    unless ``need_w``, dx None unless ``need_x``."""
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilation"]
    kh, kw = w.shape[1], w.shape[2]
    pads = _pads(x.shape, kh, kw, sh, sw, dh, dw, attrs["padding"])
    xp = _pad_input(x, kh, kw, sh, sw, dh, dw, attrs["padding"])
    win = _windows(np.ascontiguousarray(xp), kh, kw, sh, sw, dh, dw)  # n oh ow kh kw c
    n, oh, ow = dz.shape[:3]
    dxp = np.zeros(xp.shape, F32)
    if depthwise:
        c = x.shape[3]
        m = attrs["depth_multiplier"]
        wr = w.reshape(kh, kw, c, m)
        dzr = dz.reshape(n, oh, ow, c, m)
        dw_ = np.einsum("nhwijc,nhwcm->ijcm", win, dzr).reshape(1, kh, kw, c * m) if need_w else None
        if need_x:
            _scatter(dxp, kh, kw, sh, sw, dh, dw, oh, ow, lambda i, j: np.einsum("nhwcm,cm->nhwc", dzr, wr[i, j]))
    else:
        dw_ = np.tensordot(dz, win, axes=([0, 1, 2], [0, 1, 2])) if need_w else None  # o kh kw c
        if need_x:
            _scatter(dxp, kh, kw, sh, sw, dh, dw, oh, ow,
                     lambda i, j: np.tensordot(dz, w[:, i, j, :], axes=([3], [0])))
    return (_crop(dxp, pads, x.shape) if need_x else None, None if dw_ is None else dw_.astype(F32),
            dz.sum(axis=(0, 1, 2), dtype=F32))


def pool_backward(x: np.ndarray, dy: np.ndarray, attrs: dict, kind: str) -> np.ndarray:
    """dx of an average or max pooling (see the module docstring)."""
    (ph, pw), (sh, sw) = attrs["pool_size"], attrs["strides"]
    pads = _pads(x.shape, ph, pw, sh, sw, 1, 1, attrs["padding"])
    n, oh, ow, c = dy.shape
    if kind == "avg":
        ones = _pad_input(np.ones((1,) + x.shape[1:3] + (1,), F32), ph, pw, sh, sw, 1, 1, attrs["padding"])
        cnt = _windows(ones, ph, pw, sh, sw, 1, 1).sum(axis=(3, 4))
        share = (dy / cnt).astype(F32)
        dxp = np.zeros((n,) + ones.shape[1:3] + (c,), F32)
        _scatter(dxp, ph, pw, sh, sw, 1, 1, oh, ow, lambda i, j: share)
        return _crop(dxp, pads, x.shape)
    xp = _pad_input(x, ph, pw, sh, sw, 1, 1, attrs["padding"], value=-np.inf)
    win = _windows(np.ascontiguousarray(xp), ph, pw, sh, sw, 1, 1)
    first = win.reshape(n, oh, ow, ph * pw, c).argmax(axis=3)  # the first maximum, row-major
    dxp = np.zeros(xp.shape, F32)
    _scatter(dxp, ph, pw, sh, sw, 1, 1, oh, ow, lambda i, j: np.where(first == i * pw + j, dy, F32(0)))
    return _crop(dxp, pads, x.shape)


class Tail:
    """The float ops of a graph after a cut tensor, trainable with SGD (see the module docstring)."""

    def __init__(self, graph: Graph, cut: str, mode: str = "blocks", train_weights: set[str] | None = None,
                 subset: dict[str, Trained] | None = None) -> None:
        if mode not in TAIL_MODES:
            raise ValueError(f"unknown tail training mode {mode!r}; known: {', '.join(TAIL_MODES)}")
        if len(graph.outputs) != 1:
            raise ValueError("the tail needs a graph with exactly one output")
        self.graph, self.cut, self.mode, self.train_weights = graph, cut, mode, train_weights
        self.subset = None if subset is None else dict(subset)
        needed = {graph.outputs[0]}
        ops: list[Op] = []
        for op in reversed(graph.ops):  # the ops between the cut and the output
            if op.outputs[0] in needed and op.outputs[0] != cut:
                ops.append(op)
                needed.update(t for t in op.inputs if graph.tensors[t].data is None)
        self.ops = ops[::-1]
        if cut not in needed:
            raise ValueError(f"the output does not depend on the cut tensor {cut!r}")
        for op in self.ops:
            if op.kind not in TAIL_KINDS or (op.kind == OpKind.CONV2D and op.attrs["groups"] != 1):
                raise NoBackward(f"{op.describe()} is not trainable on the device (no backward pass)")
            if op.kind in BINARY_KINDS and len({len(graph.tensors[t].shape) for t in op.inputs[:2]
                                                if graph.tensors[t].data is None}) > 1:
                raise NoBackward(f"{op.describe()}: a broadcast between tensors of different ranks has no backward "
                                 "pass (the batch axis would not align)")
            if op.kind == OpKind.SOFTMAX and op is not self.ops[-1]:
                raise NoBackward(f"{op.describe()}: softmax only as the last op")
            extern = [t for t in op.inputs if graph.tensors[t].data is None and t != cut and
                      all(t not in o.outputs for o in self.ops)]
            if extern:
                raise ValueError(f"{op.describe()} reads {extern[0]!r}, computed before the cut")
        self.logits = self.ops[-1].inputs[0] if self.ops[-1].kind == OpKind.SOFTMAX else self.ops[-1].outputs[0]
        dense = [op for op in self.ops if op.kind in PARAM_KINDS]
        if not dense or dense[-1].kind != OpKind.DENSE or dense[-1].outputs[0] != self.logits:
            raise ValueError("the tail must end with a Dense layer giving the logits")
        self.last = dense[-1].name
        self.biased = {op.name for op in dense if len(op.inputs) > 2}  # a layer without a bias trains none
        self.params = {op.name: float_params(graph, op) for op in dense}
        self.axis = {op.name: out_axis(op) for op in dense}
        self.need_grad = self._need_grad()
        for k, tr in (self.subset or {}).items():
            if k not in self.params:
                raise ValueError(f"{k!r} is not a parameter op of the tail")
            n = self.params[k].bias.size
            if tr.channels and (len(set(tr.channels)) != len(tr.channels) or min(tr.channels) < 0
                                or max(tr.channels) >= n):
                raise ValueError(f"{k}: channels must be distinct in 0..{n - 1}")

    def _need_grad(self) -> set[str]:
        """The tensors whose gradient a step needs: those computed from a trained op's output (with a sparse
        subset, the backward stops below the earliest trained op)."""
        need: set[str] = set()
        for op in self.ops:
            if (op.name in self.params and any(self.trains(op.name))) or any(t in need for t in op.inputs):
                need.add(op.outputs[0])
        return need

    def trains(self, name: str) -> tuple[bool, bool]:
        """(weight trained, bias trained) of the parameter op ``name`` (``subset``, when given, else
        ``train_weights``, naming the ops whose weights train, else the mode's choice); a layer without a bias trains
        none."""
        has_bias = name in self.biased
        if self.subset is not None:
            tr = self.subset.get(name, Trained(False, ()))
            return tr.channels is None or len(tr.channels) > 0, tr.bias and has_bias
        if self.train_weights is not None:
            return name in self.train_weights, has_bias
        return self.mode == "blocks" or name == self.last, has_bias

    def channels(self, name: str) -> np.ndarray | None:
        """The output channels whose weights train (None: all of them, when the weight trains)."""
        tr = (self.subset or {}).get(name)
        return None if tr is None or tr.channels is None else np.asarray(tr.channels, np.int64)

    def trained_sizes(self, name: str) -> tuple[int, int]:
        """(weight values, bias values) of ``name`` that train."""
        p = self.params[name]
        w, b = self.trains(name)
        ch = self.channels(name)
        nw = 0 if not w else p.weight.size if ch is None else p.weight.size // p.bias.size * len(ch)
        return nw, p.bias.size if b else 0

    def parameter_count(self) -> int:
        """Trained float parameters."""
        return sum(sum(self.trained_sizes(k)) for k in self.params)

    # ---- forward ----
    def forward(self, x: np.ndarray, known: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Every tensor of the tail for a batch of cut tensors x (float32, NHWC)."""
        env = {self.cut: np.asarray(x, F32)}
        known = known or {}
        for op in self.ops:
            if op is self.ops[-1] and op.kind == OpKind.SOFTMAX:
                break
            if op.outputs[0] in known:
                env[op.outputs[0]] = np.asarray(known[op.outputs[0]], F32)
                continue
            args = [env[t] if t in env else self.graph.tensors[t].data if op.kind in PARAM_KINDS
                    else const_value(self.graph, t) for t in op.inputs]
            if op.kind in IDENTITY_KINDS:  # values: a quantize/dequantize is the identity in float
                env[op.outputs[0]] = np.ascontiguousarray(args[0], F32).reshape(
                    (args[0].shape[0],) + tuple(self.graph.tensors[op.outputs[0]].shape[1:]))
                continue
            if op.kind in PARAM_KINDS:
                p = self.params[op.name]
                args = [args[0], p.weight, p.bias]
            env[op.outputs[0]] = np.ascontiguousarray(eval_op(op, args, self.graph), F32)
        return env

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class per row (arg-max of the logits)."""
        return self.forward(x)[self.logits].argmax(axis=1)

    # ---- backward ----
    def grads(self, x: np.ndarray, y: np.ndarray, known: dict[str, np.ndarray] | None = None
              ) -> dict[str, tuple[np.ndarray | None, np.ndarray]]:
        """Per parameter op (dW or None when the weight is frozen, db) of the mean cross-entropy."""
        env = self.forward(x, known)
        z = env[self.logits]
        y = np.asarray(y).reshape(-1)
        n, classes = z.shape
        if len(y) != n or not np.issubdtype(y.dtype, np.integer) or (n and (y.min() < 0 or y.max() >= classes)):
            raise ValueError(f"labels must be {n} integers in 0..{classes - 1}")
        e = np.exp((z - z.max(axis=1, keepdims=True)).astype(np.float64)).astype(F32)
        d = (e / e.sum(axis=1, keepdims=True)).astype(F32)
        d[np.arange(n), y] -= F32(1)
        grad = {self.logits: (d / F32(n)).astype(F32)}
        out: dict[str, tuple[np.ndarray | None, np.ndarray]] = {}
        for op in reversed(self.ops):
            if op.kind == OpKind.SOFTMAX or op.outputs[0] not in grad:
                continue
            dy = grad.pop(op.outputs[0])
            for t, g in self._op_backward(op, env, dy, out):
                if self.graph.tensors[t].data is None and t in self.need_grad:
                    grad[t] = grad[t] + g if t in grad else g
        return out

    def _op_backward(self, op: Op, env: dict, dy: np.ndarray, out: dict) -> list[tuple[str, np.ndarray]]:
        """Gradients of the op's tensor inputs; the parameter gradients go into ``out``."""
        k, a, x = op.kind, op.attrs, env.get(op.inputs[0])
        mask = _mask(env[op.outputs[0]], a.get("activation", "none"))
        dz = dy if mask is None else np.where(mask, dy, F32(0)).astype(F32)
        if k in PARAM_KINDS:
            w = self.params[op.name].weight
            if k == OpKind.DENSE:
                x2 = x.reshape(x.shape[0], -1)
                dx, dw, db = (dz @ w).reshape(x.shape), dz.T @ x2, dz.sum(axis=0, dtype=F32)
            else:
                dx, dw, db = conv_backward(x, w, dz, a, k == OpKind.DEPTHWISE_CONV2D, self.trains(op.name)[0],
                                           op.inputs[0] in self.need_grad)  # nothing learns below the cut
            out[op.name] = (dw.astype(F32) if self.trains(op.name)[0] else None, db.astype(F32))
            return [] if dx is None else [(op.inputs[0], dx.astype(F32))]
        if k == OpKind.RELU:
            return [(op.inputs[0], np.where(env[op.outputs[0]] > 0, dy, F32(0)).astype(F32))]
        if k == OpKind.RELU6:
            y = env[op.outputs[0]]
            return [(op.inputs[0], np.where((y > 0) & (y < 6), dy, F32(0)).astype(F32))]
        if k in (OpKind.ADD, OpKind.SUB):  # sub: the second operand's gradient negated
            return [(t, _unbroadcast(-dz if i == 1 and k == OpKind.SUB else dz, env[t].shape))
                    for i, t in enumerate(op.inputs[:2]) if t in env]
        if k == OpKind.MUL:
            vals = [env[t] if t in env else const_value(self.graph, t) for t in op.inputs[:2]]
            return [(t, _unbroadcast(dz * vals[1 - i], env[t].shape))
                    for i, t in enumerate(op.inputs[:2]) if t in env]
        if k == OpKind.SIGMOID:
            y = env[op.outputs[0]]
            return [(op.inputs[0], (dy * y * (F32(1) - y)).astype(F32))]
        if k == OpKind.SWISH:
            with np.errstate(over="ignore"):
                s = (F32(1) / (F32(1) + np.exp(-x))).astype(F32)
            return [(op.inputs[0], (dy * s * (F32(1) + x * (F32(1) - s))).astype(F32))]
        if k == OpKind.HARD_SIGMOID:
            return [(op.inputs[0], np.where((x > -3) & (x < 3), dy / F32(6), F32(0)).astype(F32))]
        if k in MORE_LUT_KINDS:
            return [(op.inputs[0], (dy * act_derivative(k, x)).astype(F32))]
        if k in (OpKind.AVG_POOL2D, OpKind.MAX_POOL2D):
            return [(op.inputs[0], pool_backward(x, dz, a, "avg" if k == OpKind.AVG_POOL2D else "max"))]
        if k == OpKind.GLOBAL_AVG_POOL:
            g = dy.reshape(dy.shape[0], 1, 1, -1) / F32(x.shape[1] * x.shape[2])
            return [(op.inputs[0], np.broadcast_to(g, x.shape).astype(F32))]
        return [(op.inputs[0], dy.reshape(x.shape))]  # flatten, reshape, dropout, (de)quantize: identity

    # ---- SGD ----
    def sgd_step(self, x: np.ndarray, y: np.ndarray, lr: float, known: dict[str, np.ndarray] | None = None,
                 rates: dict[str, float] | None = None) -> bool:
        """One SGD step on the trained parameters (``rates``: a learning rate per op instead of ``lr``); False,
        changing nothing, when a result is not finite. A channel subset updates only those rows, in place."""
        new = {}
        with np.errstate(over="ignore", invalid="ignore"):
            g = self.grads(x, y, known)
            for k, (dw, db) in g.items():
                rate, p = F32(lr if rates is None else rates.get(k, lr)), self.params[k]
                w, ch = None, self.channels(k)
                if dw is not None and ch is None:
                    w = p.weight - rate * dw
                elif dw is not None:
                    w = p.weight.copy()
                    sel = (slice(None),) * self.axis[k] + (ch,)
                    w[sel] = p.weight[sel] - rate * dw[sel]
                new[k] = (w, p.bias - rate * db if self.trains(k)[1] else None)
        if any((w is not None and not np.isfinite(w).all()) or (b is not None and not np.isfinite(b).all())
               for w, b in new.values()):
            return False
        for k, (w, b) in new.items():
            if w is not None:
                self.params[k].weight[...] = w
            if b is not None:
                self.params[k].bias[...] = b
        return True


DESCRIPTOR_KINDS = (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.AVG_POOL2D, OpKind.MAX_POOL2D,
                    OpKind.GLOBAL_AVG_POOL)
DESCRIPTOR_BYTES = 16 * 4  # one tcc_bp_conv_t of the C runtime: 16 int32 fields


def uses_descriptor(tail: Tail, op: Op, known: tuple[str, ...] | set[str] = ()) -> bool:
    """Whether the generated step reads the descriptor of ``op`` (a convolution or pooling): for its float forward
    (output not ``known``), its update (a trained parameter op the gradient reaches) or its input gradient."""
    if op.kind not in DESCRIPTOR_KINDS:
        return False
    if op.outputs[0] not in set(known):
        return True
    if op.outputs[0] not in tail.need_grad:
        return False
    return (op.name in tail.params and any(tail.trains(op.name))) or op.inputs[0] in tail.need_grad


def step_ops(tail: Tail) -> list[Op]:
    """The ops a generated SGD step computes (a final softmax is left to the loss)."""
    return [op for op in tail.ops if not (op.kind == OpKind.SOFTMAX and op is tail.ops[-1])]


@dataclass
class StepPlan:
    """The lean memory layout of a generated SGD step (what ``step_memory`` counts and the C backend declares).

    ``values``: the tensors with a float value array (every tensor computed in float; a cut or ``known`` tensor
    only when a float op reads it, a trained weight's update reads it or a max pooling's backward does; the
    masks of known tensors come from their int8 values). ``slot``: tensor -> gradient slot; the slots are
    ``slots`` arrays of ``slot_size`` values per row, reused along the backward pass (a gradient lives from its
    first contribution to its producer's backward). ``fresh``: (op name, input position) pairs whose
    contribution is the gradient's first, written in place; the others accumulate through the scratch array of
    ``scratch_size`` values per row (0: none)."""

    values: list[str]
    slot: dict[str, int]
    slots: int
    slot_size: int
    fresh: set[tuple[str, int]]
    scratch_size: int


def _size(tail: Tail, t: str) -> int:
    return int(np.prod(tail.graph.tensors[t].shape[1:]))


def _kernel_dx(op: Op) -> bool:
    """Whether the op's input gradient comes out of a kernel (else it is the output gradient itself, for an Add or
    Sub negated or summed over a broadcast operand's axes straight into the gradient's slot: no scratch)."""
    return op.kind not in IDENTITY_KINDS and op.kind not in (OpKind.ADD, OpKind.SUB)


def backward_reads(tail: Tail, op: Op) -> set[str]:
    """The tensor values the backward of a Sigmoid (its output), Swish, HardSigmoid or a table activation (its input)
    or Mul (the other
    operand of each input the gradient reaches) reads; none when no gradient goes through the op."""
    ins = [t for t in op.inputs[:2] if tail.graph.tensors[t].data is None]
    reach = [t for t in ins if t != tail.cut and t in tail.need_grad]
    if not reach or op.kind not in (OpKind.SIGMOID, OpKind.SWISH, OpKind.HARD_SIGMOID, OpKind.MUL, *MORE_LUT_KINDS):
        return set()
    if op.kind == OpKind.SIGMOID:
        return {op.outputs[0]}
    if op.kind != OpKind.MUL:
        return {op.inputs[0]}
    other = {op.inputs[1 - i] for i, t in enumerate(op.inputs[:2]) if t in reach}
    return {t for t in other if tail.graph.tensors[t].data is None}


def step_consts(tail: Tail, known: tuple[str, ...] | set[str] = ()) -> list[str]:
    """The Add/Sub/Mul constant operands the generated step reads (float32, flash): those of a float forward (output
    not ``known``) and a Mul's whose tensor operand the gradient reaches."""
    out: list[str] = []
    for op in step_ops(tail):
        if op.kind not in BINARY_KINDS:
            continue
        consts = [t for t in op.inputs[:2] if tail.graph.tensors[t].data is not None]
        grad = op.kind == OpKind.MUL and any(t != tail.cut and t in tail.need_grad for t in op.inputs[:2])
        if consts and (op.outputs[0] not in set(known) or grad):
            out += [t for t in consts if t not in out]
    return out


def step_plan(tail: Tail, known: tuple[str, ...] | set[str] = ()) -> StepPlan:
    """The step's layout for a tail whose ``known`` tensors come as int8 (see ``StepPlan``)."""
    ops, known = step_ops(tail), set(known)
    is_tensor = lambda t: tail.graph.tensors[t].data is None
    needed: set[str] = set()
    for op in ops:
        if op.outputs[0] not in known:
            needed.add(op.outputs[0])
            needed.update(t for t in op.inputs if is_tensor(t))  # a float op reads its inputs in float
        if op.kind in PARAM_KINDS and tail.trains(op.name)[0]:
            needed.add(op.inputs[0])
        if op.kind == OpKind.MAX_POOL2D:
            needed.add(op.inputs[0])
        needed.update(backward_reads(tail, op))
    order = [tail.cut] + [op.outputs[0] for op in ops]
    values = [t for t in order if t in needed]
    slot: dict[str, int] = {tail.logits: 0}
    free: list[int] = []
    slots, fresh, scratch = 1, set(), 0
    for op in reversed(ops):
        if op.outputs[0] not in slot:
            continue
        for pos, t in enumerate(op.inputs):
            if (not is_tensor(t) or t == tail.cut or pos > (1 if op.kind in BINARY_KINDS else 0)
                    or t not in tail.need_grad):
                continue
            if t not in slot:
                if free:
                    slot[t] = free.pop()
                else:
                    slot[t], slots = slots, slots + 1
                fresh.add((op.name, pos))
            elif _kernel_dx(op):
                scratch = max(scratch, _size(tail, t))
        free.append(slot[op.outputs[0]])
        free.sort(reverse=True)  # the lowest free slot first
    size = max(_size(tail, t) for t in slot)
    return StepPlan(values, slot, slots, size, fresh, scratch)


def known_bytes(tail: Tail, known: tuple[str, ...], batch: int) -> int:
    """Bytes of the int8 activations the caller keeps for ``known`` (``batch`` rows each)."""
    return batch * sum(_size(tail, t) for t in known)


def step_memory(tail: Tail, batch: int, requantized: tuple[str, ...] = (), learn: bool = False,
                known: tuple[str, ...] = ()) -> dict[str, int]:
    """RAM of the generated SGD step of ``tail`` for ``batch`` rows, bytes (the C backend's deep step declares
    exactly these arrays, laid out by ``step_plan(tail, known)``): float parameters (every bias, the weights that
    train; a frozen weight is in flash, ``step_flash``), the float values the plan keeps, its gradient slots and
    scratch, the kernels' descriptors, the int32 biases of the ops in ``requantized`` (the int8 backbone's
    biases, recomputed from their float master after each step) and, with ``learn`` (the learn path over a
    buffer of cut tensors), ``batch`` int32 labels. The int8 ``known`` activations are the caller's
    (``known_bytes``)."""
    ops = step_ops(tail)
    plan = step_plan(tail, known)
    out = {"parameters": 4 * tail.parameter_count(),
           "int32_biases": 4 * sum(tail.params[k].bias.size for k in requantized),
           "values": 4 * batch * sum(_size(tail, t) for t in plan.values),
           "gradients": 4 * batch * plan.slots * plan.slot_size,
           "scratch": 4 * batch * plan.scratch_size,
           "descriptors": DESCRIPTOR_BYTES * len([op for op in ops if uses_descriptor(tail, op, known)])}
    if learn:
        out["labels"] = 4 * batch
    return out


def int8_weights(tail: Tail, known: tuple[str, ...] | set[str] = ()) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Parameter op -> (int8 weight, float32 scale per output channel) of the frozen weights the step keeps as the
    int8 backbone's own (dequantized on the fly in the backward): ops whose output is ``known`` (no float forward),
    weight not trained (a sparse subset: trained channels too, the others stay these int8 weights), int8 with zero
    point 0."""
    out = {}
    for op in step_ops(tail):
        if (op.name not in tail.params or op.outputs[0] not in set(known)
                or (tail.trains(op.name)[0] and tail.subset is None)):
            continue
        w = tail.graph.tensors[op.inputs[1]]
        if w.dtype != DType.INT8 or w.quant is None or np.any(np.asarray(w.quant.zero_point) != 0):
            continue
        n_out = tail.params[op.name].bias.size
        scale = np.asarray(w.quant.scale, np.float32).reshape(-1)
        out[op.name] = (np.asarray(w.data, np.int8), np.broadcast_to(scale, (n_out,)).astype(np.float32)
                        if scale.size in (1, n_out) else None)
    return {k: v for k, v in out.items() if v[1] is not None}


def step_flash(tail: Tail, requantized: tuple[str, ...] = (), known: tuple[str, ...] = ()) -> int:
    """Flash of the generated step's constants, bytes: the weights it does not train (float32, or int8 with a
    float32 scale per output channel for ``int8_weights``) and the bias scales of the ops in ``requantized``; a
    sparse subset: the frozen biases of the ops computed in float, and an int32 row index per output channel of each
    op whose channels train (``backends/c/deep_emit``'s ``tcc_row<k>``); the Add/Mul constants it reads
    (``step_consts``, float32)."""
    q = int8_weights(tail, known)
    frozen = sum(p.weight.size - tail.trained_sizes(k)[0] for k, p in tail.params.items() if k not in q)
    if tail.subset is not None:
        outs = {op.name: op.outputs[0] for op in step_ops(tail)}
        frozen += sum(p.bias.size - tail.trained_sizes(k)[1] for k, p in tail.params.items()
                      if outs[k] not in set(known))
        frozen += sum(tail.params[k].bias.size for k in q if tail.trains(k)[0])
    consts = sum(tail.graph.tensors[t].data.size for t in step_consts(tail, known))
    return (4 * (frozen + consts + sum(tail.params[k].bias.size for k in requantized))
            + sum(w.size + 4 * s.size for w, s in q.values()))
