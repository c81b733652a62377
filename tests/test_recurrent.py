"""Keras GRU and SimpleRNN (issue 25, item 2): the float IR equals Keras; tinycc's integer form (ir/recurrent.py)
stays within a stated tolerance of the float Keras layer and the generated C (ASan/UBSan) equals run_int8 bit for
bit; a sensor GRU trained here on synthetic accelerometer-like windows compiles with the CLI, learns on the device
like the simulator and runs in `tinycc simulate`; the tflm target and unusual layer options are refused in one
line."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.config import CompileConfig, QuantConfig
from tinycc.ir.graph import Graph
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.recurrent import SIGMOID_LUT, TANH_LUT, lut_eval
from tinycc.ir.tensor import DType, QuantParams
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model

from tinycc.backends.c.kernels import table_bytes

from . import c_harness
from .deploy_util import build_deployment, render_project

keras = pytest.importorskip("keras")
L = keras.layers
# tinycc's integer GRU/SimpleRNN against the float Keras layer, one layer of 16 units over 32 steps of 3 features
# (outputs in (-1, 1)): largest error at most 6 output steps (measured about 3), mean error at most 1 step
INT_TOLERANCE_STEPS = 6.0


def _stacked(reset_after: bool, last_sequences: bool) -> "keras.Model":
    """GRU (sequences) -> SimpleRNN (sequences) -> GRU with the other reset_after -> Dense."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((12, 3))
    x = L.GRU(8, return_sequences=True, reset_after=reset_after, name="g1")(inp)
    x = L.SimpleRNN(6, return_sequences=True, name="s1")(x)
    x = L.GRU(5, return_sequences=last_sequences, reset_after=not reset_after, name="g2")(x)
    if last_sequences:
        x = L.Flatten()(x)
    return keras.Model(inp, L.Dense(3, activation="softmax", name="head")(x))


@pytest.mark.parametrize("reset_after,last_sequences", [(True, False), (False, True)])
def test_float_ir_equals_keras(reset_after: bool, last_sequences: bool) -> None:
    m = _stacked(reset_after, last_sequences)
    x = np.random.default_rng(0).normal(size=(9, 12, 3)).astype(np.float32)
    g = graph_from_keras_model(m)
    assert {o.kind.value for o in g.ops} >= {"gru", "simple_rnn"}
    np.testing.assert_allclose(run(g, x)[g.outputs[0]], m.predict(x, verbose=0), atol=1e-5, rtol=0)


def test_tables_follow_sigmoid_and_tanh() -> None:
    """The Q3.12 -> Q0.15 tables with interpolation stay within 4 Q0.15 steps of the functions on [-8, 8)."""
    v = np.arange(-32768, 32768)
    real = v / 4096.0
    for lut, fn in ((SIGMOID_LUT, lambda a: 1 / (1 + np.exp(-a))), (TANH_LUT, np.tanh)):
        got = lut_eval(lut, v)
        assert np.abs(got / 32768.0 - fn(real)).max() < 4 / 32768
        assert (np.diff(got) >= 0).all()


def _quantized(session, m, calib: np.ndarray):
    g = graph_from_keras_model(m)
    ctx = PassContext(session=session, config=CompileConfig(learning=None, quant=QuantConfig()), calib=calib)
    run_pipeline(g, session.registry.pipeline("int8"), ctx)
    return g


@pytest.mark.parametrize("layer", ["gru", "gru_reset_before", "simple_rnn"])
def test_int8_form_within_tolerance_of_keras(session, layer: str) -> None:
    """One layer quantized by tinycc's quantizer (calibrated): run_int8 against the float Keras layer, in steps of
    the calibrated output scale (return_sequences: every step's output)."""
    keras.utils.set_random_seed(2)
    inp = keras.Input((32, 3))
    rnn = {"gru": lambda: L.GRU(16, return_sequences=True),
           "gru_reset_before": lambda: L.GRU(16, return_sequences=True, reset_after=False),
           "simple_rnn": lambda: L.SimpleRNN(16, return_sequences=True)}[layer]()
    m = keras.Model(inp, rnn(inp))
    rng = np.random.default_rng(3)
    g = _quantized(session, m, rng.normal(size=(64, 32, 3)).astype(np.float32))
    op = next(o for o in g.ops if o.kind.value in ("gru", "simple_rnn"))
    step = float(g.tensors[op.outputs[0]].quant.scale[0])
    x = rng.normal(size=(32, 32, 3)).astype(np.float32)
    err = np.abs(run_int8(g, x)[g.outputs[0]] - m.predict(x, verbose=0)) / step
    print(f"{layer}: max {err.max():.2f}, mean {err.mean():.3f} output steps")
    assert err.max() <= INT_TOLERANCE_STEPS and err.mean() <= 1.0, (err.max(), err.mean())


@pytest.mark.parametrize("reset_after,last_sequences", [(True, False), (False, True)])
def test_c_kernels_equal_run_int8_and_learn_like_the_simulator(session, tmp_path: Path, reset_after: bool,
                                                               last_sequences: bool) -> None:
    """Every kernel variant (GRU reset_after true/false, SimpleRNN, sequences or last step; a Flatten of the last
    sequence before the head) in one project: the features of the generated C (gcc -Werror, ASan/UBSan) equal
    run_int8's; four learned samples give the simulator's classifier."""
    from tinycc.backends.c import CBackend
    from tinycc.ir.simulator import Simulator

    m = _stacked(reset_after, last_sequences)
    x = np.random.default_rng(4).normal(size=(48, 12, 3)).astype(np.float32)
    opts = {"buffer": 6, "lr": 0.05, "calib_data": x}
    dep = build_deployment(graph_from_keras_model(m), opts, session, CBackend())
    CBackend().check(dep)
    xs, y = x[:8], np.arange(8) % 3
    render_project(dep, {**opts, "test_vectors": (xs, y), "test_count": 8, "test_learn": 4}, tmp_path / "c")
    out = c_harness.run_host(c_harness.build_host(tmp_path / "c", sanitize=True))
    code = (tmp_path / "c" / "model.c").read_text()
    int16 = [n for n, t in c_harness.model_tables(code).items() if t.dtype == np.int16]
    assert len(int16) == 2  # one sigmoid and one tanh table for the three layers
    assert code.count("recurrent kernel") == 3 and table_bytes(dep.extractor, "generic") == 2 * 2 * 513
    sim = Simulator(dep)
    check_features_and_learning(out, sim, dep, xs, y)


# ---- a sensor GRU on synthetic accelerometer-like windows ------------------------------------------------------
def sensor_data(n: int, seed: int, steps: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of 6-axis windows (accelerometer x, y, z, gyroscope x, y, z): slow sway on acc x with gyro z,
    fast shake on acc y, a tilt step on acc z; noise on every axis."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    t = np.arange(steps)[None, :]
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    x = rng.normal(0, 0.3, (n, steps, 6))
    x[y == 0, :, 0] += np.sin(2 * np.pi * t / 32 + phase[y == 0])
    x[y == 0, :, 5] += 0.5 * np.cos(2 * np.pi * t / 32 + phase[y == 0])
    x[y == 1, :, 1] += np.sin(2 * np.pi * t / 6 + phase[y == 1])
    x[y == 2, :, 2] += (t >= rng.integers(8, steps - 8, (n, 1))[y == 2]).astype(float)
    return x.astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="module")
def sensor_model(tmp_path_factory) -> tuple[Path, Path]:
    """64 x 6 windows -> Conv1D(8, 4, stride 2) -> GRU(16) -> Dense(3), trained a few epochs (a few seconds); the
    .keras file and a labelled .npz."""
    keras.utils.set_random_seed(5)
    x, y = sensor_data(300, 0)
    inp = keras.Input((64, 6))
    h = L.Conv1D(8, 4, strides=2, activation="relu", name="conv")(inp)
    m = keras.Model(inp, L.Dense(3, activation="softmax", name="head")(L.GRU(16, name="gru")(h)), name="sensor")
    m.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(x, y, epochs=8, batch_size=32, verbose=0)
    xt, yt = sensor_data(90, 1)
    assert m.evaluate(xt, yt, verbose=0)[1] >= 0.9
    d = tmp_path_factory.mktemp("sensor")
    m.save(d / "sensor.keras")
    np.savez(d / "sensor.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    np.save(d / "calib.npy", x[:64])
    return d / "sensor.keras", d


def _cli(capsys, *args: str) -> subprocess.CompletedProcess:
    """The CLI in this process (``tinycc.cli.main``): exit code, stdout and stderr."""
    from tinycc.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def test_sensor_gru_compiles_and_learns_like_the_simulator(session, sensor_model, tmp_path: Path, capsys) -> None:
    """`tinycc compile --target c` of the trained sensor GRU: that project's demo (gcc -Werror, ASan/UBSan) computes
    run_int8's features of its embedded calibration windows and learns them like the simulator; the int8
    deployment predicts held-out windows like the float model."""
    from tinycc.api import load_cleaned
    from tinycc.backends.c import CBackend
    from tinycc.ir.simulator import Simulator

    model, d = sensor_model
    r = _cli(capsys, "compile", str(model), "--target", "c", "--calib", str(d / "calib.npy"), "--buffer", "8",
             "--lr", "0.05", "--test-count", "6", "-o", str(tmp_path / "cli"))
    assert r.returncode == 0, r.stderr
    assert "cut at 'gru': 16 int8 features" in r.stdout and "kernel lookup tables" in r.stdout
    out = c_harness.run_host(c_harness.build_host(tmp_path / "cli", sanitize=True))
    calib = np.load(d / "calib.npy")
    dep = build_deployment(load_cleaned(str(model), session), {"buffer": 8, "lr": 0.05, "calib_data": calib},
                           session, CBackend())  # the deployment the command built: the same stages
    sim = Simulator(dep)
    feats = sim.features(calib[:6])
    assert sorted(out.features) == list(range(6)) and 0 < out.buffer <= 6
    for i in range(6):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"C features of window {i}")
    for i in range(out.buffer):  # the demo learns its first windows with labels 0, 1, 2, 0, ...
        sim.learn_features(feats[i], i % 3)
    w = sim.classifier.layers[-1].weight
    assert np.abs(out.weights[0] - w.reshape(-1)).max() <= 1e-4 * max(np.abs(w).max(), 1e-3)
    xt, yt = sensor_data(60, 8)
    keras_pred = keras.saving.load_model(model).predict(xt, verbose=0).argmax(1)
    assert (Simulator(dep).predict(xt)[0] == keras_pred).mean() >= 0.95


def test_simulate_runs_on_the_sensor_gru(sensor_model, tmp_path: Path, capsys) -> None:
    model, d = sensor_model
    r = _cli(capsys, "simulate", str(model), "--scenario", "concept-drift", "--data", str(d / "sensor.npz"),
             "--swap", "0,1",
             "--at", "20", "--stream", "40", "--test", "30", "--runs", "1", "--buffer", "8", "--no-progress",
             "-o", str(tmp_path / "sim"))
    assert r.returncode == 0, r.stderr
    rows = (tmp_path / "sim" / "concept-drift.csv").read_text().splitlines()
    assert len(rows) == 41
    first = dict(zip(rows[0].split(","), rows[20].split(",")))
    assert float(first["omega_all_mean"]) >= 0.8  # the trained GRU before the labels swap


def test_tflm_refuses_in_one_line(sensor_model, tmp_path: Path, capsys) -> None:
    model, d = sensor_model
    r = _cli(capsys, "compile", str(model), "--target", "tflm", "--calib", str(d / "calib.npy"),
             "-o", str(tmp_path / "t"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "tinycc: error: layer 'gru' (GRU): TFLite Micro has no GRU kernel; use --target c or arduino (tinycc's "
        "integer recurrent kernels)"]
    assert not (tmp_path / "t").exists()
    r = _cli(capsys, "quantize", str(model), "--calib", str(d / "calib.npy"), "-o", str(tmp_path / "q.tflite"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "layer 'gru' (gru) cannot be written to TFLite (no TFLite operator" in r.stderr
    assert not (tmp_path / "q.tflite").exists()


@pytest.mark.parametrize("make,message", [
    (lambda: L.GRU(4, activation="relu", name="odd"), "layer 'odd' (GRU) uses activation 'relu' (tanh only)"),
    (lambda: L.GRU(4, recurrent_activation="hard_sigmoid", name="odd"),
     "layer 'odd' (GRU) uses recurrent_activation 'hard_sigmoid' (sigmoid only)"),
    (lambda: L.SimpleRNN(4, activation="relu", name="odd"), "layer 'odd' (SimpleRNN) uses activation 'relu'"),
])
def test_unusual_options_are_refused_in_one_line(tmp_path: Path, capsys, make, message: str) -> None:
    inp = keras.Input((8, 2))
    path = tmp_path / "odd.keras"
    keras.Model(inp, L.Dense(2)(make()(inp))).save(path)
    r = _cli(capsys, "inspect", str(path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_arduino_mega_selftest_predicts_and_learns_like_the_simulator(session, sensor_model, tmp_path: Path) -> None:
    """The arduino target on an ATmega2560 (simavr, 16-bit int, PROGMEM tables read through TCC_READ_S16/S32):
    predictions before and after learning equal the simulator's."""
    from tinycc.backends.arduino import ArduinoBackend
    from tinycc.backends.demo import report_predictions
    from tinycc.ir.simulator import Simulator

    from . import arduino_harness
    from .deploy_util import emit

    if not arduino_harness.available():
        pytest.skip("arduino-builder/simavr/avr-gcc not installed")
    model, d = sensor_model
    opts = {"board": "mega2560", "buffer": 8, "calib_data": np.load(d / "calib.npy")}
    dep = build_deployment(graph_from_keras_model(keras.saving.load_model(model)), opts, session, ArduinoBackend())
    x, y = sensor_data(6, 9)
    emit(ArduinoBackend(), dep, {"selftest": True, "test_vectors": (x, y), "test_count": 6, "test_learn": 6}, tmp_path)
    elf, _, _ = arduino_harness.build(tmp_path / dep.name / f"{dep.name}.ino", tmp_path)
    lines = arduino_harness.run_simavr(elf)
    rows = report_predictions("\n".join(lines[lines.index(next(l for l in lines if l.startswith("tinycc demo"))):]))
    sim = Simulator(dep)
    assert rows["before"] == list(sim.predict(x)[0])
    for i in range(6):
        sim.learn(x[i], int(y[i]))
    assert rows["after"] == list(sim.predict(x)[0])


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("cpu", ["m4", "m0plus"])
def test_cortex_m_qemu_features_equal_run_int8(session, sensor_model, tmp_path: Path, cpu: str) -> None:
    """-Os -Wall -Wextra -Werror for Cortex-M4 (DSP) and M0+ (no 64-bit multiply: the requantization's 16-bit
    products) under QEMU: the sensor GRU's int8 features equal run_int8's."""
    from tinycc.backends.c import CBackend

    model, d = sensor_model
    opts = {"buffer": 8, "calib_data": np.load(d / "calib.npy")}
    dep = build_deployment(graph_from_keras_model(keras.saving.load_model(model)), opts, session, CBackend())
    x, y = sensor_data(3, 10)
    render_project(dep, {**opts, "test_vectors": (x, y), "test_count": 3, "test_learn": 0}, tmp_path / "m4")
    dev, _ = c_harness.build_and_run_qemu(tmp_path / "m4", cpu)
    feats = run_int8(dep.extractor, x)[dep.extractor.outputs[0]]
    for i in range(len(x)):
        np.testing.assert_array_equal(dev.features[i], feats[i], err_msg=f"M4 features of input {i}")
    print(f"sensor Conv1D + GRU(16) over 64x6 on {cpu}: {dev.instructions['features']} instructions per inference")
    assert dev.instructions["features"] > 0


def _rnn_case(kind: str, rng: np.random.Generator) -> Graph:
    """One quantized GRU/SimpleRNN op with random sizes and parameters, scales wide enough to saturate the gates,
    clamp the rescaled terms at 2^28 and the biases at 2^24."""
    steps, feats, units = (int(v) for v in rng.integers(1, 7, 3))
    lo, hi = (-3, 0.5) if rng.random() < 0.4 else (-4, -2)  # extreme (saturating) or moderate weight scales
    rows = units * (3 if kind == "gru" else 1)
    g = Graph(kind)
    g.add_input("x", (1, steps, feats), DType.INT8).quant = QuantParams([float(np.float32(10 ** rng.uniform(-2, 1)))],
                                                                        [int(rng.integers(-128, 128))])
    ins = ["x"]
    for name, cols in (("w", feats), ("r", units)):
        s = (10 ** rng.uniform(lo, hi, rows)).astype(np.float32)
        ins.append(g.add_const(name, rng.integers(-127, 128, (rows, cols)).astype(np.int8), DType.INT8,
                               QuantParams(s, np.zeros(rows, np.int64), 0)).name)
    for name in ("b", "rb")[:2 if kind == "gru" else 1]:
        lim = int(rng.choice([3000, 3000, 1 << 16, 1 << 24]))
        ins.append(g.add_const(name, rng.integers(-lim, lim + 1, rows).astype(np.int32), DType.INT32,
                               QuantParams([1 / 4096], [0])).name)
    attrs = {"return_sequences": bool(rng.integers(0, 2))}
    if kind == "gru":
        attrs["reset_after"] = bool(rng.integers(0, 2))
    op = g.add_op(kind, ins, "out", attrs, output_dtype=DType.INT8)
    g.tensors[op.outputs[0]].quant = QuantParams([float(np.float32(10 ** rng.uniform(-2.3, -0.5)))],
                                                 [int(rng.integers(-128, 128))])
    g.outputs = [op.outputs[0]]
    return g


CASES = 32


def test_c_kernel_equals_run_int8_on_random_parameters(tmp_path: Path) -> None:
    """CASES random GRU (both reset_after) and SimpleRNN layers through the emitter into one ASan/UBSan program: every
    output equals run_int8's; the cases reach both ends of the output range and values between."""
    from tinycc.backends.c.emitter import _Builder

    from .test_c_kernels import _generic

    rng = np.random.default_rng(2031)
    funcs, body, want, arena = [], [], [], 16
    for i in range(CASES):
        g = _rnn_case("gru" if i % 4 else "simple_rnn", rng)
        x = rng.integers(-128, 128, g.tensors["x"].shape).astype(np.int8)
        with c_harness.listed_tables():
            em = _Builder(_generic(g)).build()
        arena = max(arena, em.plan.arena)
        funcs += [k.code.replace("tcc_layer_", f"tcc_case{i}_") for k in em.kernels]
        body.append("    {")
        body += [f"      static const {a.ctype} {a.name}[{a.count}] = {{{', '.join(a.values)}}};" for a in em.arrays]
        body.append(f"      static const int8_t in[{x.size}] = {{{', '.join(str(int(v)) for v in x.reshape(-1))}}};")
        body.append(f"      memcpy(tcc_arena + {em.plan.offsets['x']}, in, sizeof in);")
        body += [f"      {c.fn.replace('tcc_layer_', f'tcc_case{i}_')}({', '.join(c.args)});" for c in em.calls]
        y = g.outputs[0]
        body += [f"      dump({i}, tcc_arena + {em.plan.offsets[y]}, {g.tensors[y].size});", "    }"]
        want.append(f"case {i} " + " ".join(str(int(v)) for v in run_int8(g, x)[y].reshape(-1)))
    src = "\n".join([
        "#include <stdio.h>", "#include <string.h>", '#include "tinycc_kernels.h"', '#include "tinycc_gen.h"',
        f"static int8_t tcc_arena[{arena}];", *funcs,
        "static void dump(int id, const int8_t *p, int32_t n) {",
        "    int32_t i;", '    printf("case %d", id);', '    for (i = 0; i < n; ++i) { printf(" %d", p[i]); }',
        '    printf("\\n");', "}", "int main(void) {", *body, "    return 0;", "}", ""])
    got = c_harness.run_runtime_program(src, tmp_path, "rnn_test")
    assert got == want
    outs = np.concatenate([np.array(w.split()[2:], int) for w in want])
    assert outs.min() == -128 and outs.max() == 127 and len(np.unique(outs)) > 40
    assert ((outs > -128) & (outs < 127)).mean() > 0.5  # mostly not saturated


def test_stack_estimate_holds_the_recurrent_state(session) -> None:
    """Without the core's compiler the stack line is an estimate: it includes a wide GRU's state arrays (three
    int16 vectors of 200 units with reset_after=False) beyond the 512 bytes assumed for other kernels."""
    from tinycc.backends.c import CBackend
    from tinycc.backends.c.stack import estimate, stack_item

    keras.utils.set_random_seed(6)
    inp = keras.Input((4, 2))
    m = keras.Model(inp, L.Dense(2, activation="softmax")(L.GRU(200, reset_after=False)(inp)))
    x = np.random.default_rng(6).normal(size=(16, 4, 2)).astype(np.float32)
    dep = build_deployment(graph_from_keras_model(m), {"buffer": 4, "calib_data": x}, session, CBackend())
    item = stack_item(dep, arch="no-such-arch")
    # 4: the pointer bytes of an unknown core
    assert not item.measured and item.bytes == estimate(3 * 2 * 200, 4) > estimate(512, 4)


def check_features_and_learning(out, sim, dep, xs, y, learned: int = 4) -> np.ndarray:
    """The demo's features equal the simulator's and tinycc's int8 interpreter's bit for bit; after ``learned`` learn
    calls its last classifier layer equals the simulator's (1e-4 relative). Returns the features."""
    feats = sim.features(xs)
    np.testing.assert_array_equal(feats, run_int8(dep.extractor, xs)[dep.extractor.outputs[0]].reshape(len(xs), -1))
    for i in range(len(xs)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"C features of input {i}")
    for i in range(learned):
        sim.learn_features(feats[i], int(y[i]))
    w = sim.classifier.layers[-1].weight
    assert np.abs(out.weights[len(dep.classifier) - 1] - w.reshape(-1)).max() <= 1e-4 * max(np.abs(w).max(), 1e-3)
    return feats
