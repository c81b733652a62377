"""relu6 and leaky_relu hidden/output layers of the trainable classifier: equal to TensorFlow (GradientTape + SGD,
kinks included), the C runtime learns like the simulator, and a Keras model with a Dense(relu6) head compiles to a
learning project."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tinycc.ir.train import Classifier, DenseLayer, activation_derivative  # noqa: E402

from .deploy_util import build_deployment  # noqa: E402
from .op_checks import assert_c_project_learns_like_the_simulator  # noqa: E402

TOL = 1e-5
ALPHA = 0.3
NEW = ["relu6", "leaky_relu"]


def _act_layer(name: str) -> tf.keras.layers.Layer:
    if name == "leaky_relu":
        return tf.keras.layers.LeakyReLU(negative_slope=ALPHA)
    return tf.keras.layers.Activation(name)


def _kink_weights(rng: np.random.Generator) -> list[np.ndarray]:
    """Hidden layer 12 -> 8 whose first units sit exactly on the kinks: unit 0 = 6 and unit 1 = 0 for every row
    (zero weights, bias 6 / 0), unit 2 = x[:, 0] (weight e_0, bias 0: the rows' first inputs are -2, 0, 3, 6, 8)."""
    w1 = rng.normal(0, 0.5, (12, 8)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 8).astype(np.float32)
    w1[:, :3] = 0
    w1[0, 2] = 1
    b1[:3] = [6, 0, 0]
    return [w1, b1, rng.normal(0, 0.5, (8, 4)).astype(np.float32), rng.normal(0, 0.1, 4).astype(np.float32)]


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype(np.float32)
    x[:, 0] = np.resize(np.float32([-2, 0, 3, 6, 8]), n)
    return x, rng.integers(0, 4, n)


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("act", NEW)
def test_two_layer_head_equals_gradient_tape(act: str, loss: str) -> None:
    """3 SGD steps (batches of 5) of a 12 -> 8 (act) -> 4 head (mse: the last layer has act too, applied) equal
    Keras GradientTape + SGD within 1e-5, with pre-activations exactly at 0 and 6."""
    weights = _kink_weights(np.random.default_rng(1))
    inp = tf.keras.Input((12,))
    h = _act_layer(act)(tf.keras.layers.Dense(8)(inp))
    out = tf.keras.layers.Dense(4)(h)
    last = "linear"
    if loss == "mse":
        out, last = _act_layer(act)(out), act
    model = tf.keras.Model(inp, out)
    model.set_weights(weights)
    alpha = ALPHA if act == "leaky_relu" else 0.0
    clf = Classifier([DenseLayer(weights[0].T, weights[1], act, alpha),
                      DenseLayer(weights[2].T, weights[3], last, alpha if last == "leaky_relu" else 0.0)],
                     max_batch=5, loss=loss)
    keras_loss = (tf.keras.losses.MeanSquaredError() if loss == "mse"
                  else tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    opt = tf.keras.optimizers.SGD(learning_rate=0.1)
    x, labels = _data(15, 2)
    targets = np.random.default_rng(3).uniform(-1, 7, (15, 4)).astype(np.float32)
    for s in range(0, 15, 5):
        xb = x[s:s + 5]
        yb = targets[s:s + 5] if loss == "mse" else labels[s:s + 5]
        with tf.GradientTape() as tape:
            value = keras_loss(tf.constant(yb), model(tf.constant(xb), training=True))
        grads = tape.gradient(value, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        assert clf.sgd_step(xb, yb, 0.1)
    ref = [v.numpy() for v in model.trainable_variables]
    for i, layer in enumerate(clf.layers):
        for mine, theirs, what in ((layer.weight, ref[2 * i].T, "weights"), (layer.bias, ref[2 * i + 1], "bias")):
            err = np.abs(mine - theirs).max() / max(np.abs(theirs).max(), 1e-6)
            assert err <= TOL, f"layer {i} {what}: {err}"
    if act == "relu6":  # units on the kinks have gradient 0 there (TensorFlow's Relu6Grad): they never moved
        np.testing.assert_array_equal(clf.layers[0].bias[:2], [6, 0])
    else:  # leaky relu's gradient at 0 is alpha: the unit at 0 learned
        assert clf.layers[0].bias[1] != 0


def test_derivatives_at_the_kinks_match_tensorflow() -> None:
    """act' from the output at exactly 0 and 6 (and around them) equals tf's gradient from the pre-activation."""
    z = np.float32([-3, -0.0, 0, 1e-7, 3, 6, 6.5])
    for act, fn in (("relu6", tf.nn.relu6), ("leaky_relu", lambda t: tf.nn.leaky_relu(t, alpha=ALPHA))):
        zt = tf.constant(z)
        with tf.GradientTape() as tape:
            tape.watch(zt)
            y = fn(zt)
        want = tape.gradient(y, zt).numpy()
        layer = DenseLayer(np.zeros((1, 1)), np.zeros(1), act, ALPHA)
        np.testing.assert_array_equal(activation_derivative(y.numpy(), act, layer.alpha), want, err_msg=act)


def test_negative_leaky_slope_is_refused() -> None:
    with pytest.raises(ValueError, match="negative slope"):
        DenseLayer(np.zeros((1, 1)), np.zeros(1), "leaky_relu", -0.1)


def _keras_head(act: str) -> tf.keras.Model:
    """A small conv extractor and a 2-layer Dense head whose hidden layer has ``act`` (a fused Dense activation for
    relu6, a LeakyReLU layer for leaky_relu)."""
    tf.keras.utils.set_random_seed(4)
    inp = tf.keras.Input((6, 6, 1))
    x = tf.keras.layers.Flatten()(tf.keras.layers.Conv2D(3, 3, activation="relu")(inp))
    if act == "relu6":
        x = tf.keras.layers.Dense(10, activation="relu6", name="hidden")(x)
    else:
        x = tf.keras.layers.LeakyReLU(negative_slope=ALPHA)(tf.keras.layers.Dense(10, name="hidden")(x))
    return tf.keras.Model(inp, tf.keras.layers.Dense(3, activation="softmax", name="out")(x))


def _cleaned(session, model: tf.keras.Model):
    from tinycc.passes import PassContext, run_pipeline
    from tinycc.plugins.frontends.keras import graph_from_keras_model

    g = graph_from_keras_model(model)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    return g


@pytest.mark.parametrize("act", NEW)
def test_c_project_learns_like_the_simulator(session, tmp_path: Path, act: str) -> None:
    """Host build with ASan/UBSan: the hidden layer's weights (whose update goes through act') and the last layer's
    equal the simulator's after 4 learned samples."""
    from tinycc.backends.c import CBackend

    rng = np.random.default_rng(5)
    opts = {"buffer": 6, "lr": 0.05, "calib_data": rng.normal(1, 2, (32, 6, 6, 1)).astype(np.float32)}
    dep = build_deployment(_cleaned(session, _keras_head(act)), opts, session, CBackend())
    assert [l.activation for l in dep.classifier] == [act, "softmax"]
    assert dep.classifier[0].alpha == (np.float32(ALPHA) if act == "leaky_relu" else 0.0)
    x = rng.normal(1, 2, (8, 6, 6, 1)).astype(np.float32)
    y = np.arange(8) % 3
    assert_c_project_learns_like_the_simulator(dep, opts, x, y, tmp_path / "c0", layer=0)
    assert f".act = TCC_ACT_{act.upper()}" in (tmp_path / "c0" / "model.c").read_text()
    assert_c_project_learns_like_the_simulator(dep, opts, x, y, tmp_path / "c1", layer=-1)


def test_compile_of_a_relu6_head_is_a_learning_project(session, tmp_path: Path) -> None:
    """compile of a .keras whose head has Dense(relu6): the cut is before the hidden layer (both Dense layers
    train), and the project is a learning one (classifier, SGD), not inference-only; the tflm target too."""
    from tinycc.api import compile_model, make_config

    path = tmp_path / "m.keras"
    _keras_head("relu6").save(path)
    calib = np.random.default_rng(6).normal(1, 2, (16, 6, 6, 1)).astype(np.float32)
    result = compile_model(str(path), "c", str(tmp_path / "out"), make_config(session), session, calib=calib)
    dep = result.deployment
    assert [l.activation for l in dep.classifier] == ["relu6", "softmax"]
    text = (tmp_path / "out" / "model.c").read_text()
    assert "tcc_classifier_sgd" in text or "tcc_train(" in text
    assert ".act = TCC_ACT_RELU6" in text
    result = compile_model(str(path), "tflm", str(tmp_path / "tflm"), make_config(session), session, calib=calib)
    assert [l.activation for l in result.deployment.classifier] == ["relu6", "softmax"]
    assert ".act = TCC_ACT_RELU6" in (tmp_path / "tflm" / "src" / "model.c").read_text()


def test_arduino_sketch_learns_like_the_simulator(session, tmp_path: Path) -> None:
    """The leaky relu head (its slope in the grown layer descriptor) on the Mega 2560 (AVR: 2-byte pointers, byte
    alignment) in simavr: predictions before and after learning equal the simulator's."""
    from tinycc.backends.arduino import ArduinoBackend

    from . import arduino_harness

    if not arduino_harness.available():
        pytest.skip("arduino-builder / simavr not installed")
    rng = np.random.default_rng(7)
    opts = {"buffer": 6, "lr": 0.5, "calib_data": rng.normal(1, 2, (32, 6, 6, 1)).astype(np.float32)}
    dep = build_deployment(_cleaned(session, _keras_head("leaky_relu")), opts, session, ArduinoBackend())
    x = rng.normal(1, 2, (12, 6, 6, 1)).astype(np.float32)
    arduino_harness.assert_sketch_learns_like_the_simulator(dep, x, np.arange(12) % 3, tmp_path)
    text = (tmp_path / dep.name / "src" / "model.c").read_text()
    assert ".act = TCC_ACT_LEAKY_RELU" in text and ".alpha = 0.3f" in text


def _deep_model() -> tf.keras.Model:
    """Two convolutions (a deep cut between them) and a Dense(relu6) -> Dense(softmax) head."""
    tf.keras.utils.set_random_seed(8)
    inp = tf.keras.Input((8, 8, 1))
    x = tf.keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = tf.keras.layers.Flatten()(tf.keras.layers.Conv2D(4, 3, activation="relu")(x))
    x = tf.keras.layers.Dense(10, activation="relu6", name="hidden")(x)
    return tf.keras.Model(inp, tf.keras.layers.Dense(3, activation="softmax", name="out")(x))


def test_deep_tail_trains_the_relu6_head_like_the_classifier(session) -> None:
    """--deep: the tail's Dense chain keeps the hidden relu6 (fused), and its logits and head gradients equal the
    classifier's (tinycc.ir.train) on the same features, 1e-5."""
    from tinycc.backends.c import CBackend
    from tinycc.ir.deep import DeepLearner, deep_cuts
    from tinycc.ir.simulator import Simulator
    from tinycc.ir.train import Classifier

    rng = np.random.default_rng(9)
    opts = {"buffer": 6, "lr": 0.05, "calib_data": rng.normal(1, 2, (32, 8, 8, 1)).astype(np.float32)}
    dep = build_deployment(_cleaned(session, _deep_model()), opts, session, CBackend())
    learner = DeepLearner(dep, deep_cuts(dep.extractor, dep.classifier)[-1], "bias")
    head = [op for op in learner.view.ops if op.name in learner.head_ops]
    assert [op.attrs["activation"] for op in head] == ["relu6", "none"]
    x = rng.normal(1, 2, (6, 8, 8, 1)).astype(np.float32)
    y = np.arange(6) % 3
    q = learner.cut_of(x)
    sim = Simulator(dep)
    feats = sim.features(x).astype(np.float32)
    fq = dep.feature_quant
    f = ((feats - np.float32(fq.zero_point[0])) * np.float32(fq.scale[0])).astype(np.float32)
    clf = Classifier([l.copy() for l in dep.classifier], max_batch=6)
    np.testing.assert_allclose(learner.logits_cut(q), clf.logits(f), rtol=1e-5, atol=1e-5)
    tail = learner.tail.grads(learner._float_cut(q), y, learner._known(q))
    for op, (dw, db) in zip(head, clf.grads(f, y)):
        np.testing.assert_allclose(tail[op.name][0], dw, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(tail[op.name][1], db, rtol=1e-5, atol=1e-6)


def test_deep_refuses_a_leaky_relu_head(session, tmp_path: Path) -> None:
    """--deep has no leaky relu backward: the compile is refused with one message naming the layer."""
    from tinycc.api import compile_model, make_config
    from tinycc.errors import TinyccError

    tf.keras.utils.set_random_seed(8)
    inp = tf.keras.Input((8, 8, 1))
    x = tf.keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = tf.keras.layers.Flatten()(tf.keras.layers.Conv2D(4, 3, activation="relu")(x))
    x = tf.keras.layers.LeakyReLU(negative_slope=ALPHA)(tf.keras.layers.Dense(10, name="hidden")(x))
    path = tmp_path / "m.keras"
    tf.keras.Model(inp, tf.keras.layers.Dense(3, activation="softmax", name="out")(x)).save(path)
    calib = np.random.default_rng(0).normal(1, 2, (16, 8, 8, 1)).astype(np.float32)
    with pytest.raises(TinyccError, match="classifier layer 0: a leaky_relu hidden layer has no deep backward pass"):
        compile_model(str(path), "c", str(tmp_path / "out"), make_config(session, deep=("bias",)), session,
                      calib=calib)


@pytest.mark.parametrize("act", NEW)
def test_converter_int8_file_gives_the_activation(session, tmp_path: Path, act: str) -> None:
    """The TFLite converter's int8 file: relu6 fused into FULLY_CONNECTED, leaky relu a LEAKY_RELU op with its alpha;
    both become the hidden layer's trainable activation (the file's alpha as float32)."""
    from tinycc.backends.c import CBackend
    from tinycc.plugins.frontends.tflite import read_tflite

    model = _keras_head(act)
    x = np.random.default_rng(10).normal(1, 2, (32, 6, 6, 1)).astype(np.float32)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path = tmp_path / "m.tflite"
    path.write_bytes(conv.convert())
    dep = build_deployment(read_tflite(str(path)), {"buffer": 4}, session, CBackend())
    assert [l.activation for l in dep.classifier] == [act, "softmax"]
    assert dep.classifier[0].alpha == (float(np.float32(ALPHA)) if act == "leaky_relu" else 0.0)


@pytest.mark.parametrize("mode", ["bias", "blocks"])
def test_deep_c_project_with_a_relu6_head_learns_as_the_simulator(session, tmp_path: Path, mode: str) -> None:
    """The --deep project (host, ASan/UBSan) of the relu6 head: after 6 learn calls the classifier, the trained
    region and every vector's probabilities equal the deep simulator's (tests/c_harness.check_learned)."""
    from tinycc.backends.c import CBackend
    from tinycc.deploy import build_deep_deployment
    from tinycc.ir.deep import DeepLearner

    from . import c_harness
    from .deploy_util import make_config

    rng = np.random.default_rng(11)
    config = make_config(session, deep=(mode,), lr=0.05, buffer=3, batch_size=2, epochs=2)
    calib = rng.normal(1, 2, (32, 8, 8, 1)).astype(np.float32)
    dep = build_deep_deployment(_cleaned(session, _deep_model()), config, session, CBackend(), calib)
    assert [l.activation for l in dep.classifier] == ["relu6", "softmax"]
    sim = DeepLearner(dep, dep.meta["deep"]["cut"], mode, capacity=dep.buffer.capacity)
    x = rng.normal(1, 2, (6, 8, 8, 1)).astype(np.float32)
    y = np.arange(6) % 3
    out, q = c_harness.run_deep_demo(dep, sim, tmp_path, x, y, "host", learn=6)
    for i in range(6):
        sim.learn_input(x[i], int(y[i]))
        assert not sim.last_refused
    c_harness.check_learned(out, sim, dep, q, sim.region_params, mode)
