"""The arduino target's Arduino library (libraries/NAME beside the sketch), built with the real Arduino tools.

Oracle: the library's self-test example, built by arduino-builder from a libraries folder (-libraries) for the
Arduino Mega 2560 and run in simavr, prints exactly what the generated sketch built with TINYCC_SELFTEST=1
prints; the serial example builds too. The layout follows the Arduino library specification (1.5 format)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tinycc.cli import main

from .arduino_harness import FQBN_MEGA, available, build, patched_hardware, run_simavr

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "digits_cnn.h5"
DATA = ROOT / "examples" / "digits_data.npz"

pytestmark = [pytest.mark.toolchain, pytest.mark.skipif(shutil.which("arduino-builder") is None,
                                                        reason="arduino-builder not installed")]


def _build_example(example: Path, libraries: Path, work: Path) -> tuple[Path, str]:
    hw = patched_hardware(work)
    out = work / f"build-{example.stem}"
    out.mkdir(exist_ok=True)
    r = subprocess.run(["arduino-builder", "-compile", "-hardware", "/usr/share/arduino-builder", "-hardware", str(hw),
                        "-tools", "/usr/share/arduino/hardware/tools/avr", "-tools", "/usr/share/arduino/tools",
                        "-libraries", str(libraries), "-fqbn", FQBN_MEGA, "-build-path", str(out),
                        "-prefs=compiler.cpp.extra_flags=-DDECIMAL_DIG=17", str(example)],
                       capture_output=True, text=True, timeout=900)
    text = r.stdout + r.stderr
    assert r.returncode == 0 and "Sketch uses" in text, text[-4000:]
    return out / f"{example.name}.elf", text


def test_library_layout_and_examples_build(tmp_path: Path) -> None:
    if not available():
        pytest.skip("simavr / AVR core not available")
    assert main(["compile", str(MODEL), "-t", "arduino", "--board", "mega2560", "--calib", str(DATA),
                 "-o", str(tmp_path / "p")]) == 0
    lib = tmp_path / "p" / "libraries" / "digits_cnn"
    props = dict(l.split("=", 1) for l in (lib / "library.properties").read_text().splitlines())
    assert props["name"] == "digits_cnn" and re.fullmatch(r"\d+\.\d+\.\d+", props["version"])
    assert props["includes"] == "digits_cnn.h" and props["architectures"] == "*"
    for key in ("author", "maintainer", "sentence", "paragraph", "category", "url"):
        assert key in props
    assert (lib / "src" / "digits_cnn.h").is_file() and (lib / "src" / "model.c").is_file()
    assert not list(lib.glob("*.ino")) and not (lib / "src" / "src").exists()
    selftest = lib / "examples" / "digits_cnn_selftest" / "digits_cnn_selftest.ino"
    serial = lib / "examples" / "digits_cnn_serial" / "digits_cnn_serial.ino"
    assert '#include "src/' not in selftest.read_text() + serial.read_text()

    # the library's examples, found through -libraries (the library is only there)
    elf, text = _build_example(selftest, tmp_path / "p" / "libraries", tmp_path)
    assert list((elf.parent / "libraries" / "digits_cnn").rglob("model.c.o"))  # compiled as the library
    _build_example(serial, tmp_path / "p" / "libraries", tmp_path)
    # the sketch itself, self-test on: the same report
    ref_elf, _, _ = build(tmp_path / "p" / "digits_cnn" / "digits_cnn.ino", tmp_path, defines=("TINYCC_SELFTEST=1",))
    got, want = run_simavr(elf), run_simavr(ref_elf)
    assert any("done" in l for l in want)
    assert got == want
