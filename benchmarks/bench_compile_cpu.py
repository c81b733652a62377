"""Compile cost of a small model: CPU and wall seconds per ``tinycc compile``, per target.

Each target is compiled ``--repeat`` times in one process after a first compile that pays the imports; the table
shows the median. ``cold`` clears the stack measurement's cache before every compile (``TINYCC_CACHE_DIR`` empty,
in-memory cache cleared): what a first compile of a new model costs; ``warm`` keeps it (a repeated compile, a
search's candidates). ``--baseline PYTHON`` runs the same measurement with another checkout's interpreter (its venv)
so both rows come from one run. CPU time (process + compiler children) is the steadier figure on a shared
machine; wall time shows the stack measurement's parallel compiles. Both noisy: medians.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from .common import Result

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("c", "tflm", "arduino")

# runs inside the measured interpreter (this checkout's or the baseline's); prints one JSON line
PROBE = r'''
import contextlib, io, json, os, statistics, sys, tempfile, time
from tinycc.cli import main
model, calib, repeat, cold = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "cold"
targets = sys.argv[5].split(",") if len(sys.argv) > 5 else ["c", "tflm", "arduino"]
out = tempfile.mkdtemp()
def cpu():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system
res = {}
for target in targets:
    xs, ws = [], []
    for i in range(repeat + 1):
        if cold:
            try:
                import tinycc.backends.c.stack as s
                getattr(s, "_MEMO", {}).clear()
            except ImportError:
                pass
        t0, w0 = cpu(), time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc = main(["compile", model, "--target", target, "-o", os.path.join(out, target), "--force",
                       "--calib", calib])
        if rc not in (0, None):
            raise SystemExit(f"compile --target {target} failed: {rc}")
        if i:
            xs.append(cpu() - t0)
            ws.append(time.perf_counter() - w0)
    res[target] = [statistics.median(xs), statistics.median(ws)]
print(json.dumps(res))
'''


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(ROOT / "examples" / "digits_cnn.h5"))
    p.add_argument("--calib", default=str(ROOT / "examples" / "digits_data.npz"))
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--baseline", help="python of another checkout's venv (e.g. before a change) to measure beside")
    p.add_argument("--baseline-label", default="baseline", help="what the baseline is (e.g. a commit)")


def _measure(python: str, args: argparse.Namespace, cold: bool, cwd: Path,
             targets: tuple[str, ...] = TARGETS) -> dict[str, list[float]]:
    """Median CPU and wall seconds per target of ``args.repeat`` compiles of ``args.model`` in one process of
    interpreter ``python`` (this checkout's or another's)."""
    import os

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if cold:
        env["TINYCC_CACHE_DIR"] = ""
    r = subprocess.run([python, "-c", PROBE, args.model, args.calib, str(args.repeat), "cold" if cold else "warm",
                        ",".join(targets)], capture_output=True, text=True, env=env, cwd=cwd, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> Result:
    import tempfile

    cwd = Path(tempfile.mkdtemp())  # not a checkout: the interpreter imports its own installed tinycc
    rows = {"this checkout, cold": _measure(sys.executable, args, True, cwd),
            "this checkout, warm": _measure(sys.executable, args, False, cwd)}
    if args.baseline:
        rows[f"{args.baseline_label}, cold"] = _measure(args.baseline, args, True, cwd)
    for name, r in rows.items():
        print(name, " ".join(f"{t}={r[t][0]:.3f}s cpu {r[t][1]:.3f}s wall" for t in TARGETS), flush=True)
    res = Result("compile_cpu")
    lines = [f"Model `{Path(args.model).name}`, calibration `{Path(args.calib).name}`; median CPU seconds "
             f"(process + compiler children) and wall seconds of {args.repeat} compiles per target in one process, "
             "after one that pays the imports." + (f" Baseline: {args.baseline_label}." if args.baseline else ""), "",
             "| run | " + " | ".join(f"--target {t} CPU / wall" for t in TARGETS) + " |",
             "|---|" + "---|" * len(TARGETS)]
    lines += [f"| {n} | " + " | ".join(f"{r[t][0]:.3f} / {r[t][1]:.3f}" for t in TARGETS) + " |"
              for n, r in rows.items()]
    res.add("\n".join(lines))
    res.data = {"rows": rows, "repeat": args.repeat, "model": Path(args.model).name}
    return res
