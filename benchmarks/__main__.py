"""Benchmark runner: ``python -m benchmarks NAME [--data DIR] [--out DIR] [options]``.

Each benchmark is a module ``benchmarks/bench_NAME.py`` with ``add_arguments(parser)`` and
``run(args) -> common.Result``; results go to ``--out`` (default ``benchmarks/results``) as
Markdown + JSON + PNG.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name[6:] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    names = available()
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=names)
    ap.add_argument("--data", help="folder holding cifar10.npz / imagenette-32.npz (or a file)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    known, rest = ap.parse_known_args(argv)
    mod = importlib.import_module(f"benchmarks.bench_{known.name}")
    sub = argparse.ArgumentParser(prog=f"python -m benchmarks {known.name}")
    mod.add_arguments(sub)
    args = sub.parse_args(rest, namespace=known)
    t0 = time.time()
    result = mod.run(args)
    path = result.write(Path(args.out))
    print(f"{known.name}: wrote {path} in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
