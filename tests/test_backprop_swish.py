"""The backward through swish, sigmoid, hard sigmoid and element-wise mul (the thesis's CNAS tail: swish
activations and a squeeze-and-excitation block) equals TensorFlow's GradientTape + SGD; the int8 region (swish as
the int8 LOGISTIC + MUL kernels) learns its biases; the c backend builds such a region (tests/test_swish_c.py: the
generated step equals the simulator) and refuses, in one line, what its step still lacks."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tinycc.backends.c import CBackend  # noqa: E402
from tinycc.backends.c.deep_emit import c_step_problem, learner_step  # noqa: E402
from tinycc.ir.deep import DeepLearner, deep_cuts, requantize_bias  # noqa: E402
from tinycc.ir.ops import OpKind  # noqa: E402
from tinycc.ir.train import softmax  # noqa: E402
from tinycc.passes import PassContext, run_pipeline  # noqa: E402
from tinycc.plugins.frontends.keras import graph_from_keras_model  # noqa: E402

from .deploy_util import build_deployment  # noqa: E402
from .test_backprop import _tail, known_values_replace_the_forward, steps_equal_tape  # noqa: E402


def _swish_model(decomposed: bool, seed: int) -> tf.keras.Model:
    """Conv + swish, depthwise + swish, GAP, an SE block (Dense relu, Dense hard sigmoid, Multiply), Dense + swish
    without a bias (or x * sigmoid(x) as two layers when ``decomposed``, the int8 graph's form), a sigmoid Dense, the
    logits."""
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(seed)

    def swish(x, name):
        if not decomposed:
            return L.Activation("swish", name=name)(x)
        return L.Multiply(name=name)([x, L.Activation("sigmoid", name=name + "_s")(x)])

    inp = tf.keras.Input((5, 5, 3))
    x = swish(L.Conv2D(4, 3, padding="same", name="c1")(inp), "sw1")
    x = swish(L.DepthwiseConv2D(3, padding="same", name="dw")(x), "sw2")
    g = L.GlobalAveragePooling2D(name="gap")(x)
    e = L.Dense(3, activation="relu", name="se1")(g)
    e = L.Dense(4, activation="hard_sigmoid", name="se2")(e)
    x = L.Multiply(name="se")([e, g])
    x = swish(L.Dense(6, use_bias=False, name="d1")(x), "sw3")  # as CNAS's last convolution
    x = L.Dense(5, activation="sigmoid", name="d2")(x)
    out = L.Dense(3, activation="softmax", name="d3")(x)
    m = tf.keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    m.set_weights([rng.normal(0, 0.6, w.shape).astype(np.float32) for w in m.get_weights()])
    return m


@pytest.mark.parametrize("decomposed", [False, True])
@pytest.mark.parametrize("mode", ["blocks", "bias"])
def test_swish_tail_equals_gradient_tape(session, mode: str, decomposed: bool) -> None:
    m = _swish_model(decomposed, 3)
    t = _tail(session, m, mode)
    kinds = {op.kind for op in t.ops}
    assert {OpKind.MUL, OpKind.SIGMOID} <= kinds and (OpKind.SWISH in kinds) != decomposed
    rng = np.random.default_rng(1)
    steps_equal_tape(t, m, mode, rng.normal(0, 1.5, (7, 5, 5, 3)).astype(np.float32), rng.integers(0, 3, 7), 0.1)


def test_known_values_replace_the_forward(session) -> None:
    """Gradients at given activations (the int8 path's ``known``) equal those of the float forward at them."""
    known_values_replace_the_forward(_tail(session, _swish_model(True, 4), "bias"), (3, 5, 5, 3))


CALIB = np.random.default_rng(0).uniform(-1, 1, (32, 6, 6, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def graph():
    from tinycc.session import Session

    session = Session(autoload=False)
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((6, 6, 3))
    x = L.Conv2D(6, 3, padding="same", activation="swish", name="c1")(inp)
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="swish", name="c2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(8, activation="swish", use_bias=False, name="d1")(x)  # as CNAS's last convolution
    out = L.Dense(4, activation="softmax", name="head")(x)
    g = graph_from_keras_model(tf.keras.Model(inp, out))
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    return g


@pytest.fixture(scope="module")
def dep(graph):
    from tinycc.session import Session

    return build_deployment(graph.copy(), {"calib_data": CALIB, "buffer": 8, "lr": 0.05}, Session(autoload=False),
                            CBackend())


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    shift = np.array([[0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [-0.5, -0.5, -0.5]], np.float32)
    return rng.uniform(-0.5, 0.5, (n, 6, 6, 3)).astype(np.float32) + shift[y][:, None, None, :], y


def test_int8_swish_region_learns_its_biases(dep) -> None:
    """bias mode through the int8 LOGISTIC + MUL kernels: a cut before them exists, learning lowers the loss, the
    int32 biases are the requantized float masters, the int8 weights stay; the C step refuses in one line."""
    cut = deep_cuts(dep.extractor, dep.classifier)[-1]  # the earliest: both swish convolutions after it
    learner = DeepLearner(dep, cut, "bias", capacity=8, lr=0.05, epochs=1, deep_lr=0.05)
    kinds = [op.kind for op in learner.region.ops]
    assert OpKind.SIGMOID in kinds and OpKind.MUL in kinds and len(learner.region_params) >= 2
    x, y = _data(48, 1)

    def loss() -> float:
        p = softmax(learner.logits_cut(learner.cut_of(x)))
        return float(-np.mean(np.log(p[np.arange(len(y)), y])))

    before = loss()
    for xi, yi in zip(x, y):
        learner.learn_input(xi, int(yi))
        assert not learner.last_refused
    assert loss() < before
    assert any(len(op.inputs) < 3 for op in learner.region_params)  # the bias-less layer: its weights stay
    for op in (o for o in learner.region_params if len(o.inputs) > 2):
        t = learner.view.tensors[op.inputs[2]]
        np.testing.assert_array_equal(t.data, requantize_bias(learner.tail.params[op.name].bias, t.quant.scale))
        assert not np.array_equal(t.data, dep.extractor.tensors[op.inputs[2]].data)
        np.testing.assert_array_equal(learner.view.tensors[op.inputs[1]].data,
                                      dep.extractor.tensors[op.inputs[1]].data)
    assert c_step_problem(learner.tail) is None  # the generated C step trains it too (tests/test_swish_c.py)
    src, order = learner_step(learner, 4)
    assert order == [op.outputs[0] for op in learner.region.ops] and "tcc_bp_sigmoid_dx(" in src


def test_simulate_cut_skips_a_region_without_biases(dep) -> None:
    """`simulate --deep bias`'s default cut: the latest where the region has a bias to train (not the input of the
    bias-less last layer alone, which only ``blocks`` can train)."""
    from tinycc.plugins.applications.deep_modes import choose_deep_cut

    cuts = deep_cuts(dep.extractor, dep.classifier)
    last = next(c for c in cuts if DeepLearner(dep, c, "blocks", capacity=1).region_params)  # before d1 alone
    assert [len(op.inputs) for op in DeepLearner(dep, last, "blocks", capacity=1).region_params] == [2]
    with pytest.raises(ValueError, match="no layer after the cut has a bias"):
        DeepLearner(dep, last, "bias", capacity=1)
    cut = choose_deep_cut(dep, ("bias",), None)
    assert cuts.index(cut) > cuts.index(last) and DeepLearner(dep, cut, "bias", capacity=1).region_params
    assert choose_deep_cut(dep, ("blocks",), None) == last


def test_c_backend_builds_the_swish_region(graph) -> None:
    """`tinycc compile -t c --deep bias` on such a model: the deploy stage renders and builds the project (its stack
    is measured), the step holding the sigmoid backward (the bias-less layer trains no bias)."""
    from tinycc.deploy import build_deep_deployment
    from tinycc.session import Session

    from .deploy_util import make_config

    session = Session(autoload=False)
    dep = build_deep_deployment(graph.copy(), make_config(session, deep=("bias",), lr=0.05), session, CBackend(),
                                CALIB)
    items = {i["name"]: i for i in dep.memory["items"]}
    assert items["stack"]["exact"] and items["learn step: int32 biases"]["bytes"] > 0


def test_c_backend_refuses_a_broadcast_add_in_one_line(session) -> None:
    """An Add of two tensors of different shapes ([N,H,W,C] + [N,1,1,C]) has a C step now (tests/test_backprop_bcast.py
    checks its values); what the step still refuses (here a hand-made constant of a higher rank than the output) is
    one line naming the layer."""
    from tinycc.backends.c.deep_emit import emit_step
    from tinycc.ir.backprop import Tail
    from tinycc.ir.tensor import DType

    L = tf.keras.layers
    inp = tf.keras.Input((4, 4, 3))
    x = L.Conv2D(4, 3, padding="same", name="c1")(inp)
    e = L.GlobalAveragePooling2D(keepdims=True, name="sq")(x)
    x = L.GlobalAveragePooling2D(name="gap")(L.Add(name="badd")([x, e]))
    g = graph_from_keras_model(tf.keras.Model(inp, L.Dense(3, name="d")(x)))
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    t = Tail(g, g.inputs[0], "blocks")
    assert c_step_problem(t) is None and "tcc_deep_step(" in emit_step(t, 2)
    add = next(op for op in g.ops if op.kind == OpKind.ADD)
    add.inputs[1] = g.add_const("k5", np.ones((1, 1, 1, 1, 4), np.float32), DType.FLOAT32).name
    why = c_step_problem(Tail(g, g.inputs[0], "blocks"))
    assert why == ("layer 'badd' (add of a constant that does not broadcast) has no backward pass in the generated C "
                   "step (the simulator's only)")
    with pytest.raises(ValueError, match="^layer 'badd' "):
        emit_step(Tail(g, g.inputs[0], "blocks"), 2)
