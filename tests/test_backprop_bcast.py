"""Training through broadcasting tensor+tensor Add, Subtract and Multiply (an SE/attention block's x + per-channel
tensor ``[N,H,W,C] + [N,1,1,C]``, a per-sample scalar ``[N,1,1,1]``, either operand order): the numpy backward
(tinycc.ir.backprop) equals TensorFlow's GradientTape + SGD, the generated C step (host, ASan/UBSan, -Werror) equals
it step after step, the `--deep blocks|bias` project learns as the simulator, and what stays unsupported (a
broadcast between tensors of different ranks) is refused in one line naming the Keras layer."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tinycc.ir.backprop import Tail  # noqa: E402
from tinycc.ir.ops import OpKind  # noqa: E402
from tinycc.passes import PassContext, run_pipeline  # noqa: E402
from tinycc.plugins.frontends.keras import graph_from_keras_model  # noqa: E402

from . import c_harness  # noqa: E402
from .test_backprop import _tail, steps_equal_tape  # noqa: E402
from .test_backprop_c import TOL, _arr, _run  # noqa: E402
from .test_deep import _data  # noqa: E402

F32 = np.float32
GCC = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def _bcast_model(swap: bool, seed: int, size: int = 6, classes: int = 3) -> tf.keras.Model:
    """A stem, a 1x1 convolution x, its squeeze (GAP) to a per-channel e [N,1,1,C] (Dense sigmoid, reshaped) and a
    per-sample s [N,1,1,1] (Dense, reshaped), then x + e (ReLU), x - s, x * s, x + s, x - e (``swap``: every pair in the other
    order), GAP, the logits: e and s read by several ops, x's gradient also through the squeeze."""
    L = tf.keras.layers
    tf.keras.utils.set_random_seed(seed)

    def pair(a, b):
        return [b, a] if swap else [a, b]

    inp = tf.keras.Input((size, size, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inp)
    x = L.Conv2D(4, 1, name="c1")(x)
    q = L.GlobalAveragePooling2D(name="sq")(x)
    e = L.Reshape((1, 1, 4), name="ex_r")(L.Dense(4, activation="sigmoid", name="ex")(q))
    s = L.Reshape((1, 1, 1), name="sc_r")(L.Dense(1, name="sc")(q))
    x = L.ReLU(name="r1")(L.Add(name="add_c")(pair(x, e)))
    x = L.Subtract(name="sub_s")(pair(x, s))
    x = L.Multiply(name="mul_s")(pair(x, s))
    x = L.Add(name="add_s")(pair(x, s))
    x = L.Subtract(name="sub_c")(pair(x, e))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(classes, activation="softmax", name="head")(x)
    m = tf.keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    m.set_weights([rng.normal(0, 0.5, w.shape).astype(F32) for w in m.get_weights()])
    return m


def _broadcasts(t: Tail) -> list[tuple[str, tuple, tuple]]:
    """(kind, first operand's shape, second's) of the tail's tensor+tensor Add/Sub/Mul."""
    g = t.graph
    return [(op.kind.value, g.tensors[op.inputs[0]].shape, g.tensors[op.inputs[1]].shape) for op in t.ops
            if op.kind in (OpKind.ADD, OpKind.SUB, OpKind.MUL) and all(g.tensors[i].data is None for i in op.inputs)]


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("mode", ["blocks", "bias"])
def test_broadcast_tail_equals_gradient_tape(session, mode: str, swap: bool) -> None:
    """Every broadcast form is in the tail (both operand orders); SGD steps of 1, 3 and 7 rows equal GradientTape."""
    m = _bcast_model(swap, 3)
    t = _tail(session, m, mode)
    x4, c, one = (1, 6, 6, 4), (1, 1, 1, 4), (1, 1, 1, 1)
    pairs = [(x4, c), (x4, one), (x4, one), (x4, one), (x4, c)]
    want = [(k, *(p[::-1] if swap else p)) for k, p in zip(["add", "sub", "mul", "add", "sub"], pairs)]
    assert _broadcasts(t) == want
    rng = np.random.default_rng(1)
    steps_equal_tape(t, m, mode, rng.normal(0, 1, (7, 6, 6, 3)).astype(F32), rng.integers(0, 3, 7), 0.1)


@GCC
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("mode", ["blocks", "bias"])
def test_generated_broadcast_step_equals_tail(session, tmp_path: Path, mode: str, swap: bool) -> None:
    """The generated SGD step (host, ASan/UBSan, -Wall -Wextra -Werror) equals Tail.sgd_step after steps of 1, 3 and 2
    rows, parameter by parameter (1e-5); an infinite rate is refused; the logits after learning agree."""
    from tinycc.backends.c.deep_emit import c_step_problem, emit_step

    t = _tail(session, _bcast_model(swap, 2), mode)
    assert c_step_problem(t) is None and len(_broadcasts(t)) == 5
    (tmp_path / "step.c").write_text(emit_step(t, 3))
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (6, 6, 6, 3)).astype(F32)
    y = rng.integers(0, 3, 6)
    per = 6 * 6 * 3
    decls = _arr("xs", x) + "static const int32_t ys[6] = {" + ", ".join(map(str, y)) + '};\n#include "step.c"\n'
    body = (f"int r0 = tcc_deep_step(xs, ys, 1, 0.1f);\nint r1 = tcc_deep_step(xs + {per}, ys + 1, 3, 0.1f);\n"
            f"int r2 = tcc_deep_step(xs + {4 * per}, ys + 4, 2, 0.1f);\n"
            "int r3 = tcc_deep_step(xs, ys, 1, 1.0f / 0.0f);\nprintf(\"%d %d %d %d\\n\", r0, r1, r2, r3);\n")
    for k, p in enumerate(t.params.values()):
        body += f"out(tcc_dw{k}, {p.weight.size}); out(tcc_db{k}, {p.bias.size});\n"
    body += "static float z[9];\ntcc_deep_logits(xs, 3, z); out(z, 9);\n"
    start = {k: (p.weight.copy(), p.bias.copy()) for k, p in t.params.items()}
    for s, e in ((0, 1), (1, 4), (4, 6)):
        assert t.sgd_step(x[s:e], y[s:e], 0.1)
    got = _run(tmp_path, decls, body)
    assert list(got[0]) == [1, 1, 1, 0]  # three steps applied; an infinite rate refused
    for k, (name, p) in enumerate(t.params.items()):
        np.testing.assert_allclose(got[1 + 2 * k], p.weight.reshape(-1), atol=TOL, rtol=TOL)
        np.testing.assert_allclose(got[2 + 2 * k], p.bias, atol=TOL, rtol=TOL)
        assert np.abs(p.bias - start[name][1]).max() > 1e-4  # every bias moved (the gradient reached it)
        assert mode == "bias" or np.abs(p.weight - start[name][0]).max() > 1e-4
    np.testing.assert_allclose(got[-1], t.forward(x[:3])[t.logits].reshape(-1), atol=TOL, rtol=TOL)


CALIB = np.random.default_rng(0).uniform(-1, 1, (32, 10, 10, 3)).astype(F32)


@pytest.fixture(scope="module")
def bcast_graph():
    from tinycc.session import Session

    session = Session(autoload=False)
    g = graph_from_keras_model(_bcast_model(False, 0, size=10, classes=4))
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    return g


def _deploy(graph, mode: str, **opts):
    from .deploy_util import deep_deployment

    return deep_deployment(graph, mode, CALIB, **opts)


M4 = pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm missing")


@GCC
@pytest.mark.parametrize("mode, where", [("bias", "host"), ("blocks", "host"), pytest.param("blocks", "m4", marks=M4)])
def test_broadcast_project_learns_as_the_simulator(bcast_graph, tmp_path: Path, mode: str, where: str) -> None:
    """`--deep bias|blocks --deep-cut stem` (the region: the broadcast Add/Sub/Mul, int8 ADD/SUB/MUL kernels): the
    project's demo (host, ASan/UBSan; blocks also on a Cortex-M4 under QEMU) learns 5 samples (buffer 3, batch 2) as the simulator: bias: the int32 biases
    bit for bit; blocks: the float region's weights and biases (1e-5 relative); the classifier and predictions."""
    from tinycc.ir.deep import DeepLearner

    dep = _deploy(bcast_graph, mode, buffer=3, batch_size=2, epochs=1)
    sim = DeepLearner(dep, dep.meta["deep"]["cut"], mode, capacity=dep.buffer.capacity)
    kinds = [op.kind for op in sim.region.ops]
    assert kinds.count(OpKind.SUB) == 2 and kinds.count(OpKind.ADD) >= 2 and OpKind.MUL in kinds
    x, y = _data(5, 11)
    out, q = c_harness.run_deep_demo(dep, sim, tmp_path, x, y, where, learn=5)
    start = [sim.view.tensors[op.inputs[2]].data.copy() for op in sim.region_params]
    for i in range(5):
        sim.learn_input(x[i], int(y[i]))
        assert not sim.last_refused
    c_harness.check_learned(out, sim, dep, q, sim.region_params, mode)
    assert mode == "blocks" or any((s != b).any() for s, b in zip(start, out.backbone))  # the biases moved


@GCC
@pytest.mark.parametrize("mode", ["bias", "blocks"])
def test_broadcast_project_report_equals_symbols(bcast_graph, tmp_path: Path, mode: str) -> None:
    """The project (host, -Wall -Wextra -Werror) declares exactly the RAM its report counts, line by line (the
    broadcast operands' gradients in the step's slots)."""
    from .test_deep_project import RAM_GROUPS, static_ram_by_line

    ram, items, _ = static_ram_by_line(_deploy(bcast_graph, mode, buffer=3, batch_size=2), tmp_path, "host",
                                       RAM_GROUPS)
    assert ram["learn step: values"] > 0 and ram["learn step: gradients"] > 0 and items["stack"]["exact"]


def test_broadcast_of_another_rank_is_refused_naming_the_layer(session) -> None:
    """A tensor+tensor broadcast of two ranks (``[N,H,W,C] + [N,C]``: the batch axis would meet a spatial one) has no
    backward: one line naming the Keras layer."""
    L = tf.keras.layers
    inp = tf.keras.Input((4, 4, 3))
    x = L.Conv2D(4, 3, padding="same", name="c1")(inp)
    v = L.GlobalAveragePooling2D(name="sq")(x)
    x = L.GlobalAveragePooling2D(name="gap")(L.Add(name="rank_add")([x, v]))
    g = graph_from_keras_model(tf.keras.Model(inp, L.Dense(3, name="d")(x)))
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    with pytest.raises(ValueError, match=r"^op 'rank_add' \[add\]: a broadcast between tensors of different ranks "
                                         r"has no backward pass") as e:
        Tail(g, g.inputs[0], "blocks")
    assert "\n" not in str(e.value)


def test_cli_names_the_layer_without_a_backward(tmp_path: Path, capsys) -> None:
    """`tinycc compile --deep blocks --deep-cut stem` on a model whose region holds a layer without a backward pass
    (Maximum): exit 2, one line naming that Keras layer, nothing written."""
    from .test_deep_deploy import _cli

    L = tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((10, 10, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inp)
    x = L.Maximum(name="mx")([x, L.Conv2D(4, 1, name="c1")(x)])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    tf.keras.Model(inp, L.Dense(4, activation="softmax", name="head")(x)).save(tmp_path / "m.keras")
    np.savez(tmp_path / "c.npz", x=CALIB)
    rc, err = _cli(["compile", str(tmp_path / "m.keras"), "-t", "c", "--calib", str(tmp_path / "c.npz"), "--deep",
                    "blocks", "--deep-cut", "stem", "-o", str(tmp_path / "o")], capsys)
    assert rc == 2 and len(err) == 1, err
    assert "--deep-cut 'stem': op 'mx' [maximum] is not trainable on the device (no backward pass); valid: " in err[0]
    assert not (tmp_path / "o").exists()
