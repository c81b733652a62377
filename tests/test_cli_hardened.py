"""Hardened CLI (issue #19): every bad value or output path is one line naming the problem and exit 2.

One table of reproductions, each run as a user would (``python -m tinycc.cli`` in a subprocess), plus the
behaviours that are not a single error: --force and its marker, concurrent compiles, stale leftovers,
SIGTERM, the output folder's mode, and the option validators themselves.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from tinycc.errors import TinyccError
from tinycc.options import MAX_BYTES, byte_size, count, layer_ratio, positive_float, positive_int, unit_float
from tinycc.output import MARKER, check_output_dir, clean_stale, install_dir, new_project_dir

from .test_cli import ROOT, assert_clean_error, clean_env, tinycc

EXAMPLE = str(ROOT / "examples" / "digits_cnn.h5")
DIGITS = str(ROOT / "examples" / "digits_data.npz")
COMPILE = ["compile", EXAMPLE, "-t", "c", "--calib", DIGITS]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bad inputs: a directory named like a model, a truncated .npz, models with two inputs, a Lambda layer and
    a NaN weight, calibration data with one 1e30 outlier and with an out-of-range label, a regular file."""
    import keras

    d = tmp_path_factory.mktemp("bad")
    (d / "dir.h5").mkdir()
    (d / "trunc.npz").write_bytes(Path(DIGITS).read_bytes()[:3000])
    (d / "file").write_text("not a folder\n")
    z = np.load(DIGITS)
    x, y = z["x_train"][:200].copy(), z["y_train"][:200].copy()
    x[57, 3, 4, 0] = 1e30
    np.savez(d / "outlier.npz", x=x, y=y)
    y[5] = 12
    np.savez(d / "badlabel.npz", x=z["x_train"][:200], y=y)
    np.savez(d / "c6.npz", x=np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32))
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([a, b]))
    keras.Model([a, b], keras.layers.Dense(3, activation="softmax")(h)).save(d / "two.keras")
    inp = keras.Input((6,))
    h = keras.layers.Lambda(lambda t: t * 2.0, name="my_lambda")(inp)
    keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h)).save(d / "lambda.keras")
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", name="hid")(inp)
    m = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(8, activation="relu")(h)))
    w = m.get_layer("hid").get_weights()
    w[0][0, 0] = np.nan
    m.get_layer("hid").set_weights(w)
    m.save(d / "nanweight.keras")
    return d


Case = Callable[[Path, Path], list[str]]  # (files, tmp) -> argv
# id -> (argv, words the one error line must contain)
CASES: dict[str, tuple[Case, list[str]]] = {
    # item 3: budgets and sizes
    "ram 1e99": (lambda f, t: [*COMPILE, "--ram", "1e99", "-o", str(t / "o")], ["--ram", "limit"]),
    "buffer -1": (lambda f, t: [*COMPILE, "--buffer", "-1", "-o", str(t / "o")], ["--buffer", ">= 1"]),
    "buffer huge": (lambda f, t: [*COMPILE, "--buffer", "100000000", "-o", str(t / "o")], ["RAM", "4 GiB", "replay"]),
    # item 8: bad input reported as an internal error before
    "model is a directory": (lambda f, t: ["compile", str(f / "dir.h5"), "-t", "c", "-o", str(t / "o")],
                             ["dir.h5", "directory"]),
    "truncated npz": (lambda f, t: ["compile", EXAMPLE, "-t", "c", "--calib", str(f / "trunc.npz"), "-o",
                                    str(t / "o")], ["trunc.npz", "cannot read"]),
    "ram inf": (lambda f, t: [*COMPILE, "--ram", "inf", "-o", str(t / "o")], ["--ram", "finite"]),
    "lr nan": (lambda f, t: [*COMPILE, "--lr", "nan", "-o", str(t / "o")], ["--lr", "finite"]),
    "lr inf": (lambda f, t: [*COMPILE, "--lr", "inf", "-o", str(t / "o")], ["--lr", "finite"]),
    "batch-size -1": (lambda f, t: [*COMPILE, "--batch-size", "-1", "-o", str(t / "o")], ["--batch-size"]),
    "two inputs with --calib": (lambda f, t: ["compile", str(f / "two.keras"), "-t", "c", "--calib",
                                              str(f / "c6.npz"), "-o", str(t / "o")], ["2 inputs", "a, b"]),
    "prune layer-ratio abc": (lambda f, t: ["prune", EXAMPLE, "--layer-ratio", "conv1=abc", "-o", str(t / "p.keras")],
                              ["--layer-ratio", "conv1", "abc"]),
    "prune -o existing dir": (lambda f, t: ["prune", EXAMPLE, "--ratio", "0.2", "-o", str(t)], ["is a folder"]),
    "-o /proc/foo": (lambda f, t: [*COMPILE, "-o", "/proc/foo"], ["/proc/foo", "cannot write"]),
    "-o . --force": (lambda f, t: [*COMPILE, "-o", ".", "--force"], ["working folder"]),
    # item 9: invalid values accepted or silently changed
    "epochs -1": (lambda f, t: [*COMPILE, "--epochs", "-1", "-o", str(t / "o")], ["--epochs", "1..1000"]),
    "epochs 0": (lambda f, t: [*COMPILE, "--epochs", "0", "-o", str(t / "o")], ["--epochs"]),
    "batch-size 0": (lambda f, t: [*COMPILE, "--batch-size", "0", "-o", str(t / "o")], ["--batch-size"]),
    "buffer 0": (lambda f, t: [*COMPILE, "--buffer", "0", "-o", str(t / "o")], ["--buffer"]),
    "lr -1": (lambda f, t: [*COMPILE, "--lr", "-1", "-o", str(t / "o")], ["--lr", "> 0"]),
    "lr 0": (lambda f, t: [*COMPILE, "--lr", "0", "-o", str(t / "o")], ["--lr", "> 0"]),
    "test-count -1": (lambda f, t: [*COMPILE, "--test-count", "-1", "-o", str(t / "o")], ["--test-count"]),
    "unknown dump-after pass": (lambda f, t: [*COMPILE, "--dump-after", "no_such_pass", "-o", str(t / "o")],
                                ["--dump-after", "no_such_pass", "fold_batchnorm"]),
    "unknown layer-ratio layer": (lambda f, t: ["prune", EXAMPLE, "--layer-ratio", "conv9=0.5", "-o",
                                                str(t / "p.keras")], ["conv9", "conv1"]),
    "label out of range": (lambda f, t: ["compile", EXAMPLE, "-t", "c", "--calib", str(f / "badlabel.npz"), "-o",
                                         str(t / "o")], ["badlabel.npz", "y[5] = 12", "0..9"]),
    "simulate lr 0": (lambda f, t: ["simulate", EXAMPLE, "--scenario", "concept-drift", "--data", DIGITS, "--lr", "0",
                                    "-o", str(t / "s")], ["--lr"]),
    "validate -n 0": (lambda f, t: ["validate", EXAMPLE, "--target", "c", "--data", DIGITS, "-n", "0"], ["-n"]),
    "quantize calib-limit 0": (lambda f, t: ["quantize", EXAMPLE, "--calib", DIGITS, "--calib-limit", "0", "-o",
                                             str(t / "m.tflite")], ["--calib-limit"]),
    # item 4: one calibration outlier
    "calibration outlier": (lambda f, t: ["compile", EXAMPLE, "-t", "c", "--calib", str(f / "outlier.npz"), "-o",
                                          str(t / "o")], ["sample 57", "--observer percentile"]),
    "quantize calibration outlier": (lambda f, t: ["quantize", EXAMPLE, "--calib", str(f / "outlier.npz"), "-o",
                                                   str(t / "m.tflite")], ["sample 57", "--observer percentile"]),
    # item 5: --force replaces only a folder tinycc wrote
    "force onto a file": (lambda f, t: [*COMPILE, "-o", str(f / "file"), "--force"], ["regular file"]),
    "force onto a device": (lambda f, t: [*COMPILE, "-o", "/dev/null", "--force"], ["/dev/null", "device"]),
    "quantize onto a device": (lambda f, t: ["quantize", EXAMPLE, "--calib", DIGITS, "-o", "/dev/null"], ["device"]),
    # learning options with --inference-only were silently ignored
    "inference-only with learning options": (lambda f, t: [*COMPILE, "--inference-only", "--buffer", "5", "--lr", "0.1",
                                                           "-o", str(t / "o")],
                                             ["--buffer", "--lr", "--inference-only"]),
    # item 12
    "lambda layer": (lambda f, t: ["inspect", str(f / "lambda.keras")], ["'my_lambda'", "Lambda", "safe mode"]),
    "nan weight": (lambda f, t: ["compile", str(f / "nanweight.keras"), "-t", "c", "--calib", str(f / "c6.npz"), "-o",
                                 str(t / "o")], ["'hid'", "NaN", "weights"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_reproduction_exits_2_with_one_line(files: Path, tmp_path: Path, case: str) -> None:
    argv, words = CASES[case]
    r = tinycc(*argv(files, tmp_path), cwd=tmp_path)
    assert_clean_error(r, 2, *words)
    assert not (tmp_path / "o").exists()
    assert not any(p.name.startswith((".o.tmp-", ".o.old-")) for p in tmp_path.iterdir())


def test_percentile_observer_accepts_the_outlier(files: Path, tmp_path: Path) -> None:
    """The percentile observer clips the one 1e30 input value, but not the features it spreads to (sample 57's conv
    outputs are more than the 0.01 % it clips): their int8 scale (~7e26) would overflow the float classifier once
    it learns, so compile refuses that range (issue #29, calibration scale) instead of emitting a program that
    rounds every normal sample to zero; quantize (no classifier) accepts it."""
    r = tinycc("compile", EXAMPLE, "-t", "c", "--calib", str(files / "outlier.npz"), "--observer", "percentile",
               "-o", str(tmp_path / "o"))
    assert_clean_error(r, 2, "features", "float32")
    r = tinycc("quantize", EXAMPLE, "--calib", str(files / "outlier.npz"), "--observer", "percentile",
               "-o", str(tmp_path / "m.tflite"))
    assert r.returncode == 0, r.stderr


def test_force_replaces_only_marked_folders_and_never_a_symlink(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    r = tinycc(*COMPILE, "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / MARKER).is_file()
    (out / "stale.txt").write_text("from the old project")
    r = tinycc(*COMPILE, "-o", str(out), "--force")
    assert r.returncode == 0, r.stderr
    assert (out / MARKER).is_file() and not (out / "stale.txt").exists()
    assert_clean_error(tinycc(*COMPILE, "-o", str(out)), 2, "not empty", "--force")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert_clean_error(tinycc(*COMPILE, "-o", str(mine), "--force"), 2, MARKER, "not written by tinycc")
    assert (mine / "notes.txt").read_text() == "keep"
    link = tmp_path / "link"
    link.symlink_to(out)
    assert_clean_error(tinycc(*COMPILE, "-o", str(link), "--force"), 2, "symbolic link")
    assert link.is_symlink() and (out / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "mine", "proj"]  # no .NAME.old-PID left


def test_install_fails_when_the_target_appeared(tmp_path: Path) -> None:
    """Check-then-act: a project that appears between the check and the install is never replaced."""
    out = tmp_path / "o"
    check_output_dir(out, force=False)
    tmp = new_project_dir(out)
    (tmp / "model.c").write_text("new")
    out.mkdir()
    (out / "model.c").write_text("the other compile's")
    with pytest.raises(TinyccError, match="appeared while compiling"):
        install_dir(tmp, out, force=False)
    assert (out / "model.c").read_text() == "the other compile's"
    (tmp_path / "f").write_text("a file appeared")
    with pytest.raises(TinyccError, match="appeared"):
        install_dir(tmp, tmp_path / "f", force=False)


def test_two_compiles_to_the_same_output_one_wins(tmp_path: Path) -> None:
    out = tmp_path / "o"
    procs = [subprocess.Popen([sys.executable, "-m", "tinycc.cli", *COMPILE, "-o", str(out)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=clean_env()) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    err = next(e for rc, e in results if rc == 2)
    assert "appeared while compiling" in err or "not empty" in err
    assert (out / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_stale_leftovers_of_dead_runs_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()  # a PID that no longer runs
    out = tmp_path / "o"
    stale_tmp = tmp_path / f".o.tmp-{dead.pid}-abcd"
    stale_old = tmp_path / f".o.old-{dead.pid}"
    live = tmp_path / f".o.tmp-{os.getpid()}-efgh"
    foreign = tmp_path / f".o.old-{dead.pid}x"
    for p in (stale_tmp, stale_old, live, foreign):
        p.mkdir()
        (p / MARKER).write_text("")
    (tmp_path / f".o.tmp-{dead.pid}-empty").mkdir()  # killed between mkdtemp and the marker
    assert sorted(p.name for p in clean_stale(out)) == sorted([stale_tmp.name, stale_old.name,
                                                               f".o.tmp-{dead.pid}-empty"])
    assert live.is_dir() and foreign.is_dir()


def test_sigterm_during_emit_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "o"
    code = ("import os, signal, sys\n"
            "from tinycc.backends.c import CBackend\n"
            "emit = CBackend.emit\n"
            "def killed(self, *a, **k):\n"
            "    files = emit(self, *a, **k)\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    return files\n"
            "CBackend.emit = killed\n"
            "from tinycc.cli import main\n"
            f"sys.argv = ['tinycc', *{[*COMPILE, '-o', str(out)]!r}]\n"
            "sys.exit(main())\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=clean_env())
    assert r.returncode == 143, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "tinycc: terminated"
    assert list(tmp_path.iterdir()) == []


def test_output_folder_mode_follows_umask_and_the_replaced_folder(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tinycc.cli", *args], capture_output=True, text=True,
                              timeout=600, env=clean_env(), preexec_fn=lambda: os.umask(0o002))

    out = tmp_path / "o"
    assert run(*COMPILE, "-o", str(out)).returncode == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o775
    os.chmod(out, 0o750)
    assert run(*COMPILE, "-o", str(out), "--force").returncode == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o750


def test_read_only_mount_is_refused(tmp_path: Path) -> None:
    """-o on a read-only file system (a tmpfs mounted read-only in a user namespace)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("no unshare -rm (user namespaces) here")
    cmd = " ".join([f"mount -t tmpfs -o ro none {ro} &&", "exec", sys.executable, "-m", "tinycc.cli", *COMPILE, "-o",
                    str(ro / "out")])
    r = subprocess.run([unshare, "-rm", "sh", "-c", cmd], capture_output=True, text=True, timeout=600,
                       env=clean_env())
    assert_clean_error(r, 2, "cannot write there", "Read-only file system")


# ---- the validators (tinycc/options.py) ---------------------------------------------
@pytest.mark.parametrize("fn,text,value", [
    (byte_size, "256K", 262144), (byte_size, "1M", 1 << 20), (byte_size, "8192", 8192), (byte_size, "4G", MAX_BYTES),
    (count, "2M", 2 << 20), (positive_int, "3", 3), (positive_float, "1e-3", 1e-3), (unit_float, "1", 1.0),
    (layer_ratio, "conv1=0.5", ("conv1", 0.5)),
])
def test_validators_accept(fn: Callable, text: str, value: object) -> None:
    assert fn(text) == value


@pytest.mark.parametrize("fn,text", [
    (byte_size, "4.1G"), (byte_size, "0"), (byte_size, "-8K"), (byte_size, "nan"), (byte_size, "1.5"),
    (byte_size, "12Q"), (positive_int, "1.0"), (positive_int, "0"), (positive_float, "-inf"), (unit_float, "1.01"),
    (unit_float, "nan"), (layer_ratio, "=0.5"), (layer_ratio, "conv1"), (count, "1e13"),
])
def test_validators_refuse_with_a_tinycc_error(fn: Callable, text: str) -> None:
    with pytest.raises(TinyccError):
        fn(text)
    with pytest.raises(argparse.ArgumentTypeError):  # argparse names the option
        fn(text)


def test_long_library_messages_end_at_a_sentence_or_word() -> None:
    from tinycc.plugins.frontends.keras import _shorten

    first = "A first sentence that is long enough to be kept on its own, as Keras writes them. "
    assert _shorten(first + "The second one goes on and on " * 10, 200) == first.strip()
    words = "word " * 100
    cut = _shorten(words.strip(), 50)
    assert cut.endswith(" ...") and cut[:-4].split() == ["word"] * len(cut[:-4].split()) and len(cut) <= 54
    assert _shorten("short", 200) == "short"
