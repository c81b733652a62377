"""Build and run generated C projects (host gcc with -Werror and sanitizers, or Cortex-M0+/M4/M7 under QEMU)."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STRICT = ["-std=c99", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wshadow"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
SOURCES = ["main.c", "model.c", "runtime/tinycc_kernels.c", "runtime/tinycc_learn.c"]


@dataclass
class DemoOutput:
    features: dict[int, np.ndarray] = field(default_factory=dict)
    before: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)
    after: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)
    weights: dict[int, np.ndarray] = field(default_factory=dict)
    bias: dict[int, np.ndarray] = field(default_factory=dict)
    buffer: int = -1
    memory: dict[str, int] = field(default_factory=dict)
    instructions: dict[str, int] = field(default_factory=dict)  # per call, QEMU -icount runs only


def parse(text: str) -> DemoOutput:
    out = DemoOutput()
    seen_weights = False
    for line in text.splitlines():
        p = line.split()
        if not p:
            continue
        if p[0] == "memory":
            out.memory = {p[i]: int(p[i + 1]) for i in range(1, len(p) - 1, 2)}
        elif p[0] == "features":
            out.features[int(p[1])] = np.array([int(v) for v in p[2:]], np.int8)
        elif p[0] == "predict":
            target = out.after if seen_weights else out.before
            target[int(p[1])] = (int(p[2]), np.array([float(v) for v in p[3:]], np.float32))
        elif p[0] == "weights":
            seen_weights = True
            out.weights[int(p[1])] = np.array([float(v) for v in p[2:]], np.float32)
        elif p[0] == "bias":
            out.bias[int(p[1])] = np.array([float(v) for v in p[2:]], np.float32)
        elif p[0] == "buffer":
            out.buffer = int(p[1])
    return out


def build_host(project: Path, sanitize: bool = True, cmsis: "CmsisLib | None" = None) -> Path:
    """gcc -Werror (and ASan/UBSan) build of the demo; a ``--kernels cmsis-nn`` project needs ``cmsis``."""
    exe = project / ("demo_asan" if sanitize else "demo")
    sources = SOURCES + (["runtime/tinycc_cmsis.c"] if (project / "runtime" / "tinycc_cmsis.c").exists() else [])
    extra: list[str] = []
    if len(sources) > len(SOURCES):
        if cmsis is None:
            raise AssertionError("a --kernels cmsis-nn project needs a CMSIS-NN library")
        extra = ["-isystem", str(cmsis.include), str(cmsis.lib)]
    cmd = ["gcc", *STRICT, *(SANITIZE if sanitize else []), "-I", str(project), "-I", str(project / "runtime"),
           "-o", str(exe), *[str(project / s) for s in sources], *extra, "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"gcc failed:\n{r.stderr[-4000:]}")
    return exe


@dataclass
class CmsisLib:
    include: Path
    lib: Path


def build_cmsis_lib(cmsis_dir: Path, out: Path, sanitize: bool = True) -> CmsisLib:
    """CMSIS-NN's int8 sources (the list the generated Makefile compiles) as a host static library, built with
    the same sanitizers as the demo (the vendor code itself with -w: it is not ours to make -Werror clean)."""
    from tinycc.backends.c import cmsis_nn

    out.mkdir(parents=True, exist_ok=True)
    srcs = cmsis_nn.sources(cmsis_dir)
    # CMSIS-NN left-shifts negative int32 values (arm_elementwise_add_s8, requantization), undefined in C99 but
    # two's-complement on every compiler it supports: that one UBSan check is off for the vendor code only
    flags = ["-std=c99", "-O1", "-g", "-w", *(SANITIZE + ["-fno-sanitize=shift-base"] if sanitize else []), "-I",
             str(cmsis_dir / "Include")]
    r = subprocess.run(["gcc", *flags, "-c", *map(str, srcs)], cwd=out, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"CMSIS-NN build failed:\n{r.stderr[-4000:]}")
    lib = out / "libcmsis-nn.a"
    subprocess.run(["ar", "rcs", str(lib), *sorted(str(p) for p in out.glob("*.o"))], check=True)
    return CmsisLib(cmsis_dir / "Include", lib)


def run_host(exe: Path) -> DemoOutput:
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or "runtime error" in r.stderr or "ERROR: AddressSanitizer" in r.stderr:
        raise AssertionError(f"demo failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return parse(r.stdout)


def have_arm() -> bool:
    return bool(shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm"))


def build_and_run_qemu(project: Path, cpu: str = "m4", board: str | None = None,
                       cmsis_nn_dir: Path | None = None) -> tuple[DemoOutput, dict[str, int]]:
    """Cross-build (``make cortexm CPU=cpu BOARD=board``) and run under ``qemu-system-arm -icount shift=0``;
    returns the demo's output (with ``instructions`` per call) and the ELF's section sizes."""
    from tinycc.backends.c import cortexm

    board = board or cortexm.DEFAULT_BOARD[cpu]
    try:
        elf = cortexm.build(project, cpu, board, cmsis_nn_dir)
        text = cortexm.run_qemu(elf, board)
    except RuntimeError as e:
        raise AssertionError(str(e)) from None
    out = parse(text)
    out.instructions = cortexm.instructions(text, board)
    return out, cortexm.section_sizes(elf)
