"""Build helpers for ``python -m benchmarks kernels``: TFLite Micro libraries from the vendored snapshot, the
CMSIS-NN library per core, and the timing programs (tinycc's ``features()`` and a TFLite Micro runner) for
Cortex-M under QEMU and for the host.

Timing on Cortex-M is wrap-safe: each measured call runs twice, once with SysTick on the 1 MHz reference clock
(CSR bit 2 = 0: 24 bits last 16.7 s, 1,000 instructions per tick under ``-icount shift=0``) and once on the
processor clock (25 MHz on the MPS2 boards: 40 instructions per tick, wraps after 671 M instructions). The
processor-clock count is used when the reference count says the call is shorter than 600 M instructions.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tinycc.backends.c import cmsis_nn, cortexm
from tinycc.targets import BUILTIN_TARGETS, family

CPU_FLAGS = {t.name: t.cflags for t in family(BUILTIN_TARGETS, "cortexm")}  # m4, m7, m0plus
REF_NS = 1000  # ns per tick of the MPS2 reference clock (1 MHz)
# QEMU's mps3-an547 clocks SysTick's reference input at the processor clock (32 MHz, measured: both counts equal),
# so there both counts wrap after 2^24 ticks (524 M instructions): calls must stay shorter (every one measured is)
REF_NS_BOARD = {"mps3-an547": 31.25}
SECTIONS = "-ffunction-sections -fdata-sections"
LINK = "--specs=rdimon.specs -nostartfiles -Wl,--gc-sections"

TIMER_C = r"""
#include <stdint.h>
#define BENCH_CSR (*(volatile uint32_t *)0xE000E010u)
#define BENCH_RVR (*(volatile uint32_t *)0xE000E014u)
#define BENCH_CVR (*(volatile uint32_t *)0xE000E018u)
typedef void (*bench_fn)(void);
/* ticks of one call of fn: csr 1 = reference clock, 5 = processor clock (no interrupt) */
static uint32_t bench_ticks(bench_fn fn, uint32_t csr) {
    uint32_t t0, t1;
    BENCH_CSR = 0u;
    BENCH_RVR = 0xFFFFFFu;
    BENCH_CVR = 0u;
    BENCH_CSR = csr;
    t0 = BENCH_CVR;
    fn();
    t1 = BENCH_CVR;
    BENCH_CSR = 0u;
    return (t0 - t1) & 0xFFFFFFu;
}
"""

TINYCC_MAIN = r"""#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include "model.h"
#include "test_vectors.h"
%(timer)s
#include "tinycc_kernels.h"
static int8_t feats[%(NAME)s_FEATURES], feats8[%(NAME)s_FEATURES];
static int8_t xq[%(NAME)s_INPUT_SIZE];
static void run(void) { %(name)s_features(tcc_test_x[0], feats); }
static void run8(void) { %(name)s_features_s8(xq, feats8); }
int main(void) {
    int i;
    uint32_t ref, cpu, ref8, cpu8;
    %(name)s_init();
    ref = bench_ticks(run, 1u);
    cpu = bench_ticks(run, 5u);
    /* the int8 entry: the same input quantized beforehand, as TFLite Micro's int8 input tensor holds it */
    tcc_quantize_f32(tcc_test_x[0], %(NAME)s_INPUT_SIZE, %(name)s_input_scale, %(name)s_input_zero_point, xq);
    ref8 = bench_ticks(run8, 1u);
    cpu8 = bench_ticks(run8, 5u);
    printf("bench ref %%lu cpu %%lu ref8 %%lu cpu8 %%lu s8same %%d\n", (unsigned long)ref, (unsigned long)cpu,
           (unsigned long)ref8, (unsigned long)cpu8, memcmp(feats, feats8, sizeof feats) == 0);
    printf("features");
    for (i = 0; i < %(NAME)s_FEATURES; ++i) printf(" %%d", feats[i]);
    printf("\ndone\n");
    return 0;
}
"""

TFLM_MAIN = r"""#include <cstdio>
#include <cstdint>
#include <cstring>
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "model_data.h"
#ifdef __arm__
extern "C" {
%(timer)s
void __libc_init_array(void);
void *__dso_handle = 0; /* normally from crtbegin.o, which -nostartfiles leaves out */
}
#else
#include <time.h>
#endif
alignas(16) static uint8_t g_arena[%(arena)d];
static tflite::MicroInterpreter *g_interp;
static void run(void) { g_interp->Invoke(); }
int main() {
#ifdef __arm__
    __libc_init_array();
#endif
    static tflite::MicroMutableOpResolver<%(n_ops)d> resolver;
%(adds)s
    static tflite::MicroInterpreter interp(tflite::GetModel(g_model_data), resolver, g_arena, sizeof(g_arena));
    g_interp = &interp;
    if (interp.AllocateTensors() != kTfLiteOk) { printf("allocate failed\n"); return 1; }
    TfLiteTensor *in = interp.input(0);
    for (size_t i = 0; i < in->bytes; ++i) in->data.raw[i] = (char)((i * 37u + 11u) & 0x3f);
    if (in->type == kTfLiteFloat32) for (size_t i = 0; i < in->bytes / 4; ++i) in->data.f[i] = (float)((i * 37u) %% 64u) / 64.0f;
#ifdef __arm__
    unsigned long ref = bench_ticks(run, 1u), cpu = bench_ticks(run, 5u);
    printf("bench ref %%lu cpu %%lu arena %%lu\n", ref, cpu, (unsigned long)interp.arena_used_bytes());
#else
    struct timespec a, b;
    int reps = %(repeats)d;
    run();
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int r = 0; r < reps; ++r) run();
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("host %%.9f arena %%lu\n", ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9) / reps,
           (unsigned long)interp.arena_used_bytes());
#endif
    printf("done\n");
    return 0;
}
"""

PRINTF_MAIN = r"""#include <stdio.h>
int main(void) { printf("bench %lu\n", 1ul); printf("done\n"); return 0; }
"""


def _sh(cmd: str, cwd: Path | None = None, timeout: float = 1800, env: dict[str, str] | None = None) -> str:
    r = subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[:200]}...\n{r.stderr[-3000:]}")
    return r.stdout


# ---- libraries ----

ARM_CXX_MULTILIB = "thumb/v7e-m+fp/hard"  # Cortex-M4F, hard float


def arm_cxx_root(cache: Path, given: str | None = None) -> Path | None:
    """Where the C++ standard headers for arm-none-eabi-g++ come from when the toolchain has none (Debian's
    gcc-arm-none-eabi without libstdc++-arm-none-eabi-dev/-newlib): a folder holding those two packages extracted
    (``apt-get download`` + ``dpkg -x DEB ROOT``), default ``cache/arm-libstdcxx/root``. None: not needed."""
    probe = subprocess.run(["arm-none-eabi-g++", "-x", "c++", "-E", "-", "-o", os.devnull],
                           input="#include <cstddef>\n", capture_output=True, text=True)
    if probe.returncode == 0:
        return None
    root = Path(given) if given else cache / "arm-libstdcxx" / "root"
    if not (root / "usr" / "include" / "newlib" / "c++").is_dir():
        raise RuntimeError("arm-none-eabi-g++ has no C++ standard headers (TFLite Micro needs them): install "
                           "libstdc++-arm-none-eabi-dev and libstdc++-arm-none-eabi-newlib, or extract them "
                           f"(apt-get download; dpkg -x) into {root} / pass --arm-cxx")
    return root


def arm_cxx_flags(root: Path | None) -> tuple[str, str]:
    """(compile flags, link flags) that add an extracted libstdc++ for arm-none-eabi (empty when not needed)."""
    if root is None:
        return "", ""
    inc = next((root / "usr" / "include" / "newlib" / "c++").iterdir())
    return (f"-isystem {inc} -isystem {inc / 'arm-none-eabi' / ARM_CXX_MULTILIB}",
            f"-L{root / 'usr' / 'lib' / 'arm-none-eabi' / 'newlib' / ARM_CXX_MULTILIB}")


def _cxx_wrapper(root: Path, out: Path) -> dict[str, str]:
    """Environment whose PATH starts with an arm-none-eabi-g++ that adds the extracted headers (build_tflm.sh
    calls arm-none-eabi-g++ by name)."""
    bindir = out / "arm-cxx-bin"
    bindir.mkdir(exist_ok=True)
    real = subprocess.run(["which", "arm-none-eabi-g++"], capture_output=True, text=True).stdout.strip()
    wrapper = bindir / "arm-none-eabi-g++"
    wrapper.write_text(f"#!/bin/sh\nexec {real} {arm_cxx_flags(root)[0]} \"$@\"\n")
    wrapper.chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}

def tflm_library(vendor: Path, cache: Path, kind: str, variant: str = "ref", cxx_root: Path | None = None) -> Path:
    """``build_tflm.sh OUTDIR host`` or ``OUTDIR m4 ref|cmsis`` into ``cache/tflm/<snapshot key>`` (file lock, a
    ``.done`` marker per library); returns the library."""
    h = hashlib.sha256()
    for pattern in ("tflite-micro-*.tar.xz", "cmsis-nn-*.tar.xz", "build_tflm.sh"):
        path = sorted(vendor.glob(pattern))[0]
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    out = cache / "tflm" / h.hexdigest()[:16]
    out.mkdir(parents=True, exist_ok=True)
    tag = "host" if kind == "host" else f"{kind}-{variant}"
    lib = out / f"libtflm-{tag}.a"
    if Path(f"{lib}.done").exists() and lib.is_file():  # built: no need to wait for another build's lock
        return lib
    with open(out.parent / f"{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = Path(f"{lib}.done")
        if not (done.exists() and lib.is_file()):
            t0 = time.perf_counter()
            args = [kind] if kind == "host" else [kind, variant]
            env = _cxx_wrapper(cxx_root, out) if cxx_root is not None and kind != "host" else None
            _sh(f"bash {vendor / 'build_tflm.sh'} {out} {' '.join(args)}", timeout=7200, env=env)
            failed = (out / f"failed-{tag}.txt").read_text().split()
            if failed:
                raise RuntimeError(f"TFLite Micro {tag}: {len(failed)} sources failed ({failed[:2]})")
            done.write_text(f"{time.perf_counter() - t0:.1f} s\n")
    return lib


KERNEL_DIRS = ("tensorflow/lite/micro/kernels/", "cmsis-nn/")  # TFLM's KERNEL_ and THIRD_PARTY_KERNEL_ sources


def tflm_library_makefile_levels(vendor: Path, cache: Path, cxx_root: Path | None = None) -> Path:
    """TFLite Micro + CMSIS-NN for Cortex-M4 at the optimization levels of TFLite Micro's own Makefile
    (``CORE_OPTIMIZATION_LEVEL := -Os``, ``KERNEL_OPTIMIZATION_LEVEL := -O2``,
    ``THIRD_PARTY_KERNEL_OPTIMIZATION_LEVEL := -O2``): the -Os build's object files for everything else, its
    kernels (``tensorflow/lite/micro/kernels/``) and CMSIS-NN recompiled at -O2 with the same flags as
    ``build_tflm.sh``. Returns ``libtflm-m4-cmsis-O2.a`` beside the -Os library."""
    base = tflm_library(vendor, cache, "m4", "cmsis", cxx_root)
    out = base.parent
    lib = out / "libtflm-m4-cmsis-O2.a"
    done = Path(f"{lib}.done")
    if done.exists() and lib.is_file():
        return lib
    with open(out.parent / f"{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists() and lib.is_file():
            return lib
        t0 = time.perf_counter()
        objs = out / "obj-m4-cmsis-O2"
        objs.mkdir(exist_ok=True)
        arch = "-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16"
        extra = ("-ffunction-sections -fdata-sections -fno-threadsafe-statics -DCMSIS_NN -DARM_NN_ENABLE_F16=0 "
                 "-DARM_NN_ENABLE_F32=0")
        t = "tflite-micro"
        inc = f"-I{t} -I{t}/fb/include -I{t}/gemmlowp -I{t}/ruyinc -Icmsis-nn -Icmsis-nn/Include"
        cxx_inc = arm_cxx_flags(cxx_root)[0]
        jobs = []
        for src in (out / "srcs-m4-cmsis.txt").read_text().split():
            name = src.replace("/", "_") + ".o"
            obj = objs / name
            if obj.exists():
                continue
            if not any(d in src for d in KERNEL_DIRS):
                os.link(out / "obj-m4-cmsis" / name, obj)  # core code: the -Os object as is
                continue
            if src.endswith(".c"):
                cmd = f"arm-none-eabi-gcc {arch} -std=c99 -O2 {extra} -w {inc} -c {src} -o {obj}.tmp"
            else:
                cmd = (f"arm-none-eabi-g++ {arch} -std=c++17 -O2 -DTF_LITE_STATIC_MEMORY -fno-exceptions -fno-rtti "
                       f"{extra} -w {cxx_inc} {inc} -c {src} -o {obj}.tmp")
            cmd += f" && mv {obj}.tmp {obj}"  # a killed build leaves no partial object behind
            jobs.append(subprocess.Popen(cmd, shell=True, cwd=out))
            if len(jobs) >= int(os.environ.get("JOBS", "2")):
                if jobs.pop(0).wait() != 0:
                    raise RuntimeError(f"TFLite Micro -O2 kernels: a compile failed in {objs}")
        if any(j.wait() != 0 for j in jobs):
            raise RuntimeError(f"TFLite Micro -O2 kernels: a compile failed in {objs}")
        lib.unlink(missing_ok=True)
        _sh(f"arm-none-eabi-ar rcs {lib} {objs}/*.o", cwd=out)
        done.write_text(f"{time.perf_counter() - t0:.1f} s\n")
    return lib


M55_ARCH = "-mcpu=cortex-m55 -mthumb -mfloat-abi=hard"  # __ARM_FEATURE_MVE=3: CMSIS-NN sets ARM_MATH_MVEI
# TFLite Micro kernel sources of the M55 library: the ops of the MLPerf Tiny models and what the core needs (the
# M4 library's other 90 kernels are left out: this build has no use for them and takes long on 2 cores)
M55_KERNELS = ("activations", "add", "conv", "depthwise_conv", "fully_connected", "pooling", "reshape", "softmax",
               "quantize", "dequantize", "kernel_util", "micro_tensor_utils", "decompress", "decode", "pad", "mean",
               "reduce", "logistic", "kernel_runner", "expand_dims", "squeeze", "concatenation", "mul", "sub")


def tflm_library_m55(vendor: Path, cache: Path, cxx_root: Path | None = None) -> Path:
    """TFLite Micro + CMSIS-NN for Cortex-M55 (Helium), -Os, the same sources and flags as the Cortex-M4 CMSIS-NN
    build (``build_tflm.sh`` has no M55 build: its extracted tree and source list are reused) with
    ``-mcpu=cortex-m55``, where CMSIS-NN's ``arm_nn_math_types.h`` turns on its MVE path (ARM_MATH_MVEI, checked by
    `cmsis_mve_check`). Returns ``libtflm-m55-cmsis.a`` beside the M4 libraries."""
    base = tflm_library(vendor, cache, "m4", "cmsis", cxx_root)
    out = base.parent
    lib = out / "libtflm-m55-cmsis.a"
    done = Path(f"{lib}.done")
    if done.exists() and lib.is_file():
        return lib
    with open(out.parent / f"{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists() and lib.is_file():
            return lib
        t0 = time.perf_counter()
        objs = out / "obj-m55-cmsis"
        objs.mkdir(exist_ok=True)
        extra = ("-ffunction-sections -fdata-sections -fno-threadsafe-statics -DCMSIS_NN -DARM_NN_ENABLE_F16=0 "
                 "-DARM_NN_ENABLE_F32=0")
        t = "tflite-micro"
        inc = f"-I{t} -I{t}/fb/include -I{t}/gemmlowp -I{t}/ruyinc -Icmsis-nn -Icmsis-nn/Include"
        cxx_inc = arm_cxx_flags(cxx_root)[0]
        jobs = []
        for src in (out / "srcs-m4-cmsis.txt").read_text().split():
            obj = objs / (src.replace("/", "_") + ".o")
            stem = Path(src).stem.removesuffix("_common")
            if "/micro/kernels/" in src and not (stem in M55_KERNELS or stem.startswith("decode_state")):
                continue
            if obj.exists():
                continue
            if src.endswith(".c"):
                cmd = f"arm-none-eabi-gcc {M55_ARCH} -std=c99 -Os {extra} -w {inc} -c {src} -o {obj}.tmp"
            else:
                cmd = (f"arm-none-eabi-g++ {M55_ARCH} -std=c++17 -Os -DTF_LITE_STATIC_MEMORY -fno-exceptions "
                       f"-fno-rtti {extra} -w {cxx_inc} {inc} -c {src} -o {obj}.tmp")
            jobs.append(subprocess.Popen(f"nice -n 10 {cmd} && mv {obj}.tmp {obj}", shell=True, cwd=out))
            if len(jobs) >= int(os.environ.get("JOBS", "2")):
                if jobs.pop(0).wait() != 0:
                    raise RuntimeError(f"TFLite Micro M55: a compile failed in {objs}")
        if any(j.wait() != 0 for j in jobs):
            raise RuntimeError(f"TFLite Micro M55: a compile failed in {objs}")
        lib.unlink(missing_ok=True)
        _sh(f"arm-none-eabi-ar rcs {lib} {objs}/*.o", cwd=out)
        done.write_text(f"{time.perf_counter() - t0:.1f} s\n")
    return lib


def cmsis_mve_check(cmsis_include: Path) -> bool:
    """Whether CMSIS-NN's headers, compiled with the M55 flags, define ARM_MATH_MVEI (its Helium kernels)."""
    r = subprocess.run(["arm-none-eabi-gcc", *M55_ARCH.split(), f"-I{cmsis_include}", "-x", "c", "-E", "-dM", "-"],
                       input="#include \"arm_nn_math_types.h\"\n", capture_output=True, text=True)
    return r.returncode == 0 and "#define ARM_MATH_MVEI 1" in r.stdout


def tflm_includes(lib: Path) -> str:
    d = lib.parent / "tflite-micro"
    return f"-I{d} -I{d}/fb/include -I{d}/gemmlowp -I{d}/ruyinc -DTF_LITE_STATIC_MEMORY"


def cmsis_library(cmsis_dir: Path, work: Path, cpu: str) -> Path:
    """CMSIS-NN's int8 sources as a static library for ``cpu`` (m4/m7/m0plus, -Os) or the host (-O2)."""
    out = work / f"cmsis-nn-{cpu}"
    lib = out / "libcmsis-nn.a"
    if lib.exists():
        return lib
    out.mkdir(parents=True, exist_ok=True)
    srcs = " ".join(str(p) for p in cmsis_nn.sources(cmsis_dir))
    if cpu == "host":
        _sh(f"gcc -std=c99 -O2 -w -I{cmsis_dir}/Include -c {srcs} && ar rcs libcmsis-nn.a *.o", cwd=out)
    else:
        _sh(f"arm-none-eabi-gcc {CPU_FLAGS[cpu]} -Os -std=c99 -w {SECTIONS} -I{cmsis_dir}/Include -c {srcs} && "
            "arm-none-eabi-ar rcs libcmsis-nn.a *.o", cwd=out)
    return lib


# ---- programs ----

def _link_script(project: Path, out: Path, board: str = "mps2-an386") -> Path:
    """The project's linker script for ``board`` plus C++ init arrays (the TFLite Micro runner calls
    __libc_init_array), placed with the code."""
    text = (project / cortexm.link_script(board)).read_text()
    region = "CODE" if board == "mps3-an547" else "RAM"
    init = ("  .init_array : { PROVIDE_HIDDEN(__preinit_array_start = .); KEEP(*(.preinit_array*)) "
            "PROVIDE_HIDDEN(__preinit_array_end = .); PROVIDE_HIDDEN(__init_array_start = .); "
            f"KEEP(*(SORT(.init_array.*))) KEEP(*(.init_array*)) PROVIDE_HIDDEN(__init_array_end = .); }} > {region}\n")
    text = text.replace("  .ARM.exidx", init + "  .ARM.exidx")
    path = out / "link-bench.ld"
    path.write_text(text)
    return path


@dataclass
class Measured:
    instructions: int
    code: int  # bytes of functions (nm t/T symbols)
    arena: int = 0
    features: list[int] | None = None
    instructions_s8: int | None = None  # tinycc: features_s8() (int8 input), None for TFLite Micro
    s8_equal: bool | None = None  # tinycc: features_s8() gave the same features as features()
    stdout: str = ""  # the program's output


def code_bytes(elf: Path) -> int:
    """Bytes of code: the sizes of the function (FUNC) symbols, aliases counted once; weights, tables and other
    constants (which the MPS2 linker script also places in .text) are not code."""
    out = _sh(f"arm-none-eabi-readelf -sW {elf}")
    funcs = {}
    for line in out.splitlines():
        p = line.split()
        if len(p) >= 8 and p[3] == "FUNC" and p[2].isdigit():
            funcs[int(p[1], 16) & ~1] = int(p[2])
    return sum(funcs.values())


def _run(elf: Path, board: str, timeout: float = 1800) -> dict:
    text = cortexm.run_qemu(elf, board, icount=True, timeout=timeout)
    res: dict = {"stdout": text}
    for line in text.splitlines():
        p = line.split()
        if p[:1] == ["bench"]:
            res.update({p[i]: int(p[i + 1]) for i in range(1, len(p) - 1, 2)})
        elif p[:1] == ["features"]:
            res["features"] = [int(v) for v in p[1:]]
    ns_cpu = 1e9 / cortexm.BOARD_CLOCK_HZ[board]
    ref_instr = res["ref"] * REF_NS_BOARD.get(board, REF_NS)
    res["instructions"] = round(res["cpu"] * ns_cpu) if ref_instr < 600_000_000 else ref_instr
    if "cpu8" in res:  # tinycc's int8-input entry, timed the same way
        ref8 = res["ref8"] * REF_NS
        res["instructions_s8"] = round(res["cpu8"] * ns_cpu) if ref8 < 600_000_000 else ref8
    return res


def printf_baseline(project: Path, work: Path, cpu: str) -> int:
    """Code bytes of a printf-only program with the same startup, flags and libraries."""
    out = work / f"printf-{cpu}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "main.c").write_text(PRINTF_MAIN)
    elf = out / "printf.elf"
    if not elf.exists():
        _sh(f"arm-none-eabi-gcc {CPU_FLAGS[cpu]} -Os -std=c99 {SECTIONS} {LINK} "
            f"-T {project}/{cortexm.link_script(cortexm.DEFAULT_BOARD[cpu])} "
            f"-o {elf} {project}/cortexm/startup.c main.c -lm", cwd=out)
    return code_bytes(elf)


def tinycc_m(project: Path, name: str, cpu: str, cmsis_lib: Path | None, cmsis_dir: Path | None) -> Measured:
    """features() (float input) and features_s8() (the same input quantized beforehand) of a generated project on
    ``cpu`` under QEMU (-Os, gc-sections)."""
    (project / "bench_m.c").write_text(TINYCC_MAIN % {"timer": TIMER_C, "name": name, "NAME": name.upper()})
    srcs = "cortexm/startup.c bench_m.c model.c runtime/tinycc_kernels.c runtime/tinycc_learn.c"
    extra = ""
    if cmsis_lib is not None:
        srcs += " runtime/tinycc_cmsis.c"
        extra = f"-isystem {cmsis_dir}/Include {cmsis_lib}"
    elf = project / f"bench-{cpu}.elf"
    _sh(f"arm-none-eabi-gcc {CPU_FLAGS[cpu]} -Os -std=c99 -Wall -Wextra -Werror {SECTIONS} -I. -Iruntime {LINK} "
        f"-T {cortexm.link_script(cortexm.DEFAULT_BOARD[cpu])} -o {elf} {srcs} {extra} -lm", cwd=project)
    r = _run(elf, cortexm.DEFAULT_BOARD[cpu])
    return Measured(r["instructions"], code_bytes(elf), features=r.get("features"),
                    instructions_s8=r.get("instructions_s8"), s8_equal=bool(r["s8same"]) if "s8same" in r else None)


def _tflm_sources(work: Path, tflite: bytes, ops: list[str], repeats: int) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    (work / "model_data.h").write_text("extern const unsigned char g_model_data[];\n")
    body = ",".join(str(b) for b in tflite)
    (work / "model_data.cc").write_text(f'#include "model_data.h"\nalignas(16) const unsigned char g_model_data[] = '
                                        f"{{{body}}};\n")
    adds = "\n".join(f"    resolver.{op}();" for op in ops)
    (work / "runner.cc").write_text(TFLM_MAIN % {"timer": TIMER_C, "arena": 512 * 1024, "n_ops": max(len(ops), 1),
                                                 "adds": adds, "repeats": repeats})
    return work


def tflm_m4(work: Path, tflite: bytes, ops: list[str], lib: Path, project: Path, cxx_root: Path | None,
            cpu: str = "m4", write_sources: bool = True) -> Measured:
    """One Invoke of a .tflite with TFLite Micro (``lib``: reference kernels or CMSIS-NN) on Cortex-M4 (or
    ``cpu``, e.g. m55 with `tflm_library_m55`) in QEMU (``write_sources`` False: the runner written in ``work``
    beforehand, e.g. with a profiler; its output in ``stdout``)."""
    w = _tflm_sources(work, tflite, ops, 1) if write_sources else work
    inc, libdir = arm_cxx_flags(cxx_root)
    board = cortexm.DEFAULT_BOARD[cpu]
    cxx = (f"arm-none-eabi-g++ {CPU_FLAGS[cpu]} -Os -std=c++17 -fno-exceptions -fno-rtti -fno-threadsafe-statics "
           f"{SECTIONS} {inc} {tflm_includes(lib)}")
    _sh(f"arm-none-eabi-gcc {CPU_FLAGS[cpu]} -Os -std=c99 {SECTIONS} -c {project}/cortexm/startup.c -o startup.o && "
        f"{cxx} -c runner.cc -o runner.o && {cxx} -c model_data.cc -o model_data.o && "
        f"{cxx} {LINK} {libdir} -T {_link_script(project, w, board)} -o runner.elf startup.o runner.o model_data.o "
        f"{lib} -lm", cwd=w)
    r = _run(w / "runner.elf", board)
    return Measured(r["instructions"], code_bytes(w / "runner.elf"), r.get("arena", 0), stdout=r["stdout"])


def tflm_host(work: Path, tflite: bytes, ops: list[str], lib: Path, repeats: int, runs: int) -> float:
    """Median seconds per Invoke with libtflm-host (g++ -O2)."""
    w = _tflm_sources(work, tflite, ops, repeats)
    _sh(f"g++ -std=c++17 -O2 {tflm_includes(lib)} -o runner runner.cc model_data.cc {lib} -lm", cwd=w)
    times = [float(_sh("./runner", cwd=w).split()[1]) for _ in range(runs)]
    return sorted(times)[len(times) // 2]


HOST_MAIN = r"""#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <time.h>
#include "model.h"
#include "test_vectors.h"
int main(void) {
    static int8_t f[%(NAME)s_FEATURES];
    struct timespec a, b;
    long i;
    %(name)s_init();
    %(name)s_features(tcc_test_x[0], f);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (i = 0; i < %(repeats)d; ++i) %(name)s_features(tcc_test_x[i %% TCC_TEST_N], f);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%%.9f\n", ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9) / %(repeats)d);
    return f[0] == 127 ? 1 : 0;
}
"""


def tinycc_host(project: Path, name: str, cmsis_lib: Path | None, cmsis_dir: Path | None, repeats: int,
                runs: int) -> float:
    """Median seconds per features() call (gcc -O2; CMSIS-NN's portable C for --kernels cmsis-nn)."""
    (project / "bench_host.c").write_text(HOST_MAIN % {"name": name, "NAME": name.upper(), "repeats": repeats})
    srcs = "bench_host.c model.c runtime/tinycc_kernels.c runtime/tinycc_learn.c"
    if cmsis_lib is not None:
        srcs += f" runtime/tinycc_cmsis.c -isystem {cmsis_dir}/Include {cmsis_lib}"
    _sh(f"gcc -std=c99 -O2 -I. -Iruntime -o bench_host {srcs} -lm", cwd=project)
    times = [float(subprocess.run(["./bench_host"], cwd=project, capture_output=True, text=True).stdout)
             for _ in range(runs)]
    return sorted(times)[len(times) // 2]



# ---- per-layer profile ----

PROF_MAIN = r"""#include <stdio.h>
#include <stdint.h>
#include "model.h"
#include "test_vectors.h"
#define PROF_CSR (*(volatile uint32_t *)0xE000E010u)
#define PROF_RVR (*(volatile uint32_t *)0xE000E014u)
#define PROF_CVR (*(volatile uint32_t *)0xE000E018u)
extern uint32_t tcc_prof_t[];
static int8_t feats[%(NAME)s_FEATURES];
int main(void) {
    int i;
    %(name)s_init();
    PROF_CSR = 0u;
    PROF_RVR = 0xFFFFFFu;
    PROF_CVR = 0u;
    PROF_CSR = 5u; /* processor clock, no interrupt */
    %(name)s_features(tcc_test_x[0], feats);
    PROF_CSR = 0u;
    printf("prof");
    for (i = 0; i < %(n)d; ++i) printf(" %%lu", (unsigned long)((tcc_prof_t[i] - tcc_prof_t[i + 1]) & 0xFFFFFFu));
    printf("\ndone\n");
    return 0;
}
"""


def profile_source(model_c: str, function: str = "static const int8_t *run_extractor(") -> tuple[str, int]:
    """model.c with a SysTick read before the extractor's first kernel call and after each one (per
    call in ``run_extractor``, or the function whose definition starts with ``function``, after the line that
    ends it); returns the text and the number of calls."""
    lines = model_c.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(function))
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "(void)x;")
    out = lines[:start] + ["#define TCC_PROF_CVR (*(volatile uint32_t *)0xE000E018u)",
                           "uint32_t tcc_prof_t[%d];", lines[start], "    tcc_prof_t[0] = TCC_PROF_CVR;"]
    n = 0
    for line in lines[start + 1:end]:
        out.append(line)
        code = line.split("/*", 1)[0].strip()  # a call's last line: `arg);  /* param */` or `fn(args);`
        if code.endswith(");") and not code.startswith("memcpy("):
            n += 1
            out.append(f"    tcc_prof_t[{n}] = TCC_PROF_CVR;")
    out += lines[end:]
    out[start + 1] = f"uint32_t tcc_prof_t[{n + 1}];"
    return "\n".join(out) + "\n", n


def tinycc_profile(project: Path, name: str, cpu: str = "m4") -> list[int]:
    """Instructions of each kernel call of the extractor (in ``run_extractor``'s order) on ``cpu`` under QEMU:
    a copy of model.c that reads SysTick (processor clock: 40 instructions per tick under ``-icount shift=0``)
    between calls; the layer functions themselves are compiled exactly as in the timing program."""
    text, n = profile_source((project / "model.c").read_text())
    (project / "model_prof.c").write_text(text)
    (project / "bench_prof.c").write_text(PROF_MAIN % {"name": name, "NAME": name.upper(), "n": n})
    elf = project / f"prof-{cpu}.elf"
    srcs = "cortexm/startup.c bench_prof.c model_prof.c runtime/tinycc_kernels.c runtime/tinycc_learn.c"
    _sh(f"arm-none-eabi-gcc {CPU_FLAGS[cpu]} -Os -std=c99 -Wall -Wextra -Werror {SECTIONS} -I. -Iruntime {LINK} "
        f"-T {cortexm.link_script(cortexm.DEFAULT_BOARD[cpu])} -o {elf} {srcs} -lm", cwd=project)
    board = cortexm.DEFAULT_BOARD[cpu]
    text = cortexm.run_qemu(elf, board, icount=True, timeout=1800)
    ticks = next(l.split()[1:] for l in text.splitlines() if l.startswith("prof"))
    per_tick = 1e9 / cortexm.BOARD_CLOCK_HZ[board]
    return [round(int(t) * per_tick) for t in ticks]
