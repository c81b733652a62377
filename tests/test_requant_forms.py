"""Requantization rewrites of the kernel generator: tcc_requant_rf0 (the short rounding form for layers whose
channels may shift by 0) equals tcc_requant_r within its proved bounds (host, UBSan; and under QEMU M4 where it is
one smmulr), and the constant-channel rewrite (backends/c/kernels/common.py constant_channels) gives TFLite's
output for every all-zero-weight channel."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c.kernels.common import constant_channels
from tinycc.ir.graph import Graph
from tinycc.ir.quant import multiply_by_quantized_multiplier

from . import c_harness

RF0_CHECK = r"""#include <stdio.h>
#include <stdint.h>
#include "tinycc_gen.h"
static uint32_t s = 12345u;
static uint32_t rnd(void) { s = s * 1664525u + 1013904223u; return s; }
int main(void) {
    int32_t r, i, bad = 0, n = 0;
    for (r = 0; r <= 29; ++r) {
        /* 2|x| + 2^r + 1 < 2^31 */
        const int32_t lim = (int32_t)((((uint32_t)1 << 31) - ((uint32_t)1 << r) - 2u) / 2u);
        for (i = 0; i < 20000; ++i) {
            const int32_t m = (int32_t)(rnd() >> 1) | (1 << 30); /* QuantizeMultiplier: [2^30, 2^31) */
            int32_t x = (int32_t)(rnd() %% (uint32_t)lim);
            if (i & 1) x = -x;
            if (i < 8) x = (i & 2) ? lim - 1 : -(lim - 1);
            if (i >= 8 && i < 16) x = (i & 4) ? (1 << (i %% 8)) : -(1 << (i %% 8)); /* ties near zero */
            bad += tcc_requant_rf0(x, m, r) != tcc_requant_r(x, m, r);
            ++n;
        }
    }
    printf("checked %%ld bad %%ld\ndone\n", (long)n, (long)bad);
    return 0;
}
"""


def test_requant_rf0_equals_the_general_form_on_host(tmp_path: Path) -> None:
    out = c_harness.run_runtime_program(RF0_CHECK % (), tmp_path, "rf0")
    assert out == ["checked 600000 bad 0", "done"], out


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_requant_rf0_equals_the_general_form_on_cortex_m4(session, tmp_path: Path) -> None:
    """The smmulr form (x doubled) under QEMU: main.c of a generated project replaced by the check."""
    from tinycc.backends.c import cortexm

    from .test_kernels import FIXED, _project

    _project(session, tmp_path, FIXED[:1], 2)
    (tmp_path / "main.c").write_text(RF0_CHECK % ())
    out = cortexm.run_qemu(cortexm.build(tmp_path, "m4"), "mps2-an386")
    assert "checked 600000 bad 0" in out, out[-2000:]


@pytest.mark.parametrize("seed", range(6))
def test_constant_channels_keep_tflite_outputs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    oc = 16
    w = rng.integers(-127, 128, (oc, 1, 1, 8)).astype(np.int8)
    dead = rng.random(oc) < 0.5
    w[dead] = 0
    g = Graph("c")
    g.add_input("x", (1, 2, 2, 8))
    g.add_const("w", w.astype(np.float32))
    g.tensors["w"].data = w
    op = g.add_op("conv2d", ["x", "w"], "y", {"padding": "valid"})
    bias = rng.integers(-2**30, 2**30, oc) * (rng.random(oc) < 0.7)
    bias[dead & (rng.random(oc) < 0.5)] = rng.choice([-2**30, 2**30 - 64])  # pruned filters' huge biases
    out_zp = int(rng.integers(-128, 128))
    act = (-128, 127) if seed % 2 else (out_zp, 127)
    p = {"mult": rng.integers(2**30, 2**31, oc), "shift": -rng.integers(0, 32, oc), "out_zp": out_zp, "act": act}
    got = constant_channels(g, op, p, bias)
    assert got is not None
    mult, shift, nb = got
    want = np.clip(multiply_by_quantized_multiplier(bias, p["mult"], p["shift"]) + out_zp, *act)
    have = np.clip(multiply_by_quantized_multiplier(nb, mult, shift) + out_zp, *act)
    np.testing.assert_array_equal(have[dead], want[dead])
    np.testing.assert_array_equal(nb[~dead], bias[~dead])  # live channels untouched
    assert (mult[~dead] == p["mult"][~dead]).all() and (shift[~dead] == p["shift"][~dead]).all()
    assert (shift[dead] == -1).all() and (np.abs(nb[dead]) <= 4 * 255).all()
    # no bias: the constant is the output zero point
    got0 = constant_channels(g, op, p, None)
    assert got0 is not None and got0[2] is None
