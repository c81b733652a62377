"""Cross-build a generated C project for a Cortex-M CPU and run it in qemu-system-arm (tests, benchmarks).

The project's Makefile does the work (``make cortexm CPU=... BOARD=...``); this module names the ELF files,
reads their section sizes and turns the demo's SysTick counts into instruction counts: under
``-icount shift=0`` QEMU advances virtual time by 1 ns per executed instruction and SysTick (processor
clock, no interrupt) counts that clock, so instructions = ticks x 1e9 / clock (within one tick). QEMU does
not model pipelines, caches or wait states: these are instructions, not cycles.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from ...targets import BUILTIN_TARGETS, family

# the built-in Cortex-M targets (tinycc.targets): CPU names, their QEMU machines (M0+: the M3 board, ARMv7-M)
CPUS = tuple(t.name for t in family(BUILTIN_TARGETS, "cortexm"))
DEFAULT_BOARD = {t.name: t.emulator.machine for t in family(BUILTIN_TARGETS, "cortexm") if t.emulator}
# QEMU's SysTick clocks (from the targets' instructions per tick), checked by tests/test_c_backend.py
BOARD_CLOCK_HZ = {**{t.emulator.machine: round(1e9 / t.emulator.instructions_per_tick)
                     for t in family(BUILTIN_TARGETS, "cortexm") if t.emulator},
                  "microbit": 16_000_000}
# linker script per QEMU machine (the generated project's cortexm/ folder): the MPS2 boards share one (4 MB of
# RAM at 0 for code); mps3-an547 keeps only the vector table in its 512 KB ITCM at 0 (code and constants in
# the 2 MB SRAM at 0x01000000, data in the 4 MB at 0x21000000); the micro:bit's 256 KB flash + 16 KB RAM
LINK_SCRIPTS = {"microbit": "cortexm/link-microbit.ld", "mps3-an547": "cortexm/link-mps3.ld"}


def link_script(board: str) -> str:
    """The project-relative linker script of a QEMU machine."""
    return LINK_SCRIPTS.get(board, "cortexm/link.ld")


def tick_ns_x10(clock_hz: float) -> str:
    """The demo's TCC_TICK_NS_X10 for a SysTick clock: ns per tick x 10 (an integer literal where it is one)."""
    x = 1e10 / clock_hz
    return f"{round(x)}u" if abs(x - round(x)) < 1e-6 else f"{x:g}"


def machines(targets: tuple[Any, ...] = BUILTIN_TARGETS) -> list[dict[str, str]]:
    """The generated Makefile's QEMU machines (the registered Cortex-M targets' and the micro:bit): name, tick
    (TCC_TICK_NS_X10) and linker script."""
    clocks = {t.emulator.machine: 1e9 / t.emulator.instructions_per_tick
              for t in family(targets, "cortexm") if t.emulator}
    clocks["microbit"] = BOARD_CLOCK_HZ["microbit"]
    return [{"name": m, "tick": tick_ns_x10(hz), "link": link_script(m)} for m, hz in clocks.items()]


def elf_name(cpu: str = "m4", board: str | None = None, dump: bool = False) -> str:
    return (f"tinycc_demo{'' if cpu == 'm4' else '-' + cpu}{'-microbit' if board == 'microbit' else ''}"
            f"{'-dump' if dump else ''}.elf")


def build(project: Path, cpu: str = "m4", board: str | None = None, dump: bool = True,
          cmsis_nn_dir: Path | None = None) -> Path:
    """``make cortexm`` (-Os, -Wall -Wextra -Werror); ``dump``: the demo prints the machine-readable dump
    (``DUMP=1``, -DTCC_DEMO_DUMP=1) instead of its short report; ``cmsis_nn_dir``: CMSIS_NN_DIR of a
    ``--kernels cmsis-nn`` project. Raises RuntimeError with the compiler's output."""
    cmd = (["make", "-s", "-C", str(project), "cortexm", f"CPU={cpu}"] + ([f"BOARD={board}"] if board else [])
           + (["DUMP=1"] if dump else []))
    cmd += [f"CMSIS_NN_DIR={cmsis_nn_dir}"] if cmsis_nn_dir else []
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"arm build ({cpu}, {board or DEFAULT_BOARD[cpu]}) failed:\n{r.stdout[-2000:]}"
                           f"{r.stderr[-4000:]}")
    return project / elf_name(cpu, board, dump)


def section_sizes(elf: Path) -> dict[str, int]:
    """Bytes per allocated section (``arm-none-eabi-size -A``): .text, .data, .bss, .heap, ..."""
    from .run import section_sizes as sizes

    return sizes(elf, "arm-none-eabi-size")


def run_qemu(elf: Path, board: str, icount: bool = True, timeout: float = 600) -> str:
    """Run the demo (semihosting) and return its output (the dump when built with ``dump``); raises
    RuntimeError unless it printed ``done``."""
    cmd = ["qemu-system-arm", "-M", board, "-nographic", "-semihosting-config", "enable=on,target=native",
           *(["-icount", "shift=0"] if icount else []), "-kernel", str(elf)]
    q = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if q.returncode != 0 or "done" not in q.stdout:
        raise RuntimeError(f"qemu {board} run failed ({q.returncode}):\n{q.stdout[-2000:]}\n{q.stderr[-2000:]}")
    return q.stdout


def ticks(output: str) -> dict[str, int]:
    """The demo's ``ticks features N predict N learn N`` line (one call each) as a dict."""
    for line in output.splitlines():
        p = line.split()
        if p[:1] == ["ticks"]:
            return {p[i]: int(p[i + 1]) for i in range(1, len(p) - 1, 2)}
    return {}


def instructions(output: str, board: str) -> dict[str, int]:
    """Instructions per call (features, predict, learn) from a run under ``-icount shift=0``."""
    ns_per_tick = 1e9 / BOARD_CLOCK_HZ[board]
    return {k: round(v * ns_per_tick) for k, v in ticks(output).items()}
