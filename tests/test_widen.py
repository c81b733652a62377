"""--no-widen and the flash budget: on a Cortex-M4 board the generated kernels read int16 copies of the weights
(widened at compile time, a second copy in flash); --no-widen leaves them out (the kernels widen as they run),
bit-exact under QEMU and with a memory report that equals the arrays model.o defines; a --flash budget that only
the copies exceed drops them by itself, and one that neither fits names the widened build's shortfall."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.errors import BudgetError
from tinycc.ir.simulator import Simulator
from tinycc.passes import PassContext, run_pipeline

from . import c_harness
from .deploy_util import build_deployment, render_project
from .test_kernels import Layer, random_graph

# a plain and a gathered (im2col) convolution, pointwise (GEMM) layers and a depthwise layer whose widened
# weights go to flash (132 channels): every kernel that has a widened copy
LAYERS: list[Layer] = [(0, 3, 3, 1, 1, True, 8, 1, True), (0, 3, 3, 1, 1, True, 12, 0, True),
                       (2, 1, 1, 1, 1, False, 132, 0, True), (1, 3, 3, 1, 1, True, 132, 0, True),
                       (2, 1, 1, 1, 1, False, 16, 1, True)]
HW = (7, 9)


def _deploy(session, **opts):
    g = random_graph(LAYERS, hw=HW, seed=21)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    rng = np.random.default_rng(21)
    base = {"calib_data": rng.normal(0.5, 1, (32, *HW, 3)).astype(np.float32), "buffer": 2, "cut": "fc",
            "board": "mps2_an386", "ram": 10 ** 7}
    return build_deployment(g, {**base, **opts}, session, CBackend()), base


def _tables(dep) -> int:
    return next((i["bytes"] for i in dep.memory["items"] if i["name"] == "kernel lookup tables"), 0)  # 0: no item


def _flash(dep) -> int:
    return sum(i["bytes"] for i in dep.memory["items"] if i["section"] == "flash")


def test_no_widen_option_reaches_the_config(session) -> None:
    from tinycc.config import make_config

    assert make_config(session).memory.widen is True
    assert make_config(session, no_widen=True).memory.widen is False


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_no_widen_drops_the_copies_bit_exact(session, tmp_path: Path) -> None:
    """--no-widen: no `_widened` array in model.o, the kernel tables item smaller by exactly the copies' bytes,
    the report's flash arrays equal to model.o's, features equal to the interpreter under QEMU on the
    Cortex-M4."""
    from tinycc.backends.c.kernels import table_bytes

    wide, _ = _deploy(session)
    narrow, opts = _deploy(session, no_widen=True)
    copies = table_bytes(wide.extractor, "tinycc") - table_bytes(wide.extractor, "tinycc", widen=False)
    assert copies > 2 * 2 * 9 * 132  # the depthwise layer's copy and more
    assert _tables(wide) - _tables(narrow) == copies
    x = np.random.default_rng(5).normal(0.5, 1, (4, *HW, 3)).astype(np.float32)
    render_project(narrow, {**opts, "test_vectors": (x, np.zeros(len(x), np.int64)), "test_count": len(x),
                            "test_learn": 1}, tmp_path)
    code = (tmp_path / "model.c").read_text()
    assert not [n for n in c_harness.model_tables(code) if n.endswith("_widened")] and "TCC_WW(" not in code
    obj = tmp_path / "model.o"
    subprocess.run(["arm-none-eabi-gcc", *c_harness.STRICT, "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
                    "-mfpu=fpv4-sp-d16", "-Os", "-c", "-I", str(tmp_path), "-I", str(tmp_path / "runtime"),
                    str(tmp_path / "model.c"), "-o", str(obj)], check=True)
    syms = subprocess.run(["arm-none-eabi-nm", "-S", str(obj)], capture_output=True, text=True, check=True).stdout
    assert "_widened" not in syms
    sizes = [int(p[1], 16) for p in (line.split() for line in syms.splitlines())
             if len(p) == 4 and p[2] in "rR" and p[3].startswith("tcc_")]
    flash = sum(i["bytes"] for i in narrow.memory["items"] if i["section"] == "flash" and i["name"] != "code")
    assert 0 < sum(sizes) == flash  # exact: one copy of every table, the int8 ones
    out, _ = c_harness.build_and_run_qemu(tmp_path, "m4")
    feats = Simulator(narrow).features(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"input {i}")


def test_flash_budget_drops_the_copies_by_itself(session) -> None:
    """A --flash budget between the two builds' flash compiles without the copies (and says so in meta); one
    below both is refused with the widened build's shortfall."""
    wide, _ = _deploy(session, flash=10 ** 8)
    narrow, _ = _deploy(session, flash=10 ** 8, no_widen=True)
    assert wide.config.memory.widen and not narrow.config.memory.widen
    assert _flash(narrow) < _flash(wide)
    fallback, _ = _deploy(session, flash=_flash(wide) - 1)
    assert fallback.config.memory.widen is False and fallback.meta.get("widen_dropped") is True
    assert _flash(fallback) == _flash(narrow)
    with pytest.raises(BudgetError, match=f"FLASH needs {_flash(wide):,} bytes"):
        _deploy(session, flash=_flash(narrow) - 1)


def test_deep_deployment_drops_the_copies_by_itself(session) -> None:
    """`--deep bias` under a --flash budget only the widened copies exceed: compiled without them (meta says so),
    the same flash as with --no-widen; a budget below both is refused with the widened build's shortfall."""
    from tinycc.deploy import build_deep_deployment

    from .deploy_util import make_config

    g = random_graph(LAYERS, hw=HW, seed=21)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    calib = np.random.default_rng(21).normal(0.5, 1, (32, *HW, 3)).astype(np.float32)

    def deep(**opts):
        config = make_config(session, deep=("bias",), board="mps2_an386", ram=10 ** 7, buffer=2, **opts)
        return build_deep_deployment(g.copy(), config, session, CBackend(), calib)

    wide, narrow = deep(flash=10 ** 8), deep(flash=10 ** 8, no_widen=True)
    assert _flash(narrow) < _flash(wide)
    fallback = deep(flash=_flash(wide) - 1)
    assert fallback.config.memory.widen is False and fallback.meta.get("widen_dropped") is True
    assert _flash(fallback) == _flash(narrow) and fallback.meta["deep"]["mode"] == "bias"
    with pytest.raises(BudgetError, match=f"FLASH needs {_flash(wide):,} bytes"):
        deep(flash=_flash(narrow) - 1)
