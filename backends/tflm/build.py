"""Build and run a generated tflm project with its own Makefile (host, or Cortex-M4 under QEMU).

``build_host(project)`` builds TFLite Micro from the vendored snapshot when needed (``vendor.ensure_library``),
then ``make tinycc_demo``; ``run(exe)`` runs the demo and returns its output. Used by the tests and by
``tinycc validate --target tflm``.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from ...errors import TinyccError
from . import vendor

SANITIZE = "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"


def find_library(kind: str, vendor_dir: Path | None, library: vendor.TflmLibrary | None) -> vendor.TflmLibrary:
    if library is not None:
        return library
    vendor_dir = vendor_dir or vendor.default_vendor_dir()
    if vendor_dir is None:
        raise TinyccError("TensorFlow Lite Micro sources not found: set TINYCC_VENDOR to the vendor folder "
                          "(tflite-micro-*.tar.xz, cmsis-nn-*.tar.xz, build_tflm.sh)")
    return vendor.ensure_library(vendor_dir, kind)


def _make(project: Path, target: str, lib: vendor.TflmLibrary, *extra: str) -> None:
    if not (project / "Makefile").is_file() or not (project / "src" / "tinycc_tflm.cc").is_file():
        raise TinyccError(f"{project}: not a tflm project (no Makefile or src/tinycc_tflm.cc)")
    cmd = ["make", "-s", "-C", str(project), target, f"TFLM_DIR={lib.tflm_dir}", f"TFLM_LIB={lib.lib}", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise TinyccError(f"building {project} ({target}) failed: {(r.stderr or r.stdout)[-4000:]}")


def build_host(project: Path, *, sanitize: bool = False, vendor_dir: Path | None = None,
               library: vendor.TflmLibrary | None = None) -> Path:
    """``make tinycc_demo`` against the host TFLite Micro library; returns the executable."""
    lib = find_library("host", vendor_dir, library)
    _make(project, "tinycc_demo", lib, *([f"EXTRA={SANITIZE}"] if sanitize else []))
    return project / "tinycc_demo"


def build_cortexm(project: Path, *, dump: bool = True, vendor_dir: Path | None = None,
                  library: vendor.TflmLibrary | None = None) -> Path:
    """``make cortexm`` (Cortex-M4F, -Os) against the m4 reference-kernel library; ``dump``: the demo prints its
    machine-readable lines (``DUMP=1``, no command line on the board). Returns the ELF."""
    lib = find_library("m4", vendor_dir, library)
    _make(project, "cortexm", lib, *(["DUMP=1"] if dump else []))
    return project / f"tinycc_demo{'-dump' if dump else ''}.elf"


def run(exe: Path, dump: bool = True, timeout: float = 600) -> str:
    """Run the host demo; ``dump`` asks for the machine-readable lines. Returns stdout; TinyccError on failure."""
    r = subprocess.run([str(exe), *(["--dump"] if dump else [])], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0 or "runtime error" in r.stderr or "ERROR: AddressSanitizer" in r.stderr:
        raise TinyccError(f"{exe} failed ({r.returncode}): {(r.stderr or r.stdout)[-4000:]}")
    return r.stdout
