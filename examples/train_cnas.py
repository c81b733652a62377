"""Train the reference CNAS model on CIFAR-10 with the thesis's recipe.

Adam (lr 0.0015), categorical cross-entropy, batch 96, random shifts of 10% and horizontal
flips, L2 on the Dense layer (in the builder), inputs scaled to [0, 1]. The thesis trains 150
epochs with early stopping (patience 20); ``--epochs`` gives a short CPU run with the same code.
Because the model's BatchNorm momentum is 0.1 (PyTorch's number), test accuracy swings between
epochs: the best epoch by validation accuracy is kept (stated in the output).

    python examples/train_cnas.py --data ../shared/data/cifar10.npz --epochs 150 --out cnas.keras

``--classes 8`` trains on classes 0-7 only (the incremental scenario's base model; the classifier keeps
its 10 outputs, classes 8-9 are never seen) and reports test accuracy on classes 0-7.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def load_cifar10(path: str, limit: int | None = None, classes: int = 10):
    import numpy as np

    p = Path(path)
    if p.is_dir():
        p = p / "cifar10.npz"
    with np.load(p, allow_pickle=False) as z:
        xtr, ytr, xte, yte = z["x_train"], z["y_train"], z["x_test"], z["y_test"]
    if classes < 10:  # keep only the classes 0..classes-1 (train and test)
        xtr, ytr = xtr[ytr < classes], ytr[ytr < classes]
        xte, yte = xte[yte < classes], yte[yte < classes]
    if limit:
        xtr, ytr = xtr[:limit], ytr[:limit]
    f = lambda a: a.astype("float32") / 255.0  # noqa: E731
    return f(xtr), ytr.astype("int64"), f(xte), yte.astype("int64")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="cifar10.npz or the folder holding it")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--lr", type=float, default=0.0015)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--limit", type=int, help="use only the first N training images (quick runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--classes", type=int, default=10, help="train on classes 0..N-1 only (10 outputs kept)")
    ap.add_argument("--out", default="cnas_cifar10.keras")
    args = ap.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from tinycc.models import cnas_cifar10

    keras.utils.set_random_seed(args.seed)
    xtr, ytr, xte, yte = load_cifar10(args.data, args.limit, args.classes)
    n_val = 5000 if len(xtr) > 20000 else max(len(xtr) // 10, 1)
    xval, yval, xtr, ytr = xtr[:n_val], ytr[:n_val], xtr[n_val:], ytr[n_val:]
    model = cnas_cifar10()
    model.compile(optimizer=keras.optimizers.Adam(args.lr), loss="categorical_crossentropy", metrics=["accuracy"])
    aug = keras.Sequential([keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest"),
                            keras.layers.RandomFlip("horizontal")])
    ds = (tf.data.Dataset.from_tensor_slices((xtr, keras.utils.to_categorical(ytr, 10)))
          .shuffle(len(xtr), seed=args.seed).batch(args.batch)
          .map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))
    best = keras.callbacks.ModelCheckpoint(args.out, monitor="val_accuracy", save_best_only=True)
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=args.patience)
    t0 = time.time()
    hist = model.fit(ds, epochs=args.epochs, validation_data=(xval, keras.utils.to_categorical(yval, 10)),
                     callbacks=[best, stop], verbose=2)
    model = keras.models.load_model(args.out)
    _, acc = model.evaluate(xte, keras.utils.to_categorical(yte, 10), verbose=0)
    info = {"epochs_run": len(hist.history["loss"]), "best_val_accuracy": float(max(hist.history["val_accuracy"])),
            "test_accuracy": float(acc), "seconds": round(time.time() - t0, 1), "kept": "best epoch by val accuracy",
            "train_images": int(len(xtr)), "classes": args.classes, "params": int(model.count_params())}
    Path(args.out).with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info))


if __name__ == "__main__":
    main()
