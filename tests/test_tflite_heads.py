"""Heads from `.tflite` files: a 1x1 CONV_2D on a 1x1 map after pooling is a Dense layer for the cut, float and int8
(the person-detection / converted MobileNet head: MEAN -> 1x1 CONV_2D -> RESHAPE -> SOFTMAX), so a converter's int8
classifier learns on the device: the generated C (ASan/UBSan) computes run_int8's features and trains the head as
the simulator does. An explicit --cut that names nothing says so, with the valid cut points, on one line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.errors import TinyccError
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.ops import OpKind
from tinycc.ir.simulator import Simulator
from tinycc.passes import PassContext, run_pipeline
from tinycc.deploy.learning import cut_candidates
from tinycc.plugins.frontends.tflite import read_tflite

from . import c_harness
from .deploy_util import build_deployment, render_project
from .test_conv_head import _conv_head
from .test_layout_ops import _convert

litert = pytest.importorskip("ai_edge_litert.interpreter")


def _inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 16, 16, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("heads")
    paths = {}
    for two in (False, True):
        m = _conv_head(two)
        for kind, calib in (("int8", _inputs(32, 0)), ("float", None)):
            p = out / f"{m.name}_{kind}.tflite"
            p.write_bytes(_convert(m, calib))
            paths[f"{m.name}_{kind}"] = p
    return paths


@pytest.mark.parametrize("name", ["conv_head_int8", "conv_head2_int8", "conv_head_float", "conv_head2_float"])
def test_conv_head_is_a_dense_head(session, files, name: str) -> None:
    g = read_tflite(str(files[name]))
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    heads = 2 if name.startswith("conv_head2") else 1
    assert len(cut_candidates(g)) == heads
    if name.endswith("int8"):  # the file's int8 1x1 CONV_2D ops stay: the cut reads them as Dense layers
        assert [o.kind for o in g.ops].count(OpKind.CONV2D) >= heads + 2
    dep = build_deployment(g, {"buffer": 4, "calib_data": _inputs(16, 1)}, session, CBackend())
    assert dep.feature_count == 12 and [l.n_out for l in dep.classifier] == ([9, 5] if heads == 2 else [5])
    assert dep.classifier[-1].activation == "softmax" and (heads == 1 or dep.classifier[0].activation == "relu")
    if name.endswith("int8"):  # the float head starts as the file's int8 head: the same probabilities, near enough
        x = _inputs(20, 2)
        _, probs = Simulator(dep).predict_features(Simulator(dep).features(x))
        assert np.abs(probs - file_probabilities(files[name], x)).max() < 0.03


def file_probabilities(path: Path, x: np.ndarray) -> np.ndarray:
    """BUILTIN_REF's dequantized outputs of the int8 file at ``path`` for float inputs ``x`` (quantized as the file
    says)."""
    it = litert.Interpreter(model_path=str(path), experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    (si, zi), (so, zo) = inp["quantization"], outp["quantization"]
    ref = []
    for i in range(len(x)):
        it.set_tensor(inp["index"], np.clip(np.round(x[i:i + 1] / si) + zi, -128, 127).astype(np.int8))
        it.invoke()
        ref.append((it.get_tensor(outp["index"])[0].astype(np.float32) - zo) * so)
    return np.stack(ref)


def test_int8_tflite_conv_head_learns_on_the_device_in_c(session, files, tmp_path: Path) -> None:
    g = read_tflite(str(files["conv_head2_int8"]))
    opts = {"buffer": 4, "lr": 0.05}
    dep = build_deployment(g, opts, session, CBackend())
    x, y = _inputs(4, 3), np.array([1, 4, 0, 2])
    render_project(dep, {**opts, "test_vectors": (x, y), "test_count": 4, "test_learn": 4}, tmp_path)
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    feats = run_int8(dep.extractor, x)[dep.extractor.outputs[0]].reshape(4, -1)
    sim = Simulator(dep)
    for i in range(4):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")
        sim.learn_features(feats[i], int(y[i]))
    assert out.buffer == sim.buffer.count == 4
    for k, layer in enumerate(sim.classifier.layers):
        w = layer.weight
        assert np.abs(out.weights[k] - w.reshape(-1)).max() <= 1e-4 * max(np.abs(w).max(), 1e-3)
    last = len(dep.classifier) - 1
    assert not np.array_equal(out.weights[last], dep.classifier[last].weight.reshape(-1))  # it learned


def test_cut_that_names_nothing_lists_the_cut_points(session, files, tmp_path: Path) -> None:
    g = read_tflite(str(files["conv_head2_int8"]))
    with pytest.raises(TinyccError, match=r"--cut 'nonexistent' names no layer or tensor of the model; "
                                          r"valid cut points: .*gap.*Mean, .*hidden"):
        build_deployment(g, {"cut": "nonexistent"}, session, CBackend())
    cands = cut_candidates(g)
    dep = build_deployment(read_tflite(str(files["conv_head2_int8"])), {"cut": cands[1].tensor}, session, CBackend())
    assert [l.n_out for l in dep.classifier] == [5]
    r = subprocess.run([sys.executable, "-m", "tinycc.cli", "compile", str(files["conv_head2_int8"]), "--cut",
                        "nonexistent", "--target", "c", "-o", str(tmp_path / "out")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "names no layer or tensor" in r.stderr and "valid cut points" in r.stderr
