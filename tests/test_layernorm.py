"""Keras LayerNormalization (axis -1) and the int8 ops TFLite's converter writes for it: MEAN over the last axis,
SQUARED_DIFFERENCE, RSQRT (TFLite's integer Newton-Raphson) and NEG (kept in float by the converter).

Oracles: Keras (tinycc's float lowering, 1e-5); TFLite's BUILTIN_REF kernels tensor by tensor on converter files;
BUILTIN_REF and TFLite Micro on random single-op graphs tinycc writes; the C kernels (ASan/UBSan) against run_int8;
compiled c projects learning like the simulator; TFLite Micro running the extractor tinycc writes."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tinycc.errors import UnsupportedLayerError
from tinycc.ir.graph import Graph
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.layernorm import inv_sqrt_multiplier
from tinycc.ir.ops import OpKind
from tinycc.ir.tensor import DType, QuantParams
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model, load_keras_file
from tinycc.plugins.frontends.tflite import read_tflite
from tinycc.tflite_writer import operator_names, write_tflite

from . import c_harness
from .deploy_util import build_deployment
from .op_checks import (assert_builtin_ref_equals_run_int8, assert_c_project_learns_like_the_simulator,
                        assert_output_equals_run_int8, assert_qemu_features_equal_run_int8,
                        assert_tflm_equals_run_int8, assert_written_runs_like_run_int8)
from benchmarks.zoo_models import to_int8_tflite

from .test_layout_ops import _program

litert = pytest.importorskip("ai_edge_litert.interpreter")
CHAIN = ["MEAN", "SQUARED_DIFFERENCE", "RSQRT", "NEG"]


def _set_norm(layer, rng: np.random.Generator) -> None:
    """Non-trivial gamma/beta (as trained ones are)."""
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) if i == 0 and layer.scale else
                       rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for i, w in enumerate(layer.get_weights())])


def _seq_model(center: bool = True, scale: bool = True, eps: float = 1e-3):
    """A tiny keyword transformer block: Dense on [steps, features], LayerNormalization, a Dense head."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(31)
    inp = keras.Input((6, 8))
    x = L.Dense(8, name="proj")(inp)
    ln = L.LayerNormalization(center=center, scale=scale, epsilon=eps, name="ln")
    x = L.Flatten(name="flat")(ln(x))
    m = keras.Model(inp, L.Dense(3, name="head")(x), name="ln_seq")
    _set_norm(ln, np.random.default_rng(5))
    return m


def _conv_model():
    """Conv2D, LayerNormalization over channels (rank 4), ReLU, pooling, a Dense head."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(32)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(12, 3, name="c1")(inp)
    ln = L.LayerNormalization(name="ln")
    x = L.ReLU(name="r")(ln(x))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    m = keras.Model(inp, L.Dense(4, name="head")(x), name="ln_conv")
    _set_norm(ln, np.random.default_rng(6))
    return m


def _x(model, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.5, 1.5, (n,) + tuple(model.inputs[0].shape[1:])).astype(np.float32)


@pytest.fixture(scope="module")
def models() -> dict:
    return {"seq": _seq_model(), "conv": _conv_model()}


@pytest.fixture(scope="module")
def files(models, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("layernorm")
    out = {}
    for name, m in models.items():
        out[name] = d / f"{name}_int8.tflite"
        out[name].write_bytes(to_int8_tflite(m, _x(m, 48)))  # batch 1, as published files are
    return out


def test_float_lowering_equals_keras(models, tmp_path: Path) -> None:
    """The lowered chain in tinycc's float interpreter equals Keras within 1e-5 (both models, center/scale off,
    another epsilon), from the in-memory model and from a saved .keras file."""
    cases = dict(models, plain=_seq_model(False, False, 1e-5), center=_seq_model(True, False))
    for name, m in cases.items():
        x = _x(m, 40, 1)
        g = graph_from_keras_model(m)
        kinds = [o.kind for o in g.ops]
        assert kinds.count(OpKind.MEAN) == 2 and OpKind.RSQRT in kinds and OpKind.NEG in kinds
        np.testing.assert_allclose(run(g, x)[g.outputs[0]], np.asarray(m(x)), rtol=1e-5, atol=1e-5, err_msg=name)
    path = tmp_path / "seq.keras"
    models["seq"].save(path)
    g = load_keras_file(str(path))
    x = _x(models["seq"], 10, 2)
    np.testing.assert_allclose(run(g, x)[g.outputs[0]], np.asarray(models["seq"](x)), rtol=1e-5, atol=1e-5)


def test_float_converter_file_equals_keras(models, tmp_path: Path) -> None:
    """The converter's float file (float MEAN, SQUARED_DIFFERENCE, RSQRT, NEG) read and run: Keras within 1e-5."""
    import tensorflow as tf
    import keras

    m = models["seq"]
    inp = keras.Input(m.inputs[0].shape[1:], batch_size=1)
    p = tmp_path / "seq_float.tflite"
    p.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, m(inp))).convert())
    assert all(c in operator_names(p.read_bytes()) for c in CHAIN)
    g = read_tflite(str(p))
    x = _x(m, 20, 4)
    np.testing.assert_allclose(run(g, x)[g.outputs[0]], np.asarray(m(x)), rtol=1e-5, atol=1e-5)


def test_other_axes_and_rms_scaling_refused_in_one_line() -> None:
    import keras
    from keras import layers as L

    inp = keras.Input((4, 6))
    m = keras.Model(inp, L.LayerNormalization(axis=1, name="ln1")(inp))
    with pytest.raises(UnsupportedLayerError, match=r"'ln1' \(LayerNormalization\) normalises axis \[1\]") as e:
        graph_from_keras_model(m)
    assert "\n" not in str(e.value)
    with pytest.warns(UserWarning):
        rms = L.LayerNormalization(rms_scaling=True, name="ln2")
    with pytest.raises(UnsupportedLayerError, match=r"'ln2' \(LayerNormalization\) uses rms_scaling=True"):
        graph_from_keras_model(keras.Model(inp, rms(inp)))


@pytest.mark.parametrize("name", ["seq", "conv"])
def test_converter_file_bit_exact_with_builtin_ref_and_tflm(models, files, name: str) -> None:
    """The converter's int8 file (MEAN, SQUARED_DIFFERENCE, RSQRT, DEQUANTIZE-NEG-QUANTIZE, ...): every tensor
    BUILTIN_REF shows equals run_int8 on 120 random int8 inputs; TFLite Micro's output too."""
    data = files[name].read_bytes()
    ops = operator_names(data)
    assert all(c in ops for c in CHAIN) and "DEQUANTIZE" in ops
    g = read_tflite(str(files[name]))
    kinds = [o.kind for o in g.ops]
    assert kinds.count(OpKind.MEAN) == 2 and OpKind.DEQUANTIZE not in kinds and OpKind.RSQRT in kinds
    x = np.random.default_rng(2).integers(-128, 128, (120,) + g.tensors[g.inputs[0]].shape[1:]).astype(np.int8)
    names, _ = assert_builtin_ref_equals_run_int8(g, data, x)
    assert len(names) >= 12
    assert_tflm_equals_run_int8(g, data, x[:20])


def _q(rng: np.random.Generator, lo: float = -2.5, hi: float = 0.5) -> tuple[float, int]:
    return float(np.float32(10 ** rng.uniform(lo, hi))), int(rng.integers(-128, 128))


def _shape(rng: np.random.Generator) -> tuple[int, ...]:
    dims = [int(v) for v in rng.integers(1, 6, int(rng.integers(1, 4)))]
    return (1, *dims[:-1], int(rng.integers(1, 40)))


def _single(kind: str, rng: np.random.Generator) -> tuple[Graph, int]:
    """One random int8 graph of ``kind`` and the lowest input value it may take (RSQRT: its zero point)."""
    g = Graph(kind)
    shape = _shape(rng) if kind != "rsqrt" else (1, int(rng.integers(1, 300)))
    qi = _q(rng)
    if kind == "rsqrt":
        qi = (qi[0], int(rng.integers(-128, 100)))
    g.add_input("x", shape, DType.INT8).quant = QuantParams([qi[0]], [qi[1]])
    qo = _q(rng)
    if kind == "mean":
        op = g.add_op("mean", ["x"], "out", output_dtype=DType.INT8)
    elif kind in ("rsqrt", "neg"):
        op = g.add_op(kind, ["x"], "out", output_dtype=DType.INT8)
    else:  # squared difference with the row mean (broadcast), or with a constant (per channel or scalar)
        if rng.random() < 0.5:
            m = g.add_op("mean", ["x"], "m", output_dtype=DType.INT8)
            g.tensors[m.outputs[0]].quant = QuantParams(*([v] for v in _q(rng)))
            other = m.outputs[0]
        else:
            c = shape[-1] if rng.random() < 0.7 else 1
            cshape = (c,) if rng.random() < 0.5 else (1,) * (len(shape) - 1) + (c,)  # the converter's [1, 1, 1, C]
            g.add_const("y", rng.integers(-128, 128, cshape).astype(np.int8), DType.INT8).quant = \
                QuantParams(*([v] for v in _q(rng)))
            other = "y"
        operands = ["x", other] if rng.random() < 0.7 or other != "y" else [other, "x"]
        smax = max(float(g.tensors[t].quant.scale[0]) for t in operands)
        qo = (float(np.float32(smax * smax * 10 ** rng.uniform(0.0, 3.0))), int(rng.integers(-128, 128)))
        op = g.add_op("squared_difference", operands, "out", output_dtype=DType.INT8)
    g.tensors[op.outputs[0]].quant = QuantParams([qo[0]], [qo[1]])
    g.outputs = [op.outputs[0]]
    return g, qi[1] if kind == "rsqrt" else -128


def _inputs(g: Graph, lo: int, n: int, rng: np.random.Generator) -> np.ndarray:
    shape = g.tensors["x"].shape[1:]
    x = rng.integers(lo, 128, (n,) + shape).astype(np.int8)
    x[0] = lo  # the extremes
    x[1] = 127
    return x


@pytest.mark.parametrize("kind", ["mean", "squared_difference", "rsqrt", "neg"])
def test_random_single_op_graphs_bit_exact_with_builtin_ref_and_tflm(kind: str) -> None:
    """80 random graphs of each op (shapes, parameters, broadcasting), 16 inputs each: the file tinycc writes
    runs in BUILTIN_REF exactly like run_int8 ("tflite"), and in TFLite Micro like run_int8 ("tflm")."""
    rng = np.random.default_rng({"mean": 1, "squared_difference": 2, "rsqrt": 3, "neg": 4}[kind])
    for i in range(80):
        g, lo = _single(kind, rng)
        x = _inputs(g, lo, 16, rng)
        data = write_tflite(g)
        names = operator_names(data)
        assert (kind.upper() if kind != "neg" else "NEG") in names
        what = f"{kind} {g.tensors['x'].shape} case {i}"
        assert_output_equals_run_int8(g, data, x, what=what)
        if i % 4 == 0:
            assert_tflm_equals_run_int8(g, data, x[:4])


def test_rsqrt_every_input_value() -> None:
    """RSQRT of every int8 value above the zero point, for 40 parameter pairs (BUILTIN_REF), and facts of the
    integer inverse square root (1/sqrt(v) within 1e-5 relative for v = 2..255)."""
    rng = np.random.default_rng(9)
    for _ in range(40):
        g = Graph("rsqrt")
        zp = int(rng.integers(-128, 120))
        g.add_input("x", (1, 127 - zp + 1), DType.INT8).quant = QuantParams([_q(rng)[0]], [zp])
        op = g.add_op("rsqrt", ["x"], "out", output_dtype=DType.INT8)
        g.tensors[op.outputs[0]].quant = QuantParams(*([v] for v in _q(rng, -3.0, 0.0)))
        g.outputs = [op.outputs[0]]
        assert_output_equals_run_int8(g, write_tflite(g), np.arange(zp, 128, dtype=np.int8)[None])
    for v in range(2, 256):
        m, e = inv_sqrt_multiplier(v)
        assert abs(m * 2.0 ** (e - 31) * np.sqrt(v) - 1) < 1e-5


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is not installed")
def test_c_kernels_equal_run_int8(tmp_path: Path) -> None:
    """The C kernels (-Wall -Wextra -Werror, ASan/UBSan) equal run_int8 on 160 random graphs."""
    rng = np.random.default_rng(2040)
    cases = []
    for i in range(160):
        g, lo = _single(("mean", "squared_difference", "rsqrt", "neg")[i % 4], rng)
        x = _inputs(g, lo, 2, rng)  # cases 8k and 8k+1: all lowest and all highest values
        cases.append((g, {"x": x[i % 8:i % 8 + 1] if i % 8 < 2 else
                          rng.integers(lo, 128, g.tensors["x"].shape).astype(np.int8)}))
    src, want = _program(cases)
    assert "tcc_sqdiff_s8" in src and "tcc_mean_last_s8" in src and "tcc_lut_s8" in src
    assert c_harness.run_runtime_program(src, tmp_path, "layernorm_test") == want


def _deploy(session, graph: Graph, backend, **extra):
    opts = {"buffer": 6, "lr": 0.05, **extra}
    return build_deployment(graph, opts, session, backend), opts


@pytest.mark.parametrize("name", ["seq", "conv"])
def test_converter_file_compiles_for_c(session, models, files, tmp_path: Path, name: str) -> None:
    """Host build with ASan/UBSan: features equal run_int8, learning equals the simulator."""
    from tinycc.backends.c import CBackend

    dep, opts = _deploy(session, read_tflite(str(files[name])), CBackend())
    CBackend().check(dep)
    assert [o.kind for o in dep.extractor.ops].count(OpKind.MEAN) == 2
    x = _x(models[name], 8, 3)
    y = np.arange(8) % dep.num_classes
    assert_c_project_learns_like_the_simulator(dep, opts, x, y, tmp_path / "c")
    text = (tmp_path / "c" / "model.c").read_text()
    assert "tcc_sqdiff_s8" in text and "tcc_mean_last_s8" in text


@pytest.mark.parametrize("name", ["seq", "conv"])
def test_keras_model_compiles_for_c(session, models, tmp_path: Path, name: str) -> None:
    """tinycc's own quantization of the lowered layer: int8 features near the float ones, and the C project
    (ASan/UBSan) learns like the simulator."""
    from tinycc.backends.c import CBackend

    m = models[name]
    dep, opts = _deploy(session, graph_from_keras_model(m), CBackend(), calib_data=_x(m, 64, 7))
    kinds = [o.kind for o in dep.extractor.ops]
    assert kinds.count(OpKind.MEAN) == 2 and OpKind.SQUARED_DIFFERENCE in kinds and OpKind.RSQRT in kinds
    x = _x(m, 8, 3)
    y = np.arange(8) % dep.num_classes
    assert_c_project_learns_like_the_simulator(dep, opts, x, y, tmp_path / "c")


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_cortex_m4_qemu_features_equal_run_int8(session, models, files, tmp_path: Path) -> None:
    """The converter's conv file built for a Cortex-M4 (-Werror) under QEMU: features equal run_int8."""
    from tinycc.backends.c import CBackend

    dep, opts = _deploy(session, read_tflite(str(files["conv"])), CBackend())
    assert_qemu_features_equal_run_int8(dep, opts, _x(models["conv"], 3, 3), tmp_path / "m4")


def test_tinycc_quantized_model_runs_in_builtin_ref_and_tflm(session, models) -> None:
    """tinycc's own int8 graph written as .tflite (NEG as DEQUANTIZE-NEG-QUANTIZE): every int8 activation in
    BUILTIN_REF equals run_int8, TFLite Micro's output too, and both stay near the float graph."""
    for name in ("seq", "conv"):
        m = models[name]
        g = graph_from_keras_model(m)
        run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
        fg = g.copy()
        run_pipeline(g, session.registry.pipeline("int8"), PassContext(session=session, calib=_x(m, 64, 7)))
        data = write_tflite(g)
        assert all(c in operator_names(data) for c in CHAIN)
        assert_written_runs_like_run_int8(g, data, _x(m, 20, 9), fg)


def test_tflm_target_compiles_the_converter_file(session, files) -> None:
    from tinycc.backends.tflm import TflmBackend, extractor_tflite
    from tinycc.backends.tflm.measure import measure_arena

    dep = _deploy(session, read_tflite(str(files["seq"])), TflmBackend())[0]
    TflmBackend().check(dep)
    data = extractor_tflite(dep.extractor)
    assert all(c in operator_names(data) for c in CHAIN)
    x = np.random.default_rng(4).normal(0.5, 1.5, (6, 6, 8)).astype(np.float32)
    assert_tflm_equals_run_int8(dep.extractor, data, x, measure_arena(data).arena)


def test_cli_refuses_other_axes_in_one_line(tmp_path: Path) -> None:
    """`tinycc inspect` of a LayerNormalization over axis 1: one line on stderr naming the layer, exit 2."""
    import keras

    from .test_messages_ops import _cli

    inp = keras.Input((4, 6))
    p = tmp_path / "ln_axis1.keras"
    keras.Model(inp, keras.layers.LayerNormalization(axis=1, name="ln_time")(inp)).save(p)
    r = _cli("inspect", str(p))
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1, err
    assert "'ln_time' (LayerNormalization) normalises axis [1]" in err
