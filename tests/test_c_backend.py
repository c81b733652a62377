"""Generated C (host gcc -Werror + ASan/UBSan, and Cortex-M4 under QEMU) against the host simulator."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tinycc.backends.c import CBackend
from .deploy_util import c_arena, render_project
from tinycc.errors import BudgetError
from tinycc.ir.simulator import Simulator
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model
from .deploy_util import build_deployment

from . import c_harness
from .test_int8 import _extra_model
from .zoo import build, sample_input

ROOT = Path(__file__).resolve().parents[1]
N_INPUTS = 100
N_LEARN = 50


def _graph(session, name: str):
    if name.endswith("_pruned"):
        from tinycc.plugins.passes.prune import prune

        g, x, y, calib = _graph(session, name[:-len("_pruned")])
        prune(g, ratio=0.5)
        return g, x, y, calib
    if name == "digits":
        g = session.registry.frontend_for("m.h5").load(str(ROOT / "examples" / "digits_cnn.h5"))
        d = np.load(ROOT / "examples" / "digits_data.npz")
        x, y, calib = d["x_test"][:N_INPUTS], d["y_test"][:N_INPUTS], d["x_train"][:200]
    else:
        m = _extra_model() if name == "int8_extra" else build(name)
        if name == "int8_extra":
            import keras

            out = keras.layers.Dense(4, activation="softmax", name="head")(keras.layers.Dense(6, activation="tanh", name="hid")(m.output))
            m = keras.Model(m.input, out, name="int8_extra_head")
        g = graph_from_keras_model(m)
        x, calib = sample_input(m, N_INPUTS, 1), sample_input(m, 200, 2)
        y = np.arange(N_INPUTS) % int(m.output_shape[-1])
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    return g, np.asarray(x, np.float32), np.asarray(y, np.int64), calib


CASES = {"digits": {"buffer": 16, "lr": 0.05, "epochs": 1},
         "resnet_add": {"buffer": 10, "lr": 0.1, "epochs": 2, "policy": "reservoir"},
         "mobilenet_v2": {"buffer": 8, "lr": 0.05, "epochs": 1, "batch_size": 3, "policy": "class_balanced"},
         "grouped_conv": {"buffer": 12, "lr": 0.05, "epochs": 1, "storage": "float32"},
         "int8_extra": {"buffer": 6, "lr": 0.05, "epochs": 1},
         "mlp": {"buffer": 9, "lr": 0.2, "epochs": 1, "batch_size": 2},
         "cnas_like": {"buffer": 7, "lr": 0.05, "epochs": 1},
         "sequential_cnn": {"buffer": 5, "lr": 0.05, "epochs": 1},
         "concat_branch": {"buffer": 6, "lr": 0.05, "epochs": 1, "policy": "reservoir"},
         "bn_conv_act": {"buffer": 6, "lr": 0.05, "epochs": 1},
         "mobilenet_v3": {"buffer": 6, "lr": 0.05, "epochs": 1},
         "mobilenet_v3_pruned": {"buffer": 6, "lr": 0.05, "epochs": 1},
         "cnas_like_pruned": {"buffer": 6, "lr": 0.05, "epochs": 1},
         "conv1d_sensor": {"buffer": 6, "lr": 0.05, "epochs": 1},
         "conv1d_sensor_pruned": {"buffer": 6, "lr": 0.05, "epochs": 1},
         "separable_cnn": {"buffer": 6, "lr": 0.05, "epochs": 1, "storage": "float32"}}


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    return tmp_path_factory.mktemp("cproj")


@pytest.mark.parametrize("name", list(CASES))
def test_generated_c_matches_simulator(session, projects, name: str) -> None:
    g, x, y, calib = _graph(session, name)
    opts = {"calib_data": calib, **CASES[name]}
    dep = build_deployment(g, opts, session, CBackend())
    proj = projects / name
    proj.mkdir()
    render_project(dep, {**opts, "test_vectors": (x, y), "test_count": N_INPUTS, "test_learn": N_LEARN}, proj)
    out = c_harness.run_host(c_harness.build_host(proj, sanitize=True))
    sim = Simulator(dep)
    feats = sim.features(x)
    for i in range(N_INPUTS):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")
    _, p = sim.predict_features(feats)
    got = np.stack([out.before[i][1] for i in range(N_INPUTS)])
    np.testing.assert_allclose(got, p, atol=1e-5)
    for i in range(N_LEARN):
        sim.learn_features(feats[i % N_INPUTS], int(y[i % N_INPUTS]))
    assert out.buffer == sim.buffer.count
    for l, layer in enumerate(sim.classifier.layers):
        scale = max(np.abs(layer.weight).max(), 1e-3)
        assert np.abs(out.weights[l] - layer.weight.reshape(-1)).max() <= 1e-4 * scale, f"layer {l} weights"
        assert np.abs(out.bias[l] - layer.bias).max() <= 1e-4 * max(np.abs(layer.bias).max(), 1e-3)
    _, p2 = sim.predict_features(feats)
    np.testing.assert_allclose(np.stack([out.after[i][1] for i in range(N_INPUTS)]), p2, atol=1e-4)
    # the arrays the C code declares are exactly the memory model's figures
    assert out.memory["ram"] == dep.memory["ram"] and out.memory["arena"] == c_arena(dep.extractor)
    assert c_harness.model_ram(proj / "demo_asan") == dep.memory["static_ram"]


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("name,cpu,board", [("digits", "m4", None), ("digits", "m7", None), ("digits", "m0plus", None),
                                            ("digits", "m55", None), ("cnas_like", "m4", None),
                                            ("cnas_like", "m0plus", "microbit")])
def test_cortex_m_qemu_matches_host(session, tmp_path: Path, name: str, cpu: str, board: str | None) -> None:
    """-Os -Wall -Wextra -Werror builds for Cortex-M4 (run on mps2-an386), M7 (mps2-an500, double-precision
    FPU), M55 (mps3-an547, its own memory map) and M0+ (ARMv6-M, soft float; run on the Cortex-M3 board mps2-an385 and, for a model that fits its
    16 KB RAM, on the micro:bit's Cortex-M0, an ARMv6-M core): int8 features exact, float results within the
    stated tolerances, an instruction count per call from -icount."""
    g, x, y, calib = _graph(session, name)
    opts = {"calib_data": calib, **CASES[name]}
    dep = build_deployment(g, opts, session, CBackend())
    render_project(dep, {**opts, "test_vectors": (x[:20], y[:20]), "test_count": 20, "test_learn": 20}, tmp_path)
    host = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=False))
    dev, sections = c_harness.build_and_run_qemu(tmp_path, cpu, board)
    for i in range(20):
        np.testing.assert_array_equal(dev.features[i], host.features[i])
        assert dev.before[i][0] == host.before[i][0]
        np.testing.assert_allclose(dev.before[i][1], host.before[i][1], atol=1e-5)
    for l in host.weights:
        np.testing.assert_allclose(dev.weights[l], host.weights[l], atol=1e-4 * max(1.0, np.abs(host.weights[l]).max()))
    assert sections.get(".text", 0) > 0 and ".bss" in sections
    assert 0 < dev.instructions["features"] <= dev.instructions["predict"]


QEMU_CLOCK_CHECK = r"""
#include <stdio.h>
#include <stdint.h>
#define SYST(o) (*(volatile uint32_t *)(0xE000E010u + (o)))
static void spin(uint32_t n) { __asm volatile(".syntax unified\n1: subs %0, %0, #1\n bne 1b" : "+l"(n) : : "cc"); }
int main(void) {
    uint32_t n, t0;
    SYST(4) = 0xFFFFFFu; SYST(8) = 0u; SYST(0) = 5u;
    for (n = 1000u; n <= 1000000u; n *= 10u) {
        t0 = SYST(8); spin(n);
        printf("ticks spin %lu\n", (unsigned long)((t0 - SYST(8)) & 0xFFFFFFu));
    }
    printf("done\n");
    return 0;
}
"""


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("cpu,board", [("m4", "mps2-an386"), ("m7", "mps2-an500"), ("m0plus", "mps2-an385"),
                                       ("m0plus", "microbit"), ("m55", "mps3-an547")])
def test_qemu_icount_systick_counts_instructions(session, tmp_path: Path, cpu: str, board: str) -> None:
    """The instruction counts of the demo: a loop of 2n instructions reads 2n / (1e9 / clock) SysTick ticks."""
    from tinycc.backends.c import cortexm

    g, x, y, calib = _graph(session, "cnas_like")
    dep = build_deployment(g, {"calib_data": calib, **CASES["cnas_like"]}, session, CBackend())
    render_project(dep, {"calib_data": calib, "test_vectors": (x[:2], y[:2]), "test_count": 2}, tmp_path)
    (tmp_path / "main.c").write_text(QEMU_CLOCK_CHECK)
    out = cortexm.run_qemu(cortexm.build(tmp_path, cpu, board), board)
    counts = [int(l.split()[2]) for l in out.splitlines() if l.startswith("ticks spin")]
    per_tick = 1e9 / cortexm.BOARD_CLOCK_HZ[board]
    assert [abs(c * per_tick - 2 * n) <= per_tick + 20 for c, n in zip(counts, (1000, 10000, 100000, 1000000))] == [True] * 4


def test_budget_failure_writes_nothing(session, tmp_path: Path) -> None:
    from .deploy_util import compile_model

    out = tmp_path / "proj"
    with pytest.raises(BudgetError, match="short by"):
        compile_model(str(ROOT / "examples" / "digits_cnn.h5"), "c", str(out),
                      {"calib": str(ROOT / "examples" / "digits_data.npz"), "ram": 1500}, session)
    assert not out.exists() and not any(tmp_path.iterdir())


def _elementwise_graph(steps: list[tuple[int, int, int]]):
    """A float graph: conv, then element-wise ops (relu, relu6, leaky relu, sigmoid, tanh, hard-swish, softmax
    over channels, add, mul, a squeeze-excite style broadcast mul/add after a global average pool (TFLite's
    requantizing MEAN), convs in between) over earlier activations, then the Dense head."""
    from tinycc.ir.graph import Graph

    rng = np.random.default_rng(len(steps))
    g = Graph("eltwise")
    g.add_input("x", (1, 6, 6, 3))

    def conv(src: str, name: str) -> str:
        w = g.add_const(f"{name}_w", rng.normal(0, 0.4, (8, 3, 3, g.tensors[src].shape[-1])).astype(np.float32))
        b = g.add_const(f"{name}_b", rng.normal(0, 0.1, (8,)).astype(np.float32))
        return g.add_op("conv2d", [src, w.name, b.name], name, {"padding": "same"}).outputs[0]

    acts = [conv("x", "c")]
    for i, (kind, a, b) in enumerate(steps):
        src, other = acts[a % len(acts)], acts[b % len(acts)]
        if kind <= 4 or kind >= 9:
            unary = {0: "relu", 1: "relu6", 2: "leaky_relu", 3: "sigmoid", 4: "tanh", 9: "hard_swish", 10: "softmax"}
            out = g.add_op(unary[kind], [src], f"e{i}").outputs[0]
        elif kind in (5, 6):
            out = g.add_op("add" if kind == 5 else "mul", [src, other], f"b{i}").outputs[0]
        elif kind == 7:
            gp = g.add_op("global_avg_pool", [src], f"g{i}", {"keepdims": True}).outputs[0]
            s = g.add_op("sigmoid", [gp], f"gs{i}").outputs[0]
            out = g.add_op("mul" if b % 2 else "add", [src, s] if a % 2 else [s, src], f"se{i}").outputs[0]
        else:
            out = conv(src, f"c{i}")
        acts.append(out)
    flat = g.add_op("flatten", [acts[-1]], "flat").outputs[0]
    d = g.add_const("dw", rng.normal(0, 0.1, (4, 288)).astype(np.float32))
    g.add_op("dense", [flat, d.name], "fc")
    g.add_op("softmax", ["fc"], "prob")
    g.outputs = ["prob"]
    return g


_INPLACE_EXAMPLE = [(0, 1, 0), (4, 1, 0), (7, 1, 1), (5, 3, 1), (2, 4, 0), (8, 5, 0), (6, 6, 5)]
_NEW_KERNELS_EXAMPLE = [(9, 0, 0), (7, 1, 0), (10, 2, 0), (5, 3, 1), (9, 4, 0), (8, 5, 0)]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.integers(0, 10), st.integers(0, 20), st.integers(0, 20)), min_size=2, max_size=9))
@example(steps=_INPLACE_EXAMPLE)
@example(steps=_NEW_KERNELS_EXAMPLE)
def test_inplace_c_matches_int8_interpreter_on_random_graphs(session, tmp_path_factory, steps) -> None:
    """Random element-wise graphs planned in place: the generated C (ASan/UBSan) computes the int8 reference
    interpreter's features bit-exactly, and declares the arena the memory model reports."""
    from tinycc.memory import plan

    g = _elementwise_graph(steps)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    rng = np.random.default_rng(7)
    calib, x = rng.normal(0, 1, (64, 6, 6, 3)).astype(np.float32), rng.normal(0, 1, (12, 6, 6, 3)).astype(np.float32)
    opts = {"calib_data": calib, "buffer": 2}
    dep = build_deployment(g, opts, session, CBackend())
    proj = tmp_path_factory.mktemp("eltwise")
    render_project(dep, {**opts, "test_vectors": (x, np.zeros(len(x), np.int64)), "test_count": len(x),
                         "test_learn": 1}, proj)
    out = c_harness.run_host(c_harness.build_host(proj, sanitize=True))
    feats = Simulator(dep).features(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")
    assert out.memory["arena"] == c_arena(dep.extractor, opts)
    assert out.memory["ram"] == dep.memory["ram"]
    p = plan(dep.extractor)
    assert p.arena <= plan(dep.extractor, inplace=False).arena and p.lower_bound <= p.arena
    if steps == _INPLACE_EXAMPLE:
        assert len(p.inplace) >= 3, p.inplace
    if steps == _NEW_KERNELS_EXAMPLE:
        code = (proj / "model.c").read_text()
        assert all(f"{k}(" in code for k in ("tcc_hard_swish_s8", "tcc_softmax_s8", "tcc_mean_s8")), code[:2000]


def test_no_inplace_option_reaches_the_plan_the_code_and_the_memory_model(session, tmp_path: Path) -> None:
    from tinycc.cli import build_parser
    from tinycc.config import from_args
    from tinycc.backends.c.overlap import c_overlaps
    from tinycc.memory import plan

    args = build_parser(session).parse_args(["compile", "m.h5", "-t", "c", "-o", "out", "--no-inplace"])
    assert from_args(args, session.registry).memory.inplace is False
    g = _elementwise_graph(_INPLACE_EXAMPLE)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    x = np.random.default_rng(7).normal(0, 1, (64, 6, 6, 3)).astype(np.float32)
    arenas = {}
    for off in (False, True):
        opts = {"calib_data": x, "buffer": 2, "no_inplace": off}
        dep = build_deployment(g.copy(), opts, session, CBackend())
        proj = tmp_path / str(off)
        render_project(dep, {**opts, "test_vectors": (x[:8], np.zeros(8, np.int64)), "test_count": 8,
                             "test_learn": 1}, proj)
        out = c_harness.run_host(c_harness.build_host(proj, sanitize=False))
        np.testing.assert_array_equal(np.stack([out.features[i] for i in range(8)]), Simulator(dep).features(x[:8]))
        arenas[off] = out.memory["arena"]
        model_arena = [i["bytes"] for i in dep.memory["items"] if i["name"] == "feature extractor arena"]
        assert model_arena == [arenas[off]] == [c_arena(dep.extractor, opts)]
        assert out.memory["ram"] == dep.memory["ram"]
        assert arenas[off] == max(plan(dep.extractor, inplace=not off,
                                       overlap=None if off else c_overlaps(dep.extractor, "tinycc")).arena, 16)
    assert arenas[True] > arenas[False]
