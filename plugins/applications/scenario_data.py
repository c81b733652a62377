"""Labelled data and sample streams for `tinycc simulate`.

Data is the thesis's folder (``cifar10.npz``, ``imagenette-32.npz``) or any labelled ``.npz``:
``x_train``/``y_train`` with optional ``x_test``/``y_test`` (or ``x_val``/``y_val``), or ``x``/``y``,
split once into 80 % stream / 20 % test samples with a permutation seeded by ``Protocol.seed``.
Everything is checked before any run: keys, label shapes and types, NaN/Inf, the model's input shape
(a missing trailing channel axis of size 1 is added) and the classifier's label range.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import TinyccError
from ...ir.calibration import CalibrationDataError, check_finite, check_samples

SOURCE_FILE, TARGET_FILE = "cifar10.npz", "imagenette-32.npz"  # the thesis's datasets in a --data folder
THESIS_SCALE = 1 / 255.0  # the thesis's models take 8-bit pixels scaled to [0, 1]
TEST_SHARE = 0.2  # share of x/y (or of x_train/y_train without test arrays) kept as test samples


@dataclass
class Dataset:
    """Labelled samples as stored (``x`` not yet scaled); ``y`` int64 class indices."""

    path: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class Protocol:
    """What a scenario does; the defaults are the thesis's."""

    swap: tuple[int, int] = (4, 6)  # concept drift: these two labels are exchanged ...
    at: int | None = None  # ... from this stream sample on (incremental: new classes enter); None: 100
    new_classes: tuple[int, ...] = (8, 9)  # incremental: classes held out of the first `at` samples
    target_data: str | None = None  # transfer: the dataset adapted to (default: the folder's Imagenette)
    seed: int = 0  # split of x/y into stream and test samples


@dataclass
class Stream:
    """One run's supervised stream and test set (float32, scaled)."""

    x: np.ndarray
    y: np.ndarray  # true classes
    label: np.ndarray  # label taught at each step (concept drift: swapped from swap_at on)
    x_test: np.ndarray
    y_test: np.ndarray
    swap: tuple[int, int] | None = None
    swap_at: int | None = None
    new_classes: tuple[int, ...] = field(default=())

    def test_labels(self, step: int) -> np.ndarray:
        """Test labels under the concept that holds at stream sample ``step``."""
        if self.swap is not None and self.swap_at is not None and step >= self.swap_at:
            return swap_labels(self.y_test, self.swap)
        return self.y_test


def swap_labels(y: np.ndarray, pair: tuple[int, int]) -> np.ndarray:
    a, b = pair
    out = y.copy()
    out[y == a], out[y == b] = b, a
    return out


# ---- loading ---------------------------------------------------------------------
def load_dataset(spec: str, thesis_file: str, seed: int = 0) -> Dataset:
    """The labelled ``.npz`` ``spec``, or ``thesis_file`` inside the folder ``spec``."""
    p = Path(spec)
    if p.is_dir():
        if not (p / thesis_file).is_file():
            raise TinyccError(f"{spec}: folder without {thesis_file} (give the thesis's data folder or a labelled "
                              ".npz file)")
        p = p / thesis_file
    elif not p.exists():
        raise TinyccError(f"{spec}: no such file or folder")
    elif p.suffix != ".npz":
        raise TinyccError(f"{spec}: expected a labelled .npz file (x_train/y_train or x/y) or the thesis's "
                          "data folder")
    try:
        with np.load(p, allow_pickle=False) as z:
            return _arrays(z, str(p), seed)
    except TinyccError:
        raise
    except CalibrationDataError as e:
        raise TinyccError(str(e)) from None
    except Exception as e:  # zip/npy format errors, object arrays: not loadable data
        raise TinyccError(f"{p}: cannot read ({type(e).__name__}: {e})") from None


def _arrays(z: Any, path: str, seed: int) -> Dataset:
    keys = set(z.files)
    if "x_train" in keys:
        x, y = labelled_pair(z, path, "x_train", "y_train")
        test = next((k for k in ("x_test", "x_val") if k in keys), None)
        if test is not None:
            xt, yt = labelled_pair(z, path, test, "y" + test[1:])
            if xt.shape[1:] != x.shape[1:]:
                raise TinyccError(f"{path}: {test} samples have shape {xt.shape[1:]}, x_train {x.shape[1:]}")
            return Dataset(path, x, y, xt, yt)
    elif "x" in keys:
        x, y = labelled_pair(z, path, "x", "y")
    else:
        raise TinyccError(f"{path}: expected arrays x_train/y_train (optionally x_test/y_test) or x/y; found "
                          f"{', '.join(sorted(keys)) or 'none'}")
    return _split(path, x, y, seed)


def labelled_pair(z: Any, path: str, xk: str, yk: str) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``z[xk]`` and their class indices ``z[yk]`` (one per sample, or one-hot rows), checked."""
    if yk not in z.files:
        raise TinyccError(f"{path}: {xk} has no labels ({yk} missing)")
    x, y = np.asarray(z[xk]), np.asarray(z[yk])
    if x.dtype.kind not in "biuf" or x.ndim < 2 or len(x) == 0:
        raise TinyccError(f"{path}: {xk} must be a non-empty numeric array [N, ...], got {x.dtype} {x.shape}")
    check_finite(x, f"{path}: {xk}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2 and len(y) and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
        y = y.argmax(axis=1)  # one-hot rows
    if y.ndim != 1:
        raise TinyccError(f"{path}: {yk} must hold one class index per sample, shape ({len(x)},); got {y.shape}")
    if len(y) != len(x):
        raise TinyccError(f"{path}: {len(x)} samples in {xk} but {len(y)} labels in {yk}")
    if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all())):
        raise TinyccError(f"{path}: {yk} must be integer class indices, got {y.dtype} values")
    return x, y.astype(np.int64)


def _split(path: str, x: np.ndarray, y: np.ndarray, seed: int) -> Dataset:
    if len(x) < 2:
        raise TinyccError(f"{path}: {len(x)} sample; need at least 2 to split into stream and test samples")
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = min(len(x) - 1, max(1, round(TEST_SHARE * len(x))))
    te, tr = np.sort(order[:n_test]), np.sort(order[n_test:])
    return Dataset(path, x[tr], y[tr], x[te], y[te])


# ---- checks against the model and the protocol -------------------------------------
def fit_to_model(ds: Dataset, graph: Any, n_classes: int) -> Dataset:
    """``ds`` with samples in the model's input layout; its labels checked against the classifier."""
    try:
        head = check_samples(graph, ds.x_train[:1], f"{ds.path}: samples")
    except CalibrationDataError as e:
        raise TinyccError(str(e)) from None
    shape = head.shape[1:]
    for name, y in (("train", ds.y_train), ("test", ds.y_test)):
        if y.min() < 0 or y.max() >= n_classes:
            bad = int(y.min() if y.min() < 0 else y.max())
            raise TinyccError(f"{ds.path}: {name} label {bad} is out of range: the classifier has {n_classes} "
                              f"outputs (classes 0..{n_classes - 1})")
    return replace(ds, x_train=ds.x_train.reshape((len(ds.x_train),) + shape),
                   x_test=ds.x_test.reshape((len(ds.x_test),) + shape))


def check_classes(ds: Dataset, option: str, classes: tuple[int, ...], n_classes: int, in_test: bool = True) -> None:
    """Each of ``classes`` is a classifier output and occurs in the stream (and test) samples of ``ds``."""
    for c in classes:
        if not 0 <= c < n_classes:
            raise TinyccError(f"{option}: class {c} is out of range: the classifier has {n_classes} outputs "
                              f"(classes 0..{n_classes - 1})")
        for name, y in (("stream", ds.y_train),) + ((("test", ds.y_test),) if in_test else ()):
            if not (y == c).any():
                raise TinyccError(f"{option}: class {c} does not occur in the {name} samples of {ds.path}")


def sample_count(option: str, asked: int | None, default: int, available: int, what: str) -> int:
    """``asked`` (at most ``available``), or ``default`` capped at ``available``."""
    if asked is None:
        return min(default, available)
    if asked < 1:
        raise TinyccError(f"{option} must be >= 1, got {asked}")
    if asked > available:
        raise TinyccError(f"{option} {asked}: {what} has only {available} samples")
    return asked


# ---- streams ------------------------------------------------------------------------
def make_stream(scenario: str, ds: Dataset, n_stream: int, n_test: int, seed: int, scale: float,
                protocol: Protocol, at: int) -> Stream:
    """Draw one run's stream and test set (seeded) and arrange them as ``scenario`` prescribes."""
    rng = np.random.default_rng(seed)
    s_idx = rng.choice(len(ds.x_train), n_stream, replace=False)
    t_idx = rng.choice(len(ds.x_test), n_test, replace=False)
    x, y = ds.x_train[s_idx].astype(np.float32) * scale, ds.y_train[s_idx]
    st = Stream(x, y, y.copy(), ds.x_test[t_idx].astype(np.float32) * scale, ds.y_test[t_idx])
    if scenario == "concept-drift":
        st.swap, st.swap_at = protocol.swap, at
        st.label[at:] = swap_labels(y[at:], protocol.swap)
    if scenario == "incremental":
        first = np.nonzero(~np.isin(y, protocol.new_classes))[0][:at]  # old classes only before `at`
        order = np.concatenate([first, np.setdiff1d(np.arange(n_stream), first)])
        st.x, st.y, st.label = x[order], y[order], y[order]
        st.new_classes = protocol.new_classes
    return st
