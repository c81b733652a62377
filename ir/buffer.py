"""Replay buffers and the online learner (reference semantics for the device runtime).

Policies (``capacity`` entries of features + a uint8 label):
- ``fifo``: a ring; when full the oldest entry is overwritten. Training visits every valid
  entry, oldest to newest (TyBox's Python buffer only used entries written since the last
  wrap-around; this one never drops valid entries).
- ``reservoir``: reservoir sampling over the stream: the n-th sample (1-based) is kept if
  n <= capacity, else it replaces slot r = rand() % n when r < capacity. rand() is xorshift32
  (x ^= x << 13; x ^= x >> 17; x ^= x << 5 on uint32) seeded with ``seed`` (non-zero).
  Training visits slots in index order.
- ``class_balanced``: while not full, append; when full, overwrite the oldest entry of the
  most represented class, counting the incoming sample (ties: the incoming sample's class,
  else the lowest class index; only classes with stored entries are candidates). Training
  visits slots in index order.
Storage ``int8`` keeps features quantized with the feature extractor's output (scale, zero
point): float features are quantized as TFLite does (round half away from zero, clamp), int8
features are stored as they are; training dequantizes (q - zp) * scale in float32.
"""
from __future__ import annotations

import numpy as np

from .quant import dequantize, quantize

POLICIES = ("fifo", "reservoir", "class_balanced")


def xorshift32(state: int) -> int:
    x = state & 0xFFFFFFFF
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    return x


class ReplayBuffer:
    def __init__(self, capacity: int, feature_count: int, storage: str = "int8", scale: float = 1.0,
                 zero_point: int = 0, policy: str = "fifo", seed: int = 1) -> None:
        if capacity < 1:
            raise ValueError("buffer capacity must be at least 1")
        if policy not in POLICIES:
            raise ValueError(f"unknown buffer policy {policy!r}; known: {', '.join(POLICIES)}")
        if storage not in ("int8", "float32"):
            raise ValueError("buffer storage must be int8 or float32")
        self.capacity, self.features, self.storage, self.policy = capacity, feature_count, storage, policy
        self.scale, self.zero_point = float(scale), int(zero_point)
        self.data = np.zeros((capacity, feature_count), np.int8 if storage == "int8" else np.float32)
        self.labels = np.zeros(capacity, np.uint8)
        self.seed = seed if seed else 1
        self.reset()

    # state: count (valid entries), head (next slot / oldest for fifo), seen (stream length), rng,
    # and for class_balanced the insertion stamp of each slot
    def reset(self) -> None:
        self.count = 0
        self.head = 0
        self.seen = 0
        self.rng = self.seed & 0xFFFFFFFF
        self.stamp = np.zeros(self.capacity, np.uint32)

    def nbytes(self) -> int:
        """Bytes of the buffer arrays (entries + labels + per-slot stamps) plus 16 bytes of state."""
        return self.data.nbytes + self.labels.nbytes + self.stamp.nbytes + 16

    @staticmethod
    def bytes_for(capacity: int, feature_count: int, storage: str = "int8") -> int:
        item = 1 if storage == "int8" else 4
        return capacity * (feature_count * item + 1 + 4) + 16

    def _store(self, slot: int, features: np.ndarray, label: int) -> None:
        f = np.asarray(features).reshape(-1)
        if f.size != self.features:
            raise ValueError(f"expected {self.features} features, got {f.size}")
        if self.storage == "int8":
            self.data[slot] = f if f.dtype == np.int8 else quantize(f, self.scale, self.zero_point)
        else:
            self.data[slot] = dequantize(f, self.scale, self.zero_point) if f.dtype == np.int8 else f
        self.labels[slot] = label
        self.stamp[slot] = self.seen

    def push(self, features: np.ndarray, label: int) -> int:
        """Insert one sample; return the slot written, or -1 when reservoir sampling skipped it."""
        if not 0 <= int(label) <= 255:
            raise ValueError("labels must be in 0..255")
        self.seen += 1
        if self.policy == "fifo":
            slot = self.head
            self.head = (self.head + 1) % self.capacity
            self.count = min(self.count + 1, self.capacity)
        elif self.count < self.capacity:
            slot = self.count
            self.count += 1
        elif self.policy == "reservoir":
            self.rng = xorshift32(self.rng)
            r = self.rng % self.seen
            if r >= self.capacity:
                return -1
            slot = int(r)
        else:  # class_balanced
            stored = self.class_counts(256)
            counts = stored.copy()
            counts[int(label)] += 1
            cands = [c for c in np.nonzero(counts == counts.max())[0] if stored[c] > 0]
            if not cands:  # the incoming class is the only maximum and has no entry yet
                cands = list(np.nonzero(stored == stored.max())[0])
            cls = int(label) if int(label) in cands else int(min(cands))
            members = np.nonzero(self.labels[:self.count] == cls)[0]
            slot = int(members[np.argmin(self.stamp[members])])
        self._store(slot, features, int(label))
        return slot

    def order(self) -> np.ndarray:
        """Slots in training order."""
        if self.policy == "fifo" and self.count == self.capacity:
            return (np.arange(self.capacity) + self.head) % self.capacity
        return np.arange(self.count)

    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        """(float32 features, labels) of every valid entry in training order."""
        idx = self.order()
        d = self.data[idx]
        x = dequantize(d, self.scale, self.zero_point) if self.storage == "int8" else d.astype(np.float32)
        return x, self.labels[idx].astype(np.int64)

    def class_counts(self, n_classes: int) -> np.ndarray:
        return np.bincount(self.labels[:self.count], minlength=n_classes)[:n_classes]


class OnlineLearner:
    """``learn(x, y)`` = push into the buffer, then retrain the classifier on every valid entry."""

    def __init__(self, classifier, buffer: ReplayBuffer, lr: float = 0.01, epochs: int = 1,
                 batch_size: int = 1) -> None:
        self.classifier, self.buffer = classifier, buffer
        self.lr, self.epochs, self.batch_size = lr, epochs, batch_size
        self.last_trained = 0

    def learn(self, features: np.ndarray, label: int) -> None:
        self.buffer.push(features, label)
        x, y = self.buffer.entries()
        self.last_trained = self.classifier.train_epochs(x, y, self.lr, self.epochs, self.batch_size)

    def features_float(self, features: np.ndarray) -> np.ndarray:
        f = np.asarray(features)
        if f.dtype == np.int8:
            return dequantize(f, self.buffer.scale, self.buffer.zero_point)
        return f.astype(np.float32)

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.classifier.predict(self.features_float(features))
