"""Sparse backbone updates (``--train sparse``): a subset's SGD step equals TensorFlow's GradientTape on that subset,
the int8 region takes the trained channels and biases, the budgeted choice, the backbone's own rate, the CLI."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tinycc.backends.c import CBackend  # noqa: E402
from tinycc.deploy.sparse import choose_sparse, minimum_ram, step_parts  # noqa: E402
from tinycc.errors import TinyccError  # noqa: E402
from tinycc.ir.backprop import Trained, step_memory  # noqa: E402
from tinycc.ir.deep import DeepLearner, TwoLevelLearner, deep_cuts  # noqa: E402
from tinycc.ir.simulator import learner_for  # noqa: E402
from tinycc.passes import PassContext, run_pipeline  # noqa: E402
from tinycc.plugins.frontends.keras import graph_from_keras_model  # noqa: E402

from .deploy_util import build_deployment  # noqa: E402
from .test_backprop import TOL, _ir_layout, _tail, _tail_model  # noqa: E402
from .zoo import resnet_add  # noqa: E402


@pytest.fixture(scope="module")
def dep():
    from tinycc.session import Session

    session = Session(autoload=False)
    tf.keras.utils.set_random_seed(0)
    g = graph_from_keras_model(resnet_add())
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    calib = np.random.default_rng(0).uniform(-1, 1, (32, 10, 10, 3)).astype(np.float32)
    return build_deployment(g, {"calib_data": calib, "buffer": 8, "lr": 0.05}, session, CBackend())


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 10, 10, 3)).astype(np.float32)
    return x, (x[:, :5, :, 0].mean(axis=(1, 2)) > 0).astype(np.int64) + 2 * (x[..., 1].mean(axis=(1, 2)) > 0)


def test_subset_step_equals_gradient_tape(session) -> None:
    """Channels 1 and 3 of c2, the bias of dw, the whole d1, the whole d2 train (c2 and dw at their own rate);
    oracle: GradientTape gradients of every variable, SGD applied to that subset only; nothing else moves."""
    m = _tail_model("gap", 5)
    t0 = _tail(session, m, "blocks")
    by = {op.origin: op.name for op in t0.ops if op.name in t0.params}
    subset = {by["c2"]: Trained(False, (1, 3)), by["dw"]: Trained(True, ()), by["d1"]: Trained(True, None),
              by["d2"]: Trained(True, None)}
    t = type(t0)(t0.graph, t0.cut, "blocks", subset=subset)
    rates = {by["c2"]: 0.02, by["dw"]: 0.02}
    assert t.need_grad and by["c1"] not in {op.name for op in t.ops if op.outputs[0] in t.need_grad}
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (7, 6, 6, 3)).astype(np.float32)
    y = rng.integers(0, 3, 7)
    before = {k: (p.weight.copy(), p.bias.copy()) for k, p in t.params.items()}
    rate_of = {"c2": 0.02, "dw": 0.02, "d1": 0.05, "d2": 0.05}
    for s, e in ((0, 1), (1, 4), (0, 7)):
        assert t.sgd_step(x[s:e], y[s:e], 0.05, rates=rates)
        variables = [v for layer in m.layers for v in layer.weights]
        with tf.GradientTape() as tape:
            loss = tf.keras.losses.SparseCategoricalCrossentropy()(tf.constant(y[s:e]), m(tf.constant(x[s:e])))
        grads = dict(zip((id(v) for v in variables), tape.gradient(loss, variables)))
        for layer in m.layers:
            if not layer.weights:
                continue
            w, b = layer.weights[0], layer.weights[1]
            lr = rate_of.get(layer.name, 0.0)
            if layer.name == "c2":  # Keras kernel [KH, KW, I, O]: output channels on the last axis
                mask = np.zeros(w.shape, np.float32)
                mask[..., [1, 3]] = 1
                w.assign_sub(lr * grads[id(w)] * mask)
            elif layer.name in ("d1", "d2"):
                w.assign_sub(lr * grads[id(w)])
            if layer.name in ("dw", "d1", "d2"):
                b.assign_sub(lr * grads[id(b)])
        for layer in m.layers:
            if layer.weights:
                p = t.params[by[layer.name]]
                np.testing.assert_allclose(p.weight, _ir_layout(layer, layer.weights[0].numpy()), atol=TOL, rtol=0)
                np.testing.assert_allclose(p.bias, layer.weights[1].numpy(), atol=TOL, rtol=0)
    for name in ("c1", "pw"):  # untrained: bit for bit
        np.testing.assert_array_equal(t.params[by[name]].weight, before[by[name]][0])
        np.testing.assert_array_equal(t.params[by[name]].bias, before[by[name]][1])
    c2 = t.params[by["c2"]].weight
    np.testing.assert_array_equal(c2[[0, 2, 4]], before[by["c2"]][0][[0, 2, 4]])
    assert not np.array_equal(c2[[1, 3]], before[by["c2"]][0][[1, 3]])
    assert t.parameter_count() == 2 * (3 * 3 * 4) + 4 + (5 * 6 + 6) + (6 * 3 + 3)  # c2 channels, dw bias, d1, d2


def test_subset_is_validated(session) -> None:
    t0 = _tail(session, _tail_model("gap", 5), "blocks")
    name = next(k for k in t0.params)
    with pytest.raises(ValueError, match="channels"):
        type(t0)(t0.graph, t0.cut, "blocks", subset={name: Trained(False, (0, 0))})
    with pytest.raises(ValueError, match="not a parameter op"):
        type(t0)(t0.graph, t0.cut, "blocks", subset={"nope": Trained()})


def test_sparse_learner_requantizes_its_channels(dep) -> None:
    """The int8 region takes rint(w / s_w[c]) of the trained channels and requantize_bias of the trained biases;
    every other int8 weight and bias stays bit for bit; the deployment's own graph is untouched; a head-only
    subset leaves the backbone alone and its step keeps fewer gradient arrays than the whole region's."""
    cut = deep_cuts(dep.extractor, dep.classifier)[-1]
    probe = DeepLearner(dep, cut, "sparse", capacity=4, subset={})
    convs = [op.name for op in probe.region_params]
    subset = {convs[-1]: Trained(True, (0, 5)), convs[0]: Trained(True, ())}
    dl = DeepLearner(dep, cut, "sparse", capacity=4, lr=0.05, deep_lr=0.5, subset=subset)
    orig = {t: np.array(dl.view.tensors[t].data) for op in dl.region_params for t in op.inputs[1:3]}
    ext_before = {t: np.array(v.data) for t, v in dep.extractor.tensors.items() if v.data is not None}
    x, y = _data(6, 1)
    for i in range(6):
        dl.learn_input(x[i], int(y[i]))
    last = next(op for op in dl.region_params if op.name == convs[-1])
    w = dl.view.tensors[last.inputs[1]]
    master = dl.tail.params[last.name].weight
    want = np.clip(np.rint(master[[0, 5]] / np.asarray(w.quant.scale, np.float64)[[0, 5], None, None, None]),
                   -127, 127)
    np.testing.assert_array_equal(w.data[[0, 5]], want.astype(np.int8))
    keep = [c for c in range(w.data.shape[0]) if c not in (0, 5)]
    np.testing.assert_array_equal(w.data[keep], orig[last.inputs[1]][keep])
    assert not np.array_equal(w.data[[0, 5]], orig[last.inputs[1]][[0, 5]])
    first = next(op for op in dl.region_params if op.name == convs[0])
    np.testing.assert_array_equal(dl.view.tensors[first.inputs[1]].data, orig[first.inputs[1]])
    assert not np.array_equal(dl.view.tensors[first.inputs[2]].data, orig[first.inputs[2]])
    for t, v in ext_before.items():
        np.testing.assert_array_equal(dep.extractor.tensors[t].data, v)
    head_only = DeepLearner(dep, cut, "sparse", capacity=4, subset={})
    full = DeepLearner(dep, cut, "sparse", capacity=4, subset={k: Trained(True, None) for k in convs})
    g_head = step_memory(head_only.tail, 1, (), learn=True, known=head_only.known_tensors())["gradients"]
    g_full = step_memory(full.tail, 1, (), learn=True, known=full.known_tensors())["gradients"]
    assert g_head < g_full
    assert step_parts(dep, cut, subset)["int8_channels"] == 2 * master[0].size


def test_backbone_only_two_level_with_a_frozen_backbone_is_head_only(dep) -> None:
    """deep_lr 0 and a deep step that leaves Φc alone: the two-level learner is head-only Ω (oracle:
    ``learner_for``'s OnlineLearner on the same int8 features): same Φc, same predictions."""
    cut = deep_cuts(dep.extractor, dep.classifier)[-1]
    two = TwoLevelLearner(dep, cut, "bias", capacity=2, head_capacity=6, lr=0.05, epochs=1, deep_lr=0.0,
                          backbone_only=True)
    omega = learner_for(dep, 6, "int8", 0.05, 1)
    x, y = _data(9, 4)
    from tinycc.ir.interpreter_int8 import run_int8

    ext = dep.extractor
    feats = run_int8(ext, x)[ext.outputs[0]].reshape(len(x), -1)
    for i in range(9):
        two.learn(two.cut_of(x[i:i + 1])[0], int(y[i]))
        omega.learn(feats[i], int(y[i]))
    for k, layer in zip(two.head.params, omega.classifier.layers):
        np.testing.assert_allclose(two.tail.params[k].weight, layer.weight, atol=1e-5)
        np.testing.assert_allclose(two.tail.params[k].bias, layer.bias, atol=1e-5)
    np.testing.assert_array_equal(two.predict(two.cut_of(x))[0], omega.predict(feats)[0])


def test_choose_sparse_fits_the_budget(dep, capsys) -> None:
    """The greedy choice: only candidates that gained, the whole learning state within the budget (recomputed
    from its parts), the feature buffer filling the rest; a budget below the classifier's step is refused. The
    analysis shows its progress on stderr when asked."""
    cut = deep_cuts(dep.extractor, dep.classifier)[-1]
    x, y = _data(40, 7)
    base = minimum_ram(dep, cut)
    ram = base + 20_000
    ch = choose_sparse(dep, cut, x, y, ram, 0.05, 0.05, n_train=28, progress=True)
    assert "sparse: contribution analysis" in capsys.readouterr().err
    assert all(c.gain > 0 for c in ch.chosen)
    m = ch.memory
    assert m["step"] == sum(step_parts(dep, cut, ch.subset).values())
    assert m["total"] == m["fixed"] + m["step"] + m["cut_buffer"] + m["feature_buffer"] <= ram
    assert m["features"] >= 256 and "contribution analysis" in ch.describe()
    labels = {c.label for c in ch.candidates}
    assert any(l.startswith("bias of") for l in labels) and any("channels of" in l for l in labels)
    with pytest.raises(TinyccError, match="classifier alone"):
        choose_sparse(dep, cut, x, y, base - 1, 0.05, 0.05)


def test_select_says_why_nothing_was_chosen(dep) -> None:
    """`select` with candidates whose gains are set: none gained -> "no candidate gained"; one gained but its step
    does not fit the room the budget leaves -> nothing chosen, and the printed choice names it and its cost."""
    from tinycc.deploy.sparse import candidates, select

    cut = deep_cuts(dep.extractor, dep.classifier)[-1]
    x, y = _data(8, 3)
    cands = candidates(dep, cut, DeepLearner(dep, cut, "sparse", capacity=1, subset={}).cut_of(x), y)
    ram = minimum_ram(dep, cut)  # room for the classifier's step only
    for c in cands:
        c.gain, c.cost = 0.0, 1
    assert "nothing (no candidate gained" in select(dep, cut, 0.5, cands, ram).describe()
    cands[0].gain, cands[0].cost = 0.1, 12_345
    ch = select(dep, cut, 0.5, cands, ram)
    assert not ch.chosen and not ch.subset
    text = ch.describe()
    assert "1 candidate(s) gained but none fits the budget" in text and cands[0].label in text
    assert "+10.0 points" in text and "12,345 B" in text


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinycc.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, msg", [
    (["--deep-lr", "0.01"], "--deep-lr needs --deep or --train sparse"),
    (["--deep", "bias", "--deep-lr", "-1"], "--deep-lr"),
    (["--train", "sparse", "--deep", "bias"], "drop --deep"),
    (["--train", "sparse"], "needs a RAM budget"),
])
def test_cli_refuses(tmp_path, args, msg) -> None:
    model = tmp_path / "m.keras"
    resnet_add().save(model)
    r = _cli("compile", str(model), "-t", "c", "-o", str(tmp_path / "out"), *args)
    assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cli_compile_prints_the_choice(tmp_path) -> None:
    """`tinycc compile --train sparse --ram N --calib LABELLED.npz`: the analysis and the choice within --ram on
    stdout, its total the written project's memory report's (tests/test_sparse_project.py checks the project); an
    .npz without labels: one line."""
    model = tmp_path / "m.keras"
    tf.keras.utils.set_random_seed(0)
    resnet_add().save(model)
    x, y = _data(40, 3)
    np.savez(tmp_path / "calib.npz", x=x, y=y)
    np.savez(tmp_path / "nolabels.npz", x=x)
    out = tmp_path / "out"
    r = _cli("compile", str(model), "-t", "c", "-o", str(out), "--train", "sparse", "--ram", "400000",
             "--calib", str(tmp_path / "calib.npz"), "--deep-lr", "0.01")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "sparse: cut at" in r.stdout and "contribution analysis" in r.stdout and "bias of" in r.stdout
    total = int(r.stdout.split("total RAM ")[1].split(" B")[0].replace(",", ""))
    assert total <= 400_000 and total == json.loads((out / "tinycc_memory.json").read_text())["ram"]
    out = tmp_path / "out2"
    r = _cli("compile", str(model), "-t", "c", "-o", str(out), "--train", "sparse", "--ram", "400000",
             "--calib", str(tmp_path / "nolabels.npz"))
    assert r.returncode == 2 and "stores no labels" in r.stderr and len(r.stderr.strip().splitlines()) == 1
