"""Offline check of what learning beyond the head can gain (issue #26): ResNet-8 CIFAR-10 -> Imagenette-32.

Not the device protocol: plain mini-batch SGD in TensorFlow (float, BatchNormalization folded into the convolutions,
as the int8 graph has it) over a stream of ``--stream`` Imagenette-32 training samples, for every trainable subset
below, on seeds 0..runs-1. The head's learning rate is chosen first (head only); each backbone subset then trains
with the head at that rate and its own rate (a second grid). Rates are chosen on a validation draw of Imagenette's
training split (disjoint from the stream); then the final accuracy is measured on ``--test`` samples of the
validation split (the scenario's test set). Subsets (all train the Dense head too):

- ``head``: the Dense head only (the features are frozen; what head-only Ω can reach at best).
- ``bias1``: the biases of the last block's three convolutions (conv2d_6/7/8, 192 values).
- ``bias2``: the biases of the last two blocks (6 convolutions).
- ``short``: ``bias1`` + the 1x1 shortcut convolution's weights (2,048 values).
- ``conv7``: ``bias1`` + the last 3x3 convolution's weights (36,864 values).
- ``block``: every weight and bias of the last block (57,344 values).

Usage: ``python -m benchmarks.depth_offline [--runs 3] [--stream 700]`` (about 5 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1].parent / "shared"
MODEL = ROOT / "models" / "mlperf-tiny" / "pretrainedResnet.h5"
DATA = ROOT / "data" / "imagenette-32.npz"
SUBSETS = ("head", "bias1", "bias2", "short", "conv7", "block")
LRS = (0.01, 0.03, 0.1, 0.3, 1.0)  # the head's grid
BACKBONE_LRS = (0.0003, 0.001, 0.003, 0.01, 0.03)  # the backbone subset's (the head keeps its own best)


def folded(tf, model):
    """{conv name: (kernel, bias)} with each following BatchNormalization folded in."""
    out = {}
    layers = {l.name: l for l in model.layers}
    for l in model.layers:
        if type(l).__name__ != "Conv2D":
            continue
        k, b = [v.numpy() for v in l.weights]
        users = [n for n in layers.values() if type(n).__name__ == "BatchNormalization"
                 and n.input is l.output]
        if users:
            g, beta, mean, var = [v.numpy() for v in users[0].weights]
            s = g / np.sqrt(var + users[0].epsilon)
            k, b = k * s, (b - mean) * s + beta
        out[l.name] = (k.astype(np.float32), b.astype(np.float32))
    return out


def forward(tf, p, x, start):
    """ResNet-8 from ``start`` ('input' or 'act2' or 'act4') with folded parameters ``p`` (tf.Variables)."""
    conv = lambda n, t, s=1: tf.nn.conv2d(t, p[n][0], s, "SAME") + p[n][1]
    relu = tf.nn.relu
    if start == "input":
        a0 = relu(conv("conv2d", x))
        a2 = relu(a0 + conv("conv2d_2", relu(conv("conv2d_1", a0))))
    else:
        a2 = x
    if start in ("input", "act2"):
        a4 = relu(conv("conv2d_4", relu(conv("conv2d_3", a2, 2))) + conv("conv2d_5", a2, 2))
    else:
        a4 = x
    a6 = relu(conv("conv2d_7", relu(conv("conv2d_6", a4, 2))) + conv("conv2d_8", a4, 2))
    f = tf.reduce_mean(a6, axis=(1, 2))
    return f @ p["dense"][0] + p["dense"][1]


def trained(subset):
    last = ["conv2d_6", "conv2d_7", "conv2d_8"]
    mid = ["conv2d_3", "conv2d_4", "conv2d_5"]
    out = [("dense", 0), ("dense", 1)]
    if subset == "head":
        return out
    out += [(n, 1) for n in last]
    if subset == "bias2":
        out += [(n, 1) for n in mid]
    if subset == "short":
        out.append(("conv2d_8", 0))
    if subset == "conv7":
        out.append(("conv2d_7", 0))
    if subset == "block":
        out += [(n, 0) for n in last]
    return out


def run(tf, base, cut_train, y_train, cut_test, y_test, subset, lr, epochs, seed, start, head_lr):
    """Test accuracy after ``epochs`` of SGD (batch 16): the head at ``head_lr``, the backbone subset at ``lr``."""
    p = {n: (tf.Variable(k), tf.Variable(b)) for n, (k, b) in base.items()}
    vars_ = [p[n][i] for n, i in trained(subset)]
    rates = tf.constant([head_lr if n == "dense" else lr for n, _ in trained(subset)], tf.float32)
    rng = np.random.default_rng(seed)
    ds_x, ds_y = tf.constant(cut_train), tf.constant(y_train)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            z = forward(tf, p, x, start)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, z))
        for k, (v, g) in enumerate(zip(vars_, tape.gradient(loss, vars_))):
            v.assign_sub(rates[k] * g)

    for _ in range(epochs):
        order = rng.permutation(len(y_train))
        for s in range(0, len(order), 16):
            idx = order[s:s + 16]
            step(tf.gather(ds_x, idx), tf.gather(ds_y, idx))
    z = forward(tf, p, tf.constant(cut_test), start).numpy()
    if not np.isfinite(z).all():
        return 0.0
    return float((z.argmax(1) == y_test).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--stream", type=int, default=700)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--val", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--subsets", default=",".join(SUBSETS))
    a = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    tf.random.set_seed(0)
    model = tf.keras.models.load_model(str(MODEL), compile=False)
    base = folded(tf, model)
    d = model.get_layer("dense").weights
    base["dense"] = (d[0].numpy(), d[1].numpy())
    data = np.load(DATA)
    xtr, ytr, xva, yva = data["x_train"], data["y_train"].astype(np.int32), data["x_val"], data["y_val"].astype(np.int32)
    p0 = {n: (tf.constant(k), tf.constant(b)) for n, (k, b) in base.items()}
    res: dict[str, list[float]] = {}
    for r in range(a.runs):
        rng = np.random.default_rng(r)
        idx = rng.choice(len(xtr), a.stream + a.val, replace=False)
        s_idx, v_idx = idx[:a.stream], idx[a.stream:]
        t_idx = rng.choice(len(xva), a.test, replace=False)
        cuts = {}
        for start in ("act2", "act4"):
            def cut(x, start=start):
                x = tf.constant(x.astype(np.float32))
                a0 = tf.nn.relu(tf.nn.conv2d(x, p0["conv2d"][0], 1, "SAME") + p0["conv2d"][1])
                c = lambda n, t, s=1: tf.nn.conv2d(t, p0[n][0], s, "SAME") + p0[n][1]
                a2 = tf.nn.relu(a0 + c("conv2d_2", tf.nn.relu(c("conv2d_1", a0))))
                if start == "act2":
                    return a2.numpy()
                return tf.nn.relu(c("conv2d_4", tf.nn.relu(c("conv2d_3", a2, 2))) + c("conv2d_5", a2, 2)).numpy()
            cuts[start] = [cut(xtr[s_idx]), cut(xtr[v_idx]), cut(xva[t_idx])]
        head_lr = 0.0
        for subset in ["head"] + [s for s in a.subsets.split(",") if s != "head"]:
            start = "act2" if subset == "bias2" else "act4"
            tr, va, te = cuts[start]
            grid = LRS if subset == "head" else BACKBONE_LRS
            val = {lr: run(tf, base, tr, ytr[s_idx], va, ytr[v_idx], subset, lr, a.epochs, r, start,
                           lr if subset == "head" else head_lr) for lr in grid}
            lr = max(grid, key=lambda k: (val[k], -k))
            head_lr = lr if subset == "head" else head_lr
            acc = run(tf, base, tr, ytr[s_idx], te, yva[t_idx], subset, lr, a.epochs, r, start,
                      lr if subset == "head" else head_lr)
            res.setdefault(subset, []).append(acc)
            print(f"seed {r} {subset:6s} lr {lr:<6g} val {val[lr]:.3f} test {acc:.3f}", file=sys.stderr, flush=True)
    print(f"| subset | test accuracy (mean ± std, {a.runs} seeds) | vs head |")
    print("|---|---|---|")
    h = np.mean(res.get("head", [np.nan]))
    for s, v in res.items():
        print(f"| {s} | {np.mean(v):.3f} ± {np.std(v):.3f} | {100 * (np.mean(v) - h):+.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
