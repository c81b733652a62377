"""Channel dependency analysis and structured channel removal.

Every channel position ``(tensor, index)`` of an activation is a node; positions that must be
removed together are joined (union-find): elementwise ops, BatchNorm, pooling, padding and
DepthwiseConv2D (input channel c with its outputs c*M..c*M+M-1) join input and output channels;
Add/Sub/Mul/Maximum/Minimum join both operands and the output (a broadcast [.., 1, 1, C] SE excitation follows the
channels it scales); Concatenate joins each input with its offset slice of the output; Flatten
joins channel c with its H*W positions ``(h*W + w)*C + c``. Conv2D and Dense start new positions
(their filters / units are the *producers*; TransposeConv2D too). A *unit* is one class of joined positions; it is
prunable when it has a producer and touches no graph input or output, no grouped convolution
(1 < groups < channels: kept whole, documented) and no Reshape that moves the channel axis (one that
keeps the last dimension, as 1-D layers lowered to 2-D ops use, joins channel c on both sides).

Removing a unit slices every constant indexed by its positions: producer filters and biases,
consumer input channels (Conv2D) and columns (Dense), depthwise filters, BatchNorm statistics,
PReLU alphas, per-channel Rescaling and per-channel constant operands of Add/Sub/Mul/Maximum/Minimum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .graph import Graph, Op
from .ops import LUT_KINDS, OpKind

Pos = tuple[str, int]
_PASS = {OpKind.RELU, OpKind.RELU6, OpKind.LEAKY_RELU, OpKind.SIGMOID, OpKind.HARD_SIGMOID, OpKind.TANH,
         OpKind.SWISH, OpKind.HARD_SWISH, OpKind.DROPOUT, OpKind.RESCALE, OpKind.BATCH_NORM, OpKind.PAD,
         OpKind.MAX_POOL2D, OpKind.AVG_POOL2D, OpKind.GLOBAL_AVG_POOL, OpKind.GLOBAL_MAX_POOL,
         OpKind.RESIZE_NEAREST, OpKind.RESIZE_BILINEAR, *LUT_KINDS}
_BINARY = (OpKind.ADD, OpKind.MUL, OpKind.SUB, OpKind.MAXIMUM, OpKind.MINIMUM)


@dataclass
class Unit:
    """Channel positions removed together, and the producers whose filters create them."""

    positions: list[Pos]
    producers: list[tuple[str, int]] = field(default_factory=list)  # (op name, output channel)
    prunable: bool = True
    reason: str = ""

    @property
    def family(self) -> tuple[str, ...]:
        return tuple(sorted({p for p, _ in self.producers}))


class _UF:
    def __init__(self) -> None:
        self.p: dict[Pos, Pos] = {}

    def find(self, a: Pos) -> Pos:
        self.p.setdefault(a, a)
        while self.p[a] != a:
            self.p[a] = self.p[self.p[a]]
            a = self.p[a]
        return a

    def union(self, a: Pos, b: Pos) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.p[max(ra, rb)] = min(ra, rb)


def _channels(graph: Graph, t: str) -> int:
    return graph.tensors[t].shape[-1]


def _act(graph: Graph, t: str) -> bool:
    return not graph.tensors[t].is_const


def analyse(graph: Graph) -> list[Unit]:
    """Units of the graph's channel positions, in a deterministic order."""
    uf = _UF()
    blocked: dict[Pos, str] = {}
    producers: dict[Pos, tuple[str, int]] = {}
    for name in graph.inputs:
        for c in range(_channels(graph, name)):
            blocked[(name, c)] = "model input"
    for op in graph.ops:
        out = op.outputs[0]
        n_out = _channels(graph, out)
        for c in range(n_out):
            uf.find((out, c))
        k = op.kind
        x = op.inputs[0]
        if k == OpKind.CONV2D and op.attrs["groups"] == 1 or k in (OpKind.DENSE, OpKind.TRANSPOSE_CONV2D):
            for c in range(n_out):
                producers[(out, c)] = (op.name, c)
        elif k == OpKind.CONV2D:  # grouped (1 < g < C): keep whole
            for t in (x, out):
                for c in range(_channels(graph, t)):
                    blocked[(t, c)] = f"grouped convolution {op.origin!r}"
            for c in range(n_out):
                producers[(out, c)] = (op.name, c)
        elif k == OpKind.DEPTHWISE_CONV2D:
            m = op.attrs["depth_multiplier"]
            for c in range(_channels(graph, x)):
                for j in range(m):
                    uf.union((x, c), (out, c * m + j))
        elif k in _PASS:
            if len(graph.tensors[x].shape) == len(graph.tensors[out].shape) or k in (OpKind.GLOBAL_AVG_POOL,
                                                                                   OpKind.GLOBAL_MAX_POOL):
                for c in range(n_out):
                    uf.union((x, c), (out, c))
        elif k == OpKind.PRELU:  # alpha is sliced with the channels (or shared across them)
            for c in range(n_out):
                uf.union((x, c), (out, c))
        elif k in _BINARY:
            for t in op.inputs:
                if _act(graph, t) and _channels(graph, t) == n_out:
                    for c in range(n_out):
                        uf.union((t, c), (out, c))
        elif k == OpKind.CONCAT:
            axis = op.attrs["axis"]
            if axis != len(graph.tensors[out].shape) - 1:
                for t in op.inputs + [out]:
                    for c in range(_channels(graph, t)):
                        blocked[(t, c)] = f"concatenation {op.origin!r} not on the channel axis"
            off = 0
            for t in op.inputs:
                for c in range(_channels(graph, t)):
                    if _act(graph, t):
                        uf.union((t, c), (out, off + c))
                off += _channels(graph, t)
        elif k == OpKind.FLATTEN:
            shp = graph.tensors[x].shape
            cin = shp[-1]
            spatial = math.prod(shp[1:-1])
            for c in range(cin):
                for s in range(spatial):
                    uf.union((x, c), (out, s * cin + c))
        elif k in (OpKind.SLICE, OpKind.REVERSE) and op.attrs["axis"] != len(graph.tensors[x].shape) - 1:
            for c in range(n_out):
                uf.union((x, c), (out, c))
        elif k == OpKind.TRANSPOSE and op.attrs["perm"][-1] == len(op.attrs["perm"]) - 1:  # channels stay last
            for c in range(n_out):
                uf.union((x, c), (out, c))
        elif k == OpKind.RESHAPE and _channels(graph, x) == n_out:  # NHWC: element s*C + c keeps channel c
            for c in range(n_out):
                uf.union((x, c), (out, c))
        else:  # other reshapes and anything unknown: keep both sides whole
            for t in [x, out]:
                for c in range(_channels(graph, t)):
                    blocked[(t, c)] = f"{k.value} {op.origin!r}"
    for name in graph.outputs:
        for c in range(_channels(graph, name)):
            blocked[(name, c)] = "model output"
    classes: dict[Pos, Unit] = {}
    for pos in list(uf.p):
        root = uf.find(pos)
        classes.setdefault(root, Unit([])).positions.append(pos)
    units = []
    for root in sorted(classes):
        u = classes[root]
        u.positions.sort()
        u.producers = sorted(producers[p] for p in u.positions if p in producers)
        reasons = [blocked[p] for p in u.positions if p in blocked]
        if reasons:
            u.prunable, u.reason = False, reasons[0]
        elif not u.producers:
            u.prunable, u.reason = False, "no producing filter"
        units.append(u)
    return units


def unit_scores(graph: Graph, units: list[Unit], criterion) -> np.ndarray:
    """Group score = sum over the unit's producers of criterion(filter weights) (L1: sum |w|)."""
    ops = {o.name: o for o in graph.ops}
    cache: dict[str, np.ndarray] = {}
    scores = np.zeros(len(units))
    for i, u in enumerate(units):
        for name, c in u.producers:
            if name not in cache:
                w = graph.tensors[ops[name].inputs[1]].data
                cache[name] = np.asarray(criterion(w), np.float64)
            scores[i] += cache[name][c]
    return scores


def unit_params(graph: Graph, units: list[Unit]) -> np.ndarray:
    """Parameters each unit's removal saves: its producers' filters and biases, and the weights that read it."""
    readers: dict[str, list[Op]] = {}
    for op in graph.ops:
        readers.setdefault(op.inputs[0], []).append(op)
    ops = {o.name: o for o in graph.ops}
    out = np.zeros(len(units))
    for i, u in enumerate(units):
        n = 0
        for name, _ in u.producers:
            op = ops[name]
            n += graph.tensors[op.inputs[1]].size // graph.tensors[op.inputs[1]].shape[0]
            n += 1 if len(op.inputs) > 2 else 0
        for t, _ in u.positions:
            for op in readers.get(t, []):
                w = graph.tensors[op.inputs[1]] if len(op.inputs) > 1 else None
                if op.kind == OpKind.CONV2D and op.attrs["groups"] == 1 or op.kind == OpKind.TRANSPOSE_CONV2D:
                    n += w.shape[0] * w.shape[1] * w.shape[2]
                elif op.kind == OpKind.DENSE:
                    n += w.shape[0]
                elif op.kind == OpKind.DEPTHWISE_CONV2D:
                    n += (w.shape[1] * w.shape[2] + (1 if len(op.inputs) > 2 else 0)) * op.attrs["depth_multiplier"]
                elif op.kind == OpKind.BATCH_NORM:
                    n += 4
                elif op.kind == OpKind.PRELU and w.shape and w.shape[-1] > 1:
                    n += w.size // w.shape[-1]
        out[i] = n
    return out


def remove(graph: Graph, units: list[Unit], drop: list[int]) -> None:
    """Remove the units with indices ``drop`` from the graph (in place)."""
    gone: dict[str, set[int]] = {}
    for i in drop:
        for t, c in units[i].positions:
            gone.setdefault(t, set()).add(c)
    if not gone:
        return

    def keep(t: str) -> np.ndarray:
        n = _channels(graph, t)
        return np.array([c not in gone.get(t, ()) for c in range(n)])

    for op in graph.ops:
        x, out = op.inputs[0], op.outputs[0]
        ko, ki = keep(out), keep(x)
        k = op.kind
        if k in (OpKind.CONV2D, OpKind.DENSE, OpKind.DEPTHWISE_CONV2D, OpKind.TRANSPOSE_CONV2D):
            w = graph.tensors[op.inputs[1]]
            if k == OpKind.TRANSPOSE_CONV2D:
                data = w.data[ko][..., ki]
            elif k == OpKind.CONV2D:
                data = w.data[ko] if op.attrs["groups"] > 1 else w.data[ko][..., ki]
            elif k == OpKind.DENSE:
                data = w.data[ko][:, ki]
            else:
                data = w.data[..., ko]
            _set(graph, op, 1, data)
            if len(op.inputs) > 2:
                _set(graph, op, 2, graph.tensors[op.inputs[2]].data[ko])
        elif k == OpKind.BATCH_NORM:
            for i in range(1, 5):
                _set(graph, op, i, graph.tensors[op.inputs[i]].data[ko])
        elif k == OpKind.PRELU:
            al = graph.tensors[op.inputs[1]]
            if al.shape and al.shape[-1] == len(ko) > 1:
                _set(graph, op, 1, al.data[..., ko])
        elif k == OpKind.RESCALE:
            for a in ("scale", "offset"):
                if isinstance(op.attrs[a], tuple):
                    op.attrs[a] = tuple(np.asarray(op.attrs[a])[ko].tolist())
        elif k == OpKind.RESHAPE and op.attrs["shape"] and op.attrs["shape"][-1] == len(ko) == len(ki):
            op.attrs["shape"] = tuple(op.attrs["shape"][:-1]) + (int(ko.sum()),)
        elif k in _BINARY + (OpKind.CONCAT,):
            for i, t in enumerate(op.inputs):
                ten = graph.tensors[t]
                if ten.is_const and ten.shape and ten.shape[-1] == len(ko) and len(ko) > 1 and k != OpKind.CONCAT:
                    _set(graph, op, i, ten.data[..., ko])
    graph.infer_shapes()
    graph.prune_unused()


def _set(graph: Graph, op: Op, i: int, data: np.ndarray) -> None:
    old = graph.tensors[op.inputs[i]]
    name = graph.unique_tensor_name(old.name)
    graph.add_const(name, np.ascontiguousarray(data), old.dtype)
    op.inputs[i] = name
