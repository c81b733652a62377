"""The fast depthwise kernel (backends/c/kernels/depthwise_fast.c.j2): bit-exact against the int8 interpreter on
its paths (Cortex-M4/M7 under QEMU: the assembly loops, literal pixel pairs, edge classes of narrow layers and
tap pointers; Cortex-M0+: the Thumb-1 blocks, and C for windows over 10 taps; the host with ASan/UBSan: the
portable loops), for stride 1 and 2, dilation, 'same' and 'valid'
padding, 3x3 and 5x5 windows, per-channel multipliers, and beside it the general kernel for channel counts that
are not a multiple of 4; every plan overlaps the kernels' outputs with their inputs (the backward walk)."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.backends.c.kernels import depthwise
from tinycc.ir.simulator import Simulator
from tinycc.passes import PassContext, run_pipeline

from . import c_harness
from .deploy_util import build_deployment, build_emit_model, render_project
from .test_kernels import Layer, random_graph

# (kind 0 conv / 1 depthwise / 2 pointwise, kh, kw, stride, dilation, same, channels, activation, bias): pointwise
# layers set the channel count, the depthwise layers have activation none (the fast kernel saturates to int8)
NARROW: list[Layer] = [(2, 1, 1, 1, 1, False, 8, 0, True), (1, 3, 3, 1, 1, True, 8, 0, True),
                       (1, 3, 3, 2, 1, True, 8, 0, True), (2, 1, 1, 1, 1, False, 12, 0, True),
                       (1, 3, 3, 1, 1, False, 12, 0, True), (1, 2, 2, 1, 2, True, 12, 0, True)]
WIDE: list[Layer] = [(2, 1, 1, 1, 1, False, 4, 0, True), (1, 3, 3, 1, 1, True, 4, 0, True),
                     (1, 5, 5, 2, 1, True, 4, 0, True), (2, 1, 1, 1, 1, False, 5, 0, True),
                     (1, 3, 3, 1, 1, True, 5, 0, True)]  # 5 channels: the general kernel
CASES = {"narrow": (NARROW, (9, 7)), "wide": (WIDE, (11, 37))}
# 132 channels: widened on the stack they would take 2,376 B (> WIDE_WEIGHTS), so they are widened in flash
FLASH: list[Layer] = [(2, 1, 1, 1, 1, False, 132, 0, True), (1, 3, 3, 1, 1, True, 132, 0, True),
                      (1, 3, 3, 2, 1, False, 132, 0, True)]


def _project(session, tmp: Path, layers: list[Layer], hw: tuple[int, int], seed: int):
    g = random_graph(layers, hw=hw, seed=seed)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    rng = np.random.default_rng(seed)
    calib = rng.normal(0.7, 1, (48, *hw, 3)).astype(np.float32)  # the input zero point away from 0
    x = rng.normal(0.7, 1.3, (6, *hw, 3)).astype(np.float32)
    opts = {"calib_data": calib, "buffer": 2, "cut": "fc", "kernels": "tinycc"}
    dep = build_deployment(g, opts, session, CBackend())
    render_project(dep, {**opts, "test_vectors": (x, np.zeros(len(x), np.int64)), "test_count": len(x),
                         "test_learn": 1}, tmp)
    return dep, opts, x


def _fast_layers(dep) -> int:
    g = dep.extractor
    return sum(1 for op in g.ops if depthwise.matches(g, op) and depthwise.fast_tables_for(g, op) is not None)


@pytest.mark.parametrize("case", list(CASES))
def test_portable_loops_equal_int8_interpreter(session, tmp_path: Path, case: str) -> None:
    layers, hw = CASES[case]
    dep, opts, x = _project(session, tmp_path, layers, hw, 3)
    dws = sum(1 for kind, *_ in layers if kind == 1)
    assert _fast_layers(dep) == dws - (case == "wide")  # the 5-channel layer runs the general kernel
    assert (tmp_path / "model.c").read_text().count("backward walk") >= 1
    assert any(v < 0 for v in CBackend().overlaps(dep.extractor, dep.config).values())
    assert dep.plan.overlaps
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    feats = Simulator(dep).features(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"{case} features of input {i}")


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("case,cpu", [("narrow", "m4"), ("wide", "m4"), ("narrow", "m7"), ("narrow", "m0plus"),
                                      ("wide", "m0plus")])
def test_assembly_loops_under_qemu(session, tmp_path: Path, case: str, cpu: str) -> None:
    layers, hw = CASES[case]
    dep, opts, x = _project(session, tmp_path, layers, hw, 5)
    code = (tmp_path / "model.c").read_text()
    assert "smmlar %[a0]" in code and "ldr %[u], [%[u], %[c]]" in code  # the literal and the pointer loops
    assert "ldrsb %[x], [%[x], %[i]]" in code  # ARMv6-M's blocks
    out, _ = c_harness.build_and_run_qemu(tmp_path, cpu)
    feats = Simulator(dep).features(x)
    assert len(out.features) == len(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"{case} on {cpu}, input {i}")


def test_column_schedule_covers_each_pixel_once() -> None:
    """Interior rows: literal blocks and the pointer loop visit every output column exactly once, in order."""
    from tinycc.backends.c.overlap import Geometry

    for (ow, iw, k, s, pad), ic in itertools.product(((5, 5, 3, 1, 1), (24, 48, 3, 2, 0), (6, 6, 3, 1, 1),
                                                       (1, 3, 3, 1, 0), (7, 9, 5, 1, 1), (33, 37, 5, 1, 0),
                                                       (7, 7, 3, 1, 1), (16, 16, 3, 1, 1), (17, 17, 3, 1, 1)),
                                                      (8, 32)):
        x = Geometry(9, iw, ic, 9, ow, ic, k, k, 1, s, 1, 1, 1, pad)
        ctx = depthwise.fast_context(x, True, True, False)
        cols: list[int] = []
        for ox, n, loop in ctx["BLOCKS"]:
            if n == -1:
                cols += list(range(ctx["RUN"][0], ctx["RUN"][1]))
            else:
                cols += list(range(ox, ox + n))
        assert cols == list(range(ow)), (ow, ctx["BLOCKS"])
        # 32 channels, 3x3 stride 1, 'same', 16+ wide: the edge pairs of interior rows run the pair
        # pointer loop (block loop -3; an odd width leaves the right edge pixel to the single pointer loop)
        edge_pairs = [b for b in ctx["BLOCKS"] if b[2] == -3]
        pairs = (ic, k, s, pad) == (32, 3, 1, 1) and ow * ic // 4 >= depthwise.PAIR_ROW_WORK
        assert len(edge_pairs) == ((2 - ow % 2) if pairs else 0)
        # one loop label each, and the frame pushed below the stack pointer once, before the loop (and popped
        # after it): backends/c/stack.py counts such pushes
        push = f"strd %[u], %[q], [sp, #-{depthwise.FRAME}]!"
        assert all(loop.count("1:") == 1 and loop.index(push) < loop.index("1:") and loop.count(push) == 1
                   and sum("[sp, #-" in line for line in loop) == 1 and loop[-1] == f"add sp, sp, #{depthwise.FRAME}"
                   for loop in ctx["LOOPS"])


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_blocks_build_with_a_frame_pointer_and_without_optimization(session, tmp_path: Path) -> None:
    """The 14-register blocks leave no register to a frame pointer: the layer functions omit it themselves, so
    model.c builds for Cortex-M4 with -fno-omit-frame-pointer and at -O0 (and for M0+, whose blocks use six
    low registers, and for the ATmega2560)."""
    import shutil
    import subprocess

    (tmp_path / "p").mkdir()
    _project(session, tmp_path / "p", NARROW, (9, 7), 2)
    proj = tmp_path / "p"
    for cpu in ("cortex-m4", "cortex-m0plus"):
        for flags in (["-Os", "-fno-omit-frame-pointer"], ["-O0"], ["-Og", "-g"]):
            subprocess.run(["arm-none-eabi-gcc", f"-mcpu={cpu}", "-mthumb", "-mfloat-abi=soft", *flags, "-std=c99",
                            "-Wall", "-Wextra", "-Werror", "-I", str(proj), "-I", str(proj / "runtime"), "-c",
                            str(proj / "model.c"), "-o", str(tmp_path / "model.o")], check=True)
    if shutil.which("avr-gcc"):  # 16-bit int: the portable loops' shifts and products stay in 32 bits
        subprocess.run(["avr-gcc", "-mmcu=atmega2560", "-Os", "-std=c99", "-Wall", "-Wextra", "-Werror", "-I",
                        str(proj), "-I", str(proj / "runtime"), "-c", str(proj / "model.c"), "-o",
                        str(tmp_path / "model_avr.o")], check=True)


def _random_layers(seed: int) -> tuple[list[Layer], tuple[int, int]]:
    """A pointwise layer setting 4..16 channels, then one or two depthwise layers of random window (1..5 each
    way), stride, dilation and padding, on a random input size."""
    rng = np.random.default_rng(seed)
    ch = int(rng.choice([4, 8, 12, 16]))
    layers: list[Layer] = [(2, 1, 1, 1, 1, False, ch, 0, True)]
    for _ in range(int(rng.integers(1, 3))):
        layers.append((1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 3)),
                       int(rng.integers(1, 3)), bool(rng.integers(0, 2)), ch, 0, True))
    return layers, (int(rng.integers(3, 12)), int(rng.integers(3, 20)))


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("seed,cpu", [(s, "m4") for s in range(4)] + [(s, "m0plus") for s in (4, 5)])
def test_random_layers_bit_exact(session, tmp_path: Path, seed: int, cpu: str) -> None:
    """Random depthwise geometries (the fast kernel's every path) equal the interpreter under QEMU and on the
    host with ASan/UBSan."""
    layers, hw = _random_layers(seed)
    dep, opts, x = _project(session, tmp_path, layers, hw, seed)
    assert _fast_layers(dep) == len(layers) - 1
    feats = Simulator(dep).features(x)
    out, _ = c_harness.build_and_run_qemu(tmp_path, cpu)
    host = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"{layers} {hw} on {cpu}, input {i}")
        np.testing.assert_array_equal(host.features[i], feats[i], err_msg=f"{layers} {hw} on the host, input {i}")


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("cpu", ["m4", "m0plus"])
def test_weights_widened_in_flash_bit_exact(session, tmp_path: Path, cpu: str) -> None:
    """The fast kernel reads per group of four channels a record made at compile time (bias, requantization
    pairs, weights widened: a flash table under TCC_DSP_ASM, counted by ww_bytes): equal to the interpreter
    under QEMU (M4: the assembly loops read the records; M0+: the int8 weights) and on the host (ASan/UBSan).
    tests/test_widen.py runs the records made on the stack (--no-widen)."""
    dep, opts, x = _project(session, tmp_path, FLASH, (7, 9), 7)
    g = dep.extractor
    dws = [op for op in g.ops if depthwise.matches(g, op)]
    assert len(dws) == 2 and all(depthwise.flash_ww(g, op) for op in dws)
    assert sum(depthwise.ww_bytes(g, op) for op in dws) == 2 * (132 // 4) * (depthwise.REC_HEAD + 2 * 4 * 9)
    rec = depthwise.fast_widened(g, dws[0]).reshape(132 // 4, -1)
    bias, rq, long_c = depthwise.fast_tables(g, dws[0])
    np.testing.assert_array_equal(rec[:, :4].reshape(-1), bias)  # the records hold fast_tables' values
    m, cr = rq.reshape(-1, 2).T
    right = cr & 255
    trip = rec[:, 4:16].reshape(-1, 3)
    np.testing.assert_array_equal(trip[:, 0], m)
    np.testing.assert_array_equal(trip[:, 1], right)
    np.testing.assert_array_equal(trip[:, 2], (cr >> 8) << (right - 1) if long_c else cr >> 8)
    code = (tmp_path / "model.c").read_text()
    assert code.count("per group: bias, requantization, weights */") >= 1 and "uint32_t rec[" not in code
    feats = Simulator(dep).features(x)
    out, _ = c_harness.build_and_run_qemu(tmp_path, cpu)
    host = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"{cpu}, input {i}")
        np.testing.assert_array_equal(host.features[i], feats[i], err_msg=f"host, input {i}")


# runs of interior pairs the assembly walks by itself (stride 1: the output - input distance is fixed; stride 2:
# it grows by 2 * ic a pair), odd widths (a single pixel left of a run), dilation, even windows (padding on one
# side), 5x5 (the pointer loop over window rows, its requantization pairs behind the record pointer), and maps
# one pixel wide (the window shrinks to 3x1: no pair, every pixel a single), the pair pointer loop
RUNS: dict[str, tuple[list[Layer], tuple[int, int]]] = {
    "stride2_odd": ([(2, 1, 1, 1, 1, False, 8, 0, True), (1, 3, 3, 2, 1, True, 8, 0, True),
                     (1, 3, 3, 1, 2, True, 8, 0, True)], (9, 23)),
    "even_5x5": ([(2, 1, 1, 1, 1, False, 12, 0, True), (1, 2, 2, 1, 1, True, 12, 0, True),
                  (1, 5, 5, 1, 1, True, 12, 0, True), (1, 3, 3, 1, 1, False, 12, 0, True)], (8, 17)),
    "one_wide": ([(2, 1, 1, 1, 1, False, 4, 0, True), (1, 3, 3, 1, 1, True, 4, 0, True),
                  (1, 3, 3, 2, 1, True, 4, 0, True)], (11, 1)),
    # 32 channels (8 groups) 16 wide: the edge pairs of interior rows and the padding rows run the pair pointer
    # loop
    "edge_pairs": ([(2, 1, 1, 1, 1, False, 32, 0, True), (1, 3, 3, 1, 1, True, 32, 0, True)], (5, 16)),
}


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("case,cpu", [(c, "m4") for c in RUNS] + [("stride2_odd", "m7")])
def test_runs_edges_and_one_pixel_maps_bit_exact(session, tmp_path: Path, case: str, cpu: str) -> None:
    """Every depthwise layer of the case on the fast kernel; features equal the interpreter under QEMU and on
    the host with ASan/UBSan."""
    layers, hw = RUNS[case]
    dep, opts, x = _project(session, tmp_path, layers, hw, 11)
    assert _fast_layers(dep) == sum(1 for kind, *_ in layers if kind == 1)
    if case == "edge_pairs":  # rows of padding and the interior rows' edges two pixels at a time
        assert (tmp_path / "model.c").read_text().count("tcc_dwpp_3x3_s1d1(st);") == 3  # rows, left, right
    feats = Simulator(dep).features(x)
    out, _ = c_harness.build_and_run_qemu(tmp_path, cpu)
    host = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"{case} on {cpu}, input {i}")
        np.testing.assert_array_equal(host.features[i], feats[i], err_msg=f"{case} on the host, input {i}")


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_vww_records_made_on_the_stack_bit_exact(session, tmp_path: Path) -> None:
    """--no-widen: MobileNetV1 VWW's depthwise layers make their records on the stack at each call (one of them
    with c wider than 24 bits, made from the packed pair at run time): its features under QEMU M4 equal the
    interpreter's, as the flash records' do (tests/test_kernels.py)."""
    from .conftest import mlperf_model

    path = str(mlperf_model("vww_96_int8.tflite"))
    g = session.registry.frontend_for(path).load(path)
    opts = {"buffer": 2, "kernels": "tinycc", "no_widen": True}
    dep = build_deployment(g, opts, session, CBackend())
    ext = dep.extractor
    assert any(depthwise.fast_tables_for(ext, op)[2] for op in ext.ops if depthwise.matches(ext, op))  # long c
    x = np.random.default_rng(2).uniform(-1, 1, (1, *ext.tensors[ext.inputs[0]].shape[1:])).astype(np.float32)
    render_project(dep, {**opts, "test_vectors": (x, np.zeros(1, np.int64)), "test_count": 1, "test_learn": 1},
                   tmp_path)
    code = (tmp_path / "model.c").read_text()
    assert "uint32_t rec[" in code and "TCC_WW(" not in code
    out, _ = c_harness.build_and_run_qemu(tmp_path, "m4")
    np.testing.assert_array_equal(out.features[0], Simulator(dep).features(x)[0])
