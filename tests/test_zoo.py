"""The zoo benchmark's per-model function (benchmarks/bench_zoo.py) on two zoo models: the 1D-conv activity
recognizer converted to int8 by the TFLite converter compiles for every target and its c program equals run_int8
on the host and on the Cortex-M4 (QEMU), run_int8 equalling TFLite's BUILTIN_REF; the GRU compiles for c and arduino
and is refused with one line by tflm (no GRU in TFLite Micro)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks import bench_zoo, zoo_models

pytestmark = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                                reason="needs arm-none-eabi-gcc and qemu-system-arm")


def test_har_int8_compiles_everywhere_and_is_bit_exact_on_host_and_m4(session, tmp_path: Path) -> None:
    zoo_models.export("har_cnn1d", str(tmp_path))
    z = zoo_models.BY_NAME["har_cnn1d"]
    row = bench_zoo.model_row(session, z.name, z.domain, tmp_path / "har_cnn1d_int8.tflite",
                              tmp_path / "har_cnn1d.h5", z.classifier, z.input_range, n=2)
    assert "error" not in row
    for target in bench_zoo.TARGETS:
        t = row["targets"][target]
        assert t["ok"], (target, t)
        assert t["mode"] == "learning" and "learning_error" not in t
        assert t["ram"] > 0 and t["flash"] > row["params"] > 0  # flash holds at least the int8 weights
    assert row["keras_c"]["ok"]
    run = row["c_run"]
    assert "error" not in run, run
    assert run["host"]["bit_exact"] is True and run["qemu-m4"]["bit_exact"] is True
    assert row["builtin_ref"] is True
    assert run["m4_instructions"] > row["macs"] > 0  # at least one instruction per multiply-accumulate
    assert "host yes, M4 yes, ref yes" in bench_zoo.table([row])


def test_gru_compiles_for_c_and_arduino_and_tflm_refuses_on_one_line(session, tmp_path: Path) -> None:
    """The zoo's sensor GRU from its Keras file: c and arduino compile it for on-device learning (tinycc's integer
    GRU), its c program equals run_int8 on the host and the M4; tflm refuses it in one line naming the GRU."""
    z = zoo_models.BY_NAME["gru_har"]
    z.build().save(str(tmp_path / "gru_har.h5"))
    row = bench_zoo.model_row(session, z.name, z.domain, None, tmp_path / "gru_har.h5", z.classifier,
                              z.input_range, n=1)
    assert "error" not in row, row
    for target in ("c", "arduino"):
        assert row["targets"][target]["ok"] and row["targets"][target]["mode"] == "learning", row["targets"][target]
    err = row["targets"]["tflm"]["error"]
    assert "\n" not in err and not err.startswith("BUG") and "GRU" in err, err
    run = row["c_run"]
    assert run["host"]["bit_exact"] is True and run["qemu-m4"]["bit_exact"] is True, run
    assert "refused" in bench_zoo.table([row]) and "GRU" in bench_zoo.errors([row])
