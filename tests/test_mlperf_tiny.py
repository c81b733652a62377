"""MLPerf Tiny's converter models (../shared/models/mlperf-tiny) compiled with `--target c`: the generated C
computes run_int8's features bit for bit, and run_int8 (BUILTIN_REF flavour) equals TFLite at the cut.
(ad01 is an all-Dense autoencoder: the cut lands at its input, so its Φf is the input QUANTIZE alone.)"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from .deploy_util import render_project
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.quant import quantize
from .deploy_util import build_deployment
from tinycc.plugins.frontends.tflite import read_tflite
from tinycc.session import Session

from . import c_harness
from .conftest import mlperf_model
from .test_tflite_reader import _ref

MODELS = ["pretrainedResnet_quant.tflite", "kws_ref_model.tflite", "vww_96_int8.tflite", "ad01_int8.tflite"]


@pytest.mark.parametrize("name", MODELS)
def test_mlperf_model_compiles_to_c_bit_exactly(tmp_path: Path, name: str) -> None:
    path = mlperf_model(name)
    g = read_tflite(str(path))
    q = g.tensors[g.inputs[0]].quant
    s, zp = float(q.scale[0]), int(q.zero_point[0])
    dep = build_deployment(g, {"buffer": 2}, Session(autoload=False), CBackend())
    CBackend().check(dep)
    ext = dep.extractor
    rng = np.random.default_rng(0)
    x = (s * (rng.integers(-128, 128, (3,) + ext.tensors[ext.inputs[0]].shape[1:]) - zp)).astype(np.float32)
    render_project(dep, {"buffer": 2, "test_vectors": (x, np.zeros(3, np.int64)), "test_count": 3,
                         "test_learn": 1}, tmp_path)
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=False))
    feats = run_int8(ext, x)[ext.outputs[0]].reshape(len(x), -1)  # the simulator's features (TFLite Micro flavour)
    ref = run_int8(ext, x, flavor="tflite")[ext.outputs[0]].reshape(len(x), -1)
    it = _ref(path)
    index = {d["name"]: d["index"] for d in it.get_tensor_details()}
    inp = it.get_input_details()[0]
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"{name}: C features of input {i}")
        it.set_tensor(inp["index"], quantize(x[i:i + 1], s, zp))
        it.invoke()
        np.testing.assert_array_equal(it.get_tensor(index[dep.meta["cut"]]).reshape(-1), ref[i])
