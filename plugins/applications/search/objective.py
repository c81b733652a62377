"""One trial, as a Ray task: build the candidate, check feasibility, train, score the deployed Ω.

``run_trial(arch, cfg, data)`` returns a plain dict (the row of trials.csv plus the trained model's
``.keras`` bytes). Infeasible candidates stop after the compile check: ``epochs`` 0, no training.
Objective ``accuracy``: top-1 of the deployed program on the held-out samples, i.e. int8 Φf
(``run_int8``) and the float Φc as trained, through ``ir.simulator.Simulator``. Objective ``drift``:
the final Ω accuracy of a short concept-drift stream (`tinycc simulate`'s ``plugins/applications/scenarios.py``:
labels of classes 0 and 1 swapped after a quarter of the stream) with the buffer as deployed.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

CALIB = 32  # calibration samples of the feasibility check and of the scored deployment
BATCH, LR = 32, 2e-3
BN_SAMPLES = 512  # samples whose statistics become the BatchNorm moving averages after training


@dataclass
class TrialData:
    """Samples as stored (the model's Rescaling layer scales them); shipped once through ray.put."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    scale: float
    path: str


def _session() -> Any:
    from ....session import Session

    return Session()


def fit(model: Any, data: TrialData, epochs: int, seed: int) -> float:
    import keras

    t0 = time.perf_counter()
    if epochs > 0:
        keras.utils.set_random_seed(seed)
        model.compile(optimizer=keras.optimizers.Adam(LR), loss="sparse_categorical_crossentropy")
        model.fit(data.x_train, data.y_train, batch_size=BATCH, epochs=epochs, verbose=0, shuffle=True)
        _recalibrate_batchnorm(model, data.x_train[:BN_SAMPLES])
    return time.perf_counter() - t0


def _recalibrate_batchnorm(model: Any, x: np.ndarray) -> None:
    """Set every BatchNorm's moving statistics to those of ``x`` (one forward pass in training mode).

    A few epochs on a subset are too few steps for the moving averages (momentum 0.99) to leave their
    initial values; the deployed model folds these statistics, so they are re-estimated after training.
    """
    bns = [l for l in model._flatten_layers() if type(l).__name__ == "BatchNormalization"]
    kept = [l.momentum for l in bns]
    for l in bns:
        l.momentum = 0.0
    model(x.astype(np.float32), training=True)
    for l, m in zip(bns, kept):
        l.momentum = m


def score(dep: Any, path: str, data: TrialData, objective: str, budget: dict[str, Any], cut: str,
          session: Any) -> float:
    """Accuracy of the deployed program (host simulator) on the held-out samples, or after a drift stream."""
    from ....ir.simulator import Simulator

    if objective == "accuracy":
        pred, _ = Simulator(dep).predict(data.x_test.astype(np.float32))
        return float((pred == data.y_test).mean())
    from ..scenario_data import Dataset, Protocol
    from ..scenarios import ScenarioData, prepare, run_prepared
    from ....api import make_config
    from .feasibility import load_cleaned

    ds = Dataset(data.path, data.x_train, data.y_train, data.x_test, data.y_test)
    n_stream = min(300, len(ds.x_train))
    protocol = Protocol(swap=(0, 1), at=n_stream // 4)
    prep = prepare(load_cleaned(path, session), "concept-drift", ScenarioData(ds, ds, 1.0),
                   make_config(session, **budget, cut=cut), session, n_stream, min(200, len(ds.x_test)), 1.0,
                   protocol)
    return float(run_prepared(prep, runs=1, progress=False)["omega"]["all"][0, -1])


def run_trial(arch: dict[str, Any], cfg: dict[str, Any], data: TrialData) -> dict[str, Any]:
    """Feasibility by the compile path, then (only if feasible) training and the deployed program's score."""
    from .feasibility import check, model_bytes
    from .space import build_model, describe, effective_cut

    t0 = time.perf_counter()
    session = _session()
    cut = effective_cut(arch)
    model = build_model(arch, data.x_train.shape[1:], data.n_classes, data.scale, cfg["seed"])
    rec: dict[str, Any] = {"arch": describe(arch), "params": int(model.count_params()), "epochs": 0,
                           "train_seconds": 0.0, "accuracy": 0.0, "model": None}
    calib = data.x_train[:CALIB].astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="tinycc-trial-") as tmp:
        path = f"{tmp}/candidate.keras"
        model.save(path)
        res = check(path, cfg["budget"], cut, calib, session, cfg.get("max_instructions"))
        if res.feasible:
            rec["train_seconds"] = fit(model, data, cfg["epochs"], cfg["seed"])
            rec["epochs"] = cfg["epochs"]
            rec["model"] = model_bytes(model, tmp, "trained.keras")
            res = check(f"{tmp}/trained.keras", cfg["budget"], cut, calib, session, cfg.get("max_instructions"))
            rec["accuracy"] = score(res.deployment, f"{tmp}/trained.keras", data, cfg["objective"], cfg["budget"],
                                    cut, session)
    rec.update(feasible=res.feasible, ram=res.ram, ram_network=res.ram_network, flash=res.flash,
               instructions=res.instructions, buffer=res.buffer, cut=cut, reason=res.reason, seconds=time.perf_counter() - t0)
    return rec


def final_train(model: bytes, cfg: dict[str, Any], data: TrialData, epochs: int) -> dict[str, Any]:
    """Train the best trial's model ``epochs`` more, re-check it under the budget and score it."""
    import keras

    from .feasibility import check, model_bytes

    session = _session()
    with tempfile.TemporaryDirectory(prefix="tinycc-final-") as tmp:
        path = f"{tmp}/best.keras"
        with open(path, "wb") as f:
            f.write(model)
        m = keras.models.load_model(path)
        seconds = fit(m, data, epochs, cfg["seed"] + 1)
        out = model_bytes(m, tmp, "final.keras")
        calib = data.x_train[:CALIB].astype(np.float32)
        res = check(f"{tmp}/final.keras", cfg["budget"], cfg["cut"], calib, session, cfg.get("max_instructions"))
        acc = score(res.deployment, f"{tmp}/final.keras", data, cfg["objective"], cfg["budget"], cfg["cut"],
                    session) if res.feasible else 0.0
    return {"model": out, "feasible": res.feasible, "ram": res.ram, "ram_network": res.ram_network, "flash": res.flash,
            "accuracy": acc,
            "instructions": res.instructions, "buffer": res.buffer, "seconds": seconds, "reason": res.reason}
