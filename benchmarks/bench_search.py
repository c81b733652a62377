"""`tinycc search` on CIFAR-10 next to the thesis's pruned CNAS models, trained for as many epochs.

Three searches through the CLI (their trials.csv and pareto.png copied to the results): the thesis's budget (830 kB RAM,
``--flash`` 2 MB), ``--board nano33ble`` (256 kB RAM, 1 MB flash) and a 64 kB RAM / 1 MB flash board.
The baselines are the CNAS architecture (``tinycc.models.cnas_cifar10``) pruned as the thesis did (its
step 1: 1,094 of the last convolution's 1,280 filters; and the 770,621-parameter budget) — pruned at
initialisation (L1, tinycc's ``prune``), trained with the same recipe and epochs as every search trial
(``plugins.search.objective.fit``), compiled cut at the Flatten under 830 kB RAM, scored as deployed
(int8 Φf + float Φc on the host simulator) on the same held-out images. Table: accuracy, RAM, flash,
RAM without the replay buffer, flash, RAM+flash; plots: each search's accuracy vs RAM (its ``pareto.png``).
"""
from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .bench_thesis import RAM_BUDGET
from .common import Result, data_file

BUDGETS = {  # name: search budget options
    "thesis-830k": ("--ram", str(RAM_BUDGET), "--flash", "2M"),
    "nano33ble": ("--board", "nano33ble"),
    "ram64k": ("--ram", "64K", "--flash", "1M"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=int, default=40, help="trials per search")
    p.add_argument("--epochs", type=int, default=3, help="training epochs of every trial and baseline")
    p.add_argument("--subset", type=int, default=10000, help="training images per trial and baseline")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--budgets", default=",".join(BUDGETS), help=f"comma-separated subset of {', '.join(BUDGETS)}")
    p.add_argument("--no-baselines", action="store_true", help="skip the pruned CNAS models")


def run(args: argparse.Namespace) -> Result:
    from tinycc.report import markdown_table

    cifar = data_file(args.data, "cifar10.npz")
    out = Path(args.out)
    runs = Path(tempfile.mkdtemp(prefix="tinycc-bench-search-runs-"))  # study.db, trained candidates
    res = Result("search")
    rows, data = [], {"searches": {}, "baselines": {}}
    for name in args.budgets.split(","):
        folder = runs / name
        cmd = [sys.executable, "-m", "tinycc.cli", "search", "--data", str(cifar), *BUDGETS[name],
               "--trials", str(args.trials), "--epochs", str(args.epochs), "--subset", str(args.subset),
               "--final-epochs", "0", "--workers", str(args.workers), "--no-progress", "-o", str(folder)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr.strip(), flush=True)
        trials = _rows(folder / "trials.csv") if (folder / "trials.csv").exists() else []
        ok = [t for t in trials if t["feasible"] == "True"]
        best = max(ok, key=lambda t: float(t["accuracy"])) if ok else None
        data["searches"][name] = {"budget": BUDGETS[name], "returncode": r.returncode, "trials": len(trials),
                                  "feasible": len(ok), "best": best}
        if best:
            rows.append([f"search {name} (trial {best['trial']})", best["arch"], f"{int(best['params']):,}",
                         f"{float(best['accuracy']):.4f}", f"{int(best['ram']):,}", f"{int(best['ram_network']):,}",
                         f"{int(best['flash']):,}", f"{int(best['ram']) + int(best['flash']):,}",
                         f"{len(ok)}/{len(trials)} feasible"])
        if (folder / "pareto.png").exists():
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(folder / "pareto.png", out / f"search-{name}.png")
            shutil.copy(folder / "trials.csv", out / f"search-{name}.csv")
            res.plots.append(f"search-{name}.png")
    if not args.no_baselines:
        for name, b in _baselines(cifar, args).items():
            data["baselines"][name] = b
            rows.append([f"CNAS {name}, pruned (cut at flatten)", "thesis's CNAS", f"{b['params']:,}",
                         f"{b['accuracy']:.4f}", f"{b['ram']:,}", f"{b['ram_network']:,}", f"{b['flash']:,}",
                         f"{b['ram'] + b['flash']:,}", "830 kB RAM"])
    res.add(f"CIFAR-10 ({cifar.name}), {args.subset} training images, {args.epochs} epoch(s) for every trial and "
            f"baseline (Adam 2e-3, batch 32, BatchNorm statistics re-estimated after training), accuracy of the "
            f"deployed Ω on 500 test images; {args.trials} trials per search (NSGA-II).")
    res.add(markdown_table(["model", "architecture", "params", "Ω accuracy", "RAM", "RAM without buffer", "flash",
                            "RAM+flash", "note"], rows))
    found = data["searches"].get("thesis-830k", {}).get("best")
    for name, b in data["baselines"].items():
        if found:
            size = (int(found["ram"]) + int(found["flash"])) / (b["ram"] + b["flash"])
            res.add(f"830 kB budget, found vs CNAS {name}: Ω accuracy {float(found['accuracy']):.4f} vs "
                    f"{b['accuracy']:.4f}, RAM+flash {size:.2f} x the pruned model's.")
    res.data = data
    shutil.rmtree(runs, ignore_errors=True)
    return res


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _baselines(cifar: Path, args: argparse.Namespace) -> dict[str, dict]:
    """The thesis's two pruned CNAS models, trained and scored as the search's trials are."""
    import keras

    from tinycc.ir.simulator import Simulator
    from tinycc.ir.stats import totals
    from tinycc.models import cnas_cifar10
    from tinycc.plugins.keras_export import graph_to_keras
    from tinycc.plugins.prune import prune
    from tinycc.plugins.search import load_data
    from tinycc.plugins.search.feasibility import compile_deployment
    from tinycc.plugins.search.objective import TrialData, fit
    from tinycc.session import Session

    d = load_data(str(cifar), args.subset, 0, None)
    scaled = TrialData(d.x_train.astype(np.float32) * d.scale, d.y_train, d.x_test.astype(np.float32) * d.scale,
                       d.y_test, d.n_classes, 1.0, d.path)
    tmp = Path(tempfile.mkdtemp(prefix="tinycc-bench-search-"))
    session = Session(autoload=False)
    keras.utils.set_random_seed(0)
    cnas_cifar10().save(tmp / "cnas.keras")
    out = {}
    for name in ("step1", "budget2"):
        g = session.registry.frontend_for(str(tmp / "cnas.keras")).load(str(tmp / "cnas.keras"), {})
        last = [o for o in g.ops if o.kind.value == "conv2d"][-1]
        kw = {"layer_ratios": {last.name: 1094 / 1280}, "ratio": 0.0} if name == "step1" else \
            {"budget": ("params", 770_621)}
        prune(g, **kw)
        model = graph_to_keras(g)
        seconds = fit(model, scaled, args.epochs, 0)
        path = tmp / f"{name}.keras"
        model.save(path)
        dep = compile_deployment(str(path), {"ram": RAM_BUDGET, "cut": "flatten",
                                             "calib_data": scaled.x_train[:32]}, session)
        pred, _ = Simulator(dep).predict(scaled.x_test)
        buffer = sum(i["bytes"] for i in dep.memory["items"] if i["name"] == "replay buffer")
        out[name] = {"params": totals(g)["params"], "accuracy": float((pred == scaled.y_test).mean()),
                     "ram": int(dep.memory["ram"]), "ram_network": int(dep.memory["ram"]) - buffer,
                     "flash": int(dep.memory["flash"]), "train_seconds": seconds}
        print(f"CNAS {name}: {out[name]}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return out
