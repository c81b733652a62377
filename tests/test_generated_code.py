"""The generated model.c/model.h read as code a person owns: tables named by layer position and kind, no line
over 99 characters, no `* 1`/`+ 0` template leftovers, float literals in their shortest exact form (checked
against numpy and a C compiler), descriptors with designated initializers, the same bytes for the same input."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.backends.c.layout import MAX_COLUMNS, c_float, fold_constants
from tinycc.plugins.frontends.tflite import read_tflite
from tinycc.session import Session

from . import c_harness
from .conftest import mlperf_model
from .deploy_util import build_deployment, render_project

ROOT = Path(__file__).resolve().parents[1]
# a table as a list, as a string of its bytes (int8) or as a union of its bytes and values (wider: tables.py)
TABLE = re.compile(r"static const (?:int8_t|int32_t|float) (\w+)\[\d+\] (?:TCC_BYTES )?TCC_WEIGHT"
                   r"|static const union \{[^}]*\}\n    (\w+) TCC_WEIGHT")
TABLE_NAME = re.compile(r"tcc_(?:[a-z0-9_]+?)_\d+_(?:weights|bias|mult|shift|table|widened|input\d+)(?:_\d+)?"
                        r"|tcc_classifier_\d+_(?:weights|bias)_init")
LEFTOVER = re.compile(r"(?<=[\w)\]]) (?:[*/] 1|[+-] 0)(?![\w.])")
FLOAT = re.compile(r"(?<![\w.])-?(?:\d+\.\d*(?:e[+-]?\d+)?|\d+e[+-]?\d+)f\b")


def _bits(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float32).view(np.uint32)


def _samples() -> np.ndarray:
    rng = np.random.default_rng(0)
    special = np.array([0.0, -0.0, 1.0, -1.0, 0.1, 0.01, 1e-5, 3.0, 1e16, 123456789.0, 1.5e20,
                        np.finfo(np.float32).max, -np.finfo(np.float32).max, np.finfo(np.float32).tiny,
                        1e-45, -3e-42, 0.0627451], np.float32)
    bits = rng.integers(0, 0x7F800000, 400, dtype=np.uint64).astype(np.uint32)  # finite, positive
    return np.concatenate([special, bits.view(np.float32), -bits.view(np.float32)])


def test_float_literals_are_shortest_and_exact_in_numpy_and_c(tmp_path: Path) -> None:
    xs = _samples()
    lits = [c_float(v) for v in xs]
    for v, lit in zip(xs, lits):
        assert lit.endswith("f") and FLOAT.fullmatch(lit), lit
        assert _bits(np.float32(lit[:-1])) == _bits(v), (lit, v)  # round-trips bit for bit
        digits = len(re.sub(r"e.*|[^0-9]", "", lit).strip("0")) or 1
        shortest = len(re.sub(r"e.*|[^0-9]", "", np.format_float_scientific(v, unique=True)).strip("0")) or 1
        assert digits <= shortest, (lit, v)  # no more significant digits than the shortest unique form
    assert c_float(np.float32(0.01)) == "0.01f" and c_float(1e-5) == "1e-5f" and c_float(3.0) == "3.0f"
    for bad in (np.inf, -np.inf, np.nan):
        with pytest.raises(ValueError):
            c_float(bad)
    # the C compiler reads every literal back to the same bits
    src = tmp_path / "lits.c"
    src.write_text("#include <stdio.h>\n#include <string.h>\n#include <stdint.h>\nstatic const float v[] = {\n"
                   + ",\n".join(lits) + "\n};\nint main(void) {\n    size_t i;\n"
                   "    for (i = 0; i < sizeof v / sizeof v[0]; ++i) {\n        uint32_t b;\n"
                   "        memcpy(&b, &v[i], 4);\n        printf(\"%u\\n\", (unsigned)b);\n    }\n    return 0;\n}\n")
    exe = tmp_path / "lits"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    np.testing.assert_array_equal(np.array(out, np.uint64).astype(np.uint32), _bits(xs))


def test_fold_constants_keeps_casts_calls_and_conditions() -> None:
    assert fold_constants("    const int32_t iy0 = oy * 1 - 0;") == "    const int32_t iy0 = oy;"
    assert fold_constants("    k = iy0 < 0 ? (-iy0 + 0) / 1 : 0;") == "    k = iy0 < 0 ? -iy0 : 0;"
    assert fold_constants("    p = in + (((iy0 + ky * 1) * 8 + ix0 + kx * 1) * 1);") == \
        "    p = in + ((iy0 + ky) * 8 + ix0 + kx);"
    kept = "    if (np) { (void)lo; y = (int32_t)in[a * 10 + 0x10] * 1.0f - -(-x); f(x); } a *= 1;"
    assert fold_constants(kept) == kept


def _digits(session: Session):
    g = session.registry.frontend_for("m.h5").load(str(ROOT / "examples" / "digits_cnn.h5"))
    d = np.load(ROOT / "examples" / "digits_data.npz")
    return g, {"buffer": 16, "calib_data": d["x_train"][:64], "test_count": 4}


def _kws(session: Session):
    return read_tflite(str(mlperf_model("kws_ref_model.tflite"))), {"buffer": 2, "test_count": 2}


@pytest.mark.parametrize("model", ["digits", "kws"])
def test_generated_model_reads_well_and_is_reproducible(tmp_path: Path, model: str) -> None:
    session = Session(autoload=False)
    g, opts = (_digits if model == "digits" else _kws)(session)
    dep = build_deployment(g, opts, session, CBackend())
    a, b = tmp_path / "a", tmp_path / "b"
    render_project(dep, opts, a)
    render_project(dep, opts, b)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)  # same bytes out
    for name in ("model.c", "model.h"):
        text = (a / name).read_text()
        long = [l for l in text.splitlines() if len(l) > MAX_COLUMNS]
        assert not long, f"{name}: {len(long)} lines over {MAX_COLUMNS} characters: {long[0]!r}"
        assert not LEFTOVER.findall(text), LEFTOVER.findall(text)[:5]
        assert "(tcc_arena + 0)" not in text
    text = (a / "model.c").read_text()
    tables = [a or b for a, b in TABLE.findall(text)]
    assert tables and [t for t in tables if not TABLE_NAME.fullmatch(t)] == []  # position + kind + role
    assert not [t for t in tables if re.fullmatch(r"tcc_[a-z]+_\d+", t)]  # never a bare counter
    assert any(re.fullmatch(r"tcc_conv2d_\d+_weights", t) for t in tables)
    lits = FLOAT.findall(text)
    assert lits and all(c_float(np.float32(l[:-1])) == l for l in lits), \
        [l for l in lits if c_float(np.float32(l[:-1])) != l][:5]
    assert ".act = TCC_ACT_" in text and ".loss = TCC_LOSS_" in text and ".policy = TCC_POLICY_" in text
    calls = re.findall(r"^    (tcc_layer_\d+|tcc_\w+_s8)\((.*?)\);", text, re.S | re.M)
    assert calls and all("/*" in args for fn, args in calls if args.count(",") >= 3)  # named arguments
    out = c_harness.run_host(c_harness.build_host(a, sanitize=False))  # builds with -Werror and runs
    assert len(out.features) >= 1
