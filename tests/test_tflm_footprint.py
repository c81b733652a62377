"""The `tflm` target's memory report counts what TFLite Micro deploys: the .tflite bytes (measured), TFLite Micro's
code for the resolved operators and its framework (estimated), tinycc's code; the interpreter objects in RAM."""
from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tinycc.backends.tflm import TflmBackend
from tinycc.backends.tflm.footprint import FRAMEWORK_TEXT, KERNEL_TEXT, interpreter_bytes, kernel_code
from tinycc.cli import main
from tinycc.tflite_writer import operator_names

from .conftest import ROOT, mlperf_model

VENDOR = ROOT.parent / "shared" / "vendor"


def _items(mem: dict) -> dict:
    return {i["name"]: i for i in mem["items"]}


@pytest.mark.parametrize("extra", [[], ["--inference-only"]])
def test_tflm_flash_counts_model_data_and_code(tmp_path: Path, extra: list[str]) -> None:
    """Person detection (MLPerf Tiny VWW): flash total >= the .tflite bytes + TFLite Micro's code + tinycc's."""
    import json

    out = tmp_path / "p"
    args = ["compile", str(mlperf_model("vww_96_int8.tflite")), "--target", "tflm", "-o", str(out)]
    assert main(args + (extra or ["--buffer", "2"])) == 0
    mem = json.loads((out / "tinycc_memory.json").read_text())
    items = _items(mem)
    data = next(out.glob("*.tflite")).read_bytes()
    names = operator_names(data)
    assert items["model data"]["bytes"] == len(data) and items["model data"]["exact"]
    assert "measured" in items["model data"]["detail"]
    tflm = items["TFLite Micro code"]
    assert tflm["bytes"] == FRAMEWORK_TEXT + kernel_code(names) and not tflm["exact"] and "estimated" in tflm["detail"]
    assert mem["flash"] >= len(data) + tflm["bytes"] + items["code"]["bytes"]
    assert not ({"extractor weights", "weights", "requantization tables"} & set(items))  # inside the .tflite
    assert items["interpreter objects"]["bytes"] == interpreter_bytes(len(names))
    assert mem["ram"] == sum(i["bytes"] for i in mem["items"] if i["section"] == "ram")
    assert f"{mem['flash']:,}" in (out / "README.md").read_text()


@pytest.mark.slow
def test_kernel_table_matches_the_vendored_snapshot(tmp_path: Path) -> None:
    """Some operators' objects compiled as footprint.py says (Cortex-M4F, -Os): their .text is the table's."""
    archive = sorted(VENDOR.glob("tflite-micro-*.tar.xz"))
    if not archive or not shutil.which("arm-none-eabi-g++"):
        pytest.skip("vendored TFLite Micro or arm-none-eabi-g++ missing")
    with tarfile.open(archive[0]) as tar:
        tar.extractall(tmp_path, filter="data")
    t = tmp_path / "tflite-micro"
    k = t / "tensorflow" / "lite" / "micro" / "kernels"
    flags = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-std=c++17", "-Os",
             "-DTF_LITE_STATIC_MEMORY", "-fno-exceptions", "-fno-rtti", "-ffunction-sections", "-fdata-sections",
             "-fno-threadsafe-statics", "-w", f"-I{t}", f"-I{t / 'fb' / 'include'}", f"-I{t / 'gemmlowp'}",
             f"-I{t / 'ruyinc'}"]
    for op, files in {"DEQUANTIZE": ["dequantize.cc", "dequantize_common.cc"],
                      "LEAKY_RELU": ["leaky_relu.cc", "leaky_relu_common.cc"],
                      "PRELU": ["prelu.cc", "prelu_common.cc"], "ELU": ["elu.cc"],
                      "REVERSE_V2": ["reverse.cc"]}.items():
        text = 0
        for f in files:
            obj = tmp_path / (f + ".o")
            subprocess.run(["arm-none-eabi-g++", *flags, "-c", str(k / f), "-o", str(obj)], check=True)
            out = subprocess.run(["arm-none-eabi-size", "-A", str(obj)], capture_output=True, text=True,
                                 check=True).stdout
            text += sum(int(l.split()[1]) for l in out.splitlines() if l.startswith(".text"))
        assert KERNEL_TEXT[op] == text, op
    assert TflmBackend.name == "tflm"
