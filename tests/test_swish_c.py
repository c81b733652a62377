"""The generated C learning step trains through sigmoid, swish, hard sigmoid and element-wise Mul (the thesis's CNAS:
swish activations and squeeze-and-excitation blocks): the runtime kernels equal tinycc.ir.backprop's formulas, the
generated step equals ``Tail.sgd_step`` (itself equal to TensorFlow's GradientTape), the `--deep bias|blocks`
project learns as the simulator (host ASan/UBSan) and its RAM report equals the compiled symbols."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tinycc.backends.c import CBackend  # noqa: E402
from tinycc.ir.interpreter import sigmoid  # noqa: E402
from tinycc.ir.ops import OpKind  # noqa: E402
from tinycc.passes import PassContext, run_pipeline  # noqa: E402
from tinycc.plugins.frontends.keras import graph_from_keras_model  # noqa: E402

from . import c_harness  # noqa: E402
from .test_backprop import _tail, steps_equal_tape  # noqa: E402
from .test_backprop_c import TOL, _arr, _run  # noqa: E402
from .test_deep import _data  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
F32 = np.float32


def test_activation_kernels_equal_reference(tmp_path: Path) -> None:
    """tcc_fp_/tcc_bp_ sigmoid, swish, hard sigmoid against the reference's float32 formulas: hard sigmoid bit for
    bit, sigmoid and swish within an ulp or two (expf against numpy's exp)."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 4, 60), [-3, 3, -3.0001, 2.9999, 0, -100, 100, -89, 89]]).astype(F32)
    dy = rng.normal(0, 1, x.size).astype(F32)
    y = sigmoid(x)
    decls = _arr("x", x) + _arr("dy", dy) + _arr("y", y) + f"static float o[{x.size}];\n"
    body = "".join(f"{call}; out(o, {x.size});\n" for call in (
        f"tcc_fp_sigmoid(x, o, {x.size})", f"tcc_fp_swish(x, o, {x.size})", f"tcc_fp_hard_sigmoid(x, o, {x.size})",
        f"tcc_bp_sigmoid_dx(y, dy, o, {x.size})", f"tcc_bp_swish_dx(x, dy, o, {x.size})",
        f"tcc_bp_hard_sigmoid_dx(x, dy, o, {x.size})"))
    got = _run(tmp_path, decls, body)
    s = sigmoid(x)
    close = dict(rtol=3e-7, atol=1e-38)
    np.testing.assert_allclose(got[0], s, **close)
    np.testing.assert_allclose(got[1], (x * s).astype(F32), **close)
    np.testing.assert_array_equal(got[2], (np.clip(x + F32(3), F32(0), F32(6)) / F32(6)).astype(F32))
    np.testing.assert_array_equal(got[3], (dy * y * (F32(1) - y)).astype(F32))  # no exp: the same bits
    np.testing.assert_allclose(got[4], (dy * s * (F32(1) + x * (F32(1) - s))).astype(F32), rtol=1e-6, atol=1e-30)
    np.testing.assert_array_equal(got[5], np.where((x > -3) & (x < 3), dy / F32(6), F32(0)).astype(F32))


def _se_model(seed: int) -> tf.keras.Model:
    """Conv + swish, a squeeze-and-excitation block (GAP -> Dense relu -> Dense sigmoid -> reshape -> Multiply with the
    feature map: a broadcast Mul), a depthwise with hard sigmoid, GAP, Dense + swish, the logits."""
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((10, 10, 3))
    x = L.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="stem")(inp)
    x = L.Conv2D(8, 1, activation="swish", name="c1")(x)
    e = L.GlobalAveragePooling2D(name="sq")(x)
    e = L.Dense(4, activation="relu", name="se1")(e)
    e = L.Dense(8, activation="sigmoid", name="se2")(e)
    e = L.Reshape((1, 1, 8), name="se_r")(e)
    x = L.Multiply(name="se")([x, e])
    x = L.DepthwiseConv2D(3, padding="same", activation="hard_sigmoid", name="dw")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(8, activation="swish", name="d1")(x)
    out = L.Dense(4, activation="softmax", name="head")(x)
    m = tf.keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    m.set_weights([rng.normal(0, 0.5, w.shape).astype(F32) for w in m.get_weights()])
    return m


@pytest.mark.parametrize("mode", ["blocks", "bias"])
def test_generated_swish_step_equals_tail(session, tmp_path: Path, mode: str) -> None:
    """The generated SGD step of the swish + SE tail equals Tail.sgd_step (batches of 1, 3, 2 rows) parameter by
    parameter (1e-5, the deep C tests' tolerance), which equals GradientTape + SGD on the Keras model."""
    from tinycc.backends.c.deep_emit import c_step_problem, emit_step

    m = _se_model(2)
    t = _tail(session, m, mode)
    kinds = [op.kind for op in t.ops]
    assert {OpKind.SWISH, OpKind.SIGMOID, OpKind.HARD_SIGMOID, OpKind.MUL} <= set(kinds)
    mul = next(op for op in t.ops if op.kind == OpKind.MUL)
    assert t.graph.tensors[mul.inputs[0]].shape != t.graph.tensors[mul.inputs[1]].shape  # the SE broadcast
    assert c_step_problem(t) is None
    (tmp_path / "step.c").write_text(emit_step(t, 3))
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (6, 10, 10, 3)).astype(F32)
    y = rng.integers(0, 4, 6)
    per = 300
    decls = _arr("xs", x) + "static const int32_t ys[6] = {" + ", ".join(map(str, y)) + '};\n#include "step.c"\n'
    body = (f"int r0 = tcc_deep_step(xs, ys, 1, 0.1f);\nint r1 = tcc_deep_step(xs + {per}, ys + 1, 3, 0.1f);\n"
            f"int r2 = tcc_deep_step(xs + {4 * per}, ys + 4, 2, 0.1f);\n"
            "int r3 = tcc_deep_step(xs, ys, 1, 1.0f / 0.0f);\nprintf(\"%d %d %d %d\\n\", r0, r1, r2, r3);\n")
    for k, p in enumerate(t.params.values()):
        body += f"out(tcc_dw{k}, {p.weight.size}); out(tcc_db{k}, {p.bias.size});\n"
    body += "static float z[12];\ntcc_deep_logits(xs, 3, z); out(z, 12);\n"
    start = {k: p.weight.copy() for k, p in t.params.items()}
    for s, e in ((0, 1), (1, 4), (4, 6)):
        assert t.sgd_step(x[s:e], y[s:e], 0.1)
    got = _run(tmp_path, decls, body)
    assert list(got[0]) == [1, 1, 1, 0]  # three steps applied; an infinite rate refused
    for k, (name, p) in enumerate(t.params.items()):
        np.testing.assert_allclose(got[1 + 2 * k], p.weight.reshape(-1), atol=TOL, rtol=TOL)
        np.testing.assert_allclose(got[2 + 2 * k], p.bias, atol=TOL, rtol=TOL)
        assert mode == "bias" or np.abs(p.weight - start[name]).max() > 1e-4  # blocks: every weight moved
    np.testing.assert_allclose(got[-1], t.forward(x[:3])[t.logits].reshape(-1), atol=TOL, rtol=TOL)
    m2 = _se_model(2)
    t2 = _tail(session, m2, mode)
    rng = np.random.default_rng(1)
    steps_equal_tape(t2, m2, mode, rng.normal(0, 1.5, (7, 10, 10, 3)).astype(F32), rng.integers(0, 4, 7), 0.1)


CALIB = np.random.default_rng(0).uniform(-1, 1, (32, 10, 10, 3)).astype(F32)


@pytest.fixture(scope="module")
def se_graph():
    from tinycc.session import Session

    session = Session(autoload=False)
    g = graph_from_keras_model(_se_model(0))
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    return g


def _deploy(graph, mode: str, **opts):
    from .deploy_util import deep_deployment

    return deep_deployment(graph, mode, CALIB, **opts)


M4 = pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm missing")


@pytest.mark.parametrize("mode, where", [("bias", "host"), ("blocks", "host"),
                                         pytest.param("blocks", "m4", marks=M4)])
def test_swish_project_learns_as_the_simulator(se_graph, tmp_path: Path, mode: str, where: str) -> None:
    """`--deep bias|blocks` after the stem of the swish + SE model (int8: LOGISTIC + MUL, the SE's broadcast MUL, hard
    sigmoid as ADD/MUL of constants): the project's demo (host ASan/UBSan; blocks also on a Cortex-M4 under QEMU)
    learns 9 samples (buffer 3, batch 2, 2 epochs) as the simulator: bias: the int32 biases bit for bit; blocks: the
    float region's weights and biases (1e-5 relative); the classifier and every prediction after learning to 1e-5."""
    from tinycc.ir.deep import DeepLearner

    dep = _deploy(se_graph, mode, buffer=3, batch_size=2, epochs=2)
    sim = DeepLearner(dep, dep.meta["deep"]["cut"], mode, capacity=dep.buffer.capacity)
    kinds = [op.kind for op in sim.region.ops]
    assert kinds.count(OpKind.SIGMOID) >= 3 and kinds.count(OpKind.MUL) >= 4 and OpKind.ADD in kinds
    x, y = _data(6, 11)
    out, q = c_harness.run_deep_demo(dep, sim, tmp_path, x, y, where)
    start = [sim.view.tensors[op.inputs[2]].data.copy() for op in sim.region_params]
    for i in range(9):
        sim.learn_input(x[i % 6], int(y[i % 6]))
        assert not sim.last_refused
    assert out.buffer == sim.buffer.count == 3
    c_harness.check_learned(out, sim, dep, q, sim.region_params, mode)
    assert mode == "blocks" or any((s != b).any() for s, b in zip(start, out.backbone))  # the biases moved


@pytest.mark.parametrize("mode", ["bias", "blocks"])
@pytest.mark.parametrize("target", ["host", "m4"])
def test_swish_project_report_equals_symbols(se_graph, tmp_path: Path, target: str, mode: str) -> None:
    """The swish + SE project compiles with -Wall -Wextra -Werror (host, and the Cortex-M4 with its board); every
    static RAM byte is a report line, line by line; the step's constants (the hard sigmoid's 3 and 1/6 among them)
    are its flash line; the stack is measured."""
    import re

    from .test_deep_project import RAM_GROUPS, deploy_for, static_ram_by_line

    dep, board = deploy_for(target, lambda **o: _deploy(se_graph, mode, buffer=4, batch_size=2, **o))
    ram, items, syms = static_ram_by_line(dep, tmp_path, target, RAM_GROUPS)
    assert ram["learn step: values"] > 0 and ram["learn step: gradients"] > 0
    consts = sum(size for kind, name, size in syms if kind in "rR" and re.fullmatch(r"tcc_(?:wq|ws|bs|dw|db|cv)\d+",
                                                                                   name))
    assert consts == items["learn step constants"]["bytes"]
    assert any(re.fullmatch(r"tcc_cv\d+", name) for _, name, _ in syms)  # the lowered hard sigmoid's constants
    assert items["stack"]["exact"] and items["stack"]["detail"].startswith(
        "measured: Cortex-M4" if board else "measured: host")


@pytest.mark.parametrize("mode", ["bias", "blocks"])
def test_swish_stack_bounds_the_painted_stack(se_graph, tmp_path: Path, mode: str) -> None:
    """The measured stack of the swish + SE project's API (learn included) bounds a painted run of every entry
    point on the host within 25%, as tests/test_deep_project.py's."""
    from tinycc.backends.c.stack import project_stack, toolchain
    from tinycc.config import TestVectors
    from tinycc.ir.deep import DeepLearner

    from . import stack_harness

    if not (toolchain("host") and stack_harness.available("host")):
        pytest.skip("host: compiler not installed")
    dep = _deploy(se_graph, mode, buffer=3, batch_size=2)
    x, y = _data(4, 3)
    CBackend().emit(dep, tmp_path, TestVectors(x, y))
    fig = project_stack(tmp_path, tmp_path / "runtime", dep.name + "_", "host", dep.buffer.policy)
    sim = DeepLearner(dep, dep.meta["deep"]["cut"], mode, capacity=dep.buffer.capacity)
    used = stack_harness.painted(tmp_path, dep.name, sim.buffer.feature_count, "host")
    assert used <= fig.bytes <= 1.25 * used, (fig.bytes, used, fig.path)

CNAS = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "cnas-cifar10" / "cnas_cifar10.keras"


@pytest.mark.skipif(not CNAS.exists(), reason=f"the thesis's CNAS model is not at {CNAS}")
def test_cnas_deep_bias_compiles(shared_data: Path, tmp_path: Path, capsys) -> None:
    """`tinycc compile cnas_cifar10.keras -t c --deep bias --deep-cut swish_13` (the region: the last SE block with
    its hard sigmoid, swish, the 1280-channel convolution without bias): the project is written within its RAM report
    and builds with its Makefile (-Wall -Wextra -Werror -pedantic); the step holds the sigmoid backward and the
    lowered hard sigmoid's constants."""
    import json
    import subprocess

    from .test_deep_deploy import _cli

    with np.load(shared_data / "cifar10.npz", allow_pickle=False) as z:
        np.savez(tmp_path / "calib.npz", x=z["x_train"][:32].astype(F32) / 255)
    out = tmp_path / "o"
    rc, err = _cli(["compile", str(CNAS), "-t", "c", "--calib", str(tmp_path / "calib.npz"), "--deep", "bias",
                    "--deep-cut", "swish_13", "--ram", "200000", "-o", str(out)], capsys)
    assert rc == 0, err
    mem = json.loads((out / "tinycc_memory.json").read_text())
    assert mem["ram"] <= 200_000 and mem["deep"]["trained_parameters"] > 0
    src = (out / "model.c").read_text()
    assert "tcc_bp_sigmoid_dx(" in src and "tcc_cv0" in src
    r = subprocess.run(["make", "-C", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]



@pytest.fixture(scope="module")
def cnas_graph():
    from tinycc.api import load_cleaned
    from tinycc.session import Session

    if not CNAS.exists():
        pytest.skip(f"the thesis's CNAS model is not at {CNAS}")
    return load_cleaned(str(CNAS), Session(autoload=False))


@pytest.mark.parametrize("mode", ["bias", "blocks"])
def test_cnas_swish_region_learns_as_the_simulator(cnas_graph, shared_data: Path, tmp_path: Path, mode: str) -> None:
    """The trained CNAS after --deep-cut swish_13 (the last SE block: GAP, 1x1 convolutions, the hard sigmoid as int8
    ADD/MUL of constants, the SE Mul; swish as LOGISTIC + MUL; the 1280-channel convolution without bias): the
    project's demo (host, ASan/UBSan) learns 4 CIFAR-10 test images (buffer 3, batch 2) as the simulator: bias: the
    int32 biases bit for bit; blocks: every float region weight and bias (1e-5 relative); the predictions after
    learning (class and probabilities to 1e-5)."""
    from tinycc.deploy import build_deep_deployment
    from tinycc.ir.deep import DeepLearner
    from tinycc.session import Session

    from .deploy_util import make_config

    with np.load(shared_data / "cifar10.npz", allow_pickle=False) as z:
        calib = z["x_train"][:32].astype(F32) / 255
        x, y = z["x_test"][:4].astype(F32) / 255, z["y_test"][:4].reshape(-1).astype(np.int64)
    session = Session(autoload=False)
    cfg = make_config(session, deep=(mode,), deep_cut="swish_13", lr=0.05, buffer=3, batch_size=2, epochs=1)
    dep = build_deep_deployment(cnas_graph.copy(), cfg, session, CBackend(), calib)
    sim = DeepLearner(dep, dep.meta["deep"]["cut"], mode, capacity=dep.buffer.capacity)
    kinds = [op.kind for op in sim.region.ops]
    assert OpKind.SIGMOID in kinds and kinds.count(OpKind.MUL) >= 3 and OpKind.ADD in kinds
    out, q = c_harness.run_deep_demo(dep, sim, tmp_path, x, y, "host", learn=4)
    for i in range(4):
        sim.learn_input(x[i], int(y[i]))
        assert not sim.last_refused
    trained = [op for op in sim.region_params if any(sim.tail.trains(op.name))]
    assert len(trained) == (5 if mode == "blocks" else 4)  # bias: the last convolution has none
    c_harness.check_learned(out, sim, dep, q, trained, mode)

def test_int8_constants_are_dequantized(se_graph) -> None:
    """The float region of `--deep blocks` reads an int8 graph's Add/Mul constants dequantized (the lowered hard
    sigmoid's 3 and 1/6, not their int8 codes): its logits follow the int8 kernels' (bias mode) closely."""
    from tinycc.ir.backprop import const_value
    from tinycc.ir.deep import DeepLearner

    dep = _deploy(se_graph, "blocks", buffer=2, batch_size=2)
    blocks = DeepLearner(dep, dep.meta["deep"]["cut"], "blocks", capacity=2)
    bias = DeepLearner(dep, dep.meta["deep"]["cut"], "bias", capacity=2)
    g = blocks.tail.graph
    consts = sorted(float(const_value(g, t)[0]) for op in blocks.tail.ops if op.kind in (OpKind.ADD, OpKind.MUL)
                    for t in op.inputs[:2] if g.tensors[t].data is not None)
    np.testing.assert_allclose(consts, [1 / 6, 3.0], rtol=1e-2)
    q = blocks.cut_of(_data(8, 5)[0])
    zf, zq = blocks.predict(q)[1], bias.predict(q)[1]
    assert np.abs(zf - zq).max() <= 0.05 * np.abs(zq).max()
