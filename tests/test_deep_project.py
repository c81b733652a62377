"""The `--deep bias` project of the c target (backends/c/deep_project.py, templates/model_deep.c.j2): model.c runs
the int8 front up to the deep cut, the trained region on the int8 kernels with the learned int32 biases and the
classifier; `<name>_learn_*` drives tcc_deep_learn over a replay buffer of int8 cut tensors.

Oracles: the simulator (tinycc.ir.deep.DeepLearner, itself equal to TensorFlow's GradientTape in
tests/test_backprop.py) sample after sample through the project's own demo (host ASan/UBSan; Cortex-M4 under QEMU),
and the compiled objects' symbol sizes against the memory report (host and M4, group by group)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.config import TestVectors
from tinycc.ir.deep import DeepLearner
from tinycc.ir.train import softmax

from . import c_harness
from .test_deep import _data
from .test_deep_deploy import CALIB, _cli, graph, model_files  # noqa: F401  (module fixtures)

WHERE = ["host", pytest.param("m4", marks=pytest.mark.skipif(not c_harness.have_arm(),
                                                             reason="arm-none-eabi-gcc or qemu-system-arm missing"))]


MODES = ["bias", "blocks"]


def _deploy(graph, mode: str = "bias", **opts):  # noqa: F811
    from tinycc.deploy import build_deep_deployment
    from tinycc.session import Session

    from .deploy_util import make_config

    session = Session(autoload=False)
    config = make_config(session, deep=(mode,), lr=0.05, **opts)
    return build_deep_deployment(graph.copy(), config, session, CBackend(), CALIB)


def _learner(dep) -> DeepLearner:
    return DeepLearner(dep, dep.meta["deep"]["cut"], dep.meta["deep"]["mode"], capacity=dep.buffer.capacity)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("where", WHERE)
def test_deep_project_learns_as_the_simulator(graph, tmp_path: Path, where: str, mode: str) -> None:  # noqa: F811
    """The generated project's demo (its own main.c, --dump): the int8 cut tensors equal the front's run_int8,
    then after 9 learn calls (buffer 3, batch 2, 2 epochs: fifo replacement and partial batches) the classifier's
    weights and biases equal the simulator's to 1e-5, and every vector's probabilities (before and after learning)
    to 1e-5 with the same class. bias: the int32 biases the int8 kernels read equal the simulator's bias by bias;
    blocks: the float region's weights and biases (moved from their dequantized int8 start) to 1e-5 relative."""
    dep = _deploy(graph, mode, buffer=3, batch_size=2, epochs=2)
    x, y = _data(6, 11)
    sim = _learner(dep)
    out, q = c_harness.run_deep_demo(dep, sim, tmp_path, x, y, where)
    start = [sim.view.tensors[op.inputs[2]].data.copy() for op in sim.region_params]
    start_w = [sim.tail.params[op.name].weight.copy() for op in sim.region_params]
    for i in range(9):
        sim.learn_input(x[i % 6], int(y[i % 6]))
        assert not sim.last_refused
    assert out.buffer == sim.buffer.count == 3
    moved = False
    if mode == "blocks":  # the float region: every weight and bias trained, in RAM
        assert not out.backbone and len(out.backbone_w) == len(sim.region_params) > 0
        for j, op in enumerate(sim.region_params):
            p = sim.tail.params[op.name]
            np.testing.assert_allclose(out.backbone_w[j], p.weight.reshape(-1), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(out.backbone_b[j], p.bias, rtol=1e-5, atol=1e-6)
            moved |= bool(np.abs(out.backbone_w[j] - start_w[j].reshape(-1)).max() > 1e-4)
        assert moved
    else:
        for j, op in enumerate(sim.region_params):  # what the int8 kernels read: exact
            np.testing.assert_array_equal(out.backbone[j], sim.view.tensors[op.inputs[2]].data)
            moved |= bool((start[j] != out.backbone[j]).any())
        assert moved and len(out.backbone) == len(sim.region_params) > 0
    c_harness.check_learned(out, sim, dep, q, [], mode)  # the head and the predictions


# target -> (compiler, nm, flags, board)
TARGETS = {"host": ("gcc", "nm", ["-O1"], None),
           "m4": ("arm-none-eabi-gcc", "arm-none-eabi-nm",
                  ["-Os", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"], "mps2_an386")}
SOURCES = ("model.c", "runtime/tinycc_kernels.c", "runtime/tinycc_learn.c", "runtime/tinycc_backprop.c")
# the RAM symbols of the deep project -> the report's line (first match; tcc_probs before the step's tcc_p<k>)
RAM_GROUPS = (("tcc_arena", "feature extractor arena"), ("tcc_buf_", "replay buffer"),
              ("tcc_buf", "runtime descriptors"), ("tcc_probs", "outputs"), ("tcc_dw", "learn step: parameters"),
              ("tcc_db", "learn step: parameters"), ("tcc_bq", "learn step: int32 biases"),
              ("tcc_t", "learn step: values"), ("tcc_gx", "learn step: scratch"),
              ("tcc_gs", "learn step: gradients"), ("tcc_p", "learn step: descriptors"),
              ("tcc_y", "learn step: labels"), ("tcc_k", "kept int8 activations"))


def static_ram_by_line(dep, project: Path, target: str, groups) -> tuple[dict[str, int], dict, list]:
    """Emit ``dep``'s project, compile it for ``target`` and sum its static RAM symbols by report line (``groups``:
    (symbol prefix, line) pairs, first match wins); asserts the sum is the report's static RAM and every line with
    bytes equals its symbols. Returns those sums, the report's items by name and the symbols."""
    cc, nm, flags, _ = TARGETS[target]
    CBackend().emit(dep, project)
    syms = _symbols(project, cc, nm, flags)
    items = {i["name"]: i for i in dep.memory["items"]}
    ram: dict[str, int] = {}
    for kind, name, size in syms:
        if kind in "bBdD":
            line = next(g for p, g in groups if name.split(".")[0].startswith(p))
            ram[line] = ram.get(line, 0) + size
    assert sum(ram.values()) == dep.memory["static_ram"], (ram, dep.memory["report"])
    assert ram == {k: items[k]["bytes"] for k in ram} and set(ram) == {g for _, g in groups if items[g]["bytes"]}
    return ram, items, syms


def _symbols(project: Path, cc: str, nm: str, flags: list[str]) -> list[tuple[str, str, int]]:
    """(kind letter, name, bytes) of every sized symbol of the model and runtime objects built for one target."""
    out = []
    for src in SOURCES:
        obj = project / (Path(src).stem + ".o")
        r = subprocess.run([cc, *c_harness.STRICT, *flags, "-c", "-I", str(project), "-I", str(project / "runtime"),
                            "-o", str(obj), str(project / src)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        text = subprocess.run([nm, "-S", str(obj)], capture_output=True, text=True, check=True).stdout
        out += [(f[2], f[3], int(f[1], 16)) for f in map(str.split, text.splitlines()) if len(f) == 4]
    return out


def deploy_for(target: str, build):
    """``build(**budget)``'s deployment for ``target`` of TARGETS (skips where its compiler is missing): with the
    board and a generous budget, or none for the host; and the board."""
    cc, nm, _, board = TARGETS[target]
    if not (shutil.which(cc) and shutil.which(nm)):
        pytest.skip(f"{cc} is not installed")
    return build(**({"board": board, "ram": 10 ** 7, "flash": 10 ** 8} if board else {})), board


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target", list(TARGETS))
def test_deep_report_equals_symbol_sizes(graph, tmp_path: Path, target: str, mode: str) -> None:  # noqa: F811
    """Every static RAM byte of the compiled project (model.c and the runtime) is a report line, line by line
    (arena, buffer, its descriptor, outputs, each learn-step group, kept activations): the total is the report's
    static RAM; the flash of the region's tables and of the step's constants equal their lines; the stack is
    measured (with the board: for the Cortex-M4). blocks: the region's float weights and biases are the parameters
    line (RAM), no int32 biases, kept activations, region tables or step constants."""
    dep, board = deploy_for(target, lambda **o: _deploy(graph, mode, buffer=5, batch_size=2, **o))
    ram, items, syms = static_ram_by_line(dep, tmp_path, target, RAM_GROUPS)
    # exact: every line; the buffer's descriptor only where a board names the ABI (else the host's, flagged)
    assert all(items[k]["exact"] for k in ram if k != "runtime descriptors")
    assert items["runtime descriptors"]["exact"] == (board is not None)
    learner = _learner(dep)
    assert items["replay buffer"]["bytes"] == 5 * (learner.buffer.feature_count + 1 + 4) + 16
    # per trained parameter: the float parameters are one float32 each (Φc's weights and biases, the master biases)
    state = dep.memory["deep"]
    trained = sum(layer.weight.size + layer.bias.size for layer in dep.classifier) + sum(
        learner.tail.params[op.name].bias.size + (learner.tail.params[op.name].weight.size if mode == "blocks" else 0)
        for op in learner.region_params)
    if mode == "blocks":  # the float region: nothing int8 after the cut
        assert all(items[k]["bytes"] == 0 for k in ("learn step: int32 biases", "kept int8 activations",
                                                     "learn step region tables", "learn step constants"))
        assert items["learn step initial values"]["bytes"] == 4 * trained
    assert state["trained_parameters"] == trained and items["learn step: parameters"]["bytes"] == 4 * trained
    assert state["state_bytes"] == sum(ram[k] for k in ram if k.startswith("learn step") or k.startswith("kept"))
    assert state["buffer_entry_bytes"] == learner.buffer.feature_count + 5
    flash = {"learn step region tables": 0, "learn step constants": 0}
    for kind, name, size in syms:
        if kind in "rR" and name.startswith("tcc_rg_"):
            flash["learn step region tables"] += size
        elif kind in "rR" and re.fullmatch(r"tcc_(?:wq|ws|bs|dw|db)\d+", name):  # the step's own constants
            flash["learn step constants"] += size
    assert flash == {k: items[k]["bytes"] for k in flash}
    assert items["stack"]["exact"] and items["stack"]["detail"].startswith(
        "measured: Cortex-M4" if board else "measured: host")
    assert "learn" in items["stack"]["detail"] or "predict" in items["stack"]["detail"]


@pytest.mark.parametrize("mode", MODES)
def test_compile_writes_the_deep_project(model_files: Path, tmp_path: Path, capsys, mode: str) -> None:  # noqa: F811
    """`tinycc compile -t c --deep bias|blocks --ram N`: a project whose memory file is the deep report within N,
    whose model.h declares the deep API (blocks: the float backbone accessors), and which builds with -Werror."""
    rc, err = _cli(["compile", str(model_files / "m.keras"), "-t", "c", "--calib", str(model_files / "c.npz"),
                    "--deep", mode, "--ram", "60000", "-o", str(tmp_path / "o")], capsys)
    assert rc == 0, err
    mem = json.loads((tmp_path / "o" / "tinycc_memory.json").read_text())
    names = {i["name"] for i in mem["items"]}
    assert mem["ram"] <= 60_000 and {"learn step: parameters", "kept int8 activations", "outputs"} <= names
    header = (tmp_path / "o" / "model.h").read_text()
    assert ("backbone_weights" in header) == (mode == "blocks") and ("backbone_bias(" in header) == (mode == "bias")
    state = mem["deep"]
    assert state["bytes_per_parameter"] == round(state["state_bytes"] / state["trained_parameters"], 2)
    r = subprocess.run(["make", "-C", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("core", ["host", "cortex-m4"])
def test_deep_stack_bounds_the_painted_stack(graph, tmp_path: Path, core: str, mode: str) -> None:  # noqa: F811
    """The measured stack of the deep API (backends/c/stack.py over model.c and the runtime with
    tinycc_backprop.c) bounds a painted run of every entry point, learn included (tests/stack_paint_main.c), within
    25% (host: 704 B against 584 painted; the x86-64 leaves' red zone is counted whole)."""
    from tinycc.backends.c.stack import project_stack, toolchain

    from . import stack_harness

    if not (toolchain(core) and stack_harness.available(core)):
        pytest.skip(f"{core}: compiler or emulator not installed")
    dep = _deploy(graph, mode, buffer=3, batch_size=2)
    x, y = _data(4, 3)
    CBackend().emit(dep, tmp_path, TestVectors(x, y))
    fig = project_stack(tmp_path, tmp_path / "runtime", dep.name + "_", core, dep.buffer.policy)
    used = stack_harness.painted(tmp_path, dep.name, _learner(dep).buffer.feature_count, core)
    assert used <= fig.bytes <= 1.25 * used, (core, fig.bytes, used, fig.path)


@pytest.mark.parametrize("mode", MODES)
def test_arduino_sketch_learns_as_the_simulator(graph, tmp_path: Path, mode: str) -> None:  # noqa: F811
    """The arduino target's --deep bias / blocks sketch (the c backend's deep model.c under the same serial protocol),
    built for the host with ASan/UBSan (extras/host_main.c): 'P' predictions equal the simulator's probabilities,
    'L' learns (the buffer count), 'l' learns from an int8 cut tensor and 'F' predicts from one, predictions after
    learning equal the simulator's (1e-5), a label out of range is refused; an AVR board passes the check (bias: the
    region's kernels read the learned biases from RAM there)."""
    from tinycc.backends.arduino import ArduinoBackend
    from tinycc.deploy import build_deep_deployment
    from tinycc.session import Session

    from . import arduino_harness
    from .deploy_util import make_config
    from .test_arduino import frame, protocol_host
    from .test_deep_deploy import CALIB

    session = Session(autoload=False)
    config = make_config(session, deep=(mode,), lr=0.05, buffer=3, batch_size=2)
    dep = build_deep_deployment(graph.copy(), config, session, ArduinoBackend(), CALIB)
    items = {i["name"]: i for i in dep.memory["items"]}
    assert not items["runtime state"]["exact"] and items["runtime state"]["bytes"] > 0  # the core's allowance
    ArduinoBackend().check(dep)
    ArduinoBackend().emit(dep, tmp_path)
    exe = arduino_harness.build_host_proto(tmp_path, dep.name, tmp_path / "proto_host")
    sim = _learner(dep)
    x, y = _data(5, 7)
    with protocol_host(exe) as ask:
        def predict_equal(i: int) -> None:
            cmd, pl = ask(frame(b"P", x[i].tobytes()))
            cls, z = sim.predict(sim.cut_of(x[i:i + 1]))
            assert cmd == b"P" and pl[0] == cls[0]
            np.testing.assert_allclose(np.frombuffer(pl[1:], np.float32), softmax(z)[0], atol=1e-5)

        predict_equal(0)
        for i in range(3):
            cmd, pl = ask(frame(b"L", x[i].tobytes() + bytes([int(y[i])])))
            sim.learn_input(x[i], int(y[i]))
            assert cmd == b"L" and int.from_bytes(pl[:4], "little") == sim.buffer.count
        q = sim.cut_of(x[3:4])[0]
        cmd, pl = ask(frame(b"l", q.tobytes() + bytes([int(y[3])])))
        sim.learn(q.reshape(-1), int(y[3]))
        assert cmd == b"l" and int.from_bytes(pl[:4], "little") == sim.buffer.count == 3
        cmd, pl = ask(frame(b"F", q.tobytes()))  # predict from the int8 cut tensor
        cls, z = sim.predict(q[None])
        assert cmd == b"P" and pl[0] == cls[0]  # the predict reply
        np.testing.assert_allclose(np.frombuffer(pl[1:], np.float32), softmax(z)[0], atol=1e-5)
        assert ask(frame(b"L", x[4].tobytes() + bytes([sim.num_classes])))[0] == b"E"  # label out of range
        for i in range(5):
            predict_equal(i)
    avr = make_config(session, deep=(mode,), lr=0.05, buffer=2, board="mega2560", ram=10 ** 6)
    avr_dep = build_deep_deployment(graph.copy(), avr, session, ArduinoBackend(), CALIB)
    ArduinoBackend().check(avr_dep)  # both run on AVR (tests/test_deep_avr.py runs them in simavr)


def test_deep_blocks_budget(graph) -> None:  # noqa: F811
    """--deep blocks under --ram: the buffer of cut tensors is the largest that fits (one more entry would not);
    too little RAM is refused in one line saying by how much and what to change, and exactly the bytes it names
    fit one entry; an earlier --deep-cut trains more layers and costs more (float weights in RAM, values)."""
    from tinycc.errors import BudgetError

    dep = _deploy(graph, "blocks", ram=60_000)
    per = dep.memory["deep"]["buffer_entry_bytes"]
    assert dep.memory["ram"] <= 60_000 < dep.memory["ram"] + per and dep.buffer.capacity > 1
    with pytest.raises(BudgetError, match=r"^--deep blocks: RAM [\d,]+ bytes .*above --ram/--flash 15,000.*"
                                          r"later --deep-cut") as e:
        _deploy(graph, "blocks", ram=15_000)
    assert "\n" not in str(e.value)
    need = int(str(e.value).split("RAM ")[1].split(" bytes")[0].replace(",", ""))
    one = _deploy(graph, "blocks", ram=need)
    assert one.buffer.capacity == 1 and one.memory["ram"] == need
    deeper = _deploy(graph, "blocks", deep_cut="stem", buffer=2)
    shallow = _deploy(graph, "blocks", buffer=2)
    assert deeper.meta["deep"]["trains"] == ["r1", "r2", "r3"] and shallow.meta["deep"]["trains"] == ["r3"]
    assert deeper.memory["deep"]["trained_parameters"] > shallow.memory["deep"]["trained_parameters"]
    assert deeper.memory["ram"] > shallow.memory["ram"]
