"""Published model files nobody here wrote (tests/data/tflm-published: the TFLite converter's files from TensorFlow
Lite Micro's repository, 16x8 SEANet layers and int8 examples): tinycc imports each, its interpreter equals TFLite's
BUILTIN_REF kernels and TFLite Micro bit for bit, and the generated C (ASan/UBSan) equals its interpreter."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.deploy.inference import full_graph
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.plugins.frontends.tflite import read_tflite

from . import c_harness
from .deploy_util import build_inference, render_project

litert = pytest.importorskip("ai_edge_litert.interpreter")
DATA = Path(__file__).parent / "data" / "tflm-published"
FILES = sorted(p.name for p in DATA.glob("*.tflite"))
N = 3


def _samples(g, seed: int) -> list[dict[str, np.ndarray]]:
    """``N`` random inputs over each input's whole integer range, in the IR's shapes (SEANet's SUB reads a
    batch-less [64] operand, which the reader gives a leading batch of 1)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(N):
        feed = {}
        for name in g.inputs:
            t = g.tensors[name]
            info = np.iinfo(t.dtype.numpy)
            feed[name] = rng.integers(info.min, info.max + 1, t.shape).astype(t.dtype.numpy)
        out.append(feed)
    return out


def _builtin_ref(path: Path, feeds: list[dict[str, np.ndarray]], names: list[str]) -> list[list[np.ndarray]]:
    it = litert.Interpreter(model_path=str(path), experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    outs = []
    for feed in feeds:
        it.reset_all_variables()
        for name, d in zip(names, it.get_input_details()):
            it.set_tensor(d["index"], feed[name].reshape(d["shape"]))  # the file's own shape
        it.invoke()
        outs.append([it.get_tensor(d["index"]) for d in it.get_output_details()])
    return outs


def _tflm(path: Path, feeds: list[dict[str, np.ndarray]], names: list[str]) -> list[list[np.ndarray]]:
    from tflite_micro.python.tflite_micro import runtime

    tm = runtime.Interpreter.from_bytes(path.read_bytes(), arena_size=1 << 21)
    outs = []
    for feed in feeds:
        tm.reset()
        for i, name in enumerate(names):
            tm.set_input(feed[name].reshape(tm.get_input_details(i)["shape"]), i)
        tm.invoke()
        outs.append([tm.get_output(0)])
    return outs


@pytest.mark.parametrize("fname", FILES)
def test_published_file_equals_builtin_ref_tflm_and_c(fname: str, session, tmp_path: Path) -> None:
    path = DATA / fname
    g = read_tflite(str(path))
    assert g.meta.get("quantized")
    feeds = _samples(g, seed=len(fname))
    ours = {flavor: [run_int8(g, f, flavor=flavor) for f in feeds] for flavor in ("tflite", "tflm")}
    for i, ref in enumerate(_builtin_ref(path, feeds, g.inputs)):
        for name, want in zip(g.outputs, ref):
            np.testing.assert_array_equal(ours["tflite"][i][name].reshape(-1), want.reshape(-1),
                                          err_msg=f"BUILTIN_REF {fname} input {i}")
    pytest.importorskip("tflite_micro")
    for i, ref in enumerate(_tflm(path, feeds, g.inputs)):
        np.testing.assert_array_equal(ours["tflm"][i][g.outputs[0]].reshape(-1), ref[0].reshape(-1),
                                      err_msg=f"TFLite Micro {fname} input {i}")
    # the generated C: float I/O, quantized by the C as the file says; vectors chosen so that quantization
    # returns the sampled integers exactly
    dep = build_inference(g, {}, session, CBackend())
    fg = full_graph(dep)
    xf = []
    for name in g.inputs:
        q = g.tensors[name].quant
        s, zp = np.float32(q.scale[0]), int(q.zero_point[0])
        xf.append(np.stack([((f[name].astype(np.float32) - zp) * s).reshape(-1) for f in feeds]).astype(np.float32))
    render_project(dep, {"test_vectors": (xf if len(xf) > 1 else xf[0], None), "test_count": N}, tmp_path / "c")
    run = c_harness.run_host(c_harness.build_host(tmp_path / "c", sanitize=True))
    want = run_int8(fg, {n: x.reshape((N, *fg.tensors[n].shape[1:])) for n, x in zip(fg.inputs, xf)})
    want = np.concatenate([np.asarray(want[o], np.float32).reshape(N, -1) for o in fg.outputs], axis=1)
    for i in range(N):
        np.testing.assert_array_equal(np.asarray(run.outputs[i], np.float32).reshape(-1), want[i],
                                      err_msg=f"C {fname} vector {i}")
