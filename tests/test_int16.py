"""int16 activations (TFLite's 16x8): converter files imported and run bit-exactly like BUILTIN_REF and TFLite
Micro, tinycc's own int16 quantization compared with the converter's, mixed int8/int16 models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.config import QuantConfig
from tinycc.errors import UnsupportedLayerError
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.ops import OpKind
from tinycc.plugins.frontends.tflite import read_tflite
from tinycc.plugins.passes.quantize import quantize_model
from tinycc.session import Session
from tinycc.tflite_writer import write_tflite


def audio_cnn():
    """Every 16x8 op tinycc reads: conv (fused relu), depthwise (relu6), ADD, PAD, MAX/AVERAGE_POOL, LEAKY_RELU
    (the converter requantizes its output for the CONCATENATION), RESHAPE, FULLY_CONNECTED; random biases."""
    import keras as k
    from keras import layers as L

    k.utils.set_random_seed(0)
    inp = k.Input((8, 8, 2))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    y = L.DepthwiseConv2D(3, padding="same", activation="relu6", name="dw")(x)
    z = L.Add(name="add")([x, y])
    z = L.ZeroPadding2D(1, name="pad")(z)
    z = L.MaxPooling2D(2, name="mp")(z)
    w = L.LeakyReLU(0.2, name="lr")(L.Conv2D(4, 1, name="c2")(z))
    z = L.AveragePooling2D(2, name="ap")(L.Concatenate(name="cat")([z, w]))
    z = L.Dense(6, activation="relu", name="d1")(L.Flatten(name="flat")(z))
    m = k.Model(inp, L.Dense(3, name="head")(z), name="audio_cnn")
    rng = np.random.default_rng(0)
    for layer in m.layers:
        ws = layer.get_weights()
        if len(ws) == 2:
            layer.set_weights([ws[0], rng.normal(0, 0.3, ws[1].shape).astype(np.float32)])
    return m


def convert_16x8(model, x: np.ndarray, io: str = "int16") -> bytes:
    import tensorflow as tf

    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
    c.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    c.inference_input_type = getattr(tf, io)
    c.inference_output_type = getattr(tf, io)
    return c.convert()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("int16")
    m = audio_cnn()
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 2)).astype(np.float32)
    (out / "int16_io.tflite").write_bytes(convert_16x8(m, x))
    (out / "float_io.tflite").write_bytes(convert_16x8(m, x, "float32"))
    m.save(out / "audio_cnn.keras")
    x2 = np.random.default_rng(0).normal(size=(32, 6, 6, 3)).astype(np.float32)
    (out / "mul_sub.tflite").write_bytes(convert_16x8(mul_sub_model(), x2, "float32"))
    (out / "mean.tflite").write_bytes(convert_16x8(mean_model(), x2[..., :2], "float32"))
    np.save(out / "calib.npy", x)
    return {"int16_io": out / "int16_io.tflite", "float_io": out / "float_io.tflite", "mul_sub": out / "mul_sub.tflite",
            "mean": out / "mean.tflite",
            "keras": out / "audio_cnn.keras", "calib": out / "calib.npy", "dir": out}


def _inputs(g, n: int, seed: int = 1) -> np.ndarray:
    t = g.tensors[g.inputs[0]]
    rng = np.random.default_rng(seed)
    if t.dtype.value == "int16":
        return rng.integers(-32768, 32768, size=(n,) + t.shape[1:]).astype(np.int16)
    return rng.normal(size=(n,) + t.shape[1:]).astype(np.float32)


def assert_builtin_ref(g, path: Path, x: np.ndarray) -> int:
    """Every IR activation that names a TFLite tensor equals BUILTIN_REF's; returns how many were compared."""
    import tensorflow as tf

    it = tf.lite.Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                             experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    index = {d["name"]: d["index"] for d in it.get_tensor_details()}
    names = [t for t in g.activations() if t in index]
    ours = run_int8(g, x, outputs=names, flavor="tflite")
    for i in range(len(x)):
        it.set_tensor(inp["index"], x[i:i + 1])
        it.invoke()
        for t in names:
            np.testing.assert_array_equal(ours[t][i].reshape(-1), it.get_tensor(index[t]).reshape(-1),
                                          err_msg=f"{path.stem}: tensor {t!r}, input {i}")
    return len(names)


def assert_tflm(g, data: bytes, x: np.ndarray) -> None:
    """TFLite Micro's output equals run_int8 (flavor tflm) on every input."""
    runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
    tm = runtime.Interpreter.from_bytes(data, arena_size=256 * 1024)
    ref = run_int8(g, x)[g.outputs[0]]
    for i in range(len(x)):
        tm.set_input(x[i:i + 1], 0)
        tm.invoke()
        np.testing.assert_array_equal(tm.get_output(0).reshape(-1), ref[i].reshape(-1), err_msg=f"input {i}")


@pytest.mark.parametrize("name", ["int16_io", "float_io"])
def test_converter_16x8_bit_exact_with_builtin_ref_and_tflm(files, name: str) -> None:
    g = read_tflite(str(files[name]))
    kinds = {o.kind for o in g.ops}
    assert {OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.ADD, OpKind.PAD, OpKind.MAX_POOL2D, OpKind.AVG_POOL2D,
            OpKind.LEAKY_RELU, OpKind.CONCAT, OpKind.DENSE, OpKind.QUANTIZE} <= kinds
    acts = [t for t in g.activations() if g.tensors[t].dtype.value != "float32"]
    assert acts and all(g.tensors[t].dtype.value == "int16" for t in acts)
    assert all(int(g.tensors[t].quant.zero_point[0]) == 0 for t in acts)  # 16x8 is symmetric
    biases = [g.tensors[o.inputs[2]] for o in g.ops if o.kind == OpKind.CONV2D and len(o.inputs) > 2]
    assert biases and all(b.dtype.value == "int64" for b in biases)
    requant = [o for o in g.ops if o.kind == OpKind.QUANTIZE and g.tensors[o.inputs[0]].dtype.value == "int16"]
    assert len(requant) == 1  # the converter's int16 -> int16 requantize before the concatenation
    x = _inputs(g, 60)
    assert assert_builtin_ref(g, files[name], x) >= len(g.ops)
    assert_tflm(g, files[name].read_bytes(), x)


def mean_model():
    """GlobalAveragePooling2D: the converter's int16 MEAN with its own output parameters."""
    import keras as k
    from keras import layers as L

    k.utils.set_random_seed(3)
    inp = k.Input((6, 6, 2))
    x = L.Conv2D(5, 3, name="c", activation="relu")(inp)
    return k.Model(inp, L.Dense(3, name="d")(L.GlobalAveragePooling2D(name="gap")(x)), name="mean16")


def mul_sub_model():
    """MUL, SUB with a fused RELU6, strided conv + RELU, global max pooling (REDUCE_MAX), FULLY_CONNECTED."""
    import keras as k
    from keras import layers as L

    k.utils.set_random_seed(2)
    inp = k.Input((6, 6, 3))
    a = L.Conv2D(4, 3, padding="same", name="ca")(inp)
    b = L.Conv2D(4, 1, name="cb")(inp)
    s = L.Subtract(name="sub")([L.Multiply(name="mul")([a, b]), a])
    r = L.ReLU(name="relu")(L.Conv2D(5, 3, strides=2, name="cc")(L.ReLU(max_value=6.0, name="relu6")(s)))
    return k.Model(inp, L.Dense(3, name="head")(L.GlobalMaxPooling2D(name="gmp")(r)), name="mul_sub")


def sensor_classifier():
    import keras as k
    from keras import layers as L

    k.utils.set_random_seed(1)
    inp = k.Input((16, 3))
    x = L.Conv1D(8, 3, activation="relu", name="c1")(inp)
    x = L.Conv1D(8, 3, activation="relu", name="c2")(L.MaxPooling1D(2, name="p")(x))
    x = L.Dense(12, activation="relu", name="d1")(L.Flatten(name="f")(x))
    return k.Model(inp, L.Dense(4, activation="softmax", name="probs")(x), name="sensor16")


def test_16x8_classifier_learns_on_the_device_and_its_softmax_compiles_inference_only(tmp_path: Path) -> None:
    """A converter 16x8 classifier ending in an int16 SOFTMAX: on-device learning replaces the softmax by the float
    head and the C equals the simulator; inference-only keeps it (tcc_softmax_s16, tests/test_int16_lut.py)."""
    from tinycc.backends.c import CBackend
    from tinycc.ir.simulator import Simulator

    from . import c_harness
    from .deploy_util import build_deployment, build_inference, render_project

    x = np.random.default_rng(0).normal(size=(64, 16, 3)).astype(np.float32)
    y = np.arange(64) % 4
    p = tmp_path / "sensor16.tflite"
    p.write_bytes(convert_16x8(sensor_classifier(), x, "float32"))
    g = read_tflite(str(p))
    assert g.ops[-2].kind == OpKind.SOFTMAX and g.tensors[g.ops[-2].outputs[0]].dtype.value == "int16"
    assert run_int8(g, x[:2])[g.outputs[0]].sum(axis=1) == pytest.approx(1.0, abs=1e-3)
    session = Session()
    inf = build_inference(read_tflite(str(p)), {"calib_data": x}, session, CBackend())
    assert any(o.kind == OpKind.SOFTMAX for o in inf.extractor.ops)
    dep = build_deployment(g, {"calib_data": x, "buffer": 8, "lr": 0.05, "epochs": 1}, session, CBackend())
    assert any(dep.extractor.tensors[t].dtype.value == "int16" for t in dep.extractor.activations())
    proj = tmp_path / "proj"
    render_project(dep, {"test_vectors": (x[:10], y[:10]), "test_count": 10, "test_learn": 10}, proj)
    out = c_harness.run_host(c_harness.build_host(proj, sanitize=True))
    sim = Simulator(dep)
    feats = sim.features(x[:10])
    for i in range(10):
        np.testing.assert_array_equal(out.features[i], feats[i])
    _, probs = sim.predict_features(feats)
    np.testing.assert_allclose(np.stack([out.before[i][1] for i in range(10)]), probs, atol=1e-5)


@pytest.mark.parametrize("name,kinds,fns", [
    ("mul_sub", {OpKind.MUL, OpKind.SUB, OpKind.GLOBAL_MAX_POOL}, ("tcc_mul_s16", "tcc_addsub_s16")),
    ("mean", {OpKind.GLOBAL_AVG_POOL}, ("tcc_mean_s16",))])
def test_converter_16x8_mul_sub_reduce_max_mean_bit_exact_and_in_c(files, tmp_path: Path, name: str, kinds: set,
                                                                   fns: tuple) -> None:
    """MUL, SUB (fused RELU6), REDUCE_MAX, MEAN of converter files equal BUILTIN_REF on every tensor; compiled
    inference-only, the C (ASan/UBSan) equals run_int8, and TFLite Micro runs tinycc's file of it (global max
    pooling written as MAX_POOL_2D: TFLite Micro's REDUCE_MAX has no int16 kernel) to the same outputs."""
    from tinycc.backends.c import CBackend
    from tinycc.deploy.inference import full_graph

    from . import c_harness
    from .deploy_util import build_inference, render_project
    from .test_inference import _tflite_runs

    g = read_tflite(str(files[name]))
    assert kinds <= {o.kind for o in g.ops}
    assert all(o.attrs["requantize"] for o in g.ops if o.kind == OpKind.GLOBAL_AVG_POOL)  # own parameters
    x = _inputs(g, 40)
    assert assert_builtin_ref(g, files[name], x) >= len(g.ops)
    dep = build_inference(read_tflite(str(files[name])), {"calib_data": x}, Session(), CBackend())
    render_project(dep, {"test_vectors": x[:10], "test_count": 10}, tmp_path)
    c = (tmp_path / "model.c").read_text()
    assert all(f in c for f in fns)
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    full = full_graph(dep)
    ref = run_int8(full, x[:10])[full.outputs[0]].reshape(10, -1)
    np.testing.assert_array_equal(np.stack([out.outputs[i] for i in range(10)]).astype(np.float32), ref)
    micro, _ = _tflite_runs(dep, x[:10], builtin_ref=False)
    np.testing.assert_array_equal(micro, ref)


def test_int16_op_without_kernel_is_refused_by_name(tmp_path: Path, monkeypatch) -> None:
    """Every op the converter writes in 16x8 has an int16 kernel now (HARD_SWISH has no 16x8 form); the reader's
    refusal of an int16 op without one is checked by taking TRANSPOSE_CONV's away."""
    import keras as k
    from keras import layers as L

    from tinycc.ir.ops import OpKind
    from tinycc.plugins.frontends import tflite as reader

    inp = k.Input((4, 4, 2))
    m = k.Model(inp, L.Conv2DTranspose(3, 3, strides=2, padding="same", name="up")(L.Conv2D(3, 1, name="c")(inp)))
    p = tmp_path / "tconv16.tflite"
    p.write_bytes(convert_16x8(m, np.random.default_rng(0).normal(size=(16, 4, 4, 2)).astype(np.float32)))
    assert any(o.kind == OpKind.TRANSPOSE_CONV2D for o in read_tflite(str(p)).ops)
    monkeypatch.setattr(reader, "INT16_KINDS", reader.INT16_KINDS - {OpKind.TRANSPOSE_CONV2D})
    with pytest.raises(UnsupportedLayerError, match=r"transpose_conv2d writing .*int16 activations are not supported"):
        read_tflite(str(p))


def _quantize(files, **kw):
    g, ctx = quantize_model(str(files["keras"]), QuantConfig(calib=str(files["calib"]), **kw), Session())
    return g, ctx.results["quantize_int8"]["float_graph"]


def _rel_err(fg, g, x: np.ndarray) -> float:
    yf = run(fg, x)[fg.outputs[0]]
    yq = run_int8(g, x)[g.outputs[0]]
    return float(np.sqrt(np.mean((yf - yq) ** 2) / np.mean(yf ** 2)))


def test_tinycc_int16_quantization_matches_the_converter(files) -> None:
    ours, fg = _quantize(files, activations="int16")
    conv = read_tflite(str(files["float_io"]))
    assert ours.meta["activations"] == "int16"
    assert all(ours.tensors[t].dtype.value in ("int16", "float32") for t in ours.activations())
    weighted = (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE)
    mine = [o for o in ours.ops if o.kind in weighted]
    theirs = [o for o in conv.ops if o.kind in weighted]
    assert [o.kind for o in mine] == [o.kind for o in theirs]
    for a, b in zip(mine, theirs):  # same int8 weights and scales; int64 biases within one step
        np.testing.assert_array_equal(ours.tensors[a.inputs[1]].data, conv.tensors[b.inputs[1]].data)
        np.testing.assert_allclose(ours.tensors[a.inputs[1]].quant.scale, conv.tensors[b.inputs[1]].quant.scale)
        if len(a.inputs) > 2 and len(b.inputs) > 2:
            qa, qb = ours.tensors[a.inputs[2]].data, conv.tensors[b.inputs[2]].data
            assert qa.dtype == qb.dtype == np.int64 and np.abs(qa - qb).max() <= 1
    # the input's parameters are the converter's exactly; every other scale within 1e-6 relative where the
    # converter did not choose its own grouping (it gives ADD's inputs the output's scale, see the docs)
    q_in = [o for o in ours.ops if o.kind == OpKind.QUANTIZE][0]
    c_in = [o for o in conv.ops if o.kind == OpKind.QUANTIZE][0]
    assert ours.tensors[q_in.outputs[0]].quant.equals(conv.tensors[c_in.outputs[0]].quant)
    x = np.random.default_rng(3).normal(size=(40, 8, 8, 2)).astype(np.float32)
    e16, e_conv = _rel_err(fg, ours, x), _rel_err(fg, conv, x)
    int8, _ = _quantize(files)
    e8 = _rel_err(fg, int8, x)
    assert e16 < 0.5 * e8 and e16 < 1.5 * e_conv  # int16 is the gain; as good as the converter's


def test_mixed_int8_int16_layers(files) -> None:
    g, fg = _quantize(files, int16_layers=("first", "last"))
    assert g.meta["activations"] == "mixed"
    convs = [o for o in g.ops if o.kind in (OpKind.CONV2D, OpKind.DENSE)]
    dt = {o.origin: g.tensors[o.outputs[0]].dtype.value for o in convs}
    assert dt["c1"] == "int16" and dt["head"] == "int16" and dt["c2"] == "int8" and dt["d1"] == "int8"
    bias = {o.origin: g.tensors[o.inputs[2]].dtype.value for o in convs}
    assert bias["head"] == "int64" and bias["d1"] == "int32"
    req = [(o.kind.value, g.tensors[o.inputs[0]].dtype.value, g.tensors[o.outputs[0]].dtype.value) for o in g.ops
           if o.kind in (OpKind.QUANTIZE, OpKind.DEQUANTIZE)][1:-1]  # without the model's input and output
    # int16 -> int8 after c1 (TFLite's Requantize); int8 -> int16 before head through float32 (TFLite's QUANTIZE
    # has no int8 -> int16 form)
    assert req == [("quantize", "int16", "int8"), ("dequantize", "int8", "float32"), ("quantize", "float32", "int16")]
    x = np.random.default_rng(4).normal(size=(20, 8, 8, 2)).astype(np.float32)
    assert np.isfinite(_rel_err(fg, g, x))


@pytest.mark.parametrize("kw", [{"activations": "int16"}, {"int16_layers": ("first", "last")}],
                         ids=["int16", "mixed"])
def test_written_16x8_runs_in_tflite_and_tflm(files, tmp_path: Path, kw: dict) -> None:
    """tinycc's own int16 (and mixed) quantization written as .tflite: BUILTIN_REF and TFLite Micro equal run_int8
    on every tensor, and the file reads back into the same graph outputs."""
    g, _ = _quantize(files, **kw)
    data = write_tflite(g)
    path = tmp_path / "ours.tflite"
    path.write_bytes(data)
    x = np.random.default_rng(5).normal(size=(30, 8, 8, 2)).astype(np.float32)
    back = read_tflite(str(path))
    assert assert_builtin_ref(back, path, x) >= len(g.ops) - 1
    np.testing.assert_array_equal(run_int8(back, x)[back.outputs[0]], run_int8(g, x)[g.outputs[0]])
    assert_tflm(g, data, x)



def _inference_dep(files, session, **kw):
    from tinycc.api import load_cleaned
    from tinycc.backends.c import CBackend

    from .deploy_util import build_inference

    g = load_cleaned(str(files["keras"]), session)
    return build_inference(g, {"calib_data": np.load(files["calib"]), **kw}, session, CBackend())


@pytest.mark.parametrize("kw", [{"activations": "int16"}, {"int16_layers": ("first", "last")}],
                         ids=["int16", "mixed"])
def test_c_inference_equals_run_int8_tflm_and_builtin_ref(files, tmp_path: Path, kw: dict) -> None:
    """The C project of an int16 (or mixed) model, built with -Werror and ASan/UBSan, prints run_int8's outputs;
    TFLite Micro and BUILTIN_REF run the tflm target's .tflite of the same deployment to the same values."""
    from tinycc.backends.c import CBackend
    from tinycc.deploy.inference import full_graph

    from . import c_harness
    from .deploy_util import render_project
    from .test_inference import _tflite_runs

    session = Session()
    dep = _inference_dep(files, session, **kw)
    CBackend().check(dep)
    assert any(dep.extractor.tensors[t].dtype.value == "int16" for t in dep.extractor.activations())
    x = np.random.default_rng(7).normal(size=(12, 8, 8, 2)).astype(np.float32)
    render_project(dep, {"test_vectors": x, "test_count": len(x)}, tmp_path)
    text = (tmp_path / "model.c").read_text()
    assert "(conv16 kernel)" in text or "tcc_conv2d_s16" in text  # int16 convolutions: generated or portable
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    full = full_graph(dep)
    ref = run_int8(full, x)[full.outputs[0]].reshape(len(x), -1)
    got = np.stack([out.outputs[i] for i in range(len(x))]).astype(np.float32)
    np.testing.assert_array_equal(got, ref)
    assert out.check == -2  # NaN input refused
    micro, builtin = _tflite_runs(dep, x)
    np.testing.assert_array_equal(micro, ref)
    np.testing.assert_array_equal(builtin, run_int8(full, x, flavor="tflite")[full.outputs[0]].reshape(len(x), -1))


@pytest.mark.parametrize("name,kw,feature", [("resnet_add", {"activations": "int16"}, "int16"),
                                             ("resnet_add", {"activations": "int16", "features": "int8"}, "int8"),
                                             ("conv1d_sensor", {"int16_layers": ("first",), "storage": "float32"},
                                              "int8")])
def test_int16_extractor_learns_on_the_device_like_the_simulator(name: str, kw: dict, feature: str,
                                                                 tmp_path: Path) -> None:
    """On-device learning over an int16 (or mixed) Φf: its int16 features are kept (int16 entries), or with
    --features int8 requantized to int8 at the cut; the generated C (ASan/UBSan) computes the simulator's features
    bit for bit and learns like it."""
    from tinycc.backends.c import CBackend
    from tinycc.ir.simulator import Simulator

    from . import c_harness
    from .deploy_util import build_deployment, render_project
    from .test_c_backend import _graph

    session = Session()
    g, x, y, calib = _graph(session, name)
    opts = {"calib_data": calib, "buffer": 6, "lr": 0.05, "epochs": 1, **kw}
    dep = build_deployment(g, opts, session, CBackend())
    ext = dep.extractor
    assert any(ext.tensors[t].dtype.value == "int16" for t in ext.activations())
    assert ext.tensors[ext.outputs[0]].dtype.value == feature
    assert dep.buffer.storage == kw.get("storage", feature)
    render_project(dep, {**opts, "test_vectors": (x[:10], y[:10]), "test_count": 10, "test_learn": 10}, tmp_path)
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    sim = Simulator(dep)
    feats = sim.features(x[:10])
    for i in range(10):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")
    for i in range(10):
        sim.learn_features(feats[i], int(y[i]))
    assert out.buffer == sim.buffer.count
    for l, layer in enumerate(sim.classifier.layers):
        scale = max(np.abs(layer.weight).max(), 1e-3)
        assert np.abs(out.weights[l] - layer.weight.reshape(-1)).max() <= 1e-4 * scale


def test_int16_inference_on_cortex_m4_in_qemu(files, tmp_path: Path) -> None:
    """The int16 inference demo cross-built for Cortex-M4 prints run_int8's outputs under QEMU."""
    from . import c_harness
    from .op_checks import assert_qemu_outputs_equal_run_int8

    if not c_harness.have_arm():
        pytest.skip("arm-none-eabi-gcc or qemu-system-arm not installed")
    dep = _inference_dep(files, Session(), activations="int16")
    x = np.random.default_rng(8).normal(size=(4, 8, 8, 2)).astype(np.float32)
    assert_qemu_outputs_equal_run_int8(dep, x, tmp_path)


def test_int16_selftest_on_the_mega2560_in_simavr(tmp_path: Path) -> None:
    """The Arduino sketch (AVR: int64 biases and int16 constants read from flash) predicts like the simulator before
    and after learning over an int16 Φf."""
    from tinycc.backends.arduino import ArduinoBackend

    from . import arduino_harness
    from .deploy_util import build_deployment
    from .test_c_backend import _graph

    if not arduino_harness.available():
        pytest.skip("arduino-builder/simavr/avr-gcc not installed")
    session = Session()
    g, x, y, calib = _graph(session, "conv1d_sensor")
    dep = build_deployment(g, {"calib_data": calib, "buffer": 8, "lr": 0.1, "epochs": 1, "activations": "int16",
                               "board": "mega2560"}, session, ArduinoBackend())
    x, y = x[:8], y[:8]
    arduino_harness.assert_sketch_learns_like_the_simulator(dep, x, y, tmp_path, 16)


@pytest.mark.timeout(1800)  # builds TFLite Micro once when no cached library exists
def test_tflm_project_of_a_16x8_classifier_learns_like_the_simulator(tmp_path: Path) -> None:
    """Target tflm: the 16x8 .tflite's extractor runs in TFLite Micro (int16 kernels, its int16 output read as the
    features) with the features of run_int8, and the float head learns like the simulator."""
    from tinycc.backends import c as c_backend
    from tinycc.backends.tflm import build, vendor
    from tinycc.ir.simulator import Simulator

    from . import c_harness
    from .deploy_util import compile_model, vectors

    vendor_dir = vendor.default_vendor_dir()
    if vendor_dir is None or vendor.missing_toolchain("host"):
        pytest.skip("TensorFlow Lite Micro snapshot or host toolchain not available")
    library = vendor.ensure_library(vendor_dir, "host")
    x = np.random.default_rng(0).normal(size=(64, 16, 3)).astype(np.float32)
    path = tmp_path / "sensor16.tflite"
    path.write_bytes(convert_16x8(sensor_classifier(), x, "float32"))
    opts = {"calib_data": x, "buffer": 8, "lr": 0.05, "epochs": 1, "test_count": 8, "test_learn": 8}
    res = compile_model(str(path), "tflm", str(tmp_path / "proj"), opts, Session())
    dep = res.deployment
    exe = build.build_host(res.output, sanitize=True, library=library)
    out = c_harness.parse(build.run(exe))
    xt, yt = c_backend.test_vectors(dep, vectors(opts))
    ref = run_int8(dep.extractor, xt)[dep.extractor.outputs[0]].reshape(len(xt), -1)
    assert ref.dtype == np.int16 and dep.buffer.storage == "int16"
    for i in range(len(xt)):
        np.testing.assert_array_equal(out.features[i], ref[i], err_msg=f"TFLite Micro features of input {i}")
    sim = Simulator(dep)
    _, p = sim.predict_features(ref)
    np.testing.assert_allclose(np.stack([out.before[i][1] for i in range(len(xt))]), p, atol=1e-5)
    for i in range(8):
        sim.learn_features(ref[i % len(xt)], int(yt[i % len(xt)]))
    assert out.buffer == sim.buffer.count > 0
    for l, layer in enumerate(sim.classifier.layers):  # head weights after learning from int16 entries
        scale = max(np.abs(layer.weight).max(), 1e-3)
        assert np.abs(out.weights[l] - layer.weight.reshape(-1)).max() <= 1e-4 * scale


def _cli(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "tinycc.cli", *args], capture_output=True, text=True, timeout=600)


def test_cli_quantize_int16_report_shows_the_gain_and_bad_input_is_one_line(files, tmp_path: Path) -> None:
    import json

    out, rep = tmp_path / "q16.tflite", tmp_path / "r.json"
    r = _cli("quantize", str(files["keras"]), "--calib", str(files["calib"]), "--activations", "int16", "-o", str(out),
             "--report", str(rep))
    assert r.returncode == 0, r.stderr
    d = json.loads(rep.read_text())
    assert {t["dtype"] for t in d["tensors"]} == {"int16"}
    assert all(t["int8_sqnr_db"] is not None for t in d["tensors"])
    assert d["output_sqnr_db"] > d["baseline_output_sqnr_db"] + 3  # int16 activations: the measured gain
    assert "all-int8 SQNR dB" in r.stdout
    g = read_tflite(str(out))
    assert {g.tensors[t].dtype.value for t in g.activations()} == {"float32", "int16"}
    for bad, what in ((["--int16-layers", "nope"], "'nope' names no layer"),
                      (["--int16-layers", "c1", "--activations", "int16"], "--activations int16 already"),
                      (["--activations", "int4"], "invalid choice")):
        r = _cli("quantize", str(files["keras"]), "--calib", str(files["calib"]), *bad, "-o",
                 str(tmp_path / "x.tflite"))
        assert r.returncode == 2 and what in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr
        assert "Traceback" not in r.stderr and not (tmp_path / "x.tflite").exists()
    r = _cli("compile", str(files["keras"]), "-t", "c", "--calib", str(files["calib"]), "--int16-layers", "nope",
             "--inference-only", "-o", str(tmp_path / "proj"))
    assert r.returncode == 2 and "'nope' names no layer" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli("compile", str(files["int16_io"]), "-t", "c", "--activations", "int16", "--inference-only", "-o",
             str(tmp_path / "proj"))
    assert r.returncode == 2 and "already quantized" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _g16(kind: str, shape: tuple, in_s: float, out_s: float, attrs: dict, consts: list | None = None,
         out_dtype: str = "int16"):
    from tinycc.ir.graph import Graph
    from tinycc.ir.tensor import QuantParams

    g = Graph(kind)
    g.add_input("x", shape, "int16").quant = QuantParams([in_s], [0])
    names = ["x"]
    for i, (data, q) in enumerate(consts or []):
        c = g.add_const(f"c{i}", data)
        c.quant = q
        names.append(c.name)
    op = g.add_op(kind, names, "y", attrs, output_dtype=out_dtype)
    g.tensors[op.outputs[0]].quant = QuantParams([out_s], [0 if out_dtype == "int16" else -5])
    g.outputs = [op.outputs[0]]
    return g


def _random_case16(kind: str, rng: np.random.Generator):
    from tinycc.ir.tensor import QuantParams

    s_in = float(np.float32(10 ** rng.uniform(-4, -1)))
    s_out = float(np.float32(s_in * 10 ** rng.uniform(-1, 1.5)))
    act = ["none", "relu", "relu6"][int(rng.integers(0, 3))]
    if kind in ("conv2d", "depthwise_conv2d", "dense"):
        ic, oc = int(rng.integers(1, 5)), int(rng.integers(1, 6))
        if kind == "dense":
            shape, wshape, axis, attrs = (1, ic * 3), (oc, ic * 3), 0, {"activation": act}
        elif kind == "conv2d":
            k = int(rng.integers(1, 4))
            shape, wshape, axis = (1, 5, 6, ic), (oc, k, k, ic), 0
            attrs = {"strides": (int(rng.integers(1, 3)),) * 2, "padding": ["same", "valid"][int(rng.integers(0, 2))],
                     "dilation": (1, 1), "groups": 1, "activation": act}
        else:
            m = int(rng.integers(1, 3))
            oc = ic * m
            shape, wshape, axis = (1, 5, 6, ic), (1, 3, 3, oc), 3
            attrs = {"strides": (1, 1), "padding": "same", "dilation": (1, 1), "depth_multiplier": m,
                     "activation": act}
        ws = (10 ** rng.uniform(-3, -1, oc)).astype(np.float32)
        w = rng.integers(-127, 128, wshape).astype(np.int8)
        b = rng.integers(-(1 << 34), 1 << 34, oc).astype(np.int64)
        consts = [(w, QuantParams(ws, np.zeros(oc, np.int64), axis)),
                  (b, QuantParams((np.float32(s_in) * ws).astype(np.float32), np.zeros(oc, np.int64), 0))]
        s_out = float(np.float32(s_in * float(ws.max()) * 10 ** rng.uniform(0.5, 3)))
        return _g16(kind, shape, s_in, s_out, attrs, consts)
    if kind in ("add", "sub", "mul"):
        s2 = float(np.float32(s_in * 10 ** rng.uniform(-1, 1)))
        other = rng.integers(-32768, 32768, (1, 1, 4)).astype(np.int16)  # a broadcast constant operand
        return _g16(kind, (1, 3, 2, 4), s_in, s_out if kind != "mul" else float(np.float32(s_in * s2 * 3e3)),
                    {"activation": act}, [(other, QuantParams([s2], [0]))])
    if kind in ("maximum", "minimum"):  # shared parameters
        other = rng.integers(-32768, 32768, (1, 2, 1)).astype(np.int16)
        return _g16(kind, (1, 3, 2, 4), s_in, s_in, {}, [(other, QuantParams([s_in], [0]))])
    if kind == "slice":
        return _g16(kind, (1, 3, 5, 4), s_in, s_in, {"axis": 2, "begin": 1, "length": 3})
    if kind == "transpose":
        return _g16(kind, (1, 3, 5, 4), s_in, s_in, {"perm": (0, 3, 1, 2)})
    if kind == "reverse":  # time reversal of a Bidirectional layer (any non-batch axis)
        return _g16(kind, (1, 3, 5, 4), s_in, s_in, {"axis": int(rng.integers(1, 4))})
    if kind == "resize_nearest":
        return _g16(kind, (1, 3, 2, 4), s_in, s_in, {"size": (6, 5), "align_corners": False,
                                                     "half_pixel_centers": True})
    if kind == "global_avg_pool":  # TFLite's requantizing MEAN
        return _g16(kind, (1, 4, 3, 5), s_in, s_out, {"keepdims": bool(rng.integers(0, 2)), "requantize": True})
    if kind == "avg_pool2d":
        return _g16(kind, (1, 5, 5, 3), s_in, s_in, {"pool_size": (2, 3), "strides": (2, 2), "padding": "same",
                                                     "activation": act})
    if kind == "leaky_relu":
        return _g16(kind, (1, 2, 3, 4), s_in, s_out, {"alpha": float(np.float32(rng.uniform(0.01, 0.5)))})
    if kind in ("relu", "relu6"):
        return _g16(kind, (1, 2, 3, 4), s_in, s_out, {})
    return _g16("quantize", (1, 2, 3, 4), s_in, s_out, {}, out_dtype=["int16", "int8"][int(rng.integers(0, 2))])


def test_int16_c_kernels_equal_run_int8_over_random_parameters(tmp_path: Path) -> None:
    """Every int16 runtime kernel, through the emitter, in one ASan/UBSan program: random weights, int64 biases
    up to 2^34, scales, fused activations, broadcast constant operands; each output equals run_int8."""
    from tinycc.backends.c.emitter import _Builder

    from . import c_harness
    from .test_c_kernels import _generic

    rng = np.random.default_rng(16)
    kinds = ["conv2d", "depthwise_conv2d", "dense", "add", "sub", "mul", "avg_pool2d", "leaky_relu", "relu",
             "relu6", "quantize", "maximum", "minimum", "slice", "transpose", "resize_nearest",
             "global_avg_pool", "reverse"]
    body, want, decls, arena = [], [], [], 16
    for i in range(len(kinds) * 25):
        kind = kinds[i % len(kinds)]
        g = _random_case16(kind, rng)
        x = rng.integers(-32768, 32768, g.tensors["x"].shape).astype(np.int16)
        b = _Builder(_generic(g))
        with c_harness.listed_tables():
            em = b.build()
        arena = max(arena, em.plan.arena)
        for a in em.arrays:
            decls.append(f"static const {a.ctype} {a.name}_{i}[{a.count}] = {{{', '.join(a.values)}}};")
        calls = []
        for c in em.calls:
            args = [f"{v}_{i}" if any(v == a.name for a in em.arrays) else v for v in c.args]
            calls.append(f"    {c.fn}({', '.join(args)});")
        vals = ", ".join(str(int(v)) for v in x.reshape(-1))
        y = g.outputs[0]
        body += [f"    {{ static const int16_t in[{x.size}] = {{{vals}}};",
                 f"      memcpy(tcc_arena + {em.plan.offsets['x']}, in, sizeof in); }}", *calls,
                 f"    dump{16 if g.tensors[y].dtype.value == 'int16' else 8}({i}, tcc_arena + {em.plan.offsets[y]}, "
                 f"{g.tensors[y].size});"]
        ref = run_int8(g, x)[y]
        want.append(f"case {i} " + " ".join(str(int(v)) for v in ref.reshape(-1)))
    src = "\n".join([
        "#include <stdio.h>", "#include <string.h>", '#include "tinycc_kernels.h"',
        f"static int8_t tcc_arena[{arena}] __attribute__((aligned(16)));", *decls,
        "static void dump16(int id, const int8_t *p, int32_t n) {",
        "    int32_t i; int16_t v;", '    printf("case %d", id);',
        '    for (i = 0; i < n; ++i) { memcpy(&v, p + 2 * i, 2); printf(" %d", v); }', '    printf("\\n");', "}",
        "static void dump8(int id, const int8_t *p, int32_t n) {",
        "    int32_t i;", '    printf("case %d", id);', '    for (i = 0; i < n; ++i) { printf(" %d", p[i]); }',
        '    printf("\\n");', "}", "int main(void) {", *body, "    return 0;", "}", ""])
    got = c_harness.run_runtime_program(src, tmp_path, "kernels16")
    assert len(got) == len(want)
    for line, ref, kind in zip(got, want, [kinds[i % len(kinds)] for i in range(len(want))]):
        assert line == ref, kind
    # not only saturation: the outputs spread over the int16 range
    values = np.concatenate([np.array(w.split()[2:], int) for w in want])
    assert len(np.unique(values)) > 1000
