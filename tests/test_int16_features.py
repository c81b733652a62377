"""int16 features at the cut (issue #25, item 1): a 16x8 extractor's int16 output is kept (``--features native``, the
default): the buffer stores int16 entries (or float32), the classifier dequantizes int16 (scale, zero point 0), the
generated C (c, arduino, tflm) equals the simulator, and ``--features int8`` still requantizes at the cut."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinycc.ir.buffer import ReplayBuffer, dequantize_features
from tinycc.ir.simulator import Simulator
from tinycc.session import Session

from . import c_harness
from .test_int16 import convert_16x8, sensor_classifier

N_TEST, N_LEARN = 10, 12


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The sensor classifier: the converter's 16x8 file (float I/O) and the float Keras model, calibration data."""
    out = tmp_path_factory.mktemp("i16feat")
    x = np.random.default_rng(0).normal(size=(64, 16, 3)).astype(np.float32)
    y = (np.arange(64) % 4).astype(np.int64)
    m = sensor_classifier()
    (out / "sensor16.tflite").write_bytes(convert_16x8(m, x, "float32"))
    m.save(out / "sensor16.keras")
    np.savez(out / "calib.npz", x_calib=x, y_calib=y)
    return {"tflite": out / "sensor16.tflite", "keras": out / "sensor16.keras", "calib": out / "calib.npz",
            "x": x, "y": y}


def _compile(files, target: str, out: Path, **kw):
    from .deploy_util import compile_model

    opts = {"calib_data": files["x"], "buffer": 6, "lr": 0.05, "epochs": 1, "test_count": N_TEST,
            "test_learn": N_LEARN, **kw}
    return compile_model(str(files["tflite"]), target, str(out), opts, Session()), opts


def _test_vectors(dep, opts):
    from tinycc.backends import c as c_backend

    from .deploy_util import vectors

    return c_backend.test_vectors(dep, vectors(opts))


def _builtin_ref_cut(path: Path, cut: str, x: np.ndarray) -> tuple[np.ndarray, float, int]:
    """The cut tensor of the converter file as TFLite's BUILTIN_REF computes it: int16 values, scale, zero point."""
    import tensorflow as tf

    it = tf.lite.Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                             experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    det = {d["name"]: d for d in it.get_tensor_details()}[cut]
    rows = []
    for i in range(len(x)):
        it.set_tensor(inp["index"], x[i:i + 1])
        it.invoke()
        rows.append(it.get_tensor(det["index"]).reshape(-1))
    scale, zp = det["quantization"]
    return np.stack(rows), float(scale), int(zp)


def _assert_learns_like_the_simulator(out, dep, xt, yt, feats) -> Simulator:
    sim = Simulator(dep)
    _, p = sim.predict_features(feats)
    np.testing.assert_allclose(np.stack([out.before[i][1] for i in range(len(xt))]), p, atol=1e-5)
    for i in range(N_LEARN):
        sim.learn_features(feats[i % len(xt)], int(yt[i % len(xt)]))
    assert out.buffer == sim.buffer.count == dep.buffer.capacity
    for l, layer in enumerate(sim.classifier.layers):
        scale = max(np.abs(layer.weight).max(), 1e-3)
        assert np.abs(out.weights[l] - layer.weight.reshape(-1)).max() <= 1e-4 * scale
    _, p2 = sim.predict_features(feats)
    np.testing.assert_allclose(np.stack([out.after[i][1] for i in range(len(xt))]), p2, atol=1e-4)
    return sim


def _buffer_symbols(exe: Path) -> int:
    sizes = c_harness.symbol_sizes(exe)
    return sum(v for k, v in sizes.items() if k.startswith("tcc_buf_"))


def _report_item(dep, name: str) -> dict:
    return next(i for i in dep.memory["items"] if i["name"] == name)


def test_converter_16x8_features_stay_int16_in_c_equal_builtin_ref_and_learn_like_the_simulator(files,
                                                                                               tmp_path: Path):
    """The converter file compiled to c (default --features native): int16 features equal run_int8 in C
    (ASan/UBSan) and, dequantized, BUILTIN_REF's cut tensor; int16 buffer entries (2 bytes a value, the report equals
    the symbol sizes); predictions, buffer and head weights after learning equal the simulator's."""
    res, opts = _compile(files, "c", tmp_path / "proj")
    dep = res.deployment
    assert dep.feature_dtype == "int16" and dep.buffer.storage == "int16"
    assert int(dep.feature_quant.zero_point[0]) == 0
    header = (res.output / "model.h").read_text()
    assert "_predict_features_s16(const int16_t *features" in header and "_learn_features_s16(" in header
    assert "_FEATURE_BITS 16" in (res.output / "tinycc_config.h").read_text()
    from tinycc.backends.c.layout import MAX_COLUMNS

    for name in ("model.c", "model.h"):
        assert max(len(l) for l in (res.output / name).read_text().splitlines()) <= MAX_COLUMNS, name
    exe = c_harness.build_host(res.output, sanitize=True)
    out = c_harness.run_host(exe)
    xt, yt = _test_vectors(dep, opts)
    sim = Simulator(dep)
    feats = sim.features(xt)
    assert feats.dtype == np.int16 and np.abs(feats).max() > 127  # int16 precision, not int8 values
    for i in range(len(xt)):
        assert out.features[i].dtype == np.int16
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")
    ref, s, zp = _builtin_ref_cut(files["tflite"], dep.meta["cut"], xt)
    assert zp == 0 and np.float32(s) == np.float32(dep.feature_quant.scale[0])
    np.testing.assert_array_equal(dequantize_features(feats, s, 0), dequantize_features(ref, s, 0))
    _assert_learns_like_the_simulator(out, dep, xt, yt, feats)
    cap, n = dep.buffer.capacity, dep.feature_count
    assert c_harness.symbol_sizes(exe)["tcc_buf_data"] == 2 * cap * n
    buf = _report_item(dep, "replay buffer")
    assert buf["bytes"] == _buffer_symbols(exe) == ReplayBuffer.bytes_for(cap, n, "int16")
    assert "--features int8" in buf["detail"] and f"{ReplayBuffer.bytes_for(cap, n, 'int8'):,}" in buf["detail"]


def test_converter_16x8_int16_features_on_cortex_m4_in_qemu(files, tmp_path: Path) -> None:
    """The same project cross-built for Cortex-M4: the first vectors' int16 features and predictions equal the
    simulator under QEMU."""
    if not c_harness.have_arm():
        pytest.skip("arm-none-eabi-gcc or qemu-system-arm not installed")
    res, opts = _compile(files, "c", tmp_path / "proj", test_count=4, test_learn=6)
    dep = res.deployment
    out, _ = c_harness.build_and_run_qemu(res.output, "m4")
    xt, yt = _test_vectors(dep, {**opts, "test_count": 4})
    sim = Simulator(dep)
    feats = sim.features(xt)
    for i in range(len(xt)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i} on the M4")
    _, p = sim.predict_features(feats)
    np.testing.assert_allclose(np.stack([out.before[i][1] for i in range(len(xt))]), p, atol=1e-5)
    for i in range(6):
        sim.learn_features(feats[i % len(xt)], int(yt[i % len(xt)]))
    assert out.buffer == sim.buffer.count
    for l, layer in enumerate(sim.classifier.layers):
        scale = max(np.abs(layer.weight).max(), 1e-3)
        assert np.abs(out.weights[l] - layer.weight.reshape(-1)).max() <= 1e-4 * scale


@pytest.mark.parametrize("features,storage,elem", [("native", "float32", 4), ("int8", None, 1)])
def test_float_storage_and_int8_requantization_at_the_cut(files, tmp_path: Path, features: str, storage, elem: int):
    """--storage float32 keeps int16 features and stores them dequantized; --features int8 requantizes them to int8 at
    the cut (a QUANTIZE int16 -> int8: the _s8 API, int8 entries). Both: C (ASan/UBSan) equals the simulator and
    the report's buffer equals the symbol sizes."""
    kw = {"features": features} | ({"storage": storage} if storage else {})
    res, opts = _compile(files, "c", tmp_path / "proj", **kw)
    dep = res.deployment
    assert dep.feature_dtype == ("int16" if features == "native" else "int8")
    assert dep.buffer.storage == (storage or "int8")
    header = (res.output / "model.h").read_text()
    assert ("_learn_features_s16(" in header) == (features == "native")
    exe = c_harness.build_host(res.output, sanitize=True)
    out = c_harness.run_host(exe)
    xt, yt = _test_vectors(dep, opts)
    feats = Simulator(dep).features(xt)
    for i in range(len(xt)):
        np.testing.assert_array_equal(out.features[i], feats[i])
    _assert_learns_like_the_simulator(out, dep, xt, yt, feats)
    cap, n = dep.buffer.capacity, dep.feature_count
    assert c_harness.symbol_sizes(exe)["tcc_buf_data"] == elem * cap * n
    assert _report_item(dep, "replay buffer")["bytes"] == _buffer_symbols(exe)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinycc.cli", *args], capture_output=True, text=True, timeout=600)


def test_cli_activations_int16_on_a_float_keras_model_features_choice_and_its_cost(files, tmp_path: Path) -> None:
    """`tinycc compile --activations int16` on the float Keras model: int16 features and entries by default,
    `--features int8` halves the buffer (each report names what the other costs); a quantized storage that is not the
    features' type is one line, exit 2."""
    common = [str(files["keras"]), "-t", "c", "--calib", str(files["calib"]), "--activations", "int16",
              "--buffer", "20"]
    buffers = {}
    for name, extra in (("native", []), ("int8", ["--features", "int8"])):
        out = tmp_path / name
        r = _cli("compile", *common, "-o", str(out), *extra)
        assert r.returncode == 0, r.stderr[-2000:]
        mem = json.loads((out / "tinycc_memory.json").read_text())
        item = next(i for i in mem["items"] if i["name"] == "replay buffer")
        buffers[name] = item
        exe = c_harness.build_host(out, sanitize=False)
        assert item["bytes"] == _buffer_symbols(exe)
        feat = "int16_t" if name == "native" else "int8_t"
        assert f"static {feat} tcc_buf_data[" in (out / "model.c").read_text()
    n = 5 * 8  # the Flatten of the sensor classifier: 16 steps -> conv 14 -> pool 7 -> conv 5, 8 channels
    assert f"_FEATURES {n}\n" in (tmp_path / "native" / "tinycc_config.h").read_text()
    assert buffers["native"]["bytes"] == ReplayBuffer.bytes_for(20, n, "int16")
    assert buffers["int8"]["bytes"] == ReplayBuffer.bytes_for(20, n, "int8")
    assert f"{buffers['int8']['bytes']:,} bytes" in buffers["native"]["detail"]
    assert "requantized at the cut" in buffers["int8"]["detail"]
    r = _cli("compile", *common, "-o", str(tmp_path / "bad"), "--storage", "int8")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "--features int8" in r.stderr and not (tmp_path / "bad").exists()


def test_arduino_protocol_exchanges_int16_features(files, tmp_path: Path) -> None:
    """The sketch's serial protocol ('F' predict, 'l' learn from features) takes int16 features (2 bytes a value,
    little-endian) built for the host (ASan/UBSan): equal to the simulator; int8-sized features are refused."""
    from tinycc.backends.arduino import ArduinoBackend
    from tinycc.plugins.applications import serial_proto

    from . import arduino_harness
    from .deploy_util import build_deployment, emit
    from tinycc.plugins.frontends.tflite import read_tflite

    session = Session()
    dep = build_deployment(read_tflite(str(files["tflite"])), {"calib_data": files["x"], "buffer": 4, "lr": 0.05,
                                                              "board": "mega2560"}, session, ArduinoBackend())
    assert dep.feature_dtype == "int16"
    emit(ArduinoBackend(), dep, {}, tmp_path)
    exe = arduino_harness.build_host_proto(tmp_path, dep.name, tmp_path / "proto_host")
    sim = Simulator(dep)
    feats = sim.features(files["x"][:6])
    p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(cmd: bytes, payload: bytes, seq: int) -> tuple[bytes, bytes]:
        p.stdin.write(serial_proto.frame(cmd, payload, seq))
        p.stdin.flush()
        assert p.stdout.read(1) == b"\x5a"
        head = p.stdout.read(6)
        body = p.stdout.read(struct.unpack("<I", head[2:])[0])
        p.stdout.read(2)
        return head[:1], body

    try:
        seq = 1
        for i in range(6):
            cmd, body = ask(b"F", feats[i].astype("<i2").tobytes(), seq)
            seq += 1
            k, probs = sim.predict_features(feats[i:i + 1])
            assert cmd == b"P" and body[0] == k[0]  # a predict reply
            np.testing.assert_allclose(np.frombuffer(body[1:], np.float32), probs[0], atol=1e-5)
        assert ask(b"F", feats[0].astype(np.int8).tobytes(), seq) == (b"E", b"\x03")
        seq += 1
        for i in range(5):
            label = int(files["y"][i])
            cmd, body = ask(b"l", feats[i].astype("<i2").tobytes() + bytes([label]), seq)
            seq += 1
            sim.learn_features(feats[i], label)
            assert cmd == b"l" and struct.unpack("<I", body)[0] == sim.buffer.count
        cmd, body = ask(b"F", feats[5].astype("<i2").tobytes(), seq)
        np.testing.assert_allclose(np.frombuffer(body[1:], np.float32), sim.predict_features(feats[5:6])[1][0],
                                   atol=1e-5)
        mem = struct.unpack("<III", ask(b"M", b"", seq + 1)[1])
        assert mem[1] == dep.memory["ram"]
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    assert p.returncode == 0


def test_buffer_int16_storage_quantizes_and_refuses_mixed_types() -> None:
    """int16 storage: int16 features stored as they are, floats quantized with int16 saturation, int8 features
    refused; 2 bytes a value."""
    b = ReplayBuffer(3, 4, "int16", 0.01, 0)
    b.push(np.array([1000, -32768, 32767, 0], np.int16), 1)
    b.push(np.array([1.0, -400.0, 400.0, 0.005], np.float32), 2)
    np.testing.assert_array_equal(b.data[0], [1000, -32768, 32767, 0])
    np.testing.assert_array_equal(b.data[1], [100, -32768, 32767, 1])  # roundf(0.5) = 1, away from zero
    with pytest.raises(TypeError):
        b.push(np.zeros(4, np.int8), 0)
    x, y = b.entries()
    np.testing.assert_array_equal(x[0], np.float32(0.01) * np.array([1000, -32768, 32767, 0], np.float32))
    assert list(y) == [1, 2] and b.nbytes() == ReplayBuffer.bytes_for(3, 4, "int16") == 3 * (8 + 1 + 4) + 16


def test_simulate_runs_on_int16_features(files, tmp_path: Path) -> None:
    """`tinycc simulate --activations int16` on the float Keras model: the omega learner replays int16 entries of the
    int16 features (`--features int8`: int8 ones); both runs finish and write their curves."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16, 3)).astype(np.float32)
    y = (np.arange(200) % 4).astype(np.int64)
    data = tmp_path / "d.npz"
    np.savez(data, x_train=x[:150], y_train=y[:150], x_test=x[150:], y_test=y[150:])
    for extra, says in (([], "int16 features, int16 buffer entries"),
                        (["--features", "int8"], "int8 features, int8 buffer entries")):
        out = tmp_path / f"sim{len(extra)}"
        r = _cli("simulate", str(files["keras"]), "--scenario", "concept-drift", "--swap", "0,1", "--at", "30",
                 "--data", str(data), "--runs", "1", "--stream", "60", "--test", "20", "--buffer", "8",
                 "--activations", "int16", "--no-progress", "-o", str(out), *extra)
        assert r.returncode == 0, r.stderr[-2000:]
        assert says in r.stdout and (out / "concept-drift.csv").exists()
