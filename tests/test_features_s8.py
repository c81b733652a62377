"""The generated C API's int8-input entry `<name>_features_s8`: an input already quantized with the model's input
scale and zero point gives the same features as the float entry `<name>_features` and as the int8 interpreter
(host gcc with ASan/UBSan; Cortex-M4 under QEMU: the DSP path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.ir.simulator import Simulator

from . import c_harness
from .conftest import mlperf_model
from .deploy_util import build_deployment, render_project
from .test_kernels import FIXED, _deployment

DRIVER = r"""#include <stdio.h>
#include <string.h>
#include "model.h"
#include "test_vectors.h"
static const int8_t xq[%(n)d][%(size)d] = {%(rows)s};
int main(void) {
    static int8_t f[%(NAME)s_FEATURES], f8[%(NAME)s_FEATURES];
    int i, j;
    if (%(name)s_init() != 0) {
        return 1;
    }
    memset(f8, 7, sizeof f8);
    %(name)s_features_s8(NULL, f8); /* no input: nothing written */
    for (j = 0; j < %(NAME)s_FEATURES; ++j) {
        if (f8[j] != 7) {
            return 3;
        }
    }
    for (i = 0; i < %(n)d; ++i) {
        %(name)s_features(tcc_test_x[i], f);
        %(name)s_features_s8(xq[i], f8);
        printf("float %%d", i);
        for (j = 0; j < %(NAME)s_FEATURES; ++j) printf(" %%d", f[j]);
        printf("\nint8 %%d", i);
        for (j = 0; j < %(NAME)s_FEATURES; ++j) printf(" %%d", f8[j]);
        printf("\n");
    }
    printf("done\n");
    return 0;
}
"""


def _inputs(dep, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n int8 inputs over the whole range and the floats that quantize to exactly them."""
    xin = dep.extractor.tensors[dep.extractor.inputs[0]]
    q = next(op for op in dep.extractor.ops if op.kind.value == "quantize")
    qp = dep.extractor.tensors[q.outputs[0]].quant
    levels = np.random.default_rng(seed).integers(-128, 128, (n, *xin.shape[1:]))
    x = ((levels - int(qp.zero_point[0])) * float(qp.scale[0])).astype(np.float32)
    return levels.astype(np.int8), x


def _driver(dep, levels: np.ndarray) -> str:
    rows = ",".join("{" + ",".join(str(int(v)) for v in r.ravel()) + "}" for r in levels)
    return DRIVER % {"n": len(levels), "size": levels[0].size, "rows": rows, "name": dep.name,
                     "NAME": dep.name.upper()}


def _parse(text: str) -> dict[str, list[list[int]]]:
    out: dict[str, list[list[int]]] = {"float": [], "int8": []}
    for line in text.splitlines():
        p = line.split()
        if p[:1] in (["float"], ["int8"]):
            out[p[0]].append([int(v) for v in p[2:]])
    assert "done" in text, text[-2000:]
    return out


def _check(out: dict[str, list[list[int]]], feats: np.ndarray, what: str) -> None:
    assert len(out["float"]) == len(out["int8"]) == len(feats)
    for i, want in enumerate(feats):
        np.testing.assert_array_equal(out["int8"][i], want, err_msg=f"{what}: features_s8 of input {i}")
        np.testing.assert_array_equal(out["float"][i], want, err_msg=f"{what}: features of input {i}")


def _project(dep, opts: dict, tmp: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    levels, x = _inputs(dep, n, seed)
    render_project(dep, {**opts, "test_vectors": (x, np.zeros(n, np.int64)), "test_count": n, "test_learn": 1}, tmp)
    return levels, x


def test_int8_entry_equals_float_entry_on_host(session, tmp_path: Path) -> None:
    dep, opts, _ = _deployment(session, FIXED, 3)
    levels, x = _project(dep, opts, tmp_path, 8, 1)
    exe = c_harness.build_host(tmp_path, sanitize=True, main=_driver(dep, levels))
    _check(_parse(c_harness.run_clean(exe).stdout), Simulator(dep).features(x), "random layers")
    assert "_features_s8(const int8_t *x_q, int8_t *features);" in (tmp_path / "model.h").read_text()


def test_int8_entry_on_an_mlperf_model_on_host(session, tmp_path: Path) -> None:
    path = str(mlperf_model("kws_ref_model.tflite"))
    g = session.registry.frontend_for(path).load(path)
    opts = {"buffer": 2}
    dep = build_deployment(g, opts, session, CBackend())
    levels, x = _project(dep, opts, tmp_path, 4, 2)
    exe = c_harness.build_host(tmp_path, sanitize=True, main=_driver(dep, levels))
    _check(_parse(c_harness.run_clean(exe).stdout), Simulator(dep).features(x), "kws")


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_int8_entry_under_qemu_m4(session, tmp_path: Path) -> None:
    from tinycc.backends.c import cortexm

    dep, opts, _ = _deployment(session, FIXED, 5)
    levels, x = _project(dep, opts, tmp_path, 4, 3)
    (tmp_path / "main.c").write_text(_driver(dep, levels))
    out = cortexm.run_qemu(cortexm.build(tmp_path, "m4"), "mps2-an386")
    _check(_parse(out), Simulator(dep).features(x), "random layers on Cortex-M4")
