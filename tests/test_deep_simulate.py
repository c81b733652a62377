"""`tinycc simulate --deep`: the deep learners run side by side with the head-only modes."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import fake_thesis_data


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import keras

    d = tmp_path_factory.mktemp("deep")
    fake_thesis_data(d, 16, 300, 60)
    keras.utils.set_random_seed(1)
    L = keras.layers
    m = keras.Sequential([keras.Input((16, 16, 3)), L.Conv2D(4, 3, strides=2, activation="relu", name="c1"),
                          L.Conv2D(6, 3, padding="same", activation="relu", name="c2"),
                          L.GlobalAveragePooling2D(name="gap"), L.Dense(10, activation="softmax", name="out")])
    m.save(d / "model.keras")
    return d


def _cli(setup: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinycc.cli", "simulate", str(setup / "model.keras"), "--scenario",
                           "transfer", "--data", str(setup), "--runs", "1", "--stream", "12", "--test", "10",
                           "--buffer", "4", "--lr", "0.05", *extra], capture_output=True, text=True, timeout=600)


def test_deep_modes_side_by_side(setup: Path) -> None:
    """The deep curves are those of a DeepLearner fed the same stream (the front computed once per run)."""
    from tinycc.api import load_cleaned, make_config
    from tinycc.ir.deep import DeepLearner
    from tinycc.plugins.applications.scenarios import draw, learn, prepare
    from tinycc.session import Session

    session = Session(autoload=False)
    g = load_cleaned(str(setup / "model.keras"), session)
    config = make_config(session, buffer=4, lr=0.05, deep=("bias", "blocks"))
    prep = prepare(g, "transfer", str(setup), config, session, 12, 10)
    assert prep.modes == ("omega", "tinyol", "baseline", "deep-bias", "deep-blocks")
    assert prep.deep_cut in prep.dep.extractor.tensors  # the input of c2: c2 learns
    st, feats = draw(prep, 0)
    curves = learn(prep, st, feats, {m: 0.05 for m in prep.modes})
    for mode in ("bias", "blocks"):
        dl = DeepLearner(prep.dep, prep.deep_cut, mode, capacity=4, lr=0.05, epochs=1,
                         deep_lr=0.005)  # the backbone's default rate: a tenth of --lr
        assert [op.origin for op in dl.region_params] == ["c2"]
        acc = []
        for x, y in zip(st.x, st.label):
            dl.learn_input(x, int(y))
            acc.append((dl.predict_input(st.x_test) == st.test_labels(0)).mean())
        np.testing.assert_array_equal(curves[f"deep-{mode}"]["all"], acc)


def test_cli_deep(setup: Path) -> None:
    out = setup / "out"
    r = _cli(setup, "--deep", "bias,blocks", "-o", str(out))
    assert r.returncode == 0, r.stderr
    header = next(csv.reader(open(out / "transfer.csv")))
    assert "deep-bias_all_mean" in header and "deep-blocks_all_mean" in header and "omega_all_mean" in header
    assert "deep-bias: cut at" in r.stdout and "trained parameters" in r.stdout
    assert "deep-blocks final accuracy" in r.stdout and "generated C step:" in r.stdout


@pytest.mark.parametrize("extra", [["--deep", "weights"], ["--deep", "bias,bias"],
                                   ["--deep", "bias", "--deep-cut", "nope"], ["--deep-cut", "c1"]])
def test_cli_deep_refusals(setup: Path, extra: list[str]) -> None:
    r = _cli(setup, *extra, "-o", str(setup / "refused"))
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (setup / "refused").exists()


def test_deep_buffer_is_bounded(setup: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tinycc.plugins.applications import scenarios
    from tinycc.api import load_cleaned, make_config
    from tinycc.plugins.applications.deep_modes import deep_buffer_bytes
    from tinycc.session import Session

    session = Session(autoload=False)
    g = load_cleaned(str(setup / "model.keras"), session)
    config = make_config(session, buffer=4, deep=("bias",))
    prep = scenarios.prepare(g, "transfer", str(setup), config, session, 12, 10)
    per_entry = deep_buffer_bytes(prep, 1)
    assert per_entry == int(np.prod(prep.dep.extractor.tensors[prep.deep_cut].shape[1:])) + 1
    monkeypatch.setattr(scenarios, "MAX_BUFFER_BYTES", per_entry * 4)
    assert scenarios.check_work(prep, 1, 4, 1) > 0
    with pytest.raises(scenarios.TinyccError, match="--deep buffer"):
        scenarios.check_work(prep, 1, 5, 1)


@pytest.mark.parametrize("kw, words", [({"deep": ("weights",)}, "--deep: unknown value"),
                                       ({"deep": ("bias", "bias")}, "distinct modes"),
                                       ({"deep_cut": "c1"}, "--deep-cut needs --deep")])
def test_config_refuses_bad_deep_choices(kw: dict, words: str) -> None:
    from tinycc.api import make_config
    from tinycc.errors import TinyccError
    from tinycc.session import Session

    with pytest.raises(TinyccError, match=words):
        make_config(Session(autoload=False), **kw)


def test_compile_generates_deep_bias_and_blocks(setup: Path, tmp_path: Path) -> None:
    """compile builds, sizes and generates the --deep bias and --deep blocks deployments (tinycc/deploy/deep.py, the
    c target's deep project: tests/test_deep_project.py)."""
    from tinycc.api import compile_model, make_config
    from tinycc.session import Session

    session = Session(autoload=False)
    config = make_config(session, deep=("bias",))
    assert config.learning.deep == ("bias",) and config.learning.deep_cut is None
    calib = np.random.default_rng(0).uniform(0, 1, (16, 16, 16, 3)).astype(np.float32)
    result = compile_model(str(setup / "model.keras"), "c", str(tmp_path / "bias"), config, session, calib=calib)
    assert result.deployment.meta["deep"]["trains"] and "tcc_deep_learn" in (tmp_path / "bias" / "model.c").read_text()
    result = compile_model(str(setup / "model.keras"), "c", str(tmp_path / "blocks"),
                           make_config(session, deep=("blocks",)), session, calib=calib)
    assert result.deployment.meta["deep"]["mode"] == "blocks"
    assert "backbone_weights" in (tmp_path / "blocks" / "model.c").read_text()
