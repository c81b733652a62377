"""The report's stack line: the worst-case stack of the generated API (backends/c/stack.py) is at least the
high-water mark of a painted stack (tests/stack_paint_main.c) and within 20% of it, on the host, in QEMU
(Cortex-M4, M0+) and in simavr (ATmega2560); recursion, indirect calls and unbounded frames are refused.

Every run uses the class-balanced buffer, filled past its capacity, so that the deepest path of the runtime
(the replacement's 512-byte count table) runs: the figure bounds every path, the painted mark only the path run."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from .deploy_util import render_project
from tinycc.backends.c.stack import CORES, LIBRARY_STACK, PROBES, StackError, measure, project_stack, toolchain
from .deploy_util import build_deployment
from tinycc.plugins.frontends.tflite import read_tflite
from tinycc.session import Session

from . import stack_harness
from .conftest import ROOT, mlperf_model

DIGITS = ROOT / "examples" / "digits_cnn.h5"
DATA = ROOT / "examples" / "digits_data.npz"
PAINT_CORES = ("host", "cortex-m4", "cortex-m0plus", "cortex-m55")
LIB_CORES = ("host", "cortex-m4", "cortex-m7", "cortex-m0plus", "cortex-m55", "avr")


def _needs(core: str) -> None:
    if not (toolchain(core) and stack_harness.available(core)):
        pytest.skip(f"{core}: compiler or emulator not installed")


def _digits(tmp_path: Path, board: str | None = None, policy: str = "class_balanced") -> tuple[Path, object]:
    s = Session(autoload=False)
    g = s.registry.frontend_for(str(DIGITS)).load(str(DIGITS))
    from tinycc.passes import PassContext, run_pipeline

    run_pipeline(g, s.registry.pipeline("cleanup"), PassContext(session=s))
    d = np.load(DATA)
    opts = {"calib_data": d["x_train"][:100], "buffer": 4, "policy": policy, "test_count": 8,
            **({"board": board} if board else {})}
    dep = build_deployment(g, opts, s, CBackend())
    render_project(dep, opts, tmp_path)
    return tmp_path, dep


def _check(project: Path, dep, core: str) -> tuple[int, int]:
    fig = project_stack(project, project / "runtime", dep.name + "_", core, dep.buffer.policy).bytes
    used = stack_harness.painted(project, dep.name, dep.feature_count, core)
    assert used <= fig <= 1.2 * used, (core, fig, used)
    return fig, used


@pytest.mark.parametrize("core", PAINT_CORES)
def test_digits_stack_bounds_painted_stack(tmp_path: Path, core: str) -> None:
    _needs(core)
    project, dep = _digits(tmp_path)
    _check(project, dep, core)


@pytest.mark.parametrize("policy", ["fifo", "reservoir"])
def test_policies_without_the_count_table_bound_their_painted_stack(tmp_path: Path, policy: str) -> None:
    """fifo and reservoir never call balanced_slot: their figure leaves its 512-byte table out and still bounds
    a run that fills and overwrites the buffer."""
    _needs("cortex-m4")
    project, dep = _digits(tmp_path, policy=policy)
    fig, _ = _check(project, dep, "cortex-m4")
    cb = project_stack(project, project / "runtime", dep.name + "_", "cortex-m4", "class_balanced")
    own = project_stack(project, project / "runtime", dep.name + "_", "cortex-m4", policy)
    assert "balanced_slot" in cb.path and "balanced_slot" not in own.path
    assert own.bytes == fig < cb.bytes


def test_digits_stack_on_avr_in_simavr(tmp_path: Path) -> None:
    """AVR: the digits model cut for the Mega 2560's 8 KB (the MLPerf Tiny models do not fit an AVR)."""
    _needs("avr")
    project, dep = _digits(tmp_path, "mega2560")
    _check(project, dep, "avr")


def test_report_has_measured_stack_counted_in_ram(tmp_path: Path) -> None:
    _needs("cortex-m4")
    _, dep = _digits(tmp_path, "cortex_m4")
    items = {i["name"]: i for i in dep.memory["items"]}
    st = items["stack"]
    assert st["exact"] and st["detail"].startswith("measured: Cortex-M4")
    assert dep.memory["ram"] == sum(i["bytes"] for i in dep.memory["items"] if i["section"] == "ram")
    assert dep.memory["ram"] <= 128 * 1024  # the board's budget still holds with the stack counted


def test_stack_estimate_without_a_compiler_is_marked_and_above_measured(tmp_path: Path, monkeypatch) -> None:
    project, dep = _digits(tmp_path)
    measured = [project_stack(project, project / "runtime", dep.name + "_", c).bytes
                for c in CORES if toolchain(c)]
    from tinycc.backends.c import stack

    monkeypatch.setattr(stack, "toolchain", lambda core: False)
    it = stack.stack_item(dep, "cortex-m4")
    assert not it.measured and it.detail.startswith("estimated: arm-none-eabi-gcc not installed")
    assert all(it.bytes >= m for m in measured) and measured
    it = stack.stack_item(dep, "xtensa")
    assert not it.measured and "xtensa" in it.detail


@pytest.mark.parametrize("core", LIB_CORES)
def test_library_bounds_cover_painted_library_calls(tmp_path: Path, core: str) -> None:
    """Each library function the generated code calls (libm, memcpy/memset, soft-float helpers) uses at most its
    LIBRARY_STACK bound (arguments from -100 to 40, tiny and zero; copies of 7..175 bytes)."""
    _needs(core)
    project, _ = _digits(tmp_path)
    used = stack_harness.library_use(project, core)
    lib = LIBRARY_STACK[CORES[core].library]
    assert set(used) == set(PROBES)
    for probe, n in used.items():
        name = PROBES[probe].get(CORES[core].library, probe)
        bound = lib.get(name, lib.get("__*", 0) if name.startswith("__") else 0)
        if name in ("fmul", "fadd", "fdiv", "fcmp", "i2f", "f2i"):  # an FPU instruction: no call
            bound = 0
        assert n <= bound, (core, probe, n, bound)


@pytest.mark.parametrize("case", ["recursion", "indirect", "vla"])
def test_unbounded_call_graphs_are_refused(tmp_path: Path, case: str) -> None:
    if not shutil.which("cc"):
        pytest.skip("no host compiler")
    body = {"recursion": "int m_f(int n) { return n < 2 ? n : m_f(n - 1) + m_f(n - 2); }",
            "indirect": "int (*volatile g)(int);\nint m_f(int n) { return g(n) + 1; }",
            "vla": "#include <string.h>\nint m_f(int n) { volatile char a[n]; a[0] = 1; return a[0] + n; }"}[case]
    src = tmp_path / "m.c"
    src.write_text(body + "\n")
    with pytest.raises(StackError, match={"recursion": "recursion", "indirect": "indirect call",
                                          "vla": "unbounded"}[case]):
        measure([src], [], "m_", "host")


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["class_balanced", "fifo"])
@pytest.mark.parametrize("name", ["pretrainedResnet_quant.tflite", "kws_ref_model.tflite", "vww_96_int8.tflite"])
def test_mlperf_tiny_stack_bounds_painted_stack(tmp_path: Path, name: str, policy: str) -> None:
    """ad01 (an autoencoder: a regression head, whose learn call takes a target) is not driven by the harness."""
    g = read_tflite(str(mlperf_model(name)))
    opts = {"buffer": 2, "policy": policy, "test_count": 3}
    dep = build_deployment(g, opts, Session(autoload=False), CBackend())
    ext = dep.extractor
    x = np.random.default_rng(0).normal(0, 1, (3,) + ext.tensors[ext.inputs[0]].shape[1:]).astype(np.float32)
    render_project(dep, {**opts, "test_vectors": (x, np.arange(3) % dep.num_classes)}, tmp_path)
    done = []
    for core in PAINT_CORES:
        if toolchain(core) and stack_harness.available(core):
            done.append(_check(tmp_path, dep, core))
    if not done:
        pytest.skip("no compiler")


def test_measured_objects_are_cached_by_their_preprocessed_text(tmp_path: Path, monkeypatch) -> None:
    """A second measure of the same text is read from the cache (no compile) and equals the first; a changed
    source is measured again; a corrupt cache entry is ignored."""
    if not shutil.which("cc"):
        pytest.skip("no host compiler")
    from tinycc.backends.c import stack

    monkeypatch.setenv("TINYCC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(stack, "_MEMO", {})
    src = tmp_path / "m.c"
    src.write_text("int m_leaf(int n) { volatile int a[8]; a[n & 7] = n; return a[0]; }\n"
                   "int m_f(int n) { volatile int b[32]; b[n & 31] = m_leaf(n); return b[1]; }\n")
    first = measure([src], [], "m_", "host")
    entries = list((tmp_path / "cache" / "stack-v1").glob("*.json"))
    assert len(entries) == 1

    compiles = []
    real_run = subprocess.run

    def counting_run(cmd, *a, **k):
        if "-c" in cmd:
            compiles.append(cmd)
        return real_run(cmd, *a, **k)

    monkeypatch.setattr(stack.subprocess, "run", counting_run)
    monkeypatch.setattr(stack, "_MEMO", {})
    again = measure([src], [], "m_", "host")  # from disk
    assert compiles == [] and again == first
    assert measure([src], [], "m_", "host") == first and compiles == []  # from memory

    src.write_text(src.read_text().replace("b[32]", "b[64]").replace("& 31", "& 63"))
    bigger = measure([src], [], "m_", "host")
    assert len(compiles) == 1 and bigger.bytes > first.bytes

    for e in (tmp_path / "cache" / "stack-v1").glob("*.json"):
        e.write_text("{not json")
    monkeypatch.setattr(stack, "_MEMO", {})
    assert measure([src], [], "m_", "host") == bigger and len(compiles) == 2
