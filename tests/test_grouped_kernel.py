"""Grouped convolutions (groups 2/4) specialized by the kernel generator (backends/c/kernels/grouped.py): random
layers (stride 1/2, dilation 1/2, same/valid padding, with and without bias, odd and even per-group channel
counts) give exactly the int8 interpreter's features on the host (ASan/UBSan) and under QEMU Cortex-M4 (the DSP
dot products), Cortex-M0+ and Cortex-M55."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.ir.graph import Graph
from tinycc.ir.simulator import Simulator
from tinycc.passes import PassContext, run_pipeline

from . import c_harness
from .deploy_util import build_deployment, build_emit_model, render_project

# (groups, kernel, stride, dilation, same padding, output channels, activation, bias); input 9x7x8 then each
# layer's output
LAYERS = [(2, 3, 1, 1, True, 8, "relu", True), (4, 3, 1, 2, True, 8, "relu6", True),
          (4, 3, 2, 1, False, 12, "none", False), (2, 1, 1, 1, False, 6, "relu6", True),
          (2, 2, 2, 1, True, 10, "none", True), (2, 2, 1, 1, False, 6, "relu", False)]


def grouped_graph(layers: list[tuple], seed: int) -> Graph:
    """input 9x7x8 -> a pointwise conv to 8 channels -> the grouped layers -> flatten -> Dense(5) -> Dense head."""
    rng = np.random.default_rng(seed)
    g = Graph("grouped")
    g.add_input("x", (1, 9, 7, 3))
    w0 = g.add_const("w_in", rng.normal(0, 0.5, (8, 1, 1, 3)).astype(np.float32))
    src = g.add_op("conv2d", ["x", w0.name], "pw", {"padding": "valid", "strides": (1, 1), "dilation": (1, 1),
                                                    "activation": "none"}).outputs[0]
    for i, (groups, k, stride, dil, same, oc, act, bias) in enumerate(layers):
        c = g.tensors[src].shape[-1]
        wt = rng.normal(0, 0.5 / np.sqrt(k * k * c // groups), (oc, k, k, c // groups))
        wt[0] *= 0.05  # per-channel scales that differ a lot
        ins = [src, g.add_const(f"w{i}", wt.astype(np.float32)).name]
        if bias:
            ins.append(g.add_const(f"b{i}", rng.normal(0, 0.3, (oc,)).astype(np.float32)).name)
        attrs = {"padding": "same" if same else "valid", "strides": (stride, stride), "dilation": (dil, dil),
                 "activation": act, "groups": groups}
        src = g.add_op("conv2d", ins, f"g{i}", attrs).outputs[0]
    flat = g.add_op("flatten", [src], "flat").outputs[0]
    n = int(np.prod(g.tensors[flat].shape[1:]))
    d1 = g.add_const("fc_w", rng.normal(0, 1 / np.sqrt(n), (5, n)).astype(np.float32))
    fc = g.add_op("dense", [flat, d1.name], "fc", {"activation": "none"}).outputs[0]
    d2 = g.add_const("head_w", rng.normal(0, 0.3, (3, 5)).astype(np.float32))
    g.add_op("dense", [fc, d2.name], "head")
    g.add_op("softmax", ["head"], "prob")
    g.outputs = ["prob"]
    return g


def _project(session, tmp: Path, seed: int) -> tuple[Path, object, np.ndarray, str]:
    g = grouped_graph(LAYERS, seed)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    rng = np.random.default_rng(seed)
    shift = rng.uniform(0.5, 1.5)  # the input zero point away from 0
    calib = rng.normal(shift, 1, (48, 9, 7, 3)).astype(np.float32)
    x = rng.normal(shift, 1.3, (10, 9, 7, 3)).astype(np.float32)
    opts = {"calib_data": calib, "buffer": 2, "cut": "fc", "kernels": "tinycc"}
    dep = build_deployment(g, opts, session, CBackend())
    em = build_emit_model(dep, opts)
    fams = [k.family for k in em.kernels]
    assert fams.count("grouped") == len(LAYERS), fams  # every grouped geometry runs a generated kernel, none the runtime's
    assert not any(c.fn == "tcc_conv2d_s8" for c in em.calls), [c.fn for c in em.calls]
    render_project(dep, {**opts, "test_vectors": (x, np.zeros(len(x), np.int64)), "test_count": len(x),
                         "test_learn": 1}, tmp)
    model_c = (tmp / "model.c").read_text()
    return tmp, dep, x, model_c


@pytest.mark.parametrize("seed", [1, 7])
def test_grouped_layers_equal_int8_interpreter(session, tmp_path: Path, seed: int) -> None:
    proj, dep, x, model_c = _project(session, tmp_path, seed)
    assert "folded into the bias" in model_c  # a valid-padded layer with bias folds the input zero point
    assert "4 groups of 2 -> 3 channels" in model_c and "2 groups of 6 -> 3 channels" in model_c  # odd per group
    out = c_harness.run_host(c_harness.build_host(proj, sanitize=True))
    feats = Simulator(dep).features(x)
    assert len(out.features) == len(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("cpu", ["m4", "m0plus", "m55"])
def test_grouped_layers_under_qemu(session, tmp_path: Path, cpu: str) -> None:
    """M4: the DSP dot products; M0+: the Thumb-1 loops; M55: the same C (the Helium kernels leave groups out)."""
    proj, dep, x, _ = _project(session, tmp_path, 3)
    out, _ = c_harness.build_and_run_qemu(proj, cpu)
    feats = Simulator(dep).features(x)
    assert len(out.features) == len(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"{cpu} features of input {i}")
