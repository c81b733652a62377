"""The layers issue #25 added (Subtract/Maximum/Minimum, Permute/TRANSPOSE, keras.ops.split, Conv2DTranspose,
Cropping2D) in TFLite's 16x8 form: the converter's int16 files import, tinycc's int16 interpreter equals TFLite's
BUILTIN_REF kernels and TFLite Micro bit for bit, and the generated C (ASan/UBSan) equals the interpreter; tinycc's
own int16 quantization of a Conv2DTranspose model writes a file BUILTIN_REF and TFLite Micro run like run_int8. The
deployed graph written as .tflite (the tflm target's model) runs in TFLite Micro like run_int8, and the
Conv2DTranspose project's first vectors equal it under QEMU Cortex-M4, and its Arduino sketch learns like the
simulator on the Mega 2560 (simavr)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.plugins.frontends.tflite import read_tflite

from . import c_harness
from .deploy_util import build_inference
from .op_checks import (assert_c_inference_equals_run_int8, assert_output_equals_run_int8,
                        assert_tflm_equals_run_int8)
from .test_int16 import convert_16x8
from .test_layout_ops import _binary_model, _crop_model, _deconv_model, _float_ir, _split_model, _transpose_model, _x

litert = pytest.importorskip("ai_edge_litert.interpreter")
MODELS = {"binary_ops": _binary_model, "transpose_ops": _transpose_model, "split_ops": _split_model,
          "deconv_ops": _deconv_model, "crop_ops": _crop_model}
TFLM_MISSING = {"split_ops"}  # TFLite Micro cannot invoke the converter's int16 SPLIT file


@pytest.mark.parametrize("name", sorted(MODELS))
def test_converter_16x8_new_ops_equal_builtin_ref_and_c(tmp_path: Path, name: str, session) -> None:
    m = MODELS[name]()
    p = tmp_path / f"{name}_16x8.tflite"
    p.write_bytes(convert_16x8(m, _x(m, 16)))
    g = read_tflite(str(p))
    shape = tuple(g.tensors[g.inputs[0]].shape[1:])
    x = np.random.default_rng(3).integers(-32768, 32768, (4,) + shape).astype(np.int16)
    assert_output_equals_run_int8(g, p.read_bytes(), x, what=name)
    if name not in TFLM_MISSING:
        assert_tflm_equals_run_int8(g, p.read_bytes(), x, 1 << 20)
    dep = build_inference(g, {}, session, CBackend())  # float I/O: the C quantizes to int16 as the model says
    xf, fg, mine = assert_c_inference_equals_run_int8(dep, g, x, tmp_path / "c", name)
    # what the tflm target ships: the deployed graph written as .tflite, run by TFLite Micro
    from tflite_micro.python.tflite_micro import runtime

    from tinycc.tflite_writer import write_tflite

    tm = runtime.Interpreter.from_bytes(write_tflite(fg), arena_size=1 << 20)
    for i in range(len(x)):
        tm.set_input(xf[i:i + 1], 0)
        tm.invoke()
        np.testing.assert_array_equal(tm.get_output(0).reshape(-1).astype(np.float32), mine[i],
                                      err_msg=f"TFLM on the written {name} {i}")
    if name == "deconv_ops" and c_harness.have_arm():  # first vectors under QEMU Cortex-M4
        dev, _ = c_harness.build_and_run_qemu(tmp_path / "c", "m4")
        for i in range(len(x)):
            np.testing.assert_array_equal(np.asarray(dev.outputs[i], np.float32).reshape(-1), mine[i],
                                          err_msg=f"M4 {name} {i}")


def test_tinycc_int16_transpose_conv_written_runs_in_builtin_ref_and_tflm(session, tmp_path: Path) -> None:
    from tinycc.ir.tensor import DType
    from tinycc.passes import PassContext, run_pipeline
    from tinycc.tflite_writer import write_tflite

    from .deploy_util import config

    m = _deconv_model()
    g = _float_ir(m, tmp_path)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    cfg = config(session, {"activations": "int16"})
    run_pipeline(g, session.registry.pipeline("int8"), PassContext(session=session, config=cfg, calib=_x(m, 32, 5)))
    conv_t = [o for o in g.ops if o.kind.value == "transpose_conv2d"]
    assert conv_t and all(g.tensors[o.outputs[0]].dtype == DType.INT16 for o in conv_t)
    data = write_tflite(g)
    x = _x(m, 4, 6)  # float input: the written file quantizes it to int16 as tinycc's QUANTIZE does
    assert_output_equals_run_int8(g, data, x)
    assert_tflm_equals_run_int8(g, data, x, 1 << 20)


def test_converter_16x8_transpose_conv_sketch_learns_like_the_simulator_on_the_mega2560(tmp_path: Path) -> None:
    """The converter's 16x8 Conv2DTranspose classifier as an Arduino sketch (AVR: int16 kernels, int64 biases read
    from flash), run in simavr: its predictions before and after learning equal the simulator's."""
    from tinycc.backends.arduino import ArduinoBackend
    from tinycc.session import Session

    from . import arduino_harness
    from .deploy_util import build_deployment

    if not arduino_harness.available():
        pytest.skip("arduino-builder/simavr/avr-gcc not installed")
    m = _deconv_model()
    p = tmp_path / "deconv_16x8.tflite"
    p.write_bytes(convert_16x8(m, _x(m, 16)))
    session = Session()
    x = _x(m, 4, 8)
    y = np.arange(4) % 2
    dep = build_deployment(read_tflite(str(p)), {"calib_data": _x(m, 8, 9), "buffer": 4, "lr": 0.05,
                                                 "board": "mega2560"}, session, ArduinoBackend())
    arduino_harness.assert_sketch_learns_like_the_simulator(dep, x, y, tmp_path / "sketch", 8)
