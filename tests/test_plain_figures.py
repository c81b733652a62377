"""Figures printed as people write them (issue 28, Deliver 5): the README's learning rate in its shortest form,
singular nouns for one test vector / one output."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tinycc.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "digits_cnn.h5"
DATA = ROOT / "examples" / "digits_data.npz"


def test_readme_learning_rate_is_the_shortest_float(tmp_path: Path) -> None:
    assert main(["compile", str(MODEL), "-t", "c", "--calib", str(DATA), "--lr", "0.01", "-o", str(tmp_path / "p")]) == 0
    text = (tmp_path / "p" / "README.md").read_text()
    assert "learning rate 0.01," in text and "0.0099999" not in text


@pytest.mark.parametrize("extra", [[], ["--inference-only"]], ids=["learning", "inference-only"])
def test_demo_says_one_test_vector(tmp_path: Path, extra: list[str]) -> None:
    out = tmp_path / "p"
    assert main(["compile", str(MODEL), "-t", "c", "--calib", str(DATA), "--test-count", "1", "-o", str(out),
                 *extra]) == 0
    r = subprocess.run(["make", "-s", "-C", str(out), "run"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    first = r.stdout.splitlines()[0]
    assert ": 1 test vector," in first
    assert "1 test vectors" not in r.stdout


def test_trials_csv_has_unique_column_names(tmp_path: Path) -> None:
    """The searched `cut` knob and the deployed `cut` layer are two columns with two names."""
    import csv
    from types import SimpleNamespace

    from tinycc.plugins.applications.search.outputs import write_trials_csv

    trial = SimpleNamespace(number=0, state=SimpleNamespace(name="COMPLETE"), params={"cut": "hidden", "hidden": 64},
                            user_attrs={"cut": "features", "feasible": True, "accuracy": 0.5})
    with open(write_trials_csv(tmp_path, [trial]), newline="") as f:
        header, row = list(csv.reader(f))
    assert len(header) == len(set(header))
    values = dict(zip(header, row))
    assert values["cut"] == "features" and values["arch_cut"] == "hidden" and values["hidden"] == "64"


def test_one_output_regression_demo_prints_no_arg_max(tmp_path: Path) -> None:
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu", name="h"),
                          keras.layers.Dense(1, name="y")], name="reg")
    m.save(tmp_path / "reg.h5")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32))
    out = tmp_path / "p"
    assert main(["compile", str(tmp_path / "reg.h5"), "-t", "c", "--inference-only", "--calib",
                 str(tmp_path / "calib.npz"), "-o", str(out)]) == 0
    r = subprocess.run(["make", "-s", "-C", str(out), "run"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "-> 1 output (" in r.stdout
    lines = [l for l in r.stdout.splitlines() if l.startswith("vector")]
    assert lines and all("arg-max" not in l for l in lines)


def test_all_zero_test_vector_is_said(tmp_path: Path, capsys) -> None:
    """An int8 .tflite compiles without --calib; the demo's only test vector is then zeros, and tinycc says so."""
    from .conftest import mlperf_model

    model = mlperf_model("ad01_int8.tflite")
    assert main(["compile", str(model), "-t", "c", "--inference-only", "-o", str(tmp_path / "p")]) == 0
    assert "the demo's only test vector is all zeros; pass --calib DATA" in capsys.readouterr().err


def test_progress_lines_when_stderr_is_not_a_terminal() -> None:
    import io

    from tinycc.plugins.applications.scenarios import ProgressLines

    out = io.StringIO()
    with ProgressLines(1000, "concept-drift", out) as bar:
        for _ in range(1000):
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert lines[0] == "concept-drift: 5% (50/1,000 steps)" and lines[-1] == "concept-drift: 100% (1,000/1,000 steps)"
    assert len(lines) == 20


def test_compile_without_budget_names_the_default_and_its_cost(tmp_path: Path, capsys) -> None:
    import re

    assert main(["compile", str(MODEL), "-t", "c", "--calib", str(DATA), "-o", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    m = re.search(r"the default replay buffer of (\d+) entries, ([\d,]+) B of RAM", out)
    assert m, out
    row = re.search(r"^ram\s+replay buffer\s+([\d,]+)", out, re.M)
    assert row and row.group(1) == m.group(2)  # the cost is the memory report's own figure
    assert "replay buffer 64 entries" in out and m.group(1) == "64"
    assert main(["compile", str(MODEL), "-t", "c", "--calib", str(DATA), "--board", "mega2560",
                 "-o", str(tmp_path / "b")]) == 0
    assert "default replay buffer" not in capsys.readouterr().out


def test_budget_error_suggests_int8_io(tmp_path: Path, capsys) -> None:
    """Float I/O of an int8 model costs the Arduino sketch its float buffers: the budget error says what
    --int8-io saves (the difference of the two sketches' protocol state), and says nothing of it with --int8-io."""
    import re

    from .conftest import mlperf_model

    model = str(mlperf_model("vww_96_int8.tflite"))
    args = ["compile", model, "-t", "arduino", "--board", "mega2560", "--inference-only", "-o", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    saved = int(re.search(r"--int8-io \(int8 input and output\) saves ([\d,]+) B", err).group(1).replace(",", ""))
    state = int(re.search(r"runtime state ([\d,]+) B", err).group(1).replace(",", ""))
    assert main(args + ["--int8-io"]) == 2
    err8 = capsys.readouterr().err
    state8 = int(re.search(r"runtime state ([\d,]+) B", err8).group(1).replace(",", ""))
    assert saved == state - state8 > 0 and "--int8-io" not in err8


def test_a_number_in_a_text_column_stays_under_its_heading() -> None:
    """validate's `max |probability diff|` value (a number among text cells) was right-aligned to the far end."""
    from tinycc.report import table

    text = table(["check", "deployed program", "reference"],
                 [["top-1", "6/6 agree", "simulator"], ["max |probability diff|", "0", "simulator"],
                  ["n", "12", "34"]])
    lines = text.splitlines()
    start = lines[0].index("deployed program")
    assert lines[3].index("0", len("max |probability diff|")) == start
    assert lines[4].index("34") == lines[0].index("reference")  # a text column: left-aligned
    assert lines[4].index("12") == start  # a text column too ("6/6 agree")
    numbers = table(["name", "params"], [["a", "1,234"], ["b", "5"]]).splitlines()
    assert numbers[3].endswith(" 5") and len(numbers[3]) == len(numbers[2])  # a column of numbers: right-aligned
