"""Targets as data (tinycc.targets): the built-in boards' targets choose the generated Makefile's CPU, and a board
from outside, the RISC-V plugin of examples/tinycc-riscv pip-installed into a private folder (found through its
``tinycc`` entry point, no change to tinycc), compiles, builds, runs in qemu-system-riscv32 and validates bit
for bit against run_int8 and the simulator."""
from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .deploy_util import compile_model
from tinycc.targets import BUILTIN_TARGETS, family, platforms

from .conftest import mlperf_model

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "digits_cnn.h5"
DATA = ROOT / "examples" / "digits_data.npz"
PICOLIBC = Path("/usr/lib/picolibc/riscv64-unknown-elf/picolibc.specs")
have_riscv = pytest.mark.skipif(
    not (shutil.which("riscv64-unknown-elf-gcc") and shutil.which("qemu-system-riscv32") and PICOLIBC.is_file()),
    reason="gcc-riscv64-unknown-elf, picolibc-riscv64-unknown-elf or qemu-system-misc not installed")


@pytest.fixture(scope="module")
def riscv_site(tmp_path_factory) -> Path:
    """pip-install the RISC-V board plugin into a private folder (no change to the environment)."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(ROOT / "examples" / "tinycc-riscv")], check=True)
    return site


def _cli(site: Path | None, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("TINYCC_DISABLE_PLUGIN_AUTOLOAD", None)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-m", "tinycc.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_builtin_lists_derive_from_the_targets() -> None:
    from tinycc.backends.c import CBackend, cortexm, run

    assert cortexm.CPUS == ("m4", "m7", "m0plus", "m55") == tuple(t.name for t in family(BUILTIN_TARGETS, "cortexm"))
    assert run.PLATFORMS == CBackend.platforms == ("host", "qemu-m4", "qemu-m7", "qemu-m0plus", "qemu-m55")
    assert platforms(BUILTIN_TARGETS, "arduino") == ("simavr",)
    assert cortexm.DEFAULT_BOARD == {"m4": "mps2-an386", "m7": "mps2-an500", "m0plus": "mps2-an385", "m55": "mps3-an547"}
    assert {m["name"]: (m["tick"], m["link"]) for m in cortexm.machines()} == {
        "mps2-an386": ("400u", "cortexm/link.ld"), "mps2-an500": ("400u", "cortexm/link.ld"),
        "mps2-an385": ("400u", "cortexm/link.ld"), "mps3-an547": ("312.5", "cortexm/link-mps3.ld"),
        "microbit": ("625u", "cortexm/link-microbit.ld")}


def test_board_chooses_the_makefile_cpu(session, tmp_path: Path) -> None:
    """--board portenta_h7 (a Cortex-M7) and --board mps2_an386 (a Cortex-M4; both 32-bit, same code-size
    table) give the same project but for the Makefile's default CPU, so that `make cortexm` compiles with
    -mcpu=cortex-m7, and the memory report's stack line, which names the core it was measured for."""
    opts = {"calib": str(DATA), "buffer": 8}
    compile_model(str(MODEL), "c", str(tmp_path / "m4"), {**opts, "board": "mps2_an386"}, session)
    compile_model(str(MODEL), "c", str(tmp_path / "h7"), {**opts, "board": "portenta_h7"}, session)
    files = sorted(p.relative_to(tmp_path / "m4") for p in (tmp_path / "m4").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "h7") for p in (tmp_path / "h7").rglob("*") if p.is_file())
    differ = [f for f in files if (tmp_path / "m4" / f).read_bytes() != (tmp_path / "h7" / f).read_bytes()]
    assert differ == [Path("Makefile"), Path("README.md"), Path("tinycc_memory.json")]
    for f in differ[1:]:  # the stack line's detail names the core; the figures are the same
        a = (tmp_path / "m4" / f).read_text().splitlines()
        b = (tmp_path / "h7" / f).read_text().splitlines()
        changed = [(x, y) for x, y in zip(a, b) if x != y]
        assert changed and all(x.replace("Cortex-M4", "Cortex-M7") == y for x, y in changed) and len(a) == len(b)
    a = (tmp_path / "m4" / "Makefile").read_text().splitlines()
    b = (tmp_path / "h7" / "Makefile").read_text().splitlines()
    assert [(x, y) for x, y in zip(a, b) if x != y] == [("CPU ?= m4", "CPU ?= m7")] and len(a) == len(b)
    if shutil.which("make"):
        dry = subprocess.run(["make", "-n", "-C", str(tmp_path / "h7"), "cortexm"], capture_output=True, text=True)
        assert "-mcpu=cortex-m7" in dry.stdout and "-mcpu=cortex-m4" not in dry.stdout, dry.stdout


def test_arduino_readme_names_the_boards_fqbn(session, tmp_path: Path) -> None:
    """The Board's FQBN reaches the sketch's README (it said `--fqbn BOARD` for every registered board)."""
    compile_model(str(MODEL), "arduino", str(tmp_path / "o"), {"calib": str(DATA), "board": "mega2560"}, session)
    readme = next((tmp_path / "o").rglob("README.md")).read_text()
    assert "--fqbn arduino:avr:mega:cpu=atmega2560" in readme and "--fqbn BOARD" not in readme


def test_unknown_board_is_one_line_without_the_plugin(tmp_path: Path) -> None:
    r = _cli(None, "-p", "no:riscv", "compile", str(MODEL), "--target", "c", "--board", "qemu_virt_rv32",
             "-o", str(tmp_path / "o"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown board 'qemu_virt_rv32'" in r.stderr, r.stderr


def test_plugins_lists_the_riscv_board(riscv_site: Path) -> None:
    r = _cli(riscv_site, "plugins")
    assert r.returncode == 0, r.stderr
    assert re.search(r"riscv\s+tinycc-riscv 0\.1\.0", r.stdout), r.stdout
    assert re.search(r"rv32imc\s+from riscv\s+riscv32, validate --on qemu-rv32imc", r.stdout), r.stdout
    assert re.search(r"qemu_virt_rv32\s+from riscv\s+RAM 4,096 KB, flash 4,096 KB, rv32imc", r.stdout), r.stdout


@have_riscv
def test_riscv_board_compiles_builds_and_validates(riscv_site: Path, tmp_path: Path) -> None:
    """`compile --board qemu_virt_rv32` writes the plugin's start-up code and linker script and a Makefile whose
    `make riscv` builds (-Werror); `validate --on qemu-rv32imc` runs the demo in QEMU: features equal run_int8
    bit for bit, classes before and after learning equal the simulator's, instructions counted by rdinstret."""
    proj = tmp_path / "rv"
    r = _cli(riscv_site, "compile", str(MODEL), "--target", "c", "--board", "qemu_virt_rv32", "--calib", str(DATA),
             "--buffer", "16", "-o", str(proj))
    assert r.returncode == 0, r.stderr
    src = ROOT / "examples" / "tinycc-riscv" / "tinycc_riscv"
    assert (proj / "riscv" / "startup.c").read_text() == (src / "startup.c").read_text()
    assert (proj / "riscv" / "link.ld").read_text() == (src / "link.ld").read_text()
    assert "rdinstret" in (proj / "main.c").read_text()
    b = subprocess.run(["make", "-s", "-C", str(proj), "riscv", "DUMP=1"], capture_output=True, text=True)
    assert b.returncode == 0, b.stdout + b.stderr
    q = subprocess.run(["qemu-system-riscv32", "-M", "virt", "-nographic", "-bios", "none", "-icount", "shift=0",
                        "-kernel", str(proj / "tinycc_demo-rv32imc-dump.elf")], capture_output=True, text=True,
                       timeout=300, stdin=subprocess.DEVNULL)
    assert q.returncode == 0 and q.stdout.rstrip().endswith("done"), q.stdout[-2000:]
    n = 8
    r = _cli(riscv_site, "validate", str(MODEL), "--target", "c", "--data", str(DATA), "--on", "qemu-rv32imc",
             "-n", str(n), "--project", str(proj), "--calib", str(DATA), "--buffer", "16", "--board", "qemu_virt_rv32")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(rf"int8 features, bit-exact\s+{n}/{n} equal, max \|diff\| 0", r.stdout), r.stdout
    assert re.search(rf"top-1 after {n} learn calls\s+{n}/{n} agree", r.stdout), r.stdout
    m = re.search(r"time per call\s+features ([\d,]+), predict ([\d,]+), learn ([\d,]+) instructions", r.stdout)
    assert m and 0 < int(m.group(1).replace(",", "")), r.stdout
    assert "PASS" in r.stdout.splitlines()[-1]
    r = _cli(riscv_site, "validate", str(MODEL), "--target", "c", "--data", str(DATA), "--on", "qemu-m3")
    assert r.returncode == 2 and "runs on host, qemu-m4, qemu-m7, qemu-m0plus, qemu-m55, qemu-rv32imc" in r.stderr, r.stderr


def _int8_grid_samples(model: Path, out: Path, n: int, seed: int) -> None:
    """``n`` random inputs on an int8 .tflite model's input grid (exactly representable) and random labels, saved
    as a validate data file."""
    from tinycc.plugins.frontends.tflite import read_tflite

    g = read_tflite(str(model))
    t = g.tensors[g.inputs[0]]
    s, zp = float(t.quant.scale[0]), int(t.quant.zero_point[0])
    rng = np.random.default_rng(seed)
    x = (s * (rng.integers(-128, 128, (n,) + tuple(t.shape[1:])) - zp)).astype(np.float32)
    np.savez(out, x=x, y=rng.integers(0, int(g.tensors[g.outputs[0]].shape[-1]), n))


@have_riscv
@pytest.mark.slow
def test_riscv_validates_an_mlperf_model(riscv_site: Path, tmp_path: Path) -> None:
    """MLPerf Tiny's keyword-spotting model on RV32IMC in QEMU: int8 features equal run_int8 bit for bit."""
    from tinycc.plugins.applications.validate import validate
    from tinycc.session import Session

    from .deploy_util import config

    path = mlperf_model("kws_ref_model.tflite")
    n = 4
    _int8_grid_samples(path, tmp_path / "kws.npz", n, seed=0)
    sys.path.insert(0, str(riscv_site))
    try:
        session = Session(autoload=True)
        assert session.registry.boards["qemu_virt_rv32"].plugin == "riscv"
        out = io.StringIO()
        rc = validate(str(path), "c", str(tmp_path / "kws.npz"), "qemu-rv32imc", n, None,
                      config(session, {"buffer": 2}), session, out)
    finally:
        sys.path.remove(str(riscv_site))
        for mod in [m for m in sys.modules if m.startswith("tinycc_riscv")]:
            del sys.modules[mod]
    text = out.getvalue()
    assert rc == 0, text
    assert re.search(rf"int8 features, bit-exact\s+{n}/{n} equal, max \|diff\| 0", text), text


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                    reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("name", ["pretrainedResnet_quant.tflite", "kws_ref_model.tflite", "vww_96_int8.tflite"])
def test_cortex_m55_validates_the_mlperf_models(session, tmp_path: Path, name: str) -> None:
    """The built-in Cortex-M55 target (QEMU mps3-an547, its own linker script and 32 MHz SysTick) on its board
    preset: int8 features equal run_int8 bit for bit, the build's RAM holds the compile report's."""
    from tinycc.plugins.applications.validate import validate

    from .deploy_util import config

    path = mlperf_model(name)
    n = 2
    _int8_grid_samples(path, tmp_path / "d.npz", n, seed=1)
    out = io.StringIO()
    rc = validate(str(path), "c", str(tmp_path / "d.npz"), "qemu-m55", n, None,
                  config(session, {"buffer": 2, "board": "mps3_an547"}), session, out)
    text = out.getvalue()
    assert rc == 0, text
    assert re.search(rf"int8 features, bit-exact\s+{n}/{n} equal, max \|diff\| 0", text), text
    assert "memory constants in the program" in text and "ok" in text.split("memory constants in the program")[1].splitlines()[0]
