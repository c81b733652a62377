"""Every CLI command prints only tinycc's own words on stderr, with TensorFlow's oneDNN on and off.

Each case runs ``python -m tinycc.cli`` as a user would: a subprocess in a clean environment (no TF_* logging
variables). Good input: nothing but tinycc's own warnings on stderr. Bad input: exactly one ``tinycc: error:`` line and exit 2.
"""
from __future__ import annotations

import re

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from .test_cli import ROOT, tinycc

EXAMPLE = ROOT / "examples" / "digits_cnn.h5"
DIGITS = ROOT / "examples" / "digits_data.npz"

Case = Callable[[Path], list[str]]

GOOD: dict[str, Case] = {
    "inspect": lambda d: ["inspect", str(EXAMPLE)],
    "inspect --json": lambda d: ["inspect", str(EXAMPLE), "--json", "--cleanup"],
    "plugins": lambda d: ["plugins"],
    "passes": lambda d: ["passes"],
    "ops": lambda d: ["ops"],
    "compile": lambda d: ["compile", str(EXAMPLE), "--target", "c", "--calib", str(DIGITS), "-o", str(d / "out")],
    "quantize": lambda d: ["quantize", str(EXAMPLE), "--calib", str(DIGITS), "--eval", str(DIGITS),
                           "-o", str(d / "m.tflite")],
    "prune": lambda d: ["prune", str(EXAMPLE), "--ratio", "0.25", "-o", str(d / "p.keras")],
    "simulate": lambda d: ["simulate", str(EXAMPLE), "--scenario", "concept-drift", "--data", str(DIGITS),
                           "--runs", "1", "--stream", "60", "--at", "30", "--test", "40", "-o", str(d / "sim")],
    "validate": lambda d: ["validate", str(EXAMPLE), "--target", "c", "--data", str(DIGITS), "-n", "4"],
}


def _nan_calib(d: Path) -> str:
    np.savez(d / "nan.npz", x=np.full((4, 8, 8, 1), np.nan, np.float32))
    return str(d / "nan.npz")


BAD: dict[str, Case] = {
    "inspect": lambda d: ["inspect", str(d / "missing.h5")],
    "compile": lambda d: ["compile", str(EXAMPLE), "--target", "fpga", "-o", str(d / "out")],
    "compile usage": lambda d: ["compile", str(EXAMPLE)],
    "quantize": lambda d: ["quantize", str(EXAMPLE), "--calib", _nan_calib(d), "-o", str(d / "m.tflite")],
    "prune": lambda d: ["prune", str(EXAMPLE), "--ratio", "1.5", "-o", str(d / "p.keras")],
    "simulate": lambda d: ["simulate", str(EXAMPLE), "--scenario", "concept-drift", "--data", str(d / "none")],
    "validate": lambda d: ["validate", str(EXAMPLE), "--target", "c", "--data", str(d / "missing.npz")],
    # search's good case (no stderr at all) is tests/test_search.py::test_three_trials_outputs (a 3-trial search)
    "search": lambda d: ["search", "--data", str(d / "missing.npz"), "--board", "uno", "--trials", "1", "-o",
                         str(d / "s")],
    "serial": lambda d: ["serial", "--port", str(d / "no-such-tty"), "--data", str(DIGITS), "-o", str(d / "s")],
    "ops": lambda d: ["ops", "--bogus"],
    "unknown command": lambda d: ["frobnicate"],
}


@pytest.mark.parametrize("onednn", ["1", "0"])
@pytest.mark.parametrize("case", sorted(GOOD))
def test_good_input_prints_nothing_on_stderr(tmp_path: Path, case: str, onednn: str) -> None:
    r = tinycc(*GOOD[case](tmp_path), onednn=onednn)
    assert r.returncode == 0, r.stderr
    # simulate's progress: a line every 5% when stderr is not a terminal (tinycc's own words)
    progress = re.compile(r"concept-drift: \d+% \([\d,]+/[\d,]+ steps\)")
    foreign = [line for line in r.stderr.splitlines() if not line.startswith("tinycc: ")
               and not (case == "simulate" and progress.fullmatch(line))]
    assert foreign == [], r.stderr
    assert r.stdout.strip()
    if case == "simulate":
        assert r.stderr.splitlines()[-1].startswith("concept-drift: 100% ")


@pytest.mark.parametrize("onednn", ["1", "0"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2(tmp_path: Path, case: str, onednn: str) -> None:
    r = tinycc(*BAD[case](tmp_path), onednn=onednn)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_every_command_is_covered() -> None:
    """A new command must get its own good/bad stderr case here."""
    from tinycc.cli import build_parser
    from tinycc.session import Session

    parser = build_parser(Session(autoload=False))
    sub = next(a for a in parser._actions if a.dest == "command")
    covered = {c.split()[0] for c in [*GOOD, *BAD]}
    assert set(sub.choices) <= covered, set(sub.choices) - covered


def test_verbose_may_show_library_logs(tmp_path: Path) -> None:
    """-v keeps the library's stderr (for debugging); the command still succeeds."""
    r = tinycc("-v", "inspect", str(EXAMPLE), onednn="1")
    assert r.returncode == 0 and "conv1" in r.stdout
