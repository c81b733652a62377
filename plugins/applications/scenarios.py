"""The reference thesis's incremental-learning protocols, run on the host simulator (`tinycc simulate`).

One supervised sample at a time; after each, accuracy on a fixed test set (mean and std over runs).
Defaults are the thesis's (its data folder: CIFAR-10 and Imagenette at 32x32, pixels scaled by 1/255):
- concept-drift: classes 4 and 6 swapped after the first 100 samples of an 800-sample stream (labels of
  both the stream and the test set follow the current concept); 200 test samples.
- incremental: the model was trained on classes 0-7 (its classifier has outputs for all classes);
  classes 8-9 enter the stream at sample 100 of 700; 200 test samples of all classes, accuracy
  reported for old (0-7) and new (8-9) classes separately.
- transfer: a CIFAR-10 model adapted on Imagenette: 700 stream samples, 200 test samples.
Any labelled .npz works too, with the swapped pair, the point of change, the new classes and the
target dataset as options (`Protocol`, data handling in `scenario_data`).
Modes side by side: Ω (int8 Φf, buffer as configured), TinyOL (the same Φf, buffer of 1) and the
float baseline (float Φf, float32 buffer of the same capacity). Φf is frozen, so test features are
computed once per mode and only the classifier is evaluated after each sample.
``--deep bias,blocks`` (the config's ``learning.deep``) adds learners that train beyond the head
(``tinycc.ir.deep``, modes ``deep-bias`` and ``deep-blocks``, glue in ``deep_modes``), with the same buffer
capacity of int8 cut tensors (the cut: ``--deep-cut``, default the input of the last block with a convolution);
their front (input -> cut) is frozen and computed once per run.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pluggy

from ...errors import TinyccError
from ...config import CompileConfig, LearningConfig
from ...output import check_output_dir, project_dir
from ...options import (MAX_BUFFER, MAX_EPOCHS, MAX_RUNS, MAX_SAMPLES, int_range, non_negative_int, path_text,
                       positive_float)
from ...report import png_bytes
from ...ir.buffer import OnlineLearner
from ...ir.interpreter import run
from ...ir.simulator import learner_for
from .scenario_data import (SOURCE_FILE, TARGET_FILE, THESIS_SCALE, Dataset, Protocol, Stream, check_classes,
                            fit_to_model, load_dataset, make_stream, sample_count)

hookimpl = pluggy.HookimplMarker("tinycc")
SCENARIOS = ("concept-drift", "incremental", "transfer")
MODES = ("omega", "tinyol", "baseline")
THESIS_AT = 100  # the thesis's point of change (concept drift, incremental)
CALIB_SAMPLES, CALIB_SEED = 300, 1234


def run_mode(learner: OnlineLearner, f_stream: np.ndarray, f_test: np.ndarray, st: Stream,
             tick: Callable[[], Any] | None = None) -> dict[str, np.ndarray]:
    n = len(f_stream)
    acc, old_acc, new_acc = np.zeros(n), np.zeros(n), np.zeros(n)
    new_mask = np.isin(st.y_test, st.new_classes)
    for i in range(n):
        learner.learn(f_stream[i], int(st.label[i]))
        y_test = st.test_labels(i)
        pred = learner.predict(f_test)[0]
        acc[i] = (pred == y_test).mean()
        if st.new_classes:
            old_acc[i] = (pred[~new_mask] == y_test[~new_mask]).mean() if (~new_mask).any() else np.nan
            new_acc[i] = (pred[new_mask] == y_test[new_mask]).mean() if new_mask.any() else np.nan
        if tick:
            tick()
    return {"all": acc, "old": old_acc, "new": new_acc}


def _learner(dep: Any, capacity: int, storage: str, lr: float, epochs: int) -> OnlineLearner:
    return learner_for(dep, capacity, storage, lr, epochs)


# ---- data ------------------------------------------------------------------------
@dataclass
class ScenarioData:
    """The model's own data (calibration; the stream too, except in transfer) and the stream's data."""

    source: Dataset
    stream: Dataset
    scale: float  # default input scale: the thesis's 1/255 for its folder, 1 (as stored) for a file


def load_data(scenario: str, data: str, protocol: Protocol) -> ScenarioData:
    """Read (and check) the datasets a scenario needs; nothing about the model yet."""
    if scenario not in SCENARIOS:
        raise TinyccError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    folder = Path(data).is_dir()
    source = load_dataset(data, SOURCE_FILE, protocol.seed)
    stream = source
    if scenario == "transfer":
        if protocol.target_data is None and not folder:
            raise TinyccError("transfer needs --target-data DATA2.npz (the dataset to adapt to) when --data is a file")
        stream = load_dataset(protocol.target_data or data, TARGET_FILE, protocol.seed)
    return ScenarioData(source, stream, THESIS_SCALE if folder else 1.0)


def _at(protocol: Protocol, n_stream: int) -> int:
    if protocol.at is None:
        return min(THESIS_AT, n_stream)
    if not 0 <= protocol.at < n_stream:
        raise TinyccError(f"--at {protocol.at}: must be in 0..{n_stream - 1} (the stream has {n_stream} samples)")
    return protocol.at


@dataclass
class Prepared:
    """A scenario's deployment (int8 Φf, Φc, buffer) and float Φf, built once for all runs and rates."""

    scenario: str
    data: Dataset  # where stream and test samples are drawn from
    dep: Any
    float_ext: Any
    n_stream: int
    n_test: int
    scale: float
    protocol: Protocol
    at: int  # concept drift: labels swapped from this step on; incremental: old classes only before it
    deep: tuple[str, ...] = ()  # DeepLearner modes run beside the head-only ones (config.learning.deep)
    deep_cut: str | None = None  # their cut tensor, resolved
    deep_lr: float | None = None  # their backbone's rate (config.learning.backbone_lr)

    @property
    def modes(self) -> tuple[str, ...]:
        return MODES + tuple(f"deep-{m}" for m in self.deep)


def prepare(graph: Any, scenario: str, data: str | ScenarioData, config: CompileConfig, session: Any,
            n_stream: int | None = None, n_test: int | None = None, scale: float | None = None,
            protocol: Protocol | None = None) -> Prepared:
    """Check the data against the model, then calibrate and cut ``graph`` as `tinycc compile` does for C."""
    from ...api import deploy
    from ...deploy import cut_candidates, split
    from ...deploy.learning import _resolve_cut

    protocol = protocol or Protocol()
    sd = data if isinstance(data, ScenarioData) else load_data(scenario, data, protocol)
    n_classes = int(graph.tensors[graph.outputs[0]].shape[-1])
    source = fit_to_model(sd.source, graph, n_classes)
    stream = source if sd.stream is sd.source else fit_to_model(sd.stream, graph, n_classes)
    n_stream = sample_count("--stream", n_stream, 800 if scenario == "concept-drift" else 700,
                            len(stream.x_train), f"the stream data of {stream.path}")
    n_test = sample_count("--test", n_test, 200, len(stream.x_test), f"the test data of {stream.path}")
    at = _at(protocol, n_stream)
    if scenario == "concept-drift":
        if protocol.swap[0] == protocol.swap[1]:
            raise TinyccError(f"--swap {protocol.swap[0]},{protocol.swap[1]}: give two different classes")
        check_classes(stream, "--swap", protocol.swap, n_classes)
    if scenario == "incremental":
        check_classes(stream, "--new-classes", protocol.new_classes, n_classes)
        if np.isin(stream.y_train, protocol.new_classes).all():
            raise TinyccError(f"--new-classes: {stream.path} has no stream samples of other (old) classes")
    scale = sd.scale if scale is None else float(scale)
    n_calib = min(CALIB_SAMPLES, len(source.x_train))
    calib = make_stream("concept-drift" if scenario == "transfer" else scenario, source, n_calib, 1, CALIB_SEED, scale,
                        protocol, min(protocol.at if protocol.at is not None else THESIS_AT, n_calib))
    dep = deploy(graph, config, session, "c", calib=calib.x)
    if dep.loss != "ce":
        raise TinyccError(f"the scenarios measure multi-class accuracy: they need a softmax classifier head, this "
                          f"model trains a {dep.loss} head")
    cut = _resolve_cut(graph, dep.meta["cut"], cut_candidates(graph))
    float_ext, _ = split(graph, cut)
    prep = Prepared(scenario, stream, dep, float_ext, n_stream, n_test, scale, protocol, at)
    deep = config.learning.deep if config.learning is not None else ()
    if deep:
        from .deep_modes import choose_deep_cut

        prep.deep, prep.deep_cut = deep, choose_deep_cut(dep, deep, config.learning.deep_cut)
        prep.deep_lr = config.learning.backbone_lr
    return prep


def stream_of(prep: Prepared, seed: int) -> Stream:
    """The stream and test set of the run with ``seed``."""
    return make_stream(prep.scenario, prep.data, prep.n_stream, prep.n_test, seed, prep.scale, prep.protocol, prep.at)


def draw(prep: Prepared, seed: int) -> tuple[Stream, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The stream and test set of one run, and each mode's (stream, test) features (Φf is frozen)."""
    from ...ir.interpreter_int8 import run_int8

    st = stream_of(prep, seed)
    ext, fe = prep.dep.extractor, prep.float_ext
    q = [run_int8(ext, x)[ext.outputs[0]].reshape(len(x), -1) for x in (st.x, st.x_test)]
    f = [run(fe, x)[fe.outputs[0]].reshape(len(x), -1) for x in (st.x, st.x_test)]
    feats = {"omega": (q[0], q[1]), "tinyol": (q[0], q[1]), "baseline": (f[0], f[1])}
    if prep.deep:
        from .deep_modes import deep_learner

        front = deep_learner(prep, prep.deep[0], 1.0)
        c = (front.cut_of(st.x), front.cut_of(st.x_test))
        feats.update({f"deep-{m}": c for m in prep.deep})
    return st, feats


def learn(prep: Prepared, st: Stream, feats: dict[str, tuple[np.ndarray, np.ndarray]],
          lr_by_mode: dict[str, float], tick: Callable[[], Any] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Run every mode over one stream with its learning rate; accuracy curves per mode."""
    dep = prep.dep
    ep = dep.train.epochs
    learners = {"omega": _learner(dep, dep.buffer.capacity, dep.buffer.storage, lr_by_mode["omega"], ep),
                "tinyol": _learner(dep, 1, dep.buffer.storage, lr_by_mode["tinyol"], ep),
                "baseline": _learner(dep, dep.buffer.capacity, "float32", lr_by_mode["baseline"], ep)}
    if prep.deep:
        from .deep_modes import deep_learner

        learners.update({f"deep-{m}": deep_learner(prep, m, lr_by_mode[f"deep-{m}"]) for m in prep.deep})
    return {m: run_mode(learners[m], feats[m][0], feats[m][1], st, tick) for m in prep.modes}


class ProgressLines:
    """Progress for a stderr that is not a terminal (a log file, CI): one line each time another ``step``
    percent of ``total`` is done (``DESC: 35% (700/2,000 steps)``), the last at 100%."""

    def __init__(self, total: int, desc: str, stream: Any, step: int = 5) -> None:
        self.total, self.desc, self.stream, self.step = max(int(total), 1), desc, stream, step
        self.done, self.shown = 0, 0

    def update(self, n: int = 1) -> None:
        self.done = min(self.done + int(n), self.total)
        pct = 100 * self.done // self.total
        if pct >= self.shown + self.step or (self.done == self.total and self.shown < 100):
            self.shown = pct
            self.stream.write(f"{self.desc}: {pct}% ({self.done:,}/{self.total:,} steps)\n")
            self.stream.flush()

    def __enter__(self) -> "ProgressLines":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def _progress(total: int, desc: str, on: bool) -> Any:
    """Progress on stderr counting learning steps, when ``on``: a tqdm bar on a terminal, else a line every 5%."""
    from tqdm import tqdm

    if on and not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return ProgressLines(total, desc, sys.stderr)
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, disable=None if on else True)


def _check_runs(runs: int) -> None:
    if runs < 1:
        raise TinyccError(f"--runs must be >= 1, got {runs}")


def run_prepared(prep: Prepared, runs: int = 5, first_seed: int = 0, lr_by_mode: dict[str, float] | None = None,
                 progress: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """Curves [runs, steps] per mode and kind ("all", "old", "new"); run r uses seed ``first_seed + r``."""
    _check_runs(runs)
    lrs = {m: (lr_by_mode or {}).get(m, prep.dep.train.lr) for m in prep.modes}
    curves: dict[str, dict[str, list[np.ndarray]]] = {m: {"all": [], "old": [], "new": []} for m in prep.modes}
    with _progress(runs * len(prep.modes) * prep.n_stream, prep.scenario, progress) as bar:
        for r in range(runs):
            st, feats = draw(prep, first_seed + r)
            for mode, res in learn(prep, st, feats, lrs, bar.update).items():
                for k, v in res.items():
                    curves[mode][k].append(v)
    return {m: {k: np.stack(v) for k, v in c.items()} for m, c in curves.items()}


def simulate(graph: Any, scenario: str, data: str | ScenarioData, config: CompileConfig, session: Any,
             runs: int = 5, n_stream: int | None = None, n_test: int | None = None, scale: float | None = None,
             progress: bool = True, first_seed: int = 0, lr_by_mode: dict[str, float] | None = None,
             protocol: Protocol | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Run a scenario ``runs`` times for Ω, TinyOL and the float baseline; return curves [runs, steps].

    Run r draws its stream and test set with seed ``first_seed + r``; ``lr_by_mode`` overrides the
    learning rate of a mode ("omega", "tinyol", "baseline"), e.g. after tuning on other seeds.
    """
    _check_runs(runs)
    prep = prepare(graph, scenario, data, config, session, n_stream, n_test, scale, protocol)
    return run_prepared(prep, runs, first_seed, lr_by_mode, progress)


def tune(graph: Any, scenario: str, data: str | ScenarioData, config: CompileConfig, session: Any,
         grid: list[float], runs: int = 1, first_seed: int = 100, n_stream: int | None = None,
         n_test: int | None = None, progress: bool = True, scale: float | None = None,
         protocol: Protocol | None = None) -> dict[str, float]:
    """Each mode's learning rate from ``grid`` with the best mean final accuracy on held-out streams.

    Streams use seeds ``first_seed..``; features are computed once per stream for the whole grid.
    """
    _check_runs(runs)
    prep = prepare(graph, scenario, data, config, session, n_stream, n_test, scale, protocol)
    final: dict[str, dict[float, list[float]]] = {m: {lr: [] for lr in grid} for m in prep.modes}
    with _progress(runs * len(grid) * len(prep.modes) * prep.n_stream, f"{scenario} tuning", progress) as bar:
        for r in range(runs):
            st, feats = draw(prep, first_seed + r)
            for lr in grid:
                for mode, res in learn(prep, st, feats, {m: lr for m in prep.modes}, bar.update).items():
                    final[mode][lr].append(float(res["all"][-1]))
    return {m: max(grid, key=lambda lr: (float(np.nanmean(final[m][lr])), lr)) for m in prep.modes}


# ---- results -----------------------------------------------------------------------
def _csv_bytes(header: list[str], rows: list[list[Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def write_results(curves: dict[str, dict[str, np.ndarray]], scenario: str, out: Path, stem: str | None = None,
                  streams: list[tuple[int, Stream]] | None = None) -> tuple[Path, Path]:
    """``STEM.csv`` (mean/std per sample), ``STEM.png`` and, given (seed, stream) pairs, ``STEM-stream.csv``.

    Each file is written atomically.
    """
    from ...output import write_atomic

    stem = stem or scenario
    csv_path, png_path = out / f"{stem}.csv", out / f"{stem}.png"
    n = curves["omega"]["all"].shape[1]
    keys = ["all", "old", "new"] if scenario == "incremental" else ["all"]
    header = ["sample"] + [f"{m}_{k}_{s}" for m in curves for k in keys for s in ("mean", "std")]
    rows = []
    for i in range(n):
        row: list[Any] = [i + 1]
        for m in curves:
            for k in keys:
                v = curves[m][k][:, i]
                row += [f"{np.nanmean(v):.4f}", f"{np.nanstd(v):.4f}"]
        rows.append(row)
    write_atomic(csv_path, _csv_bytes(header, rows))
    if streams is not None:  # what each run was taught: true class and label given, per sample
        rows = [[r + 1, seed, i + 1, int(st.y[i]), int(st.label[i])]
                for r, (seed, st) in enumerate(streams) for i in range(len(st.y))]
        write_atomic(out / f"{stem}-stream.csv", _csv_bytes(["run", "seed", "sample", "class", "label"], rows))
    write_atomic(png_path, _plot(curves, scenario, keys))
    return csv_path, png_path


def _plot(curves: dict[str, dict[str, np.ndarray]], scenario: str, keys: list[str]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    n = curves["omega"]["all"].shape[1]
    x = np.arange(1, n + 1)
    named = {"omega": "Ω (int8 Φf + buffer)", "tinyol": "TinyOL", "baseline": "float baseline",
             "deep-bias": "Ω + int8 backbone biases", "deep-blocks": "Ω + float conv blocks"}
    for m, label in ((m, named.get(m, m)) for m in curves):
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
    return png_bytes(fig)


# ---- CLI -------------------------------------------------------------------------
def _classes(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected class indices separated by commas, e.g. 4,6; got {text!r}") \
            from None
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"class listed twice in {text!r}")
    return out


def _deep_modes(text: str) -> tuple[str, ...]:
    from ...config import DEEP_MODES

    modes = tuple(t.strip() for t in text.split(","))
    bad = [m for m in modes if m not in DEEP_MODES]
    if bad or len(set(modes)) != len(modes):
        raise argparse.ArgumentTypeError(f"expected modes among {', '.join(DEEP_MODES)} separated by commas, each "
                                         f"once; got {text!r}")
    return modes


def _pair(text: str) -> tuple[int, int]:
    out = _classes(text)
    if len(out) != 2:
        raise argparse.ArgumentTypeError(f"expected two different classes, e.g. 4,6; got {text!r}")
    return out[0], out[1]


SCENARIO_ONLY = (("swap", "--swap", ("concept-drift",)), ("new_classes", "--new-classes", ("incremental",)),
                 ("at", "--at", ("concept-drift", "incremental")), ("target_data", "--target-data", ("transfer",)))


def protocol_from_args(args: argparse.Namespace) -> Protocol:
    """The scenario options given on the command line (refused where the scenario has no use for them)."""
    for attr, flag, scenarios in SCENARIO_ONLY:
        if getattr(args, attr) is not None and args.scenario not in scenarios:
            raise TinyccError(f"{flag} applies to --scenario {' / '.join(scenarios)}, not {args.scenario}")
    given = {k: getattr(args, k) for k in ("swap", "new_classes", "at", "target_data") if getattr(args, k) is not None}
    return Protocol(**given, seed=args.seed)


MAX_UPDATES = 10 ** 8  # classifier updates of one simulate command (about 0.2 ms each on the host: 5 h)
MAX_BUFFER_BYTES = 1 << 30  # the float baseline's replay buffer


def check_work(prep: Prepared, runs: int, buffer: int, epochs: int) -> int:
    """Refuse a simulation whose buffer does not fit in memory or whose classifier updates (runs x 3 modes x
    stream x epochs x buffered samples) would take hours; return the number of updates."""
    need = buffer * prep.dep.feature_count * 4
    if need > MAX_BUFFER_BYTES:
        raise TinyccError(f"--buffer {buffer}: the float baseline's buffer would take {need:,} bytes "
                          f"({prep.dep.feature_count} features each), above {MAX_BUFFER_BYTES:,}; "
                          "give a smaller --buffer")
    if prep.deep:
        from .deep_modes import deep_buffer_bytes

        need = deep_buffer_bytes(prep, buffer)
        if need > MAX_BUFFER_BYTES:
            raise TinyccError(f"--buffer {buffer}: a --deep buffer of cut tensors would take {need:,} bytes, above "
                              f"{MAX_BUFFER_BYTES:,}; give a smaller --buffer or a later --deep-cut")
    filled = sum(min(i + 1, buffer) for i in range(prep.n_stream))
    # Ω, the baseline and every deep mode replay the buffer, TinyOL one
    updates = runs * ((2 + len(prep.deep)) * filled + prep.n_stream) * epochs
    if updates > MAX_UPDATES:
        raise TinyccError(f"--runs {runs} x --stream {prep.n_stream} x --epochs {epochs} x --buffer {buffer}: about "
                          f"{updates:,} classifier updates, above the limit of {MAX_UPDATES:,} (hours of host time); "
                          "give fewer epochs, runs or a smaller buffer")
    return updates


def _describe(prep: Prepared, runs: int, source: str) -> str:
    p, what = prep.protocol, ""
    if prep.scenario == "concept-drift":
        what = f"; labels {p.swap[0]} and {p.swap[1]} swapped after {prep.at} samples"
    elif prep.scenario == "incremental":
        what = f"; classes {','.join(map(str, p.new_classes))} held out of the first {prep.at} samples"
    elif prep.scenario == "transfer":
        what = f"; model calibrated on {source}"
    buf = prep.dep.buffer
    return (f"{prep.scenario} on {prep.data.path}: {prep.n_stream} stream samples, {prep.n_test} test samples, "
            f"{runs} run(s), input scale {prep.scale:g}{what}; {prep.dep.feature_dtype} features, "
            f"{buf.storage} buffer entries")


def _cmd(args: argparse.Namespace, session: Any) -> int:
    from ...api import load_cleaned, make_config

    protocol = protocol_from_args(args)
    _check_runs(args.runs)
    out = Path(args.output)
    check_output_dir(out, args.force)  # before any work: a file, device, link or foreign folder is refused
    data = load_data(args.scenario, args.data, protocol)  # data errors before the model is loaded
    if not Path(args.model).exists():
        raise TinyccError(f"{args.model}: no such file")
    g = load_cleaned(args.model, session)
    config = make_config(session, buffer=args.buffer, policy=args.policy, lr=args.lr, epochs=args.epochs,
                         cut=args.cut, activations=args.activations, features=args.features, deep=tuple(args.deep or ()),
                         deep_cut=args.deep_cut,
                         deep_lr=args.deep_lr)
    prep = prepare(g, args.scenario, data, config, session, args.stream, args.test, args.scale, protocol)
    updates = check_work(prep, args.runs, args.buffer, args.epochs)
    print(_describe(prep, args.runs, data.source.path) + f"; about {updates:,} classifier updates", flush=True)
    if prep.deep:
        from .deep_modes import describe_deep

        print(describe_deep(prep), flush=True)
    curves = run_prepared(prep, args.runs, args.seed, progress=not args.no_progress)
    streams = [(args.seed + r, stream_of(prep, args.seed + r)) for r in range(args.runs)]
    with project_dir(out, args.force) as tmp:  # the folder appears whole, or not at all
        write_results(curves, args.scenario, tmp, streams=streams)
    csv_path, png_path = out / f"{args.scenario}.csv", out / f"{args.scenario}.png"
    for m in curves:
        v = curves[m]["all"][:, -1]
        extra = ""
        if args.scenario == "incremental":
            extra = (f" (old {np.nanmean(curves[m]['old'][:, -1]):.3f}, "
                     f"new {np.nanmean(curves[m]['new'][:, -1]):.3f})")
        print(f"{m:<9} final accuracy {v.mean():.3f} ± {v.std():.3f}{extra}")
    print(f"wrote {csv_path}, {png_path} and {out / f'{args.scenario}-stream.csv'}")
    return 0


@hookimpl
def tinycc_add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("simulate", help="run incremental-learning scenarios on the host simulator")
    p.add_argument("model")
    p.add_argument("--scenario", required=True, choices=SCENARIOS)
    p.add_argument("--data", required=True,
                   help="labelled .npz (x_train/y_train [+ x_test/y_test] or x/y, split 80/20 with --seed) or the "
                        "thesis's folder with cifar10.npz / imagenette-32.npz")
    p.add_argument("--target-data", help="transfer: labelled .npz to adapt to (default: the folder's Imagenette)")
    p.add_argument("--swap", type=_pair, metavar="A,B", help="concept drift: the two classes swapped (default 4,6)")
    p.add_argument("--at", type=int_range(0, MAX_SAMPLES), metavar="N",
                   help="concept drift: swap after N stream samples; incremental: new classes only after N samples "
                        "(default 100, at most the stream length)")
    p.add_argument("--new-classes", type=_classes, metavar="C,...", help="incremental: held-out classes (default 8,9)")
    p.add_argument("--runs", type=int_range(1, MAX_RUNS), default=5)
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="run r draws its stream with seed SEED+r; also splits x/y")
    p.add_argument("--stream", type=int_range(1, MAX_SAMPLES),
                   help="stream length (default 800 concept drift, 700 otherwise, at most the stream data)")
    p.add_argument("--test", type=int_range(1, MAX_SAMPLES),
                   help="test samples evaluated after every sample (default 200, at most the test data)")
    p.add_argument("--buffer", type=int_range(1, MAX_BUFFER), default=158, help="replay buffer capacity (thesis: 158)")
    p.add_argument("--policy", default="fifo", choices=["fifo", "reservoir", "class_balanced"])
    p.add_argument("--lr", type=positive_float, default=LearningConfig.lr)
    p.add_argument("--epochs", type=int_range(1, MAX_EPOCHS), default=1,
                   help=f"epochs over the buffer per learned sample (at most {MAX_EPOCHS})")
    p.add_argument("--cut", help="cut layer (default: automatic)")
    p.add_argument("--activations", default="int8", choices=["int8", "int16"],
                   help="Φf's activations: int8, or int16 (TFLite's 16x8) for a float model")
    p.add_argument("--features", default="native", choices=["native", "int8"],
                   help="int16 features: kept int16 in the buffer (native) or requantized to int8 at the cut")
    p.add_argument("--deep", type=_deep_modes, metavar="MODE,...",
                   help="also learn beyond the head, side by side: bias (int8 backbone biases), blocks (float "
                        "convolution blocks)")
    p.add_argument("--deep-cut", metavar="TENSOR", help="--deep: where the trained blocks start (default: the "
                   "input of the last block with a convolution)")
    p.add_argument("--deep-lr", type=positive_float, help="--deep: the backbone's learning rate (default: a tenth "
                   "of --lr; the classifier learns at --lr)")
    p.add_argument("--scale", type=positive_float,
                   help="multiply samples by this (default: 1/255 for the thesis's folder, 1 = as stored for a file)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (a bar on a terminal, otherwise a line every 5%%)")
    p.add_argument("-o", "--output", type=path_text, default="simulate_out",
                   help="output folder, written atomically (a new folder, or with --force one tinycc wrote)")
    p.add_argument("--force", action="store_true",
                   help="replace an output folder that tinycc wrote before (it holds a .tinycc-project marker)")
    p.set_defaults(func=_cmd)
