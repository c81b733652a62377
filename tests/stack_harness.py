"""Painted-stack runs of a generated `c` project's API (tests/stack_paint_main.c) on the host, in QEMU (Cortex-M)
and in simavr (ATmega2560), built with the flags tinycc.backends.c.stack measures with."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tinycc.backends.c import cortexm
from tinycc.backends.c.stack import CORES

PAINT_MAIN = Path(__file__).with_name("stack_paint_main.c")
PAINT_LIB = Path(__file__).with_name("stack_paint_lib.c")
QEMU_CPU = {"cortex-m4": "m4", "cortex-m0plus": "m0plus", "cortex-m7": "m7", "cortex-m55": "m55"}


def available(core: str) -> bool:
    c = CORES[core]
    tools = {"host": ["cc"], "avr": ["avr-gcc", "simavr"]}.get(core, [c.cc, "qemu-system-arm"])
    return all(shutil.which(t) for t in tools)


def painted(project: Path, name: str, n_features: int, core: str) -> int:
    """Bytes of stack the API calls used below their caller (the painted high-water mark)."""
    src = [str(project / "model.c"), str(project / "runtime" / "tinycc_kernels.c"),
           str(project / "runtime" / "tinycc_learn.c")]
    if (project / "runtime" / "tinycc_backprop.c").is_file():  # a --deep bias project
        src.append(str(project / "runtime" / "tinycc_backprop.c"))
    inc = ["-I", str(project), "-I", str(project / "runtime")]
    defs = [f"-DMODEL={name}", f"-DNFEAT={n_features}"]
    out = _build_run(core, PAINT_MAIN, src, inc, defs, project / f"stack-{core}.elf", project)
    m = re.search(r"stack (\d+)", out)
    assert m and "done" in out, f"{core} run failed:\n{out[-2000:]}"
    return int(m.group(1))


def _build_run(core: str, main: Path, srcs: list[str], inc: list[str], defs: list[str], exe: Path,
               project: Path | None) -> str:
    c = CORES[core]
    if core == "host":
        cmd = [c.cc, *c.flags[1:], "-std=gnu99", *inc, *defs, "-Wl,-z,now", "-o", str(exe), str(main), *srcs, "-lm"]
    elif core == "avr":
        cmd = [c.cc, *c.flags, *inc, *defs, "-o", str(exe), str(main), *srcs, "-lm"]
    else:
        cmd = [c.cc, *c.flags, *inc, *defs, "--specs=rdimon.specs", "-nostartfiles", "-T",
               str(project / cortexm.link_script(cortexm.DEFAULT_BOARD[QEMU_CPU[core]])), "-o", str(exe),
               str(project / "cortexm" / "startup.c"),
               str(main), *srcs, "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{core} build failed:\n{r.stderr[-3000:]}"
    if core == "host":
        return subprocess.run([str(exe)], capture_output=True, text=True, timeout=600).stdout
    if core == "avr":
        q = subprocess.run(["simavr", "-m", "atmega2560", "-f", "16000000", str(exe)], capture_output=True,
                           text=True, timeout=600)
        return re.sub(r"\x1b\[[0-9;]*m", "", q.stdout + q.stderr)
    return cortexm.run_qemu(exe, cortexm.DEFAULT_BOARD[QEMU_CPU[core]], icount=False)


def library_use(project: Path, core: str) -> dict[str, int]:
    """Bytes of stack each probed library call uses on ``core`` (``project``: any generated c project, for the
    Cortex-M startup code and linker script)."""
    out = _build_run(core, PAINT_LIB, [], [], [], project / f"stacklib-{core}.elf", project)
    assert "done" in out, out[-2000:]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"lib (\w+) (\d+)", out)}
