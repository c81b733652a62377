"""Random Keras models (benchmarks/random_models.py) through every target and every oracle (bench_random.check):
each compiles for c, tflm and arduino or is refused in one line that is not a tinycc bug; the converter's int8 file
runs bit-exact with run_int8 as C on the host and under QEMU on the Cortex-M4, and run_int8 equals TFLite's
BUILTIN_REF and TensorFlow Lite Micro where they load the file; tinycc's own quantization of the .h5 runs bit-exact
as C on the host and the M4. ``python -m benchmarks random --count N`` sweeps many more seeds."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.bench_random import check

pytestmark = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                                reason="needs arm-none-eabi-gcc and qemu-system-arm")
pytest.importorskip("ai_edge_litert.interpreter")


@pytest.mark.parametrize("seed", [0, 2, 7, 13, 25, 40, 58, 62])
def test_random_model_passes_every_oracle(session, tmp_path: Path, seed: int) -> None:
    row = check(session, seed, tmp_path)
    assert row["verdict"] == "pass", row["why"]
    assert row["targets"]["c"]["ok"], row["targets"]["c"]  # these seeds compile for c: the comparisons ran
    ran = [row[k][p]["bit_exact"] for k in ("c_run", "own_c_run") if row.get(k) for p in ("host", "qemu-m4")]
    assert ran and all(ran)
