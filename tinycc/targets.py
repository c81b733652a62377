"""Targets as data: what tinycc knows about a CPU and the boards built on it.

A ``Target`` holds everything target-specific: the C ABI (pointer width and alignment, for the memory model's
runtime descriptors), the cross compiler and its CPU flags (the generated Makefile), start-up code, linker
script and demo clock (a plugin family's; the built-in Cortex-M ones live in the C backend's templates), the
emulator command and how its counter turns into executed instructions (``tinycc validate --on``), the
per-op code-size estimate of the memory report, and the Arduino core. A ``Board`` is a memory budget on a
target. Both are registered through the ``tinycc_register_boards`` hook (``registry.add_target`` /
``registry.add_board``); every list of CPUs or platforms (the Makefile's ``CPU=`` choices, ``validate --on``)
derives from the registered targets, so a new board is a plugin with data, not an edit of tinycc.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping


@dataclass(frozen=True)
class Abi:
    """Size and alignment of the C types in the runtime's descriptor structs on a target."""

    name: str
    pointer: int        # sizeof(void *)
    pointer_align: int
    int_align: int      # int32_t, uint32_t, float (all 4 bytes)


LP64 = Abi("64-bit (x86-64, AArch64)", 8, 8, 4)
ILP32 = Abi("32-bit (Cortex-M, ESP32)", 4, 4, 4)
AVR_ABI = Abi("AVR", 2, 1, 1)


def host_abi() -> Abi:
    """The ABI of the machine running tinycc (a host build of a generated project)."""
    import struct

    return LP64 if struct.calcsize("P") == 8 else ILP32


def _frozen(d: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(d))


# .text bytes per kernel/module on Cortex-M4 (-Os), measured on the generated runtime; an estimate. Keys: an op
# kind's value (ir.ops.OpKind), "base" (runtime), "learn" and "buffer" (on-device learning), "other" (any op
# kind not listed).
M4_CODE_SIZE = _frozen({
    "base": 1200, "conv2d": 700, "depthwise_conv2d": 650, "dense": 350, "max_pool2d": 300, "avg_pool2d": 350,
    "global_avg_pool": 350, "global_max_pool": 300, "add": 450, "mul": 400, "concat": 200, "pad": 200,
    "relu": 150, "relu6": 150, "quantize": 200, "dequantize": 120, "sigmoid": 700, "tanh": 700,
    "leaky_relu": 200, "learn": 2500, "buffer": 600, "other": 300,
    "gru": 950, "simple_rnn": 650,  # recurrent: the layer function and its dot-product helpers
    "reverse": 80})  # tcc_reverse_s8: 78 B (arm-none-eabi-gcc -Os, Cortex-M4)


@dataclass(frozen=True)
class Emulator:
    """How ``tinycc validate --on PLATFORM`` runs a cross-built demo and counts its instructions.

    ``command``: argv, ``{elf}`` replaced by the ELF path; the run passes when it exits 0 and printed ``done``.
    ``instructions_per_tick``: the demo's ``ticks`` line times this is executed instructions (deterministic
    under the command's instruction counting, e.g. QEMU ``-icount shift=0``)."""

    platform: str
    command: tuple[str, ...]
    instructions_per_tick: float
    counter: str = ""  # what the demo's clock reads, in words (SysTick, rdinstret, ...)
    machine: str = ""  # the emulated machine (QEMU -M)

    @property
    def tool(self) -> str:
        return self.command[0]


@dataclass(frozen=True)
class Target:
    """One CPU as tinycc builds, sizes and runs code for it.

    ``name`` is the generated Makefile's ``CPU=`` value; ``family`` its cross-build section (``host``,
    ``cortexm`` and ``avr`` are built in; any other family gets a generic section ``make FAMILY`` /
    ``make run-FAMILY`` from ``cc``, ``cflags``, ``ldflags``, ``files`` and the emulator). ``files``: project
    path -> text written into a C project for a board of this target (start-up code, linker script);
    ``sources``: which of them are compiled with the demo. ``clock``: C code defining the demo's tick counter
    (``TCC_SYSTICK``, ``tcc_ticks``, ``tcc_ticks_start``) under the preprocessor condition ``clock_if``.
    ``runs``: backends whose demo runs on ``emulator``. ``harvard``: a Harvard core, whose constant tables live in
    program memory and are read through ``TCC_READ_*`` (AVR's PROGMEM): a learned region's biases and trained
    channels then stay in RAM and its kernels are the ``tcc_*_bram_s8`` variants, and a step that would keep a
    plain ``const`` float table is refused. The C runtime (``runtime/tinycc_port.h``) picks its reads from the
    compiler: program-memory reads under ``__AVR__``; any other Harvard core's target must define ``TCC_WEIGHT``
    and ``TCC_READ_S8/S16/S32/F32`` itself before the runtime's headers (a header of its ``files`` that its
    ``cflags`` force-include, ``-include``). A target whose compiler defines ``__AVR__`` must set it."""

    name: str
    arch: str
    family: str
    abi: Abi | None
    summary: str = ""
    cc: str = ""
    cflags: str = ""
    ldflags: str = ""
    size_tool: str = "size"
    elf: str = ""  # the dump build's ELF name (family cortexm: the Makefile's naming)
    files: Mapping[str, str] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    clock_if: str = ""
    clock: str = ""
    emulator: Emulator | None = None
    runs: tuple[str, ...] = ()
    code_size: Mapping[str, int] = field(default_factory=lambda: M4_CODE_SIZE)
    arduino_core: str = ""
    tools: tuple[str, ...] = ()  # programs a demo run needs besides the emulator
    harvard: bool = False  # constant tables in program memory, read through TCC_READ_* (see above)

    @property
    def platform(self) -> str:
        return self.emulator.platform if self.emulator else ""

    @property
    def elf_name(self) -> str:
        return self.elf or f"tinycc_demo-{self.name}-dump.elf"


@dataclass
class Board:
    """A target board: memory budget and toolchain identity. ``target``: its CPU's ``Target`` (None: the
    registered target of ``arch``, if any)."""

    name: str
    ram: int
    flash: int
    arch: str
    fqbn: str = ""
    description: str = ""
    target: Target | None = None


def _qemu_arm(machine: str) -> tuple[str, ...]:
    return ("qemu-system-arm", "-M", machine, "-nographic", "-semihosting-config", "enable=on,target=native",
            "-icount", "shift=0", "-kernel", "{elf}")


MPS2_CLOCK_HZ = 25_000_000  # QEMU's SysTick clock on mps2-an385/an386/an500, checked by tests/test_c_backend.py


MPS3_CLOCK_HZ = 32_000_000  # QEMU's SysTick clock on mps3-an547 (Cortex-M55), checked the same way


def _cortexm(name: str, summary: str, cflags: str, machine: str, clock_hz: int = MPS2_CLOCK_HZ) -> Target:
    tick = 1e9 / clock_hz  # -icount shift=0: 1 ns per instruction
    return Target(name, f"cortex-{name}", "cortexm", ILP32, summary, "arm-none-eabi-gcc", cflags,
                  "--specs=rdimon.specs -nostartfiles", "arm-none-eabi-size",
                  f"tinycc_demo{'' if name == 'm4' else '-' + name}-dump.elf",
                  emulator=Emulator(f"qemu-{name}", _qemu_arm(machine), tick, "SysTick (processor clock)", machine),
                  runs=("c",), arduino_core="arduino:mbed", tools=("make",))


HOST = Target("host", "host", "host", None, "the machine running tinycc (cc -O2)", "cc", size_tool="size",
              emulator=Emulator("host", ("{elf}", "--dump"), 0.0, "monotonic clock (us)"), runs=("c", "tflm"),
              tools=("make",))
CORTEX_M4 = _cortexm("m4", "Cortex-M4, fpv4-sp-d16 hard float",
                     "-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16", "mps2-an386")
CORTEX_M7 = _cortexm("m7", "Cortex-M7, fpv5-d16 double-precision hard float",
                     "-mcpu=cortex-m7 -mthumb -mfloat-abi=hard -mfpu=fpv5-d16", "mps2-an500")
CORTEX_M55 = _cortexm("m55", "Cortex-M55, Armv8.1-M with Helium (MVE), fp32 hard float",
                      "-mcpu=cortex-m55 -mthumb -mfloat-abi=hard", "mps3-an547", MPS3_CLOCK_HZ)
CORTEX_M0PLUS = _cortexm("m0plus", "Cortex-M0+, ARMv6-M: no divide instruction, no DSP, soft float",
                         "-mcpu=cortex-m0plus -mthumb -mfloat-abi=soft", "mps2-an385")
AVR = Target("avr", "avr", "avr", AVR_ABI, "8-bit AVR (ATmega)", "avr-gcc", size_tool="avr-size",
             emulator=Emulator("simavr", ("simavr",), 1.0, "cycles"), runs=("arduino",), arduino_core="arduino:avr",
             tools=("avr-gcc", "simavr"), harvard=True)
XTENSA = Target("xtensa", "xtensa", "xtensa", ILP32, "Xtensa LX6 (ESP32)", arduino_core="esp32:esp32")

BUILTIN_TARGETS: tuple[Target, ...] = (HOST, CORTEX_M4, CORTEX_M7, CORTEX_M0PLUS, CORTEX_M55, AVR, XTENSA)


def family(targets: tuple[Target, ...], name: str) -> tuple[Target, ...]:
    """The targets of one family, in registration order."""
    return tuple(t for t in targets if t.family == name)


def platforms(targets: tuple[Target, ...], backend: str) -> tuple[str, ...]:
    """``validate --on`` choices of ``backend``: the emulators of the targets whose demo it runs."""
    return tuple(t.platform for t in targets if t.emulator is not None and backend in t.runs)


def by_platform(targets: tuple[Target, ...], platform: str) -> Target | None:
    return next((t for t in targets if t.emulator is not None and t.platform == platform), None)


def board_target(board: Board | None, targets: tuple[Target, ...] = BUILTIN_TARGETS) -> Target | None:
    """A board's target: its own, else the first of ``targets`` with its architecture."""
    if board is None:
        return None
    return board.target or next((t for t in targets if t.arch == board.arch), None)


def code_table(target: Target | None) -> Mapping[str, int]:
    """The code-size estimate of ``target`` (Cortex-M4's without one)."""
    return target.code_size if target is not None else M4_CODE_SIZE
