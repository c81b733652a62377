"""The checks the op tests (PReLU, ELU/GELU, SeparableConv1D, the layout ops) share: .tflite files against tinycc's
int8 interpreter (TFLite's BUILTIN_REF kernels tensor by tensor, TFLite Micro on the output) and the generated C
project against the simulator."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tinycc.ir.graph import Graph
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.simulator import Simulator
from tinycc.ir.tensor import DType

from . import c_harness
from .deploy_util import render_project


def interpreter(data: bytes, ref: bool = True):
    """A LiteRT interpreter of ``data`` keeping every tensor: the BUILTIN_REF kernels, or (``ref`` False) the
    optimized builtin ones without delegates."""
    from ai_edge_litert import interpreter as litert

    kind = litert.OpResolverType.BUILTIN_REF if ref else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = litert.Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                            experimental_op_resolver_type=kind)
    it.allocate_tensors()
    return it


def assert_builtin_ref_equals_run_int8(g: Graph, data: bytes, x: np.ndarray, written: bool = False,
                                       ) -> tuple[list[str], dict[str, np.ndarray]]:
    """On every input of ``x``, each activation of ``g`` that BUILTIN_REF running ``data`` shows equals run_int8's
    ("tflite" flavor). A converter file (``written`` False): all such activations, compared flattened (the file's
    shapes may differ from the IR's). A file tinycc wrote from ``g`` (``written``): its int8 activations and the
    outputs, shapes included. Returns the names compared and run_int8's values of them."""
    it = interpreter(data)
    index = {d["name"]: d["index"] for d in it.get_tensor_details()}
    names = [t for t in g.activations() if t in index and (not written or g.tensors[t].dtype == DType.INT8)]
    if written:
        names += g.outputs
    ours = run_int8(g, x, outputs=names, flavor="tflite")
    for i in range(len(x)):
        it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1])
        it.invoke()
        for t in names:
            if written:
                np.testing.assert_array_equal(it.get_tensor(index[t]), ours[t][i:i + 1], err_msg=f"{t} input {i}")
            else:
                np.testing.assert_array_equal(ours[t][i].reshape(-1), it.get_tensor(index[t]).reshape(-1),
                                              err_msg=f"tensor {t!r}, input {i}")
    return names, ours


def assert_output_equals_run_int8(g: Graph, data: bytes, x: np.ndarray, ref: bool = True, what: str = "") -> None:
    """TFLite running ``data`` (BUILTIN_REF, or with ``ref`` False the optimized builtin kernels) gives run_int8's
    ("tflite" flavor) output of ``g`` on every input of ``x``."""
    it = interpreter(data, ref)
    ours = run_int8(g, x, flavor="tflite")[g.outputs[0]]
    for i in range(len(x)):
        it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1])
        it.invoke()
        np.testing.assert_array_equal(it.get_tensor(it.get_output_details()[0]["index"]), ours[i:i + 1],
                                      err_msg=f"{what} input {i}")


def assert_tflm_equals_run_int8(g: Graph, data: bytes, x: np.ndarray, arena: int = 1 << 18) -> np.ndarray:
    """TFLite Micro running ``data`` (``arena`` bytes) gives run_int8's output of ``g`` on every input of ``x``;
    returns that output."""
    from tflite_micro.python.tflite_micro import runtime

    tm = runtime.Interpreter.from_bytes(data, arena_size=arena)
    mine = run_int8(g, x)[g.outputs[0]]
    for i in range(len(x)):
        tm.set_input(x[i:i + 1], 0)
        tm.invoke()
        np.testing.assert_array_equal(tm.get_output(0), mine[i:i + 1], err_msg=f"tflm input {i}")
    return mine


def assert_written_runs_like_run_int8(g: Graph, data: bytes, x: np.ndarray, fg: Graph, arena: int = 1 << 19) -> None:
    """tinycc's int8 ``g`` written as ``data``: every int8 activation TFLite's BUILTIN_REF shows equals run_int8
    ("tflite" flavor), TFLite Micro's output equals run_int8, and both stay near the float graph ``fg``."""
    assert_builtin_ref_equals_run_int8(g, data, x, written=True)
    mine = assert_tflm_equals_run_int8(g, data, x, arena)
    ref = run(fg, x)[fg.outputs[0]]
    assert np.abs(mine - ref).mean() <= 0.05 * np.abs(ref).max() + 1e-3


def assert_learned_like_the_simulator(dep: Any, out: Any, x: np.ndarray, y: np.ndarray, learn: int,
                                      layer: int = -1, what: str = "C") -> Simulator:
    """``out``, the parsed demo run of ``dep``'s project (``what`` runs it) on ``x`` that learned the first
    ``learn`` inputs (labels ``y``): its features equal the simulator's and, once the simulator learned the same, so
    do the weights of classifier layer ``layer`` (relative 1e-4). Returns the simulator."""
    sim = Simulator(dep)
    feats = sim.features(x)
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], feats[i], err_msg=f"{what} features of input {i}")
    for i in range(learn):
        sim.learn_features(feats[i], int(y[i]))
    k = layer % len(dep.classifier)
    w = sim.classifier.layers[k].weight
    assert np.abs(out.weights[k] - w.reshape(-1)).max() <= 1e-4 * max(np.abs(w).max(), 1e-3)
    return sim


def assert_c_project_learns_like_the_simulator(dep: Any, opts: dict[str, Any], x: np.ndarray, y: np.ndarray,
                                               outdir: Path, learn: int = 4, layer: int = -1) -> tuple[Any, Simulator]:
    """The C project of ``dep`` (host build, ASan/UBSan) with test vectors ``x``, ``y`` learns like the simulator
    (assert_learned_like_the_simulator). Returns the parsed run and the simulator."""
    render_project(dep, {**opts, "test_vectors": (x, y), "test_count": len(x), "test_learn": learn}, outdir)
    out = c_harness.run_host(c_harness.build_host(outdir, sanitize=True))
    return out, assert_learned_like_the_simulator(dep, out, x, y, learn, layer)


def assert_qemu_features_equal_run_int8(dep: Any, opts: dict[str, Any], x: np.ndarray, outdir: Path,
                                        cpu: str = "m4") -> Any:
    """The C project of ``dep`` built for ``cpu`` (-Werror) and run under QEMU: its int8 features of every input
    of ``x`` equal run_int8's. Returns the device's parsed output."""
    render_project(dep, {**opts, "test_vectors": (x, np.arange(len(x)) % dep.num_classes), "test_count": len(x),
                         "test_learn": 0}, outdir)
    dev, _ = c_harness.build_and_run_qemu(outdir, cpu)
    feats = run_int8(dep.extractor, x)[dep.extractor.outputs[0]].reshape(len(x), -1)
    for i in range(len(x)):
        np.testing.assert_array_equal(dev.features[i], feats[i], err_msg=f"{cpu.upper()} features of input {i}")
    return dev


def assert_c_inference_equals_run_int8(dep: Any, g: Graph, x: np.ndarray, outdir: Path, what: str = ""
                                       ) -> tuple[np.ndarray, Graph, np.ndarray]:
    """The integer inputs ``x`` of the file ``g`` as floats (times its input scale) through the C inference project
    of ``dep`` (float I/O: the C quantizes as the file says; ASan/UBSan): its outputs equal run_int8's of the whole
    deployed graph. Returns (the float inputs, that graph, its outputs as float32 rows)."""
    from tinycc.deploy.inference import full_graph

    s_in = float(g.tensors[g.inputs[0]].quant.scale[0])
    xf = (x.astype(np.float32) * np.float32(s_in)).astype(np.float32)
    render_project(dep, {"test_vectors": (xf, None), "test_count": len(x)}, outdir)
    out = c_harness.run_host(c_harness.build_host(outdir, sanitize=True))
    fg = full_graph(dep)
    mine = run_int8(fg, xf)[fg.outputs[0]].reshape(len(x), -1).astype(np.float32)
    for i in range(len(x)):
        np.testing.assert_array_equal(np.asarray(out.outputs[i], np.float32).reshape(-1), mine[i],
                                      err_msg=f"C {what} {i}")
    return xf, fg, mine


def assert_qemu_outputs_equal_run_int8(dep: Any, x: np.ndarray, outdir: Path, cpu: str = "m4") -> Any:
    """The inference project of ``dep`` (test vectors ``x``) built for ``cpu`` and run under QEMU: its outputs equal
    run_int8's of the whole deployed graph, and it counted the inference's instructions. Returns the device's parsed
    output."""
    from tinycc.deploy.inference import full_graph

    render_project(dep, {"test_vectors": x, "test_count": len(x)}, outdir)
    out, _ = c_harness.build_and_run_qemu(outdir, cpu)
    full = full_graph(dep)
    ref = run_int8(full, x)[full.outputs[0]].reshape(len(x), -1)
    np.testing.assert_array_equal(np.stack([out.outputs[i] for i in range(len(x))]).astype(np.float32), ref)
    assert out.instructions.get("invoke", 0) > 0
    return out
