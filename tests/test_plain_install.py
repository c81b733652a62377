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
