"""Keras Bidirectional recurrent layers and go_backwards, lowered onto the IR's ``reverse`` op (keras_bidir).

Oracles: Keras's own predictions for the float IR (LSTM, GRU, SimpleRNN; every merge mode, sequences or the last
step; go_backwards alone); run_int8 for the C kernel (random shapes and axes, ASan/UBSan) and for the features of
a generated project with bidirectional layers before the classifier (the simulator for what it learns); the Keras
path for the .keras file read without Keras (same IR, same project bytes); one-line refusals before any output.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.ir import serialize
from tinycc.ir.graph import Graph
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.tensor import DType, QuantParams
from tinycc.plugins.frontends import keras_direct
from tinycc.plugins.frontends.keras import graph_from_keras_model, load_keras_file
from tinycc.plugins.frontends.keras_direct import NotCovered, load_direct

from . import c_harness
from .deploy_util import build_deployment, render_project
from .test_c_kernels import _c_program

keras = pytest.importorskip("keras")
L = keras.layers
MODES = ("concat", "sum", "ave", "mul")


def _cli(capsys, *args: str) -> subprocess.CompletedProcess:
    from tinycc.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def _every_form(cls: type) -> "keras.Model":
    """One input, ten outputs: Bidirectional(cls) in every merge mode with and without return_sequences, and cls
    with go_backwards with and without return_sequences."""
    keras.utils.set_random_seed(11)
    inp = keras.Input((7, 3))
    outs = [L.Bidirectional(cls(4, return_sequences=rs), merge_mode=mode, name=f"bi_{mode}_{int(rs)}")(inp)
            for mode in MODES for rs in (True, False)]
    outs += [cls(5, go_backwards=True, return_sequences=rs, name=f"back_{int(rs)}")(inp) for rs in (True, False)]
    return keras.Model(inp, outs)


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "SimpleRNN"])
def test_float_ir_equals_keras(cls: str) -> None:
    m = _every_form(getattr(L, cls))
    g = graph_from_keras_model(m)
    kinds = [o.kind.value for o in g.ops]
    assert kinds.count("reverse") == 8 + 4 + 2  # every backward input and backward sequence, each go_backwards
    x = np.random.default_rng(1).normal(size=(5, 7, 3)).astype(np.float32)
    got = run(g, x)
    want = m.predict(x, verbose=0)
    assert len(want) == len(g.outputs) == 10
    for name, ref in zip(g.outputs, want):
        assert got[name].shape == ref.shape, name
        np.testing.assert_allclose(got[name], ref, atol=2e-6, rtol=0, err_msg=name)


def _reverse_case(rng: np.random.Generator, dtype: DType) -> Graph:
    shape = (1,) + tuple(int(v) for v in rng.integers(1, 7, int(rng.integers(1, 4))))
    g = Graph("reverse")
    q = QuantParams([float(rng.uniform(0.01, 0.1))], [int(rng.integers(-20, 20))])
    g.add_input("x", shape, dtype).quant = q
    op = g.add_op("reverse", ["x"], "out", {"axis": int(rng.integers(1, len(shape)))}, output_dtype=dtype)
    g.tensors[op.outputs[0]].quant = q
    g.outputs = [op.outputs[0]]
    return g


def test_reverse_c_kernel_equals_run_int8(tmp_path: Path) -> None:
    """tcc_reverse_s8 through the emitter, random ranks 2..4 and axes, in one ASan/UBSan program; run_int8 is the
    float interpreter's flip of the raw values."""
    rng = np.random.default_rng(7)
    cases = []
    for _ in range(60):
        g = _reverse_case(rng, DType.INT8)
        x = rng.integers(-128, 128, g.tensors["x"].shape).astype(np.int8)
        np.testing.assert_array_equal(run_int8(g, x)[g.outputs[0]], np.flip(x, g.ops[0].attrs["axis"]))
        cases.append((g, x))
    src, want = _c_program(cases)
    assert "tcc_reverse_s8(" in src
    got = c_harness.run_runtime_program(src, tmp_path, "reverse_test")
    assert got == want


def _sensor_bidir() -> "keras.Model":
    """[12, 3] -> Bidirectional(LSTM, sum, sequences) -> Bidirectional(GRU, ave, sequences) -> GRU(go_backwards,
    sequences) -> Bidirectional(SimpleRNN, mul, sequences) -> Bidirectional(SimpleRNN, concat) -> Dense head."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((12, 3))
    x = L.Bidirectional(L.LSTM(6, return_sequences=True), merge_mode="sum", name="bi_lstm")(inp)
    x = L.Bidirectional(L.GRU(5, return_sequences=True), merge_mode="ave", name="bi_gru")(x)
    x = L.GRU(5, go_backwards=True, return_sequences=True, name="back_gru")(x)
    x = L.Bidirectional(L.SimpleRNN(4, return_sequences=True), merge_mode="mul", name="bi_rnn")(x)
    x = L.Bidirectional(L.SimpleRNN(4), merge_mode="concat", name="bi_last")(x)
    return keras.Model(inp, L.Dense(3, activation="softmax", name="head")(x), name="bidir")


def test_c_project_equals_run_int8_and_learns_like_the_simulator(session, tmp_path: Path) -> None:
    """A project whose feature extractor ends in Bidirectional layers (every merge mode, go_backwards): the generated
    C (gcc -Werror, ASan/UBSan) computes run_int8's features bit for bit; four learned samples give the
    simulator's classifier."""
    from tinycc.backends.c import CBackend
    from tinycc.ir.simulator import Simulator

    m = _sensor_bidir()
    x = np.random.default_rng(4).normal(size=(48, 12, 3)).astype(np.float32)
    opts = {"buffer": 6, "lr": 0.05, "calib_data": x}
    dep = build_deployment(graph_from_keras_model(m), opts, session, CBackend())
    CBackend().check(dep)
    assert [o.kind.value for o in dep.extractor.ops].count("reverse") == 8
    xs, y = x[:8], np.arange(8) % 3
    render_project(dep, {**opts, "test_vectors": (xs, y), "test_count": 8, "test_learn": 4}, tmp_path / "c")
    code = (tmp_path / "c" / "model.c").read_text()
    assert code.count("tcc_reverse_s8(") == 8
    out = c_harness.run_host(c_harness.build_host(tmp_path / "c", sanitize=True))
    sim = Simulator(dep)
    from .test_recurrent import check_features_and_learning

    feats = check_features_and_learning(out, sim, dep, xs, y)
    assert len(np.unique(feats)) > 4  # not a constant


def _canonical(g: Graph) -> tuple[str, dict]:
    doc, arrays = serialize.to_dict(g)
    return json.dumps(doc, sort_keys=True), {k: (a.dtype.str, a.shape, a.tobytes()) for k, a in arrays.items()}


@pytest.fixture(scope="module")
def lstm_file(tmp_path_factory) -> Path:
    """A .keras file: Bidirectional(LSTM) in every merge mode, a go_backwards LSTM, an explicit backward layer."""
    keras.utils.set_random_seed(5)
    inp = keras.Input((9, 4))
    x = L.Bidirectional(L.LSTM(5, return_sequences=True), merge_mode="ave", name="bi_ave")(inp)
    x = L.Bidirectional(L.LSTM(5, return_sequences=True), merge_mode="mul", name="bi_mul")(x)
    x = L.LSTM(4, go_backwards=True, return_sequences=True, name="back")(x)
    x = L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode="sum", name="bi_sum")(x)
    x = L.Bidirectional(L.LSTM(4), backward_layer=L.LSTM(4, go_backwards=True, use_bias=False), name="bi_cat")(x)
    m = keras.Model(inp, L.Dense(3, activation="softmax", name="head")(x), name="bilstm")
    d = tmp_path_factory.mktemp("bilstm")
    m.save(d / "bilstm.keras")
    m.save(d / "bilstm.h5")
    np.save(d / "calib.npy", np.random.default_rng(6).normal(size=(32, 9, 4)).astype(np.float32))
    return d / "bilstm.keras"


@pytest.fixture(scope="module")
def gru_file(lstm_file: Path) -> Path:
    """Bidirectional GRU (sum) and SimpleRNN (concat), a go_backwards GRU (reset_after False), a SimpleRNN."""
    keras.utils.set_random_seed(8)
    inp = keras.Input((9, 4))
    x = L.Bidirectional(L.GRU(5, return_sequences=True), merge_mode="sum", name="bi_gru")(inp)
    x = L.GRU(4, go_backwards=True, return_sequences=True, reset_after=False, name="g_back")(x)
    x = L.SimpleRNN(4, return_sequences=True, use_bias=False, name="s1")(x)
    x = L.Bidirectional(L.SimpleRNN(3), name="bi_rnn")(x)
    m = keras.Model(inp, L.Dense(3, activation="softmax", name="head")(x), name="birnn")
    for fmt in ("keras", "h5"):
        m.save(lstm_file.parent / f"birnn.{fmt}")
    return lstm_file.parent / "birnn.keras"


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("which,reverses", [("lstm", 4 + 3 + 1), ("gru", 2 + 1 + 1)])
def test_keras_file_read_directly_equals_the_keras_path(lstm_file: Path, gru_file: Path, fmt: str, which: str,
                                                        reverses: int) -> None:
    path = {"lstm": lstm_file, "gru": gru_file}[which].with_suffix(f".{fmt}")
    direct = load_direct(path, path.stem)  # NotCovered would fail the test
    assert [o.kind.value for o in direct.ops].count("reverse") == reverses
    a, b = _canonical(direct), _canonical(load_keras_file(str(path), direct=False))
    assert a[0] == b[0] and a[1] == b[1]
    m = keras.saving.load_model(path)
    x = np.random.default_rng(2).normal(size=(4, 9, 4)).astype(np.float32)
    np.testing.assert_allclose(run(direct, x)[direct.outputs[0]], m.predict(x, verbose=0), atol=2e-6, rtol=0)


def test_compile_of_the_keras_file_is_the_same_bytes_either_way(lstm_file: Path, tmp_path: Path, capsys,
                                                                monkeypatch) -> None:
    """`tinycc compile` of the saved .keras (read without Keras) writes the project the Keras path writes."""
    args = ["compile", str(lstm_file), "--target", "c", "--calib", str(lstm_file.parent / "calib.npy")]
    r = _cli(capsys, *args, "-o", str(tmp_path / "direct"))
    assert r.returncode == 0, r.stderr

    def refuse(path, name):
        raise NotCovered("forced for the test")
    monkeypatch.setattr(keras_direct, "load_direct", refuse)
    r = _cli(capsys, *args, "-o", str(tmp_path / "keras"))
    assert r.returncode == 0, r.stderr
    files = sorted(p.relative_to(tmp_path / "direct") for p in (tmp_path / "direct").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "keras") for p in (tmp_path / "keras").rglob("*") if p.is_file())
    assert "tcc_reverse_s8(" in (tmp_path / "direct" / "model.c").read_text()
    for f in files:
        assert (tmp_path / "direct" / f).read_bytes() == (tmp_path / "keras" / f).read_bytes(), f


@pytest.mark.parametrize("make,message", [
    (lambda inp: L.Concatenate()(L.Bidirectional(L.LSTM(3), merge_mode=None, name="my_bi")(inp)),
     "layer 'my_bi' (Bidirectional) uses merge_mode=None (supported: concat, sum, ave, mul): not supported"),
    (lambda inp: L.Bidirectional(L.GRU(3, activation="relu"), name="my_bi")(inp),
     "layer 'my_bi/forward' (GRU) uses activation 'relu' (tanh only)"),
])
def test_unsupported_forms_are_refused_in_one_line(tmp_path: Path, capsys, make, message: str) -> None:
    inp = keras.Input((8, 2))
    path = tmp_path / "odd.keras"
    keras.Model(inp, L.Dense(2, name="head")(make(inp))).save(path)
    np.save(tmp_path / "calib.npy", np.zeros((4, 8, 2), np.float32))
    r = _cli(capsys, "compile", str(path), "--target", "c", "--calib", str(tmp_path / "calib.npy"),
             "-o", str(tmp_path / "out"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not (tmp_path / "out").exists()


def test_return_state_is_refused_naming_the_layer() -> None:
    from tinycc.errors import UnsupportedLayerError

    inp = keras.Input((6, 2))
    out = L.Bidirectional(L.LSTM(3, return_state=True), name="stateful_bi")(inp)
    m = keras.Model(inp, out[0])
    with pytest.raises(UnsupportedLayerError) as e:
        graph_from_keras_model(m)
    assert "'stateful_bi' (Bidirectional) uses return_state=True" in str(e.value) and "\n" not in str(e.value)


def _reverse_tflite(int8: bool) -> bytes:
    """A converter-made file: FULLY_CONNECTED + RELU over 7 steps, REVERSE_V2 of the steps, RESHAPE."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    w = tf.constant(rng.normal(size=(3, 5)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 7, 3], tf.float32)])
    def f(x):
        h = tf.nn.relu(tf.matmul(tf.reshape(x, [7, 3]), w))
        return tf.reshape(tf.reverse(tf.reshape(h, [1, 7, 5]), [1]), [1, 35])

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rng.normal(size=(1, 7, 3)).astype(np.float32)] for _ in range(32))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
    return conv.convert()


@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
def test_tflite_reverse_v2_reads_as_reverse(tmp_path: Path, int8: bool) -> None:
    """REVERSE_V2 of a converter-made file becomes ``reverse``: the float IR equals TFLite, the int8 IR's run_int8
    equals TFLite's reference kernels bit for bit."""
    from tinycc.plugins.frontends.tflite import read_tflite
    from tinycc.tflite_writer import operator_names

    from .op_checks import assert_output_equals_run_int8, interpreter

    data = _reverse_tflite(int8)
    assert "REVERSE_V2" in operator_names(data)
    (tmp_path / "rev.tflite").write_bytes(data)
    g = read_tflite(str(tmp_path / "rev.tflite"))
    rev = [o for o in g.ops if o.kind.value == "reverse"]
    assert len(rev) == 1 and rev[0].attrs["axis"] == 1
    rng = np.random.default_rng(1)
    if int8:
        assert_output_equals_run_int8(g, data, rng.integers(-128, 128, (6, 7, 3)).astype(np.int8), what="int8")
        return
    it = interpreter(data)
    for _ in range(4):
        x = rng.normal(size=(1, 7, 3)).astype(np.float32)
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        np.testing.assert_allclose(run(g, x)[g.outputs[0]], it.get_tensor(it.get_output_details()[0]["index"]),
                                   atol=1e-5, rtol=0)


def dense_reverse_dense(axis: int, steps: int = 5, relu: bool = False, seed: int = 9) -> Graph:
    """x [1, steps, 4] -> dense(6, relu or none) -> reverse (axis 1: time, 2: channels) -> dense(3)."""
    rng = np.random.default_rng(seed)
    g = Graph("rev")
    g.add_input("x", (1, steps, 4))
    g.add_const("w1", rng.normal(size=(6, 4)).astype(np.float32))
    g.add_const("b1", rng.normal(size=6).astype(np.float32))
    g.add_const("w2", rng.normal(size=(3, 6)).astype(np.float32))
    h = g.add_op("dense", ["x", "w1", "b1"], "d1", {"activation": "relu"} if relu else {}).outputs[0]
    r = g.add_op("reverse", [h], "rev", {"axis": axis}).outputs[0]
    g.outputs = g.add_op("dense", [r, "w2"], "d2").outputs
    return g


def test_channels_pass_a_time_reversal_and_prune_like_masking() -> None:
    """Removing a unit whose channels cross a time reversal equals zeroing its filter; reversing the channel axis
    itself keeps them whole (not prunable)."""
    from tinycc.ir.channels import analyse, remove

    g = dense_reverse_dense(1)
    units = analyse(g)
    crossing = [i for i, u in enumerate(units) if u.prunable and any(t == "rev" for t, _ in u.positions)]
    assert len(crossing) == 6
    unit = units[crossing[2]]
    (c,) = {c for t, c in unit.positions if t == "d1"}
    ref = g.copy()
    for name in ("w1", "b1"):
        d = ref.tensors[name].data.copy()
        d[c] = 0
        ref.tensors[name].data = d
    pruned = g.copy()
    remove(pruned, units, [crossing[2]])
    x = np.random.default_rng(3).normal(size=(4, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(run(pruned, x)[pruned.outputs[0]], run(ref, x)[ref.outputs[0]], atol=1e-5)
    d1 = next(o for o in pruned.ops if o.name == "d1")
    assert pruned.tensors[d1.inputs[1]].shape == (5, 4) and pruned.tensors["rev"].shape == (1, 5, 5)
    whole = dense_reverse_dense(2)
    assert not any(u.prunable and any(t == "rev" for t, _ in u.positions) for u in analyse(whole))
