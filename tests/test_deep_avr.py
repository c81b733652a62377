"""Deep learners on an AVR board (Arduino Mega 2560, 8 kB RAM) in simavr: `--deep blocks` (a float region, in RAM),
`--deep bias` and `--train sparse` (the int8 region: its kernels read the learned int32 biases and trained int8
channels from RAM, every table from flash) learn there as the host simulator (tinycc.ir.deep.DeepLearner, the sparse
TwoLevelLearner); on the ATmega2560 (simavr) and on the host (ASan/UBSan) the learned int32 biases and int8 channels
equal it bit for bit; their memory report equals the avr-gcc build's symbols (RAM: .data/.bss, flash: .progmem.data)
and their measured AVR stack bounds a painted run; a project too big for the board is refused (the usual budget
line)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinycc.ir.backprop import Trained
from tinycc.names import c_identifier
from tinycc.ir.deep import DeepLearner
from tinycc.ir.train import softmax

from . import arduino_harness, c_harness
from .sparse_util import sparse_dep
from .sparse_util import CALIB as CALIB10
from .sparse_util import data as data10

CALIB = CALIB10[:, :6, :6, :]


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = data10(n, seed)
    return np.ascontiguousarray(x[:, :6, :6, :]), y


@pytest.fixture(scope="module")
def graph():
    """6x6x3 -> conv stem (3) -> conv c1 (4) -> conv c2 (6, stride 2) -> mean -> Dense(4, softmax)."""
    from .sparse_util import tiny_graph

    return tiny_graph(6, (3, 4, 6))


def _deploy(graph, mode: str, cut: str, backend=None):
    from tinycc.backends.arduino import ArduinoBackend
    from tinycc.deploy import build_deep_deployment
    from tinycc.session import Session

    from .deploy_util import make_config

    session = Session(autoload=False)
    config = make_config(session, deep=(mode,), lr=0.05, buffer=2, batch_size=2, board="mega2560", deep_cut=cut)
    return build_deep_deployment(graph.copy(), config, session, backend or ArduinoBackend(), CALIB)


# c1's bias, c2's bias and 2 of its 6 channels
SPARSE = {"c1": Trained(True, ()), "c2": Trained(True, (1, 4))}


def _sparse(graph, backend=None):
    from tinycc.backends.arduino import ArduinoBackend

    return sparse_dep(graph, SPARSE, entries=2, backend=backend or ArduinoBackend(), calib=CALIB, buffer=2,
                      board="mega2560")


def _simavr_run(dep, sim, x, y, project: Path, learn: int):
    """The self-test sketch of ``dep`` in simavr: its int8 cut tensors equal the simulator's bit for bit and its
    classes and probabilities before learning to 1e-5. Returns the demo output and the cut tensors."""
    from tinycc.backends.arduino import ArduinoBackend
    from tinycc.config import TestVectors

    ArduinoBackend().check(dep)
    ArduinoBackend().emit(dep, project, TestVectors(x, y, learn=learn))
    out = ArduinoBackend().run_demo(project, "simavr").output
    return out, c_harness.check_before(out, sim, x)


def _after(out, sim, q) -> None:
    """Classes and probabilities after learning equal the simulator's (1e-5)."""
    cls, z = sim.predict(q)
    for i in range(len(q)):
        assert out.after[i][0] == cls[i]
        np.testing.assert_allclose(out.after[i][1], softmax(z)[i], atol=1e-5)


@pytest.mark.skipif(not arduino_harness.available(), reason="arduino-builder/simavr/avr-gcc not installed")
def test_mega2560_bias_sketch_learns_as_the_simulator(graph, tmp_path: Path) -> None:
    """--deep bias (cut after the stem: c1's and c2's int32 biases and the classifier train) on the Mega 2560: the
    sketch in simavr (3 vectors, 4 learn calls, buffer 2, batch 2) gives the simulator's cut tensors, classes and
    probabilities before and after learning, which moved; its region runs the RAM-bias kernels. The same deployment
    as a c project for the board, built on the host (ASan/UBSan, TCC_READ_* plain loads): the learned int32 biases
    equal the simulator's bit for bit."""
    dep = _deploy(graph, "bias", "stem")
    assert dep.memory["ram"] <= 8192 and dep.meta["deep"]["trains"] == ["c1", "c2"]
    x, y = data(3, 7)
    sim = DeepLearner(dep, dep.meta["deep"]["cut"], "bias", capacity=dep.buffer.capacity)
    out, q = _simavr_run(dep, sim, x, y, tmp_path / "p", 4)
    model_c = next((tmp_path / "p").glob("*/src/model.c")).read_text()
    assert "tcc_conv2d_bram_s8(" in model_c and "tcc_conv2d_s8(" not in model_c.split("tcc_deep_region")[-1]
    _, z0 = sim.predict(q)
    start = [sim.view.tensors[op.inputs[2]].data.copy() for op in sim.region_params]
    for i in range(4):
        sim.learn_input(x[i % 3], int(y[i % 3]))
        assert not sim.last_refused
    assert out.buffer == sim.buffer.count == 2
    _after(out, sim, q)
    assert np.abs(softmax(sim.predict(q)[1]) - softmax(z0)).max() > 1e-3

    from tinycc.backends.c import CBackend

    host = _deploy(graph, "bias", "stem", CBackend())
    sim2 = DeepLearner(host, host.meta["deep"]["cut"], "bias", capacity=host.buffer.capacity)
    hout, _ = c_harness.run_deep_demo(host, sim2, tmp_path / "h", x, y, "host", learn=4)
    for i in range(4):
        sim2.learn_input(x[i % 3], int(y[i % 3]))
    moved = False
    for j, op in enumerate(sim2.region_params):
        np.testing.assert_array_equal(hout.backbone[j], sim2.view.tensors[op.inputs[2]].data)
        moved |= bool((hout.backbone[j] != start[j]).any())
    assert moved
    _after(hout, sim2, q)


@pytest.mark.skipif(not arduino_harness.available(), reason="arduino-builder/simavr/avr-gcc not installed")
def test_mega2560_sparse_sketch_learns_as_the_simulator(graph, tmp_path: Path) -> None:
    """--train sparse (c1's bias, c2's bias and 2 of its 6 channels, the classifier; two-level buffer) on the Mega
    2560: the sketch in simavr (4 vectors, 5 learn calls) gives the simulator's cut tensors and classes and
    probabilities before and after learning; the region reads the trained channels' RAM int8 copy with RAM biases
    (tcc_conv2d_rows_bram_s8). The c project of the same deployment on the host (ASan/UBSan): the int32 biases and
    int8 channel copies equal the simulator's bit for bit."""
    from tinycc.backends.c import CBackend
    from tinycc.backends.c.deep_emit import channel_rows
    from tinycc.backends.c.deep_project import deep_learner

    dep = _sparse(graph)
    assert dep.memory["ram"] <= 8192
    x, y = data(4, 5)
    sim = deep_learner(dep)
    out, q = _simavr_run(dep, sim, x, y, tmp_path / "p", 5)
    model_c = next((tmp_path / "p").glob("*/src/model.c")).read_text()
    assert "tcc_conv2d_rows_bram_s8(" in model_c
    for i in range(5):
        sim.learn(q[i % 4], int(y[i % 4]))
        assert not sim.last_refused
    assert out.buffer == sim.feat_buffer.count
    _after(out, sim, q)

    host = _sparse(graph, CBackend())
    sim2 = deep_learner(host)
    hout, _ = c_harness.run_deep_demo(host, sim2, tmp_path / "h", x, y, "host", learn=5)
    trained = [op for op in sim2.region_params if any(sim2.tail.trains(op.name))]
    start = {op.name: sim2.view.tensors[op.inputs[1]].data.copy() for op in trained}
    for i in range(5):
        sim2.learn(q[i % 4], int(y[i % 4]))
    moved = False
    for j, op in enumerate(trained):
        np.testing.assert_array_equal(hout.backbone[j], sim2.view.tensors[op.inputs[2]].data)
        w8 = sim2.view.tensors[op.inputs[1]].data
        if sim2.tail.trains(op.name)[0]:
            np.testing.assert_array_equal(hout.backbone_q[j], channel_rows(sim2.tail, op.name, w8).reshape(-1))
            moved |= bool((w8 != start[op.name]).any())
    assert moved
    _after(hout, sim2, q)


_OBJ = re.compile(r"^[0-9a-f]+ .{7} (\S+)\s+([0-9a-f]+) (\S+)$")
# the deep project's RAM symbols -> report line (first match; tests/test_deep_project.py's, with the sparse ones)
AVR_RAM = (("tcc_arena", "feature extractor arena"), ("tcc_buf_", "replay buffer"), ("tcc_fbuf_", "feature buffer"),
           ("tcc_buf", "runtime descriptors"), ("tcc_fbuf", "runtime descriptors"), ("tcc_probs", "outputs"),
           ("tcc_dw", "learn step: parameters"), ("tcc_db", "learn step: parameters"),
           ("tcc_bq", "learn step: int32 biases"), ("tcc_w8", "learn step: int8 channels"),
           ("tcc_t", "learn step: values"), ("tcc_gx", "learn step: scratch"), ("tcc_gs", "learn step: gradients"),
           ("tcc_p", "learn step: descriptors"), ("tcc_y", "learn step: labels"), ("tcc_k", "kept int8 activations"))


def _avr_sections(project: Path) -> list[tuple[str, str, int]]:
    """(section, name, bytes) of every object symbol of model.c and the runtime built with avr-gcc for the
    ATmega2560 (-Os, -Werror), and (section, "(anonymous)", bytes) for the bytes of a RAM section (.data, .bss,
    .rodata: avr-gcc links .rodata into RAM) that no symbol holds (an automatic array's initializer image, ...)."""
    from .test_deep_project import SOURCES

    out = []
    for src in SOURCES:
        obj = project / (Path(src).stem + ".o")
        r = subprocess.run(["avr-gcc", *c_harness.STRICT, "-Os", "-mmcu=atmega2560", "-c", "-I", str(project), "-I",
                            str(project / "runtime"), "-o", str(obj), str(project / src)], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        text = subprocess.run(["avr-objdump", "-t", str(obj)], capture_output=True, text=True, check=True).stdout
        syms = [(m[1], m[3], int(m[2], 16)) for m in map(_OBJ.match, text.splitlines()) if m and " O " in m[0]]
        heads = subprocess.run(["avr-objdump", "-h", str(obj)], capture_output=True, text=True, check=True).stdout
        for sec, size in re.findall(r"^\s*\d+ (\.data|\.bss|\.rodata)\s+([0-9a-f]+) ", heads, re.M):
            left = int(size, 16) - sum(n for s, _, n in syms if s == sec)
            if left:
                syms.append((sec, "(anonymous)", left))
        out += syms
    return out


@pytest.mark.skipif(not arduino_harness.available(), reason="avr-gcc not installed")
@pytest.mark.parametrize("mode", ["bias", "sparse"])
def test_mega2560_report_equals_avr_symbols(graph, tmp_path: Path, mode: str) -> None:
    """The c project of --deep bias / --train sparse for the Mega 2560, built with avr-gcc: every .data/.bss byte
    of the learner is its report line, line by line, the total the report's static RAM; the step's constants and
    the region's tables are .progmem.data (flash, read through TCC_READ_*) and equal their flash lines; the stack is
    measured on the AVR core. No RAM byte is anonymous, and the only .rodata (RAM on AVR: the start-up copies it
    from flash) is the model's two public input-quantization constants, the report's "public constants" lines
    (RAM and their load image in flash): static RAM is .data + .bss + .rodata."""
    from tinycc.backends.c import CBackend

    dep = _sparse(graph, CBackend()) if mode == "sparse" else _deploy(graph, "bias", "stem", CBackend())
    CBackend().check(dep)
    CBackend().emit(dep, tmp_path)
    syms = _avr_sections(tmp_path)
    items = {i["name"]: i for i in dep.memory["items"]}
    ram: dict[str, int] = {}
    flash = {"learn step region tables": 0, "learn step constants": 0}
    rodata: dict[str, int] = {}
    assert not [s for s in syms if s[1] == "(anonymous)"], syms
    for section, name, size in syms:
        if section in (".data", ".bss"):
            line = next(g for p, g in AVR_RAM if name.split(".")[0].startswith(p))
            ram[line] = ram.get(line, 0) + size
        elif section == ".progmem.data" and name.startswith("tcc_rg_"):
            flash["learn step region tables"] += size
        elif section == ".progmem.data" and re.fullmatch(r"tcc_(?:wq|ws|bs|row|cv)\d+", name):
            flash["learn step constants"] += size
        elif section == ".rodata":
            rodata[name] = size
    name = c_identifier(dep.name)  # the model's name (Keras numbers its models: functional, functional_46, ...)
    assert sorted(rodata) == [f"{name}_input_scale", f"{name}_input_zero_point"], rodata
    assert sum(rodata.values()) == items["public constants"]["bytes"] == 8
    assert items["public constants load image"]["bytes"] == 8 and items["public constants load image"]["section"] == "flash"
    assert sum(ram.values()) + sum(rodata.values()) == dep.memory["static_ram"], (ram, dep.memory["report"])
    assert ram == {k: items[k]["bytes"] for k in ram}
    assert set(ram) == {g for _, g in AVR_RAM if g in items and items[g]["bytes"]}
    assert flash == {k: items[k]["bytes"] for k in flash} and all(flash.values())
    assert items["stack"]["exact"] and items["stack"]["detail"].startswith("measured: AVR")


@pytest.mark.skipif(not arduino_harness.available(), reason="arduino-builder/simavr/avr-gcc not installed")
def test_mega2560_blocks_sketch_learns_as_the_simulator(graph, tmp_path: Path) -> None:
    """--deep blocks (cut after c1: c2's float weights and biases and the classifier train) on the Mega 2560: the
    self-test sketch in simavr (3 vectors, 4 learn calls, buffer 2, batch 2) predicts before and after learning the
    simulator's classes and probabilities (1e-5), its buffer holds the simulator's count, and the learning moved
    the predictions."""
    from tinycc.backends.arduino import ArduinoBackend
    from tinycc.config import TestVectors

    dep = _deploy(graph, "blocks", "c1")
    assert dep.memory["ram"] <= 8192 and dep.meta["deep"]["trains"] == ["c2"]
    ArduinoBackend().check(dep)
    x, y = data(3, 7)
    ArduinoBackend().emit(dep, tmp_path / "p", TestVectors(x, y, learn=4))
    out = ArduinoBackend().run_demo(tmp_path / "p", "simavr").output
    sim = DeepLearner(dep, dep.meta["deep"]["cut"], "blocks", capacity=dep.buffer.capacity)
    q = sim.cut_of(x)
    cls, z = sim.predict(q)
    for i in range(3):
        assert out.before[i][0] == cls[i]
        np.testing.assert_allclose(out.before[i][1], softmax(z)[i], atol=1e-5)
    for i in range(4):
        sim.learn_input(x[i % 3], int(y[i % 3]))
        assert not sim.last_refused
    assert out.buffer == sim.buffer.count == 2
    cls2, z2 = sim.predict(q)
    for i in range(3):
        assert out.after[i][0] == cls2[i]
        np.testing.assert_allclose(out.after[i][1], softmax(z2)[i], atol=1e-5)
    assert np.abs(softmax(z2) - softmax(z)).max() > 1e-3


def test_mega2560_refusals(graph) -> None:
    """--deep blocks with the earlier cut (two float layers) does not fit 8 kB: the budget's one line."""
    from tinycc.errors import BudgetError

    with pytest.raises(BudgetError, match=r"^RAM needs [\d,]+ bytes but board mega2560 allows 8,192") as e:
        _deploy(graph, "blocks", "stem")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("mode", ["bias", "sparse"])
def test_mega2560_measured_stack_bounds_the_painted_stack(graph, tmp_path: Path, mode: str) -> None:
    """The measured AVR stack of the deep API (avr-gcc -fstack-usage + call graph, the RAM-bias kernels' `rcall .+0`
    argument space not read as recursion) bounds a painted simavr run of every entry point, learn included, within
    25%."""
    from tinycc.backends.c import CBackend
    from tinycc.backends.c.deep_project import deep_learner
    from tinycc.backends.c.stack import project_stack, toolchain
    from tinycc.config import TestVectors

    from . import stack_harness

    if not (toolchain("avr") and stack_harness.available("avr")):
        pytest.skip("avr: compiler or simavr not installed")
    dep = _sparse(graph, CBackend()) if mode == "sparse" else _deploy(graph, "bias", "stem", CBackend())
    x, y = data(4, 3)
    CBackend().emit(dep, tmp_path, TestVectors(x, y))
    fig = project_stack(tmp_path, tmp_path / "runtime", dep.name + "_", "avr", dep.buffer.policy)
    used = stack_harness.painted(tmp_path, dep.name, deep_learner(dep).buffer.feature_count, "avr")
    assert used <= fig.bytes <= 1.25 * used, (fig.bytes, used, fig.path)


def test_flash_problem_names_frozen_float_constants(graph) -> None:
    """What AVR still refuses (deep_emit.flash_problem): a step that keeps a frozen float weight (the float kernels
    read it with plain loads, so it cannot be a flash table). The bias learner's region, computed by the int8 kernels,
    has none (its weights are the int8 flash tables); the same tail computed in float keeps c1's float weights."""
    from tinycc.backends.c.deep_emit import flash_problem

    dep = _deploy(graph, "bias", "stem")
    sim = DeepLearner(dep, dep.meta["deep"]["cut"], "bias", capacity=dep.buffer.capacity)
    assert flash_problem(sim.tail, {op.outputs[0] for op in sim.region.ops}) is None
    assert flash_problem(sim.tail, set()) == "layer 'c1' keeps frozen float weights"


AVR_MAIN = Path(__file__).with_name("avr_deep_main.c")


def _avr_learned(dep, project: Path, x, y, learn: int) -> tuple[dict, int]:
    """Build ``dep``'s c project with tests/avr_deep_main.c for the ATmega2560 (avr-gcc -Os -Werror), run it in simavr:
    ({(what, layer): values}, the last learn call's return)."""
    from tinycc.backends.c import CBackend
    from tinycc.backends.c.stack import CORES
    from tinycc.config import TestVectors

    CBackend().emit(dep, project, TestVectors(x, y))
    n_layers = int(re.search(r"#define \w+_BACKBONE_LAYERS (\d+)", (project / "tinycc_config.h").read_text())[1])
    srcs = [str(project / "model.c")] + [str(project / "runtime" / f) for f in
                                         ("tinycc_kernels.c", "tinycc_learn.c", "tinycc_backprop.c")]
    defs = [f"-DMODEL={dep.name}", f"-DLAYERS={n_layers}", f"-DLEARN={learn}"]
    defs += ["-DSPARSE=1"] if dep.meta["deep"]["mode"] == "sparse" else []
    c = CORES["avr"]
    exe = project / "learned.elf"
    r = subprocess.run([c.cc, *c.flags, "-Wall", "-Wextra", "-Werror", "-I", str(project), "-I",
                        str(project / "runtime"), *defs, "-o", str(exe), str(AVR_MAIN), *srcs, "-lm"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = arduino_harness.run_simavr(exe)
    assert "done" in lines, lines[-20:]
    got: dict = {}
    for what, layer, _, v in (l.split() for l in lines if l.startswith(("bias ", "w8 "))):
        got.setdefault((what, int(layer)), []).append(int(v))
    ret = int(next(l for l in lines if l.startswith("learn "))[6:])
    return got, ret


@pytest.mark.skipif(not arduino_harness.available(), reason="avr-gcc/simavr not installed")
@pytest.mark.parametrize("mode", ["bias", "sparse"])
def test_mega2560_learned_state_equals_the_simulator(graph, tmp_path: Path, mode: str) -> None:
    """The c project for the Mega 2560 on the ATmega2560 itself (simavr), 6 learn calls over 3 vectors: the int32
    biases the RAM-bias kernels read and (sparse) the int8 copy of the trained channels equal the simulator's bit for
    bit, and moved."""
    from tinycc.backends.c import CBackend
    from tinycc.backends.c.deep_emit import channel_rows
    from tinycc.backends.c.deep_project import deep_learner

    dep = _sparse(graph, CBackend()) if mode == "sparse" else _deploy(graph, "bias", "stem", CBackend())
    x, y = data(3, 7)
    got, ret = _avr_learned(dep, tmp_path, x, y, 6)
    sim = deep_learner(dep)
    trained = [op for op in sim.region_params if any(sim.tail.trains(op.name))]
    start = {op.name: (sim.view.tensors[op.inputs[2]].data.copy(), sim.view.tensors[op.inputs[1]].data.copy())
             for op in trained}
    for i in range(6):
        if mode == "sparse":
            sim.learn(sim.cut_of(x[i % 3:i % 3 + 1])[0].reshape(-1), int(y[i % 3]))
        else:
            sim.learn_input(x[i % 3], int(y[i % 3]))
        assert not sim.last_refused
    assert ret == (sim.feat_buffer.count if mode == "sparse" else sim.buffer.count)
    moved = False
    for j, op in enumerate(trained):
        w_on, b_on = sim.tail.trains(op.name)
        bias = sim.view.tensors[op.inputs[2]].data
        assert got.get(("bias", j), []) == (bias.tolist() if b_on else [])
        moved |= bool(b_on and (bias != start[op.name][0]).any())
        if mode == "sparse" and w_on:
            w8 = sim.view.tensors[op.inputs[1]].data
            assert got[("w8", j)] == channel_rows(sim.tail, op.name, w8).reshape(-1).tolist()
            moved |= bool((w8 != start[op.name][1]).any())
    assert moved and len(trained) == 2
