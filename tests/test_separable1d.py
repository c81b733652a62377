"""Keras SeparableConv1D, lowered like Conv1D and SeparableConv2D: a depthwise convolution (no bias) and a 1x1
convolution with the layer's bias on [N, 1, steps, C] between channel-keeping reshapes. Float IR equals Keras (read
through Keras and directly, same IR); converter-made int8 files (which write the same two convolutions) run like
BUILTIN_REF tensor by tensor and like TFLite Micro; tinycc's quantization is written and run by both; the C project
(ASan/UBSan) and the tflm target compute run_int8's features."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.ops import OpKind
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model
from tinycc.plugins.frontends.tflite import read_tflite
from tinycc.tflite_writer import write_tflite

from . import c_harness
from .deploy_util import build_deployment, render_project
from .test_keras_direct import _same_ir
from .op_checks import (assert_builtin_ref_equals_run_int8, assert_tflm_equals_run_int8,
                        assert_written_runs_like_run_int8)
from .test_layout_ops import _convert, _x

litert = pytest.importorskip("ai_edge_litert.interpreter")


def _model(dilated: bool):
    """'same' with a fused ReLU, strided with depth multiplier 2, and (``dilated``) dilation 2 without bias."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(31)
    inp = keras.Input((32, 4))
    x = L.SeparableConv1D(8, 5, padding="same", activation="relu", name="s1")(inp)
    x = L.SeparableConv1D(8, 3, strides=2, depth_multiplier=2, name="s2")(x)
    if dilated:
        x = L.SeparableConv1D(6, 3, dilation_rate=2, padding="same", use_bias=False, name="s3")(x)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    x = L.Dense(8, activation="relu", name="fc")(x)
    return keras.Model(inp, L.Dense(3, name="head")(x), name="sep1d_dil" if dilated else "sep1d")


@pytest.fixture(scope="module")
def models() -> dict:
    return {d: _model(d) for d in (False, True)}


@pytest.mark.parametrize("dilated", [False, True])
def test_float_ir_equals_keras_both_readers(models, tmp_path: Path, dilated: bool) -> None:
    m = models[dilated]
    x = _x(m, 16)
    g = graph_from_keras_model(m)
    kinds = [o.kind for o in g.ops]
    assert kinds.count(OpKind.DEPTHWISE_CONV2D) == kinds.count(OpKind.CONV2D) == (3 if dilated else 2)
    np.testing.assert_allclose(run(g, x)[g.outputs[0]], np.asarray(m(x)), rtol=1e-5, atol=1e-5)
    for fmt in ("keras", "h5"):
        p = tmp_path / f"{m.name}.{fmt}"
        m.save(p)
        _same_ir(p)


@pytest.mark.parametrize("dilated", [False, True])
def test_converter_int8_bit_exact(models, tmp_path: Path, dilated: bool) -> None:
    """BUILTIN_REF on every tensor; TFLite Micro on the output where the file has no SPACE_TO_BATCH_ND (for the
    converter's dilated form TFLite Micro differs from BUILTIN_REF itself)."""
    m = models[dilated]
    data = _convert(m, _x(m, 48))
    p = tmp_path / "sep_int8.tflite"
    p.write_bytes(data)
    g = read_tflite(str(p))
    dws = [o for o in g.ops if o.kind == OpKind.DEPTHWISE_CONV2D]
    assert len(dws) == (3 if dilated else 2)
    assert [o.attrs["dilation"] for o in dws][-1] == ((1, 2) if dilated else (1, 1))
    x = np.random.default_rng(1).integers(-128, 128, (60,) + g.tensors[g.inputs[0]].shape[1:]).astype(np.int8)
    names, _ = assert_builtin_ref_equals_run_int8(g, data, x)
    assert len(names) >= 8
    if not dilated:
        assert_tflm_equals_run_int8(g, data, x)


def test_tinycc_int8_written_runs_bit_exact_in_builtin_ref_and_tflm(session, models) -> None:
    m = models[True]
    g = graph_from_keras_model(m)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    fg = g.copy()
    run_pipeline(g, session.registry.pipeline("int8"), PassContext(session=session, calib=_x(m, 64, 7)))
    assert_written_runs_like_run_int8(g, write_tflite(g), _x(m, 30, 9), fg, 1 << 18)


def test_compiles_for_c_and_tflm(session, models, tmp_path: Path) -> None:
    """The Keras model with --calib: C features (ASan/UBSan) and TFLite Micro's extractor equal run_int8."""
    from tinycc.backends.c import CBackend
    from tinycc.backends.tflm import TflmBackend, extractor_tflite
    from tinycc.backends.tflm.measure import measure_arena

    m = models[True]
    opts = {"buffer": 6, "lr": 0.05, "calib_data": _x(m, 48, 11)}

    def graph():
        g = graph_from_keras_model(m)
        run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
        return g
    dep = build_deployment(graph(), opts, session, CBackend())
    assert [o.kind for o in dep.extractor.ops].count(OpKind.DEPTHWISE_CONV2D) == 3
    x = _x(m, 6, 3)
    y = np.arange(6) % dep.num_classes
    render_project(dep, {**opts, "test_vectors": (x, y), "test_count": 6, "test_learn": 0}, tmp_path / "c")
    out = c_harness.run_host(c_harness.build_host(tmp_path / "c", sanitize=True))
    feats = run_int8(dep.extractor, x)[dep.extractor.outputs[0]].reshape(len(x), -1)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"C features of input {i}")
    dep = build_deployment(graph(), opts, session, TflmBackend())
    TflmBackend().check(dep)
    data = extractor_tflite(dep.extractor)
    assert_tflm_equals_run_int8(dep.extractor, data, x, measure_arena(data).arena)
