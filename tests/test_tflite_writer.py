"""The .tflite writer: tinycc's files run in TFLite (BUILTIN_REF) and TFLite Micro with results equal to
tinycc's own interpreters, for every zoo model and a MobileNetV3-style model, on random and real inputs."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from tinycc.errors import UnsupportedLayerError
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import INT8_KINDS, run_int8
from tinycc.ir.ops import OpKind
from tinycc.ir.tensor import DType
from tinycc.config import CompileConfig, QuantConfig
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model
from tinycc.plugins.passes.quantize import lower_for_int8
from tinycc.tflite_writer import INT8_VERSIONS, operator_versions, write_tflite
from tinycc.session import Session

from .zoo import ZOO_NAMES, build, sample_input

litert = pytest.importorskip("ai_edge_litert.interpreter")
ARENA = 512 * 1024
# zoo models whose every op has an int8 kernel today (others may fail with UnsupportedLayerError)
MUST_QUANTIZE = {"resnet_add", "mobilenet_v2", "mobilenet_v3", "grouped_conv", "cnas_like", "mobilenet_v3_style",
                 "concat_pad"}


def mobilenet_v3_style():
    """Rescaling (not foldable), BN + hard_swish, depthwise, squeeze-excite with hard_sigmoid,
    a standalone BatchNorm after a residual add, global pooling, dropout and a softmax head."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(7)
    inp = keras.Input((16, 16, 3))
    x = L.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inp)
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.Activation("hard_swish", name="stem_hs")(x)
    y = L.Conv2D(16, 1, name="expand")(x)
    y = L.Activation("hard_swish", name="expand_hs")(y)
    y = L.DepthwiseConv2D(3, padding="same", name="dw")(y)
    y = L.ReLU(name="dw_relu")(y)
    s = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(y)
    s = L.Conv2D(4, 1, activation="relu", name="se_reduce")(s)
    s = L.Conv2D(16, 1, activation="hard_sigmoid", name="se_expand")(s)
    y = L.Multiply(name="se_mul")([y, s])
    y = L.Conv2D(8, 1, name="project")(y)
    x = L.Add(name="res")([x, y])
    x = L.BatchNormalization(name="res_bn")(x)
    x = L.Conv2D(24, 1, name="head")(x)
    x = L.Activation("hard_swish", name="head_hs")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(16, activation="hard_swish", name="fc")(x)
    x = L.Dropout(0.2, name="drop")(x)
    out = L.Dense(5, activation="softmax", name="out")(x)
    model = keras.Model(inp, out, name="mobilenet_v3_style")
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            c = layer.moving_mean.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.3, c).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.3, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype("float32"))
    return model


def concat_pad():
    """Concatenation of a conv and a padded branch, dilation, 'same' max pooling, global max pooling,
    a standalone ReLU6 and a linear head (int8 logits dequantized as the output)."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(8)
    inp = keras.Input((9, 9, 2))
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(inp)
    b = L.Conv2D(6, 1, activation="relu6", name="b")(inp)
    b = L.ZeroPadding2D(((1, 0), (0, 1)), name="zpad")(b)
    b = L.DepthwiseConv2D(2, padding="valid", depth_multiplier=2, name="b2")(b)
    x = L.Concatenate(name="cat")([a, b])
    x = L.Conv2D(8, 3, dilation_rate=2, padding="same", name="dil")(x)
    x = L.MaxPooling2D(2, padding="same", name="mp")(x)
    x = L.GlobalMaxPooling2D(name="gmp")(x)
    x = L.ReLU(6.0, name="clip")(x)  # standalone RELU6 (TFLite Micro clamps with the input's parameters)
    out = L.Dense(3, name="logits")(x)
    return keras.Model(inp, out, name="concat_pad")


EXTRA = {"mobilenet_v3_style": mobilenet_v3_style, "concat_pad": concat_pad}


def _model(name: str):
    return EXTRA[name]() if name in EXTRA else build(name)


def real_inputs(model, n: int) -> np.ndarray:
    """scikit-learn digits (real 8x8 images) resized/tiled to the model input, in the model's value range."""
    from sklearn.datasets import load_digits

    img = load_digits().images[:n].astype(np.float32)  # 0..16
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) == 3:
        h, w, c = shape
        x = img[:, np.arange(h) * 8 // h][:, :, np.arange(w) * 8 // w][..., None].repeat(c, axis=-1)
    elif len(shape) == 2:  # [steps, channels]: image rows read as a multichannel signal
        steps, c = shape
        flat = img.reshape(n, -1)
        x = np.tile(flat, (1, -(-steps * c // flat.shape[1])))[:, :steps * c].reshape(n, steps, c)
    else:
        flat = img.reshape(n, -1)
        x = np.tile(flat, (1, -(-shape[0] // flat.shape[1])))[:, :shape[0]]
    if any(type(layer).__name__ == "Rescaling" for layer in model.layers):
        return x * (255.0 / 16.0)
    return x / 8.0 - 1.0


@lru_cache(maxsize=None)
def quantized(name: str) -> tuple:
    """(float graph, int8 graph, 200 test inputs: 100 random + 100 real) or the quantization error."""
    s = Session(autoload=False)
    m = _model(name)
    g = graph_from_keras_model(m)
    run_pipeline(g, s.registry.pipeline("cleanup"), PassContext(session=s))
    fg = g.copy()
    x = np.concatenate([sample_input(m, 100, 1), real_inputs(m, 100)]).astype(np.float32)
    try:
        run_pipeline(g, s.registry.pipeline("int8"), PassContext(session=s, calib=sample_input(m, 200, 2)))
    except UnsupportedLayerError as e:
        return fg, e, x
    return fg, g, x


def _int8_tensors(g) -> list[str]:
    return [t for t in g.activations() if g.tensors[t].dtype == DType.INT8]


@pytest.mark.parametrize("name", list(ZOO_NAMES) + list(EXTRA))
def test_int8_tflite_bit_exact(name: str) -> None:
    fg, g, x = quantized(name)
    if isinstance(g, UnsupportedLayerError):
        assert name not in MUST_QUANTIZE, str(g)
        layer, kind = str(g).split("'")[1], str(g).split("(")[1].split(")")[0]
        assert layer in {o.origin for o in fg.ops} and OpKind(kind) not in INT8_KINDS
        return
    grouped = [o for o in g.ops if o.kind == OpKind.CONV2D and o.attrs["groups"] > 1]
    if grouped:  # TFLite and TFLite Micro have no grouped-convolution kernel: the writer must refuse
        with pytest.raises(UnsupportedLayerError, match=f"layer '{grouped[0].origin}': grouped convolution"):
            write_tflite(g)
        return
    data = write_tflite(g)
    assert data[4:8] == b"TFL3" and write_tflite(g.copy()) == data
    names = _int8_tensors(g)
    # every int8 intermediate and the output, against TFLite's reference kernels
    ours = run_int8(g, x, outputs=names + g.outputs, flavor="tflite")
    it = litert.Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    idx = {d["name"]: d["index"] for d in it.get_tensor_details()}
    assert set(names + g.outputs) <= set(idx)
    inp = it.get_input_details()[0]["index"]
    float_tail = g.ops[-1].kind == OpKind.SOFTMAX
    for i in range(len(x)):
        it.set_tensor(inp, x[i:i + 1])
        it.invoke()
        for t in names:
            np.testing.assert_array_equal(it.get_tensor(idx[t]), ours[t][i:i + 1], err_msg=f"{name}: {t} sample {i}")
        got = it.get_tensor(idx[g.outputs[0]])
        if float_tail:  # float softmax: libm exp vs numpy exp
            np.testing.assert_allclose(got, ours[g.outputs[0]][i:i + 1], rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(got, ours[g.outputs[0]][i:i + 1])
    # TFLite Micro (explicit arena): the last int8 tensor is made a model output so it compares exactly
    from tflite_micro.python.tflite_micro import runtime

    probe = g.copy()
    last = [o for o in probe.ops if o.kind == OpKind.DEQUANTIZE][-1].inputs[0]
    probe.outputs = [last] + probe.outputs
    tm = runtime.Interpreter.from_bytes(write_tflite(probe), arena_size=ARENA)
    mine = run_int8(probe, x, outputs=probe.outputs)
    for i in range(len(x)):
        tm.set_input(x[i:i + 1], 0)
        tm.invoke()
        np.testing.assert_array_equal(tm.get_output(0), mine[last][i:i + 1], err_msg=f"{name}: tflm sample {i}")
        np.testing.assert_allclose(tm.get_output(1), mine[probe.outputs[1]][i:i + 1], rtol=1e-6, atol=1e-7)
    # int8 follows float closely on the random (calibration-like) inputs
    ref = run(fg, x[:100])[fg.outputs[0]]
    assert np.abs(mine[g.outputs[0]][:100] - ref).mean() <= 0.05 * np.abs(ref).max() + 1e-3


def test_int8_io_model_runs_in_tflite() -> None:
    """--int8-io: no QUANTIZE/DEQUANTIZE; int8 in, int8 out, still bit-exact."""
    s = Session(autoload=False)
    m = concat_pad()
    g = graph_from_keras_model(m)
    run_pipeline(g, s.registry.pipeline("cleanup"), PassContext(session=s))
    io = CompileConfig(learning=None, quant=QuantConfig(int8_input=True, int8_output=True))
    run_pipeline(g, s.registry.pipeline("int8"), PassContext(session=s, config=io, calib=sample_input(m, 100, 2)))
    assert all(o.kind not in (OpKind.QUANTIZE, OpKind.DEQUANTIZE) for o in g.ops)
    it = litert.Interpreter(model_content=write_tflite(g),
                            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    assert inp["quantization"][0] == pytest.approx(float(g.tensors[g.inputs[0]].quant.scale[0]))
    x = np.random.default_rng(4).integers(-128, 128, (50, 9, 9, 2)).astype(np.int8)
    ours = run_int8(g, x, flavor="tflite")[g.outputs[0]]
    for i in range(len(x)):
        it.set_tensor(inp["index"], x[i:i + 1])
        it.invoke()
        np.testing.assert_array_equal(it.get_tensor(out["index"]), ours[i:i + 1])


def test_operator_versions_and_structure() -> None:
    _, g, _ = quantized("mobilenet_v3_style")
    vers = dict(operator_versions(write_tflite(g)))
    assert vers["QUANTIZE"] == 1 and vers["DEQUANTIZE"] == 2 and vers["SOFTMAX"] == 1  # float softmax tail
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MUL", "MEAN", "HARD_SWISH"):
        assert vers[op] == INT8_VERSIONS[op]
    from tinycc.tflite_schema import schema

    m = schema().ModelT.InitFromPackedBuf(write_tflite(g), 0)
    assert m.version == 3 and m.buffers[0].data is None and len(m.subgraphs) == 1
    sub = m.subgraphs[0]
    conv = next(t for t in sub.tensors if t.name.decode().startswith("expand") and len(t.shape) == 4
                and t.buffer > 0)
    assert conv.quantization.quantizedDimension == 0 and len(conv.quantization.scale) == 16
    dw = next(t for t in sub.tensors if t.name.decode().startswith("dw") and t.buffer > 0 and len(t.shape) == 4)
    assert dw.quantization.quantizedDimension == 3 and len(dw.quantization.scale) == 16


@pytest.mark.parametrize("name", ["sequential_cnn", "concat_branch", "mlp", "mobilenet_v3", "bn_conv_act"])
def test_float_tflite_matches_float_interpreter(name: str) -> None:
    """Float graphs (after cleanup and lowering) written as float .tflite run like tinycc's float interpreter."""
    fg, _, x = quantized(name)
    fg = fg.copy()
    lower_for_int8(fg)
    if any(o.kind == OpKind.SWISH for o in fg.ops):
        with pytest.raises(UnsupportedLayerError, match="swish"):
            write_tflite(fg)
        return
    data = write_tflite(fg)
    assert all(v == 1 for _, v in operator_versions(data))
    it = litert.Interpreter(model_content=data, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    ref = run(fg, x)[fg.outputs[0]]
    for i in range(0, len(x), 7):
        it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1])
        it.invoke()
        np.testing.assert_allclose(it.get_tensor(it.get_output_details()[0]["index"]), ref[i:i + 1],
                                   rtol=1e-4, atol=1e-5)


def test_writer_refuses_ops_tflite_cannot_run() -> None:
    from tinycc.ir.graph import Graph

    g = Graph("g")
    g.add_input("x", (1, 4, 4, 2))
    g.add_op("batch_norm", ["x"] + [g.add_const(f"bn{i}", np.ones(2, np.float32)).name for i in range(4)],
             "bn", origin="my_bn")
    g.outputs = ["bn"]
    with pytest.raises(UnsupportedLayerError, match="layer 'my_bn' \\(batch_norm\\) cannot be written to TFLite"):
        write_tflite(g)
