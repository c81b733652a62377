"""Deep learners on an AVR board (Arduino Mega 2560, 8 kB RAM) in simavr: `--deep blocks` (a float region, in RAM)
learns there exactly as the host simulator (tinycc.ir.deep.DeepLearner); `--deep bias` and `--train sparse` are
refused in one line (the int8 kernels read flash on AVR, the learned biases live in RAM), as is a project too big
for the board (the usual budget line)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.ir.deep import DeepLearner
from tinycc.ir.train import softmax

from . import arduino_harness
from .sparse_util import CALIB as CALIB10
from .sparse_util import data as data10

CALIB = CALIB10[:, :6, :6, :]


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = data10(n, seed)
    return np.ascontiguousarray(x[:, :6, :6, :]), y


@pytest.fixture(scope="module")
def graph():
    """6x6x3 -> conv stem (3) -> conv c1 (4) -> conv c2 (6, stride 2) -> mean -> Dense(4, softmax)."""
    import keras

    from tinycc.passes import PassContext, run_pipeline
    from tinycc.plugins.frontends.keras import graph_from_keras_model
    from tinycc.session import Session

    keras.utils.set_random_seed(0)
    x = inp = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="stem")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(x)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    g = graph_from_keras_model(keras.Model(inp, keras.layers.Dense(4, activation="softmax", name="d")(x)))
    run_pipeline(g, Session(autoload=False).registry.pipeline("cleanup"), PassContext(session=Session(autoload=False)))
    return g


def _deploy(graph, mode: str, cut: str):
    from tinycc.backends.arduino import ArduinoBackend
    from tinycc.deploy import build_deep_deployment
    from tinycc.session import Session

    from .deploy_util import make_config

    session = Session(autoload=False)
    config = make_config(session, deep=(mode,), lr=0.05, buffer=2, batch_size=2, board="mega2560", deep_cut=cut)
    return build_deep_deployment(graph.copy(), config, session, ArduinoBackend(), CALIB)


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
    """--deep bias and --train sparse's int8 region is refused on AVR in one line saying why; --deep blocks with
    the earlier cut (two float layers) does not fit 8 kB: the budget's one line."""
    from tinycc.backends.arduino import ArduinoBackend
    from tinycc.errors import BudgetError, TinyccError

    with pytest.raises(TinyccError, match=r"arduino target does not generate the deep learner \(on AVR: the int8 "
                                          r"kernels read .* from flash") as e:
        ArduinoBackend().check(_deploy(graph, "bias", "stem"))
    assert "\n" not in str(e.value)
    with pytest.raises(BudgetError, match=r"^RAM needs [\d,]+ bytes but board mega2560 allows 8,192") as e:
        _deploy(graph, "blocks", "stem")
    assert "\n" not in str(e.value)
