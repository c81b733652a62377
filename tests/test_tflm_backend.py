"""tflm target: the embedded .tflite in TFLite Micro equals the int8 interpreter; resolver and arena checks."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.tflm import RESOLVER, TflmBackend
from tinycc.backends.tflm.measure import measure_arena
from tinycc.ir.interpreter_int8 import run_int8
from .deploy_util import emit, build_deployment
from tinycc.tflite_writer import operator_names

from .test_c_backend import CASES, _graph
from .test_tflm_model_data import embedded_bytes

runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")


@pytest.mark.parametrize("name", ["digits", "resnet_add", "mobilenet_v2", "int8_extra", "cnas_like", "sequential_cnn",
                                  "concat_branch", "bn_conv_act", "mobilenet_v3", "conv1d_sensor", "separable_cnn"])
def test_tflm_project(session, tmp_path: Path, name: str) -> None:
    g, x, _, calib = _graph(session, name)
    dep = build_deployment(g, {"calib_data": calib, **CASES[name]}, session, TflmBackend())
    be = TflmBackend()
    be.check(dep)
    files = emit(be, dep, {}, tmp_path)
    data = (tmp_path / f"{dep.name}_extractor.tflite").read_bytes()
    # embedded bytes equal the .tflite file
    cc = (tmp_path / "src" / "model_data.cc").read_text()
    assert embedded_bytes(cc) == data and "alignas(16)" in cc
    # TFLite Micro runs it bit-exactly like the int8 interpreter, on 100 inputs
    m = measure_arena(data)
    tm = runtime.Interpreter.from_bytes(data, arena_size=m.arena)
    ref = run_int8(dep.extractor, x)[dep.extractor.outputs[0]]
    for i in range(len(x)):
        tm.set_input(x[i:i + 1], 0)
        tm.invoke()
        np.testing.assert_array_equal(tm.get_output(0), ref[i:i + 1])
    # the resolver lists exactly the model's operators, and N is their count
    glue = (tmp_path / "src" / "tinycc_tflm.cc").read_text()
    listed = re.findall(r"resolver->(Add\w+)\(\)", glue)
    assert listed == [RESOLVER[n] for n in operator_names(data)]
    assert f"MicroMutableOpResolver<{len(listed)}>" in glue
    # arena in the code: >= recorded and >= the smallest arena that allocates, within the documented margin
    hdr = (tmp_path / "src" / "tinycc_config.h").read_text()
    arena = int(re.search(r"ARENA_BYTES (\d+)", hdr).group(1))
    assert m.recorded <= arena and m.minimum <= arena <= m.needed + m.margin + 16
    if m.minimum > m.recorded:  # planning needed more than the total: 1 byte less fails
        with pytest.raises(RuntimeError):
            runtime.Interpreter.from_bytes(data, arena_size=m.minimum - 1)
    assert dep.memory["items"][0]["bytes"] == arena
    # the classifier part is the shared C runtime and compiles warning-free
    r = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", "-I", str(tmp_path / "src"),
                        str(tmp_path / "src" / "model.c"), "-o", str(tmp_path / "model.o")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(files) >= 10
