"""A third-party tinycc board plugin: RV32IMC on QEMU's RISC-V ``virt`` machine.

It registers one target (``rv32imc``: riscv64-unknown-elf-gcc with picolibc, its start-up code, linker script
and demo clock, qemu-system-riscv32 with ``-icount shift=0``, instructions counted with ``rdinstret``) and one
board on it (``qemu_virt_rv32``), through the same ``tinycc_register_boards`` hook the built-in boards use. With
it installed, ``tinycc compile --target c --board qemu_virt_rv32`` writes a project whose Makefile has
``make riscv`` / ``make run-riscv``, and ``tinycc validate --target c --on qemu-rv32imc`` builds and runs the
demo in QEMU and compares it with tinycc's int8 reference. Nothing in tinycc names this board.

Debian packages: gcc-riscv64-unknown-elf, picolibc-riscv64-unknown-elf, qemu-system-misc.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy

from tinycc.session import Board
from tinycc.targets import ILP32, M4_CODE_SIZE, Emulator, Target

hookimpl = pluggy.HookimplMarker("tinycc")
HERE = Path(__file__).parent
K = 1024

# instructions retired: rdinstret (Zicntr); under QEMU -icount it is the exact executed-instruction count
CLOCK = """#define TCC_SYSTICK 1
#define TCC_TICK_NS_X10 10u /* one tick is one instruction: the short report prints instructions */
/* instructions retired since reset (rdinstret, low 32 bits: wraps after 4.29 G instructions) */
static uint32_t tcc_ticks(void) {
    uint32_t v;
    __asm__ volatile("rdinstret %0" : "=r"(v));
    return v;
}
static void tcc_ticks_start(void) {}
"""

RV32IMC = Target(
    name="rv32imc", arch="riscv32", family="riscv", abi=ILP32,
    summary="RV32IMC (soft float), QEMU virt",
    cc="riscv64-unknown-elf-gcc", cflags="-march=rv32imc -mabi=ilp32",
    ldflags="--specs=picolibc.specs -nostartfiles -Wl,--no-warn-rwx-segments -T riscv/link.ld",
    size_tool="riscv64-unknown-elf-size",
    files={"riscv/startup.c": (HERE / "startup.c").read_text(), "riscv/link.ld": (HERE / "link.ld").read_text()},
    sources=("riscv/startup.c",),
    clock_if="defined(__riscv) && !defined(__unix__)", clock=CLOCK,
    emulator=Emulator("qemu-rv32imc", ("qemu-system-riscv32", "-M", "virt", "-nographic", "-bios", "none",
                                       "-icount", "shift=0", "-kernel", "{elf}"),
                      1.0, "instructions retired (rdinstret)", "virt"),
    runs=("c",),
    code_size=M4_CODE_SIZE,  # not measured on RV32IMC yet: the Cortex-M4 table (Thumb-2 and RVC are close)
    tools=("make",),
)

BOARD = Board("qemu_virt_rv32", 4 * 1024 * K, 4 * 1024 * K, "riscv32", "", "QEMU RISC-V virt, RV32IMC (emulated)",
              RV32IMC)


@hookimpl
def tinycc_register_boards(registry: Any) -> None:
    registry.add_board(BOARD)  # registers RV32IMC with it
