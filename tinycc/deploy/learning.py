"""Incremental on-device learning: the cut, the deployment (int8 Φf + float Φc + buffer), budgets.

Cut candidates are the tensors after which only a chain of Dense layers (with ReLU, ReLU6, LeakyReLU, sigmoid,
tanh, linear activations and a final softmax; Dropout ignored; a Flatten/Reshape right after
the cut is part of Φf) leads to the output: the Flatten or GlobalAveragePooling output, and the
input of each later Dense layer. A 1x1 Conv2D on a 1x1 map counts as a Dense layer (``is_dense_head``:
the conv classifier of converted `.tflite` files, float or int8); a linear 1x1 Conv2D read by a global average
pooling (the SqueezeNet head) is pooled first (``learnable``), which makes it one. ``--cut NAME`` takes a layer, op or
tensor name; a name the model does not have is refused with the valid cut points.

Automatic policy: with a RAM budget, every candidate is sized (exact memory model, buffer as
large as the remaining RAM allows) and the one that leaves the largest buffer wins; ties go to
the earliest cut (more trainable layers). Without a budget: the earliest candidate (the
TyBox-like cut at the Flatten/GAP output) and a default buffer of 64 entries.

Φf is quantized (int8 in, int8 features out; a float input goes through a QUANTIZE op);
features and int8 buffer entries are dequantized with Φf's output parameters before Φc. An int16 (16x8) Φf keeps
its int16 features (``--features native``, the default: int16 buffer entries, 2 bytes a value, dequantized with
the features' scale, zero point 0) or requantizes them to int8 at the cut (``--features int8``: half the buffer).
``--storage`` defaults to the features' type (``buffer_storage``); float32 stores dequantized floats.

The head (``--loss``, see ``tinycc.ir.train``): ``ce`` (softmax cross-entropy), ``bce`` (sigmoid
binary cross-entropy, labels 0/1) or ``mse`` (regression, float target vectors). Without
``--loss`` it follows the model: a last softmax -> ce; an autoencoder (output shape = input shape)
-> mse; one output: sigmoid -> bce, otherwise mse; several outputs -> ce (the last activation is
ignored, the Dense outputs are logits). A regression head on an autoencoder learns to reconstruct
the model's float *input*: a sample's default target is x itself (stored, with int8 storage, in
the input's int8 quantization — exactly the QUANTIZE at Φf's input); other regression models get
their target with every sample.

An imported int8 model (``meta["quantized"]``, e.g. a converter `.tflite`) keeps the file's
parameters: Φf is taken as it is (an int8 input gets a float input and a QUANTIZE with the same
parameters in front, as tinycc's own models have), Φc starts from the dequantized int8 Dense
layers, and the QUANTIZE/DEQUANTIZE/int8 SOFTMAX at the output belong to the head.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend_api import MemoryFigures
from ..config import CompileConfig, LearningConfig
from ..data import calibration_samples
from ..errors import TinyccError, UnsupportedLayerError
from ..ir.buffer import MAX_CLASSES, ReplayBuffer
from ..ir.calibration import CalibrationDataError, check_feature_scale, check_sample_size
from ..ir.deployment import BufferConfig, Deployment, TrainConfig
from ..ir.graph import Graph, Op
from ..ir.head_rewrite import pool_before_pointwise
from ..ir.memory_model import MemoryReport, deployment_memory
from ..ir.ops import OpKind
from ..ir.interpreter_int8 import run_int8
from ..ir.quant import choose_activation_params, dequantize
from ..ir.tensor import DType, QuantParams, Tensor
from ..ir.train import TRAIN_MODES, Classifier, DenseLayer
from ..passes import Pass, PassContext
from ..stages import QUANTIZE_STAGES, run_stages
from ..targets import code_table
from .stage import c_name, candidate_figures, check_addressable, check_budget, with_widening_fallback

log = logging.getLogger("tinycc.deploy")

_HEAD_ACT = {OpKind.RELU: "relu", OpKind.SIGMOID: "sigmoid", OpKind.TANH: "tanh", OpKind.SOFTMAX: "softmax",
             OpKind.RELU6: "relu6", OpKind.LEAKY_RELU: "leaky_relu"}
# QUANTIZE/DEQUANTIZE: the output boundary of an imported int8 model (Φc is float)
_HEAD_KINDS = set(_HEAD_ACT) | {OpKind.DENSE, OpKind.DROPOUT, OpKind.FLATTEN, OpKind.RESHAPE, OpKind.QUANTIZE,
                                OpKind.DEQUANTIZE}
DEFAULT_BUFFER = 64


@dataclass
class CutPoint:
    tensor: str
    index: int  # ops[:index] form the extractor


def is_dense_head(graph: Graph, op: Op) -> bool:
    """A Dense layer of the head: Dense, or a Conv2D with a 1x1 kernel on a 1x1 map (no groups) -- the classifier of
    a converted MobileNet / person-detection `.tflite`, where cleanup's conv1x1_to_dense does not rewrite int8."""
    if op.kind == OpKind.DENSE:
        return True
    if op.kind != OpKind.CONV2D or op.attrs.get("groups", 1) != 1:
        return False
    x, w, y = (graph.tensors[t] for t in (op.inputs[0], op.inputs[1], op.outputs[0]))
    return w.data is not None and len(x.shape) == 4 and tuple(x.shape[1:3]) == (1, 1) and \
        tuple(w.shape[1:3]) == (1, 1) and tuple(y.shape[1:3]) == (1, 1)


def learnable(graph: Graph) -> Graph:
    """The graph the learning deployment cuts: an int8 file's linear 1x1 convolution read by a global average pooling
    (the SqueezeNet head) becomes pooling -> 1x1 convolution on a 1x1 map (``tinycc.ir.head_rewrite``; float graphs
    get it in the cleanup stage), on a copy: inference keeps the file's operators."""
    if not graph.meta.get("quantized"):
        return graph
    g = graph.copy()
    return g if pool_before_pointwise(g) else graph


def cut_candidates(graph: Graph) -> list[CutPoint]:
    """Tensors after which only the Dense head follows (earliest first)."""
    if len(graph.outputs) != 1:
        raise TinyccError("on-device learning needs a model with exactly one output")
    consumers = graph.consumers_map()
    chain: list[Op] = []
    t = graph.outputs[0]
    prod = graph.producers_map()
    while t in prod:
        op = prod[t]
        if (op.kind not in _HEAD_KINDS and not is_dense_head(graph, op)) or len(consumers.get(t, [])) > 1:
            break
        chain.append(op)
        t = op.inputs[0]
    chain.reverse()
    cands: list[CutPoint] = []
    index = {o.name: i for i, o in enumerate(graph.ops)}
    seen_dense = False
    for op in chain:
        if is_dense_head(graph, op):
            if op.kind == OpKind.DENSE and len(graph.tensors[op.inputs[0]].shape) != 2:
                cands.clear()  # a Dense on a feature map (its last axis) stays in the extractor, as all before it
                seen_dense = False
                continue
            cands.append(CutPoint(op.inputs[0], index[op.name]))
            seen_dense = True
        elif op.kind in (OpKind.FLATTEN, OpKind.RESHAPE) and seen_dense:
            break
    if not cands:
        raise TinyccError("no cut point: the model must end with Dense layers on a flat feature vector "
                          "(e.g. ... -> Flatten or GlobalAveragePooling -> Dense)")
    return cands


LOSSES = ("ce", "bce", "mse")


def is_autoencoder(graph: Graph) -> bool:
    """The model's output shape equals its input shape (batch excluded)."""
    return (len(graph.inputs) == 1 and tuple(graph.tensors[graph.inputs[0]].shape[1:]) ==
            tuple(graph.tensors[graph.outputs[0]].shape[1:]))


def choose_loss(graph: Graph, layers: list[DenseLayer], requested: str | None) -> str:
    """The head: ``requested`` (--loss), else from the last activation and the shapes (module docstring)."""
    if requested:
        if requested not in LOSSES:
            raise TinyccError(f"unknown loss {requested!r}; known: {', '.join(LOSSES)}")
        return requested
    last = layers[-1]
    if last.activation == "softmax":
        return "ce"
    if is_autoencoder(graph):
        return "mse"
    if last.n_out == 1:
        return "bce" if last.activation == "sigmoid" else "mse"
    return "ce"


def _head_origin(graph: Graph) -> str:
    dense = [op for op in graph.ops if op.kind == OpKind.DENSE]
    return dense[-1].origin if dense else graph.outputs[0]


def make_classifier(graph: Graph, layers: list[DenseLayer], loss: str, batch: int, train: str = "all") -> Classifier:
    """Φc with its head and training mode; an impossible head is reported naming the model's last Dense layer."""
    try:
        clf = Classifier(layers, max_batch=batch, loss=loss, train=train)
    except ValueError as e:
        advice = ""
        if loss == "ce" and layers[-1].n_out == 1:
            advice = ": --loss bce or --loss mse"
        raise UnsupportedLayerError(f"layer {_head_origin(graph)!r}: {e}{advice}") from None
    if clf.n_classes > MAX_CLASSES:  # labels are uint8 in the buffer and the C API
        raise UnsupportedLayerError(f"layer {_head_origin(graph)!r}: {clf.n_classes} classes, but on-device labels "
                                    f"are one byte (at most {MAX_CLASSES} classes)")
    return clf


def target_quant(ext: Graph, loss: str, target: str, storage: str) -> Any:
    """int8 quantization for stored targets: the autoencoder's input QUANTIZE with int8 storage, else None."""
    if loss != "mse" or target != "input" or storage != "int8":
        return None
    for op in ext.ops:
        if op.kind == OpKind.QUANTIZE and op.inputs[0] == ext.inputs[0]:
            q = ext.tensors[op.outputs[0]].quant
            if q is not None and ext.tensors[op.outputs[0]].dtype == DType.INT8:
                return q
    return None


def check_cut_name(graph: Graph, name: str) -> None:
    """Raise (one line, with the valid cut points) when ``--cut NAME`` names no layer, op or tensor of the model."""
    if name in graph.tensors or graph.resolve_alias(name) is not None or \
            any(name in (op.name, op.origin) for op in graph.ops):
        return
    try:
        valid = "valid cut points: " + ", ".join(c.tensor for c in cut_candidates(graph))
    except TinyccError:
        valid = "the model has no valid cut point (it must end with Dense layers on a flat feature vector)"
    raise TinyccError(f"--cut {name!r} names no layer or tensor of the model; {valid}")


def _resolve_cut(graph: Graph, name: str, cands: list[CutPoint]) -> CutPoint:
    names = {name}
    for op in graph.ops:
        if name in (op.name, op.origin):
            names.update(op.outputs)
    alias = graph.resolve_alias(name)  # a layer cleanup removed (e.g. a no-op Flatten): the tensor that replaced it
    if alias is not None:
        names.add(alias)
    for c in cands:
        if c.tensor in names:
            return c
    # a name just before a flatten: accept the layer whose output is flattened into the cut
    for c in cands:
        p = graph.producer(c.tensor)
        if p is not None and p.kind in (OpKind.FLATTEN, OpKind.RESHAPE) and p.inputs[0] in names:
            return c
    valid = ", ".join(f"{c.tensor}" for c in cands)
    raise TinyccError(f"cannot cut at {name!r}: only Dense layers may follow a cut; valid cut points: {valid}")


def split(graph: Graph, cut: CutPoint) -> tuple[Graph, list[DenseLayer]]:
    """Φf (ops before the cut) and Φc (the Dense chain after it) from a float graph."""
    ext = graph.copy()
    ext.ops = ext.ops[:cut.index]
    ext.outputs = [cut.tensor]
    ext.prune_unused()
    layers: list[DenseLayer] = []
    for op in graph.ops[cut.index:]:
        if is_dense_head(graph, op):
            w, b = _float_dense(graph, op)
            act = op.attrs["activation"]
            layers.append(DenseLayer(w.copy(), b.copy(), "linear" if act == "none" else act))
        elif op.kind in _HEAD_ACT:
            if layers[-1].activation != "linear":
                raise TinyccError(f"classifier layer {op.origin!r}: two activations in a row")
            last = layers[-1]
            alpha = float(op.attrs.get("alpha", 0.0)) if op.kind == OpKind.LEAKY_RELU else 0.0
            if not (np.isfinite(alpha) and alpha >= 0):
                raise TinyccError(f"classifier layer {op.origin!r}: a leaky relu with negative slope {alpha} is "
                                  "not trainable on the device (it needs a slope >= 0)")
            layers[-1] = DenseLayer(last.weight, last.bias, _HEAD_ACT[op.kind], alpha)
    return ext, layers


def _float_dense(graph: Graph, op: Op) -> tuple[np.ndarray, np.ndarray]:
    """Float weights [O, I] and bias [O] of a Dense op (dequantized when the model is int8)."""
    w = graph.tensors[op.inputs[1]]
    b = graph.tensors[op.inputs[2]] if len(op.inputs) > 2 else None
    wd = w.data.reshape(w.shape[0], -1)  # a 1x1 Conv2D's [O, 1, 1, I] is Dense's [O, I]
    if w.dtype == DType.FLOAT32:
        return wd.copy(), (b.data.copy() if b is not None else np.zeros(w.shape[0], np.float32))
    if w.quant is None or (b is not None and b.quant is None):
        raise TinyccError(f"classifier layer {op.origin!r}: int8 weights without quantization parameters")
    wf = dequantize(wd, w.quant.scale.reshape(-1, 1), w.quant.zero_point.reshape(-1, 1))
    if b is None:
        return wf, np.zeros(w.shape[0], np.float32)
    return wf, dequantize(b.data, b.quant.scale, b.quant.zero_point)


def _float_input(ext: Graph, k: int = 0) -> None:
    """Give an imported Φf with an integer input (number ``k``) a float input, quantized with the same
    parameters."""
    name = ext.inputs[k]
    t = ext.tensors[name]
    if t.dtype == DType.FLOAT32:
        return
    readers = ext.consumers(name)
    fname = ext.unique_tensor_name(f"{name}_float")
    ext.add_tensor(Tensor(fname, t.shape, DType.FLOAT32))
    ext.inputs[k] = fname
    first = readers[0] if len(readers) == 1 and name not in ext.outputs else None
    q = ext.tensors[first.outputs[0]].quant if first is not None and first.kind == OpKind.QUANTIZE else None
    if (q is not None and t.quant is not None and ext.tensors[first.outputs[0]].dtype == DType.INT8
            and np.array_equal(t.quant.scale, q.scale)
            and int(q.zero_point[0]) - int(t.quant.zero_point[0]) == -128 - int(np.iinfo(t.dtype.numpy).min)):
        # uint8 -> int8 at the same scale, zero point moved by 128 (uint8-IO models): quantizing the float
        # input straight to int8 rounds and clamps identically
        first.inputs = [fname]
        del ext.tensors[name]
        return
    op = Op(ext.unique_op_name(f"{name}/quantize"), OpKind.QUANTIZE, [fname], [name], {}, name)
    ext.ops.insert(0, op)


def quantize_extractor(ext: Graph, config: CompileConfig, session: Any,
                       calib: np.ndarray | None = None) -> tuple[Graph, np.ndarray]:
    """Quantize Φf in place (float input, int8 features out); return it and the calibration samples."""
    quantized = bool(ext.meta.get("quantized"))  # imported int8 model: the file's parameters stay
    if quantized and (config.quant.activations != "int8" or config.quant.int16_layers):
        raise TinyccError("--activations/--int16-layers: the model is already quantized; its file's types (int8 "
                          "or int16) are used")
    if quantized:
        _float_input(ext)
        if calib is None and not config.quant.calib:
            return ext, np.zeros((0,) + tuple(ext.tensors[ext.inputs[0]].shape[1:]), np.float32)
    try:  # from the shapes, before any sample is read (the project's demo embeds at least one input)
        check_sample_size(ext, embeds_vectors=True)
    except CalibrationDataError as e:
        raise TinyccError(str(e)) from None
    if quantized:
        try:
            return ext, calibration_samples(ext, config.quant, calib, session.registry if session else None)
        except CalibrationDataError as e:
            raise TinyccError(str(e)) from None
    ctx = PassContext(session=session, config=config.with_quant(int8_output=True), calib=calib,
                      progress=config.compiler.progress)
    run_stages(ext, session.registry, QUANTIZE_STAGES, ctx)
    if "calibrate" not in ctx.results or ext.tensors[ext.outputs[0]].quant is None:
        raise TinyccError("int8 quantization needs the passes calibrate and quantize_int8 of the 'quantize' plugin, "
                          "which are blocked (-p no:quantize) or dropped (--passes)")
    return ext, ctx.results["calibrate"]["samples"]


def int8_features(ext: Graph, samples: np.ndarray) -> None:
    """``--features int8``: int16 features (an int16 last layer, TFLite's 16x8) requantized to int8 at the cut
    (int8 buffer entries: half the bytes of int16 ones, less precision): a QUANTIZE (int16 -> int8) with int8
    parameters from the features' range on the calibration samples (without samples: the int16 range)."""
    name = ext.outputs[0]
    t = ext.tensors[name]
    if t.dtype != DType.INT16:
        return
    s16 = float(t.quant.scale[0])
    if len(samples):
        f = dequantize(run_int8(ext, samples)[name], s16, int(t.quant.zero_point[0]))
        s, zp = choose_activation_params(float(f.min()), float(f.max()))
    else:
        s, zp = float(np.float32(s16 * 256.0)), 0
    out = ext.add_op(OpKind.QUANTIZE, [name], ext.unique_op_name(f"{name}/int8"), {}, origin=name,
                     output_name=ext.unique_tensor_name(f"{name}/int8"), output_dtype=DType.INT8).outputs[0]
    ext.tensors[out].quant = QuantParams([s], [zp])
    ext.outputs[0] = out


def feature_type(ext: Graph) -> str:
    """The features' type at the cut: "int8" or "int16" (a 16x8 Φf with ``--features native``)."""
    return "int16" if ext.tensors[ext.outputs[0]].dtype == DType.INT16 else "int8"


def buffer_storage(requested: str | None, ext: Graph) -> str:
    """The buffer's entry type: ``--storage`` as given, or (None) the features' type; a quantized storage other
    than the features' type is refused in one line."""
    ftype = feature_type(ext)
    if requested is None or requested == "float32" or requested == ftype:
        return requested or ftype
    if ftype == "int16":
        raise TinyccError(f"--storage {requested}: the features are int16 (a 16x8 extractor); store them as int16 or "
                          "float32, or requantize them to int8 at the cut with --features int8")
    raise TinyccError(f"--storage {requested}: the features are int8; store them as int8 or float32")


def _labels_for(spec: str | None, n: int, target_count: int = 0, n_classes: int = 0) -> np.ndarray | None:
    """Labels (or, for a regression head, float targets of ``target_count`` values) stored next to the
    calibration samples (y_calib / y_train / y), if any."""
    if not spec or not str(spec).endswith(".npz"):
        return None
    with np.load(spec, allow_pickle=False) as z:
        for key in ("y_calib", "y_train", "y"):
            if key in z.files:
                y = np.asarray(z[key][:n])
                if target_count:
                    ok = y.ndim >= 1 and y[:1].size == target_count and np.issubdtype(y.dtype, np.number)
                    return y.reshape(len(y), target_count).astype(np.float32) if ok else None
                return _class_labels(spec, key, np.asarray(z[key]), n_classes)[:n]
    return None


def _class_labels(spec: str, key: str, y: np.ndarray, n_classes: int) -> np.ndarray:
    """``y`` as class indices, every one in 0..n_classes-1 (never wrapped); else a TinyccError naming the sample."""
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.number):
        raise TinyccError(f"{spec}: {key} must hold one class index per sample, got shape {y.shape} ({y.dtype})")
    bad = np.nonzero(~np.isfinite(y) | (y != np.round(y)) | (y < 0) | (y >= n_classes))[0] if y.size else []
    if len(bad):
        i = int(bad[0])
        raise TinyccError(f"{spec}: {key}[{i}] = {y[i].item()!r} is not a class of the classifier "
                          f"(0..{n_classes - 1}); "
                          f"{len(bad)} of {len(y)} labels are out of range")
    return y.astype(np.int64)


def _buffer_bytes(cap: int, feat: int, clf: Classifier, storage: str, tq: Any) -> int:
    return ReplayBuffer.bytes_for(cap, feat, storage, clf.target_count, "int8" if tq is not None else "float32")


def _requantized(ext: Graph) -> bool:
    """The features are a 16x8 Φf's int16 output requantized to int8 at the cut (``int8_features``)."""
    p = ext.producer(ext.outputs[0])
    return p is not None and p.kind == OpKind.QUANTIZE and ext.tensors[p.inputs[0]].dtype == DType.INT16


def _buffer_detail(ext: Graph, cap: int, clf: Classifier, storage: str, tq: Any) -> str:
    """The report's buffer line: entries and their type; for int16 features, what int8 entries would cost."""
    text = f"{cap} entries x {clf.n_in} {storage} features"
    if storage == "int16":
        text += (f"; --features int8 (requantized at the cut): "
                 f"{_buffer_bytes(cap, clf.n_in, clf, 'int8', tq):,} bytes")
    elif _requantized(ext):
        text += " (int16 features requantized at the cut: --features int8)"
    return text


def _report(ext: Graph, clf: Classifier, cap: int, learn: LearningConfig, backend: Any, cand: Any,
            figures: MemoryFigures, tq: Any = None, stack: tuple[int, bool, str] | None = None,
            storage: str = "int8") -> MemoryReport:
    """The memory report of ``cand`` with a buffer of ``cap`` entries (``stack``: the stack line, None: not
    counted), as the backend adjusts it for what it deploys."""
    r = deployment_memory(ext, clf, _buffer_bytes(cap, clf.n_in, clf, storage, tq), learn.batch_size,
                          figures.arena, figures.state, figures.arena_detail, figures.scratch, figures.descriptors,
                          figures.state_exact, figures.tables, stack, code_table=code_table(cand.config.target),
                          buffer_detail=_buffer_detail(ext, cap, clf, storage, tq))
    backend.adjust_report(r, cand, figures)
    return r


def _fitting_capacity(ram: int, ext: Graph, clf: Classifier, learn: LearningConfig, backend: Any, cand: Any,
                      figures: MemoryFigures, tq: Any, stack: tuple[int, bool, str] | None = None,
                      storage: str = "int8") -> int:
    """The largest buffer the RAM budget leaves room for (at least 1)."""
    one = _buffer_bytes(1, clf.n_in, clf, storage, tq)
    fixed = _report(ext, clf, 1, learn, backend, cand, figures, tq, stack, storage).total("ram") - one
    per = _buffer_bytes(2, clf.n_in, clf, storage, tq) - one
    return max((ram - fixed - 16) // per, 1)


def build_deployment(graph: Graph, config: CompileConfig, session: Any, backend: Any,
                     calib: np.ndarray | None = None) -> Deployment:
    """Cut, quantize Φf, build Φc and the buffer, size everything on ``backend``, and check the budget (a flash
    budget the widened weight copies would exceed drops them: `with_widening_fallback`).

    ``calib``: calibration samples as an array (else ``config.quant.calib`` is loaded)."""
    return with_widening_fallback(_build_deployment, graph, config, session, backend, calib)


def _build_deployment(graph: Graph, config: CompileConfig, session: Any, backend: Any,
                      calib: np.ndarray | None = None) -> Deployment:
    learn = config.learning
    if learn is None:
        raise TinyccError("on-device learning deployment asked for an --inference-only config")
    if len(graph.inputs) != 1:
        raise TinyccError(f"on-device learning needs a model with one input; this one has {len(graph.inputs)} "
                          f"inputs ({', '.join(graph.inputs)}): compile it with --inference-only")
    graph = learnable(graph)
    if learn.cut:
        check_cut_name(graph, learn.cut)
    cands = cut_candidates(graph)
    if learn.cut:
        cands = [_resolve_cut(graph, learn.cut, cands)]
    ram, flash = config.memory.ram, config.memory.flash
    batch = learn.batch_size
    explicit = 1 if learn.tinyol else learn.buffer
    if not (ram or flash):
        cands = cands[:1]
    first_layers = split(graph, cands[0])[1]
    loss = choose_loss(graph, first_layers, learn.loss)
    mode = learn.train
    if mode not in TRAIN_MODES:
        raise TinyccError(f"--train {mode!r}: choose one of {', '.join(TRAIN_MODES)}")
    make_classifier(graph, first_layers, loss, batch, mode)  # an impossible head is refused before any quantization
    target = "none" if loss != "mse" else ("input" if is_autoencoder(graph) else "given")
    if loss == "mse" and learn.policy == "class_balanced":
        raise TinyccError("--policy class_balanced needs class labels; the regression head (mse) supports fifo "
                          "and reservoir")
    best = None
    first_error: Exception | None = None
    for cut in cands:
        ext, layers = split(graph, cut)
        try:
            ext, samples = quantize_extractor(ext, config, session, calib)
            if learn.features == "int8":
                int8_features(ext, samples)
        except UnsupportedLayerError as e:  # a later cut may put the unsupported op into Φf
            first_error = first_error or e
            continue
        storage = buffer_storage(learn.storage, ext)
        clf = make_classifier(graph, layers, loss, batch, mode)
        tq = target_quant(ext, loss, target, storage)
        cand, figures = candidate_figures(backend, ext, clf, config)
        if explicit:
            cap = int(explicit)
        elif ram:
            cap = _fitting_capacity(ram, ext, clf, learn, backend, cand, figures, tq, storage=storage)
        else:
            cap = DEFAULT_BUFFER
        report = _report(ext, clf, cap, learn, backend, cand, figures, tq, storage=storage)
        fits = (ram is None or report.total("ram") <= ram) and (flash is None or report.total("flash") <= flash)
        key = (fits, cap if fits else -report.total("ram"))
        if best is None or key > best[0]:
            best = (key, cut, ext, clf, cap, report, samples, tq, cand, figures, storage)
    if best is None:
        raise first_error  # type: ignore[misc]
    _, cut, ext, clf, cap, report, samples, tq, cand, figures, storage = best
    fq = ext.tensors[ext.outputs[0]].quant
    try:
        check_feature_scale(float(np.max(fq.scale)), int(np.max(np.abs(fq.zero_point))), clf.n_in, learn.lr,
                            16 if feature_type(ext) == "int16" else 8)
    except CalibrationDataError as e:
        raise TinyccError(str(e)) from None
    dep = Deployment(
        name=c_name(graph.name), extractor=ext, feature_quant=fq, classifier=clf.layers, num_classes=clf.n_classes,
        buffer=BufferConfig(cap, learn.policy, storage, learn.seed),
        train=TrainConfig(learn.lr, learn.epochs, batch, mode),
        memory={"report": report.table(), **report.to_dict(), "cut": cut.tensor, "buffer_capacity": cap},
        meta={"cut": cut.tensor, "source": graph.meta.get("source", {}), "samples": samples[:16]},
        loss=loss, target=target, target_quant=tq, config=config, board=config.board, plan=cand.plan,
        figures=figures)
    stack = backend.stack_bytes(dep)
    if stack is not None:  # the stack counts against the RAM budget: a buffer sized to fit gives up its bytes
        if ram and not explicit:
            cap = dep.buffer.capacity = _fitting_capacity(ram, ext, clf, learn, backend, cand, figures, tq, stack,
                                                          storage)
        report = _report(ext, clf, cap, learn, backend, cand, figures, tq, stack, storage)
    check_budget(report, config)
    check_addressable(report)
    dep.memory = {"report": report.table(), **report.to_dict(), "cut": cut.tensor, "buffer_capacity": cap}
    labels = _labels_for(config.quant.calib, 16, clf.target_count, clf.n_classes)
    if labels is not None:
        dep.meta["labels"] = labels
    if not explicit and not ram:  # no budget: the compile summary names the default and its cost
        dep.meta["default_buffer"] = {"entries": cap, "bytes": _buffer_bytes(cap, clf.n_in, clf, storage, tq)}
    return dep


class Cut(Pass):
    """Truncate the graph to Φf at the chosen cut; Φc goes to ``ctx.results['cut']``."""

    name = "cut"
    description = "split into feature extractor (kept) and trainable Dense classifier (ctx.results)"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        pool_before_pointwise(graph)
        cands = cut_candidates(graph)
        name = ctx.config.learning.cut if ctx.config.learning is not None else None
        if name:
            check_cut_name(graph, name)
        cut = _resolve_cut(graph, name, cands) if name else cands[0]
        ext, layers = split(graph, cut)
        graph.ops, graph.outputs, graph.tensors = ext.ops, ext.outputs, ext.tensors
        ctx.results["cut"] = {"tensor": cut.tensor, "classifier": layers}
        return True
