"""Replay buffer policies and the online learner: property tests against reference models."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycc.ir.buffer import (OnlineLearner, ReplayBuffer, dequantize_features, quantize_features,
                              round_half_away, xorshift32)
from tinycc.ir.train import Classifier, DenseLayer

N_CLASSES = 5
F = 3
SCALE, ZP = 0.05, 3
streams = st.lists(st.integers(0, N_CLASSES - 1), min_size=1, max_size=60)
policies = st.sampled_from(["fifo", "reservoir", "class_balanced"])


class RecordingClassifier(Classifier):
    """Records every training batch it is given."""

    def __init__(self, layers: list[DenseLayer], max_batch: int = 1) -> None:
        super().__init__(layers, max_batch)
        self.batches: list[tuple[np.ndarray, np.ndarray]] = []

    def sgd_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> bool:
        self.batches.append((np.array(x), np.array(y)))
        return super().sgd_step(x, y, lr)


def _sample(i: int, y: int, storage: str) -> np.ndarray:
    """Features that identify sample i (int8: pushed already quantized)."""
    if storage == "int8":
        return np.array([i, y, -i], np.int8)
    return np.array([i, y, -i], np.float32) * np.float32(0.25)


def _stored(i: int, y: int, storage: str) -> np.ndarray:
    f = _sample(i, y, storage)
    return dequantize_features(f, SCALE, ZP) if storage == "int8" else f


def _ref_reservoir(n: int, cap: int, seed: int) -> list[int]:
    """Algorithm R with xorshift32, written out independently: sample indices per slot."""
    x, slots = seed or 1, []
    for i in range(n):
        if len(slots) < cap:
            slots.append(i)
            continue
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        j = x % (i + 1)
        if j < cap:
            slots[j] = i
    return slots


def _ref_balanced(labels: list[int], cap: int) -> list[int]:
    """Class-balanced eviction as in the C runtime: most represented class counting the incoming
    sample (ties: the incoming class if stored, else the lowest index), its oldest entry."""
    slots: list[int] = []
    for i, y in enumerate(labels):
        if len(slots) < cap:
            slots.append(i)
            continue
        stored = Counter(labels[k] for k in slots)
        with_new = stored + Counter([y])
        best = max(with_new.values())
        cls = y if stored[y] > 0 and with_new[y] == best else min(c for c in stored if stored[c] == best)
        victim = min((s for s in range(cap) if labels[slots[s]] == cls), key=lambda s: slots[s])
        slots[victim] = i
    return slots


def _expected_order(labels: list[int], cap: int, policy: str, seed: int) -> list[int]:
    n = len(labels)
    if policy == "fifo":
        return list(range(max(0, n - cap), n))
    return _ref_reservoir(n, cap, seed) if policy == "reservoir" else _ref_balanced(labels, cap)


@settings(max_examples=60, deadline=None)
@given(labels=streams, cap=st.integers(1, 12), policy=policies, storage=st.sampled_from(["int8", "float32"]),
       epochs=st.integers(1, 2), batch=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_policies_capacity_contents_and_training_uses_every_entry(labels, cap, policy, storage, epochs, batch,
                                                                    seed) -> None:
    buf = ReplayBuffer(cap, F, storage, SCALE, ZP, policy, seed)
    clf = RecordingClassifier([DenseLayer(np.zeros((N_CLASSES, F)), np.zeros(N_CLASSES), "softmax")], batch)
    learner = OnlineLearner(clf, buf, lr=0.01, epochs=epochs, batch_size=batch)
    for i, y in enumerate(labels):
        clf.batches.clear()
        slot = learner.learn(_sample(i, y, storage), y)
        assert buf.count == min(i + 1, cap) <= cap
        assert -1 <= slot < cap and (slot >= 0 or policy == "reservoir")
        # every valid entry, exactly once per epoch, in training order, in consecutive batches
        assert learner.last_trained == epochs * buf.count
        x, ys = buf.entries()
        n = buf.count
        per_epoch = [batch] * (n // batch) + ([n % batch] if n % batch else [])
        assert [len(b[1]) for b in clf.batches] == per_epoch * epochs
        np.testing.assert_array_equal(np.concatenate([b[0] for b in clf.batches]), np.tile(x, (epochs, 1)))
        np.testing.assert_array_equal(np.concatenate([b[1] for b in clf.batches]), np.tile(ys, epochs))
    order = _expected_order(labels, cap, policy, seed)
    x, ys = buf.entries()
    np.testing.assert_array_equal(ys, [labels[i] for i in order])
    np.testing.assert_array_equal(x, np.stack([_stored(i, labels[i], storage) for i in order]))
    assert sorted(buf.order().tolist()) == list(range(buf.count))
    np.testing.assert_array_equal(buf.class_counts(N_CLASSES), np.bincount(ys, minlength=N_CLASSES))


@settings(max_examples=80, deadline=None)
@given(labels=st.lists(st.integers(0, N_CLASSES - 1), min_size=1, max_size=120), cap=st.integers(1, 16))
def test_class_balanced_counts(labels, cap) -> None:
    """Once full the largest class never grows, and a class that lost an entry stays within one of
    the largest; so a class more than one below the largest holds every sample of it pushed."""
    buf = ReplayBuffer(cap, 2, "float32", policy="class_balanced")
    offered = np.zeros(N_CLASSES, int)
    prev_max = None
    lost = np.zeros(N_CLASSES, bool)
    for y in labels:
        before = buf.class_counts(N_CLASSES)
        buf.push(np.zeros(2, np.float32), y)
        offered[y] += 1
        counts = buf.class_counts(N_CLASSES)
        assert counts.sum() == buf.count <= cap
        lost |= counts < before
        if buf.count == cap:
            if prev_max is not None:
                assert counts.max() <= prev_max
            prev_max = counts.max()
        assert np.all(counts[lost] >= counts.max() - 1)
        assert np.all((counts >= counts.max() - 1) | (counts == offered))


def test_class_balanced_tie_rules() -> None:
    buf = ReplayBuffer(4, 1, "float32", policy="class_balanced")
    for i, y in enumerate([1, 0, 1, 0]):  # full: {0: 2, 1: 2}
        assert buf.push(np.array([i], np.float32), y) == i
    assert buf.push(np.array([4.0], np.float32), 1) == 0  # incoming class tied for max: its oldest
    assert buf.push(np.array([5.0], np.float32), 2) == 1  # new class: lowest max class (0), oldest
    assert buf.push(np.array([6.0], np.float32), 2) == 1  # {0:1, 1:2, 2:1}: 2 would tie the max: its oldest
    assert buf.push(np.array([7.0], np.float32), 3) == 2  # new class: most represented (1), its oldest
    np.testing.assert_array_equal(buf.entries()[1], [1, 2, 3, 0])


def test_reservoir_prng_is_specified_and_deterministic() -> None:
    assert xorshift32(1) == 270369
    x, seq = 1, []
    for _ in range(3):
        x = xorshift32(x)
        seq.append(x)
    assert seq == [270369, 67634689, 2647435461]
    a = ReplayBuffer(5, 8, "int8", 0.1, 0, "reservoir", seed=3)
    b = ReplayBuffer(5, 8, "int8", 0.1, 0, "reservoir", seed=3)
    slots = [a.push(np.full(8, i % 7, np.float32) * 0.1, i % 10) for i in range(200)]
    assert slots == [b.push(np.full(8, i % 7, np.float32) * 0.1, i % 10) for i in range(200)]
    assert slots[:5] == [0, 1, 2, 3, 4] and -1 in slots and a.seen == 200
    a.reset()
    assert (a.count, a.seen, a.rng) == (0, 0, 3)
    assert [a.push(np.full(8, i % 7, np.float32) * 0.1, i % 10) for i in range(200)] == slots
    assert ReplayBuffer(2, 1, "float32", policy="reservoir", seed=0).rng == 1  # 0 would be a fixed point


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(-8, 8, allow_nan=False, width=32), min_size=4, max_size=4),
       scale=st.floats(0.01, 0.5).map(lambda s: float(np.float32(s))), zp=st.integers(-20, 20))
def test_int8_round_trip_error(values, scale, zp) -> None:
    buf = ReplayBuffer(2, 4, "int8", scale, zp)
    f = np.asarray(values, np.float32)
    buf.push(f, 1)
    x, _ = buf.entries()
    s = np.float32(scale)
    q = buf.data[0].astype(int)
    inside = (f >= s * (-128 - zp)) & (f <= s * (127 - zp))
    bound = s / 2 + 4 * np.finfo(np.float32).eps * np.maximum(np.abs(f), s)
    assert np.all(np.abs(x[0] - f)[inside] <= bound[inside])
    assert np.all(q[(f > s * (127.5 - zp) * (1 + 1e-6))] == 127)
    assert np.all(q[(f < s * (-128.5 - zp) * (1 + 1e-6))] == -128)


def test_quantize_is_roundf_then_clamp() -> None:
    v = np.array([0.5, -0.5, 1.5, -1.5, 2.5, 0.49999997, -0.49999997, 1e30, -1e30, np.inf], np.float32)
    np.testing.assert_array_equal(round_half_away(v[:7]), [1, -1, 2, -2, 3, 0, -0])
    np.testing.assert_array_equal(quantize_features(v, 1.0, 0), [1, -1, 2, -2, 3, 0, 0, 127, -128, 127])
    np.testing.assert_array_equal(quantize_features(np.float32([0.25, -0.25]), 0.5, -3), [-2, -4])
    with pytest.raises(ValueError, match="NaN"):
        quantize_features(np.float32([np.nan]), 1.0, 0)


def test_int8_features_are_stored_as_is() -> None:
    q = np.array([-128, -1, 0, 127], np.int8)
    buf = ReplayBuffer(1, 4, "int8", 0.1, -2)
    buf.push(q, 3)
    np.testing.assert_array_equal(buf.data[0], q)
    np.testing.assert_array_equal(buf.entries()[0][0], dequantize_features(q, 0.1, -2))
    fbuf = ReplayBuffer(1, 4, "float32", 0.1, -2)
    fbuf.push(q, 3)
    np.testing.assert_array_equal(fbuf.entries()[0][0], np.float32(0.1) * (q.astype(np.float32) + 2))
    with pytest.raises(ValueError, match="scale"):
        ReplayBuffer(1, 4, "float32").push(q, 0)


@pytest.mark.parametrize("policy", ["fifo", "reservoir", "class_balanced"])
@pytest.mark.parametrize("storage,elem", [("int8", 1), ("float32", 4)])
def test_nbytes_is_exactly_what_the_buffer_allocates(policy: str, storage: str, elem: int) -> None:
    cap, feat = 7, 10
    buf = ReplayBuffer(cap, feat, storage, 0.1, 0, policy)
    arrays = [v for v in vars(buf).values() if isinstance(v, np.ndarray)]
    ids = {id(a) for a in arrays}
    state = 4 * cap + 16  # per-slot uint32 stamps + count, head, seen, rng
    assert buf.nbytes() == sum(a.nbytes for a in arrays) == cap * (feat * elem + 1) + state
    assert buf.nbytes() == ReplayBuffer.bytes_for(cap, feat, storage)
    for i in range(30):
        buf.push(np.full(feat, i * 0.01, np.float32), i % 4)
    buf.reset()
    after = [v for v in vars(buf).values() if isinstance(v, np.ndarray)]
    assert {id(a) for a in after} == ids and sum(a.nbytes for a in after) == buf.nbytes()
    clf = Classifier([DenseLayer(np.zeros((4, feat)), np.zeros(4))], max_batch=3)
    learner = OnlineLearner(clf, buf, batch_size=3)
    assert learner.staging_bytes() == {}  # the buffer is read in place


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match="0..255"):
        ReplayBuffer(2, 1, "float32").push(np.zeros(1, np.float32), 256)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0, 1, "float32")
    with pytest.raises(ValueError, match="policy"):
        ReplayBuffer(1, 1, "float32", policy="lru")
    with pytest.raises(ValueError, match="scale"):
        ReplayBuffer(1, 1, "int8")
    with pytest.raises(ValueError, match="expected 2 features"):
        ReplayBuffer(1, 2, "float32").push(np.zeros(3, np.float32), 0)
    with pytest.raises(TypeError):
        ReplayBuffer(1, 2, "float32").push(np.zeros(2, np.int32), 0)
    big = Classifier([DenseLayer(np.zeros((257, 2)), np.zeros(257))])
    with pytest.raises(ValueError, match="256"):
        OnlineLearner(big, ReplayBuffer(1, 2, "float32"))
    clf = Classifier([DenseLayer(np.zeros((3, 2)), np.zeros(3))])
    with pytest.raises(ValueError, match="max_batch"):
        OnlineLearner(clf, ReplayBuffer(4, 2, "float32"), batch_size=2)
    with pytest.raises(ValueError, match="label"):
        OnlineLearner(clf, ReplayBuffer(4, 2, "float32")).learn(np.zeros(2, np.float32), 3)


def test_tinyol_trains_on_the_latest_sample_only() -> None:
    rng = np.random.default_rng(0)
    layers = [DenseLayer(rng.normal(size=(4, 6)), rng.normal(size=4), "relu"),
              DenseLayer(rng.normal(size=(3, 4)), rng.normal(size=3), "softmax")]
    learner = OnlineLearner.tinyol(Classifier([l.copy() for l in layers]), lr=0.1, epochs=2)
    ref = Classifier([l.copy() for l in layers])
    assert learner.buffer.capacity == 1 and learner.buffer.storage == "float32"
    for i in range(5):
        x = rng.normal(size=6).astype(np.float32)
        learner.learn(x, i % 3)
        ref.train_epochs(x[None], [i % 3], 0.1, epochs=2)
        assert learner.buffer.count == 1 and learner.last_trained == 2
    for a, b in zip(learner.classifier.layers, ref.layers):
        np.testing.assert_array_equal(a.weight, b.weight)
    cls, p = learner.predict(x)
    np.testing.assert_array_equal(p, ref.forward(x))
    q = OnlineLearner.tinyol(Classifier([l.copy() for l in layers]), scale=0.1, zero_point=0)
    assert q.buffer.storage == "int8"
    fresh = Classifier([l.copy() for l in layers])
    np.testing.assert_array_equal(q.predict(np.ones(6, np.int8))[1], fresh.forward(np.full(6, 0.1, np.float32)))


@pytest.mark.parametrize("policy", ["fifo", "reservoir"])
@pytest.mark.parametrize("storage,tscale,telem", [("int8", None, 4), ("int8", 0.02, 1), ("float32", None, 4)])
def test_regression_buffer_stores_targets_and_trains_like_the_classifier(policy: str, storage: str,
                                                                         tscale: float | None, telem: int) -> None:
    """Regression entries hold a target vector (float32, or int8 in the target quantization) instead of a
    label; nbytes/bytes_for count exactly the arrays; retraining equals sgd steps on the dequantized entries."""
    rng = np.random.default_rng(4)
    cap, feat, tc = 5, 6, 3
    buf = ReplayBuffer(cap, feat, storage, SCALE, ZP, policy, 7, tc, tscale, -5 if tscale else None)
    arrays = [v for v in vars(buf).values() if isinstance(v, np.ndarray)]
    assert buf.nbytes() == sum(a.nbytes for a in arrays) == cap * (feat * (1 if storage == "int8" else 4) + tc * telem
                                                                   + 4) + 16
    assert buf.nbytes() == ReplayBuffer.bytes_for(cap, feat, storage, tc, "int8" if tscale else "float32")
    layers = [DenseLayer(rng.normal(size=(4, feat)), rng.normal(size=4), "tanh"),
              DenseLayer(rng.normal(size=(tc, 4)), rng.normal(size=tc), "linear")]
    learner = OnlineLearner(Classifier(layers, max_batch=2, loss="mse"), buf, 0.05, 2, 2)
    assert learner.staging_bytes() == {}
    ref = Classifier([l.copy() for l in layers], max_batch=2, loss="mse")
    for i in range(9):
        x = rng.normal(size=feat).astype(np.float32)
        t = rng.normal(size=tc).astype(np.float32)
        learner.learn(x, t)
        xs, ts = buf.entries()
        assert ts.dtype == np.float32 and ts.shape == (buf.count, tc)
        ref.train_epochs(xs, ts, 0.05, epochs=2, batch_size=2)
    for a, b in zip(learner.classifier.layers, ref.layers):
        np.testing.assert_array_equal(a.weight, b.weight)
    _, t0 = buf.entry(0)
    if tscale:
        np.testing.assert_array_equal(t0, dequantize_features(buf.targets[buf.slot(0)], tscale, -5))
    assert buf.labels.size == 0 and buf.class_counts().size == 0


def test_regression_buffer_validation() -> None:
    with pytest.raises(ValueError, match="class_balanced"):
        ReplayBuffer(2, 2, "float32", policy="class_balanced", target_count=2)
    buf = ReplayBuffer(2, 2, "float32", target_count=2)
    for bad in (np.array([0.0, np.nan]), np.array([np.inf, 0.0])):
        with pytest.raises(ValueError, match="finite"):
            buf.push(np.zeros(2, np.float32), bad)
    with pytest.raises(ValueError, match="target of 2 values"):
        buf.push(np.zeros(2, np.float32), np.zeros(3))
    assert buf.count == 0 and buf.seen == 0  # refused before anything was written
    clf = Classifier([DenseLayer(np.zeros((2, 2)), np.zeros(2))], loss="mse")
    with pytest.raises(ValueError, match="target values"):
        OnlineLearner(clf, ReplayBuffer(2, 2, "float32"))
    with pytest.raises(ValueError, match="target values"):
        OnlineLearner(Classifier([DenseLayer(np.zeros((2, 2)), np.zeros(2))]), buf)
    tiny = OnlineLearner.tinyol(clf, lr=0.1)
    tiny.learn(np.ones(2, np.float32), np.array([1.0, -1.0]))
    assert tiny.buffer.count == 1 and tiny.last_trained == 1


def test_binary_head_learns_labels_0_and_1() -> None:
    clf = Classifier([DenseLayer(np.zeros((1, 3)), np.zeros(1), "sigmoid")], loss="bce")
    learner = OnlineLearner(clf, ReplayBuffer(4, 3, "float32", policy="class_balanced"), lr=0.5)
    for i in range(8):
        learner.learn(np.array([1.0, 0.0, -1.0], np.float32) * (1 if i % 2 else -1), i % 2)
    with pytest.raises(ValueError, match="0..1"):
        learner.learn(np.zeros(3, np.float32), 2)
    cls, p = learner.predict(np.array([[1.0, 0.0, -1.0], [-1.0, 0.0, 1.0]], np.float32))
    np.testing.assert_array_equal(cls, [1, 0])
    assert p.shape == (2, 1) and p[0, 0] > 0.5 > p[1, 0]
