"""Build and run generated C projects (host gcc with -Werror and sanitizers, or Cortex-M0+/M4/M7 under QEMU);
the demos run with their dump on (``--dump`` on the host, ``DUMP=1`` builds for QEMU)."""
from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from tinycc.backends.demo import DemoOutput, parse  # noqa: F401  (the dump format lives in the package)

STRICT = ["-std=c99", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wshadow"]
# ASan + UBSan, plus float -> int conversions out of range (NaN included), which gcc's -fsanitize=undefined
# leaves out; every sanitized build of the tests uses all three
SANITIZE = ["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
SANITIZE_FLOAT = SANITIZE
SOURCES = ["main.c", "model.c", "runtime/tinycc_kernels.c", "runtime/tinycc_learn.c"]


def build_host(project: Path, sanitize: bool = True, cmsis: "CmsisLib | None" = None, main: str | None = None) -> Path:
    """gcc -Werror (and ASan/UBSan) build of the demo; a ``--kernels cmsis-nn`` project needs ``cmsis``.
    ``main``: a test driver's C source, written to the project and built instead of the demo's main.c."""
    exe = project / ("demo_asan" if sanitize else "demo")
    base = SOURCES
    if main is not None:
        (project / "test_main.c").write_text(main)
        exe, base = project / "test_main", ["test_main.c", *SOURCES[1:]]
    deep = ["runtime/tinycc_backprop.c"] if (project / "runtime" / "tinycc_backprop.c").exists() else []  # --deep
    base = base + deep
    sources = base + (["runtime/tinycc_cmsis.c"] if (project / "runtime" / "tinycc_cmsis.c").exists() else [])
    extra: list[str] = []
    if len(sources) > len(base):
        if cmsis is None:
            raise AssertionError("a --kernels cmsis-nn project needs a CMSIS-NN library")
        extra = ["-isystem", str(cmsis.include), str(cmsis.lib)]
    cmd = ["gcc", *STRICT, *(SANITIZE if sanitize else []), "-I", str(project), "-I", str(project / "runtime"),
           "-o", str(exe), *[str(project / s) for s in sources], *extra, "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"gcc failed:\n{r.stderr[-4000:]}")
    return exe


RUNTIME = Path(__file__).resolve().parents[1] / "backends" / "c" / "runtime"


def run_runtime_program(src: str, workdir: Path, name: str, timeout: int = 120,
                        runtime: tuple[str, ...] = ("tinycc_kernels.c",), quiet: bool = False) -> list[str]:
    """Compile ``src`` (written to ``workdir/name.c``, which may include files of ``workdir``) with the C runtime's
    ``runtime`` sources (strict warnings, ASan/UBSan), run it, return its stdout lines; fails the test on a compiler
    error, a non-zero exit or a sanitizer report (``quiet``: on any stderr output at all)."""
    c = workdir / f"{name}.c"
    c.write_text(src)
    exe = workdir / name
    cmd = ["gcc", *STRICT, *SANITIZE, "-I", str(RUNTIME), "-I", str(workdir), "-o", str(exe), str(c),
           *(str(RUNTIME / f) for f in runtime), "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0 and "runtime error" not in r.stderr and not (quiet and r.stderr), \
        (r.stdout[-2000:], r.stderr[-3000:])
    return r.stdout.splitlines()


def run_clean(exe: Path, timeout: int = 60) -> subprocess.CompletedProcess:
    """Run a sanitized build; it must exit 0 with no sanitizer report."""
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0 and "runtime error" not in r.stderr and "Sanitizer" not in r.stderr, \
        (r.stdout[-2000:], r.stderr[-3000:])
    return r


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
    """Run the demo with ``--dump`` and parse its machine-readable lines."""
    r = subprocess.run([str(exe), "--dump"], capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or "runtime error" in r.stderr or "ERROR: AddressSanitizer" in r.stderr:
        raise AssertionError(f"demo failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return parse(r.stdout)


# the arrays of the memory model's RAM figure (the C target's model.c; the tflm target's arena is tcc_arena too)
# (the classifier's RAM arrays are tcc_classifier_<i>_weights/_bias/_act/_delta; its flash copies end in _init and
# the runtime's functions tcc_classifier_reset/... have no layer number)
MODEL_RAM = re.compile(r"tcc_arena|tcc_scratch|tcc_classifier_\d+_(?:weights|bias|act|delta)(?!_init)|tcc_buf_"
                       r"|tcc_probs")
MODEL_DESCRIPTORS = ("tcc_layers", "tcc_clf", "tcc_buf")  # the runtime's structs (the report's runtime descriptors)


def symbol_sizes(exe: Path) -> dict[str, int]:
    """Bytes per sized symbol of a program (``nm -S``, C++ names demangled; names with spaces left out)."""
    nm = subprocess.run(["nm", "-S", "--size-sort", "--demangle", str(exe)], capture_output=True, text=True).stdout
    return {l.split()[-1]: int(l.split()[1], 16) for l in nm.splitlines() if len(l.split()) == 4}


def model_ram(exe: Path) -> int:
    """Bytes of the model's RAM arrays in a built demo (what the memory model's RAM total counts)."""
    return sum(v for k, v in symbol_sizes(exe).items() if is_model_ram(k) or k in MODEL_DESCRIPTORS)


def is_model_ram(symbol: str) -> bool:
    """Whether a symbol is one of the model's RAM arrays (a name the memory model's RAM figure counts)."""
    return bool(MODEL_RAM.match(symbol)) and not symbol.startswith("tcc_buf.")


def have_arm() -> bool:
    return bool(shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm"))


def build_and_run_qemu(project: Path, cpu: str = "m4", board: str | None = None,
                       cmsis_nn_dir: Path | None = None) -> tuple[DemoOutput, dict[str, int]]:
    """Cross-build (``make cortexm CPU=cpu BOARD=board``) and run under ``qemu-system-arm -icount shift=0``;
    returns the demo's output (with ``instructions`` per call) and the ELF's section sizes."""
    from tinycc.backends.c import cortexm

    board = board or cortexm.DEFAULT_BOARD[cpu]
    try:
        elf = cortexm.build(project, cpu, board, dump=True, cmsis_nn_dir=cmsis_nn_dir)
        text = cortexm.run_qemu(elf, board)
    except RuntimeError as e:
        raise AssertionError(str(e)) from None
    out = parse(text)
    out.instructions = cortexm.instructions(text, board)
    return out, cortexm.section_sizes(elf)


def run_deep_demo(dep, sim, project: Path, x, y, where: str, learn: int = 9):
    """Emit ``dep``'s deep project (c target) with ``x``/``y`` as its vectors and ``learn`` learn calls, run its demo
    on the host (ASan/UBSan) or under QEMU (``where`` a cpu such as "m4"), and check what precedes learning against
    the simulator's learner ``sim``: the int8 cut tensors bit for bit, every vector's class and probabilities (1e-5).
    Returns the demo's output and the cut tensors."""
    from tinycc.backends.c import CBackend
    from tinycc.config import TestVectors

    CBackend().emit(dep, project, TestVectors(x, y, learn=learn))
    out = run_host(build_host(project)) if where == "host" else build_and_run_qemu(project, where)[0]
    assert out.done
    return out, check_before(out, sim, x)


def check_before(out, sim, x):
    """Before learning, the demo's ``out`` equals the simulator's learner ``sim`` on inputs ``x``: the int8 cut
    tensors bit for bit, every vector's class and probabilities (1e-5). Returns the cut tensors."""
    from tinycc.ir.train import softmax

    q = sim.cut_of(x)
    cls, z = sim.predict(q)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], q[i].reshape(-1))
        assert out.before[i][0] == cls[i]
        np.testing.assert_allclose(out.before[i][1], softmax(z)[i], atol=1e-5)
    return q


def check_learned(out, sim, dep, q, trained, mode: str) -> None:
    """After learning, the demo's ``out`` equals the simulator's learner ``sim``: each ``trained`` region layer's
    parameters (bias mode: the int32 biases the int8 kernels read, bit for bit; blocks: the float weights and biases,
    1e-5 relative), the classifier (1e-5) and the class and probabilities of every cut tensor in ``q`` (1e-5)."""
    from tinycc.ir.train import softmax

    for j, op in enumerate(trained):
        if mode == "blocks":
            p = sim.tail.params[op.name]
            np.testing.assert_allclose(out.backbone_w[j], p.weight.reshape(-1), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(out.backbone_b[j], p.bias, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(out.backbone[j], sim.view.tensors[op.inputs[2]].data)
    for i, name in enumerate(op.name for op in sim.view.ops[len(dep.extractor.ops):]):
        np.testing.assert_allclose(out.weights[i], sim.tail.params[name].weight.reshape(-1), atol=1e-5)
        np.testing.assert_allclose(out.bias[i], sim.tail.params[name].bias, atol=1e-5)
    cls, z = sim.predict(q)
    for i in range(len(q)):
        assert out.after[i][0] == cls[i]
        np.testing.assert_allclose(out.after[i][1], softmax(z)[i], atol=1e-5)


@contextlib.contextmanager
def listed_tables() -> Iterator[None]:
    """Build emit models whose constant tables are lists of numbers (never packed as strings of bytes): for tests
    that declare the tables themselves from ``CArray.values`` (tests/test_tables.py checks both forms compile to
    the same object)."""
    from tinycc.backends.c import tables

    saved = tables.PACK_BYTES
    tables.PACK_BYTES = 1 << 62
    try:
        yield
    finally:
        tables.PACK_BYTES = saved


_LISTED = re.compile(r"static const (\w+) (\w+)\[\d+\] TCC_WEIGHT = \{\n(.*?)\n\};", re.S)
_PACKED = re.compile(r"static const (int8_t) (\w+)\[\d+\] TCC_BYTES TCC_WEIGHT =\n(.*?);\n"
                     r"|static const union \{ int8_t b\[\d+\] TCC_BYTES; (\w+) v\[\d+\]; \}\n    (\w+) TCC_WEIGHT = "
                     r"\{\n(.*?)\n\};", re.S)
_NUMPY = {"int8_t": "<i1", "int16_t": "<i2", "int32_t": "<i4", "int64_t": "<i8"}


def model_tables(text: str) -> dict[str, np.ndarray]:
    """The constant tables of a generated model.c by name (numpy arrays of their C type), read back from either
    form (a list of numbers, or a string of little-endian bytes: backends/c/tables.py)."""
    out: dict[str, np.ndarray] = {}
    for ctype, name, body in _LISTED.findall(text):
        vals = body.replace("(-2147483647L - 1L)", "-2147483648").replace("LL", "").replace("\n", " ").split(",")
        out[name] = np.array([float(v.strip()[:-1]) if ctype == "float" else int(v) for v in vals if v.strip()],
                             np.dtype(_NUMPY.get(ctype, "<f4")))
    for m in _PACKED.finditer(text):
        ctype, name, body = (m.group(1), m.group(2), m.group(3)) if m.group(1) else m.group(4, 5, 6)
        raw = bytes.fromhex(re.sub(r'[\s"]|\\x', "", body))
        out[name] = np.frombuffer(raw, _NUMPY[ctype]).copy()
    return out
