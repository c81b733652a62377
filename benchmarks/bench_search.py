"""`tinycc search` on CIFAR-10 next to the thesis's pruned CNAS models, trained for as many epochs.

The baselines are the CNAS architecture (``tinycc.models.cnas_cifar10``) pruned as the thesis did (its
step 1: 1,094 of the last convolution's 1,280 filters; and the 770,621-parameter budget) — pruned at
initialisation (L1, tinycc's ``prune``), trained with the same recipe, epochs and training images as the
``thesis-half`` search's trials (``plugins.search.objective.fit``), compiled cut at the Flatten under 830 kB
RAM, scored as deployed (int8 Φf + float Φc on the host simulator) on the same held-out images.

Four searches through the CLI, each with its own sampler seed (``--seed`` + its index), their
trials.csv and pareto.png copied to the results: the thesis's budget (830 kB RAM, 2 MB flash);
``thesis-half``, a RAM+flash budget of at most half the smaller baseline's deployed RAM+flash (RAM
``HALF_RAM``, the rest flash), the search that can meet the issue's criterion (the found model's Ω
accuracy at least the pruned CNAS model's at no more than half its RAM+flash); ``--board nano33ble``
(256 kB RAM, 1 MB flash) and a 64 kB RAM / 1 MB flash board. The tables give every search's best model
and each search's accuracy-vs-RAM Pareto front, and compute the criterion from the measured figures;
search.png plots every trial's accuracy against RAM+flash next to the baselines.
"""
from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .bench_thesis import RAM_BUDGET
from .common import Result, data_file

HALF = "thesis-half"
BUDGETS: dict[str, tuple[str, ...] | None] = {  # name: search budget options (None: derived from the baselines)
    "thesis-830k": ("--ram", str(RAM_BUDGET), "--flash", "2M"),
    HALF: None,
    "nano33ble": ("--board", "nano33ble"),
    "ram64k": ("--ram", "64K", "--flash", "1M"),
}
HALF_RAM = 256 * 1024  # the half-size search's RAM budget (as the Nano 33 BLE's); flash gets the rest
BASELINES = ("step1", "budget2")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=int, default=40, help="trials per search")
    p.add_argument("--epochs", type=int, default=3, help="training epochs of every trial and baseline")
    p.add_argument("--subset", type=int, default=10000, help="training images per trial and baseline")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="search i (in the order of --budgets' choices) runs with "
                                                       "--seed SEED+i")
    p.add_argument("--budgets", default=",".join(BUDGETS), help=f"comma-separated subset of {', '.join(BUDGETS)} "
                                                                f"({HALF} needs the baselines)")
    p.add_argument("--no-baselines", action="store_true", help="skip the pruned CNAS models")


def seed_of(name: str, args: argparse.Namespace) -> int:
    return args.seed + list(BUDGETS).index(name)


def half_budget(baselines: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """RAM ``HALF_RAM`` and flash (whole KiB) so that RAM + flash <= half the smaller baseline's RAM+flash."""
    limit = min(b["ram"] + b["flash"] for b in baselines.values()) // 2
    flash = (limit - HALF_RAM) // 1024 * 1024
    if flash <= 0:
        raise SystemExit(f"half the baselines' RAM+flash ({limit:,} B) leaves no flash beside {HALF_RAM:,} B of RAM")
    return "--ram", str(HALF_RAM), "--flash", str(flash)


def run(args: argparse.Namespace) -> Result:
    from tinycc.report import markdown_table

    names = args.budgets.split(",")
    unknown = [n for n in names if n not in BUDGETS]
    if unknown:
        raise SystemExit(f"--budgets: unknown {', '.join(unknown)} (choose from {', '.join(BUDGETS)})")
    if HALF in names and args.no_baselines:
        raise SystemExit(f"--budgets {HALF} needs the baselines (drop --no-baselines)")
    t_start = time.time()
    cifar = data_file(args.data, "cifar10.npz")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(tempfile.mkdtemp(prefix="tinycc-bench-search-runs-"))  # study.db, trained candidates
    res = Result("search")
    data: dict[str, Any] = {"settings": {"trials": args.trials, "epochs": args.epochs, "subset": args.subset,
                                         "workers": args.workers, "seed": args.seed},
                            "searches": {}, "baselines": {}}
    baselines = {} if args.no_baselines else _baselines(cifar, args, seed_of(HALF, args))
    data["baselines"] = baselines
    rows: list[list[Any]] = []
    all_trials: dict[str, list[dict[str, str]]] = {}
    for name in names:
        budget = BUDGETS[name] or half_budget(baselines)
        folder = runs / name
        cmd = [sys.executable, "-m", "tinycc.cli", "search", "--data", str(cifar), *budget,
               "--trials", str(args.trials), "--epochs", str(args.epochs), "--subset", str(args.subset),
               "--final-epochs", "0", "--workers", str(args.workers), "--seed", str(seed_of(name, args)),
               "--no-progress", "-o", str(folder)]
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.time() - t0
        print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr.strip(), flush=True)
        trials = _rows(folder / "trials.csv") if (folder / "trials.csv").exists() else []
        all_trials[name] = trials
        ok = [t for t in trials if t["feasible"] == "True"]
        best = max(ok, key=lambda t: float(t["accuracy"])) if ok else None
        front = pareto_rows(ok)
        data["searches"][name] = {"budget": budget, "seed": seed_of(name, args), "returncode": r.returncode,
                                  "stderr": r.stderr.strip()[-2000:] if r.returncode else "", "seconds": seconds,
                                  "trials": len(trials), "feasible": len(ok), "best": best, "pareto": front,
                                  "train_seconds_mean": _mean([float(t["train_seconds"]) for t in ok]),
                                  "trial_seconds_mean": _mean([float(t["seconds"]) for t in trials])}
        if best:
            rows.append([f"search {name} (trial {best['trial']})", best["arch"], int(best["params"]),
                         float(best["accuracy"]), int(best["ram"]), int(best["ram_network"]), int(best["flash"]),
                         int(best["ram"]) + int(best["flash"]), f"{' '.join(budget)}; seed {seed_of(name, args)}; "
                         f"{len(ok)}/{len(trials)} feasible"])
        if (folder / "pareto.png").exists():
            shutil.copy(folder / "pareto.png", out / f"search-{name}.png")
            shutil.copy(folder / "trials.csv", out / f"search-{name}.csv")
            res.plots.append(f"search-{name}.png")
    for name, b in baselines.items():
        rows.append([f"CNAS {name}, pruned (cut at flatten)", "thesis's CNAS", b["params"], b["accuracy"], b["ram"],
                     b["ram_network"], b["flash"], b["ram"] + b["flash"], f"--ram {RAM_BUDGET}"])
    header = ["model", "architecture", "params", "Ω accuracy", "RAM", "RAM without buffer", "flash", "RAM+flash",
              "budget; note"]
    _write_csv(out / "search.csv", header, rows)
    res.add(f"CIFAR-10 ({cifar.name}), {args.subset:,} training images, {args.epochs} epoch(s) for every trial and "
            f"baseline (Adam 2e-3, batch 32, BatchNorm statistics re-estimated after training), accuracy of the "
            f"deployed Ω on the same 500 test images; {args.trials} trials per search (NSGA-II, population "
            f"{max(4, min(50, args.trials // 4))}), {args.workers} worker(s). Baselines trained on the "
            f"{HALF} search's training images (seed {seed_of(HALF, args)}). Wall time "
            f"{(time.time() - t_start) / 60:.0f} min.")
    res.add(markdown_table(header, [_fmt_row(r) for r in rows]))
    crit = criterion(data["searches"], baselines)
    data["criterion"] = crit
    if crit:
        res.add("Criterion: the found model's Ω accuracy >= the pruned CNAS model's (deployed under 830 kB RAM) at "
                "RAM+flash <= 0.5 x the CNAS model's. Computed from the rows above:")
        res.add(markdown_table(["found (search)", "vs CNAS", "Ω accuracy found / CNAS", "accuracy >=",
                                "RAM+flash found / CNAS", "ratio", "ratio <= 0.5", "criterion met"],
                               [[c["search"], c["baseline"], f"{c['accuracy']:.4f} / {c['baseline_accuracy']:.4f}",
                                 _yes(c["accuracy_ok"]), f"{c['size']:,} / {c['baseline_size']:,}",
                                 f"{c['ratio']:.3f}", _yes(c["size_ok"]), _yes(c["met"])] for c in crit]))
    fronts = [[name, t["trial"], f"{float(t['accuracy']):.4f}", f"{int(t['ram_network']):,}", f"{int(t['ram']):,}",
               f"{int(t['flash']):,}", t["arch"]] for name, s in data["searches"].items() for t in s["pareto"]]
    if fronts:
        res.add("Pareto fronts (feasible trials no other feasible trial beats on both Ω accuracy and RAM without the "
                "replay buffer; the search's third objective is flash):")
        res.add(markdown_table(["search", "trial", "Ω accuracy", "RAM without buffer", "RAM", "flash",
                                "architecture"], fronts))
    if all_trials:
        _plot(out / "search.png", all_trials, baselines)
        res.plots.insert(0, "search.png")
    res.data = data
    shutil.rmtree(runs, ignore_errors=True)
    return res


def criterion(searches: dict[str, dict[str, Any]], baselines: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each 830 kB-class search's best model against each baseline: accuracy >=, RAM+flash <= 0.5x."""
    out = []
    for name in ("thesis-830k", HALF):
        best = searches.get(name, {}).get("best")
        if not best:
            continue
        for bname, b in baselines.items():
            acc, size, bsize = float(best["accuracy"]), int(best["ram"]) + int(best["flash"]), b["ram"] + b["flash"]
            ratio = size / bsize
            out.append({"search": name, "baseline": bname, "accuracy": acc, "baseline_accuracy": b["accuracy"],
                        "size": size, "baseline_size": bsize, "ratio": ratio, "accuracy_ok": acc >= b["accuracy"],
                        "size_ok": ratio <= 0.5, "met": acc >= b["accuracy"] and ratio <= 0.5})
    return out


def pareto_rows(ok: list[dict[str, str]]) -> list[dict[str, str]]:
    """Feasible trials not dominated in (higher accuracy, lower RAM without the buffer)."""
    front, best = [], -1.0
    for t in sorted(ok, key=lambda t: (int(t["ram_network"]), -float(t["accuracy"]), int(t["trial"]))):
        if float(t["accuracy"]) > best:
            front.append(t)
            best = float(t["accuracy"])
    return front


def _plot(path: Path, trials: dict[str, list[dict[str, str]]], baselines: dict[str, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinycc.report import png_bytes

    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, (name, ts) in enumerate(trials.items()):
        ok = [t for t in ts if t["feasible"] == "True"]
        ax.scatter([(int(t["ram"]) + int(t["flash"])) / 1024 for t in ok], [float(t["accuracy"]) for t in ok],
                   s=18, color=f"C{i}", alpha=0.7, label=f"search {name} ({len(ok)} feasible)")
    for j, (name, b) in enumerate(baselines.items()):
        size = (b["ram"] + b["flash"]) / 1024
        ax.scatter([size], [b["accuracy"]], marker="*", s=160, color=f"C{5 + j}", zorder=4,
                   label=f"CNAS {name}, pruned (830 kB RAM)")
    if baselines:
        half = min(b["ram"] + b["flash"] for b in baselines.values()) / 2 / 1024
        ax.axvline(half, color="grey", ls="--", label="half the smaller CNAS model's RAM+flash")
    ax.set_xlabel("deployed RAM + flash (KiB; the replay buffer fills the RAM budget)")
    ax.set_ylabel("accuracy of the deployed Ω")
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("tinycc search on CIFAR-10 vs the thesis's pruned CNAS models")
    tmp = path.with_suffix(".png.tmp")
    tmp.write_bytes(png_bytes(fig))
    tmp.replace(path)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    tmp.replace(path)


def _fmt_row(row: list[Any]) -> list[str]:
    return [f"{v:.4f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v) for v in row]


def _yes(v: bool) -> str:
    return "yes" if v else "**no**"


def _mean(v: list[float]) -> float | None:
    return float(np.mean(v)) if v else None


def _baselines(cifar: Path, args: argparse.Namespace, seed: int) -> dict[str, dict[str, Any]]:
    """The thesis's two pruned CNAS models, trained and scored as the search's trials are (data seed ``seed``)."""
    import keras

    from tinycc.ir.simulator import Simulator
    from tinycc.ir.stats import totals
    from tinycc.models import cnas_cifar10
    from tinycc.plugins.passes.keras_export import graph_to_keras
    from tinycc.plugins.passes.prune import prune
    from tinycc.plugins.applications.search import load_data
    from tinycc.plugins.applications.search.feasibility import compile_deployment
    from tinycc.plugins.applications.search.objective import TrialData, fit
    from tinycc.session import Session

    d = load_data(str(cifar), args.subset, seed, None)
    scaled = TrialData(d.x_train.astype(np.float32) * d.scale, d.y_train, d.x_test.astype(np.float32) * d.scale,
                       d.y_test, d.n_classes, 1.0, d.path)
    tmp = Path(tempfile.mkdtemp(prefix="tinycc-bench-search-"))
    session = Session(autoload=False)
    keras.utils.set_random_seed(seed)
    cnas_cifar10().save(tmp / "cnas.keras")
    out = {}
    for name in BASELINES:
        g = session.registry.frontend_for(str(tmp / "cnas.keras")).load(str(tmp / "cnas.keras"))
        last = [o for o in g.ops if o.kind.value == "conv2d"][-1]
        kw = {"layer_ratios": {last.name: 1094 / 1280}, "ratio": 0.0} if name == "step1" else \
            {"budget": ("params", 770_621)}
        prune(g, **kw)
        model = graph_to_keras(g)
        t0 = time.time()
        seconds = fit(model, scaled, args.epochs, seed)
        path = tmp / f"{name}.keras"
        model.save(path)
        names = [layer.name for layer in model.layers]
        cut = names[names.index("flatten") - 1]  # the Flatten's input (cleanup removes the no-op Flatten itself)
        dep = compile_deployment(str(path), {"ram": RAM_BUDGET, "cut": cut,
                                             "calib_data": scaled.x_train[:32]}, session)
        pred, _ = Simulator(dep).predict(scaled.x_test)
        buffer = sum(i["bytes"] for i in dep.memory["items"] if i["name"] == "replay buffer")
        out[name] = {"params": totals(g)["params"], "accuracy": float((pred == scaled.y_test).mean()),
                     "ram": int(dep.memory["ram"]), "ram_network": int(dep.memory["ram"]) - buffer,
                     "flash": int(dep.memory["flash"]), "features": int(dep.extractor.tensors[dep.extractor.outputs[0]].shape[-1]),
                     "cut": cut, "train_seconds": seconds, "seconds": time.time() - t0}
        print(f"CNAS {name}: {out[name]}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return out
