"""C runtime kernels with TFLite fixed-point arithmetic (SOFTMAX, HARD_SWISH, requantizing MEAN, int8 -> int8
QUANTIZE, LOGISTIC, TANH) against run_int8, across many random quantization parameters: one-op graphs go
through the C emitter, every call lands in one program built with ASan/UBSan, and each output must equal the
int8 reference interpreter bit for bit. The one-op graphs use --kernels generic: with the default kernels LOGISTIC
and TANH are lookup tables (tests/test_kernels.py), and these routines remain for generic and cmsis-nn."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinycc.backends.c.emitter import _Builder
from tinycc.ir.graph import Graph
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.tensor import DType, QuantParams

from . import c_harness
from .deploy_util import whole_model

CASES_PER_KIND = 60


def _scale(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.float32(10 ** rng.uniform(lo, hi)))


def _zp(rng: np.random.Generator) -> int:
    return int(rng.integers(-128, 128))


def _graph(kind: str, shape: tuple[int, ...], in_q: tuple[float, int], out_q: tuple[float, int],
           attrs: dict | None = None) -> Graph:
    g = Graph(kind)
    g.add_input("x", shape, DType.INT8).quant = QuantParams([in_q[0]], [in_q[1]])
    op = g.add_op(kind, ["x"], "y", attrs or {}, output_dtype=DType.INT8)
    g.tensors[op.outputs[0]].quant = QuantParams([out_q[0]], [out_q[1]])
    g.outputs = [op.outputs[0]]
    return g


def _case(kind: str, rng: np.random.Generator) -> Graph:
    if kind == "softmax":
        shape = (1, int(rng.integers(1, 4)), int(rng.integers(1, 3)), int(rng.integers(1, 40)))
        beta = 1.0 if rng.random() < 0.5 else float(np.float32(rng.uniform(0.3, 2.0)))
        return _graph(kind, shape, (_scale(rng, -3, 0.5), _zp(rng)), (1 / 256, -128), {"beta": beta})
    if kind == "hard_swish":  # output scale at least 1/128 of the input's (the kernel's stated range)
        s = _scale(rng, -2.5, 0)
        return _graph(kind, (1, 3, 4, 8), (s, _zp(rng)), (s * float(10 ** rng.uniform(-1.5, 0.7)), _zp(rng)))
    if kind == "global_avg_pool":
        shape = (1, int(rng.integers(1, 9)), int(rng.integers(1, 9)), int(rng.integers(1, 12)))
        s = _scale(rng, -2.5, 0)
        return _graph(kind, shape, (s, _zp(rng)), (s * float(10 ** rng.uniform(-1.5, 0.7)), _zp(rng)),
                      {"keepdims": bool(rng.integers(0, 2)), "requantize": True})
    if kind == "quantize":
        s = _scale(rng, -2.5, 0)
        return _graph(kind, (1, 2, 3, 5), (s, _zp(rng)), (s * float(10 ** rng.uniform(-2, 2)), _zp(rng)))
    fixed = (1 / 256, -128) if kind == "sigmoid" else (1 / 128, 0)
    return _graph(kind, (1, 4, 4, 4), (_scale(rng, -3, 0.5), _zp(rng)), fixed)


def _data(g: Graph, rng: np.random.Generator) -> np.ndarray:
    shape = g.tensors["x"].shape
    x = rng.integers(-128, 128, shape)
    if rng.random() < 0.3:  # narrow spread: near the zero point / ties in softmax rows
        x = np.clip(rng.integers(-3, 4, shape) + int(g.tensors["x"].quant.zero_point[0]), -128, 127)
    return x.astype(np.int8)


def _generic(g: Graph) -> Any:
    """A deployment of one op graph with the runtime's generic kernels (what the emitter reads)."""
    return whole_model(g)


def _c_program(cases: list[tuple[Graph, np.ndarray]]) -> tuple[str, list[str]]:
    """One C program calling the emitter's kernel calls for every case; returns (source, expected lines)."""
    arena = max(_Builder(_generic(g)).m.plan.arena for g, _ in cases)
    body, want = [], []
    for i, (g, x) in enumerate(cases):
        b = _Builder(_generic(g))
        em = b.build()
        assert not em.arrays, "these kernels read no constant tables"
        vals = ", ".join(str(int(v)) for v in x.reshape(-1))
        body.append(f"    {{ static const int8_t in[{x.size}] = {{{vals}}};")
        body.append(f"      memcpy(tcc_arena + {em.plan.offsets['x']}, in, sizeof in); }}")
        body += [f"    {c.fn}({', '.join(c.args)});" for c in em.calls]
        y = g.outputs[0]
        body.append(f"    dump({i}, tcc_arena + {em.plan.offsets[y]}, {g.tensors[y].size});")
        ref = run_int8(g, x)[y]
        want.append(f"case {i} " + " ".join(str(int(v)) for v in ref.reshape(-1)))
    src = "\n".join([
        "#include <stdio.h>", "#include <string.h>", '#include "tinycc_kernels.h"',
        f"static int8_t tcc_arena[{max(arena, 16)}];",
        "static void dump(int id, const int8_t *p, int32_t n) {",
        "    int32_t i;", '    printf("case %d", id);', '    for (i = 0; i < n; ++i) { printf(" %d", p[i]); }',
        '    printf("\\n");', "}", "int main(void) {", *body, "    return 0;", "}", ""])
    return src, want


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is not installed")
def test_fixed_point_kernels_equal_run_int8(tmp_path: Path) -> None:
    rng = np.random.default_rng(2026)
    kinds = ["softmax", "hard_swish", "global_avg_pool", "quantize", "sigmoid", "tanh"]
    cases = []
    for kind in kinds:
        for _ in range(CASES_PER_KIND):
            g = _case(kind, rng)
            cases.append((g, _data(g, rng)))
    wide = _graph("softmax", (1, 700), (0.01, 0), (1 / 256, -128), {"beta": 1.0})  # sum of exps near 2^28
    cases.append((wide, np.zeros((1, 700), np.int8)))
    for kind, fixed in (("sigmoid", (1 / 256, -128)), ("tanh", (1 / 128, 0))):  # input radius 0: TFLite Micro's -128
        cases.append((_graph(kind, (1, 6), (20.0, 3), fixed), np.array([[3, 4, 2, -128, 127, 3]], np.int8)))
    src, want = _c_program(cases)
    got = c_harness.run_runtime_program(src, tmp_path, "kernels_test")
    assert len(got) == len(want)
    for line, ref, (g, _) in zip(got, want, cases):
        assert line == ref, f"{g.ops[0].kind.value} {g.tensors['x'].quant} -> {g.tensors[g.outputs[0]].quant}"
    # the random parameters reach the kernels' interesting paths, not only saturation
    outs = {k: np.concatenate([np.array(w.split()[2:], int) for w, (g, _) in zip(want, cases) if g.name == k])
            for k in kinds}
    assert all(len(np.unique(v)) > 50 for v in outs.values()), {k: len(np.unique(v)) for k, v in outs.items()}


def test_hard_swish_outside_the_kernels_range_is_refused_by_name() -> None:
    from tinycc.backends.c import CBackend
    from tinycc.errors import UnsupportedLayerError

    g = _graph("hard_swish", (1, 2, 2, 4), (0.5, 0), (0.5 / 300, 3))  # output multiplier exponent > 0
    with pytest.raises(UnsupportedLayerError, match="layer 'y': int8 hard_swish with an output scale below"):
        CBackend().check(whole_model(g))
    g = _graph("hard_swish", (1, 2, 2, 4), (0.5, 0), (0.5 / 100, 3))
    CBackend().check(whole_model(g))


def test_logistic_and_tanh_with_input_radius_zero_follow_tflite_micro() -> None:
    """Input scale 20: TFLite Micro's input radius is 0 and its `x <= -radius` test comes first (-128 at the zero
    point); run_int8 (and so the C kernels above) agree with it."""
    runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
    from tinycc.tflite_writer import write_tflite

    x = np.array([[3, 4, 2, -128, 127, 3]], np.int8)
    for kind, fixed in (("sigmoid", (1 / 256, -128)), ("tanh", (1 / 128, 0))):
        g = _graph(kind, (1, 6), (20.0, 3), fixed)
        tm = runtime.Interpreter.from_bytes(write_tflite(g), arena_size=16 * 1024)
        tm.set_input(x, 0)
        tm.invoke()
        np.testing.assert_array_equal(tm.get_output(0), run_int8(g, x)["y"])
        assert tm.get_output(0)[0, 0] == -128


def _c_float(v: float) -> str:
    """A C99 float expression for ``v`` (hex literal, so exact; NAN / INFINITY from math.h)."""
    if np.isnan(v):
        return "NAN"
    if np.isinf(v):
        return "INFINITY" if v > 0 else "-INFINITY"
    return f"(float){float(v).hex()}"


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is not installed")
def test_quantize_of_nan_infinity_and_huge_values_is_defined(tmp_path: Path) -> None:
    """float -> int8 QUANTIZE (tcc_quantize_f32, the extractor's first call) of NaN, +-infinity, +-FLT_MAX, +-1e30,
    ties and ordinary values under UBSan (NaN to int was undefined behaviour) equals ``ir.quant.quantize``: NaN
    gives the zero point, +-infinity and huge values saturate."""
    from tinycc.ir.quant import quantize

    rng = np.random.default_rng(11)
    special = np.array([np.nan, -np.nan, np.inf, -np.inf, 3.4028235e38, -3.4028235e38, 1e30, -1e30, 1e9, -1e9,
                        0.0, -0.0, 1e-45, -1e-45], np.float32)
    lines, want = [], []
    for i in range(40):
        s, zp = _scale(rng, -6, 2), _zp(rng)
        ties = (np.arange(-4, 5, dtype=np.float32) + np.float32(0.5)) * np.float32(s)
        x = np.concatenate([special, ties, rng.normal(0, 200 * s, 16).astype(np.float32)])
        vals = ", ".join(_c_float(v) for v in x)
        lines += [f"    {{ static const float in[{x.size}] = {{{vals}}};",
                  f"      tcc_quantize_f32(in, {x.size}, {_c_float(s)}, {zp}, out); dump({i}, out, {x.size}); }}"]
        ref = quantize(x, s, zp)
        assert ref[0] == ref[1] == zp and ref[2] == 127 and ref[3] == -128
        want.append(f"case {i} " + " ".join(str(int(v)) for v in ref))
    src = "\n".join([
        "#include <math.h>", "#include <stdio.h>", '#include "tinycc_kernels.h"', "static int8_t out[64];",
        "static void dump(int id, const int8_t *p, int32_t n) {",
        "    int32_t i;", '    printf("case %d", id);', '    for (i = 0; i < n; ++i) { printf(" %d", p[i]); }',
        '    printf("\\n");', "}", "int main(void) {", *lines, "    return 0;", "}", ""])
    assert c_harness.run_runtime_program(src, tmp_path, "quant_test", timeout=60) == want
