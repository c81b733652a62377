"""Learning beyond the head under a RAM budget: transfer CIFAR-10 -> Imagenette-32 (or ``--scenario concept-drift``
on CIFAR-10) with MLPerf Tiny's ResNet-8.

Modes (host simulator, the functions `tinycc simulate --deep` uses): head-only Ω (int8 Φf + float Φc + int8
feature buffer), ``--deep bias`` (the int8 biases of the last block and Φc train), ``deep-bias-2level`` (the same
step, with a two-level buffer: a few int8 cut tensors for the backbone + ``HEAD_ENTRIES`` int8 feature entries
retraining Φc, ``tinycc.ir.deep.TwoLevelLearner``) and ``--deep blocks`` (the last block in float, every weight and
bias trains). The cut of the deep modes is `simulate`'s default: the input of the
last block with a convolution.

RAM per mode (bytes, ``--ram`` budget):
- head-only: the deploy stage's exact memory report with ``--ram`` (it sizes the replay buffer to fit).
- deep modes: the deploy stage does not size them yet, so the same report is taken without Φc's weights, its
  training state and its buffer (the "fixed" part: the int8 arena, descriptors, the head's measured stack), plus
  the deep learner's state: ``step_memory(tail, batch, requantized biases, learn=True)`` (the arrays of the
  generated step, exactly) and a buffer of int8 cut tensors (``ReplayBuffer.bytes_for``) with the most entries
  that fit. A mode that does not fit even one entry is run with the smallest capacity of the modes that fit and
  reported as over budget.
One learning rate for every mode (no tuning); the test subset is the target's test split, drawn per seed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .common import Result

MODEL = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "mlperf-tiny" / "pretrainedResnet.h5"
DATA = MODEL.parents[2] / "data"
NAMES = {"omega": "head-only Ω", "tinyol": "TinyOL (head, buffer 1)", "baseline": "float baseline (head)",
         "deep-bias": "deep bias (int8 backbone biases, one rate --lr, cut buffer only)", "deep-blocks": "deep blocks (last block in float)",
         "deep-bias-2level": "deep bias, two-level buffer (cut + features)",
         "deep-bias-frozen": "diagnostic: deep bias at backbone rate 0 (Φc on the cut buffer)"}
for _k in (64, 128, 256):
    NAMES[f"sparse-{_k}k"] = f"sparse under {_k} kB (two-level)"


def _name(mode: str) -> str:
    """The page's name of a mode (a sparse budget outside ``NAMES`` too)."""
    if mode.startswith("sparse-") and mode not in NAMES:
        return f"sparse under {mode[7:-1]} kB (two-level)"
    return NAMES[mode]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(MODEL), help="a CIFAR-10 model (default: MLPerf Tiny ResNet-8)")
    p.add_argument("--ram", type=int, default=256 * 1024, help="total RAM budget in bytes (default 256 kB)")
    p.add_argument("--stream", type=int, help="stream samples per run (default: the scenario's, 700 transfer, "
                   "800 concept drift)")
    p.add_argument("--test", type=int, help="held-out test samples per run (default: the scenario's, 200)")
    p.add_argument("--runs", type=int, default=3, help="runs on seeds 0..runs-1")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate of every mode (not tuned)")
    p.add_argument("--scale", type=float, default=1.0, help="input scale (ResNet-8 reads 0..255 pixels: 1)")
    p.add_argument("--deep", default="bias,blocks", help="deep modes beside head-only")
    p.add_argument("--deep-buffer", type=int, help="diagnostic: this many cut tensors in every deep mode's buffer "
                   "instead of what the budget leaves (the RAM column then says whether it fits)")
    p.add_argument("--scenario", default="transfer", choices=("transfer", "concept-drift"),
                   help="transfer CIFAR-10 -> Imagenette-32 (default) or concept drift on CIFAR-10 (classes 4 and 6 "
                   "swapped after 100 samples)")
    p.add_argument("--head-modes", default="omega,tinyol,baseline",
                   help="head-only modes to run beside the deep ones (omega alone saves time)")
    p.add_argument("--deep-lr", type=float, help="the backbone's SGD rate (default: the config's, a tenth of --lr)")
    p.add_argument("--sparse", default="64,128,256", help="--train sparse budgets in kB ('' for none)")
    p.add_argument("--analysis", type=int, default=120,
                   help="labelled target samples of the contribution analysis (3/4 learn, 1/4 measure; drawn "
                   "with a seed apart from the runs')")
    p.add_argument("--every", type=int, default=10, help="test accuracy after every N-th stream sample (and the last)")
    p.add_argument("--no-diagnose", action="store_true",
                   help="skip deep bias with a zero backbone rate (Φc alone on the small buffer of cut tensors)")
    p.add_argument("--no-cut-only", action="store_true",
                   help="skip the runs of the --deep modes on their cut buffer alone (deep bias's two-level and "
                   "sparse modes still run; saves time)")
    p.add_argument("--head-grid", type=int, default=1,
                   help="the head reads the last pooling as a N x N grid (benchmarks.head_grid: 2 = 256 features "
                   "on ResNet-8) instead of 1x1; same outputs before learning")
    p.add_argument("--max-cut-entries", type=int,
                   help="time: at most this many cut tensors in the two-level and sparse modes' buffers (their RAM "
                   "columns count the capped buffer)")
    p.add_argument("--tag", default="", help="suffix of the result names (depth-TAG.md, .json, .png)")


def _fixed_ram(dep: Any) -> int:
    """The head deployment's RAM without what head-only learning adds (Φc's weights, training state, buffer)."""
    learning = {"classifier weights", "training state", "replay buffer"}
    return int(dep.memory["ram"]) - sum(i["bytes"] for i in dep.memory["items"] if i["name"] in learning)


def head_memory(dep: Any) -> dict[str, Any]:
    """Head-only Ω: the compile report's learning items and total, exactly."""
    items = {i["name"]: i["bytes"] for i in dep.memory["items"]
             if i["name"] in ("classifier weights", "training state", "replay buffer")}
    return {"capacity": dep.buffer.capacity, "learning_state": sum(items.values()), "detail": items,
            "total_ram": int(dep.memory["ram"])}


def deep_memory(prep: Any, mode: str, ram: int) -> dict[str, Any]:
    """A deep mode's exact step arrays (``step_memory``), its buffer of int8 cut tensors sized to ``ram`` and the
    total RAM with the deployment's fixed part; ``capacity`` 0: not even one entry fits."""
    from tinycc.ir.backprop import known_bytes, step_memory
    from tinycc.ir.buffer import ReplayBuffer
    from tinycc.plugins.applications.deep_modes import deep_learner

    dl = deep_learner(prep, mode, 0.0)
    req = tuple(op.name for op in dl.region_params if dl.tail.trains(op.name)[1]) if mode == "bias" else ()
    step = step_memory(dl.tail, dl.batch_size, req, learn=True, known=dl.known_tensors())
    step["kept_int8"] = known_bytes(dl.tail, dl.known_tensors(), dl.batch_size)  # the region's int8 activations
    fixed, size = _fixed_ram(prep.dep), dl.buffer.feature_count
    cap = 0
    while ReplayBuffer.bytes_for(cap + 1, size, "int8") + fixed + sum(step.values()) <= ram:
        cap += 1
    return {"capacity": cap, "step_memory": step, "step_bytes": sum(step.values()), "cut": prep.deep_cut,
            "cut_entry_bytes": size, "fixed_ram": fixed}


HEAD_ENTRIES = 1000  # the two-level buffer's feature entries (fewer when the budget is short)


def two_level_memory(prep: Any, bias: dict[str, Any], ram: int) -> dict[str, Any]:
    """deep bias with a two-level buffer: ``HEAD_ENTRIES`` int8 feature entries (as head-only Ω stores them; halved
    until a cut entry fits) + the most int8 cut tensors that fit, + Φc's own step over a feature row (its float
    input, logits and their gradients: 4 * (features + 2 * classes) bytes per batch row, an estimate of the
    head learner's arrays)."""
    from tinycc.ir.buffer import ReplayBuffer

    feat = int(np.prod(prep.dep.extractor.tensors[prep.dep.extractor.outputs[0]].shape[1:]))
    classes = int(prep.dep.classifier[-1].n_out)
    batch = prep.dep.train.batch_size
    head_step = 4 * batch * (2 * feat + 2 * classes)
    base = bias["fixed_ram"] + bias["step_bytes"] + head_step
    h = HEAD_ENTRIES
    while h and base + ReplayBuffer.bytes_for(h, feat, "int8") + ReplayBuffer.bytes_for(1, bias["cut_entry_bytes"],
                                                                                           "int8") > ram:
        h //= 2
    cap = 0
    while base + ReplayBuffer.bytes_for(h, feat, "int8") + ReplayBuffer.bytes_for(cap + 1, bias["cut_entry_bytes"],
                                                                                  "int8") <= ram:
        cap += 1
    step = dict(bias["step_memory"], head_step=head_step)
    buf = ReplayBuffer.bytes_for(cap, bias["cut_entry_bytes"], "int8") + ReplayBuffer.bytes_for(h, feat, "int8")
    return {"capacity": cap, "run_capacity": max(cap, 1), "head_capacity": max(h, 1), "step_memory": step,
            "step_bytes": sum(step.values()), "cut": prep.deep_cut, "cut_entry_bytes": bias["cut_entry_bytes"],
            "fixed_ram": bias["fixed_ram"], "buffer_bytes": buf, "total_ram": base + buf}


def run_mode(learner: Any, f_stream: np.ndarray, f_test: np.ndarray, st: Any, tick: Callable[[], None],
             every: int = 10) -> dict[str, np.ndarray]:
    """Learn the stream one sample at a time; test accuracy after every ``every``-th sample and the last (held
    in between: the curve is a step function; the final value is exact)."""
    n = len(f_stream)
    acc = np.zeros(n)
    for i in range(n):
        learner.learn(f_stream[i], int(st.label[i]))
        if (i + 1) % every == 0 or i == n - 1:
            acc[i] = (learner.predict(f_test)[0] == st.test_labels(i)).mean()
        elif i:
            acc[i] = acc[i - 1]
        tick()
    return {"all": acc}


def _ticker(label: str, total: int) -> Callable[[], None]:
    done = [0]

    def tick() -> None:
        done[0] += 1
        if done[0] % max(total // 5, 1) == 0 or done[0] == total:
            print(f"  {label}: {done[0]}/{total} samples", file=sys.stderr, flush=True)
    return tick


def measure(model: str, data: str, ram: int, n_stream: int, n_test: int, runs: int, lr: float, scale: float,
            deep: tuple[str, ...] = ("bias", "blocks"), deep_buffer: int | None = None,
            scenario: str = "transfer", head_modes: tuple[str, ...] = ("omega", "tinyol", "baseline"),
            deep_lr: float | None = None, sparse: tuple[int, ...] = (), analysis: int = 120, every: int = 10,
            diagnose: bool = True, run_deep: bool = True, max_cut: int | None = None,
            on_run: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Accuracy curves [runs, n_stream] and RAM per mode (see the module docstring); ``on_run`` gets the same
    dict after every run but the last (the runs so far: partial results can be written)."""
    from tinycc.api import load_cleaned, make_config
    from tinycc.ir.buffer import ReplayBuffer
    from tinycc.ir.deep import DeepLearner, TwoLevelLearner
    from tinycc.plugins.applications.scenarios import _learner, draw, prepare
    from tinycc.session import Session

    session = Session(autoload=False)
    g = load_cleaned(model, session)
    config = make_config(session, ram=ram, lr=lr, storage="int8", deep=deep, deep_lr=deep_lr)
    prep = prepare(g, scenario, data, config, session, n_stream, n_test, scale)
    deep_lr = config.learning.backbone_lr
    mem: dict[str, dict[str, Any]] = {"omega": head_memory(prep.dep)}
    for m in deep:
        mem[f"deep-{m}"] = deep_memory(prep, m, ram)
    fallback = min([mem[f"deep-{m}"]["capacity"] for m in deep if mem[f"deep-{m}"]["capacity"]] or [1])
    for m in deep:  # the buffer each deep mode runs with, and its total
        v = mem[f"deep-{m}"]
        v["run_capacity"] = deep_buffer or v["capacity"] or fallback
        v["buffer_bytes"] = ReplayBuffer.bytes_for(v["run_capacity"], v["cut_entry_bytes"], "int8")
        v["total_ram"] = v["fixed_ram"] + v["step_bytes"] + v["buffer_bytes"]
    if "bias" in deep:
        mem["deep-bias-2level"] = two_level_memory(prep, mem["deep-bias"], ram)
    for v in mem.values():
        v["fits"] = v["total_ram"] <= ram and v["capacity"] > 0
    choices, analysis_log = sparse_choices(prep, sparse, lr, deep_lr, analysis)
    for k, c in choices.items():
        mem[f"sparse-{k}k"] = sparse_memory(c)
    if "bias" in deep and diagnose:  # deep bias with a zero backbone rate: Φc alone on the small cut buffer
        mem["deep-bias-frozen"] = dict(mem["deep-bias"])
    for k, v in mem.items():  # --max-cut-entries: the capped cut buffer, counted as such
        if max_cut and (k == "deep-bias-2level" or k.startswith("sparse-")) and v["run_capacity"] > max_cut:
            less = (ReplayBuffer.bytes_for(v["run_capacity"], v["cut_entry_bytes"], "int8")
                    - ReplayBuffer.bytes_for(max_cut, v["cut_entry_bytes"], "int8"))
            v["run_capacity"] = v["capacity"] = max_cut
            v["buffer_bytes"] -= less
            v["total_ram"] -= less
    keys = (tuple(f"deep-{m}" for m in deep if run_deep) + (("deep-bias-frozen",) if "deep-bias-frozen" in mem else ())
            + (("deep-bias-2level",) if "bias" in deep else ())
            + tuple(f"sparse-{k}k" for k in choices))
    curves: dict[str, list[np.ndarray]] = {m: [] for m in tuple(head_modes) + keys}
    dep, ep = prep.dep, prep.dep.train.epochs
    made = {"omega": lambda: _learner(dep, dep.buffer.capacity, dep.buffer.storage, lr, ep),
            "tinyol": lambda: _learner(dep, 1, dep.buffer.storage, lr, ep),
            "baseline": lambda: _learner(dep, dep.buffer.capacity, "float32", lr, ep)}
    for r in range(runs):
        st, feats = draw(prep, r)
        print(f"run {r + 1}/{runs} (seed {r}): head-only modes", file=sys.stderr, flush=True)
        for m in head_modes:
            curves[m].append(run_mode(made[m](), feats[m][0], feats[m][1], st, _ticker(m, prep.n_stream),
                                      every)["all"])
        for m in deep if run_deep else ():
            key = f"deep-{m}"
            cap = mem[key]["run_capacity"]
            learner = DeepLearner(prep.dep, prep.deep_cut, m, capacity=cap, lr=lr, epochs=prep.dep.train.epochs)
            print(f"run {r + 1}/{runs}: {key}, buffer {cap}", file=sys.stderr, flush=True)
            curves[key].append(run_mode(learner, feats[key][0], feats[key][1], st, _ticker(key, prep.n_stream),
                                        every)["all"])
        if "deep-bias-frozen" in mem:
            learner = DeepLearner(prep.dep, prep.deep_cut, "bias", capacity=mem["deep-bias"]["run_capacity"], lr=lr,
                                  epochs=prep.dep.train.epochs, deep_lr=0.0)
            print(f"run {r + 1}/{runs}: deep-bias-frozen", file=sys.stderr, flush=True)
            f = feats["deep-bias"]
            curves["deep-bias-frozen"].append(run_mode(learner, f[0], f[1], st, _ticker("frozen", prep.n_stream),
                                                       every)["all"])
        if "bias" in deep:
            v = mem["deep-bias-2level"]
            learner = TwoLevelLearner(prep.dep, prep.deep_cut, "bias", capacity=v["run_capacity"],
                                      head_capacity=v["head_capacity"], lr=lr, epochs=prep.dep.train.epochs,
                                      deep_lr=deep_lr, backbone_only=True)
            print(f"run {r + 1}/{runs}: deep-bias-2level, buffers {v['run_capacity']} + {v['head_capacity']}",
                  file=sys.stderr, flush=True)
            f = feats["deep-bias"]
            curves["deep-bias-2level"].append(run_mode(learner, f[0], f[1], st, _ticker("2level", prep.n_stream),
                                                       every)["all"])
        for k, c in choices.items():
            key, v = f"sparse-{k}k", mem[f"sparse-{k}k"]
            learner = TwoLevelLearner(prep.dep, c.cut, "sparse", capacity=v["run_capacity"],
                                      head_capacity=v["head_capacity"], lr=lr, epochs=prep.dep.train.epochs,
                                      deep_lr=deep_lr, subset=c.subset, backbone_only=True)
            print(f"run {r + 1}/{runs}: {key}: {', '.join(x.label for x in c.chosen) or 'head only'}",
                  file=sys.stderr, flush=True)
            f = feats["deep-bias"] if "bias" in deep else (learner.cut_of(st.x), learner.cut_of(st.x_test))
            curves[key].append(run_mode(learner, f[0], f[1], st, _ticker(key, prep.n_stream), every)["all"])
        if on_run is not None and r < runs - 1:
            on_run(_outcome(curves, mem, prep, deep_lr, analysis_log, choices))
    return _outcome(curves, mem, prep, deep_lr, analysis_log, choices)


def _outcome(curves: dict[str, list[np.ndarray]], mem: dict[str, Any], prep: Any, deep_lr: float,
             analysis_log: list[str], choices: dict[int, Any]) -> dict[str, Any]:
    return {"curves": {m: np.stack(v) for m, v in curves.items()}, "memory": mem, "cut": prep.deep_cut,
            "n_stream": prep.n_stream, "n_test": prep.n_test, "batch": prep.dep.train.batch_size,
            "epochs": prep.dep.train.epochs, "prep": prep, "deep_lr": deep_lr, "analysis": analysis_log,
            "choices": choices}


def sparse_choices(prep: Any, budgets_kb: tuple[int, ...], lr: float, deep_lr: float, n: int
                   ) -> tuple[dict[int, Any], list[str]]:
    """``--train sparse``'s contribution analysis once (``n`` labelled training samples of the stream's dataset
    drawn with seed 1000: labelled data of the target domain, as a developer would hold; the runs draw their
    streams from the same training split, their test sets from the test split), then the greedy choice per budget;
    a budget below ``minimum_ram`` is reported, not run."""
    from tinycc.deploy.sparse import analyse, minimum_ram, select
    from tinycc.errors import TinyccError
    if not budgets_kb:
        return {}, []
    ds = prep.data
    n = min(n, len(ds.x_train))
    idx = np.random.default_rng(1000).choice(len(ds.x_train), n, replace=False)
    x, y = ds.x_train[idx].astype(np.float32) * np.float32(prep.scale), ds.y_train[idx]
    print(f"sparse: contribution analysis on {n} samples", file=sys.stderr, flush=True)
    head, cands = analyse(prep.dep, prep.deep_cut, x, y, lr, deep_lr)
    out, log = {}, []
    for kb in budgets_kb:
        try:
            out[kb] = select(prep.dep, prep.deep_cut, head, cands, kb * 1024)
            log.append(f"{kb} kB: " + out[kb].describe())
        except TinyccError as e:
            log.append(f"{kb} kB: does not fit: {e} (minimum {minimum_ram(prep.dep, prep.deep_cut):,} B)")
    return out, log


def sparse_memory(choice: Any) -> dict[str, Any]:
    """A sparse choice's memory in the benchmark's columns."""
    m = choice.memory
    return {"capacity": m["cut_entries"], "run_capacity": m["cut_entries"], "head_capacity": m["features"],
            "step_memory": dict(choice.parts),
            "step_bytes": m["step"], "fixed_ram": m["fixed"], "buffer_bytes": m["cut_buffer"] + m["feature_buffer"],
            "cut_entry_bytes": m["cut_entry"], "total_ram": m["total"],
            "fits": m["total"] <= m["budget"], "cut": choice.cut,
            "trains": [c.label for c in choice.chosen]}


TITLES = {"transfer": "transfer CIFAR-10 -> Imagenette-32", "concept-drift": "concept drift on CIFAR-10 (4 <-> 6)"}


def _plot(res: dict[str, Any], ram: int, scenario: str = "transfer") -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tinycc.report import png_bytes

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for m, c in res["curves"].items():
        x = np.arange(1, c.shape[1] + 1)
        a.plot(x, c.mean(axis=0), label=NAMES.get(m, m))
    a.set_xlabel("stream samples seen")
    a.set_ylabel("test accuracy")
    a.set_ylim(0, 1)
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    for m, v in res["memory"].items():
        if m not in res["curves"]:
            continue
        acc = res["curves"][m][:, -1].mean()
        b.scatter(v["total_ram"] / 1024, acc, label=NAMES.get(m, m))
    b.axvline(ram / 1024, color="k", ls="--", lw=1, label=f"budget {ram // 1024} kB")
    b.set_xlabel("total RAM (kB)")
    b.set_ylabel("final test accuracy")
    b.set_ylim(0, 1)
    b.grid(alpha=0.3)
    b.legend(fontsize=8)
    fig.suptitle(f"ResNet-8, {TITLES[scenario]}")
    return png_bytes(fig)


def offline_bound(out: Path) -> str:
    """The offline upper bound recorded by ``python -m benchmarks.depth_offline`` (depth-offline.md): the best
    subset of each section, or a note that it was not measured."""
    import re

    path = next((d / "depth-offline.md" for d in (out, Path(__file__).parent / "results")
                 if (d / "depth-offline.md").exists()), out / "depth-offline.md")
    if not path.exists():
        return "Offline upper bound: not measured here (run `python -m benchmarks.depth_offline`)."
    parts, section = [], None
    best: dict[str, tuple[float, str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        m = re.match(r"\|\s*(\w+)\s*\|\s*[\d.]+ ± [\d.]+\s*\|\s*([+-][\d.]+)\s*\|", line)
        if m and section and (section not in best or float(m.group(2)) > best[section][0]):
            best[section] = (float(m.group(2)), m.group(1))
    for sec, (gain, name) in best.items():
        parts.append(f"{sec}: {name} {gain:+.1f} points")
    return ("Offline upper bound (float TF, unlimited buffer, depth-offline.md): " + "; ".join(parts) + "."
            + offline_recipes(path.parent / "depth-recipes.md"))


def offline_recipes(path: Path) -> str:
    """The best recipe of ``python -m benchmarks.depth_recipes``'s first table against the tuned head, or ''."""
    import re

    if not path.exists():
        return ""
    text = path.read_text(encoding="utf-8")
    section = text.split("\n## ")[1] if "\n## " in text else ""
    rows = re.findall(r"^\|\s*([\w-]+)\s*\|[^|]+\|[^|]+\|\s*([+-][\d.]+) ± ([\d.]+)\s*\|", section, re.M)
    rows = [(float(g), n, s) for n, g, s in rows if n != "head"]
    if not rows:
        return ""
    gain, name, std = max(rows)
    return (f" Recipes (depth-recipes.md, {section.splitlines()[0].strip()}): best {name} {gain:+.1f} ± {std} "
            "points over the tuned head.")


def run(args: argparse.Namespace) -> Result:
    tag = args.tag or ("drift" if args.scenario == "concept-drift" else "")
    name = f"depth-{tag}" if tag else "depth"
    data = Path(args.data) if args.data else DATA
    missing = [p for p in (Path(args.model), data / "cifar10.npz", data / "imagenette-32.npz") if not p.exists()]
    if missing:  # no result files: the recorded ones stay
        raise SystemExit(f"depth: skipped, {', '.join(map(str, missing))} not found (see ../shared/data/README.md)")
    deep = tuple(m for m in args.deep.split(",") if m)
    if args.max_cut_entries is not None and args.max_cut_entries < 1:
        raise SystemExit(f"depth: --max-cut-entries {args.max_cut_entries}: at least 1")
    if args.head_grid > 1:
        import tempfile

        from .head_grid import widen
        tmp = tempfile.mkdtemp(prefix="tinycc-depth-")
        check = np.load(data / "cifar10.npz")["x_test"][:64].astype(np.float32) * np.float32(args.scale)
        path = str(Path(tmp) / f"{Path(args.model).stem}-grid{args.head_grid}.keras")
        diff = widen(args.model, args.head_grid, path, check)
        print(f"head grid {args.head_grid}: {path} (max |output difference| before learning {diff:.2g})",
              file=sys.stderr, flush=True)
        args.model = path
    out = measure(args.model, str(data), args.ram, args.stream, args.test, args.runs, args.lr, args.scale, deep,
                  args.deep_buffer, args.scenario, tuple(m for m in args.head_modes.split(",") if m), args.deep_lr,
                  tuple(int(k) for k in args.sparse.split(",") if k), args.analysis, args.every, not args.no_diagnose,
                  not args.no_cut_only, max_cut=args.max_cut_entries, on_run=lambda o: report(args, o, name).write(Path(args.out)))
    return report(args, out, name)


def report(args: argparse.Namespace, out: dict[str, Any], name: str) -> Result:
    """The result page of ``measure``'s outcome (the runs it holds; a partial one says so)."""
    from tinycc.output import write_atomic
    from tinycc.report import markdown_table

    res = Result(name)
    runs = next(iter(out["curves"].values())).shape[0]
    rows, final = [], {}
    for m, c in out["curves"].items():
        v = c[:, -1]
        mem = out["memory"].get(m)
        final[m] = {"mean": float(v.mean()), "std": float(v.std()), "runs": v.tolist()}
        if mem is None:
            rows.append([_name(m), f"{v.mean():.3f} ± {v.std():.3f}", "reference (not sized)", "", "", ""])
            continue
        final[m].update(mem)
        learning = mem.get("learning_state", mem.get("step_bytes", 0) + mem.get("buffer_bytes", 0))
        cap = mem.get("run_capacity", mem["capacity"])
        rows.append([_name(m), f"{v.mean():.3f} ± {v.std():.3f}", f"{learning:,}", f"{cap:,}",
                     f"{mem['total_ram']:,}", "yes" if mem["fits"] and mem["total_ram"] <= args.ram else "**no**"])
    head = final["omega"]["mean"]
    fitting = {m: f["mean"] for m, f in final.items() if m.startswith(("deep-", "sparse-")) and f.get("fits")
               and f["total_ram"] <= args.ram}
    best = max(fitting, key=fitting.get) if fitting else None
    gain = (fitting[best] - head) if best else None
    drift = args.scenario == "concept-drift"
    met = gain is not None and (gain >= -1e-9 if drift else gain >= 0.05)
    rule = ("concept drift: no worse than head-only" if drift else "≥ 5 points above head-only")
    verdict = (f"Acceptance ({rule} under {args.ram // 1024} kB): " + ("**met**" if met else "**not met**")
               + (f" at these sample counts: best fitting deep mode {_name(best)} {fitting[best]:.3f} vs head-only "
                  f"{head:.3f} ({100 * gain:+.1f} points)." if best else ": no deep mode fits the budget."))
    measured = max((m for m in final if m != "omega"), key=lambda m: final[m]["mean"], default=None)
    if not met and not drift:
        verdict += (f" Best measured (any RAM): {NAMES.get(measured, measured)} "
                    f"{final[measured]['mean']:.3f} ({100 * (final[measured]['mean'] - head):+.1f} points). "
                    if measured else " ") + offline_bound(Path(args.out))
    if not any(m.startswith(("deep-", "sparse-")) for m in final):
        verdict = "Acceptance: not applicable (head-only modes only: no deep or sparse mode ran)."
    print(verdict)
    res.add(f"Model `{Path(args.model).name}`, {TITLES[args.scenario]} (`tinycc simulate --scenario "
            f"{args.scenario} --deep {args.deep}` machinery), {out['n_stream']} stream samples and {out['n_test']} "
            f"held-out test samples per run, {runs} run(s) on seed(s) 0..{runs - 1}"
            f"{' (PARTIAL: ' + str(args.runs) + ' runs asked, the rest still running)' if runs < args.runs else ''}, "
            f"input scale {args.scale:g}, SGD lr {args.lr:g} for the classifier, {out['deep_lr']:g} for the "
            f"backbone (`--deep-lr`; not tuned), batch {out['batch']}, "
            f"{out['epochs']} epoch(s) over the buffer per sample. Deep cut: `{out['cut']}` (the input of the last "
            f"block). Budget: {args.ram:,} B of total RAM."
            + (f" Two-level and sparse cut buffers capped at {args.max_cut_entries} entries (`--max-cut-entries`, "
               "run time; RAM counts the capped buffer)." if args.max_cut_entries else "")
            + (f" Diagnostic: every deep mode runs with a buffer of {args.deep_buffer} cut tensors, whether or not "
               "it fits." if args.deep_buffer else ""))
    res.add("RAM: head-only from the deploy stage's exact memory report with `--ram` (buffer sized by it). Deep "
            "modes: the same report's fixed part (int8 arena, descriptors, the head learner's measured stack; the "
            "deep step's own stack is not measured) + `step_memory(..., learn=True, known=...)` (the generated "
            "step's arrays in the lean layout of `step_plan`, exact) + the region's int8 activations the bias step "
            "reads (`kept_int8`, one row per batch row) + a buffer of int8 cut tensors with the most entries that fit (the deploy stage does not size "
            "deep modes yet). A mode over budget runs with the smallest buffer of the fitting deep modes.")
    res.add(markdown_table(["mode", "final accuracy", "learning state (B)", "buffer entries", "total RAM (B)",
                            f"fits {args.ram // 1024} kB"], rows))
    res.add("deep bias, two-level buffer: the backbone step leaves Φc alone (Φc learns from the feature buffer "
            "exactly as head-only Ω; with a zero backbone rate it is head-only Ω, tests/test_sparse.py). sparse: "
            "`--train sparse` (tinycc.deploy.sparse): the contribution analysis once, on labelled training samples "
            f"of the target drawn with seed 1000 ({args.analysis}: 3/4 learn, 1/4 measure), then the greedy choice "
            "per budget (sparse RAM: `select`'s exact memory: fixed part + `step_parts` + cut tensors + features); "
            "its learner is the same two-level learner training the chosen subset on the int8 region. "
            f"Accuracy measured after every {args.every}th stream sample and the last.")
    if out["analysis"]:
        res.add("```\n" + "\n".join(out["analysis"]) + "\n```")
    for m in (k for k in final if k.startswith(("deep-", "sparse-"))):
        f = final[m]
        parts = ", ".join(f"{k} {v:,}" for k, v in f["step_memory"].items())
        extra = f" + {f['head_capacity']:,} feature entries" if "head_capacity" in f else ""
        res.add(f"{_name(m)}: fixed {f['fixed_ram']:,} B + step arrays {f['step_bytes']:,} B ({parts}) + buffer "
                f"{f['buffer_bytes']:,} B ({f['run_capacity']} x {f['cut_entry_bytes']:,}-byte cut tensors{extra}).")
    res.add(verdict)
    res.data = {"final": final, "ram": args.ram, "stream": out["n_stream"], "test": out["n_test"], "runs": runs,
                "lr": args.lr, "deep_lr": out["deep_lr"], "cut": out["cut"], "acceptance_met": met,
                "analysis": out["analysis"],
                "mean_curves": {m: c.mean(axis=0).round(4).tolist() for m, c in out["curves"].items()}}
    write_atomic(Path(args.out) / f"{name}.png", _plot(out, args.ram, args.scenario))
    res.plots.append(f"{name}.png")
    return res
