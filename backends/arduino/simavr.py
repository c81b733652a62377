"""Build a generated Arduino sketch with Debian's arduino-builder (on a patched copy of the AVR core) and run
it in simavr: the `arduino` target's demo runner (``tinycc validate --on simavr``) and the tests' harness."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from ...errors import TinyccError
from ..demo import DemoFailed, DemoRun, parse

HARDWARE = Path("/usr/share/arduino/hardware")
FQBN_MEGA = "arduino:avr:mega:cpu=atmega2560"
UART_LINE = 256  # simavr logs the UART in lines of at most this many characters


def available() -> bool:
    return bool(shutil.which("arduino-builder") and shutil.which("simavr") and shutil.which("avr-gcc")
                and HARDWARE.exists())


def patched_hardware(work: Path) -> Path:
    """A copy of the AVR core where WString.cpp compiles with this avr-gcc (DECIMAL_DIG buffer sizes)."""
    hw = work / "hardware"
    if not hw.exists():
        shutil.copytree(HARDWARE, hw, symlinks=True)
        ws = hw / "arduino" / "avr" / "cores" / "arduino" / "WString.cpp"
        text = ws.read_text().replace("char buf[FLOAT_BUF_SIZE]", "char buf[48]")
        ws.write_text(text.replace("char buf[DOUBLE_BUF_SIZE]", "char buf[344]"))
    return hw


def build(sketch: Path, work: Path, fqbn: str = FQBN_MEGA, defines: tuple[str, ...] = ()) -> tuple[Path, int, int]:
    """Compile ``sketch`` (the .ino) with extra ``-D`` ``defines``; return (elf, flash bytes, static RAM bytes)
    as arduino-builder reports them. Raises RuntimeError with the builder's output."""
    hw = patched_hardware(work)
    out = work / f"build-{sketch.stem}"
    out.mkdir(exist_ok=True)
    flags = " ".join(["-DDECIMAL_DIG=17", *(f"-D{d}" for d in defines)])
    r = subprocess.run(["arduino-builder", "-compile", "-hardware", "/usr/share/arduino-builder", "-hardware", str(hw),
                        "-tools", "/usr/share/arduino/hardware/tools/avr", "-tools", "/usr/share/arduino/tools",
                        "-fqbn", fqbn, "-build-path", str(out), f"-prefs=compiler.cpp.extra_flags={flags}",
                        str(sketch)], capture_output=True, text=True, timeout=900)
    text = r.stdout + r.stderr
    flash = re.search(r"Sketch uses (\d+) bytes", text)
    ram = re.search(r"Global variables use (\d+) bytes", text)
    if r.returncode != 0 or not flash or not ram:
        raise RuntimeError(f"arduino-builder failed:\n{text[-4000:]}")
    return out / f"{sketch.name}.elf", int(flash.group(1)), int(ram.group(1))


def run_simavr(elf: Path, mcu: str = "atmega2560", timeout: float = 900) -> list[str]:
    """The program's UART output as lines (simavr exits when the sketch sleeps with interrupts off)."""
    r = subprocess.run(["simavr", "-m", mcu, "-f", "16000000", str(elf)], capture_output=True, text=True,
                       timeout=timeout)
    clean = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout + r.stderr)
    lines: list[str] = []
    cont = False
    for l in clean.replace("\r", "").splitlines():
        if cont and lines:
            lines[-1] += l
        else:
            lines.append(l)
        cont = len(l) == UART_LINE and not l.endswith("..")  # simavr breaks a longer line there (".." ends one)
    return [l.strip().rstrip(".").strip() for l in lines if l.strip()]


def run_demo(project: Path, platform: str) -> DemoRun:
    """Self-test with the dump on (TINYCC_SELFTEST=1, TINYCC_DEMO_DUMP=1), ATmega2560 (Arduino Mega) in simavr."""
    if platform != "simavr":
        raise TinyccError(f"target arduino runs on simavr, not {platform!r}")
    if not available():
        raise TinyccError("validate --on simavr needs arduino-builder, avr-gcc, simavr and /usr/share/arduino")
    sketches = sorted(project.glob("*/*.ino"))
    if len(sketches) != 1:
        raise TinyccError(f"{project}: not a project of target arduino (expected one NAME/NAME.ino)")
    work = project.parent / "avr-build"
    work.mkdir(exist_ok=True)
    try:
        elf, flash, ram = build(sketches[0], work, defines=("TINYCC_SELFTEST=1", "TINYCC_DEMO_DUMP=1"))
        lines = run_simavr(elf)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        raise DemoFailed(str(e)) from None
    out = parse("\n".join(lines))
    if not out.done:
        raise DemoFailed("simavr run did not finish:\n" + "\n".join(lines[-20:]))
    return DemoRun("simavr", out, ram, flash, "arduino-builder (atmega2560): global variables; sketch size",
                   dict(out.time_us), "us")
