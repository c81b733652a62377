"""Build an Arduino sketch with Debian's arduino-builder (patched AVR core copy) and run it in simavr."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

HARDWARE = Path("/usr/share/arduino/hardware")
FQBN_MEGA = "arduino:avr:mega:cpu=atmega2560"


def available() -> bool:
    return bool(shutil.which("arduino-builder") and shutil.which("simavr") and shutil.which("avr-gcc")
                and HARDWARE.exists())


def patched_hardware(work: Path) -> Path:
    """A copy of the AVR core where WString.cpp compiles with this avr-gcc (see docs/toolchains)."""
    hw = work / "hardware"
    if not hw.exists():
        shutil.copytree(HARDWARE, hw, symlinks=True)
        ws = hw / "arduino" / "avr" / "cores" / "arduino" / "WString.cpp"
        text = ws.read_text().replace("char buf[FLOAT_BUF_SIZE]", "char buf[48]")
        ws.write_text(text.replace("char buf[DOUBLE_BUF_SIZE]", "char buf[344]"))
    return hw


def build(sketch: Path, work: Path, fqbn: str = FQBN_MEGA) -> tuple[Path, int, int]:
    """Compile; return (elf, flash bytes, static RAM bytes) as arduino-builder reports them."""
    hw = patched_hardware(work)
    out = work / f"build-{sketch.stem}"
    out.mkdir(exist_ok=True)
    r = subprocess.run(["arduino-builder", "-compile", "-hardware", "/usr/share/arduino-builder", "-hardware", str(hw),
                        "-tools", "/usr/share/arduino/hardware/tools/avr", "-tools", "/usr/share/arduino/tools",
                        "-fqbn", fqbn, "-build-path", str(out), "-prefs=compiler.cpp.extra_flags=-DDECIMAL_DIG=17",
                        str(sketch)], capture_output=True, text=True, timeout=600)
    text = r.stdout + r.stderr
    if r.returncode != 0:
        raise AssertionError(f"arduino-builder failed:\n{text[-4000:]}")
    flash = int(re.search(r"Sketch uses (\d+) bytes", text).group(1))
    ram = int(re.search(r"Global variables use (\d+) bytes", text).group(1))
    return out / f"{sketch.name}.elf", flash, ram


def run_simavr(elf: Path, mcu: str = "atmega2560") -> list[str]:
    r = subprocess.run(["simavr", "-m", mcu, "-f", "16000000", str(elf)], capture_output=True, text=True, timeout=600)
    clean = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout + r.stderr)
    return [l.strip().rstrip(".").strip() for l in clean.replace("\r", "").splitlines() if l.strip()]
