"""Keras files read without TensorFlow (plugins/keras_direct.py) against the Keras path.

Oracle: the IR read directly from the config and weights equals, byte for byte (structure, attributes, names,
constants), the IR the Keras path builds from the model Keras loads -- for the example, every zoo model in both
formats and the MLPerf Tiny `.h5` files (Keras 2) -- and a compiled project is the same bytes either way.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinycc.cli import main
from tinycc.ir import serialize
from tinycc.plugins.frontends import keras_direct
from tinycc.plugins.frontends.keras_direct import NotCovered, load_direct
from tinycc.plugins.frontends.keras import load_keras_file

from .conftest import mlperf_model
from .zoo import ZOO_NAMES, build, save_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "digits_cnn.h5"
DATA = ROOT / "examples" / "digits_data.npz"
MLPERF = ("ad01.h5", "pretrainedResnet.h5", "str_ww_ref_model.h5", "vww_96.h5")


def _canonical(g) -> tuple[str, dict]:
    doc, arrays = serialize.to_dict(g)
    return json.dumps(doc, sort_keys=True), {k: (a.dtype.str, a.shape, a.tobytes()) for k, a in arrays.items()}


def _same_ir(path: Path) -> None:
    direct = load_direct(path, path.stem)  # raises NotCovered if the direct reader gave up
    through_keras = load_keras_file(str(path), direct=False)
    a, b = _canonical(direct), _canonical(through_keras)
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        assert a[1][k] == b[1][k], k


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("zoo_direct")
    for name in ZOO_NAMES:
        m = build(name)
        save_model(m, d, "h5")
        save_model(m, d, "keras")
    return d


@pytest.mark.parametrize("fmt", ["h5", "keras"])
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_same_ir(zoo_dir: Path, name: str, fmt: str) -> None:
    _same_ir(zoo_dir / f"{name}.{fmt}")


@pytest.mark.parametrize("path", [EXAMPLE, EXAMPLE.with_suffix(".keras")], ids=["h5", "keras"])
def test_example_same_ir(path: Path) -> None:
    _same_ir(path)


@pytest.mark.parametrize("name", MLPERF)
def test_mlperf_keras2_same_ir(name: str) -> None:
    _same_ir(mlperf_model(name))


def test_project_bytes_equal(tmp_path: Path, monkeypatch) -> None:
    """`tinycc compile` writes the same project whichever way the model was read."""
    args = ["compile", str(EXAMPLE), "-t", "c", "--board", "stm32f746", "--calib", str(DATA)]
    assert main(args + ["-o", str(tmp_path / "direct")]) == 0

    def refuse(path, name):
        raise NotCovered("forced for the test")
    monkeypatch.setattr(keras_direct, "load_direct", refuse)
    assert main(args + ["-o", str(tmp_path / "keras")]) == 0
    files = sorted(p.relative_to(tmp_path / "direct") for p in (tmp_path / "direct").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "keras") for p in (tmp_path / "keras").rglob("*") if p.is_file())
    assert len(files) > 5
    for f in files:
        assert (tmp_path / "direct" / f).read_bytes() == (tmp_path / "keras" / f).read_bytes(), f


def test_not_covered_falls_back_to_keras(tmp_path: Path) -> None:
    """A nested model is not read directly; the frontend reads it through Keras, and the result is right."""
    import keras

    inner = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, activation="relu", name="i1")], name="inner")
    inp = keras.Input((5,), name="x")
    m = keras.Model(inp, keras.layers.Dense(2, name="head")(inner(inp)), name="nested")
    path = tmp_path / "nested.keras"
    m.save(path)
    with pytest.raises(NotCovered):
        load_direct(path, "nested")
    g = load_keras_file(str(path))
    assert [o.name for o in g.ops][-1] == "head"


def test_wrong_weight_shape_is_not_read_directly(tmp_path: Path) -> None:
    """Weights that do not fit the config are left to Keras (which refuses them with its own message)."""
    import h5py

    path = tmp_path / "digits.h5"
    path.write_bytes(EXAMPLE.read_bytes())
    with h5py.File(path, "r+") as f:
        del f["model_weights/fc1/fc1/bias"]
        f["model_weights/fc1/fc1/bias"] = np.zeros(31, np.float32)
    with pytest.raises(NotCovered, match="fc1"):
        load_direct(path, "digits")


_TF = re.compile(r"\|\s+(tensorflow|keras|tf_keras)(\.|\s*$)", re.M)


@pytest.mark.parametrize("command", [["inspect", str(EXAMPLE)], ["compile", str(EXAMPLE), "-t", "c", "--board",
                                                                   "stm32f746", "--calib", str(DATA), "-o", "OUT"], ["--help"],
                                     ["plugins"], ["passes"], ["inspect", "TFLITE"],
                                     ["compile", "TFLITE", "-t", "c", "--inference-only", "-o", "OUT"]],
                         ids=["inspect", "compile", "help", "plugins", "passes", "inspect-tflite", "compile-tflite"])
def test_no_tensorflow_import(tmp_path: Path, command: list[str]) -> None:
    """`python -X importtime` lists no tensorflow or keras module for these commands (-v keeps stderr)."""
    tflite = str(mlperf_model("ad01_int8.tflite")) if "TFLITE" in command else ""
    command = [str(tmp_path / "out") if c == "OUT" else tflite if c == "TFLITE" else c for c in command]
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "tinycc.cli", "-v", *command],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "import time:" in r.stderr
    assert not _TF.search(r.stderr), _TF.search(r.stderr).group(0)
