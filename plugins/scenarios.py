"""The reference thesis's incremental-learning protocols, run on the host simulator (`tinycc simulate`).

One supervised sample at a time; after each, accuracy on a fixed test set (mean and std over runs):
- concept-drift: classes 4 and 6 swapped from sample 100 of an 800-sample stream (labels of both
  the stream and the test set follow the current concept); 200 test samples.
- incremental: the model was trained on classes 0-7 (its classifier has outputs for all classes);
  classes 8-9 enter the stream at sample 100 of 700; 200 test samples of all classes, accuracy
  reported for old (0-7) and new (8-9) classes separately.
- transfer: a CIFAR-10 model adapted on Imagenette: 700 stream samples, 200 test samples.
Modes side by side: Ω (int8 Φf, buffer as configured), TinyOL (the same Φf, buffer of 1) and the
float baseline (float Φf, float32 buffer of the same capacity). Φf is frozen, so test features are
computed once per mode and only the classifier is evaluated after each sample.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pluggy

from ..errors import TinyccError
from ..ir.buffer import OnlineLearner
from ..ir.interpreter import run
from ..ir.simulator import learner_for

hookimpl = pluggy.HookimplMarker("tinycc")
SCENARIOS = ("concept-drift", "incremental", "transfer")


@dataclass
class Stream:
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    swap_at: int | None = None  # concept drift: labels 4 <-> 6 from this sample on
    new_classes: tuple[int, ...] = ()


def _load(data: str, name: str) -> dict[str, np.ndarray]:
    p = Path(data)
    p = p / name if p.is_dir() else p
    if not p.exists():
        raise TinyccError(f"{p}: data not found")
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def make_stream(scenario: str, data: str, n_stream: int, n_test: int, seed: int, scale: float) -> Stream:
    rng = np.random.default_rng(seed)
    if scenario == "transfer":
        d = _load(data, "imagenette-32.npz")
        xs, ys, xt, yt = d["x_train"], d["y_train"], d["x_val"], d["y_val"]
    else:
        d = _load(data, "cifar10.npz")
        xs, ys, xt, yt = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
    s_idx = rng.choice(len(xs), n_stream, replace=False)
    t_idx = rng.choice(len(xt), n_test, replace=False)
    x, y = xs[s_idx].astype(np.float32) * scale, ys[s_idx].astype(np.int64)
    st = Stream(x, y, xt[t_idx].astype(np.float32) * scale, yt[t_idx].astype(np.int64))
    if scenario == "concept-drift":
        st.swap_at = min(100, n_stream)
    if scenario == "incremental":
        old = ys[s_idx] < 8
        first = np.nonzero(old)[0][:min(100, n_stream)]
        rest = np.setdiff1d(np.arange(n_stream), first)
        order = np.concatenate([first, rest])
        st.x, st.y = x[order], y[order]
        st.new_classes = (8, 9)
    return st


def _swap(y: np.ndarray) -> np.ndarray:
    out = y.copy()
    out[y == 4], out[y == 6] = 6, 4
    return out


def run_mode(learner: OnlineLearner, f_stream: np.ndarray, f_test: np.ndarray, st: Stream) -> dict[str, np.ndarray]:
    n = len(f_stream)
    acc, old_acc, new_acc = np.zeros(n), np.zeros(n), np.zeros(n)
    new_mask = np.isin(st.y_test, st.new_classes)
    for i in range(n):
        drift = st.swap_at is not None and i >= st.swap_at
        label = int(_swap(st.y[i:i + 1])[0] if drift else st.y[i])
        learner.learn(f_stream[i], label)
        y_test = _swap(st.y_test) if drift else st.y_test
        pred = learner.predict(f_test)[0]
        acc[i] = (pred == y_test).mean()
        if st.new_classes:
            old_acc[i] = (pred[~new_mask] == y_test[~new_mask]).mean() if (~new_mask).any() else np.nan
            new_acc[i] = (pred[new_mask] == y_test[new_mask]).mean() if new_mask.any() else np.nan
    return {"all": acc, "old": old_acc, "new": new_acc}


def _learner(dep: Any, capacity: int, storage: str, lr: float, epochs: int) -> OnlineLearner:
    return learner_for(dep, capacity, storage, lr, epochs)


MODES = ("omega", "tinyol", "baseline")


@dataclass
class Prepared:
    """A scenario's deployment (int8 Φf, Φc, buffer) and float Φf, built once for all runs and rates."""

    scenario: str
    data: str
    dep: Any
    float_ext: Any
    n_stream: int
    n_test: int
    scale: float


def prepare(graph: Any, scenario: str, data: str, options: dict[str, Any], session: Any,
            n_stream: int | None = None, n_test: int = 200, scale: float = 1 / 255.0) -> Prepared:
    """Calibrate and cut ``graph`` as `tinycc compile` would for the C backend."""
    from ..backends.c import CBackend
    from .ondevice import build_deployment, cut_candidates, _resolve_cut, split

    if scenario not in SCENARIOS:
        raise TinyccError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    n_stream = n_stream or (800 if scenario == "concept-drift" else 700)
    calib_stream = make_stream(scenario if scenario != "transfer" else "concept-drift", data, 300, 1, 1234, scale)
    dep = build_deployment(graph, {**options, "calib_data": calib_stream.x}, session, CBackend())
    if dep.loss != "ce":
        raise TinyccError(f"the scenarios measure multi-class accuracy: they need a softmax classifier head, this "
                          f"model trains a {dep.loss} head")
    cut = _resolve_cut(graph, dep.meta["cut"], cut_candidates(graph))
    float_ext, _ = split(graph, cut)
    return Prepared(scenario, data, dep, float_ext, n_stream, n_test, scale)


def draw(prep: Prepared, seed: int) -> tuple[Stream, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The stream and test set of one run, and each mode's (stream, test) features (Φf is frozen)."""
    from ..ir.interpreter_int8 import run_int8

    st = make_stream(prep.scenario, prep.data, prep.n_stream, prep.n_test, seed=seed, scale=prep.scale)
    ext, fe = prep.dep.extractor, prep.float_ext
    q = [run_int8(ext, x)[ext.outputs[0]].reshape(len(x), -1) for x in (st.x, st.x_test)]
    f = [run(fe, x)[fe.outputs[0]].reshape(len(x), -1) for x in (st.x, st.x_test)]
    return st, {"omega": (q[0], q[1]), "tinyol": (q[0], q[1]), "baseline": (f[0], f[1])}


def learn(prep: Prepared, st: Stream, feats: dict[str, tuple[np.ndarray, np.ndarray]],
          lr_by_mode: dict[str, float]) -> dict[str, dict[str, np.ndarray]]:
    """Run every mode over one stream with its learning rate; accuracy curves per mode."""
    dep = prep.dep
    ep = dep.train.epochs
    learners = {"omega": _learner(dep, dep.buffer.capacity, dep.buffer.storage, lr_by_mode["omega"], ep),
                "tinyol": _learner(dep, 1, dep.buffer.storage, lr_by_mode["tinyol"], ep),
                "baseline": _learner(dep, dep.buffer.capacity, "float32", lr_by_mode["baseline"], ep)}
    return {m: run_mode(learners[m], feats[m][0], feats[m][1], st) for m in MODES}


def simulate(graph: Any, scenario: str, data: str, options: dict[str, Any], session: Any, runs: int = 5,
             n_stream: int | None = None, n_test: int = 200, scale: float = 1 / 255.0,
             progress: bool = True, first_seed: int = 0,
             lr_by_mode: dict[str, float] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Run a scenario ``runs`` times for Ω, TinyOL and the float baseline; return curves [runs, steps].

    Run r draws its stream and test set with seed ``first_seed + r``; ``lr_by_mode`` overrides the
    learning rate of a mode ("omega", "tinyol", "baseline"), e.g. after tuning on other seeds.
    """
    prep = prepare(graph, scenario, data, options, session, n_stream, n_test, scale)
    lrs = {m: (lr_by_mode or {}).get(m, prep.dep.train.lr) for m in MODES}
    curves: dict[str, dict[str, list[np.ndarray]]] = {m: {"all": [], "old": [], "new": []} for m in MODES}
    for r in _progress(range(runs), scenario, progress):
        st, feats = draw(prep, first_seed + r)
        for mode, res in learn(prep, st, feats, lrs).items():
            for k, v in res.items():
                curves[mode][k].append(v)
    return {m: {k: np.stack(v) for k, v in c.items()} for m, c in curves.items()}


def tune(graph: Any, scenario: str, data: str, options: dict[str, Any], session: Any, grid: list[float],
         runs: int = 1, first_seed: int = 100, n_stream: int | None = None, n_test: int = 200,
         progress: bool = True) -> dict[str, float]:
    """Each mode's learning rate from ``grid`` with the best mean final accuracy on held-out streams.

    Streams use seeds ``first_seed..``; features are computed once per stream for the whole grid.
    """
    prep = prepare(graph, scenario, data, options, session, n_stream, n_test)
    final: dict[str, dict[float, list[float]]] = {m: {lr: [] for lr in grid} for m in MODES}
    for r in _progress(range(runs), f"{scenario} tuning", progress):
        st, feats = draw(prep, first_seed + r)
        for lr in grid:
            for mode, res in learn(prep, st, feats, {m: lr for m in MODES}).items():
                final[mode][lr].append(float(res["all"][-1]))
    return {m: max(grid, key=lambda lr: (float(np.nanmean(final[m][lr])), lr)) for m in MODES}


def _progress(it: range, desc: str, on: bool) -> Any:
    if not on:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit="run")


def write_results(curves: dict[str, dict[str, np.ndarray]], scenario: str, out: Path,
                  stem: str | None = None) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / f"{stem or scenario}.csv", out / f"{stem or scenario}.png"
    n = curves["omega"]["all"].shape[1]
    keys = ["all", "old", "new"] if scenario == "incremental" else ["all"]
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample"] + [f"{m}_{k}_{s}" for m in curves for k in keys for s in ("mean", "std")])
        for i in range(n):
            row = [i + 1]
            for m in curves:
                for k in keys:
                    v = curves[m][k][:, i]
                    row += [f"{np.nanmean(v):.4f}", f"{np.nanstd(v):.4f}"]
            w.writerow(row)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = np.arange(1, n + 1)
    for m, label in (("omega", "Ω (int8 Φf + buffer)"), ("tinyol", "TinyOL"), ("baseline", "float baseline")):
        for k in keys:
            mean, std = np.nanmean(curves[m][k], axis=0), np.nanstd(curves[m][k], axis=0)
            lab = label if k == "all" else f"{label}, {k} classes"
            ax.plot(x, mean, label=lab, ls="-" if k == "all" else (":" if k == "old" else "--"))
            ax.fill_between(x, mean - std, mean + std, alpha=0.15)
    ax.set_xlabel("supervised samples")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{scenario} (mean ± std over {curves['omega']['all'].shape[0]} runs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return csv_path, png_path


def _cmd(args: Any, session: Any) -> int:
    from ..passes import PassContext, run_pipeline

    g = session.registry.frontend_for(args.model).load(args.model, {})
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    opts = {"buffer": args.buffer, "policy": args.policy, "lr": args.lr, "epochs": args.epochs, "cut": args.cut,
            "storage": "int8"}
    curves = simulate(g, args.scenario, args.data, opts, session, args.runs, args.stream, args.test, args.scale)
    csv_path, png_path = write_results(curves, args.scenario, Path(args.output))
    for m in curves:
        v = curves[m]["all"][:, -1]
        extra = ""
        if args.scenario == "incremental":
            extra = (f" (old {np.nanmean(curves[m]['old'][:, -1]):.3f}, "
                     f"new {np.nanmean(curves[m]['new'][:, -1]):.3f})")
        print(f"{m:<9} final accuracy {v.mean():.3f} ± {v.std():.3f}{extra}")
    print(f"wrote {csv_path} and {png_path}")
    return 0


@hookimpl
def tinycc_add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("simulate", help="run the thesis's incremental-learning scenarios on the host")
    p.add_argument("model")
    p.add_argument("--scenario", required=True, choices=SCENARIOS)
    p.add_argument("--data", required=True, help="folder with cifar10.npz / imagenette-32.npz")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--stream", type=int, help="stream length (default 800 concept drift, 700 otherwise)")
    p.add_argument("--test", type=int, default=200, help="test samples evaluated after every sample")
    p.add_argument("--buffer", type=int, default=158, help="replay buffer capacity (thesis: 158)")
    p.add_argument("--policy", default="fifo", choices=["fifo", "reservoir", "class_balanced"])
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--cut", help="cut layer (default: automatic)")
    p.add_argument("--scale", type=float, default=1 / 255.0, help="pixel scale the model expects (default 1/255)")
    p.add_argument("-o", "--output", default="simulate_out")
    p.set_defaults(func=_cmd)
