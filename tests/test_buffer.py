"""Replay buffer policies: property tests."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycc.ir.buffer import OnlineLearner, ReplayBuffer
from tinycc.ir.train import Classifier, DenseLayer

streams = st.lists(st.integers(0, 4), min_size=1, max_size=60)


@settings(max_examples=40, deadline=None)
@given(labels=streams, cap=st.integers(1, 12), policy=st.sampled_from(["fifo", "reservoir", "class_balanced"]))
def test_capacity_and_training_uses_every_entry(labels, cap, policy) -> None:
    buf = ReplayBuffer(cap, 3, "int8", 0.05, 3, policy, seed=7)
    clf = Classifier([DenseLayer(np.zeros((5, 3)), np.zeros(5), "softmax")])
    learner = OnlineLearner(clf, buf, lr=0.01)
    for i, y in enumerate(labels):
        learner.learn(np.full(3, i * 0.01, np.float32), y)
        assert buf.count <= cap and buf.count == min(i + 1, cap)
        assert learner.last_trained == buf.count
        x, ys = buf.entries()
        assert len(x) == buf.count and len(set(buf.order().tolist())) == buf.count
    if policy == "fifo":  # the newest min(n, cap) samples, oldest first
        np.testing.assert_array_equal(buf.entries()[1], np.array(labels[-cap:]))
    if policy == "class_balanced" and len(labels) >= cap:
        counts = buf.class_counts(5)
        present = counts[counts > 0]
        total = np.bincount(labels, minlength=5)
        # a class is only under-represented if the stream did not offer more of it
        for c in range(5):
            if counts[c] < present.max() - 1:
                assert counts[c] == total[c]


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(-6, 6, allow_nan=False), min_size=4, max_size=4),
       scale=st.floats(0.01, 0.5), zp=st.integers(-20, 20))
def test_int8_round_trip_error(values, scale, zp) -> None:
    buf = ReplayBuffer(2, 4, "int8", scale, zp)
    f = np.asarray(values, np.float32)
    buf.push(f, 1)
    x, _ = buf.entries()
    lo, hi = np.float32(scale) * (-128 - zp), np.float32(scale) * (127 - zp)
    inside = (f >= lo) & (f <= hi)
    assert np.all(np.abs(x[0][inside] - f[inside]) <= np.float32(scale) / 2 * (1 + 1e-5))


def test_reservoir_is_deterministic_and_nbytes_exact() -> None:
    a = ReplayBuffer(5, 8, "int8", 0.1, 0, "reservoir", seed=3)
    b = ReplayBuffer(5, 8, "int8", 0.1, 0, "reservoir", seed=3)
    for i in range(100):
        assert a.push(np.full(8, i % 7, np.float32) * 0.1, i % 10) == b.push(np.full(8, i % 7, np.float32) * 0.1, i % 10)
    assert a.nbytes() == ReplayBuffer.bytes_for(5, 8, "int8")
    assert a.nbytes() == a.data.nbytes + a.labels.nbytes + a.stamp.nbytes + 16
    f = ReplayBuffer(3, 10, "float32")
    assert f.nbytes() == ReplayBuffer.bytes_for(3, 10, "float32") == 3 * (40 + 1 + 4) + 16
