"""Incremental on-device learning: the cut, the deployment (int8 Φf + float Φc + buffer), budgets.

Cut candidates are the tensors after which only a chain of Dense layers (with ReLU, sigmoid,
tanh, linear activations and a final softmax; Dropout ignored; a Flatten/Reshape right after
the cut is part of Φf) leads to the output: the Flatten or GlobalAveragePooling output, and the
input of each later Dense layer. A 1x1 Conv2D on a 1x1 map counts as a Dense layer (``is_dense_head``:
the conv classifier of converted `.tflite` files, float or int8). ``--cut NAME`` takes a layer, op or
tensor name; a name the model does not have is refused with the valid cut points.

Automatic policy: with a RAM budget, every candidate is sized (exact memory model, buffer as
large as the remaining RAM allows) and the one that leaves the largest buffer wins; ties go to
the earliest cut (more trainable layers). Without a budget: the earliest candidate (the
TyBox-like cut at the Flatten/GAP output) and a default buffer of 64 entries.

Φf is quantized (int8 in, int8 features out; a float input goes through a QUANTIZE op);
features and int8 buffer entries are dequantized with Φf's output parameters before Φc.

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
import pluggy

from ..errors import BudgetError, TinyccError, UnsupportedLayerError
from ..ir.buffer import MAX_CLASSES, ReplayBuffer
from ..ir.calibration import CalibrationDataError
from ..ir.deployment import BufferConfig, Deployment, TrainConfig
from ..ir.graph import Graph, Op
from ..ir.memory_model import ARCH_ABI, MemoryReport, deployment_memory
from ..ir.ops import OpKind
from ..ir.quant import dequantize
from ..ir.tensor import DType, Tensor
from ..ir.train import TRAIN_MODES, Classifier, DenseLayer
from ..options import MAX_BYTES
from ..passes import Pass, PassContext, run_pipeline

hookimpl = pluggy.HookimplMarker("tinycc")
log = logging.getLogger("tinycc.ondevice")

_HEAD_ACT = {OpKind.RELU: "relu", OpKind.SIGMOID: "sigmoid", OpKind.TANH: "tanh", OpKind.SOFTMAX: "softmax"}
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
                break
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
            if act == "relu6":
                raise TinyccError(f"classifier layer {op.origin!r}: relu6 is not trainable on the device")
            layers.append(DenseLayer(w.copy(), b.copy(), "linear" if act == "none" else act))
        elif op.kind in _HEAD_ACT:
            if layers[-1].activation != "linear":
                raise TinyccError(f"classifier layer {op.origin!r}: two activations in a row")
            layers[-1].activation = _HEAD_ACT[op.kind]
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


def _float_input(ext: Graph) -> None:
    """Give an imported Φf with an integer input a float input, quantized with the same parameters."""
    name = ext.inputs[0]
    t = ext.tensors[name]
    if t.dtype == DType.FLOAT32:
        return
    readers = ext.consumers(name)
    fname = ext.unique_tensor_name(f"{name}_float")
    ext.add_tensor(Tensor(fname, t.shape, DType.FLOAT32))
    ext.inputs[0] = fname
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


def quantize_extractor(ext: Graph, options: dict[str, Any], session: Any) -> tuple[Graph, np.ndarray]:
    """Quantize Φf in place (float input, int8 features out); return it and the calibration samples."""
    if ext.meta.get("quantized"):  # imported int8 model: the file's parameters stay
        _float_input(ext)
        if options.get("calib_data") is None and not options.get("calib"):
            return ext, np.zeros((0,) + tuple(ext.tensors[ext.inputs[0]].shape[1:]), np.float32)
        from .quantize import samples_from_options

        try:
            return ext, samples_from_options(ext, options, session.registry if session else None)
        except CalibrationDataError as e:
            raise TinyccError(str(e)) from None
    opts = {**options, "int8_output": True}
    ctx = PassContext(options=opts, session=session, progress=bool(options.get("progress")))
    run_pipeline(ext, session.registry.pipeline("int8"), ctx)
    return ext, ctx.results["calibrate"]["samples"]


def _labels_for(options: dict[str, Any], n: int, target_count: int = 0, n_classes: int = 0) -> np.ndarray | None:
    """Labels (or, for a regression head, float targets of ``target_count`` values) stored next to the
    calibration samples (y_calib / y_train / y), if any."""
    spec = options.get("calib")
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


def _budget(options: dict[str, Any], session: Any) -> tuple[int | None, int | None, str]:
    ram, flash, where = options.get("ram"), options.get("flash"), "--ram/--flash"
    if options.get("board"):
        b = session.registry.board(options["board"])
        ram = ram or b.ram
        flash = flash or b.flash
        where = f"board {b.name}"
    return ram, flash, where


def _buffer_bytes(cap: int, feat: int, clf: Classifier, options: dict[str, Any], tq: Any) -> int:
    return ReplayBuffer.bytes_for(cap, feat, options.get("storage") or "int8", clf.target_count,
                                  "int8" if tq is not None else "float32")


def _abi(options: dict[str, Any], session: Any) -> str | None:
    """The C ABI (a key of ir.memory_model.ABIS) of the board's architecture; None without a board, or for an
    architecture tinycc does not know."""
    if not options.get("board"):
        return None
    return ARCH_ABI.get(session.registry.board(options["board"]).arch)


def _report(ext: Graph, clf: Classifier, cap: int, feat: int, options: dict[str, Any], backend: Any,
            arena: int, tq: Any = None, abi: str | None = None) -> MemoryReport:
    return deployment_memory(ext, clf, _buffer_bytes(cap, feat, clf, options, tq), int(options.get("batch_size") or 1),
                             arena, backend.runtime_state_bytes(ext, clf, options) if backend else 0,
                             getattr(backend, "arena_detail", "int8 activations, planned"),
                             backend.scratch_bytes(ext, options) if backend else 0,
                             abi, bool(getattr(backend, "runtime_descriptors", False)),
                             bool(getattr(backend, "runtime_state_exact", True)),
                             backend.table_bytes(ext, options) if hasattr(backend, "table_bytes") else 0)


def build_deployment(graph: Graph, options: dict[str, Any], session: Any, backend: Any) -> Deployment:
    """Cut, quantize Φf, build Φc and the buffer, size everything, and check the budget."""
    if options.get("cut"):
        check_cut_name(graph, options["cut"])
    cands = cut_candidates(graph)
    if options.get("cut"):
        cands = [_resolve_cut(graph, options["cut"], cands)]
    ram, flash, where = _budget(options, session)
    abi = _abi(options, session)
    batch = int(options.get("batch_size") or 1)
    explicit = 1 if options.get("tinyol") else options.get("buffer")
    if not (ram or flash):
        cands = cands[:1]
    storage = options.get("storage") or "int8"
    first_layers = split(graph, cands[0])[1]
    loss = choose_loss(graph, first_layers, options.get("loss"))
    mode = options.get("train") or "all"
    if mode not in TRAIN_MODES:
        raise TinyccError(f"--train {mode!r}: choose one of {', '.join(TRAIN_MODES)}")
    make_classifier(graph, first_layers, loss, batch, mode)  # an impossible head is refused before any quantization
    target = "none" if loss != "mse" else ("input" if is_autoencoder(graph) else "given")
    if loss == "mse" and (options.get("policy") or "fifo") == "class_balanced":
        raise TinyccError("--policy class_balanced needs class labels; the regression head (mse) supports fifo "
                          "and reservoir")
    best = None
    first_error: Exception | None = None
    for cut in cands:
        ext, layers = split(graph, cut)
        try:
            ext, samples = quantize_extractor(ext, options, session)
        except UnsupportedLayerError as e:  # a later cut may put the unsupported op into Φf
            first_error = first_error or e
            continue
        clf = make_classifier(graph, layers, loss, batch, mode)
        tq = target_quant(ext, loss, target, storage)
        feat = clf.n_in
        arena = backend.arena_bytes(ext, options) if backend else 0
        if explicit:
            cap = int(explicit)
        elif ram:
            one = _buffer_bytes(1, feat, clf, options, tq)
            fixed = _report(ext, clf, 1, feat, options, backend, arena, tq, abi).total("ram") - one
            per = _buffer_bytes(2, feat, clf, options, tq) - one
            cap = max((ram - fixed - 16) // per, 1)
        else:
            cap = DEFAULT_BUFFER
        report = _report(ext, clf, cap, feat, options, backend, arena, tq, abi)
        fits = (ram is None or report.total("ram") <= ram) and (flash is None or report.total("flash") <= flash)
        key = (fits, cap if fits else -report.total("ram"))
        if best is None or key > best[0]:
            best = (key, cut, ext, clf, cap, report, samples, tq)
    if best is None:
        raise first_error  # type: ignore[misc]
    _, cut, ext, clf, cap, report, samples, tq = best
    _check_budget(report, ram, flash, where)
    _check_addressable(report)
    fq = ext.tensors[ext.outputs[0]].quant
    dep = Deployment(
        name=_c_name(graph.name), extractor=ext, feature_quant=fq, classifier=clf.layers, num_classes=clf.n_classes,
        buffer=BufferConfig(cap, options.get("policy") or "fifo", options.get("storage") or "int8",
                            int(options.get("seed") or 1)),
        train=TrainConfig(float(options.get("lr") or 0.01), int(options.get("epochs") or 1), batch, mode),
        memory={"report": report.table(), **report.to_dict(), "cut": cut.tensor, "buffer_capacity": cap},
        meta={"cut": cut.tensor, "source": graph.meta.get("source", {}), "samples": samples[:16]},
        loss=loss, target=target, target_quant=tq)
    labels = _labels_for(options, 16, clf.target_count, clf.n_classes)
    if labels is not None:
        dep.meta["labels"] = labels
    return dep


def _c_name(name: str) -> str:
    out = "".join(c if c.isalnum() else "_" for c in name).strip("_") or "model"
    return out if not out[0].isdigit() else f"m_{out}"


BUDGET_ADVICE = "Try a smaller --buffer, pruning (--ratio), a later --cut, or a bigger board"


def _check_addressable(report: MemoryReport) -> None:
    """Refuse a deployment larger than a 32-bit microcontroller can address (e.g. a huge --buffer)."""
    for section in ("ram", "flash"):
        total = report.total(section)
        if total > MAX_BYTES:
            raise BudgetError(f"{section.upper()} would be {total:,} bytes, above {MAX_BYTES:,} (4 GiB, the most a "
                              f"32-bit microcontroller addresses); biggest: "
                              + ", ".join(f"{i.name} {i.bytes:,} B" for i in report.biggest(section)))


def _check_budget(report: MemoryReport, ram: int | None, flash: int | None, where: str,
                  advice: str = BUDGET_ADVICE) -> None:
    problems = []
    for section, limit in (("ram", ram), ("flash", flash)):
        if limit is None:
            continue
        total = report.total(section)
        if total > limit:
            big = ", ".join(f"{i.name} {i.bytes:,} B" for i in report.biggest(section))
            problems.append(f"{section.upper()} needs {total:,} bytes but {where} allows {limit:,}: "
                            f"short by {total - limit:,} bytes (biggest: {big})")
    if problems:
        raise BudgetError("; ".join(problems) + f". {advice}")


class Cut(Pass):
    """Truncate the graph to Φf at the chosen cut; Φc goes to ``ctx.results['cut']``."""

    name = "cut"
    description = "split into feature extractor (kept) and trainable Dense classifier (ctx.results)"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        cands = cut_candidates(graph)
        if ctx.options.get("cut"):
            check_cut_name(graph, ctx.options["cut"])
        cut = _resolve_cut(graph, ctx.options["cut"], cands) if ctx.options.get("cut") else cands[0]
        ext, layers = split(graph, cut)
        graph.ops, graph.outputs, graph.tensors = ext.ops, ext.outputs, ext.tensors
        ctx.results["cut"] = {"tensor": cut.tensor, "classifier": layers}
        return True


@hookimpl
def tinycc_register_passes(registry: Any) -> None:
    registry.add_pass(Cut)
