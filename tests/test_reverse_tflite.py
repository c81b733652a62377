"""The ``reverse`` op written as TFLite's REVERSE_V2 (a Bidirectional / go_backwards layer's time reversal).

Oracles: TFLite's BUILTIN_REF kernels and TFLite Micro's Python interpreter running the written file equal tinycc's
int8 interpreter bit for bit (int8 and int16 activations, either axis), the float file equals the float interpreter;
the file reads back into the same ``reverse`` op; ``tinycc quantize`` of a Bidirectional LSTM model writes a file
that reads back and runs in TFLite Micro and BUILTIN_REF like run_int8; the tflm project of that model embeds
REVERSE_V2 in its resolver, and built against TFLite Micro (ASan/UBSan) prints run_int8's features; a Bidirectional
GRU stays refused in one line naming the layer.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.ir.graph import Graph
from tinycc.ir.interpreter import run
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.tensor import DType
from tinycc.passes import PassContext, run_pipeline
from tinycc.tflite_writer import operator_versions, write_tflite

from .deploy_util import config
from .test_bidirectional import dense_reverse_dense
from .test_tflm_project import library  # noqa: F401 (the fixture: TFLite Micro's host library)
from .op_checks import (assert_builtin_ref_equals_run_int8, assert_output_equals_run_int8,
                        assert_tflm_equals_run_int8, interpreter)

pytest.importorskip("tflite_micro")
pytest.importorskip("ai_edge_litert.interpreter")


def _dense_reverse_dense(axis: int) -> Graph:
    """x [1, 6, 4] -> dense(6, relu) -> reverse (axis 1: time, 2: channels) -> dense(3)."""
    return dense_reverse_dense(axis, steps=6, relu=True, seed=21)


def _x(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 6, 4)).astype(np.float32)


def _read_back(data: bytes, tmp_path: Path) -> Graph:
    from tinycc.plugins.frontends.tflite import read_tflite

    path = tmp_path / "written.tflite"
    path.write_bytes(data)
    return read_tflite(str(path))


@pytest.mark.parametrize("axis", [1, 2])
@pytest.mark.parametrize("activations", ["int8", "int16"])
def test_quantized_reverse_written_runs_like_run_int8(session, tmp_path: Path, activations: str, axis: int) -> None:
    g = _dense_reverse_dense(axis)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    cfg = config(session, {"activations": activations})
    run_pipeline(g, session.registry.pipeline("int8"), PassContext(session=session, config=cfg, calib=_x(32, 1)))
    rev = next(o for o in g.ops if o.kind.value == "reverse")
    want = DType.INT8 if activations == "int8" else DType.INT16
    assert g.tensors[rev.outputs[0]].dtype == want
    data = write_tflite(g)
    assert data == write_tflite(g)  # same graph, same bytes
    assert ("REVERSE_V2", 3 if activations == "int8" else 1) in operator_versions(data)  # the converter's versions
    x = _x(8, 2)  # float input: the file's QUANTIZE makes it int8/int16 as tinycc's does
    if activations == "int8":
        names, _ = assert_builtin_ref_equals_run_int8(g, data, x, written=True)
        assert rev.outputs[0] in names  # REVERSE_V2's own output compared, not only the model's
    assert_output_equals_run_int8(g, data, x)
    assert_tflm_equals_run_int8(g, data, x)
    back = _read_back(data, tmp_path)
    (brev,) = [o for o in back.ops if o.kind.value == "reverse"]
    assert brev.attrs["axis"] == axis
    assert back.tensors[brev.outputs[0]].quant.scale[0] == back.tensors[brev.inputs[0]].quant.scale[0]
    np.testing.assert_array_equal(run_int8(back, x)[back.outputs[0]], run_int8(g, x)[g.outputs[0]])


def test_float_reverse_written_runs_like_the_float_interpreter(session, tmp_path: Path) -> None:
    g = _dense_reverse_dense(1)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    data = write_tflite(g)
    assert ("REVERSE_V2", 1) in operator_versions(data)
    it = interpreter(data)
    x = _x(4, 3)
    ref = run(g, x)[g.outputs[0]]
    for i in range(len(x)):
        it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1])
        it.invoke()
        np.testing.assert_allclose(it.get_tensor(it.get_output_details()[0]["index"]), ref[i:i + 1], atol=1e-5)
    back = _read_back(data, tmp_path)
    np.testing.assert_allclose(run(back, x)[back.outputs[0]], ref, atol=1e-6)


keras = pytest.importorskip("keras")
L = keras.layers


@pytest.fixture(scope="module")
def bidir_lstm(tmp_path_factory) -> Path:
    """A .keras file: Bidirectional(LSTM) (sum and ave, sequences; concat, last step) around a go_backwards LSTM,
    a linear Dense head; and calib.npy beside it."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((10, 3))
    x = L.Bidirectional(L.LSTM(5, return_sequences=True), merge_mode="sum", name="bi_sum")(inp)
    x = L.LSTM(4, go_backwards=True, return_sequences=True, name="back")(x)
    x = L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="ave", name="bi_ave")(x)
    x = L.Bidirectional(L.LSTM(3), merge_mode="concat", name="bi_cat")(x)
    m = keras.Model(inp, L.Dense(3, name="head")(x), name="bitflm")  # logits: outputs that vary with the input
    d = tmp_path_factory.mktemp("bitflm")
    m.save(d / "bitflm.keras")
    np.save(d / "calib.npy", np.random.default_rng(6).normal(size=(32, 10, 3)).astype(np.float32))
    return d / "bitflm.keras"


def _cli(capsys, *args: str) -> subprocess.CompletedProcess:
    from tinycc.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def _stateless_runs(data: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TFLite Micro's and BUILTIN_REF's outputs, one sample per Invoke from a zero LSTM state."""
    from ai_edge_litert import interpreter as litert
    from tflite_micro.python.tflite_micro import runtime

    tm = runtime.Interpreter.from_bytes(data, arena_size=1 << 20)
    it = litert.Interpreter(model_content=data, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    a, b = [], []
    for i in range(len(x)):
        tm.reset()
        tm.set_input(x[i:i + 1], 0)
        tm.invoke()
        a.append(tm.get_output(0))
        it.reset_all_variables()
        it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1])
        it.invoke()
        b.append(it.get_tensor(it.get_output_details()[0]["index"]))
    return np.concatenate(a), np.concatenate(b)


def test_quantize_cli_writes_a_bidirectional_lstm_that_round_trips(bidir_lstm: Path, tmp_path: Path,
                                                                    capsys) -> None:
    """`tinycc quantize --int8-io` of Bidirectional/go_backwards LSTMs: REVERSE_V2 in the file, the same bytes
    twice, the file reads back into reverse ops along time, and TFLite Micro / BUILTIN_REF run it like run_int8."""
    from tinycc.tflite_writer import operator_names

    outs = []
    for name in ("a", "b"):
        r = _cli(capsys, "quantize", str(bidir_lstm), "--calib", str(bidir_lstm.parent / "calib.npy"), "--int8-io",
                 "-o", str(tmp_path / f"{name}.tflite"))
        assert r.returncode == 0, r.stderr
        outs.append((tmp_path / f"{name}.tflite").read_bytes())
    data = outs[0]
    assert data == outs[1]
    assert "REVERSE_V2" in operator_names(data) and "UNIDIRECTIONAL_SEQUENCE_LSTM" in operator_names(data)
    back = _read_back(data, tmp_path)
    revs = [o for o in back.ops if o.kind.value == "reverse"]
    # bi_sum: input + output, back: input, bi_ave: input + output, bi_cat: input (last step: no output reversal)
    assert len(revs) == 6 and all(o.attrs["axis"] == 1 for o in revs)
    assert back.meta.get("quantized") and back.tensors[back.outputs[0]].dtype == DType.INT8
    x = np.random.default_rng(7).integers(-128, 128, (6, 10, 3)).astype(np.int8)  # --int8-io: int8 in and out
    tflm, ref = _stateless_runs(data, x)
    np.testing.assert_array_equal(run_int8(back, x)[back.outputs[0]], tflm)
    np.testing.assert_array_equal(run_int8(back, x, flavor="tflite")[back.outputs[0]], ref)
    assert len({row.tobytes() for row in tflm}) == len(x)  # the outputs depend on the input


@pytest.mark.timeout(1800)  # the first use may build TFLite Micro (cached after)
def test_tflm_project_of_bidirectional_lstm_runs_like_run_int8(session, library, bidir_lstm: Path,  # noqa: F811
                                                                tmp_path: Path) -> None:
    from tinycc.backends import c as c_backend
    from tinycc.backends.tflm import RESOLVER, build
    from tinycc.tflite_writer import operator_names

    from . import c_harness
    from .deploy_util import compile_model, vectors

    opts = {"calib": str(bidir_lstm.parent / "calib.npy"), "buffer": 4, "test_count": 6, "test_learn": 0}
    res = compile_model(str(bidir_lstm), "tflm", str(tmp_path / "proj"), opts, session)
    proj, dep = res.output, res.deployment
    data = next(proj.glob("*.tflite")).read_bytes()
    assert "REVERSE_V2" in operator_names(data)
    glue = (proj / "src" / "tinycc_tflm.cc").read_text()
    listed = re.findall(r"resolver->(Add\w+)\(\)", glue)
    assert "AddReverseV2" in listed and listed == [RESOLVER[n] for n in operator_names(data)]
    exe = build.build_host(proj, sanitize=True, library=library)
    out = c_harness.parse(build.run(exe))
    x, _ = c_backend.test_vectors(dep, vectors(opts))
    ref = run_int8(dep.extractor, x)[dep.extractor.outputs[0]].reshape(len(x), -1)
    assert sorted(out.features) == list(range(len(x))) and len(np.unique(ref)) > 4
    for i in range(len(x)):
        np.testing.assert_array_equal(out.features[i], ref[i], err_msg=f"TFLite Micro features of input {i}")


def test_bidirectional_gru_on_tflm_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    inp = keras.Input((8, 2))
    path = tmp_path / "bigru.keras"
    keras.Model(inp, L.Dense(2, name="head")(L.Bidirectional(L.GRU(3), name="my_bi")(inp))).save(path)
    np.save(tmp_path / "calib.npy", np.zeros((4, 8, 2), np.float32))
    r = _cli(capsys, "compile", str(path), "--target", "tflm", "--calib", str(tmp_path / "calib.npy"),
             "-o", str(tmp_path / "out"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "layer 'my_bi/forward' (GRU): TFLite Micro has no GRU kernel" in lines[0], r.stderr
    assert not (tmp_path / "out").exists()
