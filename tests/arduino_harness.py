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


TRACE_MAIN = Path(__file__).with_name("proto_trace_main.c")
BRIDGE_MAIN = Path(__file__).with_name("proto_bridge_main.c")


def build_host_proto(project: Path, name: str, exe: Path, main: Path | None = None,
                     defines: tuple[str, ...] = ()) -> Path:
    """The sketch's runtime and serial protocol (``project/name/src`` + ``extras/host_main.c``) built for the host
    with gcc -Werror and ASan/UBSan: bytes from stdin, replies on stdout. ``main=TRACE_MAIN``: the fuzzer's driver
    instead (one record per reply: offset of the request's last byte, size, bytes); ``defines``: more ``-D``."""
    import subprocess

    from .c_harness import SANITIZE, STRICT

    sk = project / name
    srcs = [main or sk / "extras" / "host_main.c"] + sorted((sk / "src").glob("*.c"))
    r = subprocess.run(["gcc", *STRICT, *SANITIZE, f"-DMODEL_INIT={name}_init", *(f"-D{d}" for d in defines),
                        "-I", str(sk / "src"), "-o", str(exe),
                        *map(str, srcs), "-lm"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    return exe
