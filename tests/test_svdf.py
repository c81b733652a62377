"""SVDF (TFLite's builtin 27) end to end: the int8 core of TFLite Micro's published keyword_scrambled model and
random-parameter SVDF files written by tinycc's TFLite writer run bit-exactly like run_int8 in TFLite's BUILTIN_REF
interpreter and TFLite Micro over consecutive invokes (the state persists; tinycc's rows are those invokes, from a
zero state); the float op equals TFLite's float kernel; unsupported variants are refused in one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.errors import UnsupportedLayerError
from tinycc.ir.graph import Graph
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.tensor import DType, QuantParams
from tinycc.plugins.frontends.tflite import read_tflite
from tinycc.tflite_writer import operator_names, write_tflite

litert = pytest.importorskip("ai_edge_litert.interpreter")
DATA = Path(__file__).parent / "data" / "tflm-svdf"
SVDF_OUTS = [5, 13, 21, 29, 37, 42, 47, 50]  # every SVDF output of keyword_scrambled, then the last FC's


def keyword_core(tmp_path: Path, outputs: list[int] = SVDF_OUTS) -> Path:
    """keyword_scrambled.tflite without its int16 input QUANTIZE and int16 SOFTMAX -> int32 QUANTIZE tail (which
    tinycc does not read): int8 input tensor 0, every SVDF output and the last FULLY_CONNECTED's as outputs."""
    import flatbuffers

    from tinycc.tflite_schema import schema

    m = schema().ModelT.InitFromPackedBuf((DATA / "keyword_scrambled.tflite").read_bytes(), 0)
    sg = m.subgraphs[0]
    sg.operators = sg.operators[1:-2]
    sg.inputs = np.array([0], np.int32)
    sg.outputs = np.array(outputs, np.int32)
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    path = tmp_path / f"keyword_core{len(outputs)}.tflite"
    path.write_bytes(bytes(b.Output()))
    return path


def stream_builtin_ref(data: bytes, x: np.ndarray) -> list[np.ndarray]:
    """TFLite's reference kernels, one row of ``x`` per Invoke without a reset between them; every output."""
    it = litert.Interpreter(model_content=data, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    outs: list[list[np.ndarray]] = [[] for _ in it.get_output_details()]
    for i in range(len(x)):
        it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1])
        it.invoke()
        for k, d in enumerate(it.get_output_details()):
            outs[k].append(it.get_tensor(d["index"]))
    return [np.concatenate(o) for o in outs]


def stream_tflm(data: bytes, x: np.ndarray, n_out: int) -> list[np.ndarray]:
    """TFLite Micro's Python interpreter, one row per Invoke without a reset between them; every output."""
    from tflite_micro.python.tflite_micro import runtime

    m = runtime.Interpreter.from_bytes(data)
    outs: list[list[np.ndarray]] = [[] for _ in range(n_out)]
    for i in range(len(x)):
        m.set_input(x[i:i + 1], 0)
        m.invoke()
        for k in range(n_out):
            outs[k].append(m.get_output(k))
    return [np.concatenate(o) for o in outs]


def random_svdf(seed: int, rank: int, bias: bool, integer: bool, feats: int = 11, units: int = 5,
                memory: int = 6) -> Graph:
    """One SVDF layer with random weights (int8: random scales chosen so that neither requantization saturates)."""
    r = np.random.default_rng(seed)
    filters = units * rank
    g = Graph("svdf")
    g.add_input("x", (1, feats), DType.INT8 if integer else DType.FLOAT32)
    if not integer:
        g.add_const("wf", r.normal(0, 0.5, (filters, feats)).astype(np.float32), DType.FLOAT32)
        g.add_const("wt", r.normal(0, 0.5, (filters, memory)).astype(np.float32), DType.FLOAT32)
        ins = ["x", "wf", "wt"]
        if bias:
            g.add_const("b", r.normal(0, 0.5, units).astype(np.float32), DType.FLOAT32)
            ins.append("b")
        op = g.add_op("svdf", ins, "svdf", {"rank": rank, "activation": ("none", "relu", "relu6")[seed % 3]})
        g.outputs = [op.outputs[0]]
        return g
    in_s, wf_s, wt_s = (float(r.uniform(0.005, 0.05)) for _ in range(3))
    g.tensors["x"].quant = QuantParams([in_s], [int(r.integers(-20, 20))])
    g.meta["quantized"] = True
    state_s = in_s * wf_s * 127 * 64 * np.sqrt(feats) / 6000.0
    z = np.zeros(1, np.int64)
    g.add_const("wf", r.integers(-127, 128, (filters, feats)).astype(np.int8), DType.INT8, QuantParams([wf_s], z))
    g.add_const("wt", r.integers(-32767, 32768, (filters, memory)).astype(np.int16), DType.INT16,
                QuantParams([wt_s], z))
    ins = ["x", "wf", "wt"]
    if bias:
        bs = float(np.float32(np.float32(state_s) * np.float32(wt_s)))
        g.add_const("b", r.integers(-20000000, 20000000, units).astype(np.int32), DType.INT32, QuantParams([bs], z))
        ins.append("b")
    op = g.add_op("svdf", ins, "svdf", {"rank": rank, "activation": "relu", "state_scale": float(state_s)})
    out_s = state_s * wt_s * 6000 * 18000 * np.sqrt(memory * rank) / 40.0
    g.tensors[op.outputs[0]].quant = QuantParams([float(out_s)], [int(r.integers(-10, 10))])
    g.outputs = [op.outputs[0]]
    return g


def test_published_keyword_model_core_equals_builtin_ref_and_tflm(tmp_path: Path) -> None:
    pytest.importorskip("tflite_micro")
    path = keyword_core(tmp_path)
    g = read_tflite(str(path))
    assert [o.kind.value for o in g.ops].count("svdf") == 7 and len(g.outputs) == len(SVDF_OUTS)
    x = np.random.default_rng(0).integers(-128, 128, (12, 96)).astype(np.int8)  # 12 consecutive frames
    ours = run_int8(g, {g.inputs[0]: x})
    data = path.read_bytes()
    for name, ref, micro in zip(g.outputs, stream_builtin_ref(data, x), stream_tflm(data, x, len(g.outputs))):
        np.testing.assert_array_equal(ours[name], ref.reshape(ours[name].shape), err_msg=f"BUILTIN_REF {name}")
        np.testing.assert_array_equal(ours[name], micro.reshape(ours[name].shape), err_msg=f"TFLM {name}")
    assert len(np.unique(ours[g.outputs[0]])) > 2  # the first SVDF's output moves over the frames


@pytest.mark.parametrize("seed,rank,bias", [(0, 1, True), (1, 2, True), (2, 3, False), (3, 1, False)])
def test_random_int8_svdf_bit_exact_with_builtin_ref_and_tflm(seed: int, rank: int, bias: bool) -> None:
    pytest.importorskip("tflite_micro")
    g = random_svdf(seed, rank, bias, integer=True)
    data = write_tflite(g)
    assert "SVDF" in operator_names(data)
    x = np.random.default_rng(100 + seed).integers(-128, 128, (15, 11)).astype(np.int8)  # 15 invokes > memory 6
    ours = run_int8(g, {"x": x})[g.outputs[0]]
    assert len(np.unique(ours)) > 8  # neither saturated nor constant
    np.testing.assert_array_equal(ours, stream_builtin_ref(data, x)[0])
    np.testing.assert_array_equal(ours, stream_tflm(data, x, 1)[0])
    back = read_tflite_bytes(data, "svdf.tflite")  # the written file reads back to the same op
    np.testing.assert_array_equal(run_int8(back, {back.inputs[0]: x})[back.outputs[0]], ours)


def read_tflite_bytes(data: bytes, name: str) -> Graph:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(data)
        return read_tflite(str(p))


@pytest.mark.parametrize("seed,rank,bias", [(0, 1, True), (1, 2, False), (2, 2, True)])
def test_float_svdf_equals_tflite_float_kernel(seed: int, rank: int, bias: bool) -> None:
    g = random_svdf(seed, rank, bias, integer=False)
    data = write_tflite(g)
    x = np.random.default_rng(7 + seed).normal(0, 1, (10, 11)).astype(np.float32)
    ours = run(g, {"x": x})[g.outputs[0]]
    ref = stream_builtin_ref(data, x)[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    assert np.abs(ref).max() > 0.5
    back = read_tflite_bytes(data, "svdf_float.tflite")
    np.testing.assert_allclose(run(back, {back.inputs[0]: x})[back.outputs[0]], ours, rtol=1e-6, atol=1e-6)


def test_int8_state_svdf_is_refused_in_one_line() -> None:
    with pytest.raises(UnsupportedLayerError) as e:
        read_tflite(str(DATA / "keyword_scrambled_8bit.tflite"))
    msg = str(e.value)
    assert "SVDF" in msg and "int16" in msg and "\n" not in msg


def c_outputs(session, g: Graph, x: np.ndarray, outdir: Path, qemu: bool = False) -> tuple[np.ndarray, np.ndarray,
                                                                                          object]:
    """The generated C (inference-only; host with ASan/UBSan, or ``qemu``: Cortex-M4 under QEMU) on the rows of
    int8 ``x`` as consecutive calls of one program (float vectors that quantize back to exactly those integers),
    against run_int8 of the emitted graph; the third value: the deployment (host) or the demo's output (QEMU)."""
    from tinycc.backends.c import CBackend
    from tinycc.deploy.inference import full_graph

    from . import c_harness
    from .deploy_util import build_inference, render_project

    dep = build_inference(g, {}, session, CBackend())
    fg = full_graph(dep)
    q = g.tensors[g.inputs[0]].quant
    xf = ((x.astype(np.float32) - int(q.zero_point[0])) * np.float32(q.scale[0])).astype(np.float32)
    render_project(dep, {"test_vectors": (xf, None), "test_count": len(x)}, outdir)
    if qemu:
        out, _ = c_harness.build_and_run_qemu(outdir, "m4")
    else:
        out = c_harness.run_host(c_harness.build_host(outdir, sanitize=True))
    want = run_int8(fg, {fg.inputs[0]: xf})
    want = np.concatenate([np.asarray(want[o], np.float32).reshape(len(x), -1) for o in fg.outputs], axis=1)
    got = np.stack([np.asarray(out.outputs[i], np.float32).reshape(-1) for i in range(len(x))])
    return got, want, (out if qemu else dep)


def test_keyword_model_core_c_equals_run_int8(session, tmp_path: Path) -> None:
    """Seven SVDF layers in C: the state persists over 10 calls (frames) and equals run_int8 on every output; the
    memory report counts each layer's int16 state."""
    g = read_tflite(str(keyword_core(tmp_path)))
    x = np.random.default_rng(1).integers(-128, 128, (10, 96)).astype(np.int8)
    got, want, dep = c_outputs(session, g, x, tmp_path / "c")
    np.testing.assert_array_equal(got, want)
    src = (tmp_path / "c" / "model.c").read_text()
    state = sum(2 * g.tensors[o.inputs[2]].size for o in g.ops if o.kind.value == "svdf")
    assert state == 2 * (4 * 64 * 8 + 32 * 32 * 3)
    assert f"runtime state {state:,}".replace(" ", "") in dep.memory["report"].replace(" ", ""), dep.memory["report"]
    assert src.count("_reset();") == 7 and "_reset_state(void)" in src  # one state per layer, one reset API


@pytest.mark.parametrize("seed,rank,bias", [(4, 1, True), (5, 2, False), (6, 3, True)])
def test_random_int8_svdf_c_equals_run_int8(session, tmp_path: Path, seed: int, rank: int, bias: bool) -> None:
    g = random_svdf(seed, rank, bias, integer=True)
    x = np.random.default_rng(seed).integers(-128, 128, (14, 11)).astype(np.int8)
    got, want, _ = c_outputs(session, g, x, tmp_path / "c")
    assert len(np.unique(want)) > 8
    np.testing.assert_array_equal(got, want)


@pytest.mark.timeout(1800)  # may build TFLite Micro first (about 460 s of CPU, cached in ~/.cache/tinycc)
def test_keyword_model_core_tflm_project_equals_run_int8(session, tmp_path: Path) -> None:
    """The tflm target (inference only): TFLite Micro's own SVDF kernel keeps its state between the demo's calls
    (no Reset() before each, a `_reset_state()` after the timed call) and gives run_int8's outputs frame by frame."""
    from tinycc.backends.tflm import TflmBackend, build, vendor
    from tinycc.deploy.inference import full_graph

    from . import c_harness
    from .deploy_util import build_inference, emit

    vendor_dir = vendor.default_vendor_dir()
    if vendor_dir is None or vendor.missing_toolchain("host"):
        pytest.skip("TensorFlow Lite Micro snapshot or host toolchain not found (../shared/vendor; TINYCC_VENDOR)")
    library = vendor.ensure_library(vendor_dir, "host")
    g = read_tflite(str(keyword_core(tmp_path)))
    dep = build_inference(g, {}, session, TflmBackend())
    TflmBackend().check(dep)
    x = np.random.default_rng(2).integers(-128, 128, (10, 96)).astype(np.int8)
    q = g.tensors[g.inputs[0]].quant
    xf = ((x.astype(np.float32) - int(q.zero_point[0])) * np.float32(q.scale[0])).astype(np.float32)
    emit(TflmBackend(), dep, {"test_vectors": (xf, None), "test_count": len(x)}, tmp_path / "p")
    glue = (tmp_path / "p" / "src" / "tinycc_tflm.cc").read_text()
    assert "AddSvdf" in glue and "_tflm_reset_state" in glue
    out = c_harness.parse(build.run(build.build_host(tmp_path / "p", sanitize=True, library=library)))
    fg = full_graph(dep)
    want = run_int8(fg, {fg.inputs[0]: xf})
    want = np.concatenate([np.asarray(want[o], np.float32).reshape(len(x), -1) for o in fg.outputs], axis=1)
    got = np.stack([np.asarray(out.outputs[i], np.float32).reshape(-1) for i in range(len(x))])
    np.testing.assert_array_equal(got, want)


def test_keyword_model_core_under_qemu_m4(session, tmp_path: Path) -> None:
    """The same seven SVDF layers on a Cortex-M4 (QEMU): bit-exact with run_int8 over 4 consecutive frames."""
    from . import c_harness

    if not c_harness.have_arm():
        pytest.skip("arm-none-eabi-gcc or qemu-system-arm not installed")
    g = read_tflite(str(keyword_core(tmp_path)))
    x = np.random.default_rng(3).integers(-128, 128, (4, 96)).astype(np.int8)
    got, want, out = c_outputs(session, g, x, tmp_path / "c", qemu=True)
    np.testing.assert_array_equal(got, want)
    assert out.instructions.get("invoke", 0) > 0
    print("instructions per invoke (QEMU M4):", out.instructions)


def test_arduino_inference_sketch_streams_like_run_int8(session, tmp_path: Path) -> None:
    """The arduino target (the same generated C, 16-bit int): the Mega 2560 sketch built by arduino-builder runs in
    simavr and its outputs over 6 consecutive frames equal run_int8."""
    from tinycc.backends.arduino import ArduinoBackend
    from tinycc.backends.demo import parse
    from tinycc.deploy.inference import full_graph

    from . import arduino_harness
    from .deploy_util import build_inference, emit

    if not arduino_harness.available():
        pytest.skip("arduino-builder/simavr/avr-gcc not installed")
    g = random_svdf(8, 2, True, integer=True)
    dep = build_inference(g, {"board": "mega2560"}, session, ArduinoBackend())
    x = np.random.default_rng(8).integers(-128, 128, (6, 11)).astype(np.int8)
    q = g.tensors["x"].quant
    xf = ((x.astype(np.float32) - int(q.zero_point[0])) * np.float32(q.scale[0])).astype(np.float32)
    emit(ArduinoBackend(), dep, {"selftest": True, "test_vectors": xf, "test_count": len(x)}, tmp_path)
    elf, _, _ = arduino_harness.build(tmp_path / dep.name / f"{dep.name}.ino", tmp_path,
                                      defines=("TINYCC_DEMO_DUMP=1",))
    out = parse("\n".join(arduino_harness.run_simavr(elf)))
    fg = full_graph(dep)
    want = run_int8(fg, {fg.inputs[0]: xf})[fg.outputs[0]].reshape(len(x), -1)
    assert out.done and len(np.unique(want)) > 8
    got = np.stack([out.outputs[i] for i in range(len(x))])
    np.testing.assert_allclose(got, want, rtol=1e-6)  # the sketch prints floats with 9 digits


def test_keyword_model_learning_project_builds_and_runs_clean(session, tmp_path: Path) -> None:
    """The on-device learning project (C, ASan/UBSan) of the keyword core with its last FULLY_CONNECTED as the
    trainable head compiles with -Werror, declares `_reset_state()` and runs clean under ASan/UBSan. (Its demo calls
    the extractor several times per vector, each call a frame, so its features are not compared: a known gap.)"""
    from tinycc.backends.c import CBackend

    from . import c_harness
    from .deploy_util import build_deployment, render_project

    g = read_tflite(str(keyword_core(tmp_path, [50])))
    dep = build_deployment(g, {"buffer": 4, "lr": 0.05}, session, CBackend())
    assert [o.kind.value for o in dep.extractor.ops].count("svdf") == 7
    q = g.tensors[g.inputs[0]].quant
    x = np.random.default_rng(4).integers(-128, 128, (3, 96)).astype(np.int8)
    xf = ((x.astype(np.float32) - int(q.zero_point[0])) * np.float32(q.scale[0])).astype(np.float32)
    render_project(dep, {"test_vectors": (xf, np.array([0, 1, 0])), "test_count": 3, "test_learn": 3}, tmp_path / "c")
    assert "_reset_state(void);" in (tmp_path / "c" / "model.h").read_text()
    out = c_harness.run_host(c_harness.build_host(tmp_path / "c", sanitize=True))
    assert out.done and len(out.features) == 3


def test_float_svdf_quantization_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    """tinycc does not calibrate an SVDF's int16 state itself: compiling a float SVDF file is one line, exit 2."""
    from tinycc.cli import main

    path = tmp_path / "svdf_float.tflite"
    path.write_bytes(write_tflite(random_svdf(0, 1, True, integer=False)))
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).normal(0, 1, (8, 11)).astype(np.float32))
    rc = main(["compile", str(path), "--target", "c", "--inference-only", "--calib", str(calib), "-o",
               str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "does not quantize SVDF" in err and "\n" not in err
