"""On-device classifier training: the reference semantics the generated C reproduces.

Float32 throughout. For a batch X [N, I] and integer labels y:
  forward, per layer l:  z_l = a_{l-1} W_l^T + b_l;  a_l = act_l(z_l)   (a_0 = X)
  the last layer is trained through softmax + cross-entropy, whatever its activation in Keras
  (a linear or softmax last layer both mean logits z_L); probabilities p = softmax(z_L) with the
  row max subtracted first.
  backward: d_L = (p - onehot(y)) / N;  dW_l = d_l^T a_{l-1};  db_l = sum_n d_l
            d_{l-1} = (d_l W_l) * act'_{l-1}(z_{l-1})  with act' taken from a_{l-1}:
            relu: a > 0; sigmoid: a (1 - a); tanh: 1 - a^2; linear: 1
  SGD: W_l -= lr dW_l; b_l -= lr db_l (all layers updated after the backward pass).
Epochs run over the given samples in order; batch_size 1 = per-sample updates (TyBox), larger
batches take consecutive samples, the last batch may be partial. No shuffling.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

F32 = np.float32
ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax")


@dataclass
class DenseLayer:
    """weight [out, in] (TFLite layout), bias [out], activation name."""

    weight: np.ndarray
    bias: np.ndarray
    activation: str = "linear"

    def __post_init__(self) -> None:
        self.weight = np.ascontiguousarray(self.weight, dtype=F32)
        self.bias = np.ascontiguousarray(self.bias, dtype=F32)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unsupported classifier activation {self.activation!r}")

    @property
    def n_in(self) -> int:
        return int(self.weight.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])


def _act(z: np.ndarray, name: str) -> np.ndarray:
    if name == "relu":
        return np.maximum(z, F32(0))
    if name == "sigmoid":
        return (F32(1) / (F32(1) + np.exp(-z))).astype(F32)
    if name == "tanh":
        return np.tanh(z).astype(F32)
    return z


def _dact(a: np.ndarray, name: str) -> np.ndarray:
    if name == "relu":
        return (a > 0).astype(F32)
    if name == "sigmoid":
        return (a * (F32(1) - a)).astype(F32)
    if name == "tanh":
        return (F32(1) - a * a).astype(F32)
    return np.ones_like(a, dtype=F32)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp((z - z.max(axis=-1, keepdims=True)).astype(F32))
    return (e / e.sum(axis=-1, keepdims=True)).astype(F32)


@dataclass
class Classifier:
    """A chain of Dense layers trained on the device with softmax cross-entropy and SGD."""

    layers: list[DenseLayer]
    max_batch: int = 1
    _acts: list[np.ndarray] = field(init=False, repr=False)
    _deltas: list[np.ndarray] = field(init=False, repr=False)
    _dw: list[np.ndarray] = field(init=False, repr=False)
    _db: list[np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for i, (a, b) in enumerate(zip(self.layers, self.layers[1:])):
            if a.n_out != b.n_in:
                raise ValueError(f"classifier layer {i + 1} expects {b.n_in} inputs, layer {i} gives {a.n_out}")
            if a.activation == "softmax":
                raise ValueError("softmax is only allowed on the last classifier layer")
        self._alloc(self.max_batch)

    # preallocated training state: exactly what training_state_bytes() counts
    def _alloc(self, batch: int) -> None:
        self.max_batch = batch
        self._acts = [np.zeros((batch, l.n_out), F32) for l in self.layers]
        self._deltas = [np.zeros((batch, l.n_out), F32) for l in self.layers]
        self._dw = [np.zeros_like(l.weight) for l in self.layers]
        self._db = [np.zeros_like(l.bias) for l in self.layers]

    @property
    def n_in(self) -> int:
        return self.layers[0].n_in

    @property
    def n_classes(self) -> int:
        return self.layers[-1].n_out

    def param_bytes(self) -> int:
        return sum(l.weight.nbytes + l.bias.nbytes for l in self.layers)

    def training_state_bytes(self, batch_size: int = 1) -> dict[str, int]:
        """Bytes of the arrays training allocates: kept activations, deltas, weight/bias gradients."""
        outs = sum(l.n_out for l in self.layers)
        return {"activations": 4 * batch_size * outs, "deltas": 4 * batch_size * outs,
                "weight_grads": sum(l.weight.nbytes for l in self.layers),
                "bias_grads": sum(l.bias.nbytes for l in self.layers)}

    def allocated_training_bytes(self) -> int:
        arrays = self._acts + self._deltas + self._dw + self._db
        return int(sum(a.nbytes for a in arrays))

    @classmethod
    def from_keras_dense(cls, layers: list[tuple[np.ndarray, np.ndarray, str]], max_batch: int = 1) -> "Classifier":
        """From Keras (kernel [in, out], bias, activation) triples."""
        return cls([DenseLayer(np.asarray(k).T, b, a) for k, b, a in layers], max_batch)

    def copy(self) -> "Classifier":
        return Classifier([DenseLayer(l.weight.copy(), l.bias.copy(), l.activation) for l in self.layers],
                          self.max_batch)

    # forward / backward
    def logits(self, x: np.ndarray) -> np.ndarray:
        a = np.asarray(x, F32)
        for i, l in enumerate(self.layers):
            z = (a @ l.weight.T + l.bias).astype(F32)
            a = z if i == len(self.layers) - 1 else _act(z, l.activation)
        return a

    def forward(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.logits(x))

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.forward(np.atleast_2d(x))
        return p.argmax(axis=-1), p

    def grads(self, x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Gradients of the mean softmax cross-entropy (filled into the preallocated arrays)."""
        x = np.atleast_2d(np.asarray(x, F32))
        y = np.asarray(y, np.int64).reshape(-1)
        n = x.shape[0]
        if n > self.max_batch:
            self._alloc(n)
        last = len(self.layers) - 1
        a = x
        for i, l in enumerate(self.layers):
            z = (a @ l.weight.T + l.bias).astype(F32)
            self._acts[i][:n] = z if i == last else _act(z, l.activation)
            a = self._acts[i][:n]
        d = self._deltas[last][:n]
        d[:] = softmax(self._acts[last][:n])
        d[np.arange(n), y] -= F32(1)
        d /= F32(n)
        for i in range(last, -1, -1):
            prev = x if i == 0 else self._acts[i - 1][:n]
            d = self._deltas[i][:n]
            self._dw[i][:] = (d.T @ prev).astype(F32)
            self._db[i][:] = d.sum(axis=0, dtype=F32)
            if i > 0:
                self._deltas[i - 1][:n] = ((d @ self.layers[i].weight) *
                                           _dact(prev, self.layers[i - 1].activation)).astype(F32)
        return [(dw, db) for dw, db in zip(self._dw, self._db)]

    def sgd_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> None:
        for l, (dw, db) in zip(self.layers, self.grads(x, y)):
            l.weight -= F32(lr) * dw
            l.bias -= F32(lr) * db

    def train_epochs(self, xs: np.ndarray, ys: np.ndarray, lr: float, epochs: int = 1, batch_size: int = 1) -> int:
        """Train in order; return the number of samples visited (for accounting tests)."""
        seen = 0
        for _ in range(epochs):
            for s in range(0, len(xs), batch_size):
                self.sgd_step(xs[s:s + batch_size], ys[s:s + batch_size], lr)
                seen += len(xs[s:s + batch_size])
        return seen
