"""Keras `.h5`/`.keras` files read without TensorFlow: the model config (JSON) and weights (h5py).

``load_direct`` builds the same float IR as the Keras path (``keras_frontend``), which loads the file with
Keras: layers are visited in the order Keras's functional graph gives them (depth from the outputs, then
depth-first order), the config arguments are normalised as Keras does, weights are matched to layers as
Keras's loaders match them (by position, checked against the names) and are checked for count and shape.
The same converters then lower each layer. Whatever this reader does not cover (nested models, shared
layers, custom or unknown classes or arguments, non-float dtypes, keras.ops calls, malformed files) raises
``NotCovered`` and the frontend falls back to the Keras path, whose result (or error) is authoritative.
"""
from __future__ import annotations

import io
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...ir.graph import Graph
from .keras_legacy import convert_op_lambda, is_keras2


class NotCovered(Exception):
    """The direct reader does not cover this file: use the Keras path."""


# ---- per-class arguments: read (semantic) or inert (ignored whatever their value) ----------------------
_CONV = {"filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate", "groups", "activation",
         "use_bias"}
_DW = {"kernel_size", "strides", "padding", "data_format", "dilation_rate", "depth_multiplier", "activation",
       "use_bias", "groups"}
_POOL = {"pool_size", "strides", "padding", "data_format"}
_GLOBAL = {"data_format", "keepdims"}
_ARGS: dict[str, set[str]] = {
    "Conv2D": _CONV, "Conv1D": _CONV, "DepthwiseConv2D": _DW, "DepthwiseConv1D": _DW,
    "SeparableConv2D": _DW | {"filters"}, "SeparableConv1D": _DW | {"filters"},
    "Dense": {"units", "activation", "use_bias", "quantization_config", "lora_rank", "lora_alpha"},
    "BatchNormalization": {"axis", "momentum", "epsilon", "center", "scale", "synchronized", "renorm",
                           "renorm_clipping", "renorm_momentum", "fused", "virtual_batch_size", "adjustment"},
    "ReLU": {"max_value", "negative_slope", "threshold"}, "LeakyReLU": {"negative_slope", "alpha"},
    "PReLU": {"shared_axes"}, "ELU": {"alpha"},
    "Activation": {"activation"}, "Softmax": {"axis"},
    "MaxPooling2D": _POOL, "AveragePooling2D": _POOL, "MaxPooling1D": _POOL, "AveragePooling1D": _POOL,
    "GlobalAveragePooling2D": _GLOBAL, "GlobalMaxPooling2D": _GLOBAL, "GlobalAveragePooling1D": _GLOBAL,
    "GlobalMaxPooling1D": _GLOBAL, "Flatten": {"data_format"}, "Reshape": {"target_shape"}, "Add": set(),
    "Multiply": set(), "Concatenate": {"axis"}, "ZeroPadding2D": {"padding", "data_format"},
    "ZeroPadding1D": {"padding", "data_format"}, "Dropout": {"rate", "noise_shape", "seed"},
    "SpatialDropout2D": {"rate", "data_format", "seed"}, "GaussianNoise": {"stddev", "seed"},
    "GaussianDropout": {"rate", "seed"}, "Rescaling": {"scale", "offset"},
    "LSTM": {"units", "activation", "recurrent_activation", "use_bias", "unit_forget_bias", "dropout",
             "recurrent_dropout", "seed", "return_sequences", "return_state", "go_backwards", "stateful", "unroll",
             "zero_output_for_mask", "use_cudnn", "implementation", "time_major"},
    "Bidirectional": {"layer", "backward_layer", "merge_mode"},
}
_RNN_ARGS = {"units", "activation", "use_bias", "dropout", "recurrent_dropout", "seed", "return_sequences",
             "return_state", "go_backwards", "stateful", "unroll", "zero_output_for_mask", "use_cudnn",
             "implementation", "time_major"}
_ARGS["GRU"] = _RNN_ARGS | {"recurrent_activation", "reset_after"}
_ARGS["SimpleRNN"] = set(_RNN_ARGS)
_RECURRENT = ("LSTM", "GRU", "SimpleRNN")  # their weights are on their cell; a Bidirectional read here wraps one
_COMMON = {"name", "trainable", "dtype", "batch_input_shape", "input_shape", "batch_size", "input_dim",
           "activity_regularizer"}
# arguments that must have these values for the IR to mean what Keras computes
_REQUIRED = {"renorm": (False,), "virtual_batch_size": (None,), "adjustment": (None,), "quantization_config": (None,),
             "lora_rank": (None, 0), "return_state": (False,), "go_backwards": (False, True), "stateful": (False,),
             "time_major": (False,)}
_FLOAT_POLICIES = {"float32", "float64", "mixed_float16", "mixed_bfloat16"}
_RANK = {"Conv1D": 1, "DepthwiseConv1D": 1, "SeparableConv1D": 1, "MaxPooling1D": 1, "AveragePooling1D": 1}


def _policy(dtype: Any) -> str | None:
    if dtype is None or isinstance(dtype, str):
        return dtype
    if isinstance(dtype, dict):
        return (dtype.get("config") or {}).get("name")
    return "?"


def _check_args(cls: str, conf: dict, name: str) -> None:
    known = _ARGS.get(cls)
    if known is None:
        raise NotCovered(f"layer {name!r}: class {cls}")
    for key, value in conf.items():
        if key.endswith(("_initializer", "_regularizer", "_constraint")) or key in _COMMON:
            continue
        if key not in known:
            raise NotCovered(f"layer {name!r} ({cls}): argument {key}")
        if key in _REQUIRED and value not in _REQUIRED[key]:
            raise NotCovered(f"layer {name!r} ({cls}): {key}={value!r}")
    if cls in ("DepthwiseConv2D", "DepthwiseConv1D", "SeparableConv2D", "SeparableConv1D") and \
            conf.get("groups", 1) != 1:
        raise NotCovered(f"layer {name!r} ({cls}): groups")
    policy = _policy(conf.get("dtype"))
    if policy is not None and policy not in _FLOAT_POLICIES:
        raise NotCovered(f"layer {name!r} ({cls}): dtype {policy}")
    if "data_format" in conf and conf["data_format"] != "channels_last":  # None: keras.json decides
        raise NotCovered(f"layer {name!r} ({cls}): data_format {conf['data_format']!r}")
    if cls == "Bidirectional":
        for key in ("layer", "backward_layer"):
            _check_args(*_wrapped(conf, key, name))


def _wrapped(conf: dict, key: str, name: str) -> tuple[str, dict, str]:
    """(class, config, name) of a Bidirectional's ``layer`` or ``backward_layer`` (Keras derives a missing
    backward layer from ``layer``: the same config, ``go_backwards`` flipped)."""
    inner = conf.get(key)
    if key == "backward_layer" and inner is None:
        inner = conf.get("layer")
        if isinstance(inner, dict) and isinstance(inner.get("config"), dict):
            flipped = not inner["config"].get("go_backwards", False)
            inner = {**inner, "config": {**inner["config"], "go_backwards": flipped}}
    if not isinstance(inner, dict) or inner.get("class_name") not in _RECURRENT or \
            not isinstance(inner.get("config"), dict) or \
            inner.get("registered_name") not in (None, inner.get("class_name")) or \
            not str(inner.get("module", "keras.layers")).startswith("keras.layers"):
        raise NotCovered(f"layer {name!r} (Bidirectional): {key}")
    return inner["class_name"], inner["config"], f"{name}/{key}"


# ---- Keras's normalisation of arguments ------------------------------------------------------------
def _tuple(v: Any, rank: int, what: str) -> tuple[int, ...]:
    if isinstance(v, bool):
        raise NotCovered(what)
    if isinstance(v, int):
        return (v,) * rank
    if isinstance(v, list) and len(v) == rank and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return tuple(v)
    raise NotCovered(what)


def _padding(v: Any, causal: bool) -> str:
    p = v.lower() if isinstance(v, str) else None
    if p not in (("valid", "same", "causal") if causal else ("valid", "same")):
        raise NotCovered(f"padding {v!r}")
    return p


def _number(v: Any) -> Any:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    if ok or (isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                 for x in v)):
        return v
    raise NotCovered(f"value {v!r}")


_CLASSES: dict[str, type] = {}


def _layer_class(cls: str) -> type:
    """A plain class named like the Keras class (the converters name it in their messages)."""
    if cls not in _CLASSES:
        _CLASSES[cls] = type(cls, (), {"data_format": "channels_last"})
    return _CLASSES[cls]


def _attributes(cls: str, conf: dict, name: str) -> Any:
    """An object with the attributes the converters read, valued as Keras's layer would hold them."""
    layer = _layer_class(cls)()
    layer.name = name
    rank = _RANK.get(cls, 1 if cls.endswith("1D") else 2)
    if cls in ("Conv2D", "Conv1D", "DepthwiseConv2D", "DepthwiseConv1D", "SeparableConv2D", "SeparableConv1D"):
        layer.kernel_size = _tuple(conf.get("kernel_size"), rank, "kernel_size")
        layer.strides = _tuple(conf.get("strides", 1), rank, "strides")
        layer.dilation_rate = _tuple(conf.get("dilation_rate", 1), rank, "dilation_rate")
        layer.padding = _padding(conf.get("padding", "valid"), rank == 1)
        layer.groups = conf.get("groups", 1)
        layer.use_bias = bool(conf.get("use_bias", True))
        if cls.startswith(("Depthwise", "Separable")):
            layer.depth_multiplier = conf.get("depth_multiplier", 1)
        if cls in ("Conv2D", "Conv1D", "SeparableConv2D", "SeparableConv1D"):
            layer.filters = conf.get("filters")
        if any(s > 1 for s in layer.strides) and any(d > 1 for d in layer.dilation_rate):
            raise NotCovered(f"layer {name!r}: strides and dilation")
        for v in (layer.groups, getattr(layer, "depth_multiplier", 1), getattr(layer, "filters", 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise NotCovered(f"layer {name!r}: {v!r}")
    if cls in ("Conv2D", "Conv1D", "DepthwiseConv2D", "DepthwiseConv1D", "SeparableConv2D", "SeparableConv1D", "Dense",
               "Activation"):
        act = conf.get("activation", "linear")
        from .keras import _ACTIVATIONS

        if act is None:
            act = "linear"
        if not isinstance(act, str) or act not in _ACTIVATIONS:
            raise NotCovered(f"layer {name!r}: activation {act!r}")
        layer.activation = act
    if cls == "Dense":
        layer.use_bias = bool(conf.get("use_bias", True))
        layer.units = conf.get("units")
        if not isinstance(layer.units, int) or isinstance(layer.units, bool) or layer.units < 1:
            raise NotCovered(f"layer {name!r}: units")
    elif cls == "BatchNormalization":
        axis = conf.get("axis", -1)
        if isinstance(axis, list) and len(axis) == 1:
            axis = axis[0]
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise NotCovered(f"layer {name!r}: axis {axis!r}")
        layer.axis, layer.epsilon = axis, float(_number(conf.get("epsilon", 1e-3)))
        layer.center, layer.scale = bool(conf.get("center", True)), bool(conf.get("scale", True))
    elif cls == "ReLU":
        mx = conf.get("max_value")
        layer.max_value = None if mx is None else _number(mx)
        layer.negative_slope = _number(conf.get("negative_slope", 0.0) or 0.0)
        layer.threshold = _number(conf.get("threshold", 0.0) or 0.0)
    elif cls == "LeakyReLU":
        layer.negative_slope = _number(conf.get("negative_slope", conf.get("alpha", 0.3)))
    elif cls == "ELU":
        layer.alpha = _number(conf.get("alpha", 1.0))
    elif cls == "PReLU":
        axes = conf.get("shared_axes")
        axes = [axes] if isinstance(axes, int) and not isinstance(axes, bool) else (axes or [])
        if not isinstance(axes, list) or not all(isinstance(a, int) and not isinstance(a, bool) and a >= 1
                                                 for a in axes):
            raise NotCovered(f"layer {name!r}: shared_axes {axes!r}")
        layer.shared_axes = axes
    elif cls == "Softmax":
        axis = conf.get("axis", -1)
        if not (isinstance(axis, int) or (isinstance(axis, list) and all(isinstance(a, int) for a in axis))):
            raise NotCovered(f"layer {name!r}: axis {axis!r}")
        layer.axis = axis
    elif cls in ("MaxPooling2D", "AveragePooling2D", "MaxPooling1D", "AveragePooling1D"):
        layer.pool_size = _tuple(conf.get("pool_size", 2), rank, "pool_size")
        strides = conf.get("strides")
        layer.strides = layer.pool_size if strides is None else _tuple(strides, rank, "strides")
        layer.padding = _padding(conf.get("padding", "valid"), False)
    elif cls.startswith("Global"):
        layer.keepdims = bool(conf.get("keepdims", False))
    elif cls == "Reshape":
        shape = conf.get("target_shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise NotCovered(f"layer {name!r}: target_shape {shape!r}")
        layer.target_shape = tuple(shape)
    elif cls == "Concatenate":
        layer.axis = conf.get("axis", -1)
        if not isinstance(layer.axis, int) or isinstance(layer.axis, bool):
            raise NotCovered(f"layer {name!r}: axis")
    elif cls == "ZeroPadding2D":
        layer.padding = _pad2d(conf.get("padding", 1))
    elif cls == "ZeroPadding1D":
        p = conf.get("padding", 1)
        layer.padding = _tuple(p, 2, "padding") if isinstance(p, (int, list)) else _tuple(None, 2, "padding")
    elif cls in ("Dropout", "SpatialDropout2D", "GaussianDropout"):
        layer.rate = _number(conf.get("rate", 0.0))
    elif cls == "Rescaling":
        layer.scale, layer.offset = _number(conf.get("scale")), _number(conf.get("offset", 0.0))
    elif cls in _RECURRENT:  # the converters (keras_lstm, keras_recurrent) refuse other activations by name
        layer.units = conf.get("units")
        if not isinstance(layer.units, int) or isinstance(layer.units, bool) or layer.units < 1:
            raise NotCovered(f"layer {name!r}: units")
        layer.activation = conf.get("activation", "tanh")
        layer.recurrent_activation = conf.get("recurrent_activation", "sigmoid")
        layer.reset_after = bool(conf.get("reset_after", True))
        layer.use_bias = bool(conf.get("use_bias", True))
        layer.return_sequences = bool(conf.get("return_sequences", False))
        layer.go_backwards = bool(conf.get("go_backwards", False))
        layer.return_state = layer.stateful = False
        layer.cell = layer  # the weights are set on the layer (Keras keeps them on its cell)
    elif cls == "Bidirectional":  # the converter (keras_bidir) refuses merge_mode None by name
        layer.forward_layer = _attributes(*_wrapped(conf, "layer", name))
        layer.backward_layer = _attributes(*_wrapped(conf, "backward_layer", name))
        layer.merge_mode = conf.get("merge_mode", "concat")
        layer.return_sequences = layer.forward_layer.return_sequences
        if layer.backward_layer.return_sequences != layer.return_sequences:
            raise NotCovered(f"layer {name!r}: return_sequences differ")
        layer.return_state = False
    return layer


def _pad2d(p: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(p, int) and not isinstance(p, bool):
        return ((p, p), (p, p))
    if isinstance(p, list) and len(p) == 2:
        return (_tuple(p[0], 2, "padding"), _tuple(p[1], 2, "padding"))  # type: ignore[return-value]
    raise NotCovered(f"padding {p!r}")


# ---- weights: the variables Keras creates, in its order, with their shapes ----------------------------
def _expected(cls: str, layer: Any, in_shape: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
    cin = int(in_shape[-1])
    if cls in ("Conv2D", "Conv1D"):
        if cin % layer.groups or layer.filters % layer.groups:
            raise NotCovered(f"layer {layer.name!r}: groups")
        out = [("kernel", layer.kernel_size + (cin // layer.groups, layer.filters))]
        return out + ([("bias", (layer.filters,))] if layer.use_bias else [])
    if cls in ("DepthwiseConv2D", "DepthwiseConv1D"):
        m = layer.depth_multiplier
        return [("kernel", layer.kernel_size + (cin, m))] + ([("bias", (cin * m,))] if layer.use_bias else [])
    if cls in ("SeparableConv2D", "SeparableConv1D"):
        m = layer.depth_multiplier
        out = [("depthwise_kernel", layer.kernel_size + (cin, m)),
               ("pointwise_kernel", (1,) * len(layer.kernel_size) + (cin * m, layer.filters))]
        return out + ([("bias", (layer.filters,))] if layer.use_bias else [])
    if cls == "Dense":
        return [("kernel", (cin, layer.units))] + ([("bias", (layer.units,))] if layer.use_bias else [])
    if cls in _RECURRENT:
        u = layer.units
        g = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[cls] * u
        bias = (2, g) if cls == "GRU" and layer.reset_after else (g,)
        return [("kernel", (cin, g)), ("recurrent_kernel", (u, g))] + ([("bias", bias)] if layer.use_bias else [])
    if cls == "Bidirectional":
        return [(f"{side}/{key}", shape) for side, inner in (("forward_layer", layer.forward_layer),
                                                             ("backward_layer", layer.backward_layer))
                for key, shape in _expected(type(inner).__name__, inner, in_shape)]
    if cls == "PReLU":
        shape = list(in_shape[1:])
        for a in layer.shared_axes:
            if a > len(shape):
                raise NotCovered(f"layer {layer.name!r}: shared axis {a}")
            shape[a - 1] = 1
        return [("alpha", tuple(int(d) for d in shape))]
    if cls == "BatchNormalization":
        rank = len(in_shape)
        if not -rank <= layer.axis < rank:
            raise NotCovered(f"layer {layer.name!r}: axis")
        c = (int(in_shape[layer.axis]),)
        return ([("gamma", c)] if layer.scale else []) + ([("beta", c)] if layer.center else []) + \
            [("moving_mean", c), ("moving_variance", c)]
    return []


_HAS_WEIGHTS = {"Conv2D", "Conv1D", "DepthwiseConv2D", "DepthwiseConv1D", "SeparableConv2D", "SeparableConv1D",
                "Dense",
                "BatchNormalization", "LSTM", "GRU", "SimpleRNN", "PReLU", "Bidirectional"}


def _snake(name: str) -> str:
    """Keras's snake_case of a class name (the `.keras` weights file names layers by it)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class _Weights:
    """The arrays of each layer, located as Keras's loader locates them."""

    def __init__(self, arrays: dict[str, list[np.ndarray]]) -> None:
        self.arrays = arrays

    @classmethod
    def from_legacy_h5(cls, f: Any, layers: list[tuple[str, str]]) -> "_Weights":
        """Keras's legacy loader: the file's layers that have weights, by position, onto the model's."""
        group = f.get("model_weights")
        if group is None:
            raise NotCovered("no model_weights")
        names = [_text(n) for n in group.attrs.get("layer_names", [])]
        stored: list[tuple[str, list[np.ndarray]]] = []
        for n in names:
            g = group[n]
            wn = [_text(w) for w in g.attrs.get("weight_names", [])]
            if wn:
                stored.append((n, [np.asarray(g[w]) for w in wn]))
        want = [name for name, cls in layers if cls in _HAS_WEIGHTS]
        if [n for n, _ in stored] != want:
            raise NotCovered("weights stored for other layers")
        top = group.get("top_level_model_weights")
        if top is not None and len(top.attrs.get("weight_names", [])):
            raise NotCovered("top-level model weights")
        return cls(dict(stored))

    @classmethod
    def from_keras_zip(cls, f: Any, layers: list[tuple[str, str]]) -> "_Weights":
        """Keras's `.keras` loader: ``layers/<snake class>[_k]/vars/<i>`` in the order of ``model.layers``."""
        used: dict[str, int] = {}
        out: dict[str, list[np.ndarray]] = {}
        for name, cls_name in layers:
            base = _snake(cls_name)
            key = base if base not in used else f"{base}_{used[base] + 1}"
            used[base] = used[base] + 1 if base in used else 0
            vars_ = f.get(f"layers/{key}/vars")
            if cls_name in _RECURRENT:  # an RNN layer keeps its variables on its cell; its own vars hold none
                if vars_ is None or len(vars_) or _text(vars_.attrs.get("name", name)) != name:
                    raise NotCovered(f"weights of {cls_name} {name!r}")
                out[name] = _cell_vars(f, f"layers/{key}", name)
                continue
            if cls_name == "Bidirectional":  # the forward then the backward layer's cell variables
                if vars_ is None or len(vars_) or _text(vars_.attrs.get("name", name)) != name:
                    raise NotCovered(f"weights of Bidirectional {name!r}")
                out[name] = [a for side in ("forward_layer", "backward_layer")
                             for a in _cell_vars(f, f"layers/{key}/{side}", name)]
                continue
            if vars_ is None:
                if cls_name in _HAS_WEIGHTS:
                    raise NotCovered(f"no weights for {name!r}")
                continue
            stored_name = vars_.attrs.get("name")
            if stored_name is not None and _text(stored_name) != name:
                raise NotCovered(f"weights of {_text(stored_name)!r} where {name!r} is expected")
            if any(not hasattr(vars_[k], "shape") for k in vars_):
                raise NotCovered(f"nested variables in {name!r}")
            out[name] = [np.asarray(vars_[str(i)]) for i in range(len(vars_))]
        return cls(out)

    def take(self, name: str, expected: list[tuple[str, tuple[int, ...]]]) -> dict[str, np.ndarray]:
        arrays = self.arrays.get(name, [])
        if len(arrays) != len(expected):
            raise NotCovered(f"layer {name!r}: {len(arrays)} weights stored, {len(expected)} expected")
        out = {}
        for (key, shape), a in zip(expected, arrays):
            if tuple(a.shape) != shape or a.dtype.kind != "f":
                raise NotCovered(f"layer {name!r}: {key} of shape {a.shape}, expected {shape}")
            out[key] = np.asarray(a, dtype=np.float32)
        return out


def _cell_vars(f: Any, path: str, name: str) -> list[np.ndarray]:
    """The variables of an RNN layer stored at ``path`` (on its cell; the layer's own vars hold none)."""
    own = f.get(f"{path}/vars")
    vars_ = f.get(f"{path}/cell/vars")
    if own is None or len(own) or vars_ is None or any(not hasattr(vars_[k], "shape") for k in vars_):
        raise NotCovered(f"no weights for {name!r}")
    return [np.asarray(vars_[str(i)]) for i in range(len(vars_))]


def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


# ---- the graph: nodes, inputs, Keras's functional order -----------------------------------------------
def _inert_call(kwargs: Any) -> bool:
    """Call arguments that do not change what the IR computes (the IR has no training mode, no masks)."""
    return isinstance(kwargs, dict) and all((k == "training" and v in (None, True, False)) or
                                            (k == "mask" and v is None) for k, v in kwargs.items())


def _refs_keras3(node: Any) -> list[str]:
    if not isinstance(node, dict) or set(node) - {"args", "kwargs"} or not _inert_call(node.get("kwargs", {})):
        raise NotCovered("call arguments")
    refs: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict) and v.get("class_name") == "__keras_tensor__":
            hist = (v.get("config") or {}).get("keras_history")
            if not (isinstance(hist, list) and len(hist) == 3 and isinstance(hist[0], str) and hist[1:] == [0, 0]):
                raise NotCovered("a shared layer or a layer with several outputs")
            refs.append(hist[0])
        elif isinstance(v, list):
            for x in v:
                walk(x)
        else:
            raise NotCovered(f"a constant argument {str(v)[:40]!r}")

    walk(node.get("args", []))
    return refs


def _refs_keras2(node: Any) -> list[str]:
    if not isinstance(node, list):
        raise NotCovered("inbound node")
    refs = []
    for r in node:
        if not (isinstance(r, list) and len(r) in (3, 4) and isinstance(r[0], str) and r[1:3] == [0, 0]):
            raise NotCovered("a shared layer or a layer with several outputs")
        if len(r) == 4 and not _inert_call(r[3]):
            raise NotCovered("call arguments")
        refs.append(r[0])
    return refs


def _parents(layer: dict, name: str) -> list[str]:
    nodes = layer.get("inbound_nodes") or []
    if len(nodes) != 1:
        raise NotCovered(f"layer {name!r} called {len(nodes)} times")
    return _refs_keras3(nodes[0]) if isinstance(nodes[0], dict) else _refs_keras2(nodes[0])


def _endpoints(v: Any) -> list[str]:
    if isinstance(v, list) and len(v) == 3 and isinstance(v[0], str):
        v = [v]
    if not isinstance(v, list) or not v:
        raise NotCovered("model inputs/outputs")
    out = []
    for r in v:
        if not (isinstance(r, list) and len(r) == 3 and isinstance(r[0], str) and r[1:] == [0, 0]):
            raise NotCovered("model inputs/outputs")
        out.append(r[0])
    return out


def functional_order(parents: dict[str, list[str]], outputs: list[str]) -> list[str]:
    """The layers in the order of Keras's ``Functional.operations`` (Keras's ``map_graph``): decreasing depth
    from the outputs, ties by first visit of a depth-first walk from the outputs."""
    finished: set[str] = set()
    active: set[str] = set()
    post: list[str] = []
    first: dict[str, int] = {}

    def visit(n: str) -> None:
        if n in finished:
            return
        if n in active:
            raise NotCovered("a cycle")
        first.setdefault(n, len(first))
        active.add(n)
        for p in parents[n]:
            visit(p)
        finished.add(n)
        active.discard(n)
        post.append(n)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * len(parents) + 100))
    try:
        for o in outputs:
            visit(o)
    finally:
        sys.setrecursionlimit(limit)
    depth: dict[str, int] = {}
    for n in reversed(post):
        d = depth.setdefault(n, 0)
        for p in parents[n]:
            depth[p] = max(d + 1, depth.get(p, 0))
    return sorted(depth, key=lambda n: (-depth[n], first[n]))


def _model_layers(config: dict, keras2: bool) -> tuple[list[dict], list[str], list[str], bool]:
    """(layer configs by name order, input layer names, output layer names, sequential)."""
    cls = config.get("class_name")
    conf = config.get("config")
    if cls not in ("Functional", "Model", "Sequential") or not isinstance(conf, dict):
        raise NotCovered(f"model class {cls}")
    layers = conf.get("layers")
    if not isinstance(layers, list) or not layers or not all(isinstance(l, dict) for l in layers):
        raise NotCovered("layer list")
    for l in layers:
        if l.get("registered_name") not in (None, l.get("class_name")) or \
                not str(l.get("module", "keras.layers")).startswith("keras.layers"):
            raise NotCovered(f"layer class {l.get('module')}.{l.get('class_name')}")
    if keras2:
        names = {l.get("name") or (l.get("config") or {}).get("name") for l in layers}
        layers = [convert_op_lambda(l, str(l.get("name")), names) if l.get("class_name") == "TFOpLambda" else l
                  for l in layers]
    if cls == "Sequential":
        if layers[0].get("class_name") != "InputLayer":
            raise NotCovered("a Sequential model without an InputLayer")
        return layers, [layers[0]["config"].get("name")], [], True
    return layers, _endpoints(conf.get("input_layers")), _endpoints(conf.get("output_layers")), False


# ---- reading files -----------------------------------------------------------------------------------
def _read(path: Path) -> tuple[dict, bool, Callable[[list[tuple[str, str]]], _Weights]]:
    import h5py

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            members = set(z.namelist())
            if not {"config.json", "model.weights.h5"} <= members:
                raise NotCovered("a .keras archive without config.json and model.weights.h5")
            config = json.loads(z.read("config.json"))
            meta = json.loads(z.read("metadata.json")) if "metadata.json" in members else {}
            data = z.read("model.weights.h5")
        keras2 = is_keras2(meta.get("keras_version") if isinstance(meta, dict) else None)

        def weights_zip(layers: list[tuple[str, str]]) -> _Weights:
            with h5py.File(io.BytesIO(data), "r") as f:
                return _Weights.from_keras_zip(f, layers)
        return config, keras2, weights_zip
    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
        if raw is None:
            raise NotCovered("no model_config")
        config = json.loads(_text(raw))
        keras2 = is_keras2(f.attrs.get("keras_version"))

    def weights_h5(layers: list[tuple[str, str]]) -> _Weights:
        with h5py.File(path, "r") as f:
            return _Weights.from_legacy_h5(f, layers)
    return config, keras2, weights_h5


def load_direct(path: str | Path, name: str) -> Graph:
    """The float IR of a Keras file, read without Keras; ``NotCovered`` if the Keras path must read it."""
    from ...errors import UnsupportedLayerError
    from ...ir.verify import verify
    from .keras import _Builder

    config, keras2, weights_of = _read(Path(path))
    if not isinstance(config, dict):
        raise NotCovered("config")
    layers, inputs, outputs, sequential = _model_layers(config, keras2)
    by_name: dict[str, dict] = {}
    for l in layers:
        lname = (l.get("config") or {}).get("name") if sequential else l.get("name")
        if not isinstance(lname, str) or lname in by_name or not isinstance(l.get("config"), dict):
            raise NotCovered("layer names")
        by_name[lname] = l
    if sequential:
        chain = list(by_name)
        parents = {n: ([chain[i - 1]] if i else []) for i, n in enumerate(chain)}
        order, outputs = chain, [chain[-1]]
        weight_layers = [(n, by_name[n]["class_name"]) for n in chain[1:]]
    else:
        parents = {}
        for n, l in by_name.items():
            if l.get("class_name") == "InputLayer":
                parents[n] = []
            else:
                parents[n] = _parents(l, n)
        if any(p not in by_name for ps in parents.values() for p in ps) or \
                any(n not in by_name for n in inputs + outputs):
            raise NotCovered("references to unknown layers")
        order = functional_order(parents, outputs)
        for n in inputs:  # an input that no output uses is still a model input
            if n not in order:
                order.insert(0, n)
        weight_layers = [(n, by_name[n]["class_name"]) for n in order]
    if sorted(n for n in by_name if by_name[n]["class_name"] == "InputLayer") != sorted(inputs):
        raise NotCovered("input layers")
    for n in order:
        l = by_name[n]
        if l["class_name"] != "InputLayer":
            _check_args(l["class_name"], l["config"], n)
    weights = weights_of(weight_layers)

    g = Graph(name)
    names: dict[str, str] = {}
    for i, n in enumerate(inputs):
        conf = by_name[n]["config"]
        if set(conf) - {"batch_shape", "batch_input_shape", "dtype", "sparse", "ragged", "name", "optional"} or \
                conf.get("sparse") or conf.get("ragged") or conf.get("optional"):
            raise NotCovered(f"input {n!r}")
        shape = conf.get("batch_shape", conf.get("batch_input_shape"))
        if not isinstance(shape, list) or len(shape) < 2:
            raise NotCovered(f"input {n!r} shape")
        if any(d is None for d in shape[1:]):
            raise UnsupportedLayerError(f"model input {i} has an unknown dimension {tuple(shape)}; give a fixed "
                                        "input shape")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape[1:]):
            raise NotCovered(f"input {n!r} shape")
        names[n] = g.add_input(g.unique_tensor_name(n), (1,) + tuple(shape[1:])).name
    b = _Builder(g)
    for n in order:
        l = by_name[n]
        cls = l["class_name"]
        if cls == "InputLayer":
            continue
        layer = _attributes(cls, l["config"], n)
        ins = [names[p] for p in parents[n]]
        if not ins:
            raise NotCovered(f"layer {n!r} has no input")
        for key, value in weights.take(n, _expected(cls, layer, g.tensors[ins[0]].shape)).items():
            side, _, attr = key.rpartition("/")  # a Bidirectional's: forward_layer/kernel, ...
            setattr(getattr(layer, side) if side else layer, attr, value)
        if cls == "BatchNormalization":
            layer.gamma = getattr(layer, "gamma", None)
            layer.beta = getattr(layer, "beta", None)
        names[n] = b.convert(layer, ins, "")[0]
    g.outputs = [names[n] for n in outputs]
    for i, out in enumerate(g.outputs):
        if out in g.inputs:
            raise UnsupportedLayerError(f"model output {i} is its input: nothing to compile")
    verify(g)
    return g
