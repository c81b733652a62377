"""Train the bundled example model: a small CNN on scikit-learn's digits (8x8 greyscale).

Writes ``digits_cnn.h5`` (the model, legacy HDF5), ``digits_cnn.keras`` and ``digits_data.npz``
(``x_train``/``y_train`` for calibration and fine-tuning, ``x_test``/``y_test`` for evaluation;
pixel values 0..16 as float32, the model rescales them itself).

    python examples/train_digits.py [--epochs 40] [--out examples]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build_model():
    import keras
    from keras import layers

    inp = keras.Input((8, 8, 1), name="image")
    x = layers.Rescaling(1.0 / 16.0, name="rescale")(inp)
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(x)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Conv2D(16, 3, padding="valid", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.2, name="drop")(x)
    out = layers.Dense(10, activation="softmax", name="classifier")(x)
    return keras.Model(inp, out, name="digits_cnn")


def load_digits_split(seed: int = 0):
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype("float32")[..., None]
    y = d.target.astype("uint8")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n = 1400
    return x[:n], y[:n], x[n:], y[n:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--out", default=str(Path(__file__).parent))
    args = ap.parse_args()

    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    x_tr, y_tr, x_te, y_te = load_digits_split()
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_tr, y_tr, epochs=args.epochs, batch_size=32, validation_data=(x_te, y_te), verbose=2)
    _, acc = model.evaluate(x_te, y_te, verbose=0)
    out = Path(args.out)
    model.save(out / "digits_cnn.h5")
    model.save(out / "digits_cnn.keras")
    np.savez_compressed(out / "digits_data.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    print(f"test accuracy {acc:.4f}; params {model.count_params()}; wrote {out}/digits_cnn.h5")


if __name__ == "__main__":
    main()
