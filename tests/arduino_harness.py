"""Arduino builds in simavr for the tests: the package's runner (tinycc.backends.arduino.simavr)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

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


def assert_sketch_learns_like_the_simulator(dep: Any, x: Any, y: Any, work: Path, learn: int | None = None) -> None:
    """Build ``dep``'s self-test sketch (``x``, ``y`` embedded; ``learn`` learn steps, default one per vector, over
    the vectors in turn), run it in simavr and compare its predictions before and after learning with the host
    simulator's (tinycc.ir.simulator.Simulator) on the same samples."""
    from tinycc.backends.arduino import ArduinoBackend

    from .deploy_util import emit

    n = len(x)
    learn = n if learn is None else learn
    emit(ArduinoBackend(), dep, {"selftest": True, "test_vectors": (x, y), "test_count": n, "test_learn": learn}, work)
    elf, _, _ = build(work / dep.name / f"{dep.name}.ino", work)
    assert_simavr_predicts_like_the_simulator(elf, dep, x, y, learn)


def assert_simavr_predicts_like_the_simulator(elf: Path, dep: Any, x: Any, y: Any, learn: int) -> None:
    """Run the self-test sketch ``elf`` (``dep``'s, with ``x``, ``y`` embedded and ``learn`` learn steps over the
    vectors in turn) in simavr: its predictions before and after learning equal the host simulator's."""
    from tinycc.backends.demo import report_predictions
    from tinycc.ir.simulator import Simulator

    n = len(x)
    lines = run_simavr(elf)
    rows = report_predictions("\n".join(lines[lines.index(next(l for l in lines if l.startswith("tinycc demo"))):]))
    sim = Simulator(dep)
    assert rows["before"] == list(sim.predict(x)[0])
    for i in range(learn):
        sim.learn(x[i % n], int(y[i % n]))
    assert rows["after"] == list(sim.predict(x)[0])
