"""The memory report against the symbol sizes of the compiled program: every static RAM byte of the generated
model and runtime (model.c, tinycc_kernels.c, tinycc_learn.c) compiled for the host (x86-64), Cortex-M4
(arm-none-eabi-gcc) and AVR (avr-gcc), for 3 models; the runtime's descriptor structs (tcc_layers, tcc_clf,
tcc_buf) are sized per target ABI and are "exact" only when a board names the ABI."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tinycc.backends.c import CBackend
from tinycc.backends.runtime_layout import DESCRIPTOR_FIELDS, descriptor_bytes, struct_size
from tinycc.targets import AVR_ABI, ILP32, LP64, host_abi
from .deploy_util import build_deployment, render_project

from .test_c_backend import _graph

WARN = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-c"]
# target -> (compiler, nm, flags, board, ABI); a board's budget is lifted with --ram/--flash, its ABI stays
TARGETS = {"host": ("gcc", "nm", ["-O1"], None, host_abi()),
           "m4": ("arm-none-eabi-gcc", "arm-none-eabi-nm",
                  ["-Os", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"], "mps2_an386",
                  ILP32),
           "avr": ("avr-gcc", "avr-nm", ["-Os", "-mmcu=atmega2560"], "mega2560", AVR_ABI)}
ABIS = {"lp64": LP64, "ilp32": ILP32, "avr": AVR_ABI}
MODELS = {"digits": {"buffer": 16, "lr": 0.05},
          "mlp": {"buffer": 9, "batch_size": 2, "policy": "reservoir"},
          "cnas_like": {"buffer": 7, "storage": "float32", "policy": "class_balanced"}}
SOURCES = ("model.c", "runtime/tinycc_kernels.c", "runtime/tinycc_learn.c")


def _static_ram(project: Path, cc: str, nm: str, flags: list[str], harvard: bool = False) -> dict[str, int]:
    """Bytes of every data/bss symbol of the model and runtime objects built for one target; ``harvard``
    (Target.harvard: avr-gcc links .rodata into RAM) and its read-only data symbols."""
    sizes: dict[str, int] = {}
    for src in SOURCES:
        obj = project / (Path(src).stem + f"-{cc}.o")
        r = subprocess.run([cc, *WARN, *flags, "-I", str(project), "-I", str(project / "runtime"), "-o", str(obj),
                            str(project / src)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        out = subprocess.run([nm, "-S", str(obj)], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            f = line.split()
            if len(f) == 4 and f[2] in "bBdDgGsS":
                sizes[f[3]] = int(f[1], 16)
        if harvard:  # nm calls program-memory tables read-only data too: the section tells .rodata apart
            out = subprocess.run([nm[:-2] + "objdump", "-t", str(obj)], capture_output=True, text=True,
                                 check=True).stdout
            for line in out.splitlines():
                f = line.split()
                if len(f) >= 6 and f[-3] == ".rodata" and "O" in f[1:-3]:
                    sizes[f[-1]] = int(f[-2], 16)
    return sizes


@pytest.mark.parametrize("target", list(TARGETS))
def test_memory_report_equals_symbol_sizes(session, tmp_path: Path, target: str) -> None:
    cc, nm, flags, board, abi = TARGETS[target]
    if not (shutil.which(cc) and shutil.which(nm)):
        pytest.skip(f"{cc} is not installed")
    for name, extra in MODELS.items():
        g, _, _, calib = _graph(session, name)
        opts = {"calib_data": calib, "epochs": 1, **extra}
        if board:
            opts.update(board=board, ram=10 ** 7, flash=10 ** 8)
        dep = build_deployment(g, opts, session, CBackend())
        proj = tmp_path / name
        proj.mkdir()
        render_project(dep, opts, proj)
        harvard = board is not None and session.registry.target_of(session.registry.board(board)).harvard
        sizes = _static_ram(proj, cc, nm, flags, harvard)
        assert sum(sizes.values()) == dep.memory["static_ram"], (name, sizes, dep.memory["report"])
        want = descriptor_bytes(len(dep.classifier), abi)
        assert {k: sizes[k] for k in want} == want, name
        items = {i["name"]: i for i in dep.memory["items"] if i["section"] == "ram"}
        assert items["runtime descriptors"]["bytes"] == sum(want.values())
        # exact: every RAM item with a board; without one the descriptors are the host's sizes, flagged not exact
        assert all(i["exact"] for n, i in items.items() if n != "runtime descriptors")
        # a Harvard core's only plain const data: model.h's input scale and zero point, its "public constants"
        assert harvard == ("public constants" in items), name
        if harvard:
            assert items["public constants"]["bytes"] == sizes[f"{dep.name}_input_scale"] + \
                sizes[f"{dep.name}_input_zero_point"] == 8
        assert items["runtime descriptors"]["exact"] == (board is not None), name


def test_descriptor_layouts_per_abi() -> None:
    """sizeof of the runtime's structs on the three ABIs, worked out by hand from tinycc_learn.h (tcc_buffer_t ends
    with the int16 entries' pointer q16; tcc_dense_t has the leaky relu slope alpha after train: 5 ints, 6 pointers)."""
    sizes = {k: {s: struct_size(f, a) for s, f in DESCRIPTOR_FIELDS.items()} for k, a in ABIS.items()}
    assert sizes["lp64"] == {"tcc_dense_t": 72, "tcc_classifier_t": 24, "tcc_buffer_t": 104}
    assert sizes["ilp32"] == {"tcc_dense_t": 44, "tcc_classifier_t": 16, "tcc_buffer_t": 72}
    assert sizes["avr"] == {"tcc_dense_t": 32, "tcc_classifier_t": 14, "tcc_buffer_t": 56}


def test_arduino_report_flags_its_estimates(session) -> None:
    """On Arduino the core reserve is an allowance (not exact); the descriptors are exact for the board's ABI."""
    from tinycc.backends.arduino import CORE_RESERVE, ArduinoBackend

    g, _, _, calib = _graph(session, "mlp")
    dep = build_deployment(g, {"calib_data": calib, "buffer": 4, "board": "mega2560"}, session, ArduinoBackend())
    items = {i["name"]: i for i in dep.memory["items"]}
    assert items["runtime state"]["bytes"] > CORE_RESERVE and not items["runtime state"]["exact"]
    want = sum(descriptor_bytes(len(dep.classifier), AVR_ABI).values())
    assert items["runtime descriptors"]["bytes"] == want and items["runtime descriptors"]["exact"]
