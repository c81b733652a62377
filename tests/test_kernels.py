"""The kernel generator (backends/c/kernels): per-layer specialized C equals the int8 reference interpreter
bit for bit on random convolution, depthwise and dense layers (host gcc with ASan/UBSan: the portable path;
Cortex-M4 under QEMU: the DSP path; Cortex-M0+: the portable path on ARMv6-M)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tinycc.backends.c import CBackend
from .deploy_util import render_project
from .deploy_util import build_emit_model
from tinycc.ir.graph import Graph
from tinycc.ir.simulator import Simulator
from tinycc.passes import PassContext, run_pipeline
from .deploy_util import build_deployment

from . import c_harness
from .conftest import mlperf_model

ACTS = ("none", "relu", "relu6")
# one layer: (kind 0 conv / 1 depthwise / 2 pointwise, kernel h, kernel w, stride, dilation, same padding,
#             channels, activation, bias)
Layer = tuple[int, int, int, int, int, bool, int, int, bool]
LAYER = st.tuples(st.integers(0, 2), st.integers(1, 5), st.integers(1, 5), st.integers(1, 2), st.integers(1, 2),
                  st.booleans(), st.integers(1, 9), st.integers(0, 2), st.booleans())
# odd and even sizes, channel counts that are and are not multiples of 4, padding, stride, dilation, no bias
FIXED: list[Layer] = [(0, 3, 3, 1, 1, True, 8, 1, True), (1, 3, 3, 2, 1, True, 8, 2, True),
                      (2, 1, 1, 1, 1, False, 7, 0, False), (0, 2, 3, 2, 1, False, 5, 0, True),
                      (1, 5, 5, 1, 2, True, 5, 1, False), (0, 3, 2, 1, 2, True, 6, 2, True)]


def random_graph(layers: list[Layer], hw: tuple[int, int] = (9, 7), cin: int = 3, dense: int = 5,
                 seed: int = 0, after: dict[int, str] | None = None) -> Graph:
    """input -> the layers (shapes that would not fit are shrunk; `after` puts a unary op such as sigmoid after
    layer i) -> flatten -> Dense(dense) -> Dense head."""
    rng = np.random.default_rng(seed)
    g = Graph("kernels")
    g.add_input("x", (1, *hw, cin))
    src = "x"
    for i, (kind, kh, kw, stride, dil, same, ch, act, bias) in enumerate(layers):
        h, w, c = g.tensors[src].shape[1:]
        if stride > 1:
            dil = 1  # TFLite/Keras: no stride > 1 with dilation > 1
        kh, kw = (1, 1) if kind == 2 else (min(kh, (h - 1) // dil + 1), min(kw, (w - 1) // dil + 1))
        attrs = {"padding": "same" if same else "valid", "strides": (stride, stride), "dilation": (dil, dil),
                 "activation": ACTS[act]}
        if kind == 1:
            wt = rng.normal(0, 0.5, (1, kh, kw, c))
            ch = c
        else:
            wt = rng.normal(0, 0.5 / np.sqrt(kh * kw * c), (ch, kh, kw, c))
            wt[0] *= 0.05  # per-channel scales that differ a lot
        ins = [src, g.add_const(f"w{i}", wt.astype(np.float32)).name]
        if bias:
            ins.append(g.add_const(f"b{i}", rng.normal(0, 0.3, (ch,)).astype(np.float32)).name)
        kname = "depthwise_conv2d" if kind == 1 else "conv2d"
        src = g.add_op(kname, ins, f"l{i}", attrs).outputs[0]
        if after and i in after:
            src = g.add_op(after[i], [src], f"u{i}").outputs[0]
    flat = g.add_op("flatten", [src], "flat").outputs[0]
    n = int(np.prod(g.tensors[flat].shape[1:]))
    d1 = g.add_const("fc_w", rng.normal(0, 1 / np.sqrt(n), (dense, n)).astype(np.float32))
    d1b = g.add_const("fc_b", rng.normal(0, 0.2, (dense,)).astype(np.float32))
    fc = g.add_op("dense", [flat, d1.name, d1b.name], "fc", {"activation": "none"}).outputs[0]
    d2 = g.add_const("head_w", rng.normal(0, 0.3, (3, dense)).astype(np.float32))
    g.add_op("dense", [fc, d2.name], "head")
    g.add_op("softmax", ["head"], "prob")
    g.outputs = ["prob"]
    return g


def _deployment(session, layers: list[Layer], seed: int, kernels: str = "tinycc",
                after: dict[int, str] | None = None):
    g = random_graph(layers, seed=seed, after=after)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    rng = np.random.default_rng(seed)
    shift = rng.uniform(-1.5, 1.5)  # the input zero point moves away from 0
    calib = (rng.normal(shift, 1, (48, 9, 7, 3))).astype(np.float32)
    x = (rng.normal(shift, 1.3, (10, 9, 7, 3))).astype(np.float32)
    opts = {"calib_data": calib, "buffer": 2, "cut": "fc", "kernels": kernels}
    return build_deployment(g, opts, session, CBackend()), opts, x


def _project(session, tmp: Path, layers: list[Layer], seed: int) -> tuple[Path, object, np.ndarray]:
    dep, opts, x = _deployment(session, layers, seed)
    em = build_emit_model(dep, opts)
    specialized = [c for c in em.calls if c.fn.startswith("tcc_layer_")]
    assert len(specialized) == len(layers) + 1, [c.fn for c in em.calls]  # every layer and the Φf dense
    render_project(dep, {**opts, "test_vectors": (x, np.zeros(len(x), np.int64)), "test_count": len(x),
                         "test_learn": 1}, tmp)
    return tmp, dep, x


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layers=st.lists(LAYER, min_size=1, max_size=4), seed=st.integers(0, 1000))
@example(layers=FIXED, seed=3)
def test_specialized_layers_equal_int8_interpreter(session, tmp_path_factory, layers, seed) -> None:
    proj, dep, x = _project(session, tmp_path_factory.mktemp("kern"), layers, seed)
    out = c_harness.run_host(c_harness.build_host(proj, sanitize=True))
    feats = Simulator(dep).features(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")
    assert out.memory["ram"] == dep.memory["ram"]  # no scratch memory: the arena and RAM are unchanged


def test_generic_option_keeps_the_runtime_loops(session) -> None:
    from tinycc.cli import build_parser
    from tinycc.config import from_args

    args = build_parser(session).parse_args(["compile", "m.h5", "-t", "c", "-o", "out", "--kernels", "generic"])
    assert from_args(args, session.registry).kernels == "generic"
    dep, opts, _ = _deployment(session, FIXED[:2], 1, kernels="generic")
    em = build_emit_model(dep, opts)
    assert not em.kernels and {c.fn for c in em.calls} >= {"tcc_conv2d_s8", "tcc_dwconv2d_s8", "tcc_fc_s8"}
    em2 = build_emit_model(dep, {**opts, "kernels": "tinycc"})
    assert [k.family for k in em2.kernels] == ["conv", "depthwise", "gemm"]
    # the same flash tables either way (some only where the assembly loops are not built, under !TCC_DSP_ASM), plus
    # (Cortex-M4/M7 only, under TCC_DSP_ASM) the weights widened at compile time for the assembly loops, which the
    # memory report counts for such cores: the memory model holds for both
    from tinycc.backends.c.kernels import table_bytes

    assert sum(a.count for a in em.arrays) == sum(a.count for a in em2.arrays if a.guard != "TCC_DSP_ASM")
    assert {a.guard for a in em2.arrays} == {"", "TCC_DSP_ASM", "!TCC_DSP_ASM"}
    widened = [a for a in em2.arrays if a.guard == "TCC_DSP_ASM"]
    assert widened and all(a.guard == "TCC_DSP_ASM" and a.ctype == "int32_t" for a in widened)
    assert table_bytes(dep.extractor, "tinycc") == 4 * sum(a.count for a in widened)
    assert table_bytes(dep.extractor, "tinycc", dsp=False) == table_bytes(dep.extractor, "generic") == 0


# Cortex-M4/M7's assembly 2x2 block: convolutions on 4 and 8 input channels (windows widened, zeros for padding)
# with padding, stride 2, dilation 2 and an odd output width (7: the last pixel runs with a zero partner), the
# im2col path on 3 channels (27 = 24 + a tail of 3), depthwise with widened weights, pointwise on 8 channels
WIDE: list[Layer] = [(0, 3, 3, 1, 1, True, 8, 1, True), (0, 3, 3, 1, 2, True, 8, 0, True),
                     (1, 3, 3, 1, 1, True, 8, 2, False), (0, 2, 3, 1, 1, False, 4, 2, False),
                     (0, 3, 3, 2, 1, True, 8, 1, True), (2, 1, 1, 1, 1, False, 8, 0, True)]


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("cpu", ["m4", "m7"])
def test_assembly_block_layers_under_qemu(session, tmp_path: Path, cpu: str) -> None:
    proj, dep, x = _project(session, tmp_path, WIDE, 11)
    model_c = (proj / "model.c").read_text()
    # weights widened at compile time (im2col, wide and pointwise): fully unrolled and looping several times
    loops = [(xw, int(n), int(k))
             for xw, n, k in re.findall(r"TCC_DOT2X2_WW_\((\w+), (\d+), [^,]+, acc, TCC_WW_STEPS_(\d+)\)", model_c)]
    passes = re.findall(r"TCC_DOT2X2_WW1_\((\w+), [^,]+, acc, ", model_c)
    assert {xw for xw, _, _ in loops} | set(passes) == {"colw", "col", "xw"}, (loops, passes)
    assert passes and loops and all(k < n // 4 for _, n, k in loops), loops
    assert "tcc_dwmac4_w(" in model_c and "tcc_rq30d(" in model_c  # requantization from the widened weights' header
    out, _ = c_harness.build_and_run_qemu(proj, cpu)
    feats = Simulator(dep).features(x)
    assert len(out.features) == len(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"{cpu} features of input {i}")


# Cortex-M4/M7's pointwise assembly blocks (TCC_GEMM2_: a pixel pair against every channel pair; TCC_GEMM8_:
# 8 inputs held in registers, one channel at a time). Two short chains (a long one of random layers loses the
# input: its features stop depending on it): inputs 72 (18 steps, looping by 2), 128 (looping by 8), 12 (and
# the layer without a bias keeps its zero point: widened by the caller), 16 and 8 (one pass; 8 with a folded zero
# point: TCC_GEMM8_ by 2, 1 and 4 channels per compare); channel counts 10 and 6 (not multiples of 4), 9 and 7
# (odd: TCC_GEMM2_'s last channel in C); 63 pixels (odd: the last runs alone, TCC_GEMM1_) and, after a stride-2
# convolution, 20; activations none and ReLU.
POINTWISE: dict[str, list[Layer]] = {
    "deep": [(0, 3, 3, 1, 1, True, 72, 0, True), (2, 1, 1, 1, 1, False, 128, 0, True),
             (2, 1, 1, 1, 1, False, 12, 1, True), (2, 1, 1, 1, 1, False, 16, 0, False),
             (2, 1, 1, 1, 1, False, 9, 0, True)],
    "narrow": [(0, 3, 3, 1, 1, True, 8, 0, True), (2, 1, 1, 1, 1, False, 10, 1, True),
               (0, 3, 3, 2, 1, True, 8, 0, True), (2, 1, 1, 1, 1, False, 7, 0, True),
               (0, 1, 1, 1, 1, False, 8, 0, True), (2, 1, 1, 1, 1, False, 12, 0, True),
               (2, 1, 1, 1, 1, False, 8, 0, True), (2, 1, 1, 1, 1, False, 6, 0, False)]}
# per chain: (inputs, outputs, widened in the block, steps per pass, looping) of every pair block; the inputs of
# the single-pixel blocks; (outputs, pixels, channels per compare) of the 8-input blocks
POINTWISE_BLOCKS = {
    "deep": ({(72, 128, True, 2, True), (128, 12, True, 8, True), (12, 16, False, 3, False),
              (16, 9, True, 4, False)}, [72, 128, 12, 16], set()),
    "narrow": ({(12, 8, True, 3, False), (8, 6, False, 2, False)}, [],
               {(10, 63, 2), (7, 20, 1), (12, 20, 4)})}


@pytest.mark.parametrize("chain", list(POINTWISE))
@pytest.mark.parametrize("cpu", ["host", "m4", "m7"])
def test_pointwise_assembly_block(session, tmp_path: Path, chain: str, cpu: str) -> None:
    """Each chain equals the int8 interpreter: on the host (the portable path, ASan/UBSan) and under QEMU on
    Cortex-M4/M7, where every pointwise layer with a multiple of 4 inputs runs TCC_GEMM2_ / TCC_GEMM1_ as
    listed. The features depend on the input (a wrong block would show)."""
    if cpu != "host" and not c_harness.have_arm():
        pytest.skip("arm-none-eabi-gcc or qemu-system-arm not installed")
    proj, dep, x = _project(session, tmp_path, POINTWISE[chain], 7)
    model_c = (proj / "model.c").read_text()
    widen = r'(""|TCC_GW_(?:ONE|LOOP)_\(TCC_GS_\d+\(TCC_GW[12]_[^)]*\)+, \d+\)),\s+TCC_GS_(ONE|LOOP)_\(TCC_GS_(\d+)'
    pairs = re.findall(r"TCC_GEMM2_\(x, xw, (\d+), wwp, y, (\d+), " + widen + r"\(TCC_G2_", model_c)
    singles = re.findall(r"TCC_GEMM1_\(x, xw, (\d+), wwp, y, " + widen + r"\(TCC_G1_", model_c)
    assert {(int(n), int(oc), w != '""', int(k), kind == "LOOP") for n, oc, w, kind, k in pairs} == \
        POINTWISE_BLOCKS[chain][0], pairs
    assert sorted(int(n) for n, *_ in singles) == sorted(POINTWISE_BLOCKS[chain][1]), singles
    whole = re.findall(r"TCC_GEMM8_\(in, wwp, out, (\d+), (\d+), TCC_GS_(\d+)\(TCC_G8_CH_\)\);", model_c)
    assert {(int(oc), int(p), int(k)) for p, oc, k in whole} == POINTWISE_BLOCKS[chain][2], whole
    if cpu == "host":
        out = c_harness.run_host(c_harness.build_host(proj, sanitize=True))
    else:
        out, _ = c_harness.build_and_run_qemu(proj, cpu)
    feats = Simulator(dep).features(x)
    assert len({tuple(f) for f in feats}) == len(x)  # the features depend on the input
    assert len(out.features) == len(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"{cpu} features of input {i}")


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("cpu", ["m4", "m7", "m0plus"])
def test_specialized_layers_under_qemu(session, tmp_path: Path, cpu: str) -> None:
    """The DSP path (Cortex-M4/M7: SIMD dot products, unaligned word loads) and ARMv6-M's Thumb-1 loops and
    16-bit requantization."""
    layers = FIXED + [(2, 1, 1, 1, 1, False, 9, 1, True)]
    proj, dep, x = _project(session, tmp_path, layers, 5)
    out, _ = c_harness.build_and_run_qemu(proj, cpu)
    feats = Simulator(dep).features(x)
    assert len(out.features) == len(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"{cpu} features of input {i}")


def test_logistic_and_tanh_by_table(session, tmp_path: Path) -> None:
    """LOGISTIC and TANH run as 256-entry tables that equal the int8 interpreter (host, ASan/UBSan) and are
    counted in the memory report's flash; --kernels generic keeps the fixed-point routines and no table."""
    layers = FIXED[:2]
    dep, opts, x = _deployment(session, layers, 7, after={0: "sigmoid", 1: "tanh"})
    em = build_emit_model(dep, opts)
    assert [k.family for k in em.kernels].count("lut") == 2
    assert not {"tcc_logistic_s8", "tcc_tanh_s8"} & {c.fn for c in em.calls}
    items = {i["name"]: i["bytes"] for i in dep.memory["items"]}
    assert items["kernel lookup tables"] == 512
    assert sum(a.count for a in em.arrays if a.name.endswith("_table")) == 512
    gen, _, _ = _deployment(session, layers, 7, kernels="generic", after={0: "sigmoid", 1: "tanh"})
    assert "kernel lookup tables" not in {i["name"] for i in gen.memory["items"]}
    gen_calls = {c.fn for c in build_emit_model(gen, {**opts, "kernels": "generic"}).calls}
    assert {"tcc_logistic_s8", "tcc_tanh_s8"} <= gen_calls
    render_project(dep, {**opts, "test_vectors": (x, np.zeros(len(x), np.int64)), "test_count": len(x),
                         "test_learn": 1}, tmp_path)
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    feats = Simulator(dep).features(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_armv6m_loops_build_with_a_frame_pointer(session, tmp_path: Path) -> None:
    """The Thumb-1 loops' register needs leave r7 to a frame pointer: model.c builds for Cortex-M0+ with
    -fno-omit-frame-pointer and at -O0 (folded and non-folded zero points: gemm and padded conv layers)."""
    import subprocess

    (tmp_path / "p").mkdir()
    proj, _, _ = _project(session, tmp_path / "p", FIXED, 2)
    for flags in (["-Os", "-fno-omit-frame-pointer"], ["-O0"]):
        subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft", *flags, "-std=c99",
                        "-Wall", "-Wextra", "-Werror", "-I", str(proj), "-I", str(proj / "runtime"), "-c",
                        str(proj / "model.c"), "-o", str(tmp_path / "model.o")], check=True)


MLPERF_MODELS = ["pretrainedResnet_quant", "kws_ref_model", "vww_96_int8"]  # ad01: the cut leaves no layer in Φf


@pytest.mark.parametrize("name", MLPERF_MODELS)
def test_mlperf_tiny_features_equal_int8_interpreter(session, tmp_path: Path, name: str) -> None:
    """The MLPerf Tiny int8 models (converter output): specialized C (ASan/UBSan) equals run_int8 on 100 inputs."""
    path = str(mlperf_model(f"{name}.tflite"))
    g = session.registry.frontend_for(path).load(path)
    opts = {"buffer": 2}
    dep = build_deployment(g, opts, session, CBackend())
    assert build_emit_model(dep, opts).kernels
    assert dep.plan.overlaps  # convolutions written over the input bytes they have read (tests/test_overlap.py)
    xin = dep.extractor.tensors[dep.extractor.inputs[0]]
    q = next(op for op in dep.extractor.ops if op.kind.value == "quantize")
    qp = dep.extractor.tensors[q.outputs[0]].quant
    rng = np.random.default_rng(0)
    levels = rng.integers(-128, 128, (100, *xin.shape[1:]))
    x = ((levels - int(qp.zero_point[0])) * float(qp.scale[0])).astype(np.float32)
    render_project(dep, {**opts, "test_vectors": (x, np.zeros(len(x), np.int64)), "test_count": len(x),
                         "test_learn": 1}, tmp_path)
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    feats = Simulator(dep).features(x)
    assert len(out.features) == len(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"{name} features of input {i}")


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("name,cpu,kernels", [(n, c, "tinycc") for n in MLPERF_MODELS for c in ("m4", "m7", "m0plus")]
                         + [("kws_ref_model", c, "cmsis-nn") for c in ("m7", "m0plus")])
def test_mlperf_tiny_first_vector_under_qemu(session, tmp_path: Path, name: str, cpu: str, kernels: str) -> None:
    """The MLPerf Tiny models' features on the first test vector under QEMU (DSP path on M4/M7, Thumb-1 loops on
    M0+; and the --kernels cmsis-nn project on M7 and M0+) equal run_int8 bit for bit."""
    from tinycc.backends.c import cmsis_nn

    cmsis_dir = None
    if kernels == "cmsis-nn":
        from .test_cmsis_nn import VENDOR

        archive = cmsis_nn.vendor_archive(VENDOR)
        if archive is None:
            pytest.skip(f"no cmsis-nn-*.tar.xz in {VENDOR} (set TINYCC_VENDOR)")
        cmsis_dir = cmsis_nn.extract(archive)
    path = str(mlperf_model(f"{name}.tflite"))
    g = session.registry.frontend_for(path).load(path)
    opts = {"buffer": 2, "kernels": kernels}
    dep = build_deployment(g, opts, session, CBackend())
    xin = dep.extractor.tensors[dep.extractor.inputs[0]]
    q = next(op for op in dep.extractor.ops if op.kind.value == "quantize")
    qp = dep.extractor.tensors[q.outputs[0]].quant
    levels = np.random.default_rng(1).integers(-128, 128, (1, *xin.shape[1:]))
    x = ((levels - int(qp.zero_point[0])) * float(qp.scale[0])).astype(np.float32)
    render_project(dep, {**opts, "test_vectors": (x, np.zeros(1, np.int64)), "test_count": 1, "test_learn": 1},
                   tmp_path)
    assert bool(dep.plan.overlaps) == (kernels != "cmsis-nn")
    out, _ = c_harness.build_and_run_qemu(tmp_path, cpu, None, cmsis_dir)
    np.testing.assert_array_equal(out.features[0], Simulator(dep).features(x)[0], err_msg=f"{name} on {cpu}")


WRAP_CHECK = r"""
#define main tcc_demo_main
#include "demo_main.c"
#undef main
static void spin(uint32_t n) { __asm volatile(".syntax unified\n1: subs %0, %0, #1\n bne 1b" : "+l"(n) : : "cc"); }
int main(void) {
    uint32_t t0;
    tcc_ticks_start();
    t0 = tcc_ticks();
    spin(400000000u);
    printf("ticks spin %lu\ndone\n", (unsigned long)(tcc_ticks() - t0));
    return 0;
}
"""


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_demo_timing_is_wrap_safe(session, tmp_path: Path) -> None:
    """800 M instructions (past the 24-bit SysTick's 671 M) timed by the demo's tick functions under QEMU M4."""
    from tinycc.backends.c import cortexm

    _project(session, tmp_path, FIXED[:1], 2)
    (tmp_path / "demo_main.c").write_text((tmp_path / "main.c").read_text())
    (tmp_path / "main.c").write_text(WRAP_CHECK)
    out = cortexm.run_qemu(cortexm.build(tmp_path, "m4"), "mps2-an386")
    ticks = [int(l.split()[2]) for l in out.splitlines() if l.startswith("ticks spin")]
    assert len(ticks) == 1 and abs(ticks[0] * 40 - 800_000_000) <= 1000, ticks


def test_input_quantization_rounds_half_away_from_zero(session, tmp_path: Path) -> None:
    """tcc_quantize_f32's inline rounding equals roundf/TFLite on values exactly halfway between steps."""
    dep, opts, _ = _deployment(session, FIXED[:1], 4)
    q = next(op for op in dep.extractor.ops if op.kind.value == "quantize")
    qp = dep.extractor.tensors[q.outputs[0]].quant
    s, zp = float(qp.scale[0]), int(qp.zero_point[0])
    rng = np.random.default_rng(1)
    k = rng.integers(-140 - zp, 140 - zp, (6, 9, 7, 3)).astype(np.float32)
    half = ((k + np.float32(0.5)) * np.float32(s)).astype(np.float32)
    x = np.concatenate([half, -half, rng.normal(0, 40 * s, (2, 9, 7, 3)).astype(np.float32)])
    render_project(dep, {**opts, "test_vectors": (x, np.zeros(len(x), np.int64)), "test_count": len(x),
                         "test_learn": 1}, tmp_path)
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    feats = Simulator(dep).features(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")


HMUL_CHECK = r"""
#include <stdio.h>
#include <stdint.h>
#include "tinycc_gen.h"
static uint32_t s = 12345u;
static uint32_t rnd(void) { s ^= s << 13; s ^= s >> 17; s ^= s << 5; return s; }
int main(void) {
    static const int32_t xs[] = {0, 1, -1, 65535, 65536, -65536, -65537, 32767, -32768, INT32_MAX, INT32_MIN,
                                 INT32_MIN + 1, 0x7FFF8000, -0x7FFF8000, 0x40000000, -0x40000000};
    static const int32_t ms[] = {0, 1, 65535, 65536, 0x40000000, 0x7FFFFFFF, 0x7FFF0000, 0x4000FFFF, 0x5555AAAA};
    long bad = 0, n = 0;
    unsigned i, j;
    for (i = 0; i < sizeof xs / sizeof xs[0]; ++i)
        for (j = 0; j < sizeof ms / sizeof ms[0]; ++j, ++n)
            bad += tcc_hmul31(xs[i], ms[j]) != (int32_t)(((int64_t)xs[i] * ms[j] + ((int64_t)1 << 30)) >> 31);
    for (i = 0; i < 2000000u; ++i, ++n) {
        const int32_t x = (int32_t)(rnd() >> (rnd() & 31u)) * ((rnd() & 1u) ? -1 : 1);
        const int32_t m = (int32_t)((rnd() >> 1) | ((rnd() & 1u) << 30));
        bad += tcc_hmul31(x, m) != (int32_t)(((int64_t)x * m + ((int64_t)1 << 30)) >> 31);
    }
    printf("checked %ld bad %ld\n", n, bad);
    return 0;
}
"""


def test_high_multiply_without_64_bit_product_is_exact(tmp_path: Path) -> None:
    """ARMv6-M's requantization (tcc_hmul31 from four 16x16 products, TCC_HMUL16) equals the 64-bit product on
    edge values and 2 M random pairs; host gcc with UBSan (no signed overflow in the 32-bit sums)."""
    import subprocess

    runtime = Path(__file__).resolve().parents[1] / "backends" / "c" / "runtime"
    (tmp_path / "hmul.c").write_text(HMUL_CHECK)
    exe = tmp_path / "hmul"
    subprocess.run(["gcc", "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-fsanitize=undefined",
                    "-fno-sanitize-recover=all", "-DTCC_HMUL16=1", f"-I{runtime}", "-o", str(exe),
                    str(tmp_path / "hmul.c")], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["checked", str(16 * 9 + 2_000_000)] and out[3] == "0", out


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("board,cpu", [("mps2_an386", "-mcpu=cortex-m4"), (None, None)])
def test_flash_report_counts_widened_weights_where_they_are_built(session, tmp_path: Path, board, cpu) -> None:
    """The memory report's flash items against the constant arrays model.o defines: on a Cortex-M4 board the
    widened weights (defined under TCC_DSP_ASM) are counted in the kernel tables item and the tables only the
    portable path reads (defined under !TCC_DSP_ASM) are not; exact there as without a board (host build)."""
    import subprocess

    g = random_graph(WIDE, seed=11)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    rng = np.random.default_rng(11)
    opts = {"calib_data": rng.normal(0.3, 1, (48, 9, 7, 3)).astype(np.float32), "buffer": 2, "cut": "fc"}
    if board:
        opts.update(board=board, ram=10 ** 7, flash=10 ** 8)
    dep = build_deployment(g, opts, session, CBackend())
    render_project(dep, opts, tmp_path)
    cc, nm = ("arm-none-eabi-gcc", "arm-none-eabi-nm") if board else ("gcc", "nm")
    flags = [cpu, "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-Os"] if board else ["-O1"]
    obj = tmp_path / "model.o"
    subprocess.run([cc, *c_harness.STRICT, *flags, "-c", "-I", str(tmp_path), "-I", str(tmp_path / "runtime"),
                    str(tmp_path / "model.c"), "-o", str(obj)], check=True)
    sizes = {p[3]: int(p[1], 16) for p in (l.split() for l in subprocess.run(
        [nm, "-S", str(obj)], capture_output=True, text=True, check=True).stdout.splitlines())
        if len(p) == 4 and p[2] in "rR" and p[3].startswith("tcc_")}
    from tinycc.backends.c.kernels import widened_weight_bytes

    flash = {i["name"]: i["bytes"] for i in dep.memory["items"] if i["section"] == "flash" and i["name"] != "code"}
    widened = sum(n for k, n in sizes.items() if k.endswith("_widened"))
    assert widened == (widened_weight_bytes(dep.extractor) if board else 0) and (widened > 0) == bool(board)
    assert sum(sizes.values()) == sum(flash.values()), (sizes, flash)


RQ30D_CHECK = r"""#include <stdio.h>
#include <stdint.h>
#include "tinycc_gen.h"
static uint32_t s = 12345u;
static uint32_t rnd(void) { s ^= s << 13; s ^= s >> 17; s ^= s << 5; return s; }
/* tcc_requant_rf30(x, m, r) + zp from the 64-bit product: round(x * m / 2^31) (half up), then round by r */
static int32_t ref(int32_t x, int32_t m, int32_t r, int32_t zp) {
    const int64_t h = ((int64_t)x * m + ((int64_t)1 << 30)) >> 31;
    return (int32_t)((h + ((int64_t)1 << (r - 1)) - (h < 0)) >> r) + zp;
}
int main(void) {
    long bad = 0, n = 0, k;
    int32_t x, r, zp;
    for (r = 1; r <= 30; ++r)  /* small |x| whose high product rounds to 0, both signs, every shift */
        for (x = -300; x <= 300; ++x)
            for (zp = -128; zp <= 127; zp += 85, ++n) {
                const int32_t m = 0x40000000 + (int32_t)(rnd() & 0x3FFFFFFF);
                const int32_t c = ((int32_t)1 << (r - 1)) + zp * ((int32_t)1 << r);
                if ((int64_t)128 << r >= ((int64_t)1 << 31) - ((int64_t)1 << r)) continue;
                bad += tcc_rq30d(2 * x, m, c, r) != ref(x, m, r, zp);
            }
    for (k = 0; k < 2000000; ++k, ++n) {
        const int32_t rr = 1 + (int32_t)(rnd() % 22u), z = (int32_t)(rnd() & 255u) - 128;
        const int32_t m = 0x40000000 + (int32_t)(rnd() & 0x3FFFFFFF);
        const int32_t xx = (int32_t)(rnd() >> (2 + (rnd() & 31u) % 30u)) * ((rnd() & 1u) ? -1 : 1);
        const int32_t c = ((int32_t)1 << (rr - 1)) + z * ((int32_t)1 << rr);
        bad += tcc_rq30d(2 * xx, m, c, rr) != ref(xx, m, rr, z);
    }
    printf("checked %ld bad %ld\n", n, bad);
    return 0;
}
"""


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_doubled_requantization_by_one_smmlar_is_exact(tmp_path: Path) -> None:
    """tcc_rq30d on Cortex-M4 (one smmlar with c plus the accumulator's sign) equals the 64-bit reference of
    tcc_requant_rf30 + zero point: every shift 1..30 with small accumulators (high products rounding to 0, both
    signs) and 2 M random cases, under QEMU; the same program on the host (portable path, UBSan)."""
    import subprocess

    from tinycc.targets import BUILTIN_TARGETS

    m4 = next(t for t in BUILTIN_TARGETS if t.name == "m4")
    runtime = Path(__file__).resolve().parents[1] / "backends" / "c" / "runtime"
    templates = runtime.parent / "templates" / "cortexm"  # plain C and linker script (no template tags)
    (tmp_path / "startup.c").write_text((templates / "startup.c.j2").read_text())
    (tmp_path / "link.ld").write_text((templates / "link.ld.j2").read_text())
    (tmp_path / "rq.c").write_text(RQ30D_CHECK)
    elf = tmp_path / "rq.elf"
    subprocess.run(["arm-none-eabi-gcc", *m4.cflags.split(), "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror",
                    f"-I{runtime}", "--specs=rdimon.specs", "-nostartfiles", "-T", str(tmp_path / "link.ld"),
                    "-o", str(elf), str(tmp_path / "startup.c"), str(tmp_path / "rq.c"), "-lm"], check=True)
    assert "smmlar" in subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True,
                                      check=True).stdout
    r = subprocess.run(["qemu-system-arm", "-M", m4.emulator.machine, "-nographic", "-semihosting-config",
                        "enable=on,target=native", "-kernel", str(elf)], capture_output=True, text=True, timeout=600)
    out = r.stdout.split()
    assert out[:1] == ["checked"] and int(out[1]) > 2_000_000 and out[3] == "0", r.stdout[-500:] + r.stderr[-500:]
    exe = tmp_path / "rq_host"
    subprocess.run(["gcc", "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-fsanitize=undefined",
                    "-fno-sanitize-recover=all", f"-I{runtime}", "-o", str(exe), str(tmp_path / "rq.c")], check=True)
    host = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    assert host[:2] == out[:2] and host[3] == "0", host
