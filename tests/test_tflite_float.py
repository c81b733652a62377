"""Float `.tflite` import: the converter's float32 files (own Keras models, dynamic-range and float16 weights,
MLPerf Tiny's kws_ref_model_float32) read into the float IR, checked against TFLite's float kernels and Keras,
then quantized, pruned and compiled like a Keras model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.ops import OpKind
from tinycc.plugins.frontends.tflite import read_tflite
from tinycc.tflite_schema import schema

from .conftest import mlperf_model
from .test_tflite_reader import _assert_bit_exact, conv1d_causal
from .zoo import build, sample_input

litert = pytest.importorskip("ai_edge_litert.interpreter")
RTOL = 1e-5  # oneDNN/XNNPACK may sum in another order than numpy


def _convert(model, mode: str = "float32") -> bytes:
    import tensorflow as tf

    c = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "float32":
        c.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic range: int8 weights, float activations
    if mode == "float16":
        c.target_spec.supported_types = [tf.float16]
    return c.convert()


def _tflite(data: bytes, x: np.ndarray) -> np.ndarray:
    it = litert.Interpreter(model_content=data)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    ys = []
    for i in range(len(x)):
        it.set_tensor(inp, x[i:i + 1])
        it.invoke()
        ys.append(it.get_tensor(out)[0])
    return np.stack(ys)


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * float(np.abs(want).max()), err_msg=what)


def _all_float(data: bytes) -> bytes:
    """The same model with every integer weight replaced by its float32 value: TFLite's float kernels then run
    exactly the weights a dynamic-range file's hybrid kernels multiply with (an independent float oracle)."""
    import flatbuffers

    s = schema()
    m = s.ModelT.InitFromPackedBuf(data, 0)
    for t in m.subgraphs[0].tensors:
        buf = m.buffers[t.buffer]
        if t.type == s.TensorType.INT8 and buf.data is not None and len(buf.data):
            q = np.frombuffer(bytes(np.asarray(buf.data, np.uint8)), np.int8).astype(np.float32).reshape(t.shape)
            shape = [1] * q.ndim
            scale = np.asarray(t.quantization.scale, np.float32)
            if scale.size > 1:
                shape[t.quantization.quantizedDimension] = -1
            zp = np.asarray(t.quantization.zeroPoint, np.float32).reshape(shape)
            w = (scale.reshape(shape) * (q - zp)).astype("<f4")
            buf.data = np.frombuffer(w.tobytes(), np.uint8)
            t.type, t.quantization = s.TensorType.FLOAT32, None
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@pytest.mark.parametrize("name", ["mobilenet_v3", "concat_branch", "cnas_like", "conv1d_causal"])
def test_float_converter_model_equals_tflite_and_keras(tmp_path: Path, name: str) -> None:
    model = conv1d_causal() if name == "conv1d_causal" else build(name)
    data = _convert(model)
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(data)
    g = read_tflite(str(path))
    assert not g.meta.get("quantized") and all(g.tensors[t].dtype.value == "float32" for t in g.activations())
    x = sample_input(model, 16)
    ours = run(g, x)[g.outputs[0]]
    _close(ours, _tflite(data, x), f"{name}: float IR vs TFLite")
    _close(ours, model(x).numpy(), f"{name}: float IR vs Keras")
    if name == "mobilenet_v3":
        assert {OpKind.HARD_SWISH, OpKind.GLOBAL_AVG_POOL} <= {o.kind for o in g.ops}
        assert not any(o.attrs.get("requantize") for o in g.ops)


@pytest.mark.parametrize("mode", ["dynamic_range", "float16"])
def test_integer_and_float16_weights_become_float32(tmp_path: Path, mode: str) -> None:
    model = build("sequential_cnn")
    data = _convert(model, mode)
    path = tmp_path / "m.tflite"
    path.write_bytes(data)
    g = read_tflite(str(path))
    consts = [g.tensors[t] for o in g.ops for t in o.inputs if g.tensors[t].is_const]
    assert all(c.dtype.value in ("float32", "int32") and c.quant is None for c in consts)
    x = sample_input(model, 16)
    ours = run(g, x)[g.outputs[0]]
    # float16: TFLite dequantizes the weights and runs float kernels; dynamic range: its hybrid kernels quantize
    # activations on the fly, so the float oracle is the same file with float32 weights
    _close(ours, _tflite(data if mode == "float16" else _all_float(data), x), mode)
    np.testing.assert_allclose(ours, model(x).numpy(), atol=0.02)  # rounded weights: close to Keras


@pytest.fixture(scope="module")
def kws() -> Path:
    return mlperf_model("kws_ref_model_float32.tflite")


def _kws_inputs(n: int, seed: int = 0) -> np.ndarray:
    """MFCC-like inputs: uniform over the range the int8 kws model's input parameters cover (about -120..25)."""
    return np.random.default_rng(seed).uniform(-120, 25, (n, 49, 10, 1)).astype(np.float32)


def test_kws_float_equals_tflite_float_kernels(kws: Path) -> None:
    g = read_tflite(str(kws))
    assert not g.meta.get("quantized")
    x = _kws_inputs(20)
    ours = run(g, x)[g.outputs[0]]
    data = kws.read_bytes()
    _close(ours, _tflite(_all_float(data), x), "kws: float IR vs TFLite float kernels")
    hybrid = _tflite(data, x)  # the file's own (hybrid) kernels: int8 activations inside, close only
    assert np.abs(ours - hybrid).max() < 0.05 and (ours.argmax(1) == hybrid.argmax(1)).mean() >= 0.9


def test_kws_float_quantize_cli_equals_builtin_ref(kws: Path, tmp_path: Path) -> None:
    from .test_cli import tinycc

    np.save(tmp_path / "calib.npy", _kws_inputs(64, 1))
    out = tmp_path / "kws_int8.tflite"
    r = tinycc("quantize", str(kws), "--calib", str(tmp_path / "calib.npy"), "-o", str(out), "--int8-io")
    assert r.returncode == 0, r.stderr
    g = read_tflite(str(out))
    assert g.ops[-1].kind == OpKind.SOFTMAX  # int8 SOFTMAX at the int8 output
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (30, 49, 10, 1)).astype(np.int8)
    assert _assert_bit_exact(g, out, x) >= len(g.ops)  # every tensor, input and output included


def test_kws_float_compiles_for_c_and_prunes(kws: Path, tmp_path: Path) -> None:
    from tinycc.backends.c import CBackend
    from .deploy_util import render_project
    from tinycc.ir.simulator import Simulator
    from tinycc.passes import PassContext, run_pipeline
    from .deploy_util import build_deployment
    from tinycc.session import Session

    from . import c_harness
    from .test_cli import tinycc

    np.savez(tmp_path / "calib.npz", x=_kws_inputs(64, 1))
    r = tinycc("compile", str(kws), "--target", "c", "--calib", str(tmp_path / "calib.npz"), "-o",
               str(tmp_path / "kws_c"), "--buffer", "4")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "kws_c" / "model.c").exists()
    # the generated C computes the int8 reference features
    session = Session(autoload=False)
    g = read_tflite(str(kws))
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    opts = {"calib_data": _kws_inputs(64, 1), "buffer": 4}
    dep = build_deployment(g, opts, session, CBackend())
    x = _kws_inputs(4, 5)
    render_project(dep, {**opts, "test_vectors": (x, np.zeros(4, np.int64)), "test_count": 4, "test_learn": 1},
                   tmp_path / "proj")
    out = c_harness.run_host(c_harness.build_host(tmp_path / "proj", sanitize=False))
    feats = Simulator(dep).features(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i])
    np.testing.assert_array_equal(feats, run_int8(dep.extractor, x)[dep.extractor.outputs[0]].reshape(len(x), -1))
    # inspect and prune like a Keras model
    r = tinycc("inspect", str(kws), "--json")
    assert r.returncode == 0, r.stderr
    params = json.loads(r.stdout)["totals"]["params"]
    r = tinycc("compile", str(kws), "--target", "c", "--calib", str(tmp_path / "calib.npz"), "-o",
               str(tmp_path / "kws_pruned"), "--buffer", "4", "--ratio", "0.5")
    assert r.returncode == 0, r.stderr
    assert params > 0 and (tmp_path / "kws_pruned" / "model.c").stat().st_size < \
        (tmp_path / "kws_c" / "model.c").stat().st_size
