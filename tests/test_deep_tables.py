"""The --deep / --train sparse learn step's tables (backends/c/deep_emit.py through backends/c/tables.py): int8 and
int32 tables as strings of their bytes, the wider ones a union named ``name.v`` by the step, the region's kernel calls
and the backbone accessors; floats as their shortest literals.

Oracle: the same project with every integer table written as a list of numbers (tables.PACK_BYTES out of reach).
With every integer table packed (PACK_BYTES 1: the int8 weights ``tcc_wq`` in flash, their RAM channel copies
``tcc_w8``, the int32 channel rows ``tcc_row`` in flash and the int32 biases ``tcc_bq`` in RAM) model.c compiles to
the same object file, byte for byte, on the host (cc -O2), a Cortex-M4 (arm-none-eabi-gcc -Os) and an AVR
(avr-gcc -Os: the flash tables in program memory, read through TCC_READ_*), under -Wall -Wextra -Werror -pedantic;
the learning itself is the deep project tests' (tests/test_deep_project.py, test_sparse_project.py)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tinycc.backends.c import CBackend, tables

from .sparse_util import sparse_dep, tiny_graph
from .test_deep_deploy import graph  # noqa: F401  (module fixture)
from .test_deep_project import _deploy
from .test_sparse_project import SPECS
from .test_tables import assert_same_objects


@pytest.fixture(scope="module")
def small():
    return tiny_graph()


@pytest.mark.parametrize("mode", ["bias", "blocks", "sparse"])
def test_packed_step_tables_compile_to_the_same_objects(graph, small, tmp_path: Path, mode: str,  # noqa: F811
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    dep = (sparse_dep(small, SPECS["bias+channels"], entries=3, buffer=4) if mode == "sparse"
           else _deploy(graph, mode, buffer=3, batch_size=2))
    packed, listed = tmp_path / "packed", tmp_path / "listed"
    with monkeypatch.context() as m:
        m.setattr(tables, "PACK_BYTES", 1)
        CBackend().emit(dep, packed)
    with monkeypatch.context() as m:
        m.setattr(tables, "PACK_BYTES", 1 << 62)
        CBackend().emit(dep, listed)
    text, plain = (packed / "model.c").read_text(), (listed / "model.c").read_text()
    assert "TCC_BYTES" not in plain
    floats = re.findall(r"^(?:const )?float tcc_(?:ws|bs|dw|db|cv)\d+\[\d+\][^=\n]*= \{\n(.*?)\n\};", plain,
                        re.M | re.S)
    assert floats and not any("e-0" in body or "e+0" in body for body in floats)  # the shortest literals (c_float)
    step = {"bias": ["tcc_wq", "tcc_bq"], "blocks": [], "sparse": ["tcc_wq", "tcc_w8", "tcc_row", "tcc_bq"]}[mode]
    for name in step:  # each kind of the step's integer tables is packed, the wider ones used as name.v
        assert re.search(rf"int8_t {name}\d+\[\d+\] TCC_BYTES", text) or re.search(
            rf"union {{ int8_t b\[\d+\] TCC_BYTES; int32_t v\[\d+\]; }}\n    {name}\d+", text), name
        if name in ("tcc_bq", "tcc_row"):  # every use names the union's int32 array (the definition aside)
            bare = [line for line in text.splitlines() if re.search(rf"\b{name}\d+\b(?!\.v)", line)
                    and not re.fullmatch(rf"    {name}\d+(?: TCC_WEIGHT)? = {{", line)]
            assert re.search(rf"\b{name}\d+\.v\b", text) and not bare, (name, bare[:3])
    assert_same_objects(packed, listed)
