"""Softplus, softsign, SELU, mish and exponential (Keras ``activation=`` names, fused into Conv2D/Dense or as
``Activation`` layers): float IR against Keras (legacy .h5, keras_direct .keras and in-memory models); int8 as a
256-entry table from the float function on tinycc's calibrated parameters (``ir/lut.py``, ELU/GELU's rounding
rule) against Keras's own float32 functions; the C kernel ``tcc_lut_s8`` (ASan/UBSan) against run_int8; a C project
learning like the simulator; an Arduino Mega sketch in simavr. Refusals, one line each: the ``tflm`` target (no
TFLite builtin runs them in int8), the converter's .tflite files (EXP/LOG/ABS/GREATER... chains tinycc's reader does
not read), and ``--deep`` with one of them in the trainable tail (no backward pass)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinycc.errors import TinyccError, UnsupportedLayerError
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


def test_deep_tail_refuses_them(tmp_path: Path) -> None:
    """--deep: no backward pass for these; a cut before one is refused naming it, the automatic cut lies after it."""
    import keras
    from keras import layers as L

    from tinycc.backends.c import CBackend
    from tinycc.deploy import build_deep_deployment
    from tinycc.session import Session

    from .deploy_util import make_config

    keras.utils.set_random_seed(5)
    inp = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 3, name="c1")(inp)
    x = L.Conv2D(4, 1, activation="selu", name="c2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(L.Conv2D(4, 1, activation="relu", name="c3")(x))
    m = keras.Model(inp, L.Dense(3, name="head")(x))
    session = Session(autoload=False)
    calib = _x((6, 6, 2), 16)

    def deploy(**kw):
        cfg = make_config(session, deep=("bias",), lr=0.05, buffer=2, **kw)
        return build_deep_deployment(graph_from_keras_model(m), cfg, session, CBackend(), calib)
    with pytest.raises(TinyccError, match=r"--deep-cut 'c1': .*c2_act.*selu.* is not trainable on the device "
                                          r"\(no backward pass\)") as e:
        deploy(deep_cut="c1")
    assert "\n" not in str(e.value)
    dep = deploy()
    assert dep.meta["deep"]["trains"] == ["c3"]


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
