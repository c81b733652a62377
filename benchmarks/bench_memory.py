"""RAM budget -> replay buffer entries -> concept-drift accuracy of Ω, with and without gradient arrays.

For each model and RAM budget, `tinycc compile --target c --ram B` is run in-process (the same cut for every
budget) and its memory report gives the replay buffer the budget leaves ("after": the fused SGD runtime,
no weight- or bias-gradient arrays). "Before" is the same report plus what the previous runtime also kept
in RAM for per-sample SGD: a float gradient for every trainable weight and bias and a float copy of the
feature vector (``previous_extra``); its buffer is what the budget leaves after those. Each capacity is then
run through the thesis's concept-drift scenario (int8 Φf features computed once per stream, Ω learner on
the host simulator, ``--runs`` streams) and the final accuracy is reported as mean ± std.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .bench_thesis import RAM_BUDGET
from .common import Result, data_file

DEFAULT_BUDGETS = "64K,128K,256K,512K,830K"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", required=True,
                   help="NAME=PATH[:SCALE] (SCALE: input scale of the 0..255 images, default 1/255); repeatable")
    p.add_argument("--budgets", default=DEFAULT_BUDGETS, help="comma-separated RAM budgets (K/M suffixes)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--stream", type=int, default=800)
    p.add_argument("--test", type=int, default=200)


def _bytes(text: str) -> int:
    t = text.strip().upper()
    mult = {"K": 1024, "M": 1024 * 1024}.get(t[-1:], 1)
    return int(float(t.rstrip("KM")) * mult)


def _model_arg(text: str) -> tuple[str, str, float]:
    name, _, rest = text.partition("=")
    path, _, scale = rest.partition(":")
    if not scale:
        return name, path, 1.0 / 255.0
    num, _, den = scale.partition("/")
    return name, path, float(num) / float(den or 1)


def previous_extra(dep: Any) -> int:
    """RAM the previous (unfused) runtime kept on top: weight + bias gradients, the float feature copy, the
    batch's labels and the probability vector (its training-state and staging items at commit 6410612)."""
    grads = sum(4 * (layer.weight.size + layer.bias.size) for layer in dep.classifier)
    return grads + (4 * dep.feature_count + 1) * dep.train.batch_size + 4 * dep.classifier[-1].weight.shape[0]


def _entry_bytes(dep: Any) -> tuple[int, int]:
    """(bytes of the replay buffer, bytes of one more entry), as `compile` sizes the buffer."""
    from tinycc.ir.buffer import ReplayBuffer
    from tinycc.ir.simulator import learner_for

    buf = next(i["bytes"] for i in dep.memory["items"] if i["name"] == "replay buffer")
    targets = learner_for(dep).classifier.target_count
    kind = "int8" if dep.target_quant is not None else "float32"
    one, two = (ReplayBuffer.bytes_for(c, dep.feature_count, dep.buffer.storage, targets, kind) for c in (1, 2))
    return buf, two - one


def run(args: argparse.Namespace) -> Result:
    from tinycc.backends.c import CBackend
    from tinycc.errors import TinyccError
    from tinycc.passes import PassContext, run_pipeline
    from tinycc.config import make_config
    from tinycc.deploy import build_deployment
    from tinycc.plugins.applications.scenarios import prepare
    from tinycc.report import markdown_table
    from tinycc.session import Session

    cifar = data_file(args.data, "cifar10.npz")
    budgets = [_bytes(b) for b in args.budgets.split(",")]
    session = Session(autoload=False)
    res = Result("memory")
    rows: list[list[str]] = []
    data: dict[str, Any] = {"budgets": budgets, "runs": args.runs, "lr": args.lr, "models": {}}
    for spec in args.model:
        name, path, scale = _model_arg(spec)
        g = session.registry.frontend_for(path).load(path)
        run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
        prep = prepare(g, "concept-drift", str(cifar.parent), make_config(session, lr=args.lr), session, args.stream,
                       args.test, scale)
        cut = prep.dep.meta["cut"]
        calib = _calib(prep)
        points = []
        for budget in budgets:
            opts = {"ram": budget, "cut": cut, "lr": args.lr}
            try:
                dep = build_deployment(g, make_config(session, **opts), session, CBackend(), calib=calib)
            except TinyccError as e:
                points.append({"budget": budget, "fits": False, "why": str(e).split(";")[0]})
                print(f"{name} @ {budget // 1024} kB: does not fit", flush=True)
                continue
            buf, per = _entry_bytes(dep)
            fixed = int(dep.memory["ram"]) - buf
            extra = previous_extra(dep)
            before = max((budget - fixed - extra - 16) // per, 0)
            state = next(i for i in dep.memory["items"] if i["name"] == "training state")
            points.append({"budget": budget, "fits": True, "after": dep.buffer.capacity, "before": int(before),
                           "entry_bytes": per, "ram_without_buffer": fixed, "previous_extra": extra,
                           "training_state": state["bytes"], "training_state_detail": state["detail"]})
            print(f"{name} @ {budget // 1024} kB: buffer {before} -> {dep.buffer.capacity} entries", flush=True)
        caps = sorted({c for p in points if p["fits"] for c in (p["before"], p["after"]) if c > 0})
        final = _final_accuracy(prep, caps, args)
        for p in points:
            if not p["fits"]:
                rows.append([name, f"{p['budget'] // 1024} kB", "does not fit"] + [""] * 7)
                continue
            fa, fb = final.get(p["after"]), final.get(p["before"])
            p["accuracy_after"], p["accuracy_before"] = fa, fb
            rows.append([name, f"{p['budget'] // 1024} kB", f"{p['ram_without_buffer']:,}", f"{p['training_state']:,}",
                         f"{p['previous_extra']:,}", f"{p['before']:,}" if p["before"] else "does not fit",
                         f"{p['after']:,}", _fmt(fb), _fmt(fa), _gain(fb, fa)])
        data["models"][name] = {"path": path, "cut": cut, "scale": scale, "features": prep.dep.feature_count,
                                "points": points}
    res.add(f"CIFAR-10 concept drift (labels {'/'.join(map(str, prep.protocol.swap))} swapped at step {prep.at}), "
            f"{args.stream} stream samples, {args.test} test images, Ω learner (int8 buffer, FIFO, SGD lr {args.lr}, "
            f"batch 1) on the host simulator; final accuracy, mean ± std over {args.runs} streams (seeds 0..). "
            f"RAM budgets in KiB. 'Arrays removed': what the previous runtime (commit 6410612) also kept in RAM "
            f"(weight and bias gradients, float feature copy, batch labels, probability vector); 'before' is the "
            f"buffer the budget leaves after them. Capacities at least as long as the stream learn identically "
            f"(FIFO never evicts) and are simulated once.")
    res.add(markdown_table(["model", "RAM budget", "RAM without buffer", "training state", "arrays removed",
                            "buffer before", "buffer after", "accuracy before", "accuracy after", "gain"], rows))
    gains = []
    for name, m in data["models"].items():
        thesis = [p for p in m["points"] if p["fits"] and p["budget"] == RAM_BUDGET]
        if thesis and thesis[0]["accuracy_after"] and thesis[0]["accuracy_before"]:
            t = thesis[0]
            full = " (both hold the whole stream: nothing is evicted, so no accuracy can be gained there)" \
                if t["before"] >= args.stream else ""
            gains.append(f"{name} at the thesis's 830 kB: buffer {t['before']:,} -> {t['after']:,} entries, final "
                         f"accuracy {t['accuracy_before'][0]:.3f} -> {t['accuracy_after'][0]:.3f}{full}.")
        fit = [p for p in m["points"] if p["fits"] and p["accuracy_after"] and p["accuracy_before"]]
        if fit:
            b = max(fit, key=lambda p: p["accuracy_after"][0] - p["accuracy_before"][0])
            gains.append(f"{name}: the largest gain is at {b['budget'] // 1024} kB, buffer {b['before']:,} -> "
                         f"{b['after']:,} entries, accuracy {_gain(b['accuracy_before'], b['accuracy_after'])} "
                         f"({b['accuracy_before'][0]:.3f} -> {b['accuracy_after'][0]:.3f}).")
    for g_ in gains:
        res.add(g_)
    res.plots.append("memory.png")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "memory.png").write_bytes(_plot(data))
    res.data = data
    return res


def _calib(prep: Any) -> np.ndarray:
    from tinycc.plugins.applications.scenarios import CALIB_SAMPLES, CALIB_SEED, make_stream

    src = prep.data
    st = make_stream("concept-drift", src, min(CALIB_SAMPLES, len(src.x_train)), 1, CALIB_SEED, prep.scale,
                     prep.protocol, min(prep.at, CALIB_SAMPLES))
    return st.x


def _final_accuracy(prep: Any, caps: list[int], args: argparse.Namespace) -> dict[int, tuple[float, float]]:
    """Final concept-drift accuracy (mean, std over runs) of Ω with each buffer capacity."""
    from tinycc.ir.simulator import learner_for
    from tinycc.plugins.applications.scenarios import draw, run_mode

    # a FIFO buffer at least as long as the stream never evicts: every such capacity learns identically
    sim = sorted({min(c, prep.n_stream) for c in caps})
    finals: dict[int, list[float]] = {c: [] for c in sim}
    for r in range(args.runs):
        st, feats = draw(prep, r)
        f_stream, f_test = feats["omega"]
        for c in sim:
            learner = learner_for(prep.dep, c, prep.dep.buffer.storage, args.lr, prep.dep.train.epochs)
            finals[c].append(float(run_mode(learner, f_stream, f_test, st)["all"][-1]))
        print(f"run {r + 1}/{args.runs}: " + ", ".join(f"{c}: {finals[c][-1]:.3f}" for c in sim), flush=True)
    return {c: (float(np.mean(finals[min(c, prep.n_stream)])), float(np.std(finals[min(c, prep.n_stream)])))
            for c in caps}


def _gain(before: tuple[float, float] | None, after: tuple[float, float] | None) -> str:
    return f"{100 * (after[0] - before[0]):+.1f} pt" if before and after else ""


def _fmt(v: tuple[float, float] | None) -> str:
    return f"{v[0]:.3f} ± {v[1]:.3f}" if v else ""


def _plot(data: dict[str, Any]) -> bytes:
    import matplotlib.pyplot as plt

    from tinycc.report import png_bytes

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, m in data["models"].items():
        pts = [p for p in m["points"] if p["fits"]]
        kb = [p["budget"] / 1024 for p in pts]
        for key, style in (("before", "--"), ("after", "-")):
            a1.plot(kb, [p[key] for p in pts], style, marker="o", label=f"{name} {key}")
            acc = [(p[f"accuracy_{key}"] or (np.nan, 0))[0] for p in pts]
            err = [(p[f"accuracy_{key}"] or (0, 0))[1] for p in pts]
            a2.errorbar(kb, acc, yerr=err, fmt=style, marker="o", capsize=3, label=f"{name} {key}")
    for ax in (a1, a2):
        ax.axvline(RAM_BUDGET / 1024, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("RAM budget (KiB); dotted: the thesis's 830 kB")
        ax.legend(fontsize=8)
    a1.set_ylabel("replay buffer entries")
    a1.set_yscale("log")
    a2.set_ylabel("final concept-drift accuracy (Ω)")
    fig.tight_layout()
    return png_bytes(fig)
