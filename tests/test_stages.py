"""Compile stages: passes join a stage with ordering constraints, --passes edits a run, `tinycc passes` prints the
resolved order, and -p no:NAME blocks built-ins (one line, exit 2, where the compile needs them)."""
from __future__ import annotations

import filecmp
import subprocess
import sys
import types
from pathlib import Path

import pluggy
import pytest

from tinycc.errors import TinyccError
from tinycc.ir.graph import Graph
from tinycc.passes import Pass, PassContext
from tinycc.session import Session
from tinycc.stages import STAGES, parse_passes, resolve

from .test_cli import assert_clean_error, clean_env

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "digits_cnn.h5"
DATA = ROOT / "examples" / "digits_data.npz"
hookimpl = pluggy.HookimplMarker("tinycc")


def _pass(name: str) -> type[Pass]:
    def run(self: Pass, graph: Graph, ctx: PassContext) -> bool:
        ctx.results.setdefault("order", []).append(name)
        return False

    return type(name, (Pass,), {"name": name, "description": name, "run": run})


def _plugin(**placements: tuple[str, dict]) -> types.ModuleType:
    mod = types.ModuleType("stage_test_plugin")

    @hookimpl
    def tinycc_register_passes(registry) -> None:
        for name, (stage, kw) in placements.items():
            registry.add_pass(_pass(name), stage, **kw)

    mod.tinycc_register_passes = tinycc_register_passes
    return mod


def test_builtin_stages_in_order(session: Session) -> None:
    reg = session.registry
    assert resolve(reg, "cleanup") == reg.pipeline("cleanup") == [
        "remove_dropout", "pool_before_pointwise", "conv1x1_to_dense", "fold_reshapes", "fold_transposes",
        "fold_batchnorm", "fuse_activations", "fold_rescaling"]
    assert resolve(reg, "optimize") == ["prune_channels"]
    assert reg.pipeline("int8") == resolve(reg, "pre_quantize") + resolve(reg, "quantize") == [
        "lower_for_int8", "calibrate", "quantize_int8"]


def test_constraints_place_a_pass_and_edits_add_or_drop() -> None:
    s = Session(autoload=False, extra_plugins=(_plugin(
        mine=("cleanup", {"after": "fold_batchnorm", "before": "fuse_activations"}),
        late=("cleanup", {}), first=("import", {}), extra=("post_quantize", {"default": False})),))
    reg = s.registry
    order = resolve(reg, "cleanup")
    assert order.index("mine") == order.index("fold_batchnorm") + 1 == order.index("fuse_activations") - 1
    assert order[-1] == "late" and resolve(reg, "import") == ["first"]
    assert resolve(reg, "post_quantize") == [] and resolve(reg, "post_quantize", parse_passes("+extra")) == ["extra"]
    assert "fold_reshapes" not in resolve(reg, "cleanup", parse_passes("-fold_reshapes,-mine"))
    assert "mine" not in resolve(reg, "cleanup", parse_passes("-fold_reshapes,-mine"))
    with pytest.raises(TinyccError, match="unknown pass 'nope'"):
        resolve(reg, "cleanup", ("+nope",))
    with pytest.raises(TinyccError, match="write \\+NAME"):
        parse_passes("fold_reshapes")


def test_a_cycle_or_an_unknown_stage_fails_at_startup() -> None:
    with pytest.raises(TinyccError, match="cycle"):
        Session(autoload=False, extra_plugins=(_plugin(a=("import", {"after": "b"}), b=("import", {"after": "a"})),))
    with pytest.raises(TinyccError, match="unknown stage 'later'"):
        Session(autoload=False, extra_plugins=(_plugin(a=("later", {})),))


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinycc.cli", *args], capture_output=True, text=True, timeout=600,
                          env=env or clean_env())


def test_cli_passes_prints_the_resolved_order() -> None:
    r = _run("passes")
    assert r.returncode == 0, r.stderr
    heads = [l[:-1] for l in r.stdout.splitlines() if not l.startswith(" ") and l.endswith(":")]
    assert heads[:len(STAGES)] == list(STAGES)
    cleanup = r.stdout.split("cleanup:\n")[1].split("optimize:")[0]
    assert cleanup.index("fold_reshapes") < cleanup.index("fuse_activations")
    r = _run("passes", "--passes", "-fold_reshapes")
    assert r.returncode == 0 and "fold_reshapes" not in r.stdout.split("cleanup:\n")[1].split("optimize:")[0]
    assert_clean_error(_run("passes", "--passes", "+nope"), 2, "unknown pass 'nope'")


def _compile(out: Path, *extra: str, pre: tuple[str, ...] = (), env: dict | None = None) -> subprocess.CompletedProcess:
    return _run(*pre, "compile", str(EXAMPLE), "-t", "c", "--calib", str(DATA), "-o", str(out), *extra, env=env)


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    stack = [cmp]
    while stack:
        c = stack.pop()
        if c.left_only or c.right_only or c.diff_files or c.funny_files:
            return False
        stack += c.subdirs.values()
    return True


def test_blocking_builtins(tmp_path: Path) -> None:
    base = _compile(tmp_path / "base")
    assert base.returncode == 0, base.stderr
    assert_clean_error(_compile(tmp_path / "p", "--ratio", "0.5", pre=("-p", "no:prune")), 2, "--ratio")
    assert_clean_error(_compile(tmp_path / "o", pre=("-p", "no:ondevice")), 2, "ondevice")
    assert not (tmp_path / "p").exists() and not (tmp_path / "o").exists()
    r = _compile(tmp_path / "noprune", pre=("-p", "no:prune"))  # not needed: no change
    assert r.returncode == 0, r.stderr
    assert _same_tree(tmp_path / "base", tmp_path / "noprune")
    r = _compile(tmp_path / "infer", "--inference-only", pre=("-p", "no:ondevice"))
    assert r.returncode == 0, r.stderr
    assert "inference only" in r.stdout
