"""Keras frontend + float reference interpreter against Keras, before and after cleanup."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinycc.errors import TinyccError, UnsupportedLayerError
from tinycc.ir import serialize
from tinycc.ir.interpreter import run
from tinycc.ir.verify import verify
from tinycc.passes import PassContext, run_pipeline

from .zoo import ZOO_NAMES, build, sample_input, save_model

# Float paths vs Keras: max |difference| relative to max |Keras output|. Both sides sum float32 products in
# different orders (numpy/BLAS here; Keras with or without oneDNN, which reorders and blocks the sums), so
# each dot product of K terms may differ by up to about K * 2**-24 * sum|terms| (Higham's gamma_K bound).
# The zoo's longest sums are K <= 1,152 over <= 8 layers; measured differences are <= 4e-7 with oneDNN on or
# off (TF_ENABLE_ONEDNN_OPTS=1/0), so 1e-5 leaves ~25x headroom without hiding a wrong kernel (those are O(1)).
TOL = 1e-5


@pytest.fixture(scope="module")
def zoo_files(tmp_path_factory) -> dict[str, dict]:
    d = tmp_path_factory.mktemp("zoo")
    out = {}
    for name in ZOO_NAMES:
        m = build(name)
        x = sample_input(m, 16, seed=1)
        out[name] = {"x": x, "y": m.predict(x, verbose=0),
                     "h5": save_model(m, d, "h5"), "keras": save_model(m, d, "keras")}
    return out


def _close(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.mark.parametrize("fmt", ["h5", "keras"])
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_matches_keras(zoo_files, session, name: str, fmt: str) -> None:
    z = zoo_files[name]
    g = session.registry.frontend_for(str(z[fmt])).load(str(z[fmt]))
    verify(g)
    out = run(g, z["x"])[g.outputs[0]]
    assert _close(out, z["y"]) <= TOL
    n_before = len(g.ops)
    run_pipeline(g, session.registry.pipeline("cleanup"), PassContext(session=session))
    out2 = run(g, z["x"])[g.outputs[0]]
    assert _close(out2, z["y"]) <= TOL
    assert not any(o.kind.value in ("dropout",) for o in g.ops)
    if name in ("mobilenet_v2", "bn_conv_act", "grouped_conv", "mobilenet_v3"):
        assert not any(o.kind.value == "batch_norm" for o in g.ops) and len(g.ops) < n_before


def test_round_trip_exact(zoo_files, session, tmp_path: Path) -> None:
    for name in ZOO_NAMES:
        z = zoo_files[name]
        g = session.registry.frontend_for(str(z["h5"])).load(str(z["h5"]))
        serialize.save(g, tmp_path / name)
        h = serialize.load(tmp_path / name)
        verify(h)
        for t in g.tensors.values():  # the round trip itself is exact
            if t.data is not None:
                np.testing.assert_array_equal(t.data, h.tensors[t.name].data)
        # BLAS may pick another summation order for a differently aligned copy of the same weights
        assert _close(run(h, z["x"])[h.outputs[0]], run(g, z["x"])[g.outputs[0]]) <= TOL
        serialize.save(h, tmp_path / f"{name}_again")
        assert (tmp_path / f"{name}.json").read_bytes() == (tmp_path / f"{name}_again.json").read_bytes()
        assert (tmp_path / f"{name}.npz").read_bytes() == (tmp_path / f"{name}_again.npz").read_bytes()


def test_grouped_conv_lowering(zoo_files, session) -> None:
    z = zoo_files["grouped_conv"]
    g = session.registry.frontend_for(str(z["keras"])).load(str(z["keras"]))
    kinds = {o.name: (o.kind.value, o.attrs.get("groups")) for o in g.ops}
    assert kinds["g4"] == ("conv2d", 4)
    assert kinds["dw_as_conv"][0] == "depthwise_conv2d"


def test_nested_model_inlined(session) -> None:
    import keras

    inner = keras.Sequential([keras.layers.Dense(6, activation="relu", name="i1"),
                              keras.layers.Dense(4, name="i2")], name="inner")
    inp = keras.Input((5,))
    out = keras.layers.Dense(2, activation="softmax", name="head")(inner(inp))
    m = keras.Model(inp, out)
    from tinycc.plugins.frontends.keras import graph_from_keras_model

    g = graph_from_keras_model(m)
    assert [o.name for o in g.ops if o.kind.value == "dense"] == ["inner/i1", "inner/i2", "head"]
    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    assert _close(run(g, x)[g.outputs[0]], m.predict(x, verbose=0)) <= TOL


def test_unsupported_layer_message() -> None:
    import keras

    from tinycc.plugins.frontends.keras import graph_from_keras_model

    inp = keras.Input((8, 8, 2))
    x = keras.layers.UnitNormalization(name="un")(inp)
    with pytest.raises(UnsupportedLayerError,
                       match=r"'un' of class UnitNormalization is not supported; `tinycc ops` lists"):
        graph_from_keras_model(keras.Model(inp, x))


def test_corrupt_files(tmp_path: Path, session, zoo_files) -> None:
    fe = session.registry.frontend_for("x.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(Path(zoo_files["mlp"]["h5"]).read_bytes()[:3000])
    with pytest.raises(TinyccError, match="bad.h5"):
        fe.load(str(bad))
    rnd = tmp_path / "rnd.keras"
    rnd.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(TinyccError, match="rnd.keras"):
        fe.load(str(rnd))
    with pytest.raises(TinyccError, match="no such file"):
        fe.load(str(tmp_path / "missing.h5"))


def test_keras_ops_arithmetic_between_layers() -> None:
    """Keras 3 records `x + 3.0` etc. as operations, not layers: constants become RESCALE, tensors ADD/MUL."""
    import keras

    from tinycc.plugins.frontends.keras import graph_from_keras_model

    keras.utils.set_random_seed(2)
    inp = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(3, 1, name="c")(inp)
    a = (x + 3.0) * (1.0 / 6.0)
    b = 2.0 - x / 4.0
    c = x * np.array([0.5, -1.0, 2.0], np.float32) - 1.0
    out = keras.layers.Flatten()(a * b + c)
    m = keras.Model(inp, out)
    g = graph_from_keras_model(m)
    kinds = [o.kind.value for o in g.ops]
    assert kinds.count("rescale") == 6 and kinds.count("add") == 1 and kinds.count("mul") == 1
    x_in = np.random.default_rng(0).normal(0, 1, (3, 4, 4, 3)).astype(np.float32)
    y = m.predict(x_in, verbose=0)
    assert _close(run(g, x_in)[g.outputs[0]], y) <= TOL
    m2 = keras.Model(inp, keras.layers.Flatten()(keras.ops.exp(x)))
    with pytest.raises(UnsupportedLayerError, match=r"operation '.*' \(Exp\) is not supported"):
        graph_from_keras_model(m2)
    m3 = keras.Model(inp, keras.layers.Flatten()(1.0 / x))
    with pytest.raises(UnsupportedLayerError, match="no constant divided by a tensor"):
        graph_from_keras_model(m3)
