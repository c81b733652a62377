"""``python -m benchmarks kernels --m55``: the MLPerf Tiny int8 models on Cortex-M55 (QEMU mps3-an547,
``-icount shift=0``): tinycc's features() with its Helium kernels (board mps3_an547), tinycc's scalar/DSP kernels
on the same core (no board), and TFLite Micro + CMSIS-NN built for cortex-m55, where CMSIS-NN takes its MVE path
(ARM_MATH_MVEI, checked on its headers). SysTick on mps3-an547 counts QEMU's 32 MHz processor clock: 31.25
instructions per tick (TCC_TICK_NS_X10 312.5); its reference clock runs at the same 32 MHz (measured), so both
24-bit counts wrap after 524 M instructions (every call here is far shorter). Instructions, not cycles: QEMU
does not model Helium's beat-wise execution, so one VMLADAVA counts as one instruction."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from . import kernels_build as kb
from .common import Result

TARGET_X_TFLM_MVE = 0.7  # issue #27: tinycc's M55 instructions <= 0.7x TFLite Micro + CMSIS-NN (MVE)


def _deployments(args: argparse.Namespace, session: Any):
    from tinycc.backends.c import CBackend
    from tinycc.config import make_config
    from tinycc.deploy import build_deployment
    from tinycc.ir.stats import totals
    from tinycc.passes import PassContext, run_pipeline

    from .bench_kernels import MLPERF

    for name, fname in MLPERF.items():
        path = Path(args.mlperf) / fname
        if name == "FC autoencoder" or not path.exists() or (args.models and name not in args.models):
            continue
        deps = {}
        for key, board in (("helium", "mps3_an547"), ("scalar", None)):
            graph = session.registry.frontend_for(str(path)).load(str(path))
            run_pipeline(graph, session.registry.pipeline("cleanup"), PassContext(session=session))
            cfg = make_config(session, kernels="tinycc", **({"board": board} if board else {}))
            deps[key] = build_deployment(graph, cfg, session, CBackend())
        yield name, path.read_bytes(), deps, totals(deps["helium"].extractor)["macs"]


def run_m55(args: argparse.Namespace) -> Result:
    from tinycc.backends.c import cmsis_nn, render_project
    from tinycc.backends.c.emitter import build_emit_model
    from tinycc.backends.tflm import RESOLVER
    from tinycc.config import TestVectors
    from tinycc.session import Session
    from tinycc.tflite_writer import operator_names

    from .bench_kernels import _profile, _test_vectors

    cache = Path(args.cache) if args.cache else cmsis_nn.cache_root()
    vendor = Path(args.vendor)
    cxx = kb.arm_cxx_root(cache, args.arm_cxx)
    lib = kb.tflm_library_m55(vendor, cache, cxx)
    mvei = kb.cmsis_mve_check(lib.parent / "cmsis-nn" / "Include")
    work = Path(tempfile.mkdtemp(prefix="bench-kernels-m55-"))
    session = Session(autoload=False)
    rows: list[dict[str, Any]] = []
    for name, tflite, deps, macs in _deployments(args, session):
        row: dict[str, Any] = {"model": name, "macs": macs}
        feats = {}
        proj = None
        for key, dep in deps.items():
            proj = work / f"{name.replace(' ', '_')}-{key}"
            proj.mkdir()
            x, y = _test_vectors(dep)
            render_project(dep, proj, TestVectors(x, y, 2, 1))
            fams = [k.family for k in build_emit_model(dep).kernels]
            m = kb.tinycc_m(proj, dep.name, "m55", None, None)
            row[f"tinycc {key}"] = m.instructions
            row[f"tinycc {key} code"] = m.code - kb.printf_baseline(proj, work, "m55")
            row[f"tinycc {key} mve kernels"] = fams.count("mve")
            feats[key] = m.features
            if key == "helium":
                row["profile"] = _profile(dep, proj, "m55")
        row["helium equals scalar"] = feats["helium"] == feats["scalar"]
        ops = [RESOLVER[n] for n in operator_names(tflite) if n in RESOLVER]
        t = kb.tflm_m4(work / f"tflm-{name.replace(' ', '_')}", tflite, ops, lib, proj, cxx, cpu="m55")
        row["tflm-cmsis-mve"], row["tflm arena"] = t.instructions, t.arena
        row["tflm-cmsis-mve code"] = t.code - kb.printf_baseline(proj, work, "m55")
        print(row, flush=True)
        rows.append(row)
    return _result(rows, mvei)


def _result(rows: list[dict[str, Any]], mvei: bool) -> Result:
    res = Result("kernels-m55")
    res.data = {"rows": rows, "cmsis_nn_mvei": mvei, "target_x_tflm": TARGET_X_TFLM_MVE}
    head = ["model", "MACs", "TFLM + CMSIS-NN (MVE)", "tinycc Helium", "instr/MAC", "tinycc scalar/DSP kernels",
            "Helium / TFLM+CMSIS-NN", f"<= {TARGET_X_TFLM_MVE}x", "Helium without the float input's quantization",
            "Helium = scalar (features)"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "--:|" * (len(head) - 1)]
    for r in rows:
        ratio = r["tinycc helium"] / r["tflm-cmsis-mve"]
        quant = sum(layer["instructions"] for layer in r.get("profile", []) if layer["kind"] == "quantize")
        r["tinycc helium without quantize"] = r["tinycc helium"] - quant
        lines.append(f"| {r['model']} | {r['macs'] / 1e6:.2f} M | {r['tflm-cmsis-mve'] / 1e6:.2f} M | "
                     f"{r['tinycc helium'] / 1e6:.2f} M | {r['tinycc helium'] / r['macs']:.2f} | "
                     f"{r['tinycc scalar'] / 1e6:.2f} M | {ratio:.2f}x | {'yes' if ratio <= TARGET_X_TFLM_MVE else 'no'}"
                     f" | {(r['tinycc helium'] - quant) / 1e6:.2f} M ({(r['tinycc helium'] - quant) / r['tflm-cmsis-mve']:.2f}x)"
                     f" | {'yes' if r['helium equals scalar'] else 'NO'} |")
    res.add("## Cortex-M55 (QEMU mps3-an547, -icount shift=0): instructions per inference of the int8 extractor\n\n"
            "TFLite Micro + CMSIS-NN built with `-mcpu=cortex-m55 -mthumb -mfloat-abi=hard -Os` (CMSIS-NN's "
            f"ARM_MATH_MVEI {'on' if mvei else 'OFF'} with these flags); tinycc: `make cortexm CPU=m55` (-Os, the "
            "layer functions -O2), Helium kernels where a board with a Cortex-M55 is given. SysTick counts QEMU's "
            "32 MHz processor clock (31.25 instructions per tick). QEMU instructions, not cycles. tinycc's count is "
            "one features() call from a float input (its quantization to int8 included, as in the Cortex-M4 table); "
            "TFLite Micro's is one Invoke of the whole int8 .tflite (int8 input, the classifier included).\n\n"
            + "\n".join(lines))
    code = ["| model | TFLM + CMSIS-NN code | tinycc Helium code | tinycc scalar code |", "|---|--:|--:|--:|"]
    code += [f"| {r['model']} | {r['tflm-cmsis-mve code']:,} B | {r['tinycc helium code']:,} B | "
             f"{r['tinycc scalar code']:,} B |" for r in rows]
    res.add("Code bytes (function symbols, net of a printf-only program):\n\n" + "\n".join(code))
    kinds = ["| model | op kind (kernel) | layers | MACs | instructions | instr/MAC | share |", "|---|---|--:|--:|--:|--:|--:|"]
    for r in rows:
        agg: dict[tuple[str, str], list[int]] = {}
        for layer in r.get("profile", []):
            a = agg.setdefault((layer["kind"], layer["kernel"]), [0, 0, 0])
            a[0], a[1], a[2] = a[0] + 1, a[1] + layer["macs"], a[2] + layer["instructions"]
        total = sum(a[2] for a in agg.values()) or 1
        for (kind, kern), (n, macs, ins) in sorted(agg.items(), key=lambda kv: -kv[1][2]):
            per = f"{ins / macs:.2f}" if macs else "—"
            kinds.append(f"| {r['model']} | {kind} ({kern}) | {n} | {macs:,} | {ins:,} | {per} | {ins / total:.0%} |")
    res.add("Where the Helium build's instructions go (per op kind, QEMU SysTick read between kernel calls):\n\n"
            + "\n".join(kinds))
    return res
