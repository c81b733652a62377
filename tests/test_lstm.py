"""Keras LSTM end to end: the float IR equals Keras; the int8 form written by tinycc's TFLite writer as
UNIDIRECTIONAL_SEQUENCE_LSTM runs bit-exactly like run_int8 in TFLite Micro's Python interpreter (flavor "tflm",
ir/lstm.py) and in TFLite's BUILTIN_REF interpreter (flavor "tflite", ir/lstm_tflite.py), on random parameters and on
tinycc's own quantization of a Keras model; .tflite files read back; the generated C (ASan/UBSan) equals run_int8;
a keyword-spotting-style LSTM + Dense head learns on the device like the simulator; refusals are one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.errors import UnsupportedLayerError
from tinycc.ir.graph import Graph
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.lstm import sigmoid_i16, tanh_i16
from tinycc.ir.simulator import Simulator
from tinycc.ir.tensor import DType, QuantParams
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model
from tinycc.tflite_writer import operator_names, write_tflite

from . import c_harness
from .deploy_util import build_deployment, render_project
from .op_checks import assert_learned_like_the_simulator

keras = pytest.importorskip("keras")


def _tflite(data: bytes, x: np.ndarray) -> np.ndarray:
    """TFLite's interpreter with its reference kernels, one sample per Invoke from a reset (zero) state."""
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    it = litert.Interpreter(model_content=data, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    outs = []
    for i in range(len(x)):
        it.reset_all_variables()
        it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1])
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"]))
    return np.concatenate(outs)


def _tflm(data: bytes, x: np.ndarray) -> np.ndarray:
    """TFLite Micro's Python interpreter, one sample per Invoke from a reset (zero) state."""
    from tflite_micro.python.tflite_micro import runtime

    m = runtime.Interpreter.from_bytes(data)
    outs = []
    for i in range(len(x)):
        m.reset()
        m.set_input(x[i:i + 1], 0)
        m.invoke()
        outs.append(m.get_output(0))
    return np.concatenate(outs)


def _kws_model(steps: int = 49, feats: int = 10, units: int = 32, seed: int = 0):
    """MFCC-like [49, 10] input -> LSTM(32) -> Dense(16) -> Dense(3) softmax."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((steps, feats))
    x = keras.layers.LSTM(units, name="lstm")(inp)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="head")(x), name="kws_lstm")


def _kws_data(n: int, seed: int, steps: int = 49, feats: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Separable synthetic 'keywords': class k has a bump in feature band k moving over time, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 0.3, (n, steps, feats)).astype(np.float32)
    t = np.arange(steps)
    for i, k in enumerate(y):
        x[i, :, 3 * k:3 * k + 3] += np.exp(-((t - 12 - 10 * k) / 6.0) ** 2)[:, None] * 3.0
    return x, y


def _clean(session, m) -> Graph:
    g = graph_from_keras_model(m)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    return g


def test_float_stacked_lstm_equals_keras() -> None:
    keras.utils.set_random_seed(1)
    inp = keras.Input((12, 5))
    x = keras.layers.LSTM(8, return_sequences=True, name="l1")(inp)
    x = keras.layers.LSTM(6, name="l2", use_bias=False)(x)
    m = keras.Model(inp, keras.layers.Dense(3)(x))
    rng = np.random.default_rng(1)
    for w in m.weights:  # weights large enough to saturate gates
        w.assign(rng.normal(0, 0.6, w.shape).astype(np.float32))
    g = graph_from_keras_model(m)
    assert [o.kind.value for o in g.ops][:2] == ["lstm", "lstm"]
    x = rng.normal(0, 1.5, (5, 12, 5)).astype(np.float32)
    ref = m.predict(x, verbose=0)
    np.testing.assert_allclose(run(g, x)[g.outputs[0]], ref, atol=1e-5 * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("what", ["return_state", "activation"])  # go_backwards: tests/test_bidirectional.py
def test_unusual_lstm_is_refused_in_one_line(what: str) -> None:
    kw = {"return_state": {"return_state": True}, "activation": {"activation": "relu"}}[what]
    inp = keras.Input((4, 3))
    out = keras.layers.LSTM(2, name="odd", **kw)(inp)
    m = keras.Model(inp, out[0] if isinstance(out, (list, tuple)) else out)
    with pytest.raises(UnsupportedLayerError) as e:
        graph_from_keras_model(m)
    assert "'odd'" in str(e.value) and "LSTM" in str(e.value) and "\n" not in str(e.value)


def test_int16_activations_match_float_within_table_error() -> None:
    """TFLite Micro's int16 sigmoid/tanh (the interpolated table) and TFLite's (gemmlowp) stay within 1e-3 of the
    real functions over every input."""
    from tinycc.ir import lstm_tflite

    q = np.arange(-32768, 32768)
    for sig in (sigmoid_i16, lstm_tflite.sigmoid_i16):
        np.testing.assert_allclose(sig(q) / 32768.0, 1 / (1 + np.exp(-q / 4096.0)), atol=1e-3)
    for p in (-13, -12, -11, -9):
        np.testing.assert_allclose(tanh_i16(q, p) / 32768.0, np.tanh(q * 2.0 ** p), atol=1e-3)
        np.testing.assert_allclose(lstm_tflite.tanh_i16(q, 15 + p) / 32768.0, np.tanh(q * 2.0 ** p), atol=1e-3)


def _random_int8_lstm(seed: int, return_sequences: bool, cell_power: int, steps: int = 7, feats: int = 5,
                      units: int = 6) -> Graph:
    r = np.random.default_rng(seed)
    g = Graph("lstm")
    g.add_input("x", (1, steps, feats), DType.INT8)
    g.tensors["x"].quant = QuantParams([float(r.uniform(0.005, 0.05))], [int(r.integers(-20, 20))])
    ws, rs = (np.repeat(r.uniform(0.002, 0.02, 4), units).astype(np.float32) for _ in range(2))
    z = np.zeros(4 * units, np.int64)
    g.add_const("wi", r.integers(-127, 128, (4 * units, feats)).astype(np.int8), DType.INT8, QuantParams(ws, z, 0))
    g.add_const("wr", r.integers(-127, 128, (4 * units, units)).astype(np.int8), DType.INT8, QuantParams(rs, z, 0))
    bs = (np.float32(g.tensors["x"].quant.scale[0]) * ws).astype(np.float32)
    g.add_const("b", r.integers(-3000, 3000, 4 * units).astype(np.int32), DType.INT32, QuantParams(bs, z, 0))
    op = g.add_op("lstm", ["x", "wi", "wr", "b"], "lstm", {"return_sequences": return_sequences,
                                                          "cell_power": cell_power})
    g.tensors[op.outputs[0]].quant = QuantParams([float(r.uniform(0.004, 0.01))], [int(r.integers(-5, 5))])
    g.outputs = [op.outputs[0]]
    return g


@pytest.mark.parametrize("seed", range(6))
def test_random_int8_lstm_bit_exact_with_tflite_micro_and_tflite(seed: int) -> None:
    pytest.importorskip("tflite_micro")
    g = _random_int8_lstm(seed, seed % 2 == 0, (-13, -12, -11, -10, -9, -12)[seed])
    data = write_tflite(g)
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in operator_names(data)
    x = np.random.default_rng(100 + seed).integers(-128, 128, (4,) + g.tensors["x"].shape[1:]).astype(np.int8)
    ours = run_int8(g, x)[g.outputs[0]]
    np.testing.assert_array_equal(ours, _tflm(data, x))
    assert len(np.unique(ours)) > 8  # not saturated: the arithmetic is exercised
    np.testing.assert_array_equal(run_int8(g, x, flavor="tflite")[g.outputs[0]], _tflite(data, x))


def test_quantized_keras_lstm_bit_exact_with_tflite_micro_and_close_to_float(session) -> None:
    pytest.importorskip("tflite_micro")
    keras.utils.set_random_seed(2)
    inp = keras.Input((10, 6))
    x = keras.layers.LSTM(8, return_sequences=True, name="l1")(inp)
    m = keras.Model(inp, keras.layers.LSTM(7, name="l2")(x))
    g = _clean(session, m)
    f = g.copy()
    rng = np.random.default_rng(3)
    calib = rng.normal(0.2, 1, (64, 10, 6)).astype(np.float32)
    run_pipeline(g, session.registry.pipeline("int8"), PassContext(session=session, calib=calib))
    lstms = [o for o in g.ops if o.kind.value == "lstm"]
    assert len(lstms) == 2 and all(-15 <= o.attrs["cell_power"] < 0 for o in lstms)
    x = rng.normal(0.2, 1, (6, 10, 6)).astype(np.float32)
    ours = run_int8(g, x)[g.outputs[0]]
    np.testing.assert_array_equal(ours, _tflm(write_tflite(g), x))
    np.testing.assert_array_equal(run_int8(g, x, flavor="tflite")[g.outputs[0]], _tflite(write_tflite(g), x))
    out_scale = float(g.tensors[g.ops[-1].inputs[0]].quant.scale[0])
    assert np.abs(ours - run(f, x)[f.outputs[0]]).max() < 6 * out_scale  # int8 LSTM tracks the float one


def test_kws_lstm_c_equals_run_int8_and_learns_like_the_simulator(session, tmp_path: Path) -> None:
    m = _kws_model()
    xt, yt = _kws_data(240, 0)
    m.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(xt, yt, epochs=10, batch_size=32, verbose=0)
    xv, yv = _kws_data(60, 1)
    assert m.evaluate(xv, yv, verbose=0)[1] > 0.9  # the fixture is a working keyword spotter
    g = _clean(session, m)
    opts = {"calib_data": xt[:64], "buffer": 4, "lr": 0.05, "cut": "fc"}
    dep = build_deployment(g, opts, session, CBackend())
    assert [o.kind.value for o in dep.extractor.ops] == ["quantize", "lstm", "dense"]
    x, y = xv[:4], yv[:4]
    render_project(dep, {**opts, "test_vectors": (x, y), "test_count": 4, "test_learn": 4}, tmp_path)
    exe = c_harness.build_host(tmp_path, sanitize=True)
    out = c_harness.run_host(exe)
    import re

    state = sum(n for s, n in c_harness.symbol_sizes(exe).items() if re.fullmatch(r"tcc_layer_\d+_(h|c|gate)", s))
    assert state == 32 * 11 and f"runtime state {state:,}".replace(" ", "") in \
        dep.memory["report"].replace(" ", "")  # the LSTM's static state is in the RAM report
    sim = assert_learned_like_the_simulator(dep, out, x, y, len(x), layer=0)
    assert out.buffer == sim.buffer.count == 4
    assert not np.array_equal(out.weights[0], dep.classifier[0].weight.reshape(-1))


@pytest.mark.parametrize("return_sequences", [True, False])
def test_tflite_lstm_round_trip_int8_and_float(session, tmp_path: Path, return_sequences: bool) -> None:
    """tinycc's .tflite (int8 and float) reads back into the same lstm op; the int8 file runs bit-exactly like
    TFLite Micro, the float one like TFLite's float kernel and Keras."""
    pytest.importorskip("tflite_micro")
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    from tinycc.plugins.frontends.tflite import read_tflite

    keras.utils.set_random_seed(5)
    inp = keras.Input((9, 4))
    m = keras.Model(inp, keras.layers.LSTM(5, return_sequences=return_sequences, name="lstm")(inp))
    g = _clean(session, m)
    rng = np.random.default_rng(6)
    x = rng.normal(0, 1, (3, 9, 4)).astype(np.float32)
    fpath = tmp_path / "f.tflite"
    fpath.write_bytes(write_tflite(g))
    gf = read_tflite(str(fpath))
    assert [o.kind.value for o in gf.ops][0] == "lstm"
    it = litert.Interpreter(model_path=str(fpath), experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    for i in range(len(x)):
        it.reset_all_variables()
        it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1])
        it.invoke()
        ref = it.get_tensor(it.get_output_details()[0]["index"])
        np.testing.assert_allclose(run(gf, x[i:i + 1])[gf.outputs[0]], ref, atol=1e-5)
    np.testing.assert_allclose(run(gf, x)[gf.outputs[0]], m.predict(x, verbose=0), atol=1e-5)
    run_pipeline(g, session.registry.pipeline("int8"), PassContext(session=session, calib=x))
    qpath = tmp_path / "q.tflite"
    qpath.write_bytes(write_tflite(g))
    gq = read_tflite(str(qpath))
    assert gq.meta.get("quantized") and [o.kind.value for o in gq.ops][:2] == ["quantize", "lstm"]
    ours = run_int8(gq, x)[gq.outputs[0]]
    np.testing.assert_array_equal(ours, run_int8(g, x)[g.outputs[0]])
    np.testing.assert_array_equal(ours, _tflm(qpath.read_bytes(), x))
    np.testing.assert_array_equal(run_int8(gq, x, flavor="tflite")[gq.outputs[0]], _tflite(qpath.read_bytes(), x))


@pytest.mark.slow
@pytest.mark.timeout(1800)  # may build TFLite Micro first (about 460 s of CPU, cached in ~/.cache/tinycc)
def test_kws_lstm_tflm_project_equals_run_int8_and_learns(session, tmp_path: Path) -> None:
    """The tflm target: TFLite Micro's own LSTM kernel (Reset() before each input) gives run_int8's features and
    the Dense head trains like the simulator."""
    from tinycc.backends.tflm import TflmBackend, build, vendor
    from .deploy_util import emit

    vendor_dir = vendor.default_vendor_dir()
    if vendor_dir is None or vendor.missing_toolchain("host"):
        pytest.skip("TensorFlow Lite Micro snapshot or host toolchain not found (../shared/vendor; TINYCC_VENDOR)")
    library = vendor.ensure_library(vendor_dir, "host")
    m = _kws_model(units=12)
    xt, yt = _kws_data(64, 3)
    opts = {"calib_data": xt, "buffer": 4, "lr": 0.05, "cut": "fc"}
    dep = build_deployment(_clean(session, m), opts, session, TflmBackend())
    TflmBackend().check(dep)
    x, y = xt[:3], yt[:3]
    emit(TflmBackend(), dep, {**opts, "test_vectors": (x, y), "test_count": 3, "test_learn": 3}, tmp_path)
    assert "interpreter->Reset()" in (tmp_path / "src" / "tinycc_tflm.cc").read_text()
    out = c_harness.parse(build.run(build.build_host(tmp_path, sanitize=True, library=library)))
    # the same input three times in a row would differ here without the reset
    sim = assert_learned_like_the_simulator(dep, out, x, y, 3, layer=0, what="TFLite Micro")
    assert out.buffer == sim.buffer.count == 3


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_kws_lstm_under_qemu_m4(session, tmp_path: Path) -> None:
    """The first vectors on a Cortex-M4 (QEMU): features bit-exact; instructions as ir.stats estimates (+-25 %)."""
    from tinycc.ir.stats import op_instructions

    m = _kws_model(units=32)
    xt, yt = _kws_data(64, 0)
    opts = {"calib_data": xt, "buffer": 4, "lr": 0.05, "cut": "fc"}
    dep = build_deployment(_clean(session, m), opts, session, CBackend())
    x, y = xt[:2], yt[:2]
    render_project(dep, {**opts, "test_vectors": (x, y), "test_count": 2, "test_learn": 2}, tmp_path)
    out, _ = c_harness.build_and_run_qemu(tmp_path, "m4")
    feats = Simulator(dep).features(x)
    for i in range(2):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")
    estimate = sum(op_instructions(dep.extractor, o) for o in dep.extractor.ops)
    assert 0.75 < out.instructions["features"] / estimate < 1.25, (out.instructions, estimate)


def test_small_lstm_on_mega2560_in_simavr(session, tmp_path: Path) -> None:
    """The arduino target on an 8-bit AVR (16-bit int): the self-test's predictions before and after learning
    equal the simulator's."""
    from tinycc.backends.arduino import ArduinoBackend

    from . import arduino_harness

    if not arduino_harness.available():
        pytest.skip("arduino-builder/simavr/avr-gcc not installed")
    keras.utils.set_random_seed(7)
    inp = keras.Input((16, 6))
    h = keras.layers.LSTM(8, name="lstm")(inp)
    h = keras.layers.Dense(8, activation="relu", name="fc")(h)
    m = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="head")(h))
    xt, yt = _kws_data(48, 4, steps=16, feats=6)
    dep = build_deployment(_clean(session, m), {"calib_data": xt, "buffer": 8, "lr": 0.1, "cut": "fc"}, session,
                           ArduinoBackend())
    x, y = xt[:6], yt[:6].astype(np.int64)
    arduino_harness.assert_sketch_learns_like_the_simulator(dep, x, y, tmp_path, 12)


def test_cli_compile_and_simulate_an_lstm_model(tmp_path: Path) -> None:
    """`tinycc compile --target c` and `tinycc simulate` on a saved Keras LSTM model (subprocesses, clean exit)."""
    import subprocess
    import sys

    m = _kws_model(steps=20, feats=6, units=8)
    m.save(tmp_path / "kws.keras")
    x, y = _kws_data(160, 2, steps=20, feats=6)
    np.savez(tmp_path / "kws.npz", x_train=x, y_train=y, x_calib=x[:32])
    run = [sys.executable, "-m", "tinycc.cli"]
    r = subprocess.run(run + ["compile", str(tmp_path / "kws.keras"), "--target", "c", "--calib",
                              str(tmp_path / "kws.npz"), "--cut", "fc", "-o", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "lstm" in (tmp_path / "out" / "model.c").read_text().lower()
    r = subprocess.run(run + ["simulate", str(tmp_path / "kws.keras"), "--scenario", "concept-drift", "--data",
                              str(tmp_path / "kws.npz"), "--swap", "0,1", "--at", "40", "--stream", "80",
                              "--test", "30", "--buffer", "8", "--runs", "1", "--cut", "fc", "--no-progress",
                              "-o", str(tmp_path / "sim")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "final accuracy" in r.stdout and (tmp_path / "sim" / "concept-drift.csv").is_file()


def test_tflite_lstm_variants_are_refused_in_one_line(session, tmp_path: Path) -> None:
    """A time-major LSTM or one with peepholes (a cell-to-gate tensor) is refused naming the operator's output."""
    import flatbuffers

    from tinycc.plugins.frontends.tflite import read_tflite
    from tinycc.tflite_schema import schema

    inp = keras.Input((5, 3))
    g = _clean(session, keras.Model(inp, keras.layers.LSTM(4, return_sequences=True, name="seq")(inp)))
    s = schema()
    for case in ("time_major", "peephole"):
        m = s.ModelT.InitFromPackedBuf(write_tflite(g), 0)
        op = next(o for o in m.subgraphs[0].operators if len(o.inputs) == 24)
        if case == "time_major":
            op.builtinOptions.timeMajor = True
        else:
            ins = np.array(op.inputs)
            ins[9] = ins[12]  # a [H] tensor where the input gate's peephole weights go
            op.inputs = ins
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        path = tmp_path / f"{case}.tflite"
        path.write_bytes(bytes(b.Output()))
        with pytest.raises(UnsupportedLayerError) as e:
            read_tflite(str(path))
        msg = str(e.value)
        assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in msg and "\n" not in msg and len(msg) < 200, msg


PUBLISHED = ("trained_lstm_int8.tflite", "micro_speech_lstm.tflite")  # TFLite Micro's examples (converter output)


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_converter_lstm_files(name: str) -> None:
    """Converter-made int8 LSTM files (TFLite Micro's mnist_lstm and xtensa micro_speech_lstm examples, kept in
    tests/data/tflm-lstm): imported, run_int8 equals TFLite Micro (flavor tflm) and TFLite (flavor tflite)."""
    from tinycc.plugins.frontends.tflite import read_tflite

    path = Path(__file__).parent / "data" / "tflm-lstm" / name
    g = read_tflite(str(path))
    assert [o.kind.value for o in g.ops][:2] == ["lstm", "reshape"]
    shape = g.tensors[g.inputs[0]].shape
    x = np.clip(np.random.default_rng(0).normal(-90, 40, (4,) + shape[1:]), -128, 127).astype(np.int8)
    data = path.read_bytes()
    np.testing.assert_array_equal(run_int8(g, x)[g.outputs[0]], _tflm(data, x))
    np.testing.assert_array_equal(run_int8(g, x, flavor="tflite")[g.outputs[0]], _tflite(data, x))


def test_stacked_sequence_lstms_without_bias_c_equals_run_int8(session, tmp_path: Path) -> None:
    """return_sequences=True twice (the second without bias) -> Flatten -> Dense: the C kernels' sequence outputs and
    the no-bias path equal run_int8 (ASan/UBSan), input zero point away from 0."""
    keras.utils.set_random_seed(8)
    inp = keras.Input((7, 4))
    h = keras.layers.LSTM(6, return_sequences=True, name="l1")(inp)
    h = keras.layers.LSTM(5, return_sequences=True, use_bias=False, name="l2")(h)
    h = keras.layers.Dense(6, name="fc")(keras.layers.Flatten(name="flat")(h))
    m = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="head")(h))
    rng = np.random.default_rng(9)
    calib = rng.normal(1.0, 1.0, (32, 7, 4)).astype(np.float32)
    opts = {"calib_data": calib, "buffer": 2, "cut": "fc"}
    dep = build_deployment(_clean(session, m), opts, session, CBackend())
    assert [o.kind.value for o in dep.extractor.ops if o.kind.value == "lstm"] == ["lstm", "lstm"]
    x = rng.normal(1.0, 1.2, (4, 7, 4)).astype(np.float32)
    render_project(dep, {**opts, "test_vectors": (x, np.zeros(4, np.int64)), "test_count": 4, "test_learn": 1},
                   tmp_path)
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    feats = Simulator(dep).features(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_keras_files_read_without_tensorflow_give_the_same_ir(tmp_path: Path, fmt: str) -> None:
    """keras_direct reads LSTM layers (weights on the cell in .keras, by position in legacy .h5) into the IR the
    Keras path gives, byte for byte: stacked, return_sequences both ways, with and without bias."""
    from .test_keras_direct import _same_ir

    keras.utils.set_random_seed(10)
    inp = keras.Input((6, 3))
    h = keras.layers.LSTM(4, return_sequences=True, use_bias=False, name="a")(inp)
    h = keras.layers.LSTM(5, name="b")(h)
    m = keras.Model(inp, keras.layers.Dense(2, name="head")(h))
    path = tmp_path / f"m.{fmt}"
    m.save(path)
    _same_ir(path)
