"""Model configs written by Keras 2 (tf.keras) repaired so that Keras 3 can build them.

Keras 3 reads Keras 2 `.h5`/`.keras` files through its legacy loader but rejects arguments and
classes that Keras 2 wrote and Keras 3 no longer has. ``repair_config`` rewrites a model config
(the h5 ``model_config`` attribute or a `.keras` ``config.json``) generically, layer by layer,
nested models included:

- arguments a Keras 3 layer does not take (found from its ``__init__`` signatures) are dropped
  when their value is inert (None, False, ``groups=1`` of DepthwiseConv2D/SeparableConv2D,
  BatchNormalization's ``fused``); any other value is refused naming the layer and argument;
- ``batch_input_shape`` becomes ``batch_shape`` (InputLayer) or ``input_shape`` (other layers);
  LeakyReLU ``alpha`` becomes ``negative_slope``; an old list-form Sequential config gets a dict;
- dtype policies (``{"class_name": "Policy", ...}``) become their name; mixed-precision policies
  become ``float32`` (tinycc's float IR; the stored variables are float32);
- initializers, regularizers and constraints that Keras 3 cannot build are replaced by neutral
  ones (they play no part in inference: the weights come from the file);
- ``TFOpLambda`` (tf.* calls on Keras tensors) become Keras 3 layers: ``x + c``, ``x - c``,
  ``c - x``, ``x * c``, ``x / c`` with a constant ``c`` -> Rescaling; add/subtract/multiply of
  two tensors -> Add/Subtract/Multiply; relu, relu6, sigmoid, tanh, swish, softmax ->
  Activation; reshape -> Reshape; reduce_mean over H, W -> GlobalAveragePooling2D; concat ->
  Concatenate. Other tf functions, ``SlicingOpLambda`` and ``Lambda`` (Python code) are refused
  by layer name;
- `.keras` module paths of Keras 2 (``keras.engine.*``, ``keras.src.engine.*``) point to Keras 3's.
"""
from __future__ import annotations

import copy
import inspect
import json
import logging
import shutil
import zipfile
from pathlib import Path
from typing import Any

from ...errors import TinyccError, UnsupportedLayerError

log = logging.getLogger("tinycc.keras")

_MODELS = ("Functional", "Model", "Sequential")
_LAYER_KWARGS = {"input_dim", "input_shape", "batch_input_shape", "batch_size", "batch_shape"}
_POPPED_KWARGS = {"implementation", "input_length", "vocabulary_size", "rms_scaling"}  # taken from **kwargs
_INERT = {("groups", 1)}
_INERT_KEYS = {"fused"}  # an implementation choice, not a semantic one
_CONSTANT = "_CONSTANT_VALUE"
_ENGINE = {"Functional": "keras.src.models.functional", "Model": "keras.src.models.model",
           "Sequential": "keras.src.models.sequential"}


def is_keras2(version: Any) -> bool:
    """True for files written by Keras 1/2 (tf.keras); the attribute may be bytes or absent."""
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    if not version:
        return True
    return str(version).split(".")[0] in ("1", "2")


def repair_config(config: dict) -> tuple[dict, list[str]]:
    """A repaired copy of a Keras 2 model config and the list of changes made."""
    cfg = copy.deepcopy(config)
    changes: list[str] = []
    _repair_model(cfg, changes, "")
    return cfg, changes


def _repair_model(m: dict, changes: list[str], prefix: str) -> None:
    cls = m.get("class_name")
    if cls in _ENGINE and "engine" in str(m.get("module", "")):
        m["module"] = _ENGINE[cls]
        changes.append(f"{prefix}{cls}: module {_ENGINE[cls]}")
    conf = m.get("config")
    if cls == "Sequential" and isinstance(conf, list):  # Keras <= 2.2: the config is the layer list
        m["config"] = conf = {"name": m.get("name") or "sequential", "layers": conf}
        changes.append(f"{prefix}Sequential: list config")
    if not isinstance(conf, dict):
        return
    layers = conf.get("layers") or []
    names = {l.get("name") or (l.get("config") or {}).get("name") for l in layers if isinstance(l, dict)}
    for i, layer in enumerate(layers):
        if isinstance(layer, dict):
            layers[i] = _repair_layer(layer, changes, prefix, names)


def _repair_layer(layer: dict, changes: list[str], prefix: str, names: set) -> dict:
    cls = layer.get("class_name", "")
    conf = layer.get("config")
    name = f"{prefix}{layer.get('name') or (conf or {}).get('name')}"
    if cls in _MODELS:
        _repair_model(layer, changes, f"{name}/")
        return layer
    if cls == "Lambda":
        raise UnsupportedLayerError(f"layer {name!r} (Lambda) holds Python code, which cannot be imported safely; "
                                    "replace it with built-in layers")
    if cls in ("TFOpLambda", "SlicingOpLambda"):
        layer = _op_lambda(layer, name, names)
        changes.append(f"{name}: {cls} -> {layer['class_name']}")
        cls, conf = layer["class_name"], layer["config"]
    if not isinstance(conf, dict):
        return layer
    _repair_args(cls, conf, name, changes)
    return layer


def _keras3_class(cls: str) -> Any:
    import keras

    obj = getattr(keras.layers, cls, None)
    return obj if isinstance(obj, type) else None


def _accepted(klass: type) -> set[str]:
    """Keyword arguments a Keras 3 layer class takes (its __init__ chain while it passes **kwargs on)."""
    names = set(_LAYER_KWARGS | _POPPED_KWARGS)
    for c in klass.__mro__:
        init = c.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def _repair_args(cls: str, conf: dict, name: str, changes: list[str]) -> None:
    if "batch_input_shape" in conf:
        shape = conf.pop("batch_input_shape")
        if cls == "InputLayer":
            conf["batch_shape"] = shape
        elif shape is not None:
            conf["input_shape"] = shape[1:]
    if cls == "LeakyReLU" and "alpha" in conf:
        conf["negative_slope"] = conf.pop("alpha")
    if isinstance(conf.get("dtype"), dict):
        policy = str((conf["dtype"].get("config") or {}).get("name", "float32"))
        conf["dtype"] = "float32" if policy.startswith("mixed_") else policy
        changes.append(f"{name}: dtype policy {policy} -> {conf['dtype']}")
    for key in [k for k in conf if k.endswith(("_initializer", "_regularizer", "_constraint"))]:
        if not _buildable(key, conf[key]):
            conf[key] = "zeros" if key.endswith("_initializer") else None
            changes.append(f"{name}: {key} replaced (not used for inference)")
    klass = _keras3_class(cls)
    if klass is None:  # unknown to Keras 3: its loader reports the class by name
        return
    accepted = _accepted(klass)
    for key in [k for k in conf if k not in accepted]:
        value = conf[key]
        if value is None or value is False or (key, value) in _INERT or key in _INERT_KEYS:
            del conf[key]
            changes.append(f"{name}: dropped Keras 2 argument {key}={value!r}")
        else:
            raise UnsupportedLayerError(f"layer {name!r} ({cls}) has the Keras 2 argument {key}={value!r}, "
                                        "which Keras 3 does not support")


def _buildable(key: str, value: Any) -> bool:
    if value is None or isinstance(value, str) and key.endswith("_initializer"):
        return True
    import keras

    mod = keras.initializers if key.endswith("_initializer") else (
        keras.regularizers if key.endswith("_regularizer") else keras.constraints)
    try:
        mod.get(copy.deepcopy(value))
        return True
    except Exception:  # noqa: BLE001 - any failure means Keras 3 cannot build it
        return False


# ---- TFOpLambda: tf.* calls recorded by Keras 2's functional API --------------------------------
_UNARY = {"nn.relu": "relu", "nn.relu6": "relu6", "math.sigmoid": "sigmoid", "nn.sigmoid": "sigmoid",
          "math.tanh": "tanh", "nn.tanh": "tanh", "nn.swish": "swish", "nn.silu": "swish",
          "nn.softmax": "softmax", "math.softmax": "softmax"}
_BINARY = {"__operators__.add": "Add", "math.add": "Add", "math.subtract": "Subtract",
           "math.multiply": "Multiply", "math.truediv": "divide", "math.divide": "divide"}


def _is_ref(v: Any, names: set) -> bool:
    return isinstance(v, list) and len(v) in (3, 4) and isinstance(v[0], str) and v[0] in names \
        and all(isinstance(i, int) for i in v[1:3])


def _constant(v: Any) -> float | list | None:
    if isinstance(v, list) and len(v) >= 3 and v[0] == _CONSTANT:
        v = v[2]
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return [float(x) for x in v]
    return None


def _op_lambda(layer: dict, name: str, names: set) -> dict:
    conf = layer.get("config") or {}
    fn = str(conf.get("function", ""))
    nodes = layer.get("inbound_nodes") or []
    if len(nodes) != 1 or not isinstance(nodes[0], list) or not nodes[0]:
        raise UnsupportedLayerError(f"layer {name!r} (tf.{fn}) is called more than once or has no input; "
                                    "only single calls of tf functions are imported")
    node = nodes[0]
    kwargs = dict(node[0][3]) if len(node[0]) > 3 and isinstance(node[0][3], dict) else {}
    kwargs.pop("name", None)
    first = [[r[0], r[1], r[2], {}] if _is_ref(r, names) else r for r in node]
    base = {"name": conf.get("name", layer.get("name")), "trainable": conf.get("trainable", True),
            "dtype": conf.get("dtype", "float32")}

    def make(cls: str, extra: dict, inbound: list) -> dict:
        return {"class_name": cls, "config": {**base, **extra}, "name": layer.get("name"), "inbound_nodes": [inbound]}

    refs = [r for r in first if _is_ref(r, names)]
    if fn in _UNARY and len(refs) == 1 and len(first) == 1 and not kwargs.keys() - {"axis"} \
            and kwargs.get("axis", -1) in (-1, None):
        return make("Activation", {"activation": _UNARY[fn]}, refs)
    if fn in _BINARY and len(first) == 1:
        return _binary(fn, first[0], kwargs, names, make, name)
    if fn == "reshape" and len(refs) == 1 and isinstance(kwargs.get("shape"), list) and \
            kwargs["shape"] and kwargs["shape"][0] in (-1, None, 1) and len(kwargs) == 1:
        return make("Reshape", {"target_shape": kwargs["shape"][1:]}, refs)
    if fn == "math.reduce_mean" and len(refs) == 1 and sorted(_axes(kwargs.get("axis"))) in ([1, 2], [-3, -2]):
        return make("GlobalAveragePooling2D", {"keepdims": bool(kwargs.get("keepdims", False)),
                                               "data_format": "channels_last"}, refs)
    if fn == "concat" and len(refs) == len(first) > 1 and isinstance(kwargs.get("axis"), int):
        return make("Concatenate", {"axis": kwargs["axis"]}, refs)
    raise UnsupportedLayerError(f"layer {name!r} calls tf.{fn or layer.get('class_name')} with arguments "
                                f"{json.dumps(kwargs)[:80]}, which has no supported Keras 3 layer")


def convert_op_lambda(layer: dict, name: str, names: set) -> dict:
    """A Keras 2 ``TFOpLambda`` layer config as the Keras 3 layer config it stands for (see the module doc)."""
    return _op_lambda(layer, name, names)


def _axes(v: Any) -> list[int]:
    return [v] if isinstance(v, int) else list(v) if isinstance(v, list) else []


def _binary(fn: str, x: list, kwargs: dict, names: set, make: Any, name: str) -> dict:
    y = kwargs.get("y")
    op = _BINARY[fn]
    if set(kwargs) - {"y"}:
        raise UnsupportedLayerError(f"layer {name!r} calls tf.{fn} with arguments {sorted(kwargs)}")
    if _is_ref(x, names) and _is_ref(y, names):
        if op == "divide":
            raise UnsupportedLayerError(f"layer {name!r} divides two tensors (tf.{fn}), which is not supported")
        return make(op, {}, [[x[0], x[1], x[2], {}], [y[0], y[1], y[2], {}]])
    tensor, const, const_first = (x, _constant(y), False) if _is_ref(x, names) else (y, _constant(x), True)
    if const is None or not _is_ref(tensor, names):
        raise UnsupportedLayerError(f"layer {name!r} calls tf.{fn} on arguments that are neither tensors nor "
                                    "constants")
    ref = [[tensor[0], tensor[1], tensor[2], {}]]
    neg = [-c for c in const] if isinstance(const, list) else -const
    if op == "Add":
        scale, offset = 1.0, const
    elif op == "Subtract":
        scale, offset = (-1.0, const) if const_first else (1.0, neg)
    elif op == "Multiply":
        scale, offset = const, 0.0
    elif const_first:
        raise UnsupportedLayerError(f"layer {name!r} divides a constant by a tensor (tf.{fn}), which is not supported")
    else:
        scale = [1.0 / c for c in const] if isinstance(const, list) else 1.0 / const
        offset = 0.0
    return make("Rescaling", {"scale": scale, "offset": offset}, ref)


# ---- loading ---------------------------------------------------------------------------------
def repaired_copy(path: Path, workdir: Path) -> Path | None:
    """A copy of a Keras 2 `.h5`/`.keras` file with its config repaired, or None if none is needed."""
    if path.suffix.lower() == ".keras":
        return _repaired_zip(path, workdir)
    import h5py

    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
        if raw is None or not is_keras2(f.attrs.get("keras_version")):
            return None
        config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    fixed, changes = repair_config(config)
    if not changes:
        return None
    log.info("%s: repaired the Keras 2 config (%s)", path.name, "; ".join(changes[:8]))
    out = workdir / path.name
    shutil.copyfile(path, out)
    with h5py.File(out, "r+") as f:
        f.attrs["model_config"] = json.dumps(fixed).encode("utf-8")
    return out


MAX_ZIP_BYTES = 512 * 1024 ** 2  # a .keras model for a microcontroller, unpacked: far below this
MAX_JSON_BYTES = 16 * 1024 ** 2  # its config.json / metadata.json


def check_zip_sizes(path: Path) -> None:
    """Refuse a `.keras` archive whose members declare more than MAX_ZIP_BYTES (or JSON members more than
    MAX_JSON_BYTES) unpacked, before anything is decompressed. Python's zipfile never unpacks a member beyond its
    declared size (a lying header ends in a CRC error), so the declared sizes bound the memory of every reader."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise TinyccError(f"{path}: not a readable zip archive ({e})") from None
    total = sum(i.file_size for i in infos)
    if total > MAX_ZIP_BYTES:
        raise TinyccError(f"{path}: its {len(infos)} members unpack to {total:,} bytes, above the limit of "
                          f"{MAX_ZIP_BYTES:,} for a model (a zip bomb, or not a model for a microcontroller)")
    for i in infos:
        if i.filename.endswith(".json") and i.file_size > MAX_JSON_BYTES:
            raise TinyccError(f"{path}: {i.filename} unpacks to {i.file_size:,} bytes, above the limit of "
                              f"{MAX_JSON_BYTES:,} for a model's configuration")


def _repaired_zip(path: Path, workdir: Path) -> Path | None:
    check_zip_sizes(path)
    with zipfile.ZipFile(path) as z:
        members = z.namelist()
        if "config.json" not in members:
            return None
        meta = json.loads(z.read("metadata.json")) if "metadata.json" in members else {}
        if not is_keras2(meta.get("keras_version")):
            return None
        fixed, changes = repair_config(json.loads(z.read("config.json")))
        if not changes:
            return None
        log.info("%s: repaired the Keras 2 config (%s)", path.name, "; ".join(changes[:8]))
        out = workdir / path.name
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            for m in members:
                if m == "config.json":
                    dst.writestr(m, json.dumps(fixed))
                    continue
                with z.open(m) as src, dst.open(m, "w", force_zip64=True) as copy_:  # streamed, not held whole
                    shutil.copyfileobj(src, copy_, 1 << 20)
    return out
