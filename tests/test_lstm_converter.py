"""The TFLite converter's own int8 UNIDIRECTIONAL_SEQUENCE_LSTM files (tests/data/keras-lstm, written by
make_files.py there from Keras 2 `tf_keras` LSTM models: Keras 3's LSTM has no fused form for the converter, see the
README): a keyword-spotting LSTM -> Dense head, return_sequences=True -> Flatten -> Dense, and two stacked LSTMs.
Each imports; run_int8 equals TFLite Micro (flavor tflm) and TFLite's BUILTIN_REF kernels (flavor tflite) bit for
bit; the c project (ASan/UBSan) equals run_int8 inference-only and learns like the simulator on the device; the tflm
target's model (the deployed graph written as .tflite) runs in TFLite Micro like run_int8 and its project builds
against TFLite Micro; the arduino sketch builds with arduino-builder; the first vectors equal run_int8 under QEMU M4."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.deploy.inference import full_graph
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.simulator import Simulator
from tinycc.plugins.frontends.tflite import read_tflite

from . import c_harness
from .deploy_util import build_deployment, build_inference, emit, render_project
from .op_checks import assert_c_project_learns_like_the_simulator, assert_learned_like_the_simulator
from .test_lstm import _tflite, _tflm

DATA = Path(__file__).parent / "data" / "keras-lstm"
FILES = {"kws_lstm": 1, "seq_lstm": 1, "stacked_lstm": 2}  # file -> number of LSTM layers


def _float_inputs(g, n: int, seed: int) -> np.ndarray:
    """Float inputs in the file's input range (its int8 scale and zero point), for float-I/O deployments."""
    q = g.tensors[g.inputs[0]].quant
    s, z = float(q.scale[0]), int(q.zero_point[0])
    lo, hi = (-128 - z) * s, (127 - z) * s
    rng = np.random.default_rng(seed)
    return rng.uniform(0.8 * lo, 0.8 * hi, (n,) + tuple(g.tensors[g.inputs[0]].shape[1:])).astype(np.float32)


@pytest.mark.parametrize("name", sorted(FILES))
def test_converter_lstm_file_equals_tflm_and_builtin_ref(name: str) -> None:
    pytest.importorskip("tflite_micro")
    path = DATA / f"{name}.tflite"
    g = read_tflite(str(path))
    assert sum(o.kind.value == "lstm" for o in g.ops) == FILES[name]
    shape = tuple(g.tensors[g.inputs[0]].shape[1:])
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.integers(-128, 128, (3,) + shape),  # full range, and values like the calibration's
                        np.clip(rng.normal(0, 30, (3,) + shape), -128, 127)]).astype(np.int8)
    data = path.read_bytes()
    np.testing.assert_array_equal(run_int8(g, x)[g.outputs[0]], _tflm(data, x))
    np.testing.assert_array_equal(run_int8(g, x, flavor="tflite")[g.outputs[0]], _tflite(data, x))


@pytest.mark.parametrize("name", sorted(FILES))
def test_converter_lstm_file_c_and_tflm_model_equal_run_int8(session, tmp_path: Path, name: str) -> None:
    """Inference-only: the generated C (ASan/UBSan, float I/O) and the tflm target's model in TFLite Micro."""
    pytest.importorskip("tflite_micro")
    from tflite_micro.python.tflite_micro import runtime

    from tinycc.tflite_writer import write_tflite

    g = read_tflite(str(DATA / f"{name}.tflite"))
    x = _float_inputs(g, 4, 2)
    dep = build_inference(g, {}, session, CBackend())
    render_project(dep, {"test_vectors": (x, None), "test_count": len(x)}, tmp_path)
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    fg = full_graph(dep)
    mine = run_int8(fg, x)[fg.outputs[0]].reshape(len(x), -1).astype(np.float32)
    tm = runtime.Interpreter.from_bytes(write_tflite(fg), arena_size=1 << 20)
    for i in range(len(x)):
        np.testing.assert_array_equal(np.asarray(out.outputs[i], np.float32).reshape(-1), mine[i],
                                      err_msg=f"C {name} {i}")
        tm.reset()
        tm.set_input(x[i:i + 1], 0)
        tm.invoke()
        np.testing.assert_array_equal(tm.get_output(0).reshape(-1).astype(np.float32), mine[i],
                                      err_msg=f"TFLite Micro on the written {name} {i}")


def _learning(session, backend, name: str = "kws_lstm", n: int = 4):
    g = read_tflite(str(DATA / f"{name}.tflite"))
    x = _float_inputs(g, n, 3)
    opts = {"calib_data": _float_inputs(g, 16, 4), "buffer": 4, "lr": 0.05}
    dep = build_deployment(g, opts, session, backend)
    assert "lstm" in [o.kind.value for o in dep.extractor.ops]
    return dep, opts, x, np.arange(n) % len(dep.classifier[-1].bias)


def test_converter_kws_lstm_learns_on_the_device_like_the_simulator(session, tmp_path: Path) -> None:
    """The c target with on-device learning (ASan/UBSan): features equal the simulator's, the head trains like it."""
    dep, opts, x, y = _learning(session, CBackend())
    out, sim = assert_c_project_learns_like_the_simulator(dep, opts, x, y, tmp_path, len(x), layer=0)
    assert out.buffer == sim.buffer.count == len(x)
    assert not np.array_equal(out.weights[0], dep.classifier[0].weight.reshape(-1))


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_converter_kws_lstm_first_vectors_under_qemu_m4(session, tmp_path: Path) -> None:
    dep, opts, x, y = _learning(session, CBackend(), n=2)
    render_project(dep, {**opts, "test_vectors": (x, y), "test_count": 2, "test_learn": 2}, tmp_path)
    out, _ = c_harness.build_and_run_qemu(tmp_path, "m4")
    feats = Simulator(dep).features(x)
    for i in range(2):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"M4 features of input {i}")
    assert out.instructions["features"] > 0


@pytest.mark.slow
@pytest.mark.timeout(1800)  # may build TFLite Micro first (about 460 s of CPU, cached in ~/.cache/tinycc)
def test_converter_kws_lstm_tflm_project_learns(session, tmp_path: Path) -> None:
    """The tflm target built against TFLite Micro (its own LSTM kernel): run_int8's features, the head trains like
    the simulator."""
    from tinycc.backends.tflm import TflmBackend, build, vendor

    vendor_dir = vendor.default_vendor_dir()
    if vendor_dir is None or vendor.missing_toolchain("host"):
        pytest.skip("TensorFlow Lite Micro snapshot or host toolchain not found (../shared/vendor; TINYCC_VENDOR)")
    library = vendor.ensure_library(vendor_dir, "host")
    dep, opts, x, y = _learning(session, TflmBackend(), n=3)
    TflmBackend().check(dep)
    emit(TflmBackend(), dep, {**opts, "test_vectors": (x, y), "test_count": 3, "test_learn": 3}, tmp_path)
    out = c_harness.parse(build.run(build.build_host(tmp_path, sanitize=True, library=library)))
    sim = assert_learned_like_the_simulator(dep, out, x, y, 3, layer=0, what="TFLite Micro")
    assert out.buffer == sim.buffer.count == 3


@pytest.mark.parametrize("name", ["kws_lstm", "stacked_lstm"])
def test_converter_lstm_arduino_sketch_builds(session, tmp_path: Path, name: str) -> None:
    """The arduino target's sketch for the Mega 2560 builds with arduino-builder (the tool of the other arduino
    tests); the small stacked model also runs in simavr and learns like the simulator."""
    from tinycc.backends.arduino import ArduinoBackend

    from . import arduino_harness

    if not arduino_harness.available():
        pytest.skip("arduino-builder/simavr/avr-gcc not installed")
    g = read_tflite(str(DATA / f"{name}.tflite"))
    x = _float_inputs(g, 3, 5)
    dep = build_deployment(g, {"calib_data": _float_inputs(g, 8, 6), "buffer": 4, "lr": 0.1, "board": "mega2560"},
                           session, ArduinoBackend())
    y = np.arange(3) % len(dep.classifier[-1].bias)
    emit(ArduinoBackend(), dep, {"selftest": True, "test_vectors": (x, y), "test_count": 3, "test_learn": 6},
         tmp_path / "sketch")
    elf, flash, ram = arduino_harness.build(tmp_path / "sketch" / dep.name / f"{dep.name}.ino", tmp_path)
    assert elf.is_file() and flash > 0 and 0 < ram <= 8192
    if name != "stacked_lstm":
        return
    arduino_harness.assert_simavr_predicts_like_the_simulator(elf, dep, x, y, 6)
