"""Limits of the generated C: a deployment above what it can hold (--ram 4G on the host) is refused with one line
naming the limit and the --ram that fits, and that --ram builds and runs; the C API's accessors take NULL."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tinycc.backends.base import STATIC_LIMIT
from tinycc.cli import main
from .deploy_util import compile_model

from . import c_harness

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "digits_cnn.h5"
DATA = ROOT / "examples" / "digits_data.npz"


def test_ram_4g_is_refused_and_the_suggested_ram_builds(session, tmp_path: Path, capsys) -> None:
    for target in ("c", "tflm", "arduino"):
        code = main(["compile", str(MODEL), "-t", target, "-o", str(tmp_path / target), "--calib", str(DATA),
                     "--ram", "4G"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert f"{STATIC_LIMIT:,}" in err[0] and "replay buffer" in err[0], err[0]
        assert not (tmp_path / target).exists()  # nothing written
    ram = re.search(r"--ram (\d+M) or less", err[0]).group(1)
    res = compile_model(str(MODEL), "c", str(tmp_path / "fits"), {"calib": str(DATA), "ram": int(ram[:-1]) << 20,
                                                                  "test_count": 2}, session)
    mem = res.deployment.memory
    assert STATIC_LIMIT - 2**20 < mem["ram"] + mem["flash"] <= STATIC_LIMIT  # the budget is used, and it fits
    exe = c_harness.build_host(res.output, sanitize=False)  # the host link that failed with "relocation truncated"
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "replay buffer" in r.stdout, r.stderr[-2000:]


DRIVER = r"""
#include <stdio.h>
#include "model.h"
int main(void) {
    int32_t n_out = -1, n_in = -1;
    if (digits_cnn_init() != 0) return 1;
    if (!digits_cnn_classifier_weights(0, NULL, NULL)) return 2;  /* NULL sizes: nothing written */
    if (!digits_cnn_classifier_weights(0, &n_out, NULL) || n_out <= 0) return 3;
    if (!digits_cnn_classifier_weights(0, NULL, &n_in) || n_in <= 0) return 4;
    if (digits_cnn_classifier_weights(-1, NULL, NULL) || digits_cnn_classifier_weights(99, &n_out, &n_in)) return 5;
    if (n_out != 0 || n_in != 0) return 6;
    if (digits_cnn_classifier_bias(-1) || !digits_cnn_classifier_bias(0)) return 7;
    printf("ok\n");
    return 0;
}
"""


def test_classifier_accessors_take_null(session, tmp_path: Path) -> None:
    res = compile_model(str(MODEL), "c", str(tmp_path / "p"), {"calib": str(DATA), "test_count": 2}, session)
    exe = c_harness.build_host(res.output, sanitize=True, main=DRIVER)
    assert c_harness.run_clean(exe).stdout == "ok\n"
