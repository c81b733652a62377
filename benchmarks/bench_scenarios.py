"""The thesis's incremental-learning scenarios on a CNAS model, next to the thesis's accuracies.

Ω = int8 Φf + float Φc + replay buffer (158 entries, FIFO), TinyOL = buffer of 1, baseline = float Φf.
The model is whatever --model gives (state its training honestly in benchmarks/README.md); the
incremental scenario needs a model trained on classes 0-7 (--incremental-model) and is skipped otherwise.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from .common import Result

THESIS = {"concept-drift": {"omega": "0.658 ± 0.019 (Ω801kB)", "tinyol": "0.613 ± 0.014",
                            "baseline": "0.778 ± 0.007"},
          "transfer": {"omega": "0.320 ± 0.041 (Ω801kB)", "tinyol": "0.021 ± 0.020", "baseline": "0.505 ± 0.092"},
          "incremental": {"omega": "new 0.353 / old 0.502 (Ω954kB)", "tinyol": "new 0.243",
                          "baseline": "new 0.518 / old 0.422"}}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--incremental-model", help="a model trained on classes 0-7 only")
    p.add_argument("--tag", default="", help="suffix for the result names (scenarios-TAG.md, SCENARIO-TAG.png)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--buffer", type=int, default=158)
    p.add_argument("--lr", type=float, default=0.01, help="learning rate when --lr-grid is empty")
    p.add_argument("--lr-grid", default="0.001,0.003,0.01,0.03,0.1",
                   help="learning rates tried per mode on --tune-runs held-out streams (seeds 100+); the best "
                        "final accuracy picks each mode's rate for the reported runs (seeds 0..runs-1)")
    p.add_argument("--tune-runs", type=int, default=1)
    p.add_argument("--lrs", default="", help="fixed per-mode rates instead of tuning, e.g. omega=0.001,tinyol=0.003")
    p.add_argument("--scenarios", default="concept-drift,transfer,incremental")


def _cleaned(session, model: str):
    from tinycc.passes import PassContext, run_pipeline

    g = session.registry.frontend_for(model).load(model)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    return g


def run(args: argparse.Namespace) -> Result:
    from tinycc.config import make_config
    from tinycc.plugins.applications.scenarios import simulate, tune, write_results
    from tinycc.report import markdown_table
    from tinycc.session import Session

    session = Session(autoload=False)
    out = Path(args.out)
    res = Result(f"scenarios-{args.tag}" if args.tag else "scenarios")
    rows, data = [], {}
    for scen in args.scenarios.split(","):
        model = args.incremental_model if scen == "incremental" else args.model
        if not model:
            res.add(f"{scen}: skipped (no model trained on classes 0-7 given).")
            continue
        g = _cleaned(session, model)
        opts = make_config(session, buffer=args.buffer, lr=args.lr, storage="int8")
        lrs = {m: args.lr for m in ("omega", "tinyol", "baseline")}
        lrs.update({k: float(v) for k, v in (item.split("=") for item in args.lrs.split(",") if item)})
        grid = [float(v) for v in args.lr_grid.split(",") if v]
        if grid:  # the thesis tuned learning rates per model; here per mode, on streams never reported
            lrs = tune(g, scen, args.data, opts, session, grid, runs=args.tune_runs)
            print(f"{scen}: tuned learning rates {lrs}", flush=True)
        curves = simulate(g, scen, args.data, opts, session, runs=args.runs, lr_by_mode=lrs)
        csv_path, png = write_results(curves, scen, out, stem=f"{scen}-{args.tag}" if args.tag else scen)
        res.plots.append(png.name)
        data[scen] = {}
        for mode in ("omega", "tinyol", "baseline"):
            v = curves[mode]["all"][:, -1]
            txt = f"{v.mean():.3f} ± {v.std():.3f}"
            if scen == "incremental":
                txt = (f"new {np.nanmean(curves[mode]['new'][:, -1]):.3f} / old "
                       f"{np.nanmean(curves[mode]['old'][:, -1]):.3f}")
            data[scen][mode] = txt
            rows.append([scen, mode, f"{lrs[mode]:g}", txt, THESIS[scen][mode]])
            data[scen][f"{mode}_lr"] = lrs[mode]
    inc = f", incremental: `{Path(args.incremental_model).name}`" if args.incremental_model else ""
    tuning = (f"SGD learning rate per mode chosen from {args.lr_grid} on {args.tune_runs} held-out stream(s) "
              "(seeds 100+, never reported)" if args.lr_grid else f"SGD lr {args.lr} {args.lrs}".strip())
    res.add(f"Model `{Path(args.model).name}`{inc}; buffer {args.buffer} entries (FIFO, int8); {tuning}; "
            f"1 epoch over the buffer per sample; {args.runs} runs on seeds 0..{args.runs - 1} "
            "(mean ± std of the final accuracy).")
    res.add(markdown_table(["scenario", "mode", "lr", "tinycc", "thesis"], rows))
    res.data = {"final": data, "runs": args.runs, "buffer": args.buffer, "lr_grid": args.lr_grid}
    return res
