"""The `--train sparse` project of the c target (tinycc/deploy/sparse.py sparse_deployment, backends/c/deep_learn.py
emit_sparse_learn): the chosen int8 biases and output channels of a tiny CNN's two convolutions after the cut train
on the device with the classifier, over the two-level buffer (int8 cut tensors for the backbone, int8 features for the
classifier).

Oracles: the simulator's sparse learner (``TwoLevelLearner`` mode ``sparse``, backbone-only, itself equal to
GradientTape + SGD on the subset in tests/test_sparse.py) sample after sample through the project's own demo (host
ASan/UBSan; Cortex-M4 under QEMU); the compiled objects' symbol sizes against the memory report (host and M4, line by
line); the deep fuzz program of tests/test_runtime_fuzz.py over the project's API."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.backends.c.deep_project import deep_learner
from tinycc.ir.backprop import Trained
from tinycc.ir.train import softmax

from . import c_harness
from .sparse_util import data, sparse_dep, tiny_cnn, tiny_graph
from .test_deep_project import TARGETS, _symbols, static_ram_by_line

WHERE = ["host", pytest.param("m4", marks=pytest.mark.skipif(not c_harness.have_arm(),
                                                             reason="arm-none-eabi-gcc or qemu-system-arm missing"))]
# c1's bias with 3 of c2's 8 channels (the backward crosses c2's mixed float / int8 weights into c1); c1's whole
# weight (its update reads the cut in float) without its bias, with c2's bias
SPECS = {"bias+channels": {"c1": Trained(True, ()), "c2": Trained(False, (1, 4, 6))},
         "layer+bias": {"c1": Trained(False, None), "c2": Trained(True, ())}}


@pytest.fixture(scope="module")
def graph():
    return tiny_graph()


@pytest.mark.parametrize("where, spec", [("host", "bias+channels"), ("host", "layer+bias"),
                                         pytest.param("m4", "bias+channels", marks=WHERE[1].marks)])
def test_sparse_project_learns_as_the_simulator(graph, tmp_path: Path, where: str, spec: str) -> None:
    """After 9 learn calls (3 cut tensors, 4 features, batch 2, 2 epochs: fifo replacement in both buffers and
    partial batches) the generated project equals the simulator's sparse learner: the int32 biases the int8 kernels
    read bit for bit, the int8 channel copies bit for bit, the float channel masters and the classifier to 1e-5
    relative, every vector's probabilities before and after learning to 1e-5 with the same class; the backbone moved."""
    dep = sparse_dep(graph, SPECS[spec], entries=3, buffer=4)
    x, y = data(6, 11)
    sim = deep_learner(dep)
    out, q = c_harness.run_deep_demo(dep, sim, tmp_path, x, y, where)
    trained = [op for op in sim.region_params if any(sim.tail.trains(op.name))]
    start = {op.name: sim.view.tensors[op.inputs[2]].data.copy() for op in trained}
    start_w = {op.name: sim.view.tensors[op.inputs[1]].data.copy() for op in trained}
    for i in range(9):
        sim.learn(q[i % 6], int(y[i % 6]))
        assert not sim.last_refused
    assert out.buffer == sim.feat_buffer.count == 4 and sim.buffer.count == 3
    assert len(out.backbone) == len(trained) == 2
    moved = False
    for j, op in enumerate(trained):
        w_on, b_on = sim.tail.trains(op.name)
        bias = sim.view.tensors[op.inputs[2]].data
        np.testing.assert_array_equal(out.backbone[j], bias if b_on else [])
        moved |= bool(b_on and (bias != start[op.name]).any())
        if not w_on:
            assert out.backbone_w[j].size == out.backbone_q[j].size == 0
            continue
        from tinycc.backends.c.deep_emit import channel_rows

        master = channel_rows(sim.tail, op.name, sim.tail.params[op.name].weight).reshape(-1)
        np.testing.assert_allclose(out.backbone_w[j], master, rtol=1e-5, atol=1e-6)
        w8 = sim.view.tensors[op.inputs[1]].data
        np.testing.assert_array_equal(out.backbone_q[j], channel_rows(sim.tail, op.name, w8).reshape(-1))
        moved |= bool((w8 != start_w[op.name]).any())
    assert moved
    head = [op.name for op in sim.view.ops[len(dep.extractor.ops):]]
    for i, name in enumerate(head):
        np.testing.assert_allclose(out.weights[i], sim.tail.params[name].weight.reshape(-1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.bias[i], sim.tail.params[name].bias, rtol=1e-5, atol=1e-6)
    cls, z = sim.predict(q)
    for i in range(6):
        assert out.after[i][0] == cls[i]
        np.testing.assert_allclose(out.after[i][1], softmax(z)[i], atol=1e-5)


SPARSE_RAM = (("tcc_arena", "feature extractor arena"), ("tcc_buf_", "replay buffer"),
              ("tcc_fbuf_", "feature buffer"), ("tcc_buf", "runtime descriptors"),
              ("tcc_fbuf", "runtime descriptors"), ("tcc_probs", "outputs"), ("tcc_dw", "learn step: parameters"),
              ("tcc_db", "learn step: parameters"), ("tcc_bq", "learn step: int32 biases"),
              ("tcc_w8", "learn step: int8 channels"), ("tcc_t", "learn step: values"),
              ("tcc_gx", "learn step: scratch"), ("tcc_gs", "learn step: gradients"),
              ("tcc_p", "learn step: descriptors"), ("tcc_y", "learn step: labels"),
              ("tcc_k", "kept int8 activations"))


@pytest.mark.parametrize("target", list(TARGETS))
def test_sparse_report_equals_symbol_sizes(graph, tmp_path: Path, target: str) -> None:
    """Every static RAM byte of the compiled project is a report line, line by line (the int8 channel copies, both
    buffers and both descriptors included), the total the report's static RAM; the flash of the step's constants
    (int8 weights and scales, bias scales, channel rows) and of the region's tables equal their lines; the initial
    values line counts the load image of the trained parameters, int32 biases and int8 channels."""
    cc, nm, flags, board = TARGETS[target]
    if not (shutil.which(cc) and shutil.which(nm)):
        pytest.skip(f"{cc} is not installed")
    opts = {"board": board, "ram": 10 ** 7, "flash": 10 ** 8} if board else {}
    dep = sparse_dep(graph, SPECS["bias+channels"], entries=2, buffer=5, **opts)
    ram, items, syms = static_ram_by_line(dep, tmp_path, target, SPARSE_RAM)
    learner = deep_learner(dep)
    assert items["learn step: int8 channels"]["bytes"] == 3 * 3 * 3 * 6  # 3 channels of c2, 3x3x6 weights each
    assert items["feature buffer"]["bytes"] == 5 * (learner.feat_buffer.feature_count + 5) + 16
    assert items["replay buffer"]["bytes"] == 2 * (learner.buffer.feature_count + 5) + 16
    assert items["learn step initial values"]["bytes"] == sum(
        items[k]["bytes"] for k in ("learn step: parameters", "learn step: int32 biases", "learn step: int8 channels"))
    flash = {"learn step region tables": 0, "learn step constants": 0}
    for kind, name, size in syms:
        if kind in "rR" and name.startswith("tcc_rg_"):
            flash["learn step region tables"] += size
        elif kind in "rR" and re.fullmatch(r"tcc_(?:wq|ws|bs|dw|db|row)\d+", name):
            flash["learn step constants"] += size
    assert flash == {k: items[k]["bytes"] for k in flash}
    assert items["stack"]["exact"] and "tcc_sparse_learn" in items["stack"]["detail"]


def test_sparse_project_api_under_random_calls(graph, tmp_path: Path) -> None:
    """The deep fuzz program of tests/test_runtime_fuzz.py over the sparse project's API (ASan/UBSan, reservoir):
    NaN / infinity inputs -2, labels out of range -1, NULL refused, nothing stored or trained then (classifier, the
    trained int32 biases and channel masters bit for bit), out-of-range layer indices NULL, the feature count within
    its capacity, predictions finite and in range; every path taken."""
    from .test_runtime_fuzz import _fuzz_source

    dep = sparse_dep(graph, SPECS["bias+channels"], entries=2, buffer=4, policy="reservoir")
    CBackend().emit(dep, tmp_path)
    r = c_harness.run_clean(c_harness.build_host(tmp_path, main=_fuzz_source(dep, 1500)), timeout=600)
    stats = dict(zip(r.stdout.split()[::2], map(int, r.stdout.split()[1::2])))
    assert stats["ok"] > 150 and stats["full"] > 50 and stats["nan"] > 30 and stats["label"] > 100, stats


def _cli(*args: str) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run([sys.executable, "-m", "tinycc.cli", *args], capture_output=True, text=True, timeout=600)


def test_compile_emits_the_sparse_project(tmp_path: Path) -> None:
    """`tinycc compile -t c --train sparse --ram N --calib LABELLED.npz`: prints the choice, whose total is the memory
    report's RAM (within N), writes a project that builds with -Werror (make) and whose model.h declares the sparse
    API; the tflm target refuses in one line naming why; an AVR board's sketch reads the learned biases from RAM."""
    model = tmp_path / "m.keras"
    tiny_cnn().save(model)
    x, y = data(40, 3)
    np.savez(tmp_path / "calib.npz", x=x, y=y)
    out = tmp_path / "out"
    args = ["--train", "sparse", "--ram", "60000", "--calib", str(tmp_path / "calib.npz"), "--deep-cut", "stem",
            "--deep-lr", "0.2"]
    r = _cli("compile", str(model), "-t", "c", "-o", str(out), *args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "sparse: cut at" in r.stdout and "contribution analysis" in r.stdout
    total = int(r.stdout.split("total RAM ")[1].split(" B")[0].replace(",", ""))
    mem = json.loads((out / "tinycc_memory.json").read_text())
    assert total == mem["ram"] == mem["sparse"]["total"] <= 60_000
    assert "feature buffer" in {i["name"] for i in mem["items"]}
    assert "cut_buffer_count" in (out / "model.h").read_text()
    b = subprocess.run(["make", "-C", str(out)], capture_output=True, text=True, timeout=300)
    assert b.returncode == 0, b.stderr[-3000:]
    r = _cli("compile", str(model), "-t", "tflm", "-o", str(tmp_path / "tflm"), *args)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "TFLite Micro runs inference only" in r.stderr and "--train sparse" in r.stderr, r.stderr
    # an AVR board: the sketch's region reads the learned int32 biases from RAM (tests/test_deep_avr.py runs one)
    r = _cli("compile", str(model), "-t", "arduino", "-o", str(tmp_path / "avr"), *args, "--board", "mega2560")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "_bram_s8(" in next((tmp_path / "avr").glob("*/src/model.c")).read_text()


def test_nothing_gained_is_the_head_only_project(tmp_path: Path) -> None:
    """A backbone rate too small to move any int8 bias or weight: no candidate gains, the printed choice says the
    head-only project, the project is the head-only one (no sparse API) and the printed total is its report's."""
    model = tmp_path / "m.keras"
    tiny_cnn().save(model)
    x, y = data(24, 5)
    np.savez(tmp_path / "calib.npz", x=x, y=y)
    out = tmp_path / "out"
    r = _cli("compile", str(model), "-t", "c", "-o", str(out), "--train", "sparse", "--ram", "60000", "--calib",
             str(tmp_path / "calib.npz"), "--deep-cut", "stem", "--deep-lr", "1e-12")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trains nothing (no candidate gained: the head-only project)" in r.stdout
    total = int(r.stdout.split("total RAM ")[1].split(" B")[0].replace(",", ""))
    mem = json.loads((out / "tinycc_memory.json").read_text())
    assert total == mem["ram"] <= 60_000 and "deep" not in mem
    assert "backbone" not in (out / "model.h").read_text()


def test_arduino_sketch_learns_as_the_simulator(graph, tmp_path: Path) -> None:
    """The arduino target's --train sparse sketch (the c backend's sparse model.c under the serial protocol), built
    for the host with ASan/UBSan: 'L' learns (the feature count), 'l' learns from an int8 cut tensor, 'P' predictions
    after learning equal the simulator's probabilities (1e-5), a label out of range is refused."""
    from tinycc.backends.arduino import ArduinoBackend

    from . import arduino_harness
    from .test_arduino import frame, read_reply

    dep = sparse_dep(graph, SPECS["bias+channels"], entries=2, buffer=3, backend=ArduinoBackend())
    ArduinoBackend().check(dep)
    ArduinoBackend().emit(dep, tmp_path)
    exe = arduino_harness.build_host_proto(tmp_path, dep.name, tmp_path / "proto_host")
    sim = deep_learner(dep)
    x, y = data(5, 7)
    p = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        def ask(payload: bytes) -> tuple[bytes, bytes]:
            p.stdin.write(payload)
            p.stdin.flush()
            return read_reply(p.stdout)

        for i in range(4):
            cmd, pl = ask(frame(b"L", x[i].tobytes() + bytes([int(y[i])])))
            sim.learn(sim.cut_of(x[i:i + 1])[0], int(y[i]))
            assert cmd == b"L" and int.from_bytes(pl[:4], "little") == sim.feat_buffer.count
        q = sim.cut_of(x[4:5])[0]
        cmd, pl = ask(frame(b"l", q.tobytes() + bytes([int(y[4])])))
        sim.learn(q, int(y[4]))
        assert cmd == b"l" and int.from_bytes(pl[:4], "little") == sim.feat_buffer.count == 3
        assert ask(frame(b"L", x[0].tobytes() + bytes([sim.num_classes])))[0] == b"E"  # label out of range
        for i in range(5):
            cmd, pl = ask(frame(b"P", x[i].tobytes()))
            cls, z = sim.predict(sim.cut_of(x[i:i + 1]))
            assert cmd == b"P" and pl[0] == cls[0]
            np.testing.assert_allclose(np.frombuffer(pl[1:], np.float32), softmax(z)[0], atol=1e-5)
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    assert p.returncode == 0


RESNET8 = Path(__file__).resolve().parents[2] / "shared" / "models" / "mlperf-tiny" / "pretrainedResnet.h5"


@pytest.mark.skipif(not RESNET8.is_file(), reason="../shared/models/mlperf-tiny/pretrainedResnet.h5 missing")
def test_resnet8_sparse_project_report_equals_symbols(tmp_path: Path) -> None:
    """MLPerf Tiny's ResNet-8 under 256 kB with the bias and 8 of the 64 output channels of conv2d_8 (the last
    block's shortcut; the default deep cut): the project compiles with -Werror, its static RAM symbols equal the report line by line
    within the budget, and the feature buffer takes what the budget leaves."""
    from tinycc.passes import PassContext, run_pipeline
    from tinycc.plugins.frontends.keras import load_keras_file
    from tinycc.session import Session

    g = load_keras_file(str(RESNET8))
    run_pipeline(g, Session(autoload=False).registry.pipeline("cleanup"), PassContext(session=Session(autoload=False)))
    calib = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype(np.float32)
    last = "conv2d_8"
    dep = sparse_dep(g, {last: Trained(True, tuple(range(0, 64, 8)))}, entries=2, calib=calib, deep_cut=None,
                     ram=256_000)
    CBackend().emit(dep, tmp_path)
    syms = _symbols(tmp_path, *TARGETS["host"][:3])
    items = {i["name"]: i["bytes"] for i in dep.memory["items"]}
    ram: dict[str, int] = {}
    for kind, name, size in syms:
        if kind in "bBdD":
            line = next(g for p, g in SPARSE_RAM if name.split(".")[0].startswith(p))
            ram[line] = ram.get(line, 0) + size
    assert ram == {k: items[k] for k in ram} and sum(ram.values()) == dep.memory["static_ram"]
    per = deep_learner(dep).feat_buffer.feature_count + 5  # one more feature entry would not fit
    assert dep.memory["ram"] <= 256_000 < dep.memory["ram"] + per
    sim = deep_learner(dep)
    op = next(o for o in sim.region_params if o.origin == last)
    assert items["learn step: int8 channels"] == 8 * sim.tail.params[op.name].weight.size // 64 > 0
