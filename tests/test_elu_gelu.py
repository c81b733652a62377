"""ELU and GELU (Keras ``activation="elu"/"gelu"``, ``layers.ELU``, ``Activation``; TFLite ELU/GELU) through every
layer. TFLite runs both in int8 as a 256-entry table computed from the float function at Prepare time; tinycc
computes the same table at compile time (``ir/lut.py``). Oracles: every int8 input value of converter-made and
tinycc-written files against BUILTIN_REF (GELU; BUILTIN_REF has no ELU kernel, so ELU goes against the builtin
kernels, which on a data-only file are the reference arithmetic) and TFLite Micro (ELU; it has no GELU kernel);
whole converter models (convolutions included) bit-exact with BUILTIN_REF (GELU) and TFLite Micro (ELU); the C
kernel (ASan/UBSan) against run_int8; compiled projects for c, tflm, arduino and a QEMU Cortex-M4 first vector."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinycc.errors import UnsupportedLayerError
from tinycc.ir.graph import Graph
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.ops import OpKind
from tinycc.ir.tensor import DType, QuantParams
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model, load_keras_file
from tinycc.plugins.frontends.tflite import read_tflite
from tinycc.tflite_writer import operator_names, write_tflite

from . import c_harness
from .deploy_util import build_deployment
from .op_checks import (assert_builtin_ref_equals_run_int8, assert_c_project_learns_like_the_simulator,
                        assert_qemu_features_equal_run_int8, assert_tflm_equals_run_int8,
                        interpreter as _interp)
from .test_layout_ops import _convert, _program, _q, _x

litert = pytest.importorskip("ai_edge_litert.interpreter")
ALL = np.arange(-128, 128, dtype=np.int8)[None]


def _elu_model():
    """Conv2D(activation="elu"), a Dense with ELU after it (one float ELU each in the converter's file)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(21)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, activation="elu", name="c1")(inp)
    x = L.Conv2D(6, 3, strides=2, name="c2")(x)
    x = L.ELU(name="elu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(8, activation="elu", name="fc")(x)
    return keras.Model(inp, L.Dense(3, name="head")(x), name="elu_conv")


def _gelu_model():
    """Conv2D(activation="gelu"), Activation("gelu") after a convolution and a Dense (int8 GELU in the file)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(22)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, activation="gelu", name="c1")(inp)
    x = L.Conv2D(6, 3, strides=2, name="c2")(x)
    x = L.Activation("gelu", name="g")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(8, activation="gelu", name="fc")(x)
    return keras.Model(inp, L.Dense(3, name="head")(x), name="gelu_conv")


@pytest.fixture(scope="module")
def models() -> dict:
    return {"elu": _elu_model(), "gelu": _gelu_model()}


@pytest.fixture(scope="module")
def files(models, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("elu_gelu")
    out = {}
    for name, m in models.items():
        out[name] = d / f"{name}_int8.tflite"
        out[name].write_bytes(_convert(m, _x(m, 48)))
    return out


@pytest.mark.parametrize("name", ["elu", "gelu"])
def test_keras_direct_and_float_tflite_equal_keras(models, tmp_path: Path, name: str) -> None:
    m = models[name]
    kind = OpKind.ELU if name == "elu" else OpKind.GELU
    x = _x(m, 16)
    want = np.asarray(m(x))
    g = graph_from_keras_model(m)
    assert [o.kind for o in g.ops].count(kind) == 3
    np.testing.assert_allclose(run(g, x)[g.outputs[0]], want, rtol=1e-5, atol=1e-5)
    path = tmp_path / f"{name}.keras"
    m.save(path)
    direct = load_keras_file(str(path))
    np.testing.assert_array_equal(run(direct, x)[direct.outputs[0]], run(g, x)[g.outputs[0]])
    p = tmp_path / f"{name}_float.tflite"
    p.write_bytes(_convert(m, None))
    gf = read_tflite(str(p))
    assert [o.kind for o in gf.ops].count(kind) == 3
    np.testing.assert_allclose(run(gf, x)[gf.outputs[0]], want, rtol=1e-4, atol=1e-5)


def _single(kind: str, rng: np.random.Generator, float_path: bool = False, approximate: bool = False) -> Graph:
    g = Graph(kind)
    qi, qo = _q(rng), _q(rng)
    g.add_input("x", (1, 256), DType.INT8).quant = QuantParams([qi[0]], [qi[1]])
    attrs = {"float_path": float_path} if kind == "elu" else {"approximate": approximate}
    if kind == "elu" and not float_path and rng.random() < 0.3:  # Keras's ELU(alpha): tinycc's table only
        attrs["alpha"] = 0.5
    op = g.add_op(kind, ["x"], "out", attrs, output_dtype=DType.INT8)
    g.tensors[op.outputs[0]].quant = QuantParams([qo[0]], [qo[1]])
    g.outputs = [op.outputs[0]]
    return g


def _litert_all(data: bytes, ref: bool) -> np.ndarray:
    it = _interp(data, ref)
    it.set_tensor(it.get_input_details()[0]["index"], ALL)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def _tflm_all(data: bytes) -> np.ndarray:
    from tflite_micro.python.tflite_micro import runtime

    tm = runtime.Interpreter.from_bytes(data, arena_size=1 << 16)
    tm.set_input(ALL, 0)
    tm.invoke()
    return tm.get_output(0)


def test_converter_tables_equal_tflite_on_every_input(tmp_path: Path) -> None:
    """Single-layer converter files over inputs of several ranges: all 256 int8 inputs."""
    import keras
    from keras import layers as L

    rng = np.random.default_rng(3)
    layers = {"elu": lambda: L.ELU(), "gelu": lambda: L.Activation("gelu"),
              "gelu_tanh": lambda: L.Activation(lambda t: keras.activations.gelu(t, approximate=True))}
    checked = 0
    for name, make in layers.items():
        for trial in range(3):
            inp = keras.Input((256,))
            m = keras.Model(inp, make()(inp))
            x = (rng.normal(size=(8, 256)) * 10 ** rng.uniform(-1, 1) + rng.uniform(-2, 2)).astype(np.float32)
            data = _convert(m, x)
            p = tmp_path / f"{name}{trial}.tflite"
            p.write_bytes(data)
            g = read_tflite(str(p))
            assert [o.kind for o in g.ops] == [OpKind.ELU if name == "elu" else OpKind.GELU]
            ours = run_int8(g, ALL)[g.outputs[0]]
            if name == "elu":  # the converter's float ELU between DEQUANTIZE and QUANTIZE, folded
                assert {"DEQUANTIZE", "ELU", "QUANTIZE"} <= set(operator_names(data))
                assert g.ops[0].attrs["float_path"]
                np.testing.assert_array_equal(_litert_all(data, ref=False), ours)
                np.testing.assert_array_equal(_tflm_all(data), ours)
            else:
                assert g.ops[0].attrs["approximate"] == (name == "gelu_tanh")
                np.testing.assert_array_equal(_litert_all(data, ref=True), ours)
            assert len(np.unique(ours)) > 40
            checked += 1
    assert checked == 9


def test_keras_elu_alpha(tmp_path: Path) -> None:
    """ELU(alpha) (TFLite's ELU has none): float IR equals Keras, int8 is the table of alpha * expm1."""
    import keras
    from keras import layers as L

    inp = keras.Input((6, 5))
    m = keras.Model(inp, L.ELU(alpha=0.7, name="e")(inp))
    g = graph_from_keras_model(m)
    x = _x(m, 4)
    np.testing.assert_allclose(run(g, x)[g.outputs[0]], np.asarray(m(x)), rtol=1e-6, atol=1e-6)
    assert g.ops[0].attrs["alpha"] == pytest.approx(0.7)


def test_tinycc_written_tables_equal_tflite_on_every_input() -> None:
    """tinycc's own int8 ELU (TFLite's int8 ELU kernel), float-path ELU and GELU (both forms), written to .tflite."""
    rng = np.random.default_rng(4)
    for i in range(24):
        kind = ("elu", "gelu")[i % 2]
        g = _single(kind, rng, float_path=i % 4 == 2, approximate=i % 4 == 3)
        if kind == "elu":
            g.ops[0].attrs["alpha"] = 1.0  # TFLite's ELU has no alpha
        data = write_tflite(g)
        ours = run_int8(g, ALL)[g.outputs[0]]
        if kind == "elu":
            np.testing.assert_array_equal(_litert_all(data, ref=False), ours, err_msg=str(g.ops[0].attrs))
            np.testing.assert_array_equal(_tflm_all(data), ours, err_msg=str(g.ops[0].attrs))
        else:
            assert "GELU" in operator_names(data)
            np.testing.assert_array_equal(_litert_all(data, ref=True), ours, err_msg=str(g.ops[0].attrs))


def test_converter_models_bit_exact(files) -> None:
    """Whole converter models with convolutions: the GELU model against BUILTIN_REF tensor by tensor, the ELU model
    (no BUILTIN_REF ELU kernel) against TFLite Micro."""
    g = read_tflite(str(files["gelu"]))
    assert [o.kind for o in g.ops].count(OpKind.GELU) == 3
    x = np.random.default_rng(1).integers(-128, 128, (60,) + g.tensors[g.inputs[0]].shape[1:]).astype(np.int8)
    names, _ = assert_builtin_ref_equals_run_int8(g, files["gelu"].read_bytes(), x)
    assert all(o.outputs[0] in names for o in g.ops if o.kind == OpKind.GELU)
    g = read_tflite(str(files["elu"]))
    elus = [o for o in g.ops if o.kind == OpKind.ELU]
    assert len(elus) == 3 and all(o.attrs["float_path"] for o in elus)
    assert OpKind.DEQUANTIZE not in [o.kind for o in g.ops[:-1]]
    assert_tflm_equals_run_int8(g, files["elu"].read_bytes(), x)


def test_float_elu_chain_refused_in_one_line(tmp_path: Path) -> None:
    """Two float ELUs in a row between DEQUANTIZE and QUANTIZE (no one table): one line, exit 2."""
    import keras
    from keras import layers as L

    inp = keras.Input((4, 4, 2))
    m = keras.Model(inp, L.ELU()(L.Conv2D(3, 1, activation="elu")(inp)))
    p = tmp_path / "chain.tflite"
    p.write_bytes(_convert(m, _x(m, 16)))
    r = subprocess.run([sys.executable, "-m", "tinycc.cli", "compile", str(p), "--target", "c", "--inference-only",
                        "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "runs in float inside an integer model" in r.stderr


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is not installed")
def test_c_kernel_equals_run_int8(tmp_path: Path) -> None:
    rng = np.random.default_rng(2033)
    cases = []
    for i in range(60):
        g = _single(("elu", "gelu")[i % 2], rng, float_path=i % 4 == 2, approximate=i % 4 == 3)
        cases.append((g, {"x": ALL.copy()}))
    src, want = _program(cases)
    assert c_harness.run_runtime_program(src, tmp_path, "lut_test") == want


def test_tinycc_quantized_model_runs_in_tflm(session, models) -> None:
    """tinycc's own quantization of the ELU model, written (int8 ELU): TFLite Micro equals run_int8."""
    m = models["elu"]
    g = graph_from_keras_model(m)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    fg = g.copy()
    run_pipeline(g, session.registry.pipeline("int8"), PassContext(session=session, calib=_x(m, 64, 7)))
    assert [o.kind for o in g.ops].count(OpKind.ELU) == 3
    data = write_tflite(g)
    assert "ELU" in operator_names(data) and "DEQUANTIZE" not in operator_names(data)[1:-1]
    x = _x(m, 30, 9)
    mine = assert_tflm_equals_run_int8(g, data, x)
    ref = run(fg, x)[fg.outputs[0]]
    assert np.abs(mine - ref).mean() <= 0.05 * np.abs(ref).max() + 1e-3


def test_elu_alpha_not_one_is_not_written(session) -> None:
    g = _single("elu", np.random.default_rng(0))
    g.ops[0].attrs["alpha"] = 0.5
    with pytest.raises(UnsupportedLayerError, match="no alpha"):
        write_tflite(g)


def _deploy(session, path: Path, backend, **extra):
    opts = {"buffer": 6, "lr": 0.05, **extra}
    return build_deployment(read_tflite(str(path)), opts, session, backend), opts


@pytest.mark.parametrize("name", ["elu", "gelu"])
def test_converter_file_compiles_for_c(session, models, files, tmp_path: Path, name: str) -> None:
    """Host build with ASan/UBSan: features equal run_int8, learning equals the simulator."""
    from tinycc.backends.c import CBackend

    dep, opts = _deploy(session, files[name], CBackend())
    CBackend().check(dep)
    kind = OpKind.ELU if name == "elu" else OpKind.GELU
    assert [o.kind for o in dep.extractor.ops].count(kind) >= 2
    x = _x(models[name], 8, 3)
    y = np.arange(8) % dep.num_classes
    assert_c_project_learns_like_the_simulator(dep, opts, x, y, tmp_path / "c")
    assert "tcc_lut_s8" in (tmp_path / "c" / "model.c").read_text()


def test_tflm_target_runs_elu_and_refuses_gelu(session, models, files) -> None:
    from tinycc.backends.tflm import TflmBackend, extractor_tflite
    from tinycc.backends.tflm.measure import measure_arena

    dep = _deploy(session, files["elu"], TflmBackend())[0]
    TflmBackend().check(dep)
    data = extractor_tflite(dep.extractor)
    assert "ELU" in operator_names(data)
    assert_tflm_equals_run_int8(dep.extractor, data, _x(models["elu"], 8, 3), measure_arena(data).arena)
    with pytest.raises(UnsupportedLayerError, match="TFLite Micro has no kernel for GELU"):
        _deploy(session, files["gelu"], TflmBackend())


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_cortex_m4_qemu_features_equal_run_int8(session, models, files, tmp_path: Path) -> None:
    from tinycc.backends.c import CBackend

    dep, opts = _deploy(session, files["gelu"], CBackend())
    x = _x(models["gelu"], 4, 3)
    assert_qemu_features_equal_run_int8(dep, opts, x, tmp_path / "m4")


def test_arduino_mega_selftest_predicts_like_the_simulator(session, models, files, tmp_path: Path) -> None:
    """The tables in PROGMEM, read through the port macro, on an ATmega2560 (simavr)."""
    from tinycc.backends.arduino import ArduinoBackend

    from . import arduino_harness

    if not arduino_harness.available():
        pytest.skip("arduino-builder/simavr/avr-gcc not installed")
    dep, _ = _deploy(session, files["elu"], ArduinoBackend(), board="mega2560", buffer=8)
    x = _x(models["elu"], 8, 3)
    y = np.arange(8) % dep.num_classes
    arduino_harness.assert_sketch_learns_like_the_simulator(dep, x, y, tmp_path, 8)


def test_tinycc_ops_lists_the_new_layers(session) -> None:
    """`tinycc ops`: the Keras layers, the TFLite operators, the IR/int8 kinds, the c and tflm backends."""
    from tinycc.plugins.applications.ops_list import sections

    got = sections(session.registry)

    def find(prefix: str) -> set[str]:  # the first (int8) section of that title
        return next(set(names) for title, _, names in got if title.startswith(prefix))
    assert {"PReLU", "ELU", "SeparableConv1D"} <= find("keras frontend")
    assert {"PRELU", "ELU", "GELU"} <= find("tflite frontend")
    assert {"prelu", "elu", "gelu"} <= find("int8 quantization")
    assert {"prelu", "elu", "gelu"} <= find("c backend")
    tflm = find("tflm backend")
    assert {"PRELU", "ELU"} <= tflm and "GELU" not in tflm


@pytest.mark.parametrize("name", ["elu", "gelu"])
def test_keras_export_round_trip(models, name: str) -> None:
    """Pruning's fine-tuning exports the graph to Keras: ELU/GELU come back as the same ops and outputs."""
    from tinycc.plugins.passes.keras_export import graph_to_keras

    g = graph_from_keras_model(models[name])
    km = graph_to_keras(g)
    x = _x(models[name], 8, 2)
    np.testing.assert_allclose(np.asarray(km(x)), run(g, x)[g.outputs[0]], rtol=1e-5, atol=1e-5)
    back = graph_from_keras_model(km)
    assert [(o.kind, o.attrs) for o in back.ops] == [(o.kind, o.attrs) for o in g.ops]
