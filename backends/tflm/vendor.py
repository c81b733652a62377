"""Build TensorFlow Lite Micro once from the vendored snapshots (``shared/vendor``) into a user cache.

The vendor folder holds ``tflite-micro-*.tar.xz``, ``cmsis-nn-*.tar.xz`` and ``build_tflm.sh``. The sources are
extracted and compiled into ``$TINYCC_CACHE/tflm/<hash>/`` (default ``~/.cache/tinycc``), where ``<hash>`` covers
the archives and the script, so a new snapshot gets a new folder. A file lock makes concurrent callers (pytest-xdist
workers) wait for one build; later calls return at once.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ...errors import TinyccError

KINDS = {"host": "libtflm-host.a", "m4": "libtflm-m4-ref.a", "m4-cmsis": "libtflm-m4-cmsis.a"}
SCRIPT_ARGS = {"host": ["host"], "m4": ["m4", "ref"], "m4-cmsis": ["m4", "cmsis"]}
ARCHIVES = ("tflite-micro-*.tar.xz", "cmsis-nn-*.tar.xz")


@dataclass(frozen=True)
class TflmLibrary:
    """A built TFLite Micro: the source tree (``TFLM_DIR``) and the static library (``TFLM_LIB``)."""

    tflm_dir: Path
    lib: Path
    build_seconds: float = 0.0  # time this call spent building (0 when it came from the cache)

    @property
    def include_flags(self) -> list[str]:
        d = self.tflm_dir
        return [f"-I{d}", f"-I{d / 'fb' / 'include'}", f"-I{d / 'gemmlowp'}", f"-I{d / 'ruyinc'}",
                "-DTF_LITE_STATIC_MEMORY"]


def cache_root() -> Path:
    """``$TINYCC_CACHE`` or ``~/.cache/tinycc``."""
    env = os.environ.get("TINYCC_CACHE")
    return Path(env).expanduser().resolve() if env else Path.home() / ".cache" / "tinycc"


def default_vendor_dir() -> Path | None:
    """``$TINYCC_VENDOR``, else ``shared/vendor`` beside a source checkout of tinycc; None when absent."""
    env = os.environ.get("TINYCC_VENDOR")
    path = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "vendor"
    return path if (path / "build_tflm.sh").is_file() else None


def missing_toolchain(kind: str) -> str | None:
    """Why TFLite Micro ``kind`` cannot be compiled here (no C++ compiler or no C++ headers), or None."""
    cxx = "g++" if kind == "host" else "arm-none-eabi-g++"
    if shutil.which(cxx) is None or shutil.which("make") is None:
        return f"{cxx} or make not installed"
    r = subprocess.run([cxx, "-x", "c++", "-std=c++17", "-fsyntax-only", "-"], input="#include <cstdint>\n",
                       capture_output=True, text=True)
    if r.returncode != 0:
        return f"{cxx} has no C++ standard library headers (Debian: libstdc++-arm-none-eabi-newlib)"
    return None


def _archives(vendor: Path) -> list[Path]:
    found = []
    for pattern in ARCHIVES:
        hits = sorted(vendor.glob(pattern))
        if len(hits) != 1:
            raise TinyccError(f"{vendor}: expected one {pattern}, found {len(hits)}")
        found.append(hits[0])
    if not (vendor / "build_tflm.sh").is_file():
        raise TinyccError(f"{vendor}: build_tflm.sh not found")
    return found


def snapshot_key(vendor: Path) -> str:
    """First 16 hex digits of the SHA-256 over the archives and the build script."""
    h = hashlib.sha256()
    for path in [*_archives(vendor), vendor / "build_tflm.sh"]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _extract(archive: Path, dest: Path, top: str) -> None:
    """Extract archive (whose single top folder is ``top``) into dest atomically (temp folder + rename)."""
    if (dest / top).is_dir():
        return
    with tempfile.TemporaryDirectory(dir=dest, prefix=f".{top}-") as tmp:
        with tarfile.open(archive, "r:xz") as tar:
            tar.extractall(tmp, filter="data")
        os.rename(Path(tmp) / top, dest / top)


def _build(vendor: Path, out: Path, kind: str, jobs: int) -> None:
    for archive, top in zip(_archives(vendor), ("tflite-micro", "cmsis-nn")):
        _extract(archive, out, top)
    cmd = ["bash", str(vendor / "build_tflm.sh"), str(out), *SCRIPT_ARGS[kind]]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "JOBS": str(jobs)})
    tag = KINDS[kind][len("libtflm-"):-len(".a")]
    failed = (out / f"failed-{tag}.txt").read_text().split() if (out / f"failed-{tag}.txt").exists() else []
    if r.returncode != 0 or failed or not (out / KINDS[kind]).is_file():
        detail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        if failed[1:]:  # "FAIL source" lines: the compiler's first error for the first one
            log = out / f"obj-{tag}" / (failed[1].replace("/", "_") + ".o.log")
            errors = [l for l in log.read_text().splitlines() if "error" in l] if log.exists() else []
            detail = errors[:1] or detail
        raise TinyccError(f"building TFLite Micro ({kind}) in {out} failed: {' '.join(failed[:2])} "
                          f"({len(failed) // 2} sources): {detail[0]}")


def ensure_library(vendor: Path, kind: str = "host", cache: Path | None = None, jobs: int | None = None) -> TflmLibrary:
    """Extract and build TFLite Micro ``kind`` (host, m4, m4-cmsis) once; return its source tree and library."""
    if kind not in KINDS:
        raise TinyccError(f"unknown TFLite Micro library kind {kind!r} (one of {', '.join(KINDS)})")
    out = (cache or cache_root()) / "tflm" / snapshot_key(vendor)
    out.mkdir(parents=True, exist_ok=True)
    lib, done = out / KINDS[kind], out / f"{KINDS[kind]}.done"
    if done.exists() and lib.is_file():  # built before: no lock needed (the marker is written last)
        return TflmLibrary(out / "tflite-micro", lib)
    start = time.perf_counter()
    # one lock per snapshot: the builds of different kinds share the extracted trees and the script's srcs.txt
    with open(out.parent / f"{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        built = False
        if not (done.exists() and lib.is_file()):
            why = missing_toolchain(kind)
            if why:
                raise TinyccError(f"cannot build TFLite Micro ({kind}): {why}")
            _build(vendor, out, kind, jobs or os.cpu_count() or 2)
            done.write_text(f"{time.perf_counter() - start:.1f} s\n")
            built = True
    return TflmLibrary(out / "tflite-micro", lib, time.perf_counter() - start if built else 0.0)
