"""`tinycc simulate`: the thesis protocols on generated CIFAR-like data (tiny streams)."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import fake_thesis_data


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import keras

    d = tmp_path_factory.mktemp("scen")
    fake_thesis_data(d, 32, 400, 100)
    keras.utils.set_random_seed(1)
    L = keras.layers
    m = keras.Sequential([keras.Input((32, 32, 3)), L.Conv2D(4, 3, strides=4, activation="relu", name="c"),
                          L.GlobalAveragePooling2D(name="gap"), L.Dense(10, activation="softmax", name="out")])
    m.save(d / "model.keras")
    return d


@pytest.mark.parametrize("scenario", ["concept-drift", "incremental", "transfer"])
def test_simulate_writes_csv_and_plot(setup: Path, scenario: str) -> None:
    out = setup / f"out-{scenario}"
    r = subprocess.run([sys.executable, "-m", "tinycc.cli", "simulate", str(setup / "model.keras"), "--scenario",
                        scenario, "--data", str(setup), "--runs", "2", "--stream", "30", "--test", "20",
                        "--buffer", "8", "--lr", "0.05", "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(open(out / f"{scenario}.csv")))
    assert len(rows) == 31
    assert "omega_all_mean" in rows[0] and "tinyol_all_mean" in rows[0] and "baseline_all_mean" in rows[0]
    if scenario == "incremental":
        assert "omega_new_mean" in rows[0] and "omega_old_mean" in rows[0]
    vals = [float(v) for v in rows[-1][1:]]
    assert all(0.0 <= v <= 1.0 for v in vals)
    assert (out / f"{scenario}.png").stat().st_size > 5000
    assert "final accuracy" in r.stdout


def test_tune_picks_the_best_rate_per_mode(setup: Path) -> None:
    """tune() computes features once per stream; its choice equals simulate() run at each rate."""
    from tinycc.passes import PassContext, run_pipeline
    from .deploy_util import config
    from tinycc.plugins.applications.scenarios import MODES, simulate, tune
    from tinycc.session import Session

    session = Session(autoload=False)
    g = session.registry.frontend_for(str(setup / "model.keras")).load(str(setup / "model.keras"))
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    opts = {"buffer": 8, "storage": "int8"}
    grid = [0.001, 0.05, 0.5]
    best = tune(g, "concept-drift", str(setup), config(session, opts), session, grid, runs=2, n_stream=40, n_test=30, progress=False)
    finals = {lr: simulate(g, "concept-drift", str(setup), config(session, {**opts, "lr": lr}), session, runs=2, n_stream=40,
                           n_test=30, first_seed=100, progress=False) for lr in grid}
    for m in MODES:
        score = {lr: float(np.mean(finals[lr][m]["all"][:, -1])) for lr in grid}
        assert best[m] == max(grid, key=lambda lr: (score[lr], lr))
