"""Learning beyond the head in the host simulator: int8 backbone biases (TinyTL) or float convolution blocks.

A ``DeepLearner`` splits a deployment's int8 feature extractor Φf at a *deep cut* tensor (``deep_cuts``: an
activation every later op depends on only through it) into the *front* (input -> cut, int8, frozen) and the
*region* (cut -> features), followed by the float classifier Φc. The replay buffer stores the cut tensor
(int8, in its quantization). Modes:

``bias`` (TinyTL): the region stays int8 in flash and runs on the int8 kernels; the biases of its Conv2D /
    DepthwiseConv2D / Dense ops train, with Φc (every Dense weight and bias). The backward pass is the float
    one of ``tinycc.ir.backprop.Tail`` over the dequantized region, evaluated at the dequantized int8
    activations (``known``: ReLU masks, max positions and inputs of the gradients from the int8 values). A
    float master copy of each trained bias is kept; after each step the int32 bias becomes
    ``q = round(b / (s_in * s_w[c]))`` (the exact quotient of the two float32, half to even, in integer
    arithmetic: ``tinycc.ir.exact_div``, as the C on every core; clamped to int32), the scale its tensor has in
    TFLite's scheme, so inference remains the int8 kernels.
``blocks``: the region runs in float (weights initialised from the dequantized int8 weights, as
    ``Classifier`` starts from the dequantized Dense layers) and every weight and bias of the region and of
    Φc trains (``Tail`` mode ``blocks``).
``sparse`` (``--train sparse``, the Tiny Training Engine's idea): the region stays int8 and runs on the int8
    kernels as in ``bias``, but only ``subset`` trains (a ``Trained`` per region op: its bias and/or some
    output channels of its weight; ``tinycc.deploy.sparse`` picks it under a budget). A trained channel keeps
    a float master copy of its weights; after each step its int8 weights become ``round(w / s_w[c])`` (exact) clamped
    to [-127, 127] (the channel's own scale, zero point 0), as its bias becomes ``requantize_bias``; the
    backward stops below the earliest trained op.

Learning rates: Φc learns at ``lr``; the region's parameters at ``deep_lr`` (default: the compiled deployment's
``meta["deep"]["deep_lr"]``, the typed config's ``backbone_lr``, a tenth of ``--lr`` unless ``--deep-lr``; else
``lr``): a backbone usually needs a smaller rate than a fresh head.

Φc's hidden activations must be ``relu`` or ``linear`` (the Tail's fused activations); the head is ``ce``.
Training: ``learn`` pushes the cut tensor and its label, then ``epochs`` epochs over the buffer in its
training order, batches of ``batch_size`` consecutive entries, one SGD step each (a refused step ends the
retraining and removes the sample again, as ``OnlineLearner``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .backprop import PARAM_KINDS, NoBackward, Tail, Trained, known_bytes, step_memory
from .buffer import ReplayBuffer
from .exact_div import round_div
from .graph import Graph, Op
from .interpreter_int8 import run_int8
from .ops import OpKind
from .quant import dequantize
from .tensor import DType, Tensor

F32 = np.float32
DEEP_MODES = ("bias", "blocks")  # `--deep`; "sparse" is `--train sparse` (a subset chosen under a budget)
LEARNER_MODES = DEEP_MODES + ("sparse",)
INT32 = np.iinfo(np.int32)


def requantize_bias(b: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int32 bias of float ``b`` at the bias scale s_in * s_w[c]: the exact b / scale (float32 operands) rounded
    half to even, clamped to int32."""
    return round_div(b, scale, int(INT32.min), int(INT32.max)).astype(np.int32)


def _view(ext: Graph, classifier: list[Any]) -> Graph:
    """Φf followed by Φc as float Dense ops (logits out): the graph the Tail differentiates."""
    g = ext.copy()
    x = g.outputs[0]
    if len(g.tensors[x].shape) != 2:
        raise ValueError("the features must be a flat vector")
    for i, layer in enumerate(classifier):
        if i < len(classifier) - 1 and layer.activation not in ("relu", "relu6", "linear"):
            raise ValueError(f"classifier layer {i}: a {layer.activation} hidden layer has no deep backward pass")
        w = g.add_const(g.unique_tensor_name(f"head{i}/w"), layer.weight.copy(), DType.FLOAT32).name
        b = g.add_const(g.unique_tensor_name(f"head{i}/b"), layer.bias.copy(), DType.FLOAT32).name
        act = layer.activation if layer.activation in ("relu", "relu6") and i < len(classifier) - 1 else "none"
        y = g.unique_tensor_name(f"head{i}/out")
        g.add_tensor(Tensor(y, (1, layer.n_out), DType.FLOAT32))
        g.ops.append(Op(g.unique_op_name(f"head{i}"), OpKind.DENSE, [x, w, b], [y], {"activation": act}, f"head{i}"))
        x = y
    g.outputs = [x]
    return g


def deep_cuts(ext: Graph, classifier: list[Any]) -> list[str]:
    """The int8 activations of Φf where a deep cut can be placed (latest first), with the number of
    parameter layers after each: the tensors every later op reaches only through them."""
    view = _view(ext, classifier)
    out = []
    for op in reversed(ext.ops):
        t = op.outputs[0]
        if ext.tensors[t].dtype != DType.INT8 or t == ext.outputs[0]:
            continue
        try:
            Tail(view, t, "blocks")
        except ValueError:
            continue
        out.append(t)
    return out


def cut_refusal(ext: Graph, classifier: list[Any], t: str) -> str | None:
    """Why tensor ``t`` of Φf is no deep cut because a later op has no backward pass (the message names the op and
    its layer), or None (a valid cut, or refused for another reason such as a later op reading an earlier tensor)."""
    try:
        Tail(_view(ext, classifier), t, "blocks")
    except NoBackward as e:
        return str(e)
    except ValueError:
        return None
    return None


def _subgraph(g: Graph, ops: list[Op], inputs: list[str], outputs: list[str]) -> Graph:
    s = Graph(g.name)
    s.tensors = g.tensors  # shared: the region's int32 biases are written in place
    s.ops, s.inputs, s.outputs = ops, inputs, outputs
    return s


class DeepLearner:
    """A deployment learning beyond its head (see the module docstring)."""

    def __init__(self, dep: Any, cut: str, mode: str = "bias", capacity: int | None = None,
                 lr: float | None = None, epochs: int | None = None, batch_size: int | None = None,
                 deep_lr: float | None = None, subset: dict[str, Trained] | None = None) -> None:
        if mode not in LEARNER_MODES:
            raise ValueError(f"unknown deep training mode {mode!r}; known: {', '.join(LEARNER_MODES)}")
        if (mode == "sparse") != (subset is not None):
            raise ValueError("a subset of trained parameters goes with (and only with) the sparse mode")
        if dep.loss != "ce":
            raise ValueError("learning beyond the head needs the ce head")
        self.mode = mode
        self.view = _view(dep.extractor, dep.classifier)  # owns a copy of Φf: its biases change
        v = self.view
        producers = v.producers_map()
        if cut not in v.tensors or cut not in producers or v.tensors[cut].dtype != DType.INT8:
            raise ValueError(f"no int8 activation {cut!r} in the feature extractor")
        n_ext = len(dep.extractor.ops)
        head = {op.name for op in v.ops[n_ext:]}
        if subset is not None:  # Φc trains whole; the region: what the subset names (region op names)
            subset = dict(subset, **{k: Trained(True, None) for k in head})
        self.tail = Tail(v, cut, "blocks", None if mode == "blocks" else head, subset=subset)
        region = [op for op in self.tail.ops if op.name not in head]
        front = v.ops[:v.ops.index(producers[cut]) + 1]
        self.front = _subgraph(v, front, list(v.inputs), [cut])
        self.region = _subgraph(v, region, [cut], [dep.extractor.outputs[0]])
        self.region_params = [op for op in region if op.kind in PARAM_KINDS]
        if mode == "bias" and self.region_params and not any(len(op.inputs) > 2 for op in self.region_params):
            raise ValueError("no layer after the cut has a bias to train")
        for op in self.region_params if mode == "sparse" else []:
            w = v.tensors[op.inputs[1]]
            if self.tail.trains(op.name)[0] and (w.dtype != DType.INT8 or w.quant is None
                                                 or np.any(np.asarray(w.quant.zero_point) != 0)):
                raise ValueError(f"{op.describe()}: sparse weight updates need int8 weights with zero point 0")
        q = v.tensors[cut].quant
        self.cut, self.cut_scale, self.cut_zp = cut, float(q.scale[0]), int(q.zero_point[0])
        self.cut_shape = tuple(v.tensors[cut].shape[1:])
        self.lr = dep.train.lr if lr is None else float(lr)
        if deep_lr is None:  # the deployment's backbone rate (--deep-lr, as compiled), else the head's
            deep_lr = dep.meta.get("deep", {}).get("deep_lr", self.lr) if lr is None else self.lr
        self.deep_lr = float(deep_lr)
        self.head_ops = head
        self.rates = {op.name: self.deep_lr for op in self.region_params}
        self.epochs = dep.train.epochs if epochs is None else int(epochs)
        self.batch_size = int(batch_size or dep.train.batch_size)
        self.buffer = ReplayBuffer(capacity or dep.buffer.capacity, int(np.prod(self.cut_shape)), "int8",
                                   self.cut_scale, self.cut_zp, dep.buffer.policy, dep.buffer.seed)
        self.num_classes = int(dep.classifier[-1].n_out)
        self.last_refused = False

    def known_tensors(self) -> tuple[str, ...]:
        """The tensors the step takes as int8 (bias, sparse: every output of the int8 region; blocks: none)."""
        return tuple(op.outputs[0] for op in self.region.ops) if self.mode != "blocks" else ()

    # ---- inference ----
    def cut_of(self, x: np.ndarray) -> np.ndarray:
        """int8 cut tensors [N, ...] of float inputs (the frozen front)."""
        return run_int8(self.front, np.asarray(x, F32))[self.cut]

    def _float_cut(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q).reshape((-1,) + self.cut_shape)
        return dequantize(q, np.float32(self.cut_scale), self.cut_zp).astype(F32)

    def _known(self, q: np.ndarray) -> dict[str, np.ndarray]:
        """bias mode: the region's int8 activations, dequantized; blocks mode: none (float forward)."""
        if self.mode == "blocks":
            return {}
        q = np.asarray(q, np.int8).reshape((-1,) + self.cut_shape)
        env = run_int8(self.region, {self.cut: q}, [op.outputs[0] for op in self.region.ops])
        out = {}
        for t, a in env.items():
            tq = self.view.tensors[t].quant
            out[t] = dequantize(a, tq.scale, tq.zero_point).astype(F32)
        return out

    def logits_cut(self, q: np.ndarray) -> np.ndarray:
        """Logits [N, classes] of int8 cut tensors."""
        return self.tail.forward(self._float_cut(q), self._known(q))[self.tail.logits]

    def predict(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class per row, logits) of int8 cut tensors [N, ...] (``OnlineLearner.predict``'s shape)."""
        z = self.logits_cut(np.asarray(q).reshape((-1,) + self.cut_shape))
        return z.argmax(axis=1), z

    def predict_input(self, x: np.ndarray) -> np.ndarray:
        """Class per float input row."""
        return self.predict(self.cut_of(x))[0]

    # ---- training ----
    def step(self, q: np.ndarray, y: np.ndarray) -> bool:
        """One SGD step on int8 cut tensors ``q`` [N, ...] with labels ``y``; False (nothing changed) when refused."""
        if not self.tail.sgd_step(self._float_cut(q), y, self.lr, self._known(q), self.rates):
            return False
        if self.mode == "bias":
            for op in self.region_params:
                if not self.tail.trains(op.name)[1]:  # a layer without a bias
                    continue
                t = self.view.tensors[op.inputs[2]]
                t.data = requantize_bias(self.tail.params[op.name].bias, t.quant.scale)
        if self.mode == "sparse":
            self._requantize_subset()
        return True

    def _requantize_subset(self) -> None:
        """sparse: the int8 region takes the trained biases and channels (see the module docstring)."""
        for op in self.region_params:
            w_on, b_on = self.tail.trains(op.name)
            p = self.tail.params[op.name]
            if b_on:
                t = self.view.tensors[op.inputs[2]]
                t.data = requantize_bias(p.bias, t.quant.scale)
            if w_on:
                t = self.view.tensors[op.inputs[1]]
                ax, ch = self.tail.axis[op.name], self.tail.channels(op.name)
                ch = np.arange(p.bias.size) if ch is None else ch
                shape = [1] * p.weight.ndim
                shape[ax] = -1
                scale = np.broadcast_to(np.asarray(t.quant.scale, np.float32).reshape(-1), (p.bias.size,))
                q = round_div(p.weight, scale.reshape(shape), -127, 127).astype(np.int8)
                data = np.array(t.data, np.int8)
                sel = (slice(None),) * ax + (ch,)
                data[sel] = q[sel]
                t.data = data

    def sparse_ram(self) -> dict[str, int]:
        """sparse: the int8 copies of the trained channels the int8 kernels read from RAM (bytes)."""
        return {"int8_channels": sum(self.tail.trained_sizes(op.name)[0] for op in self.region_params)}

    def learn_input(self, x: np.ndarray, label: int) -> int:
        """``learn`` from one float input (through the frozen front)."""
        x = np.asarray(x, F32)
        if not np.isfinite(x).all():
            raise ValueError("the input must be finite (no NaN or infinity)")
        return self.learn(self.cut_of(x[None])[0], label)

    def learn(self, q: np.ndarray, label: int) -> int:
        """Push one int8 cut tensor and its label, retrain over the buffer; returns the slot (-1: dropped)."""
        if isinstance(label, (float, np.floating)) or not 0 <= int(label) < self.num_classes:
            raise ValueError(f"label {label!r} is not a class in 0..{self.num_classes - 1}")
        q = np.asarray(q)
        if q.dtype != np.int8 or q.size != self.buffer.feature_count:
            raise ValueError(f"expected an int8 cut tensor of {self.buffer.feature_count} values")
        before = self.buffer.state.copy()
        slot = self.buffer.push(q.reshape(-1), int(label))
        self.retrain()
        if self.last_refused:
            self.buffer.unpush(slot, before)
        return slot

    def retrain(self) -> int:
        """``epochs`` epochs over the buffer in training order; returns the entries visited."""
        self.last_refused = False
        n, b, visited = self.buffer.count, self.batch_size, 0
        for _ in range(self.epochs):
            for s in range(0, n, b):
                slots = [self.buffer.slot(s + k) for k in range(min(b, n - s))]
                if not self.step(self.buffer.data[slots], self.buffer.labels[slots].astype(np.int64)):
                    self.last_refused = True
                    return visited
                visited += len(slots)
        return visited

    # ---- memory ----
    def state_bytes(self) -> dict[str, int]:
        """What the deeper learning adds to the device's RAM (bytes, ``batch_size`` rows), exactly as the generated
        step lays it out (``step_memory`` in the lean layout of ``step_plan``): its arrays (``step``: trained
        float parameters, int32 biases of the int8 region, float values, gradient slots, scratch, descriptors,
        labels), the region's int8 activations the bias step reads (``kept_int8``), and one buffer entry (the
        int8 cut tensor and its label byte)."""
        known = self.known_tensors()
        req = tuple(op.name for op in self.region_params if self.mode != "blocks" and self.tail.trains(op.name)[1])
        step = step_memory(self.tail, self.batch_size, req, learn=True, known=known)
        return {"step": sum(step.values()), "kept_int8": known_bytes(self.tail, known, self.batch_size),
                "buffer_entry": self.buffer.feature_count + 1, **step}


class TwoLevelLearner(DeepLearner):
    """A deep learner with a two-level replay buffer (latent replay): beside the small buffer of int8 cut tensors
    that trains the backbone (as ``DeepLearner``), a large buffer of the int8 features (Φf's output, as head-only
    Ω stores them) retrains Φc alone. ``learn``: the sample's features (the int8 region with the current biases,
    what the device computes at inference) go into the feature buffer, the cut tensor into the cut buffer; then
    ``epochs`` epochs of the deep step over the cut buffer (``DeepLearner.learn``) and ``epochs`` epochs of Φc's
    step over the feature buffer (its entries keep the features they had when stored)."""

    def __init__(self, dep: Any, cut: str, mode: str = "bias", capacity: int | None = None,
                 head_capacity: int | None = None, lr: float | None = None, epochs: int | None = None,
                 batch_size: int | None = None, deep_lr: float | None = None,
                 subset: dict[str, Trained] | None = None, backbone_only: bool = False) -> None:
        super().__init__(dep, cut, mode, capacity, lr, epochs, batch_size, deep_lr, subset)
        if backbone_only:  # the deep step leaves Φc alone: it learns from the feature buffer only, as head-only Ω
            self.rates.update({k: 0.0 for k in self.head_ops})
        feat = dep.extractor.outputs[0]
        self.head = Tail(self.view, feat, "blocks")
        for k in self.head.params:  # Φc's parameters are the deep learner's (one copy)
            self.head.params[k] = self.tail.params[k]
        q = self.view.tensors[feat].quant
        self.feat_name, self.feat_scale, self.feat_zp = feat, float(q.scale[0]), int(q.zero_point[0])
        self.feat_buffer = ReplayBuffer(head_capacity or dep.buffer.capacity,
                                        int(np.prod(self.view.tensors[feat].shape[1:])),
                                        "int16" if self.view.tensors[feat].dtype.value == "int16" else "int8",
                                        self.feat_scale,
                                        self.feat_zp, dep.buffer.policy, dep.buffer.seed)

    def features_of(self, q: np.ndarray) -> np.ndarray:
        """int8 features [N, F] of int8 cut tensors: the int8 region with its current biases and weights, or the
        float region of ``blocks`` quantized to the features' scale (what the device computes with float weights)."""
        q = np.asarray(q, np.int8).reshape((-1,) + self.cut_shape)
        if self.mode == "blocks":
            v = self.tail.forward(self._float_cut(q))[self.feat_name].reshape(len(q), -1)
            return np.clip(np.rint(v / np.float32(self.feat_scale)) + self.feat_zp, -128, 127).astype(np.int8)
        return np.asarray(run_int8(self.region, {self.cut: q})[self.feat_name]).reshape(len(q), -1)

    def learn(self, q: np.ndarray, label: int) -> int:
        """Push the features and the cut tensor, retrain the backbone over the cut buffer and Φc over the features."""
        q = np.asarray(q)
        feats = self.features_of(q)[0] if q.dtype == np.int8 and q.size == self.buffer.feature_count else None
        slot = super().learn(q, label)  # validates q and the label first
        if self.last_refused or feats is None:
            return slot
        self.feat_buffer.push(feats, int(label))
        n, b = self.feat_buffer.count, self.batch_size
        for _ in range(self.epochs):
            for s in range(0, n, b):
                slots = [self.feat_buffer.slot(s + k) for k in range(min(b, n - s))]
                x = dequantize(self.feat_buffer.data[slots], np.float32(self.feat_scale), self.feat_zp)
                if not self.head.sgd_step(x.astype(F32), self.feat_buffer.labels[slots].astype(np.int64), self.lr):
                    return slot
        return slot
