"""Fuzz test of the generated runtime: a C harness drives the public API of generated projects (model.h) with a
fixed-seed PRNG -- thousands of interleaved predict / learn / reset calls with random labels (in range, out of
range, 255), NaN / infinity / 1e30 / FLT_MAX / denormal inputs and targets, random int8 inputs and features --
built with ASan + UBSan (float-cast-overflow included, -fno-sanitize-recover). It asserts the documented return
codes (-1 bad label or missing target, -2 NaN/infinity, the buffer count otherwise), that an error stores and
trains nothing (buffer count and classifier weights unchanged; -4, a refused retraining step, removes the
sample again, issue #29), that the count stays within the capacity and predictions stay finite and in range; the sanitizers see
no fault. One ce, bce, mse (autoencoder) and
256-class model; bounded: a fixed number of calls per model."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from .deploy_util import emit, render_project
from tinycc.errors import UnsupportedLayerError
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model
from .deploy_util import build_deployment

from . import c_harness
from .test_c_backend import _graph as _zoo_graph
from .test_heads import _graph as _head_graph
from .test_heads import autoencoder, binary_net
from .test_tflm_project import library  # noqa: F401  (fixture: the host TFLite Micro library)
from .test_deep import dep  # noqa: F401  (fixture: a small int8 residual deployment)

CALLS = 4000

FUZZ_C = r"""
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

#define IN NAME_INPUT_SIZE
#define FEAT NAME_FEATURES
#define OUTS NAME_OUTPUTS
#ifdef NAME_DEEP_SPARSE /* --train sparse: buffer_count is the classifier's buffer of features */
#define CAP NAME_FEATURE_BUFFER_CAPACITY
#else
#define CAP NAME_BUFFER_CAPACITY
#endif
#define HEAD NAME_HEAD

static uint32_t rng = 0x9E3779B9u;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}
static float unit(void) { return (float)(rnd() >> 8) / 16777216.0f; } /* [0, 1) */

/* a finite ordinary value, or (when wild) now and then NaN, +-infinity, +-1e30, +-FLT_MAX or a denormal */
static float value(int wild) {
    if (wild) {
        switch (rnd() % 24) {
        case 0: return NAN;
        case 1: return INFINITY;
        case 2: return -INFINITY;
        case 3: return 1e30f;
        case 4: return -1e30f;
        case 5: return FLT_MAX;
        case 6: return -FLT_MAX;
        case 7: return 1e-45f;
        default: break;
        }
    }
    return 4.0f * unit() - 2.0f;
}

static int finite_all(const float *v, int32_t n) {
    int32_t i;
    for (i = 0; i < n; ++i) {
        if (!isfinite(v[i])) {
            return 0;
        }
    }
    return 1;
}

static long step;
static void fail(const char *what, double got) {
    printf("FAIL step %ld: %s (got %g)\n", step, what, got);
    exit(1);
}

/* every classifier weight and bias, to check that a refused call trains nothing */
static float snap_a[NAME_WEIGHTS], snap_b[NAME_WEIGHTS], snap_init[NAME_WEIGHTS];
static int32_t snapshot(float *out) {
    int32_t l, n = 0, no, ni;
    for (l = 0; l < NAME_LAYERS; ++l) {
        const float *w = name_classifier_weights(l, &no, &ni);
        const float *b = name_classifier_bias(l);
        memcpy(out + n, w, sizeof(float) * (size_t)(no * ni));
        n += no * ni;
        memcpy(out + n, b, sizeof(float) * (size_t)no);
        n += no;
    }
#if defined(NAME_DEEP_BLOCKS)
    for (l = 0; l < NAME_BACKBONE_LAYERS; ++l) { /* --deep blocks: the float region's weights and biases */
        const float *w = name_backbone_weights(l, &no);
        memcpy(out + n, w, sizeof(float) * (size_t)no);
        n += no;
        w = name_backbone_bias_f32(l, &no);
        memcpy(out + n, w, sizeof(float) * (size_t)no);
        n += no;
    }
#elif defined(NAME_DEEP_SPARSE)
    for (l = 0; l < NAME_BACKBONE_LAYERS; ++l) { /* --train sparse: the trained int32 biases and channel masters */
        const int32_t *q = name_backbone_bias(l, &no);
        const float *w;
        if (q) memcpy(out + n, q, sizeof(int32_t) * (size_t)no);
        n += no;
        w = name_backbone_weights(l, &no);
        if (w) memcpy(out + n, w, sizeof(float) * (size_t)no);
        n += no;
    }
#elif defined(NAME_DEEP)
    for (l = 0; l < NAME_BACKBONE_LAYERS; ++l) { /* --deep bias: the int32 biases the int8 kernels read (bits) */
        const int32_t *q = name_backbone_bias(l, &no);
        memcpy(out + n, q, sizeof(int32_t) * (size_t)no);
        n += no;
    }
#endif
    return n;
}

static void check_predict(int32_t k, const float *probs) {
#if HEAD == 2
    if (k != 0) fail("regression predict returns 0", k);
#else
    if (k < 0 || k >= NAME_CLASSES) fail("class out of range", k);
#endif
    if (!finite_all(probs, OUTS)) fail("non-finite prediction", k);
}

int main(void) {
    static float x[IN], probs[OUTS];
    static int8_t xq[IN], f[FEAT];
#if HEAD == 2
    static float t[OUTS];
#endif
    long n_ok = 0, n_label = 0, n_nan = 0, n_target = 0, full = 0, n_step = 0;
    int32_t count = 0, i, n_snap;
    if (name_init() != 0) fail("init", 0);
    n_snap = snapshot(snap_init);
    if (n_snap != NAME_WEIGHTS) fail("weight count", n_snap);
    for (step = 0; step < NAME_CALLS; ++step) {
        const uint32_t op = rnd() % 16;
        const int wild = rnd() % 3 == 0;
        int32_t rc, bad_x, null_in, before;
        for (i = 0; i < IN; ++i) {
            x[i] = value(wild);
            xq[i] = (int8_t)(rnd() & 0xFF);
        }
        for (i = 0; i < FEAT; ++i) {
            f[i] = (int8_t)(rnd() & 0xFF);
        }
        bad_x = !finite_all(x, IN);
        null_in = rnd() % 32 == 0; /* a NULL input or features pointer: refused like a non-finite input */
        before = name_buffer_count();
        if (before != count) fail("buffer count drifted", before);
        if (null_in) {
            if (name_predict_f32(NULL, probs) != -1 || name_predict_s8(NULL, probs) != -1 ||
                name_predict_features_s8(NULL, probs) != -1) {
                fail("predict of NULL is -1", 0);
            }
            memset(f, 7, sizeof f);
            name_features(NULL, f);
            name_features(x, NULL);
#if HEAD == 2
            rc = name_learn_target_f32(NULL, x);
            if (rc != -2 || name_learn_features_target_s8(NULL, x) != -2) fail("learn of NULL is -2", rc);
            if (name_error_f32(NULL, x) != -1.0f || name_error_features_s8(NULL, x) != -1.0f) fail("error of NULL", 0);
#else
            rc = name_learn_f32(NULL, 0);
            if (rc != -2 || name_learn_features_s8(NULL, 0) != -2) fail("learn of NULL is -2", rc);
#endif
            if (name_buffer_count() != count) fail("a refused learn stored a sample", name_buffer_count());
        } else if (op < 3) {
            rc = name_predict_f32(x, rnd() % 2 ? probs : NULL);
            if (bad_x) {
                if (rc != -1) fail("predict of a non-finite input is -1", rc);
            } else {
                rc = name_predict_f32(x, probs);
                check_predict(rc, probs);
            }
        } else if (op < 5) {
            check_predict(name_predict_s8(xq, probs), probs);
        } else if (op == 5) {
            name_features(x, f); /* NaN, infinity and huge inputs quantize to defined values */
            check_predict(name_predict_features_s8(f, probs), probs);
        } else if (op < 14) {
            const int from_features = op >= 12;
            int expect;
            (void)snapshot(snap_b);
#if HEAD == 2
            const float *target = t;
            int bad_t;
            for (i = 0; i < OUTS; ++i) {
                t[i] = rnd() % 4 == 0 ? value(1) : value(0);
            }
            if (rnd() % 8 == 0) {
                target = NULL;
            }
            bad_t = target != NULL && !finite_all(t, OUTS);
            rc = from_features ? name_learn_features_target_s8(f, target) : name_learn_target_f32(x, target);
            if (!from_features && bad_x) {
                expect = -2;
            } else if (target == NULL && (from_features || !NAME_TARGET_IS_INPUT)) {
                expect = -1;
            } else if (bad_t) {
                expect = -2;
            } else {
                expect = 0;
            }
            n_target += expect == -1;
#else
            uint8_t label;
            const uint32_t kind = rnd() % 4;
            int32_t value_of_label;
            label = (uint8_t)(kind == 0 ? rnd() & 0xFF : kind == 1 ? 255u : rnd() % NAME_CLASSES);
            value_of_label = label;
            rc = from_features ? name_learn_features_s8(f, label) : name_learn_f32(x, label);
            expect = (!from_features && bad_x) ? -2 : (value_of_label >= NAME_CLASSES ? -1 : 0);
            n_label += expect == -1;
#endif
            n_nan += expect == -2;
            if (expect == 0 && rc == -4) { /* a retraining step was refused (non-finite): the sample removed again */
                const int32_t now = name_buffer_count();
                /* not full: exactly as before; full: the entry the sample had replaced is gone with it */
                if (now != count && !(count == CAP && now == CAP - 1)) fail("a refused step removes its sample", now);
                count = now;
                ++n_step;
            } else if (expect < 0) {
                if (rc != expect) fail("learn error code", rc);
                if (name_buffer_count() != count) fail("a refused learn stored a sample", name_buffer_count());
                (void)snapshot(snap_a);
                if (memcmp(snap_a, snap_b, sizeof snap_a) != 0) fail("a refused learn trained", rc);
            } else {
                if (rc < count || rc < 1 || rc > CAP || rc > count + 1) fail("learn returns the buffer count", rc);
                count = rc;
                full += count == CAP;
                ++n_ok;
            }
        } else if (op == 14) {
            if (rnd() % 32 == 0) {
                name_buffer_reset();
                count = 0;
            }
        } else if (rnd() % 2 == 0) {
            int32_t no = 1, ni = 1;
            const int32_t layer = rnd() % 2 ? -1 - (int32_t)(rnd() % 1000) : NAME_LAYERS + (int32_t)(rnd() % 1000);
            if (name_classifier_weights(layer, &no, &ni) != NULL || no != 0 || ni != 0 ||
                name_classifier_bias(layer) != NULL) {
                fail("a layer index out of range gives NULL", layer);
            }
        } else if (rnd() % 4 == 0) {
#ifdef NAME_DEEP /* no reset (the initial parameters are the load image): the backbone accessor's range instead */
            int32_t nb = 1;
            const int32_t layer = rnd() % 2 ? -1 - (int32_t)(rnd() % 1000) : NAME_BACKBONE_LAYERS + (int32_t)(rnd() % 9);
#ifdef NAME_DEEP_BLOCKS
            if (name_backbone_weights(layer, &nb) != NULL || nb != 0) fail("a backbone index out of range gives NULL", layer);
            nb = 1;
            if (name_backbone_bias_f32(layer, &nb) != NULL || nb != 0) fail("a backbone index out of range gives NULL", layer);
#else
            if (name_backbone_bias(layer, &nb) != NULL || nb != 0) fail("a backbone index out of range gives NULL", layer);
#endif
            (void)snap_init;
#else
            name_reset_classifier();
            (void)snapshot(snap_a);
            if (memcmp(snap_a, snap_init, sizeof snap_a) != 0) fail("reset_classifier restores the weights", 0);
#endif
        }
#if HEAD == 2
        if (op == 15) {
            const int no_target = rnd() % 2;
            const float e = name_error_f32(x, no_target ? NULL : x);
            if (bad_x || (no_target && !NAME_TARGET_IS_INPUT)) {
                if (e != -1.0f) fail("error_f32 of bad input is -1", e);
            } else if (!(e >= 0.0f)) { /* +infinity when x holds 1e30: (1e30)^2 overflows float */
                fail("error_f32", e);
            }
        }
#endif
    }
    if (name_buffer_count() != count) fail("final buffer count", name_buffer_count());
    printf("ok %ld label %ld nan %ld target %ld full %ld refused_step %ld\n", n_ok, n_label, n_nan, n_target, full,
           n_step);
    return 0;
}
"""


def _wide_graph(session, classes: int = 256):
    """A softmax head of ``classes`` classes (256: every uint8 label is a class)."""
    import keras

    keras.utils.set_random_seed(3)
    inp = keras.Input((12,))
    h = keras.layers.Dense(8, activation="relu", name="h")(inp)
    m = keras.Model(inp, keras.layers.Dense(classes, activation="softmax", name="out")(h), name=f"wide{classes}")
    g = graph_from_keras_model(m)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    return g, np.random.default_rng(4).normal(size=(64, 12)).astype(np.float32)


CASES = {"ce_digits": {"buffer": 12, "batch_size": 2, "policy": "class_balanced", "lr": 0.05},
         "bce_binary": {"cut": "d1", "buffer": 6, "policy": "reservoir", "storage": "float32"},
         "mse_autoencoder": {"cut": "relu_4", "buffer": 6, "lr": 0.02},
         "ce_256_classes": {"buffer": 8, "lr": 0.05}}


def _case(session, case: str):
    if case == "ce_digits":
        g, _, _, calib = _zoo_graph(session, "digits")
        return g, calib
    if case == "ce_256_classes":
        return _wide_graph(session)
    g, _, calib = _head_graph(session, binary_net if case == "bce_binary" else autoencoder)
    return g, calib


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is not installed")
@pytest.mark.parametrize("case", list(CASES))
def test_public_api_under_random_calls(session, tmp_path: Path, case: str) -> None:
    g, calib = _case(session, case)
    opts = {"calib_data": calib, **CASES[case]}
    dep = build_deployment(g, opts, session, CBackend())
    render_project(dep, opts, tmp_path)
    r = c_harness.run_clean(c_harness.build_host(tmp_path, main=_fuzz_source(dep)), timeout=120)
    stats = dict(zip(r.stdout.split()[::2], map(int, r.stdout.split()[1::2])))
    # the random calls reach every path: accepted learns (the buffer full), refused labels / targets, NaN inputs
    assert stats["ok"] > 500 and stats["full"] > 100 and stats["nan"] > 100, stats
    if dep.loss == "mse":
        assert stats["target"] > 20, stats
    elif dep.num_classes < 256:
        assert stats["label"] > 300, stats
    else:
        assert stats["label"] == 0, stats  # every uint8 label is a class


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is not installed")
@pytest.mark.parametrize("mode", ["bias", "blocks"])
def test_deep_project_api_under_random_calls(tmp_path: Path, mode: str) -> None:
    """The --deep bias / blocks project's API (backends/c/deep_project.py) under the same random calls as the head
    projects (ASan/UBSan): NaN / infinity inputs -2, labels out of range -1, NULL -1/-2, nothing stored or trained
    then (classifier weights and the int32 backbone biases, blocks: the float region's weights and biases, compared
    bit for bit), out-of-range layer indices NULL, the buffer count within capacity, predictions finite and in
    range; every path taken."""
    from tinycc.deploy import build_deep_deployment
    from tinycc.session import Session

    from .deploy_util import make_config
    from .test_deep_deploy import CALIB, graph_from_keras_model, resnet_add

    import keras

    session = Session(autoload=False)
    keras.utils.set_random_seed(0)
    g = graph_from_keras_model(resnet_add())
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    config = make_config(session, deep=(mode,), lr=0.05, buffer=4, batch_size=2, policy="reservoir")
    dep = build_deep_deployment(g, config, session, CBackend(), CALIB)
    CBackend().emit(dep, tmp_path)
    src = _fuzz_source(dep, 1500)
    r = c_harness.run_clean(c_harness.build_host(tmp_path, main=src), timeout=600)
    stats = dict(zip(r.stdout.split()[::2], map(int, r.stdout.split()[1::2])))
    assert stats["ok"] > 150 and stats["full"] > 50 and stats["nan"] > 30 and stats["label"] > 100, stats


def test_more_classes_than_one_byte_labels_is_refused(session) -> None:
    """uint8 labels (buffer, C API, serial protocol) cannot name class 256 and above: refused by layer name."""
    g, calib = _wide_graph(session, 300)
    with pytest.raises(UnsupportedLayerError, match="layer 'out': 300 classes, but on-device labels are one byte"):
        build_deployment(g, {"calib_data": calib, "buffer": 4}, session, CBackend())


def test_arduino_protocol_of_a_256_class_model(session, tmp_path: Path) -> None:
    """The serial protocol of a 256-class model builds with -Werror (its label check was always false:
    -Wtype-limits) and learns label 255 from a float input ('L') and from int8 features ('l')."""
    import struct

    from tinycc.backends.arduino import ArduinoBackend

    from . import arduino_harness
    from .test_arduino import frame, read_reply

    g, calib = _wide_graph(session)
    dep = build_deployment(g, {"calib_data": calib, "buffer": 4, "board": "nano33ble"}, session, ArduinoBackend())
    emit(ArduinoBackend(), dep, {}, tmp_path)
    exe = arduino_harness.build_host_proto(tmp_path, dep.name, tmp_path / "proto_host")
    p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def ask(data: bytes) -> tuple[bytes, bytes]:
            p.stdin.write(data)
            p.stdin.flush()
            return read_reply(p.stdout)

        x = calib[0].astype(np.float32)
        assert ask(frame(b"L", x.tobytes() + b"\xff")) == (b"L", struct.pack("<I", 1))
        assert ask(frame(b"l", bytes(dep.feature_count) + b"\xff")) == (b"l", struct.pack("<I", 2))
        x[3] = np.nan
        assert ask(frame(b"L", x.tobytes() + b"\x07")) == (b"E", b"\x06")
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    assert p.returncode == 0 and b"runtime error" not in p.stderr.read()


def _fuzz_source(dep, calls: int = CALLS) -> str:
    weights = sum(layer.weight.size + layer.bias.size for layer in dep.classifier)
    if dep.meta.get("deep"):  # --deep: the trained backbone parameters are snapshot too
        from tinycc.backends.c.deep_project import deep_learner

        learner = deep_learner(dep)
        if learner.mode == "sparse":  # the trained biases and channel masters
            weights += sum(sum(learner.tail.trained_sizes(op.name)) for op in learner.region_params)
        else:
            weights += sum(int(learner.tail.params[op.name].bias.size) for op in learner.region_params)
        if learner.mode == "blocks":  # the float region's weights too
            weights += sum(int(learner.tail.params[op.name].weight.size) for op in learner.region_params)
    return (FUZZ_C.replace("NAME_WEIGHTS", str(weights)).replace("NAME_LAYERS", str(len(dep.classifier)))
            .replace("NAME_CALLS", str(calls)).replace("NAME_", f"{dep.name.upper()}_")
            .replace("name_", f"{dep.name}_"))


@pytest.mark.slow
def test_tflm_public_api_under_random_calls(session, library, tmp_path: Path) -> None:
    """The same harness against the tflm target (TFLite Micro runs the extractor; tinycc's API layer and
    classifier): its main.c replaced by the harness, built with the project's Makefile under the sanitizers."""
    from .deploy_util import compile_model

    from .zoo import build as build_model, sample_input

    m = build_model("mlp")
    m.save(tmp_path / "mlp.keras")
    res = compile_model(str(tmp_path / "mlp.keras"), "tflm", str(tmp_path / "proj"),
                        {"calib_data": sample_input(m, 200, 2), "buffer": 6, "batch_size": 2, "lr": 0.05}, session)
    proj = res.output
    (proj / "main.c").write_text(_fuzz_source(res.deployment))
    r = subprocess.run(["make", "-s", "-C", str(proj), "tinycc_demo", f"TFLM_DIR={library.tflm_dir}",
                        f"TFLM_LIB={library.lib}", "EXTRA=" + " ".join(c_harness.SANITIZE_FLOAT)],
                       capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    r = subprocess.run([str(proj / "tinycc_demo")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "runtime error" not in r.stderr and "Sanitizer" not in r.stderr, \
        (r.stdout[-2000:], r.stderr[-3000:])
    stats = dict(zip(r.stdout.split()[::2], map(int, r.stdout.split()[1::2])))
    assert stats["ok"] > 500 and stats["full"] > 100 and stats["nan"] > 100 and stats["label"] > 300, stats


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc is not installed")
def test_features_of_nan_infinity_and_huge_inputs_equal_the_interpreter(session, tmp_path: Path) -> None:
    """The generated extractor on inputs holding NaN, +-infinity, +-1e30 and +-FLT_MAX gives the int8 features of
    tinycc's int8 interpreter (NaN quantizes to the zero point, the others saturate), under UBSan."""
    from tinycc.ir.simulator import Simulator

    from .test_c_kernels import _c_float

    g, _, _, calib = _zoo_graph(session, "mlp")
    opts = {"calib_data": calib, "buffer": 4}
    dep = build_deployment(g, opts, session, CBackend())
    render_project(dep, opts, tmp_path)
    shape = tuple(dep.extractor.tensors[dep.extractor.inputs[0]].shape[1:])
    rng = np.random.default_rng(5)
    special = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 3.4028235e38, -3.4028235e38], np.float32)
    x = rng.normal(size=(8,) + shape).astype(np.float32).reshape(8, -1)
    for i in range(8):
        n = min(x.shape[1], 3 * i + 1)
        x[i, rng.choice(x.shape[1], size=n, replace=False)] = rng.choice(special, n)
    rows = [f"    {{ static const float x[{x.shape[1]}] = {{{', '.join(_c_float(v) for v in row)}}};"
            f" {dep.name}_features(x, f); dump(f); }}" for row in x]
    src = "\n".join(["#include <math.h>", "#include <stdio.h>", '#include "model.h"',
                     f"static int8_t f[{dep.feature_count}];",
                     "static void dump(const int8_t *p) {", "    int32_t i;",
                     f"    for (i = 0; i < {dep.feature_count}; ++i) {{ printf(\"%d \", p[i]); }}",
                     '    printf("\\n");',
                     "}", "int main(void) {", f"    {dep.name}_init();", *rows, "    return 0;", "}", ""])
    r = c_harness.run_clean(c_harness.build_host(tmp_path, main=src), timeout=60)
    got = np.array([[int(v) for v in line.split()] for line in r.stdout.splitlines()])
    np.testing.assert_array_equal(got, Simulator(dep).features(x.reshape((8,) + shape)))


DEEP_FUZZ_C = r"""
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "step.c"

static uint32_t rng = 2463534242u;
static uint32_t next(void) { rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5; return rng; }
static float value(void) {
    static const float odd[] = {NAN, INFINITY, -INFINITY, 1e30f, FLT_MAX, 1e-40f};
    uint32_t r = next() % 64;
    return r < 6 ? odd[r] : (float)((int32_t)(next() % 2001) - 1000) / 500.0f;
}

int main(void) {
    static float x[BATCH * CUT];
    static float before[PARAMS], after[PARAMS];
    /* not a huge finite rate: the weights would blow up once and every later step be refused */
    static const float rates[] = {0.05f, 0.0f, 0.01f, 0.1f, INFINITY};
    int counts[3] = {0, 0, 0};
    for (int call = 0; call < CALLS; ++call) {
        static const int32_t bad_n[] = {-1, 0, BATCH + 1}, bad_y[] = {-1, CLASSES, 255};
        int32_t n = next() % 8 == 0 ? bad_n[next() % 3] : 1 + (int32_t)(next() % BATCH), y[BATCH];
        int bad = n < 1 || n > BATCH, nonfinite = 0;
        for (int k = 0; k < BATCH; ++k) {
            y[k] = next() % 16 == 0 ? bad_y[next() % 3] : (int32_t)(next() % CLASSES);
            if (k < n && (y[k] < 0 || y[k] >= CLASSES)) bad = 1;
        }
        int odd_inputs = next() % 4 == 0;
        for (int k = 0; k < BATCH * CUT; ++k)
            x[k] = odd_inputs ? value() : (float)((int32_t)(next() % 201) - 100) / 50.0f;
        for (int k = 0; k < n * CUT && !bad; ++k) nonfinite |= !isfinite(x[k]);
        snapshot(before);
        int null = next() % 50 == 0;
        int r = tcc_deep_step(null ? NULL : x, y, n, rates[next() % 16 == 0 ? 4 : next() % 4]);
        snapshot(after);
        if (!bad && !null && nonfinite != (r == -2)) {
            printf("call %d: a non-finite input gave %d\n", call, r);
            return 1;
        }
        if (r == -1 || r == -2) {
            counts[0]++;
        } else if (bad || null) {
            printf("call %d: bad batch or label accepted (%d)\n", call, r);
            return 1;
        }
        if (r != 1 && memcmp(before, after, sizeof before)) {
            printf("call %d: a refused step (%d) changed the parameters\n", call, r);
            return 1;
        }
        if (r == 1) {
            counts[2]++;
            if (nonfinite) { printf("call %d: a non-finite input trained\n", call); return 1; }
            for (int k = 0; k < PARAMS; ++k) if (!isfinite(after[k])) { printf("non-finite parameter\n"); return 1; }
        }
        if (r == 0) counts[1]++;
        if (r < -2 || r > 1) { printf("call %d: return %d\n", call, r); return 1; }
    }
    printf("%d %d %d\n", counts[0], counts[1], counts[2]);
    return 0;
}
"""


def test_deep_step_under_random_calls(session, tmp_path: Path) -> None:
    """The generated deep SGD step (backends/c/deep_emit) under random batches, labels (in and out of range),
    NaN / infinity / 1e30 / FLT_MAX / denormal inputs, NULL and rates up to infinity: -1 for a bad batch, label or
    NULL, -2 for a non-finite input, 0 (refused, nothing changed) or 1 (every parameter finite); the sanitizers
    see no fault."""
    from tinycc.backends.c.deep_emit import emit_step

    from .test_backprop import _tail, _tail_model

    t = _tail(session, _tail_model("max", 8), "blocks")
    (tmp_path / "step.c").write_text(emit_step(t, 3))
    params = [(f"tcc_dw{k}", p.weight.size) for k, p in enumerate(t.params.values())] + \
             [(f"tcc_db{k}", p.bias.size) for k, p in enumerate(t.params.values())]
    snap = "static void snapshot(float *to) {\n" + "".join(
        f"    memcpy(to, {n}, sizeof {n}); to += {s};\n" for n, s in params) + "}\n"
    defs = (f"#define BATCH 3\n#define CUT {int(np.prod(t.graph.tensors[t.cut].shape[1:]))}\n#define CLASSES 3\n"
            f"#define PARAMS {sum(s for _, s in params)}\n#define CALLS 1500\n")
    src = DEEP_FUZZ_C.replace('#include "step.c"\n', '#include <string.h>\n#include "step.c"\n' + snap, 1)
    out = c_harness.run_runtime_program(defs + src, tmp_path, "fuzz", timeout=300,
                                        runtime=("tinycc_backprop.c",), quiet=True)
    rejected, refused, trained = map(int, " ".join(out).split())
    assert rejected > 100 and refused > 50 and trained > 100  # every path was taken


DEEP_KNOWN_WRAP = r"""
static int8_t kq[NK][BATCH * KMAX];
static const int8_t *kp[NK];
static int32_t bq_before[NBQ], bq_check[NBQ];
static int last_null;  /* the call passed a NULL activation array */
static float db_now[NBQ];

static int step_known(const float *x, const int32_t *y, int32_t n, float lr) {
    uint32_t pick = next() % 40;
    for (int j = 0; j < NK; ++j) {
        for (int k = 0; k < BATCH * KMAX; ++k) kq[j][k] = (int8_t)((int32_t)(next() % 256) - 128);
        kp[j] = kq[j];
    }
    if (pick == 1) kp[next() % NK] = NULL;
    last_null = pick < 2;
    snapshot_bq(bq_before);
    int r = tcc_deep_step_known(x, pick == 0 ? NULL : kp, y, n, lr);
    if ((pick == 0 || pick == 1) && r != -1) { printf("NULL activations accepted (%d)\n", r); exit(1); }
    snapshot_bq(bq_check);
    if (r != 1 && memcmp(bq_before, bq_check, sizeof bq_before)) { printf("a refused step moved int32\n"); exit(1); }
    if (r == 1) {  /* the int32 biases are the requantized float master biases */
        requantize_all(db_now, bq_check);
        int32_t *now = bq_before;
        snapshot_bq(now);
        if (memcmp(now, bq_check, sizeof bq_check)) { printf("int32 biases not requantized\n"); exit(1); }
    }
    return r;
}
"""


def test_deep_bias_step_under_random_calls(session, tmp_path: Path) -> None:
    """The generated bias-mode step (int8 activations given, int32 biases requantized) under the same random
    calls plus NULL activation arrays: -1 for NULL (the array or an entry), bad batch or label, -2 for a
    non-finite input, 0 refused with nothing changed (float parameters and int32 biases), 1 with every
    parameter finite and every int32 bias the requantized master bias; the sanitizers see no fault."""
    from tinycc.backends.c.deep_emit import emit_step, known_order

    from .test_backprop import _tail, _tail_model

    t = _tail(session, _tail_model("max", 8), "bias")
    convs = [op for op in t.ops if op.name in t.params][:-2]  # the backbone's conv ops (not the Dense chain)
    known = {op.outputs[0]: (0.05, -3) for op in t.ops[:t.ops.index(convs[-1]) + 1]}
    rng = np.random.default_rng(7)
    biases = {op.name: ((10.0 ** rng.uniform(-5, -3, t.params[op.name].bias.size)).astype(np.float32),
                        rng.integers(-1000, 1000, t.params[op.name].bias.size).astype(np.int32)) for op in convs}
    order = known_order(t, known)
    (tmp_path / "step.c").write_text(emit_step(t, 3, known, biases))
    ks = {n: k for k, n in enumerate(t.params)}
    params = [(f"tcc_dw{k}", p.weight.size) for k, (n, p) in enumerate(t.params.items()) if t.trains(n)[0]] + \
             [(f"tcc_db{k}", p.bias.size) for k, p in enumerate(t.params.values())]
    snap = "static void snapshot(float *to) {\n" + "".join(
        f"    memcpy(to, {n}, sizeof {n}); to += {s};\n" for n, s in params) + "}\n"
    snap += "static void snapshot_bq(int32_t *to) {\n" + "".join(
        f"    memcpy(to, tcc_bq{ks[n]}, sizeof tcc_bq{ks[n]}); to += {b[1].size};\n" for n, b in biases.items()) + "}\n"
    snap += "static void requantize_all(float *tmp, int32_t *to) {\n" + "".join(
        f"    memcpy(tmp, tcc_db{ks[n]}, sizeof tcc_db{ks[n]}); tcc_bp_requantize_bias(tmp, tcc_bs{ks[n]}, to, "
        f"{b[1].size}); to += {b[1].size};\n" for n, b in biases.items()) + "}\n"
    sizes = [int(np.prod(t.graph.tensors[k].shape[1:])) for k in order]
    defs = (f"#define BATCH 3\n#define CUT {int(np.prod(t.graph.tensors[t.cut].shape[1:]))}\n#define CLASSES 3\n"
            f"#define PARAMS {sum(s for _, s in params)}\n#define CALLS 1500\n#define NK {len(order)}\n"
            f"#define KMAX {max(sizes)}\n#define NBQ {sum(b[1].size for b in biases.values())}\n")
    src = DEEP_FUZZ_C.replace('#include "step.c"\n', '#include <stdlib.h>\n#include <string.h>\n#include "step.c"\n'
                              + snap, 1)
    src = src.replace("int main(void) {", DEEP_KNOWN_WRAP + "\nint main(void) {", 1)
    src = src.replace("int r = tcc_deep_step(", "int r = step_known(", 1)
    src = src.replace("if (!bad && !null && nonfinite", "if (!bad && !null && !last_null && nonfinite", 1)
    assert src.count("int r = step_known(") == 1 and "!last_null" in src
    out = c_harness.run_runtime_program(defs + src, tmp_path, "fuzz", timeout=300,
                                        runtime=("tinycc_backprop.c",), quiet=True)
    rejected, refused, trained = map(int, " ".join(out).split())
    assert rejected > 100 and refused > 20 and trained > 100  # every path was taken


DEEP_LEARN_FUZZ_C = r"""
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "step.c"

static uint32_t rng = 88172645u;
static uint32_t next(void) { rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5; return rng; }
static int8_t bq[CAP * CUT], q[CUT];
static uint8_t bl[CAP];
static uint32_t bst[CAP], bstate[4];
static tcc_buffer_t buf = {CAP, CUT, POLICY, 1, 0.05f, -3, bq, NULL, bl, bst, bstate, 5u, 0, NULL, NULL, 0.0f, 0, NULL};
static float before[PARAMS], after[PARAMS];
static int8_t bq_before[CAP * CUT];

int main(void) {
    static const float rates[] = {0.05f, 0.0f, 0.01f, 1.0f / 0.0f};
    int counts[4] = {0, 0, 0, 0};
    tcc_buffer_reset(&buf);
    for (int call = 0; call < CALLS; ++call) {
        for (int k = 0; k < CUT; ++k) q[k] = (int8_t)((int32_t)(next() % 256) - 128);
        uint8_t label = (uint8_t)(next() % 8 == 0 ? CLASSES + next() % (256 - CLASSES) : next() % CLASSES);
        uint32_t pick = next() % 40;
        int32_t count = tcc_buffer_count(&buf);
        snapshot(before);
        memcpy(bq_before, bq, sizeof bq);
        int32_t r = tcc_deep_learn(pick == 0 ? NULL : &buf, pick == 1 ? NULL : q, label,
                                   rates[next() % 16 == 0 ? 3 : next() % 3], 1 + (int32_t)(next() % 2));
        snapshot(after);
        int bad = label >= CLASSES;
        if ((pick < 2 && r != -2) || (pick >= 2 && bad && r != -1)) {
            printf("call %d: %ld\n", call, (long)r);
            return 1;
        }
        if ((r == -1 || r == -2) && (memcmp(before, after, sizeof before) || memcmp(bq_before, bq, sizeof bq) ||
                                     tcc_buffer_count(&buf) != count)) {
            printf("call %d: a rejected sample changed something\n", call);
            return 1;
        }
        if (r == -4 && tcc_buffer_count(&buf) != count && tcc_buffer_count(&buf) != count - 1) {
            printf("call %d: a refused sample left %ld entries (was %ld)\n", call, (long)tcc_buffer_count(&buf),
                   (long)count);
            return 1;
        }
        if (r >= 0 && (r != tcc_buffer_count(&buf) || r < 1 || r > CAP)) { printf("call %d: count %ld\n", call,
                                                                                   (long)r); return 1; }
        for (int k = 0; k < PARAMS; ++k) if (!isfinite(after[k])) { printf("non-finite parameter\n"); return 1; }
        counts[r == -1 ? 0 : r == -2 ? 1 : r == -4 ? 2 : 3]++;
        if (r < -4 || r == -3 || r == 0) { printf("call %d: return %ld\n", call, (long)r); return 1; }
    }
    printf("%d %d %d %d\n", counts[0], counts[1], counts[2], counts[3]);
    return 0;
}
"""


@pytest.mark.parametrize("policy", [0, 1])
def test_deep_learn_path_under_random_calls(session, tmp_path: Path, policy: int) -> None:
    """The generated learn path (deep_emit.emit_learn) under random int8 cut tensors, labels in and out of range,
    NULL buffer or tensor and rates up to infinity (fifo, reservoir): -1 / -2 change nothing, -4 leaves the
    buffer as before or one entry short (the replaced one), a success returns the count, every parameter stays
    finite; the sanitizers see no fault."""
    from tinycc.backends.c.deep_emit import emit_learn

    from .test_backprop import _tail, _tail_model

    t = _tail(session, _tail_model("avg", 9), "blocks")
    (tmp_path / "step.c").write_text(emit_learn(t, 2))
    params = [(f"tcc_dw{k}", p.weight.size) for k, p in enumerate(t.params.values())] + \
             [(f"tcc_db{k}", p.bias.size) for k, p in enumerate(t.params.values())]
    snap = "static void snapshot(float *to) {\n" + "".join(
        f"    memcpy(to, {n}, sizeof {n}); to += {s};\n" for n, s in params) + "}\n"
    defs = (f"#define CAP 4\n#define CUT {int(np.prod(t.graph.tensors[t.cut].shape[1:]))}\n#define CLASSES 3\n"
            f"#define PARAMS {sum(s for _, s in params)}\n#define CALLS 600\n#define POLICY {policy}\n")
    src = DEEP_LEARN_FUZZ_C.replace('#include "step.c"\n', '#include "step.c"\n' + snap, 1)
    out = c_harness.run_runtime_program(defs + src, tmp_path, "fuzz", timeout=300,
                                        runtime=("tinycc_backprop.c", "tinycc_learn.c"), quiet=True)
    bad_label, null, refused, learned = map(int, " ".join(out).split())
    assert bad_label > 30 and null > 10 and refused > 10 and learned > 200  # every path was taken


@pytest.mark.parametrize("policy", [0, 1])
def test_deep_bias_learn_path_under_random_calls(dep, tmp_path: Path, policy: int) -> None:
    """The deep bias learn path (backends/c/deep_learn.emit_bias_learn: the int8 region on the generic kernels
    with RAM int32 biases, then the bias step) under the same random calls as the blocks learn path: -1 / -2
    change nothing (float parameters and the int32 biases the int8 kernels read), -4 leaves the buffer as before
    or one entry short, a success returns the count, every parameter stays finite; the sanitizers see no fault."""
    from tinycc.backends.c.deep_learn import emit_bias_learn
    from tinycc.ir.deep import DeepLearner, deep_cuts

    learner = DeepLearner(dep, deep_cuts(dep.extractor, dep.classifier)[-1], "bias", capacity=4, batch_size=2)
    (tmp_path / "step.c").write_text(emit_bias_learn(learner, 2))
    t = learner.tail
    params = [(f"tcc_dw{k}", p.weight.size) for k, (n, p) in enumerate(t.params.items()) if t.trains(n)[0]] + \
             [(f"tcc_db{k}", p.bias.size) for k, p in enumerate(t.params.values())]
    names = list(t.params)
    ints = [(f"tcc_bq{names.index(op.name)}", t.params[op.name].bias.size) for op in learner.region_params]
    snap = "static void snapshot(float *to) {\n" + "".join(
        f"    memcpy(to, {n}, sizeof {n}); to += {s};\n" for n, s in params) + "".join(
        f"    for (int k = 0; k < {s}; ++k) *to++ = (float){n}[k]; /* the int32 biases: exact below 2^24 */\n"
        for n, s in ints) + "}\n"
    defs = (f"#define CAP 4\n#define CUT {learner.buffer.feature_count}\n#define CLASSES {learner.num_classes}\n"
            f"#define PARAMS {sum(s for _, s in params + ints)}\n#define CALLS 400\n#define POLICY {policy}\n")
    src = DEEP_LEARN_FUZZ_C.replace('#include "step.c"\n', '#include "step.c"\n' + snap, 1)
    out = c_harness.run_runtime_program(defs + src, tmp_path, "fuzz", timeout=300,
                                        runtime=("tinycc_backprop.c", "tinycc_learn.c", "tinycc_kernels.c"),
                                        quiet=True)
    bad_label, null, refused, learned = map(int, " ".join(out).split())
    assert bad_label > 20 and null > 5 and refused > 5 and learned > 100  # every path was taken
