"""The search space: a MobileNetV3-like network (as the thesis's CNAS supernet) plus deployment knobs.

An architecture is a flat dict of plain values (what Optuna stores and Ray ships):
- ``downsample`` 1|2: input resolution (an average pooling in front of the stem halves it on the device),
- ``stem_width``, ``stem_stride``, ``stem_act``,
- ``stages`` 1..4, per stage ``sI_blocks`` 1..3 and ``sI_width``; per block ``sI_bJ_exp`` (expansion),
  ``sI_bJ_kernel`` 3|5, ``sI_bJ_se`` (squeeze-and-excitation), ``sI_bJ_act`` relu|hard_swish
  (inverted residual blocks; the first block of each stage strides 2, a residual Add where shapes allow),
- ``head_conv``: width of a last 1x1 convolution before the global pooling (0: none),
- ``hidden``: width of a Dense layer between the pooled features and the output (0: none),
- ``cut`` features|hidden: where the trainable classifier starts (``features``: after the pooling, so
  the hidden layer trains on the device; ``hidden``: after the hidden layer, which then runs in int8).
Every parameter is always suggested (a static space, as NSGA-II wants); the ones an architecture does
not use (stage 4 of a 2-stage net, ``cut`` without a hidden layer) are ignored by ``build_model``.
"""
from __future__ import annotations

from typing import Any

MAX_STAGES, MAX_BLOCKS = 4, 3
STEM_WIDTHS = (8, 12, 16, 24)
STAGE_WIDTHS = (8, 16, 24, 32, 48, 64, 96)
EXPANSIONS = (1, 2, 3, 4, 6)
HEAD_CONVS = (0, 64, 128, 256)
HIDDEN = (0, 32, 64, 128)
ACTS = ("relu", "hard_swish")
CUT_LAYER = {"features": "features", "hidden": "hidden"}  # cut knob -> Keras layer name given to --cut


def suggest(trial: Any) -> dict[str, Any]:
    """Draw one architecture from an Optuna trial (define-by-run, always the same parameter names)."""
    a: dict[str, Any] = {
        "downsample": trial.suggest_categorical("downsample", [1, 2]),
        "stem_width": trial.suggest_categorical("stem_width", list(STEM_WIDTHS)),
        "stem_stride": trial.suggest_categorical("stem_stride", [1, 2]),
        "stem_act": trial.suggest_categorical("stem_act", list(ACTS)),
        "stages": trial.suggest_int("stages", 1, MAX_STAGES),
    }
    for i in range(1, MAX_STAGES + 1):
        a[f"s{i}_blocks"] = trial.suggest_int(f"s{i}_blocks", 1, MAX_BLOCKS)
        a[f"s{i}_width"] = trial.suggest_categorical(f"s{i}_width", list(STAGE_WIDTHS))
        for j in range(1, MAX_BLOCKS + 1):
            p = f"s{i}_b{j}_"
            a[p + "exp"] = trial.suggest_categorical(p + "exp", list(EXPANSIONS))
            a[p + "kernel"] = trial.suggest_categorical(p + "kernel", [3, 5])
            a[p + "se"] = trial.suggest_categorical(p + "se", [False, True])
            a[p + "act"] = trial.suggest_categorical(p + "act", list(ACTS))
    a["head_conv"] = trial.suggest_categorical("head_conv", list(HEAD_CONVS))
    a["hidden"] = trial.suggest_categorical("hidden", list(HIDDEN))
    a["cut"] = trial.suggest_categorical("cut", list(CUT_LAYER))
    return a


def effective_cut(arch: dict[str, Any]) -> str:
    """The Keras layer name after which the trainable classifier starts."""
    return CUT_LAYER["hidden"] if arch["hidden"] and arch["cut"] == "hidden" else CUT_LAYER["features"]


def describe(arch: dict[str, Any]) -> str:
    """A short summary, e.g. ``/1 stem16s2 [24x2 e3k5se,e2k3; 48x1 e6k3hs] head0 hidden64 cut=features``."""
    stages = []
    for i in range(1, arch["stages"] + 1):
        blocks = []
        for j in range(1, arch[f"s{i}_blocks"] + 1):
            p = f"s{i}_b{j}_"
            blocks.append(f"e{arch[p + 'exp']}k{arch[p + 'kernel']}{'se' if arch[p + 'se'] else ''}"
                          f"{'hs' if arch[p + 'act'] == 'hard_swish' else ''}")
        stages.append(f"{arch[f's{i}_width']}x{arch[f's{i}_blocks']} " + ",".join(blocks))
    return (f"/{arch['downsample']} stem{arch['stem_width']}s{arch['stem_stride']} [{'; '.join(stages)}] "
            f"head{arch['head_conv']} hidden{arch['hidden']} cut={effective_cut(arch)}")


def build_model(arch: dict[str, Any], input_shape: tuple[int, ...], n_classes: int, scale: float,
                seed: int = 0) -> Any:
    """The Keras model of ``arch`` (inputs as stored, multiplied by ``scale`` in a Rescaling layer)."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(seed)
    inp = keras.Input(input_shape, name="input")
    x = L.Rescaling(scale, name="scale")(inp)
    if arch["downsample"] > 1 and min(input_shape[:2]) >= 2 * arch["downsample"]:
        x = L.AveragePooling2D(arch["downsample"], name="downsample")(x)
    x = _conv(L, x, arch["stem_width"], 3, arch["stem_stride"], arch["stem_act"], "stem")
    for i in range(1, arch["stages"] + 1):
        for j in range(1, arch[f"s{i}_blocks"] + 1):
            p = f"s{i}_b{j}_"
            x = _block(L, x, arch[f"s{i}_width"], arch[p + "exp"], arch[p + "kernel"], 2 if j == 1 else 1,
                       arch[p + "se"], arch[p + "act"], p[:-1])
    if arch["head_conv"]:
        x = _conv(L, x, arch["head_conv"], 1, 1, "hard_swish", "head")
    x = L.GlobalAveragePooling2D(name=CUT_LAYER["features"])(x)
    if arch["hidden"]:
        x = L.Dense(arch["hidden"], activation="relu", name=CUT_LAYER["hidden"])(x)
    out = L.Dense(n_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inp, out, name="search")


def _conv(L: Any, x: Any, width: int, kernel: int, stride: int, act: str, name: str) -> Any:
    x = L.Conv2D(width, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
    x = L.BatchNormalization(name=f"{name}_bn")(x)
    return L.Activation(act, name=f"{name}_act")(x) if act != "linear" else x


def _block(L: Any, x: Any, width: int, exp: int, kernel: int, stride: int, se: bool, act: str, name: str) -> Any:
    """MobileNetV3 inverted residual: 1x1 expand, kxk depthwise, [SE], 1x1 project, [residual add]."""
    c_in = int(x.shape[-1])
    y = _conv(L, x, c_in * exp, 1, 1, act, f"{name}_expand") if exp > 1 else x
    y = L.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = L.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = L.Activation(act, name=f"{name}_dw_act")(y)
    if se:
        c = int(y.shape[-1])
        s = L.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(y)
        s = L.Conv2D(max(c // 4, 4), 1, activation="relu", name=f"{name}_se_reduce")(s)
        s = L.Conv2D(c, 1, activation="hard_sigmoid", name=f"{name}_se_expand")(s)
        y = L.Multiply(name=f"{name}_se_mul")([y, s])
    y = _conv(L, y, width, 1, 1, "linear", f"{name}_project")
    if stride == 1 and c_in == width:
        y = L.Add(name=f"{name}_add")([x, y])
    return y
