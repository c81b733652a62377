"""A Harvard core is target data (tinycc.targets.Target.harvard), not the family name "avr": a third-party plugin's
boards, registered through the ``tinycc_register_boards`` hook, on a Harvard target of its own family ("avrx",
avr-gcc for the ATmega2560) and on a plain one ("flatx"). The c project of the same ``--deep bias`` deployment runs
the trained region on the RAM-bias kernels (tcc_*_bram_s8) on avrx as on the built-in AVR and on the plain kernels
on flatx; avr-gcc builds avrx's model.c with the learned biases in RAM and the layers' tables in program memory;
the Harvard refusal (deep_project.refuse_harvard) follows the same field; a target's own TCC_READ_* (a plugin
Harvard core's, force-included) replace the runtime's."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pluggy
import pytest

from tinycc.errors import TinyccError
from tinycc.targets import AVR_ABI, ILP32, Board, Target

hookimpl = pluggy.HookimplMarker("tinycc")
K = 1024
AVRX = Target("avrx", "avrx", "avrx", AVR_ABI, "an AVR-like Harvard MCU of a plugin", "avr-gcc",
              "-mmcu=atmega2560 -Os", size_tool="avr-size", harvard=True)
FLATX = Target("flatx", "flatx", "flatx", ILP32, "a plugin's von Neumann MCU", "cc")
CALIB = np.random.default_rng(0).uniform(-1, 1, (16, 6, 6, 3)).astype(np.float32)
RUNTIME = Path(__file__).resolve().parents[1] / "backends" / "c" / "runtime"


class HarvardBoards:
    """The third-party plugin: its targets and a board on each."""

    @staticmethod
    @hookimpl
    def tinycc_register_boards(registry) -> None:
        registry.add_board(Board("avrx_board", 8 * K, 248 * K, "avrx", description="plugin Harvard board", target=AVRX))
        registry.add_board(Board("flatx_board", 8 * K, 248 * K, "flatx", description="plugin flat board", target=FLATX))


@pytest.fixture(scope="module")
def graph():
    from .sparse_util import tiny_graph

    return tiny_graph(6, (3, 4, 6))


def _project(graph, board: str, out: Path):
    """The c project of the --deep bias deployment (cut after the stem) for ``board``, with the plugin loaded."""
    from tinycc.backends.c import CBackend
    from tinycc.deploy import build_deep_deployment
    from tinycc.session import Session

    from .deploy_util import make_config

    session = Session(autoload=False, extra_plugins=(HarvardBoards,))
    config = make_config(session, deep=("bias",), lr=0.05, buffer=2, batch_size=2, board=board, deep_cut="stem")
    dep = build_deep_deployment(graph.copy(), config, session, CBackend(), CALIB)
    CBackend().emit(dep, out)
    return dep, (out / "model.c").read_text()


def _region(model_c: str) -> str:
    return model_c.split("static void tcc_deep_region")[1].split("\n}\n")[0]


def test_plugin_targets_are_registered_with_their_field(session) -> None:
    from tinycc.session import Session

    reg = Session(autoload=False, extra_plugins=(HarvardBoards,)).registry
    assert reg.target_of(reg.board("avrx_board")).harvard and not reg.target_of(reg.board("flatx_board")).harvard
    assert reg.target_of(reg.board("mega2560")).harvard  # the built-in AVR
    assert not any(reg.target_of(reg.board(b)).harvard for b in ("nano33ble", "esp32", "mps2_an386"))


def test_ram_bias_kernels_follow_the_harvard_field(graph, tmp_path: Path) -> None:
    """The trained region (c1, c2 and their int32 biases tcc_bq*) calls tcc_conv2d_bram_s8 on avrx and the
    built-in mega2560, tcc_conv2d_s8 on flatx; apart from the kernels' names the three regions are the same."""
    regions = {b: _region(_project(graph, b, tmp_path / b)[1]) for b in ("avrx_board", "mega2560", "flatx_board")}
    for b in ("avrx_board", "mega2560"):
        assert regions[b].count("tcc_conv2d_bram_s8(") == 2 and "tcc_conv2d_s8(" not in regions[b]
        assert regions[b] == regions["avrx_board"]
    assert "_bram_s8(" not in regions["flatx_board"] and regions["flatx_board"].count("tcc_conv2d_s8(") == 2
    assert regions["flatx_board"] == regions["avrx_board"].replace("_bram_s8(", "_s8(")
    assert re.search(r"tcc_bq\d", regions["avrx_board"])


@pytest.mark.skipif(not shutil.which("avr-gcc") or not shutil.which("avr-nm"), reason="avr-gcc not installed")
def test_avrx_model_builds_with_biases_in_ram(graph, tmp_path: Path) -> None:
    """avr-gcc -mmcu=atmega2560 (the avrx target's cflags) compiles the avrx project's model.c with -Wall -Wextra
    -Werror: the learned int32 biases (tcc_bq*) are RAM data (.data/.bss), the int8 weights (tcc_wq*) program
    memory (.progmem.data), as the RAM-bias kernels read them."""
    _, _ = _project(graph, "avrx_board", tmp_path / "p")
    src = tmp_path / "p" / "model.c"
    obj = tmp_path / "model.o"
    subprocess.run(["avr-gcc", *AVRX.cflags.split(), "-std=gnu11", "-Wall", "-Wextra", "-Werror",
                    f"-I{src.parent}", f"-I{src.parent / 'runtime'}", "-c", str(src), "-o", str(obj)], check=True,
                   timeout=120)
    sections = subprocess.run(["avr-objdump", "-t", str(obj)], capture_output=True, text=True, check=True).stdout
    where = {m.group(2): m.group(1) for m in re.finditer(r"^\S+\s+[lg]\s+O\s+(\S+)\s+\S+\s+(tcc_(?:bq|wq)\d+)$",
                                                          sections, re.M)}
    assert any(k.startswith("tcc_bq") for k in where) and any(k.startswith("tcc_wq") for k in where), sections
    for name, sec in where.items():
        assert sec in ((".data", ".bss") if name.startswith("tcc_bq") else (".progmem.data",)), (name, sec)


def test_refusal_follows_the_harvard_field(graph, tmp_path: Path) -> None:
    """refuse_harvard on a learner whose step would keep c1's frozen float weights (no region computed by the int8
    kernels: deep_emit.flash_problem names them): one TinyccError on avrx naming the target, nothing on flatx."""
    from tinycc.backends.c.deep_project import deep_learner, refuse_harvard

    for board, harvard in (("avrx_board", True), ("flatx_board", False)):
        dep, _ = _project(graph, board, tmp_path / board)
        learner = deep_learner(dep)
        refuse_harvard(dep, learner, "c")  # the real region: every constant is a flash table
        floats = SimpleNamespace(mode="bias", tail=learner.tail, region=SimpleNamespace(ops=()))
        if harvard:
            with pytest.raises(TinyccError, match=r"on avrx \(a Harvard core\) the step's constants are flash "
                                                  r"tables, but layer 'c1' keeps frozen float weights"):
                refuse_harvard(dep, floats, "c")
        else:
            refuse_harvard(dep, floats, "c")


@pytest.mark.skipif(not shutil.which("gcc") or not shutil.which("nm"), reason="gcc not installed")
def test_target_reads_replace_the_runtimes(tmp_path: Path) -> None:
    """A header force-included before the runtime (a plugin Harvard core's, Target.harvard) defines TCC_WEIGHT and
    TCC_READ_*: the kernels read their tables through its functions (undefined symbols of tinycc_kernels.o), and the
    runtime stops with an #error when it defines only some of them."""
    port = tmp_path / "port.h"
    port.write_text("#include <stdint.h>\nint8_t plug_s8(const void *p);\nint16_t plug_s16(const void *p);\n"
                    "int32_t plug_s32(const void *p);\nfloat plug_f32(const void *p);\n#define TCC_WEIGHT\n"
                    "#define TCC_READ_S8(p) plug_s8(p)\n#define TCC_READ_S16(p) plug_s16(p)\n"
                    "#define TCC_READ_S32(p) plug_s32(p)\n#define TCC_READ_F32(p) plug_f32(p)\n")
    obj = tmp_path / "k.o"
    cc = ["gcc", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{RUNTIME}", "-c",
          str(RUNTIME / "tinycc_kernels.c")]
    subprocess.run([*cc, "-include", str(port), "-o", str(obj)], check=True, timeout=120)
    undef = set(subprocess.run(["nm", "-u", str(obj)], capture_output=True, text=True, check=True).stdout.split())
    assert {"plug_s8", "plug_s32"} <= undef, undef
    plain = subprocess.run([*cc, "-o", str(tmp_path / "plain.o")], check=True, timeout=120)
    assert plain.returncode == 0 and "plug_s8" not in subprocess.run(
        ["nm", "-u", str(tmp_path / "plain.o")], capture_output=True, text=True).stdout
    port.write_text("#define TCC_READ_S8(p) (*(const signed char *)(p))\n")
    r = subprocess.run([*cc, "-include", str(port), "-o", str(obj)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "defines TCC_WEIGHT, TCC_READ_S16" in r.stderr
