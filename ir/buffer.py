"""Replay buffers and the online learner: reference semantics for the device runtime.

A buffer holds ``capacity`` entries: features + a uint8 label (so at most 256 classes; the
``ce`` and ``bce`` heads, bce labels 0/1), or, for the regression head (``mse``), features + a
target vector of ``target_count`` floats. Its arrays, all allocated once (``nbytes`` counts
exactly these)::

    data    [capacity, features]      int8 (storage "int8"), int16 (storage "int16": the int16 features of a
                                      16x8 extractor, 2 bytes a value) or float32 (storage "float32")
    labels  [capacity]                uint8   (label heads; [0] for regression)
    targets [capacity, target_count]  float32, or int8 quantized with (target_scale,
                                      target_zero_point) when a target scale is given (an
                                      autoencoder's target = its input, stored in the input's
                                      int8 quantization); [0, 0] for label heads
    stamp  [capacity]            uint32  stream index (1-based) of the sample held by each slot
    state  [4]                   uint32  count, head, seen, rng

``count`` = valid entries; ``seen`` = samples pushed since ``reset`` (stream length, < 2**32);
``head`` = the next fifo slot (= the oldest entry once full; 0 for other policies);
``rng`` = the PRNG state. ``reset`` sets count = head = seen = 0 and rng = seed (0 -> 1).

``push(x, y)`` first does seen += 1, then picks a slot:

- ``fifo``: a ring. slot = head; head = (head + 1) % capacity; count = min(count + 1, capacity).
  When full the oldest entry is overwritten. Training order: oldest to newest, i.e. slots
  (head + k) % capacity for k = 0..count-1 once full, 0..count-1 before. Every valid entry is
  trained on (TyBox's Python buffer only trained on the entries written since the last
  wrap-around; this one never drops a valid entry).
- ``reservoir`` (Algorithm R): while count < capacity, slot = count and count += 1 (no PRNG
  draw). Afterwards: rng = xorshift32(rng); r = rng % seen; if r < capacity the sample replaces
  slot r, else it is dropped (push returns -1, nothing is written). xorshift32 on uint32:
  ``x ^= x << 13; x ^= x >> 17; x ^= x << 5`` (shifts drop the bits above 32);
  e.g. xorshift32(1) = 270369. Training order: slot order 0..count-1.
- ``class_balanced``: while count < capacity, slot = count and count += 1. When full, with s[c]
  the stored entries of class c and y the incoming label, the victim class is y itself when
  s[y] > 0 and s[y] + 1 >= s[c] for every other class c (i.e. y would be a most represented
  class counting the incoming sample); otherwise it is the most represented class, ties going to
  the lowest class index. The victim slot is the oldest entry (smallest stamp) of the victim class.
  Consequences (tested): once full, the largest class count never grows, and a class that has
  lost an entry holds at least (largest count - 1) entries, so a class more than one below the
  largest still holds every sample of it that was pushed. Training order: slot order.

The chosen slot gets the features, the label (or target) and stamp = seen. ``push`` returns the
slot; ``unpush(slot, state before the push)`` removes the sample again (a refused learn step; see its docstring). ``class_balanced`` needs labels: a regression buffer refuses it. Targets must be finite
(checked before anything is written); int8 targets are quantized and dequantized like features.

Features: an int8 (int16) array is taken as already quantized with (scale, zero_point) — the int8
(int16) feature extractor's output — and stored as is in int8 (int16) storage, dequantized in float32
storage; int8 features into int16 storage (or the reverse) are refused. Any float array is
stored as float32, or, with int8 storage, quantized like TFLite QUANTIZE:
q = clamp(round(x / scale) + zero_point, -128, 127), with x / scale a float32 division and round()
= C ``roundf`` (to nearest, ties away from zero; the quotient is clamped to +-1e9 first); int16
storage clamps to -32768..32767 instead. NaN features are rejected. Training reads int8 and int16
entries dequantized as scale * (float)(q - zero_point) in float32; float32 entries as they are.
"""
from __future__ import annotations

import numpy as np

from .deployment import TrainConfig
from .train import F32, Classifier

POLICIES = ("fifo", "reservoir", "class_balanced")
STORAGES = ("int8", "int16", "float32")
_QTYPES = {"int8": np.int8, "int16": np.int16}  # quantized storages
_ELEM = {"int8": 1, "int16": 2, "float32": 4}
MAX_CLASSES = 256
STATE_WORDS = 4  # count, head, seen, rng
_COUNT, _HEAD, _SEEN, _RNG = range(STATE_WORDS)
_MASK = 0xFFFFFFFF


def xorshift32(x: int) -> int:
    """One step of Marsaglia's xorshift32 (13, 17, 5) on a uint32."""
    x &= _MASK
    x ^= (x << 13) & _MASK
    x ^= x >> 17
    x ^= (x << 5) & _MASK
    return x


def round_half_away(x: np.ndarray) -> np.ndarray:
    """C ``roundf`` of float32 values, exactly (float64 arithmetic is exact here)."""
    v = np.asarray(x, F32).astype(np.float64)
    return np.copysign(np.floor(np.abs(v) + 0.5), v)


def quantize_features(x: np.ndarray, scale: float, zero_point: int, dtype: type = np.int8) -> np.ndarray:
    """TFLite QUANTIZE to int8: clamp(roundf(x / scale) + zero_point, -128, 127) (``dtype`` np.int16: to int16)."""
    q = np.asarray(x, F32) / F32(scale)
    if np.isnan(q).any():
        raise ValueError("features must not be NaN")
    r = np.clip(round_half_away(q), -1e9, 1e9).astype(np.int64) + int(zero_point)
    info = np.iinfo(dtype)
    return np.clip(r, info.min, info.max).astype(dtype)


def dequantize_features(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """scale * (float)(q - zero_point), float32."""
    return F32(scale) * (np.asarray(q, np.int32) - np.int32(zero_point)).astype(F32)


class ReplayBuffer:
    """Fixed-capacity replay buffer (policies ``fifo``, ``reservoir``, ``class_balanced``)."""

    def __init__(self, capacity: int, feature_count: int, storage: str = "int8", scale: float | None = None,
                 zero_point: int | None = None, policy: str = "fifo", seed: int = 1, target_count: int = 0,
                 target_scale: float | None = None, target_zero_point: int | None = None) -> None:
        if capacity < 1:
            raise ValueError("buffer capacity must be at least 1")
        if feature_count < 1:
            raise ValueError("feature_count must be at least 1")
        if policy not in POLICIES:
            raise ValueError(f"unknown buffer policy {policy!r}; known: {', '.join(POLICIES)}")
        if storage not in STORAGES:
            raise ValueError(f"buffer storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        if scale is not None and not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        if storage in _QTYPES and scale is None:
            raise ValueError(f"{storage} storage needs the features' scale (and zero point)")
        zp = 0 if zero_point is None else int(zero_point)
        zinfo = np.iinfo(np.int16 if storage == "int16" else np.int8)
        if not zinfo.min <= zp <= zinfo.max:
            raise ValueError(f"{zinfo.dtype} zero point must be in {zinfo.min}..{zinfo.max}, got {zp}")
        if not 0 <= int(seed) <= _MASK:
            raise ValueError("seed must be a uint32")
        if target_count < 0:
            raise ValueError("target_count must be >= 0")
        if target_count and policy == "class_balanced":
            raise ValueError("the class_balanced policy needs class labels; a regression buffer (float targets) "
                             "supports fifo and reservoir")
        if target_scale is not None and not (np.isfinite(target_scale) and target_scale > 0):
            raise ValueError(f"target scale must be a positive finite number, got {target_scale}")
        tzp = 0 if target_zero_point is None else int(target_zero_point)
        if not -128 <= tzp <= 127:
            raise ValueError(f"int8 target zero point must be in -128..127, got {tzp}")
        self.target_count = int(target_count)
        self.target_scale = None if target_scale is None or not target_count else float(F32(target_scale))
        self.target_zero_point = tzp
        self.capacity, self.feature_count = int(capacity), int(feature_count)
        self.storage, self.policy = storage, policy
        self.scale = None if scale is None else float(F32(scale))
        self.zero_point = zp
        self.seed = int(seed)
        self.data = np.zeros((self.capacity, self.feature_count), _QTYPES.get(storage, F32))
        self.labels = np.zeros(0 if self.target_count else self.capacity, np.uint8)
        t_rows = self.capacity if self.target_count else 0
        self.targets = np.zeros((t_rows, self.target_count), np.int8 if self.target_scale is not None else F32)
        self.stamp = np.zeros(self.capacity, np.uint32)
        self.state = np.zeros(STATE_WORDS, np.uint32)
        self.reset()

    # ---- state ----
    @property
    def count(self) -> int:
        return int(self.state[_COUNT])

    @property
    def head(self) -> int:
        return int(self.state[_HEAD])

    @property
    def seen(self) -> int:
        return int(self.state[_SEEN])

    @property
    def rng(self) -> int:
        return int(self.state[_RNG])

    def reset(self) -> None:
        """Empty the buffer: count = head = seen = 0, rng = seed (0 -> 1)."""
        self.state[:] = (0, 0, 0, self.seed or 1)

    # ---- memory ----
    def nbytes(self) -> int:
        """Bytes of every array the buffer allocates (see ``bytes_for``)."""
        return self.data.nbytes + self.labels.nbytes + self.targets.nbytes + self.stamp.nbytes + self.state.nbytes

    @property
    def target_storage(self) -> str:
        """How targets are stored: "int8" (with a target scale) or "float32"."""
        return "int8" if self.target_scale is not None else "float32"

    @staticmethod
    def bytes_for(capacity: int, feature_count: int, storage: str = "int8", target_count: int = 0,
                  target_storage: str = "float32") -> int:
        """capacity * (features * elem + (1 label | targets * target elem) + 4 stamp) + 16 state bytes."""
        elem = _ELEM[storage]
        label = target_count * (1 if target_storage == "int8" else 4) if target_count else 1
        return capacity * (feature_count * elem + label + 4) + 4 * STATE_WORDS

    # ---- insertion ----
    def _encode(self, features: np.ndarray) -> np.ndarray:
        f = np.asarray(features).reshape(-1)
        if f.size != self.feature_count:
            raise ValueError(f"expected {self.feature_count} features, got {f.size}")
        if f.dtype in (np.int8, np.int16):
            if self.storage == f.dtype.name:
                return f
            if self.storage != "float32":
                raise TypeError(f"{f.dtype.name} features cannot be stored in a buffer of {self.storage} entries")
            if self.scale is None:
                raise ValueError(f"{f.dtype.name} features need the buffer's scale to be stored as float32")
            return dequantize_features(f, self.scale, self.zero_point)
        if not np.issubdtype(f.dtype, np.floating):
            raise TypeError(f"features must be int8 or int16 (quantized) or floating point, got {f.dtype}")
        if self.storage in _QTYPES:
            return quantize_features(f, self.scale, self.zero_point, _QTYPES[self.storage])
        f32 = f.astype(F32)
        if np.isnan(f32).any():
            raise ValueError("features must not be NaN")
        return f32

    def _encode_target(self, target: np.ndarray) -> np.ndarray:
        t = np.asarray(target).reshape(-1)
        if t.size != self.target_count:
            raise ValueError(f"expected a target of {self.target_count} values, got {t.size}")
        if not (np.issubdtype(t.dtype, np.floating) or np.issubdtype(t.dtype, np.integer)):
            raise TypeError(f"targets must be numbers, got {t.dtype}")
        t32 = t.astype(F32)
        if not np.isfinite(t32).all():
            raise ValueError("targets must be finite (no NaN or infinity)")
        if self.target_scale is None:
            return t32
        return quantize_features(t32, self.target_scale, self.target_zero_point)

    def _balanced_victim(self, label: int) -> int:
        stored = self.class_counts(MAX_CLASSES)
        others = stored.copy()
        others[label] = 0
        if stored[label] > 0 and stored[label] + 1 >= others.max():
            cls = label
        else:
            cls = int(np.argmax(stored))  # first maximum = lowest class index
        members = np.flatnonzero(self.labels[:self.count] == cls)
        return int(members[np.argmin(self.stamp[members])])

    def push(self, features: np.ndarray, label: int | np.ndarray) -> int:
        """Insert one sample (``label``: an int, or the target vector of a regression buffer); returns
        the slot written, or -1 when reservoir sampling drops it."""
        if self.target_count:
            target, y = self._encode_target(label), 0
        else:
            y = int(label)
            if not 0 <= y < MAX_CLASSES:
                raise ValueError(f"labels are stored as uint8: {y} is not in 0..{MAX_CLASSES - 1}")
        values = self._encode(features)
        if self.seen == _MASK:
            raise OverflowError("stream longer than 2**32 - 1 samples; reset the buffer")
        st = self.state
        st[_SEEN] += 1
        n = self.count
        if self.policy == "fifo":
            slot = self.head
            st[_HEAD] = (slot + 1) % self.capacity
            st[_COUNT] = min(n + 1, self.capacity)
        elif n < self.capacity:
            slot = n
            st[_COUNT] = n + 1
        elif self.policy == "reservoir":
            st[_RNG] = xorshift32(self.rng)
            r = self.rng % self.seen
            if r >= self.capacity:
                return -1
            slot = r
        else:
            slot = self._balanced_victim(y)
        self.data[slot] = values
        if self.target_count:
            self.targets[slot] = target
        else:
            self.labels[slot] = y
        self.stamp[slot] = st[_SEEN]
        return slot

    def unpush(self, slot: int, before: np.ndarray) -> None:
        """Undo the push that returned ``slot`` (-1: nothing was written), ``before`` being a copy of ``state``
        taken just before it (the device's ``tcc_buffer_unpush``). The state words go back to ``before``; when the
        sample had replaced an entry of a full buffer, that entry is gone too: the other capacity - 1 entries keep
        their training order and move to slots 0..capacity-2 (fifo: a rotation so that the oldest is in slot 0,
        head = count; other policies: the entries after the slot move down by one), count = capacity - 1."""
        self.state[:] = before
        if slot < 0 or int(before[_COUNT]) < self.capacity:
            return
        lo = 0 if self.policy == "fifo" else slot
        arrays = [self.data, self.stamp] + ([self.targets] if self.target_count else [self.labels])
        for a in arrays:
            a[lo:] = np.roll(a[lo:], -(slot + 1 - lo), axis=0)
        self.state[_COUNT] = self.capacity - 1
        self.state[_HEAD] = self.capacity - 1 if self.policy == "fifo" else 0

    # ---- reading ----
    def slot(self, k: int) -> int:
        """The slot of the k-th entry in training order."""
        if not 0 <= k < self.count:
            raise IndexError(f"entry {k} of {self.count}")
        if self.policy == "fifo" and self.count == self.capacity:
            return (self.head + k) % self.capacity
        return k

    def order(self) -> np.ndarray:
        """All valid slots in training order."""
        return np.array([self.slot(k) for k in range(self.count)], dtype=np.intp)

    def _target_f32(self, t: np.ndarray) -> np.ndarray:
        if self.target_scale is None:
            return t.astype(F32)
        return dequantize_features(t, self.target_scale, self.target_zero_point)

    def entry(self, k: int, out: np.ndarray | None = None,
              target_out: np.ndarray | None = None) -> tuple[np.ndarray, int | np.ndarray]:
        """(float32 features, label) of the k-th entry in training order, written into ``out``; a
        regression buffer gives (features, float32 target), the target written into ``target_out``."""
        s = self.slot(k)
        out = np.empty(self.feature_count, F32) if out is None else out
        if self.storage in _QTYPES:
            out[:] = dequantize_features(self.data[s], self.scale, self.zero_point)
        else:
            out[:] = self.data[s]
        if not self.target_count:
            return out, int(self.labels[s])
        target_out = np.empty(self.target_count, F32) if target_out is None else target_out
        target_out[:] = self._target_f32(self.targets[s])
        return out, target_out

    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        """(float32 features [count, F], int64 labels [count] or float32 targets [count, T]) of every
        valid entry, training order."""
        idx = self.order()
        d = self.data[idx]
        x = dequantize_features(d, self.scale, self.zero_point) if self.storage in _QTYPES else d.astype(F32)
        if self.target_count:
            return x, self._target_f32(self.targets[idx])
        return x, self.labels[idx].astype(np.int64)

    def class_counts(self, n_classes: int | None = None) -> np.ndarray:
        """Valid entries per class; length ``n_classes`` (default: largest stored label + 1)."""
        valid = self.labels[:self.count]  # every policy fills slots 0..count-1 (regression: no labels)
        n = (int(valid.max()) + 1 if valid.size else 0) if n_classes is None else int(n_classes)
        return np.bincount(valid, minlength=n)[:n]


class OnlineLearner:
    """``learn(x, y)`` = push into the buffer, then retrain Φc on every valid entry.

    Retraining runs ``epochs`` epochs over the buffer in its training order; each batch of up to
    ``batch_size`` consecutive entries takes one SGD step, the last batch of an epoch may be partial.
    The device reads the entries where they are stored (an int8 feature is dequantized,
    ``scale * (q - zero_point)``, element by element inside the first layer's dot product and its
    gradient; a label or an int8 target likewise as it is used): the same float32 values as the
    host's dequantized copies here, so no staging copy is allocated (``staging_bytes``: only the
    prediction's output vector). A refused step (``Classifier.sgd_step`` returns False) ends the
    retraining there, sets ``last_refused`` and removes the sample from the buffer again
    (``ReplayBuffer.unpush``; the steps before the refused one stay applied). TinyOL mode is a
    buffer of capacity 1 (``tinyol``).
    """

    def __init__(self, classifier: Classifier, buffer: ReplayBuffer, lr: float = TrainConfig.lr, epochs: int = 1,
                 batch_size: int = 1) -> None:
        if classifier.n_in != buffer.feature_count:
            raise ValueError(f"classifier takes {classifier.n_in} features, the buffer holds {buffer.feature_count}")
        if classifier.n_classes > MAX_CLASSES:
            raise ValueError(f"at most {MAX_CLASSES} classes (labels are uint8), got {classifier.n_classes}")
        if buffer.target_count != classifier.target_count:
            raise ValueError(f"the {classifier.loss_name} head needs a buffer with {classifier.target_count} target "
                             f"values per entry, this one holds {buffer.target_count}")
        if not 1 <= batch_size <= classifier.max_batch:
            raise ValueError(f"batch_size must be in 1..{classifier.max_batch} (the classifier's max_batch)")
        if epochs < 0:
            raise ValueError("epochs must be >= 0")
        self.classifier, self.buffer = classifier, buffer
        self.lr, self.epochs, self.batch_size = float(lr), int(epochs), int(batch_size)
        self.x_stage = np.zeros((self.batch_size, buffer.feature_count), F32)
        if buffer.target_count:
            self.y_stage = np.zeros((self.batch_size, buffer.target_count), F32)
        else:
            self.y_stage = np.zeros(self.batch_size, np.uint8)
        self.last_trained = 0  # entries visited by the last retrain (epochs * count)
        self.last_refused = False  # the last retrain stopped at a refused step

    @classmethod
    def tinyol(cls, classifier: Classifier, scale: float | None = None, zero_point: int | None = None,
               lr: float = TrainConfig.lr, epochs: int = 1, storage: str | None = None,
               target_scale: float | None = None, target_zero_point: int | None = None) -> OnlineLearner:
        """TinyOL: train on the latest sample only (a fifo buffer of capacity 1).

        ``storage`` defaults to int8 when a scale is given, else float32.
        """
        storage = storage or ("int8" if scale is not None else "float32")
        buf = ReplayBuffer(1, classifier.n_in, storage, scale, zero_point, "fifo", 1, classifier.target_count,
                           target_scale, target_zero_point)
        return cls(classifier, buf, lr, epochs, 1)

    def staging_bytes(self) -> dict[str, int]:
        """Bytes of the device's staging arrays: none (a prediction's outputs are computed in the last layer's
        activations, retraining reads the buffer in place; ``x_stage``/``y_stage`` are host conveniences)."""
        return {}

    def retrain(self) -> int:
        """``epochs`` epochs over the buffer; returns the number of entries visited (a refused step stops
        the retraining, see the class docstring)."""
        n, b = self.buffer.count, self.batch_size
        visited = 0
        self.last_refused = False
        for _ in range(self.epochs):
            for s in range(0, n, b):
                m = min(b, n - s)
                for k in range(m):
                    if self.buffer.target_count:
                        self.buffer.entry(s + k, out=self.x_stage[k], target_out=self.y_stage[k])
                    else:
                        _, self.y_stage[k] = self.buffer.entry(s + k, out=self.x_stage[k])
                if not self.classifier.sgd_step(self.x_stage[:m], self.y_stage[:m], self.lr):
                    self.last_refused = True
                    self.last_trained = visited
                    return visited
                visited += m
        self.last_trained = visited
        return visited

    def learn(self, features: np.ndarray, label: int | np.ndarray) -> int:
        """Push one sample (``label``: a class, or the target vector of the regression head), then
        retrain; returns the slot written (-1: dropped by reservoir). ``last_refused`` then says whether a
        step was refused (the device's learn call returns -4; the sample was then removed again)."""
        if not self.buffer.target_count and not 0 <= int(label) < self.classifier.n_classes:
            raise ValueError(f"label {label} is not in 0..{self.classifier.n_classes - 1}")
        before = self.buffer.state.copy()
        slot = self.buffer.push(features, label if self.buffer.target_count else int(label))
        self.retrain()
        if self.last_refused:
            self.buffer.unpush(slot, before)
        return slot

    def features_float(self, features: np.ndarray) -> np.ndarray:
        """float32 features: int8 (int16) ones dequantized with the buffer's (scale, zero point)."""
        f = np.asarray(features)
        if f.dtype in (np.int8, np.int16):
            if self.buffer.scale is None:
                raise ValueError(f"{f.dtype.name} features need the buffer's scale")
            return dequantize_features(f, self.buffer.scale, self.buffer.zero_point)
        return f.astype(F32)

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(classes, probabilities or outputs) of one feature vector or a batch [N, F]."""
        return self.classifier.predict(self.features_float(features))
