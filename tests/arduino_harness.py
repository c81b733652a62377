"""Arduino builds in simavr for the tests: the package's runner (tinycc.backends.arduino.simavr)."""
from __future__ import annotations

from pathlib import Path

from tinycc.backends.arduino.simavr import FQBN_MEGA, HARDWARE, available, patched_hardware, run_simavr  # noqa: F401
from tinycc.backends.arduino.simavr import build as _build


def build(sketch: Path, work: Path, fqbn: str = FQBN_MEGA, defines: tuple[str, ...] = ()) -> tuple[Path, int, int]:
    """Compile; return (elf, flash bytes, static RAM bytes) as arduino-builder reports them."""
    try:
        return _build(sketch, work, fqbn, defines)
    except RuntimeError as e:
        raise AssertionError(str(e)) from None
