"""The model zoo used across the tests: small Keras models covering every supported pattern.

Weights are random but deterministic; BatchNorm statistics are set to non-trivial values so
BN folding is really exercised. ``build(name)`` returns a fresh model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np


def _keras() -> Any:
    import keras

    return keras


def _randomise_bn(model: Any, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            c = layer.moving_mean.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.2, c).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.3, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype("float32"))
    return model


def sequential_cnn() -> Any:
    k = _keras()
    L = k.layers
    return k.Sequential([
        k.Input((12, 12, 1)), L.Conv2D(6, 3, activation="relu", name="c1"), L.MaxPooling2D(2, name="p1"),
        L.Conv2D(8, 3, padding="same", strides=2, name="c2"), L.LeakyReLU(0.1, name="lr"),
        L.Flatten(name="flat"), L.Dense(16, activation="relu", name="d1"), L.Dropout(0.3, name="drop"),
        L.Dense(5, activation="softmax", name="out")], name="sequential_cnn")


def resnet_add() -> Any:
    k = _keras()
    L = k.layers
    inp = k.Input((10, 10, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    y = L.Conv2D(8, 3, padding="same", activation="relu", name="r1")(x)
    y = L.Conv2D(8, 3, padding="same", name="r2")(y)
    x = L.Add(name="add1")([x, y])
    x = L.ReLU(name="relu_add")(x)
    y = L.Conv2D(8, 1, name="r3", activation="relu6")(x)
    x = L.Add(name="add2")([x, y])
    x = L.AveragePooling2D(2, name="avg")(x)
    x = L.Flatten(name="flat")(x)
    out = L.Dense(4, activation="softmax", name="out")(x)
    return k.Model(inp, out, name="resnet_add")


def mobilenet_v2() -> Any:
    k = _keras()
    L = k.layers
    inp = k.Input((16, 16, 3))
    x = L.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inp)
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(6.0, name="stem_relu")(x)
    y = L.Conv2D(16, 1, use_bias=False, name="expand")(x)
    y = L.BatchNormalization(name="expand_bn")(y)
    y = L.ReLU(6.0, name="expand_relu")(y)
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(y)
    y = L.BatchNormalization(name="dw_bn")(y)
    y = L.ReLU(6.0, name="dw_relu")(y)
    y = L.Conv2D(8, 1, use_bias=False, name="project")(y)
    y = L.BatchNormalization(name="project_bn")(y)
    x = L.Add(name="res")([x, y])
    x = L.DepthwiseConv2D(3, strides=2, depth_multiplier=2, padding="valid", name="dw2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(6, activation="softmax", name="out")(x)
    return _randomise_bn(k.Model(inp, out, name="mobilenet_v2"), 1)


def mobilenet_v3() -> Any:
    k = _keras()
    L = k.layers
    inp = k.Input((16, 16, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.Activation("hard_swish", name="stem_hs")(x)
    y = L.Conv2D(16, 1, use_bias=False, name="expand")(x)
    y = L.BatchNormalization(name="expand_bn")(y)
    y = L.Activation("hard_swish", name="expand_hs")(y)
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(y)
    y = L.BatchNormalization(name="dw_bn")(y)
    y = L.Activation("hard_swish", name="dw_hs")(y)
    s = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(y)
    s = L.Conv2D(4, 1, activation="relu", name="se_reduce")(s)
    s = L.Conv2D(16, 1, activation="hard_sigmoid", name="se_expand")(s)
    y = L.Multiply(name="se_mul")([y, s])
    y = L.Conv2D(8, 1, use_bias=False, name="project")(y)
    y = L.BatchNormalization(name="project_bn")(y)
    x = L.Add(name="res")([x, y])
    x = L.Conv2D(24, 1, activation="swish", name="head")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(16, activation="hard_swish", name="fc")(x)
    out = L.Dense(5, activation="softmax", name="out")(x)
    return _randomise_bn(k.Model(inp, out, name="mobilenet_v3"), 2)


def concat_branch() -> Any:
    k = _keras()
    L = k.layers
    inp = k.Input((9, 9, 2))
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(inp)
    b = L.Conv2D(6, 1, activation="tanh", name="b")(inp)
    b = L.ZeroPadding2D(((1, 0), (0, 1)), name="zpad")(b)
    b = L.Conv2D(6, 2, padding="valid", dilation_rate=1, name="b2")(b)
    x = L.Concatenate(name="cat")([a, b])
    x = L.Conv2D(8, 3, dilation_rate=2, activation="sigmoid", name="dil")(x)
    x = L.GlobalMaxPooling2D(name="gmp")(x)
    out = L.Dense(3, name="logits")(x)
    return k.Model(inp, out, name="concat_branch")


def bn_conv_act() -> Any:
    k = _keras()
    L = k.layers
    inp = k.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.Activation("relu", name="act1")(x)
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="c2")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.Activation("tanh", name="act2")(x)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Reshape((16, 8), name="reshape")(x)
    x = L.Flatten(name="flat")(x)
    out = L.Dense(4, activation="softmax", name="out")(x)
    return _randomise_bn(k.Model(inp, out, name="bn_conv_act"), 3)


def mlp() -> Any:
    k = _keras()
    L = k.layers
    return k.Sequential([k.Input((20,)), L.Dense(16, activation="relu", name="h1"),
                         L.Dense(12, activation="sigmoid", name="h2"),
                         L.Dense(8, activation="tanh", name="h3"), L.Dense(3, activation="softmax", name="out")],
                        name="mlp")


def grouped_conv() -> Any:
    k = _keras()
    L = k.layers
    inp = k.Input((8, 8, 8))
    x = L.Conv2D(16, 3, padding="same", groups=4, activation="relu", name="g4")(inp)
    x = L.Conv2D(16, 3, strides=2, padding="same", groups=16, use_bias=False, name="dw_as_conv")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.Conv2D(8, 1, name="pw")(x)
    x = L.Flatten(name="flat")(x)
    out = L.Dense(4, activation="softmax", name="out")(x)
    return _randomise_bn(k.Model(inp, out, name="grouped_conv"), 4)


def cnas_like() -> Any:
    """The reference CNAS model's traits, small: grouped-conv depthwise, SE on the pooled vector, swish."""
    k = _keras()
    L = k.layers
    inp = k.Input((12, 12, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.Activation("swish", name="stem_swish")(x)
    x = L.Conv2D(8, 3, padding="same", groups=8, use_bias=False, name="dw")(x)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.Activation("relu", name="dw_relu")(x)
    se = L.GlobalAveragePooling2D(keepdims=True, name="se_gap")(x)
    s = L.Conv2D(4, 1, activation="relu", name="se_reduce")(se)
    s = L.Conv2D(8, 1, name="se_expand")(s)
    s = L.Activation("hard_sigmoid", name="se_hsig")(s)
    x = L.Multiply(name="se_mul")([s, se])
    x = L.Conv2D(12, 1, use_bias=False, name="head")(x)
    x = L.Activation("swish", name="head_swish")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dropout(0.2, name="dropout")(x)
    out = L.Dense(5, activation="softmax", name="dense")(x)
    return _randomise_bn(k.Model(inp, out, name="cnas_like"), 5)


def conv1d_sensor() -> Any:
    """A sensor-stream model: causal/dilated Conv1D, DepthwiseConv1D, 1-D pooling, BN on [steps, channels]."""
    k = _keras()
    L = k.layers
    inp = k.Input((40, 3))
    x = L.Conv1D(8, 5, padding="causal", use_bias=False, name="c1")(inp)
    x = L.BatchNormalization(name="c1_bn")(x)
    x = L.ReLU(name="c1_relu")(x)
    x = L.MaxPooling1D(2, name="pool1")(x)
    x = L.DepthwiseConv1D(3, padding="same", depth_multiplier=2, activation="relu6", name="dw1")(x)
    x = L.ZeroPadding1D((1, 2), name="pad1")(x)
    x = L.Conv1D(12, 3, strides=2, dilation_rate=1, activation="relu", name="c2")(x)
    x = L.AveragePooling1D(2, padding="same", name="pool2")(x)
    x = L.Conv1D(12, 3, padding="same", dilation_rate=2, activation="relu", name="c3")(x)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    x = L.Dense(16, activation="relu", name="fc")(x)
    out = L.Dense(4, activation="softmax", name="out")(x)
    return _randomise_bn(k.Model(inp, out, name="conv1d_sensor"), 6)


def separable_cnn() -> Any:
    """SeparableConv2D blocks (depthwise + pointwise in one Keras layer), as in Xception-style models."""
    k = _keras()
    L = k.layers
    inp = k.Input((12, 12, 3))
    x = L.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, activation="relu", name="s1")(inp)
    x = L.SeparableConv2D(12, 3, strides=2, use_bias=False, name="s2")(x)
    x = L.BatchNormalization(name="s2_bn")(x)
    x = L.ReLU(6.0, name="s2_relu")(x)
    x = L.GlobalMaxPooling2D(name="gmp")(x)
    out = L.Dense(5, activation="softmax", name="out")(x)
    return _randomise_bn(k.Model(inp, out, name="separable_cnn"), 7)


ZOO: dict[str, Callable[[], Any]] = {
    "sequential_cnn": sequential_cnn, "resnet_add": resnet_add, "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3": mobilenet_v3, "concat_branch": concat_branch, "bn_conv_act": bn_conv_act, "mlp": mlp,
    "grouped_conv": grouped_conv, "cnas_like": cnas_like, "conv1d_sensor": conv1d_sensor,
    "separable_cnn": separable_cnn,
}
ZOO_NAMES = tuple(ZOO)


def build(name: str, seed: int = 0) -> Any:
    """A fresh zoo model with deterministic weights."""
    k = _keras()
    k.utils.set_random_seed(seed)
    return ZOO[name]()


def sample_input(model: Any, n: int, seed: int = 0) -> np.ndarray:
    """Random inputs in a plausible range for ``model`` (images 0..255 if it rescales, else N(0,1))."""
    rng = np.random.default_rng(seed)
    shape = (n,) + tuple(model.inputs[0].shape[1:])
    if any(type(l).__name__ == "Rescaling" for l in model.layers):
        return rng.uniform(0, 255, shape).astype(np.float32)
    return rng.normal(0, 1, shape).astype(np.float32)


def save_model(model: Any, directory: str | Path, fmt: str) -> Path:
    """Save as ``.h5`` or ``.keras`` into ``directory``; return the path."""
    path = Path(directory) / f"{model.name}.{fmt.lstrip('.')}"
    model.save(path)
    return path
