"""int16 (16x8) SOFTMAX, LOGISTIC and TANH: the table kernels of ir/fixedpoint16.py against TFLite's BUILTIN_REF and
TFLite Micro (every int16 input, several scales), converter files, tinycc's own quantization, the C runtime."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.config import QuantConfig
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.ops import OpKind
from tinycc.plugins.frontends.tflite import read_tflite
from tinycc.plugins.passes.quantize import quantize_model
from tinycc.session import Session
from tinycc.tflite_writer import write_tflite

from .test_int16 import _g16, assert_builtin_ref, convert_16x8, sensor_classifier

ALL16 = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)


def _refs(data: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(BUILTIN_REF, TFLite Micro) outputs of a one-input model on one batch-1 input ``x``."""
    import tensorflow as tf
    from tflite_micro.python.tflite_micro import runtime

    it = tf.lite.Interpreter(model_content=data,
                             experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    tm = runtime.Interpreter.from_bytes(data, arena_size=1 << 20)
    tm.set_input(x, 0)
    tm.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]), tm.get_output(0)


# power-of-two input scales (TFLite's multiplier-free case) and converter-like ones
SCALES = [2.0 ** -12, 2.0 ** -11, 2.0 ** -10, 1.0 / 12288, 2.3804951e-4, 7.1219089e-05, 3.4345099e-05]


@pytest.mark.parametrize("kind", ["sigmoid", "tanh"])
def test_logistic_tanh_every_int16_input_bit_exact_with_builtin_ref_and_tflm(kind: str) -> None:
    """All 65536 inputs at each scale (power-of-two and general multipliers): run_int8 equals BUILTIN_REF and TFLite
    Micro; with the formula's sigmoid table instead of TFLite's it would not (within one step only)."""
    from tinycc.ir.fixedpoint16 import logistic_s16, sigmoid_table_formula, sigmoid_tanh_params, tanh_s16

    off = 0
    for s in SCALES:
        g = _g16(kind, (1, ALL16.size), float(np.float32(s)), 1.0 / 32768, {})
        ref, micro = _refs(write_tflite(g), ALL16.reshape(1, -1))
        np.testing.assert_array_equal(micro, ref)
        ours = run_int8(g, ALL16.reshape(1, -1))["y"]
        np.testing.assert_array_equal(ours, ref)
        np.testing.assert_array_equal(run_int8(g, ALL16.reshape(1, -1), flavor="tflite")["y"], ref)
        assert (np.diff(ours.reshape(-1).astype(np.int64)) >= 0).all()  # monotonic over the int16 range
        fn = tanh_s16 if kind == "tanh" else logistic_s16
        formula = fn(ALL16, *sigmoid_tanh_params(float(np.float32(s)), kind == "tanh"), sigmoid_table_formula())
        d = np.abs(formula.astype(np.int64) - ref.reshape(-1))
        assert d.max() <= 1
        off += int(d.sum())
    assert off > 0


@pytest.mark.parametrize("beta", [1.0, 0.37])
def test_softmax_bit_exact_with_builtin_ref_and_tflm(beta: float) -> None:
    """Random and extreme rows (ties, the whole int16 range, constant rows) at several scales: bit-exact. With
    beta != 1 the flavours differ by TFLite's float32 scale * beta product (flavor="tflite")."""
    rng = np.random.default_rng(25)
    for s in [2.0 ** -10, 3.05e-5, 1.7e-4, 9.3e-4, 4.1e-3]:
        s = float(np.float32(s))
        rows = np.concatenate([rng.integers(-32768, 32768, (200, 10)), rng.integers(-300, 300, (200, 10)),
                               np.full((2, 10), 5), np.tile(np.array([-32768, 32767]), (2, 5))]).astype(np.int16)
        g = _g16("softmax", rows.shape, s, 1.0 / 32768, {"beta": beta})
        ref, micro = _refs(write_tflite(g), rows)
        np.testing.assert_array_equal(run_int8(g, rows)["y"], micro)
        np.testing.assert_array_equal(run_int8(g, rows, flavor="tflite")["y"], ref)
    assert ref.max() > 30000 and ref.min() == 0


def sig_tanh_model():
    import keras as k
    from keras import layers as L

    k.utils.set_random_seed(2)
    inp = k.Input((10,))
    x = L.Dense(8, activation="tanh", name="t")(inp)
    x = L.Dense(8, activation="sigmoid", name="s")(x)
    x = L.Activation("tanh", name="t2")(L.Dense(6, name="d")(x))
    return k.Model(inp, L.Dense(3, activation="softmax", name="head")(x), name="sigtanh16")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("lut16")
    xc = np.random.default_rng(0).normal(size=(64, 16, 3)).astype(np.float32)
    xs = (np.random.default_rng(0).normal(size=(64, 10)) * 2).astype(np.float32)
    (out / "cls.tflite").write_bytes(convert_16x8(sensor_classifier(), xc, "float32"))
    (out / "st.tflite").write_bytes(convert_16x8(sig_tanh_model(), xs, "float32"))
    return {"cls": out / "cls.tflite", "st": out / "st.tflite", "xc": xc, "xs": xs, "dir": out}


def test_converter_classifier_ending_in_int16_softmax_bit_exact(files) -> None:
    """A converter 16x8 classifier ending in softmax: every tensor equals BUILTIN_REF, the output TFLite Micro."""
    from .test_int16 import assert_tflm

    g = read_tflite(str(files["cls"]))
    sm = [o for o in g.ops if o.kind == OpKind.SOFTMAX]
    assert sm and g.tensors[sm[0].outputs[0]].dtype.value == "int16"
    x = (np.random.default_rng(1).normal(size=(100, 16, 3)) * 3).astype(np.float32)
    assert assert_builtin_ref(g, files["cls"], x) >= len(g.ops) - 2
    assert_tflm(g, files["cls"].read_bytes(), x)


def test_converter_sigmoid_tanh_softmax_model_bit_exact(files) -> None:
    """The converter's int16 LOGISTIC, TANH (fused and as layers) and SOFTMAX: every tensor equals BUILTIN_REF,
    the output TFLite Micro."""
    from .test_int16 import assert_tflm

    g = read_tflite(str(files["st"]))
    assert {OpKind.SIGMOID, OpKind.TANH, OpKind.SOFTMAX} <= {o.kind for o in g.ops}
    x = (np.random.default_rng(3).normal(size=(100, 10)) * 3).astype(np.float32)
    assert assert_builtin_ref(g, files["st"], x) >= len(g.ops) - 2
    assert_tflm(g, files["st"].read_bytes(), x)


def _c_equals_run_int8(path: Path, x: np.ndarray, proj: Path, fns: tuple[str, ...]):
    from tinycc.backends.c import CBackend
    from tinycc.deploy.inference import full_graph

    from . import c_harness
    from .deploy_util import build_inference, render_project
    from .test_inference import _check_memory

    dep = build_inference(read_tflite(str(path)), {"calib_data": x}, Session(), CBackend())
    render_project(dep, {"test_vectors": x, "test_count": len(x)}, proj)
    c = (proj / "model.c").read_text()
    assert all(f in c for f in fns)
    _check_memory(proj, dep)  # the tables are counted as kernel lookup tables
    out = c_harness.run_host(c_harness.build_host(proj, sanitize=True))
    full = full_graph(dep)
    ref = run_int8(full, x)[full.outputs[0]].reshape(len(x), -1)
    np.testing.assert_array_equal(np.stack([out.outputs[i] for i in range(len(x))]).astype(np.float32), ref)
    return dep, full


def test_c_inference_of_converter_files_equals_run_int8(files, tmp_path: Path) -> None:
    """Both converter files compiled inference-only: the C (-Werror, ASan/UBSan) prints run_int8's outputs; the
    tflm target's .tflite of the classifier runs in TFLite Micro to the same outputs and in BUILTIN_REF to
    run_int8's flavor="tflite" ones."""
    from .test_inference import _tflite_runs

    x = files["xc"][:12] * 3
    dep, full = _c_equals_run_int8(files["cls"], x, tmp_path / "cls", ("tcc_softmax_s16",))
    micro, builtin = _tflite_runs(dep, x)
    np.testing.assert_array_equal(micro, run_int8(full, x)[full.outputs[0]].reshape(len(x), -1))
    np.testing.assert_array_equal(builtin, run_int8(full, x, flavor="tflite")[full.outputs[0]].reshape(len(x), -1))
    _c_equals_run_int8(files["st"], files["xs"][:12] * 2, tmp_path / "st", ("tcc_sigmoid_tanh_s16",
                                                                              "tcc_softmax_s16"))


def test_sigmoid_tanh_softmax_inference_on_cortex_m4_in_qemu(files, tmp_path: Path) -> None:
    """The converter model with int16 tanh/sigmoid/softmax cross-built for Cortex-M4 prints run_int8's outputs
    under QEMU."""
    from tinycc.backends.c import CBackend

    from . import c_harness
    from .deploy_util import build_inference
    from .op_checks import assert_qemu_outputs_equal_run_int8

    if not c_harness.have_arm():
        pytest.skip("arm-none-eabi-gcc or qemu-system-arm not installed")
    x = files["xs"][:4] * 2
    dep = build_inference(read_tflite(str(files["st"])), {"calib_data": x}, Session(), CBackend())
    out = assert_qemu_outputs_equal_run_int8(dep, x, tmp_path)
    print(f"M4 instructions per inference: {out.instructions['invoke']}")


def test_c_kernels_every_input_equal_run_int8(tmp_path: Path) -> None:
    """The runtime kernels on all 65536 inputs (logistic, tanh at pot and other scales) and on softmax rows,
    in one ASan/UBSan program, equal run_int8."""
    from tinycc.backends.c.emitter import _Builder

    from . import c_harness
    from .test_c_kernels import _generic

    rng = np.random.default_rng(7)
    cases = [("sigmoid", s, ALL16.reshape(1, -1), {}) for s in (2.0 ** -12, 2.3804951e-4)]
    cases += [("tanh", s, ALL16.reshape(1, -1), {}) for s in (2.0 ** -11, 3.4345099e-05)]
    cases += [("softmax", s, rng.integers(-32768, 32768, (40, 7)).astype(np.int16), {"beta": 1.0})
              for s in (3.05e-5, 9.3e-4)]
    decls, body, want = [], [], []
    for i, (kind, s, x, attrs) in enumerate(cases):
        g = _g16(kind, x.shape, float(np.float32(s)), 1.0 / 32768, attrs)
        with c_harness.listed_tables():
            em = _Builder(_generic(g)).build()
        for a in em.arrays:
            decls.append(f"static const {a.ctype} {a.name}_{i}[{a.count}] = {{{', '.join(a.values)}}};")
        decls.append(f"static const int16_t in_{i}[{x.size}] = {{{', '.join(str(int(v)) for v in x.reshape(-1))}}};")
        decls.append(f"static int16_t out_{i}[{x.size}];")
        for c in em.calls:
            args = [f"{v}_{i}" if any(v == a.name for a in em.arrays) else v for v in c.args]
            args[0], args[-1] = f"in_{i}", f"out_{i}"
            body.append(f"    {c.fn}({', '.join(args)});")
        body.append(f'    printf("case {i}"); for (j = 0; j < {x.size}; ++j) printf(" %d", out_{i}[j]); printf("\\n");')
        want.append(f"case {i} " + " ".join(str(int(v)) for v in run_int8(g, x)["y"].reshape(-1)))
    src = "\n".join(["#include <stdio.h>", '#include "tinycc_kernels.h"', *decls, "int main(void) {",
                     "    int32_t j;", *body, "    return 0;", "}", ""])
    got = c_harness.run_runtime_program(src, tmp_path, "lut16")
    assert got == want


def test_tinycc_int16_quantization_gives_fixed_outputs_and_runs_in_tflite(tmp_path: Path) -> None:
    """tinycc's own int16 quantization of a Keras model with sigmoid/tanh layers: their outputs get TFLite's fixed
    (1/32768, 0); the written .tflite runs in BUILTIN_REF and TFLite Micro like run_int8 (to float rounding of
    the final float softmax); `compile --inference-only` of the classifier builds."""
    import subprocess
    import sys

    m = sig_tanh_model()
    m.save(tmp_path / "st.keras")
    xs = (np.random.default_rng(0).normal(size=(64, 10)) * 2).astype(np.float32)
    np.save(tmp_path / "calib.npy", xs)
    g, _ = quantize_model(str(tmp_path / "st.keras"), QuantConfig(calib=str(tmp_path / "calib.npy"),
                                                                  activations="int16"), Session())
    acts = [o for o in g.ops if o.kind in (OpKind.SIGMOID, OpKind.TANH)]
    assert len(acts) == 3
    for o in acts:
        q = g.tensors[o.outputs[0]].quant
        assert g.tensors[o.outputs[0]].dtype.value == "int16" and (float(q.scale[0]), int(q.zero_point[0])) == (
            1.0 / 32768, 0)
    data = write_tflite(g)
    for i in range(8):  # (FULLY_CONNECTED rounds differently in the two; the final softmax is float)
        ref, micro = _refs(data, xs[i:i + 1])
        np.testing.assert_allclose(run_int8(g, xs[i:i + 1])[g.outputs[0]], micro, atol=1e-6)
        np.testing.assert_allclose(run_int8(g, xs[i:i + 1], flavor="tflite")[g.outputs[0]], ref, atol=1e-6)
    r = subprocess.run([sys.executable, "-m", "tinycc.cli", "compile", str(tmp_path / "st.keras"), "-t", "c",
                        "--calib", str(tmp_path / "calib.npy"), "--activations", "int16", "--inference-only",
                        "-o", str(tmp_path / "proj")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "tcc_sigmoid_tanh_s16" in (tmp_path / "proj" / "model.c").read_text()


def test_sigmoid_tanh_softmax_arduino_sketch_in_simavr(files, tmp_path: Path) -> None:
    """The inference-only Arduino sketch of the converter model (tables read from flash on the AVR) runs in
    simavr on the Mega 2560; its outputs equal run_int8."""
    from tinycc.backends.arduino import ArduinoBackend
    from tinycc.backends.demo import parse
    from tinycc.deploy.inference import full_graph

    from . import arduino_harness
    from .deploy_util import build_inference, emit

    if not arduino_harness.available():
        pytest.skip("arduino-builder/simavr/avr-gcc not installed")
    x = files["xs"][:4] * 2
    dep = build_inference(read_tflite(str(files["st"])), {"calib_data": x, "board": "mega2560"}, Session(),
                          ArduinoBackend())
    emit(ArduinoBackend(), dep, {"selftest": True, "test_vectors": x, "test_count": len(x)}, tmp_path)
    elf, _, _ = arduino_harness.build(tmp_path / dep.name / f"{dep.name}.ino", tmp_path,
                                      defines=("TINYCC_DEMO_DUMP=1",))
    out = parse("\n".join(arduino_harness.run_simavr(elf)))
    assert out.done
    full = full_graph(dep)
    ref = run_int8(full, x)[full.outputs[0]].reshape(len(x), -1)
    np.testing.assert_array_equal(np.stack([out.outputs[i] for i in range(len(x))]).astype(np.float32), ref)


def test_int16_table_ops_with_other_parameters_are_refused_by_the_c_backend() -> None:
    """TFLite's parameter rules (output 1/32768 with zero point 0, input zero point 0) checked before emitting."""
    from tinycc.backends.c import CBackend
    from tinycc.errors import UnsupportedLayerError
    from tinycc.ir.tensor import QuantParams

    from .test_c_kernels import _generic

    bad_out = _g16("softmax", (1, 5), 1e-3, 1.0 / 65536, {"beta": 1.0})
    bad_in = _g16("tanh", (1, 5), 1e-3, 1.0 / 32768, {})
    bad_in.tensors["x"].quant = QuantParams([1e-3], [3])
    def dep(g):
        d = _generic(g)
        d.int8_io = False
        return d

    for g in (bad_out, bad_in):
        with pytest.raises(UnsupportedLayerError, match=r"needs input zero point 0 and output scale 1/32768"):
            CBackend().check(dep(g))
    CBackend().check(dep(_g16("tanh", (1, 5), 1e-3, 1.0 / 32768, {})))  # TFLite's parameters pass
