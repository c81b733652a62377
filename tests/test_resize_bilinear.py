"""RESIZE_BILINEAR (Keras UpSampling2D / Resizing with interpolation="bilinear", TFLite RESIZE_BILINEAR) end to end:
the float interpreter equals Keras and TFLite's float reference kernel; run_int8 is bit-exact with TFLite's
BUILTIN_REF integer kernel (converter files and random single-op graphs of both flag combinations, up- and
down-sizing, odd sizes) and with TFLite Micro on the written file; the C kernel (ASan/UBSan) equals run_int8; the
quantizer shares the input's parameters; the tflm backend writes and resolves the operator."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c.emitter import c_kernel_problem
from tinycc.errors import UnsupportedLayerError
from tinycc.ir.graph import Graph, IRError
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.ops import OpKind
from tinycc.ir.resize_bilinear import int_positions, scale_10
from tinycc.ir.tensor import DType, QuantParams
from tinycc.memory import INPLACE_KINDS, plan
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model
from tinycc.plugins.frontends.tflite import read_tflite
from tinycc.tflite_writer import operator_names, write_tflite

from . import c_harness
from .test_layout_ops import _convert
from .op_checks import (assert_builtin_ref_equals_run_int8, assert_output_equals_run_int8,
                        assert_tflm_equals_run_int8, assert_written_runs_like_run_int8, interpreter)

litert = pytest.importorskip("ai_edge_litert.interpreter")
BL = OpKind.RESIZE_BILINEAR


def _resize_only():
    """Bilinear up (x2, x3), to an odd size, and down: data movement only (no rounding of weights)."""
    import keras
    from keras import layers as L

    inp = keras.Input((5, 4, 3))
    x = L.UpSampling2D((2, 3), interpolation="bilinear", name="up")(inp)
    x = L.Resizing(7, 9, interpolation="bilinear", name="odd")(x)
    out = L.Resizing(4, 3, interpolation="bilinear", name="down")(x)
    return keras.Model(inp, out, name="resize_only")


def _decoder():
    """A small decoder-style model: convolutions around bilinear upsampling and a bilinear Resizing."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(6)
    inp = keras.Input((6, 5, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    x = L.UpSampling2D(2, interpolation="bilinear", name="up")(x)
    x = L.Conv2D(5, 3, padding="same", name="c2")(x)
    x = L.Resizing(9, 7, interpolation="bilinear", name="rs")(x)
    x = L.Conv2D(6, 3, strides=2, activation="relu", name="c3")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(3, name="head")(x), name="decoder")


@pytest.fixture(scope="module")
def models() -> dict:
    return {"resize_only": _resize_only(), "decoder": _decoder()}


def _x(model, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(1.0, 2.0, (n,) + tuple(model.inputs[0].shape[1:])).astype(np.float32)


def _read(tmp_path: Path, data: bytes, name: str) -> Graph:
    p = tmp_path / name
    p.write_bytes(data)
    return read_tflite(str(p))


def test_float_equals_keras_and_tflite_reference(models, tmp_path: Path) -> None:
    """Keras frontend == Keras (1e-6 on the resize-only model); the converter's float file (RESIZE_BILINEAR with
    half_pixel_centers, as Keras 3's TF resize) imports, and tinycc's float kernel equals TFLite's float reference
    kernel exactly and the optimized one within 1e-6."""
    for name, m in models.items():
        x = _x(m, 12)
        want = np.asarray(m(x))
        g = graph_from_keras_model(m)
        ops = [o for o in g.ops if o.kind == BL]
        assert len(ops) == (3 if name == "resize_only" else 2)
        assert all(o.attrs["half_pixel_centers"] and not o.attrs["align_corners"] for o in ops)
        tol = 1e-6 if name == "resize_only" else 1e-5
        np.testing.assert_allclose(run(g, x)[g.outputs[0]], want, rtol=tol, atol=tol)
        data = _convert(m, None)
        assert "RESIZE_BILINEAR" in operator_names(data)
        gf = _read(tmp_path, data, f"{name}_float.tflite")
        assert [o.attrs["half_pixel_centers"] for o in gf.ops if o.kind == BL] == [True] * len(ops)
        ours = run(gf, x)[gf.outputs[0]]
        np.testing.assert_allclose(ours, want, rtol=tol, atol=tol)
        if name == "resize_only":
            for ref, exact in ((True, True), (False, False)):
                it = interpreter(data, ref)
                for i in range(len(x)):
                    it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1])
                    it.invoke()
                    got = it.get_tensor(it.get_output_details()[0]["index"])
                    np.testing.assert_allclose(got, ours[i:i + 1], rtol=0 if exact else 1e-6, atol=0 if exact else 1e-6)


@pytest.mark.parametrize("name", ["resize_only", "decoder"])
def test_converter_int8_bit_exact_with_builtin_ref_and_tflm(models, tmp_path: Path, name: str) -> None:
    m = models[name]
    data = _convert(m, _x(m, 32))
    assert "RESIZE_BILINEAR" in operator_names(data)
    g = _read(tmp_path, data, f"{name}_int8.tflite")
    assert [o.kind for o in g.ops].count(BL) == (3 if name == "resize_only" else 2)
    x = np.random.default_rng(1).integers(-128, 128, (40,) + g.tensors[g.inputs[0]].shape[1:]).astype(np.int8)
    names, _ = assert_builtin_ref_equals_run_int8(g, data, x)
    assert len(names) >= 3
    assert_tflm_equals_run_int8(g, data, x)


def _q(rng: np.random.Generator) -> tuple[float, int]:
    return float(np.float32(10 ** rng.uniform(-2.5, 0.5))), int(rng.integers(-128, 128))


def _case(rng: np.random.Generator, flags: tuple[bool, bool] | None = None) -> Graph:
    """One int8 bilinear resize of random sizes (1..9 in, 1..17 out: up, down, odd), parameters and flags."""
    ih, iw, c = int(rng.integers(1, 10)), int(rng.integers(1, 10)), int(rng.integers(1, 6))
    size = (int(rng.integers(1, 18)), int(rng.integers(1, 18)))
    ac, hp = flags if flags is not None else [(False, False), (True, False), (False, True)][int(rng.integers(0, 3))]
    g = Graph("bilinear")
    q = _q(rng)
    g.add_input("x", (1, ih, iw, c), DType.INT8).quant = QuantParams([q[0]], [q[1]])
    op = g.add_op("resize_bilinear", ["x"], "out", {"size": size, "align_corners": ac, "half_pixel_centers": hp},
                  output_dtype=DType.INT8)
    g.tensors[op.outputs[0]].quant = QuantParams([q[0]], [q[1]])
    g.outputs = [op.outputs[0]]
    return g


def test_random_single_op_graphs_bit_exact_with_builtin_ref_and_tflm() -> None:
    """150 random graphs (every flag combination TFLite allows), 24 inputs each: the file tinycc writes runs in
    BUILTIN_REF and in TFLite Micro exactly like run_int8."""
    rng = np.random.default_rng(2031)
    seen = set()
    for i in range(150):
        g = _case(rng, [(False, False), (True, False), (False, True)][i % 3])
        a = g.ops[0].attrs
        x = rng.integers(-128, 128, (24,) + g.tensors["x"].shape[1:]).astype(np.int8)
        data = write_tflite(g)
        assert operator_names(data) == ["RESIZE_BILINEAR"]
        assert_output_equals_run_int8(g, data, x, what=f"{g.tensors['x'].shape} -> {a}")
        assert_tflm_equals_run_int8(g, data, x[:6])
        ih, iw = g.tensors["x"].shape[1:3]
        seen.add(("up" if a["size"][0] > ih else "down" if a["size"][0] < ih else "same", a["align_corners"],
                  a["half_pixel_centers"]))
    assert {s[0] for s in seen} == {"up", "down", "same"} and len(seen) >= 8


def test_int8_arithmetic_facts() -> None:
    """TFLite's integer form: the scale rounded to 1/1024, weights of the two neighbours summing to 1024, the
    half-pixel start left of the first centre (negative weight on a doubled row), exact copies at the corners."""
    assert scale_10(4, 2, False) == 512 and scale_10(3, 5, False) == 1707 and scale_10(5, 3, True) == 512
    lo, hi, w = int_positions(4, 2, False, True)  # positions -0.25, 0.25, 0.75, 1.25 (in 1/1024)
    np.testing.assert_array_equal(lo, [0, 0, 0, 1])
    np.testing.assert_array_equal(hi, [0, 1, 1, 1])
    np.testing.assert_array_equal(w, [-256, 256, 768, 256])
    x = np.array([-128, 127, 5, -6], np.int8).reshape(1, 2, 2, 1)
    g = Graph("facts")
    g.add_input("x", (1, 2, 2, 1), DType.INT8).quant = QuantParams([0.1], [3])
    op = g.add_op("resize_bilinear", ["x"], "out", {"size": (3, 3), "align_corners": True,
                                                     "half_pixel_centers": False}, output_dtype=DType.INT8)
    g.tensors[op.outputs[0]].quant = QuantParams([0.1], [3])
    g.outputs = [op.outputs[0]]
    y = run_int8(g, {"x": x})["out"].reshape(3, 3)
    assert y[0, 0] == -128 and y[0, 2] == 127 and y[2, 0] == 5 and y[2, 2] == -6
    # midpoints of raw values: -0.5, -0.5, -61.5 and -0.5 round half away from zero, 60.5 up
    assert (y[0, 1], y[1, 1], y[1, 0], y[2, 1], y[1, 2]) == (-1, -1, -62, -1, 61)


def test_overshooting_integer_scale_is_refused() -> None:
    """1 row to 55: the rounded scale 19/1024 puts the last lower row at 1 (TFLite's kernel reads past the input):
    run_int8 and the C backend refuse it with one line; the float kernel runs."""
    g = Graph("over")
    g.add_input("x", (1, 1, 2, 1), DType.INT8).quant = QuantParams([0.1], [0])
    op = g.add_op("resize_bilinear", ["x"], "out", {"size": (55, 2)}, output_dtype=DType.INT8)
    g.tensors[op.outputs[0]].quant = QuantParams([0.1], [0])
    g.outputs = [op.outputs[0]]
    with pytest.raises(IRError, match="reads past the input"):
        run_int8(g, {"x": np.zeros((1, 1, 2, 1), np.int8)})
    assert "reads past the input" in c_kernel_problem(g, op)
    assert run(g, np.ones((1, 1, 2, 1), np.float32))["out"].shape == (1, 55, 2, 1)
    with pytest.raises(Exception, match="align_corners and half_pixel_centers"):
        g.add_op("resize_bilinear", ["x"], "both", {"size": (2, 2), "align_corners": True,
                                                     "half_pixel_centers": True})


def test_keras_refuses_other_interpolations_in_one_line() -> None:
    import keras
    from keras import layers as L

    inp = keras.Input((4, 4, 2))
    for layer in (L.UpSampling2D(2, interpolation="bicubic", name="u"),
                  L.Resizing(6, 6, interpolation="bilinear", crop_to_aspect_ratio=True, name="r")):
        with pytest.raises(UnsupportedLayerError) as e:
            graph_from_keras_model(keras.Model(inp, layer(inp)))
        assert "\n" not in str(e.value) and "bilinear" in str(e.value)


def _program(cases: list[tuple[Graph, np.ndarray]]) -> tuple[str, list[str]]:
    """One C program running the emitter's calls (flash position tables included) for every case (the layout ops'
    program builder); each case is one bilinear call, never written over its input."""
    from tinycc.backends.c.emitter import _Builder

    from .test_c_kernels import _generic
    from .test_layout_ops import _program as program

    for g, _ in cases:
        with c_harness.listed_tables():
            em = _Builder(_generic(g)).build()
        assert [c.fn for c in em.calls] == ["tcc_resize_bilinear_s8"]
        assert g.outputs[0] not in em.plan.inplace and not em.plan.overlaps
    return program([(g, {"x": x}) for g, x in cases])


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is not installed")
def test_c_kernel_equals_run_int8(tmp_path: Path) -> None:
    """150 random graphs, extreme inputs included (-Wall -Wextra -Werror, ASan/UBSan)."""
    rng = np.random.default_rng(2032)
    cases = []
    for i in range(150):
        g = _case(rng)
        shape = g.tensors["x"].shape
        x = rng.integers(-128, 128, shape).astype(np.int8) if i % 10 else \
            np.full(shape, -128 if i % 20 else 127, np.int8)
        cases.append((g, x))
    src, want = _program(cases)
    got = c_harness.run_runtime_program(src, tmp_path, "bilinear_test")
    assert len(got) == len(want)
    for line, ref, (g, _) in zip(got, want, cases):
        assert line == ref, f"{g.tensors['x'].shape}: {g.ops[0].attrs}"


def test_memory_plan_never_writes_in_place() -> None:
    """Neither in place nor overlapping: the C backend declares no overlap for it and the planner keeps its output
    and input apart (each output element reads up to four input elements anywhere before or after it)."""
    from tinycc.backends.c.overlap import c_overlaps

    g = _case(np.random.default_rng(5), (False, True))
    assert BL not in INPLACE_KINDS
    overlap = c_overlaps(g, "tinycc")
    assert "out" not in overlap
    p = plan(g, "best", inplace=True, overlap=overlap)
    assert "out" not in p.inplace and not p.overlaps
    assert p.offsets["out"] + g.tensors["out"].size <= p.offsets["x"] or \
        p.offsets["x"] + g.tensors["x"].size <= p.offsets["out"]


def test_tinycc_int8_shares_parameters_and_written_file_runs_bit_exact(session, models) -> None:
    """tinycc's own int8 quantization: RESIZE_BILINEAR keeps its input's parameters (TFLite's int8 spec), the
    written file runs in BUILTIN_REF and TFLite Micro like run_int8 and near the float graph."""
    pytest.importorskip("tflite_micro")
    m = models["decoder"]
    g = graph_from_keras_model(m)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    fg = g.copy()
    run_pipeline(g, session.registry.pipeline("int8"), PassContext(session=session, calib=_x(m, 64, 7)))
    ops = [o for o in g.ops if o.kind == BL]
    assert len(ops) == 2
    for o in ops:
        assert g.tensors[o.inputs[0]].dtype == DType.INT8
        assert g.tensors[o.inputs[0]].quant.equals(g.tensors[o.outputs[0]].quant)
    data = write_tflite(g)
    assert write_tflite(g) == data and "RESIZE_BILINEAR" in operator_names(data)
    assert_written_runs_like_run_int8(g, data, _x(m, 30, 9), fg)


def test_compiles_for_c_and_tflm(session, models, tmp_path: Path) -> None:
    """The decoder through compile: the C project (ASan/UBSan) computes run_int8's features and learns like the
    simulator; the tflm backend's extractor file has RESIZE_BILINEAR, its resolver AddResizeBilinear, and TFLite
    Micro runs it like run_int8."""
    pytest.importorskip("tflite_micro")
    from tinycc.backends.c import CBackend
    from tinycc.backends.tflm import RESOLVER, TflmBackend, extractor_tflite

    from .deploy_util import build_deployment
    from .op_checks import assert_c_project_learns_like_the_simulator

    m = models["decoder"]
    opts = {"buffer": 6, "lr": 0.05, "calib_data": _x(m, 48, 11)}

    def graph():
        g = graph_from_keras_model(m)
        run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
        return g
    dep = build_deployment(graph(), opts, session, CBackend())
    CBackend().check(dep)
    assert BL in {o.kind for o in dep.extractor.ops}
    x = _x(m, 8, 3)
    assert_c_project_learns_like_the_simulator(dep, opts, x, np.arange(8) % dep.num_classes, tmp_path / "c")
    dep = build_deployment(graph(), opts, session, TflmBackend())
    TflmBackend().check(dep)
    data = extractor_tflite(dep.extractor)
    assert "RESIZE_BILINEAR" in operator_names(data) and RESOLVER["RESIZE_BILINEAR"] == "AddResizeBilinear"
    assert_tflm_equals_run_int8(dep.extractor, data, x)
    TflmBackend().emit(dep, tmp_path / "tflm")
    glue = next((tmp_path / "tflm").rglob("tinycc_tflm.cc")).read_text()
    listed = re.findall(r"resolver->(Add\w+)\(\)", glue)
    assert "AddResizeBilinear" in listed


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_cortex_m4_qemu_features_equal_run_int8(session, models, tmp_path: Path) -> None:
    from tinycc.backends.c import CBackend

    from .deploy_util import build_deployment
    from .op_checks import assert_qemu_features_equal_run_int8

    m = models["decoder"]
    opts = {"buffer": 6, "lr": 0.05, "calib_data": _x(m, 48, 11)}
    g = graph_from_keras_model(m)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    dep = build_deployment(g, opts, session, CBackend())
    assert BL in {o.kind for o in dep.extractor.ops}
    dev = assert_qemu_features_equal_run_int8(dep, opts, _x(m, 4, 3), tmp_path / "m4")
    assert dev.instructions["features"] > 0


def test_channels_pass_through_and_prune_like_masking(session, models) -> None:
    """A bilinear resize keeps each channel to itself: removing a unit whose channels cross it equals zeroing the
    unit's filters."""
    from tinycc.ir.channels import analyse, remove
    from tinycc.ir.stats import totals

    m = models["decoder"]
    g = graph_from_keras_model(m)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    units = analyse(g)
    outs = {o.outputs[0] for o in g.ops if o.kind == BL}
    touched = [u for u in units if u.prunable and any(t in outs for t, _ in u.positions)]
    assert len(touched) >= 2
    gone: dict[str, set[int]] = {}
    for t, c in touched[0].positions:
        gone.setdefault(t, set()).add(c)
    ref = g.copy()
    for op in ref.ops:
        if op.kind == OpKind.CONV2D and op.outputs[0] in gone:
            for i in (1, 2):
                d = ref.tensors[op.inputs[i]].data.copy()
                d[sorted(gone[op.outputs[0]])] = 0
                ref.tensors[op.inputs[i]].data = d
    pruned = g.copy()
    remove(pruned, units, [units.index(touched[0])])
    x = _x(m, 6, 5)
    np.testing.assert_allclose(run(pruned, x)[pruned.outputs[0]], run(ref, x)[ref.outputs[0]], atol=1e-5)
    assert totals(pruned)["params"] < totals(g)["params"]


def test_every_small_size_pair_bit_exact_with_builtin_ref() -> None:
    """Every input height 1..8 to every output height 1..20 (columns 3 -> 5), each flag combination: BUILTIN_REF
    runs the written file exactly like run_int8 (rounded scales, clamped edges, odd ratios)."""
    rng = np.random.default_rng(2033)
    n = 0
    for ih in range(1, 9):
        for oh in range(1, 21):
            for ac, hp in ((False, False), (True, False), (False, True)):
                g = Graph("sweep")
                g.add_input("x", (1, ih, 3, 2), DType.INT8).quant = QuantParams([0.05], [-7])
                op = g.add_op("resize_bilinear", ["x"], "out", {"size": (oh, 5), "align_corners": ac,
                                                                 "half_pixel_centers": hp}, output_dtype=DType.INT8)
                g.tensors[op.outputs[0]].quant = QuantParams([0.05], [-7])
                g.outputs = [op.outputs[0]]
                x = rng.integers(-128, 128, (3, ih, 3, 2)).astype(np.int8)
                assert_output_equals_run_int8(g, write_tflite(g), x, what=f"{ih} -> {oh} {ac} {hp}")
                n += 1
    assert n == 480
