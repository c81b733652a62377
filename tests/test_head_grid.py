"""benchmarks.head_grid: the widened ResNet-8 head reads 4x the features and computes the original outputs."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_depth import DATA, MODEL

pytestmark = pytest.mark.skipif(not (MODEL.exists() and (DATA / "cifar10.npz").exists()),
                                reason="needs ../shared ResNet-8 and CIFAR-10")


def test_grid2_same_outputs_wider_head(tmp_path) -> None:
    import tensorflow as tf

    from benchmarks.head_grid import widen

    x = np.load(DATA / "cifar10.npz")["x_test"][:32].astype(np.float32)
    path = tmp_path / "r.keras"
    diff = widen(str(MODEL), 2, str(path), x)
    m, w = tf.keras.models.load_model(str(MODEL), compile=False), tf.keras.models.load_model(str(path), compile=False)
    assert diff < 1e-5
    np.testing.assert_allclose(w.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-5)
    k = w.get_layer("dense").get_weights()[0]
    assert k.shape == (256, 10)  # 2x2 cells x 64 channels
    np.testing.assert_array_equal(k[:64] * 4, m.get_layer("dense").get_weights()[0])
    # the head's input differs from the global mean once the grid cells differ (more information, not a copy)
    feat = tf.keras.Model(w.input, w.get_layer("flatten_grid").output).predict(x, verbose=0).reshape(-1, 4, 64)
    assert np.abs(feat - feat.mean(axis=1, keepdims=True)).max() > 0.1


def test_grid_must_divide_the_map(tmp_path) -> None:
    from benchmarks.head_grid import widen

    with pytest.raises(ValueError, match="does not divide"):
        widen(str(MODEL), 3, str(tmp_path / "r.keras"))
