"""Classifier training reference: equal to TensorFlow (GradientTape + SGD); exact memory accounting."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tinycc.ir.train import Classifier, DenseLayer, softmax  # noqa: E402

HIDDEN = ["relu", "sigmoid", "tanh", "linear"]
SIZES = {1: [12, 4], 2: [12, 9, 4], 3: [12, 9, 7, 4]}
TOL = 1e-5


def _keras(depth: int, hidden: str, last: str, seed: int, outputs: int = 4) -> tf.keras.Model:
    rng = np.random.default_rng(seed)
    sizes = SIZES[depth][:-1] + [outputs]
    inp = tf.keras.Input((sizes[0],))
    x = inp
    for k, o in enumerate(sizes[1:]):
        x = tf.keras.layers.Dense(o, activation=hidden if k < depth - 1 else last)(x)
    model = tf.keras.Model(inp, x)
    model.set_weights([rng.normal(0, 0.5 if w.ndim == 2 else 0.1, w.shape).astype(np.float32)
                       for w in model.get_weights()])
    return model


def _from_keras(model: tf.keras.Model, max_batch: int, loss: str = "ce", train: str = "all") -> Classifier:
    dense = [l for l in model.layers if isinstance(l, tf.keras.layers.Dense)]
    return Classifier.from_keras_dense([(l.kernel.numpy(), l.bias.numpy(), l.activation.__name__) for l in dense],
                                       max_batch, loss, train)


class _TFTrainer:
    """The head's Keras loss (mean over the batch) + tf.keras.optimizers.SGD: SparseCategoricalCrossentropy
    (ce), BinaryCrossentropy (bce), MeanSquaredError (mse)."""

    def __init__(self, model: tf.keras.Model, lr: float, last: str, loss: str = "ce") -> None:
        self.model = model
        if loss == "bce":
            self.loss = tf.keras.losses.BinaryCrossentropy(from_logits=last == "linear")
        elif loss == "mse":
            self.loss = tf.keras.losses.MeanSquaredError()
        else:
            self.loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=last == "linear")
        self.opt = tf.keras.optimizers.SGD(learning_rate=lr)

    def step(self, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        """One SGD step; returns the gradients (Keras layout, before the step)."""
        y = np.asarray(y, np.float32).reshape(len(y), -1) if not isinstance(
            self.loss, tf.keras.losses.SparseCategoricalCrossentropy) else y
        with tf.GradientTape() as tape:
            loss = self.loss(tf.constant(y), self.model(tf.constant(x), training=True))
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.opt.apply_gradients(zip(grads, self.model.trainable_variables))
        return [g.numpy() for g in grads]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to max |b|."""
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(b).max(), 1e-6))


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 12)).astype(np.float32), rng.integers(0, 4, n)


def _params(model: tf.keras.Model) -> list[np.ndarray]:
    return [v.numpy() for v in model.trainable_variables]


def _assert_params(clf: Classifier, model: tf.keras.Model) -> None:
    ref = _params(model)
    for i, l in enumerate(clf.layers):
        assert _rel(l.weight, ref[2 * i].T) <= TOL, f"layer {i} weights"
        assert _rel(l.bias, ref[2 * i + 1]) <= TOL, f"layer {i} bias"


@pytest.mark.parametrize("depth,hidden", [(1, "linear")] + [(d, h) for d in (2, 3) for h in HIDDEN])
@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("last", ["linear", "softmax"])
def test_grads_and_sgd_step_match_tensorflow(depth: int, hidden: str, batch: int, last: str) -> None:
    model = _keras(depth, hidden, last, seed=depth * 100 + batch)
    clf = _from_keras(model, max_batch=batch)
    x, y = _data(batch, seed=depth + batch)
    p_ref = model(x).numpy()
    p = clf.forward(x)
    if last == "softmax":
        assert _rel(p, p_ref) <= TOL
    else:
        assert _rel(p, softmax(p_ref)) <= TOL
    g_ref = _TFTrainer(model, 0.1, last).step(x, y)
    grads = clf.grads(x, y)
    for i, (dw, db) in enumerate(grads):
        assert _rel(dw, g_ref[2 * i].T) <= TOL, f"layer {i} dW"
        assert _rel(db, g_ref[2 * i + 1]) <= TOL, f"layer {i} db"
    clf.sgd_step(x, y, 0.1)
    _assert_params(clf, model)


HEADS = {"bce": [("sigmoid", 1), ("linear", 1)], "mse": [("linear", 5), ("sigmoid", 5), ("tanh", 3), ("relu", 1)]}


def _targets(loss: str, n: int, outputs: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if loss == "bce":
        return rng.integers(0, 2, n)
    return rng.normal(size=(n, outputs)).astype(np.float32)


@pytest.mark.parametrize("depth,hidden", [(1, "linear"), (2, "relu"), (2, "tanh"), (3, "sigmoid"), (3, "relu")])
@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("loss,last,outputs", [(k, a, o) for k, v in HEADS.items() for a, o in v])
def test_binary_and_regression_heads_match_tensorflow(depth: int, hidden: str, batch: int, loss: str, last: str,
                                                      outputs: int) -> None:
    """Sigmoid + BinaryCrossentropy (sigmoid output or logits) and MeanSquaredError (last activation applied):
    forward, gradients, one SGD step and the loss equal Keras within 1e-5."""
    model = _keras(depth, hidden, last, seed=depth * 10 + batch + outputs, outputs=outputs)
    clf = _from_keras(model, max_batch=batch, loss=loss)
    x, _ = _data(batch, seed=depth + batch)
    y = _targets(loss, batch, outputs, seed=depth + 2 * batch)
    out_ref = model(x).numpy()
    p = clf.forward(x)
    assert _rel(p, tf.sigmoid(out_ref).numpy() if loss == "bce" and last == "linear" else out_ref) <= TOL
    trainer = _TFTrainer(model, 0.1, last, loss)
    ref_loss = float(trainer.loss(np.asarray(y, np.float32).reshape(batch, -1), out_ref))
    assert abs(clf.loss(x, y) - ref_loss) <= 1e-5 * max(1.0, abs(ref_loss))
    g_ref = trainer.step(x, y)
    for i, (dw, db) in enumerate(clf.grads(x, y)):
        assert _rel(dw, g_ref[2 * i].T) <= TOL, f"layer {i} dW"
        assert _rel(db, g_ref[2 * i + 1]) <= TOL, f"layer {i} db"
    clf.sgd_step(x, y, 0.1)
    _assert_params(clf, model)
    cls, p = clf.predict(x)
    expect = (p[:, 0] > 0.5).astype(int) if loss == "bce" else np.zeros(batch, int)
    np.testing.assert_array_equal(cls, expect)


@pytest.mark.parametrize("loss,last,outputs", [("bce", "sigmoid", 1), ("mse", "tanh", 5)])
def test_head_train_epochs_match_tensorflow_loop(loss: str, last: str, outputs: int) -> None:
    """2 epochs over 7 samples with batches of 3 (the last one partial) through 3 layers."""
    model = _keras(3, "relu", last, seed=11, outputs=outputs)
    clf = _from_keras(model, max_batch=3, loss=loss)
    x, _ = _data(7, seed=5)
    y = _targets(loss, 7, outputs, seed=6)
    assert clf.train_epochs(x, y, 0.05, epochs=2, batch_size=3) == 14
    trainer = _TFTrainer(model, 0.05, last, loss)
    for _ in range(2):
        for s in range(0, 7, 3):
            trainer.step(x[s:s + 3], y[s:s + 3])
    _assert_params(clf, model)


def test_head_validation() -> None:
    rng = np.random.default_rng(2)
    one = [DenseLayer(rng.normal(size=(1, 4)), np.zeros(1), "sigmoid")]
    assert Classifier(one, loss="bce").n_classes == 2
    with pytest.raises(ValueError, match="bce"):
        Classifier([DenseLayer(rng.normal(size=(2, 4)), np.zeros(2), "sigmoid")], loss="bce")
    with pytest.raises(ValueError, match="bce"):
        Classifier([DenseLayer(rng.normal(size=(1, 4)), np.zeros(1), "relu")], loss="bce")
    with pytest.raises(ValueError, match="softmax"):
        Classifier([DenseLayer(rng.normal(size=(3, 4)), np.zeros(3), "softmax")], loss="mse")
    with pytest.raises(ValueError, match="unknown loss"):
        Classifier(one, loss="hinge")
    clf = Classifier(one, loss="bce", max_batch=2)
    with pytest.raises(ValueError, match="labels must be in 0..1"):
        clf.sgd_step(np.ones((1, 4)), [2], 0.1)
    reg = Classifier([DenseLayer(rng.normal(size=(3, 4)), np.zeros(3), "linear")], loss="mse", max_batch=2)
    assert (reg.n_classes, reg.target_count, reg.n_out) == (0, 3, 3)
    with pytest.raises(ValueError, match="finite"):
        reg.sgd_step(np.ones((1, 4)), np.array([[0.0, np.nan, 1.0]]), 0.1)
    with pytest.raises(ValueError, match="targets of 3 values"):
        reg.sgd_step(np.ones((2, 4)), np.zeros((2, 2)), 0.1)
    before = [l.weight.copy() for l in reg.layers]
    with pytest.raises(ValueError):
        reg.sgd_step(np.ones((1, 4)), np.array([[np.inf, 0, 0]]), 0.1)
    np.testing.assert_array_equal(reg.layers[0].weight, before[0])  # nothing trained on bad targets


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("hidden", HIDDEN)
def test_train_epochs_match_tensorflow_loop(batch: int, hidden: str) -> None:
    """2 epochs over 7 samples in order; batch 3 includes the partial last batch of 1."""
    model = _keras(3, hidden, "softmax", seed=7)
    clf = _from_keras(model, max_batch=batch)
    x, y = _data(7, seed=3)
    assert clf.train_epochs(x, y, 0.05, epochs=2, batch_size=batch) == 14
    trainer = _TFTrainer(model, 0.05, "softmax")
    for _ in range(2):
        for s in range(0, 7, batch):
            trainer.step(x[s:s + batch], y[s:s + batch])
    _assert_params(clf, model)


def test_train_epochs_is_sgd_steps_in_order() -> None:
    rng = np.random.default_rng(0)
    clf = Classifier([DenseLayer(rng.normal(size=(5, 6)), rng.normal(size=5), "tanh"),
                      DenseLayer(rng.normal(size=(3, 5)), rng.normal(size=3), "softmax")], max_batch=3)
    ref = clf.copy()
    x = rng.normal(size=(7, 6)).astype(np.float32)
    y = np.arange(7) % 3
    assert clf.train_epochs(x, y, 0.05, epochs=2, batch_size=3) == 14
    for _ in range(2):
        for s in (0, 3, 6):
            ref.sgd_step(x[s:s + 3], y[s:s + 3], 0.05)
    for a, b in zip(clf.layers, ref.layers):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.bias, b.bias)


def test_last_activation_is_ignored_and_predict_is_argmax() -> None:
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(4, 6)), rng.normal(size=4)
    x = rng.normal(size=(5, 6)).astype(np.float32)
    outs = []
    for act in ("linear", "softmax", "relu"):
        clf = Classifier([DenseLayer(w, b, act)])
        clf.sgd_step(x[:1], [2], 0.1)
        cls, p = clf.predict(x)
        assert p.dtype == np.float32 and np.allclose(p.sum(axis=1), 1, atol=1e-6)
        np.testing.assert_array_equal(cls, p.argmax(axis=1))
        outs.append((clf.layers[0].weight, p))
    for wt, p in outs[1:]:
        np.testing.assert_array_equal(wt, outs[0][0])
        np.testing.assert_array_equal(p, outs[0][1])
    assert Classifier([DenseLayer(w, b)]).predict(x[0])[0].shape == (1,)


def test_from_keras_dense_layout_and_validation() -> None:
    k = np.arange(6, dtype=np.float32).reshape(3, 2)  # Keras [in, out]
    clf = Classifier.from_keras_dense([(k, np.zeros(2), None)])
    np.testing.assert_array_equal(clf.layers[0].weight, k.T)
    assert (clf.n_in, clf.n_classes, clf.layers[0].activation) == (3, 2, "linear")
    with pytest.raises(ValueError, match="softmax"):
        Classifier([DenseLayer(np.ones((3, 3)), np.ones(3), "softmax"), DenseLayer(np.ones((2, 3)), np.ones(2))])
    with pytest.raises(ValueError, match="at least 2 outputs"):
        Classifier([DenseLayer(np.ones((1, 3)), np.ones(1), "sigmoid")])
    with pytest.raises(ValueError, match="unsupported"):
        DenseLayer(np.ones((2, 3)), np.ones(2), "hard_swish")
    with pytest.raises(ValueError, match="expects"):
        Classifier([DenseLayer(np.ones((4, 3)), np.ones(4)), DenseLayer(np.ones((2, 5)), np.ones(2))])
    clf = Classifier([DenseLayer(np.ones((2, 3)), np.ones(2))], max_batch=2)
    with pytest.raises(ValueError, match="max_batch"):
        clf.sgd_step(np.ones((3, 3)), [0, 1, 0], 0.1)
    with pytest.raises(ValueError, match="labels"):
        clf.sgd_step(np.ones((1, 3)), [2], 0.1)
    with pytest.raises(ValueError, match="labels"):
        clf.sgd_step(np.ones((1, 3)), [-1], 0.1)
    with pytest.raises(ValueError, match="batch_size"):
        clf.train_epochs(np.ones((4, 3)), [0, 1, 0, 1], 0.1, batch_size=3)


def _held_arrays(obj: object) -> list[np.ndarray]:
    """Every numpy array an object holds (through attributes, lists, tuples, dicts)."""
    out: list[np.ndarray] = []

    def walk(v: object) -> None:
        if isinstance(v, np.ndarray):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            for e in v:
                walk(e)
        elif isinstance(v, dict):
            for e in v.values():
                walk(e)
        elif hasattr(v, "__dict__"):
            for e in vars(v).values():
                walk(e)

    walk(obj)
    return out


@pytest.mark.parametrize("sizes,acts,batch", [([20, 3], ["softmax"], 1), ([20, 8, 3], ["relu", "linear"], 4),
                                              ([16, 10, 7, 5], ["sigmoid", "tanh", "softmax"], 3)])
@pytest.mark.parametrize("train", ["all", "last", "bias"])
def test_training_state_bytes_are_the_allocated_arrays(sizes: list[int], acts: list[str], batch: int,
                                                       train: str) -> None:
    """Kept activations and deltas only (fused SGD): at most 8 bytes per unit and row, nothing weight-sized."""
    rng = np.random.default_rng(0)
    clf = Classifier([DenseLayer(rng.normal(size=(o, i)), np.zeros(o), a)
                      for i, o, a in zip(sizes, sizes[1:], acts)], max_batch=batch, train=train)
    state = clf.training_state_bytes()
    assert state == clf.training_state_bytes(batch)
    outs = sum(sizes[1:])
    deltas = outs if train != "last" else sizes[-1]
    assert state == {"activations": 4 * batch * outs, "deltas": 4 * batch * deltas}
    assert sum(state.values()) <= 8 * batch * outs
    assert clf.param_bytes() == 4 * sum(i * o + o for i, o in zip(sizes, sizes[1:]))
    work = clf.work_arrays()
    assert {k: sum(a.nbytes for a in v) for k, v in work.items()} == state
    held = _held_arrays(clf)
    assert sum(a.nbytes for a in held) == clf.param_bytes() + sum(state.values())
    ids = {id(a) for a in held}
    x = rng.normal(size=(2 * batch + 1, sizes[0])).astype(np.float32)
    clf.train_epochs(x, np.arange(len(x)) % sizes[-1], 0.1, epochs=2, batch_size=batch)
    clf.grads(x[:1], [0])
    after = _held_arrays(clf)
    assert {id(a) for a in after} == ids  # training wrote in place: nothing was reallocated
    assert all(a.dtype == np.float32 for a in after)


def _subset(model: tf.keras.Model, train: str) -> list[tf.Variable]:
    """The variables a training mode updates: all, the last layer, or every bias + the last kernel (TinyTL)."""
    dense = [l for l in model.layers if isinstance(l, tf.keras.layers.Dense)]
    if train == "all":
        return [v for l in dense for v in (l.kernel, l.bias)]
    if train == "last":
        return [dense[-1].kernel, dense[-1].bias]
    return [l.bias for l in dense] + [dense[-1].kernel]


@pytest.mark.parametrize("depth,hidden", [(1, "linear"), (2, "relu"), (2, "tanh"), (3, "sigmoid"), (3, "relu")])
@pytest.mark.parametrize("train", ["last", "bias"])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("loss,last,outputs", [("ce", "softmax", 4), ("bce", "linear", 1), ("mse", "tanh", 3)])
def test_train_subset_matches_gradient_tape(depth: int, hidden: str, train: str, batch: int, loss: str, last: str,
                                            outputs: int) -> None:
    """--train last / bias: GradientTape on the trainable subset + SGD, three steps; the rest stays bit-exact."""
    model = _keras(depth, hidden, last, seed=depth * 7 + batch + outputs, outputs=outputs)
    clf = _from_keras(model, max_batch=batch, loss=loss, train=train)
    before = [(l.weight.copy(), l.bias.copy()) for l in clf.layers]
    trainer = _TFTrainer(model, 0.1, last, loss)
    subset = _subset(model, train)
    for step in range(3):
        x, y = _data(batch, seed=step + 10 * depth)
        if loss != "ce":
            y = _targets(loss, batch, outputs, seed=step + depth)
        yt = y if loss == "ce" else np.asarray(y, np.float32).reshape(batch, -1)
        with tf.GradientTape() as tape:
            ref_loss = trainer.loss(tf.constant(yt), model(tf.constant(x), training=True))
        g_ref = tape.gradient(ref_loss, subset)
        grads = clf.grads(x, y)
        ours = [g for dw, db in grads for g in (dw, db)]
        assert sum(g is not None for g in ours) == len(subset)
        for v, g in zip(subset, g_ref):
            i, which = next((i, k) for i, l in enumerate(model.layers[1:])
                            for k, w in (("kernel", l.kernel), ("bias", l.bias)) if w is v)
            mine = grads[i][0].T if which == "kernel" else grads[i][1]
            assert _rel(mine, g.numpy()) <= TOL, f"layer {i} {which} gradient"
        trainer.opt.apply_gradients(zip(g_ref, subset))
        assert clf.sgd_step(x, y, 0.1)
    _assert_params(clf, model)
    for i, (l, (w0, b0)) in enumerate(zip(clf.layers, before)):
        tw, tb = clf.trains(i)
        if not tw:
            np.testing.assert_array_equal(l.weight, w0)
        if not tb:
            np.testing.assert_array_equal(l.bias, b0)
    assert clf.training_state_bytes(batch)["deltas"] == 4 * batch * (outputs if train == "last" else
                                                                      sum(SIZES[depth][1:-1]) + outputs)


@pytest.mark.parametrize("train", ["all", "last", "bias"])
def test_update_that_would_make_a_weight_non_finite_is_refused(train: str) -> None:
    """An overflowing step (huge lr) or a NaN delta (overflowing activations) changes nothing and says so;
    train_epochs stops at the refused step."""
    rng = np.random.default_rng(3)
    clf = Classifier([DenseLayer(rng.normal(size=(6, 5)), np.zeros(6), "relu"),
                      DenseLayer(rng.normal(size=(3, 6)), np.zeros(3), "softmax")], max_batch=2, train=train)
    keep = [(l.weight.copy(), l.bias.copy()) for l in clf.layers]
    x = rng.normal(size=(2, 5)).astype(np.float32)
    assert not clf.sgd_step(x, [0, 1], 3e38)  # lr * gradient overflows float32
    assert not clf.sgd_step(np.full((1, 5), 3e38, np.float32), [2], 0.1)  # inf logits: NaN deltas
    for l, (w, b) in zip(clf.layers, keep):
        np.testing.assert_array_equal(l.weight, w)
        np.testing.assert_array_equal(l.bias, b)
    xs = np.concatenate([x, np.full((1, 5), 3e38, np.float32), x])
    ref = clf.copy()
    assert clf.train_epochs(xs, np.array([0, 1, 2, 0, 1]), 0.1, epochs=1, batch_size=1) == 2
    assert ref.sgd_step(x[:1], [0], 0.1) and ref.sgd_step(x[1:], [1], 0.1)
    for a, b in zip(clf.layers, ref.layers):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.bias, b.bias)
