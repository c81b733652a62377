"""The im2col convolution path (short kernel rows, e.g. a first layer on an image) on Cortex-M4/M7 widens the
windows of interior pixel pairs straight from the input, in the order `conv.window_order` gives the widened
weights (each kernel row's whole words, then the rows' leftover bytes); border pairs are gathered first. Checked
against the int8 interpreter under QEMU (the assembly path) and on the host with ASan/UBSan (portable path)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.backends.c.kernels import conv
from tinycc.ir.simulator import Simulator
from tinycc.passes import PassContext, run_pipeline

from . import c_harness
from .deploy_util import build_deployment, build_emit_model, render_project
from .test_kernels import Layer, random_graph

HW = (9, 11)  # odd output widths: a last pixel without a partner


def _project(session, tmp: Path, layers: list[Layer], cin: int, seed: int) -> tuple[Path, object, np.ndarray]:
    g = random_graph(layers, hw=HW, cin=cin, seed=seed)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    rng = np.random.default_rng(seed)
    shift = rng.uniform(-1.5, 1.5)  # an input zero point away from 0
    calib = rng.normal(shift, 1, (48, *HW, cin)).astype(np.float32)
    x = rng.normal(shift, 1.3, (6, *HW, cin)).astype(np.float32)
    opts = {"calib_data": calib, "buffer": 2, "cut": "fc", "kernels": "tinycc"}
    dep = build_deployment(g, opts, session, CBackend())
    em = build_emit_model(dep, opts)
    assert [k.family for k in em.kernels][:1] == ["conv"]
    render_project(dep, {**opts, "test_vectors": (x, np.zeros(len(x), np.int64)), "test_count": len(x),
                         "test_learn": 1}, tmp)
    return tmp, dep, x


# (input channels, first layer): kernel rows of 3 (no whole word), 6, 9, 15 bytes (leftovers of 3, 2, 1, 3
# bytes) and 12 (none); stride 1 and 2, same and valid padding, no bias with the input zero point not folded;
# an odd channel count and dilation 2 (both gathered)
CASES: list[tuple[int, Layer]] = [
    (1, (0, 3, 3, 1, 1, True, 6, 1, True)),
    (2, (0, 3, 3, 2, 1, True, 4, 0, True)),
    (3, (0, 3, 3, 2, 1, True, 8, 2, True)),
    (3, (0, 5, 5, 1, 1, False, 5, 0, False)),
    (4, (0, 2, 3, 1, 1, True, 6, 1, True)),
    (3, (0, 3, 3, 1, 2, True, 4, 1, True)),
]


def test_window_order_is_each_rows_words_then_the_leftover_bytes(session) -> None:
    for cin, layer in CASES:
        g = random_graph([layer], hw=HW, cin=cin)
        op = g.ops[0]
        kh, kw, c = g.tensors[op.inputs[1]].shape[1:]
        row = kw * c
        order = conv.window_order(g, op)
        assert len(order) == (kh * row + 3) // 4 * 4
        assert sorted(i for i in order if i >= 0) == list(range(kh * row))  # every weight once, zeros after
        assert all(i < 0 for i in order[kh * row:])
        whole = row - row % 4
        assert order[:kh * whole] == [ky * row + b for ky in range(kh) for b in range(whole)]
        assert conv.leftover_bytes(g, op) == [(ky, whole + b) for ky in range(kh) for b in range(row % 4)]


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("case", range(len(CASES)))
def test_widened_windows_bit_exact_under_qemu(session, tmp_path: Path, case: int) -> None:
    cin, layer = CASES[case]
    proj, dep, x = _project(session, tmp_path, [layer, (1, 3, 3, 1, 1, True, 0, 0, True)], cin, 7 + case)
    model_c = (proj / "model.c").read_text()
    # widened straight from the input unless dilated or with an odd channel count (the last channel's int8 dot
    # product reads the gathered window)
    assert "colw[" in model_c and ("ixa >= 0" in model_c) == (layer[4] == 1 and layer[6] % 2 == 0)
    feats = Simulator(dep).features(x)
    for cpu in ("m4", "m7") if case == 2 else ("m4",):
        out, _ = c_harness.build_and_run_qemu(proj, cpu)
        assert len(out.features) == len(x)
        for i in range(len(x)):
            np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"{cpu} features of input {i}")


def test_portable_path_bit_exact_with_sanitizers(session, tmp_path: Path) -> None:
    cin, layer = CASES[2]
    proj, dep, x = _project(session, tmp_path, [layer], cin, 3)
    out = c_harness.run_host(c_harness.build_host(proj, sanitize=True))
    feats = Simulator(dep).features(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")
