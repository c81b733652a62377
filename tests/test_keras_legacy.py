"""Keras 2 (tf.keras) model files: configs repaired for Keras 3, outputs equal to the original model.

There is no Keras 2 here, so Keras 2 files are made the way Keras 2 wrote them: a Keras 3 model
saved to `.h5`/`.keras`, its config rewritten with h5py/zipfile into the Keras 2 form (list-form
inbound nodes, ``batch_input_shape``, ``groups`` on DepthwiseConv2D, LeakyReLU ``alpha``,
``Policy`` dtypes, TFOpLambda for tf.* calls, keras_version 2.x). The MLPerf Tiny `.h5` files
(real Keras 2.4 / 2.14 files) are checked when ../shared is present.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinycc.errors import TinyccError, UnsupportedLayerError
from tinycc.ir.interpreter import run
from tinycc.ir.stats import totals
from tinycc.plugins.frontends.keras import KerasFrontend
from tinycc.plugins.frontends.keras_legacy import repair_config

from .conftest import mlperf_model
from .zoo import _randomise_bn

TOL = 1e-5
# parameter counts published with the MLPerf Tiny reference models (Keras count_params)
PUBLISHED = {"pretrainedResnet": 78_666, "ad01": 269_992}
INPUTS = {"pretrainedResnet": (32, 32, 3), "vww_96": (96, 96, 3), "ad01": (640,), "str_ww_ref_model": (30, 1, 40)}


# ---- writing Keras 2 forms ----------------------------------------------------------------------
def _history(arg: Any) -> list:
    return [arg["config"]["keras_history"][0], arg["config"]["keras_history"][1], arg["config"]["keras_history"][2]]


def _keras2_layer(layer: dict) -> dict:
    """One Keras 3 layer config (h5 legacy form) rewritten as Keras 2.4 wrote it."""
    conf = layer["config"]
    cls = layer["class_name"]
    if cls in ("Functional", "Sequential"):
        _keras2_model(layer)
    else:
        conf["dtype"] = "float32"
    for k, v in list(conf.items()):
        if isinstance(v, dict) and "module" in v:  # Keras 2.4 objects: class_name + config only
            conf[k] = {"class_name": v["class_name"], "config": {a: b for a, b in v["config"].items()
                                                                  if a not in ("input_axes", "output_axes")}}
    if cls == "InputLayer":
        conf["batch_input_shape"] = conf.pop("batch_shape")
        conf.pop("optional", None)
    if cls == "DepthwiseConv2D":
        conf["groups"] = 1
    if cls == "LeakyReLU":
        conf["alpha"] = conf.pop("negative_slope")
    if cls == "BatchNormalization":
        conf["axis"] = [conf["axis"]]
    nodes = []
    for node in layer.get("inbound_nodes", []):
        args = node["args"][0] if isinstance(node["args"][0], list) else [node["args"][0]]
        nodes.append([_history(a) + [{}] for a in args])
    if "inbound_nodes" in layer:
        layer["inbound_nodes"] = nodes
    return layer


def _keras2_model(model: dict) -> None:
    conf = model["config"]
    conf.pop("dtype", None)
    conf["layers"] = [_keras2_layer(l) for l in conf["layers"]]
    for key in ("input_layers", "output_layers"):
        if key in conf and conf[key] and isinstance(conf[key][0], str):
            conf[key] = [conf[key]]


def _tf_op(layer: dict, function: str, kwargs: dict, first: list | None = None) -> dict:
    """A layer turned into the TFOpLambda Keras 2 records for a tf.* call."""
    node = layer["inbound_nodes"][0]
    head = first if first is not None else node[0][:3]
    return {"class_name": "TFOpLambda", "name": layer["name"], "inbound_nodes": [[head + [{**kwargs, "name": None}]]],
            "config": {"name": layer["name"], "trainable": True, "dtype": "float32", "function": function}}


def _as_tf_ops(model: dict) -> None:
    """Rescaling/Add/ReLU layers named tfop_* become the TFOpLambda of the tf call they stand for."""
    layers = model["config"]["layers"]
    for i, l in enumerate(layers):
        name, conf = l["name"], l["config"]
        if not name.startswith("tfop_"):
            continue
        if name.startswith("tfop_add_const"):  # x + c
            layers[i] = _tf_op(l, "__operators__.add", {"y": conf["offset"]})
        elif name.startswith("tfop_rsub"):  # c - x, the constant first (as Keras 2.5+ wrote it)
            ref = l["inbound_nodes"][0][0][:3]
            layers[i] = _tf_op(l, "math.subtract", {"y": ref}, ["_CONSTANT_VALUE", -1, conf["offset"]])
        elif name.startswith("tfop_mul_const"):  # x * c
            layers[i] = _tf_op(l, "math.multiply", {"y": ["_CONSTANT_VALUE", -1, conf["scale"]]})
        elif name.startswith("tfop_add"):  # x + y, two tensors
            layers[i] = _tf_op(l, "__operators__.add", {"y": l["inbound_nodes"][0][1][:3]})
        elif name.startswith("tfop_relu6"):
            layers[i] = _tf_op(l, "nn.relu6", {})


def keras2_h5(model: Any, path: Path, version: str = "2.4.0") -> Path:
    import h5py

    model.save(path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        _keras2_model(config)
        _as_tf_ops(config)
        f.attrs["model_config"] = json.dumps(config).encode("utf-8")
        f.attrs["keras_version"] = version
    return path


# ---- models ---------------------------------------------------------------------------------
def _legacy_model() -> Any:
    """Every Keras 2-ism at once: depthwise, BN, LeakyReLU, hard-swish from tf ops, a tensor add."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(3)
    inp = keras.Input((12, 12, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="conv")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.LeakyReLU(0.1, name="leaky")(x)
    d = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    h = L.Rescaling(1.0, 3.0, name="tfop_add_const")(d)  # hard-swish as Keras 2 applications built it
    h = L.ReLU(6.0, name="tfop_relu6")(h)
    h = L.Rescaling(1.0 / 6.0, 0.0, name="tfop_mul_const")(h)
    x = L.Multiply(name="hswish")([d, h])
    y = L.Rescaling(-1.0, 0.5, name="tfop_rsub")(x)
    x = L.Add(name="tfop_add")([x, y])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(4, activation="softmax", name="head")(x)
    return _randomise_bn(keras.Model(inp, out, name="legacy"), 4)


def _sequential_model() -> Any:
    import keras

    L = keras.layers
    keras.utils.set_random_seed(5)
    inner = keras.Sequential([keras.Input((6, 6, 4)), L.DepthwiseConv2D(3, name="inner_dw"),
                              L.ReLU(name="inner_relu")], name="inner")
    inp = keras.Input((8, 8, 2))
    x = L.Conv2D(4, 3, name="c1")(inp)
    x = inner(x)
    x = L.Flatten(name="flat")(x)
    out = L.Dense(3, activation="softmax", name="head")(x)
    return keras.Model(inp, out, name="nested")


def _close(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _check_same(model: Any, path: Path, seed: int = 0) -> None:
    g = KerasFrontend().load(str(path))
    x = np.random.default_rng(seed).normal(0, 1, (6,) + tuple(model.inputs[0].shape[1:])).astype(np.float32)
    assert _close(run(g, x)[g.outputs[0]], model.predict(x, verbose=0)) <= TOL
    assert totals(g)["params"] == model.count_params()


# ---- tests ----------------------------------------------------------------------------------
def test_keras2_h5_same_outputs(tmp_path: Path) -> None:
    m = _legacy_model()
    path = keras2_h5(m, tmp_path / "legacy.h5")
    import h5py

    with h5py.File(path) as f:  # the file really is in the Keras 2 form
        text = f.attrs["model_config"]
        text = text.decode() if isinstance(text, bytes) else text
    assert '"TFOpLambda"' in text and '"groups": 1' in text and '"batch_input_shape"' in text and '"alpha"' in text
    import keras

    with pytest.raises(Exception):  # Keras 3 alone refuses it
        keras.models.load_model(path, compile=False)
    _check_same(m, path)
    g = KerasFrontend().load(str(path))
    kinds = {o.origin: o.kind.value for o in g.ops}
    assert kinds["tfop_add_const"] == "rescale" and kinds["tfop_add"] == "add" and kinds["tfop_relu6"] == "relu6"


def test_keras2_nested_sequential(tmp_path: Path) -> None:
    m = _sequential_model()
    _check_same(m, keras2_h5(m, tmp_path / "nested.h5", "2.14.0"), seed=1)


def test_keras2_sequential_without_input_layer(tmp_path: Path) -> None:
    """Keras <= 2.2 Sequential: a list config, batch_input_shape on the first layer, no InputLayer."""
    import h5py
    import keras

    L = keras.layers
    keras.utils.set_random_seed(6)
    m = keras.Sequential([keras.Input((10,)), L.Dense(8, activation="relu", name="d1"),
                          L.Dense(3, activation="softmax", name="d2")], name="seq")
    path = tmp_path / "seq.h5"
    m.save(path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        _keras2_model(config)
        layers = [l for l in config["config"]["layers"] if l["class_name"] != "InputLayer"]
        layers[0]["config"]["batch_input_shape"] = [None, 10]
        config["config"] = layers
        f.attrs["model_config"] = json.dumps(config).encode("utf-8")
        f.attrs["keras_version"] = "2.2.4"
    _check_same(m, path)


def test_keras2_dot_keras(tmp_path: Path) -> None:
    """A `.keras` zip with the Keras 2.13-2.15 markers: engine module path, groups=1, alpha, version 2.x."""
    m = _legacy_model()
    src, dst = tmp_path / "k3.keras", tmp_path / "k2.keras"
    m.save(src)
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for name in z.namelist():
            data = z.read(name)
            if name == "config.json":
                config = json.loads(data)
                config["module"] = "keras.src.engine.functional"
                for l in config["config"]["layers"]:
                    if l["class_name"] == "DepthwiseConv2D":
                        l["config"]["groups"] = 1
                    if l["class_name"] == "LeakyReLU":
                        l["config"]["alpha"] = l["config"].pop("negative_slope")
                data = json.dumps(config).encode()
            if name == "metadata.json":
                meta = json.loads(data)
                meta["keras_version"] = "2.15.0"
                data = json.dumps(meta).encode()
            out.writestr(name, data)
    _check_same(m, dst)


def test_repair_config_generic() -> None:
    cfg = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "name": "in", "inbound_nodes": [],
         "config": {"batch_input_shape": [None, 4, 4, 3], "ragged": False, "sparse": False, "name": "in"}},
        {"class_name": "SeparableConv2D", "name": "sep", "inbound_nodes": [[["in", 0, 0, {}]]],
         "config": {"name": "sep", "filters": 2, "kernel_size": [3, 3], "groups": 1,
                    "dtype": {"class_name": "Policy", "config": {"name": "mixed_float16"}},
                    "depthwise_initializer": {"class_name": "NoSuchInit", "config": {}},
                    "pointwise_regularizer": {"class_name": "NoSuchReg", "config": {}}}},
        {"class_name": "BatchNormalization", "name": "bn", "inbound_nodes": [[["sep", 0, 0, {}]]],
         "config": {"name": "bn", "axis": [3], "fused": True, "virtual_batch_size": None}},
    ], "input_layers": [["in", 0, 0]], "output_layers": [["bn", 0, 0]]}}
    fixed, changes = repair_config(cfg)
    layers = {l["name"]: l["config"] for l in fixed["config"]["layers"]}
    assert layers["in"]["batch_shape"] == [None, 4, 4, 3] and "batch_input_shape" not in layers["in"]
    assert "groups" not in layers["sep"] and layers["sep"]["dtype"] == "float32"
    assert layers["sep"]["depthwise_initializer"] == "zeros" and layers["sep"]["pointwise_regularizer"] is None
    assert "fused" not in layers["bn"] and "virtual_batch_size" not in layers["bn"]
    assert cfg["config"]["layers"][1]["config"]["groups"] == 1  # the input is not modified
    assert len(changes) >= 6
    import keras

    from tinycc.plugins.frontends.keras_legacy import _accepted

    assert "groups" not in _accepted(keras.layers.DepthwiseConv2D)  # the repair is needed at all


@pytest.mark.parametrize("layer, message", [
    ({"class_name": "DepthwiseConv2D", "config": {"name": "dw2", "kernel_size": [3, 3], "groups": 2}},
     "'dw2' (DepthwiseConv2D) has the Keras 2 argument groups=2"),
    ({"class_name": "TFOpLambda", "config": {"name": "tf.math.reduce_max", "function": "math.reduce_max"}},
     "'tf.math.reduce_max' calls tf.math.reduce_max"),
    ({"class_name": "SlicingOpLambda", "config": {"name": "tf.__operators__.getitem",
                                                  "function": "__operators__.getitem"}},
     "'tf.__operators__.getitem' calls tf.__operators__.getitem"),
    ({"class_name": "Lambda", "config": {"name": "my_lambda", "function": ["code", None, None]}},
     "'my_lambda' (Lambda)"),
])
def test_unrepairable_named(layer: dict, message: str) -> None:
    layer = {**layer, "name": layer["config"]["name"], "inbound_nodes": [[["in", 0, 0, {"axis": 1}]]]}
    cfg = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "name": "in", "config": {"batch_input_shape": [None, 4, 4, 3], "name": "in"},
         "inbound_nodes": []}, layer]}}
    with pytest.raises(UnsupportedLayerError, match=re.escape(message)):
        repair_config(cfg)


def test_cli_one_line_error_names_file_and_layer(tmp_path: Path) -> None:
    import h5py

    m = _legacy_model()
    path = keras2_h5(m, tmp_path / "bad.h5")
    with h5py.File(path, "r+") as f:  # a tf function with no Keras 3 layer
        config = json.loads(f.attrs["model_config"])
        for l in config["config"]["layers"]:
            if l["class_name"] == "TFOpLambda" and l["config"]["function"] == "nn.relu6":
                l["config"]["function"] = "math.cumsum"
        f.attrs["model_config"] = json.dumps(config).encode("utf-8")
    r = subprocess.run([sys.executable, "-m", "tinycc.cli", "inspect", str(path)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("tinycc:")]
    assert len(lines) == 1 and "bad.h5" in lines[0] and "tfop_relu6" in lines[0] and "math.cumsum" in lines[0]


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_mlperf_tiny_h5(name: str, tmp_path: Path) -> None:
    """The real Keras 2 files: load, float IR == the repaired Keras model, parameter counts."""
    path = mlperf_model(f"{name}.h5")
    import keras

    from tinycc.plugins.frontends.keras_legacy import repaired_copy

    model = keras.models.load_model(repaired_copy(path, tmp_path) or path, compile=False)
    g = KerasFrontend().load(str(path))
    x = np.random.default_rng(0).normal(0, 1, (4,) + INPUTS[name]).astype(np.float32)
    assert _close(run(g, x)[g.outputs[0]], model.predict(x, verbose=0)) <= TOL
    assert totals(g)["params"] == model.count_params() == PUBLISHED.get(name, model.count_params())


def test_unreadable_keras3_layer_named(tmp_path: Path) -> None:
    """A Keras 3 file with an argument Keras rejects: the error names the layer, not its whole config."""
    import h5py
    import keras

    inp = keras.Input((8, 8, 3))
    m = keras.Model(inp, keras.layers.DepthwiseConv2D(3, name="mydw")(inp))
    path = tmp_path / "bad3.h5"
    m.save(path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        config["config"]["layers"][1]["config"]["bogus"] = 5
        f.attrs["model_config"] = json.dumps(config).encode("utf-8")
    with pytest.raises(TinyccError, match=r"bad3.h5: cannot read layer 'mydw' \(DepthwiseConv2D\): .*'bogus': 5"):
        KerasFrontend().load(str(path))
