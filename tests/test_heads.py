"""Binary (sigmoid + BCE) and regression (MSE) heads end to end: head choice, memory model, generated C
(gcc -Werror, ASan/UBSan) learning like the numpy trainer, input checks of the C API, the CLI."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from .deploy_util import emit, render_project
from tinycc.errors import TinyccError, UnsupportedLayerError
from tinycc.ir.simulator import Simulator
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model
from .deploy_util import build_deployment

from . import arduino_harness, c_harness

N_INPUTS = 10
N_LEARN = 17


def _trunk(k, inp):
    L = k.layers
    x = L.Conv1D(4, 3, activation="relu", name="conv")(inp)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(10, activation="relu", name="d1")(x)
    x = L.Dense(8, activation="tanh", name="d2")(x)
    return L.Dense(6, activation="sigmoid", name="d3")(x)


def binary_net():
    import keras as k

    inp = k.Input((16, 2))
    return k.Model(inp, k.layers.Dense(1, activation="sigmoid", name="out")(_trunk(k, inp)), name="binary_net")


def regressor(last: str = "linear"):
    import keras as k

    inp = k.Input((16, 2))
    return k.Model(inp, k.layers.Dense(3, activation=last, name="out")(_trunk(k, inp)), name="regressor")


def autoencoder(n: int = 32):
    """The MLPerf Tiny anomaly-detection autoencoder's pattern (ad01: 640 -> 128 x4 -> 8 -> 128 x4 -> 640), small."""
    import keras as k

    L = k.layers
    inp = k.Input((n,))
    x = inp
    for i, units in enumerate((16, 8, 4, 8, 16)):
        x = L.Dense(units, name=f"dense_{i}")(x)
        x = L.BatchNormalization(name=f"bn_{i}")(x)
        x = L.Activation("relu", name=f"relu_{i}")(x)
    return k.Model(inp, L.Dense(n, name="recon")(x), name="autoencoder")


def _graph(session, model):
    import keras

    keras.utils.set_random_seed(0)
    m = model()
    for layer in m.layers:  # non-trivial BN statistics, so folding is exercised
        if type(layer).__name__ == "BatchNormalization":
            c = layer.moving_mean.shape[0]
            rng = np.random.default_rng(c)
            layer.moving_mean.assign(rng.normal(0, 0.3, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype("float32"))
    g = graph_from_keras_model(m)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    rng = np.random.default_rng(1)
    shape = tuple(m.inputs[0].shape[1:])
    return g, rng.normal(size=(N_INPUTS,) + shape).astype(np.float32), rng.normal(size=(64,) + shape).astype(np.float32)


MODELS = {"binary": binary_net, "regressor": regressor, "regressor_tanh": lambda: regressor("tanh"),
          "autoencoder": autoencoder}
# (model, options, trainable layers, head, target)
CASES = {
    "bce_1": ("binary", {"cut": "d3", "buffer": 5}, 1, "bce", "none"),
    "bce_3_batch": ("binary", {"cut": "d1", "buffer": 6, "batch_size": 2, "policy": "class_balanced"}, 3, "bce", "none"),
    "mse_2": ("regressor", {"cut": "d2", "buffer": 7, "policy": "reservoir", "loss": "mse"}, 2, "mse", "given"),
    "mse_3_tanh_f32": ("regressor_tanh", {"cut": "d1", "buffer": 4, "batch_size": 3, "storage": "float32",
                                         "loss": "mse"}, 3, "mse",
                       "given"),
    "ae_int8": ("autoencoder", {"cut": "relu_4", "buffer": 6, "lr": 0.02}, 1, "mse", "input"),
    "ae_f32_batch": ("autoencoder", {"cut": "relu_2", "buffer": 5, "batch_size": 2, "storage": "float32", "lr": 0.02},
                     3, "mse", "input"),
}


def _labels(dep, x: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(2)
    if dep.loss == "bce":
        return np.arange(len(x)) % 2
    if dep.target == "input":
        return x.reshape(len(x), -1)
    return rng.normal(0, 0.5, (len(x), dep.num_outputs)).astype(np.float32)


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    return tmp_path_factory.mktemp("heads")


@pytest.mark.parametrize("case", list(CASES))
def test_generated_c_learns_like_the_numpy_trainer(session, projects, case: str) -> None:
    model, opts, n_layers, loss, target = CASES[case]
    g, x, calib = _graph(session, MODELS[model])
    opts = {"calib_data": calib, "lr": 0.05, **opts}
    dep = build_deployment(g, opts, session, CBackend())
    assert (len(dep.classifier), dep.loss, dep.target) == (n_layers, loss, target)
    assert (dep.target_quant is not None) == (target == "input" and dep.buffer.storage == "int8")
    y = _labels(dep, x)
    proj = projects / case
    proj.mkdir()
    render_project(dep, {**opts, "test_vectors": (x, y), "test_count": N_INPUTS, "test_learn": N_LEARN}, proj)
    out = c_harness.run_host(c_harness.build_host(proj, sanitize=True))
    sim = Simulator(dep)
    feats = sim.features(x)
    for i in range(N_INPUTS):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")
    cls, p = sim.predict_features(feats)
    assert p.shape == (N_INPUTS, dep.num_outputs)
    np.testing.assert_allclose(np.stack([out.before[i][1] for i in range(N_INPUTS)]), p, rtol=1e-5, atol=1e-6)
    assert [out.before[i][0] for i in range(N_INPUTS)] == list(cls)
    for i in range(N_LEARN):
        sim.learn(x[i % N_INPUTS], None if target == "input" else y[i % N_INPUTS])
    assert out.buffer == sim.buffer.count
    for l, layer in enumerate(sim.classifier.layers):
        scale = max(np.abs(layer.weight).max(), 1e-3)
        assert np.abs(out.weights[l] - layer.weight.reshape(-1)).max() <= 1e-5 * scale, f"layer {l} weights"
        assert np.abs(out.bias[l] - layer.bias).max() <= 1e-5 * max(np.abs(layer.bias).max(), 1e-3)
    _, p2 = sim.predict_features(feats)
    np.testing.assert_allclose(np.stack([out.after[i][1] for i in range(N_INPUTS)]), p2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(p2, p)  # it learned something
    # the arrays the C code declares are exactly the memory model's figures
    assert out.memory["ram"] == dep.memory["ram"]
    sizes = c_harness.symbol_sizes(proj / "demo_asan")
    assert c_harness.model_ram(proj / "demo_asan") == dep.memory["static_ram"]
    if target != "none":
        assert "tcc_buf_labels" not in sizes and sizes["tcc_buf_targets"] == (
            dep.buffer.capacity * dep.num_outputs * (1 if dep.target_quant is not None else 4))


CHECK_C = r"""
#include <math.h>
#include <stdio.h>
#include "model.h"

int main(void) {
    static float x[NAME_INPUT_SIZE], out[NAME_OUTPUTS];
    int32_t i;
    name_init();
    for (i = 0; i < NAME_INPUT_SIZE; ++i) {
        x[i] = 0.1f * (float)(i % 7) - 0.3f;
    }
    x[1] = NAN;
    printf("predict_nan %ld\n", (long)name_predict_f32(x, out));
#if NAME_HEAD == 2
    {
        static float t[NAME_OUTPUTS];
        printf("learn_nan %ld\n", (long)name_learn_target_f32(x, t));
        x[1] = 0.5f;
        t[NAME_OUTPUTS - 1] = INFINITY;
        printf("learn_inf_target %ld\n", (long)name_learn_target_f32(x, t));
        t[NAME_OUTPUTS - 1] = 0.25f;
        printf("features_null_target %ld\n", (long)name_learn_features_target_s8((const int8_t *)out, NULL));
        printf("error_t %.9g\n", (double)name_error_f32(x, t));
        printf("error_null %.9g\n", (double)name_error_f32(x, NULL));
        printf("count %ld\n", (long)name_buffer_count());
        printf("learn_ok %ld\n", (long)name_learn_target_f32(x, t));
        printf("learn_null_target %ld\n", (long)name_learn_target_f32(x, NULL));
    }
#else
    printf("learn_nan %ld\n", (long)name_learn_f32(x, 0));
    x[1] = 0.5f;
    printf("learn_label %ld\n", (long)name_learn_f32(x, (uint8_t)NAME_CLASSES));
    printf("learn_label255 %ld\n", (long)name_learn_f32(x, 255));
    printf("count %ld\n", (long)name_buffer_count());
    printf("learn_ok %ld\n", (long)name_learn_f32(x, (uint8_t)(NAME_CLASSES - 1)));
#endif
    printf("predict_ok %ld\n", (long)name_predict_f32(x, out));
    return 0;
}
"""


@pytest.mark.parametrize("case", ["bce_1", "mse_2", "ae_int8"])
def test_c_api_refuses_bad_input(session, tmp_path: Path, case: str) -> None:
    """NaN/infinite inputs and targets, out-of-range labels and missing targets are refused with an error code,
    nothing is stored; ASan/UBSan see no fault."""
    model, opts, _, loss, target = CASES[case]
    g, _, calib = _graph(session, MODELS[model])
    dep = build_deployment(g, {"calib_data": calib, **opts}, session, CBackend())
    render_project(dep, opts, tmp_path)
    src = CHECK_C.replace("NAME_", f"{dep.name.upper()}_").replace("name_", f"{dep.name}_")
    r = c_harness.run_clean(c_harness.build_host(tmp_path, main=src), timeout=60)
    got = {l.split()[0]: float(l.split()[1]) for l in r.stdout.splitlines()}
    assert got["predict_nan"] == -1 and got["learn_nan"] == -2 and got["count"] == 0 and got["learn_ok"] == 1
    assert got["predict_ok"] >= 0
    if loss == "mse":
        assert got["learn_inf_target"] == -2 and got["features_null_target"] == -1
        x = (np.float32(0.1) * (np.arange(dep.extractor.tensors[dep.extractor.inputs[0]].size) % 7).astype(np.float32)
             - np.float32(0.3)).astype(np.float32)
        x[1] = 0.5
        t = np.zeros(dep.num_outputs, np.float32)
        t[-1] = 0.25
        out = Simulator(dep).predict(x.reshape((1,) + tuple(dep.extractor.tensors[dep.extractor.inputs[0]].shape[1:])))[1][0]
        assert got["error_t"] == pytest.approx(float(np.mean((out - t) ** 2)), rel=1e-5)
        assert got["error_null"] == (-1.0 if target == "given" else pytest.approx(float(np.mean((out - x) ** 2)), rel=1e-5))
        assert got["learn_null_target"] == (-1 if target == "given" else 2)
    else:
        assert got["learn_label"] == -1 and got["learn_label255"] == -1


def test_head_choice_and_refusals(session) -> None:
    g, _, calib = _graph(session, binary_net)
    dep = build_deployment(g, {"calib_data": calib, "cut": "d3"}, session, CBackend())
    assert (dep.loss, dep.num_classes, dep.num_outputs) == ("bce", 2, 1)
    with pytest.raises(UnsupportedLayerError, match="'out'.*at least 2 outputs.*--loss bce"):
        build_deployment(g, {"calib_data": calib, "cut": "d3", "loss": "ce"}, session, CBackend())
    dep = build_deployment(g, {"calib_data": calib, "cut": "d3", "loss": "mse"}, session, CBackend())
    assert (dep.loss, dep.target, dep.target_count) == ("mse", "given", 1)
    g, _, calib = _graph(session, regressor)
    dep = build_deployment(g, {"calib_data": calib}, session, CBackend())
    assert dep.loss == "ce"  # several linear outputs: logits, as before (--loss mse for regression)
    with pytest.raises(UnsupportedLayerError, match="bce"):
        build_deployment(g, {"calib_data": calib, "loss": "bce"}, session, CBackend())
    g, _, calib = _graph(session, autoencoder)
    dep = build_deployment(g, {"calib_data": calib, "cut": "relu_4", "buffer": 3}, session, CBackend())
    assert (dep.loss, dep.target, dep.target_storage, dep.num_outputs) == ("mse", "input", "int8", 32)
    q = dep.extractor.tensors[dep.extractor.ops[0].outputs[0]].quant
    assert dep.extractor.ops[0].kind.value == "quantize" and dep.target_quant is q
    # buffer: 3 x (16 int8 features + 32 int8 targets + 4 stamp) + 16; staging: the outputs only (features and
    # targets are read from the buffer where they are stored)
    items = {i["name"]: i["bytes"] for i in dep.memory["items"]}
    assert items["replay buffer"] == 3 * (16 + 32 + 4) + 16
    assert items["staging vectors"] == 0  # outputs live in the last layer's activations
    with pytest.raises(TinyccError, match="class_balanced"):
        build_deployment(g, {"calib_data": calib, "policy": "class_balanced"}, session, CBackend())


def test_budget_sizes_a_regression_buffer(session) -> None:
    """With a RAM budget the buffer takes what is left, counting the target bytes of each entry."""
    g, _, calib = _graph(session, autoencoder)
    free = build_deployment(g, {"calib_data": calib, "cut": "relu_4", "buffer": 1}, session, CBackend())
    ram = free.memory["ram"] + 10 * (16 + 32 + 4)
    dep = build_deployment(g, {"calib_data": calib, "cut": "relu_4", "ram": ram}, session, CBackend())
    assert dep.buffer.capacity == 11 and dep.memory["ram"] <= ram


def test_cli_compiles_an_autoencoder_for_learning(session, tmp_path: Path) -> None:
    """The compile driver on a saved Keras 3 autoencoder: regression head, target = input; `make run` builds and
    runs the demo; an impossible --loss is one line on stderr and exit 2, before calibration."""
    import keras

    from .deploy_util import compile_model

    from .test_cli import tinycc

    keras.utils.set_random_seed(0)
    path = tmp_path / "ae.keras"
    autoencoder().save(path)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32))
    out = tmp_path / "proj"
    res = compile_model(str(path), "c", str(out), {"calib": str(tmp_path / "calib.npz"), "cut": "relu_4",
                                                   "buffer": 4}, session)
    assert "regression head (mse) with 32 outputs, target = the model input (autoencoder)" in res.summary()
    header = (out / "model.h").read_text()
    assert "_learn_target_f32(const float *x, const float *target)" in header and "_learn_f32(" not in header
    run = subprocess.run(["make", "-s", "-C", str(out), "run"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    mse = [l for l in run.stdout.splitlines() if l.startswith("mean squared error (reconstruction of the input)")]
    before, after = (float(v) for v in mse[0].split(": ")[1].replace(" before learning,", "").split()[:2])
    assert len(run.stdout.splitlines()) < 40 and 0 <= after and 0 <= before
    run = subprocess.run(["make", "-s", "-C", str(out), "run", "DUMP=1"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    parsed = c_harness.parse(run.stdout)
    assert parsed.buffer == 4 and len(parsed.weights) == 1 and len(parsed.after[0][1]) == 32
    r = tinycc("compile", str(path), "--target", "c", "--loss", "bce", "-o", str(tmp_path / "x"))
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "Traceback" not in r.stderr and "'recon'" in last and "binary head (bce)" in last
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("case", ["ae_int8", "mse_2", "bce_1"])
def test_arduino_protocol_carries_targets(session, tmp_path: Path, case: str) -> None:
    """The sketch's serial protocol (host build, ASan/UBSan): 'L' carries input [+ float target] for a regression
    head ('l': target + int8 features), the outputs come back in 'P', NaN is refused with code 6 and a binary head
    refuses label 2 with code 4; learning through it equals the simulator."""
    import struct

    from tinycc.backends.arduino import ArduinoBackend

    from .test_arduino import frame, protocol_host

    model, opts, _, loss, target = CASES[case]
    g, x, calib = _graph(session, MODELS[model])
    dep = build_deployment(g, {"calib_data": calib, "lr": 0.05, **opts}, session, ArduinoBackend())
    emit(ArduinoBackend(), dep, {}, tmp_path)
    exe = arduino_harness.build_host_proto(tmp_path, dep.name, tmp_path / "proto_host")
    sim = Simulator(dep)
    y = _labels(dep, x)
    with protocol_host(exe) as ask:
        nan = x[0].copy().reshape(-1)
        nan[2] = np.nan
        assert ask(frame(b"P", nan.tobytes())) == (b"E", b"\x06")
        if loss == "bce":
            assert ask(frame(b"L", x[0].tobytes() + b"\x02")) == (b"E", b"\x04")
            assert ask(frame(b"L", nan.tobytes() + b"\x01")) == (b"E", b"\x06")
            requests = [(frame(b"L", x[i].tobytes() + bytes([int(y[i])])), (x[i], int(y[i]))) for i in range(3)]
        else:
            t = np.asarray(y[:3], np.float32).reshape(3, -1)
            bad_t = t[0].copy()
            bad_t[-1] = np.inf
            assert ask(frame(b"L", nan.tobytes() + t[0].tobytes())) == (b"E", b"\x06")
            assert ask(frame(b"L", x[0].tobytes() + bad_t.tobytes())) == (b"E", b"\x06")
            only_x = ask(frame(b"L", x[0].tobytes()))
            if target == "given":
                assert only_x == (b"E", b"\x03")
            else:
                assert only_x == (b"L", b"\x01\x00\x00\x00")
                sim.learn(x[0])
            feats = sim.features(x[1:2])[0]
            requests = [(frame(b"L", x[0].tobytes() + t[0].tobytes()), (x[0], t[0])),
                        (frame(b"l", t[1].tobytes() + feats.tobytes()), None),
                        (frame(b"L", x[2].tobytes() + t[2].tobytes()), (x[2], t[2]))]
        assert struct.unpack("<BBII", ask(frame(b"S"))[1])[1] == dep.num_classes
        for req, sample in requests:
            cmd, pl = ask(req)
            if sample is None:
                sim.learn_features(feats, t[1])
            else:
                sim.learn(*sample)
            assert cmd == req[1:2] and struct.unpack("<I", pl)[0] == sim.buffer.count
        for i in range(4):
            k, pl = ask(frame(b"P", x[i].tobytes()))
            ks, ps = sim.predict(x[i:i + 1])
            assert pl[0] == ks[0]
            np.testing.assert_allclose(np.frombuffer(pl[1:], np.float32), ps[0], rtol=1e-5, atol=1e-6)


def test_autoencoder_selftest_on_mega2560_in_simavr(session, tmp_path: Path) -> None:
    """AVR build (PROGMEM, avr-gcc) of a regression head: the self-test's reconstruction errors before and after
    learning equal the simulator's, and learning lowers them."""
    from tinycc.backends.arduino import ArduinoBackend

    if not arduino_harness.available():
        pytest.skip("arduino-builder/simavr/avr-gcc not installed")
    g, x, calib = _graph(session, autoencoder)
    dep = build_deployment(g, {"calib_data": calib, "cut": "relu_3", "buffer": 6, "lr": 0.05, "board": "mega2560"},
                           session, ArduinoBackend())
    emit(ArduinoBackend(), dep, {"selftest": True, "test_vectors": (x[:6], x[:6]), "test_count": 6, "test_learn": 24},
                          tmp_path)
    elf, _, _ = arduino_harness.build(tmp_path / dep.name / f"{dep.name}.ino", tmp_path)
    lines = arduino_harness.run_simavr(elf)
    before = np.array([float(l.split()[2]) for l in lines if l.startswith("error ")])
    after = np.array([float(l.split()[2]) for l in lines if l.startswith("after ")])
    sim = Simulator(dep)

    def errors() -> np.ndarray:
        return np.mean((sim.predict(x[:6])[1] - x[:6]) ** 2, axis=1)

    np.testing.assert_allclose(before, errors(), rtol=1e-4, atol=1e-6)  # printed with 6 decimals
    for i in range(24):
        sim.learn(x[i % 6])
    np.testing.assert_allclose(after, errors(), rtol=1e-4, atol=2e-6)
    assert after.mean() < before.mean()


def test_mlperf_tiny_ad01_learns_its_reconstruction_in_c(session, tmp_path: Path) -> None:
    """MLPerf Tiny's anomaly-detection autoencoder (ad01.h5, 640 -> 128 x4 -> 8 -> 128 x4 -> 640): its last Dense
    layer learns to reconstruct the input (regression head, target = input in int8) in C as in the simulator."""
    from .conftest import SHARED_DATA

    path = SHARED_DATA.parent / "models" / "mlperf-tiny" / "ad01.h5"
    if not path.exists():
        pytest.skip(f"{path} not found (set TINYCC_DATA to the shared data folder)")
    g = session.registry.frontend_for(str(path)).load(str(path))
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    rng = np.random.default_rng(0)
    calib = rng.normal(-20, 10, (32, 640)).astype(np.float32)  # log-mel energies in dB, roughly
    dep = build_deployment(g, {"calib_data": calib, "cut": "activation_8", "buffer": 4, "lr": 1e-4}, session,
                           CBackend())
    assert (dep.loss, dep.target, dep.target_storage, dep.feature_count, dep.num_outputs) == (
        "mse", "input", "int8", 128, 640)
    x = calib[:4]
    render_project(dep, {"test_vectors": (x, x), "test_count": 4, "test_learn": 6}, tmp_path)
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    sim = Simulator(dep)
    np.testing.assert_array_equal(np.stack([out.features[i] for i in range(4)]), sim.features(x))
    err0 = np.mean((sim.predict(x)[1] - x) ** 2)
    for i in range(6):
        sim.learn(x[i % 4])
    w = sim.classifier.layers[0]
    assert np.abs(out.weights[0] - w.weight.reshape(-1)).max() <= 1e-5 * np.abs(w.weight).max()
    np.testing.assert_allclose(np.stack([out.after[i][1] for i in range(4)]), sim.predict(x)[1], rtol=1e-5, atol=1e-4)
    assert np.mean((sim.predict(x)[1] - x) ** 2) < err0  # the reconstruction error went down
    assert out.memory["ram"] == dep.memory["ram"]


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_regression_head_on_cortex_m0plus_in_qemu(session, tmp_path: Path) -> None:
    """-Os -Werror soft-float build (ARMv6-M) of an autoencoder's regression head: same int8 features as the
    host, learned weights and outputs within 1e-5 (soft float rounds like the host here)."""
    model, opts, _, _, _ = CASES["ae_f32_batch"]
    g, x, calib = _graph(session, MODELS[model])
    dep = build_deployment(g, {"calib_data": calib, "lr": 0.05, **opts}, session, CBackend())
    render_project(dep, {"test_vectors": (x, _labels(dep, x)), "test_count": 6, "test_learn": 10}, tmp_path)
    host = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=False))
    q, _ = c_harness.build_and_run_qemu(tmp_path, "m0plus")
    for i in range(6):
        np.testing.assert_array_equal(q.features[i], host.features[i])
        np.testing.assert_allclose(q.after[i][1], host.after[i][1], rtol=1e-5, atol=1e-6)
    for l in host.weights:
        assert np.abs(q.weights[l] - host.weights[l]).max() <= 1e-5 * np.abs(host.weights[l]).max()
    assert q.buffer == host.buffer == 5 and q.instructions["learn"] > 0
