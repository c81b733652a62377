"""Standard cleanup passes: dropout removal, BatchNorm folding, activation fusion, Rescaling folding.

- ``remove_dropout``: Dropout (and identity ops the frontend kept for names) are inference no-ops.
- ``pool_before_pointwise``: a linear 1x1 Conv2D (stride 1, no groups, no activation) read only by a global
  average pooling (the SqueezeNet head) is computed after the pooling instead: mean(Wx + b) = W mean(x) + b, at
  1/(H*W) of the MACs, and the 1x1 Conv2D on the 1x1 map is then a Dense layer (``tinycc.ir.head_rewrite``).
- ``conv1x1_to_dense``: a Conv2D with a 1x1 kernel on a 1x1 map (global pooling with keepdims ->
  Conv2D 1x1, the classifier head of Keras Applications' MobileNets and TFLite Micro's person
  detection) is exactly a Dense layer: it becomes Reshape [C] -> Dense (weights [O, C]) -> Reshape
  [1, 1, O] (same origin, same output tensor), and ``fold_reshapes`` then merges the reshapes with
  the model's own Reshape/Flatten, so the cut, on-device training and pruning see a Dense head.
- ``fold_reshapes``: 1-D layers run as 2-D ops between reshapes that keep the channel axis. BN,
  Rescaling and activations after such a reshape move above it (they act per channel), so they
  fold/fuse into the producing conv as in 2-D models; a Reshape/Flatten reading another one reads
  its source instead (the first is dropped when nothing else reads it); a no-op Reshape/Flatten is
  removed.
- ``fold_transposes``: a Transpose whose only reader is a Flatten/Reshape to [N, K] feeding a Dense
  (PyTorch's NCHW flatten before the classifier) is removed and the Dense's columns are permuted instead.
- ``fold_batchnorm``: BN right after Conv2D/DepthwiseConv2D/Dense (whose output has no other
  reader and no fused activation) is folded into the weights and bias; other BNs stay.
- ``fuse_activations``: ReLU/ReLU6 after Conv2D/DepthwiseConv2D/Dense/Add/Mul becomes the
  producer's ``activation`` attribute (as TFLite fuses them), when the producer has one reader.
- ``fold_rescaling``: a Rescaling that feeds only a Conv2D/Dense folds into its weights and bias
  when exact: scale always; a non-zero offset only if no zero padding is applied ('valid' conv
  or Dense), because padded zeros would otherwise receive the offset.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pluggy

from ...ir.graph import Graph, Op
from ...ir.head_rewrite import pool_before_pointwise
from ...ir.ops import LUT_KINDS, OpKind
from ...passes import Pass, PassContext

hookimpl = pluggy.HookimplMarker("tinycc")

_LINEAR = (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE)


def _single_reader(graph: Graph, tensor: str) -> Op | None:
    readers = graph.consumers(tensor)
    if len(readers) != 1 or tensor in graph.outputs:
        return None
    return readers[0]


def _out_axis_weights(graph: Graph, op: Op) -> np.ndarray:
    """Weights reshaped so that axis 0 is the output channel."""
    w = graph.tensors[op.inputs[1]].data
    if op.kind == OpKind.DEPTHWISE_CONV2D:
        return np.moveaxis(w, 3, 0)
    return w


def _set_out_axis_weights(graph: Graph, op: Op, w: np.ndarray) -> None:
    if op.kind == OpKind.DEPTHWISE_CONV2D:
        w = np.moveaxis(w, 0, 3)
    name = graph.unique_tensor_name(op.inputs[1])
    graph.add_const(name, np.ascontiguousarray(w, dtype=np.float32))
    op.inputs[1] = name


def _bias(graph: Graph, op: Op) -> np.ndarray:
    n = graph.tensors[op.outputs[0]].shape[-1]
    return graph.tensors[op.inputs[2]].data.copy() if len(op.inputs) > 2 else np.zeros(n, np.float32)


def _set_bias(graph: Graph, op: Op, b: np.ndarray) -> None:
    name = graph.unique_tensor_name(op.inputs[2] if len(op.inputs) > 2 else f"{op.name}/bias")
    graph.add_const(name, b.astype(np.float32))
    if len(op.inputs) > 2:
        op.inputs[2] = name
    else:
        op.inputs.append(name)


class RemoveDropout(Pass):
    name = "remove_dropout"
    description = "remove Dropout and identity ops (inference no-ops)"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        changed = False
        for op in [o for o in graph.ops if o.kind == OpKind.DROPOUT]:
            if op.outputs[0] in graph.outputs and op.inputs[0] in graph.inputs:
                continue
            graph.bypass(op)
            changed = True
        graph.prune_unused()
        return changed


_PER_CHANNEL = (OpKind.RELU, OpKind.RELU6, OpKind.LEAKY_RELU, OpKind.SIGMOID, OpKind.HARD_SIGMOID, OpKind.TANH,
                OpKind.SWISH, OpKind.HARD_SWISH, OpKind.BATCH_NORM, OpKind.RESCALE, *LUT_KINDS)


def _keeps_channels(graph: Graph, op: Op) -> bool:
    return op.kind == OpKind.RESHAPE and \
        graph.tensors[op.inputs[0]].shape[-1] == graph.tensors[op.outputs[0]].shape[-1]


def _hoist(graph: Graph, reshape: Op, op: Op) -> None:
    """Run the per-channel ``op`` before ``reshape`` (same values: it acts on the last axis only). The op's output
    in the reshape's input shape is a new tensor with the op's output type and parameters (a quantized file: the
    op's own); the reshape's old output, read only by the op, goes."""
    src, mid, dst = reshape.inputs[0], reshape.outputs[0], op.outputs[0]
    out = graph.tensors[dst]
    new = graph.add_tensor(replace(out, name=graph.unique_tensor_name(f"{dst}/unreshaped"),
                                   shape=graph.tensors[src].shape, meta=dict(out.meta)))
    op.inputs[0], op.outputs = src, [new.name]
    reshape.inputs, reshape.outputs = [new.name], [dst]
    graph.ops.remove(op)
    graph.ops.insert(graph.ops.index(reshape), op)
    del graph.tensors[mid]


def _pointwise_on_1x1(graph: Graph, op: Op) -> bool:
    """A Conv2D that is a Dense layer: 1x1 kernel, no groups, a 1x1 input map (hence a 1x1 output)."""
    x, w = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    return op.kind == OpKind.CONV2D and op.attrs.get("groups", 1) == 1 and w.data is not None and \
        len(x.shape) == 4 and tuple(x.shape[1:3]) == (1, 1) and tuple(w.shape[1:3]) == (1, 1) and \
        tuple(graph.tensors[op.outputs[0]].shape[1:3]) == (1, 1)


class PoolBeforePointwise(Pass):
    name = "pool_before_pointwise"
    description = "a linear 1x1 Conv2D read by global average pooling: pool first (exact; a Dense head, fewer MACs)"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        if graph.meta.get("quantized"):  # int8: the file's operators stay as they are (learning rewrites a copy)
            return False
        return pool_before_pointwise(graph)


class Conv1x1ToDense(Pass):
    name = "conv1x1_to_dense"
    description = "a 1x1 Conv2D on a 1x1 map becomes Reshape + Dense + Reshape (a conv classifier head is Dense)"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        if graph.meta.get("quantized"):  # int8: the file's operators stay as they are
            return False
        changed = False
        for op in [o for o in graph.ops if o.kind == OpKind.CONV2D and _pointwise_on_1x1(graph, o)]:
            at = graph.ops.index(op)
            graph.ops.remove(op)
            src, dst, w = op.inputs[0], op.outputs[0], graph.tensors[op.inputs[1]]
            out_shape = graph.tensors.pop(dst).shape
            flat = graph.add_op(OpKind.RESHAPE, [src], f"{op.name}_flat", {"shape": (w.shape[3],)},
                                origin=op.origin, index=at)
            kernel = graph.add_const(f"{op.inputs[1]}_dense", w.data.reshape(w.shape[0], w.shape[3]))
            dense = graph.add_op(OpKind.DENSE, [flat.outputs[0], kernel.name] + op.inputs[2:], op.name,
                                 {"activation": op.attrs.get("activation", "none")}, origin=op.origin,
                                 output_name=f"{dst}_dense", index=at + 1)
            graph.add_op(OpKind.RESHAPE, dense.outputs, f"{op.name}_map", {"shape": tuple(out_shape[1:])},
                         origin=op.origin, output_name=dst, index=at + 2)
            changed = True
        graph.prune_unused()
        return changed


class FoldReshapes(Pass):
    name = "fold_reshapes"
    description = "hoist per-channel ops above channel-keeping reshapes, merge chained reshapes, drop no-op ones"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        changed = False
        kinds = (OpKind.RESHAPE, OpKind.FLATTEN)
        moved = True
        while moved:  # BN/activations move up until they meet their producer (to be folded or fused)
            moved = False
            for op in [o for o in graph.ops if _keeps_channels(graph, o)]:
                nxt = _single_reader(graph, op.outputs[0])
                if nxt is not None and nxt.kind in _PER_CHANNEL and nxt.inputs[0] == op.outputs[0]:
                    _hoist(graph, op, nxt)
                    moved = changed = True
        for op in [o for o in graph.ops if o.kind in kinds]:
            prev = graph.producer(op.inputs[0])
            if prev is not None and prev.kind in kinds:
                op.inputs[0] = prev.inputs[0]
                if not graph.consumers(prev.outputs[0]) and prev.outputs[0] not in graph.outputs:
                    graph.remove_op(prev)
                changed = True
            src, dst = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
            if src.shape == dst.shape and op.outputs[0] not in graph.outputs:
                graph.bypass(op)
                changed = True
        graph.prune_unused()
        return changed


class FoldBatchNorm(Pass):
    name = "fold_batchnorm"
    description = "fold BatchNormalization into the preceding Conv2D/DepthwiseConv2D/Dense"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        changed = False
        producers = graph.producers_map()
        for bn in [o for o in graph.ops if o.kind == OpKind.BATCH_NORM]:
            prev = producers.get(bn.inputs[0])
            if prev is None or prev.kind not in _LINEAR or prev.attrs["activation"] != "none":
                continue
            if _single_reader(graph, prev.outputs[0]) is not bn:
                continue
            gamma, beta, mean, var = (graph.tensors[t].data.astype(np.float64) for t in bn.inputs[1:5])
            scale = gamma / np.sqrt(var + bn.attrs["epsilon"])
            w = _out_axis_weights(graph, prev).astype(np.float64)
            w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
            b = (_bias(graph, prev).astype(np.float64) - mean) * scale + beta
            _set_out_axis_weights(graph, prev, w)
            _set_bias(graph, prev, b)
            graph.bypass(bn)
            producers = graph.producers_map()
            changed = True
        graph.prune_unused()
        return changed


class FuseActivations(Pass):
    name = "fuse_activations"
    description = "fuse ReLU/ReLU6 into the producing Conv2D/DepthwiseConv2D/Dense/Add/Mul/Sub"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        if graph.meta.get("quantized"):  # int8: a standalone ReLU may requantize, fusing it would round differently
            return False
        changed = False
        producers = graph.producers_map()
        for act in [o for o in graph.ops if o.kind in (OpKind.RELU, OpKind.RELU6)]:
            prev = producers.get(act.inputs[0])
            if prev is None or prev.kind not in _LINEAR + (OpKind.ADD, OpKind.MUL, OpKind.SUB, OpKind.TRANSPOSE_CONV2D):
                continue
            if prev.attrs["activation"] != "none" or _single_reader(graph, prev.outputs[0]) is not act:
                continue
            prev.attrs["activation"] = act.kind.value
            # keep the activation's tensor name: later references (cut points, outputs) still resolve
            old, new = prev.outputs[0], act.outputs[0]
            graph.ops.remove(act)
            prev.outputs = [new]
            graph.tensors.pop(old, None)
            producers = graph.producers_map()
            changed = True
        graph.prune_unused()
        return changed


class FoldRescaling(Pass):
    name = "fold_rescaling"
    description = "fold Rescaling into the following Conv2D/Dense when exact"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        changed = False
        for rs in [o for o in graph.ops if o.kind == OpKind.RESCALE]:
            nxt = _single_reader(graph, rs.outputs[0])
            if nxt is None or nxt.kind not in (OpKind.CONV2D, OpKind.DENSE) or nxt.inputs[0] != rs.outputs[0]:
                continue
            if nxt.kind == OpKind.CONV2D and nxt.attrs["groups"] != 1:
                continue
            cin = graph.tensors[rs.inputs[0]].shape[-1]
            scale = np.broadcast_to(np.asarray(rs.attrs["scale"], np.float64), (cin,))
            offset = np.broadcast_to(np.asarray(rs.attrs["offset"], np.float64), (cin,))
            padded = nxt.kind == OpKind.CONV2D and nxt.attrs["padding"] == "same" and \
                graph.tensors[nxt.inputs[1]].shape[1:3] != (1, 1)
            if padded and np.any(offset != 0):
                continue
            w = graph.tensors[nxt.inputs[1]].data.astype(np.float64)  # [O, ..., I]
            b = _bias(graph, nxt).astype(np.float64)
            b = b + (w * offset).reshape(w.shape[0], -1).sum(axis=1) if np.any(offset != 0) else b
            w = w * scale
            _set_out_axis_weights(graph, nxt, w)
            if np.any(offset != 0) or len(nxt.inputs) > 2:
                _set_bias(graph, nxt, b)
            graph.bypass(rs)
            changed = True
        graph.prune_unused()
        return changed


class FoldTransposes(Pass):
    name = "fold_transposes"
    description = "a Transpose read only by a Flatten/Reshape into a Dense folds into the Dense's columns"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        if graph.meta.get("quantized"):  # int8: the file's operators stay as they are
            return False
        changed = False
        for tr in [o for o in graph.ops if o.kind == OpKind.TRANSPOSE]:
            flat = _single_reader(graph, tr.outputs[0])
            if flat is None or flat.kind not in (OpKind.FLATTEN, OpKind.RESHAPE) or tr.outputs[0] in graph.outputs \
                    or len(graph.tensors[flat.outputs[0]].shape) != 2:
                continue
            dense = _single_reader(graph, flat.outputs[0])
            if dense is None or dense.kind != OpKind.DENSE or dense.inputs[0] != flat.outputs[0] \
                    or flat.outputs[0] in graph.outputs:
                continue
            src = graph.tensors[tr.inputs[0]].shape[1:]
            order = np.transpose(np.arange(int(np.prod(src))).reshape(src), [p - 1 for p in tr.attrs["perm"][1:]])
            w = graph.tensors[dense.inputs[1]].data
            folded = np.zeros_like(w)
            folded[:, order.reshape(-1)] = w  # flattened transposed element k is element order[k] of the source
            name = graph.unique_tensor_name(f"{dense.inputs[1]}_untransposed")
            graph.add_const(name, folded)
            dense.inputs[1] = name
            flat.inputs[0] = tr.inputs[0]
            graph.ops.remove(tr)
            changed = True
        graph.prune_unused()
        return changed


PASSES = (RemoveDropout, PoolBeforePointwise, Conv1x1ToDense, FoldReshapes, FoldTransposes, FoldBatchNorm, FuseActivations,
          FoldRescaling)


@hookimpl
def tinycc_register_passes(registry: Any) -> None:
    """The ``cleanup`` stage, in this order (also the built-in pipeline ``cleanup``)."""
    for prev, p in zip((None,) + PASSES, PASSES):
        registry.add_pass(p, "cleanup", after=prev.name if prev else ())
