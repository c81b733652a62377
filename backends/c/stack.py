"""Worst-case stack depth of a generated project's API, measured with the target's compiler.

Each source is compiled for the core (``CORES``: the compiler and the flags the project's own build uses) with
``-fstack-usage`` (every function's frame, ``.su`` files) and ``-ffunction-sections``; the call graph comes from
the objects' call relocations (``objdump -dr``: one section per function, so every call, tail call and
compiler-inserted helper call such as soft-float ``__aeabi_fmul`` or ``__mulsf3`` is a relocation). The depth of
an entry point is its frame plus the deepest of its callees; a library function (libc, libm, libgcc: no ``.su``)
counts with its bound from ``LIBRARY_STACK`` (tests/test_stack.py paints the stack under each library call and
checks the bound). Recursion, indirect calls (``call *``, ``blx rN``, ``icall``), frames of unbounded dynamic
size (alloca, VLAs) and unknown library functions are refused (``StackError``): the figure is then not a bound.

When a core's compiler is missing, ``estimate`` gives a conservative figure (marked as estimated in the report).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class StackError(Exception):
    """The call graph cannot be bounded (recursion, indirect call, dynamic frame, unknown library function)."""


@dataclass(frozen=True)
class Core:
    """How a core's projects are compiled, and the call's costs the frames do not include."""

    name: str
    cc: str
    flags: tuple[str, ...]
    objdump: str
    call_bytes: int  # return address pushed by a call instruction and not counted in the callee's .su frame
    library: str     # key of LIBRARY_STACK
    red_zone: bool = False  # a leaf may use bytes below its stack pointer, not in its .su (x86-64: up to 128)


# Per-core knowledge (compiler, flags as the generated Makefile / Arduino core use them, return-address size).
# host: the Makefile's `cc -O2`; Cortex-M: `make cortexm CPU=...` (-Os); avr: the Arduino AVR core's -Os for the
# ATmega2560 (3-byte return address; an ATmega328P pushes 2, so its figure is 1 byte per call level high).
CORES = {
    "host": Core("host (x86-64, cc -O2)", "cc", ("-std=c99", "-O2"), "objdump", 0, "host", True),
    "cortex-m0plus": Core("Cortex-M0+ (arm-none-eabi-gcc -Os)", "arm-none-eabi-gcc",
                          ("-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft", "-std=c99", "-Os"),
                          "arm-none-eabi-objdump", 0, "arm-soft"),
    "cortex-m4": Core("Cortex-M4 (arm-none-eabi-gcc -Os)", "arm-none-eabi-gcc",
                      ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-std=c99", "-Os"),
                      "arm-none-eabi-objdump", 0, "arm-hard"),
    "cortex-m7": Core("Cortex-M7 (arm-none-eabi-gcc -Os)", "arm-none-eabi-gcc",
                      ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16", "-std=c99", "-Os"),
                      "arm-none-eabi-objdump", 0, "arm-hard"),
    "cortex-m55": Core("Cortex-M55 (arm-none-eabi-gcc -Os)", "arm-none-eabi-gcc",
                       ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard", "-std=c99", "-Os"),
                       "arm-none-eabi-objdump", 0, "arm-hard"),
    "avr": Core("AVR ATmega2560 (avr-gcc -Os)", "avr-gcc", ("-mmcu=atmega2560", "-std=gnu11", "-Os"),
                "avr-objdump", 3, "avr"),
}
# a board's architecture (session.Board.arch) -> key of CORES (None: no board, a host build)
ARCH_CORE = {None: "host", "cortex-m0plus": "cortex-m0plus", "cortex-m4": "cortex-m4", "cortex-m7": "cortex-m7",
             "cortex-m55": "cortex-m55",
             "avr": "avr"}

# Bytes of stack a library function uses below its call (its own frames and its callees'), per library build:
# glibc (x86-64), newlib + libgcc (Arm soft- and hard-float), avr-libc + libgcc. Checked by tests/test_stack.py,
# which paints the stack and calls each function (several arguments) under the core's emulator or on the host.
LIBRARY_STACK: dict[str, dict[str, int]] = {  # "__*": any other libgcc helper (integer and float arithmetic)
    "host": {"memcpy": 16, "memset": 16, "memmove": 16, "expf": 16, "tanhf": 32, "roundf": 16, "logf": 32,
             "sqrtf": 16, "fabsf": 16, "rint": 16},
    "arm-hard": {"__*": 16, "memcpy": 16, "memset": 24, "memmove": 24, "expf": 24, "tanhf": 24, "roundf": 8,
                 "logf": 32, "sqrtf": 16, "rint": 56},
    "arm-soft": {"__*": 40, "memcpy": 24, "memset": 24, "memmove": 24, "expf": 88, "tanhf": 88, "roundf": 16,
                 "logf": 96, "sqrtf": 48, "rint": 104},
    "avr": {"__*": 16, "exp": 32, "tanh": 48, "round": 16, "log": 32, "sqrt": 24, "fabs": 4, "memcpy": 4,
            "memset": 4, "memmove": 4},
}
# tests/stack_paint_lib.c's probes -> the functions they call on each library (float operations: libgcc helpers
# where the core has no FPU; inline otherwise)
PROBES = {"expf": {"avr": "exp"}, "tanhf": {"avr": "tanh"}, "roundf": {"avr": "round"}, "memcpy": {}, "memset": {},
          "fmul": {"arm-soft": "__*", "avr": "__*"}, "fadd": {"arm-soft": "__*", "avr": "__*"},
          "fdiv": {"arm-soft": "__*", "avr": "__*"}, "fcmp": {"arm-soft": "__*", "avr": "__*"},
          "i2f": {"arm-soft": "__*", "avr": "__*"}, "f2i": {"arm-soft": "__*", "avr": "__*"}, "rint": {"avr": "round"}}

CALL_MNEMONICS = {"call", "callq", "bl", "rcall"}
TAIL_MNEMONICS = {"jmp", "jmpq", "b.w", "b", "rjmp"}
INDIRECT = re.compile(r"^\s*[0-9a-f]+:\s+(?:call[q]?\s+\*|blx\s+r\d|e?icall\b)")


@dataclass
class StackFigure:
    """The worst-case stack of the API's entry points: ``bytes`` (the deepest), per entry, and how it was found."""

    bytes: int
    core: str
    measured: bool
    entries: dict[str, int]
    path: list[str]  # the deepest call chain
    detail: str = ""


def toolchain(core: str) -> bool:
    """The core's compiler and objdump are installed."""
    c = CORES[core]
    return bool(shutil.which(c.cc) and shutil.which(c.objdump))


def read_su(text: str) -> dict[str, int]:
    """Frames by function name from a ``.su`` file (``file:line:col:name<TAB>bytes<TAB>qualifiers``)."""
    frames: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        name, size, kind = parts[0].rsplit(":", 1)[-1], int(parts[1]), parts[2].strip()
        if kind not in ("static", "dynamic,bounded"):
            raise StackError(f"function {name}: a stack frame of unbounded size ({kind}: alloca or a VLA)")
        frames[name] = max(frames.get(name, 0), size)
    return frames


RED_ZONE = re.compile(r"-0x([0-9a-f]+)\(%rsp\)")
# an Arm store that moves the stack pointer down inside a function's body (inline assembly keeping a register
# there, backends/c/kernels/depthwise.py): bytes not in the .su frame (a prologue's such store counts twice: safe)
ARM_PUSH = re.compile(r"\[sp, #-(\d+)\]!")


def read_calls(disasm: str) -> tuple[dict[str, set[str]], list[str], dict[str, int]]:
    """Callees by function from ``objdump -dr`` of an object built with -ffunction-sections, the functions with an
    indirect call, and the bytes each function addresses below its stack pointer (x86-64's red zone; Arm: stores
    that push below it, ``ARM_PUSH``)."""
    calls: dict[str, set[str]] = {}
    indirect: list[str] = []
    below: dict[str, int] = {}
    fn, last = "", ""
    for line in disasm.splitlines():
        for off in RED_ZONE.findall(line):
            below[fn] = max(below.get(fn, 0), int(off, 16))
        for off in ARM_PUSH.findall(line):
            below[fn] = max(below.get(fn, 0), int(off))
        m = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if m:
            fn, last = re.sub(r"\.cold(\.\d+)?$", "", m.group(1)), ""  # a cold part runs in its function's frame
            calls.setdefault(fn, set())
            continue
        if INDIRECT.match(line):
            indirect.append(fn)
        ins = re.match(r"^\s*[0-9a-f]+:\s+(?:notrack\s+)?([a-z.]+)", line)
        if ins:
            last = ins.group(1)
            continue
        rel = re.match(r"^\s*[0-9a-f]+: (R_\S+)\s+(\S+)", line)
        if rel and fn and (last in CALL_MNEMONICS or last in TAIL_MNEMONICS):
            if re.fullmatch(rf"\.text\.{re.escape(fn)}\+0x0*[1-9a-f][0-9a-f]*", rel.group(2)):
                continue  # into its own body (AVR's `rcall .+0`, which reserves stack for outgoing arguments)
            target = re.sub(r"[+-]0x[0-9a-f]+$", "", rel.group(2))
            if target.startswith(".text."):
                target = re.sub(r"^(unlikely|hot|startup|exit)\.", "", target[len(".text."):])
            target = re.sub(r"\.cold(\.\d+)?$", "", target)
            if target.startswith(".") or (target == fn and last in TAIL_MNEMONICS):
                continue  # a branch inside the function (AVR relaxation relocates them); a call to itself stays
            calls[fn].add(target)
    return calls, indirect, below


def _frame(name: str, frames: dict[str, int]) -> int | None:
    """The .su frame of a symbol (``f.constprop.0`` is listed as ``f.constprop``)."""
    if name in frames:
        return frames[name]
    base = re.sub(r"\.\d+$", "", name)
    return frames.get(base)


def depth(entries: list[str], frames: dict[str, int], calls: dict[str, set[str]], core: str,
          exclude: frozenset[str] = frozenset(), below: dict[str, int] | None = None) -> dict[str, tuple[int, list[str]]]:
    """Worst-case bytes (and the deepest chain) of each entry point; ``exclude``: functions the deployment's
    configuration never calls (``unreachable``)."""
    c = CORES[core]
    lib = LIBRARY_STACK[c.library]
    memo: dict[str, tuple[int, list[str]]] = {}

    def visit(fn: str, stack: tuple[str, ...]) -> tuple[int, list[str]]:
        if fn in stack:
            raise StackError(f"recursion: {' -> '.join(stack[stack.index(fn):] + (fn,))}")
        if fn in memo:
            return memo[fn]
        own = _frame(fn, frames)
        if own is None or fn not in calls:
            if fn not in lib and fn.startswith("__") and "__*" in lib:
                memo[fn] = (lib["__*"], [fn])  # a libgcc helper (integer or float arithmetic)
                return memo[fn]
            if fn not in lib:
                raise StackError(f"library function {fn!r} has no stack bound for {core} (LIBRARY_STACK)")
            memo[fn] = (lib[fn], [fn])
            return memo[fn]
        deepest, chain = 0, []
        for callee in sorted(calls[fn] - exclude):
            d, ch = visit(callee, stack + (fn,))
            if d + c.call_bytes > deepest:
                deepest, chain = d + c.call_bytes, ch
        if not calls[fn] and c.red_zone:  # a leaf's data below its stack pointer (the red zone, at most 128 bytes)
            deepest = min((below or {}).get(fn, 0), 128)
        elif not c.red_zone:  # pushed inside the body, between calls
            deepest = max(deepest, (below or {}).get(fn, 0))
        memo[fn] = (own + deepest, [fn] + chain)
        return memo[fn]

    out = {}
    for e in entries:  # the entry's own call pushes a return address too
        d, chain = visit(e, ())
        out[e] = (d + c.call_bytes, chain)
    return out


def measure(sources: list[Path], include: list[Path], entries: list[str] | str, core: str,
            defines: tuple[str, ...] = (), exclude: frozenset[str] = frozenset()) -> StackFigure:
    """Compile ``sources`` for ``core`` and return the worst-case stack of ``entries`` (a prefix: every function
    of the first source whose name starts with it; StackError: no bound; RuntimeError: the compiler failed)."""
    c = CORES[core]
    frames: dict[str, int] = {}
    calls: dict[str, set[str]] = {}
    indirect: list[str] = []
    below: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="tinycc-stack-") as tmp, ThreadPoolExecutor(len(sources) or 1) as pool:
        # the sources compile side by side (wall time of the slowest, not the sum)
        jobs = [pool.submit(_object_facts, c, src, include, defines, Path(tmp) / f"o{i}.o")
                for i, src in enumerate(sources)]
        for i, job in enumerate(jobs):
            su, cs, ind, bl = job.result()
            for name, size in su.items():
                frames[name] = max(frames.get(name, 0), size)
            for fn, n in bl.items():
                below[fn] = max(below.get(fn, 0), n)
            if i == 0 and isinstance(entries, str):
                entries = sorted(f for f in cs if f.startswith(entries))
            for fn, callees in cs.items():
                calls.setdefault(fn, set()).update(callees)
            indirect += ind
    assert isinstance(entries, list)
    bad = [f for f in indirect if _reaches(entries, calls, f)]
    if bad:
        raise StackError(f"indirect call in {', '.join(sorted(set(bad)))}: the call graph cannot be bounded")
    missing = [e for e in entries if e not in calls]
    if missing:
        raise StackError(f"entry point(s) not found: {', '.join(missing)}")
    per = depth(entries, frames, calls, core, exclude, below)
    top = max(entries, key=lambda e: (per[e][0], e))
    return StackFigure(per[top][0], core, True, {e: v[0] for e, v in per.items()}, per[top][1])


Facts = tuple[dict[str, int], dict[str, set[str]], list[str], dict[str, int]]  # frames, calls, indirect, below
_MEMO: dict[str, Facts] = {}
_PARSER = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()  # a change to this parser invalidates the cache


def _compiler_id(cc: str) -> str:
    """The compiler's resolved path, size and mtime (a new compiler build changes the key)."""
    path = shutil.which(cc) or cc
    try:
        st = Path(path).resolve().stat()
        return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return path


def cache_dir() -> Path | None:
    """Where measured objects' facts are kept between runs: ``$TINYCC_CACHE_DIR`` (empty: no disk cache), else
    ``$XDG_CACHE_HOME/tinycc`` or ``~/.cache/tinycc``."""
    env = os.environ.get("TINYCC_CACHE_DIR")
    if env is not None:
        return Path(env) / "stack-v1" if env else None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tinycc" / "stack-v1"


def _object_facts(c: Core, src: Path, include: list[Path], defines: tuple[str, ...], obj: Path) -> Facts:
    """Frames and call relocations of one source compiled for core ``c``, cached by the hash of its preprocessed
    text, the flags and the compiler (preprocessing costs ~20 ms where compiling costs 150-300 ms)."""
    args = [*c.flags, "-ffunction-sections", "-fstack-usage", *(f"-I{p}" for p in include), *(f"-D{d}" for d in defines)]
    pre = subprocess.run([c.cc, *args, "-E", "-P", str(src)], capture_output=True)
    key = None
    if pre.returncode == 0:
        h = hashlib.sha256(("\0".join([_PARSER, _compiler_id(c.cc), _compiler_id(c.objdump), *c.flags, *defines])
                            + "\0").encode())
        h.update(pre.stdout)
        key = h.hexdigest()
        if key in _MEMO:
            return _MEMO[key]
        cached = _read_cache(key)
        if cached is not None:
            _MEMO[key] = cached
            return cached
    r = subprocess.run([c.cc, *args, "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{c.cc} failed on {src.name}:\n{r.stderr[-2000:]}")
    su = read_su(obj.with_suffix(".su").read_text())
    d = subprocess.run([c.objdump, "-dr", "--no-show-raw-insn", str(obj)], capture_output=True, text=True,
                       check=True).stdout
    facts: Facts = (su, *read_calls(d))
    if key is not None:
        _MEMO[key] = facts
        _write_cache(key, facts)
    return facts


def _read_cache(key: str) -> Facts | None:
    d = cache_dir()
    if d is None:
        return None
    try:
        data = json.loads((d / f"{key}.json").read_text())
        return (data["frames"], {k: set(v) for k, v in data["calls"].items()}, data["indirect"], data["below"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_cache(key: str, facts: Facts) -> None:
    """Written atomically (a temporary file renamed); a cache that cannot be written is skipped."""
    d = cache_dir()
    if d is None:
        return
    su, calls, indirect, below = facts
    text = json.dumps({"frames": su, "calls": {k: sorted(v) for k, v in sorted(calls.items())},
                       "indirect": indirect, "below": below}, sort_keys=True)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, d / f"{key}.json")
    except OSError:
        pass


def _reaches(entries: list[str], calls: dict[str, set[str]], fn: str) -> bool:
    seen, todo = set(), list(entries)
    while todo:
        f = todo.pop()
        if f == fn:
            return True
        if f not in seen:
            seen.add(f)
            todo += sorted(calls.get(f, ()))
    return False


# runtime functions that only one replay-buffer policy calls (tinycc_learn.c: tcc_buffer_push branches on the
# buffer's policy, a constant of the generated tcc_buf that no API call changes); tests/test_stack.py checks the
# figure of every policy against a painted run of that policy
POLICY_ONLY = {"balanced_slot": "class_balanced"}


def unreachable(policy: str | None) -> frozenset[str]:
    """Runtime functions a deployment with buffer ``policy`` never calls (None: inference only, no buffer)."""
    return frozenset(f for f, p in POLICY_ONLY.items() if p != policy)


def project_stack(project: Path, runtime: Path, prefix: str, core: str, policy: str | None = "class_balanced") -> StackFigure:
    """The worst-case stack of a generated project's API (every ``prefix*`` function of ``project/model.c``, whose
    runtime sources are in ``runtime``) on ``core``, for a replay buffer with ``policy``."""
    srcs = [project / "model.c", runtime / "tinycc_kernels.c", runtime / "tinycc_learn.c"]
    if (runtime / "tinycc_backprop.c").is_file():  # --deep bias: the learn step's float kernels
        srcs.append(runtime / "tinycc_backprop.c")
    return measure(srcs, [project, runtime], prefix, core, exclude=unreachable(policy))


def estimate(kernel_scratch: int, pointer: int) -> int:
    """A conservative figure without the core's compiler: the runtime's deepest chains (the learner with the
    class-balanced buffer's 512-byte count table; the schedule) measured at most 700 bytes on every core
    tinycc measures, plus the largest stack array of a specialized kernel, with 50% and one pointer per level
    of headroom."""
    return int(1.5 * (700 + kernel_scratch)) + 16 * pointer


@dataclass
class StackItem:
    """The report's ``stack`` line: bytes, whether the core's compiler measured them, and how."""

    bytes: int
    measured: bool
    detail: str


POINTER = {"host": 8, "avr": 2}  # pointer bytes per core (others: 4)


def stack_item(deployment: Any, arch: str | None = None) -> StackItem:
    """The stack of ``deployment``'s generated API on ``arch`` (default: its board's architecture; no board: the
    host build): measured with the core's compiler when it is installed, else ``estimate`` (marked)."""
    from ...config import TestVectors
    from . import cmsis_nn, render_project

    config = deployment.config
    if arch is None and config is not None and config.board is not None:
        arch = config.board.arch

    core = ARCH_CORE.get(arch)
    where = "host build; --board names the target" if arch is None else ""
    why = ""
    if core is None:
        why = f"no compiler for {arch} known to tinycc"
    elif config is not None and cmsis_nn.enabled(config.kernels):
        why = "CMSIS-NN's frames are not compiled here"
    elif not toolchain(core):
        why = f"{CORES[core].cc} not installed"
    else:
        with tempfile.TemporaryDirectory(prefix="tinycc-stack-src-") as tmp:
            try:
                render_project(deployment, Path(tmp), TestVectors(None, count=1), with_main=False)
                policy = None if deployment.inference_only else deployment.buffer.policy
                fig = project_stack(Path(tmp), Path(tmp) / "runtime", deployment.name + "_", core, policy)
                chain = " -> ".join(fig.path)
                return StackItem(fig.bytes, True, f"measured: {CORES[core].name} -fstack-usage + call graph, "
                                                  f"deepest {chain}{'; ' + where if where else ''}")
            except (StackError, RuntimeError, OSError) as e:
                why = f"not measured ({str(e).splitlines()[0]})"
    from .kernels import rnn

    g = deployment.extractor
    arrays = [rnn.stack_bytes(g, op) for op in g.ops if op.kind in rnn.KINDS]  # a recurrent layer's state
    b = estimate(max([512] + arrays), POINTER.get(core or "", 4))
    return StackItem(b, False, f"estimated: {why}")
