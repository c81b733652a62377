"""The memory report's flash figure is exact per core: its flash items (all but the code estimate) equal the sizes
of the constant tables (tcc_*) that model.o defines, compiled as the generated Makefile compiles it: for the host
(no board: no assembly loops, no widened copies), for a Cortex-M4 board (the widened copies, and without the int8
weights, biases and requantization tables that only the portable kernels read) and with --no-widen (the int8
tables alone)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.passes import PassContext, run_pipeline

from .deploy_util import build_deployment, render_project
from .test_kernels import Layer, random_graph

# im2col and widened convolutions, pointwise layers (GEMM), a depthwise layer of the fast template, then the
# extractor's dense layer (GEMM, one pixel): every kernel with a widened copy
LAYERS: list[Layer] = [(0, 3, 3, 1, 1, True, 8, 1, True), (0, 3, 3, 1, 1, True, 12, 0, True),
                       (2, 1, 1, 1, 1, False, 16, 0, True), (1, 3, 3, 1, 1, True, 16, 0, True),
                       (2, 1, 1, 1, 1, False, 8, 1, True)]
HW = (7, 9)
BUILDS = {"host": None, "m4": "mps2_an386", "m4-no-widen": "mps2_an386"}


def _deploy(session, build: str, activations: str):
    g = random_graph(LAYERS, hw=HW, seed=5)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    calib = np.random.default_rng(5).normal(0.5, 1, (32, *HW, 3)).astype(np.float32)
    opts = {"calib_data": calib, "buffer": 2, "cut": "fc", "ram": 10 ** 7, "activations": activations}
    if BUILDS[build]:
        opts["board"] = BUILDS[build]
    if build == "m4-no-widen":
        opts["no_widen"] = True
    return build_deployment(g, opts, session, CBackend()), opts


def _make_var(makefile: str, name: str) -> str:
    m = re.search(rf"^{name} \??= (.*)$", makefile, re.M)
    assert m is not None, name
    return m.group(1)


def compile_model(project: Path, arm: bool, cpu: str = "m4") -> Path:
    """model.o as the generated Makefile builds the demo: CFLAGS for the host, ARM_FLAGS for ``cpu``."""
    mk = (project / "Makefile").read_text()
    if arm:
        cc = "arm-none-eabi-gcc"
        flags = _make_var(mk, f"CPU_FLAGS_{cpu}").split() + \
            _make_var(mk, "ARM_FLAGS").replace("$(CPU_FLAGS_$(CPU))", "").split()
    else:
        cc, flags = "gcc", _make_var(mk, "CFLAGS").split()
    obj = project / "model.o"
    subprocess.run([cc, *flags, "-c", "-I", str(project), "-I", str(project / "runtime"),
                    str(project / "model.c"), "-o", str(obj)], check=True)
    return obj


def table_symbols(obj: Path, arm: bool) -> dict[str, int]:
    """Bytes of each read-only tcc_* symbol (the constant tables) of an object."""
    out = subprocess.run(["arm-none-eabi-nm" if arm else "nm", "-S", "--size-sort", str(obj)],
                         capture_output=True, text=True, check=True).stdout
    return {p[3]: int(p[1], 16) for p in (line.split() for line in out.splitlines())
            if len(p) == 4 and p[2] in "rR" and p[3].startswith("tcc_")}


def flash_tables(items: list[dict]) -> dict[str, int]:
    """The report's flash items but the code estimate (name -> bytes)."""
    return {i["name"]: i["bytes"] for i in items if i["section"] == "flash" and i["name"] != "code"}


@pytest.mark.skipif(not shutil.which("arm-none-eabi-gcc"), reason="arm-none-eabi-gcc not installed")
@pytest.mark.parametrize("activations", ["int8", "int16"])
@pytest.mark.parametrize("build", list(BUILDS))
def test_flash_figure_equals_the_compiled_tables(session, tmp_path: Path, build: str, activations: str) -> None:
    dep, opts = _deploy(session, build, activations)
    render_project(dep, opts, tmp_path)
    arm = build != "host"
    syms = table_symbols(compile_model(tmp_path, arm), arm)
    flash = flash_tables(dep.memory["items"])  # what tinycc_memory.json holds
    assert sum(syms.values()) == sum(flash.values()), (flash, syms)
    widened = {k for k in syms if k.endswith("_widened")}
    narrow = {k for k in syms if k.endswith("_weights") and not k.startswith("tcc_classifier")}
    if build == "m4":  # the widened copies, and the int8 weights they replace taken out of the report and object
        assert widened and flash.get("kernel lookup tables", 0) >= sum(syms[k] for k in widened)
        weights = dep.extractor.tensors
        int8 = sum(t.nbytes for t in weights.values() if t.is_const and t.dtype.value == "int8")
        assert flash["extractor weights"] == sum(syms[k] for k in narrow) < int8
    else:  # one copy: every layer's int8 weights, no widened copy
        assert not widened and flash["extractor weights"] == sum(syms[k] for k in narrow) > 0


@pytest.mark.skipif(not shutil.which("arm-none-eabi-gcc"), reason="arm-none-eabi-gcc not installed")
@pytest.mark.parametrize("board,cpu", [(None, None), ("mps2_an386", "m4"), ("mps3_an547", "m55")])
def test_inference_report_with_a_per_tensor_dense_equals_the_object(session, tmp_path: Path, board: str | None,
                                                                     cpu: str | None) -> None:
    """The KWS model whole (--inference-only): its dense layer's requantization is per tensor (one multiplier and
    shift), the depthwise-separable blocks have widened copies on the Cortex-M4; the Cortex-M55 runs Helium
    functions, whose scalar form's widened copies its image does not carry."""
    from .conftest import mlperf_model
    from .deploy_util import compile_model as compile_cli

    model = mlperf_model("kws_ref_model.tflite")
    opts = {"inference_only": True, **({"board": board} if board else {})}
    compile_cli(str(model), "c", str(tmp_path), opts, session)
    arm = board is not None
    syms = table_symbols(compile_model(tmp_path, arm, cpu or "m4"), arm)
    flash = flash_tables(json.loads((tmp_path / "tinycc_memory.json").read_text())["items"])
    assert sum(syms.values()) == sum(flash.values()), (flash, syms)
    assert any(k.endswith("_widened") for k in syms) == (cpu == "m4")
