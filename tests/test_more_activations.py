"""Softplus, softsign, SELU, mish and exponential (Keras ``activation=`` names, fused into Conv2D/Dense or as
``Activation`` layers): float IR against Keras (legacy .h5, keras_direct .keras and in-memory models); int8 as a
256-entry table from the float function on tinycc's calibrated parameters (``ir/lut.py``, ELU/GELU's rounding
rule) against Keras's own float32 functions; the C kernel ``tcc_lut_s8`` (ASan/UBSan) against run_int8; a C project
learning like the simulator; an Arduino Mega sketch in simavr. Refusals, one line each: the ``tflm`` target (no
TFLite builtin runs them in int8), the converter's .tflite files (EXP/LOG/ABS/GREATER... chains tinycc's reader does
not read). ``--deep``: their backward (float tail, generated C step) against TensorFlow's GradientTape, the
simulator and a learning C project."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinycc.errors import UnsupportedLayerError
from tinycc.ir import lut
from tinycc.ir.graph import Graph
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.ops import MORE_LUT_KINDS, OpKind
from tinycc.ir.quant import round_half_away
from tinycc.ir.tensor import DType, QuantParams
from tinycc.plugins.frontends.keras import graph_from_keras_model, load_keras_file
from tinycc.plugins.frontends.keras_direct import load_direct

from . import c_harness
from .deploy_util import build_deployment
from .op_checks import assert_c_project_learns_like_the_simulator
from .test_layout_ops import _convert, _program, _q

ACTS = [k.value for k in MORE_LUT_KINDS]
ALL = np.arange(-128, 128, dtype=np.int8)[None]
F32 = np.float32


def _keras_fn(name: str):
    import keras

    return lambda x: np.asarray(keras.activations.get(name)(np.asarray(x, F32)), F32)


def _small(act: str):
    """Conv2D(activation=act), Activation(act) after a 1x1 convolution, Dense(activation=act) (3 ops of the kind)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(40 + ACTS.index(act))
    inp = keras.Input((6, 6, 2))
    x = L.Conv2D(3, 3, activation=act, name="c1")(inp)
    x = L.Activation(act, name="a")(L.Conv2D(3, 1, name="c2")(x))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(4, activation=act, name="fc")(x), name=f"{act}_small")


def _x(shape: tuple[int, ...], n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.5, 1.5, (n,) + shape).astype(F32)


@pytest.mark.parametrize("act", ACTS)
def test_float_frontends_equal_keras(tmp_path: Path, act: str) -> None:
    """In-memory model, .keras and legacy .h5 (each read directly and through Keras): the float interpreter equals
    Keras to 1e-6."""
    m = _small(act)
    x = _x((6, 6, 2), 16)
    want = np.asarray(m(x))
    g = graph_from_keras_model(m)
    assert [o.kind for o in g.ops].count(OpKind(act)) == 3
    np.testing.assert_allclose(run(g, x)[g.outputs[0]], want, rtol=1e-6, atol=1e-6)
    for ext in ("keras", "h5"):
        p = tmp_path / f"m.{ext}"
        m.save(p)
        for how, loaded in (("direct", load_direct(str(p), "m")), ("keras", load_keras_file(str(p), direct=False))):
            assert [o.kind for o in loaded.ops] == [o.kind for o in g.ops], (ext, how)
            np.testing.assert_allclose(run(loaded, x)[loaded.outputs[0]], want, rtol=1e-6, atol=1e-6,
                                       err_msg=f"{ext} {how}")


def _single(kind: str, rng: np.random.Generator) -> Graph:
    g = Graph(kind)
    qi, qo = _q(rng), _q(rng)
    g.add_input("x", (1, 256), DType.INT8).quant = QuantParams([qi[0]], [qi[1]])
    op = g.add_op(kind, ["x"], "out", {}, output_dtype=DType.INT8)
    g.tensors[op.outputs[0]].quant = QuantParams([qo[0]], [qo[1]])
    g.outputs = [op.outputs[0]]
    return g


def test_tables_follow_the_rounding_rule_on_keras_functions() -> None:
    """Every entry: round(f(s_in * (q - zp_in)) * (1 / s_out)) + zp_out clamped, with f Keras's float32 function
    (an ulp of f may move an entry that lies on a rounding tie by one step); run_int8 applies the table."""
    rng = np.random.default_rng(77)
    q = np.arange(-128, 128)
    for i in range(100):
        kind = ACTS[i % len(ACTS)]
        g = _single(kind, rng)
        (si, zi), (so, zo) = [(float(g.tensors[t].quant.scale[0]), int(g.tensors[t].quant.zero_point[0]))
                              for t in ("x", g.outputs[0])]
        table = lut.table_s8(kind, {}, si, zi, so, zo)
        x = (F32(si) * (q - zi).astype(F32)).astype(F32)
        with np.errstate(over="ignore", invalid="ignore"):
            y = np.nan_to_num((_keras_fn(kind)(x) * (F32(1) / F32(so))).astype(F32))
        want = np.clip(np.clip(round_half_away(y), -1e9, 1e9).astype(np.int64) + zo, -128, 127)
        near_tie = np.abs(np.abs(y - np.trunc(y)) - 0.5) < 1e-3 * np.maximum(1, np.abs(y))
        diff = table.astype(np.int64) - want
        assert np.all(diff[~near_tie] == 0), (kind, si, zi, so, zo, np.flatnonzero(diff))
        assert np.all(np.abs(diff) <= 1), kind
        np.testing.assert_array_equal(run_int8(g, ALL)[g.outputs[0]][0], table, err_msg=kind)


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is not installed")
def test_c_kernel_equals_run_int8(tmp_path: Path) -> None:
    """tcc_lut_s8 with the emitted tables (ASan/UBSan) on all 256 inputs of 40 random parameter sets."""
    rng = np.random.default_rng(2034)
    cases = [(_single(ACTS[i % len(ACTS)], rng), {"x": ALL.copy()}) for i in range(40)]
    src, want = _program(cases)
    assert c_harness.run_runtime_program(src, tmp_path, "more_lut_test") == want


def _deep_model():
    """All five, fused and as layers, in front of a Dense head (the fused Dense+mish ends the int8 extractor)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 2))
    x = L.Conv2D(4, 3, activation="softplus", name="c1")(inp)
    x = L.Activation("softsign", name="ss")(L.Conv2D(4, 1, name="c2")(x))
    x = L.Conv2D(4, 3, activation="selu", name="c3")(x)
    x = L.Activation("exponential", name="ex")(L.Conv2D(4, 1, name="c4")(x))
    x = L.GlobalAveragePooling2D(name="gap")(L.Conv2D(6, 1, activation="relu", name="c5")(x))
    x = L.Dense(8, activation="mish", name="fc")(x)
    return keras.Model(inp, L.Dense(3, name="head")(x), name="more_acts")


@pytest.fixture(scope="module")
def deployed():
    from tinycc.backends.c import CBackend
    from tinycc.session import Session

    m = _deep_model()
    calib = _x((8, 8, 2), 48, 1)
    opts = {"buffer": 6, "lr": 0.05, "calib_data": calib}
    dep = build_deployment(graph_from_keras_model(m), opts, Session(autoload=False), CBackend())
    return m, dep, opts


def test_quantized_extractor_tracks_float(deployed) -> None:
    """tinycc's calibrated output parameters, on the calibration inputs: each table op's int8 output is its float
    function of its dequantized int8 input to half a step (clamped to the calibrated range), and within a few steps
    of the float graph's value."""
    m, dep, opts = deployed
    ext = dep.extractor
    assert set(MORE_LUT_KINDS) <= {o.kind for o in ext.ops}
    fg = graph_from_keras_model(m)
    x = opts["calib_data"][:24]
    ops = [o for o in ext.ops if o.kind in MORE_LUT_KINDS]
    fl = run(fg, x, outputs=[o.outputs[0] for o in ops])
    q = run_int8(ext, x, outputs=[t for o in ops for t in (o.inputs[0], o.outputs[0])])

    def deq(t: str) -> tuple[np.ndarray, float, float, float]:
        qp = ext.tensors[t].quant
        s, zp = float(qp.scale[0]), int(qp.zero_point[0])
        return (q[t].astype(np.float64) - zp) * s, s, s * (-128 - zp), s * (127 - zp)
    for o in ops:
        xin = deq(o.inputs[0])[0].astype(F32)
        y, s, lo, hi = deq(o.outputs[0])
        want = np.clip(_keras_fn(o.kind.value)(xin).astype(np.float64), lo, hi)
        assert np.abs(y - want).max() <= 0.5 * s * (1 + 1e-5), o.name
        err = np.abs(y - fl[o.outputs[0]])
        assert err.mean() < s and err.max() < 8 * s, (o.name, err.mean() / s, err.max() / s)


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is not installed")
def test_c_project_learns_like_the_simulator(deployed, tmp_path: Path) -> None:
    """Host build (-Werror, ASan/UBSan): features equal run_int8, learning equals the simulator."""
    _, dep, opts = deployed
    x = _x((8, 8, 2), 8, 3)
    y = np.arange(8) % dep.num_classes
    assert_c_project_learns_like_the_simulator(dep, {k: v for k, v in opts.items() if k != "calib_data"}, x, y,
                                               tmp_path / "c")
    assert (tmp_path / "c" / "model.c").read_text().count("tcc_lut_s8(") == 5


def test_arduino_mega_sketch_learns_like_the_simulator(deployed, tmp_path: Path) -> None:
    """The tables in PROGMEM through the port macro: an ATmega2560 build run in simavr."""
    from . import arduino_harness

    if not arduino_harness.available():
        pytest.skip("arduino-builder/simavr/avr-gcc not installed")
    _, dep, _ = deployed
    x = _x((8, 8, 2), 4, 4)
    arduino_harness.assert_sketch_learns_like_the_simulator(dep, x, np.arange(4) % dep.num_classes, tmp_path, 4)


def test_tflm_target_refuses_in_one_line() -> None:
    from tinycc.backends.tflm import TflmBackend
    from tinycc.session import Session

    with pytest.raises(UnsupportedLayerError, match=r"layer 'c1' \(softplus\) cannot be written to TFLite \(no "
                                                    r"TFLite builtin runs softplus in int8") as e:
        build_deployment(graph_from_keras_model(_deep_model()), {"buffer": 4, "calib_data": _x((8, 8, 2), 16)},
                         Session(autoload=False), TflmBackend())
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("act,op", [("softplus", "EXP"), ("softsign", "ABS"), ("selu", "GREATER"), ("mish", "EXP"),
                                    ("exponential", "EXP")])
def test_converter_files_refused_in_one_line(tmp_path: Path, act: str, op: str) -> None:
    """The TFLite converter writes these as chains of EXP/LOG/ABS/DIV/GREATER/SELECT_V2 ops (int8 file included):
    the compile names the first operator tinycc's reader lacks, one line, exit 2."""
    import keras
    from keras import layers as L

    from tinycc.tflite_writer import operator_names

    inp = keras.Input((4, 4, 2))
    m = keras.Model(inp, L.Conv2D(2, 1, activation=act, name="c")(inp))
    data = _convert(m, _x((4, 4, 2), 16))
    assert op in operator_names(data) and act.upper() not in operator_names(data)
    p = tmp_path / f"{act}.tflite"
    p.write_bytes(data)
    r = subprocess.run([sys.executable, "-m", "tinycc.cli", "compile", str(p), "--target", "c", "--inference-only",
                        "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and f"TFLite operator {op} " in r.stderr
    assert not (tmp_path / "out").exists()


def _tail_model(seed: int, stem: bool = False):
    """(A relu stem,) Conv2D + softplus, Conv2D + mish, SELU, GAP, Dense + softsign, Dense + exponential, the logits."""
    import tensorflow as tf

    L = tf.keras.layers
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inp) if stem else inp
    x = L.Conv2D(4, 3, padding="same", activation="softplus", name="c1")(x)
    x = L.Activation("selu", name="se")(L.Conv2D(4, 1, activation="mish", name="c2")(x))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(5, activation="exponential", name="d2")(L.Dense(6, activation="softsign", name="d1")(x))
    m = tf.keras.Model(inp, L.Dense(3, activation="softmax", name="head")(x))
    rng = np.random.default_rng(seed)
    m.set_weights([rng.normal(0, 0.5, w.shape).astype(F32) for w in m.get_weights()])
    return m


@pytest.mark.parametrize("mode", ["blocks", "bias"])
def test_tail_backward_equals_gradient_tape(session, mode: str) -> None:
    """--deep's float tail through all five (tinycc.ir.backprop.act_derivative): its forward equals the interpreter,
    SGD steps on batches of 1, 3 and 7 rows equal TensorFlow's GradientTape + SGD."""
    from .test_backprop import _tail, steps_equal_tape

    m = _tail_model(3)
    t = _tail(session, m, mode)
    assert set(MORE_LUT_KINDS) <= {op.kind for op in t.ops}
    rng = np.random.default_rng(1)
    steps_equal_tape(t, m, mode, rng.normal(0, 1, (7, 6, 6, 3)).astype(F32), rng.integers(0, 3, 7), 0.1)


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is not installed")
def test_c_activation_kernels_equal_reference(tmp_path: Path) -> None:
    """tcc_fp_/tcc_bp_ of the five (ASan/UBSan) against the float interpreter and act_derivative: a few ulps (the
    backward: 1e-6 of dy where mish's two terms cancel)."""
    from tinycc.ir.backprop import act_derivative

    from .test_backprop_c import _arr, _run

    rng = np.random.default_rng(6)
    x = np.concatenate([rng.normal(0, 3, 80), [0, -0.0, 1e-6, -1e-6, 20, -20, 60, -60, 80]]).astype(F32)
    dy = rng.normal(0, 1, x.size).astype(F32)
    n = x.size
    calls = [f"tcc_fp_{a}(x, o, {n})" for a in ACTS] + [f"tcc_bp_{a}_dx(x, dy, o, {n})" for a in ACTS]
    got = _run(tmp_path, _arr("x", x) + _arr("dy", dy) + f"static float o[{n}];\n",
               "".join(f"{c}; out(o, {n});\n" for c in calls))
    for i, a in enumerate(ACTS):
        kind = OpKind(a)
        np.testing.assert_allclose(got[i], lut.FUNCTIONS[a](x), rtol=2e-6, atol=1e-30, err_msg=f"forward {a}")
        want = (dy * act_derivative(kind, x)).astype(F32)  # mish's two terms may cancel: 1e-6 of dy beside
        bad = np.abs(got[len(ACTS) + i] - want) > 2e-6 * np.abs(want) + 1e-6 * np.abs(dy)
        assert not bad.any(), (a, x[bad], got[len(ACTS) + i][bad], want[bad])


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is not installed")
@pytest.mark.parametrize("mode", ["blocks", "bias"])
def test_generated_step_equals_tail(session, tmp_path: Path, mode: str) -> None:
    """The generated C SGD step (tcc_deep_step, ASan/UBSan) equals Tail.sgd_step on batches of 1, 3 and 2 rows,
    parameter by parameter (1e-5, the deep C tests' tolerance), and its logits the tail's forward."""
    from tinycc.backends.c.deep_emit import c_step_problem, emit_step

    from .test_backprop import _tail
    from .test_backprop_c import TOL, _arr, _run

    t = _tail(session, _tail_model(2), mode)
    assert c_step_problem(t) is None
    src = emit_step(t, 3)
    assert all(f"tcc_bp_{a}_dx(" in src for a in ACTS)
    (tmp_path / "step.c").write_text(src)
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (6, 6, 6, 3)).astype(F32)
    y = rng.integers(0, 3, 6)
    per = 6 * 6 * 3
    decls = _arr("xs", x) + "static const int32_t ys[6] = {" + ", ".join(map(str, y)) + '};\n#include "step.c"\n'
    body = (f"int r0 = tcc_deep_step(xs, ys, 1, 0.1f);\nint r1 = tcc_deep_step(xs + {per}, ys + 1, 3, 0.1f);\n"
            f"int r2 = tcc_deep_step(xs + {4 * per}, ys + 4, 2, 0.1f);\nprintf(\"%d %d %d\\n\", r0, r1, r2);\n")
    for k, p in enumerate(t.params.values()):
        body += f"out(tcc_dw{k}, {p.weight.size}); out(tcc_db{k}, {p.bias.size});\n"
    body += "static float z[9];\ntcc_deep_logits(xs, 3, z); out(z, 9);\n"
    for s, e in ((0, 1), (1, 4), (4, 6)):
        assert t.sgd_step(x[s:e], y[s:e], 0.1)
    got = _run(tmp_path, decls, body)
    assert list(got[0]) == [1, 1, 1]
    for k, p in enumerate(t.params.values()):
        np.testing.assert_allclose(got[1 + 2 * k], p.weight.reshape(-1), atol=TOL, rtol=TOL)
        np.testing.assert_allclose(got[2 + 2 * k], p.bias, atol=TOL, rtol=TOL)
    np.testing.assert_allclose(got[-1], t.forward(x[:3])[t.logits].reshape(-1), atol=TOL, rtol=TOL)


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is not installed")
@pytest.mark.parametrize("mode", ["bias", "blocks"])
def test_deep_project_learns_as_the_simulator(session, tmp_path: Path, mode: str) -> None:
    """`--deep bias|blocks` after the stem (the int8 region: the five as tables): the C project's demo (host
    ASan/UBSan) learns as the simulator (bias: the int32 biases bit for bit; blocks: the float region to 1e-5)."""
    from tinycc.backends.c import CBackend
    from tinycc.deploy import build_deep_deployment
    from tinycc.ir.deep import DeepLearner
    from tinycc.passes import PassContext, run_pipeline

    from .deploy_util import make_config

    g = graph_from_keras_model(_tail_model(0, stem=True))
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    calib = np.random.default_rng(0).uniform(-1, 1, (32, 6, 6, 3)).astype(F32)
    cfg = make_config(session, deep=(mode,), deep_cut="stem", lr=0.05, buffer=3, batch_size=2, epochs=2)
    dep = build_deep_deployment(g, cfg, session, CBackend(), calib)
    sim = DeepLearner(dep, dep.meta["deep"]["cut"], mode, capacity=dep.buffer.capacity)
    assert set(MORE_LUT_KINDS) <= {op.kind for op in sim.region.ops}
    rng = np.random.default_rng(11)
    x, y = rng.uniform(-1, 1, (6, 6, 6, 3)).astype(F32), rng.integers(0, dep.num_classes, 6)
    out, q = c_harness.run_deep_demo(dep, sim, tmp_path, x, y, "host")
    for i in range(9):
        sim.learn_input(x[i % 6], int(y[i % 6]))
        assert not sim.last_refused
    c_harness.check_learned(out, sim, dep, q, sim.region_params, mode)


def test_tinycc_ops_and_keras_export(session) -> None:
    """`tinycc ops` lists the activations (Keras frontend, int8, c backend, not tflm); pruning's Keras export
    gives the same ops back."""
    from tinycc.plugins.applications.ops_list import sections
    from tinycc.plugins.passes.keras_export import graph_to_keras

    got = sections(session.registry)

    def find(prefix: str) -> set[str]:
        return next(set(names) for title, _, names in got if title.startswith(prefix))
    assert set(ACTS) <= next(set(n) for t, _, n in got if t.startswith("keras frontend") and "activations" in t)
    assert set(ACTS) <= find("int8 quantization") and set(ACTS) <= find("c backend")
    assert not set(ACTS) & {n.lower() for n in find("tflm backend")}
    g = graph_from_keras_model(_small("mish"))
    km = graph_to_keras(g)
    x = _x((6, 6, 2), 4)
    np.testing.assert_allclose(np.asarray(km(x)), run(g, x)[g.outputs[0]], rtol=1e-6, atol=1e-6)
    assert [o.kind for o in graph_from_keras_model(km).ops] == [o.kind for o in g.ops]
