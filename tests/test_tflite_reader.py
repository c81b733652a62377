"""The .tflite reader: converter-made int8 models imported into the IR run bit-exactly like BUILTIN_REF."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinycc.errors import TinyccError, UnsupportedLayerError
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.ops import OpKind
from tinycc.plugins.tflite_frontend import read_tflite
from tinycc.plugins.tflite_schema import schema
from tinycc.plugins.tflite_writer import operator_names, write_tflite

from .test_tflite_writer import mobilenet_v3_style
from .zoo import build, sample_input

# what each model makes the converter emit besides CONV_2D / FULLY_CONNECTED / SOFTMAX
MODELS = {
    "mlp": "LOGISTIC, TANH",
    "sequential_cnn": "Flatten as SHAPE/STRIDED_SLICE/PACK + RESHAPE, LEAKY_RELU, MAX_POOL_2D",
    "mobilenet_v2": "MEAN, ADD, MUL, DEPTHWISE_CONV_2D",
    "concat_branch": "SPACE_TO_BATCH_ND + CONV_2D + BATCH_TO_SPACE_ND (dilation), PAD, REDUCE_MAX, CONCATENATION",
    "mobilenet_v3": "HARD_SWISH, MEAN, LOGISTIC",
    "cnas_like": "grouped conv as depthwise, SE on the pooled vector",
    "mobilenet_v3_style": "HARD_SWISH, MEAN, residual ADD",
}


def _keras(name: str):
    return mobilenet_v3_style() if name == "mobilenet_v3_style" else build(name)


def convert(model, x: np.ndarray, int8_io: bool = True) -> bytes:
    import tensorflow as tf

    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        c.inference_input_type = tf.int8
        c.inference_output_type = tf.int8
    return c.convert()


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("tflite")
    paths = {}
    for name in MODELS:
        m = _keras(name)
        x = sample_input(m, 32) if name != "mobilenet_v3_style" else \
            np.random.default_rng(0).random((32,) + tuple(m.input_shape[1:]), dtype=np.float32)
        paths[name] = out / f"{name}.tflite"
        paths[name].write_bytes(convert(m, x))
    m = build("mobilenet_v2")
    paths["float_io"] = out / "float_io.tflite"
    paths["float_io"].write_bytes(convert(m, sample_input(m, 32), int8_io=False))
    return paths


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
    if t.dtype.value == "int8":
        return rng.integers(-128, 128, size=(n,) + t.shape[1:]).astype(np.int8)
    return rng.normal(size=(n,) + t.shape[1:]).astype(np.float32)


@pytest.mark.parametrize("name", list(MODELS))
def test_converter_model_bit_exact_with_builtin_ref(converted, name: str) -> None:
    g = read_tflite(str(converted[name]))
    compared = _assert_bit_exact(g, converted[name], _inputs(g, 100))
    assert compared == len(g.activations()) and compared >= len(g.ops)  # every tensor, inputs included
    assert g.outputs and g.tensors[g.outputs[0]].dtype.value == "int8"


def test_what_the_reader_maps(converted) -> None:
    kinds = {n: {o.kind for o in read_tflite(str(converted[n])).ops} for n in MODELS}
    assert OpKind.FLATTEN not in kinds["sequential_cnn"] and OpKind.RESHAPE in kinds["sequential_cnn"]
    assert {OpKind.GLOBAL_AVG_POOL, OpKind.SOFTMAX} <= kinds["mobilenet_v2"]
    assert OpKind.HARD_SWISH in kinds["mobilenet_v3"]
    g = read_tflite(str(converted["concat_branch"]))
    dil = [o for o in g.ops if o.attrs.get("dilation", (1, 1)) != (1, 1)]
    assert len(dil) == 1 and dil[0].attrs["dilation"] == (2, 2)  # the converter's space-to-batch trick, undone
    assert OpKind.GLOBAL_MAX_POOL in kinds["concat_branch"]
    gap = [o for o in read_tflite(str(converted["mobilenet_v2"])).ops if o.kind == OpKind.GLOBAL_AVG_POOL]
    assert gap and all(o.attrs["requantize"] for o in gap)
    w = [g.tensors[o.inputs[1]] for o in g.ops if o.kind == OpKind.CONV2D]
    assert all(t.quant.per_axis and t.quant.axis == 0 and t.dtype.value == "int8" for t in w)


def test_float_io_model_has_quantize_and_dequantize(converted) -> None:
    g = read_tflite(str(converted["float_io"]))
    assert g.ops[0].kind == OpKind.QUANTIZE and g.ops[-1].kind == OpKind.DEQUANTIZE
    assert g.tensors[g.inputs[0]].dtype.value == "float32"
    _assert_bit_exact(g, converted["float_io"], _inputs(g, 50))


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3"])
def test_written_back_and_read_again(converted, tmp_path: Path, name: str) -> None:
    g = read_tflite(str(converted[name]))
    out = tmp_path / "again.tflite"
    out.write_bytes(write_tflite(g))
    assert "MEAN" in operator_names(out.read_bytes())
    g2 = read_tflite(str(out))
    x = _inputs(g, 30, seed=2)
    a, b = run_int8(g, x, flavor="tflite"), run_int8(g2, x, flavor="tflite")
    np.testing.assert_array_equal(a[g.outputs[0]], b[g2.outputs[0]])
    _assert_bit_exact(g2, out, x)  # tinycc's own file still equals BUILTIN_REF


def test_bad_files(converted, tmp_path: Path) -> None:
    data = converted["mlp"].read_bytes()
    (tmp_path / "trunc.tflite").write_bytes(data[: len(data) // 3])
    (tmp_path / "junk.tflite").write_bytes(b"\x00" * 64)
    for bad in ("trunc.tflite", "junk.tflite"):
        with pytest.raises(TinyccError, match="TFLite"):
            read_tflite(str(tmp_path / bad))
    s = schema()
    m = s.ModelT.InitFromPackedBuf(data, 0)
    for oc in m.operatorCodes:
        if oc.builtinCode == s.BuiltinOperator.TANH:
            oc.builtinCode = oc.deprecatedBuiltinCode = s.BuiltinOperator.ABS
    import flatbuffers

    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    (tmp_path / "abs.tflite").write_bytes(bytes(b.Output()))
    with pytest.raises(UnsupportedLayerError, match="TFLite operator ABS \\(writing '.+'\\) is not supported"):
        read_tflite(str(tmp_path / "abs.tflite"))


def test_float_model_is_refused(tmp_path: Path) -> None:
    import tensorflow as tf

    path = tmp_path / "float.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(build("mlp")).convert())
    with pytest.raises(UnsupportedLayerError, match="float .tflite"):
        read_tflite(str(path))


def test_cli_inspect_and_compile_of_a_tflite(converted, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tinycc.cli", *args], capture_output=True, text=True, timeout=300)

    r = cli("inspect", str(converted["mobilenet_v2"]), "--json")
    assert r.returncode == 0, r.stderr
    import json

    data = json.loads(r.stdout)
    assert data["totals"]["params"] > 0 and any(l["op"] == "global_avg_pool" for l in data["layers"])
    r = cli("compile", str(converted["mobilenet_v2"]), "--target", "c", "-o", str(tmp_path / "out"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "needs the float model" in r.stderr
    assert not (tmp_path / "out").exists()
