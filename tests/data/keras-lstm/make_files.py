"""Writes the converter-made int8 LSTM files in this folder (run from the repository root, with tf-keras installed:
`pip install --no-deps tf-keras==2.21.0`; Keras 3 has no fused LSTM for the converter, see README.md).

Each model is a Keras 2 (tf_keras) LSTM model trained a few epochs on synthetic sequences, converted by
tf.lite.TFLiteConverter with full-integer int8 quantization (int8 input and output) from 64 representative samples.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent


def _data(n: int, steps: int, feats: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class k has a bump in feature k % feats at a class-dependent time, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 0.4, (n, steps, feats)).astype(np.float32)
    t = np.arange(steps)
    for i, k in enumerate(y):
        x[i, :, k % feats] += 2.5 * np.exp(-((t - (k + 1) * steps / (classes + 1)) / (steps / 8)) ** 2)
    return x, y


def _models(k):
    """name -> (model, steps, feats, classes): return_sequences both ways, stacked, Dense heads."""
    L = k.layers
    out = {}
    inp = k.Input((49, 10), batch_size=1)  # keyword spotting: MFCC-like frames -> LSTM -> Dense head
    h = L.Dense(16, activation="relu", name="fc")(L.LSTM(20, name="lstm")(inp))
    out["kws_lstm"] = (k.Model(inp, L.Dense(4, activation="softmax", name="head")(h)), 49, 10, 4)
    inp = k.Input((8, 4), batch_size=1)  # return_sequences=True -> Flatten -> Dense
    h = L.Flatten(name="flat")(L.LSTM(6, return_sequences=True, name="lstm")(inp))
    h = L.Dense(8, activation="relu", name="fc")(h)
    out["seq_lstm"] = (k.Model(inp, L.Dense(3, name="head")(h)), 8, 4, 3)
    inp = k.Input((12, 5), batch_size=1)  # two stacked layers, the first returning sequences
    h = L.LSTM(10, return_sequences=True, name="lstm1")(inp)
    h = L.Dense(8, activation="relu", name="fc")(L.LSTM(8, name="lstm2")(h))
    out["stacked_lstm"] = (k.Model(inp, L.Dense(3, activation="softmax", name="head")(h)), 12, 5, 3)
    return out


def main() -> int:
    import tensorflow as tf
    import tf_keras as k

    k.utils.set_random_seed(0)
    for name, (m, steps, feats, classes) in _models(k).items():
        x, y = _data(256, steps, feats, classes, 0)
        m.compile(optimizer=k.optimizers.Adam(0.01), loss=k.losses.SparseCategoricalCrossentropy(
            from_logits=name == "seq_lstm"), metrics=["accuracy"])
        m.fit(x, y, epochs=4, batch_size=32, verbose=0)
        c = tf.lite.TFLiteConverter.from_keras_model(m)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ([x[i:i + 1]] for i in range(64))
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = tf.int8
        c.inference_output_type = tf.int8
        data = c.convert()
        tmp = HERE / f".{name}.tflite.tmp"
        tmp.write_bytes(data)
        tmp.replace(HERE / f"{name}.tflite")
        print(f"{name}.tflite: {len(data)} bytes, accuracy {m.evaluate(x, y, verbose=0)[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
