"""int8 quantization passes, the quantization report and `tinycc quantize`: rules checked against their
definitions, the TFLite converter (same parameters and weights, accuracy loss no worse), and error paths."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinycc.errors import TinyccError, UnsupportedLayerError
from tinycc.ir.graph import Graph
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.ops import OpKind
from tinycc.ir.quant import choose_activation_params, quantize
from tinycc.ir.tensor import DType
from tinycc.config import CompileConfig, QuantConfig
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.passes import quantize as qz
from tinycc.plugins.frontends.keras import graph_from_keras_model
from tinycc.plugins.passes.quant_report import build_report, sqnr_db

from .test_tflite_writer import mobilenet_v3_style
from .zoo import build, sample_input, save_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "digits_cnn.h5"
DIGITS = ROOT / "examples" / "digits_data.npz"
litert = pytest.importorskip("ai_edge_litert.interpreter")


def _int8(session, g: Graph, x: np.ndarray, int8_io: bool = False, **quant) -> PassContext:
    """The int8 pipeline with ``x`` as calibration samples and QuantConfig fields ``quant``."""
    q = QuantConfig(int8_input=int8_io, int8_output=int8_io, **quant)
    ctx = PassContext(session=session, config=CompileConfig(learning=None, quant=q), calib=x)
    run_pipeline(g, session.registry.pipeline("int8"), ctx)
    return ctx


def _cleaned(session, model) -> Graph:
    g = graph_from_keras_model(model)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    return g


# ---- lowering ----------------------------------------------------------------------
def test_lowering_keeps_float_results(monkeypatch) -> None:
    # so swish lowers too, and hard_swish as it would without its int8 kernel
    monkeypatch.setattr(qz, "INT8_KINDS", (qz.INT8_KINDS | {OpKind.SIGMOID}) - {OpKind.HARD_SWISH})
    import keras

    L = keras.layers
    keras.utils.set_random_seed(1)
    inp = keras.Input((6, 6, 3))
    x = L.Rescaling([0.5, 2.0, 1.0], offset=[0.1, -0.2, 0.0], name="rs")(inp)
    x = L.BatchNormalization(name="bn_in")(x)
    x = L.Conv2D(8, 3, padding="same", activation="hard_sigmoid", name="c")(x)
    x = L.Dropout(0.5, name="drop")(x)
    a = L.Activation("hard_swish", name="hs")(x)
    b = L.Activation("swish", name="sw")(x)
    out = L.Add(name="sum")([a, b])
    model = keras.Model(inp, out)
    bn = model.get_layer("bn_in")
    bn.set_weights([np.array(v, np.float32) for v in ([1.5, 0.5, 2.0], [0.1, -0.3, 0.2], [0.2, 1.0, -1.0],
                                                      [0.5, 2.0, 1.5])])
    g = graph_from_keras_model(model)  # no cleanup: every lowering rule has something to do
    before = g.copy()
    assert qz.lower_for_int8(g)
    kinds = {o.kind for o in g.ops}
    assert not kinds & {OpKind.HARD_SIGMOID, OpKind.HARD_SWISH, OpKind.SWISH, OpKind.BATCH_NORM, OpKind.RESCALE,
                        OpKind.DROPOUT}
    x = np.random.default_rng(0).normal(0, 3, (16, 6, 6, 3)).astype(np.float32)
    ref, got = run(before, x), run(g, x)
    np.testing.assert_allclose(got[g.outputs[0]], ref[before.outputs[0]], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[g.outputs[0]], model(x).numpy(), rtol=1e-5, atol=1e-5)
    monkeypatch.undo()  # with its int8 kernel, hard_swish stays one op (TFLite's HARD_SWISH)
    g = before.copy()
    qz.lower_for_int8(g)
    assert [o.origin for o in g.ops if o.kind == OpKind.HARD_SWISH] == ["hs"]


def test_swish_stays_when_int8_has_no_sigmoid(session, monkeypatch) -> None:
    monkeypatch.setattr(qz, "INT8_KINDS", qz.INT8_KINDS - {OpKind.SIGMOID})
    g = _cleaned(session, build("mobilenet_v3"))
    with pytest.raises(UnsupportedLayerError, match="layer 'head' \\(swish\\) has no int8 kernel"):
        run_pipeline(g, ["lower_for_int8"], PassContext(session=session))


# ---- quantization rules -----------------------------------------------------------
@pytest.fixture(scope="module")
def mnv3():
    from tinycc.session import Session

    s = Session(autoload=False)
    m = mobilenet_v3_style()
    g = _cleaned(s, m)
    fg = g.copy()
    x = sample_input(m, 64, 5)
    ctx = _int8(s, g, x)
    return fg, g, ctx, x


def test_weights_and_biases_follow_the_int8_spec(mnv3) -> None:
    _, g, ctx, _ = mnv3
    lowered = ctx.results["quantize_int8"]["float_graph"]
    axes = {OpKind.CONV2D: 0, OpKind.DEPTHWISE_CONV2D: 3, OpKind.DENSE: 0}
    seen = set()
    for op in g.ops:
        if op.kind not in axes:
            continue
        seen.add(op.kind)
        fop = next(o for o in lowered.ops if o.name == op.name)
        w, qw = lowered.tensors[fop.inputs[1]].data, g.tensors[op.inputs[1]]
        ax = axes[op.kind]
        mx = np.moveaxis(np.abs(w), ax, 0).reshape(w.shape[ax], -1).max(axis=1)
        assert qw.dtype == DType.INT8 and qw.quant.axis == ax and not qw.quant.zero_point.any()
        np.testing.assert_array_equal(qw.quant.scale, (mx / np.float32(127)).astype(np.float32))
        shape = [1] * 4 if op.kind != OpKind.DENSE else [1, 1]
        shape[ax] = -1
        np.testing.assert_array_equal(qw.data, np.clip(np.round(w / qw.quant.scale.reshape(shape)), -127, 127))
        assert np.abs(qw.data).max() == 127
        if len(op.inputs) > 2:
            b, qb = lowered.tensors[fop.inputs[2]].data, g.tensors[op.inputs[2]]
            want = (np.float32(g.tensors[op.inputs[0]].quant.scale[0]) * qw.quant.scale).astype(np.float32)
            assert qb.dtype == DType.INT32 and qb.quant.axis == 0
            np.testing.assert_array_equal(qb.quant.scale, want)
            np.testing.assert_allclose(qb.data * want, b, atol=want.max())
    assert seen == set(axes)


def test_activation_parameters(mnv3) -> None:
    _, g, ctx, _ = mnv3
    ranges = ctx.results["calibrate"]["ranges"]
    shared = set()
    for op in g.ops:
        if op.kind in qz.SHARED_KINDS:
            for t in op.inputs:
                assert g.tensors[t].quant.equals(g.tensors[op.outputs[0]].quant), op.name
                shared.update((t, op.outputs[0]))
    gap = [o for o in g.ops if o.kind == OpKind.GLOBAL_AVG_POOL]  # own output parameters: TFLite's MEAN
    assert gap and all(o.attrs["requantize"] != g.tensors[o.inputs[0]].quant.equals(g.tensors[o.outputs[0]].quant)
                       for o in gap)
    assert any(o.attrs["requantize"] for o in gap)
    assert any(o.kind == OpKind.HARD_SWISH for o in g.ops)
    checked = 0
    for t in g.activations():
        ten = g.tensors[t]
        if ten.dtype != DType.INT8 or t in shared or t not in ranges:
            continue
        s, zp = choose_activation_params(*ranges[t])
        assert (float(ten.quant.scale[0]), int(ten.quant.zero_point[0])) == (np.float32(s), zp), t
        checked += 1
    assert checked > 20
    for op in g.ops:  # constant operands of add/mul: own per-tensor asymmetric parameters
        if op.kind in (OpKind.ADD, OpKind.MUL):
            for t in op.inputs:
                c = g.tensors[t]
                if c.is_const:
                    assert c.dtype == DType.INT8 and c.quant.axis is None
    kinds = [o.kind for o in g.ops]
    assert kinds[0] == OpKind.QUANTIZE and kinds[-2:] == [OpKind.DEQUANTIZE, OpKind.SOFTMAX]
    assert g.tensors[g.inputs[0]].dtype == DType.FLOAT32 and g.tensors[g.outputs[0]].dtype == DType.FLOAT32


def test_constant_operand_quantization(session) -> None:
    g = Graph("c")
    g.add_input("x", (1, 4, 4, 3))
    c = g.add_const("c", np.array([0.5, -1.5, 2.0], np.float32))
    g.add_op("mul", ["x", c.name], "m")
    g.outputs = ["m"]
    _int8(session, g, np.random.default_rng(0).normal(size=(8, 4, 4, 3)).astype(np.float32))
    qc = g.tensors[g.ops[1].inputs[1]]
    s, zp = choose_activation_params(-1.5, 2.0)
    assert qc.quant.axis is None and float(qc.quant.scale[0]) == np.float32(s) and qc.quant.zero_point[0] == zp
    np.testing.assert_array_equal(qc.data, quantize(np.array([0.5, -1.5, 2.0], np.float32), s, zp))


def _sigmoid_graph(concat: bool) -> Graph:
    g = Graph("s")
    g.add_input("x", (1, 4))
    g.add_op("sigmoid", ["x"], "sig")
    g.add_op("tanh", ["x"], "th")
    g.add_op("reshape", ["th"], "th2", {"shape": (2, 2)})
    g.outputs = ["sig", "th2"]
    if concat:
        g.add_op("concat", ["sig", "x"], "cat", {"axis": 1})
        g.outputs = ["cat"]
    return g


def test_fixed_output_parameters() -> None:
    g = _sigmoid_graph(False)
    ranges = {"x": (-3.0, 3.0), "sig": (0.05, 0.95), "th": (-0.99, 0.99)}
    p = qz.activation_params(g, ranges)
    assert (float(p["sig"].scale[0]), int(p["sig"].zero_point[0])) == (1 / 256, -128)
    assert (float(p["th"].scale[0]), int(p["th"].zero_point[0])) == (1 / 128, 0)
    assert p["th2"].equals(p["th"])  # a reshape after a fixed-parameter op inherits them
    g = _sigmoid_graph(True)
    with pytest.raises(UnsupportedLayerError, match="layer 'sig': its sigmoid output has fixed int8 parameters "
                                                    "but must share them with tensor 'x'.*requantize"):
        qz.activation_params(g, {**ranges, "cat": (-3.0, 3.0)})


def test_int8_io_and_dense_per_tensor_options(session) -> None:
    g = session.registry.frontend_for(str(EXAMPLE)).load(str(EXAMPLE))  # no cleanup: a conv without bias
    assert any(o.kind == OpKind.CONV2D and len(o.inputs) == 2 for o in g.ops)
    g.outputs = [g.ops[-1].inputs[0]]  # drop the softmax: int8 logits out
    g.ops.pop()
    g.prune_unused()
    d = np.load(DIGITS)
    ctx = _int8(session, g, d["x_train"][:200], int8_io=True, dense_per_tensor=True)
    assert g.tensors[g.inputs[0]].dtype == DType.INT8 and g.tensors[g.outputs[0]].dtype == DType.INT8
    assert not {o.kind for o in g.ops} & {OpKind.QUANTIZE, OpKind.DEQUANTIZE}
    dense = [o for o in g.ops if o.kind == OpKind.DENSE]
    assert dense and all(g.tensors[o.inputs[1]].quant.axis is None for o in dense)
    fg = ctx.results["quantize_int8"]["float_graph"]
    assert all(t.dtype == DType.FLOAT32 for t in fg.tensors.values())
    # per-tensor FULLY_CONNECTED is bit-exact in both runtimes (they round differently: see interpreter flavors)
    from tflite_micro.python.tflite_micro import runtime

    from tinycc.tflite_writer import write_tflite

    q = g.tensors[g.inputs[0]].quant
    x = quantize(np.concatenate([d["x_test"][:100], np.random.default_rng(2).uniform(0, 16, (100, 8, 8, 1))]),
                 float(q.scale[0]), int(q.zero_point[0]))
    data = write_tflite(g)
    it = litert.Interpreter(model_content=data, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    tm = runtime.Interpreter.from_bytes(data, arena_size=64 * 1024)
    ref, micro = run_int8(g, x, flavor="tflite")[g.outputs[0]], run_int8(g, x)[g.outputs[0]]
    for i in range(len(x)):
        it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1])
        it.invoke()
        tm.set_input(x[i:i + 1], 0)
        tm.invoke()
        np.testing.assert_array_equal(it.get_tensor(it.get_output_details()[0]["index"]), ref[i:i + 1])
        np.testing.assert_array_equal(tm.get_output(0), micro[i:i + 1])


def _cli_quantize_and_compare(capsys, tmp_path: Path, model_path: Path, calib: Path, x: np.ndarray,
                              *extra: str) -> Graph:
    """``tinycc quantize --int8-io`` of ``model_path``: the file's output equals run_int8 (BUILTIN_REF flavour)
    and TFLite Micro (its flavour) on ``x`` (float samples, quantized with the file's input parameters)."""
    from tflite_micro.python.tflite_micro import runtime

    from tinycc.plugins.frontends.tflite import read_tflite

    out = tmp_path / "m.tflite"
    code, _, err = _cli(capsys, "quantize", str(model_path), "--calib", str(calib), "--int8-io", *extra,
                        "-o", str(out))
    assert code == 0, err
    data = out.read_bytes()
    g = read_tflite(str(out))
    q = g.tensors[g.inputs[0]].quant
    xq = quantize(x, float(q.scale[0]), int(q.zero_point[0]))
    it = litert.Interpreter(model_content=data, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    tm = runtime.Interpreter.from_bytes(data, arena_size=256 * 1024)
    ref, micro = run_int8(g, xq, flavor="tflite")[g.outputs[0]], run_int8(g, xq)[g.outputs[0]]
    for i in range(len(xq)):
        it.set_tensor(it.get_input_details()[0]["index"], xq[i:i + 1])
        it.invoke()
        tm.set_input(xq[i:i + 1], 0)
        tm.invoke()
        np.testing.assert_array_equal(it.get_tensor(it.get_output_details()[0]["index"]), ref[i:i + 1])
        np.testing.assert_array_equal(tm.get_output(0), micro[i:i + 1])
    return g


def test_int8_io_softmax_classifier_is_tflite_int8_softmax(capsys, tmp_path: Path) -> None:
    """--int8-io on a model ending in softmax: TFLite's int8 SOFTMAX (1/256, -128), bit-exact in both runtimes."""
    from tinycc.tflite_writer import operator_versions

    d = np.load(DIGITS)
    np.save(tmp_path / "calib.npy", d["x_train"][:200])
    x = np.concatenate([d["x_test"][:100], np.random.default_rng(2).uniform(0, 16, (100, 8, 8, 1))])
    g = _cli_quantize_and_compare(capsys, tmp_path, EXAMPLE, tmp_path / "calib.npy", x.astype(np.float32))
    sm = g.ops[-1]
    assert sm.kind == OpKind.SOFTMAX and g.tensors[sm.inputs[0]].dtype == DType.INT8
    out = g.tensors[g.outputs[0]]
    assert out.dtype == DType.INT8 and (float(out.quant.scale[0]), int(out.quant.zero_point[0])) == (1 / 256, -128)
    assert dict(operator_versions((tmp_path / "m.tflite").read_bytes()))["SOFTMAX"] == 2
    probs = run_int8(g, quantize(x, float(g.tensors[g.inputs[0]].quant.scale[0]),
                                 int(g.tensors[g.inputs[0]].quant.zero_point[0])), flavor="tflite")[g.outputs[0]]
    assert len(np.unique(probs)) > 8  # not saturated: real probabilities


def test_softmax_inside_the_graph_is_int8(capsys, session, tmp_path: Path) -> None:
    """A softmax that is not the final layer is quantized too (TFLite's fixed output parameters)."""
    model = _mid_softmax_model()
    g = _cleaned(session, model)
    _int8(session, g, sample_input(model, 64))
    sm = next(o for o in g.ops if o.kind == OpKind.SOFTMAX)
    assert g.tensors[sm.inputs[0]].dtype == DType.INT8
    assert float(g.tensors[sm.outputs[0]].quant.scale[0]) == 1 / 256
    path = save_model(model, tmp_path, "keras")
    np.save(tmp_path / "calib.npy", sample_input(model, 64))
    _cli_quantize_and_compare(capsys, tmp_path, path, tmp_path / "calib.npy", sample_input(model, 50, 3))


def test_unsupported_op_fails_before_calibration(session, monkeypatch) -> None:
    monkeypatch.setattr(qz, "INT8_KINDS", qz.INT8_KINDS - {OpKind.SOFTMAX})  # as if int8 had no softmax kernel
    g = Graph("u")
    g.add_input("x", (1, 4))
    g.add_op("softmax", ["x"], "sm", origin="my_softmax")
    g.add_op("relu", ["sm"], "r", origin="after")
    g.outputs = ["r"]
    ctx = PassContext(session=session, calib=np.zeros((2, 4), np.float32))
    with pytest.raises(UnsupportedLayerError, match="layer 'my_softmax' \\(softmax\\) has no int8 kernel"):
        run_pipeline(g, session.registry.pipeline("int8"), ctx)
    assert "calibrate" not in ctx.results
    with pytest.raises(TinyccError, match="needs the calibrate pass"):
        run_pipeline(g, ["quantize_int8"], PassContext(session=session))


# ---- report --------------------------------------------------------------------------
def test_report_clipping_sqnr_and_accuracy(session) -> None:
    assert sqnr_db(np.ones(10), np.ones(10)) == float("inf")
    assert sqnr_db(np.ones(100), np.full(100, 1.1)) == pytest.approx(20.0)
    d = np.load(DIGITS)
    g = session.registry.frontend_for(str(EXAMPLE)).load(str(EXAMPLE))
    ctx = _int8(session, g, d["x_train"][:300])
    fg = ctx.results["quantize_int8"]["float_graph"]
    rep = build_report(fg, g, ctx.results["calibrate"]["samples"], d["x_test"], d["y_test"])
    assert len(rep.tensors) >= 5 and rep.samples == 300 and rep.eval_samples == 397
    assert all(t.clipped == 0.0 for t in rep.tensors)  # min/max ranges never saturate on their own data
    assert all(t.sqnr_db > 25 for t in rep.tensors) and rep.output_sqnr_db > 25
    assert rep.float_accuracy > 0.9 and abs(rep.float_accuracy - rep.int8_accuracy) < 0.03
    js = json.loads(json.dumps(rep.to_dict()))
    assert js["tensors"][0]["tensor"] == rep.tensors[0].tensor and "int8_accuracy" in js
    assert "SQNR" in rep.render() and "accuracy on 397 samples" in rep.render()
    # a percentile range clips the rare outlier it was made to ignore
    x = d["x_train"][:300].copy()
    x[0, 0, 0, 0] = 400.0
    g2 = session.registry.frontend_for(str(EXAMPLE)).load(str(EXAMPLE))
    ctx2 = _int8(session, g2, x, observer="percentile")
    rep2 = build_report(ctx2.results["quantize_int8"]["float_graph"], g2, ctx2.results["calibrate"]["samples"])
    inp = next(t for t in rep2.tensors if t.op == "quantize")
    assert 0 < inp.clipped <= 2 / x.size and rep2.float_accuracy is None


# ---- accuracy and parameters against the TFLite converter --------------------------
@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")
def test_accuracy_and_parameters_match_the_tflite_converter(session) -> None:
    import keras
    import tensorflow as tf
    from sklearn.datasets import load_digits

    from tinycc.tflite_schema import schema
    from tinycc.tflite_writer import operator_versions, write_tflite

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    x, y = digits.images.astype(np.float32)[order, ..., None], digits.target[order]
    xtr, ytr, xte, yte = x[:1400], y[:1400], x[1400:], y[1400:]
    keras.utils.set_random_seed(0)
    L = keras.layers
    m = keras.Sequential([keras.Input((8, 8, 1)), L.Rescaling(1 / 16, name="rs"),
                          L.Conv2D(8, 3, padding="same", activation="relu", name="c1"), L.MaxPooling2D(2, name="p1"),
                          L.Conv2D(16, 3, activation="relu", name="c2"), L.Flatten(name="f"),
                          L.Dense(10, activation="softmax", name="out")])
    m.compile(keras.optimizers.Adam(5e-3), "sparse_categorical_crossentropy")
    m.fit(xtr, ytr, epochs=8, batch_size=32, verbose=0)
    calib = xtr[:200]
    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    ref_model = conv.convert()

    def accuracy(model: bytes) -> float:
        it = litert.Interpreter(model_content=model, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
        it.allocate_tensors()
        pred = []
        for i in range(len(xte)):
            it.set_tensor(it.get_input_details()[0]["index"], xte[i:i + 1])
            it.invoke()
            pred.append(int(it.get_tensor(it.get_output_details()[0]["index"]).argmax()))
        return float(np.mean(np.array(pred) == yte))

    g = _cleaned(session, m)
    _int8(session, g, calib)
    ours_model = write_tflite(g)
    float_acc = float(np.mean(m.predict(xte, verbose=0).argmax(1) == yte))
    conv_acc, ours_acc = accuracy(ref_model), accuracy(ours_model)
    print(f"float {float_acc:.4f}  TFLite converter int8 {conv_acc:.4f}  tinycc int8 {ours_acc:.4f}")
    assert float_acc > 0.9
    assert float_acc - ours_acc <= float_acc - conv_acc + 0.005
    # same activation parameters and int8 weights as the converter, op by op
    mref = schema().ModelT.InitFromPackedBuf(ref_model, 0)
    sub = mref.subgraphs[0]
    names = {v: k for k, v in vars(schema().BuiltinOperator).items() if not k.startswith("_")}
    ref_ops = [(names[max(mref.operatorCodes[o.opcodeIndex].builtinCode,
                          mref.operatorCodes[o.opcodeIndex].deprecatedBuiltinCode)], o) for o in sub.operators]
    want = {"QUANTIZE": OpKind.QUANTIZE, "CONV_2D": OpKind.CONV2D, "MAX_POOL_2D": OpKind.MAX_POOL2D,
            "FULLY_CONNECTED": OpKind.DENSE}
    ref_seq = [(want[n], o) for n, o in ref_ops if n in want]
    our_seq = [o for o in g.ops if o.kind in want.values()]
    assert [k for k, _ in ref_seq] == [o.kind for o in our_seq]
    for (kind, ro), op in zip(ref_seq, our_seq):
        rq, oq = sub.tensors[ro.outputs[0]].quantization, g.tensors[op.outputs[0]].quant
        assert float(oq.scale[0]) == pytest.approx(float(rq.scale[0]), rel=1e-5) and oq.zero_point[0] == rq.zeroPoint[0]
        if kind in (OpKind.CONV2D, OpKind.DENSE):
            rw = sub.tensors[ro.inputs[1]]
            ref_w = np.frombuffer(bytes(mref.buffers[rw.buffer].data), np.int8).reshape(rw.shape)
            np.testing.assert_array_equal(g.tensors[op.inputs[1]].data, ref_w, err_msg=op.name)
            rb = sub.tensors[ro.inputs[2]]
            ref_b = np.frombuffer(bytes(mref.buffers[rb.buffer].data), np.int32)
            np.testing.assert_array_equal(g.tensors[op.inputs[2]].data, ref_b, err_msg=op.name)
            np.testing.assert_allclose(g.tensors[op.inputs[1]].quant.scale, rw.quantization.scale, rtol=1e-6)
    ref_versions = dict(operator_versions(ref_model))
    for name, version in operator_versions(ours_model):
        if name in ref_versions and name != "SOFTMAX":  # our softmax is float (after DEQUANTIZE)
            assert version == ref_versions[name], name


# ---- CLI -----------------------------------------------------------------------------
def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from tinycc.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_quantize_writes_model_and_report(capsys, tmp_path: Path) -> None:
    out, rep = tmp_path / "sub" / "m.tflite", tmp_path / "r.json"
    code, stdout, err = _cli(capsys, "quantize", str(EXAMPLE), "--calib", str(DIGITS), "--eval", str(DIGITS),
                             "-o", str(out), "--report", str(rep))
    assert code == 0, err
    assert f"wrote {out}" in stdout and "accuracy on 397 samples" in stdout
    data = json.loads(rep.read_text())
    assert data["samples"] == 1000 and data["int8_accuracy"] > 0.9 and data["tensors"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.tflite"]  # no temporary files left
    it = litert.Interpreter(model_path=str(out), experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    assert it.get_input_details()[0]["dtype"] == np.float32 and out.stat().st_mode & 0o044


def _bad_npz(tmp_path: Path, kind: str) -> Path:
    x = {"empty": np.zeros((0, 8, 8, 1), np.float32), "nan": np.full((4, 8, 8, 1), np.nan, np.float32),
         "shape": np.zeros((4, 9, 9, 1), np.float32), "dtype": np.array([["a"] * 64] * 3)}[kind]
    path = tmp_path / f"{kind}.npz"
    np.savez(path, x=x)
    return path


@pytest.mark.parametrize("kind,words", [("empty", ["empty"]), ("nan", ["256 NaN/Inf values in 4 of 4", "sample 0"]),
                                        ("shape", ["(9, 9, 1)", "expects (8, 8, 1)"]), ("dtype", ["not numeric"])])
def test_cli_bad_calibration_data_writes_nothing(capsys, tmp_path: Path, kind: str, words: list[str]) -> None:
    out = tmp_path / "m.tflite"
    code, _, err = _cli(capsys, "quantize", str(EXAMPLE), "--calib", str(_bad_npz(tmp_path, kind)), "-o", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1 and all(w in err for w in words), err
    assert not out.exists() and not list(tmp_path.glob(".m.tflite*"))


def _mid_softmax_model():
    import tensorflow as tf
    x = tf.keras.Input((6,), name="x")
    h = tf.keras.layers.Dense(8, name="d1")(x)
    h = tf.keras.layers.Softmax(name="attn")(h)  # not the final layer: an int8 SOFTMAX
    return tf.keras.Model(x, tf.keras.layers.Dense(3, name="d2")(h))


@pytest.mark.parametrize("zoo_name", ["mid_softmax", "grouped_conv"])
def test_cli_unsupported_layers_write_nothing(capsys, session, tmp_path: Path, zoo_name: str, monkeypatch) -> None:
    if zoo_name == "mid_softmax":  # as if int8 had no softmax kernel
        monkeypatch.setattr(qz, "INT8_KINDS", qz.INT8_KINDS - {OpKind.SOFTMAX})
    model = _mid_softmax_model() if zoo_name == "mid_softmax" else build(zoo_name)
    g = _cleaned(session, model)
    qz.lower_for_int8(g)
    bad = qz.int8_unsupported(g)  # grouped_conv: TFLite has no grouped convolution, reported by the writer
    words = [f"layer '{bad[0].origin}' ({bad[0].kind.value}) has no int8 kernel"] if bad else \
        ["layer 'g4': grouped convolution (4 groups)"]
    assert [o.origin for o in bad] == (["attn"] if zoo_name == "mid_softmax" else [])
    path = save_model(model, tmp_path, "keras")
    np.save(tmp_path / "calib.npy", sample_input(model, 16))
    out = tmp_path / "m.tflite"
    code, _, err = _cli(capsys, "quantize", str(path), "--calib", str(tmp_path / "calib.npy"), "-o", str(out))
    assert code == 2 and all(w in err for w in words), err
    assert not out.exists()


def test_cli_usage_errors(capsys, tmp_path: Path) -> None:
    code, _, err = _cli(capsys, "quantize", str(tmp_path / "none.h5"), "--calib", str(DIGITS), "-o", "x.tflite")
    assert code == 2 and "no such file" in err
    code, _, err = _cli(capsys, "quantize", str(EXAMPLE), "--calib", str(DIGITS), "-o", str(tmp_path))
    assert code == 2 and "is a folder" in err
    code, _, err = _cli(capsys, "quantize", str(EXAMPLE), "--calib", "nosuch:1", "-o", str(tmp_path / "a.tflite"))
    assert code == 2 and "no calibration source" in err and not (tmp_path / "a.tflite").exists()


def test_cli_error_is_one_line_in_a_real_process(tmp_path: Path) -> None:
    out = tmp_path / "m.tflite"
    r = subprocess.run([sys.executable, "-m", "tinycc.cli", "quantize", str(EXAMPLE), "--calib",
                        str(_bad_npz(tmp_path, "nan")), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert [line for line in r.stderr.splitlines() if line.strip()] == [
        "tinycc: error: calibration data: 256 NaN/Inf values in 4 of 4 samples (first in sample 0)"]
    assert not out.exists()
