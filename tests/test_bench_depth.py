"""`python -m benchmarks depth`'s core on a tiny setting: accuracies in [0, 1], memory equal to step_memory."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_depth import DATA, MODEL, measure

pytestmark = pytest.mark.skipif(not (MODEL.exists() and (DATA / "cifar10.npz").exists()
                                     and (DATA / "imagenette-32.npz").exists()),
                                reason="needs ../shared ResNet-8 and the CIFAR-10 / Imagenette-32 data")


def test_depth_core_tiny() -> None:
    from tinycc.ir.backprop import known_bytes, step_memory
    from tinycc.ir.buffer import ReplayBuffer
    from tinycc.ir.deep import DeepLearner

    ram = 256 * 1024
    out = measure(str(MODEL), str(DATA), ram, n_stream=3, n_test=10, runs=1, lr=0.01, scale=1.0, sparse=(64, 256),
                  analysis=12, every=2)
    assert set(out["curves"]) == {"omega", "tinyol", "baseline", "deep-bias", "deep-blocks", "deep-bias-2level",
                                  "deep-bias-frozen", "sparse-256k"}  # 64 kB: no room for one cut tensor
    assert out["deep_lr"] == 0.001 and "64 kB: does not fit" in out["analysis"][0]
    for c in out["curves"].values():
        assert c.shape == (1, 3) and np.all((c >= 0) & (c <= 1))
    # the oracle: the memory figures recomputed from the deployment's report and fresh DeepLearners
    prep = out["prep"]
    mem = out["memory"]
    assert mem["omega"]["total_ram"] == prep.dep.memory["ram"] <= ram
    assert mem["omega"]["total_ram"] == sum(i["bytes"] for i in prep.dep.memory["items"] if i["section"] == "ram")
    assert mem["omega"]["capacity"] == prep.dep.buffer.capacity
    for m in ("bias", "blocks"):
        dl = DeepLearner(prep.dep, prep.deep_cut, m, capacity=1)
        req = tuple(op.name for op in dl.region_params) if m == "bias" else ()
        want = step_memory(dl.tail, dl.batch_size, req, learn=True, known=dl.known_tensors())
        want["kept_int8"] = known_bytes(dl.tail, dl.known_tensors(), dl.batch_size)
        assert (want["kept_int8"] > 0) == (m == "bias")
        got = mem[f"deep-{m}"]
        assert got["step_memory"] == want and got["step_bytes"] == sum(want.values())
        buf = ReplayBuffer.bytes_for(got["run_capacity"], dl.buffer.feature_count, "int8")
        assert got["total_ram"] == got["fixed_ram"] + sum(want.values()) + buf
        assert got["fits"] == (got["total_ram"] <= ram and got["capacity"] > 0)
    # blocks keeps the last block's float weights in RAM: it cannot fit 256 kB; the biases can
    assert mem["deep-bias"]["fits"] and not mem["deep-blocks"]["fits"]
    # the lean bias step leaves room for more than a handful of 8 kB cut tensors
    assert mem["deep-bias"]["capacity"] >= 10
    # two-level buffer: the bias step + Φc's step + both buffers, exactly, within the budget
    two = mem["deep-bias-2level"]
    feat = int(np.prod(prep.dep.extractor.tensors[prep.dep.extractor.outputs[0]].shape[1:]))
    bufs = (ReplayBuffer.bytes_for(two["capacity"], two["cut_entry_bytes"], "int8")
            + ReplayBuffer.bytes_for(two["head_capacity"], feat, "int8"))
    assert two["buffer_bytes"] == bufs
    assert two["total_ram"] == two["fixed_ram"] + mem["deep-bias"]["step_bytes"] + two["step_memory"]["head_step"] + bufs
    assert two["fits"] and two["capacity"] >= 1 and two["head_capacity"] == 1000
    cut_now = ReplayBuffer.bytes_for(two["capacity"], two["cut_entry_bytes"], "int8")
    cut_more = ReplayBuffer.bytes_for(two["capacity"] + 1, two["cut_entry_bytes"], "int8")
    assert two["total_ram"] - cut_now + cut_more > ram  # the most cut tensors that fit
    # sparse under 256 kB: the step of its subset (step_parts) + its two buffers, exactly, within the budget
    from tinycc.deploy.sparse import step_parts

    sp = mem["sparse-256k"]
    parts = step_parts(prep.dep, prep.deep_cut, out["choices"][256].subset)
    assert sp["step_memory"] == parts and sp["step_bytes"] == sum(parts.values())
    bufs = (ReplayBuffer.bytes_for(sp["run_capacity"], sp["cut_entry_bytes"], "int8")
            + ReplayBuffer.bytes_for(sp["head_capacity"], feat, "int8"))
    assert sp["total_ram"] == sp["fixed_ram"] + sp["step_bytes"] + bufs <= ram and sp["fits"]


def test_offline_recipes_best_row(tmp_path) -> None:
    from benchmarks.bench_depth import offline_recipes

    (tmp_path / "r.md").write_text(
        "# t\n\n## 60 epochs, 3 seeds\n\n| recipe | a | b | vs head (tuned) | c |\n|---|---|---|---|---|\n"
        "| head | 0.5 ± 0.1 | 0.5 ± 0.1 | +0.0 ± 0.0 |  |\n| conv7 | 0.6 ± 0.1 | 0.6 ± 0.1 | +3.3 ± 0.8 | x |\n"
        "| pool2-head | 0.6 ± 0.1 | 0.6 ± 0.1 | +2.1 ± 0.6 |  |\n\n## 20 epochs\n\n"
        "| big | 0.9 ± 0.1 | 0.9 ± 0.1 | +9.0 ± 0.1 |  |\n", encoding="utf-8")
    assert offline_recipes(tmp_path / "r.md") == (" Recipes (depth-recipes.md, 60 epochs, 3 seeds): best conv7 "
                                                  "+3.3 ± 0.8 points over the tuned head.")
    assert offline_recipes(tmp_path / "missing.md") == ""
