"""Random Keras models from a seed: the layer kinds and shapes people put into TinyML models, in random orders.

``build(seed)`` returns a model (random weights, BatchNormalization statistics set away from the identity) and a
short description of its blocks. Four families: 2-D CNNs (convolutions of every kind, depthwise, separable,
transposed and grouped ones, pooling, padding, cropping, nearest and bilinear resizing, residual and concatenated branches,
squeeze-and-excitation, LayerNormalization, element-wise Sub/Max/Min, a Dense on a feature map, Rescaling, Permute, PReLU, reshapes,
every activation tinycc reads), 1-D CNNs, recurrent models (LSTM, GRU, SimpleRNN, bidirectional) and MLPs, each
ending in a Flatten or global pooling and a Dense classifier. Used by tests/test_random_models.py and
``python -m benchmarks random``."""
from __future__ import annotations

import random
from typing import Any

import numpy as np

ACTIVATIONS = (None, "relu", "relu6", "tanh", "sigmoid", "swish", "hard_sigmoid", "hard_swish", "elu", "gelu",
               "leaky", "softplus", "softsign", "selu", "mish")


def _act(rng: random.Random, x: Any) -> Any:
    from keras import layers as L

    a = rng.choice(ACTIVATIONS)
    if a is None:
        return x
    if a == "leaky":
        return L.LeakyReLU(negative_slope=rng.choice([0.1, 0.2, 0.3]))(x)
    if a == "relu6":
        return L.ReLU(max_value=6.0)(x)
    return L.Activation(a)(x)


def _block(rng: random.Random, x: Any) -> tuple[Any, str]:
    """One random block on a feature map ``x``; returns it and its name ("skip": the shape did not allow it)."""
    from keras import layers as L

    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    op = rng.choice(["conv", "conv", "conv_s2", "dw", "sep", "bn", "act", "res", "cat", "se", "pool", "pool1", "pad",
                     "crop", "up", "tconv", "sub", "max", "min", "group", "dense_map", "rescale", "permute", "prelu",
                     "reshape", "drop", "dw_dilated"])
    f = rng.choice([4, 6, 8, 12])
    small = min(h, w)
    if op == "conv":
        k = rng.choice([1, 3, 3, 5]) if small >= 5 else 1
        pad = rng.choice(["same", "valid"]) if small > k + 1 else "same"
        dil = rng.choice([1, 1, 2]) if small >= 8 and k == 3 else 1
        return _act(rng, L.Conv2D(f, k, padding=pad, dilation_rate=dil, use_bias=rng.random() < 0.8)(x)), op
    if op == "conv_s2" and small >= 4:
        return _act(rng, L.Conv2D(f, 3, strides=2, padding=rng.choice(["same", "valid"]))(x)), op
    if op == "dw" and small >= 3:
        s = rng.choice([1, 2]) if small >= 6 else 1
        return _act(rng, L.DepthwiseConv2D(3, strides=s, padding="same", depth_multiplier=rng.choice([1, 2]))(x)), op
    if op == "dw_dilated" and small >= 6:
        return _act(rng, L.DepthwiseConv2D(3, dilation_rate=2, padding="same")(x)), op
    if op == "sep" and small >= 3:
        return _act(rng, L.SeparableConv2D(f, 3, padding="same")(x)), op
    if op == "bn":
        if rng.random() < 0.25:
            return L.LayerNormalization()(x), "layernorm"
        return L.BatchNormalization()(x), op
    if op == "act":
        return _act(rng, x), op
    if op == "res":
        return L.Add()([x, _act(rng, L.Conv2D(c, 3, padding="same")(x))]), op
    if op == "cat":
        y = L.Conv2D(f, 1)(x)
        return L.Concatenate()([x, y] if rng.random() < 0.5 else [y, x]), op
    if op == "se":
        s = L.GlobalAveragePooling2D(keepdims=True)(x)
        s = L.Conv2D(max(c // 2, 1), 1, activation="relu")(s)
        s = L.Conv2D(c, 1, activation=rng.choice(["sigmoid", "hard_sigmoid"]))(s)
        return L.Multiply()([x, s]), op
    if op == "pool" and small >= 4:
        pool = rng.choice([L.MaxPooling2D, L.AveragePooling2D])
        return pool(2, padding=rng.choice(["same", "valid"]))(x), op
    if op == "pool1":
        return rng.choice([L.MaxPooling2D, L.AveragePooling2D])(3, strides=1, padding="same")(x), op
    if op == "pad":
        return L.ZeroPadding2D(rng.choice([1, (1, 2)]))(x), op
    if op == "crop" and small >= 5:
        return L.Cropping2D(rng.choice([1, ((1, 0), (0, 2))]))(x), op
    if op == "up" and h * w <= 100:
        how = rng.choice(["nearest", "bilinear"])
        return L.UpSampling2D(2, interpolation=how)(x), op if how == "nearest" else "up_bilinear"
    if op == "tconv" and h <= 10:
        t = L.Conv2DTranspose(f, rng.choice([2, 3]), strides=rng.choice([1, 2]), padding=rng.choice(["same", "valid"]))
        return _act(rng, t(x)), op
    if op in ("sub", "max", "min"):
        y = L.Conv2D(c, 1)(x)
        merge = {"sub": L.Subtract, "max": L.Maximum, "min": L.Minimum}[op]()
        return merge([x, y] if rng.random() < 0.5 else [y, x]), op
    if op == "group" and c % 2 == 0:
        return _act(rng, L.Conv2D(c, 3, padding="same", groups=2)(x)), op
    if op == "dense_map":
        return _act(rng, L.Dense(f)(x)), op
    if op == "rescale":
        return L.Rescaling(rng.choice([0.5, 2.0]), offset=rng.choice([0.0, 0.25]))(x), op
    if op == "permute":
        return L.Permute((2, 1, 3))(x), op
    if op == "prelu":
        return L.PReLU(shared_axes=[1, 2])(x), op
    if op == "reshape":
        return (L.Reshape((h, w * c, 1)) if rng.random() < 0.5 else L.Reshape((h * w, 1, c)))(x), op
    if op == "drop":
        return L.Dropout(0.2)(x), op
    return x, "skip"


def _head(rng: random.Random, x: Any, pools: tuple[Any, ...]) -> Any:
    from keras import layers as L

    x = rng.choice(pools)()(x)
    if rng.random() < 0.4:
        x = L.Dense(rng.choice([8, 16]), activation=rng.choice(["relu", "tanh", None]))(x)
    return L.Dense(rng.choice([2, 3, 5]), activation="softmax")(x)


def _cnn2d(rng: random.Random) -> tuple[Any, list[str]]:
    import keras
    from keras import layers as L

    h = rng.choice([6, 8, 10, 12, 16])
    inp = keras.Input((h, rng.choice([h, h + 2]), rng.choice([1, 2, 3])))
    x = _act(rng, L.Conv2D(rng.choice([4, 8]), 3, padding="same")(inp))
    desc = []
    for _ in range(rng.randint(1, 5)):
        x, op = _block(rng, x)
        desc.append(op)
    return keras.Model(inp, _head(rng, x, (L.Flatten, L.GlobalAveragePooling2D, L.GlobalMaxPooling2D))), desc


def _cnn1d(rng: random.Random) -> tuple[Any, list[str]]:
    import keras
    from keras import layers as L

    inp = keras.Input((rng.choice([16, 24, 32]), rng.choice([1, 3, 6])))
    x, desc = inp, ["1d"]
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(["conv", "pool", "bn", "act", "dw"])
        if op == "conv":
            x = _act(rng, L.Conv1D(rng.choice([4, 8, 12]), rng.choice([1, 3, 5]), strides=rng.choice([1, 2]),
                                   padding=rng.choice(["same", "valid"]))(x))
        elif op == "pool" and x.shape[1] >= 4:
            x = rng.choice([L.MaxPooling1D, L.AveragePooling1D])(2)(x)
        elif op == "bn":
            x = L.BatchNormalization()(x)
        elif op == "act":
            x = _act(rng, x)
        elif op == "dw":
            x = L.DepthwiseConv1D(3, padding="same")(x)
        desc.append(op)
    return keras.Model(inp, _head(rng, x, (L.Flatten, L.GlobalAveragePooling1D, L.GlobalMaxPooling1D))), desc


def _rnn(rng: random.Random) -> tuple[Any, list[str]]:
    import keras
    from keras import layers as L

    inp = keras.Input((rng.choice([8, 12]), rng.choice([2, 4])))
    x, desc = inp, ["rnn"]
    if rng.random() < 0.5:
        x = L.Conv1D(6, 3, padding="same", activation="relu")(x)
        desc.append("conv1d")
    seq = rng.random() < 0.4
    cell = rng.choice([L.LSTM, L.GRU, L.SimpleRNN])(rng.choice([4, 8]), return_sequences=seq)
    bidir = rng.random() < 0.3
    x = L.Bidirectional(cell)(x) if bidir else cell(x)
    desc.append(("bi-" if bidir else "") + type(cell).__name__ + ("-seq" if seq else ""))
    if seq:
        x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(rng.choice([2, 3]), activation="softmax")(x)), desc


def _mlp(rng: random.Random) -> tuple[Any, list[str]]:
    import keras
    from keras import layers as L

    inp = keras.Input((rng.choice([8, 20, 33]),))
    x = inp
    for _ in range(rng.randint(1, 3)):
        x = _act(rng, L.Dense(rng.choice([8, 16, 32]))(x))
        if rng.random() < 0.3:
            x = L.BatchNormalization()(x)
    return keras.Model(inp, L.Dense(rng.choice([2, 3, 4]), activation="softmax")(x)), ["mlp"]


def _randomize(model: Any, rng: random.Random) -> None:
    """BatchNormalization statistics away from the identity, biases away from zero (the converter and tinycc
    fold and quantize real numbers, not an initializer's zeros and ones)."""
    from keras import layers as L

    r = np.random.default_rng(rng.randint(0, 10 ** 6))
    for layer in model.layers:
        ws = layer.get_weights()
        if isinstance(layer, L.BatchNormalization):
            g, b, m, v = ws
            layer.set_weights([r.uniform(0.5, 1.5, g.shape), r.normal(0, 0.2, b.shape), r.normal(0, 0.2, m.shape),
                               r.uniform(0.5, 2, v.shape)])
        elif ws:
            layer.set_weights([w + r.normal(0, 0.05, w.shape).astype(w.dtype) if w.ndim == 1 else w for w in ws])


def build(seed: int) -> tuple[Any, list[str]]:
    """The model of ``seed`` (the same layers, shapes and weights for the same seed) and its blocks' names."""
    import keras

    rng = random.Random(seed)
    keras.utils.set_random_seed(seed)
    family = rng.choice([_cnn2d] * 6 + [_cnn1d, _rnn, _mlp])
    model, desc = family(rng)
    _randomize(model, rng)
    return model, [b for b in desc if b != "skip"]


def export(seed: int, folder: str) -> None:
    """(child process: TFLite's converter crashes the process on some models) Write ``m.h5`` and, when the
    converter can, ``m_int8.tflite`` (full-integer, 32 calibration inputs in [-1, 1]) of model ``seed`` into
    ``folder``, each atomically."""
    import os
    from pathlib import Path

    from .zoo_models import inputs, to_int8_tflite

    model, _ = build(seed)
    out = Path(folder)
    model.save(str(out / "m.tmp.h5"))
    os.replace(out / "m.tmp.h5", out / "m.h5")
    data = to_int8_tflite(model, inputs(model, 32, -1.0, 1.0, seed=1))
    (out / "m_int8.tmp").write_bytes(data)
    os.replace(out / "m_int8.tmp", out / "m_int8.tflite")


if __name__ == "__main__":
    import os
    import sys

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    export(int(sys.argv[1]), sys.argv[2])
