"""Helium (MVE) kernels (backends/c/kernels/mve.py) for Cortex-M55: chosen only for a Cortex-M55 board, and
bit-exact with the int8 reference interpreter under QEMU mps3-an547 (the host cannot run MVE; there the same
project runs the scalar version under #else)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.ir.simulator import Simulator

from . import c_harness
from .conftest import mlperf_model
from .deploy_util import build_deployment, build_emit_model, render_project
from .test_kernels import FIXED, Layer, random_graph

# pointwise layers: inputs 3 (the image: a predicated step only), 9 and 20 (16 + a tail), 32 (two full steps);
# outputs 9, 20 and 32 (a partial block of 1 and of 4, whole blocks); 9x7 = 63 pixels (an odd last pixel); one
# layer without bias; the generic convolution/depthwise of FIXED between them; and the dense feature layer
POINTWISE: list[Layer] = [(2, 1, 1, 1, 1, False, 9, 1, True), (2, 1, 1, 1, 1, False, 20, 0, True),
                          (0, 3, 3, 1, 1, True, 16, 2, True), (2, 1, 1, 1, 1, False, 32, 2, False),
                          (1, 3, 3, 1, 1, True, 32, 1, True), (2, 1, 1, 1, 1, False, 7, 0, True)]


# depthwise with 5 and 13 channels (8-lane steps with a predicated tail of 5; 13 = 8 + 5), stride 2, dilation 2 and
# 5x5, valid padding, no bias; FIXED (tests/test_kernels.py) adds odd kernels, stride 2 convolutions, no bias
DEPTHWISE: list[Layer] = [(0, 3, 3, 1, 1, True, 5, 1, True), (1, 3, 3, 2, 1, True, 5, 2, True),
                          (2, 1, 1, 1, 1, False, 13, 0, True), (1, 5, 5, 1, 2, True, 13, 1, False),
                          (1, 3, 3, 1, 1, False, 13, 0, True)]


def _project(session, tmp: Path, board: str | None, seed: int = 7, layers: list[Layer] = POINTWISE):
    g = random_graph(layers, seed=seed)
    from tinycc.passes import PassContext, run_pipeline

    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    rng = np.random.default_rng(seed)
    shift = rng.uniform(-1.5, 1.5)  # the input zero point away from 0: folded into the bias
    calib = rng.normal(shift, 1, (48, 9, 7, 3)).astype(np.float32)
    x = rng.normal(shift, 1.3, (6, 9, 7, 3)).astype(np.float32)
    opts = {"calib_data": calib, "buffer": 2, "cut": "fc", **({"board": board} if board else {})}
    dep = build_deployment(g, opts, session, CBackend())
    em = build_emit_model(dep, opts)
    render_project(dep, {**opts, "test_vectors": (x, np.zeros(len(x), np.int64)), "test_count": len(x),
                         "test_learn": 1}, tmp)
    return dep, em, x


def test_helium_kernels_only_for_cortex_m55(session, tmp_path: Path) -> None:
    _, em, _ = _project(session, tmp_path / "m55", "mps3_an547")
    fams = [k.family for k in em.kernels]
    # pointwise layers (the one without bias subtracts the zero point's share once per call), the 3x3 convolution
    # the depthwise layer and the dense feature layer
    assert fams == ["mve"] * 7, fams
    text = (tmp_path / "m55" / "model.c").read_text()
    assert "#if TCC_MVE" in text and "tcc_mve_dot2x3(" in text and (tmp_path / "m55/runtime/tinycc_mve.h").exists()
    _, em4, _ = _project(session, tmp_path / "m4", "mps2_an386")
    assert "mve" not in [k.family for k in em4.kernels] and "TCC_MVE\n" not in (tmp_path / "m4/model.c").read_text()
    _, em0, _ = _project(session, tmp_path / "any", None)
    assert "mve" not in [k.family for k in em0.kernels]


def test_helium_project_on_the_host_runs_its_scalar_version(session, tmp_path: Path) -> None:
    """The M55 project built by host gcc (ASan/UBSan, -Werror): TCC_MVE is 0, the #else version runs."""
    dep, _, x = _project(session, tmp_path, "mps3_an547")
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    feats = Simulator(dep).features(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("layers,seed", [(POINTWISE, 7), (DEPTHWISE, 8), (FIXED, 9)])
def test_helium_layers_equal_int8_interpreter_under_qemu(session, tmp_path: Path, layers, seed: int) -> None:
    dep, em, x = _project(session, tmp_path, "mps3_an547", seed, layers)
    assert [k.family for k in em.kernels].count("mve") >= len(layers)
    out, _ = c_harness.build_and_run_qemu(tmp_path, "m55")
    feats = Simulator(dep).features(x)
    assert len(out.features) == len(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"m55 features of input {i}")


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("name", ["kws_ref_model", "pretrainedResnet_quant", "vww_96_int8"])
def test_mlperf_first_vector_with_helium_under_qemu(session, tmp_path: Path, name: str) -> None:
    """The MLPerf Tiny models (converter output, per-channel requantization; ResNet-8's residual ADDs, VWW's
    strided depthwise) on the M55 board: the first test vector's features equal run_int8 bit for bit with the
    Helium kernels."""
    path = str(mlperf_model(f"{name}.tflite"))
    g = session.registry.frontend_for(path).load(path)
    opts = {"buffer": 2, "board": "mps3_an547"}
    dep = build_deployment(g, opts, session, CBackend())
    assert "mve" in [k.family for k in build_emit_model(dep, opts).kernels]
    xin = dep.extractor.tensors[dep.extractor.inputs[0]]
    q = next(op for op in dep.extractor.ops if op.kind.value == "quantize")
    qp = dep.extractor.tensors[q.outputs[0]].quant
    levels = np.random.default_rng(1).integers(-128, 128, (1, *xin.shape[1:]))
    x = ((levels - int(qp.zero_point[0])) * float(qp.scale[0])).astype(np.float32)
    render_project(dep, {**opts, "test_vectors": (x, np.zeros(1, np.int64)), "test_count": 1, "test_learn": 1},
                   tmp_path)
    out, _ = c_harness.build_and_run_qemu(tmp_path, "m55")
    np.testing.assert_array_equal(out.features[0], Simulator(dep).features(x)[0], err_msg=f"{name} on m55")


REQUANT_CHECK = r"""
#include <stdio.h>
#include <stdint.h>
#include "tinycc_gen.h"
int main(void) {
    static const int32_t fixed[] = {INT32_MIN, INT32_MIN + 1, -1073741825, -65537, -257, -3, -2, -1, 0, 1, 2, 3,
                                    255, 65536, 1073741823, INT32_MAX - 1, INT32_MAX};
    static const int32_t mults[] = {1, 1073741824, 1073741825, 1518500250, 2147483646, 2147483647};
    uint32_t seed = 12345u;
    long checked = 0, bad = 0;
    int i, j, s;
    for (i = 0; i < 400; ++i) {
        int32_t x;
        if (i < (int)(sizeof(fixed) / sizeof(fixed[0]))) {
            x = fixed[i];
        } else {
            seed = seed * 1664525u + 1013904223u;
            x = (int32_t)seed >> (int)(seed % 24u); /* every magnitude */
        }
        for (j = 0; j < (int)(sizeof(mults) / sizeof(mults[0])) + 4; ++j) {
            int32_t m = j < 6 ? mults[j] : (int32_t)((seed = seed * 1664525u + 1013904223u) >> 1);
            for (s = -31; s <= 8; ++s) {
                const int32x4_t sv = vdupq_n_s32(s);
                const int32x4_t v = tcc_mve_requant(vdupq_n_s32(x), vdupq_n_s32(m),
                                                    vmaxq_s32(sv, vdupq_n_s32(0)), vminq_s32(sv, vdupq_n_s32(0)));
                bad += vgetq_lane_s32(v, 2) != tcc_requant(x, m, s);
                if (s <= 0) {
                    bad += vgetq_lane_s32(tcc_mve_requant_r(vdupq_n_s32(x), vdupq_n_s32(m), sv), 1) !=
                           tcc_requant_r(x, m, -s);
                }
                ++checked;
            }
        }
    }
    printf("checked %ld bad %ld\ndone\n", checked, bad);
    return 0;
}
"""


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_vector_requantization_equals_scalar_under_qemu(session, tmp_path: Path) -> None:
    """tcc_mve_requant (VQRDMULH, VRSHL after the sign fix-up) equals the scalar tcc_requant/tcc_requant_r (TFLite's
    MultiplyByQuantizedMultiplier) for extreme and random accumulators, multipliers and every shift -31..8."""
    import subprocess

    from tinycc.backends.c import cortexm

    _project(session, tmp_path, "mps3_an547")  # the runtime headers, startup code and linker script
    (tmp_path / "requant_check.c").write_text(REQUANT_CHECK)
    elf = tmp_path / "requant_check.elf"
    cmd = ["arm-none-eabi-gcc", "-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard", "-O2", "-std=c99", "-Wall",
           "-Wextra", "-Werror", "-I", str(tmp_path), "-I", str(tmp_path / "runtime"), "--specs=rdimon.specs",
           "-nostartfiles", "-T", str(tmp_path / cortexm.link_script("mps3-an547")), "-o", str(elf),
           str(tmp_path / "cortexm" / "startup.c"), str(tmp_path / "requant_check.c"), "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    out = cortexm.run_qemu(elf, "mps3-an547", icount=False, timeout=120)
    counts = dict(zip(out.split()[::2], out.split()[1::2]))
    assert counts["checked"] == str(400 * 10 * 40) and counts["bad"] == "0", out
