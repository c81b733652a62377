"""Models with several inputs and outputs deploy inference-only to the c target: a Keras model with two inputs
(image, sensor vector) and two heads, converted to full-integer .tflite by the TFLite converter (float and int8
I/O), and the float Keras model calibrated by tinycc on one array per input; the generated C (one pointer per
input/output, named after the model's tensors; ASan/UBSan) equals TFLite's reference kernels (BUILTIN_REF) bit for
bit; the tflm target runs them in TFLite Micro behind the same API. The arduino target (one serial stream) refuses
on one line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.backends.tflm import TflmBackend
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.plugins.frontends.tflite import read_tflite

from . import c_harness
from .deploy_util import build_inference, render_project

litert = pytest.importorskip("ai_edge_litert.interpreter")


def _model():
    import keras

    keras.utils.set_random_seed(0)
    a = keras.Input((8, 8, 1), name="image")
    b = keras.Input((5,), name="sensor")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(keras.layers.Conv2D(4, 3, activation="relu", name="conv")(a))
    y = keras.layers.Dense(6, activation="relu", name="dense_s")(b)
    z = keras.layers.Concatenate(name="cat")([x, y])
    return keras.Model([a, b], [keras.layers.Dense(3, activation="softmax", name="cls")(z),
                                keras.layers.Dense(2, name="reg")(z)])


def _inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.normal(size=(n, 8, 8, 1)).astype(np.float32),
            "sensor": rng.normal(size=(n, 5)).astype(np.float32)}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    import tensorflow as tf

    m, x, out = _model(), _inputs(32, 0), tmp_path_factory.mktemp("multi_io")
    paths = {}
    for io in ("float", "int8"):
        c = tf.lite.TFLiteConverter.from_keras_model(m)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ({k: v[i:i + 1] for k, v in x.items()} for i in range(32))
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io == "int8":
            c.inference_input_type = c.inference_output_type = tf.int8
        paths[io] = out / f"two_in_two_out_{io}.tflite"
        paths[io].write_bytes(c.convert())
    return paths


def _reference(path: Path, x: dict[str, np.ndarray]) -> list[np.ndarray]:
    """BUILTIN_REF outputs (in the file's output order) per sample; int8 inputs quantized as the file says."""
    it = litert.Interpreter(model_path=str(path), experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    outs = []
    for i in range(len(x["image"])):
        for d in it.get_input_details():
            v = x[next(k for k in x if k in d["name"])][i:i + 1]
            if d["dtype"] == np.int8:
                s, zp = d["quantization"]
                v = np.clip(np.round(v / s) + zp, -128, 127).astype(np.int8)
            it.set_tensor(d["index"], v)
        it.invoke()
        outs.append([it.get_tensor(d["index"])[0].reshape(-1) for d in it.get_output_details()])
    return outs


@pytest.mark.parametrize("io", ["float", "int8"])
def test_two_inputs_two_outputs_c_equals_builtin_ref(session, files, tmp_path: Path, io: str) -> None:
    g = read_tflite(str(files[io]))
    assert len(g.inputs) == 2 and len(g.outputs) == 2
    dep = build_inference(g, {"int8_io": io == "int8"}, session, CBackend())
    assert dep.meta["io_names"] == (["in_0", "in_1"], ["out_0", "out_1"])  # C names by position
    assert dep.meta["io_labels"][0] == ["sensor", "image"]  # the file's order, shown in comments only
    x = _inputs(6, 3)
    xs = [x["sensor"], x["image"]]
    render_project(dep, {"test_vectors": (xs, None), "test_count": 6}, tmp_path)
    header = (tmp_path / "model.h").read_text()
    t = "int8_t" if io == "int8" else "float"
    assert (f"invoke_{'s8' if io == 'int8' else 'f32'}(const {t} *in_0, const {t} *in_1, "
            f"{t} *out_0, {t} *out_1);") in header
    assert " *   in_0: sensor [" in header and " *   in_1: image [" in header
    run = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    ref = _reference(files[io], x)
    sizes = [dep.extractor.tensors[o].size for o in dep.extractor.outputs]
    assert sizes == [2, 3]
    for i in range(6):
        want = np.concatenate(ref[i]).astype(np.float32)  # %.9g round-trips a float32 exactly
        np.testing.assert_array_equal(run.outputs[i].astype(np.float32), want, err_msg=f"vector {i}")
    assert run.check == (-1 if io == "int8" else -2)  # NULL output / NaN input refused
    if io == "int8":  # tinycc's interpreter agrees with both
        feed = {dep.extractor.inputs[0]: xs[0], dep.extractor.inputs[1]: xs[1]}
        mine = run_int8(dep.extractor, feed)
        np.testing.assert_array_equal(np.concatenate([mine[o].reshape(6, -1) for o in dep.extractor.outputs], 1),
                                      np.stack([np.concatenate(r) for r in ref]))


def test_targets_without_a_multi_input_api_refuse(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "tinycc.cli", "compile", str(_float_file(tmp_path)), "--inference-only",
                        "-t", "arduino", "-o", str(tmp_path / "a")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "not 'arduino'" in r.stderr, r.stderr
    assert not (tmp_path / "a").exists()


def _float_file(tmp_path: Path) -> Path:
    m = _model()
    p = tmp_path / "two_in.keras"
    m.save(p)
    return p


def test_c_from_the_cli_without_samples(files, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "tinycc.cli", "compile", str(files["float"]), "--inference-only",
                        "-t", "c", "-o", str(tmp_path / "c")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    run = c_harness.run_host(c_harness.build_host(tmp_path / "c", sanitize=True))  # zero inputs from the CLI
    assert len(run.outputs[0]) == 5 and run.check == -2


@pytest.mark.slow
@pytest.mark.timeout(1800)  # may build TFLite Micro first (about 460 s of CPU, cached in ~/.cache/tinycc)
@pytest.mark.parametrize("io", ["float", "int8"])
def test_tflm_target_two_inputs_two_outputs_equal_builtin_ref(session, files, tmp_path: Path, io: str) -> None:
    """The tflm target runs the converter's file in TFLite Micro behind the c target's multi-I/O API (the same
    demo main.c): its outputs equal BUILTIN_REF; NaN inputs and NULL pointers are refused."""
    from tinycc.backends.tflm import build, vendor
    from tinycc.config import TestVectors

    vendor_dir = vendor.default_vendor_dir()
    if vendor_dir is None or vendor.missing_toolchain("host"):
        pytest.skip("TensorFlow Lite Micro snapshot or host toolchain not found (../shared/vendor; TINYCC_VENDOR)")
    library = vendor.ensure_library(vendor_dir, "host")
    dep = build_inference(read_tflite(str(files[io])), {"int8_io": io == "int8"}, session, TflmBackend())
    x = _inputs(4, 5)
    TflmBackend().emit(dep, tmp_path, TestVectors([x["sensor"], x["image"]], None, 4, None))
    header = (tmp_path / "src" / "tinycc_tflm.h").read_text()
    t = "int8_t" if io == "int8" else "float"
    assert f"(const {t} *in_0, const {t} *in_1, {t} *out_0, {t} *out_1);" in header
    run = c_harness.parse(build.run(build.build_host(tmp_path, sanitize=True, library=library)))
    ref = _reference(files[io], x)
    for i in range(4):
        np.testing.assert_array_equal(run.outputs[i].astype(np.float32), np.concatenate(ref[i]).astype(np.float32),
                                      err_msg=f"vector {i}")
    assert run.check == (-1 if io == "int8" else -2)


@pytest.mark.parametrize("int8_io", [False, True])
def test_float_model_with_two_inputs_calibrated_c_equals_builtin_ref(session, tmp_path: Path, int8_io: bool) -> None:
    """A float Keras model with two inputs and two outputs, calibrated by tinycc on one array per input: the C
    program equals run_int8 and the deployed graph written as .tflite run by BUILTIN_REF, bit for bit."""
    from tinycc.deploy.inference import full_graph, quantize_inputs
    from tinycc.plugins.frontends.keras import graph_from_keras_model
    from tinycc.tflite_writer import write_tflite

    g = graph_from_keras_model(_model())
    assert len(g.inputs) == 2
    cal = _inputs(32, 1)
    dep = build_inference(g, {"calib_data": [cal["image"], cal["sensor"]], "int8_io": int8_io}, session, CBackend())
    assert dep.meta["io_names"] == (["in_0", "in_1"], ["out_0", "out_1"])
    x = _inputs(5, 2)
    xs = [x["image"], x["sensor"]]
    render_project(dep, {"test_vectors": (xs, None), "test_count": 5}, tmp_path)
    run = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    fg = full_graph(dep)
    feed = {t: (quantize_inputs(dep, v, k) if int8_io else v) for k, (t, v) in enumerate(zip(fg.inputs, xs))}
    mine = run_int8(fg, feed)
    want = np.concatenate([mine[o].reshape(5, -1) for o in fg.outputs], 1).astype(np.float32)
    np.testing.assert_array_equal(np.stack([run.outputs[i] for i in range(5)]).astype(np.float32), want)
    it = litert.Interpreter(model_content=write_tflite(fg),
                            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    index = {d["name"]: d["index"] for d in it.get_tensor_details()}
    for i in range(5):
        for t in fg.inputs:
            it.set_tensor(index[t], feed[t][i:i + 1])
        it.invoke()
        got = np.concatenate([it.get_tensor(index[o]).reshape(-1) for o in fg.outputs]).astype(np.float32)
        np.testing.assert_array_equal(got, want[i], err_msg=f"BUILTIN_REF, input {i}")


def test_float_model_with_two_inputs_from_the_cli(tmp_path: Path) -> None:
    """`--calib` with one array per input (x_0, x_1 in the model's input order) calibrates it and the demo embeds
    those samples; a file without them is refused on one line."""
    p = tmp_path / "two_inputs.keras"
    _model().save(p)
    cal = _inputs(8, 4)
    np.savez(tmp_path / "calib.npz", x_0=cal["image"], x_1=cal["sensor"])
    cmd = [sys.executable, "-m", "tinycc.cli", "compile", str(p), "--inference-only", "-t", "c", "--calib"]
    r = subprocess.run(cmd + [str(tmp_path / "calib.npz"), "-o", str(tmp_path / "c")], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "all zeros" not in r.stderr
    vectors = (tmp_path / "c" / "test_vectors.h").read_text()
    assert vectors.count("0.0f, ") < len(vectors) // 20  # real samples, not the zero vector
    run = c_harness.run_host(c_harness.build_host(tmp_path / "c", sanitize=True))
    assert len(run.outputs[0]) == 5 and run.check == -2
    np.savez(tmp_path / "bad.npz", x=cal["image"])
    r = subprocess.run(cmd + [str(tmp_path / "bad.npz"), "-o", str(tmp_path / "d")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "needs arrays x_0 .. x_1" in r.stderr and not (tmp_path / "d").exists()


@pytest.mark.parametrize("int8_io", [False, True])
def test_keras_model_with_two_heads_calibrated_c_equals_builtin_ref(session, tmp_path: Path, int8_io: bool) -> None:
    """One input, two outputs, float Keras: calibrated and quantized by tinycc; the C program equals run_int8 and
    the deployed graph written as .tflite run by BUILTIN_REF, bit for bit."""
    import keras

    from tinycc.deploy.inference import full_graph, quantize_inputs
    from tinycc.plugins.frontends.keras import graph_from_keras_model
    from tinycc.tflite_writer import write_tflite

    keras.utils.set_random_seed(0)
    a = keras.Input((6, 6, 2), name="frames")
    f = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(a))
    m = keras.Model(a, [keras.layers.Dense(3, activation="softmax", name="cls")(f), keras.layers.Dense(2, name="box")(f)])
    rng = np.random.default_rng(0)
    dep = build_inference(graph_from_keras_model(m), {"calib_data": rng.normal(size=(32, 6, 6, 2)).astype(np.float32),
                                                      "int8_io": int8_io}, session, CBackend())
    assert dep.meta["io_names"] == (["in_0"], ["out_0", "out_1"])
    assert dep.meta["io_labels"] == (["frames"], ["cls_act", "box"])
    x = rng.normal(size=(5, 6, 6, 2)).astype(np.float32)
    render_project(dep, {"test_vectors": (x, None), "test_count": 5}, tmp_path)
    run = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    fg = full_graph(dep)
    feed = quantize_inputs(dep, x) if int8_io else x
    mine = run_int8(fg, {fg.inputs[0]: feed})
    want = np.concatenate([mine[o].reshape(5, -1) for o in fg.outputs], 1).astype(np.float32)
    np.testing.assert_array_equal(np.stack([run.outputs[i] for i in range(5)]).astype(np.float32), want)
    it = litert.Interpreter(model_content=write_tflite(fg),
                            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    index = {d["name"]: d["index"] for d in it.get_tensor_details()}
    for i in range(5):
        it.set_tensor(it.get_input_details()[0]["index"], feed[i:i + 1])
        it.invoke()
        got = np.concatenate([it.get_tensor(index[o]).reshape(-1) for o in fg.outputs]).astype(np.float32)
        np.testing.assert_array_equal(got, want[i], err_msg=f"BUILTIN_REF, input {i}")


def test_io_names_are_positional_and_labels_only_reach_comments(session, files, tmp_path: Path) -> None:
    """Nothing from a model file becomes code: the C names are in_K/out_K whatever the model calls its tensors;
    hostile names reach model.h and the README only through the escaping filters, and the project builds."""
    from tinycc.deploy.inference import io_labels, io_names
    from tinycc.ir.graph import Graph

    g = Graph("m")
    g.inputs = ["a", "b", "c"]
    g.outputs = ["d", "e"]
    hostile = {"a": "*/ int main(void) { /*", "b": "int", "c": "int", "d": "output\n#define X", "e": "x" * 300}
    g.meta["io_names"] = hostile
    assert io_names(g) == (["in_0", "in_1", "in_2"], ["out_0", "out_1"])
    assert io_labels(g) == ([hostile[k] for k in "abc"], [hostile[k] for k in "de"])
    # a real two-input model whose tensors carry hostile names: the project builds warning-free (ASan/UBSan)
    real = read_tflite(str(files["float"]))
    real.meta["io_names"] = dict(zip(real.inputs + real.outputs, [hostile[k] for k in "abde"]))
    dep = build_inference(real, {}, session, CBackend())
    x = _inputs(2, 3)
    render_project(dep, {"test_vectors": ([x["sensor"], x["image"]], None), "test_count": 2}, tmp_path)
    header = (tmp_path / "model.h").read_text()
    assert "(const float *in_0, const float *in_1, float *out_0, float *out_1);" in header
    lines = header.splitlines()
    assert [l for l in lines if l.lstrip().startswith(("int main", "#define X"))] == []
    assert next(l for l in lines if l.startswith(" *   in_0:")).endswith("[5]")  # label escaped inside the comment
    c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_cortex_m4_qemu_outputs_equal_builtin_ref(session, files, tmp_path: Path) -> None:
    """The int8-I/O project built for Cortex-M4 (-Wall -Wextra -Werror) and run under QEMU: its first vectors'
    outputs equal BUILTIN_REF's."""
    dep = build_inference(read_tflite(str(files["int8"])), {"int8_io": True}, session, CBackend())
    x = _inputs(2, 5)
    render_project(dep, {"test_vectors": ([x["sensor"], x["image"]], None), "test_count": 2}, tmp_path)
    dev, _ = c_harness.build_and_run_qemu(tmp_path, "m4")
    ref = _reference(files["int8"], x)
    for i in range(2):
        np.testing.assert_array_equal(dev.outputs[i], np.concatenate(ref[i]).astype(np.float64), err_msg=f"M4 {i}")
    assert dev.instructions["invoke"] > 0
