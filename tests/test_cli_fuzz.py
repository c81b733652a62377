"""CLI option fuzzer (issue #29): hostile values for every numeric and path option of every command.

The options are enumerated from the real parser (``tinycc.cli.build_parser`` with the installed plugins), so a
new option is fuzzed without editing this file. Three layers, all seeded (same cases every run):

1. parse: every typed option with hostile text; either argparse refuses it (exit 2, one line naming the option)
   or the value lies in the range its type declares (``options.int_range`` bounds, finite floats);
2. run: accepted extreme values (each type's bounds) and hostile output/input paths, through ``tinycc.cli.main``
   in this process: exit 0 or 2, never 1, one line on stderr for 2, nothing written outside the tmp folder;
3. a handful of the same cases as real subprocesses (the console's own stderr: exactly one line).

``tinycc serial`` is left out: its options and protocol belong to the serial work (tests/test_serial*.py).
"""
from __future__ import annotations

import argparse
import math
import os
import random
import warnings
from pathlib import Path
from typing import Any

import pytest

from tinycc.cli import build_parser, main

from .test_cli import ROOT, assert_clean_error, tinycc

EXAMPLE = str(ROOT / "examples" / "digits_cnn.h5")
DIGITS = str(ROOT / "examples" / "digits_data.npz")
SKIP_COMMANDS = {"serial", "plugins", "passes"}  # serial: owned by the serial work; the others take no values
HOSTILE = ["-1", "0", "1", "-0", "nan", "inf", "-inf", "1e309", "1e-320", "2147483647", "2147483648",
           "99999999999999999999", "9" * 60, "0x10", "1_000", "", " ", "abc", "1.5", "-1e30", "1e30", "１２",
           "\x00", "1;rm -rf /", "$(touch x)", "4G", "5G", "1e99K", "-5K", "0.0001"]


def _parser() -> argparse.ArgumentParser:
    from tinycc.session import Session

    return build_parser(Session())


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return {k: v for k, v in sub.choices.items() if k not in SKIP_COMMANDS}


def _typed_options(sp: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in sp._actions if a.option_strings and a.type is not None and a.nargs is None]


def _required_argv(name: str, tmp: Path) -> list[str]:
    """A minimal valid command line of ``name`` (the fuzzed option is appended)."""
    return {"inspect": ["inspect", EXAMPLE],
            "compile": ["compile", EXAMPLE, "-t", "c", "--calib", DIGITS, "-o", str(tmp / "o")],
            "quantize": ["quantize", EXAMPLE, "--calib", DIGITS, "-o", str(tmp / "m.tflite")],
            "prune": ["prune", EXAMPLE, "--ratio", "0.25", "-o", str(tmp / "p.keras")],
            "simulate": ["simulate", EXAMPLE, "--scenario", "concept-drift", "--data", DIGITS, "--runs", "1",
                         "--stream", "8", "--at", "4", "--test", "4", "--buffer", "2", "--no-progress",
                         "-o", str(tmp / "s")],
            "validate": ["validate", EXAMPLE, "-t", "c", "--data", DIGITS, "-n", "2"],
            "search": ["search", "--data", DIGITS, "--board", "uno", "--trials", "1", "--no-progress",
                       "-o", str(tmp / "r")]}[name]


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    """``tinycc.cli.main(argv)`` in this process: (exit code, non-empty stderr lines)."""
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse's usage errors
            rc = int(e.code or 0)
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    return rc, err


def test_every_command_is_fuzzed() -> None:
    """The enumeration finds the commands and their numeric options (a broken introspection fuzzes nothing)."""
    subs = _subparsers(_parser())
    assert {"compile", "quantize", "prune", "simulate", "validate", "search", "inspect"} <= set(subs)
    typed = {n: {a.dest for a in _typed_options(sp)} for n, sp in subs.items()}
    assert {"epochs", "buffer", "lr", "ram", "test_count", "batch_size"} <= typed["compile"]
    assert {"epochs", "runs", "stream", "buffer", "scale", "seed"} <= typed["simulate"]
    assert {"workers", "trials", "storage", "ray_address", "subset"} <= typed["search"]
    for name in ("compile", "simulate", "search", "validate", "quantize", "prune"):
        for a in _typed_options(subs[name]):
            assert a.type is not int and a.type is not float, f"{name} {a.option_strings}: unchecked {a.type}"


def _check_accepted(action: argparse.Action, value: Any) -> None:
    bounds = getattr(action.type, "bounds", None)
    if bounds is not None:
        assert bounds[0] <= value <= bounds[1], (action.option_strings, value)
    if isinstance(value, float):
        assert math.isfinite(value), (action.option_strings, value)
    if isinstance(value, int) and action.dest in ("ram", "flash"):
        assert 1 <= value <= 4 * 1024 ** 3


@pytest.mark.parametrize("command", ["compile", "quantize", "prune", "simulate", "validate", "search"])
def test_parse_refuses_or_accepts_in_range(command: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = _parser()
    sp = _subparsers(parser)[command]
    base = _required_argv(command, tmp_path)
    rng = random.Random(29)
    values = HOSTILE + [str(rng.randint(-2 ** 40, 2 ** 40)) for _ in range(5)] + [repr(rng.uniform(-1e6, 1e6))]
    for action in _typed_options(sp):
        opt = action.option_strings[-1]
        for text in values:
            capsys.readouterr()
            try:
                ns = parser.parse_args(base + [opt, text])
            except SystemExit as e:
                err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
                assert e.code == 2, (opt, text, e.code)
                assert len(err) == 1 and "Traceback" not in err[0], (opt, text, err)
                assert f"argument {action.option_strings[0]}" in err[0] or opt in err[0], (opt, text, err)
                continue
            value = getattr(ns, action.dest)
            _check_accepted(action, value[-1] if isinstance(value, list) else value)


def _extremes(action: argparse.Action) -> list[str]:
    bounds = getattr(action.type, "bounds", None)
    if bounds is not None:
        return [str(bounds[0]), str(bounds[1])]
    if action.dest in ("ram", "flash"):
        return ["1", "4G"]
    if action.dest in ("lr", "scale", "finetune_lr", "calib_scale"):
        return ["1e-30", "1e30"]
    return []


# options whose extremes need a real run that takes minutes (search trials, prune fine-tuning, validate's build):
# their bounds are checked by the parse layer; the run layer takes everything else
SLOW = {("search", "*"), ("validate", "*"), ("prune", "finetune_epochs"), ("prune", "finetune_lr"),
        ("compile", "finetune_epochs"), ("compile", "finetune_lr"), ("simulate", "epochs"), ("simulate", "runs")}


def _run_cases(tmp: Path) -> list[tuple[str, list[str]]]:
    parser = _parser()
    cases = []
    for name, sp in sorted(_subparsers(parser).items()):
        if (name, "*") in SLOW or name == "inspect":
            continue
        for action in _typed_options(sp):
            if (name, action.dest) in SLOW:
                continue
            for v in _extremes(action):
                cases.append((f"{name} {action.option_strings[-1]} {v}",
                              _required_argv(name, tmp) + [action.option_strings[-1], v]))
    return cases


def test_run_extremes_exit_0_or_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Each accepted bound of each option, run for real (seeded sample of the cases): exit 0 or 2, one line."""
    cases = _run_cases(tmp_path)
    assert len(cases) > 30
    picked = random.Random(2929).sample(cases, 16)
    for i, (what, argv) in enumerate(picked):
        work = tmp_path / f"case{i}"
        work.mkdir()
        argv = [a.replace(str(tmp_path), str(work)) for a in argv]
        rc, err = _run(argv, capsys)
        assert rc in (0, 2), (what, rc, err)
        if rc == 2:
            assert len(err) == 1 and "Traceback" not in err[0], (what, err)
        assert not any(p.name.startswith(".") and ".tmp-" in p.name for p in work.iterdir()), what


def _paths(tmp: Path) -> dict[str, str]:
    (tmp / "file").write_text("x\n")
    (tmp / "dir").mkdir()
    (tmp / "dir" / "keep").write_text("x\n")
    os.symlink(tmp / "file", tmp / "link")
    os.symlink(tmp / "dir", tmp / "dirlink")
    return {"empty": "", "dev null": "/dev/null", "proc": "/proc/nope/x", "file": str(tmp / "file"),
            "folder": str(tmp / "dir"), "link": str(tmp / "link"), "dir link": str(tmp / "dirlink"),
            "sub/..": str(tmp / "sub" / ".."), "long name": str(tmp / ("n" * 300))}


OUTPUT_COMMANDS = {"compile": "folder", "simulate": "folder", "search": "folder", "quantize": "file",
                   "prune": "file", "quantize --report": "file", "prune --report": "file"}


@pytest.mark.parametrize("command", sorted(OUTPUT_COMMANDS))
def test_hostile_output_paths(command: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """-o onto a device, a file, a symlink, a foreign folder, sub/.., an impossible name: exit 2, one line, and
    nothing changed (the file and the folder keep their content; no sub/ created)."""
    if command == "search":
        pytest.importorskip("optuna")
    paths = _paths(tmp_path)
    for what, path in paths.items():
        if OUTPUT_COMMANDS[command] == "file" and what in ("file",):
            continue  # replacing a regular file is what -o FILE does
        name, _, flag = command.partition(" ")
        argv = _required_argv(name, tmp_path)
        if flag:
            argv += [flag, path]
        else:
            argv[argv.index("-o") + 1] = path
        rc, err = _run(argv, capsys)
        assert rc == 2, (command, what, rc, err)
        assert len(err) == 1 and "Traceback" not in err[0], (command, what, err)
        assert (tmp_path / "file").read_text() == "x\n"
        assert sorted(os.listdir(tmp_path / "dir")) == ["keep"]
        assert not (tmp_path / "sub").exists(), (command, what)
        assert not any(".tmp-" in p.name for p in tmp_path.iterdir()), (command, what)


@pytest.mark.parametrize("argv, words", [
    (["simulate", EXAMPLE, "--scenario", "concept-drift", "--data", DIGITS, "--epochs", "99999999"],
     ["--epochs", "1..1000"]),
    (["search", "--data", DIGITS, "--board", "uno", "--trials", "2147483648", "-o", "x"], ["--trials", "1..100000"]),
    (["compile", EXAMPLE, "-t", "c", "--buffer", "2147483648", "-o", "x"], ["--buffer", "2147483647"]),
    (["quantize", EXAMPLE, "--calib", DIGITS, "--calib-limit", "9" * 60, "-o", "m.tflite"], ["--calib-limit"]),
])
def test_console_one_line(argv: list[str], words: list[str], tmp_path: Path) -> None:
    """The same refusals through the console script: the user's stderr holds exactly one line."""
    r = tinycc(*argv, cwd=tmp_path)
    assert_clean_error(r, 2, *words)
    assert os.listdir(tmp_path) == []
