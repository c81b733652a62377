"""Learning beyond the head in the simulator (tinycc.ir.deep): int8 backbone biases and float conv blocks."""
from __future__ import annotations

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.ir.deep import DeepLearner, deep_cuts, requantize_bias
from tinycc.ir.interpreter_int8 import run_int8
from tinycc.ir.quant import dequantize
from tinycc.ir.train import softmax
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model
from .deploy_util import build_deployment

from . import c_harness
from .zoo import resnet_add


@pytest.fixture(scope="module")
def dep():
    from tinycc.session import Session

    import keras

    session = Session(autoload=False)
    keras.utils.set_random_seed(0)  # the same model in every worker (xdist) and run
    g = graph_from_keras_model(resnet_add())
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    calib = np.random.default_rng(0).uniform(-1, 1, (32, 10, 10, 3)).astype(np.float32)
    return build_deployment(g, {"calib_data": calib, "buffer": 8, "lr": 0.05}, session, CBackend())


RUNTIME = __import__("pathlib").Path(__file__).resolve().parents[1] / "backends" / "c" / "runtime"
WHERE = ["host", pytest.param("m4", marks=pytest.mark.skipif(not c_harness.have_arm(),
                                                             reason="arm-none-eabi-gcc or qemu-system-arm missing"))]


def _build_run(tmp_path, where: str, runtime: tuple[str, ...] = ("tinycc_backprop.c",)) -> str:
    """main.c (including step.c) built and run: on the host under ASan/UBSan, or for the Cortex-M4 (-Os, hard
    float, the generated projects' startup and linker script) under qemu-system-arm; its stdout."""
    import subprocess

    from tinycc.targets import CORTEX_M4

    srcs = [str(tmp_path / "main.c")] + [str(RUNTIME / f) for f in runtime]
    inc = [f"-I{RUNTIME}", f"-I{tmp_path}"]
    if where == "host":
        subprocess.run(["gcc", "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined",
                        "-fno-sanitize-recover=all", *inc, *srcs, "-lm", "-o", str(tmp_path / "main")], check=True,
                       capture_output=True, text=True)
        r = subprocess.run([str(tmp_path / "main")], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and not r.stderr, r.stderr
        return r.stdout
    templates = RUNTIME.parent / "templates" / "cortexm"  # plain C and linker script (no template tags)
    (tmp_path / "startup.c").write_text((templates / "startup.c.j2").read_text())
    (tmp_path / "link.ld").write_text((templates / "link.ld.j2").read_text())
    elf = tmp_path / "main.elf"
    subprocess.run(["arm-none-eabi-gcc", *CORTEX_M4.cflags.split(), "-Os", "-std=c99", "-Wall", "-Wextra", "-Werror",
                    *inc, "--specs=rdimon.specs", "-nostartfiles", "-T", str(tmp_path / "link.ld"), "-o", str(elf),
                    str(tmp_path / "startup.c"), *srcs, "-lm"], check=True, capture_output=True, text=True)
    r = subprocess.run(["qemu-system-arm", "-M", CORTEX_M4.emulator.machine, "-nographic", "-semihosting-config",
                        "enable=on,target=native", "-kernel", str(elf)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A task the pretrained features do not separate: the class shifts the input's mean per channel."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    shift = np.array([[0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [-0.5, -0.5, -0.5]], np.float32)
    x = rng.uniform(-0.5, 0.5, (n, 10, 10, 3)).astype(np.float32) + shift[y][:, None, None, :]
    return x, y


def _loss(learner: DeepLearner, x: np.ndarray, y: np.ndarray) -> float:
    p = softmax(learner.logits_cut(learner.cut_of(x)))
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def test_deep_cuts(dep) -> None:
    cuts = deep_cuts(dep.extractor, dep.classifier)
    assert cuts  # every one dominates the rest of the graph
    producers = dep.extractor.producers_map()
    assert all(c in producers for c in cuts)
    assert dep.extractor.outputs[0] not in cuts


@pytest.mark.parametrize("mode", ["bias", "blocks"])
def test_deep_learning_lowers_the_loss(dep, mode: str) -> None:
    cut = deep_cuts(dep.extractor, dep.classifier)[-1]  # the earliest: most layers learn
    learner = DeepLearner(dep, cut, mode, capacity=8, lr=0.05, epochs=1)
    x, y = _data(48, 1)
    before = _loss(learner, x, y)
    for xi, yi in zip(x, y):
        learner.learn_input(xi, int(yi))
        assert not learner.last_refused
    assert _loss(learner, x, y) < before
    ext = dep.extractor
    for op in learner.region_params:
        p = learner.tail.params[op.name]
        t = learner.view.tensors[op.inputs[2]]
        if mode == "bias":  # int32 bias = rint(b / (s_in * s_w)); the weights stay the int8 ones
            np.testing.assert_array_equal(t.data, requantize_bias(p.bias, t.quant.scale))
            assert not np.array_equal(t.data, ext.tensors[op.inputs[2]].data)
            np.testing.assert_array_equal(learner.view.tensors[op.inputs[1]].data, ext.tensors[op.inputs[1]].data)
        else:  # blocks: the float weights moved, the int8 graph is untouched
            np.testing.assert_array_equal(t.data, ext.tensors[op.inputs[2]].data)
    if mode == "bias":  # inference is the int8 kernels with the new biases, then the float head
        sub = learner.view.copy()
        sub.ops, sub.outputs = sub.ops[:len(ext.ops)], [ext.outputs[0]]
        f = run_int8(sub, x[:5])[ext.outputs[0]].reshape(5, -1)
        q = ext.tensors[ext.outputs[0]].quant
        h = dequantize(f, q.scale, q.zero_point).astype(np.float32)
        for name in [o.name for o in learner.view.ops[len(ext.ops):]]:
            p = learner.tail.params[name]
            h = h @ p.weight.T + p.bias
            if name != learner.tail.last:
                h = np.maximum(h, 0)
        np.testing.assert_allclose(learner.logits_cut(learner.cut_of(x[:5])), h, atol=1e-5)


def test_requantize_bias() -> None:
    scale = np.array([0.5, 0.25, 1e-12], np.float32)
    q = requantize_bias(np.array([1.25, -0.125, 1.0], np.float32), scale)
    assert q.dtype == np.int32
    np.testing.assert_array_equal(q, [2, 0, np.iinfo(np.int32).max])  # half to even; clamped


def test_deep_learn_rejects(dep) -> None:
    cut = deep_cuts(dep.extractor, dep.classifier)[0]
    learner = DeepLearner(dep, cut, "bias", capacity=4)
    x, _ = _data(1, 2)
    for bad in (-1, 4, 1.5):
        with pytest.raises(ValueError, match="class"):
            learner.learn_input(x[0], bad)
    nan = x[0].copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        learner.learn_input(nan, 0)
    with pytest.raises(ValueError, match="int8 cut tensor"):
        learner.learn(np.zeros(3, np.int8), 0)
    with pytest.raises(ValueError, match="int8 cut tensor"):
        learner.learn(learner.cut_of(x)[0].astype(np.float32), 0)
    assert learner.buffer.count == 0
    learner.learn_input(x[0], 1)
    biases = {op.name: learner.view.tensors[op.inputs[2]].data.copy() for op in learner.region_params}
    learner.lr = float("inf")  # every step refused: nothing changes, the sample is removed again
    learner.learn_input(x[0], 2)
    assert learner.last_refused and learner.buffer.count == 1
    for op in learner.region_params:
        np.testing.assert_array_equal(learner.view.tensors[op.inputs[2]].data, biases[op.name])
    with pytest.raises(ValueError, match="int8 activation"):
        DeepLearner(dep, "no such tensor", "bias")
    with pytest.raises(ValueError, match="mode"):
        DeepLearner(dep, cut, "weights")


@pytest.mark.parametrize("where", WHERE)
def test_generated_step_of_a_deployment_equals_the_simulator(dep, tmp_path, where: str) -> None:
    """blocks mode on a real int8 deployment (residual adds, relu6, avg pool): the C step generated from the
    learner's tail (backends/c/deep_emit, ASan/UBSan) trains the same parameters as DeepLearner.step."""
    import subprocess
    from pathlib import Path

    from tinycc.backends.c.deep_emit import emit_step, step_memory

    learner = DeepLearner(dep, deep_cuts(dep.extractor, dep.classifier)[-1], "blocks", capacity=4, lr=0.05)
    (tmp_path / "step.c").write_text(emit_step(learner.tail, 2))
    x, y = _data(4, 5)
    q = learner.cut_of(x)
    xf = learner._float_cut(q)
    vals = ", ".join(f"{float(v):.9e}f" for v in xf.reshape(-1))
    main = ('#include <stdio.h>\n#include "step.c"\n'
            f"static const float xs[{xf.size}] = {{{vals}}};\n"
            f"static const int32_t ys[4] = {{{', '.join(map(str, y))}}};\n"
            "static void out(const float *a, int n) { for (int k = 0; k < n; ++k) printf(\"%.9g \", a[k]); "
            "printf(\"\\n\"); }\nint main(void) {\n"
            f"    static float z[{2 * learner.num_classes}], nan_x[{xf.size}];\n"
            f"    for (int k = 0; k < {xf.size}; ++k) nan_x[k] = xs[k];\n    nan_x[{xf[0].size}] = 1.0f / 0.0f;\n"
            "    printf(\"%d %d %d %d %d\\n\", tcc_deep_logits(xs, 2, z), tcc_deep_logits(NULL, 2, z),\n"
            "           tcc_deep_logits(xs, 2, NULL), tcc_deep_logits(xs, 3, z), tcc_deep_logits(nan_x, 2, z));\n"
            f"    out(z, {2 * learner.num_classes});\n"
            "    int a = tcc_deep_step(xs, ys, 2, 0.05f);\n"
            f"    int b = tcc_deep_step(xs + {xf[0].size * 2}, ys + 2, 2, 0.05f);\n"
            "    printf(\"%d %d\\n\", a, b);\n")
    for k, p in enumerate(learner.tail.params.values()):
        main += f"    out(tcc_dw{k}, {p.weight.size}); out(tcc_db{k}, {p.bias.size});\n"
    (tmp_path / "main.c").write_text(main + "    return 0;\n}\n")
    lines = _build_run(tmp_path, where).splitlines()
    assert lines[0] == "0 -1 -1 -1 -2"  # the forward alone: logits, then NULL, batch too large, infinity
    np.testing.assert_allclose(np.array(lines[1].split(), np.float32), learner.logits_cut(q[:2]).reshape(-1),
                               atol=1e-5)
    lines = lines[2:]
    assert lines[0] == "1 1"
    assert learner.step(q[:2], y[:2]) and learner.step(q[2:], y[2:])
    for k, p in enumerate(learner.tail.params.values()):
        np.testing.assert_allclose(np.array(lines[1 + 2 * k].split(), np.float32), p.weight.reshape(-1), atol=1e-5)
        np.testing.assert_allclose(np.array(lines[2 + 2 * k].split(), np.float32), p.bias, atol=1e-5)
    mem = step_memory(learner.tail, 2)
    assert mem["parameters"] == 4 * learner.tail.parameter_count()  # blocks: every parameter trains


def _c_ints(name: str, a: np.ndarray, ctype: str) -> str:
    return f"static const {ctype} {name}[{a.size}] = {{{', '.join(str(int(v)) for v in a.reshape(-1))}}};\n"


@pytest.mark.parametrize("where", WHERE)
def test_generated_bias_step_equals_the_simulator(dep, tmp_path, where: str) -> None:
    """bias mode (TinyTL) on a real int8 deployment: the generated step (backends/c/deep_emit.learner_step) takes
    the region's int8 activations as the int8 kernels give them, trains the float master biases and Φc as
    DeepLearner.step (1e-5), and its int32 biases are the requantized master biases, equal to the simulator's;
    NULL, bad labels or batch, NaN and a refused step change nothing (ASan/UBSan); symbols = step_memory."""
    import subprocess
    from pathlib import Path

    from tinycc.backends.c.deep_emit import learner_step, step_flash, step_memory

    learner = DeepLearner(dep, deep_cuts(dep.extractor, dep.classifier)[-1], "bias", capacity=4, lr=0.05)
    src, order = learner_step(learner, 2)
    assert order and "tcc_deep_step_known" in src
    (tmp_path / "step.c").write_text(src)
    x, y = _data(4, 5)
    q = learner.cut_of(x)
    xf = learner._float_cut(q)
    names = [op.name for op in learner.region_params]
    ks = {n: k for k, n in enumerate(learner.tail.params)}  # tcc_db<k>: the parameter op's position

    def int8_env(rows: np.ndarray) -> list[np.ndarray]:
        env = run_int8(learner.region, {learner.cut: rows}, order)
        return [np.asarray(env[t], np.int8).reshape(len(rows), -1) for t in order]

    def int32_biases() -> list[np.ndarray]:
        return [learner.view.tensors[op.inputs[2]].data.copy() for op in learner.region_params]

    k1 = int8_env(q[:2])
    z0 = learner.logits_cut(q[:2])  # the simulator's prediction from the int8 region's activations
    b0 = int32_biases()
    assert learner.step(q[:2], y[:2])
    b1 = int32_biases()
    assert any((a != b).any() for a, b in zip(b0, b1))  # the step moved int32 biases
    k2 = int8_env(q[2:])  # the second batch's activations come from the int8 kernels with the new biases
    assert learner.step(q[2:], y[2:])
    b2 = int32_biases()
    vals = ", ".join(f"{float(v):.9e}f" for v in xf.reshape(-1))
    main = ('#include <stdio.h>\n#include "step.c"\n'
            f"static const float xs[{xf.size}] = {{{vals}}};\n"
            f"static const int32_t ys[4] = {{{', '.join(map(str, y))}}};\n"
            + "".join(_c_ints(f"k1_{j}", a, "int8_t") + _c_ints(f"k2_{j}", a2, "int8_t")
                      for j, (a, a2) in enumerate(zip(k1, k2)))
            + "static void out(const float *a, int n) { for (int k = 0; k < n; ++k) printf(\"%.9g \", a[k]); "
            "printf(\"\\n\"); }\nstatic void outq(const int32_t *a, int n) { for (int k = 0; k < n; ++k) "
            "printf(\"%ld \", (long)a[k]); printf(\"\\n\"); }\n")
    main += (f"static const int8_t *const kn1[{len(order)}] = {{{', '.join(f'k1_{j}' for j in range(len(order)))}}};\n"
             f"static const int8_t *const kn2[{len(order)}] = {{{', '.join(f'k2_{j}' for j in range(len(order)))}}};\n"
             "static const int8_t *kbad[" + str(len(order)) + "];\n")
    dump = "".join(f"    outq(tcc_bq{ks[n]}, {learner.tail.params[n].bias.size});\n" for n in names)
    params = "".join(f"    out(tcc_db{k}, {p.bias.size});\n" + (f"    out(tcc_dw{k}, {p.weight.size});\n"
                     if learner.tail.trains(n)[0] else "") for k, (n, p) in enumerate(learner.tail.params.items()))
    main += ("int main(void) {\n    static float nan_x[" + str(xf[0].size) + "];\n"
             f"    for (int k = 0; k < {xf[0].size}; ++k) nan_x[k] = xs[k];\n    nan_x[3] = 0.0f / 0.0f;\n"
             f"    static float z[{2 * learner.num_classes}];\n"
             "    printf(\"%d %d %d\\n\", tcc_deep_logits(xs, kn1, 2, z), tcc_deep_logits(xs, NULL, 2, z),\n"
             "           tcc_deep_logits(xs, kbad, 2, z));\n"
             f"    out(z, {2 * learner.num_classes});\n"
             "    int a = tcc_deep_step_known(xs, kn1, ys, 2, 0.05f);\n" + dump +
             f"    int b = tcc_deep_step_known(xs + {xf[0].size * 2}, kn2, ys + 2, 2, 0.05f);\n" + dump + params +
             "    const int32_t bad[2] = {0, 4};\n"
             "    printf(\"%d %d %d %d %d %d %d %d %d\\n\", a, b, tcc_deep_step_known(xs, NULL, ys, 2, 0.05f),\n"
             "           tcc_deep_step_known(xs, kbad, ys, 2, 0.05f), tcc_deep_step_known(NULL, kn1, ys, 2, 0.05f),\n"
             "           tcc_deep_step_known(xs, kn1, bad, 2, 0.05f), tcc_deep_step_known(xs, kn1, ys, 3, 0.05f),\n"
             "           tcc_deep_step_known(nan_x, kn1, ys, 1, 0.05f),\n"
             "           tcc_deep_step_known(xs, kn1, ys, 2, 1.0f / 0.0f));\n"
             + dump + params + "    return 0;\n}\n")
    (tmp_path / "main.c").write_text(main)
    rt = RUNTIME
    lines = _build_run(tmp_path, where).splitlines()
    assert lines[0] == "0 -1 -1"
    np.testing.assert_allclose(np.array(lines[1].split(), np.float32), z0.reshape(-1), atol=1e-5)
    lines = lines[2:]
    nb, npar = len(names), len(params.splitlines())
    c1 = [np.array(v.split(), np.int64) for v in lines[:nb]]
    c2 = [np.array(v.split(), np.int64) for v in lines[nb:2 * nb]]
    for got, want in zip(c1 + c2, b1 + b2):  # the int32 biases: the simulator's, after each step
        np.testing.assert_array_equal(got, want)
    trained = iter(np.array(v.split(), np.float32) for v in lines[2 * nb:2 * nb + npar])
    master = {}
    for n, p in learner.tail.params.items():
        master[n] = next(trained)
        np.testing.assert_allclose(master[n], p.bias, atol=1e-5)
        if learner.tail.trains(n)[0]:
            np.testing.assert_allclose(next(trained), p.weight.reshape(-1), atol=1e-5)
        else:
            assert n in names  # a region op: its weights stay frozen
    for j, op in enumerate(learner.region_params):  # the int32 bias: the C step's own master bias requantized
        np.testing.assert_array_equal(c2[j], requantize_bias(master[op.name], learner.view.tensors[op.inputs[2]]
                                                             .quant.scale))
    codes = lines[2 * nb + npar].split()
    assert codes == ["1", "1", "-1", "-1", "-1", "-1", "-1", "-2", "0"]
    assert lines[2 * nb + npar + 1:] == lines[nb:2 * nb] + lines[2 * nb:2 * nb + npar]  # nothing changed
    # exact RAM and flash: the step's symbols
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{rt}", "-c",
                    str(tmp_path / "step.c"), "-o", str(tmp_path / "step.o")], check=True, capture_output=True)
    nm = subprocess.run(["nm", "-S", str(tmp_path / "step.o")], check=True, capture_output=True, text=True).stdout
    ram = flash = 0
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3].startswith("tcc_"):
            ram += int(parts[1], 16) if parts[2] in "bBdD" else 0
            flash += int(parts[1], 16) if parts[2] in "rR" else 0
    assert ram == sum(step_memory(learner.tail, 2, tuple(names), known=tuple(order)).values())
    assert ram == sum(step_memory(learner.tail, 2, tuple(names), known=learner.known_tensors()).values())
    assert flash == step_flash(learner.tail, tuple(names), known=tuple(order)) > 0
    # the frozen region weights stay the int8 backbone's (1 byte each + a scale per channel), not float copies
    assert "tcc_wq" in src and flash < step_flash(learner.tail, tuple(names))


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("policy", ["fifo", "reservoir"])
def test_generated_learn_path_equals_the_simulator(dep, tmp_path, policy: str, where: str) -> None:
    """blocks mode: the generated learn path (deep_emit.emit_learn: push the int8 cut tensor into the runtime's
    replay buffer, epochs over it in training order, batches dequantized into the step) equals
    DeepLearner.learn sample after sample: buffer bytes, labels and state words exact, parameters to 1e-5;
    a bad label, NULL and a refused step (infinite rate: the sample is removed again) as the project's API."""
    import subprocess
    from pathlib import Path

    from tinycc.backends.c.deep_emit import emit_learn, step_memory
    from tinycc.ir.buffer import ReplayBuffer

    learner = DeepLearner(dep, deep_cuts(dep.extractor, dep.classifier)[-1], "blocks", capacity=3, lr=0.05,
                          epochs=2, batch_size=2)
    b = learner.buffer
    learner.buffer = b = ReplayBuffer(3, b.feature_count, "int8", b.scale, b.zero_point, policy, 5)
    (tmp_path / "step.c").write_text(emit_learn(learner.tail, 2))
    x, y = _data(7, 11)
    q = learner.cut_of(x)
    n = b.feature_count
    pol = {"fifo": 0, "reservoir": 1}[policy]
    main = ('#include <stdio.h>\n#include "step.c"\n' + _c_ints("qs", q, "int8_t")
            + _c_ints("ys", y, "uint8_t")
            + f"static int8_t bq[{3 * n}];\nstatic uint8_t bl[3];\nstatic uint32_t bst[3], bstate[4];\n"
            f"static tcc_buffer_t buf = {{3, {n}, {pol}, 1, {float(b.scale):.9e}f, {int(b.zero_point)}, bq, NULL, bl, "
            "bst, bstate, 5u, 0, NULL, NULL, 0.0f, 0, NULL};\n"
            "static void out(const float *a, int n) { for (int k = 0; k < n; ++k) printf(\"%.9g \", a[k]); "
            "printf(\"\\n\"); }\n"
            "static void dump(void) {\n"
            f"    for (int k = 0; k < {3 * n}; ++k) printf(\"%d \", bq[k]);\n    printf(\"\\n\");\n"
            "    for (int k = 0; k < 3; ++k) printf(\"%d \", bl[k]);\n    printf(\"\\n\");\n"
            "    for (int k = 0; k < 4; ++k) printf(\"%lu \", (unsigned long)bstate[k]);\n    printf(\"\\n\");\n")
    for k, p in enumerate(learner.tail.params.values()):
        main += f"    out(tcc_dw{k}, {p.weight.size}); out(tcc_db{k}, {p.bias.size});\n"
    main += ("}\nint main(void) {\n    tcc_buffer_reset(&buf);\n"
             f"    for (int s = 0; s < 7; ++s) {{ printf(\"%d\\n\", (int)tcc_deep_learn(&buf, qs + s * {n}, ys[s], "
             "0.05f, 2)); dump(); }\n"
             f"    printf(\"%d %d %d %d\\n\", (int)tcc_deep_learn(&buf, qs, {learner.num_classes}, 0.05f, 2),\n"
             "           (int)tcc_deep_learn(&buf, NULL, 0, 0.05f, 2), (int)tcc_deep_learn(NULL, qs, 0, 0.05f, 2),\n"
             "           (int)tcc_deep_learn(&buf, qs, 1, 1.0f / 0.0f, 2));\n    dump();\n    return 0;\n}\n")
    (tmp_path / "main.c").write_text(main)
    rt = RUNTIME
    lines = iter(_build_run(tmp_path, where, ("tinycc_backprop.c", "tinycc_learn.c")).splitlines())

    def check_dump() -> None:
        np.testing.assert_array_equal(np.array(next(lines).split(), np.int64), b.data.reshape(-1))
        np.testing.assert_array_equal(np.array(next(lines).split(), np.int64), b.labels)
        np.testing.assert_array_equal(np.array(next(lines).split(), np.int64), b.state)
        for p in learner.tail.params.values():
            np.testing.assert_allclose(np.array(next(lines).split(), np.float32), p.weight.reshape(-1), atol=1e-5)
            np.testing.assert_allclose(np.array(next(lines).split(), np.float32), p.bias, atol=1e-5)

    for s in range(7):
        learner.learn(q[s], int(y[s]))
        assert not learner.last_refused
        assert int(next(lines)) == b.count
        check_dump()
    assert b.count == 3 and b.state[2] == 7  # full, every sample seen
    learner.lr = float("inf")
    learner.learn(q[0], 1)
    assert learner.last_refused
    assert next(lines).split() == ["-1", "-2", "-2", "-4"]
    check_dump()  # the refused sample is gone again, as in the simulator
    obj = tmp_path / "step.o"  # exact RAM: the step's and the learn path's symbols
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{rt}", "-c",
                    str(tmp_path / "step.c"), "-o", str(obj)], check=True, capture_output=True)
    nm = subprocess.run(["nm", "-S", str(obj)], check=True, capture_output=True, text=True).stdout
    ram = sum(int(p[1], 16) for p in map(str.split, nm.splitlines()) if len(p) == 4 and p[2] in "bBdD")
    mem = step_memory(learner.tail, 2, learn=True)
    assert ram == sum(mem.values()) and mem["labels"] == 8


def test_two_level_learner(dep) -> None:
    """Two-level buffer (latent replay): each learn stores the int8 features the region gives with the biases of
    that moment (oracle: run_int8 of the region) and the cut tensor; Φc is one copy shared by both steps; after
    the deep step, Φc retrains over the feature buffer exactly as plain softmax cross-entropy SGD (numpy oracle);
    bad input stores nothing in either buffer."""
    import copy

    from tinycc.ir.deep import TwoLevelLearner

    cut = deep_cuts(dep.extractor, dep.classifier)[-1]
    learner = TwoLevelLearner(dep, cut, "bias", capacity=2, head_capacity=6, lr=0.05, epochs=1)
    assert all(learner.head.params[k] is learner.tail.params[k] for k in learner.head.params)
    x, y = _data(8, 3)
    q = learner.cut_of(x)
    nan = q[0].astype(np.float32)
    with pytest.raises(ValueError, match="int8 cut tensor"):
        learner.learn(nan, 0)
    with pytest.raises(ValueError, match="class"):
        learner.learn(q[0], 9)
    assert learner.buffer.count == 0 and learner.feat_buffer.count == 0
    for i in range(7):
        want_feat = run_int8(learner.region, {learner.cut: q[i:i + 1]})[learner.feat_name].reshape(-1)
        ref = copy.deepcopy(learner)
        DeepLearner.learn(ref, q[i], int(y[i]))  # the deep part alone
        learner.learn(q[i], int(y[i]))
        fb = learner.feat_buffer
        stored = [fb.data[fb.slot(k)] for k in range(fb.count)]
        assert any(np.array_equal(s, want_feat) for s in stored)
        # oracle: numpy SGD of the Dense chain over the feature buffer in training order, batch 1
        layers = [ref.tail.params[k] for k in learner.head.params]
        for k in range(fb.count):
            s = fb.slot(k)
            h = [dequantize(fb.data[s], np.float32(learner.feat_scale), learner.feat_zp).astype(np.float32)[None]]
            for j, p in enumerate(layers):
                z = h[-1] @ p.weight.T + p.bias
                h.append(np.maximum(z, 0) if j < len(layers) - 1 else z)
            d = softmax(h[-1]).astype(np.float32)
            d[0, fb.labels[s]] -= 1
            for j in reversed(range(len(layers))):
                p = layers[j]
                dx = d @ p.weight
                p.weight -= np.float32(0.05) * (d.T @ h[j])
                p.bias -= np.float32(0.05) * d[0]
                d = dx * (h[j] > 0) if j else dx
        for k, p in zip(learner.head.params, layers):
            np.testing.assert_allclose(learner.tail.params[k].weight, p.weight, atol=1e-5)
            np.testing.assert_allclose(learner.tail.params[k].bias, p.bias, atol=1e-5)
    assert learner.buffer.count == 2 and learner.feat_buffer.count == 6


def test_lean_step_plan(dep) -> None:
    """The lean layout of the bias step: a float value only for what a float op reads (the int8 region's
    activations stay int8), gradient slots reused along the backward (fewer than one per tensor), every
    gradient's first contribution written in place."""
    from tinycc.ir.backprop import step_memory, step_ops, step_plan

    learner = DeepLearner(dep, deep_cuts(dep.extractor, dep.classifier)[-1], "bias", capacity=1)
    known = learner.known_tensors()
    plan = step_plan(learner.tail, known)
    ops = step_ops(learner.tail)
    float_readers = {t for op in ops if op.outputs[0] not in known for t in op.inputs}
    assert plan.values and all(t in float_readers or t not in known for t in plan.values if t != learner.cut)
    assert learner.cut not in plan.values  # the bias step never reads the cut in float
    assert plan.slots < len(plan.slot)
    full = step_memory(learner.tail, 1, known=())
    lean = step_memory(learner.tail, 1, known=known)
    assert lean["values"] < full["values"] and lean["gradients"] == full["gradients"]
