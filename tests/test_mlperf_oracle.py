"""The oracle of the MLPerf Tiny host test is TFLite's own: tests/test_kernels.py compares the generated C (ASan/UBSan)
with run_int8 on 100 inputs per model (ResNet-8, DS-CNN KWS, MobileNetV1 VWW); here run_int8 (the default, TFLite
Micro flavour the C follows, and the TFLite flavour) equals TFLite's BUILTIN_REF kernels at the cut on the same 100
inputs, so the C features are TFLite's bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.quant import quantize

from .conftest import mlperf_model
from .deploy_util import build_deployment
from .test_kernels import MLPERF_MODELS
from .test_tflite_reader import _ref


@pytest.mark.parametrize("name", MLPERF_MODELS)
def test_run_int8_equals_builtin_ref_on_the_host_test_inputs(session, name: str) -> None:
    path = mlperf_model(f"{name}.tflite")
    g = session.registry.frontend_for(str(path)).load(str(path))
    dep = build_deployment(g, {"buffer": 2}, session, CBackend())  # the deployment tests/test_kernels.py builds
    ext = dep.extractor
    q = next(op for op in ext.ops if op.kind.value == "quantize")
    qp = ext.tensors[q.outputs[0]].quant
    s, zp = float(qp.scale[0]), int(qp.zero_point[0])
    levels = np.random.default_rng(0).integers(-128, 128, (100, *ext.tensors[ext.inputs[0]].shape[1:]))
    x = ((levels - zp) * s).astype(np.float32)  # the same 100 inputs as the ASan/UBSan test
    ours = run_int8(ext, x)[ext.outputs[0]].reshape(len(x), -1)
    tflite = run_int8(ext, x, flavor="tflite")[ext.outputs[0]].reshape(len(x), -1)
    it = _ref(path)
    inp = it.get_input_details()[0]
    cut = {d["name"]: d["index"] for d in it.get_tensor_details()}[dep.meta["cut"]]
    for i in range(len(x)):
        it.set_tensor(inp["index"], quantize(x[i:i + 1], s, zp))
        it.invoke()
        ref = it.get_tensor(cut).reshape(-1)
        np.testing.assert_array_equal(tflite[i], ref, err_msg=f"{name}: run_int8 (tflite) on input {i}")
        np.testing.assert_array_equal(ours[i], ref, err_msg=f"{name}: run_int8 (the C's flavour) on input {i}")
