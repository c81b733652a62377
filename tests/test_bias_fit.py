"""Dead filters with a bias (BatchNorm gamma ~ 0, as in the trained MLPerf Tiny VWW model): the int32
bias must fit, the channel must output its bias, and the generated C must equal run_int8 (UBSan)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tinycc.backends.c import CBackend
from .deploy_util import render_project
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.quant import BIAS_LIMIT, bias_fitting_scales, quantize_bias, symmetric_weight_scales
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model
from .deploy_util import build_deployment

from . import c_harness


def test_bias_fitting_scales_unit() -> None:
    w = np.array([[1e-33, -2e-33], [0.5, -0.25]], np.float32)
    b = np.array([0.7, 0.1], np.float32)
    s = symmetric_weight_scales(w, 0)
    fit = bias_fitting_scales(b, 0.02, s)
    assert fit[1] == s[1] and fit[0] > s[0]  # only the dead filter changes
    q, _ = quantize_bias(b, 0.02, fit)
    assert np.abs(q.astype(np.int64)).max() <= BIAS_LIMIT
    q0, _ = quantize_bias(b, 0.02, s)
    assert np.abs(q0.astype(np.int64)).max() == 2 ** 31 - 1  # what the old scales gave: a saturated bias


def test_dead_filters_compile_and_match(session, tmp_path: Path) -> None:
    import keras

    L = keras.layers
    keras.utils.set_random_seed(11)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="conv")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(3, activation="softmax", name="head")(x)
    m = keras.Model(inp, out)
    bn = m.get_layer("bn")
    gamma = np.linspace(0.5, 1.5, 8).astype(np.float32)
    gamma[[1, 4, 6]] = 1e-30  # dead filters after folding; their beta stays
    bn.gamma.assign(gamma)
    bn.beta.assign(np.linspace(0.2, 0.9, 8).astype(np.float32))
    g = graph_from_keras_model(m)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    rng = np.random.default_rng(0)
    calib, x_in = rng.uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32), rng.uniform(-1, 1, (3, 8, 8, 3)).astype(np.float32)
    opts = {"calib_data": calib, "buffer": 2}
    dep = build_deployment(g, opts, session, CBackend())
    ext = dep.extractor
    for op in ext.ops:
        if len(op.inputs) > 2:
            assert np.abs(ext.tensors[op.inputs[2]].data.astype(np.int64)).max() <= BIAS_LIMIT
    feats = run_int8(ext, x_in)[ext.outputs[0]].reshape(3, -1)
    q = ext.tensors[ext.outputs[0]].quant
    real = (feats.astype(np.float32) - q.zero_point[0]) * q.scale[0]
    ref = run(g, x_in, [dep.meta["cut"]])[dep.meta["cut"]].reshape(3, -1)
    assert np.abs(real[:, [1, 4, 6]] - ref[:, [1, 4, 6]]).max() <= 2 * q.scale[0]  # the dead channels give beta
    render_project(dep, {**opts, "test_vectors": (x_in, np.zeros(3, np.int64)), "test_count": 3, "test_learn": 1},
                   tmp_path)
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True))
    for i in range(3):
        np.testing.assert_array_equal(out.features[i], feats[i])
