"""Random Keras models (benchmarks/random_models.py) through every target and every oracle.

Per seed: the model's .h5 and the TFLite converter's int8 file (made in a child process: the converter crashes on
some models); ``bench_zoo.model_row`` on them (compile for c, tflm and arduino; the converter file's c program on the
host and the Cortex-M4 under QEMU against run_int8; run_int8 against TFLite's BUILTIN_REF and TensorFlow Lite Micro;
the .h5 compiled by tinycc's own quantization); and the .h5's c program (tinycc's quantization) on the host and the
M4 against run_int8. A model passes when every comparison that ran is equal and every refusal is one line that is
not a tinycc bug; a runtime that cannot load a file (BUILTIN_REF has no ELU kernel, TFLite Micro no GELU) compares
nothing. ``--count`` models from ``--seed``; the table, the refusals and the verdicts are recorded."""
from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import Result

ROOT = Path(__file__).resolve().parents[1]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--count", type=int, default=40, help="models")


def check(session: Any, seed: int, tmp: Path) -> dict[str, Any]:
    """Everything about model ``seed`` (files in ``tmp``): the zoo row, the own-quantization c run, the verdict."""
    from . import bench_zoo
    from .random_models import build

    tmp.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "benchmarks.random_models", str(seed), str(tmp)], capture_output=True,
                       text=True, cwd=ROOT)
    h5, tfl = tmp / "m.h5", tmp / "m_int8.tflite"
    note = "" if r.returncode == 0 else (f"converter: signal {-r.returncode}" if r.returncode < 0 else
                                         f"converter: rc {r.returncode}")
    _, desc = build(seed)
    if not h5.exists():
        return {"seed": seed, "blocks": desc, "verdict": "BUG", "why": ["the model could not be saved: " + note]}
    row = bench_zoo.model_row(session, f"random-{seed}", "random", tfl if tfl.exists() else None, h5, True,
                              (-1.0, 1.0), n=2, note=note)
    own: dict[str, Any] = {}
    if row.get("keras_c", {}).get("ok"):
        import numpy as np

        graph_shape = None
        try:
            from tinycc.api import load_cleaned

            g = load_cleaned(str(h5), session)
            graph_shape = tuple(int(d) for d in g.tensors[g.inputs[0]].shape[1:])
        except Exception as e:  # noqa: BLE001 - recorded
            own = {"error": f"BUG {type(e).__name__}: {e}"}
        if graph_shape is not None:
            rng = np.random.default_rng(seed)
            calib = rng.uniform(-1, 1, (32, *graph_shape)).astype(np.float32)
            x = rng.uniform(-1, 1, (2, *graph_shape)).astype(np.float32)
            own = bench_zoo.run_c(session, h5, calib, x, tmp / "own")
    row.update({"seed": seed, "blocks": desc, "own_c_run": own})
    row["why"] = problems(row)
    row["verdict"] = "BUG" if row["why"] else "pass"
    return row


def problems(row: dict[str, Any]) -> list[str]:
    """What makes a row a failure: a bug's error anywhere, a comparison that differs, an error over several lines."""
    out = []
    for key in ("c_run", "own_c_run"):
        run = row.get(key) or {}
        if "error" in run:
            out.append(f"{key}: {run['error']}")
        for platform in ("host", "qemu-m4"):
            if isinstance(run.get(platform), dict) and run[platform].get("bit_exact") is not True:
                out.append(f"{key} {platform}: not bit-exact with run_int8")
    for key in ("builtin_ref", "tflm"):
        v = row.get(key)
        if v is False or (isinstance(v, str) and "cannot load" not in v):
            out.append(f"{key}: {v if isinstance(v, str) else 'differs from run_int8'}")
    errors = [v.get("error", "") for v in row.get("targets", {}).values()]
    errors += [row.get("error", ""), row.get("error_h5", ""), (row.get("keras_c") or {}).get("error", "")]
    out += [f"error: {e}" for e in errors if e and ("BUG" in e or "\n" in e)]
    return out


def _cell(row: dict[str, Any], key: str) -> str:
    run = row.get(key) or {}
    if not run:
        return "—"
    if "error" in run:
        return "error"
    return "/".join("yes" if (run.get(p) or {}).get("bit_exact") else "NO" for p in ("host", "qemu-m4"))


def _target(row: dict[str, Any], t: str) -> str:
    v = row.get("targets", {}).get(t)
    if v is None:
        return "—"
    return ("learn" if v.get("mode") == "learning" else "infer") if v.get("ok") else "refused"


def _runtime(v: Any) -> str:
    return "—" if v is None else "yes" if v is True else "NO" if v is False else "n/a"


def run(args: argparse.Namespace) -> Result:
    from tinycc.session import Session

    session = Session()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinycc-random-") as d:
        for seed in range(args.seed, args.seed + args.count):
            t0 = time.time()
            row = check(session, seed, Path(d) / str(seed))
            rows.append(row)
            print(f"seed {seed} {' '.join(row['blocks'])}: {row['verdict']} ({time.time() - t0:.0f} s)"
                  + ("".join(f"\n  {w}" for w in row["why"])), flush=True)
    head = ("| seed | blocks | params | c | tflm | arduino | converter file: c host/M4 | BUILTIN_REF | TFLM "
            "| tinycc quantization: c host/M4 | verdict |\n|--:|---|--:|---|---|---|---|---|---|---|---|")
    lines = [head] + [f"| {r['seed']} | {' '.join(r['blocks'])} | {r.get('params', '—')} | {_target(r, 'c')} "
                      f"| {_target(r, 'tflm')} | {_target(r, 'arduino')} | {_cell(r, 'c_run')} "
                      f"| {_runtime(r.get('builtin_ref'))} | {_runtime(r.get('tflm'))} | {_cell(r, 'own_c_run')} "
                      f"| {r['verdict']} |" for r in rows]
    refusals = collections.Counter()
    for r in rows:
        for t, v in r.get("targets", {}).items():
            if not v.get("ok"):
                refusals[f"{t}: {v.get('error', '')[:140]}"] += 1
        if (r.get("keras_c") or {}).get("error"):
            refusals[f".h5 -> c: {r['keras_c']['error'][:140]}"] += 1
    bugs = [r for r in rows if r["verdict"] == "BUG"]
    res = Result("random")
    res.add(f"{len(rows)} random models (seeds {args.seed}..{args.seed + len(rows) - 1}): "
            f"**{len(rows) - len(bugs)} pass, {len(bugs)} fail**. n/a: the runtime cannot load the file (TFLite's "
            "BUILTIN_REF has no ELU kernel, TFLite Micro no GELU); — : not run (the compile was refused).")
    res.add("\n".join(lines))
    res.add("### refusals (one line each, the count of models)\n\n" +
            "\n".join(f"- {n} x {e}" for e, n in refusals.most_common()))
    if bugs:
        res.add("### failures\n\n" + "\n".join(f"- seed {r['seed']}: {'; '.join(r['why'])}" for r in bugs))
    res.data = {"rows": json.loads(json.dumps(rows, default=str)), "pass": len(rows) - len(bugs), "fail": len(bugs)}
    return res
