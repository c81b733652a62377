"""Constant tables written as strings of their bytes (backends/c/tables.py).

Oracle: the same model.c with every table written as a list of numbers. Both compile to the same object file,
byte for byte, with the flags of each core's build (host cc -O2, arm-none-eabi-gcc -Os for a DSP Cortex-M4 where
the widened int32 tables are compiled in, avr-gcc with the tables in program memory), under -Wall -Wextra -Werror
-pedantic."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend, tables
from tinycc.session import Session

from .deploy_util import build_deployment, render_project
from .test_generated_code import _digits, _kws

ROOT = Path(__file__).resolve().parents[1]
WARN = ["-Wall", "-Wextra", "-Werror", "-pedantic"]
CORES = {
    "host": ["cc", "-std=c99", "-O2"],
    "cortex-m4": ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16",
                  "-std=c99", "-Os"],
    "avr": ["avr-gcc", "-mmcu=atmega2560", "-std=gnu11", "-Os"],
}


def _object(project: Path, flags: list[str]) -> bytes:
    """model.o of the project (compiled in its folder, so the object names the same source file)."""
    subprocess.run([*flags, *WARN, "-I.", "-Iruntime", "-c", "model.c", "-o", "model.o"], cwd=project, check=True,
                   capture_output=True, text=True)
    return (project / "model.o").read_bytes()

def assert_same_objects(a: Path, b: Path) -> None:
    """model.c of projects ``a`` and ``b`` compile to the same object on every core whose compiler is installed
    (the host's at least)."""
    compared = 0
    for core, flags in CORES.items():
        if shutil.which(flags[0]) is None:
            continue
        assert _object(a, flags) == _object(b, flags), core
        compared += 1
    assert compared >= 1 and shutil.which("cc")



@pytest.mark.parametrize("model", ["digits", "kws"])
def test_packed_tables_compile_to_the_same_objects(tmp_path: Path, model: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    session = Session(autoload=False)
    g, opts = (_digits if model == "digits" else _kws)(session)  # the generated-code tests' two models
    dep = build_deployment(g, opts, session, CBackend())
    packed, listed = tmp_path / "packed", tmp_path / "listed"
    render_project(dep, opts, packed, with_main=False)
    with monkeypatch.context() as m:
        m.setattr(tables, "PACK_BYTES", 1 << 62)
        render_project(dep, opts, listed, with_main=False)
    text, plain = (packed / "model.c").read_text(), (listed / "model.c").read_text()
    assert "TCC_BYTES" not in plain and "static const union" in text  # int8 and wider tables packed
    assert_same_objects(packed, listed)


def test_table_text_reads_back_as_its_bytes(tmp_path: Path) -> None:
    """Every byte value, a table of each width, through the C compiler and back."""
    rng = np.random.default_rng(0)
    data = {"int8_t": np.arange(-128, 128, dtype=np.int8), "int16_t": rng.integers(-2**15, 2**15, 300, np.int16),
            "int32_t": np.array([-2**31, 2**31 - 1, 0, -1, *rng.integers(-2**31, 2**31, 200)], np.int64),
            "int64_t": rng.integers(-2**47, 2**47, 40, np.int64)}
    arrays = [tables.CArray(f"t_{k[:-2]}", k, v) for k, v in data.items()]
    assert all(a.packed for a in arrays)
    prints = "".join(f"    for (i = 0; i < {a.count}; ++i) printf(\"%lld\\n\", (long long){a.ref}[i]);\n"
                     for a in arrays)
    src = tmp_path / "t.c"
    src.write_text("#include <stdio.h>\n#include <stdint.h>\n#define TCC_WEIGHT\n#define TCC_BYTES\n"
                   + tables.definitions(arrays) + "int main(void) {\n    int i;\n" + prints + "    return 0;\n}\n")
    subprocess.run(["cc", "-std=c99", *WARN, str(src), "-o", str(tmp_path / "t")], check=True)
    out = subprocess.run([str(tmp_path / "t")], capture_output=True, text=True, check=True).stdout.split()
    np.testing.assert_array_equal(np.array(out, np.int64), np.concatenate([v.astype(np.int64) for v in data.values()]))
    assert all(len(line) < 100 for line in src.read_text().splitlines())


def test_a_value_outside_the_type_is_refused() -> None:
    with pytest.raises(ValueError, match="int8_t"):
        tables.table_bytes(np.array([1, 200]), "int8_t")
    assert not tables.packs("float", 10_000) and not tables.packs("int32_t", 63) and tables.packs("int32_t", 64)
