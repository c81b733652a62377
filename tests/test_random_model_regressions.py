"""What random Keras models found (every layer kind tinycc reads, random shapes, through every target):

- fold_reshapes hoisted a per-channel activation above a channel-keeping reshape (a Conv1D's squeeze) and left the
  moved activation's output with the reshape's old parameters: in a converter file the activation's own output
  parameters were lost, the generated C computed the activation into the wrong scale (silently), run_int8 refused.
- tinycc's own quantization refused a fixed-parameter output (sigmoid, tanh) that meets another branch in a
  concatenation; it now inserts the requantizing QUANTIZE that TFLite's converter writes.
- a Dense applied to a feature map (Keras Dense on its last axis) before the Flatten -> Dense head left no cut point:
  the search for the head stopped at it instead of starting after it.

Oracles: TFLite's BUILTIN_REF tensor by tensor (the converter's file and tinycc's written file), TFLite Micro, the
float graph, and the generated C (host, ASan/UBSan) against the simulator."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tinycc.api import load_cleaned
from tinycc.ir.ops import OpKind
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model
from tinycc.plugins.frontends.tflite import read_tflite
from tinycc.plugins.passes import quantize as qz
from tinycc.tflite_writer import operator_names, write_tflite

from .deploy_util import build_deployment
from .op_checks import (assert_builtin_ref_equals_run_int8, assert_c_project_learns_like_the_simulator,
                        assert_written_runs_like_run_int8)
from .test_layout_ops import _convert, _x

pytest.importorskip("ai_edge_litert.interpreter")


def _conv1d_hard_swish():
    """Conv1D (the converter's ExpandDims, CONV_2D, squeeze RESHAPE), HARD_SWISH, Flatten, Dense."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(25)
    inp = keras.Input((16, 1))
    x = L.BatchNormalization()(inp)
    x = L.Conv1D(8, 5, name="c1")(x)
    x = L.Activation("hard_swish", name="hs")(x)
    x = L.Flatten()(x)
    return keras.Model(inp, L.Dense(6, activation="softmax", name="head")(x))


def _sigmoid_concat(softmax: bool = True):
    """A sigmoid whose output (fixed int8 parameters 1/256, -128), padded, is concatenated with a convolution of it;
    a tanh's output concatenated with another branch."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(14)
    inp = keras.Input((8, 10, 2))
    x = L.Conv2D(6, 3, name="c1")(inp)
    x = L.Activation("sigmoid", name="sig")(x)
    x = L.ZeroPadding2D(1)(x)
    y = L.Conv2D(5, 1, name="c2")(x)
    x = L.Concatenate(name="cat")([x, y])
    x = L.Activation("tanh", name="th")(x)
    x = L.Concatenate(name="cat2")([L.Conv2D(3, 1, name="c3")(x), x])
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4, activation="softmax" if softmax else None, name="head")(x))


def test_hoisted_activation_keeps_its_own_parameters(session, tmp_path: Path) -> None:
    m = _conv1d_hard_swish()
    path = tmp_path / "m.tflite"
    path.write_bytes(_convert(m, _x(m, 32)))
    g = load_cleaned(str(path), session)
    hs = next(o for o in g.ops if o.kind == OpKind.HARD_SWISH)
    assert g.producer(hs.inputs[0]).kind == OpKind.CONV2D  # hoisted above the squeeze
    assert g.tensors[hs.outputs[0]].quant.equals(g.tensors[g.consumers(hs.outputs[0])[0].outputs[0]].quant)
    x = np.random.default_rng(1).integers(-128, 128, (40, 16, 1)).astype(np.int8)
    names, _ = assert_builtin_ref_equals_run_int8(g, path.read_bytes(), x)
    assert g.outputs[0] in names


def test_hoisted_activation_c_project_equals_the_simulator(session, tmp_path: Path) -> None:
    from tinycc.backends.c import CBackend

    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    m = _conv1d_hard_swish()
    path = tmp_path / "m.tflite"
    path.write_bytes(_convert(m, _x(m, 32)))
    opts = {"buffer": 4, "lr": 0.05}
    dep = build_deployment(load_cleaned(str(path), session), opts, session, CBackend())
    x = _x(m, 6, 3)
    assert_c_project_learns_like_the_simulator(dep, opts, x, np.arange(6) % dep.num_classes, tmp_path / "c")


def test_fixed_output_meeting_another_branch_gets_a_requantize(session) -> None:
    m = _sigmoid_concat(softmax=False)  # int8 logits: the written file is integer end to end
    g = graph_from_keras_model(m)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    fg = g.copy()
    run_pipeline(g, session.registry.pipeline("int8"), PassContext(session=session, calib=_x(m, 64, 7)))
    req = [o for o in g.ops if o.kind == OpKind.QUANTIZE and g.tensors[o.inputs[0]].dtype.value == "int8"]
    assert {g.producer(o.inputs[0]).kind for o in req} == {OpKind.SIGMOID, OpKind.TANH}
    for o in req:  # the fixed op keeps its specified output; the requantized copy has the branch's parameters
        src, dst = g.tensors[o.inputs[0]].quant, g.tensors[o.outputs[0]].quant
        assert not src.equals(dst)
    sig = next(o for o in g.ops if o.kind == OpKind.SIGMOID)
    q = g.tensors[sig.outputs[0]].quant
    assert (float(q.scale[0]), int(q.zero_point[0])) == (1 / 256, -128)
    data = write_tflite(g)
    assert "QUANTIZE" in operator_names(data)  # the input's and the two requantizations (one operator code)
    assert_written_runs_like_run_int8(g, data, _x(m, 24, 9), fg)


def test_requantize_fixed_outputs_leaves_consistent_groups_alone() -> None:
    from .test_quantize import _sigmoid_graph

    g = _sigmoid_graph(False)  # a reshape after the fixed op inherits its parameters: nothing to requantize
    ranges = {"x": (-3.0, 3.0), "sig": (0.05, 0.95), "th": (-0.99, 0.99), "th2": (-0.99, 0.99)}
    assert qz.requantize_fixed_outputs(g, ranges) == 0
    g = _sigmoid_graph(True)
    ranges["cat"] = (-3.0, 3.0)
    assert qz.requantize_fixed_outputs(g, ranges) == 1
    p = qz.activation_params(g, ranges)
    assert (float(p["sig"].scale[0]), int(p["sig"].zero_point[0])) == (1 / 256, -128)
    new = next(o for o in g.ops if o.kind == OpKind.QUANTIZE).outputs[0]
    assert p[new].equals(p["cat"]) and p["x"].equals(p["cat"])


def test_sigmoid_concat_c_project_equals_the_simulator(session, tmp_path: Path) -> None:
    from tinycc.backends.c import CBackend

    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    m = _sigmoid_concat()
    opts = {"buffer": 4, "lr": 0.05, "calib_data": _x(m, 64, 7)}
    dep = build_deployment(graph_from_keras_model(m), opts, session, CBackend())
    assert any(o.kind == OpKind.QUANTIZE and o.inputs[0] not in dep.extractor.inputs for o in dep.extractor.ops)
    x = _x(m, 6, 3)
    assert_c_project_learns_like_the_simulator(dep, opts, x, np.arange(6) % dep.num_classes, tmp_path / "c")


def test_dense_on_a_feature_map_stays_in_the_extractor(session) -> None:
    import keras
    from keras import layers as L

    from tinycc.backends.c import CBackend
    from tinycc.deploy.learning import cut_candidates

    keras.utils.set_random_seed(107)
    inp = keras.Input((6, 8, 2))
    x = L.Conv2D(6, 3, padding="same", name="c1")(inp)
    x = L.Dense(6, activation="tanh", name="fmap_dense")(x)  # per pixel, on the channel axis
    x = L.Flatten(name="flat")(x)
    x = L.Dense(8, activation="relu", name="hidden")(x)
    m = keras.Model(inp, L.Dense(3, activation="softmax", name="head")(x))
    g = graph_from_keras_model(m)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    cands = cut_candidates(g)
    assert len(cands) == 2  # before `hidden` and before `head`; never before the feature map's Dense
    dep = build_deployment(g, {"buffer": 4, "calib_data": _x(m, 32, 1)}, session, CBackend())
    assert dep.feature_count == 6 * 8 * 6 and [l.n_out for l in dep.classifier] == [8, 3]
    assert any(o.origin == "fmap_dense" for o in dep.extractor.ops)
