"""The C backward kernels (backends/c/runtime/tinycc_backprop.c) equal tinycc.ir.backprop (ASan/UBSan, -Werror)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.ir.backprop import conv_backward, pool_backward
from tinycc.ir.ops import conv_out_size, same_padding

RUNTIME = Path(__file__).resolve().parents[1] / "backends" / "c" / "runtime"
TOL = 1e-5
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def _arr(name: str, a: np.ndarray) -> str:
    vals = ", ".join(f"{float(v):.9e}f" for v in np.asarray(a, np.float32).reshape(-1))
    return f"static float {name}[{max(a.size, 1)}] = {{{vals}}};\n"


def _params(x_shape: tuple, o: int, k: tuple, s: tuple, d: tuple, padding: str, mult: int) -> tuple[str, int, int]:
    n, h, w, c = x_shape
    oh, ow = conv_out_size(h, k[0], s[0], d[0], padding), conv_out_size(w, k[1], s[1], d[1], padding)
    pt = same_padding(h, k[0], s[0], d[0])[0] if padding == "same" else 0
    pl = same_padding(w, k[1], s[1], d[1])[0] if padding == "same" else 0
    return (f"static const tcc_bp_conv_t P = {{{n}, {h}, {w}, {c}, {o}, {k[0]}, {k[1]}, {s[0]}, {s[1]}, {d[0]}, "
            f"{d[1]}, {pt}, {pl}, {oh}, {ow}, {mult}}};\n"), oh, ow


def _run(tmp: Path, decls: str, body: str) -> list[np.ndarray]:
    src = tmp / "main.c"
    src.write_text('#include <stdio.h>\n#include <stdint.h>\n#include "tinycc_backprop.h"\n' + decls +
                   "static void out(const float *a, int n) { for (int k = 0; k < n; ++k) printf(\"%.9g \", a[k]); "
                   "printf(\"\\n\"); }\nint main(void) {\n" + body + "return 0;\n}\n")
    exe = tmp / "main"
    subprocess.run(["gcc", "-std=c99", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=all", f"-I{RUNTIME}", f"-I{tmp}", str(src),
                    str(RUNTIME / "tinycc_backprop.c"), "-lm",
                    "-o", str(exe)], check=True, capture_output=True, text=True)
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr, r.stderr
    return [np.array([float(v) for v in line.split()], np.float32) for line in r.stdout.splitlines()]


CONVS = [  # (input shape, outputs or multiplier, kernel, strides, dilation, padding, depthwise)
    ((2, 5, 6, 3), 4, (3, 3), (1, 1), (1, 1), "same", False),
    ((1, 7, 7, 2), 3, (3, 2), (2, 2), (1, 1), "valid", False),
    ((2, 6, 6, 2), 2, (3, 3), (1, 2), (2, 1), "same", False),
    ((2, 5, 5, 3), 1, (3, 3), (1, 1), (1, 1), "same", True),
    ((1, 6, 5, 2), 2, (3, 3), (2, 2), (1, 1), "same", True),
]


@pytest.mark.parametrize("case", range(len(CONVS)))
def test_conv_backward_equals_reference(tmp_path: Path, case: int) -> None:
    shape, o, k, s, d, padding, dw = CONVS[case]
    rng = np.random.default_rng(case)
    x = rng.normal(0, 1, shape).astype(np.float32)
    outs = shape[3] * o if dw else o
    w = rng.normal(0, 0.5, (1, k[0], k[1], outs) if dw else (o, k[0], k[1], shape[3])).astype(np.float32)
    b = rng.normal(0, 0.1, outs).astype(np.float32)
    p, oh, ow = _params(shape, outs, k, s, d, padding, o if dw else 0)
    dz = rng.normal(0, 1, (shape[0], oh, ow, outs)).astype(np.float32)
    attrs = {"strides": s, "dilation": d, "padding": padding, "depth_multiplier": o}
    dx, gw, gb = conv_backward(x, w, dz, attrs, dw)
    lr = np.float32(0.1)
    decls = p + _arr("x", x) + _arr("w", w) + _arr("b", b) + _arr("dz", dz) + f"static float dx[{x.size}];\n"
    body = ("tcc_bp_conv_dx(&P, w, dz, dx); out(dx, (int)sizeof dx / 4);\n"
            "int ok = tcc_bp_conv_update(&P, w, b, x, dz, 0.1f, 1, 0);\n"
            "tcc_bp_conv_update(&P, w, b, x, dz, 0.1f, 1, 1); out(w, (int)sizeof w / 4); out(b, (int)sizeof b / 4);\n"
            "dz[0] = 1.0f / 0.0f; printf(\"%d %d\\n\", ok, tcc_bp_conv_update(&P, w, b, x, dz, 0.1f, 1, 0));\n")
    got = _run(tmp_path, decls, body)
    np.testing.assert_allclose(got[0], dx.reshape(-1), atol=TOL, rtol=TOL)
    np.testing.assert_allclose(got[1], (w - lr * gw).reshape(-1), atol=TOL, rtol=TOL)
    np.testing.assert_allclose(got[2], b - lr * gb, atol=TOL, rtol=TOL)
    assert list(got[3]) == [1, 0]  # finite step accepted; an infinite delta refused by the check pass


def test_dense_and_activation_backward(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    x, w = rng.normal(0, 1, (3, 5)).astype(np.float32), rng.normal(0, 1, (4, 5)).astype(np.float32)
    b, dz = rng.normal(0, 1, 4).astype(np.float32), rng.normal(0, 1, (3, 4)).astype(np.float32)
    y = rng.normal(3, 3, (3, 4)).astype(np.float32)
    decls = (_arr("x", x) + _arr("w", w) + _arr("b", b) + _arr("dz", dz) + _arr("y", y) +
             "static float dx[15]; static float m[12];\n")
    body = ("tcc_bp_dense_dx(3, 5, 4, w, dz, dx); out(dx, 15);\n"
            "tcc_bp_dense_update(3, 5, 4, w, b, x, dz, 0.1f, 1, 1); out(w, 20); out(b, 4);\n"
            "tcc_bp_act(m, dz, y, 12, 1); out(m, 12); tcc_bp_act(m, dz, y, 12, 2); out(m, 12);\n"
            "tcc_bp_dense_update(3, 5, 4, w, b, x, dz, 0.1f, 0, 1); out(w, 20);\n")
    got = _run(tmp_path, decls, body)
    lr = np.float32(0.1)
    np.testing.assert_allclose(got[0], (dz @ w).reshape(-1), atol=TOL, rtol=TOL)
    w1 = w - lr * (dz.T @ x)
    np.testing.assert_allclose(got[1], w1.reshape(-1), atol=TOL, rtol=TOL)
    np.testing.assert_allclose(got[2], b - lr * dz.sum(0), atol=TOL, rtol=TOL)
    np.testing.assert_array_equal(got[3], np.where(y > 0, dz, 0).reshape(-1))
    np.testing.assert_array_equal(got[4], np.where((y > 0) & (y < 6), dz, 0).reshape(-1))
    np.testing.assert_allclose(got[5], w1.reshape(-1), atol=TOL, rtol=TOL)  # bias only: weights kept


POOLS = [((2, 5, 5, 3), (2, 2), (1, 1), "same"), ((1, 6, 6, 2), (3, 3), (2, 2), "valid"),
         ((2, 5, 4, 2), (3, 2), (2, 1), "same")]


@pytest.mark.parametrize("case", range(len(POOLS)))
def test_pool_backward_equals_reference(tmp_path: Path, case: int) -> None:
    shape, k, s, padding = POOLS[case]
    rng = np.random.default_rng(10 + case)
    x = np.round(rng.normal(0, 1, shape) * 2).astype(np.float32) / 2  # ties: the first maximum takes it
    p, oh, ow = _params(shape, shape[3], k, s, (1, 1), padding, 0)
    dy = rng.normal(0, 1, (shape[0], oh, ow, shape[3])).astype(np.float32)
    attrs = {"pool_size": k, "strides": s, "padding": padding, "activation": "none"}
    decls = p + _arr("x", x) + _arr("dy", dy) + f"static float dx[{x.size}];\n"
    body = "tcc_bp_avgpool_dx(&P, dy, dx); out(dx, (int)sizeof dx / 4);\n" \
           "tcc_bp_maxpool_dx(&P, x, dy, dx); out(dx, (int)sizeof dx / 4);\n"
    got = _run(tmp_path, decls, body)
    np.testing.assert_allclose(got[0], pool_backward(x, dy, attrs, "avg").reshape(-1), atol=TOL, rtol=TOL)
    np.testing.assert_allclose(got[1], pool_backward(x, dy, attrs, "max").reshape(-1), atol=TOL, rtol=TOL)


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc")
def test_cortex_m4_build(tmp_path: Path) -> None:
    """The kernels build for the M4 as the generated Makefile's flags (-pedantic, -Werror) and -Wconversion ask."""
    obj = tmp_path / "bp.o"
    subprocess.run(["arm-none-eabi-gcc", "-std=c99", "-O2", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
                    "-mfpu=fpv4-sp-d16", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wconversion", "-c",
                    str(RUNTIME / "tinycc_backprop.c"), "-o", str(obj)], check=True, capture_output=True, text=True)
    assert obj.stat().st_size > 0


@pytest.mark.parametrize("pool", ["avg", "max", "gap"])
@pytest.mark.parametrize("mode", ["blocks", "bias"])
def test_generated_step_equals_tail(session, tmp_path: Path, pool: str, mode: str) -> None:
    """backends/c/deep_emit: the generated SGD step of a residual block + Dense chain equals Tail.sgd_step."""
    from tinycc.backends.c.deep_emit import emit_step

    from .test_backprop import _tail, _tail_model

    t = _tail(session, _tail_model(pool, 6), mode)
    (tmp_path / "step.c").write_text(emit_step(t, 3))
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (6, 6, 6, 3)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    decls = (_arr("xs", x) + "static const int32_t ys[6] = {" + ", ".join(map(str, y)) + "};\n"
             '#include "step.c"\n')
    body = ("int r0 = tcc_deep_step(xs, ys, 1, 0.05f);\nint r1 = tcc_deep_step(xs + 108, ys + 1, 3, 0.05f);\n"
            "int r2 = tcc_deep_step(xs + 432, ys + 4, 2, 0.05f);\nprintf(\"%d %d %d\\n\", r0, r1, r2);\n")
    k = 0
    for name, p in t.params.items():
        body += f"out(tcc_dw{k}, {p.weight.size}); out(tcc_db{k}, {p.bias.size});\n"
        k += 1
    body += ("const int32_t bad[3] = {0, 3, 1};\nint b0 = tcc_deep_step(xs, bad, 3, 0.05f);\n"
             "int b1 = tcc_deep_step(xs, ys, 4, 0.05f);\nint b2 = tcc_deep_step(xs, ys, 1, 1.0f / 0.0f);\n"
             "static float nan_x[108];\nfor (int k = 0; k < 108; ++k) nan_x[k] = xs[k];\nnan_x[5] = 0.0f / 0.0f;\n"
             "int b3 = tcc_deep_step(NULL, ys, 1, 0.05f), b4 = tcc_deep_step(xs, NULL, 1, 0.05f);\n"
             "int b5 = tcc_deep_step(nan_x, ys, 1, 0.05f);\n"
             "printf(\"%d %d %d %d %d %d\\n\", b0, b1, b2, b3, b4, b5);\n")
    k = 0
    for name, p in t.params.items():
        body += f"out(tcc_dw{k}, {p.weight.size}); out(tcc_db{k}, {p.bias.size});\n"
        k += 1
    for s, e in ((0, 1), (1, 4), (4, 6)):
        assert t.sgd_step(x[s:e], y[s:e], 0.05)
    got = _run(tmp_path, decls, body)
    assert list(got[0]) == [1, 1, 1]
    n = len(t.params)
    for k, p in enumerate(t.params.values()):
        np.testing.assert_allclose(got[1 + 2 * k], p.weight.reshape(-1), atol=TOL, rtol=TOL)
        np.testing.assert_allclose(got[2 + 2 * k], p.bias, atol=TOL, rtol=TOL)
    # label out of range, batch too large, refused step (infinite rate), NULL input, NULL labels, NaN input
    assert list(got[1 + 2 * n]) == [-1, -1, 0, -1, -1, -2]
    for a, b in zip(got[1:1 + 2 * n], got[2 + 2 * n:]):  # none of them changed anything
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cc", ["gcc", pytest.param("arm-none-eabi-gcc", marks=pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc"))])
@pytest.mark.parametrize("batch", [1, 3])
def test_step_memory_equals_symbol_sizes(session, tmp_path: Path, batch: int, cc: str) -> None:
    """step_memory is exact: the sizes of the generated step's symbols (nm), group by group, on the host and for
    the Cortex-M4; the weights it does not train are read-only (step_flash)."""
    from tinycc.backends.c.deep_emit import emit_step, step_flash, step_memory

    from .test_backprop import _tail, _tail_model

    t = _tail(session, _tail_model("max", 2), "bias")
    (tmp_path / "step.c").write_text(emit_step(t, batch))
    obj = tmp_path / "step.o"
    cpu = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-Os"] if cc != "gcc" else ["-O2"]
    subprocess.run([cc, *cpu, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{RUNTIME}", "-c",
                    str(tmp_path / "step.c"), "-o", str(obj)], check=True, capture_output=True, text=True)
    nm_tool = "nm" if cc == "gcc" else "arm-none-eabi-nm"
    nm = subprocess.run([nm_tool, "-S", str(obj)], check=True, capture_output=True, text=True).stdout
    groups = {"tcc_dw": "parameters", "tcc_db": "parameters", "tcc_t": "values", "tcc_gx": "scratch",
              "tcc_g": "gradients", "tcc_p": "descriptors", "tcc_bq": "int32_biases"}
    got = dict.fromkeys(set(groups.values()), 0)
    flash = 0
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "bBdD":
            name = parts[3].split(".")[0]
            got[next(g for p, g in groups.items() if name.startswith(p))] += int(parts[1], 16)
        elif len(parts) == 4 and parts[2] in "rR" and parts[3].startswith("tcc_"):
            flash += int(parts[1], 16)
    assert got == step_memory(t, batch)
    assert flash == step_flash(t) > 0  # the frozen weights are constants


def test_requantize_bias_equals_reference(tmp_path: Path) -> None:
    """The int32 bias from the float master copy: C equals tinycc.ir.deep.requantize_bias bit for bit."""
    from tinycc.ir.deep import requantize_bias

    rng = np.random.default_rng(4)
    scale = (10.0 ** rng.uniform(-9, -2, 64)).astype(np.float32)
    b = (rng.normal(0, 1, 64) * scale * rng.uniform(0, 3e3, 64)).astype(np.float32)
    b[:4] = [2.5 * scale[0], -3.5 * scale[1], 1e30, -1e30]  # ties (when exact) and clamping
    decls = _arr("b", b) + _arr("s", scale) + "static int32_t q[64];\n"
    body = ("tcc_bp_requantize_bias(b, s, q, 64);\nout(b, 0);\n"
            "for (int k = 0; k < 64; ++k) printf(\"%ld \", (long)q[k]);\nprintf(\"\\n\");\n")
    _run(tmp_path, decls, body)
    r = subprocess.run([str(tmp_path / "main")], capture_output=True, text=True, timeout=60)
    got = [int(v) for v in r.stdout.splitlines()[1].split()]  # exact integers (not through float32)
    assert got == requantize_bias(b, scale).tolist()
    assert got[2:4] == [2 ** 31 - 1, -2 ** 31]
