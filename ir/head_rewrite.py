"""Pool before a linear 1x1 convolution: the SqueezeNet-style classifier head as a Dense layer.

A Conv2D with a 1x1 kernel, stride 1, no groups and no activation, read only by a global average pooling, computes
``mean_hw(W x + b) = W mean_hw(x) + b``: pooling first gives the same result in real arithmetic at 1/(H*W) of the
MACs, and leaves a 1x1 convolution on a 1x1 map, which the cut and on-device training treat as a Dense layer
(``conv1x1_to_dense`` for float graphs, ``is_dense_head`` for int8 ones).

int8 graphs (a converter's file) keep their operators for inference, which must stay bit-exact with the file; the
rewrite is used there only for on-device learning, where everything after the pooling becomes the float classifier
(the head starts from the dequantized convolution weights). The new pooling keeps its input's int8 parameters, as
TFLite's average pooling does; the convolution's output takes the old pooling's output parameters.
"""
from __future__ import annotations

from .graph import Graph, Op
from .ops import OpKind


def _linear_pointwise(graph: Graph, op: Op) -> bool:
    if op.kind != OpKind.CONV2D or op.attrs.get("groups", 1) != 1 or op.attrs.get("activation", "none") != "none":
        return False
    x, w = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    return (w.data is not None and len(x.shape) == 4 and tuple(w.shape[1:3]) == (1, 1)
            and tuple(op.attrs.get("strides", (1, 1))) == (1, 1) and tuple(x.shape[1:3]) != (1, 1))


def pool_before_pointwise(graph: Graph) -> bool:
    """Rewrite every linear 1x1 Conv2D read only by a global average pooling as pooling -> 1x1 Conv2D on the 1x1
    map (-> Reshape to [N, O] where the pooling dropped the spatial axes). True when something changed."""
    changed = False
    for conv in [o for o in graph.ops if _linear_pointwise(graph, o)]:
        readers = graph.consumers(conv.outputs[0])
        if len(readers) != 1 or conv.outputs[0] in graph.outputs:
            continue
        pool = readers[0]
        if pool.kind != OpKind.GLOBAL_AVG_POOL:
            continue
        x = graph.tensors[conv.inputs[0]]
        at = graph.ops.index(conv)
        pooled = graph.add_op(OpKind.GLOBAL_AVG_POOL, [x.name], f"{pool.name}_first",
                              {"keepdims": True, "requantize": False}, origin=pool.origin, index=at)
        graph.tensors[pooled.outputs[0]].quant = x.quant
        conv.inputs[0] = pooled.outputs[0]
        out = graph.tensors[conv.outputs[0]]
        out.shape = (out.shape[0], 1, 1, out.shape[3])
        old = graph.tensors[pool.outputs[0]]
        out.quant = old.quant
        if pool.attrs.get("keepdims"):
            graph.bypass(pool)
        else:
            pool.kind = OpKind.RESHAPE
            pool.attrs = {"shape": tuple(old.shape[1:])}
        changed = True
    if changed:
        graph.prune_unused()
    return changed
