"""int16 (16x8) models on the Cortex-M4: tinycc's generated int16 kernels (``--kernels tinycc``: kernels/conv16.py)
and its portable runtime kernels (``--kernels generic``) against TensorFlow Lite Micro with CMSIS-NN's s16 kernels
(its -Os build and TFLite Micro's Makefile levels: kernels and CMSIS-NN -O2) and with its reference kernels, under
QEMU mps2-an386 ``-icount``. Per model: instructions per inference side by side, per op kind (TFLite's operator
names; tinycc: SysTick read between the kernel calls of the inference-only project's ``run_model``, compiled
-Os as the zoo measures it; TFLite Micro: a MicroProfilerInterface around each operator's Invoke), and code bytes
(function symbols net of a printf-only program). The models are the zoo's converter files (benchmarks/zoo_models.py,
cached in $TINYCC_CACHE/zoo or ~/.cache/tinycc/zoo) and, since CMSIS-NN's int16 FULLY_CONNECTED refuses per-channel
weights (TFLite Micro stops in Prepare), their variants with per-tensor dense layers (`dense per tensor`, the
converter's experimental switch): TFLite Micro runs those, and tinycc is measured on both."""
from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from . import kernels_build as kb
from .bench_kernels import SHARED
from .common import Result

MODELS = ("ds_cnn_kws_16x8", "har_cnn1d_16x8")
TFLM_VARIANTS = ("cmsis", "cmsis-O2", "ref")
# tinycc's op kinds under TFLite's operator names (the kinds these models have; others: upper case)
TFLITE_NAMES = {"conv2d": "CONV_2D", "depthwise_conv2d": "DEPTHWISE_CONV_2D", "dense": "FULLY_CONNECTED",
                "global_avg_pool": "MEAN", "avg_pool2d": "AVERAGE_POOL_2D", "max_pool2d": "MAX_POOL_2D",
                "global_max_pool": "REDUCE_MAX", "softmax": "SOFTMAX", "quantize": "QUANTIZE", "add": "ADD"}

PROF_MAIN = r"""#include <stdio.h>
#include <stdint.h>
#include "model.h"
#define PROF_CSR (*(volatile uint32_t *)0xE000E010u)
#define PROF_RVR (*(volatile uint32_t *)0xE000E014u)
#define PROF_CVR (*(volatile uint32_t *)0xE000E018u)
extern uint32_t tcc_prof_t[];
static float x[%(NAME)s_INPUT_SIZE], y[%(NAME)s_OUTPUT_SIZE];
int main(void) {
    int i;
    uint32_t t0, t1;
    for (i = 0; i < %(NAME)s_INPUT_SIZE; ++i) x[i] = (float)((i * 37) %% 64) / 64.0f - 0.5f;
    %(name)s_init();
    PROF_CSR = 0u;
    PROF_RVR = 0xFFFFFFu;
    PROF_CVR = 0u;
    PROF_CSR = 5u; /* processor clock, no interrupt */
    t0 = PROF_CVR;
    %(name)s_invoke_f32(x, y);
    t1 = PROF_CVR;
    PROF_CSR = 0u;
    printf("total %%lu\nprof", (unsigned long)((t0 - t1) & 0xFFFFFFu));
    for (i = 0; i < %(n)d; ++i) printf(" %%lu", (unsigned long)((tcc_prof_t[i] - tcc_prof_t[i + 1]) & 0xFFFFFFu));
    printf("\ndone\n");
    return 0;
}
"""

TFLM_PROFILER = r"""
#include "tensorflow/lite/micro/micro_profiler_interface.h"
#define PROF_CVR (*(volatile uint32_t *)0xE000E018u)
class TickProfiler : public tflite::MicroProfilerInterface {
 public:
  uint32_t BeginEvent(const char *tag) override { tags_[n_] = tag; t_[n_] = PROF_CVR; return n_++; }
  void EndEvent(uint32_t h) override { t_[h] = (t_[h] - PROF_CVR) & 0xFFFFFFu; }
  void Print() { for (uint32_t i = 0; i < n_; ++i) printf("op %s %lu\n", tags_[i], (unsigned long)t_[i]); }
  void Reset() { n_ = 0; }
 private:
  const char *tags_[256];
  uint32_t t_[256];
  uint32_t n_ = 0;
};
static TickProfiler g_prof;
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vendor", default=str(SHARED / "vendor"), help="folder with the TFLM/CMSIS-NN snapshots")
    p.add_argument("--cache", help="build cache (default $TINYCC_CACHE or ~/.cache/tinycc)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--tflm", nargs="+", default=list(TFLM_VARIANTS), choices=list(TFLM_VARIANTS),
                   help="TFLite Micro builds measured (cmsis: CMSIS-NN -Os; cmsis-O2: TFLite Micro's Makefile levels)")


def model_file(name: str, cache: Path, per_tensor_dense: bool = False) -> Path:
    """The zoo's 16x8 converter file (``per_tensor_dense``: its variant with per-tensor dense layers, which
    TFLite Micro + CMSIS-NN runs), converted into the cache in a child process when missing."""
    import subprocess
    import sys

    folder = cache / "zoo"
    path = folder / (f"{name}_int16_dense_pt.tflite" if per_tensor_dense else f"{name}_int16.tflite")
    if not path.is_file() or (per_tensor_dense and not (folder / f"{name}.h5").is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "benchmarks.zoo_models", name, str(folder)], check=True,
                       cwd=Path(__file__).resolve().parents[1], timeout=1800)
    if not path.is_file():
        subprocess.run([sys.executable, "-m", "benchmarks.zoo_models", name, str(folder), "--dense-per-tensor"],
                       check=True, cwd=Path(__file__).resolve().parents[1], timeout=1800)
    return path


def _deployment(session: Any, model: Path, kernels: str, out: Path) -> Any:
    from tinycc.api import compile_model, make_config

    config = make_config(session, inference_only=True, force=True, kernels=kernels)
    return compile_model(str(model), "c", str(out), config, session).deployment


def _call_kinds(dep: Any) -> list[str]:
    """TFLite's operator name of each kernel call of run_model, in order."""
    from tinycc.backends.c.emitter import _Builder

    m = _Builder(dep).build()
    ops = dep.extractor.ops
    kinds = [ops[int(c.what.split(",")[0].split()[1])].kind.value for c in m.calls]  # "layer N, kind ..."
    return [TFLITE_NAMES.get(k, k.upper()) for k in kinds]


def profile_tinycc(dep: Any, proj: Path, work: Path) -> dict[str, Any]:
    """Instructions per op kind and in all of one ``invoke_f32`` (QEMU, -Os), code bytes of the program."""
    from tinycc.backends.c import cortexm

    text, n = kb.profile_source((proj / "model.c").read_text(), "static void run_model(")
    (proj / "model_prof.c").write_text(text)
    (proj / "bench_prof.c").write_text(PROF_MAIN % {"name": dep.name, "NAME": dep.name.upper(), "n": n})
    elf = proj / "prof-m4.elf"
    board = cortexm.DEFAULT_BOARD["m4"]
    kb._sh(f"arm-none-eabi-gcc {kb.CPU_FLAGS['m4']} -Os -std=c99 -Wall -Wextra -Werror {kb.SECTIONS} -I. -Iruntime "
           f"{kb.LINK} -T {cortexm.link_script(board)} -o {elf} cortexm/startup.c bench_prof.c model_prof.c "
           "runtime/tinycc_kernels.c runtime/tinycc_learn.c -lm", cwd=proj)
    out = cortexm.run_qemu(elf, board, icount=True, timeout=900)
    per_tick = 1e9 / cortexm.BOARD_CLOCK_HZ[board]
    ticks = next(line.split()[1:] for line in out.splitlines() if line.startswith("prof"))
    total = next(int(line.split()[1]) for line in out.splitlines() if line.startswith("total"))
    kinds = _call_kinds(dep)
    if len(kinds) != len(ticks):
        raise RuntimeError(f"profile: {len(ticks)} calls in model.c, {len(kinds)} from the emitter")
    ops: dict[str, int] = defaultdict(int)
    for k, t in zip(kinds, ticks):
        ops[k] += round(int(t) * per_tick)
    return {"total": round(total * per_tick), "ops": dict(ops),
            "code": kb.code_bytes(elf) - kb.printf_baseline(proj, work, "m4")}


def profile_tflm(tflite: bytes, lib: Path, project: Path, cxx: Path | None, work: Path) -> dict[str, Any]:
    """One Invoke of ``tflite`` with TFLite Micro library ``lib`` on the Cortex-M4: instructions per operator
    kind (its profiler's events) and in all, code bytes."""
    from tinycc.backends.c import cortexm
    from tinycc.backends.tflm import RESOLVER
    from tinycc.tflite_writer import operator_names

    ops = [RESOLVER[n] for n in operator_names(tflite) if n in RESOLVER]
    w = kb._tflm_sources(work, tflite, ops, 1)
    runner = (w / "runner.cc").read_text()
    runner = runner.replace('#include "model_data.h"\n', '#include "model_data.h"\n' + TFLM_PROFILER, 1)
    runner = runner.replace("g_arena, sizeof(g_arena));", "g_arena, sizeof(g_arena), nullptr, &g_prof);", 1)
    runner = runner.replace('    printf("done\\n");', "    g_prof.Print();\n    printf(\"done\\n\");", 1)
    runner = runner.replace("unsigned long ref = bench_ticks(run, 1u), cpu = bench_ticks(run, 5u);",
                            "unsigned long ref = bench_ticks(run, 1u);\n    g_prof.Reset();\n"
                            "    unsigned long cpu = bench_ticks(run, 5u);", 1)
    if "&g_prof" not in runner or "g_prof.Reset()" not in runner:
        raise RuntimeError("TFLite Micro runner: the profiler hooks did not apply")
    (w / "runner.cc").write_text(runner)
    m = kb.tflm_m4(w, tflite, ops, lib, project, cxx, write_sources=False)
    board = cortexm.DEFAULT_BOARD["m4"]
    per_tick = 1e9 / cortexm.BOARD_CLOCK_HZ[board]
    per_op: dict[str, int] = defaultdict(int)
    for line in m.stdout.splitlines():
        if line.startswith("op "):
            _, tag, ticks = line.split()
            per_op[tag] += round(int(ticks) * per_tick)
    return {"total": m.instructions, "ops": dict(per_op), "code": m.code - kb.printf_baseline(project, work, "m4")}


def run(args: argparse.Namespace) -> Result:
    from tinycc.backends.c import cmsis_nn
    from tinycc.session import Session

    cache = Path(args.cache) if args.cache else cmsis_nn.cache_root()
    vendor = Path(args.vendor)
    session = Session(autoload=True)
    work = Path(tempfile.mkdtemp(prefix="bench-kernels16-"))
    cxx = kb.arm_cxx_root(cache, None)
    rows = []
    for name in args.models:
        zoo, pt = model_file(name, cache), model_file(name, cache, per_tensor_dense=True)
        row: dict[str, Any] = {"model": name}
        proj = None
        for kernels, label, model in (("generic", "tinycc portable", zoo), ("tinycc", "tinycc", zoo),
                                      ("tinycc", "tinycc (dense per tensor)", pt)):
            proj = work / f"{name}-{kernels}-{model.stem}"
            row[label] = profile_tinycc(_deployment(session, model, kernels, proj), proj, work)
            print(name, label, row[label], flush=True)
        for v in args.tflm:
            lib = kb.tflm_library_makefile_levels(vendor, cache, cxx) if v == "cmsis-O2" else \
                kb.tflm_library(vendor, cache, "m4", v, cxx)
            label = f"TFLM {v} (dense per tensor)"
            try:
                row[label] = profile_tflm(pt.read_bytes(), lib, proj, cxx, work / f"tflm-{name}-{v}")
            except RuntimeError as e:  # e.g. a kernel that refuses the file in Prepare: the table says why
                why = [ln for ln in str(e).splitlines() if "was not true" in ln or "failed to prepare" in ln]
                row[label] = {"error": " ".join(why) or str(e).splitlines()[0][:200]}
            print(name, label, row[label], flush=True)
        rows.append(row)
    return _result(rows, Path(args.out))


def _result(rows: list[dict[str, Any]], out: Path) -> Result:
    res = Result("kernels16")
    res.data = {"rows": rows}
    res.add(__doc__.replace("\n", " "))
    for row in rows:
        cols = [k for k in row if k != "model" and "error" not in row[k]]
        kinds = sorted({k for c in cols for k in row[c]["ops"]}, key=lambda k: -row[cols[0]]["ops"].get(k, 0))
        lines = [f"**{row['model']}**: Cortex-M4 instructions (QEMU -icount)", "",
                 "| op kind | " + " | ".join(cols) + " |", "|---|" + "--:|" * len(cols)]
        for k in kinds:
            lines.append(f"| {k} | " + " | ".join(f"{row[c]['ops'].get(k, 0):,}" for c in cols) + " |")
        lines.append("| one inference, all | " + " | ".join(f"{row[c]['total']:,}" for c in cols) + " |")
        base = next((b for b in cols if b.startswith("TFLM cmsis-O2")), None)
        if base:
            lines.append(f"| / {base} | " +
                         " | ".join(f"{row[c]['total'] / row[base]['total']:.2f}x" for c in cols) + " |")
        lines.append("| code bytes | " + " | ".join(f"{row[c]['code']:,}" for c in cols) + " |")
        lines += [f"\n{c}: cannot run the file: `{row[c]['error']}`" for c in row if "error" in row[c]]
        res.add("\n".join(lines))
    return res
