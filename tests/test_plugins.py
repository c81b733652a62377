"""Plugin system: built-ins registered through hooks; the example third-party plugin installs and runs."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinycc.errors import TinyccError
from tinycc.ir.graph import Graph
from tinycc.passes import Pass, PassContext, run_pipeline
from tinycc.session import DEFAULT_PLUGINS, Session

from . import c_harness

ROOT = Path(__file__).resolve().parents[1]


def _graph_with_noop_reshape() -> Graph:
    g = Graph("t")
    g.add_input("x", (1, 4, 4, 2))
    w = g.add_const("w", np.ones((3, 1, 1, 2), np.float32))
    c = g.add_op("conv2d", ["x", w.name], "conv")
    r = g.add_op("reshape", [c.outputs[0]], "noop", {"shape": (4, 4, 3)})
    f = g.add_op("flatten", [r.outputs[0]], "flat")
    g.outputs = [f.outputs[0]]
    return g


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> Path:
    """pip-install the example plugin into a private folder (no change to the environment)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT / "examples" / "plugin")], check=True)
    return target


def test_builtins_registered_through_hooks(session: Session) -> None:
    names = [n for _, n in DEFAULT_PLUGINS]
    assert session.order and all(n in names for n in session.order)
    for entry in session.registry.passes.values():
        assert entry.plugin in names


def test_example_plugin_pass_runs_in_pipeline(installed_example: Path) -> None:
    sys.path.insert(0, str(installed_example))
    try:
        session = Session(autoload=True)
        assert "remove_noop_reshapes" in session.registry.passes
        assert session.registry.passes["remove_noop_reshapes"].plugin == "example"
        g = _graph_with_noop_reshape()
        ctx = PassContext(session=session)
        run_pipeline(g, session.registry.pipeline("example"), ctx)
        assert [o.kind.value for o in g.ops] == ["conv2d", "flatten"]
        assert ctx.results["remove_noop_reshapes"] == {"changed": True}
        blocked = Session(autoload=True, blocked=("example",))
        assert "remove_noop_reshapes" not in blocked.registry.passes
    finally:
        sys.path.remove(str(installed_example))
        for mod in [m for m in sys.modules if m.startswith("tinycc_example_plugin")]:
            del sys.modules[mod]


def _int8_weights(model_c: Path) -> list[int]:
    """Every value of the int8 weight arrays of a generated model.c."""
    tables = c_harness.model_tables(model_c.read_text())
    return [int(v) for name, t in sorted(tables.items())
            if t.dtype == np.int8 and re.fullmatch(r"tcc_\w+_(?:weights|input\d+)", name) for v in t]


def test_example_plugin_runs_inside_compile(installed_example: Path, tmp_path: Path) -> None:
    """Installed through its entry point, the example's pass runs in `tinycc compile` (optimize stage) with its own
    typed option, and changes the emitted project; dropped with --passes or blocked with -p, it changes nothing."""
    from .test_cli import clean_env
    from .test_stages import _compile, _run, _same_tree

    env = dict(clean_env(), PYTHONPATH=str(installed_example))
    r = _run("passes", env=env)
    assert r.returncode == 0, r.stderr
    optimize = r.stdout.split("optimize:\n")[1].split("pre_quantize:")[0]
    assert optimize.index("prune_channels") < optimize.index("zero_small_weights")
    assert "remove_noop_reshapes" in r.stdout.split("import:\n")[1].split("cleanup:")[0]
    assert _compile(tmp_path / "base", env=env).returncode == 0
    r = _compile(tmp_path / "zeroed", "--zero-below", "0.05", env=env)
    assert r.returncode == 0, r.stderr
    base, zeroed = (_int8_weights(tmp_path / d / "model.c") for d in ("base", "zeroed"))
    assert len(base) == len(zeroed) > 1000
    assert zeroed.count(0) > base.count(0) + 100  # small weights became exact zeros
    r = _compile(tmp_path / "dropped", "--zero-below", "0.05", "--passes", "-zero_small_weights", env=env)
    assert r.returncode == 0, r.stderr
    assert _same_tree(tmp_path / "base", tmp_path / "dropped")
    r = _compile(tmp_path / "blocked", "--zero-below", "0.05", pre=("-p", "no:example"), env=env)
    assert r.returncode == 2 and "--zero-below" in r.stderr  # the option is the plugin's: gone when it is blocked


def test_cli_plugins_lists_example(installed_example: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(installed_example))
    out = subprocess.run([sys.executable, "-m", "tinycc.cli", "plugins"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "remove_noop_reshapes" in out.stdout and "tinycc-example-plugin" in out.stdout
    for _, name in DEFAULT_PLUGINS:
        if name in Session(autoload=False).order:
            assert name in out.stdout
    env["TINYCC_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    out = subprocess.run([sys.executable, "-m", "tinycc.cli", "plugins"], capture_output=True, text=True, env=env)
    assert "remove_noop_reshapes" not in out.stdout


def test_duplicate_and_unknown_names_are_errors(session: Session) -> None:
    class Dup(Pass):
        name = "dup"

    session.registry.add_pass(Dup)
    with pytest.raises(TinyccError, match="registered twice"):
        session.registry.add_pass(Dup)
    with pytest.raises(TinyccError, match="unknown pass"):
        run_pipeline(Graph(), ["no_such_pass"], PassContext(session=session))
    with pytest.raises(TinyccError, match="unknown target"):
        session.registry.backend("no_such_backend")


def test_broken_entry_point_is_an_error(tmp_path: Path) -> None:
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[tinycc]\nbroken = no_such_module_xyz\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(TinyccError, match="failed to load"):
            Session(autoload=True)
    finally:
        sys.path.remove(str(tmp_path))
