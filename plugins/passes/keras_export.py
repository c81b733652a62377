"""IR -> trainable Keras model (for fine-tuning after pruning) and trained weights back into the IR.

Each op becomes one Keras layer named after the op (``/`` from nested models becomes ``__``);
weights are transposed back to Keras layouts. Round trip: ``graph_from_keras_model(graph_to_keras(g))``
has the same op kinds, attributes and weights bit for bit.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import UnsupportedLayerError
from ...ir.graph import Graph, Op
from ...ir.ops import OpKind


def _lname(op: Op) -> str:
    return op.name.replace("/", "__")


def _alpha_shape(graph: Graph, op: Op) -> tuple[int, ...]:
    """A prelu's alpha at Keras's rank (the input's shape without the batch axis, 1 on shared axes)."""
    rank = len(graph.tensors[op.inputs[0]].shape) - 1
    al = graph.tensors[op.inputs[1]].shape
    return (1,) * (rank - len(al)) + tuple(al)


def _weights(graph: Graph, op: Op) -> list[np.ndarray]:
    if op.kind == OpKind.PRELU:
        return [graph.tensors[op.inputs[1]].data.reshape(_alpha_shape(graph, op))]
    if op.kind == OpKind.BATCH_NORM:
        return [graph.tensors[t].data for t in op.inputs[1:5]]
    if op.kind not in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE):
        return []
    w = graph.tensors[op.inputs[1]].data
    rest = [graph.tensors[t].data for t in op.inputs[2:]]
    if op.kind == OpKind.CONV2D:
        return [w.transpose(1, 2, 3, 0)] + rest
    if op.kind == OpKind.DEPTHWISE_CONV2D:
        _, kh, kw, cm = w.shape
        m = op.attrs["depth_multiplier"]
        return [w.reshape(kh, kw, cm // m, m)] + rest
    if op.kind == OpKind.DENSE:
        return [w.T] + rest
    return []


def _layer(op: Op, graph: Graph) -> Any:
    import keras

    L = keras.layers
    a, name = op.attrs, _lname(op)
    act = None if a.get("activation", "none") == "none" else a["activation"]
    k = op.kind
    if k == OpKind.CONV2D:
        w = graph.tensors[op.inputs[1]].shape
        return L.Conv2D(w[0], (w[1], w[2]), strides=a["strides"], padding=a["padding"], dilation_rate=a["dilation"],
                        groups=a["groups"], use_bias=len(op.inputs) > 2, activation=act, name=name)
    if k == OpKind.DEPTHWISE_CONV2D:
        w = graph.tensors[op.inputs[1]].shape
        return L.DepthwiseConv2D((w[1], w[2]), strides=a["strides"], padding=a["padding"],
                                 dilation_rate=a["dilation"], depth_multiplier=a["depth_multiplier"],
                                 use_bias=len(op.inputs) > 2, activation=act, name=name)
    if k == OpKind.DENSE:
        return L.Dense(graph.tensors[op.inputs[1]].shape[0], use_bias=len(op.inputs) > 2, activation=act, name=name)
    if k == OpKind.BATCH_NORM:
        return L.BatchNormalization(epsilon=a["epsilon"], name=name)
    simple = {OpKind.RELU: "relu", OpKind.RELU6: "relu6", OpKind.SIGMOID: "sigmoid",
              OpKind.HARD_SIGMOID: "hard_sigmoid", OpKind.TANH: "tanh", OpKind.SWISH: "swish",
              OpKind.HARD_SWISH: "hard_swish", OpKind.SOFTMAX: "softmax", OpKind.SOFTPLUS: "softplus",
              OpKind.SOFTSIGN: "softsign", OpKind.SELU: "selu", OpKind.MISH: "mish",
              OpKind.EXPONENTIAL: "exponential"}
    if k in simple:
        return L.Activation(simple[k], name=name)
    if k == OpKind.PRELU:
        xs = graph.tensors[op.inputs[0]].shape[1:]
        shared = [i + 1 for i, (a, d) in enumerate(zip(_alpha_shape(graph, op), xs)) if a == 1 and d != 1]
        return L.PReLU(shared_axes=shared or None, name=name)
    if k == OpKind.ELU:
        return L.ELU(alpha=a["alpha"], name=name)
    if k == OpKind.GELU and not a["approximate"]:
        return L.Activation("gelu", name=name)
    if k == OpKind.LEAKY_RELU:
        return L.LeakyReLU(negative_slope=a["alpha"], name=name)
    if k == OpKind.MAX_POOL2D:
        return L.MaxPooling2D(a["pool_size"], a["strides"], a["padding"], name=name)
    if k == OpKind.AVG_POOL2D:
        return L.AveragePooling2D(a["pool_size"], a["strides"], a["padding"], name=name)
    if k == OpKind.GLOBAL_AVG_POOL:
        return L.GlobalAveragePooling2D(keepdims=a["keepdims"], name=name)
    if k == OpKind.GLOBAL_MAX_POOL:
        return L.GlobalMaxPooling2D(keepdims=a["keepdims"], name=name)
    if k == OpKind.FLATTEN:
        return L.Flatten(name=name)
    if k == OpKind.RESHAPE:
        return L.Reshape(a["shape"], name=name)
    if k == OpKind.CONCAT:
        return L.Concatenate(axis=a["axis"], name=name)
    if k == OpKind.PAD:
        return L.ZeroPadding2D(a["paddings"], name=name)
    if k == OpKind.DROPOUT:
        return L.Dropout(a["rate"], name=name)
    if k == OpKind.RESCALE:
        return L.Rescaling(a["scale"], a["offset"], name=name)
    raise UnsupportedLayerError(f"{op.describe()} cannot be exported to Keras")


def graph_to_keras(graph: Graph) -> Any:
    """Build a trainable functional Keras model equivalent to a float IR graph."""
    import keras

    env: dict[str, Any] = {}
    inputs = []
    for name in graph.inputs:
        kt = keras.Input(graph.tensors[name].shape[1:], name=name.replace("/", "__"))
        env[name] = kt
        inputs.append(kt)
    for op in graph.ops:
        if op.kind in (OpKind.ADD, OpKind.MUL) and any(graph.tensors[t].is_const for t in op.inputs):
            raise UnsupportedLayerError(f"{op.describe()} with a constant operand cannot be exported to Keras")
        args = [env[t] for t in op.inputs if not graph.tensors[t].is_const]
        if op.kind in (OpKind.ADD, OpKind.MUL):
            layer = (keras.layers.Add if op.kind == OpKind.ADD else keras.layers.Multiply)(name=_lname(op))
            y = layer(args)
            if op.attrs["activation"] != "none":
                y = keras.layers.Activation(op.attrs["activation"], name=f"{_lname(op)}_act")(y)
        elif op.kind == OpKind.CONCAT:
            y = _layer(op, graph)(args)
        else:
            layer = _layer(op, graph)
            y = layer(args[0])
            w = _weights(graph, op)
            if w:
                layer.set_weights(w)
        env[op.outputs[0]] = y
    return keras.Model(inputs, [env[t] for t in graph.outputs], name=graph.name)


def update_graph_weights(graph: Graph, model: Any) -> None:
    """Copy (trained) weights of ``model`` (made by graph_to_keras) back into ``graph``."""
    for op in graph.ops:
        if op.kind not in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE, OpKind.BATCH_NORM, OpKind.PRELU):
            continue
        ws = [np.asarray(w, np.float32) for w in model.get_layer(_lname(op)).get_weights()]
        if op.kind == OpKind.PRELU:
            ws[0] = ws[0].reshape(graph.tensors[op.inputs[1]].shape)
        if op.kind == OpKind.CONV2D:
            ws[0] = ws[0].transpose(3, 0, 1, 2)
        elif op.kind == OpKind.DEPTHWISE_CONV2D:
            kh, kw, c, m = ws[0].shape
            ws[0] = ws[0].reshape(1, kh, kw, c * m)
        elif op.kind == OpKind.DENSE:
            ws[0] = ws[0].T
        for t, w in zip(op.inputs[1:], ws):
            graph.tensors[t].data = np.ascontiguousarray(w, dtype=np.float32)
