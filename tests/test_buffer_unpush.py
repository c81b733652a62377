"""Issue #29: a refused learn step removes its sample. `ReplayBuffer.unpush` (numpy) and `tcc_buffer_unpush` (C runtime,
ASan/UBSan) agree entry for entry on random push/unpush sequences, every policy and storage (int16 entries of a 16x8
extractor included), full buffers included;
the learner removes the sample of a refused step in both."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.ir.buffer import ReplayBuffer

from .c_harness import SANITIZE, STRICT

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "backends" / "c" / "runtime"
F = 3

DRIVER = r"""
#include <stdio.h>
#include "tinycc_learn.h"

#define CAP_MAX 8
static int8_t q[CAP_MAX * 3];
static int16_t q16[CAP_MAX * 3];
static float f[CAP_MAX * 3];
static uint8_t labels[CAP_MAX];
static uint32_t stamp[CAP_MAX], state[4];

int main(void) {
    tcc_buffer_t b;
    int cap, policy, int8s, i;
    char op;
    uint32_t before[4];
    int32_t slot = -1;
    if (scanf("%d %d %d", &cap, &policy, &int8s) != 3) return 2; /* int8s: 0 float32, 1 int8, 2 int16 */
    b.capacity = cap; b.features = 3; b.policy = policy; b.int8_storage = int8s == 1; b.scale = 0.5f;
    b.zero_point = 0; b.q16 = int8s == 2 ? q16 : NULL;
    b.q = q; b.f = f; b.labels = labels; b.stamp = stamp; b.state = state; b.seed = 7; b.targets = 0;
    b.tq = NULL; b.tf = NULL; b.t_scale = 1.0f; b.t_zp = 0;
    tcc_buffer_reset(&b);
    while (scanf(" %c", &op) == 1) {
        if (op == 'p') {
            int lab, v[3];
            int8_t qv[3];
            int16_t qv16[3];
            float fv[3];
            if (scanf("%d %d %d %d", &lab, &v[0], &v[1], &v[2]) != 4) return 2;
            for (i = 0; i < 3; ++i) { qv[i] = (int8_t)v[i]; qv16[i] = (int16_t)v[i]; fv[i] = 0.5f * (float)v[i]; }
            tcc_buffer_save(&b, before);
            if (int8s == 2) {
                slot = tcc_buffer_push_s16(&b, qv16, (uint8_t)lab, NULL);
            } else {
                slot = tcc_buffer_push(&b, int8s ? NULL : fv, int8s ? qv : NULL, (uint8_t)lab, NULL);
            }
        } else {
            tcc_buffer_unpush(&b, slot, before);
        }
        printf("%lu %lu %lu %lu", (unsigned long)state[0], (unsigned long)state[1], (unsigned long)state[2],
               (unsigned long)state[3]);
        for (i = 0; i < (int)state[0]; ++i) {
            int k;
            printf(" |%u %lu", labels[i], (unsigned long)stamp[i]);
            for (k = 0; k < 3; ++k) {
                const int j = i * 3 + k;
                printf(" %g", int8s == 2 ? (double)q16[j] : int8s ? (double)q[j] : (double)f[j]);
            }
        }
        printf("\n");
    }
    return 0;
}
"""
POLICIES = {"fifo": 0, "reservoir": 1, "class_balanced": 2}


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("unpush")
    (d / "main.c").write_text(DRIVER)
    exe = d / "unpush"
    r = subprocess.run(["gcc", *STRICT, *SANITIZE, "-I", str(RUNTIME), "-o", str(exe), str(d / "main.c"),
                        str(RUNTIME / "tinycc_learn.c"), "-lm"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return exe


def _line(b: ReplayBuffer) -> str:
    parts = [" ".join(str(int(v)) for v in b.state)]
    for i in range(b.count):
        vals = b.data[i].astype(np.float64)
        parts.append(f"{int(b.labels[i])} {int(b.stamp[i])} " + " ".join(f"{v:g}" for v in vals))
    return " |".join(parts)


@pytest.mark.parametrize("storage", ["int8", "int16", "float32"])
@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("cap", [1, 3, 5])
def test_c_and_numpy_unpush_agree(driver: Path, policy: str, storage: str, cap: int) -> None:
    rng = np.random.default_rng(cap * 7 + len(policy))
    b = ReplayBuffer(cap, F, storage, 0.5, 0, policy, seed=7)
    script, expect = [f"{cap} {POLICIES[policy]} {['float32', 'int8', 'int16'].index(storage)}"], []
    before, slot = b.state.copy(), -1
    for step in range(60):
        if step and rng.random() < 0.3 and script[-1].startswith("p"):
            script.append("u")
            b.unpush(slot, before)
        else:
            lab, v = int(rng.integers(3)), rng.integers(-20, 20, F) * (1000 if storage == "int16" else 1)
            script.append(f"p {lab} " + " ".join(map(str, v)))
            before = b.state.copy()
            feats = v.astype(storage) if storage != "float32" else (0.5 * v).astype(np.float32)
            slot = b.push(feats, lab)
        expect.append(_line(b))
    r = subprocess.run([str(driver)], input="\n".join(script) + "\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr, r.stderr[-2000:]
    got = r.stdout.splitlines()
    for i, (g, e) in enumerate(zip(got, expect)):
        assert g == e, (i, script[i + 1], g, e)
    assert len(got) == len(expect)


def test_unpush_restores_or_removes_exactly() -> None:
    """Not full: the push is undone exactly. Full fifo: the sample and the oldest entry it replaced are gone, the
    others keep their order (oldest first, from slot 0), head = count = capacity - 1; the next push goes to the end."""
    b = ReplayBuffer(4, 1, "float32", policy="fifo")
    for v in range(3):
        b.push(np.array([v], np.float32), v)
    snap = (b.state.copy(), b.data.copy(), b.stamp.copy())
    before = b.state.copy()
    b.unpush(b.push(np.array([9], np.float32), 1), before)
    assert np.array_equal(b.state, snap[0]) and b.entries()[0][:, 0].tolist() == [0, 1, 2]
    for v in (3, 4, 5):  # full, wrapped: holds 2, 3, 4, 5 with head 2
        b.push(np.array([v], np.float32), v)
    before = b.state.copy()
    b.unpush(b.push(np.array([9], np.float32), 1), before)  # 9 replaced the oldest (2): both gone
    assert b.count == 3 and b.head == 3 and b.seen == 6 and b.entries()[0][:, 0].tolist() == [3, 4, 5]
    b.push(np.array([6], np.float32), 6)
    assert b.entries()[0][:, 0].tolist() == [3, 4, 5, 6]


def test_refused_learn_removes_its_sample_in_the_learner() -> None:
    """OnlineLearner: a step refused (lr so large the update overflows) leaves the buffer as before the call."""
    from tinycc.ir.buffer import OnlineLearner
    from tinycc.ir.train import Classifier, DenseLayer

    rng = np.random.default_rng(0)
    clf = Classifier([DenseLayer(rng.normal(0, 1, (3, 4)).astype(np.float32), np.zeros(3, np.float32), "softmax")])
    buf = ReplayBuffer(4, 4, "float32")
    ok = OnlineLearner(clf, buf, lr=0.01)
    ok.learn(np.ones(4, np.float32), 1)
    assert not ok.last_refused and buf.count == 1
    bad = OnlineLearner(clf, buf, lr=3e38)
    state = buf.state.copy()
    bad.learn(np.full(4, 1e3, np.float32), 2)
    assert bad.last_refused and np.array_equal(buf.state, state) and buf.count == 1
