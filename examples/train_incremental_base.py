"""Train the base model of the incremental-learning scenario: a small CNN on CIFAR-10 classes 0-7 only.

Its classifier has 10 outputs (classes 8-9 never seen in training), as the scenario needs:
    python examples/train_incremental_base.py --data ../shared/data --epochs 3 --out cifar8.keras
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default="cifar8.keras")
    args = ap.parse_args()
    import keras
    import numpy as np

    p = Path(args.data)
    with np.load(p / "cifar10.npz" if p.is_dir() else p, allow_pickle=False) as z:
        x, y = z["x_train"], z["y_train"]
        xt, yt = z["x_test"], z["y_test"]
    keep, keept = y < 8, yt < 8
    x, y, xt, yt = x[keep] / 255.0, y[keep], xt[keept] / 255.0, yt[keept]
    keras.utils.set_random_seed(0)
    L = keras.layers
    m = keras.Sequential([keras.Input((32, 32, 3)), L.Conv2D(32, 3, padding="same", activation="relu"),
                          L.MaxPooling2D(2), L.Conv2D(64, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
                          L.Conv2D(64, 3, padding="same", activation="relu"), L.GlobalAveragePooling2D(),
                          L.Dense(64, activation="relu"), L.Dense(10, activation="softmax")], name="cifar8")
    m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(x, y, epochs=args.epochs, batch_size=128, validation_data=(xt, yt), verbose=2)
    m.save(args.out)
    print(f"test accuracy on classes 0-7: {m.evaluate(xt, yt, verbose=0)[1]:.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
