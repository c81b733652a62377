"""The reference CNAS model end to end: float equals Keras; int8 equals TFLite BUILTIN_REF and TFLite Micro."""
from __future__ import annotations

import numpy as np
import pytest

from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.models import cnas_cifar10
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model
from tinycc.tflite_writer import operator_names, write_tflite


@pytest.fixture(scope="module")
def cnas():
    import keras

    keras.utils.set_random_seed(3)
    m = cnas_cifar10()
    rng = np.random.default_rng(0)
    for layer in m.layers:  # non-trivial BatchNorm statistics
        if type(layer).__name__ == "BatchNormalization":
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
    return m


def test_float_equals_keras(cnas) -> None:
    g = graph_from_keras_model(cnas)
    x = np.random.default_rng(1).random((16, 32, 32, 3)).astype(np.float32)
    ref = cnas.predict(x, verbose=0)
    out = run(g, x)[g.outputs[0]]
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    kinds = [o.kind.value for o in g.ops]
    assert kinds.count("depthwise_conv2d") == 11 and "conv2d" in kinds


def test_int8_bit_exact_on_images(session, cnas, shared_data) -> None:
    with np.load(shared_data / "cifar10.npz", allow_pickle=False) as z:
        calib = z["x_train"][:100].astype(np.float32) / 255
        x = z["x_test"][:100].astype(np.float32) / 255
    g = graph_from_keras_model(cnas)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    g.outputs = [g.ops[-1].inputs[0]]  # Φf + logits: the final softmax stays float
    g.ops.pop()
    g.prune_unused()
    run_pipeline(g, session.registry.pipeline("int8"), PassContext(session=session, calib=calib))
    data = write_tflite(g)
    assert "DEPTHWISE_CONV_2D" in operator_names(data)
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from tflite_micro.python.tflite_micro import runtime

    it = Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    tm = runtime.Interpreter.from_bytes(data, arena_size=1 << 21)
    ref_tflite = run_int8(g, x, flavor="tflite")[g.outputs[0]]
    ref_tflm = run_int8(g, x)[g.outputs[0]]
    for i in range(len(x)):
        it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1])
        it.invoke()
        np.testing.assert_array_equal(it.get_tensor(it.get_output_details()[0]["index"]), ref_tflite[i:i + 1])
        tm.set_input(x[i:i + 1], 0)
        tm.invoke()
        np.testing.assert_array_equal(tm.get_output(0), ref_tflm[i:i + 1])
