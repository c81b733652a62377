"""Classifier heads built from 1x1 convolutions (Keras Applications' MobileNets, TFLM person detection).

``conv1x1_to_dense`` turns a 1x1 Conv2D on a 1x1 map into Reshape + Dense; the float IR must equal
Keras, the head must be the trainable classifier, the generated C must equal ``run_int8`` and
pruning must work through the rewritten head.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from .deploy_util import emit, render_project
from tinycc.ir.channels import analyse, remove, unit_scores
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.ops import OpKind
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.passes.keras_export import graph_to_keras
from tinycc.plugins.frontends.keras import graph_from_keras_model
from .deploy_util import build_deployment
from tinycc.plugins.passes.prune import l1, plan_ratio, prune

from . import c_harness
from .test_prune import _zeroed_reference
from .zoo import _randomise_bn

TOL = 1e-5


def _conv_head(two_layers: bool = False) -> Any:
    """GAP(keepdims) -> Dropout -> Conv2D 1x1 -> Reshape -> softmax, or two 1x1 convs and a Flatten."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(7)
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(6.0, name="stem_relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Conv2D(12, 1, activation="relu", name="pw")(x)
    x = L.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    x = L.Dropout(0.2, name="drop")(x)
    if two_layers:
        x = L.Conv2D(9, 1, activation="relu", name="hidden")(x)
        x = L.Conv2D(5, 1, name="conv_preds")(x)
        x = L.Flatten(name="flat")(x)
    else:
        x = L.Conv2D(5, 1, padding="same", name="conv_preds")(x)
        x = L.Reshape((5,), name="reshape")(x)
    out = L.Activation("softmax", name="predictions")(x)
    return _randomise_bn(keras.Model(inp, out, name="conv_head2" if two_layers else "conv_head"), 3)


def _application(name: str) -> Any:
    import keras

    keras.utils.set_random_seed(1)
    apps = keras.applications
    if name == "mobilenet":
        m = apps.MobileNet(alpha=0.25, input_shape=(96, 96, 3), classes=10, weights=None)
    elif name == "mobilenet_v2":
        m = apps.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), classes=10, weights=None)
    else:
        m = apps.MobileNetV3Small(alpha=0.75, input_shape=(32, 32, 3), classes=10, weights=None)
    # untrained BN statistics make activations vanish layer by layer; give them realistic ranges
    return _randomise_bn(m, 2)


MODELS = {"conv_head": lambda: _conv_head(), "conv_head2": lambda: _conv_head(True),
          "mobilenet": lambda: _application("mobilenet"), "mobilenet_v3": lambda: _application("mobilenet_v3")}
HEADS = {"conv_head": ["conv_preds"], "conv_head2": ["hidden", "conv_preds"], "mobilenet": ["conv_preds"],
         "mobilenet_v3": ["conv_2", "logits"]}
_CACHE: dict[str, Any] = {}


def _model(name: str) -> Any:
    if name not in _CACHE:
        _CACHE[name] = MODELS[name]() if name in MODELS else _application(name)
    return _CACHE[name]


def _inputs(m: Any, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n,) + tuple(m.inputs[0].shape[1:])).astype(np.float32)


def _clean(session, m: Any):
    g = graph_from_keras_model(m)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    return g


def _keras_1x1_heads(m: Any) -> list[Any]:
    return [l for l in m.layers if type(l).__name__ == "Conv2D" and tuple(l.kernel_size) == (1, 1)
            and tuple(l.input.shape[1:3]) == (1, 1)]


@pytest.mark.parametrize("name", list(MODELS))
def test_rewrite_is_exact(session, name: str) -> None:
    m = _model(name)
    heads = _keras_1x1_heads(m)
    assert heads
    g = _clean(session, m)
    x = _inputs(m, 3, 0)
    y = m.predict(x, verbose=0)
    assert np.abs(run(g, x)[g.outputs[0]] - y).max() <= TOL * max(np.abs(y).max(), 1.0)
    dense = {o.origin: o for o in g.ops if o.kind == OpKind.DENSE}
    assert {l.name for l in heads} <= set(dense)  # every 1x1 conv on a 1x1 map is a Dense
    for layer in (l for l in heads if l.name in HEADS[name]):  # the head kernels as [O, I] (no BN folded in)
        op = dense[layer.name]
        k = np.asarray(layer.kernel.numpy())
        np.testing.assert_array_equal(g.tensors[op.inputs[1]].data, k.reshape(k.shape[2], k.shape[3]).T)
    assert not any(o.kind == OpKind.CONV2D and g.tensors[o.inputs[0]].shape[1:3] == (1, 1) for o in g.ops)
    assert not any(o.kind in (OpKind.RESHAPE, OpKind.FLATTEN) and g.tensors[o.inputs[0]].shape == g.tensors[
        o.outputs[0]].shape for o in g.ops)  # the reshapes around the head folded away


def test_pointwise_convs_on_larger_maps_stay(session) -> None:
    g = _clean(session, _model("conv_head"))
    assert g.op("pw").kind == OpKind.CONV2D  # 1x1 kernel but an 8x8 map


@pytest.mark.parametrize("name, layers, features", [
    ("conv_head", [("conv_preds", "softmax")], 12), ("conv_head2", [("hidden", "relu"), ("conv_preds", "softmax")], 12),
    ("mobilenet_v3", [("logits", "softmax")], 1024), ("mobilenet_v2", [("predictions", "softmax")], 1280)])
def test_head_is_the_trainable_classifier(session, name: str, layers: list, features: int) -> None:
    m = _model(name)
    g = _clean(session, m)
    dep = build_deployment(g, {"calib_data": _inputs(m, 8, 1)}, session, CBackend())
    assert dep.extractor.tensors[dep.extractor.outputs[0]].size == features
    assert [l.activation for l in dep.classifier] == [a for _, a in layers]
    for layer, (lname, _) in zip(dep.classifier, layers):
        k = np.asarray(m.get_layer(lname).kernel.numpy())
        np.testing.assert_array_equal(layer.weight, k.reshape(-1, k.shape[-1]).T)
        np.testing.assert_array_equal(layer.bias, m.get_layer(lname).bias.numpy())


def test_cut_names_a_layer_cleanup_removed(session) -> None:
    """`--cut` may name a layer the cleanup passes dropped (a Dropout, a no-op Flatten): it resolves to the tensor
    that replaced it (as the thesis's `--cut flatten` on the CNAS model); a removed layer with no Dense after it
    is still refused, naming the valid cut points."""
    from tinycc.errors import TinyccError

    m = _model("conv_head2")
    g = _clean(session, m)
    assert not any("drop" in (o.name, o.origin) or "flat" in (o.name, o.origin) for o in g.ops)
    calib = _inputs(m, 8, 1)
    dep = build_deployment(g, {"calib_data": calib, "cut": "drop"}, session, CBackend())
    assert dep.extractor.tensors[dep.extractor.outputs[0]].size == 12 and len(dep.classifier) == 2
    with pytest.raises(TinyccError, match="cannot cut at 'flat'.*valid cut points"):
        build_deployment(_clean(session, m), {"calib_data": calib, "cut": "flat"}, session, CBackend())


def test_mobilenet_generated_c_equals_run_int8(session, tmp_path: Path) -> None:
    """Keras Applications MobileNet alpha 0.25, 96x96x3: the conv head trained on the device, C == run_int8."""
    m = _model("mobilenet")
    g = _clean(session, m)
    x, y = _inputs(m, 3, 3), np.array([1, 4, 7])
    opts = {"calib_data": _inputs(m, 8, 4), "buffer": 4, "lr": 0.05}
    dep = build_deployment(g, opts, session, CBackend())
    assert len(dep.classifier) == 1 and dep.classifier[0].weight.shape == (10, 256)
    render_project(dep, {**opts, "test_vectors": (x, y), "test_count": 3, "test_learn": 3}, tmp_path)
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    feats = run_int8(dep.extractor, x)[dep.extractor.outputs[0]].reshape(3, -1)
    for i in range(3):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")
    assert out.buffer == 3 and not np.array_equal(out.weights[0], dep.classifier[0].weight.reshape(-1))


@pytest.mark.slow
@pytest.mark.timeout(1800)  # may build TFLite Micro first (about 460 s of CPU, cached in ~/.cache/tinycc)
def test_mobilenet_tflm_project_learns_on_the_device(session, tmp_path: Path) -> None:
    """Keras Applications MobileNet alpha 0.25, 96x96x3, for the tflm target: the project built against TFLite
    Micro (ASan/UBSan on tinycc's sources) gives run_int8's features and trains the conv head as the simulator."""
    from tinycc.backends.tflm import TflmBackend, build, vendor
    from tinycc.ir.simulator import Simulator

    vendor_dir = vendor.default_vendor_dir()
    if vendor_dir is None or vendor.missing_toolchain("host"):
        pytest.skip("TensorFlow Lite Micro snapshot or host toolchain not found (../shared/vendor; TINYCC_VENDOR)")
    library = vendor.ensure_library(vendor_dir, "host")
    m = _model("mobilenet")
    x, y = _inputs(m, 3, 3), np.array([1, 4, 7])
    opts = {"calib_data": _inputs(m, 8, 4), "buffer": 4, "lr": 0.05}
    dep = build_deployment(_clean(session, m), opts, session, TflmBackend())
    TflmBackend().check(dep)
    assert len(dep.classifier) == 1 and dep.classifier[0].weight.shape == (10, 256)
    emit(TflmBackend(), dep, {**opts, "test_vectors": (x, y), "test_count": 3, "test_learn": 3}, tmp_path)
    out = c_harness.parse(build.run(build.build_host(tmp_path, sanitize=True, library=library)))
    feats = run_int8(dep.extractor, x)[dep.extractor.outputs[0]].reshape(3, -1)
    for i in range(3):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"TFLite Micro features of input {i}")
    sim = Simulator(dep)
    for i in range(3):
        sim.learn_features(feats[i], int(y[i]))
    assert out.buffer == sim.buffer.count == 3
    w = sim.classifier.layers[0].weight
    assert np.abs(out.weights[0] - w.reshape(-1)).max() <= 1e-4 * max(np.abs(w).max(), 1e-3)
    assert not np.array_equal(out.weights[0], dep.classifier[0].weight.reshape(-1))


def test_compile_cli_tflm(tmp_path: Path) -> None:
    m = _model("conv_head")
    path = tmp_path / "conv_head.keras"
    m.save(path)
    np.savez(tmp_path / "calib.npz", x_calib=_inputs(m, 8, 5))
    r = subprocess.run([sys.executable, "-m", "tinycc.cli", "compile", str(path), "--target", "tflm", "--calib",
                        str(tmp_path / "calib.npz"), "-o", str(tmp_path / "out")], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert "12 int8 features -> 1 trainable Dense layer" in r.stdout + r.stderr
    assert (tmp_path / "out" / "src" / "model_data.cc").exists()


def test_pruning_through_the_conv_head(session) -> None:
    m = _model("conv_head2")
    g = _clean(session, m)
    units = analyse(g)
    drop = plan_ratio(g, units, unit_scores(g, units, l1), 0.4, {}, 1, 1)
    pw = g.op("pw").outputs[0]
    assert any(any(t == pw for t, _ in units[i].positions) for i in drop)  # the GAP'd channels are pruned
    x = _inputs(m, 4, 6)
    ref = _zeroed_reference(g, units, drop)
    pruned = g.copy()
    remove(pruned, units, drop)
    y, y_ref = run(pruned, x)[pruned.outputs[0]], run(ref, x)[ref.outputs[0]]
    assert np.abs(y - y_ref).max() <= 1e-5 * max(1.0, np.abs(y_ref).max())
    g2 = g.copy()
    prune(g2, ratio=0.5)
    n_pw = g2.tensors[g2.op("pw").outputs[0]].shape[-1]
    assert n_pw == 6 and g2.tensors[g2.op("hidden").inputs[1]].shape == (g2.tensors[g2.op("hidden").outputs[0]].shape[-1], 6)
    k = graph_to_keras(g2)
    np.testing.assert_allclose(k.predict(x, verbose=0), run(g2, x)[g2.outputs[0]], atol=1e-5)
    dep = build_deployment(g2, {"calib_data": _inputs(m, 8, 7)}, session, CBackend())
    assert dep.classifier[0].weight.shape[1] == n_pw


def test_mobilenet_arduino_on_nano33ble(session, tmp_path: Path) -> None:
    """MobileNet alpha 0.25 at 96x96x3 for the arduino target on a board where it fits (Nano 33 BLE: 256 KB RAM,
    1 MB flash): the budget holds with the protocol's receive buffer for the 110,593-byte learn frame (32-bit
    length field), the conv head is the trainable classifier, and the sketch's runtime built for the host
    (ASan/UBSan) answers predict and learn over the serial protocol as the simulator does. The replay buffer is
    filled to the budget by default; 32 entries leave 40 KB for the Arduino mbed core, which the memory model's
    1 KB core reserve does not count. Cross-compiled for the Cortex-M4F, the sources' static RAM is the memory
    model's."""
    import struct

    from tinycc.backends.arduino import CORE_RESERVE, ArduinoBackend, max_payload
    from tinycc.ir.simulator import Simulator

    from . import arduino_harness
    from .test_arduino import asker, frame

    m = _model("mobilenet")
    g = _clean(session, m)
    opts = {"calib_data": _inputs(m, 8, 4), "board": "nano33ble", "lr": 0.05}
    full = build_deployment(g.copy(), opts, session, ArduinoBackend())
    assert full.memory["ram"] <= 256 * 1024 and full.buffer.capacity > 100
    dep = build_deployment(g, {**opts, "buffer": 32}, session, ArduinoBackend())
    ArduinoBackend().check(dep)
    assert len(dep.classifier) == 1 and dep.classifier[0].weight.shape == (10, 256)
    assert max_payload(96 * 96 * 3, dep.feature_count) == 110_593
    assert dep.memory["ram"] + 40 * 1024 <= 256 * 1024 and dep.memory["flash"] <= 1024 * 1024
    emit(ArduinoBackend(), dep, {}, tmp_path)
    if shutil.which("arm-none-eabi-gcc"):
        src = tmp_path / dep.name / "src"
        objs = []
        for c in sorted(src.glob("*.c")):
            objs.append(tmp_path / f"{c.stem}.o")
            subprocess.run(["arm-none-eabi-gcc", *c_harness.STRICT, "-Os", "-mcpu=cortex-m4", "-mthumb",
                            "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-I", str(src), "-c", str(c), "-o", str(objs[-1])],
                           check=True)
        sizes = subprocess.run(["arm-none-eabi-size", "-t", *map(str, objs)], capture_output=True, text=True,
                               check=True).stdout.splitlines()[-1].split()
        static_ram = int(sizes[1]) + int(sizes[2])  # data + bss
        assert 0 <= static_ram - (dep.memory["static_ram"] - CORE_RESERVE) <= 600, (static_ram, dep.memory["ram"])
    exe = arduino_harness.build_host_proto(tmp_path, dep.name, tmp_path / "proto_host")
    x = _inputs(m, 3, 9)
    sim = Simulator(dep)
    p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    ask = asker(p)
    try:
        for i in range(2):
            cmd, pl = ask(frame(b"P", x[i].tobytes()))
            ks, ps = sim.predict(x[i:i + 1])
            assert cmd == b"P" and pl[0] == ks[0]
            np.testing.assert_allclose(np.frombuffer(pl[1:], np.float32), ps[0], atol=1e-5)
        # issue #19 item 7: 27,648 floats (4 x input > 65,535) do not wrap the length: an empty predict is refused
        assert ask(frame(b"P")) == (b"E", b"\x03") and ask(frame(b"L", b"\x03")) == (b"E", b"\x03")
        # one byte over the largest frame: refused on its header, before any payload
        assert ask(frame(b"L", x[0].tobytes() + b"\x03\x00")[:7]) == (b"E", b"\x05")
        for i, label in ((0, 3), (1, 7)):  # the conv head learns on the device
            cmd, pl = ask(frame(b"L", x[i].tobytes() + bytes([label])))
            sim.learn(x[i], label)
            assert cmd == b"L" and struct.unpack("<I", pl)[0] == sim.buffer.count, (cmd, pl)
        cmd, pl = ask(frame(b"P", x[2].tobytes()))
        ks, ps = sim.predict(x[2:3])
        assert cmd == b"P" and pl[0] == ks[0]
        np.testing.assert_allclose(np.frombuffer(pl[1:], np.float32), ps[0], atol=1e-5)
        # `tinycc serial`'s host side packs the 110,592-byte input and reads the reply
        from types import SimpleNamespace

        from tinycc.plugins.applications.serial_cmd import Board

        pipe = SimpleNamespace(read=p.stdout.read, write=lambda b: (p.stdin.write(b), p.stdin.flush()))
        assert Board(pipe).predict(x[2]) == ks[0] and Board(pipe).status()[2:] == (2, dep.buffer.capacity)
    finally:
        p.kill()
