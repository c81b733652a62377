"""Structured pruning: mask equivalence on the zoo, budgets, export round trip, CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinycc.errors import TinyccError
from tinycc.ir.channels import analyse, remove, unit_scores
from tinycc.ir.interpreter import run
from tinycc.ir.ops import OpKind
from tinycc.ir.stats import totals
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.passes.keras_export import graph_to_keras
from tinycc.plugins.frontends.keras import graph_from_keras_model
from tinycc.plugins.passes.prune import l1, plan_ratio, prune

from .zoo import ZOO_NAMES, build, sample_input

ROOT = Path(__file__).resolve().parents[1]


def _clean(session, name: str):
    m = build(name)
    g = graph_from_keras_model(m)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    return m, g


def _zeroed_reference(g, units, drop):
    """The original graph with the removed channels' contributions zeroed at every consumer."""
    ref = g.copy()
    gone = {}
    for i in drop:
        for t, c in units[i].positions:
            gone.setdefault(t, set()).add(c)
    for op in ref.ops:
        cs = sorted(gone.get(op.inputs[0], ()))
        if not cs:
            continue
        if op.kind == OpKind.CONV2D and op.attrs["groups"] == 1:
            w = ref.tensors[op.inputs[1]].data.copy()
            w[..., cs] = 0
            ref.tensors[op.inputs[1]].data = w
        elif op.kind == OpKind.DENSE:
            w = ref.tensors[op.inputs[1]].data.copy()
            w[:, cs] = 0
            ref.tensors[op.inputs[1]].data = w
    return ref


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_mask_equivalence(session, name: str) -> None:
    m, g = _clean(session, name)
    units = analyse(g)
    drop = plan_ratio(g, units, unit_scores(g, units, l1), 0.4, {}, 1, 1)
    ref = _zeroed_reference(g, units, drop)
    x = sample_input(m, 8, seed=2)
    y_ref = run(ref, x)[ref.outputs[0]]
    pruned = g.copy()
    remove(pruned, units, drop)
    y = run(pruned, x)[pruned.outputs[0]]
    assert np.abs(y - y_ref).max() <= 1e-5 * max(1.0, np.abs(y_ref).max())
    if any(u.prunable for u in units):
        assert drop and totals(pruned)["params"] < totals(g)["params"]


def test_groups_residual_se_concat(session) -> None:
    _, g = _clean(session, "resnet_add")
    fams = {u.family for u in analyse(g) if u.prunable}
    assert ("r2", "stem") in {tuple(sorted(f)) for f in fams} or any({"stem", "r2"} <= set(f) for f in fams)
    _, g = _clean(session, "mobilenet_v3")
    mul, dw = g.op("se_mul").outputs[0], g.op("dw_hs").outputs[0]
    se = [u for u in analyse(g) if any(t == mul for t, _ in u.positions)]
    assert se and all(any(t == dw for t, _ in u.positions) for u in se)
    _, g = _clean(session, "grouped_conv")
    g4 = g.op("g4").outputs[0]
    blocked = [u for u in analyse(g) if any(t == g4 for t, _ in u.positions)]
    assert blocked and not any(u.prunable for u in blocked)


def test_reported_params_match_tensors_and_export(session) -> None:
    m, g = _clean(session, "mobilenet_v2")
    report = prune(g, ratio=0.5)
    counted = sum(t.size for t in g.tensors.values() if t.is_const)
    assert report["totals_after"]["params"] == counted
    k = graph_to_keras(g)
    assert k.count_params() == counted
    x = sample_input(m, 4, seed=5)
    np.testing.assert_allclose(k.predict(x, verbose=0), run(g, x)[g.outputs[0]], atol=1e-5)
    h = graph_from_keras_model(k)
    for op in g.ops:
        other = h.op(op.name)
        for a, b in zip(op.inputs[1:], other.inputs[1:]):
            np.testing.assert_array_equal(g.tensors[a].data, h.tensors[b].data)


def test_budget_search_and_errors(session) -> None:
    _, g = _clean(session, "resnet_add")
    full = totals(g)["params"]
    report = prune(g.copy(), budget=("params", int(full * 0.6)))
    assert report["totals_after"]["params"] <= int(full * 0.6)
    assert report["totals_after"]["params"] >= int(full * 0.6) * 0.7
    with pytest.raises(TinyccError, match="cannot be reached"):
        prune(g.copy(), budget=("params", 10))
    g2 = g.copy()
    prune(g2, ratio=0.5, round_to=4)
    assert all(g2.tensors[o.outputs[0]].shape[-1] % 4 == 0 for o in g2.ops if o.name in ("stem", "r1"))


def test_criterion_plugin_and_cli(tmp_path: Path) -> None:
    model = ROOT / "examples" / "digits_cnn.h5"
    out = tmp_path / "pruned.keras"
    r = subprocess.run([sys.executable, "-m", "tinycc.cli", "prune", str(model), "--ratio", "0.5", "--criterion", "l2",
                        "-o", str(out), "--report", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert out.exists() and "channels" in r.stdout and "not recovered" in r.stderr
    r = subprocess.run([sys.executable, "-m", "tinycc.cli", "prune", str(model), "--ratio", "0.5", "--criterion",
                        "nope", "-o", str(tmp_path / "x.keras")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "unknown criterion" in r.stderr and not (tmp_path / "x.keras").exists()
