"""Offline study of training recipes beyond the head (issue #26): can anything reach +5 points over the head on
ResNet-8 CIFAR-10 -> Imagenette-32 at 700 stream samples?

Same protocol as ``benchmarks.depth_offline`` (TensorFlow float, BatchNormalization folded, mini-batch SGD batch 16
over the whole stream, no buffer limit: upper bounds), with these recipes; every recipe is compared with the head
trained by the same recipe (its honest baseline):

- ``aug``: data augmentation of the replayed samples: random horizontal flip and random shifts of up to 4 pixels
  with zero padding, on the input; ``VIEWS`` augmented views of every stream sample are drawn once and each epoch
  picks one per sample (the frozen blocks' cut tensors of each view are precomputed).
- ``affine``: a per-channel scale and bias after each of the last block's three (folded) convolutions (TinyTL /
  FiLM style; 384 parameters) + the head.
- ``adabn``: the BatchNormalization statistics (mean, variance) re-estimated on the stream's inputs (label-free)
  before folding: ``adabn-all`` every BN layer (sequentially, each on the adapted layers before it),
  ``adabn-last`` the last block's two only.
- ``pool2``: the head reads the last block's output pooled to 2x2 (256 features) instead of 1x1 (64); its Dense
  starts as the original one tiled and divided by 4 (the same logits at the start).
- the head's own rate and epochs: the head baseline is tuned over rate x epochs (5, 20, 60, 150) on the validation draw.

Rates: every run trains once per grid value and is measured on the validation draw and on the test draw; the rate
with the best validation accuracy is chosen and its test accuracy reported. The backbone recipes train the head at
the rate its same-recipe head baseline chose. Test: ``--test`` samples of Imagenette's validation split per seed
(1,000 by default: a smaller standard error than the scenario's 200).

Usage: ``python -m benchmarks.depth_recipes [--runs 3] [--stream 700] [--recipes head,aug-head,...]``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from .depth_offline import DATA, MODEL

VIEWS = 8
HEAD_LRS = (0.03, 0.1, 0.3, 1.0, 3.0)
HEAD_EPOCHS = (5, 20, 60, 150)
BACKBONE_LRS = (0.001, 0.003, 0.01, 0.03)
LAST = ("conv2d_6", "conv2d_7", "conv2d_8")
# recipe -> (BN statistics, augmentation, trained subset, pooled 2x2 head)
RECIPES = {
    "head": ("source", False, "head", False),
    "affine": ("source", False, "affine", False),
    "bias1": ("source", False, "bias1", False),
    "conv7": ("source", False, "conv7", False),
    "block": ("source", False, "block", False),
    "aug-head": ("source", True, "head", False),
    "aug-affine": ("source", True, "affine", False),
    "aug-conv7": ("source", True, "conv7", False),
    "aug-block": ("source", True, "block", False),
    "adabn-all-head": ("all", False, "head", False),
    "adabn-last-head": ("last", False, "head", False),
    "adabn-all-affine": ("all", False, "affine", False),
    "pool2-head": ("source", False, "head", True),
    "pool2-affine": ("source", False, "affine", True),
    "pool2-conv7": ("source", False, "conv7", True),
    "aug-pool2-head": ("source", True, "head", True),
    "aug-pool2-affine": ("source", True, "affine", True),
    "adabn-all-pool2-head": ("all", False, "head", True),
    "adabn-all-pool2-affine": ("all", False, "affine", True),
}


def raw_params(model) -> tuple[dict, dict]:
    """({conv: (kernel, bias)}, {conv: (gamma, beta, mean, var, eps)}) of the unfolded model."""
    raw, bn = {}, {}
    for l in model.layers:
        if type(l).__name__ != "Conv2D":
            continue
        raw[l.name] = tuple(v.numpy().astype(np.float32) for v in l.weights)
        for n in model.layers:
            if type(n).__name__ == "BatchNormalization" and n.input is l.output:
                bn[l.name] = tuple(v.numpy().astype(np.float32) for v in n.weights) + (float(n.epsilon),)
    d = model.get_layer("dense").weights
    raw["dense"] = (d[0].numpy(), d[1].numpy())
    return raw, bn


def fold(raw: dict, bn: dict, stats: dict) -> dict:
    """Folded {conv: (kernel, bias)} with the BN statistics of ``stats`` (conv -> (mean, var)) where given."""
    out = {}
    for n, (k, b) in raw.items():
        if n in bn:
            g, beta, mean, var, eps = bn[n]
            mean, var = stats.get(n, (mean, var))
            s = g / np.sqrt(var + eps)
            k, b = k * s, (b - mean) * s + beta
        out[n] = (k.astype(np.float32), b.astype(np.float32))
    return out


def adabn_stats(tf, raw: dict, bn: dict, x: np.ndarray, which: str) -> dict:
    """Target statistics of the BN layers (``all`` or ``last``): a forward pass over ``x`` in training mode, each
    layer normalised with the statistics of its (already adapted) input."""
    adapt = set(bn) if which == "all" else {"conv2d_6", "conv2d_7"}
    stats: dict = {}

    def conv(n, t, s=1):
        z = tf.nn.conv2d(t, raw[n][0], s, "SAME") + raw[n][1]
        if n not in bn:
            return z
        g, beta, mean, var, eps = bn[n]
        if n in adapt:
            m, v = tf.nn.moments(z, axes=(0, 1, 2))
            mean, var = m.numpy(), v.numpy()
            stats[n] = (mean, var)
        return (z - mean) / np.sqrt(var + eps) * g + beta

    r = tf.nn.relu
    a0 = r(conv("conv2d", tf.constant(x.astype(np.float32))))
    a2 = r(a0 + conv("conv2d_2", r(conv("conv2d_1", a0))))
    a4 = r(conv("conv2d_4", r(conv("conv2d_3", a2, 2))) + conv("conv2d_5", a2, 2))
    r(conv("conv2d_7", r(conv("conv2d_6", a4, 2))) + conv("conv2d_8", a4, 2))
    return stats


def front(tf, p: dict, x: np.ndarray) -> np.ndarray:
    """The frozen blocks: input -> activation_4 (16x16x32), in chunks."""
    c = lambda n, t, s=1: tf.nn.conv2d(t, p[n][0], s, "SAME") + p[n][1]
    r = tf.nn.relu
    out = []
    for i in range(0, len(x), 500):
        t = tf.constant(x[i:i + 500].astype(np.float32))
        a0 = r(c("conv2d", t))
        a2 = r(a0 + c("conv2d_2", r(c("conv2d_1", a0))))
        out.append(r(c("conv2d_4", r(c("conv2d_3", a2, 2))) + c("conv2d_5", a2, 2)).numpy())
    return np.concatenate(out)


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal flip and a random shift of up to 4 pixels (zero padding), per image."""
    pad = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    out = np.empty_like(x)
    for i in range(len(x)):
        dy, dx = rng.integers(0, 9, 2)
        img = pad[i, dy:dy + 32, dx:dx + 32]
        out[i] = img[:, ::-1] if rng.random() < 0.5 else img
    return out


def last_block(tf, p: dict, a4, affine: bool):
    """activation_4 -> the last block's output (8x8x64), with the per-channel affine after each convolution."""
    def c(n, t, s=1):
        z = tf.nn.conv2d(t, p[n][0], s, "SAME") + p[n][1]
        return z * p["aff_" + n][0] + p["aff_" + n][1] if affine else z
    r = tf.nn.relu
    return r(c("conv2d_7", r(c("conv2d_6", a4, 2))) + c("conv2d_8", a4, 2))


def features(tf, a6, pool2: bool):
    if pool2:
        return tf.reshape(tf.nn.avg_pool2d(a6, 4, 4, "VALID"), (-1, 256))
    return tf.reduce_mean(a6, axis=(1, 2))


def trained_vars(subset: str) -> list[tuple[str, int]]:
    out = [("dense", 0), ("dense", 1)]
    if subset in ("bias1", "conv7"):
        out += [(n, 1) for n in LAST]
    if subset == "conv7":
        out.append(("conv2d_7", 0))
    if subset == "block":
        out += [(n, i) for n in LAST for i in (0, 1)]
    if subset == "affine":
        out += [("aff_" + n, i) for n in LAST for i in (0, 1)]
    return out


def train(tf, base: dict, views: np.ndarray, y: np.ndarray, evals: list[np.ndarray], subset: str, pool2: bool,
          lr: float, head_lr: float, epochs: int, seed: int) -> list[np.ndarray]:
    """SGD (batch 16) for ``epochs`` over the stream, each epoch one random view per sample; returns the logits of
    every array in ``evals`` (cut tensors, or features when ``subset`` is head)."""
    p = {n: (tf.Variable(k), tf.Variable(b)) for n, (k, b) in base.items()}
    if pool2:
        w, b = base["dense"]
        p["dense"] = (tf.Variable(np.tile(w, (4, 1)) / 4), tf.Variable(b))
    for n in LAST:
        ch = base[n][1].shape[0]
        p["aff_" + n] = (tf.Variable(np.ones(ch, np.float32)), tf.Variable(np.zeros(ch, np.float32)))
    names = trained_vars(subset)
    vs = [p[n][i] for n, i in names]
    rates = [head_lr if n == "dense" else lr for n, _ in names]
    head_only = subset == "head"

    def logits(x):
        f = x if head_only else features(tf, last_block(tf, p, x, subset == "affine"), pool2)
        return f @ p["dense"][0] + p["dense"][1]

    @tf.function
    def step(x, yy):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yy, logits(x)))
        for v, g, r in zip(vs, tape.gradient(loss, vs), rates):
            v.assign_sub(r * g)

    rng = np.random.default_rng(seed)
    n = views.shape[1]
    for _ in range(epochs):
        pick = rng.integers(0, views.shape[0], n)
        order = rng.permutation(n)
        for s in range(0, n, 16):
            idx = order[s:s + 16]
            step(tf.constant(views[pick[idx], idx]), tf.constant(y[idx]))
    return [logits(tf.constant(e)).numpy() for e in evals]


def acc(z: np.ndarray, y: np.ndarray) -> float:
    return float((z.argmax(1) == y).mean()) if np.isfinite(z).all() else 0.0


def baseline_of(name: str) -> str:
    """The head trained by the same recipe as ``name`` (``name`` itself for a head recipe)."""
    stats, aug, subset, pool2 = RECIPES[name]
    return next(r for r, v in RECIPES.items() if v == (stats, aug, "head", pool2))


def summarize(lines: list[str]) -> str:
    """The markdown table of the logged runs (mean ± std over seeds): each recipe's test accuracy at its chosen
    rate; for heads also at the backbone recipes' epochs; and the differences with the head and with the head of
    the same recipe (same epochs as the backbone recipes, and tuned over rate x epochs)."""
    import re
    tuned: dict[str, dict[int, float]] = {}
    e20: dict[str, dict[int, float]] = {}
    for line in lines:
        m = re.match(r"seed (\d+) (\S+)\s+lr \S+\s+ep \d+\s+val \S+ test (\S+) \| (.*)", line)
        if not m:
            continue
        seed, name, test, rest = int(m.group(1)), m.group(2), float(m.group(3)), m.group(4)
        tuned.setdefault(name, {})[seed] = test
        h = re.search(r"ep: lr \S+\s+val \S+ test (\S+)", rest)
        e20.setdefault(name, {})[seed] = float(h.group(1)) if h else test

    def diff(a: dict[int, float], b: dict[int, float]) -> str:
        common = [s for s in a if s in b]
        d = np.array([a[s] - b[s] for s in common]) * 100
        return f"{d.mean():+.1f} ± {d.std():.1f}" if common else ""

    rows = ["| recipe | test, chosen rate (and epochs for heads) | test, fixed epochs | vs head (tuned) "
            "| vs same-recipe head, fixed epochs | vs same-recipe head (tuned) | seeds |", "|---|---|---|---|---|---|---|"]
    for name in RECIPES:
        if name not in tuned:
            continue
        v, w = np.array(list(tuned[name].values())), np.array(list(e20[name].values()))
        base = baseline_of(name)
        same = "" if base == name else diff(e20[name], e20.get(base, {}))
        same_t = "" if base == name else diff(tuned[name], tuned.get(base, {}))
        rows.append(f"| {name} | {v.mean():.3f} ± {v.std():.3f} | {w.mean():.3f} ± {w.std():.3f} | "
                    f"{diff(tuned[name], tuned.get('head', {}))} | {same} | {same_t} | {len(v)} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--first", type=int, default=0, help="first seed")
    ap.add_argument("--stream", type=int, default=700)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--val", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=20, help="epochs of the backbone recipes")
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--summarize", nargs="+", metavar="LOG", help="print the table of these logs and stop")
    a = ap.parse_args(argv)
    if a.summarize:
        print(summarize([ln for f in a.summarize for ln in open(f, encoding="utf-8")]))
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    tf.random.set_seed(0)
    model = tf.keras.models.load_model(str(MODEL), compile=False)
    raw, bn = raw_params(model)
    data = np.load(DATA)
    xtr, ytr = data["x_train"], data["y_train"].astype(np.int32)
    xva, yva = data["x_val"], data["y_val"].astype(np.int32)
    recipes = [r for r in a.recipes.split(",") if r]
    for seed in range(a.first, a.first + a.runs):
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(xtr), a.stream + a.val, replace=False)
        s_idx, v_idx = idx[:a.stream], idx[a.stream:]
        t_idx = rng.choice(len(xva), a.test, replace=False)
        xs, ys = xtr[s_idx], ytr[s_idx]
        aug_rng = np.random.default_rng(1000 + seed)
        views_x = [xs] + [augment(xs, aug_rng) for _ in range(VIEWS - 1)]
        cache: dict = {}
        head_lr: dict = {}
        for name in sorted(recipes, key=lambda r: RECIPES[r][2] != "head"):  # heads first: their rates
            t0 = time.time()
            stats_kind, aug, subset, pool2 = RECIPES[name]
            if stats_kind not in cache:
                stats = {} if stats_kind == "source" else adabn_stats(tf, raw, bn, xs, stats_kind)
                base = fold(raw, bn, stats)
                cache[stats_kind] = (base, np.stack([front(tf, base, v) for v in views_x]),
                                     front(tf, base, xtr[v_idx]), front(tf, base, xva[t_idx]))
            base, views, cut_val, cut_test = cache[stats_kind]
            views = views if aug else views[:1]
            key = (stats_kind, aug, pool2)
            if subset == "head":
                pf = {n: (tf.constant(k), tf.constant(b)) for n, (k, b) in base.items()}
                fe = lambda c: np.concatenate([features(tf, last_block(tf, pf, tf.constant(c[i:i + 500]), False),
                                                        pool2).numpy() for i in range(0, len(c), 500)])
                fv = np.stack([fe(v) for v in views])
                grid = [(lr, ep) for lr in HEAD_LRS for ep in sorted(set(HEAD_EPOCHS) | {a.epochs})]
                res = {g: train(tf, base, fv, ys, [fe(cut_val), fe(cut_test)], "head", pool2, 0.0, g[0], g[1], seed)
                       for g in grid}
                accs = {g: (acc(z[0], ytr[v_idx]), acc(z[1], yva[t_idx])) for g, z in res.items()}
                best = max(grid, key=lambda g: (accs[g][0], -g[1], -g[0]))
                e20 = max((g for g in grid if g[1] == a.epochs), key=lambda g: (accs[g][0], -g[0]))
                head_lr[key] = e20[0]
                print(f"seed {seed} {name:18s} lr {best[0]:<6g} ep {best[1]:<3d} val {accs[best][0]:.3f} "
                      f"test {accs[best][1]:.3f} | {a.epochs} ep: lr {e20[0]:<6g} val {accs[e20][0]:.3f} "
                      f"test {accs[e20][1]:.3f} ({time.time() - t0:.0f} s)", flush=True)
                continue
            hl = head_lr.get(key, 0.3)
            res = {lr: train(tf, base, views, ys, [cut_val, cut_test], subset, pool2, lr, hl, a.epochs, seed)
                   for lr in BACKBONE_LRS}
            accs = {lr: (acc(z[0], ytr[v_idx]), acc(z[1], yva[t_idx])) for lr, z in res.items()}
            best = max(BACKBONE_LRS, key=lambda lr: (accs[lr][0], -lr))
            print(f"seed {seed} {name:18s} lr {best:<6g} ep {a.epochs:<3d} val {accs[best][0]:.3f} "
                  f"test {accs[best][1]:.3f} | head lr {hl:g} ({time.time() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
