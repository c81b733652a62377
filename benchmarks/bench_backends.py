"""tinycc's C backend against TFLite Micro on the same int8 feature extractors.

Per model: arena bytes (tinycc's plan with and without in-place element-wise ops, each with its lower
bound, greedy-by-size, TFLite Micro's recorded arena), host inference time (generated C vs the
tflite-micro Python interpreter's invoke, both one process, median of repeated runs), Cortex-M0+/M4/M7
section sizes of the generated C and QEMU instruction counts per call, and a memory map plot (arena
over the schedule) of one model.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import Result

ROOT = Path(__file__).resolve().parents[1]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeats", type=int, default=200, help="inferences per timing run")
    p.add_argument("--runs", type=int, default=5, help="timing runs (median reported)")
    p.add_argument("--models", nargs="+", help="only these models (default: all)")


def _models(session, only: list[str] | None = None):
    import sys

    sys.path.insert(0, str(ROOT))
    from tests.test_c_backend import _graph

    for name in ("digits", "resnet_add", "mobilenet_v2", "int8_extra", "mobilenet_v3", "cnas_like"):
        if only and name not in only:
            continue
        g, x, y, calib = _graph(session, name)
        yield name, g, x, calib


def _c_timing(project: Path, x: np.ndarray, repeats: int, runs: int) -> tuple[float, dict[str, int]]:
    name = next(project.glob("model.h")).read_text().split("void ")[1].split("_init")[0]
    bench = project / "bench.c"
    bench.write_text(f"""#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <time.h>
#include "model.h"
#include "test_vectors.h"
int main(void) {{
    static int8_t f[{name.upper()}_FEATURES];
    struct timespec a, b;
    long i;
    {name}_init();
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (i = 0; i < {repeats}; ++i) {name}_features(tcc_test_x[i % TCC_TEST_N], f);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.9f\\n", ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9) / {repeats});
    return f[0] == 127 ? 1 : 0;
}}
""")
    exe = project / "bench"
    subprocess.run(["gcc", "-std=c99", "-O2", "-I", str(project), "-I", str(project / "runtime"), "-o", str(exe),
                    str(bench), str(project / "model.c"), str(project / "runtime" / "tinycc_kernels.c"),
                    str(project / "runtime" / "tinycc_learn.c"), "-lm"], check=True)
    times = [float(subprocess.run([str(exe)], capture_output=True, text=True).stdout) for _ in range(runs)]
    return statistics.median(times), _cortex_m(project)


def _cortex_m(project: Path) -> dict:
    """Per CPU (m4, m7, m0plus): .text/.data/.bss of the demo program (-Os) and instructions per call (one
    feature-extractor call, one predict, one learn step) counted in QEMU under -icount (see
    tinycc.backends.c.cortexm): M4 on mps2-an386, M7 on mps2-an500, the M0+ image on mps2-an385."""
    from tinycc.backends.c import cortexm

    out: dict = {}
    for cpu in cortexm.CPUS:
        try:
            elf = cortexm.build(project, cpu)
        except RuntimeError as e:
            out[cpu] = {"error": str(e)[-500:]}
            continue
        sizes = cortexm.section_sizes(elf)
        out[cpu] = {k: sizes.get(k, 0) for k in (".text", ".data", ".bss")}
        board = cortexm.DEFAULT_BOARD[cpu]
        try:
            out[cpu]["instructions"] = cortexm.instructions(cortexm.run_qemu(elf, board, timeout=900), board)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            out[cpu]["instructions_error"] = str(e)[-500:]
    return out


def _tflm_timing(data: bytes, arena: int, x: np.ndarray, repeats: int, runs: int) -> float:
    from tflite_micro.python.tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(data, arena_size=arena)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for i in range(repeats):
            it.set_input(x[i % len(x)][None], 0)
            it.invoke()
        times.append((time.perf_counter() - t0) / repeats)
    return statistics.median(times)


def _memory_map(plan, graph, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for b in plan.buffers:
        ax.add_patch(plt.Rectangle((b.start - 0.4, b.offset), b.end - b.start + 0.8, b.size, alpha=0.6,
                                   edgecolor="black"))
        if b.size > plan.arena * 0.08:
            ax.text(b.start, b.offset + b.size / 2, b.name[:18], fontsize=7, va="center")
    ax.axhline(plan.arena, color="red", lw=1, label=f"arena {plan.arena} B")
    ax.axhline(plan.lower_bound, color="green", lw=1, ls="--", label=f"lower bound {plan.lower_bound} B")
    ax.set_xlim(-1, len(graph.ops) + 1)
    ax.set_ylim(0, max(plan.arena, plan.greedy) * 1.1)
    ax.set_xlabel("schedule step (op index)")
    ax.set_ylabel("arena offset (bytes)")
    ax.set_title(f"memory map: {graph.name}")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> Result:
    from tinycc.backends.c import CBackend, render_project
    from tinycc.backends.tflm.measure import measure_arena
    from tinycc.memory import plan
    from tinycc.config import TestVectors, make_config
    from tinycc.deploy import build_deployment
    from tinycc.tflite_writer import write_tflite
    from tinycc.report import markdown_table
    from tinycc.session import Session

    session = Session(autoload=False)
    res = Result("backends")
    rows, data, cpu_rows = [], {}, []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, g, x, calib in _models(session, getattr(args, "models", None)):
        t0 = time.perf_counter()
        dep = build_deployment(g, make_config(session, buffer=8), session, CBackend(), calib=calib)
        t_build = time.perf_counter() - t0
        best, greedy = plan(dep.extractor, "best"), plan(dep.extractor, "greedy")
        no_inplace = plan(dep.extractor, "best", inplace=False)
        tfl = write_tflite(dep.extractor)
        m = measure_arena(tfl)
        with tempfile.TemporaryDirectory() as d:
            proj = Path(d)
            render_project(dep, proj, TestVectors(x[:32], np.zeros(32, int), 32))
            c_time, sizes = _c_timing(proj, x, args.repeats, args.runs)
        tflm_time = _tflm_timing(tfl, m.arena, x[:32], args.repeats, args.runs)
        data[name] = {"arena_best": best.arena, "arena_greedy": greedy.arena, "lower_bound": best.lower_bound,
                      "arena_no_inplace": no_inplace.arena, "lower_bound_no_inplace": no_inplace.lower_bound,
                      "inplace_ops": len(best.inplace),
                      "tflm_recorded": m.recorded, "tflm_head": m.head, "tflm_tail": m.tail, "c_us": c_time * 1e6,
                      "tflm_us": tflm_time * 1e6, "cortex_m": sizes, "deploy_seconds": t_build}
        m4 = sizes.get("m4", {})
        rows.append([name, best.lower_bound, best.arena, no_inplace.lower_bound, no_inplace.arena, len(best.inplace),
                     greedy.arena, m.recorded, m.head, f"{c_time * 1e6:.1f}", f"{tflm_time * 1e6:.1f}",
                     m4.get(".text", "-"), m4.get(".data", "-"), m4.get(".bss", "-")])
        for cpu, v in sizes.items():
            ins = v.get("instructions", {})
            cpu_rows.append([name, cpu, v.get(".text", "-"), v.get(".data", "-"), v.get(".bss", "-"),
                             *(f"{ins[k]:,}" if k in ins else "-" for k in ("features", "predict", "learn"))])
        if name == "mobilenet_v2":
            _memory_map(best, dep.extractor, out / "memory_map_mobilenet_v2.png")
            res.plots.append("memory_map_mobilenet_v2.png")
    res.add("Same int8 feature extractors (cut at the classifier). Arena in bytes: tinycc's best plan with "
            "in-place element-wise ops (an op writes its output over an input it reads last) and without "
            "(`--no-inplace`), each next to its lower bound (max simultaneously live bytes, aliases merged); "
            "greedy-by-size with in-place. TFLite Micro's total includes its own bookkeeping (tail), its "
            "activation planning is the head part. Time per inference on the host: generated C (-O2) vs the "
            "tflite-micro Python interpreter's set_input+invoke (reference kernels). Cortex-M4 sizes: the whole "
            "demo program (-Os, newlib, embedded test vectors).")
    res.add(markdown_table(["model", "lower bound", "tinycc arena", "lower bound w/o in-place",
                            "arena w/o in-place", "in-place ops", "greedy", "TFLM total", "TFLM head", "C µs",
                            "TFLM µs", ".text", ".data", ".bss"], rows))
    res.add("Per Cortex-M CPU (whole demo program, arm-none-eabi-gcc -Os): M4 (fpv4-sp-d16) and M7 (fpv5-d16) "
            "with hardware float, M0+ (ARMv6-M) with soft float. Instructions per call on the first test vector "
            "(features: the int8 extractor; predict: features + classifier; learn: one on-device training step "
            "incl. the replay buffer pass), counted under `qemu-system-arm -icount shift=0` with SysTick (1 ns "
            "per instruction, 25 MHz: 40 instructions per tick, so exact to 40). Instructions, not cycles: QEMU "
            "models no pipeline, caches or wait states. M4 on mps2-an386, M7 on mps2-an500, the M0+ image on "
            "the Cortex-M3 board mps2-an385 (the same ARMv6-M instruction stream).")
    res.add(markdown_table(["model", "CPU", ".text", ".data", ".bss", "instr. features", "instr. predict",
                            "instr. learn"], cpu_rows))
    behind = [n for n, v in data.items() if v["arena_best"] > v["tflm_head"]]
    slower = [n for n, v in data.items() if v["c_us"] > v["tflm_us"]]
    res.add("Where tinycc is behind: arena — " + (", ".join(behind) if behind else "none of these models") +
            "; host speed — " + (", ".join(slower) if slower else "none") + " (tinycc's C kernels are plain "
            "loops without im2col or SIMD; TFLite Micro's reference kernels, even called from Python with its "
            "per-call overhead, are faster there). Speed-ups of the C kernels are open work.")
    res.data = {"models": data}
    return res
