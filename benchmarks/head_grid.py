"""A wider head for a Keras classifier: the last average pooling keeps a ``grid`` x ``grid`` map instead of 1x1.

``widen(model_path, grid, out_path)`` rebuilds ``... -> AveragePooling2D (whole map) -> Flatten -> Dense -> ...`` as
``... -> AveragePooling2D (map / grid) -> Flatten -> Dense' -> ...``: the head reads ``grid * grid`` times more
features (ResNet-8: 2x2 x 64 = 256 instead of 64). Dense' starts as the original Dense tiled over the grid cells and
divided by ``grid * grid``, so the widened model computes the same outputs (checked, to float rounding) before any
learning. A benchmark helper (``python -m benchmarks depth --head-grid 2``), not a compiler pass.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def widen(model_path: str, grid: int, out_path: str, check: np.ndarray | None = None) -> float:
    """Write the widened model to ``out_path`` (.keras); returns max |output difference| on ``check`` (0 if none)."""
    import tensorflow as tf

    m = tf.keras.models.load_model(model_path, compile=False)
    kinds = [type(l).__name__ for l in m.layers]
    pools = [i for i, k in enumerate(kinds) if k in ("AveragePooling2D", "GlobalAveragePooling2D")]
    after = kinds[pools[-1] + 1:pools[-1] + 3] if pools else []
    if not after or (after != ["Flatten", "Dense"] and after[0] != "Dense"):
        raise ValueError(f"{model_path}: expected ... -> AveragePooling2D -> Flatten -> Dense at the end")
    pool = m.layers[pools[-1]]
    x = pool.input
    h, w = int(x.shape[1]), int(x.shape[2])
    if h % grid or w % grid:
        raise ValueError(f"{model_path}: the {h}x{w} map does not divide into a {grid}x{grid} grid")
    y = tf.keras.layers.AveragePooling2D(pool_size=(h // grid, w // grid), name=pool.name)(x)
    y = tf.keras.layers.Flatten(name="flatten_grid")(y)
    rest = [l for l in m.layers[pools[-1] + 1:] if type(l).__name__ != "Flatten"]
    first = rest[0]
    k, b = first.get_weights()
    dense = tf.keras.layers.Dense(first.units, activation=first.activation, name=first.name)
    y = dense(y)
    for layer in rest[1:]:
        y = layer(y)
    n = tf.keras.Model(m.input, y)
    dense.set_weights([np.tile(k, (grid * grid, 1)) / (grid * grid), b])
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    n.save(out_path)
    if check is None:
        return 0.0
    return float(np.abs(n.predict(check, verbose=0) - m.predict(check, verbose=0)).max())
