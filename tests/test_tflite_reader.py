"""The .tflite reader: converter-made int8 models imported into the IR run bit-exactly like BUILTIN_REF."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from .deploy_util import render_project, whole_model
from tinycc.errors import TinyccError, UnsupportedLayerError
from tinycc.ir.graph import Graph
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.ops import OpKind
from tinycc.ir.tensor import DType, QuantParams
from tinycc.passes import PassContext, run_pipeline
from tinycc.session import Session
from tinycc.plugins.frontends.tflite import read_tflite
from tinycc.tflite_schema import schema
from tinycc.tflite_writer import operator_names, write_tflite

from .test_tflite_writer import mobilenet_v3_style
from .zoo import build, sample_input

# what each model makes the converter emit besides CONV_2D / FULLY_CONNECTED / SOFTMAX
MODELS = {
    "mlp": "LOGISTIC, TANH",
    "sequential_cnn": "Flatten as SHAPE/STRIDED_SLICE/PACK + RESHAPE, LEAKY_RELU, MAX_POOL_2D",
    "resnet_add": "residual ADD, AVERAGE_POOL_2D",
    "bn_conv_act": "BatchNorm folded by the converter, TANH, MAX_POOL_2D",
    "grouped_conv": "grouped CONV_2D (groups > 1)",
    "mobilenet_v2": "MEAN, ADD, MUL, DEPTHWISE_CONV_2D",
    "concat_branch": "SPACE_TO_BATCH_ND + CONV_2D + BATCH_TO_SPACE_ND (dilation), PAD, REDUCE_MAX, CONCATENATION",
    "mobilenet_v3": "HARD_SWISH, MEAN, LOGISTIC",
    "cnas_like": "grouped conv as depthwise, SE on the pooled vector",
    "mobilenet_v3_style": "HARD_SWISH, MEAN, residual ADD",
    "dense_3d": "FULLY_CONNECTED with keep_num_dims (Dense on a [1, T, F] input)",
    "conv1d_causal": "Conv1D as EXPAND_DIMS + CONV_2D + SQUEEZE, causal PAD on [N, L, C], 1-D pooling",
    "separable_cnn": "SeparableConv2D as DEPTHWISE_CONV_2D + CONV_2D",
}


def dense_3d():
    import keras as k
    from keras import layers as L

    k.utils.set_random_seed(0)
    inp = k.Input((4, 6), batch_size=1)  # a static batch: the converter keeps the rank (keep_num_dims)
    x = L.Dense(5, activation="relu", name="per_step")(inp)
    x = L.Flatten(name="flatten")(x)
    return k.Model(inp, L.Dense(3, name="head")(x), name="dense_3d")


def conv1d_causal():
    """Conv1D without dilation (the converter writes a dilated Conv1D as SPACE_TO_BATCH_ND on [N, L, C] around
    EXPAND_DIMS/SQUEEZE, which the reader refuses by name: see test_dilated_conv1d_is_refused_by_name)."""
    import keras as k
    from keras import layers as L

    k.utils.set_random_seed(0)
    inp = k.Input((24, 3))
    x = L.Conv1D(6, 4, padding="causal", activation="relu", name="c1")(inp)
    x = L.MaxPooling1D(2, name="pool")(x)
    x = L.DepthwiseConv1D(3, padding="same", activation="relu6", name="dw")(x)
    x = L.Conv1D(8, 3, strides=2, name="c2")(x)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    return k.Model(inp, L.Dense(3, activation="softmax", name="head")(x), name="conv1d_causal")


def _keras(name: str):
    return {"mobilenet_v3_style": mobilenet_v3_style, "dense_3d": dense_3d,
            "conv1d_causal": conv1d_causal}.get(name, lambda: build(name))()


def convert(model, x: np.ndarray, int8_io: bool = True, io_type: str = "int8") -> bytes:
    import tensorflow as tf

    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        c.inference_input_type = getattr(tf, io_type)
        c.inference_output_type = getattr(tf, io_type)
    return c.convert()


def _convert_all(out: Path) -> None:
    for name in MODELS:
        m = _keras(name)
        x = sample_input(m, 32) if name != "mobilenet_v3_style" else \
            np.random.default_rng(0).random((32,) + tuple(m.input_shape[1:]), dtype=np.float32)
        (out / f"{name}.tflite").write_bytes(convert(m, x))
    m = build("mobilenet_v2")
    (out / "float_io.tflite").write_bytes(convert(m, sample_input(m, 32), int8_io=False))
    m = build("mlp")
    (out / "uint8_io.tflite").write_bytes(convert(m, sample_input(m, 32), io_type="uint8"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    """The converter's files, made once per test run (xdist workers share them through a file lock)."""
    import fcntl
    import os

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, shared by its workers
    out = root / "tflite_reader_models"
    with open(root / "tflite_reader_models.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "done").exists():
            out.mkdir(exist_ok=True)
            _convert_all(out)
            (out / "done").write_text("ok\n")
    return {n: out / f"{n}.tflite" for n in [*MODELS, "float_io", "uint8_io"]}


def _ref(path: Path):
    import tensorflow as tf

    it = tf.lite.Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                             experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    return it


def _assert_bit_exact(g, path: Path, x: np.ndarray) -> int:
    """Compare every IR activation that names a TFLite tensor; return how many were compared."""
    it = _ref(path)
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


def _inputs(g, n: int, seed: int = 1) -> np.ndarray:
    t = g.tensors[g.inputs[0]]
    rng = np.random.default_rng(seed)
    if t.dtype.value in ("int8", "uint8"):
        info = np.iinfo(t.dtype.value)
        return rng.integers(info.min, info.max + 1, size=(n,) + t.shape[1:]).astype(t.dtype.value)
    return rng.normal(size=(n,) + t.shape[1:]).astype(np.float32)


@pytest.mark.parametrize("name", list(MODELS))
def test_converter_model_bit_exact_with_builtin_ref(converted, name: str) -> None:
    g = read_tflite(str(converted[name]))
    compared = _assert_bit_exact(g, converted[name], _inputs(g, 100))
    views = [t for t in g.activations() if t.endswith("/2d")]  # the reader's own [N, 1, L, C] views of [N, L, C]
    assert bool(views) == (name == "conv1d_causal")
    # every tensor, inputs included
    assert compared == len(g.activations()) - len(views) and compared >= len(g.ops) - len(views)
    assert g.outputs and g.tensors[g.outputs[0]].dtype.value == "int8"


def test_what_the_reader_maps(converted) -> None:
    kinds = {n: {o.kind for o in read_tflite(str(converted[n])).ops} for n in MODELS}
    assert OpKind.FLATTEN not in kinds["sequential_cnn"] and OpKind.RESHAPE in kinds["sequential_cnn"]
    assert {OpKind.GLOBAL_AVG_POOL, OpKind.SOFTMAX} <= kinds["mobilenet_v2"]
    assert OpKind.HARD_SWISH in kinds["mobilenet_v3"]
    assert {OpKind.PAD, OpKind.GLOBAL_AVG_POOL, OpKind.DEPTHWISE_CONV2D, OpKind.RESHAPE} <= kinds["conv1d_causal"]
    gc = read_tflite(str(converted["grouped_conv"]))
    assert any(o.kind == OpKind.CONV2D and o.attrs["groups"] > 1 for o in gc.ops)
    d3 = read_tflite(str(converted["dense_3d"]))
    per_step = next(o for o in d3.ops if o.kind == OpKind.DENSE)
    assert d3.tensors[per_step.inputs[0]].shape == (1, 4, 6) and d3.tensors[per_step.outputs[0]].shape == (1, 4, 5)
    assert per_step.attrs["activation"] == "relu"
    g = read_tflite(str(converted["concat_branch"]))
    dil = [o for o in g.ops if o.attrs.get("dilation", (1, 1)) != (1, 1)]
    assert len(dil) == 1 and dil[0].attrs["dilation"] == (2, 2)  # the converter's space-to-batch trick, undone
    assert OpKind.GLOBAL_MAX_POOL in kinds["concat_branch"]
    gap = [o for o in read_tflite(str(converted["mobilenet_v2"])).ops if o.kind == OpKind.GLOBAL_AVG_POOL]
    assert gap and all(o.attrs["requantize"] for o in gap)
    w = [g.tensors[o.inputs[1]] for o in g.ops if o.kind == OpKind.CONV2D]
    assert all(t.quant.per_axis and t.quant.axis == 0 and t.dtype.value == "int8" for t in w)


def test_dilated_conv1d_is_refused_by_name(tmp_path: Path) -> None:
    m = build("conv1d_sensor")  # its last Conv1D has dilation 2
    path = tmp_path / "dilated1d.tflite"
    path.write_bytes(convert(m, sample_input(m, 16)))
    with pytest.raises(UnsupportedLayerError, match="SPACE_TO_BATCH_ND writing '.*c3"):
        read_tflite(str(path))


def test_float_io_model_has_quantize_and_dequantize(converted) -> None:
    g = read_tflite(str(converted["float_io"]))
    assert g.ops[0].kind == OpKind.QUANTIZE and g.ops[-1].kind == OpKind.DEQUANTIZE
    assert g.tensors[g.inputs[0]].dtype.value == "float32"
    _assert_bit_exact(g, converted["float_io"], _inputs(g, 50))


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3", "concat_branch", "uint8_io", "dense_3d"])
def test_written_back_and_read_again(converted, tmp_path: Path, name: str) -> None:
    g = read_tflite(str(converted[name]))
    out = tmp_path / "again.tflite"
    out.write_bytes(write_tflite(g))
    assert ("MEAN" in operator_names(out.read_bytes())) == name.startswith("mobilenet")
    g2 = read_tflite(str(out))
    x = _inputs(g, 30, seed=2)
    a, b = run_int8(g, x, flavor="tflite"), run_int8(g2, x, flavor="tflite")
    np.testing.assert_array_equal(a[g.outputs[0]], b[g2.outputs[0]])
    _assert_bit_exact(g2, out, x)  # tinycc's own file still equals BUILTIN_REF


def _tanh_as_abs(data: bytes) -> bytes:
    """The same model with its TANH operator code replaced by ABS (an op the reader does not map)."""
    import flatbuffers

    s = schema()
    m = s.ModelT.InitFromPackedBuf(data, 0)
    for oc in m.operatorCodes:
        if oc.builtinCode == s.BuiltinOperator.TANH:
            oc.builtinCode = oc.deprecatedBuiltinCode = s.BuiltinOperator.ABS
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_bad_files(converted, tmp_path: Path) -> None:
    data = converted["mlp"].read_bytes()
    (tmp_path / "trunc.tflite").write_bytes(data[: len(data) // 3])
    (tmp_path / "junk.tflite").write_bytes(b"\x00" * 64)
    for bad in ("trunc.tflite", "junk.tflite"):
        with pytest.raises(TinyccError, match="TFLite"):
            read_tflite(str(tmp_path / bad))
    (tmp_path / "abs.tflite").write_bytes(_tanh_as_abs(data))
    with pytest.raises(UnsupportedLayerError, match="TFLite operator ABS \\(writing '.+'\\) is not supported"):
        read_tflite(str(tmp_path / "abs.tflite"))


def test_float_model_is_read_as_float_and_unknown_ops_are_named(tmp_path: Path) -> None:
    """Float files are read into the float IR (tests/test_tflite_float.py); an operator the reader does not map
    is refused with its name there too."""
    import keras
    import tensorflow as tf

    path = tmp_path / "float.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(build("mlp")).convert())
    g = read_tflite(str(path))
    assert not g.meta.get("quantized") and g.tensors[g.outputs[0]].dtype == DType.FLOAT32
    inp = keras.Input((4,))
    out = keras.ops.abs(keras.layers.Dense(3)(inp))
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, out)).convert())
    with pytest.raises(UnsupportedLayerError, match="TFLite operator ABS \\(writing '.*'\\) is not supported"):
        read_tflite(str(path))


def test_cli_inspect_and_compile_of_a_tflite(converted, tmp_path: Path) -> None:
    from .test_cli import assert_clean_error, tinycc

    r = tinycc("inspect", str(converted["mobilenet_v2"]), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["totals"]["params"] > 0 and any(l["op"] == "global_avg_pool" for l in data["layers"])
    seq = str(converted["sequential_cnn"])
    r = tinycc("compile", seq, "--target", "c", "-o", str(tmp_path / "ok"), "--buffer", "8")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ok" / "model.c").exists()
    # TFLite's requantizing MEAN has a C kernel now
    r = tinycc("compile", str(converted["mobilenet_v2"]), "--target", "c", "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "tcc_mean_s8(" in (tmp_path / "out" / "model.c").read_text()
    # a uint8 <-> int8 QUANTIZE inside the feature extractor still has none: named before anything is written
    g = read_tflite(str(converted["uint8_io"]))
    last = g.ops[-1]
    assert last.kind == OpKind.QUANTIZE and g.tensors[last.outputs[0]].dtype == DType.UINT8
    r = tinycc("compile", seq, "--target", "c", "-o", str(tmp_path / "p"), "--ratio", "0.5")
    assert_clean_error(r, 2, "pruning", "float model")


@pytest.mark.parametrize("name", ["sequential_cnn", "uint8_io", "mobilenet_v2", "mobilenet_v3"])
def test_compiled_c_of_an_imported_model(converted, tmp_path: Path, name: str) -> None:
    """compile path: Φf keeps the file's int8 parameters (float input + QUANTIZE in front), the generated C
    computes the same features as BUILTIN_REF at the cut, and Φc starts from the dequantized int8 head
    (mobilenet_v2/v3: TFLite's requantizing MEAN, HARD_SWISH and LOGISTIC in C)."""
    from tinycc.ir.quant import dequantize, quantize
    from tinycc.ir.simulator import Simulator
    from .deploy_util import build_deployment

    from . import c_harness

    g = read_tflite(str(converted[name]))
    dep = build_deployment(g, {"buffer": 6, "lr": 0.05}, Session(autoload=False), CBackend())
    ext = dep.extractor
    assert ext.tensors[ext.inputs[0]].dtype == DType.FLOAT32 and ext.ops[0].kind == OpKind.QUANTIZE
    CBackend().check(dep)
    want = {"mobilenet_v2": {OpKind.GLOBAL_AVG_POOL}, "mobilenet_v3": {OpKind.GLOBAL_AVG_POOL, OpKind.HARD_SWISH}}
    assert want.get(name, set()) <= {o.kind for o in ext.ops}
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30,) + ext.tensors[ext.inputs[0]].shape[1:]).astype(np.float32)  # as calibrated
    y = np.arange(30) % dep.num_classes
    render_project(dep, {"test_vectors": (x, y), "test_count": 30, "test_learn": 10}, tmp_path)
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=False))
    sim = Simulator(dep)
    feats = sim.features(x)
    ref_feats = run_int8(ext, x, flavor="tflite")[ext.outputs[0]].reshape(len(x), -1)  # FC rounds as BUILTIN_REF
    it = _ref(converted[name])
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    index = {d["name"]: d["index"] for d in it.get_tensor_details()}
    s, zp = inp["quantization"]
    ref_probs = []
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"C features of input {i}")
        it.set_tensor(inp["index"], quantize(x[i:i + 1], s, zp, inp["dtype"].__name__))
        it.invoke()
        np.testing.assert_array_equal(it.get_tensor(index[dep.meta["cut"]]).reshape(-1), ref_feats[i])
        so, zo = outp["quantization"]
        ref_probs.append(dequantize(it.get_tensor(outp["index"])[0], so, zo))
    _, probs = sim.predict_features(feats)
    np.testing.assert_allclose(np.stack([out.before[i][1] for i in range(len(x))]), probs, atol=1e-5)
    # the float head starts as the int8 head: the same classes, probabilities within a few int8 steps
    diff = np.abs(probs - np.stack(ref_probs))
    assert diff.mean() < 0.008 and diff.max() < 0.03
    ref = np.stack(ref_probs)  # untrained models: near-ties at the int8 softmax's 1/256 resolution
    picked = ref[np.arange(len(ref)), probs.argmax(1)]
    assert (picked >= ref.max(1) - 2 / 256).mean() >= 0.9


def test_tflm_target_runs_an_imported_mean_bit_exactly(converted, tmp_path: Path) -> None:
    """The tflm target takes what the C runtime lacks (MEAN, here): TFLite Micro equals run_int8."""
    runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
    from tinycc.backends.tflm import TflmBackend, extractor_tflite
    from tinycc.backends.tflm.measure import measure_arena
    from .deploy_util import build_deployment

    g = read_tflite(str(converted["mobilenet_v2"]))
    dep = build_deployment(g, {"buffer": 6}, Session(autoload=False), TflmBackend())
    TflmBackend().check(dep)
    assert any(o.attrs.get("requantize") for o in dep.extractor.ops)
    data = extractor_tflite(dep.extractor)
    tm = runtime.Interpreter.from_bytes(data, arena_size=measure_arena(data).arena)
    x = np.random.default_rng(5).normal(size=(30,) + dep.extractor.tensors[dep.extractor.inputs[0]].shape[1:])
    x = x.astype(np.float32)
    ref = run_int8(dep.extractor, x)[dep.extractor.outputs[0]]
    for i in range(len(x)):
        tm.set_input(x[i:i + 1], 0)
        tm.invoke()
        np.testing.assert_array_equal(tm.get_output(0), ref[i:i + 1])


def test_uint8_io_requantizes_at_both_ends(converted) -> None:
    g = read_tflite(str(converted["uint8_io"]))
    first, last = g.ops[0], g.ops[-1]
    assert first.kind == last.kind == OpKind.QUANTIZE
    assert (g.tensors[first.inputs[0]].dtype, g.tensors[first.outputs[0]].dtype) == (DType.UINT8, DType.INT8)
    assert (g.tensors[last.inputs[0]].dtype, g.tensors[last.outputs[0]].dtype) == (DType.INT8, DType.UINT8)
    _assert_bit_exact(g, converted["uint8_io"], _inputs(g, 100))


def test_int8_requantize_written_and_read_back(tmp_path: Path) -> None:
    """int8 -> int8 QUANTIZE with a different scale and zero point (TFLite's Requantize), via tinycc's writer."""
    g = Graph("requant")
    g.add_input("x", (1, 4, 4, 8), DType.INT8).quant = QuantParams([0.0371], [5])
    op = g.add_op(OpKind.QUANTIZE, ["x"], "rq", output_dtype=DType.INT8)
    g.tensors[op.outputs[0]].quant = QuantParams([0.0123], [-17])
    op2 = g.add_op(OpKind.QUANTIZE, [op.outputs[0]], "widen", output_dtype=DType.INT8)
    g.tensors[op2.outputs[0]].quant = QuantParams([0.25], [0])
    g.outputs = [op2.outputs[0]]
    path = tmp_path / "requant.tflite"
    path.write_bytes(write_tflite(g))
    g2 = read_tflite(str(path))
    assert [o.kind for o in g2.ops] == [OpKind.QUANTIZE, OpKind.QUANTIZE]
    x = _inputs(g2, 20, seed=3)
    assert _assert_bit_exact(g2, path, x) == 3
    y = run_int8(g2, x, flavor="tflite")[g2.outputs[0]]
    assert len(np.unique(y)) > 5 and y.min() > -128 and y.max() < 127  # neither trivial nor saturated


def test_c_backend_rejects_interpreter_only_kernels(converted) -> None:
    """Only a QUANTIZE between uint8 and int8 runs in run_int8 alone: the C backend names the layer before it
    emits anything; int8 SOFTMAX, HARD_SWISH and the requantizing MEAN pass the check."""
    g = read_tflite(str(converted["uint8_io"]))
    why = "requantizing QUANTIZE \\(uint8 -> int8\\) has no C kernel"
    with pytest.raises(UnsupportedLayerError, match=f"layer '.+': {why}"):
        CBackend().check(whole_model(g))
    for name in ("mlp", "mobilenet_v2", "mobilenet_v3"):
        CBackend().check(whole_model(read_tflite(str(converted[name]))))


def test_cleanup_and_int8_pipelines_leave_an_imported_model_alone(converted) -> None:
    session = Session(autoload=False)
    g = read_tflite(str(converted["mobilenet_v3"]))
    before = [(o.kind, dict(o.attrs), list(o.inputs), list(o.outputs)) for o in g.ops]
    x = _inputs(g, 10)
    want = run_int8(g, x, flavor="tflite")[g.outputs[0]]
    ctx = PassContext(session=session)
    for pipeline in ("cleanup", "int8"):
        run_pipeline(g, session.registry.pipeline(pipeline), ctx)
    assert [(o.kind, dict(o.attrs), list(o.inputs), list(o.outputs)) for o in g.ops] == before
    np.testing.assert_array_equal(run_int8(g, x, flavor="tflite")[g.outputs[0]], want)


def test_cli_errors_are_one_line(converted, tmp_path: Path) -> None:
    from .test_cli import assert_clean_error, tinycc

    data = converted["mlp"].read_bytes()
    (tmp_path / "trunc.tflite").write_bytes(data[: len(data) // 2])
    (tmp_path / "abs.tflite").write_bytes(_tanh_as_abs(data))
    assert_clean_error(tinycc("inspect", str(tmp_path / "trunc.tflite")), 2, "not a readable TFLite flatbuffer")
    assert_clean_error(tinycc("inspect", str(tmp_path / "abs.tflite")), 2, "TFLite operator ABS", "writing")
    assert_clean_error(tinycc("quantize", str(converted["mlp"]), "--calib", "x.npz", "-o", str(tmp_path / "q.tflite")),
                       2, "already an int8 model")


def test_damaged_files_read_or_fail_cleanly(converted, tmp_path: Path) -> None:
    """Random byte changes: the reader either imports the file or raises TinyccError (never another error)."""
    data = converted["uint8_io"].read_bytes()
    rng = np.random.default_rng(0)
    failed = 0
    for k in range(60):
        b = bytearray(data)
        for pos in rng.integers(8, len(b), size=3):
            b[int(pos)] = int(rng.integers(0, 256))
        path = tmp_path / f"damaged{k}.tflite"
        path.write_bytes(bytes(b))
        try:
            read_tflite(str(path))
        except TinyccError:
            failed += 1
    assert failed > 10
