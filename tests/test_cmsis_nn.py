"""``--kernels cmsis-nn``: the generated C built against the vendored CMSIS-NN snapshot equals run_int8 bit for bit
(host gcc -Werror with ASan/UBSan, Cortex-M4 DSP path and Cortex-M0+ portable path under QEMU), the scratch buffer
is in the memory figures, and the option is refused where CMSIS-NN cannot run."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path


import numpy as np
import pytest

from tinycc.backends.c import CBackend, cmsis_nn
from .deploy_util import render_project
from tinycc.errors import TinyccError
from tinycc.ir.simulator import Simulator
from .deploy_util import build_deployment

from . import c_harness
from .test_c_backend import CASES, N_INPUTS, _graph

ROOT = Path(__file__).resolve().parents[1]
VENDOR = Path(os.environ.get("TINYCC_VENDOR", ROOT.parent / "shared" / "vendor"))
OPTS = {"kernels": "cmsis-nn"}


@pytest.fixture(scope="session")
def cmsis_dir(tmp_path_factory) -> Path:
    """CMSIS_NN_DIR: the vendored snapshot extracted once into the user cache (TINYCC_CACHE)."""
    archive = cmsis_nn.vendor_archive(VENDOR)
    if archive is None:
        pytest.skip(f"no cmsis-nn-*.tar.xz in {VENDOR} (set TINYCC_VENDOR)")
    return cmsis_nn.extract(archive)


@pytest.fixture(scope="session")
def cmsis_lib(cmsis_dir: Path, tmp_path_factory) -> c_harness.CmsisLib:
    return c_harness.build_cmsis_lib(cmsis_dir, tmp_path_factory.mktemp("cmsis-nn-asan"))


def _deployment(session, name: str, extra: dict | None = None):
    g, x, y, calib = _graph(session, name)
    opts = {"calib_data": calib, **CASES[name], **OPTS, **(extra or {})}
    return build_deployment(g, opts, session, CBackend()), opts, x, y


def _cmsis_calls(project: Path) -> int:
    return sum(line.lstrip().startswith(("tcc_cmsis_", "if (!xq) tcc_cmsis_"))
               for line in (project / "model.c").read_text().splitlines())


@pytest.mark.parametrize("name", list(CASES))
def test_cmsis_nn_matches_run_int8(session, cmsis_lib, tmp_path: Path, name: str) -> None:
    dep, opts, x, y = _deployment(session, name)
    render_project(dep, {**opts, "test_vectors": (x, y), "test_count": N_INPUTS, "test_learn": 4}, tmp_path)
    ext = dep.extractor
    assert _cmsis_calls(tmp_path) == sum(cmsis_nn.supports(ext, op) for op in ext.ops)
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True, cmsis=cmsis_lib))
    feats = Simulator(dep).features(x)  # run_int8 (TFLite Micro flavour)
    for i in range(N_INPUTS):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")
    # the scratch buffer is part of the exact RAM figure, and the compiled arrays are exactly that figure
    scratch = cmsis_nn.scratch_bytes(ext, dep.config.kernels)
    assert dep.config.kernels == "cmsis-nn"
    report = {i["name"]: i["bytes"] for i in dep.memory["items"]}
    assert report.get("kernel scratch", 0) == scratch
    assert out.memory["ram"] == dep.memory["ram"]
    assert c_harness.symbol_sizes(tmp_path / "demo_asan").get("tcc_scratch", 0) == scratch
    assert c_harness.model_ram(tmp_path / "demo_asan") == dep.memory["static_ram"]


GETSIZE = r"""
#include <stdio.h>
#include "arm_nnfunctions.h"
static int32_t mx(int32_t a, int32_t b) { return a > b ? a : b; }
int main(void) {
    int32_t v[][15] = {
%s
    };
    unsigned i;
    for (i = 0; i < sizeof(v) / sizeof(v[0]); ++i) {
        const int32_t *a = v[i];
        cmsis_nn_dims in = {1, a[1], a[2], a[3]}, f = {a[4], a[5], a[6], a[7]}, out = {1, a[8], a[9], a[4]};
        cmsis_nn_conv_params c = {0, 0, {a[11], a[10]}, {a[12] >> 8, a[12] & 0xff}, {a[14], a[13]}, {-128, 127}};
        cmsis_nn_dw_conv_params d = {0, 0, a[4] / a[3], {a[11], a[10]}, {a[12] >> 8, a[12] & 0xff}, {a[14], a[13]}, {-128, 127}};
        int32_t n = 0;
        if (a[0] == 0) n = mx(arm_convolve_wrapper_s8_get_buffer_size(&c, &in, &f, &out),
                              arm_convolve_wrapper_s8_get_buffer_size_dsp(&c, &in, &f, &out));
        if (a[0] == 1) { f.c = a[4]; f.n = 1; n = mx(arm_depthwise_conv_wrapper_s8_get_buffer_size(&d, &in, &f, &out),
                                                     arm_depthwise_conv_wrapper_s8_get_buffer_size_dsp(&d, &in, &f, &out)); }
        if (a[0] == 2) n = mx(arm_avgpool_s8_get_buffer_size(a[9], a[3]), arm_avgpool_s8_get_buffer_size_dsp(a[9], a[3]));
        printf("%%ld\n", (long)n);
    }
    return 0;
}
"""


def test_scratch_covers_cmsis_nn_on_every_core(session, cmsis_lib, tmp_path: Path) -> None:
    """Per layer of every model, tinycc's compile-time scratch size is at least what CMSIS-NN's own
    *_get_buffer_size asks for on the portable path and on the DSP path (Cortex-M4/M7), which the host can call."""
    from tinycc.ir.ops import OpKind

    rows, want = [], []
    for name in CASES:
        g = _deployment(session, name)[0].extractor
        for op in g.ops:
            if not cmsis_nn.supports(g, op) or op.kind not in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D,
                                                               OpKind.AVG_POOL2D, OpKind.GLOBAL_AVG_POOL):
                continue
            x, y = g.tensors[op.inputs[0]].shape, g.tensors[op.outputs[0]].shape
            if op.kind in (OpKind.AVG_POOL2D, OpKind.GLOBAL_AVG_POOL):
                oh, ow = (1, 1) if op.kind == OpKind.GLOBAL_AVG_POOL else y[1:3]
                rows.append([2, *x[1:4], x[3], 1, 1, 1, oh, ow, 1, 1, 0, 1, 1])
            else:
                w = g.tensors[op.inputs[1]].shape
                pt, pl = cmsis_nn._pads(g, op, w[1], w[2])
                kind, fc = (0, w[3]) if op.kind == OpKind.CONV2D else (1, y[3])
                rows.append([kind, *x[1:4], y[3], w[1], w[2], fc, *y[1:3], *op.attrs["strides"], pt | (pl << 8),
                             *op.attrs["dilation"]])
            want.append(cmsis_nn.op_scratch(g, op))
    assert len(rows) > 20
    src = tmp_path / "sizes.c"
    src.write_text(GETSIZE % ",\n".join("        {" + ", ".join(str(int(v)) for v in r) + "}" for r in rows))
    exe = tmp_path / "sizes"
    subprocess.run(["gcc", "-std=c99", "-w", "-isystem", str(cmsis_lib.include), "-o", str(exe), str(src),
                    str(cmsis_lib.lib), *c_harness.SANITIZE], check=True)
    got = [int(v) for v in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()]
    assert len(got) == len(want)
    for r, g_, w_ in zip(rows, got, want):
        assert w_ >= g_, f"layer {r}: tinycc sized {w_} bytes, CMSIS-NN asks for {g_}"


@pytest.mark.skipif(not c_harness.have_arm(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("name,cpu", [("digits", "m4"), ("mobilenet_v2", "m4"), ("resnet_add", "m0plus")])
def test_cmsis_nn_qemu_matches_host(session, cmsis_dir: Path, tmp_path: Path, name: str, cpu: str) -> None:
    """CMSIS-NN's DSP path (SMLAD, Cortex-M4) and portable path (Cortex-M0+) under QEMU: the int8 features equal
    run_int8 bit for bit, as on the host."""
    dep, opts, x, y = _deployment(session, name)
    n = 10
    render_project(dep, {**opts, "test_vectors": (x[:n], y[:n]), "test_count": n, "test_learn": 2}, tmp_path)
    dev, sections = c_harness.build_and_run_qemu(tmp_path, cpu, None, cmsis_dir)
    feats = Simulator(dep).features(x[:n])
    for i in range(n):
        np.testing.assert_array_equal(dev.features[i], feats[i], err_msg=f"features of input {i} on {cpu}")
    assert dev.instructions["features"] > 0 and sections[".bss"] >= dep.memory["static_ram"]


def test_cli_project_builds_with_its_makefile(tmp_path: Path, cmsis_dir: Path) -> None:
    """`tinycc compile --kernels cmsis-nn` then the generated Makefile with CMSIS_NN_DIR (host, -Werror): the demo
    prints the same features as the default kernels' project."""
    from tinycc.cli import main

    outs = {}
    for kernels in ("tinycc", "cmsis-nn"):
        proj = tmp_path / kernels
        assert main(["compile", str(ROOT / "examples" / "digits_cnn.h5"), "--target", "c", "--calib",
                     str(ROOT / "examples" / "digits_data.npz"), "-o", str(proj), "--kernels", kernels]) == 0
        r = subprocess.run(["make", "-s", "-C", str(proj), "run", "DUMP=1", f"CMSIS_NN_DIR={cmsis_dir}"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        outs[kernels] = c_harness.parse(r.stdout)
    readme = (tmp_path / "cmsis-nn" / "README.md").read_text()
    assert "CMSIS_NN_DIR" in readme
    assert outs["tinycc"].features and all(np.array_equal(outs["tinycc"].features[i], outs["cmsis-nn"].features[i])
                                           for i in outs["tinycc"].features)


@pytest.mark.parametrize("deep", ["bias", "blocks"])
def test_deep_project_builds_with_cmsis_nn(tmp_path: Path, cmsis_dir: Path, deep: str) -> None:
    """`--deep bias|blocks --kernels cmsis-nn`: the front runs on CMSIS-NN (its scratch declared, as the report
    counts it), the project builds with -Werror and prints the same features, probabilities and trained
    parameters before and after learning as the default kernels' deep project."""
    from tinycc.cli import main

    outs = {}
    for kernels in ("tinycc", "cmsis-nn"):
        proj = tmp_path / kernels
        assert main(["compile", str(ROOT / "examples" / "digits_cnn.h5"), "--target", "c", "--calib",
                     str(ROOT / "examples" / "digits_data.npz"), "-o", str(proj), "--kernels", kernels,
                     "--deep", deep]) == 0
        r = subprocess.run(["make", "-s", "-C", str(proj), "run", "DUMP=1", f"CMSIS_NN_DIR={cmsis_dir}"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        outs[kernels] = r.stdout
    assert _cmsis_calls(tmp_path / "cmsis-nn") > 0 and _cmsis_calls(tmp_path / "tinycc") == 0
    ref, got = c_harness.parse(outs["tinycc"]), c_harness.parse(outs["cmsis-nn"])
    assert ref.features and all(np.array_equal(ref.features[i], got.features[i]) for i in ref.features)
    def dump(text: str) -> list[str]:  # every printed value but the host timings
        return [line for line in text.splitlines()[2:] if not line.startswith("time_us")]

    assert len(dump(outs["tinycc"])) > 10 and dump(outs["tinycc"]) == dump(outs["cmsis-nn"])


def test_kernels_option_refused_where_cmsis_nn_cannot_run() -> None:
    from tinycc.backends.arduino import ArduinoBackend
    from tinycc.backends.tflm import TflmBackend

    from tinycc.ir.graph import Graph
    from tinycc.ir.tensor import QuantParams

    from .deploy_util import whole_model

    g = Graph("relu")
    g.add_input("x", (1, 4), "int8").quant = QuantParams([0.1], [0])
    g.add_op("relu", ["x"], "y", {}, output_dtype="int8")
    g.tensors["y"].quant = QuantParams([0.1], [0])
    g.outputs = ["y"]
    for backend in (ArduinoBackend(), TflmBackend()):
        with pytest.raises(TinyccError, match="cmsis-nn"):
            backend.check(whole_model(g, kernels="cmsis-nn"))
    assert cmsis_nn.enabled("cmsis-nn") and not cmsis_nn.enabled("generic") and not cmsis_nn.enabled("tinycc")


def test_cli_rejects_unknown_kernels(tmp_path: Path, capsys) -> None:
    from tinycc.cli import main

    with pytest.raises(SystemExit) as e:
        main(["compile", str(ROOT / "examples" / "digits_cnn.h5"), "--target", "c", "-o", str(tmp_path / "o"),
              "--kernels", "fast"])
    assert e.value.code == 2 and "--kernels" in capsys.readouterr().err


def test_grouped_convolutions_with_cmsis_nn_equal_run_int8(session, cmsis_lib, tmp_path: Path) -> None:
    """`--kernels cmsis-nn` on grouped convolutions: CMSIS-NN's convolution wrapper is not called for them (its
    output differed from run_int8); tinycc's own grouped kernel runs them, the rest stays on CMSIS-NN."""
    from tinycc.passes import PassContext, run_pipeline

    from .test_grouped_kernel import LAYERS, grouped_graph

    g = grouped_graph(LAYERS, 3)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    rng = np.random.default_rng(3)
    calib = rng.normal(1.0, 1, (48, 9, 7, 3)).astype(np.float32)
    x = rng.normal(1.0, 1.3, (6, 9, 7, 3)).astype(np.float32)
    opts = {"calib_data": calib, "buffer": 2, "cut": "fc", **OPTS}
    dep = build_deployment(g, opts, session, CBackend())
    ext = dep.extractor
    assert not any(cmsis_nn.supports(ext, op) for op in ext.ops if op.attrs.get("groups", 1) > 1)
    assert any(cmsis_nn.supports(ext, op) for op in ext.ops)
    render_project(dep, {**opts, "test_vectors": (x, np.zeros(len(x), np.int64)), "test_count": len(x),
                         "test_learn": 1}, tmp_path)
    out = c_harness.run_host(c_harness.build_host(tmp_path, sanitize=True, cmsis=cmsis_lib))
    feats = Simulator(dep).features(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"features of input {i}")
