"""Generated int16 (16x8) convolution, depthwise and dense kernels (backends/c/kernels/conv16.py) and max pooling
(pool16.py): random shapes, strides, padding, odd channel counts, per-channel and per-tensor multipliers, through
the emitter into one C program whose every output equals run_int8 (TFLite's reference arithmetic, which the
portable tcc_*_s16 kernels also equal): on the host with ASan/UBSan (int8 weights) and on the Cortex-M4/M7 under
QEMU (weights widened to int16, smlad); layers the form cannot take keep the portable call; the widened copies
are counted exactly."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c.emitter import _Builder
from tinycc.backends.c.kernels import choose, conv16, pool16, table_bytes
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.tensor import QuantParams

from . import c_harness
from .deploy_util import whole_model
from .test_int16 import _g16

KINDS = ("conv2d", "depthwise_conv2d", "dense")
RUNTIME = Path(__file__).resolve().parents[1] / "backends" / "c" / "runtime"


def _pool_case(rng: np.random.Generator):
    """An int16 MAX_POOL_2D: random window, strides, padding, odd channel counts, a fused activation."""
    s = float(np.float32(10 ** rng.uniform(-4, -2)))
    h, w, c = int(rng.integers(2, 9)), int(rng.integers(2, 9)), int(rng.integers(1, 8))
    attrs = {"pool_size": (int(rng.integers(1, min(h, 3) + 1)), int(rng.integers(1, min(w, 4) + 1))),
             "strides": (int(rng.integers(1, 3)), int(rng.integers(1, 4))),
             "padding": ["same", "valid"][int(rng.integers(0, 2))],
             "activation": ["none", "relu", "relu6"][int(rng.integers(0, 3))]}
    return _g16("max_pool2d", (1, h, w, c), s, s, attrs)


def _case(kind: str, rng: np.random.Generator, big_bias: bool = False, spread: bool = False):
    """A one-op int16 graph: random geometry, weights, int64 bias (``big_bias``: beyond int32 sums, the portable
    fallback), per-channel scales (per tensor for some dense layers; ``spread``: over 6 decades, too far for one
    shift), a fused activation."""
    s_in = float(np.float32(10 ** rng.uniform(-4, -2)))
    act = ["none", "relu", "relu6"][int(rng.integers(0, 3))]
    ic, oc = int(rng.integers(1, 10)), int(rng.integers(1, 10))
    h, w = int(rng.integers(2, 9)), int(rng.integers(2, 9))
    if kind == "dense":
        rows = int(rng.integers(1, 4))
        shape, wshape, axis, attrs = ((1, rows, ic * 3) if rows > 1 else (1, ic * 3)), (oc, ic * 3), 0, \
            {"activation": act}
    elif kind == "conv2d":
        kh, kw = int(rng.integers(1, min(h, 4) + 1)), int(rng.integers(1, min(w, 5) + 1))
        shape, wshape, axis = (1, h, w, ic), (oc, kh, kw, ic), 0
        attrs = {"strides": (int(rng.integers(1, 4)), int(rng.integers(1, 4))),
                 "padding": ["same", "valid"][int(rng.integers(0, 2))], "dilation": (1, 1), "groups": 1,
                 "activation": act}
    else:
        oc = ic
        kh, kw = int(rng.integers(1, min(h, 4) + 1)), int(rng.integers(1, min(w, 4) + 1))
        shape, wshape, axis = (1, h, w, ic), (1, kh, kw, oc), 3
        attrs = {"strides": (int(rng.integers(1, 3)), int(rng.integers(1, 3))),
                 "padding": ["same", "valid"][int(rng.integers(0, 2))], "dilation": (1, 1), "depth_multiplier": 1,
                 "activation": act}
    per_tensor = kind == "dense" and rng.integers(0, 2) == 1
    ws = np.full(oc, np.float32(10 ** rng.uniform(-3, -1))) if per_tensor else \
        (10 ** rng.uniform(-7 if spread else -3, -1, oc)).astype(np.float32)
    wt = rng.integers(-127, 128, wshape).astype(np.int8)
    b = rng.integers(-(1 << (34 if big_bias else 22)), 1 << (34 if big_bias else 22), oc).astype(np.int64)
    wq = QuantParams(ws[:1], np.zeros(1, np.int64)) if per_tensor else QuantParams(ws, np.zeros(oc, np.int64), axis)
    consts = [(wt, wq), (b, QuantParams((np.float32(s_in) * ws).astype(np.float32), np.zeros(oc, np.int64), 0))]
    fan_in = int(np.prod(wshape[1:])) if kind != "depthwise_conv2d" else kh * kw
    s_out = float(np.float32(s_in * float(ws.max()) * np.sqrt(fan_in) * 10 ** rng.uniform(0.5, 2)))
    return _g16(kind, shape, s_in, s_out, attrs, consts)


def _cases(n: int, seed: int, pools: int = 0) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n + pools):
        g = _case(KINDS[i % 3], rng, big_bias=i % 10 == 9, spread=i % 10 in (3, 4, 5)) if i < n else _pool_case(rng)
        out.append((g, rng.integers(-32768, 32768, g.tensors["x"].shape).astype(np.int16)))
    return out


def _deployment(g, widen: bool = True):
    dep = whole_model(g, "tinycc")
    if not widen:  # --no-widen
        dep.config = type(dep.config)(kernels="tinycc", memory=type(dep.config.memory)(widen=False))
    return dep


def _program(cases: list, widen: bool = True) -> tuple[str, list[str], list[str]]:
    """One C program: each case's tables, its generated function (renamed per case) or portable call, a dump of
    its output; the expected lines (run_int8) and the generated functions' code (``widen``: --no-widen if
    False)."""
    decls, body, want, arena, generated = [], [], [], 16, []
    for i, (g, x) in enumerate(cases):
        with c_harness.listed_tables():
            em = _Builder(_deployment(g, widen)).build()
        arena = max(arena, em.plan.arena)
        names = {a.name: f"{a.name}_{i}" for a in em.arrays}
        for a in em.arrays:
            d = f"static const {a.ctype} {names[a.name]}[{a.count}] = {{{', '.join(a.values)}}};"
            decls += [f"#if {a.guard}", d, "#endif"] if a.guard else [d]
        for k in em.kernels:
            generated.append(k.code)
            decls.append(k.code.replace(k.fn, f"{k.fn}_c{i}"))
        vals = ", ".join(str(int(v)) for v in x.reshape(-1))
        body += [f"    {{ static const int16_t in[{x.size}] = {{{vals}}};",
                 f"      memcpy(tcc_arena + {em.plan.offsets['x']}, in, sizeof in); }}"]
        for c in em.calls:
            fn = f"{c.fn}_c{i}" if any(k.fn == c.fn for k in em.kernels) else c.fn
            args = [names.get(v, v) for v in c.args]
            args = [re.sub(r"^(TCC_WW|TCC_PORTABLE)\((\w+)\)$", lambda m: f"{m[1]}({names[m[2]]})", v) for v in args]
            body.append(f"    {fn}({', '.join(args)});")
        y = g.outputs[0]
        body.append(f"    dump({i}, tcc_arena + {em.plan.offsets[y]}, {g.tensors[y].size});")
        want.append(f"case {i} " + " ".join(str(int(v)) for v in run_int8(g, x)[y].reshape(-1)))
    src = "\n".join([
        "#include <stdio.h>", "#include <string.h>", '#include "tinycc_kernels.h"', '#include "tinycc_gen.h"',
        f"static int8_t tcc_arena[{arena}] __attribute__((aligned(16)));", *decls,
        "static void dump(int id, const int8_t *p, int32_t n) {",
        "    int32_t i; int16_t v;", '    printf("case %d", id);',
        '    for (i = 0; i < n; ++i) { memcpy(&v, p + 2 * i, 2); printf(" %d", v); }', '    printf("\\n");', "}",
        "int main(void) {", *body, '    printf("done\\n");', "    return 0;", "}", ""])
    return src, want, generated


def test_generated_int16_kernels_equal_run_int8_on_the_host(tmp_path: Path) -> None:
    """90 random layers (conv incl. pointwise and single-input-channel first layers, depthwise, dense with rows and
    per-tensor scales) and 20 max pools, ASan/UBSan: every output equals run_int8; the large-bias layers keep the
    portable call."""
    cases = _cases(90, 160, pools=20)
    chosen = [choose(g, g.ops[0], "tinycc") is conv16 for g, _ in cases[:90]]
    assert sum(chosen) == 81 and not any(chosen[9::10])  # the int64-sum layers are left to tcc_*_s16
    assert all(choose(g, g.ops[0], "tinycc") is pool16 for g, _ in cases[90:])
    src, want, generated = _program(cases)
    assert len(generated) == 101
    for path in ("two pixels, the same taps", "every tap: unrolled", "one shift for every channel",
                 "tcc16_usat", "tcc16_ssat", "tcc16_rq("):  # each form of the template runs here
        assert any(path in code for code in generated), path
    got = c_harness.run_runtime_program(src, tmp_path, "conv16")
    assert got[-1] == "done" and len(got) == len(want) + 1
    for line, ref, (g, _) in zip(got, want, cases):
        assert line == ref, g.ops[0].kind.value
    values = np.concatenate([np.array(w.split()[2:], int) for w in want])
    assert len(np.unique(values)) > 500  # not only saturated outputs


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("cpu,widen", [("m4", True), ("m7", True), ("m4", False)])
def test_generated_int16_kernels_equal_run_int8_on_cortex_m4_m7(tmp_path: Path, cpu: str, widen: bool) -> None:
    """The same kind of program for the Cortex-M4 and M7 (QEMU): the widened-weight smlad/smlabb loops run
    (TCC_DSP_ASM; with --no-widen the int8-weight loops) and every output equals run_int8."""
    from tinycc.targets import BUILTIN_TARGETS

    m4 = next(t for t in BUILTIN_TARGETS if t.name == cpu)
    src, want, generated = _program(_cases(45, 161, pools=10), widen)
    assert len(generated) > 45 and ("TCC_WW(" in src) == widen
    templates = RUNTIME.parent / "templates" / "cortexm"  # plain C and linker script (no template tags)
    (tmp_path / "startup.c").write_text((templates / "startup.c.j2").read_text())
    (tmp_path / "link.ld").write_text((templates / "link.ld.j2").read_text())
    (tmp_path / "conv16.c").write_text(src)
    elf = tmp_path / "conv16.elf"
    subprocess.run(["arm-none-eabi-gcc", *m4.cflags.split(), "-Os", "-std=c99", "-Wall", "-Wextra", "-Werror",
                    "-Wshadow", f"-I{RUNTIME}", "--specs=rdimon.specs", "-nostartfiles", "-T", str(tmp_path / "link.ld"),
                    "-o", str(elf), str(tmp_path / "startup.c"), str(tmp_path / "conv16.c"),
                    str(RUNTIME / "tinycc_kernels.c"), "-lm"], check=True)
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True, check=True).stdout
    assert all(i in dis for i in ("smlad", "smlabb", "smlatt", "ssub16", "sel")) == widen
    r = subprocess.run(["qemu-system-arm", "-M", m4.emulator.machine, "-nographic", "-semihosting-config",
                        "enable=on,target=native", "-kernel", str(elf)], capture_output=True, text=True, timeout=300)
    got = r.stdout.splitlines()
    assert got[-1:] == ["done"] and len(got) == len(want) + 1, r.stdout[-500:] + r.stderr[-500:]
    assert got[:-1] == want


def test_requant_tables_equal_tflite_int64_requantization() -> None:
    """(hi32(a * m) + 2^(t-1)) >> t equals TFLite's int64 MultiplyByQuantizedMultiplier (16-bit multiplier, one
    rounding shift) for random and extreme accumulators, multipliers and every total shift 17..62."""
    rng = np.random.default_rng(3)
    a = np.concatenate([rng.integers(-(1 << 31), 1 << 31, 4000), [-(1 << 31), (1 << 31) - 1, -1, 0, 1]])
    for shift in range(-47, -1):
        mult = np.concatenate([rng.integers(1 << 30, (1 << 31) - 1, 6), [1 << 30, 0x7FFF0000, (1 << 31) - 1]])
        m, t = conv16.requant_tables(mult, np.full(len(mult), shift))
        for mi, ti, mu in zip(m, t, mult):
            red = min((int(mu) + (1 << 15)) >> 16, 0x7FFF) if mu < 0x7FFF0000 else 0x7FFF
            total = 15 - shift
            ref = (a.astype(object) * red + (1 << (total - 1))) >> total
            hi = (a.astype(object) * int(mi)) >> 32
            np.testing.assert_array_equal(((hi + (1 << (int(ti) - 1))) >> int(ti)).astype(np.int64),
                                          ref.astype(np.int64))
    assert conv16.requant_tables(np.array([1 << 30]), np.array([0])) is None  # total 15: the portable call


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_widened_copies_are_counted_exactly_and_no_widen_drops_them(tmp_path: Path) -> None:
    """On a DSP target the kernel-tables item grows by exactly the int16 copies model.o defines (arm-none-eabi
    nm); --no-widen (widen=False) emits none and passes NULL; --kernels generic keeps the portable calls."""
    cases = [c for c in _cases(12, 162) if choose(c[0], c[0].ops[0], "tinycc") is conv16]
    for g, _ in cases:
        op = g.ops[0]
        dep = whole_model(g, "tinycc")
        with c_harness.listed_tables():
            em = _Builder(dep).build()
        ww = [a for a in em.arrays if a.guard == "TCC_DSP_ASM"]
        assert len(ww) == 1 and ww[0].ctype == "int16_t" and ww[0].count == g.tensors[op.inputs[1]].size
        copies = table_bytes(g, "tinycc", dsp=True) - table_bytes(g, "tinycc", dsp=True, widen=False)
        assert copies == 2 * ww[0].count == conv16.ww_bytes(g, op)
        assert table_bytes(g, "tinycc", dsp=False) == table_bytes(g, "tinycc", dsp=True, widen=False)
        src = "\n".join(['#include "tinycc_kernels.h"', '#include "tinycc_gen.h"',
                         *(f"const {a.ctype} {a.name}[{a.count}] = {{{', '.join(a.values)}}};" if not a.guard else
                           f"#if {a.guard}\nconst {a.ctype} {a.name}[{a.count}] = {{{', '.join(a.values)}}};\n#endif"
                           for a in em.arrays)])
        (tmp_path / "t.c").write_text(src + "\n")
        subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16",
                        "-Os", "-c", f"-I{RUNTIME}", str(tmp_path / "t.c"), "-o", str(tmp_path / "t.o")], check=True)
        syms = subprocess.run(["arm-none-eabi-nm", "-S", str(tmp_path / "t.o")], capture_output=True, text=True,
                              check=True).stdout
        wide = [int(p[1], 16) for p in (ln.split() for ln in syms.splitlines()) if len(p) == 4 and
                p[3] == ww[0].name]
        assert wide == [copies]
        em2 = _Builder(_deployment(g, widen=False)).build()
        assert not any(a.guard for a in em2.arrays) and em2.calls[-1].args[-1] == "NULL"
        generic = _Builder(whole_model(g, "generic")).build()
        assert not generic.kernels and generic.calls[-1].fn.startswith("tcc_") and \
            generic.calls[-1].fn.endswith("_s16")
