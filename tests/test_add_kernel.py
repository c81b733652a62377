"""The ADD kernel's operand tables (backends/c/kernels/add.py): the table entries, the doubled sum's rounding
high multiply and the rounding shift with the output zero point folded in give TFLite's int8 ADD (the int8
interpreter's eval_int8) for every pair of int8 inputs, on random and extreme scales and zero points; the sums
are checked to stay in 32 bits. The generated C itself is checked on the MLPerf ResNet-8 (tests/test_kernels.py)
and on random graphs (tests/test_c_backend.py)."""
from __future__ import annotations

import numpy as np
import pytest

from tinycc.backends.c.kernels import add
from tinycc.ir.graph import Graph
from tinycc.ir.interpreter_int8 import add_params, eval_int8
from tinycc.ir.quant import activation_range
from tinycc.ir.tensor import DType, QuantParams


def _graph(s1: float, z1: int, s2: float, z2: int, so: float, zo: int, act: str) -> Graph:
    g = Graph("add")
    for n, s, z in (("a", s1, z1), ("b", s2, z2)):
        t = g.add_input(n, (1, 256, 256), DType.INT8)
        t.quant = QuantParams(np.float32([s]), np.int64([z]))
    op = g.add_op("add", ["a", "b"], "y", {"activation": act}, output_dtype=DType.INT8)
    g.tensors[op.outputs[0]].quant = QuantParams(np.float32([so]), np.int64([zo]))
    return g


def _c_formula(ta: np.ndarray, tb: np.ndarray, c: int, mo: int, ro: int, lo: int, hi: int) -> np.ndarray:
    """add_table.c.j2 in int64 with every intermediate checked against int32: d = ta[a] + tb[b],
    h = (d * mo + 2^31) >> 32 (smmulr), out = clamp((h + c - (h < 0)) >> ro) (ro = 0: h + c)."""
    d = ta[:, None] + tb[None, :]
    assert np.abs(d).max() < 2**31 and (d % 2 == 0).all()
    h = (d * mo + (1 << 31)) >> 32
    np.testing.assert_array_equal(h, (d // 2 * mo + (1 << 30)) >> 31)  # the portable form: tcc_hmul31(d / 2)
    v = h + c if ro == 0 else h + c - (h < 0)
    assert np.abs(v).max() < 2**31
    return np.clip(v >> ro, lo, hi)


CASES = [(0.05, -128, 0.04, 4, 0.07, -128, "relu"), (0.02, 3, 0.02, 3, 0.04, 0, "none"),
         (1.0, 0, 1e-3, -100, 0.5, 10, "relu6"), (0.1, 127, 0.1, -128, 1e-6, 0, "none"),
         (0.3, -5, 0.01, 7, 0.9, -20, "relu"), (2e-6, 0, 1e-6, 0, 3e-6, 0, "none")]


@pytest.mark.parametrize("case", CASES + [tuple(v) for v in np.random.default_rng(0).uniform(0, 1, (20, 7))])
def test_add_tables_equal_tflite_add_on_every_input_pair(case) -> None:
    _check(case)


def _check(case: tuple) -> str:
    """'tables', 'per element' or 'generic' (the kernel that runs the case), after checking the tables."""
    if all(isinstance(v, float) for v in case):  # a random case: scales over 5 decades, any zero points
        r = case
        case = (10 ** (-4 * r[0]), int(r[1] * 255) - 128, 10 ** (-4 * r[2]), int(r[3] * 255) - 128,
                10 ** (-4 * r[4] + 0.5), int(r[5] * 255) - 128, ("none", "relu", "relu6")[int(r[6] * 3)])
    s1, z1, s2, z2, so, zo, act = case
    g = _graph(*case)
    op = g.ops[0]
    assert add.matches(g, op) == (max(add_params(s1, s2, so)[k] for k in ("e1", "e2", "eo")) <= 0)
    if not add.matches(g, op):
        return "generic"
    a = np.repeat(np.arange(-128, 128), 256).reshape(1, 256, 256)
    b = np.tile(np.arange(-128, 128), 256).reshape(1, 256, 256)
    want = eval_int8(g, op, [a, b])[0]
    tabs = add.tables(g, op)
    p = add_params(s1, s2, so)
    if tabs is None:  # only where a bound fails: the per-element kernel runs instead
        assert add.table_bytes(g, op) == 0
        return "per element"
    assert add.table_bytes(g, op) == 2048
    ta, tb, c = tabs
    lo, hi = activation_range(act, np.float32(so), zo)
    got = _c_formula(ta, tb, c, p["mo"], -p["eo"], lo, hi)
    np.testing.assert_array_equal(got, want)
    return "tables"


def test_output_shift_zero_has_its_own_form() -> None:
    """so = twice the larger input scale / 2^20 makes the output shift 0: no rounding step, h + zo."""
    s = 0.02
    g = _graph(s, 3, s / 2, -7, 2 * s / 2**20 * 1.2, 5, "none")
    p = add_params(s, s / 2, 2 * s / 2**20 * 1.2)
    assert p["eo"] == 0
    tabs = add.tables(g, g.ops[0])
    assert tabs is not None and tabs[2] == 5
    assert _check((s, 3, s / 2, -7, 2 * s / 2**20 * 1.2, 5, "none")) == "tables"


def test_the_cases_reach_the_tables() -> None:
    kinds = [_check(c) for c in CASES]
    assert kinds.count("tables") >= 5, kinds
