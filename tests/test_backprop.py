"""Training beyond the head (tinycc.ir.backprop): the float tail equals TensorFlow's GradientTape + SGD."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tinycc.ir.backprop import Tail  # noqa: E402
from tinycc.ir.interpreter import run  # noqa: E402
from tinycc.passes import PassContext, run_pipeline  # noqa: E402
from tinycc.plugins.frontends.keras import graph_from_keras_model  # noqa: E402

TOL = 1e-5


def _tail_model(pool: str, seed: int) -> tf.keras.Model:
    """A residual block (conv, depthwise, pointwise, add, relu), a pooling and a Dense chain."""
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((6, 6, 3))
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    b = L.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(a)
    b = L.Conv2D(4, 1, name="pw")(b)
    x = L.ReLU(name="r")(L.Add(name="add")([a, b]))
    x = L.Conv2D(5, 3, strides=2, padding="valid", activation="relu6", name="c2")(x)
    if pool == "avg":
        x = L.AveragePooling2D(2, strides=1, padding="same", name="pool")(x)
        x = L.Flatten(name="flat")(x)
    elif pool == "max":
        x = L.MaxPooling2D(2, strides=1, padding="valid", name="pool")(x)
        x = L.Flatten(name="flat")(x)
    else:
        x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(6, activation="relu", name="d1")(x)
    out = L.Dense(3, activation="softmax", name="d2")(x)
    m = tf.keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    m.set_weights([rng.normal(0, 0.4, w.shape).astype(np.float32) for w in m.get_weights()])
    return m


def _tail(session, m: tf.keras.Model, mode: str) -> Tail:
    g = graph_from_keras_model(m)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    return Tail(g, g.inputs[0], mode)


def _ir_layout(layer: tf.keras.layers.Layer, kernel: np.ndarray) -> np.ndarray:
    if isinstance(layer, tf.keras.layers.DepthwiseConv2D):
        kh, kw, c, mult = kernel.shape
        return kernel.reshape(1, kh, kw, c * mult)
    if isinstance(layer, tf.keras.layers.Conv2D):
        return kernel.transpose(3, 0, 1, 2)
    return kernel.T


def _params_equal(t: Tail, m: tf.keras.Model) -> None:
    """Every layer's weight (and bias, where it has one) equals the tail's."""
    ops = {op.origin: op.name for op in t.ops if op.name in t.params}
    for layer in m.layers:
        if not layer.weights:
            continue
        p = t.params[ops[layer.name]]
        np.testing.assert_allclose(p.weight, _ir_layout(layer, layer.weights[0].numpy()), atol=TOL, rtol=0)
        if len(layer.weights) > 1:
            np.testing.assert_allclose(p.bias, layer.weights[1].numpy(), atol=TOL, rtol=0)
        else:  # no bias: none trains (the zero the forward adds stays zero)
            assert not t.trains(ops[layer.name])[1] and not p.bias.any()


def _tf_step(m: tf.keras.Model, x: np.ndarray, y: np.ndarray, lr: float, mode: str) -> None:
    last = m.layers[-1]
    trained = [v for l in m.layers for v in l.weights if mode == "blocks" or l is last or "bias" in v.path]
    with tf.GradientTape() as tape:
        loss = tf.keras.losses.SparseCategoricalCrossentropy()(tf.constant(y), m(tf.constant(x), training=True))
    grads = tape.gradient(loss, trained)
    tf.keras.optimizers.SGD(learning_rate=lr).apply_gradients(zip(grads, trained))


@pytest.mark.parametrize("pool", ["avg", "max", "gap"])
@pytest.mark.parametrize("mode", ["blocks", "bias"])
def test_tail_equals_gradient_tape(session, pool: str, mode: str) -> None:
    m = _tail_model(pool, 3)
    t = _tail(session, m, mode)
    rng = np.random.default_rng(1)
    steps_equal_tape(t, m, mode, rng.normal(0, 1, (7, 6, 6, 3)).astype(np.float32), rng.integers(0, 3, 7), 0.05)


def steps_equal_tape(t: Tail, m: tf.keras.Model, mode: str, x: np.ndarray, y: np.ndarray, lr: float) -> None:
    """The tail's forward equals the interpreter's; SGD steps on batches of 1, 3 and 7 rows equal GradientTape +
    SGD on the Keras model after each; bias mode never moves a frozen weight."""
    np.testing.assert_allclose(t.forward(x)[t.logits], run(t.graph, x, [t.logits])[t.logits], atol=TOL)
    frozen = {k: p.weight.copy() for k, p in t.params.items() if not t.trains(k)[0]}
    for s, e in ((0, 1), (1, 4), (4, 7), (0, 7)):  # batches of 1, 3 and 7 rows
        assert t.sgd_step(x[s:e], y[s:e], lr)
        _tf_step(m, x[s:e], y[s:e], lr, mode)
        _params_equal(t, m)
    for k, w in frozen.items():  # bias mode: the frozen weights never move
        np.testing.assert_array_equal(t.params[k].weight, w)
    assert (mode == "bias") == bool(frozen)


def test_refused_step_changes_nothing(session) -> None:
    t = _tail(session, _tail_model("gap", 4), "blocks")
    before = {k: (p.weight.copy(), p.bias.copy()) for k, p in t.params.items()}
    x = np.random.default_rng(0).normal(0, 1, (2, 6, 6, 3)).astype(np.float32)
    assert not t.sgd_step(x, np.array([0, 1]), float("inf"))
    x[0, 0, 0, 0] = np.nan
    assert not t.sgd_step(x, np.array([0, 1]), 0.1)
    for k, (w, b) in before.items():
        np.testing.assert_array_equal(t.params[k].weight, w)
        np.testing.assert_array_equal(t.params[k].bias, b)
    with pytest.raises(ValueError, match="labels"):
        t.sgd_step(x, np.array([0, 3]), 0.1)
    with pytest.raises(ValueError, match="labels"):
        t.sgd_step(x, np.array([0.5, 1.0]), 0.1)


def test_known_values_replace_the_forward(session) -> None:
    """Gradients at given activations (the int8 path's ``known``) equal those of the float forward at them."""
    known_values_replace_the_forward(_tail(session, _tail_model("max", 5), "bias"), (3, 6, 6, 3))


def known_values_replace_the_forward(t, shape: tuple[int, ...]) -> None:
    """``t.grads`` at the forward's own activations given as known values (an all-zero input) equal its gradients
    from the input: weights and biases bit for bit, None where a layer has none."""
    x = np.random.default_rng(2).normal(0, 1, shape).astype(np.float32)
    y = np.array([2, 0, 1])
    env = t.forward(x)
    ref = t.grads(x, y)
    got = t.grads(np.zeros_like(x), y, {k: v for k, v in env.items() if k not in (t.cut, t.logits)})
    for k, (dw, db) in ref.items():
        np.testing.assert_array_equal(got[k][1], db)
        if dw is None:
            assert got[k][0] is None
        else:
            np.testing.assert_array_equal(got[k][0], dw)


def test_deep_bias_subset_equals_gradient_tape(session) -> None:
    """The subset `--deep bias` trains (DeepLearner: every bias after the cut and every weight of the Dense chain,
    ``train_weights``; the convolution weights frozen) equals GradientTape + SGD on the float model with exactly
    those variables trainable, step after step (batches of 1, 3 and 7 rows)."""
    m = _tail_model("avg", 5)
    g = graph_from_keras_model(m)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    dense = {op.name for op in g.ops if op.origin in ("d1", "d2")}
    t = Tail(g, g.inputs[0], "bias", dense)
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (7, 6, 6, 3)).astype(np.float32)
    y = rng.integers(0, 3, 7)
    frozen = {k: p.weight.copy() for k, p in t.params.items() if k not in dense}
    assert frozen and all(not t.trains(k)[0] for k in frozen) and all(t.trains(k)[0] for k in dense)
    trained = [v for layer in m.layers for v in layer.weights if layer.name in ("d1", "d2") or "bias" in v.path]
    for s, e in ((0, 1), (1, 4), (4, 7), (0, 7)):
        assert t.sgd_step(x[s:e], y[s:e], 0.05)
        with tf.GradientTape() as tape:
            loss = tf.keras.losses.SparseCategoricalCrossentropy()(tf.constant(y[s:e]),
                                                                    m(tf.constant(x[s:e]), training=True))
        tf.keras.optimizers.SGD(learning_rate=0.05).apply_gradients(zip(tape.gradient(loss, trained), trained))
        _params_equal(t, m)
    for k, w in frozen.items():
        np.testing.assert_array_equal(t.params[k].weight, w)
