"""Build and run the `c` target's demo (dump on) on the host or in QEMU: the runner `tinycc validate` uses."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ...errors import TinyccError
from ...targets import BUILTIN_TARGETS, Target, by_platform, platforms
from ..demo import DemoFailed, DemoRun, parse
from . import cortexm

PLATFORMS = platforms(BUILTIN_TARGETS, "c")  # the built-in ones; `tinycc validate` takes the registered targets'


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


def run_cross(project: Path, target: Target, timeout: float = 600) -> DemoRun:
    """A plugin family's target: ``make FAMILY FAMILY_CPU=NAME DUMP=1`` (the Makefile's generic section, -Os
    -Werror), then its emulator command; instructions = the demo's ticks x ``instructions_per_tick``."""
    emu = target.emulator
    assert emu is not None
    missing = [t for t in (target.cc, emu.tool, *target.tools) if not shutil.which(t)]
    if missing:
        raise TinyccError(f"validate --on {emu.platform} needs {', '.join(missing)}")
    goal, var = target.family, f"{target.family.upper()}_CPU"
    r = subprocess.run(["make", "-s", "-C", str(project), goal, f"{var}={target.name}", "DUMP=1"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise DemoFailed(f"{target.name} build failed:\n{r.stdout[-2000:]}{r.stderr[-4000:]}")
    elf = project / target.elf_name
    cmd = [a.replace("{elf}", str(elf)) for a in emu.command]
    try:
        q = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DemoFailed(f"{emu.platform} run timed out after {timeout:.0f} s") from None
    out = parse(q.stdout)
    if q.returncode != 0 or not out.done:
        raise DemoFailed(f"{emu.platform} run failed ({q.returncode}):\n{q.stdout[-2000:]}\n{q.stderr[-2000:]}")
    out.instructions = {k: round(v * emu.instructions_per_tick) for k, v in cortexm.ticks(q.stdout).items()}
    ram, flash = ram_flash(section_sizes(elf, target.size_tool)) if shutil.which(target.size_tool) else (None, None)
    return DemoRun(emu.platform, out, ram, flash, f"ELF for {emu.machine or target.name} ({target.size_tool}): "
                   ".data+.bss; .text+.rodata+.data+...", {k: float(v) for k, v in out.instructions.items()},
                   "instructions")


def run_demo(project: Path, platform: str, target: Target | None = None) -> DemoRun:
    """Build and run the demo on ``platform``, the emulator of ``target`` (default: the built-in target of that
    platform)."""
    target = target or by_platform(BUILTIN_TARGETS, platform)
    if target is None or target.emulator is None or target.platform != platform or "c" not in target.runs:
        raise TinyccError(f"target c runs on {', '.join(PLATFORMS)}, not {platform!r}")
    if target.family == "host":
        return run_host(project)
    if target.family == "cortexm":
        return run_qemu(project, target.name)
    return run_cross(project, target)
