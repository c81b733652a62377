"""SUB, MAXIMUM, MINIMUM, RESIZE_NEAREST_NEIGHBOR (Keras Subtract/Maximum/Minimum/UpSampling2D/Resizing) and
Keras Normalization through every layer: the Keras and float TFLite frontends equal Keras; converter-made int8 files
import and run bit-exactly like TFLite's reference kernels; tinycc's own int8 quantization writes a .tflite that
BUILTIN_REF and TFLite Micro run bit-exactly like run_int8; the generated C kernels (ASan/UBSan) equal run_int8 on
random parameters and broadcasts; the ops carry channels for pruning; an imported model compiles for c and tflm."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c.emitter import _Builder
from tinycc.ir.channels import analyse, remove
from tinycc.ir.graph import Graph
from tinycc.ir.interpreter import nearest_index, run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.ops import OpKind
from tinycc.ir.stats import totals
from tinycc.ir.tensor import DType, QuantParams
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model
from tinycc.plugins.frontends.tflite import read_tflite
from tinycc.tflite_writer import operator_names, write_tflite

from . import c_harness
from .test_c_kernels import _generic
from .deploy_util import build_deployment
from .op_checks import (assert_builtin_ref_equals_run_int8, assert_c_project_learns_like_the_simulator,
                        assert_output_equals_run_int8, assert_qemu_features_equal_run_int8,
                        assert_tflm_equals_run_int8, assert_written_runs_like_run_int8)

litert = pytest.importorskip("ai_edge_litert.interpreter")
NEW = {OpKind.SUB, OpKind.MAXIMUM, OpKind.MINIMUM, OpKind.RESIZE_NEAREST, OpKind.TRANSPOSE, OpKind.SLICE,
       OpKind.TRANSPOSE_CONV2D}


def _binary_model():
    """Subtract, Maximum, Minimum (with a broadcast [1, 1, C] operand) and a keras.ops subtraction."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(6, 3, padding="same", name="a")(inp)
    b = L.Conv2D(6, 1, name="b")(inp)
    s = L.Subtract(name="sub")([a, b])
    se = L.GlobalAveragePooling2D(keepdims=True, name="gap_se")(b)
    mx = L.Maximum(name="mx")([s, se])
    mn = L.Minimum(name="mn")([mx, a])
    d = keras.ops.subtract(mn, b)
    x = L.Conv2D(5, 3, strides=2, activation="relu", name="c2")(d)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(4, name="head")(x), name="binary_ops")


def _resize_model():
    """Normalization in front, UpSampling2D (repeat) and Resizing to a non-integer ratio (TFLite's nearest)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(4)
    inp = keras.Input((5, 4, 3))
    norm = L.Normalization(name="norm")
    norm.adapt(np.random.default_rng(0).normal(2.0, 3.0, (64, 5, 4, 3)).astype(np.float32))
    x = norm(inp)
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(x)
    x = L.UpSampling2D((2, 3), name="up")(x)
    x = L.Resizing(7, 9, interpolation="nearest", name="rs")(x)
    x = L.Conv2D(6, 3, name="c2")(x)
    x = L.GlobalMaxPooling2D(name="gmp")(x)
    return keras.Model(inp, L.Dense(3, name="head")(x), name="resize_ops")


def _transpose_model():
    """An NCHW input (as exported from PyTorch) made NHWC by Permute, then rows and columns swapped."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(5)
    inp = keras.Input((3, 6, 5))
    x = L.Permute((2, 3, 1), name="to_nhwc")(inp)
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(x)
    x = L.Permute((2, 1, 3), name="swap_hw")(x)
    x = L.Conv2D(6, 3, name="c2")(x)
    x = L.Permute((3, 1, 2), name="to_nchw")(x)
    x = L.Flatten(name="flat")(x)
    return keras.Model(inp, L.Dense(3, name="head")(x), name="transpose_ops")


def _split_model():
    """keras.ops.split into equal channel halves (SPLIT) and unequal row blocks (SPLIT_V); Keras itself has no
    Split layer, so this model is read from the converter's files only."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(6)
    inp = keras.Input((6, 6, 4))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    a, b = keras.ops.split(x, 2, axis=-1)
    a = L.Conv2D(4, 1, name="ca")(a)
    d = L.Subtract(name="diff")([a, b])
    top, bottom = keras.ops.split(L.Conv2D(5, 1, name="cr")(d), [2], axis=1)
    t = L.GlobalAveragePooling2D(name="gt")(L.Conv2D(3, 1, name="ct")(top))
    u = L.GlobalMaxPooling2D(name="gb")(bottom)
    return keras.Model(inp, L.Dense(3, name="head")(L.Concatenate(name="cat")([t, u])), name="split_ops")


def _deconv_model():
    """Conv2DTranspose 'same' with stride 2 and fused ReLU, then 'valid' with unequal strides and kernel."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(8)
    inp = keras.Input((5, 4, 3))
    x = L.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu", name="up")(inp)
    x = L.Conv2DTranspose(3, (2, 3), strides=(1, 2), name="up2")(x)
    x = L.Conv2D(5, 3, strides=2, name="c")(x)
    m = keras.Model(inp, L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(x)), name="deconv_ops")
    for name in ("up", "up2"):
        b = m.get_layer(name).bias
        b.assign(np.random.default_rng(1).normal(0, 0.3, b.shape).astype(np.float32))
    return m


def _crop_model():
    """A decoder step: Conv2DTranspose ('valid', 13x13) cropped back by Cropping2D (STRIDED_SLICE in TFLite)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(9)
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="enc")(inp)
    x = L.Conv2DTranspose(4, 3, strides=2, activation="relu", name="dec")(x)
    x = L.Cropping2D(((1, 2), (0, 1)), name="crop")(x)
    x = L.Conv2D(5, 3, strides=2, name="c")(x)
    return keras.Model(inp, L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(x)), name="crop_ops")


MODELS = {"binary_ops": _binary_model, "resize_ops": _resize_model, "transpose_ops": _transpose_model,
          "deconv_ops": _deconv_model, "crop_ops": _crop_model}
NEW_TFLITE = {"binary_ops": {"SUB", "MAXIMUM", "MINIMUM"}, "resize_ops": {"RESIZE_NEAREST_NEIGHBOR"},
              "transpose_ops": {"TRANSPOSE"}, "split_ops": {"SPLIT", "SPLIT_V"}, "deconv_ops": {"TRANSPOSE_CONV"},
              "crop_ops": {"TRANSPOSE_CONV", "STRIDED_SLICE"}}
WRITTEN = {**NEW_TFLITE, "split_ops": {"SLICE"}, "crop_ops": {"TRANSPOSE_CONV", "SLICE"}}  # tinycc's writer


def _x(model, n: int, seed: int = 0) -> np.ndarray:
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(1.0, 2.0, (n,) + shape).astype(np.float32)


def _convert(model, x: np.ndarray | None) -> bytes:
    import tensorflow as tf

    c = tf.lite.TFLiteConverter.from_keras_model(model)
    if x is not None:
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = c.inference_output_type = tf.int8
    return c.convert()


@pytest.fixture(scope="module")
def models() -> dict:
    return {name: fn() for name, fn in {**MODELS, "split_ops": _split_model}.items()}


def _float_ir(m, tmp_path: Path):
    """The Keras frontend's graph, or for the split model (keras.ops.split) the float converter file's."""
    if m.name != "split_ops":
        return graph_from_keras_model(m)
    p = tmp_path / "split_float.tflite"
    p.write_bytes(_convert(m, None))
    return read_tflite(str(p))


@pytest.mark.parametrize("name", [*MODELS, "split_ops"])
def test_keras_and_float_tflite_equal_keras(models, tmp_path: Path, name: str) -> None:
    m = models[name]
    x = _x(m, 16)
    want = np.asarray(m(x))
    g = _float_ir(m, tmp_path)
    assert NEW & {o.kind for o in g.ops}
    np.testing.assert_allclose(run(g, x)[g.outputs[0]], want, rtol=1e-4, atol=1e-4)
    if name == "resize_ops":  # Normalization is a per-channel affine: mean/std of what it adapted on
        norm = g.op("norm")
        assert norm.kind == OpKind.RESCALE and len(norm.attrs["scale"]) == 3
        assert np.allclose(1 / np.asarray(norm.attrs["scale"]), 3.0, rtol=0.1)
    p = tmp_path / f"{name}_float.tflite"
    p.write_bytes(_convert(m, None))
    gf = read_tflite(str(p))
    assert not gf.meta.get("quantized") and NEW & {o.kind for o in gf.ops}
    np.testing.assert_allclose(run(gf, x)[gf.outputs[0]], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["binary_ops", "transpose_ops", "split_ops", "deconv_ops", "crop_ops"])
def test_converter_int8_bit_exact_with_builtin_ref_and_tflm(models, tmp_path: Path, name: str) -> None:
    m = models[name]
    data = _convert(m, _x(m, 32))
    p = tmp_path / f"{name}_int8.tflite"
    p.write_bytes(data)
    assert NEW_TFLITE[name] <= set(operator_names(data))
    g = read_tflite(str(p))
    kinds = [o.kind for o in g.ops]
    if name == "binary_ops":
        assert kinds.count(OpKind.SUB) == 2 and OpKind.MAXIMUM in kinds and OpKind.MINIMUM in kinds
    elif name == "transpose_ops":
        assert kinds.count(OpKind.TRANSPOSE) >= 2
    elif name == "deconv_ops":
        assert kinds.count(OpKind.TRANSPOSE_CONV2D) == 2
    elif name == "crop_ops":
        assert kinds.count(OpKind.SLICE) == 2 and OpKind.TRANSPOSE_CONV2D in kinds
    else:
        assert kinds.count(OpKind.SLICE) == 4
    x = np.random.default_rng(1).integers(-128, 128, (60,) + g.tensors[g.inputs[0]].shape[1:]).astype(np.int8)
    names, _ = assert_builtin_ref_equals_run_int8(g, data, x)
    assert len(names) >= 6
    assert_tflm_equals_run_int8(g, data, x)


def test_converter_int8_upsampling_and_resizing_import(models, tmp_path: Path) -> None:
    """Keras 3 writes UpSampling2D as EXPAND_DIMS + TILE + RESHAPE (whose static shape the converter leaves stale);
    the reader makes each repeat a nearest-neighbour resize. TILE has no BUILTIN_REF kernel at the version the
    converter writes, so this file is checked against the builtin kernels on a model of data movement only."""
    import keras
    from keras import layers as L

    inp = keras.Input((5, 4, 3))
    x = L.UpSampling2D((2, 3), name="up")(inp)
    out = L.Resizing(7, 9, interpolation="nearest", name="rs")(x)
    m = keras.Model(inp, out)
    data = _convert(m, _x(m, 16))
    assert "TILE" in operator_names(data) and "RESIZE_NEAREST_NEIGHBOR" in operator_names(data)
    p = tmp_path / "resize_int8.tflite"
    p.write_bytes(data)
    g = read_tflite(str(p))
    assert [o.kind for o in g.ops].count(OpKind.RESIZE_NEAREST) == 3
    x = np.random.default_rng(2).integers(-128, 128, (10, 5, 4, 3)).astype(np.int8)
    assert_output_equals_run_int8(g, data, x, ref=False)


@pytest.mark.parametrize("batch", [None, 1])
def test_converter_int8_upsampling_after_reshape_import(tmp_path: Path, batch: int | None) -> None:
    """A decoder's Reshape -> UpSampling2D after its Dense layer. With a fixed batch of 1 (as published files have) the converter
    fuses the Reshape with the repeats into RESHAPE (5-D) -> TILE -> RESHAPE -> TILE -> RESHAPE; with a free batch it
    writes run-time shape arithmetic. The reader recognises each run of reshapes and tiles by its index map (where
    the source's elements land) and writes a reshape + nearest-neighbour resize, bit-exact with TFLite's builtin
    kernels on the converter's file (no BUILTIN_REF kernel for TILE; the model is data movement only, since the
    builtin optimized Dense and convolution kernels can differ from the reference by one)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(5)
    inp = keras.Input((24,), batch_size=batch)  # a Dense layer's output: data movement only (see below)
    x = L.Reshape((3, 2, 4), name="map")(inp)
    out = L.UpSampling2D((2, 3), name="up")(x)
    m = keras.Model(inp, out)
    data = _convert(m, np.random.default_rng(1).normal(size=(16, 24)).astype(np.float32))
    assert "TILE" in operator_names(data)
    p = tmp_path / "decoder_int8.tflite"
    p.write_bytes(data)
    g = read_tflite(str(p))
    kinds = [o.kind for o in g.ops]
    assert kinds.count(OpKind.RESIZE_NEAREST) == (1 if batch == 1 else 2)  # the fused run: rows and columns at once
    assert g.tensors[g.outputs[0]].shape == (1, 6, 6, 4)
    assert_output_equals_run_int8(g, data, np.random.default_rng(4).integers(-128, 128, (10, 24)).astype(np.int8),
                                  ref=False)


@pytest.mark.parametrize("name", [*MODELS, "split_ops"])
def test_tinycc_int8_written_runs_bit_exact_in_builtin_ref_and_tflm(session, models, tmp_path: Path,
                                                                    name: str) -> None:
    pytest.importorskip("tflite_micro")
    m = models[name]
    g = _float_ir(m, tmp_path)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    fg = g.copy()
    run_pipeline(g, session.registry.pipeline("int8"), PassContext(session=session, calib=_x(m, 64, 7)))
    assert NEW & {o.kind for o in g.ops}
    for o in g.ops:
        if o.kind in (OpKind.MAXIMUM, OpKind.MINIMUM, OpKind.RESIZE_NEAREST, OpKind.TRANSPOSE, OpKind.SLICE):
            assert all(g.tensors[t].quant.equals(g.tensors[o.outputs[0]].quant) for t in o.inputs)
    data = write_tflite(g)
    assert write_tflite(g) == data
    assert WRITTEN[name] <= set(operator_names(data))
    assert_written_runs_like_run_int8(g, data, _x(m, 40, 9), fg)


def test_channels_through_the_new_ops_prune_like_masking(session, models, tmp_path: Path) -> None:
    """Sub/Maximum/Minimum join their operands' channels, resize/transpose/slice pass them when the channel axis
    stays: removing a unit equals zeroing it."""
    for name, m in models.items():
        g = _float_ir(m, tmp_path)
        run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
        units = analyse(g)
        new_outs = {o.outputs[0] for o in g.ops if o.kind in NEW}
        touched = [u for u in units if u.prunable and any(t in new_outs for t, _ in u.positions)]
        assert touched, name
        drop = [units.index(touched[0])]
        gone = {}
        for t, c in touched[0].positions:
            gone.setdefault(t, set()).add(c)
        ref = g.copy()
        for op in ref.ops:  # zero the unit's filters at its producers: the channels then carry zeros everywhere
            if op.kind in (OpKind.CONV2D, OpKind.DENSE, OpKind.TRANSPOSE_CONV2D) and op.outputs[0] in gone:
                cs = sorted(gone[op.outputs[0]])
                for i in (1, 2):
                    d = ref.tensors[op.inputs[i]].data.copy()
                    d[cs] = 0
                    ref.tensors[op.inputs[i]].data = d
        pruned = g.copy()
        remove(pruned, units, drop)
        x = _x(m, 6, 5)
        np.testing.assert_allclose(run(pruned, x)[pruned.outputs[0]], run(ref, x)[ref.outputs[0]], atol=1e-4)
        assert totals(pruned)["params"] < totals(g)["params"]


# ---- generated C kernels against run_int8 on random parameters (ASan/UBSan) ----------------------
def _q(rng: np.random.Generator) -> tuple[float, int]:
    return float(np.float32(10 ** rng.uniform(-2.5, 0.5))), int(rng.integers(-128, 128))


def _binary_case(kind: str, rng: np.random.Generator) -> Graph:
    shape = (1, int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 9)))
    g = Graph(kind)
    qa = _q(rng)
    qb = qa if kind != "sub" else _q(rng)
    qo = qa if kind != "sub" else _q(rng)
    g.add_input("x", shape, DType.INT8).quant = QuantParams([qa[0]], [qa[1]])
    form = int(rng.integers(0, 3))  # 0: two inputs, 1: a [1, 1, C] activation, 2: a per-channel constant
    if form == 2:
        data = rng.integers(-128, 128, (shape[-1],)).astype(np.int8)
        g.add_const("y", data, DType.INT8).quant = QuantParams([qb[0]], [qb[1]])
    else:
        g.add_input("y", shape if form == 0 else (1, 1, 1, shape[-1]), DType.INT8).quant = \
            QuantParams([qb[0]], [qb[1]])
    operands = ["x", "y"] if rng.random() < 0.5 else ["y", "x"]
    attrs = {"activation": str(rng.choice(["none", "relu", "relu6"]))} if kind == "sub" else {}
    op = g.add_op(kind, operands, "out", attrs, output_dtype=DType.INT8)
    g.tensors[op.outputs[0]].quant = QuantParams([qo[0]], [qo[1]])
    g.outputs = [op.outputs[0]]
    return g


def _resize_case(rng: np.random.Generator) -> Graph:
    ih, iw, c = (int(v) for v in rng.integers(1, 7, 3))
    size = (int(rng.integers(1, 15)), int(rng.integers(1, 15)))
    ac = bool(rng.integers(0, 2))
    g = Graph("resize")
    q = _q(rng)
    g.add_input("x", (1, ih, iw, c), DType.INT8).quant = QuantParams([q[0]], [q[1]])
    op = g.add_op("resize_nearest", ["x"], "out", {"size": size, "align_corners": ac,
                                                   "half_pixel_centers": not ac and bool(rng.integers(0, 2))},
                  output_dtype=DType.INT8)
    g.tensors[op.outputs[0]].quant = QuantParams([q[0]], [q[1]])
    g.outputs = [op.outputs[0]]
    return g


def _transpose_case(rng: np.random.Generator) -> Graph:
    rank = int(rng.integers(2, 5))
    shape = (1,) + tuple(int(v) for v in rng.integers(1, 6, rank - 1))
    perm = (0,) + tuple(int(v) + 1 for v in rng.permutation(rank - 1))
    g = Graph("transpose")
    q = _q(rng)
    g.add_input("x", shape, DType.INT8).quant = QuantParams([q[0]], [q[1]])
    op = g.add_op("transpose", ["x"], "out", {"perm": perm}, output_dtype=DType.INT8)
    g.tensors[op.outputs[0]].quant = QuantParams([q[0]], [q[1]])
    g.outputs = [op.outputs[0]]
    return g


def _slice_case(rng: np.random.Generator) -> Graph:
    shape = (1,) + tuple(int(v) for v in rng.integers(1, 7, int(rng.integers(1, 4))))
    axis = int(rng.integers(1, len(shape)))
    begin = int(rng.integers(0, shape[axis]))
    size = int(rng.integers(1, shape[axis] - begin + 1))
    g = Graph("slice")
    q = _q(rng)
    g.add_input("x", shape, DType.INT8).quant = QuantParams([q[0]], [q[1]])
    op = g.add_op("slice", ["x"], "out", {"axis": axis, "begin": begin, "length": size}, output_dtype=DType.INT8)
    g.tensors[op.outputs[0]].quant = QuantParams([q[0]], [q[1]])
    g.outputs = [op.outputs[0]]
    return g


def _deconv_case(rng: np.random.Generator) -> Graph:
    ih, iw, ic, oc = (int(v) for v in rng.integers(1, 6, 4))
    kh, kw, sh, sw = (int(v) for v in rng.integers(1, 4, 4))
    padding = str(rng.choice(["same", "valid"]))
    out = tuple(n * s if padding == "same" else (n - 1) * s + k for n, s, k in ((ih, sh, kh), (iw, sw, kw)))
    g = Graph("transpose_conv2d")
    qi, qo = _q(rng), _q(rng)
    g.add_input("x", (1, ih, iw, ic), DType.INT8).quant = QuantParams([qi[0]], [qi[1]])
    ws = (10 ** rng.uniform(-3, -1, oc)).astype(np.float32)
    g.add_const("w", rng.integers(-127, 128, (oc, kh, kw, ic)).astype(np.int8), DType.INT8,
                QuantParams(ws, np.zeros(oc, np.int64), 0))
    bias = rng.integers(-3000, 3000, oc).astype(np.int32)
    g.add_const("b", bias, DType.INT32, QuantParams(ws * np.float32(qi[0]), np.zeros(oc, np.int64), 0))
    ins = ["x", "w", "b"] if rng.random() < 0.7 else ["x", "w"]
    op = g.add_op("transpose_conv2d", ins, "out", {"strides": (sh, sw), "padding": padding, "out_size": out,
                                                 "activation": str(rng.choice(["none", "relu", "relu6"]))},
                  output_dtype=DType.INT8)
    g.tensors[op.outputs[0]].quant = QuantParams([qo[0]], [qo[1]])
    g.outputs = [op.outputs[0]]
    return g


def _program(cases: list[tuple[Graph, dict]]) -> tuple[str, list[str]]:
    body, want, arena = [], [], 16
    for i, (g, feed) in enumerate(cases):
        with c_harness.listed_tables():
            em = _Builder(_generic(g)).build()
        arena = max(arena, em.plan.arena)
        body.append("    {")
        for a in em.arrays:
            body.append(f"      static const {a.ctype} {a.name}[{a.count}] = {{{', '.join(a.values)}}};")
        for name, x in feed.items():
            vals = ", ".join(str(int(v)) for v in x.reshape(-1))
            body.append(f"      {{ static const int8_t in[{x.size}] = {{{vals}}};")
            body.append(f"        memcpy(tcc_arena + {em.plan.offsets[name]}, in, sizeof in); }}")
        body += [f"      {c.fn}({', '.join(c.args)});" for c in em.calls]
        y = g.outputs[0]
        body.append(f"      dump({i}, tcc_arena + {em.plan.offsets[y]}, {g.tensors[y].size});")
        body.append("    }")
        want.append(f"case {i} " + " ".join(str(int(v)) for v in run_int8(g, feed)[y].reshape(-1)))
    src = "\n".join([
        "#include <stdio.h>", "#include <string.h>", '#include "tinycc_kernels.h"',
        f"static int8_t tcc_arena[{arena}];",
        "static void dump(int id, const int8_t *p, int32_t n) {",
        "    int32_t i;", '    printf("case %d", id);', '    for (i = 0; i < n; ++i) { printf(" %d", p[i]); }',
        '    printf("\\n");', "}", "int main(void) {", *body, "    return 0;", "}", ""])
    return src, want


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is not installed")
def test_c_kernels_equal_run_int8(tmp_path: Path) -> None:
    rng = np.random.default_rng(2027)
    cases = []
    for kind in ("sub", "maximum", "minimum"):
        for _ in range(40):
            g = _binary_case(kind, rng)
            cases.append((g, {t: rng.integers(-128, 128, g.tensors[t].shape).astype(np.int8) for t in g.inputs}))
    for make in [_resize_case] * 60 + [_transpose_case] * 40 + [_slice_case] * 40 + [_deconv_case] * 60:
        g = make(rng)
        cases.append((g, {"x": rng.integers(-128, 128, g.tensors["x"].shape).astype(np.int8)}))
    src, want = _program(cases)
    got = c_harness.run_runtime_program(src, tmp_path, "ops_test")
    assert len(got) == len(want)
    for line, ref, (g, _) in zip(got, want, cases):
        assert line == ref, f"{g.name}: {g.ops[0].attrs}"
    outs = np.concatenate([np.array(w.split()[2:], int) for w, (g, _) in zip(want, cases) if g.name == "sub"])
    assert len(np.unique(outs)) > 60  # not only saturation


def test_nearest_index_follows_tflite() -> None:
    """Integer factors: index i // f under every mode but align_corners; align_corners rounds half away from 0."""
    for n, f in ((3, 2), (5, 3), (7, 4), (11, 5)):
        for hp in (False, True):
            np.testing.assert_array_equal(nearest_index(n * f, n, False, hp), np.arange(n * f) // f)
    np.testing.assert_array_equal(nearest_index(5, 3, True, False), [0, 1, 1, 2, 2])  # 0, .5, 1, 1.5, 2
    np.testing.assert_array_equal(nearest_index(3, 5, False, True), [0, 2, 4])


def _source(session, m, tmp_path: Path):
    """A function making the model's graph (the converter's int8 file for binary_ops/split_ops, else the cleaned
    Keras graph) and the compile options (calibration data for the float ones)."""
    opts = {"buffer": 6, "lr": 0.05}
    if m.name in ("binary_ops", "split_ops"):
        p = tmp_path / f"{m.name}_int8.tflite"
        p.write_bytes(_convert(m, _x(m, 32)))
        return (lambda: read_tflite(str(p))), opts
    opts["calib_data"] = _x(m, 48, 11)

    def graph():
        g = graph_from_keras_model(m)
        run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
        return g
    return graph, opts


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("name", [*MODELS, "split_ops"])
def test_cortex_m4_qemu_features_equal_run_int8(session, models, tmp_path: Path, name: str) -> None:
    """-Os -Wall -Wextra -Werror for Cortex-M4, run under QEMU: the first vectors' int8 features equal run_int8's."""
    from tinycc.backends.c import CBackend

    m = models[name]
    graph, opts = _source(session, m, tmp_path)
    dep = build_deployment(graph(), opts, session, CBackend())
    x = _x(m, 4, 3)
    dev = assert_qemu_features_equal_run_int8(dep, opts, x, tmp_path / "m4")
    assert dev.instructions["features"] > 0


@pytest.mark.parametrize("name", [*MODELS, "split_ops"])
def test_model_compiles_for_c_and_tflm(session, models, tmp_path: Path, name: str) -> None:
    """Converter int8 files (binary_ops, split_ops) and tinycc-quantized Keras models (the others) with the new ops
    in Φf: the C project (ASan/UBSan) computes run_int8's features and learns like the simulator; TFLite Micro
    runs the tflm target's extractor .tflite bit-exactly like run_int8."""
    from tinycc.backends.c import CBackend
    from tinycc.backends.tflm import TflmBackend, extractor_tflite
    from tinycc.backends.tflm.measure import measure_arena

    m = models[name]
    graph, opts = _source(session, m, tmp_path)
    dep = build_deployment(graph(), opts, session, CBackend())
    CBackend().check(dep)
    assert NEW & {o.kind for o in dep.extractor.ops}
    x = _x(m, 8, 3)
    y = np.arange(8) % dep.num_classes
    assert_c_project_learns_like_the_simulator(dep, opts, x, y, tmp_path / "c")
    dep = build_deployment(graph(), opts, session, TflmBackend())
    TflmBackend().check(dep)
    data = extractor_tflite(dep.extractor)
    assert WRITTEN[name] <= set(operator_names(data))
    assert_tflm_equals_run_int8(dep.extractor, data, x, measure_arena(data).arena)


def test_transpose_before_flatten_folds_into_the_dense(session, models) -> None:
    """PyTorch's NCHW flatten (Transpose -> Flatten -> Dense) costs nothing: cleanup permutes the Dense's columns."""
    m = models["transpose_ops"]
    g = graph_from_keras_model(m)
    assert [o.kind for o in g.ops].count(OpKind.TRANSPOSE) == 3
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    assert [o.name for o in g.ops if o.kind == OpKind.TRANSPOSE] == ["to_nhwc", "swap_hw"]
    x = _x(m, 8, 4)
    np.testing.assert_allclose(run(g, x)[g.outputs[0]], np.asarray(m(x)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["resize_ops", "deconv_ops", "binary_ops"])
def test_arduino_mega_selftest_predicts_like_the_simulator(session, models, tmp_path: Path, name: str) -> None:
    """The arduino target on an ATmega2560 (simavr): constants in PROGMEM (TransposeConv weights and bias, the
    resize's index tables) read through the port macros; predictions before and after learning equal the
    simulator's."""
    from tinycc.backends.arduino import ArduinoBackend

    from . import arduino_harness

    if not arduino_harness.available():
        pytest.skip("arduino-builder/simavr/avr-gcc not installed")
    m = models[name]
    graph, opts = _source(session, m, tmp_path)
    dep = build_deployment(graph(), {**opts, "board": "mega2560", "buffer": 8}, session, ArduinoBackend())
    x = _x(m, 8, 3)
    y = np.arange(8) % dep.num_classes
    arduino_harness.assert_sketch_learns_like_the_simulator(dep, x, y, tmp_path, 8)
