"""Every target after a plain install: tflite-micro is a main dependency (where it is published), and without
it `--target tflm` says in one line how to install it (never "feature extractor" for an inference-only model)."""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from tinycc.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "digits_cnn.h5"
DATA = ROOT / "examples" / "digits_data.npz"


def test_tflite_micro_is_a_main_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    main_deps = [d.split(";")[0].strip() for d in project["dependencies"]]
    assert "tflite-micro" in main_deps
    assert not any(d.startswith("tflite-micro") for d in project["optional-dependencies"]["dev"])


@pytest.mark.parametrize("extra", [[], ["--inference-only"]], ids=["learning", "inference-only"])
def test_tflm_without_tflite_micro_says_how_to_install(tmp_path: Path, monkeypatch, capsys, extra) -> None:
    monkeypatch.setitem(sys.modules, "tflite_micro", None)  # as if the package were not installed
    rc = main(["compile", str(MODEL), "-t", "tflm", "--board", "stm32f746", "--calib", str(DATA),
               "-o", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "pip install tflite-micro" in err
    assert "feature extractor" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.toolchain
def test_tflm_inference_only_demo_builds_and_is_bit_exact(capsys) -> None:
    """The inference-only tflm project has the demo program and Makefile: `validate` builds it against TFLite
    Micro and its outputs equal run_int8 of the whole int8 model, bit for bit."""
    from tinycc.backends.tflm import vendor

    if vendor.default_vendor_dir() is None:
        pytest.skip("TFLite Micro sources not found (TINYCC_VENDOR)")
    rc = main(["validate", str(MODEL), "--target", "tflm", "--inference-only", "--data", str(DATA), "-n", "8"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "8/8 equal, max |diff| 0 steps" in out


def test_tflm_inference_only_project_files(tmp_path: Path) -> None:
    """Like the c target's inference project: main.c, test vectors, Makefile, CMake, and a model.h API."""
    assert main(["compile", str(MODEL), "-t", "tflm", "--inference-only", "--calib", str(DATA),
                 "-o", str(tmp_path / "p")]) == 0
    p = tmp_path / "p"
    for f in ("main.c", "test_vectors.h", "Makefile", "CMakeLists.txt", "src/model.h", "src/tinycc_tflm.cc"):
        assert (p / f).is_file(), f
    assert "add_executable(tinycc_demo main.c)" in (p / "CMakeLists.txt").read_text()
    assert "digits_cnn_invoke_f32" in (p / "src/model.h").read_text()
