"""The thesis's pruning of the CNAS model reproduced with tinycc's L1 pruning.

Steps: (1) the thesis's first step exactly: 1,094 of the 1,280 filters of the last 1x1 convolution
(--layer-ratio on that layer only); (2) parameter budgets 1,093,358 and 770,621 (the thesis's sizes)
with tinycc's uniform-ratio policy. Accuracy on CIFAR-10 test images before and after a short
fine-tuning (Adam 0.0005, the thesis's fine-tuning learning rate).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .common import Result, data_file

THESIS = {"baseline": (2_154_538, "79.29%"), "step1": (1_093_358, "79.32%"), "budget1": (1_093_358, "79.48% (4.31 MB)"),
          "budget2": (770_621, "77.15% (2.89 MB)"), "budget1-uniform": (1_093_358, "79.48% (4.31 MB)")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--finetune-images", type=int, default=5000)
    p.add_argument("--finetune-epochs", type=int, default=1)


def run(args: argparse.Namespace) -> Result:
    import keras

    from tinycc.ir.interpreter import run as run_float
    from tinycc.ir.stats import totals
    from tinycc.passes import PassContext, run_pipeline
    from tinycc.plugins.passes.keras_export import graph_to_keras, update_graph_weights
    from tinycc.plugins.passes.prune import prune
    from tinycc.report import markdown_table
    from tinycc.session import Session

    with np.load(data_file(args.data, "cifar10.npz"), allow_pickle=False) as z:
        xt, yt = z["x_test"][:args.test].astype(np.float32) / 255, z["y_test"][:args.test].astype(np.int64)
        xf = z["x_train"][:args.finetune_images].astype(np.float32) / 255
        yf = z["y_train"][:args.finetune_images].astype(np.int64)
    session = Session(autoload=False)
    base = session.registry.frontend_for(args.model).load(args.model)
    run_pipeline(base, session.registry.pipeline("cleanup"), PassContext(session=session))
    # the last 1x1 convolution (1,280 filters; cleanup made it a Dense layer, as it runs on a 1x1 map)
    last = [o for o in base.ops if o.kind.value in ("conv2d", "dense")][-2]
    assert base.tensors[last.inputs[1]].shape[0] == 1280, f"not the CNAS model's last convolution: {last.name}"
    acc = lambda g: float((run_float(g, xt)[g.outputs[0]].argmax(1) == yt).mean())  # noqa: E731
    rows = [["baseline (BN folded)", f"{totals(base)['params']:,}", f"{THESIS['baseline'][0]:,}", f"{acc(base):.4f}",
             "", THESIS["baseline"][1], ""]]
    data = {}
    steps = {"step1": {},
             "budget1": {"budget": ("params", 1_093_358)}, "budget2": {"budget": ("params", 770_621)},
             "budget1-uniform": {"budget": ("params", 1_093_358), "policy": "uniform"}}
    for name, kw in steps.items():
        g = base.copy()
        if name == "step1":
            rep = prune(g, ratio=0.0, layer_ratios={last.name: 1094 / 1280})
        else:
            rep = prune(g, **kw)
        a0 = acc(g)
        k = graph_to_keras(g)
        k.compile(optimizer=keras.optimizers.Adam(5e-4), loss="sparse_categorical_crossentropy")
        k.fit(xf, yf, epochs=args.finetune_epochs, batch_size=96, verbose=0)
        update_graph_weights(g, k)
        a1 = acc(g)
        lost = {r["layer"]: r["channels_before"] - r["channels_after"] for r in rep["layers"]
                if r["op"] == "conv2d" and r["channels_before"] != r["channels_after"]}
        data[name] = {"params": rep["totals_after"]["params"], "acc_pruned": a0, "acc_finetuned": a1,
                      "filters_removed": lost, "ratio": rep["ratio"]}
        rows.append([name, f"{rep['totals_after']['params']:,}", f"{THESIS[name][0]:,}", f"{a0:.4f}", f"{a1:.4f}",
                     THESIS[name][1], f"{len(lost)} layers, last conv -{lost.get(last.origin, 0)}"])
    res = Result("prune")
    res.add(f"Model `{Path(args.model).name}` (BatchNorm folded, so the baseline counts 17,904 fewer parameters "
            f"than Keras). Accuracy on {args.test} test images; fine-tuning: {args.finetune_epochs} epoch(s) on "
            f"{args.finetune_images} training images. Thesis accuracies are after its full training and fine-tuning.")
    res.add(markdown_table(["model", "params", "thesis params", "acc pruned", "acc fine-tuned", "thesis acc",
                            "filters removed"], rows))
    res.add("The thesis picked per-layer counts by hand (first step: 1,094 of 1,280 filters of the last 1x1 "
            "convolution, then ten more layers from the back). `step1` reproduces its first step exactly; the "
            "budget rows use tinycc's cost-aware policy (least important channels per parameter saved first); "
            "budget1-uniform keeps the same fraction of every layer's filters; both found by bisection.")
    res.data = {"steps": data}
    return res
