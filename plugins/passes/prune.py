"""Structured L1-norm filter pruning (channels really removed), budget-driven, with fine-tuning.

Units (channel positions removed together, see ``tinycc.ir.channels``) are grouped into
*families* by their producing layers (all filters of one Conv2D/Dense, or every member of a
residual group). Policy ``uniform`` (default with --ratio): each family drops its round(r * n)
lowest-scoring units, keeping at least ``min_channels`` and a multiple of ``round_to``; per-layer
ratios override r for the families that layer produces. Policy ``cost`` (default with --budget):
units ranked by relative importance (score / its family's mean score) per parameter their removal
saves, so unimportant channels of parameter-heavy layers go first. A budget (params, macs, flash,
activations or features) is met by bisection on the fraction removed. Scores: the criterion ("l1" default: sum |w| of each producing filter; "l2";
plugins add more) summed over the unit's producers.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pluggy

from ...errors import TinyccError
from ...ir.channels import Unit, analyse, remove, unit_params, unit_scores
from ...ir.graph import Graph
from ...ir.stats import graph_stats, totals
from ...options import (MAX_EPOCHS, OptionError, count, int_range, layer_ratio, path_text, positive_float, positive_int,
                       unit_float)
from ...output import check_output_file, default_mode, write_atomic
from ...passes import Pass, PassContext

hookimpl = pluggy.HookimplMarker("tinycc")
log = logging.getLogger("tinycc.prune")


def l1(w: np.ndarray) -> np.ndarray:
    return np.abs(w.reshape(w.shape[0], -1)).sum(axis=1)


def l2(w: np.ndarray) -> np.ndarray:
    return np.sqrt((w.reshape(w.shape[0], -1) ** 2).sum(axis=1))


def _cost(graph: Graph, metric: str, feature_tensor: str | None = None) -> int:
    t = totals(graph)
    if metric == "params":
        return t["params"]
    if metric == "macs":
        return t["macs"]
    if metric == "flash":  # int8 weights + int32 biases
        return sum(r.params for r in graph_stats(graph)) + 3 * sum(
            graph.tensors[o.inputs[2]].size for o in graph.ops if len(o.inputs) > 2 and o.kind.value in
            ("conv2d", "depthwise_conv2d", "dense"))
    if metric == "activations":
        return t["max_activation_bytes"]
    if metric == "features":
        if not feature_tensor:
            raise TinyccError("a features budget needs the cut tensor (--cut)")
        return graph.tensors[feature_tensor].size
    raise TinyccError(f"unknown budget metric {metric!r}; use params, macs, flash, activations or features")


@dataclass
class Plan:
    drop: list[int]
    ratio: float


def plan_ratio(graph: Graph, units: list[Unit], scores: np.ndarray, ratio: float, layer_ratios: dict[str, float],
               min_channels: int, round_to: int) -> list[int]:
    fams: dict[tuple[str, ...], list[int]] = {}
    for i, u in enumerate(units):
        if u.prunable:
            fams.setdefault(u.family, []).append(i)
    drop = []
    for fam, idx in sorted(fams.items()):
        r = ratio
        for name in fam:
            r = layer_ratios.get(name, r)
        n = len(idx)
        keep = n - int(round(r * n))
        keep = max(keep, min(min_channels, n))
        if round_to > 1:
            keep = min(n, -(-keep // round_to) * round_to)
        order = sorted(idx, key=lambda i: (scores[i], i))
        drop += order[:n - keep]
    return sorted(drop)


def plan_cost(units: list[Unit], scores: np.ndarray, params: np.ndarray, count: int, min_channels: int) -> list[int]:
    """The ``count`` cheapest units by (score / family mean score) / parameters saved, keeping
    ``min_channels`` per family: the least important channels per parameter go first."""
    fams: dict[tuple[str, ...], list[int]] = {}
    for i, u in enumerate(units):
        if u.prunable:
            fams.setdefault(u.family, []).append(i)
    rel = np.zeros(len(units))
    for idx in fams.values():
        m = scores[idx].mean() or 1.0
        rel[idx] = scores[idx] / m
    order = sorted((i for idx in fams.values() for i in idx), key=lambda i: (rel[i] / max(params[i], 1.0), i))
    left = {f: len(idx) for f, idx in fams.items()}
    drop = []
    for i in order:
        if len(drop) >= count:
            break
        f = units[i].family
        if left[f] > min_channels:
            left[f] -= 1
            drop.append(i)
    return sorted(drop)


def prune(graph: Graph, *, ratio: float | None = None, budget: tuple[str, int] | None = None,
          layer_ratios: dict[str, float] | None = None, criterion: Callable = l1, min_channels: int = 1,
          round_to: int = 1, feature_tensor: str | None = None, policy: str | None = None) -> dict:
    """Prune in place; return a report (before/after per layer and totals)."""
    before = {r.name: r for r in graph_stats(graph)}
    chans_before = {o.name: graph.tensors[o.outputs[0]].shape[-1] for o in graph.ops}
    units = analyse(graph)
    scores = unit_scores(graph, units, criterion)
    layer_ratios = layer_ratios or {}
    policy = policy or ("cost" if budget is not None and round_to == 1 and not layer_ratios else "uniform")
    if policy not in ("uniform", "cost"):
        raise TinyccError(f"unknown pruning policy {policy!r}; use uniform or cost")
    params = unit_params(graph, units)
    n_prunable = sum(u.prunable for u in units)

    def plan(x: float) -> list[int]:
        if policy == "cost":
            return plan_cost(units, scores, params, int(round(x * n_prunable)), min_channels)
        return plan_ratio(graph, units, scores, x, layer_ratios, min_channels, round_to)

    if budget is not None:
        metric, limit = budget
        if _cost(graph, metric, feature_tensor) <= limit:
            r = 0.0
        else:
            lo, hi = 0.0, 1.0
            trial = graph.copy()
            remove(trial, units, plan(hi))
            if _cost(trial, metric, feature_tensor) > limit:
                raise TinyccError(f"{metric} budget {limit:,} cannot be reached: removing every prunable channel "
                                  f"(keeping {min_channels} per layer) still gives "
                                  f"{_cost(trial, metric, feature_tensor):,}")
            for _ in range(30):
                mid = (lo + hi) / 2
                trial = graph.copy()
                remove(trial, units, plan(mid))
                if _cost(trial, metric, feature_tensor) <= limit:
                    hi = mid
                else:
                    lo = mid
            r = hi
    else:
        r = float(ratio or 0.0)
    if not 0.0 <= r <= 1.0:
        raise TinyccError(f"pruning ratio must be in [0, 1], got {r}")
    drop = plan(r)
    remove(graph, units, drop)
    after = {x.name: x for x in graph_stats(graph)}
    rows = []
    for o in graph.ops:
        b, a = before.get(o.name), after[o.name]
        rows.append({"layer": o.origin, "op": o.kind.value, "channels_before": chans_before.get(o.name),
                     "channels_after": graph.tensors[o.outputs[0]].shape[-1],
                     "params_before": b.params if b else None, "params_after": a.params,
                     "macs_before": b.macs if b else None, "macs_after": a.macs,
                     "bytes_before": b.param_bytes if b else None, "bytes_after": a.param_bytes})
    return {"ratio": r, "policy": policy, "removed_units": len(drop), "prunable_units": sum(u.prunable for u in units),
            "layers": rows, "totals_before": {k: sum((x.params, x.macs, x.param_bytes)[j] for x in before.values())
                                              for j, k in enumerate(("params", "macs", "bytes"))},
            "totals_after": totals(graph)}


def render(report: dict) -> str:
    from ...report import table

    rows = [[r["layer"], r["op"], f"{r['channels_before']} -> {r['channels_after']}",
             f"{r['params_before']:,} -> {r['params_after']:,}" if r["params_before"] is not None else "",
             f"{r['macs_before']:,} -> {r['macs_after']:,}" if r["macs_before"] is not None else ""]
            for r in report["layers"] if r["params_before"] or r["macs_before"]]
    tb, ta = report["totals_before"], report["totals_after"]
    rows.append(["total", "", "", f"{tb['params']:,} -> {ta['params']:,}", f"{tb['macs']:,} -> {ta['macs']:,}"])
    return table(["layer", "op", "channels", "params", "MACs"], rows) + \
        f"\nratio {report['ratio']:.4f}: {report['removed_units']} of {report['prunable_units']} prunable channels removed"


def _parse_budget(text: str | tuple[str, int]) -> tuple[str, int]:
    """'METRIC=N' (N with an optional K/M/G suffix) -> (metric, N); also the argparse type of --budget."""
    if isinstance(text, tuple):
        return text
    if "=" not in text:
        raise OptionError(f"--budget takes METRIC=N (params, macs, flash, activations, features), got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), count(v)


@dataclass(frozen=True)
class PruneOptions:
    """The pruning options of ``tinycc compile`` and ``tinycc prune`` (typed; every default here)."""

    ratio: float | None = None
    budget: tuple[str, int] | None = None
    layer_ratio: tuple[tuple[str, float], ...] = ()
    criterion: str = "l1"
    prune_policy: str | None = None
    min_channels: int = 1
    round_to: int = 1
    finetune: str | None = None
    finetune_epochs: int = 1
    finetune_lr: float = 5e-4

    @property
    def active(self) -> bool:
        return self.ratio is not None or self.budget is not None or bool(self.layer_ratio)


def add_prune_arguments(p: Any) -> None:
    p.add_argument("--ratio", type=unit_float, help="fraction of each layer's filters to remove (0..1)")
    p.add_argument("--budget", type=_parse_budget,
                   help="METRIC=N with METRIC params, macs, flash, activations or features")
    p.add_argument("--layer-ratio", type=layer_ratio, action="append", metavar="LAYER=R", help="per-layer ratio")
    p.add_argument("--criterion", help="filter ranking: l1 (default), l2 or a plugin's")
    p.add_argument("--prune-policy", choices=["uniform", "cost"], help="uniform per-layer ratio, or cost-aware ranking "
                   "(default: uniform for --ratio, cost for --budget)")
    p.add_argument("--min-channels", type=positive_int, help="keep at least this many channels (default 1)")
    p.add_argument("--round-to", type=positive_int, help="keep a multiple of this many channels (default 1)")
    p.add_argument("--finetune", help="labelled data (.npz with x_train/y_train) to fine-tune after pruning")
    p.add_argument("--finetune-epochs", type=int_range(1, MAX_EPOCHS), help="default 1")
    p.add_argument("--finetune-lr", type=positive_float, help="default 5e-4")


def prune_options(args: Any) -> PruneOptions:
    """The typed pruning options from an argparse namespace (options not given keep their defaults)."""
    given = {f.name: getattr(args, f.name) for f in fields(PruneOptions) if getattr(args, f.name, None) is not None}
    if "layer_ratio" in given:
        given["layer_ratio"] = tuple(item if isinstance(item, tuple) else layer_ratio(item)
                                     for item in given["layer_ratio"])
    if isinstance(given.get("budget"), str):
        given["budget"] = _parse_budget(given["budget"])
    return PruneOptions(**given)


def prune_graph(graph: Graph, opts: PruneOptions, session: Any) -> dict | None:
    """Prune ``graph`` in place as ``opts`` says (None: nothing asked)."""
    if not opts.active:
        return None
    if graph.meta.get("quantized"):
        raise TinyccError(f"{graph.name}: an int8 model; pruning (and fine-tuning) needs the float model "
                          "(.h5/.keras or a float32 .tflite)")
    crit = opts.criterion
    if crit not in session.registry.prune_criteria:
        raise TinyccError(f"unknown criterion {crit!r}; known: {', '.join(session.registry.prune_criteria)}")
    layer_ratios = dict(opts.layer_ratio)
    names = {o.origin: o.name for o in graph.ops}
    unknown = [k for k in layer_ratios if k not in names and k not in names.values()]
    if unknown:
        raise TinyccError(f"--layer-ratio: no layer named {unknown[0]!r} in {graph.name} (layers: "
                          + ", ".join(sorted({o.origin for o in graph.ops if o.origin})[:20]) + ")")
    layer_ratios = {names.get(k, k): v for k, v in layer_ratios.items()}
    report = prune(graph, ratio=opts.ratio, layer_ratios=layer_ratios, budget=opts.budget,
                   criterion=session.registry.prune_criteria[crit].obj,
                   min_channels=opts.min_channels, round_to=opts.round_to, policy=opts.prune_policy)
    if opts.finetune:
        finetune(graph, opts.finetune, opts.finetune_epochs, opts.finetune_lr)
    else:
        log.warning("pruned without fine-tuning data: accuracy is not recovered (use --finetune DATA)")
    return report


def finetune(graph: Graph, data: str, epochs: int, lr: float) -> None:
    """IR -> Keras, fit on the data, weights back into the IR."""
    import keras

    from .keras_export import graph_to_keras, update_graph_weights

    try:
        with np.load(data, allow_pickle=False) as z:
            x, y = z["x_train"], z["y_train"]
    except (OSError, KeyError) as e:
        raise TinyccError(f"{data}: fine-tuning needs an .npz with x_train and y_train ({e})") from None
    model = graph_to_keras(graph)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
    model.fit(np.asarray(x, np.float32), np.asarray(y), epochs=epochs, batch_size=64, verbose=2)
    update_graph_weights(graph, model)


class PruneChannels(Pass):
    name = "prune_channels"
    description = "structured filter pruning (--ratio / --budget / --layer-ratio)"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        report = prune_graph(graph, ctx.config.plugin("prune") or PruneOptions(), ctx.session)
        ctx.results[self.name] = report
        return report is not None and report["removed_units"] > 0


def _cmd(args: argparse.Namespace, session: Any) -> int:
    import json

    from ...passes import run_pipeline
    from .keras_export import graph_to_keras

    out = Path(args.output)
    check_output_file(out)
    if args.report is not None:
        check_output_file(Path(args.report))  # never a device, folder or symlink; before any work
    g = session.registry.frontend_for(args.model).load(args.model)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    if args.ratio is None and not args.budget and not args.layer_ratio:
        raise TinyccError("give --ratio R, --budget METRIC=N or --layer-ratio LAYER=R")
    report = prune_graph(g, prune_options(args), session)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=out.suffix or ".keras", dir=out.parent)
    os.close(fd)
    try:
        graph_to_keras(g).save(tmp)
        os.chmod(tmp, default_mode() & 0o666)  # mkstemp's 0600 is not what a plain open() would give
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(render(report))
    if args.report:
        write_atomic(Path(args.report), (json.dumps(report, indent=1) + "\n").encode())
    print(f"wrote {out}")
    return 0


@hookimpl
def tinycc_register_passes(registry: Any) -> None:
    registry.add_pass(PruneChannels, "optimize")


@hookimpl
def tinycc_register_compile_options(registry: Any) -> None:
    registry.add_compile_options("prune", add_prune_arguments, prune_options)


@hookimpl
def tinycc_register_prune_criteria(registry: Any) -> None:
    registry.add_prune_criterion("l1", l1)
    registry.add_prune_criterion("l2", l2)


@hookimpl
def tinycc_add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("prune", help="structured L1-norm filter pruning (channels removed)")
    p.add_argument("model")
    add_prune_arguments(p)
    p.add_argument("-o", "--output", type=path_text, required=True, help="pruned model (.keras)")
    p.add_argument("--report", type=path_text, help="write the per-layer report as JSON")
    p.set_defaults(func=_cmd)
