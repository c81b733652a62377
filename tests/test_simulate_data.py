"""`tinycc simulate` on the user's own labelled data: the bundled digits example through the CLI."""
from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinycc.config import make_config

from .test_cli import tinycc

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "digits_cnn.h5"
DIGITS = ROOT / "examples" / "digits_data.npz"


def simulate(*args: str) -> subprocess.CompletedProcess:
    return tinycc("simulate", str(MODEL), *args)


def stderr_lines(r: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in r.stderr, r.stderr
    return [l for l in r.stderr.splitlines() if l.strip()]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_png(path: Path) -> None:
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.shape[:2] == (540, 960)  # 8 x 4.5 inches at 120 dpi
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 20  # curves, bands, legend: not blank


def check_curves(table: list[dict[str, str]], n: int, kinds: tuple[str, ...]) -> None:
    want = ["sample"] + [f"{m}_{k}_{s}" for m in ("omega", "tinyol", "baseline") for k in kinds
                         for s in ("mean", "std")]
    assert list(table[0]) == want
    assert [int(r["sample"]) for r in table] == list(range(1, n + 1))
    for r in table:
        for k, v in r.items():
            if k != "sample":
                assert 0.0 <= float(v) <= 1.0, (k, v)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Digits-derived datasets: a transfer target (x/y, transposed images of classes 0-2) and bad files."""
    d = tmp_path_factory.mktemp("simdata")
    with np.load(DIGITS) as z:
        x, y, xt, yt = z["x_train"], z["y_train"], z["x_test"], z["y_test"]
    keep = y < 3
    np.savez(d / "target.npz", x=np.swapaxes(x[keep], 1, 2), y=y[keep])
    np.savez(d / "wrong_keys.npz", images=x, labels=y)
    nan = x.copy()
    nan[7, 2, 3, 0] = np.nan
    np.savez(d / "nan.npz", x_train=nan, y_train=y)
    np.savez(d / "short_labels.npz", x_train=x, y_train=y[:-1])
    np.savez(d / "shape.npz", x=np.zeros((50, 10, 10, 1), np.float32), y=y[:50])
    np.savez(d / "range.npz", x_train=x, y_train=np.where(y == 9, 12, y), x_test=xt, y_test=yt)
    no6 = y != 6
    np.savez(d / "no6.npz", x_train=x[no6], y_train=y[no6], x_test=xt, y_test=yt)
    return d


def test_concept_drift_swaps_the_named_classes_after_at(tmp_path: Path) -> None:
    out = tmp_path / "cd"
    r = simulate("--scenario", "concept-drift", "--data", str(DIGITS), "--swap", "3,5", "--at", "40",
                 "--stream", "80", "--test", "100", "--runs", "2", "--buffer", "8", "--lr", "0.05", "-o", str(out))
    assert r.returncode == 0, r.stderr
    # stderr is not a terminal: progress lines every 5 % (2 runs x 3 modes x 80 samples), no bar, nothing else
    lines = stderr_lines(r)
    pcts = [int(re.fullmatch(r"concept-drift: (\d+)% \([\d,]+/480 steps\)", l).group(1)) for l in lines]
    assert pcts == sorted(pcts) and pcts[-1] == 100 and 10 <= len(pcts) <= 20 and "\r" not in r.stderr
    assert "80 stream samples, 100 test samples, 2 run(s), input scale 1; labels 3 and 5 swapped after 40" in r.stdout
    table = rows(out / "concept-drift.csv")
    check_curves(table, 80, ("all",))
    for m in ("omega", "baseline"):  # 3s and 5s are ~20 % of the test set: accuracy falls when labels swap
        assert float(table[40][f"{m}_all_mean"]) < float(table[39][f"{m}_all_mean"]) - 0.08, m
        assert float(table[39][f"{m}_all_mean"]) > 0.85, m  # the trained model before the drift
    stream = rows(out / "concept-drift-stream.csv")
    assert len(stream) == 160 and [r["seed"] for r in stream[::80]] == ["0", "1"]
    swapped = 0
    for s in stream:
        c, label, i = int(s["class"]), int(s["label"]), int(s["sample"])
        want = {3: 5, 5: 3}.get(c, c) if i > 40 else c
        assert label == want, s
        swapped += label != c
    assert swapped > 0
    check_png(out / "concept-drift.png")


def test_incremental_holds_out_new_classes(tmp_path: Path) -> None:
    out = tmp_path / "inc"
    r = simulate("--scenario", "incremental", "--data", str(DIGITS), "--new-classes", "8,9", "--at", "30",
                 "--stream", "60", "--test", "80", "--runs", "1", "--buffer", "8", "--no-progress", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert stderr_lines(r) == []
    table = rows(out / "incremental.csv")
    check_curves(table, 60, ("all", "old", "new"))
    stream = rows(out / "incremental-stream.csv")
    classes = [int(s["class"]) for s in stream]
    assert len(classes) == 60 and [int(s["label"]) for s in stream] == classes
    assert not {8, 9} & set(classes[:30]) and {8, 9} & set(classes[30:])
    assert "new " in r.stdout and "old " in r.stdout
    check_png(out / "incremental.png")


def test_transfer_adapts_to_the_target_data(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "tr"
    r = simulate("--scenario", "transfer", "--data", str(DIGITS), "--target-data", str(data / "target.npz"),
                 "--stream", "50", "--test", "30", "--runs", "2", "--buffer", "8", "--lr", "0.05", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert f"transfer on {data / 'target.npz'}: 50 stream samples, 30 test samples" in r.stdout
    table = rows(out / "transfer.csv")
    check_curves(table, 50, ("all",))
    stream = rows(out / "transfer-stream.csv")
    assert len(stream) == 100 and {int(s["class"]) for s in stream} <= {0, 1, 2}  # drawn from the target only
    check_png(out / "transfer.png")


@pytest.mark.parametrize("case, args, words", [
    ("wrong keys", ["--scenario", "concept-drift", "--data", "{d}/wrong_keys.npz"], ["x_train/y_train", "images"]),
    ("NaN", ["--scenario", "concept-drift", "--data", "{d}/nan.npz"], ["NaN/Inf", "sample 7"]),
    ("label count", ["--scenario", "incremental", "--data", "{d}/short_labels.npz"], ["1400 samples", "1399 labels"]),
    ("no target", ["--scenario", "transfer", "--data", str(DIGITS)], ["--target-data"]),
    ("option of another scenario", ["--scenario", "transfer", "--data", str(DIGITS), "--swap", "1,2"], ["--swap"]),
    ("bad pair", ["--scenario", "concept-drift", "--data", str(DIGITS), "--swap", "4"], ["--swap"]),
    ("shape", ["--scenario", "concept-drift", "--data", "{d}/shape.npz"], ["(10, 10, 1)", "(8, 8, 1)"]),
    ("label range", ["--scenario", "concept-drift", "--data", "{d}/range.npz"], ["label 12", "10 outputs"]),
    ("class absent", ["--scenario", "concept-drift", "--data", "{d}/no6.npz"], ["class 6 does not occur"]),
    ("at too late", ["--scenario", "concept-drift", "--data", str(DIGITS), "--stream", "20", "--at", "20"],
     ["--at 20"]),
])
def test_bad_input_is_one_line_exit_2(data: Path, tmp_path: Path, case: str, args: list[str],
                                      words: list[str]) -> None:
    r = simulate(*[a.format(d=data) for a in args], "-o", str(tmp_path / "o"))
    assert r.returncode == 2, (case, r.stdout, r.stderr)
    lines = stderr_lines(r)
    assert len(lines) == 1, (case, r.stderr)
    assert all(w in lines[0] for w in words), (case, lines[0])
    assert not (tmp_path / "o").exists()


def test_x_y_split_is_seeded_and_disjoint(data: Path) -> None:
    from tinycc.plugins.applications.scenario_data import load_dataset

    with np.load(data / "target.npz") as z:
        n = len(z["x"])
    a, b, c = (load_dataset(str(data / "target.npz"), "unused", seed) for seed in (3, 3, 4))
    assert len(a.x_test) == round(0.2 * n) and len(a.x_train) + len(a.x_test) == n
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)
    rows_ = {r.tobytes() for r in np.concatenate([a.x_train, a.x_test])}
    assert len(rows_) == n  # every sample exactly once (the transposed digits are distinct)


def test_progress_counts_every_learning_step(monkeypatch, session) -> None:
    """One tqdm step per sample and mode on a terminal; progress lines every 5 % when stderr is not one;
    nothing with progress off."""
    from tinycc.passes import PassContext, run_pipeline
    from tinycc.plugins.applications.scenarios import prepare, run_prepared

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    g = session.registry.frontend_for(str(MODEL)).load(str(MODEL))
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    prep = prepare(g, "concept-drift", str(DIGITS), make_config(session, buffer=4, storage="int8"), session, 12, 10)
    for tty, on in ((Terminal(), True), (io.StringIO(), True), (Terminal(), False)):
        monkeypatch.setattr(sys, "stderr", tty)
        curves = run_prepared(prep, runs=2, progress=on)
        assert curves["omega"]["all"].shape == (2, 12)
        shown = tty.getvalue()
        if on and tty.isatty():
            assert "72/72" in shown and "step" in shown  # 2 runs x 3 modes x 12 samples
        elif on:
            lines = shown.splitlines()
            assert lines[-1] == "concept-drift: 100% (72/72 steps)" and "\r" not in shown
            assert all(re.fullmatch(r"concept-drift: \d+% \(\d+/72 steps\)", l) for l in lines)
        else:
            assert shown == ""
