"""int8: tinycc's .tflite runs in TFLite BUILTIN_REF and TFLite Micro with outputs equal to the int8 interpreter."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.errors import TinyccError, UnsupportedLayerError
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model
from tinycc.tflite_writer import operator_names, write_tflite

from .zoo import build, sample_input

ROOT = Path(__file__).resolve().parents[1]
litert = pytest.importorskip("ai_edge_litert.interpreter")


def _digits_like(shape: tuple[int, ...], n: int) -> np.ndarray:
    """Real images (scikit-learn digits) resized/tiled to ``shape`` (H, W, C), values 0..255."""
    from sklearn.datasets import load_digits

    img = load_digits().images[:n].astype(np.float32) * 16.0
    if len(shape) == 2:  # [steps, channels]: the image pixels read as a multichannel signal
        flat = img.reshape(n, -1)
        return np.tile(flat, (1, -(-shape[0] * shape[1] // flat.shape[1])))[:, :shape[0] * shape[1]].reshape(n, *shape)
    h, w, c = shape
    ys = (np.arange(h) * 8 // h)
    xs = (np.arange(w) * 8 // w)
    out = img[:, ys][:, :, xs][..., None].repeat(c, axis=-1)
    return out


def _extra_model():
    import keras

    L = keras.layers
    inp = keras.Input((10, 10, 3))
    a = L.Conv2D(6, 3, padding="same", activation="relu6", name="a")(inp)
    b = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="b")(inp)
    x = L.Concatenate(name="cat")([a, b])
    x = L.ZeroPadding2D(1, name="pad")(x)
    x = L.AveragePooling2D(3, strides=2, padding="same", name="avg")(x)
    s = L.GlobalAveragePooling2D(keepdims=True, name="sq")(x)
    s = L.Conv2D(12, 1, activation="relu", name="ex")(s)
    x = L.Multiply(name="scale")([x, s])
    x = L.MaxPooling2D(2, padding="same", name="mp")(x)
    x = L.ReLU(name="r")(x)
    x = L.GlobalMaxPooling2D(name="gmp")(x)
    out = L.Dense(7, name="fc")(x)
    keras.utils.set_random_seed(5)
    return keras.Model(inp, out, name="int8_extra")


def _quantized(session, name: str):
    if name == "digits":
        g = session.registry.frontend_for("m.h5").load(str(ROOT / "examples" / "digits_cnn.h5"))
        d = np.load(ROOT / "examples" / "digits_data.npz")
        calib, rnd, real = d["x_train"][:300], np.random.default_rng(1).uniform(0, 16, (100, 8, 8, 1)), d["x_test"][:100]
    else:
        m = _extra_model() if name == "int8_extra" else build(name)
        g = graph_from_keras_model(m)
        calib, rnd = sample_input(m, 300, 2), sample_input(m, 100, 1)
        real = _digits_like(tuple(m.inputs[0].shape[1:]), 100)
        if not any(type(l).__name__ == "Rescaling" for l in m.layers):
            real = real / 64.0 - 2.0
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    while g.ops[-1].kind.value == "softmax":  # the float classifier's softmax is not part of Φf
        g.outputs = [g.ops[-1].inputs[0]]
        g.ops.pop()
        g.prune_unused()
    float_graph = g.copy()
    run_pipeline(g, session.registry.pipeline("int8"), PassContext(session=session, calib=calib))
    return float_graph, g, np.concatenate([rnd, real]).astype(np.float32)


@pytest.mark.parametrize("name", ["digits", "resnet_add", "mobilenet_v2", "int8_extra", "cnas_like", "sequential_cnn",
                                  "concat_branch", "bn_conv_act", "mobilenet_v3", "conv1d_sensor", "separable_cnn"])
def test_tflite_bit_exact(session, name: str) -> None:
    fg, g, x = _quantized(session, name)
    data = write_tflite(g)
    assert data[4:8] == b"TFL3" and write_tflite(g) == data  # deterministic
    names = [t for t in g.activations() if g.tensors[t].dtype.value == "int8"]
    ours = run_int8(g, x, outputs=names + g.outputs, flavor="tflite")
    it = litert.Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    idx = {d["name"]: d["index"] for d in it.get_tensor_details()}
    assert set(names) <= set(idx)
    for i in range(len(x)):
        it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1])
        it.invoke()
        for t in names + g.outputs:
            np.testing.assert_array_equal(it.get_tensor(idx[t]), ours[t][i:i + 1], err_msg=f"{t} sample {i}")
    # TFLite Micro (explicit arena) against the default (tflm) flavour
    from tflite_micro.python.tflite_micro import runtime

    tm = runtime.Interpreter.from_bytes(data, arena_size=1 << 20)
    mine = run_int8(g, x)[g.outputs[0]]
    for i in range(len(x)):
        tm.set_input(x[i:i + 1], 0)
        tm.invoke()
        np.testing.assert_array_equal(tm.get_output(0), mine[i:i + 1], err_msg=f"tflm sample {i}")
    # and int8 stays close to float on inputs from the calibration distribution
    ref = run(fg, x[:100])[fg.outputs[0]]
    assert np.abs(mine[:100] - ref).mean() <= 0.05 * np.abs(ref).max() + 1e-3


def test_operator_codes_listed(session) -> None:
    _, g, _ = _quantized(session, "mobilenet_v2")
    ops = operator_names(write_tflite(g))
    assert ops[0] == "QUANTIZE" and "DEPTHWISE_CONV_2D" in ops and "DEQUANTIZE" in ops


def test_no_int8_kernel_is_reported_with_layer(session, monkeypatch) -> None:
    import keras

    from tinycc.ir.ops import OpKind
    from tinycc.plugins.passes import quantize as qz

    monkeypatch.setattr(qz, "INT8_KINDS", qz.INT8_KINDS - {OpKind.SOFTMAX})  # as if int8 had no softmax kernel

    inp = keras.Input((6,))
    x = keras.layers.Dense(4, activation="softmax", name="attention")(inp)
    out = keras.layers.Dense(2, name="head")(x)
    g = graph_from_keras_model(keras.Model(inp, out))
    ctx = PassContext(session=session, calib=np.zeros((4, 6), np.float32))
    with pytest.raises(UnsupportedLayerError, match="'attention' \\(softmax\\) has no int8 kernel"):
        run_pipeline(g, session.registry.pipeline("int8"), ctx)


@pytest.mark.parametrize("bad,msg", [
    (np.zeros((0, 8, 8, 1), np.float32), "empty"),
    (np.full((3, 8, 8, 1), np.nan, np.float32), "NaN"),
    (np.zeros((3, 9, 9, 1), np.float32), "shape"),
    (np.array([["a"] * 64] * 2), "not numeric"),
])
def test_bad_calibration_data(session, bad, msg: str) -> None:
    g = session.registry.frontend_for("m.h5").load(str(ROOT / "examples" / "digits_cnn.h5"))
    with pytest.raises(TinyccError, match=msg):
        run_pipeline(g, ["calibrate"], PassContext(session=session, calib=bad))


def test_logistic_and_tanh_with_tiny_input_scale() -> None:
    # an input scale below 2^-28 gives TFLite's input_left_shift < 0, where its radius formula shifts by a
    # negative count (undefined); tinycc uses the exact value (capped): every input maps to ~sigmoid(0)
    from tinycc.ir.fixedpoint import logistic_params, logistic_s8, tanh_s8

    mult, shift, radius = logistic_params(1e-10)
    assert shift < 0 and radius == (1 << 31) - 1 and mult > 0
    x = np.arange(-128, 128, dtype=np.int8)
    assert set(logistic_s8(x, 0, 1e-10).tolist()) == {0}  # 0.5 at scale 1/256, zero point -128
    assert set(tanh_s8(x, 0, 1e-10).tolist()) == {0}
