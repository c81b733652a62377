"""Messages and `tinycc ops`: dtypes by name, converter tensor names shortened, no list of layers or operators inside
an error (the unsupported one is named and `tinycc ops` lists what each frontend and backend supports)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinycc.plugins.frontends.keras import SUPPORTED_LAYERS
from tinycc.plugins.frontends.tflite import SUPPORTED_OPERATORS, short_name, type_name


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinycc.cli", *args], capture_output=True, text=True, timeout=300)


def test_ops_lists_every_frontend_and_backend_with_dtypes() -> None:
    r = _cli("ops")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for title in ("keras frontend", "tflite frontend", "int8 quantization", "c backend", "arduino backend",
                  "tflm backend"):
        assert title in out
    assert out.count("dtypes:") == 11 and "(16x8: int8 weights, int64/int32 bias)" in " ".join(out.split())
    assert "int16 quantization and interpreter" in out
    words = set(out.replace(",", " ").split())
    assert set(SUPPORTED_LAYERS) <= words
    assert (SUPPORTED_OPERATORS - {"SHAPE", "STRIDED_SLICE", "PACK", "TILE", "SPACE_TO_BATCH_ND",
                                   "BATCH_TO_SPACE_ND"}) <= words
    assert {"SUB", "MAXIMUM", "TRANSPOSE", "SLICE", "RESIZE_NEAREST_NEIGHBOR"} <= words
    assert {"softplus", "softsign", "selu", "mish", "exponential", "gelu"} <= words  # the Keras activations
    assert max(len(line) for line in out.splitlines()) <= 100
    assert _cli("ops").stdout == out  # deterministic


def test_names_and_types() -> None:
    assert type_name(7) == "int16" and type_name(3) == "uint8" and type_name(1) == "float16"
    assert type_name(99) == "type 99"
    assert short_name("serving_default_input_1:0") == "input_1"
    assert short_name("functional_1/conv_a_1/Relu;functional_1/conv_a_1/BiasAdd;functional_1/conv_a_1/"
                      "convolution;" + "x" * 200) == "conv_a_1/Relu"
    long = "model/" + "/".join(f"block{i}" for i in range(40))
    assert len(short_name(long)) == 60 and short_name(long).startswith("...")


def _convert_16x8(model, x: np.ndarray) -> bytes:
    import tensorflow as tf

    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
    c.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    c.inference_input_type = c.inference_output_type = tf.int16
    return c.convert()


def test_refusals_are_one_short_line_naming_the_dtype_or_operator(tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 2), name="audio_frames")
    x = keras.layers.Conv2D(3, 3, activation="relu", name="conv_a")(inp)
    m = keras.Model(inp, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x)))
    p16 = tmp_path / "m16x8.tflite"
    p16.write_bytes(_convert_16x8(m, np.random.default_rng(0).normal(size=(8, 6, 6, 2)).astype(np.float32)))
    r = _cli("inspect", str(p16))  # 16x8 files are read (tests/test_int16.py) ...
    assert r.returncode == 0 and "int16" in r.stdout, r.stderr
    up = keras.Model(inp, keras.layers.Conv2DTranspose(2, 3, strides=2, name="up")(x))  # ... TRANSPOSE_CONV too
    p16 = tmp_path / "tconv16x8.tflite"  # (an int16 op without a kernel: tests/test_int16.py)
    p16.write_bytes(_convert_16x8(up, np.random.default_rng(0).normal(size=(8, 6, 6, 2)).astype(np.float32)))
    r = _cli("inspect", str(p16))
    assert r.returncode == 0 and "int16" in r.stdout and "transpose_conv2d" in r.stdout, r.stderr
    inp = keras.Input((4,))
    out = keras.ops.abs(keras.layers.Dense(3, name="dense_features")(inp))
    pabs = tmp_path / "abs.tflite"
    pabs.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, out)).convert())
    r = _cli("inspect", str(pabs))
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1 and len(err) < 260, err
    assert "TFLite operator ABS" in err and "`tinycc ops`" in err and "CONV_2D" not in err
    inp = keras.Input((8, 8, 1))
    ln = keras.layers.UnitNormalization(name="ln")(inp)  # (LayerNormalization is read: tests/test_layernorm.py)
    pk = tmp_path / "ln.keras"
    keras.Model(inp, ln).save(pk)
    r = _cli("inspect", str(pk))
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1 and len(err) < 260, err
    assert "'ln' of class UnitNormalization" in err and "`tinycc ops`" in err and "Conv1D" not in err
