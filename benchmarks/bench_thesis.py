"""The thesis's pipeline on its CNAS model: prune, fine-tune, int8 Φf, cut at the Flatten, compile.

For the two pruned models of the thesis (its first step, 1,094 of the last convolution's 1,280 filters,
and the 770,621-parameter budget) this benchmark fine-tunes, compiles with ``--target c`` and
``--target tflm`` cut at the Flatten under the thesis's 830 kB RAM budget, measures Ω's accuracy
(int8 Φf + float Φc, as deployed), builds the generated C on the host and under QEMU Cortex-M4 and
checks its outputs against the int8 interpreter, and puts the memory figures next to the thesis's.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .common import Result, data_file

RAM_BUDGET = 830 * 1024
THESIS = {  # name: (params, size, Ω size, Ω accuracy, pruned accuracy)
    "step1": (1_093_358, "4.31 MB", "1.19 MB", "78.50%", "79.48%"),
    "budget2": (770_621, "2.89 MB", "801 kB", "75.00%", "77.15%"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="the trained CNAS model (.keras)")
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--calib-count", type=int, default=200)
    p.add_argument("--finetune-images", type=int, default=5000)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--no-qemu", action="store_true", help="skip the Cortex-M4 run under QEMU")


def run(args: argparse.Namespace) -> Result:
    import keras

    from tinycc.api import compile_model, make_config
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
    tmp = Path(tempfile.mkdtemp(prefix="tinycc-bench-thesis-"))
    calib = tmp / "calib.npz"
    np.savez(calib, x_calib=xf[-args.calib_count:], y_calib=yf[-args.calib_count:])
    session = Session(autoload=False)
    base = session.registry.frontend_for(args.model).load(args.model)
    run_pipeline(base, session.registry.pipeline("cleanup"), PassContext(session=session))
    # the last 1x1 convolution (1,280 filters; cleanup made it a Dense layer, as it runs on a 1x1 map)
    last = [o for o in base.ops if o.kind.value in ("conv2d", "dense")][-2]
    assert base.tensors[last.inputs[1]].shape[0] == 1280, f"not the CNAS model's last convolution: {last.name}"
    cut = "flatten"  # the Keras Flatten layer: cleanup drops it as a no-op, the cut resolves it (Graph.resolve_alias)
    steps = {"step1": {"ratio": 0.0, "layer_ratios": {last.name: 1094 / 1280}},
             "budget2": {"budget": ("params", 770_621)}}
    res = Result("thesis")
    mem_rows, acc_rows, data = [], [], {}
    for name, kw in steps.items():
        g = base.copy()
        rep = prune(g, **kw)
        keras.utils.set_random_seed(0)  # fine-tuning order and dropout; TF's threads still add some noise
        k = graph_to_keras(g)
        k.compile(optimizer=keras.optimizers.Adam(5e-4), loss="sparse_categorical_crossentropy")
        k.fit(xf, yf, epochs=args.finetune_epochs, batch_size=96, verbose=0)
        update_graph_weights(g, k)
        path = tmp / f"{name}.keras"
        k.save(path)
        float_acc = float((k.predict(xt, batch_size=256, verbose=0).argmax(1) == yt).mean())
        entry = {"params": totals(g)["params"], "float_acc": float_acc}
        for target in ("c", "tflm"):
            out = tmp / f"{name}-{target}"
            opts = {"calib": str(calib), "ram": RAM_BUDGET, "cut": cut, "force": True}
            session = Session()
            r = compile_model(str(path), target, str(out), make_config(session, **opts), session)
            dep = r.deployment
            m = {i["name"]: i["bytes"] for i in dep.memory["items"]}
            net = sum(m.get(n, 0) for n in ("extractor weights", "extractor biases", "requantization tables",
                                            "feature extractor arena", "classifier weights", "training state",
                                            "staging vectors", "runtime state", "runtime descriptors"))
            per_entry = _entry_bytes(dep)
            omega = net + 158 * per_entry  # Ω as the thesis sized it: the network plus a 158-entry buffer
            entry[target] = {"ram": dep.memory["ram"], "flash": dep.memory["flash"], "items": m,
                             "features": dep.feature_count, "buffer_entries": dep.buffer.capacity,
                             "entry_bytes": per_entry, "network_bytes": net, "omega_158_bytes": omega}
            mem_rows.append([f"{name} --target {target}", f"{entry['params']:,}", str(dep.feature_count),
                             f"{per_entry} B", _kb(net), _kb(omega), f"{dep.buffer.capacity:,}",
                             f"{m.get('replay buffer', 0):,}", f"{dep.memory['ram']:,}", f"{dep.memory['flash']:,}",
                             f"Ω {THESIS[name][2]}; 158 x 187 B = 29 kB"])
            if target == "c":
                entry["omega_acc"] = _omega_accuracy(dep, xt, yt)
                entry["c_check"] = _check_c(out, dep, qemu=not args.no_qemu)
        data[name] = entry
        lost = {r["layer"]: r["channels_before"] - r["channels_after"] for r in rep["layers"]
                if r["op"] == "conv2d" and r["channels_before"] != r["channels_after"]}
        acc_rows.append([name, f"{entry['params']:,}", f"{THESIS[name][0]:,}", f"{float_acc:.4f}", THESIS[name][4],
                         f"{entry['omega_acc']:.4f}", THESIS[name][3], str(len(lost)),
                         entry["c_check"]["summary"]])
        print(f"{name}: params {entry['params']:,}, float {float_acc:.4f}, Ω {entry['omega_acc']:.4f}; "
              f"{entry['c_check']['summary']}", flush=True)
    res.add(f"Model `{Path(args.model).name}` (the thesis's CNAS architecture, trained briefly, see the notes). "
            f"Pruned with L1 ranking, fine-tuned {args.finetune_epochs} epoch(s) on {args.finetune_images} images "
            f"(Adam 5e-4), calibrated on {args.calib_count} training images, cut at the Flatten "
            f"(`--cut {cut}`), RAM budget {RAM_BUDGET:,} bytes (830 kB). Accuracy on {args.test} "
            "CIFAR-10 test images; Ω = int8 Φf + float Φc exactly as deployed (host simulator).")
    res.add(markdown_table(["model", "params", "thesis params", "float acc", "thesis float acc", "Ω acc", "thesis Ω acc",
                            "conv layers pruned", "generated C = int8 interpreter"], acc_rows))
    res.add("Memory (bytes). `network` is what the thesis's Ω size counts besides the buffer: Φf's int8 weights, "
            "biases and requantization tables, the arena (tinycc's plan for `c`, TFLite Micro's measured arena for "
            "`tflm`), the float classifier, its training state and staging vectors; "
            "`Ω (158 entries)` adds the thesis's 158-entry buffer at tinycc's entry size (int8 features, label, "
            "4-byte stamp). The thesis counted Φf's weights inside its 830 kB of RAM; tinycc keeps them in flash, "
            "so on the device the 830 kB of RAM hold the arena, the classifier, its training state and a much "
            "larger buffer (`buffer entries`, sized by `--ram`).")
    res.add(markdown_table(["deployment", "params", "features", "entry", "network", "Ω (158 entries)",
                            "buffer entries in 830 kB", "buffer bytes", "RAM", "flash", "thesis"], mem_rows))
    res.data = {"models": data, "ram_budget": RAM_BUDGET, "cut": cut}
    shutil.rmtree(tmp, ignore_errors=True)
    return res


def _kb(n: int) -> str:
    return f"{n:,} ({n / 1000:.0f} kB)"


def _entry_bytes(dep) -> int:
    from tinycc.ir.buffer import ReplayBuffer

    f, s = dep.feature_count, dep.buffer.storage
    return ReplayBuffer.bytes_for(2, f, s) - ReplayBuffer.bytes_for(1, f, s)


def _omega_accuracy(dep, x: np.ndarray, y: np.ndarray) -> float:
    from tinycc.ir.simulator import Simulator

    sim = Simulator(dep)
    preds = np.concatenate([sim.predict(x[i:i + 200])[0] for i in range(0, len(x), 200)])
    return float((preds == y).mean())


def _parse(text: str) -> tuple[dict[int, list[int]], dict[int, list[float]]]:
    feats, probs = {}, {}
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["features"]:
            feats[int(parts[1])] = [int(v) for v in parts[2:]]
        elif parts[:1] == ["predict"] and int(parts[1]) not in probs:  # before any learn call
            probs[int(parts[1])] = [float(v) for v in parts[3:]]
    return feats, probs


def _compare(text: str, dep) -> tuple[bool, float]:
    from tinycc.ir.simulator import Simulator

    feats, probs = _parse(text)
    n = len(feats)
    if n == 0:
        return False, float("inf")
    sim = Simulator(dep)
    x = np.asarray(dep.meta["samples"][:n], np.float32)
    ref = sim.features(x)
    exact = all(np.array_equal(np.asarray(feats[i], np.int8), ref[i]) for i in range(n))
    p_ref = sim.predict(x)[1]
    err = max(float(np.max(np.abs(np.asarray(probs[i]) - p_ref[i]))) for i in range(n))
    return exact, err


def _check_c(out: Path, dep, qemu: bool) -> dict:
    host = subprocess.run(["make", "-C", str(out), "run", "DUMP=1"], capture_output=True, text=True, timeout=900)
    result: dict = {"host_rc": host.returncode}
    if host.returncode == 0:
        result["host_exact"], result["host_prob_err"] = _compare(host.stdout, dep)
    summary = [f"host: {'bit-exact' if result.get('host_exact') else 'MISMATCH'}"]
    if qemu and shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc"):
        from tinycc.backends.c import cortexm

        try:
            elf = cortexm.build(out, "m4")
            sizes = cortexm.section_sizes(elf)
            result["m4_text"], result["m4_data"], result["m4_bss"] = (sizes.get(k, 0) for k in (".text", ".data", ".bss"))
            text = cortexm.run_qemu(elf, cortexm.DEFAULT_BOARD["m4"], timeout=1800)
            result["m4_instructions"] = cortexm.instructions(text, cortexm.DEFAULT_BOARD["m4"])
            result["qemu_exact"], result["qemu_prob_err"] = _compare(text, dep)
        except RuntimeError as e:
            result["qemu_error"] = str(e)[-500:]
        summary.append(f"QEMU M4: {'bit-exact' if result.get('qemu_exact') else 'FAILED'}"
                       + (f" (.text {result['m4_text']:,} B)" if "m4_text" in result else ""))
    else:
        summary.append("QEMU M4: not run")
    result["summary"] = "; ".join(summary)
    return result
