"""A zoo of published-style models at microcontroller size (Keras functional, fixed seeds, RANDOM weights: the
benchmark measures what compiles and what it costs, not accuracy).

Images: MobileNetV1 0.25 at 96x96 (keras.applications, its 1x1-convolution head), a ResNet-8 like MLPerf Tiny's,
a SqueezeNet-style net of Fire modules (concatenation). Audio: DS-CNN keyword spotting on 49x10 MFCCs, a
TC-ResNet-style 1D-convolution model on 98x40 log-mel frames. Sensors: a 1D-convolution activity recognizer on
128x3 accelerometer windows, an MLP autoencoder like MLPerf Tiny's ad01, a GRU and a SimpleRNN classifier; an
LSTM keyword spotter. The recurrent layers use ``unroll=True``: with Keras 3 the TFLite converter converts them only
unrolled (plain per-step operators; tests/data/keras-lstm/README.md). Decoders:
a small U-Net (Conv2DTranspose, skip concatenations) and an upsampling decoder (UpSampling2D, Resizing).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry: how to build it, its domain, its input range and whether it ends in a classifier."""

    name: str
    domain: str
    build: Callable[[], Any]
    input_range: tuple[float, float] = (-1.0, 1.0)
    classifier: bool = True  # ends in Dense + softmax: compiled for on-device learning, else inference-only
    activations: str = "int8"  # the converter's full-integer file: "int8", or "int16" (TFLite's 16x8)
    recurrent: bool = False  # has a Keras LSTM/GRU/SimpleRNN layer: its .h5 is compiled for tflm too


def _layers() -> Any:
    from keras import layers

    return layers


def mobilenet_v1() -> Any:
    """MobileNetV1, width 0.25, 96x96x3, 2 classes (as the Visual Wake Words model): keras.applications."""
    import keras

    keras.utils.set_random_seed(1)
    return keras.applications.MobileNet(input_shape=(96, 96, 3), alpha=0.25, weights=None, classes=2,
                                        dropout=0.0, name="mobilenet_v1_025")


def resnet8() -> Any:
    """ResNet-8 (16/32/64 filters, three residual stacks) on 32x32x3, 10 classes, as MLPerf Tiny's."""
    import keras

    L = _layers()
    keras.utils.set_random_seed(2)
    inp = keras.Input((32, 32, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(inp)))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        y = L.ReLU()(L.BatchNormalization()(L.Conv2D(filters, 3, strides=stride, padding="same")(x)))
        y = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same")(y))
        if stride != 1:
            x = L.Conv2D(filters, 1, strides=stride)(x)
        x = L.ReLU()(L.Add()([x, y]))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(10, activation="softmax")(x), name="resnet8")


def _fire(x: Any, squeeze: int, expand: int) -> Any:
    L = _layers()
    s = L.Conv2D(squeeze, 1, activation="relu")(x)
    return L.Concatenate()([L.Conv2D(expand, 1, activation="relu")(s),
                            L.Conv2D(expand, 3, padding="same", activation="relu")(s)])


def squeezenet() -> Any:
    """A tiny SqueezeNet: Fire modules (1x1 squeeze, 1x1 + 3x3 expand, concatenated) on 32x32x3, 10 classes."""
    import keras

    L = _layers()
    keras.utils.set_random_seed(3)
    inp = keras.Input((32, 32, 3))
    x = L.Conv2D(24, 3, strides=2, padding="same", activation="relu")(inp)
    x = _fire(x, 8, 16)
    x = _fire(x, 8, 16)
    x = L.MaxPooling2D(2)(x)
    x = _fire(x, 16, 32)
    x = L.Conv2D(10, 1)(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Softmax()(x), name="squeezenet_tiny")


def ds_cnn() -> Any:
    """DS-CNN (small) keyword spotting: 49x10x1 MFCCs, 64 filters, four depthwise-separable blocks, 12 classes."""
    import keras

    L = _layers()
    keras.utils.set_random_seed(4)
    inp = keras.Input((49, 10, 1))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(64, (10, 4), strides=2, padding="same")(inp)))
    for _ in range(4):
        x = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same")(x)))
        x = L.ReLU()(L.BatchNormalization()(L.Conv2D(64, 1)(x)))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(12, activation="softmax")(x), name="ds_cnn_kws")


def tc_resnet() -> Any:
    """A TC-ResNet-style temporal convolution net: 98 frames x 40 log-mel bins as channels, Conv1D + residual
    blocks, 12 classes."""
    import keras

    L = _layers()
    keras.utils.set_random_seed(5)
    inp = keras.Input((98, 40))
    x = L.Conv1D(16, 3, padding="same", use_bias=False)(inp)
    for filters in (24, 32):
        y = L.ReLU()(L.BatchNormalization()(L.Conv1D(filters, 9, strides=2, padding="same")(x)))
        y = L.BatchNormalization()(L.Conv1D(filters, 9, padding="same")(y))
        s = L.ReLU()(L.BatchNormalization()(L.Conv1D(filters, 1, strides=2)(x)))
        x = L.ReLU()(L.Add()([y, s]))
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(12, activation="softmax")(x), name="tc_resnet_audio")


def har_cnn() -> Any:
    """Human activity recognition: 128 samples x 3 accelerometer axes, Conv1D/MaxPooling1D, 6 classes."""
    import keras

    L = _layers()
    keras.utils.set_random_seed(6)
    inp = keras.Input((128, 3))
    x = L.Conv1D(16, 5, activation="relu")(inp)
    x = L.MaxPooling1D(2)(x)
    x = L.Conv1D(32, 5, activation="relu")(x)
    x = L.MaxPooling1D(2)(x)
    x = L.Conv1D(32, 3, activation="relu")(x)
    x = L.GlobalAveragePooling1D()(x)
    x = L.Dense(32, activation="relu")(x)
    return keras.Model(inp, L.Dense(6, activation="softmax")(x), name="har_cnn1d")


def autoencoder() -> Any:
    """An MLP autoencoder like MLPerf Tiny's ad01: 640 -> 128 x4 -> 8 -> 128 x4 -> 640 (Dense, BN, ReLU)."""
    import keras

    L = _layers()
    keras.utils.set_random_seed(7)
    inp = keras.Input((640,))
    x = inp
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = L.ReLU()(L.BatchNormalization()(L.Dense(units)(x)))
    return keras.Model(inp, L.Dense(640)(x), name="autoencoder_ad")


def gru() -> Any:
    """A sensor GRU: 128 x 3 accelerometer windows, GRU(32, unroll=True), 6 classes."""
    import keras

    L = _layers()
    keras.utils.set_random_seed(8)
    inp = keras.Input((128, 3))
    return keras.Model(inp, L.Dense(6, activation="softmax")(L.GRU(32, unroll=True)(inp)), name="gru_har")


def lstm() -> Any:
    """A keyword-spotting LSTM: 49 frames x 10 MFCCs, LSTM(64, unroll=True), 12 classes."""
    import keras

    L = _layers()
    keras.utils.set_random_seed(9)
    inp = keras.Input((49, 10))
    return keras.Model(inp, L.Dense(12, activation="softmax")(L.LSTM(64, unroll=True)(inp)), name="lstm_kws")


def simple_rnn() -> Any:
    """A sensor SimpleRNN: 64 x 6 IMU windows (accelerometer + gyroscope), SimpleRNN(32, unroll=True), 6 classes."""
    import keras

    L = _layers()
    keras.utils.set_random_seed(12)
    inp = keras.Input((64, 6))
    return keras.Model(inp, L.Dense(6, activation="softmax")(L.SimpleRNN(32, unroll=True)(inp)),
                       name="rnn_imu")


def unet() -> Any:
    """A small U-Net on 32x32x1: two encoder levels, Conv2DTranspose up-sampling, skip concatenations, a
    one-channel sigmoid mask."""
    import keras

    L = _layers()
    keras.utils.set_random_seed(10)
    inp = keras.Input((32, 32, 1))
    e1 = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    e2 = L.Conv2D(16, 3, padding="same", activation="relu")(L.MaxPooling2D(2)(e1))
    b = L.Conv2D(32, 3, padding="same", activation="relu")(L.MaxPooling2D(2)(e2))
    d2 = L.Conv2DTranspose(16, 2, strides=2, activation="relu")(b)
    d2 = L.Conv2D(16, 3, padding="same", activation="relu")(L.Concatenate()([d2, e2]))
    d1 = L.Conv2DTranspose(8, 2, strides=2, activation="relu")(d2)
    d1 = L.Conv2D(8, 3, padding="same", activation="relu")(L.Concatenate()([d1, e1]))
    return keras.Model(inp, L.Conv2D(1, 1, activation="sigmoid")(d1), name="unet_tiny")


def upsampler() -> Any:
    """An image decoder: a 16-value code -> Dense 4x4x16 -> UpSampling2D / Conv2D twice -> Resizing (nearest) to
    24x24 -> a 1-channel tanh image."""
    import keras

    L = _layers()
    keras.utils.set_random_seed(11)
    inp = keras.Input((16,))
    x = L.Reshape((4, 4, 16))(L.Dense(256, activation="relu")(inp))
    x = L.Conv2D(16, 3, padding="same", activation="relu")(L.UpSampling2D(2)(x))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(L.UpSampling2D(2)(x))
    x = L.Resizing(24, 24, interpolation="nearest")(x)
    return keras.Model(inp, L.Conv2D(1, 3, padding="same", activation="tanh")(x), name="upsampling_decoder")


ZOO: tuple[ZooModel, ...] = (
    ZooModel("mobilenet_v1_025_96", "images", mobilenet_v1, (0.0, 1.0)),
    ZooModel("resnet8", "images", resnet8, (0.0, 1.0)),
    ZooModel("squeezenet_tiny", "images", squeezenet, (0.0, 1.0)),
    ZooModel("ds_cnn_kws", "audio", ds_cnn),
    ZooModel("ds_cnn_kws_16x8", "audio", ds_cnn, activations="int16"),
    ZooModel("tc_resnet_audio", "audio", tc_resnet),
    ZooModel("har_cnn1d", "sensors", har_cnn),
    ZooModel("har_cnn1d_16x8", "sensors", har_cnn, activations="int16"),
    ZooModel("autoencoder_ad", "sensors", autoencoder, classifier=False),
    ZooModel("gru_har", "sensors", gru, recurrent=True),
    ZooModel("lstm_kws", "audio", lstm, recurrent=True),
    ZooModel("rnn_imu", "sensors", simple_rnn, recurrent=True),
    ZooModel("unet_tiny", "decoders", unet, (0.0, 1.0), classifier=False),
    ZooModel("upsampling_decoder", "decoders", upsampler, classifier=False),
)
BY_NAME = {m.name: m for m in ZOO}


def inputs(model: Any, n: int, lo: float, hi: float, seed: int = 0) -> np.ndarray:
    """``n`` uniform random inputs in [lo, hi) of the model's input shape (float32)."""
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    return np.random.default_rng(seed).uniform(lo, hi, (n, *shape)).astype(np.float32)


def to_int8_tflite(model: Any, calib: np.ndarray, activations: str = "int8", per_tensor_dense: bool = False) -> bytes:
    """The TFLite converter's full-integer file (int8 inputs and outputs, batch 1), calibrated on ``calib``;
    ``activations="int16"``: its 16x8 file (int16 activations and I/O, int8 weights); ``per_tensor_dense``: dense
    layers quantized per tensor (the converter's experimental switch; CMSIS-NN's int16 FULLY_CONNECTED refuses
    per-channel weights).
    A fixed batch of 1 (as published files have) lets the converter fold Keras 3's UpSampling2D shapes and
    lower LSTM/GRU loops, which it refuses with a dynamic batch."""
    import tensorflow as tf

    import keras

    inp = keras.Input(calib.shape[1:], batch_size=1)
    c = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, model(inp)))
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
    if per_tensor_dense:
        c._experimental_disable_per_channel_quantization_for_dense_layers = True
    if activations == "int16":
        c.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        c.inference_input_type = c.inference_output_type = tf.int16
    else:
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = c.inference_output_type = tf.int8
    return c.convert()


def export(name: str, folder: str, int8: bool = True) -> None:
    """Write NAME.h5 and NAME_int8.tflite (NAME_int16.tflite for a 16x8 entry; NAME_float.tflite with ``int8``
    False) into ``folder`` (atomically);
    run in a child process by the benchmark: the converter crashes on some models (int8 LSTM/GRU)."""
    import os
    from pathlib import Path

    z = BY_NAME[name]
    model = z.build()
    out = Path(folder)
    h5 = out / f"{name}.h5"
    if not h5.exists():
        model.save(str(out / f"{name}.tmp.h5"))
        os.replace(out / f"{name}.tmp.h5", h5)
    if int8:
        data = to_int8_tflite(model, inputs(model, 32, *z.input_range, seed=1), z.activations)
    else:
        import keras
        import tensorflow as tf

        inp = keras.Input(tuple(model.inputs[0].shape[1:]), batch_size=1)
        data = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, model(inp))).convert()
    path = out / f"{name}_{z.activations if int8 else 'float'}.tflite"
    path.with_suffix(".tmp").write_bytes(data)
    os.replace(path.with_suffix(".tmp"), path)


def export_per_tensor_dense(name: str, folder: str) -> None:
    """Write NAME_int16_dense_pt.tflite: the 16x8 file of NAME.h5 (in ``folder``; the same calibration as
    `export`) with per-tensor dense layers, which TFLite Micro + CMSIS-NN can run (atomically)."""
    import os
    from pathlib import Path

    import keras

    z = BY_NAME[name]
    model = keras.models.load_model(str(Path(folder) / f"{name}.h5"), compile=False)
    data = to_int8_tflite(model, inputs(model, 32, *z.input_range, seed=1), z.activations, per_tensor_dense=True)
    path = Path(folder) / f"{name}_int16_dense_pt.tflite"
    path.with_suffix(".tmp").write_bytes(data)
    os.replace(path.with_suffix(".tmp"), path)


if __name__ == "__main__":
    import os
    import sys

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if sys.argv[3:] == ["--dense-per-tensor"]:
        export_per_tensor_dense(sys.argv[1], sys.argv[2])
    else:
        export(sys.argv[1], sys.argv[2], int8=sys.argv[3:] != ["--float"])
