"""On-device classifier training: the reference semantics the generated C code reproduces.

The trainable classifier Φc is a chain of L Dense layers, weights W_l [out, in] (TFLite layout),
biases b_l [out]. Every value and every intermediate is float32 (numpy arrays are float32 and
float32 scalars are used for constants); sums follow the C loop order (see "Summation order"
below), so a C port in ``float`` matches bit for bit, and within 1e-5 whatever its order.

Forward, for the rows r of a batch X [N, I] (used by training and by prediction)::

    a_0 = X
    for l = 1..L:
        z_l[r, o] = (sum_i a_{l-1}[r, i] * W_l[o, i]) + b_l[o]       # dot product, then + bias
        a_l = act_l(z_l)  for l < L
        a_L = z_L                                                    # logits
    p[r] = softmax(z_L[r]):  m = max_o z_L[r, o];  e_o = exp(z_L[r, o] - m);  s = sum_o e_o;
                             p[r, o] = e_o / s

    act: relu max(z, 0); relu6 min(max(z, 0), 6); leaky_relu z > 0 ? z : alpha * z (alpha >= 0, the layer's
    float32 negative slope); sigmoid 1 / (1 + exp(-z)); tanh tanh(z); linear z.

Heads (``loss``), what ``forward`` returns and the loss trained on (each exactly the Keras loss,
mean over the batch):

- ``ce`` (default, >= 2 outputs): p = softmax(z_L) as above; Keras ``SparseCategoricalCrossentropy``
  with integer labels y_r in 0..C-1: loss = -(1/N) sum_r log p[r, y_r]. The last layer's Keras
  activation is not applied as such: whether the model ends in ``softmax`` or in a linear layer
  producing logits (or ``relu``/``sigmoid``/``tanh``, likewise ignored), z_L are the logits.
  ``predict``: arg-max of p (ties: the lowest class index).
- ``bce`` (1 output, last activation ``sigmoid`` or ``linear`` = logits): p = sigmoid(z_L) =
  1 / (1 + exp(-z_L)); Keras ``BinaryCrossentropy`` with labels y_r in {0, 1}: loss =
  -(1/N) sum_r (y_r log p_r + (1 - y_r) log(1 - p_r)). ``predict``: class 1 when p > 0.5, else 0.
- ``mse`` (any number of outputs K, last activation anything but softmax, *applied*):
  out = act_L(z_L); Keras ``MeanSquaredError`` with float targets t [N, K]: loss =
  (1/N) sum_r (1/K) sum_k (out[r, k] - t[r, k])^2. ``predict``: class 0 and the outputs.

Softmax is rejected on hidden layers.

Backward, d_L = dloss/dz_L::

    ce:  d_L[r, o] = p[r, o];  d_L[r, y_r] -= 1;  d_L[r, o] = d_L[r, o] / N
    bce: d_L[r, 0] = (p[r] - y_r) / N
    mse: d_L[r, k] = ((2 * (out[r, k] - t[r, k])) / (N * K)) * act_L'(out[r, k])

then, for every head, the deltas of the lower layers, all from the *old* weights::

    for l = L..2 (while a lower layer is trained, see "What is trained"):
        d_{l-1}[r, i] = (sum_o d_l[r, o] * W_l[o, i]) * act'_{l-1}(a_{l-1}[r, i])

    act' from the activation output a: relu (a > 0 ? 1 : 0); relu6 (0 < a < 6 ? 1 : 0); leaky_relu
    (a > 0 ? 1 : alpha: the sign of a is the sign of z for alpha >= 0); sigmoid a * (1 - a); tanh 1 - a * a;
    linear 1. At the kinks these are TensorFlow's gradients: relu6 0 at z = 0 and z = 6 (Relu6Grad:
    0 < z < 6), leaky_relu alpha at z = 0 (LeakyReluGrad: z > 0 ? 1 : alpha).

Fused SGD update (the Tiny Training Engine's reordering): once every delta is known, each trained
parameter is updated in place with its gradient computed element by element, and nothing
weight-sized is kept::

    gW = sum_r d_l[r, o] * a_{l-1}[r, i];   W_l[o, i] = W_l[o, i] - lr * gW
    gb = sum_r d_l[r, o];                   b_l[o]    = b_l[o] - lr * gb

(the same numbers as dW/db arrays followed by an update: the rows' sum is taken in the same order).
For a batch the per-row deltas and activations, which the backward pass needs anyway, are the
smallest exact form of the gradient: no other array. No clipping, no momentum, no weight decay.

Refusal (``sgd_step`` returns False): when any updated weight or bias would not be finite (NaN or
infinity: from a non-finite delta or an overflowing update) the step changes nothing. The C runtime
does the same with two passes over the trained parameters (check, then write).

What is trained (``train``, TinyTL): ``all`` every layer's weights and biases; ``last`` the last
layer's weights and bias (no delta below it); ``bias`` every layer's bias plus the last layer's
weights. The step above is the gradient step of the loss on that subset (the other parameters fixed).

Epochs (``train_epochs``) visit the samples in the
order given, no shuffling: batch_size 1 = one update per sample (TyBox); batch_size B = updates on
consecutive rows [0, B), [B, 2B), ...; the last, partial batch is included (N = its size).

Training state: the arrays a training step writes are preallocated for ``max_batch`` rows — kept
activations a_l (the logits for l = L; the outputs for ``mse``) [max_batch, out] of every layer and
deltas d_l [max_batch, out] of every layer that needs one (see ``training_state_bytes``): 8 bytes per
classifier unit and row at most, nothing that grows with the number of weights. The softmax / sigmoid
probabilities are written into d_L. A batch larger than ``max_batch`` is an error, as on the device.

Summation order: every sum above is accumulated sequentially in float32 in index order (inputs of
a dot product, outputs of a delta, rows of a gradient, starting from 0), and exp/tanh are rounded from double, so
that the C runtime (plain loops, expf/tanhf) reproduces these numbers bit for bit.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

F32 = np.float32
ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax", "relu6", "leaky_relu")
LOSSES = ("ce", "bce", "mse")  # softmax cross-entropy, sigmoid binary cross-entropy, mean squared error
TRAIN_MODES = ("all", "last", "bias")  # what the device trains (see the module docstring)
FLOAT_BYTES = 4


@dataclass
class DenseLayer:
    """One trainable Dense layer: weight [out, in] (TFLite layout), bias [out], activation name, and ``alpha``
    the negative slope of ``leaky_relu`` (float32, >= 0; 0 for the other activations)."""

    weight: np.ndarray
    bias: np.ndarray
    activation: str = "linear"
    alpha: float = 0.0

    def __post_init__(self) -> None:
        self.weight = np.array(self.weight, dtype=F32, order="C")
        self.bias = np.array(self.bias, dtype=F32, order="C")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unsupported classifier activation {self.activation!r}; "
                             f"supported: {', '.join(ACTIVATIONS)}")
        self.alpha = float(F32(self.alpha)) if self.activation == "leaky_relu" else 0.0
        if not (np.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"leaky_relu needs a finite negative slope >= 0, got {self.alpha}")
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[0],):
            raise ValueError(f"dense layer needs weight [out, in] and bias [out], got {self.weight.shape} "
                             f"and {self.bias.shape}")

    @property
    def n_in(self) -> int:
        return int(self.weight.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])

    def copy(self) -> DenseLayer:
        return DenseLayer(self.weight.copy(), self.bias.copy(), self.activation, self.alpha)


def _exp(x: np.ndarray) -> np.ndarray:
    """float32 exp rounded from double: what C's expf gives (correctly rounded in glibc/newlib)."""
    with np.errstate(over="ignore"):
        return np.exp(np.asarray(x, np.float64)).astype(F32)


def _dot_(a: np.ndarray, w: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[N, O] = a[N, I] w[O, I]^T summed over I in index order (float32), as the C loops."""
    # np.add.accumulate (cumsum) adds strictly in sequence, like the C loop (0 + p0 == p0 exactly)
    out[...] = np.cumsum(a[:, :, None] * w.T[None, :, :], axis=1, dtype=F32)[:, -1, :]
    return out


def activate_(z: np.ndarray, name: str, alpha: float = 0.0) -> np.ndarray:
    """Apply a hidden activation to float32 ``z`` in place (``alpha``: leaky_relu's slope); returns ``z``."""
    if name == "relu":
        np.maximum(z, F32(0), out=z)
    elif name == "relu6":
        np.minimum(np.maximum(z, F32(0), out=z), F32(6), out=z)
    elif name == "leaky_relu":
        np.copyto(z, z * F32(alpha), where=~(z > F32(0)))
    elif name == "sigmoid":
        z[...] = F32(1) / (F32(1) + _exp(-z))
    elif name == "tanh":
        z[...] = np.tanh(z.astype(np.float64)).astype(F32)
    return z


def activation_derivative(a: np.ndarray, name: str, alpha: float = 0.0) -> np.ndarray:
    """act' expressed with the activation output ``a`` (float32; ``alpha``: leaky_relu's slope)."""
    if name == "relu":
        return (a > F32(0)).astype(F32)
    if name == "relu6":
        return ((a > F32(0)) & (a < F32(6))).astype(F32)
    if name == "leaky_relu":
        return np.where(a > F32(0), F32(1), F32(alpha)).astype(F32)
    if name == "sigmoid":
        return a * (F32(1) - a)
    if name == "tanh":
        return F32(1) - a * a
    return np.ones_like(a, dtype=F32)


def softmax_(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Row softmax of float32 ``z`` [N, C] into ``out`` (may be ``z``): max subtracted first."""
    m = z.max(axis=1, keepdims=True)
    np.subtract(z, m, out=out)
    out[...] = _exp(out)
    total = np.zeros((out.shape[0], 1), F32)
    for k in range(out.shape[1]):  # sequential sum, as the C runtime
        total += out[:, k:k + 1]
    out /= total
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    """Row softmax (float32, a new array)."""
    z = np.atleast_2d(np.asarray(z, F32))
    return softmax_(z, np.empty_like(z))


def check_head(layers: Sequence[DenseLayer], loss: str) -> None:
    """Raise ValueError when the last layer cannot train with ``loss`` (see the module docstring)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")
    last = layers[-1]
    if loss == "ce" and last.n_out < 2:
        raise ValueError("the classifier needs at least 2 outputs (it trains with softmax cross-entropy); "
                         "a single output trains with the bce (labels 0/1) or mse (regression) head")
    if loss == "bce" and (last.n_out != 1 or last.activation not in ("sigmoid", "linear")):
        raise ValueError(f"the binary head (bce) needs 1 output with a sigmoid or linear (logit) activation, got "
                         f"{last.n_out} output(s) with {last.activation}")
    if loss == "mse" and last.activation == "softmax":
        raise ValueError("the regression head (mse) cannot train a softmax output")


def layer_trains(i: int, n_layers: int, mode: str) -> tuple[bool, bool]:
    """(weights trained, bias trained) of layer ``i`` of ``n_layers`` under training mode ``mode``."""
    if mode == "all" or i == n_layers - 1:
        return True, True
    return False, mode == "bias"


def layer_has_delta(i: int, n_layers: int, mode: str) -> bool:
    """Whether the backward pass computes d_i: layer i or a layer below it is trained."""
    return any(any(layer_trains(j, n_layers, mode)) for j in range(i + 1))


class Classifier:
    """A chain of Dense layers trained on the device with plain SGD: softmax cross-entropy (``ce``),
    sigmoid binary cross-entropy (``bce``) or mean squared error (``mse``)."""

    def __init__(self, layers: Sequence[DenseLayer], max_batch: int = 1, loss: str = "ce",
                 train: str = "all") -> None:
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("the classifier needs at least one Dense layer")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if train not in TRAIN_MODES:
            raise ValueError(f"unknown training mode {train!r}; known: {', '.join(TRAIN_MODES)}")
        for i, (a, b) in enumerate(zip(self.layers, self.layers[1:])):
            if a.n_out != b.n_in:
                raise ValueError(f"classifier layer {i + 1} expects {b.n_in} inputs, layer {i} gives {a.n_out}")
            if a.activation == "softmax":
                raise ValueError("softmax is only allowed on the last classifier layer")
        check_head(self.layers, loss)
        self.loss_name = loss
        self.train_mode = train
        self.max_batch = int(max_batch)
        self._act = [np.zeros((self.max_batch, l.n_out), F32) for l in self.layers]
        self._delta = [np.zeros((self.max_batch, l.n_out), F32) if self.has_delta(i) else None
                       for i, l in enumerate(self.layers)]

    @classmethod
    def from_keras_dense(cls, layers: Sequence[tuple[np.ndarray, np.ndarray, str | None]],
                         max_batch: int = 1, loss: str = "ce", train: str = "all") -> Classifier:
        """From Keras ``(kernel [in, out], bias [out], activation)`` triples (None = linear)."""
        return cls([DenseLayer(np.asarray(k, F32).T, b, a or "linear") for k, b, a in layers], max_batch, loss,
                   train)

    def copy(self) -> Classifier:
        return Classifier([l.copy() for l in self.layers], self.max_batch, self.loss_name, self.train_mode)

    def trains(self, i: int) -> tuple[bool, bool]:
        """(weights trained, bias trained) of layer ``i`` under the training mode."""
        return layer_trains(i, len(self.layers), self.train_mode)

    def has_delta(self, i: int) -> bool:
        """Whether the backward pass computes d_i (layer i or a layer below it is trained)."""
        return layer_has_delta(i, len(self.layers), self.train_mode)

    @property
    def n_in(self) -> int:
        return self.layers[0].n_in

    @property
    def n_out(self) -> int:
        """Outputs of the last layer (probabilities, the sigmoid probability, or the regression outputs)."""
        return self.layers[-1].n_out

    @property
    def n_classes(self) -> int:
        """Label values: the outputs for ``ce``, 2 for ``bce``, 0 for ``mse`` (float targets, no labels)."""
        return {"ce": self.n_out, "bce": 2, "mse": 0}[self.loss_name]

    @property
    def target_count(self) -> int:
        """Floats per training target: the outputs for ``mse``, 0 for the label heads."""
        return self.n_out if self.loss_name == "mse" else 0

    # ---- memory accounting ----
    def param_bytes(self) -> int:
        """Bytes of the trainable float32 weights and biases."""
        return sum(l.weight.nbytes + l.bias.nbytes for l in self.layers)

    def training_state_bytes(self, batch_size: int | None = None) -> dict[str, int]:
        """Bytes of the training work arrays for ``batch_size`` rows (default ``max_batch``): kept
        activations of every layer, deltas of the layers that need one; no gradient arrays."""
        b = self.max_batch if batch_size is None else int(batch_size)
        return {"activations": FLOAT_BYTES * b * sum(l.n_out for l in self.layers),
                "deltas": FLOAT_BYTES * b * sum(l.n_out for i, l in enumerate(self.layers) if self.has_delta(i))}

    def work_arrays(self) -> dict[str, list[np.ndarray]]:
        """The preallocated training arrays, keyed like ``training_state_bytes``."""
        return {"activations": self._act, "deltas": [d for d in self._delta if d is not None]}

    # ---- inference ----
    def logits(self, x: np.ndarray) -> np.ndarray:
        """z_L for a batch [N, in] (or one vector); allocates its result."""
        a = np.atleast_2d(np.asarray(x, F32))
        last = len(self.layers) - 1
        for i, l in enumerate(self.layers):
            z = _dot_(a, l.weight, np.empty((a.shape[0], l.n_out), F32))
            z += l.bias
            a = z if i == last else activate_(z, l.activation, l.alpha)
        return a

    def _head_(self, z: np.ndarray) -> np.ndarray:
        """The head applied in place to z_L: softmax (ce), sigmoid (bce), the last activation (mse)."""
        if self.loss_name == "ce":
            return softmax_(z, z)
        if self.loss_name == "bce":
            return activate_(z, "sigmoid")
        return activate_(z, self.layers[-1].activation, self.layers[-1].alpha)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Probabilities softmax(z_L) [N, classes] (ce), sigmoid(z_L) [N, 1] (bce), outputs [N, K] (mse)."""
        return self._head_(self.logits(x))

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class per row, ``forward``): arg-max (ce), p > 0.5 (bce), 0 (mse)."""
        p = self.forward(x)
        if self.loss_name == "ce":
            return p.argmax(axis=1), p
        if self.loss_name == "bce":
            return (p[:, 0] > F32(0.5)).astype(np.intp), p
        return np.zeros(p.shape[0], np.intp), p

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """Mean loss of the head (for monitoring; not used by training)."""
        p = self.forward(x).astype(np.float64)
        t = self._targets(y, p.shape[0])
        if self.loss_name == "ce":
            return float(-np.mean(np.log(p[np.arange(len(t)), t])))
        if self.loss_name == "bce":
            y1 = t.astype(np.float64)
            return float(-np.mean(y1 * np.log(p[:, 0]) + (1 - y1) * np.log1p(-p[:, 0])))
        return float(np.mean((p - t) ** 2))

    # ---- training ----
    def _targets(self, y: np.ndarray, n: int) -> np.ndarray:
        """Checked labels (ce, bce: integers [n]) or targets (mse: float32 [n, K])."""
        if self.loss_name == "mse":
            t = np.asarray(y)
            if not (np.issubdtype(t.dtype, np.floating) or np.issubdtype(t.dtype, np.integer)):
                raise ValueError(f"regression targets must be numbers, got {t.dtype}")
            if t.size != n * self.n_out:
                raise ValueError(f"{n} feature rows need {n} targets of {self.n_out} values, got {t.size} values")
            t = t.astype(F32).reshape(n, self.n_out)
            if not np.isfinite(t).all():
                raise ValueError("regression targets must be finite")
            return t
        yy = np.asarray(y).reshape(-1)
        if yy.shape[0] != n:
            raise ValueError(f"{n} feature rows but {yy.shape[0]} labels")
        if not np.issubdtype(yy.dtype, np.integer):
            raise ValueError("labels must be integer class indices")
        if n and (yy.min() < 0 or yy.max() >= self.n_classes):
            raise ValueError(f"labels must be in 0..{self.n_classes - 1}")
        return yy.astype(np.intp)

    def _output_delta(self, n: int, t: np.ndarray) -> None:
        """d_L of the head (see the module docstring), from the kept last activations."""
        last = len(self.layers) - 1
        z, d = self._act[last][:n], self._delta[last][:n]
        if self.loss_name == "ce":
            softmax_(z, d)
            d[np.arange(n), t] -= F32(1)
            d /= F32(n)
        elif self.loss_name == "bce":
            d[...] = z
            activate_(d, "sigmoid")
            d[:, 0] -= t.astype(F32)
            d /= F32(n)
        else:  # z holds the outputs (the activation was applied in the forward pass)
            np.subtract(z, t, out=d)
            d *= F32(2)
            d /= F32(n * self.n_out)
            d *= activation_derivative(z, self.layers[last].activation, self.layers[last].alpha)

    def _backward(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Forward + deltas into the work arrays (see the module docstring); returns x as float32 [N, in]."""
        x = np.ascontiguousarray(np.atleast_2d(x), dtype=F32)
        n = x.shape[0]
        if x.shape[1] != self.n_in:
            raise ValueError(f"expected {self.n_in} features, got {x.shape[1]}")
        if not 1 <= n <= self.max_batch:
            raise ValueError(f"a training batch of {n} rows does not fit the preallocated state "
                             f"(max_batch {self.max_batch})")
        t = self._targets(y, n)
        last = len(self.layers) - 1
        a = x
        for i, l in enumerate(self.layers):
            z = self._act[i][:n]
            _dot_(a, l.weight, z)
            z += l.bias
            if i < last or self.loss_name == "mse":
                activate_(z, l.activation, l.alpha)
            a = z
        self._output_delta(n, t)
        for i in range(last, 0, -1):
            if not self.has_delta(i - 1):
                break
            d, dp = self._delta[i][:n], self._delta[i - 1][:n]
            w = self.layers[i].weight
            dp[...] = np.cumsum(d[:, :, None] * w[None, :, :], axis=1, dtype=F32)[:, -1, :]
            dp *= activation_derivative(self._act[i - 1][:n], self.layers[i - 1].activation, self.layers[i - 1].alpha)
        return x

    def _layer_grads(self, x: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(dW, db) of layer i from the kept deltas and activations, rows summed in order (host only:
        the device never holds them, it takes each element as it updates it)."""
        n = x.shape[0]
        prev = x if i == 0 else self._act[i - 1][:n]
        d = self._delta[i][:n]
        dw = np.zeros_like(self.layers[i].weight)
        db = np.zeros_like(self.layers[i].bias)
        for r in range(n):  # sequential over rows, as the C loops
            dw += d[r][:, None] * prev[r][None, :]
            db += d[r]
        return dw, db

    def grads(self, x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
        """Per layer (dW [out, in], db [out]) of the mean loss; None for what the mode does not train."""
        x = self._backward(x, y)
        out: list[tuple[np.ndarray | None, np.ndarray | None]] = []
        for i in range(len(self.layers)):
            tw, tb = self.trains(i)
            dw, db = self._layer_grads(x, i) if tw or tb else (None, None)
            out.append((dw if tw else None, db if tb else None))
        return out

    def sgd_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> bool:
        """One fused SGD update on the batch (at most ``max_batch`` rows); ``y``: labels or targets [N, K].
        Returns False, changing nothing, when a trained weight or bias would become non-finite."""
        rate = F32(lr)
        new: list[tuple[DenseLayer, np.ndarray | None, np.ndarray | None]] = []
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is what the check below refuses
            x = self._backward(x, y)
            for i, l in enumerate(self.layers):
                tw, tb = self.trains(i)
                if not (tw or tb):
                    continue
                dw, db = self._layer_grads(x, i)
                w = l.weight - rate * dw if tw else None
                b = l.bias - rate * db if tb else None
                if (w is not None and not np.isfinite(w).all()) or (b is not None and not np.isfinite(b).all()):
                    return False
                new.append((l, w, b))
        for l, w, b in new:
            if w is not None:
                l.weight[...] = w
            if b is not None:
                l.bias[...] = b
        return True

    def train_epochs(self, xs: np.ndarray, ys: np.ndarray, lr: float, epochs: int = 1, batch_size: int = 1) -> int:
        """Epochs over (xs, ys) in order, consecutive batches; returns the number of rows visited. A refused
        step (see ``sgd_step``) stops the training there: the rows visited so far are returned."""
        xs = np.asarray(xs, F32)
        ys = np.asarray(ys)
        if batch_size < 1 or batch_size > self.max_batch:
            raise ValueError(f"batch_size must be in 1..{self.max_batch} (max_batch)")
        if epochs < 0:
            raise ValueError("epochs must be >= 0")
        if len(xs) != len(ys):
            raise ValueError(f"{len(xs)} feature rows but {len(ys)} labels")
        seen = 0
        for _ in range(epochs):
            for s in range(0, len(xs), batch_size):
                if not self.sgd_step(xs[s:s + batch_size], ys[s:s + batch_size], lr):
                    return seen
                seen += min(batch_size, len(xs) - s)
        return seen
