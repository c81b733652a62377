"""Reference models. ``cnas_cifar10()`` is the reference thesis's CNAS model, layer by layer.

The layer sequence below is the table of ``shared/reference/cnas-model.md`` (2,154,538
parameters, 2,142,602 trainable), written in the same notation and parsed into a Keras
functional model. Its quirks are kept on purpose: depthwise convolutions are grouped
``Conv2D(groups=C)``, and each squeeze-and-excitation block multiplies the excitation with
the *pooled* vector, so every tensor after the first SE block is 1x1 spatially.
"""
from __future__ import annotations

from typing import Any

# Notation: convKxK sS F [gN] [nobias] | bn | relu | swish | hard_sigmoid | seN=gap | mul seN |
# gap | flatten | dropoutR | dense10
CNAS_LAYERS = """
conv3x3 s2 16 nobias, bn, swish, conv3x3 s1 16 g16 nobias, bn, relu, conv1x1 s1 16 nobias, bn,
conv1x1 s1 48 nobias, bn, relu, conv3x3 s2 48 g48 nobias, bn, relu, conv1x1 s1 24 nobias, bn,
conv1x1 s1 72 nobias, bn, relu, conv3x3 s1 72 g72 nobias, bn, relu, conv1x1 s1 24 nobias, bn,
conv1x1 s1 72 nobias, bn, relu, conv3x3 s2 72 g72 nobias, bn, relu, se1=gap, conv1x1 s1 24, relu,
conv1x1 s1 72, hard_sigmoid, mul se1, conv1x1 s1 40 nobias, bn,
conv1x1 s1 120 nobias, bn, relu, conv3x3 s1 120 g120 nobias, bn, relu, se2=gap, conv1x1 s1 32, relu,
conv1x1 s1 120, hard_sigmoid, mul se2, conv1x1 s1 40 nobias, bn,
conv1x1 s1 120 nobias, bn, swish, conv3x3 s2 120 g120 nobias, bn, swish, conv1x1 s1 80 nobias, bn,
conv1x1 s1 240 nobias, bn, swish, conv3x3 s1 240 g240 nobias, bn, swish, conv1x1 s1 80 nobias, bn,
conv1x1 s1 240 nobias, bn, swish, conv3x3 s1 240 g240 nobias, bn, swish, se3=gap, conv1x1 s1 64, relu,
conv1x1 s1 240, hard_sigmoid, mul se3, conv1x1 s1 112 nobias, bn,
conv1x1 s1 336 nobias, bn, swish, conv3x3 s1 336 g336 nobias, bn, swish, se4=gap, conv1x1 s1 88, relu,
conv1x1 s1 336, hard_sigmoid, mul se4, conv1x1 s1 112 nobias, bn,
conv1x1 s1 336 nobias, bn, swish, conv3x3 s2 336 g336 nobias, bn, swish, se5=gap, conv1x1 s1 88, relu,
conv1x1 s1 336, hard_sigmoid, mul se5, conv1x1 s1 160 nobias, bn,
conv1x1 s1 480 nobias, bn, swish, conv3x3 s1 480 g480 nobias, bn, swish, se6=gap, conv1x1 s1 120, relu,
conv1x1 s1 480, hard_sigmoid, mul se6, conv1x1 s1 160 nobias, bn,
conv1x1 s1 960 nobias, bn, swish, gap, conv1x1 s1 1280 nobias, swish, flatten, dropout0.2, dense10
"""

CNAS_PARAMS = 2_154_538
CNAS_TRAINABLE = 2_142_602


def cnas_tokens() -> list[str]:
    return [t.strip() for t in CNAS_LAYERS.replace("\n", " ").split(",") if t.strip()]


def cnas_cifar10(input_shape: tuple[int, int, int] = (32, 32, 3), classes: int = 10) -> Any:
    """Build the reference CNAS model (untrained) as a Keras functional model."""
    import keras
    from keras import layers, regularizers

    inp = keras.Input(input_shape, name="input")
    x = inp
    saved: dict[str, Any] = {}
    counts: dict[str, int] = {}

    def name(kind: str) -> str:
        counts[kind] = counts.get(kind, 0) + 1
        return f"{kind}_{counts[kind]}"

    for tok in cnas_tokens():
        parts = tok.split()
        head = parts[0]
        if head.startswith("conv"):
            k = int(head[4:].split("x")[0])
            stride = int(parts[1][1:])
            filters = int(parts[2])
            groups = next((int(p[1:]) for p in parts[3:] if p.startswith("g")), 1)
            x = layers.Conv2D(filters, k, strides=stride, padding="same", groups=groups,
                              use_bias="nobias" not in parts, name=name("conv"))(x)
        elif head == "bn":
            x = layers.BatchNormalization(momentum=0.1, epsilon=1e-5, name=name("bn"))(x)
        elif head in ("relu", "swish", "hard_sigmoid"):
            x = layers.Activation(head, name=name(head))(x)
        elif "=gap" in head:
            x = layers.GlobalAveragePooling2D(keepdims=True, name=name("gap"))(x)
            saved[head.split("=")[0]] = x
        elif head == "gap":
            x = layers.GlobalAveragePooling2D(keepdims=True, name=name("gap"))(x)
        elif head == "mul":
            x = layers.Multiply(name=name("mul"))([x, saved[parts[1]]])
        elif head == "flatten":
            x = layers.Flatten(name="flatten")(x)
        elif head.startswith("dropout"):
            x = layers.Dropout(float(head[7:]), name="dropout")(x)
        elif head.startswith("dense"):
            x = layers.Dense(classes, activation="softmax", name="dense",
                             kernel_regularizer=regularizers.l2(0.025),
                             bias_regularizer=regularizers.l2(0.01))(x)
        else:  # pragma: no cover - the table above is fixed
            raise ValueError(f"unknown CNAS token {tok!r}")
    return keras.Model(inp, x, name="cnas_cifar10")
