"""`--deep bias` in the deploy stage (tinycc/deploy/deep.py): the deep deployment sized exactly, its buffer of cut
tensors fitted to --ram, the budget checked; tflm and AVR boards refuse it in one line (the c and arduino targets
generate it: tests/test_deep_project.py)."""
from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from tinycc.backends.c import CBackend
from tinycc.errors import BudgetError
from tinycc.ir.buffer import ReplayBuffer
from tinycc.ir.deep import DeepLearner
from tinycc.passes import PassContext, run_pipeline
from tinycc.plugins.frontends.keras import graph_from_keras_model

from .deploy_util import build_deployment, make_config
from .zoo import resnet_add

RUNTIME = Path(__file__).resolve().parents[1] / "backends" / "c" / "runtime"
CALIB = np.random.default_rng(0).uniform(-1, 1, (32, 10, 10, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def graph():
    import keras

    from tinycc.session import Session

    keras.utils.set_random_seed(0)
    g = graph_from_keras_model(resnet_add())
    run_pipeline(g, Session(autoload=False).registry.pipeline("cleanup"), PassContext(session=Session(autoload=False)))
    return g


def _deploy(graph, **opts):
    from tinycc.deploy import build_deep_deployment
    from tinycc.session import Session

    session = Session(autoload=False)
    config = make_config(session, deep=("bias",), lr=0.05, **opts)
    return build_deep_deployment(graph.copy(), config, session, CBackend(), CALIB)


def _items(dep) -> dict[str, int]:
    return {i["name"]: int(i["bytes"]) for i in dep.memory["items"]}


def test_deep_bias_fits_the_ram_budget_exactly(graph) -> None:
    """The buffer of int8 cut tensors is the largest the RAM budget leaves room for; the learn step's lines are the
    learner's exact state (step_memory in the lean layout), the buffer line the runtime's buffer layout; the head's
    training lines are gone and the trained region's biases moved from flash to RAM."""
    ram = 60_000
    dep = _deploy(graph, ram=ram)
    deep = dep.meta["deep"]
    learner = DeepLearner(dep, deep["cut"], "bias", capacity=1)
    assert deep["trains"] == [op.origin for op in learner.region_params] and deep["trains"]
    items = _items(dep)
    state = learner.state_bytes()
    for group in ("parameters", "int32_biases", "values", "gradients", "scratch", "descriptors", "labels"):
        assert items[f"learn step: {group.replace('_', ' ')}"] == state[group]
    assert items["kept int8 activations"] == state["kept_int8"] > 0
    cap = dep.buffer.capacity
    per = learner.buffer.feature_count + 1 + 4
    assert items["replay buffer"] == ReplayBuffer.bytes_for(cap, learner.buffer.feature_count) == cap * per + 16
    assert dep.memory["ram"] <= ram < dep.memory["ram"] + per  # one more entry would not fit
    assert not {"classifier weights", "training state", "classifier initial weights"} & set(items)
    head = _deploy_head(graph)
    region = sum(4 * learner.tail.params[op.name].bias.size for op in learner.region_params)
    assert items["extractor biases"] == _items(head)["extractor biases"] - region
    assert dep.memory["deep_cut"] == deep["cut"] and dep.memory["buffer_capacity"] == cap


def _deploy_head(graph):
    from tinycc.session import Session

    return build_deployment(graph.copy(), {"calib_data": CALIB, "lr": 0.05, "buffer": 1}, Session(autoload=False),
                            CBackend())


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_learn_lines_equal_the_generated_learner_symbols(graph, tmp_path: Path) -> None:
    """The report's learn-step and kept-activation RAM and the learn-step flash equal the symbol sizes of the deep
    bias learner the C backend generates for this deployment (backends/c/deep_learn.emit_bias_learn, batch 2),
    group by group; its int8 region tables are the requantization tables and the weights the step does not share."""
    from tinycc.backends.c.deep_learn import emit_bias_learn

    dep = _deploy(graph, buffer=3, batch_size=2)
    assert dep.buffer.capacity == 3
    learner = DeepLearner(dep, dep.meta["deep"]["cut"], "bias", capacity=1, batch_size=2)
    (tmp_path / "learn.c").write_text(emit_bias_learn(learner, 2))
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{RUNTIME}", "-c",
                    str(tmp_path / "learn.c"), "-o", str(tmp_path / "learn.o")], check=True, capture_output=True)
    nm = subprocess.run(["nm", "-S", str(tmp_path / "learn.o")], check=True, capture_output=True, text=True).stdout
    groups = {"tcc_dw": "learn step: parameters", "tcc_db": "learn step: parameters",
              "tcc_bq": "learn step: int32 biases", "tcc_t": "learn step: values", "tcc_gx": "learn step: scratch",
              "tcc_gs": "learn step: gradients", "tcc_p": "learn step: descriptors", "tcc_y": "learn step: labels",
              "tcc_k": "kept int8 activations"}
    ram = dict.fromkeys(set(groups.values()), 0)
    flash = tables = 0
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "bBdD":
            ram[next(g for p, g in groups.items() if parts[3].split(".")[0].startswith(p))] += int(parts[1], 16)
        elif len(parts) == 4 and parts[2] in "rR" and parts[3].startswith("tcc_rg_"):
            tables += int(parts[1], 16)
        elif len(parts) == 4 and parts[2] in "rR" and parts[3].startswith("tcc_"):
            flash += int(parts[1], 16)
    items = _items(dep)
    assert ram == {g: items[g] for g in ram} and ram["learn step: labels"] == 8
    assert flash == items["learn step constants"] > 0
    assert items["learn step initial values"] == ram["learn step: parameters"] + ram["learn step: int32 biases"]
    ext = learner.region
    weights = sum(ext.tensors[op.inputs[1]].data.size for op in learner.region_params)
    channels = sum(learner.tail.params[op.name].bias.size for op in learner.region_params)
    # int32 multiplier and shift per output channel, and the int8 weights the step does not keep itself (those it
    # keeps, tcc_wq<k>, the forward reads too: one copy)
    from tinycc.ir.backprop import int8_weights

    shared = sum(w.size for w, _ in int8_weights(learner.tail, learner.known_tensors()).values())
    assert shared > 0 and tables == weights - shared + 8 * channels
    assert items["learn step region tables"] == tables


def test_too_little_ram_says_by_how_much(graph) -> None:
    with pytest.raises(BudgetError, match=r"above --ram/--flash 15,000.*--deep-cut") as e:
        _deploy(graph, ram=15_000)
    assert "\n" not in str(e.value)
    need = int(str(e.value).split("RAM ")[1].split(" bytes")[0].replace(",", ""))
    dep = _deploy(graph, ram=need)  # exactly that much: one entry
    assert dep.buffer.capacity == 1 and dep.memory["ram"] == need


def test_deep_cut_by_layer_name_and_bad_names(graph) -> None:
    from tinycc.errors import TinyccError

    dep = _deploy(graph, deep_cut="stem", buffer=2)  # a layer: its output tensor
    assert dep.meta["deep"]["trains"] == ["r1", "r2", "r3"]
    deeper = _items(dep)
    shallow = _items(_deploy(graph, buffer=2))
    assert deeper["learn step: parameters"] > shallow["learn step: parameters"]  # more biases learn
    with pytest.raises(TinyccError, match="--deep-cut 'nope': not a tensor"):
        _deploy(graph, deep_cut="nope")
    with pytest.raises(TinyccError, match="--tinyol"):
        _deploy(graph, tinyol=True)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> Path:
    import keras

    d = tmp_path_factory.mktemp("deepcli")
    keras.utils.set_random_seed(0)
    resnet_add().save(d / "m.keras")
    np.savez(d / "c.npz", x=CALIB)
    return d


def _cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    from tinycc.cli import main

    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = int(e.code or 0)
    return rc, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize("target, why, extra", [("tflm", "TFLite Micro runs inference only", ["--ram", "60000"])])
def test_targets_refuse_deep_bias_in_one_line(model_files: Path, tmp_path: Path, target: str, why: str, extra,
                                              capsys) -> None:
    """tflm does not generate the deep learner (the c and arduino targets do: tests/test_deep_project.py, on AVR
    too: tests/test_deep_avr.py): one line with the reason and what it would take, nothing written."""
    rc, err = _cli(["compile", str(model_files / "m.keras"), "-t", target, "--calib", str(model_files / "c.npz"),
                    "--deep", "bias", *extra, "-o", str(tmp_path / "o")], capsys)
    assert rc == 2 and len(err) == 1, err
    assert f"the {target} target does not generate the deep learner ({why}" in err[0]
    assert int(err[0].split("RAM ")[1].split(" B")[0].replace(",", "")) <= int(extra[-1])  # sized to the budget first
    assert not (tmp_path / "o").exists()


def test_arduino_avr_compiles_deep_bias(model_files: Path, tmp_path: Path, capsys) -> None:
    """`tinycc compile -t arduino --board mega2560 --deep bias`: the sketch is written, its trained region on the
    kernels that read the learned int32 biases from RAM (tcc_*_bram_s8), every table in flash (TCC_WEIGHT)."""
    rc, err = _cli(["compile", str(model_files / "m.keras"), "-t", "arduino", "--calib", str(model_files / "c.npz"),
                    "--deep", "bias", "--board", "mega2560", "--ram", "1000000", "-o", str(tmp_path / "o")], capsys)
    assert rc == 0, err
    model_c = next((tmp_path / "o").glob("*/src/model.c")).read_text()
    region = model_c.split("static void tcc_deep_region")[1].split("\n}\n")[0]
    assert "_bram_s8(" in region and "tcc_bq" in region
    assert re.search(r"const int8_t tcc_wq\d+\[\d+\](?: TCC_BYTES)? TCC_WEIGHT", model_c)


@pytest.mark.parametrize("args, words", [(["--deep", "blocks", "--storage", "float32"], "stores int8 cut tensors"),
                                         (["--deep", "weights"], "expected one of bias, blocks"),
                                         (["--deep-cut", "x"], "--deep-cut needs --deep")])
def test_bad_deep_options_one_line(model_files: Path, tmp_path: Path, args, words, capsys) -> None:
    rc, err = _cli(["compile", str(model_files / "m.keras"), "-t", "c", "--calib", str(model_files / "c.npz"), *args,
                    "-o", str(tmp_path / "o")], capsys)
    assert rc == 2 and words in err[-1], err
    assert not any("Traceback" in line for line in err)


def test_deep_bias_names_only_the_layers_with_a_bias() -> None:
    """--deep bias: a layer of the region without a bias trains nothing and is not listed as trained (the compile
    summary's count)."""
    import keras

    from tinycc.session import Session

    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(x)
    y = keras.layers.Conv2D(4, 3, activation="relu", use_bias=False, name="nobias")(y)
    y = keras.layers.Conv2D(4, 3, activation="relu", name="c3")(y)
    y = keras.layers.Dense(3, activation="softmax", name="head")(keras.layers.Flatten()(y))
    g = graph_from_keras_model(keras.Model(x, y))
    run_pipeline(g, Session(autoload=False).registry.pipeline("cleanup"), PassContext(session=Session(autoload=False)))
    calib = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32)
    session = Session(autoload=False)
    from tinycc.deploy import build_deep_deployment

    dep = build_deep_deployment(g, make_config(session, deep=("bias",), lr=0.05, deep_cut="c1"), session, CBackend(),
                                calib)
    learner = DeepLearner(dep, dep.meta["deep"]["cut"], "bias", capacity=1)
    region = [op.origin for op in learner.region_params]
    assert "nobias" in region and dep.meta["deep"]["trains"] == [o for o in region if o != "nobias"]
