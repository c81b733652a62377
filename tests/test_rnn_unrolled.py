"""Keras 3 LSTM, GRU and SimpleRNN through the TFLite converter. Keras 3 gives the converter no fused recurrent op:
with unroll=False the converter writes a WHILE loop and its int8/16x8 calibration crashes (tests/data/keras-lstm/
README.md), so a Keras 3 user converts with unroll=True and gets plain operators per step (UNPACK, FULLY_CONNECTED,
SPLIT, LOGISTIC, TANH, MUL, ADD, SUB, PACK). Those files (int8 and 16x8; stacked, return_sequences both ways) import;
run_int8 equals TFLite's BUILTIN_REF kernels and TFLite Micro bit for bit; the generated C (ASan/UBSan) and the
tflm target's model (the deployed graph written as .tflite, in TFLite Micro) equal run_int8; the int8 GRU learns on
the device like the simulator, its first vectors equal run_int8 under QEMU M4, and its arduino sketch builds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.simulator import Simulator
from tinycc.plugins.frontends.tflite import read_tflite

from . import c_harness
from .deploy_util import build_deployment, build_inference, emit, render_project
from .op_checks import assert_c_inference_equals_run_int8, assert_output_equals_run_int8
from .test_lstm import _tflm

keras = pytest.importorskip("keras")
litert = pytest.importorskip("ai_edge_litert.interpreter")
STEPS, FEATS = 8, 3
# the converter's 16x8 SPLIT file cannot be invoked by TFLite Micro (as in test_int16_new_ops); tinycc's own
# written model (slices) runs there
TFLM_CANNOT = {("lstm", "16x8"), ("gru", "16x8")}


def _model(layer: str):
    """lstm: two stacked LSTMs; gru: GRU(return_sequences=True) -> Flatten -> Dense head; simple_rnn: one layer."""
    keras.utils.set_random_seed(11)
    L = keras.layers
    inp = keras.Input((STEPS, FEATS), batch_size=1)
    if layer == "lstm":
        h = L.LSTM(5, unroll=True, name="lstm2")(L.LSTM(6, unroll=True, return_sequences=True, name="lstm1")(inp))
    elif layer == "gru":
        h = L.Flatten(name="flat")(L.GRU(6, unroll=True, return_sequences=True, name="gru")(inp))
    else:
        h = L.SimpleRNN(6, unroll=True, name="rnn")(inp)
    h = L.Dense(8, activation="relu", name="fc")(h)
    return keras.Model(inp, L.Dense(3, name="head")(h))


def _calib(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, STEPS, FEATS)).astype(np.float32)


def _convert(layer: str, mode: str) -> bytes:
    import tensorflow as tf

    x = _calib(32, 0)
    c = tf.lite.TFLiteConverter.from_keras_model(_model(layer))
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
    io = tf.int8 if mode == "int8" else tf.int16
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if mode == "int8" else
                                   tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    c.inference_input_type = c.inference_output_type = io
    return c.convert()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[tuple[str, str], Path]:
    out = tmp_path_factory.mktemp("rnn_unrolled")
    paths = {}
    for layer in ("lstm", "gru", "simple_rnn"):
        for mode in ("int8", "16x8"):
            paths[layer, mode] = out / f"{layer}_{mode}.tflite"
            paths[layer, mode].write_bytes(_convert(layer, mode))
    return paths


@pytest.mark.parametrize("mode", ["int8", "16x8"])
@pytest.mark.parametrize("layer", ["lstm", "gru", "simple_rnn"])
def test_unrolled_converter_file_equals_builtin_ref_tflm_and_c(files, tmp_path: Path, session, layer: str,
                                                                mode: str) -> None:
    _check(files[layer, mode], layer, mode, tmp_path, session)


def test_unrolled_lstm_with_the_converters_float_split(tmp_path: Path, session) -> None:
    """A converter-made unrolled int8 LSTM (tests/data/keras-lstm; the converter writes this form on some runs)
    whose first gate split runs in float: int8 FULLY_CONNECTED -> DEQUANTIZE -> float SPLIT -> QUANTIZE. The reader
    slices the int8 tensor and dequantizes each part (the C backend has no float slice)."""
    from ai_edge_litert.interpreter import Interpreter

    path = Path(__file__).parent / "data" / "keras-lstm" / "unrolled_lstm_int8.tflite"
    ops = [d["op_name"] for d in Interpreter(model_path=str(path))._get_ops_details()]
    assert ops[ops.index("DEQUANTIZE") + 1] == "SPLIT"
    _check(path, "lstm", "int8", tmp_path, session)


def _check(path: Path, layer: str, mode: str, tmp_path: Path, session) -> None:
    pytest.importorskip("tflite_micro")
    from tinycc.tflite_writer import write_tflite

    g = read_tflite(str(path))
    kinds = {o.kind.value for o in g.ops}
    assert {"slice", "dense", "tanh"} <= kinds and (layer == "simple_rnn" or "sigmoid" in kinds)
    info = np.iinfo(np.int8 if mode == "int8" else np.int16)
    rng = np.random.default_rng(2)
    x = rng.integers(info.min, info.max + 1, (4, STEPS, FEATS)).astype(info.dtype)
    assert_output_equals_run_int8(g, path.read_bytes(), x, what=f"BUILTIN_REF {layer} {mode}")
    if (layer, mode) not in TFLM_CANNOT:
        np.testing.assert_array_equal(_tflm(path.read_bytes(), x), run_int8(g, x)[g.outputs[0]])
    dep = build_inference(g, {}, session, CBackend())  # float I/O: the C quantizes as the file says
    xf, fg, mine = assert_c_inference_equals_run_int8(dep, g, x, tmp_path / "c", f"{layer} {mode}")
    written = _tflm(write_tflite(fg), xf).reshape(len(x), -1).astype(np.float32)
    for i in range(len(x)):
        np.testing.assert_array_equal(written[i], mine[i], err_msg=f"TFLite Micro on the written {layer} {mode} {i}")


def _gru_learning(files, session, backend, n: int):
    g = read_tflite(str(files["gru", "int8"]))
    dep = build_deployment(g, {"calib_data": _calib(16, 3), "buffer": 4, "lr": 0.05}, session, backend)
    assert "sigmoid" in [o.kind.value for o in dep.extractor.ops]
    return dep, _calib(n, 4), np.arange(n) % 3


def test_unrolled_gru_learns_on_the_device_like_the_simulator(files, session, tmp_path: Path) -> None:
    dep, x, y = _gru_learning(files, session, CBackend(), 4)
    render_project(dep, {"test_vectors": (x, y), "test_count": 4, "test_learn": 4}, tmp_path)
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    sim = Simulator(dep)
    feats = sim.features(x)
    for i in range(4):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")
        sim.learn_features(feats[i], int(y[i]))
    assert out.buffer == sim.buffer.count == 4
    w = sim.classifier.layers[0].weight
    assert np.abs(out.weights[0] - w.reshape(-1)).max() <= 1e-4 * max(np.abs(w).max(), 1e-3)
    if c_harness.have_arm():  # first vectors on a Cortex-M4 (QEMU)
        dev, _ = c_harness.build_and_run_qemu(tmp_path, "m4")
        for i in range(4):
            np.testing.assert_array_equal(dev.features[i], feats[i], err_msg=f"M4 features of input {i}")


def test_unrolled_gru_arduino_sketch_builds(files, session, tmp_path: Path) -> None:
    from tinycc.backends.arduino import ArduinoBackend

    from . import arduino_harness

    if not arduino_harness.available():
        pytest.skip("arduino-builder/simavr/avr-gcc not installed")
    dep, x, y = _gru_learning(files, session, ArduinoBackend(), 3)
    emit(ArduinoBackend(), dep, {"selftest": True, "test_vectors": (x, y), "test_count": 3, "test_learn": 3},
         tmp_path / "sketch")
    elf, flash, ram = arduino_harness.build(tmp_path / "sketch" / dep.name / f"{dep.name}.ino", tmp_path)
    assert elf.is_file() and flash > 0 and 0 < ram <= 8192
