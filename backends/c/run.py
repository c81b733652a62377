"""Build and run the `c` target's demo (dump on) on the host or in QEMU: the runner `tinycc validate` uses."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ...errors import TinyccError
from ..demo import DemoFailed, DemoRun, parse
from . import cortexm

PLATFORMS = ("host", *(f"qemu-{cpu}" for cpu in cortexm.CPUS))


def section_sizes(binary: Path, size_tool: str = "size") -> dict[str, int]:
    """Bytes per allocated section (``size -A``) of an executable: .text, .rodata, .data, .bss, ..."""
    out = subprocess.run([size_tool, "-A", str(binary)], capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        p = line.split()
        if len(p) >= 3 and p[0].startswith(".") and p[1].isdigit() and not p[0].startswith(
                (".debug", ".comment", ".ARM.attr", ".note", ".gnu")):
            sizes[p[0]] = int(p[1])
    return sizes


def ram_flash(sizes: dict[str, int]) -> tuple[int, int]:
    """(RAM, flash) of a program from its sections: RAM = .data + .bss; flash = everything loaded from
    program memory (.text, .rodata, .data's initial values, tables), without .bss, .heap and .stack."""
    ram = sizes.get(".data", 0) + sizes.get(".bss", 0)
    flash = sum(v for k, v in sizes.items() if k not in (".bss", ".heap", ".stack", ".stack_dummy", ".tbss"))
    return ram, flash


def run_host(project: Path, timeout: float = 600) -> DemoRun:
    """``make tinycc_demo`` (cc -std=c99 -O2 -Wall -Wextra -Werror -pedantic), then ``./tinycc_demo --dump``."""
    if not shutil.which("make") or not shutil.which("cc"):
        raise TinyccError("validate --on host needs make and a C compiler (cc)")
    r = subprocess.run(["make", "-s", "-C", str(project), "tinycc_demo"], capture_output=True, text=True)
    if r.returncode != 0:
        raise DemoFailed(f"host build failed:\n{r.stdout[-2000:]}{r.stderr[-4000:]}")
    exe = project / "tinycc_demo"
    q = subprocess.run([str(exe), "--dump"], capture_output=True, text=True, timeout=timeout)
    out = parse(q.stdout)
    if q.returncode != 0 or not out.done:
        raise DemoFailed(f"host run failed ({q.returncode}):\n{q.stdout[-1000:]}{q.stderr[-2000:]}")
    ram, flash = ram_flash(section_sizes(exe)) if shutil.which("size") else (None, None)
    return DemoRun("host", out, ram, flash, "host executable (size -A): .data+.bss; .text+.rodata+.data+...",
                   dict(out.time_us), "us")


def run_qemu(project: Path, cpu: str, timeout: float = 600) -> DemoRun:
    """``make cortexm CPU=cpu DUMP=1`` (-Os -Werror) and a run in qemu-system-arm under ``-icount shift=0``."""
    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        raise TinyccError(f"validate --on qemu-{cpu} needs arm-none-eabi-gcc and qemu-system-arm")
    board = cortexm.DEFAULT_BOARD[cpu]
    try:
        elf = cortexm.build(project, cpu, dump=True)
        text = cortexm.run_qemu(elf, board, timeout=timeout)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        raise DemoFailed(str(e)) from None
    out = parse(text)
    out.instructions = cortexm.instructions(text, board)
    ram, flash = ram_flash(cortexm.section_sizes(elf))
    return DemoRun(f"qemu-{cpu}", out, ram, flash, f"ELF for {board} (arm-none-eabi-size): .data+.bss; "
                   ".text+.data+...", {k: float(v) for k, v in out.instructions.items()}, "instructions")


def run_demo(project: Path, platform: str) -> DemoRun:
    if platform == "host":
        return run_host(project)
    if platform.startswith("qemu-") and platform[5:] in cortexm.CPUS:
        return run_qemu(project, platform[5:])
    raise TinyccError(f"target c runs on {', '.join(PLATFORMS)}, not {platform!r}")
