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


# the dev extra's packages (pyproject [project.optional-dependencies] dev): a plain install does not have them
DEV_ONLY = ("pytest", "_pytest", "hypothesis", "sklearn", "ai_edge_litert", "serial", "optuna", "ray", "xdist")
BLOCKED_CLI = f'''
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {DEV_ONLY!r}:
            raise ImportError(name + " is a dev-only package")
        return None
sys.meta_path.insert(0, Block())
from tinycc.cli import main
sys.exit(main(sys.argv[1:]))
'''


def _plain(tmp_path: Path, *args: str) -> "subprocess.CompletedProcess[str]":
    import subprocess

    return subprocess.run([sys.executable, "-c", BLOCKED_CLI, *args], capture_output=True, text=True, timeout=900,
                          cwd=tmp_path)


def test_every_target_with_the_main_dependencies_only(tmp_path: Path) -> None:
    """As after `pip install .` (no dev extra: its packages cannot be imported): `--target tflm` and `--target
    arduino` compile; the tflm project builds against TFLite Micro and is bit-exact (validate, when the sources
    are here); the Arduino sketch builds for the Mega 2560 (when arduino-builder is installed)."""
    import shutil

    from tinycc.backends.tflm import vendor

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = {d.split(">")[0].split("=")[0].strip().replace("-", "_") for d in project["optional-dependencies"]["dev"]}
    assert {"pytest", "hypothesis", "ai_edge_litert", "optuna", "ray"} <= dev  # what DEV_ONLY stands for
    for target, board in (("tflm", []), ("arduino", ["--board", "mega2560"])):
        r = _plain(tmp_path, "compile", str(MODEL), "--target", target, *board, "--calib", str(DATA), "-o",
                   str(tmp_path / target))
        assert r.returncode == 0, r.stderr
    if vendor.default_vendor_dir() is not None:
        r = _plain(tmp_path, "validate", str(MODEL), "--target", "tflm", "--data", str(DATA), "-n", "4")
        assert r.returncode == 0 and "PASS" in r.stdout, r.stdout + r.stderr
    if shutil.which("arduino-builder"):
        from . import arduino_harness

        sketch = next((tmp_path / "arduino").rglob("*.ino"))
        elf, flash, ram = arduino_harness.build(sketch, tmp_path / "ab")
        assert elf.is_file() and flash > 0 and ram > 0
