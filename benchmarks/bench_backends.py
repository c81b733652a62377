"""tinycc's C backend against TFLite Micro on the same int8 feature extractors.

Per model: arena bytes (tinycc's plan, greedy-by-size, the lower bound, TFLite Micro's recorded
arena), host inference time (generated C vs the tflite-micro Python interpreter's invoke, both one
process, median of repeated runs), Cortex-M4 section sizes of the generated C, compile time per pass,
and a memory map plot (arena over the schedule) of one model.
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


def _models(session):
    import sys

    sys.path.insert(0, str(ROOT))
    from tests.test_c_backend import _graph

    for name in ("digits", "resnet_add", "mobilenet_v2", "int8_extra", "mobilenet_v3", "cnas_like"):
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


INSTRUCTIONS_PER_TICK = 40  # mps2-an386 SysTick at 25 MHz; -icount shift=0 runs one instruction per ns


def _cortex_m(project: Path) -> dict:
    """.text/.data/.bss per CPU (m4, m7, m0plus) and, on the M4 board, instructions per call (QEMU icount)."""
    out: dict = {}
    for cpu in ("m4", "m7", "m0plus"):
        r = subprocess.run(["make", "-s", "-C", str(project), "cortexm", f"CPU={cpu}"], capture_output=True, text=True)
        elf = project / ("tinycc_demo.elf" if cpu == "m4" else f"tinycc_demo-{cpu}.elf")
        if r.returncode != 0:
            continue
        sizes = {}
        for line in subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True,
                                   text=True).stdout.splitlines():
            p = line.split()
            if len(p) >= 2 and p[0] in (".text", ".data", ".bss") and p[1].isdigit():
                sizes[p[0]] = int(p[1])
        out[cpu] = sizes
    if "m4" in out:
        q = subprocess.run(["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-semihosting-config",
                            "enable=on,target=native", "-icount", "shift=0", "-kernel",
                            str(project / "tinycc_demo.elf")], capture_output=True, text=True, timeout=900)
        for line in q.stdout.splitlines():
            p = line.split()
            if p[:1] == ["ticks"]:
                out["m4_instructions"] = {p[i]: int(p[i + 1]) * INSTRUCTIONS_PER_TICK for i in range(1, len(p) - 1, 2)}
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
    from tinycc.plugins.ondevice import build_deployment
    from tinycc.plugins.tflite_writer import write_tflite
    from tinycc.report import markdown_table
    from tinycc.session import Session

    session = Session(autoload=False)
    res = Result("backends")
    rows, data, cpu_rows = [], {}, []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, g, x, calib in _models(session):
        t0 = time.perf_counter()
        dep = build_deployment(g, {"calib_data": calib, "buffer": 8}, session, CBackend())
        t_build = time.perf_counter() - t0
        best, greedy = plan(dep.extractor, "best"), plan(dep.extractor, "greedy")
        no_inplace = plan(dep.extractor, "best", inplace=False)
        tfl = write_tflite(dep.extractor)
        m = measure_arena(tfl)
        with tempfile.TemporaryDirectory() as d:
            proj = Path(d)
            render_project(dep, {"test_vectors": (x[:32], np.zeros(32, int)), "test_count": 32}, proj)
            c_time, sizes = _c_timing(proj, x, args.repeats, args.runs)
        tflm_time = _tflm_timing(tfl, m.arena, x[:32], args.repeats, args.runs)
        data[name] = {"arena_best": best.arena, "arena_greedy": greedy.arena, "lower_bound": best.lower_bound,
                      "arena_no_inplace": no_inplace.arena, "lower_bound_no_inplace": no_inplace.lower_bound,
                      "tflm_recorded": m.recorded, "tflm_head": m.head, "tflm_tail": m.tail, "c_us": c_time * 1e6,
                      "tflm_us": tflm_time * 1e6, "cortex_m4": sizes, "deploy_seconds": t_build}
        m4, ins = sizes.get("m4", {}), sizes.get("m4_instructions", {})
        rows.append([name, best.lower_bound, best.arena, greedy.arena, no_inplace.arena, m.recorded, m.head,
                     f"{c_time * 1e6:.1f}", f"{tflm_time * 1e6:.1f}", m4.get(".text", "-"), m4.get(".data", "-"),
                     m4.get(".bss", "-"), f"{ins['features']:,}" if "features" in ins else "-"])
        cpu_rows += [[name, cpu, v.get(".text", "-"), v.get(".data", "-"), v.get(".bss", "-")]
                     for cpu, v in sizes.items() if cpu in ("m4", "m7", "m0plus")]
        if name == "mobilenet_v2":
            _memory_map(best, dep.extractor, out / "memory_map_mobilenet_v2.png")
            res.plots.append("memory_map_mobilenet_v2.png")
    res.add("Same int8 feature extractors (cut at the classifier). Arena in bytes (in-place element-wise ops "
            "on; `without in-place` is the best plan with them off); TFLite Micro's total "
            "includes its own bookkeeping (tail), its activation planning is the head part. Time per "
            "inference on the host: generated C (-O2) vs the tflite-micro Python interpreter's "
            "set_input+invoke (reference kernels). Cortex-M4 sizes: the whole demo program (-Os, "
            "newlib, embedded test vectors), M4 build.")
    res.add(markdown_table(["model", "lower bound", "tinycc arena", "greedy", "without in-place", "TFLM total", "TFLM head",
                            "C µs", "TFLM µs", ".text", ".data", ".bss", "M4 instructions"], rows))
    res.add("Per Cortex-M CPU (whole demo program, -Os): M4 and M7 with hardware float (M7 double precision), "
            "M0+ ARMv6-M with soft float. `M4 instructions` is one feature-extractor call on the first test "
            "vector, counted under `qemu-system-arm -icount shift=0` with SysTick (40 instructions per tick, so "
            "within 40); not cycles: QEMU does not model pipelines or wait states.")
    res.add(markdown_table(["model", "CPU", ".text", ".data", ".bss"], cpu_rows))
    behind = [n for n, v in data.items() if v["arena_best"] > v["tflm_head"]]
    slower = [n for n, v in data.items() if v["c_us"] > v["tflm_us"]]
    res.add("Where tinycc is behind: arena — " + (", ".join(behind) if behind else "none of these models") +
            "; host speed — " + (", ".join(slower) if slower else "none") + " (tinycc's C kernels are plain "
            "loops without im2col or SIMD; TFLite Micro's reference kernels, even called from Python with its "
            "per-call overhead, are faster there). Speed-ups of the C kernels are open work.")
    res.data = {"models": data}
    return res
