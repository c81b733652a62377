"""CLI behaviour: exit codes, one-line errors without tracebacks, inspect output."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "digits_cnn.h5"


def clean_env(onednn: str = "1") -> dict[str, str]:
    """The user's plain environment: no TensorFlow/absl logging variables, oneDNN forced on or off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "ABSL", "GLOG", "KERAS"))}
    env["TF_ENABLE_ONEDNN_OPTS"] = onednn
    return env


def tinycc(*args: str, cwd: Path | None = None, onednn: str = "1") -> subprocess.CompletedProcess:
    """Run the CLI as a user would: a subprocess in a clean environment (oneDNN on by default)."""
    return subprocess.run([sys.executable, "-m", "tinycc.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600, env=clean_env(onednn))


def assert_clean_error(r: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_inspect_table_and_json() -> None:
    r = tinycc("inspect", str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    assert "conv1" in r.stdout and "total" in r.stdout
    r = tinycc("inspect", str(EXAMPLE), "--json")
    data = json.loads(r.stdout)
    assert data["totals"]["params"] == 6242  # Keras count_params() of the example model
    assert sum(l["params"] for l in data["layers"]) == 6242
    assert any(l["op"] == "conv2d" and l["layer"] == "conv1" for l in data["layers"])
    # dtypes per layer and the planner's peak (not a sum of every activation) for the graph as loaded
    from tinycc.memory import plan
    from tinycc.session import Session

    g = Session().registry.frontend_for(str(EXAMPLE)).load(str(EXAMPLE))
    p = plan(g)
    assert data["planned_peak"] == {"arena": p.arena, "lower_bound": p.lower_bound}
    assert p.arena < data["totals"]["activation_bytes"] and {l["dtype"] for l in data["layers"]} == {"float32"}
    text = tinycc("inspect", str(EXAMPLE)).stdout
    assert f"peak: {p.arena:,} B planned (lower bound {p.lower_bound:,} B), float32 as loaded" in text
    assert "float32" in text.splitlines()[3]


def test_missing_file(tmp_path: Path) -> None:
    assert_clean_error(tinycc("inspect", str(tmp_path / "nope.h5")), 2, "nope.h5")


def test_wrong_extension(tmp_path: Path) -> None:
    p = tmp_path / "model.onnx"
    p.write_bytes(b"\0" * 10)
    assert_clean_error(tinycc("inspect", str(p)), 2, "extension")


def test_random_bytes_and_truncated(tmp_path: Path) -> None:
    rnd = tmp_path / "random.h5"
    rnd.write_bytes(bytes(range(256)) * 40)
    assert_clean_error(tinycc("inspect", str(rnd)), 2, "random.h5")
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(EXAMPLE.read_bytes()[:5000])
    assert_clean_error(tinycc("inspect", str(trunc)), 2, "trunc.h5")
    bad_keras = tmp_path / "bad.keras"
    bad_keras.write_bytes(b"not a zip at all")
    assert_clean_error(tinycc("inspect", str(bad_keras)), 2, "bad.keras")


def test_usage_errors_exit_2() -> None:
    r = tinycc("compile", str(EXAMPLE))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = tinycc("no-such-command")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_unknown_target_lists_targets(tmp_path: Path) -> None:
    r = tinycc("compile", str(EXAMPLE), "--target", "fpga", "-o", str(tmp_path / "out"))
    assert_clean_error(r, 2, "fpga", "registered targets")
    assert not (tmp_path / "out").exists()


def test_unsupported_layer_names_layer(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    import keras

    inp = keras.Input((6, 4))
    x = keras.layers.Bidirectional(keras.layers.LSTM(3), merge_mode=None, name="my_bilstm")(inp)  # two outputs
    out = keras.layers.Dense(2, name="head")(keras.layers.Concatenate()(x))
    path = tmp_path / "bilstm.keras"
    keras.Model(inp, out).save(path)
    assert_clean_error(tinycc("inspect", str(path)), 2, "my_bilstm", "Bidirectional")


def test_single_sigmoid_output_trains_a_binary_head(tmp_path: Path) -> None:
    """A Dense(1, sigmoid) head compiles with the binary head (sigmoid + binary cross-entropy); forcing softmax
    cross-entropy on it is a clear error naming the layer, and nothing is written."""
    pytest.importorskip("keras")
    import keras
    import numpy as np

    inp = keras.Input((6,))
    x = keras.layers.Dense(4, activation="relu", name="hidden")(inp)
    out = keras.layers.Dense(1, activation="sigmoid", name="binary_head")(x)
    path = tmp_path / "binary.keras"
    keras.Model(inp, out).save(path)
    np.savez(tmp_path / "calib.npz", x_calib=np.random.default_rng(0).normal(size=(8, 6)).astype(np.float32))
    r = tinycc("compile", str(path), "--target", "c", "--calib", str(tmp_path / "calib.npz"), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "binary head (sigmoid + binary cross-entropy, labels 0/1)" in r.stdout
    r = tinycc("compile", str(path), "--target", "c", "--calib", str(tmp_path / "calib.npz"), "--loss", "ce", "-o",
               str(tmp_path / "out2"))
    assert_clean_error(r, 2, "binary_head", "at least 2 outputs", "--loss bce")
    assert not (tmp_path / "out2").exists()


def test_compile_time_passes_adds_up(tmp_path: Path) -> None:
    r = tinycc("compile", str(EXAMPLE), "--target", "c", "--calib", str(ROOT / "examples" / "digits_data.npz"),
               "-o", str(tmp_path / "out"), "--time-passes")
    assert r.returncode == 0, r.stderr
    rows = {}
    for line in r.stdout.split("pass / phase", 1)[1].splitlines()[1:]:
        parts = line.split()
        rows[" ".join(parts[:-3] if parts[0] not in ("total", "(untimed)") else parts[:1])] = parts
    for name in ("frontend", "fold_batchnorm", "calibrate", "quantize_int8", "emit (c)"):
        assert name in rows, r.stdout
        assert rows[name][-3] == "1"  # one cut candidate without a budget: every pass ran once
    timed = sum(float(p[-2]) for n, p in rows.items() if n not in ("total", "(untimed)"))
    total = float(rows["total"][-1])
    slack = 5e-4 * len(rows)  # every row is rounded to 1 ms
    assert 0 < timed <= total + slack and float(rows["(untimed)"][-1]) == pytest.approx(max(total - timed, 0), abs=slack)


def test_inspect_fits_the_terminal_with_long_names(tmp_path: Path) -> None:
    """Converter-style 100+ character names are shortened in the middle; --json keeps them whole."""
    import keras

    long = "functional_1_" + "very_long_scope_name_" * 5
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name=long + "conv_a")(inp)
    x = keras.layers.Conv2D(4, 3, name=long + "conv_b")(x)
    out = keras.layers.Dense(3, name=long + "head")(keras.layers.Flatten()(x))
    path = tmp_path / "long.keras"
    keras.Model(inp, out).save(path)
    env_cols = {"COLUMNS": "80"}
    r = subprocess.run([sys.executable, "-m", "tinycc.cli", "inspect", str(path)], capture_output=True, text=True,
                       timeout=600, env={**clean_env(), **env_cols})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    lines = r.stdout.splitlines()
    table_lines = lines[1:]
    assert max(len(l) for l in table_lines) <= 80, r.stdout
    assert any("..." in l and l.rstrip().split()[-1].replace(",", "").isdigit() for l in table_lines)
    assert any(l.startswith("functional_1_") and "conv_a" in l for l in table_lines)  # head and tail both kept
    data = json.loads(tinycc("inspect", str(path), "--json").stdout)
    assert {l["name"] for l in data["layers"]} >= {long + "conv_a", long + "conv_b", long + "head"}
    wide = subprocess.run([sys.executable, "-m", "tinycc.cli", "inspect", str(path), "--wide"], capture_output=True,
                          text=True, timeout=600, env={**clean_env(), **env_cols})
    assert long + "conv_a" in wide.stdout
