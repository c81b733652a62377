"""The deep bias learner in C (backends/c/deep_learn.py): the int8 region on the runtime's generic kernels reading
the RAM int32 biases, and the learn path over a buffer of int8 cut tensors, equal DeepLearner (ASan/UBSan; M4)."""
from __future__ import annotations

import numpy as np
import pytest

from tinycc.ir.buffer import ReplayBuffer
from tinycc.ir.deep import DeepLearner, deep_cuts

from .test_deep import WHERE, _build_run, _c_ints, _data, dep  # noqa: F401  (dep: the module's fixture)

RUNTIME_FILES = ("tinycc_backprop.c", "tinycc_learn.c", "tinycc_kernels.c")


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("policy", ["fifo", "reservoir"])
def test_bias_learn_path_equals_the_simulator(dep, tmp_path, policy: str, where: str) -> None:  # noqa: F811
    """Sample after sample: buffer bytes, labels and state words exact, the int32 biases the int8 kernels read
    exact, the float master biases and Φc to 1e-5, the prediction of every sample (logits 1e-5, class) after each
    learn; a bad label, NULL and a refused step (infinite rate: the sample is removed again, nothing changed)."""
    from tinycc.backends.c.deep_learn import emit_bias_learn

    cut = deep_cuts(dep.extractor, dep.classifier)[-1]
    learner = DeepLearner(dep, cut, "bias", capacity=3, lr=0.05, epochs=2, batch_size=2)
    b = learner.buffer
    learner.buffer = b = ReplayBuffer(3, b.feature_count, "int8", b.scale, b.zero_point, policy, 5)
    (tmp_path / "step.c").write_text(emit_bias_learn(learner, 2))
    x, y = _data(7, 11)
    q = learner.cut_of(x)
    n = b.feature_count
    names = list(learner.tail.params)
    region = [names.index(op.name) for op in learner.region_params]
    pol = {"fifo": 0, "reservoir": 1}[policy]
    main = ('#include <stdio.h>\n#include "step.c"\n' + _c_ints("qs", q, "int8_t") + _c_ints("ys", y, "uint8_t")
            + f"static int8_t bq[{3 * n}];\nstatic uint8_t bl[3];\nstatic uint32_t bst[3], bstate[4];\n"
            f"static tcc_buffer_t buf = {{3, {n}, {pol}, 1, {float(b.scale):.9e}f, {int(b.zero_point)}, bq, NULL, bl, "
            "bst, bstate, 5u, 0, NULL, NULL, 0.0f, 0, NULL};\n"
            "static void out(const float *a, int n) { for (int k = 0; k < n; ++k) printf(\"%.9g \", a[k]); "
            "printf(\"\\n\"); }\n"
            "static void outq(const int32_t *a, int n) { for (int k = 0; k < n; ++k) printf(\"%ld \", (long)a[k]); "
            "printf(\"\\n\"); }\n"
            f"static float z[{learner.num_classes}];\n"
            "static void dump(void) {\n"
            f"    for (int k = 0; k < {3 * n}; ++k) printf(\"%d \", bq[k]);\n    printf(\"\\n\");\n"
            "    for (int k = 0; k < 3; ++k) printf(\"%d \", bl[k]);\n    printf(\"\\n\");\n"
            "    for (int k = 0; k < 4; ++k) printf(\"%lu \", (unsigned long)bstate[k]);\n    printf(\"\\n\");\n")
    for k in region:
        main += f"    outq(tcc_bq{k}, {learner.tail.params[names[k]].bias.size});\n"
    for k, (name, p) in enumerate(learner.tail.params.items()):
        main += f"    out(tcc_db{k}, {p.bias.size});\n"
        if learner.tail.trains(name)[0]:
            main += f"    out(tcc_dw{k}, {p.weight.size});\n"
    main += (f"    for (int s = 0; s < 7; ++s) {{ printf(\"%d \", (int)tcc_deep_predict(qs + s * {n}, z)); "
             f"out(z, {learner.num_classes}); }}\n")
    main += ("}\nint main(void) {\n    tcc_buffer_reset(&buf);\n"
             f"    for (int s = 0; s < 7; ++s) {{ printf(\"%d\\n\", (int)tcc_deep_learn(&buf, qs + s * {n}, ys[s], "
             "0.05f, 2)); dump(); }\n"
             f"    printf(\"%d %d %d %d %d\\n\", (int)tcc_deep_learn(&buf, qs, {learner.num_classes}, 0.05f, 2),\n"
             "           (int)tcc_deep_learn(&buf, NULL, 0, 0.05f, 2), (int)tcc_deep_learn(NULL, qs, 0, 0.05f, 2),\n"
             "           (int)tcc_deep_learn(&buf, qs, 1, 1.0f / 0.0f, 2), (int)tcc_deep_predict(NULL, z));\n"
             "    dump();\n    return 0;\n}\n")
    (tmp_path / "main.c").write_text(main)
    lines = iter(_build_run(tmp_path, where, RUNTIME_FILES).splitlines())

    def check_dump() -> None:
        np.testing.assert_array_equal(np.array(next(lines).split(), np.int64), b.data.reshape(-1))
        np.testing.assert_array_equal(np.array(next(lines).split(), np.int64), b.labels)
        np.testing.assert_array_equal(np.array(next(lines).split(), np.int64), b.state)
        for op in learner.region_params:  # what the int8 kernels read: exact
            np.testing.assert_array_equal(np.array(next(lines).split(), np.int64),
                                          learner.view.tensors[op.inputs[2]].data)
        for name, p in learner.tail.params.items():
            np.testing.assert_allclose(np.array(next(lines).split(), np.float32), p.bias, atol=1e-5)
            if learner.tail.trains(name)[0]:
                np.testing.assert_allclose(np.array(next(lines).split(), np.float32), p.weight.reshape(-1),
                                           atol=1e-5)
        cls, z = learner.predict(q)
        for s in range(7):
            got = next(lines).split()
            assert int(got[0]) == cls[s]
            np.testing.assert_allclose(np.array(got[1:], np.float32), z[s], atol=1e-5)

    moved = False
    for s in range(7):
        before = [learner.view.tensors[op.inputs[2]].data.copy() for op in learner.region_params]
        learner.learn(q[s], int(y[s]))
        assert not learner.last_refused
        moved |= any((a != learner.view.tensors[op.inputs[2]].data).any()
                     for a, op in zip(before, learner.region_params))
        assert int(next(lines)) == b.count
        check_dump()
    assert moved  # the int8 backbone's biases did learn
    learner.lr = float("inf")
    learner.learn(q[0], 1)
    assert learner.last_refused
    assert next(lines).split() == ["-1", "-2", "-2", "-4", "-1"]
    check_dump()  # the refused sample is gone again, nothing else changed
