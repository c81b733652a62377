"""The SqueezeNet head (a linear 1x1 Conv2D read by global average pooling, then softmax) learns on the device.

Float graphs: the cleanup stage pools first (``pool_before_pointwise``), exact against Keras and at 1/(H*W) of the
head's MACs. int8 files keep their operators for inference (bit-exact with the file); the learning deployment pools
a copy, so the head is a Dense layer whose float start gives the file's probabilities near enough, and the generated
C (ASan/UBSan) computes run_int8's features and trains that head as the simulator does."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.deploy.learning import cut_candidates
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.ops import OpKind
from tinycc.ir.simulator import Simulator
from tinycc.ir.stats import totals
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model
from tinycc.plugins.frontends.tflite import read_tflite

from . import c_harness
from .deploy_util import build_deployment, render_project
from .test_layout_ops import _convert
from .test_tflite_heads import file_probabilities

litert = pytest.importorskip("ai_edge_litert.interpreter")


def _squeeze_head(keepdims: bool) -> Any:
    import keras

    L = keras.layers
    keras.utils.set_random_seed(11)
    inp = keras.Input((12, 12, 3))
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="stem")(inp)
    a = L.Conv2D(8, 1, activation="relu", name="expand1")(x)
    b = L.Conv2D(8, 3, padding="same", activation="relu", name="expand3")(x)
    x = L.Concatenate(name="fire")([a, b])
    x = L.Conv2D(6, 1, name="classes")(x)
    x = L.GlobalAveragePooling2D(keepdims=keepdims, name="gap")(x)
    if keepdims:
        x = L.Flatten(name="flat")(x)
    return keras.Model(inp, L.Softmax(name="probs")(x), name=f"squeeze_head{int(keepdims)}")


def _inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 12, 12, 3)).astype(np.float32)


@pytest.mark.parametrize("keepdims", [False, True])
def test_float_head_pools_first_exactly(session, keepdims: bool) -> None:
    m = _squeeze_head(keepdims)
    g = graph_from_keras_model(m)
    before = totals(g.copy())["macs"]
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    x = _inputs(8, 1)
    np.testing.assert_allclose(run(g, x)[g.outputs[0]], m.predict(x, verbose=0), atol=1e-5)
    assert totals(g)["macs"] == before - 6 * 6 * 16 * 6 + 16 * 6  # the head on one pixel instead of 6x6
    assert [o.kind for o in g.ops].count(OpKind.DENSE) == 1 and len(cut_candidates(g)) == 1
    dep = build_deployment(g, {"buffer": 4, "calib_data": _inputs(16, 2)}, session, CBackend())
    assert dep.feature_count == 16 and [l.n_out for l in dep.classifier] == [6]


@pytest.fixture(scope="module")
def int8_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("squeeze") / "squeeze_head_int8.tflite"
    p.write_bytes(_convert(_squeeze_head(False), _inputs(32, 0)))
    return p


def test_int8_file_keeps_its_operators_for_inference(session, int8_file: Path) -> None:
    g = read_tflite(str(int8_file))
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    kinds = [o.kind for o in g.ops]
    assert OpKind.DENSE not in kinds and kinds.count(OpKind.CONV2D) == 4  # bit-exact inference runs these
    x = np.random.default_rng(3).integers(-128, 128, (6, 12, 12, 3)).astype(np.int8)
    it = litert.Interpreter(model_path=str(int8_file), experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    ours = run_int8(g, x, flavor="tflite")[g.outputs[0]]
    for i in range(len(x)):
        it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1])
        it.invoke()
        np.testing.assert_array_equal(it.get_tensor(it.get_output_details()[0]["index"]), ours[i:i + 1])


def test_int8_file_head_learns_on_the_device_in_c(session, int8_file: Path, tmp_path: Path) -> None:
    g = read_tflite(str(int8_file))
    opts = {"buffer": 4, "lr": 0.05}
    dep = build_deployment(g, opts, session, CBackend())
    assert dep.feature_count == 16 and [l.n_out for l in dep.classifier] == [6]
    x = _inputs(20, 4)  # the float head starts as the file's int8 head: the same probabilities, near enough
    sim = Simulator(dep)
    _, probs = sim.predict_features(sim.features(x))
    assert np.abs(probs - file_probabilities(int8_file, x)).max() < 0.03
    xs, y = x[:4], np.array([1, 5, 0, 2])
    render_project(dep, {**opts, "test_vectors": (xs, y), "test_count": 4, "test_learn": 4}, tmp_path)
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    feats = run_int8(dep.extractor, xs)[dep.extractor.outputs[0]].reshape(4, -1)
    for i in range(4):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")
        sim.learn_features(feats[i], int(y[i]))
    w = sim.classifier.layers[0].weight
    assert np.abs(out.weights[0] - w.reshape(-1)).max() <= 1e-4 * max(np.abs(w).max(), 1e-3)
    assert not np.array_equal(out.weights[0], dep.classifier[0].weight.reshape(-1))  # it learned
