"""`compile --inference-only [--int8-io]`: the whole model in int8. The generated C (ASan/UBSan) equals run_int8 of
the full int8 graph bit for bit, run_int8 equals TFLite Micro and TFLite BUILTIN_REF on the written .tflite, the
memory model equals the compiled arrays, and the CLI, budget and tflm target work."""
from __future__ import annotations

import json
import re
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from .deploy_util import config, c_arena, emit, render_project
from tinycc.backends.tflm import TflmBackend, deployment_tflite
from tinycc.backends.tflm.measure import measure_arena
from tinycc.cli import main
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.deploy import full_graph, quantize_inputs
from .deploy_util import build_inference

from . import c_harness
from .test_c_backend import _graph
from .test_tflm_model_data import embedded_bytes
from .test_heads import _graph as _head_graph, autoencoder, regressor

ROOT = Path(__file__).resolve().parents[1]
N = 24


def _reference(dep, x: np.ndarray, flavor: str = "tflm") -> tuple[np.ndarray, np.ndarray]:
    """(the program's input: float x or its int8 quantization, run_int8 of the full graph on it [N, outputs])."""
    full = full_graph(dep)
    xin = quantize_inputs(dep, x) if dep.int8_io else x
    return xin, run_int8(full, xin, flavor=flavor)[full.outputs[0]].reshape(len(x), -1)


def _tflite_runs(dep, xin: np.ndarray, builtin_ref: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Outputs of TFLite Micro and of TFLite BUILTIN_REF (None with ``builtin_ref=False``) on the written .tflite,
    [N, outputs] each."""
    from ai_edge_litert import interpreter as litert
    from tflite_micro.python.tflite_micro import runtime

    data = deployment_tflite(dep)
    tm = runtime.Interpreter.from_bytes(data, arena_size=measure_arena(data).arena)
    it = litert.Interpreter(model_content=data, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    micro, ref = [], []
    for i in range(len(xin)):
        tm.set_input(xin[i:i + 1], 0)
        tm.invoke()
        micro.append(tm.get_output(0).reshape(-1))
        if not builtin_ref:
            continue
        it.set_tensor(it.get_input_details()[0]["index"], xin[i:i + 1])
        it.invoke()
        ref.append(it.get_tensor(it.get_output_details()[0]["index"]).reshape(-1))
    return np.stack(micro), np.stack(ref) if builtin_ref else None


def _symbol_sizes(obj: Path) -> dict[str, tuple[str, int]]:
    nm = subprocess.run(["nm", "-S", str(obj)], capture_output=True, text=True, check=True).stdout
    return {p[3]: (p[2], int(p[1], 16)) for p in (l.split() for l in nm.splitlines()) if len(p) == 4}


def _check_memory(proj: Path, dep) -> None:
    """RAM = the arrays model.c declares (the arena only); the flash arrays = weights + biases + tables (and the
    generated kernels' lookup tables)."""
    obj = proj / "model.o"
    subprocess.run(["gcc", *c_harness.STRICT, "-c", "-I", str(proj), "-I", str(proj / "runtime"),
                    str(proj / "model.c"), "-o", str(obj)], check=True)
    sizes = _symbol_sizes(obj)
    ram = sum(n for kind, n in sizes.values() if kind in "bBdD")
    assert ram == dep.memory["static_ram"] == c_arena(dep.extractor)
    items = {i["name"]: i["bytes"] for i in dep.memory["items"]}
    arrays = sum(n for name, (kind, n) in sizes.items() if kind in "rR" and name.startswith("tcc_"))
    luts = items.get("kernel lookup tables", 0)  # LOGISTIC/TANH tables of the generated kernels
    assert arrays == items["weights"] + items["biases"] + items["requantization tables"] + luts
    assert set(items) - {"kernel lookup tables"} == {"arena", "weights", "biases", "requantization tables", "code",
                                                 "stack"}


def _c_outputs(proj: Path, dep, x: np.ndarray):
    render_project(dep, {"test_vectors": x, "test_count": len(x)}, proj)
    return c_harness.run_host(c_harness.build_host(proj, sanitize=True))


def _check_all(session, tmp_path: Path, g, calib: np.ndarray, x: np.ndarray, int8_io: bool):
    dep = build_inference(g, {"calib_data": calib, "int8_io": int8_io}, session, CBackend())
    assert dep.inference_only and not dep.classifier and dep.buffer.capacity == 0
    CBackend().check(dep)
    out = _c_outputs(tmp_path, dep, x)
    xin, ref = _reference(dep, x)
    assert out.done and sorted(out.outputs) == list(range(len(x)))
    got = np.stack([out.outputs[i] for i in range(len(x))])
    if int8_io:
        assert xin.dtype == np.int8
        np.testing.assert_array_equal(got.astype(np.int8), ref)
        assert out.check == -1  # NULL output refused
    else:
        np.testing.assert_array_equal(got.astype(np.float32), ref)  # %.9g round-trips float32
        assert out.check == -2  # NaN input refused
    micro, builtin = _tflite_runs(dep, xin)
    np.testing.assert_array_equal(micro, ref)
    np.testing.assert_array_equal(builtin, _reference(dep, x, "tflite")[1])
    _check_memory(tmp_path, dep)
    return dep


CASES = [("digits", False), ("digits", True), ("resnet_add", False), ("mobilenet_v3", True), ("conv1d_sensor", False),
         ("concat_branch", True), ("separable_cnn", False)]


@pytest.mark.parametrize("name,int8_io", CASES)
def test_inference_c_equals_int8_reference_and_tflm(session, tmp_path: Path, name: str, int8_io: bool) -> None:
    g, x, _, calib = _graph(session, name)
    _check_all(session, tmp_path, g, calib, x[:N], int8_io)


@pytest.mark.parametrize("model,int8_io", [(autoencoder, False), (regressor, True)])
def test_inference_on_regression_models(session, tmp_path: Path, model, int8_io: bool) -> None:
    """Any model qualifies, classifier or not: an autoencoder (output = input shape) and a regression head."""
    g, x, calib = _head_graph(session, model)
    dep = _check_all(session, tmp_path, g, calib, x[:N], int8_io)
    assert dep.feature_count == int(np.prod(g.tensors[g.outputs[0]].shape[1:]))


def test_tflm_inference_project(session, tmp_path: Path) -> None:
    g, x, _, calib = _graph(session, "digits")
    dep = build_inference(g, {"calib_data": calib}, session, TflmBackend())
    TflmBackend().check(dep)
    files = emit(TflmBackend(), dep, {}, tmp_path)
    data = (tmp_path / f"{dep.name}.tflite").read_bytes()
    assert data == deployment_tflite(dep)
    cc = (tmp_path / "src" / "model_data.cc").read_text()
    assert embedded_bytes(cc) == data
    glue = (tmp_path / "src" / "tinycc_tflm.cc").read_text()
    assert "tinycc_tflm_invoke_f32" in glue.replace(dep.name + "_", "tinycc_") and "learn" not in glue
    assert not (tmp_path / "src" / "model.c").exists()  # TFLite Micro runs the model; the demo is the c target's
    assert sorted(str(f.relative_to(tmp_path)) for f in files) == sorted(
        ["src/tinycc_tflm.h", "src/tinycc_tflm.cc", "src/model_data.h", "src/model_data.cc", "src/model.h",
         "Makefile", "CMakeLists.txt", "README.md", f"{dep.name}.tflite", "main.c", "test_vectors.h",
         "cortexm/startup.c", "cortexm/link.ld"])
    hdr = (tmp_path / "src" / "tinycc_tflm.h").read_text()
    arena = int(re.search(r"ARENA_BYTES (\d+)", hdr).group(1))
    objects = next(i["bytes"] for i in dep.memory["items"] if i["name"] == "interpreter objects")
    assert dep.memory["ram"] - objects == arena == measure_arena(data).arena
    xin, ref = _reference(dep, x[:8])
    np.testing.assert_array_equal(_tflite_runs(dep, xin)[0], ref)


def test_cli_inference_only(session, tmp_path: Path, capsys) -> None:
    model, calib = str(ROOT / "examples" / "digits_cnn.h5"), str(ROOT / "examples" / "digits_data.npz")
    out = tmp_path / "p"
    assert main(["compile", model, "--target", "c", "--calib", calib, "-o", str(out), "--inference-only"]) == 0
    assert "inference only" in capsys.readouterr().out
    assert (out / "model.c").read_text().count("_invoke_f32") == 1 and "_learn" not in (out / "model.h").read_text()
    r = subprocess.run(["make", "-s", "run"], cwd=out, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "NaN input refused with -2" in r.stdout and r.stdout.rstrip().endswith("done")
    # budget: the exact RAM is the arena; one byte less is refused before anything is written
    ram = int(re.search(r"RAM_BYTES (\d+)", (out / "tinycc_config.h").read_text()).group(1))
    assert main(["compile", model, "--target", "c", "--calib", calib, "-o", str(tmp_path / "q"), "--inference-only",
                 "--ram", str(ram)]) == 0
    assert main(["compile", model, "--target", "c", "--calib", calib, "-o", str(tmp_path / "r"), "--inference-only",
                 "--ram", str(ram - 1)]) == 2
    assert "short by 1 bytes" in capsys.readouterr().err and not (tmp_path / "r").exists()
    flash = int(re.search(r"FLASH_BYTES (\d+)", (out / "tinycc_config.h").read_text()).group(1))
    assert main(["compile", model, "--target", "c", "--calib", calib, "-o", str(tmp_path / "f"), "--inference-only",
                 "--flash", str(flash - 10)]) == 2
    err = capsys.readouterr().err
    assert "FLASH needs" in err and "short by 10 bytes" in err and "--buffer" not in err
    assert main(["compile", model, "--target", "c", "--calib", calib, "-o", str(tmp_path / "s"), "--int8-io"]) == 2
    assert "--int8-io needs --inference-only" in capsys.readouterr().err


# MLPerf Tiny: (inputs checked in one program run, calibration range)
MLPERF = {"pretrainedResnet.h5": (50, (0, 255)), "vww_96.h5": (50, (0, 1)), "ad01.h5": (50, (-1, 1)),
          "str_ww_ref_model.h5": (50, (-1, 1)), "pretrainedResnet_quant.tflite": (50, None),
          "vww_96_int8.tflite": (50, None), "ad01_int8.tflite": (50, None), "kws_ref_model.tflite": (50, None)}


@pytest.mark.parametrize("name", list(MLPERF))
def test_mlperf_inference_only_c_equals_tflite_micro(session, tmp_path: Path, name: str) -> None:
    """Each MLPerf Tiny model compiles inference-only for c and tflm; the C program's int8 outputs equal TFLite
    Micro's on the written .tflite (and, for the converter's int8 files, on the original file)."""
    from tflite_micro.python.tflite_micro import runtime

    from tinycc.passes import PassContext, run_pipeline

    from .conftest import mlperf_model

    path = mlperf_model(name)
    g = session.registry.frontend_for(str(path)).load(str(path))
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    n, lohi = MLPERF[name]
    shape = tuple(g.tensors[g.inputs[0]].shape[1:])
    rng = np.random.default_rng(0)
    calib = rng.uniform(*(lohi or (0, 1)), (32,) + shape).astype(np.float32)
    dep = build_inference(g, {"calib_data": calib, "int8_io": True}, session, CBackend())
    CBackend().check(dep)
    q = dep.extractor.tensors[dep.extractor.consumers(dep.extractor.inputs[0])[0].outputs[0]].quant
    x = (float(q.scale[0]) * (rng.integers(-128, 128, (n,) + shape) - int(q.zero_point[0]))).astype(np.float32)
    render_project(dep, {"test_vectors": x, "test_count": n}, tmp_path / "c")
    out = c_harness.run_host(c_harness.build_host(tmp_path / "c", sanitize=False))
    got = np.stack([out.outputs[i] for i in range(n)]).astype(np.int8)
    xin, ref = _reference(dep, x)
    np.testing.assert_array_equal(got, ref)
    micro = _tflite_runs(dep, xin, builtin_ref=False)[0]
    np.testing.assert_array_equal(got, micro)
    if name.endswith(".tflite"):  # the converter's own file in TFLite Micro
        data = path.read_bytes()
        tm = runtime.Interpreter.from_bytes(data, arena_size=measure_arena(data).arena)
        for i in range(n):
            tm.set_input(xin[i:i + 1], 0)
            tm.invoke()
            np.testing.assert_array_equal(got[i], tm.get_output(0).reshape(-1), err_msg=f"{name} input {i}")
    TflmBackend().check(dep)
    emit(TflmBackend(), dep, {}, tmp_path / "tflm")
    assert (tmp_path / "tflm" / f"{dep.name}.tflite").read_bytes() == deployment_tflite(dep)


@pytest.mark.parametrize("name", ["pretrainedResnet_quant.tflite", "vww_96_int8.tflite", "ad01_int8.tflite",
                                  "kws_ref_model.tflite", "str_ww_ref_model.h5"])
def test_validate_mlperf_inference_only_on_host(session, tmp_path: Path, capsys, name: str) -> None:
    """`tinycc validate --inference-only` on the MLPerf Tiny models (host, 50 inputs):
    exit 0 and every output bit-exact with run_int8, which equals TFLite Micro on these models
    (test_mlperf_inference_only_c_equals_tflite_micro). The converter's int8 files carry their own quantization;
    the Keras-only streaming wake word model is calibrated on the data."""
    import io

    from tinycc.plugins.applications.validate import validate

    from .conftest import mlperf_model

    path = mlperf_model(name)
    n, lohi = MLPERF[name]
    assert main(["inspect", str(path), "--json"]) == 0
    shape = tuple(next(iter(json.loads(capsys.readouterr().out)["inputs"].values()))[1:])
    rng = np.random.default_rng(5)
    x = rng.uniform(*(lohi or (0, 1)), (n,) + shape).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=np.zeros(n, np.int64))
    stream = io.StringIO()  # `tinycc validate` is this call with the parsed options
    rc = validate(str(path), "c", str(tmp_path / "data.npz"), None, n, None, config(session, {}, True), session, stream)
    out = stream.getvalue()
    assert rc == 0, out
    assert re.search(rf"outputs, bit-exact\s+{n}/{n} equal, max \|diff\| 0 steps", out) and "PASS" in out, out


def test_resnet8_int8_accuracy_on_cifar10(session, shared_data: Path) -> None:
    """tinycc's int8 ResNet-8 (calibrated on training images) keeps the float accuracy within 1 point on 1,000
    CIFAR-10 test images and is not below the published int8 .tflite (BUILTIN_REF) on the same images."""
    from benchmarks.bench_mlperf import cifar, int8_accuracy, keras_accuracy, tflite_accuracy, tinycc_int8

    from .conftest import mlperf_model

    x, y, calib = cifar(str(shared_data), 1000, 500, 0)
    path = mlperf_model("pretrainedResnet.h5")
    ref = keras_accuracy(path, x, y)
    ours = int8_accuracy(tinycc_int8(session, path, calib), x, y)
    published = tflite_accuracy(mlperf_model("pretrainedResnet_quant.tflite"), x, y)
    assert ref > 0.8
    assert abs(ours - ref) <= 0.01 and ours >= published, (ref, ours, published)


def _arduino_dep(session, int8_io: bool):
    from tinycc.backends.arduino import ArduinoBackend

    g, x, _, calib = _graph(session, "digits")
    return build_inference(g, {"calib_data": calib, "int8_io": int8_io, "board": "mega2560"}, session,
                           ArduinoBackend()), x[:8]


@pytest.mark.parametrize("int8_io", [False, True])
def test_arduino_inference_protocol_predicts_and_refuses_learning(session, tmp_path: Path, int8_io: bool) -> None:
    """The inference-only sketch's protocol (host build, ASan/UBSan): 'P' gives run_int8's outputs, learning
    commands get error 7, a NaN input error 6; the RAM report includes the protocol and core reserve."""
    from tinycc.backends.arduino import CORE_RESERVE, ArduinoBackend, inference_proto_bytes

    from .test_arduino import frame, read_reply

    dep, x = _arduino_dep(session, int8_io)
    emit(ArduinoBackend(), dep, {"int8_io": int8_io}, tmp_path)
    sk = tmp_path / dep.name
    exe = tmp_path / "proto_host"
    srcs = [sk / "extras" / "host_main.c"] + sorted((sk / "src").glob("*.c"))
    r = subprocess.run(["gcc", *c_harness.STRICT, *c_harness.SANITIZE, "-I", str(sk / "src"), "-o", str(exe),
                        *map(str, srcs), "-lm"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    xin, ref = _reference(dep, x)
    elem = 1 if int8_io else 4
    public = 16  # the input's and output's scale and zero point: plain const, RAM on the AVR (a Harvard core)
    assert dep.memory["static_ram"] == (c_arena(dep.extractor) + CORE_RESERVE + public
                                 + inference_proto_bytes(elem * xin[0].size, elem * ref.shape[1]))
    p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        for i in range(len(x)):
            p.stdin.write(frame(b"P", xin[i].tobytes()))
            p.stdin.flush()
            cmd, payload = read_reply(p.stdout)
            assert cmd == b"P"
            np.testing.assert_array_equal(np.frombuffer(payload, ref.dtype), ref[i])
        for c in (b"L", b"l", b"F", b"R"):
            p.stdin.write(frame(c, b"\x00" * 4))
            p.stdin.flush()
            assert read_reply(p.stdout) == (b"E", b"\x07")
        if not int8_io:
            bad = x[0].copy().reshape(-1)
            bad[3] = np.nan
            p.stdin.write(frame(b"P", bad.tobytes()))
            p.stdin.flush()
            assert read_reply(p.stdout) == (b"E", b"\x06")
        p.stdin.write(frame(b"M"))
        p.stdin.flush()
        cmd, payload = read_reply(p.stdout)
        assert cmd == b"M" and struct.unpack("<3I", payload)[1] == dep.memory["ram"]
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    assert p.returncode == 0


def test_arduino_inference_selftest_in_simavr(session, tmp_path: Path) -> None:
    """The sketch built by arduino-builder for the Mega 2560 runs in simavr; its dump equals run_int8."""
    from tinycc.backends.arduino import ArduinoBackend
    from tinycc.backends.demo import parse

    from . import arduino_harness

    if not arduino_harness.available():
        pytest.skip("arduino-builder/simavr/avr-gcc not installed")
    dep, x = _arduino_dep(session, True)
    emit(ArduinoBackend(), dep, {"selftest": True, "test_vectors": x, "test_count": len(x)}, tmp_path)
    elf, _, _ = arduino_harness.build(tmp_path / dep.name / f"{dep.name}.ino", tmp_path,
                                      defines=("TINYCC_DEMO_DUMP=1",))
    out = parse("\n".join(arduino_harness.run_simavr(elf)))
    assert out.done and out.memory["ram"] == dep.memory["ram"]
    _, ref = _reference(dep, x)
    np.testing.assert_array_equal(np.stack([out.outputs[i] for i in range(len(x))]).astype(np.int8), ref)


def test_validate_inference_only_on_host(session, tmp_path: Path) -> None:
    """`tinycc validate --inference-only` runs the demo and compares every output with run_int8; a project whose
    outputs were tampered with fails (exit 1)."""
    import io

    from tinycc.plugins.applications.validate import validate

    model, data = str(ROOT / "examples" / "digits_cnn.h5"), str(ROOT / "examples" / "digits_data.npz")
    out = io.StringIO()
    assert validate(model, "c", data, None, 12, None, config(session, {}, True), session, out) == 0
    assert "outputs, bit-exact               12/12 equal" in out.getvalue() and "PASS" in out.getvalue()
    proj = tmp_path / "p"
    assert main(["compile", model, "--target", "c", "--calib", data, "-o", str(proj), "--inference-only"]) == 0
    model_c = proj / "model.c"
    model_c.write_text(model_c.read_text().replace("return 0;\n}", "y[0] += 1.0f;\n    return 0;\n}"))
    out = io.StringIO()
    assert validate(model, "c", data, None, 12, str(proj), config(session, {"calib": data}, True), session,
                    out) == 1
    assert "FAIL: the program differs from the reference: 12 of 12 samples have different int8 outputs" in \
        out.getvalue()


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_inference_demo_on_cortex_m4_in_qemu(session, tmp_path: Path) -> None:
    """The inference demo cross-built for Cortex-M4 prints run_int8's outputs (float I/O) under QEMU."""
    g, x, _, calib = _graph(session, "digits")
    dep = build_inference(g, {"calib_data": calib}, session, CBackend())
    render_project(dep, {"test_vectors": x[:6], "test_count": 6}, tmp_path)
    out, sections = c_harness.build_and_run_qemu(tmp_path, "m4")
    _, ref = _reference(dep, x[:6])
    np.testing.assert_array_equal(np.stack([out.outputs[i] for i in range(6)]).astype(np.float32), ref)
    assert out.check == -2 and out.instructions.get("invoke", 0) > 0


@pytest.mark.parametrize("int8_io", [False, True])
def test_tflm_inference_glue_compiles_against_tflite_micro(session, tmp_path: Path, int8_io: bool) -> None:
    """The generated C++ (g++ -std=c++17 -Wall -Wextra -Werror, -fsyntax-only) against TFLite Micro's headers from
    ../shared/vendor (skipped where the snapshot is absent)."""
    import tarfile

    from .conftest import SHARED_DATA

    tar = SHARED_DATA.parent / "vendor" / "tflite-micro-90b983c2.tar.xz"
    if not tar.exists():
        pytest.skip(f"{tar} not found (TFLite Micro sources)")
    with tarfile.open(tar) as t:
        t.extractall(tmp_path / "v", filter="data")
    g, _, _, calib = _graph(session, "digits")
    dep = build_inference(g, {"calib_data": calib, "int8_io": int8_io}, session, TflmBackend())
    emit(TflmBackend(), dep, {}, tmp_path / "p")
    t = tmp_path / "v" / "tflite-micro"
    inc = [a for d in ("", "fb/include", "gemmlowp", "ruyinc") for a in ("-isystem", str(t / d))]
    src = tmp_path / "p" / "src"
    r = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-DTF_LITE_STATIC_MEMORY",
                        "-I", str(src), *inc, str(src / "tinycc_tflm.cc"), str(src / "model_data.cc")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"_tflm_invoke_{'s8' if int8_io else 'f32'}" in (src / "tinycc_tflm.h").read_text()
