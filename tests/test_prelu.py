"""PReLU (Keras ``PReLU`` with and without ``shared_axes``; TFLite PRELU) through every layer: the Keras frontend
(directly and through Keras) and float .tflite files equal Keras; converter-made int8 files import and run
bit-exactly like BUILTIN_REF and TFLite Micro; tinycc's own quantization writes a PRELU file both run like run_int8;
the C kernel (ASan/UBSan) equals run_int8 on random parameters and broadcasts; alpha is pruned with its channels;
a converter file compiles for c (host, sanitizers), tflm and arduino, and its first vectors run under QEMU M4."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tinycc.ir.channels import analyse, remove
from tinycc.ir.graph import Graph
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.ops import OpKind
from tinycc.ir.stats import totals
from tinycc.ir.tensor import DType, QuantParams
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model, load_keras_file
from tinycc.plugins.frontends.tflite import read_tflite
from tinycc.tflite_writer import operator_names, write_tflite

from . import c_harness
from .deploy_util import build_deployment
from .op_checks import (assert_builtin_ref_equals_run_int8, assert_c_project_learns_like_the_simulator,
                        assert_qemu_features_equal_run_int8, assert_tflm_equals_run_int8,
                        assert_written_runs_like_run_int8)
from .test_layout_ops import _convert, _program, _q, _x

litert = pytest.importorskip("ai_edge_litert.interpreter")


def _conv_model():
    """PReLU shared over H, W (one alpha per channel), unshared, and shared over H only, between convolutions."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(11)
    init = keras.initializers.RandomUniform(-0.6, 0.9)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", name="c1")(inp)
    x = L.PReLU(shared_axes=[1, 2], alpha_initializer=init, name="pr_shared")(x)
    x = L.Conv2D(5, 3, strides=2, name="c2")(x)
    x = L.PReLU(alpha_initializer=init, name="pr_full")(x)
    x = L.PReLU(shared_axes=[1], alpha_initializer=init, name="pr_rows")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(8, name="fc")(x)
    x = L.PReLU(alpha_initializer=init, name="pr_fc")(x)
    return keras.Model(inp, L.Dense(3, name="head")(x), name="prelu_conv")


@pytest.fixture(scope="module")
def model():
    return _conv_model()


@pytest.fixture(scope="module")
def int8_file(model, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("prelu") / "prelu_int8.tflite"
    p.write_bytes(_convert(model, _x(model, 48)))
    return p


def test_keras_direct_and_float_tflite_equal_keras(model, tmp_path: Path) -> None:
    x = _x(model, 16)
    want = np.asarray(model(x))
    g = graph_from_keras_model(model)
    alphas = [g.tensors[o.inputs[1]].shape for o in g.ops if o.kind == OpKind.PRELU]
    assert alphas == [(1, 1, 6), (3, 3, 5), (1, 3, 5), (8,)]
    np.testing.assert_allclose(run(g, x)[g.outputs[0]], want, rtol=1e-5, atol=1e-5)
    for fmt in ("keras", "h5"):  # read without TensorFlow: the same graph
        path = tmp_path / f"m.{fmt}"
        model.save(path)
        direct = load_keras_file(str(path))
        assert [o.kind for o in direct.ops] == [o.kind for o in g.ops]
        np.testing.assert_array_equal(run(direct, x)[direct.outputs[0]], run(g, x)[g.outputs[0]])
    p = tmp_path / "float.tflite"
    p.write_bytes(_convert(model, None))
    gf = read_tflite(str(p))
    assert [o.kind for o in gf.ops].count(OpKind.PRELU) == 4
    np.testing.assert_allclose(run(gf, x)[gf.outputs[0]], want, rtol=1e-4, atol=1e-5)


def test_converter_int8_bit_exact_with_builtin_ref_and_tflm(int8_file: Path) -> None:
    data = int8_file.read_bytes()
    assert "PRELU" in operator_names(data)
    g = read_tflite(str(int8_file))
    prelus = [o for o in g.ops if o.kind == OpKind.PRELU]
    assert len(prelus) == 4
    assert all(g.tensors[o.inputs[1]].dtype == DType.INT8 for o in prelus)
    x = np.random.default_rng(1).integers(-128, 128, (80,) + g.tensors[g.inputs[0]].shape[1:]).astype(np.int8)
    names, ours = assert_builtin_ref_equals_run_int8(g, data, x)
    assert all(o.outputs[0] in names for o in prelus)
    negative = 0
    for o in prelus:  # both branches taken
        v = ours[o.inputs[0]].astype(int) - int(g.tensors[o.inputs[0]].quant.zero_point[0])
        negative += int((v < 0).any() and (v > 0).any())
    assert negative == len(prelus)
    assert_tflm_equals_run_int8(g, data, x)


def test_tinycc_int8_written_runs_bit_exact_in_builtin_ref_and_tflm(session, model) -> None:
    pytest.importorskip("tflite_micro")
    g = graph_from_keras_model(model)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    fg = g.copy()
    run_pipeline(g, session.registry.pipeline("int8"), PassContext(session=session, calib=_x(model, 64, 7)))
    prelus = [o for o in g.ops if o.kind == OpKind.PRELU]
    assert len(prelus) == 4
    for o in prelus:
        a = g.tensors[o.inputs[1]]
        assert a.dtype == DType.INT8 and a.quant.scale.size == 1 and a.quant.zero_point[0] == 0
        assert np.abs(a.data).max() == 127
    data = write_tflite(g)
    assert write_tflite(g) == data and "PRELU" in operator_names(data)
    assert_written_runs_like_run_int8(g, data, _x(model, 40, 9), fg, 1 << 18)


def test_alpha_is_pruned_with_its_channels(session, model) -> None:
    """Removing a unit through a PReLU equals zeroing its producing filters; per-channel alphas shrink with it."""
    g = graph_from_keras_model(model)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    units = analyse(g)
    outs = {o.origin: o.outputs[0] for o in g.ops if o.kind == OpKind.PRELU}
    for target in ("pr_shared", "pr_full", "pr_fc"):
        u = next(u for u in units if u.prunable and any(t == outs[target] for t, _ in u.positions))
        gone: dict[str, set[int]] = {}
        for t, c in u.positions:
            gone.setdefault(t, set()).add(c)
        ref = g.copy()
        for op in ref.ops:
            if op.kind in (OpKind.CONV2D, OpKind.DENSE) and op.outputs[0] in gone:
                for i in (1, 2):
                    d = ref.tensors[op.inputs[i]].data.copy()
                    d[sorted(gone[op.outputs[0]])] = 0
                    ref.tensors[op.inputs[i]].data = d
        pruned = g.copy()
        remove(pruned, units, [units.index(u)])
        op = next(o for o in pruned.ops if o.origin == target)
        old = next(o for o in g.ops if o.origin == target)
        assert pruned.tensors[op.inputs[1]].shape[-1] == g.tensors[old.inputs[1]].shape[-1] - 1
        x = _x(model, 6, 5)
        np.testing.assert_allclose(run(pruned, x)[pruned.outputs[0]], run(ref, x)[ref.outputs[0]], atol=1e-4)
        assert totals(pruned)["params"] < totals(g)["params"]


def _prelu_case(rng: np.random.Generator) -> Graph:
    rank = int(rng.integers(2, 5))
    shape = (1,) + tuple(int(v) for v in rng.integers(1, 6, rank - 1))
    alpha = tuple(d if rng.random() < 0.6 else 1 for d in shape[1:])
    if rng.random() < 0.3:
        alpha = alpha[1:] or alpha  # leading axes dropped, as the TFLite reader may leave them
    g = Graph("prelu")
    qi, qo = _q(rng), _q(rng)
    g.add_input("x", shape, DType.INT8).quant = QuantParams([qi[0]], [qi[1]])
    g.add_const("alpha", rng.integers(-127, 128, alpha).astype(np.int8), DType.INT8,
                QuantParams([float(np.float32(10 ** rng.uniform(-3, -1)))], [int(rng.integers(-20, 21))]))
    op = g.add_op("prelu", ["x", "alpha"], "out", {}, output_dtype=DType.INT8)
    g.tensors[op.outputs[0]].quant = QuantParams([qo[0]], [qo[1]])
    g.outputs = [op.outputs[0]]
    return g


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is not installed")
def test_c_kernel_equals_run_int8(tmp_path: Path) -> None:
    rng = np.random.default_rng(2031)
    cases = []
    for _ in range(150):
        g = _prelu_case(rng)
        cases.append((g, {"x": rng.integers(-128, 128, g.tensors["x"].shape).astype(np.int8)}))
    src, want = _program(cases)
    got = c_harness.run_runtime_program(src, tmp_path, "prelu_test")
    assert got == want
    outs = np.concatenate([np.array(w.split()[2:], int) for w in want])
    assert len(np.unique(outs)) > 100  # not only saturation


def _deploy(session, path: Path, backend, **extra):
    opts = {"buffer": 6, "lr": 0.05, **extra}
    return build_deployment(read_tflite(str(path)), opts, session, backend), opts


def test_converter_file_compiles_for_c_and_tflm(session, model, int8_file: Path, tmp_path: Path) -> None:
    """The C project (ASan/UBSan) computes run_int8's features and learns like the simulator; TFLite Micro runs the
    tflm target's extractor .tflite like run_int8."""
    from tinycc.backends.c import CBackend
    from tinycc.backends.tflm import TflmBackend, extractor_tflite
    from tinycc.backends.tflm.measure import measure_arena

    dep, opts = _deploy(session, int8_file, CBackend())
    CBackend().check(dep)
    assert [o.kind for o in dep.extractor.ops].count(OpKind.PRELU) >= 3
    x = _x(model, 8, 3)
    y = np.arange(8) % dep.num_classes
    assert_c_project_learns_like_the_simulator(dep, opts, x, y, tmp_path / "c")
    dep = _deploy(session, int8_file, TflmBackend())[0]
    TflmBackend().check(dep)
    data = extractor_tflite(dep.extractor)
    assert "PRELU" in operator_names(data)
    assert_tflm_equals_run_int8(dep.extractor, data, x, measure_arena(data).arena)


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_cortex_m4_qemu_features_equal_run_int8(session, model, int8_file: Path, tmp_path: Path) -> None:
    from tinycc.backends.c import CBackend

    dep, opts = _deploy(session, int8_file, CBackend())
    x = _x(model, 4, 3)
    assert_qemu_features_equal_run_int8(dep, opts, x, tmp_path / "m4")


def test_arduino_mega_selftest_predicts_like_the_simulator(session, model, int8_file: Path, tmp_path: Path) -> None:
    """alpha in PROGMEM, read through the port macro, on an ATmega2560 (simavr)."""
    from tinycc.backends.arduino import ArduinoBackend

    from . import arduino_harness

    if not arduino_harness.available():
        pytest.skip("arduino-builder/simavr/avr-gcc not installed")
    dep, _ = _deploy(session, int8_file, ArduinoBackend(), board="mega2560", buffer=8)
    x = _x(model, 8, 3)
    y = np.arange(8) % dep.num_classes
    arduino_harness.assert_sketch_learns_like_the_simulator(dep, x, y, tmp_path, 8)


def test_keras_export_round_trip(session, model) -> None:
    """Pruning's fine-tuning exports the graph to Keras: PReLU layers come back with the same alphas and outputs."""
    from tinycc.plugins.passes.keras_export import graph_to_keras, update_graph_weights

    g = graph_from_keras_model(model)
    km = graph_to_keras(g)
    x = _x(model, 8, 2)
    np.testing.assert_allclose(np.asarray(km(x)), run(g, x)[g.outputs[0]], rtol=1e-5, atol=1e-5)
    back = graph_from_keras_model(km)
    for a, b in zip([o for o in g.ops if o.kind == OpKind.PRELU], [o for o in back.ops if o.kind == OpKind.PRELU]):
        np.testing.assert_array_equal(g.tensors[a.inputs[1]].data, back.tensors[b.inputs[1]].data)
    layer = next(l for l in km.layers if type(l).__name__ == "PReLU")
    layer.set_weights([w * 0.5 for w in layer.get_weights()])
    g2 = g.copy()
    update_graph_weights(g2, km)
    op = next(o for o in g2.ops if o.kind == OpKind.PRELU and o.name.replace("/", "__") == layer.name)
    np.testing.assert_allclose(g2.tensors[op.inputs[1]].data, g.tensors[op.inputs[1]].data * 0.5)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # may build TFLite Micro once (cached)
def test_tflm_project_built_and_run(session, tmp_path: Path) -> None:
    """The tflm target's project (PRELU and ELU through TFLite Micro's AddPrelu/AddElu) built against the vendored
    TFLite Micro with ASan/UBSan: its features equal run_int8."""
    import keras
    from keras import layers as L

    from tinycc.backends import c as c_backend
    from tinycc.backends.tflm import build, vendor

    from .deploy_util import compile_model, vectors

    vendor_dir = vendor.default_vendor_dir()
    if vendor_dir is None or vendor.missing_toolchain("host"):
        pytest.skip("TensorFlow Lite Micro snapshot or host toolchain not available")
    library = vendor.ensure_library(vendor_dir, "host")
    keras.utils.set_random_seed(12)
    inp = keras.Input((8, 8, 3))
    x = L.PReLU(shared_axes=[1, 2], name="p0")(L.Conv2D(6, 3, name="c1")(inp))
    x = L.ELU(name="e1")(L.Conv2D(6, 3, name="c2")(x))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    m = keras.Model(inp, L.Dense(3, activation="softmax", name="head")(x))
    path = tmp_path / "pe.keras"
    m.save(path)
    opts = {"calib_data": _x(m, 64, 1), "buffer": 6, "test_count": 8, "test_learn": 4}
    res = compile_model(str(path), "tflm", str(tmp_path / "proj"), opts, session)
    dep = res.deployment
    assert {OpKind.PRELU, OpKind.ELU} <= {o.kind for o in dep.extractor.ops}
    out = c_harness.parse(build.run(build.build_host(res.output, sanitize=True, library=library)))
    xs, _ = c_backend.test_vectors(dep, vectors(opts))
    ref = run_int8(dep.extractor, xs)[dep.extractor.outputs[0]].reshape(len(xs), -1)
    for i in range(len(xs)):
        np.testing.assert_array_equal(out.features[i], ref[i], err_msg=f"TFLite Micro features of input {i}")
