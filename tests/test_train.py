"""Classifier training equals TensorFlow (GradientTape + SGD)."""
from __future__ import annotations

import numpy as np
import pytest

from tinycc.ir.train import Classifier, DenseLayer


def _model(sizes: list[int], act: str, seed: int) -> Classifier:
    rng = np.random.default_rng(seed)
    layers = [DenseLayer(rng.normal(0, 0.5, (o, i)), rng.normal(0, 0.1, o), act if k < len(sizes) - 2 else "softmax")
              for k, (i, o) in enumerate(zip(sizes, sizes[1:]))]
    return Classifier(layers)


def _tf_step(clf: Classifier, x: np.ndarray, y: np.ndarray, lr: float):
    import tensorflow as tf

    ws = [tf.Variable(l.weight.T.copy()) for l in clf.layers]
    bs = [tf.Variable(l.bias.copy()) for l in clf.layers]
    acts = {"relu": tf.nn.relu, "sigmoid": tf.sigmoid, "tanh": tf.tanh, "linear": lambda z: z}
    with tf.GradientTape() as tape:
        a = tf.constant(x)
        for i, l in enumerate(clf.layers):
            z = a @ ws[i] + bs[i]
            a = z if i == len(clf.layers) - 1 else acts[l.activation](z)
        loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, a)
    grads = tape.gradient(loss, ws + bs)
    opt = tf.keras.optimizers.SGD(learning_rate=lr)
    opt.apply_gradients(zip(grads, ws + bs))
    n = len(ws)
    return ([g.numpy().T for g in grads[:n]], [g.numpy() for g in grads[n:]],
            [w.numpy().T for w in ws], [b.numpy() for b in bs])


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh", "linear"])
@pytest.mark.parametrize("batch", [1, 5])
def test_grads_and_sgd_match_tensorflow(depth: int, act: str, batch: int) -> None:
    sizes = [12, 9, 7, 4][:depth] + [4] if depth < 3 else [12, 9, 7, 4]
    sizes = [12] + [9, 7][:depth - 1] + [4]
    clf = _model(sizes, act, seed=depth * 10 + batch)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(batch, 12)).astype(np.float32)
    y = rng.integers(0, 4, batch)
    dw_tf, db_tf, w_tf, b_tf = _tf_step(clf, x, y, 0.1)
    grads = clf.grads(x, y)
    for (dw, db), dwt, dbt in zip(grads, dw_tf, db_tf):
        assert _rel(dw, dwt) <= 1e-5 and _rel(db, dbt) <= 1e-5
    clf.sgd_step(x, y, 0.1)
    for l, wt, bt in zip(clf.layers, w_tf, b_tf):
        assert _rel(l.weight, wt) <= 1e-5 and _rel(l.bias, bt) <= 1e-5


def test_training_state_bytes_equal_allocated() -> None:
    clf = _model([20, 8, 3], "relu", 0)
    for batch in (1, 4):
        clf.grads(np.zeros((batch, 20), np.float32), np.zeros(batch, int))
        assert sum(clf.training_state_bytes(batch).values()) == clf.allocated_training_bytes()
    assert clf.param_bytes() == 4 * (20 * 8 + 8 + 8 * 3 + 3)


def test_train_epochs_visits_every_sample_in_order() -> None:
    clf = _model([6, 3], "linear", 2)
    x = np.random.default_rng(0).normal(size=(7, 6)).astype(np.float32)
    y = np.arange(7) % 3
    ref = clf.copy()
    assert clf.train_epochs(x, y, 0.05, epochs=2, batch_size=3) == 14
    for _ in range(2):
        for s in (0, 3, 6):
            ref.sgd_step(x[s:s + 3], y[s:s + 3], 0.05)
    np.testing.assert_array_equal(clf.layers[0].weight, ref.layers[0].weight)
