"""Sparse backbone updates under a RAM budget (``--train sparse --ram N``, the Tiny Training Engine's idea).

Decided at compile time, from labelled data (the contribution analysis):

1. Candidates after the deep cut (``choose_deep_cut``: the input of the last block): the bias of each
   convolution / Dense layer of the region, each whole layer (weight + bias), and output-channel subsets (1/8,
   1/4, 1/2 of the channels, ranked by the norm of their weight gradient over the data) of the region's last
   two convolutions. A channel subset holds only those channels' weights in float in RAM (and their int8 copy
   the kernels read), updated in place; the rest of the layer stays the int8 weights of flash. The region runs
   on the int8 kernels (``DeepLearner`` mode ``sparse``).
2. Each candidate's contribution: a ``TwoLevelLearner`` (mode ``sparse``, Φc learning from its feature buffer
   exactly as head-only Ω, the backbone step at ``deep_lr`` over a small buffer of cut tensors) learns the first
   part of the data with that candidate alone; its accuracy on the rest minus head-only's (the same learner
   with nothing in the backbone) is the gain.
3. The exact cost: the RAM of the step for the subset (``step_parts``: ``step_memory``'s arrays in the lean
   layout, the int8 channel copies, the kept int8 activations) minus the head's alone. The greedy choice adds
   the candidates of positive gain by gain per byte while the whole learning state (fixed part + step +
   ``CUT_ENTRIES`` cut tensors, fewer down to one when the budget is short, + at least ``MIN_FEATURES`` int8
   features) fits the budget; the feature buffer then takes what is left, as head-only Ω's does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import TinyccError
from ..ir.backprop import Trained, known_bytes, step_memory
from ..ir.buffer import ReplayBuffer
from ..ir.deep import DeepLearner, TwoLevelLearner
from ..ir.ops import OpKind

CUT_ENTRIES = 8  # int8 cut tensors the backbone step replays
MIN_FEATURES = 256  # int8 feature entries reserved for Φc before the step is chosen
FRACTIONS = (8, 4, 2)  # channel subsets: 1/8, 1/4, 1/2 of a convolution's output channels
HEAD_ITEMS = ("classifier weights", "training state", "replay buffer", "staging vectors",
              "classifier initial weights")


@dataclass
class Candidate:
    """One thing the backbone may train: ``op``'s bias and/or some output channels; its measured gain and cost."""

    label: str
    op: str
    trained: Trained
    cost: int = 0
    gain: float = 0.0


@dataclass
class SparseChoice:
    """The chosen subset, what it costs and the analysis behind it."""

    cut: str
    subset: dict[str, Trained]
    chosen: list[Candidate]
    candidates: list[Candidate]
    memory: dict[str, int] = field(default_factory=dict)
    head_accuracy: float = 0.0
    parts: dict[str, int] = field(default_factory=dict)  # the step's arrays (``step_parts``)

    def _why_nothing(self) -> str:
        """Why nothing was chosen: no candidate gained, or those that gained do not fit the step's room."""
        gained = [c for c in self.candidates if c.gain > 0]
        if not gained:
            return "no candidate gained"
        best = max(gained, key=lambda c: c.gain)
        return (f"{len(gained)} candidate(s) gained but none fits the budget: the best, {best.label} "
                f"({100 * best.gain:+.1f} points), needs {best.cost:,} B more than the head's step; give more RAM")

    def describe(self) -> str:
        """What ``tinycc compile --train sparse`` prints: the choice, its memory, every candidate measured."""
        m = self.memory
        what = ", ".join(c.label for c in self.chosen) or f"nothing ({self._why_nothing()}: the head-only project)"
        lines = [f"sparse: cut at {self.cut!r}; trains {what} + the classifier; step {m['step']:,} B, "
                 f"{m['cut_entries']} cut tensors {m['cut_buffer']:,} B, {m['features']:,} feature entries "
                 f"{m['feature_buffer']:,} B, fixed {m['fixed']:,} B; total RAM {m['total']:,} B of "
                 f"{m['budget']:,} B",
                 f"  contribution analysis (head-only accuracy {self.head_accuracy:.3f}):"]
        for c in sorted(self.candidates, key=lambda c: -c.gain / max(c.cost, 1)):
            mark = "*" if c in self.chosen else " "
            lines.append(f"  {mark} {c.label:<40} gain {100 * c.gain:+5.1f} points, cost {c.cost:>8,} B")
        return "\n".join(lines)


def merge(subset: dict[str, Trained], t_op: str, t: Trained) -> dict[str, Trained]:
    """``subset`` with ``t`` added to ``t_op``'s entry (union of the bias flag and of the channels)."""
    out = dict(subset)
    old = out.get(t_op, Trained(False, ()))
    if old.channels is None or t.channels is None:
        ch = None
    else:
        ch = tuple(sorted(set(old.channels) | set(t.channels)))
    out[t_op] = Trained(old.bias or t.bias, ch)
    return out


def step_parts(dep: Any, cut: str, subset: dict[str, Trained]) -> dict[str, int]:
    """RAM of the sparse step, bytes: the arrays of ``step_memory`` (learn path, ``batch`` rows; float masters of
    the trained biases and channels, the int32 biases of the ops whose bias trains), the int8 copies of the
    trained channels the kernels read, and the region's int8 activations the step reads (``kept_int8``)."""
    dl = DeepLearner(dep, cut, "sparse", capacity=1, subset=subset)
    req = tuple(op.name for op in dl.region_params if dl.tail.trains(op.name)[1])
    known = dl.known_tensors()
    parts = step_memory(dl.tail, dl.batch_size, req, learn=True, known=known)
    parts.update(dl.sparse_ram(), kept_int8=known_bytes(dl.tail, known, dl.batch_size))
    return parts


def step_bytes(dep: Any, cut: str, subset: dict[str, Trained]) -> int:
    """The total of ``step_parts``."""
    return sum(step_parts(dep, cut, subset).values())


def fixed_ram(dep: Any) -> int:
    """The head deployment's RAM without what head-only learning adds (Φc, its training state, its buffer)."""
    return int(dep.memory["ram"]) - sum(i["bytes"] for i in dep.memory["items"]
                                        if i["section"] == "ram" and i["name"] in HEAD_ITEMS)


def minimum_ram(dep: Any, cut: str) -> int:
    """The least RAM ``choose_sparse`` accepts: the fixed part, the classifier's step, one cut tensor and
    ``MIN_FEATURES`` feature entries (bytes)."""
    probe = DeepLearner(dep, cut, "sparse", capacity=1, subset={})
    feat = int(np.prod(dep.extractor.tensors[dep.extractor.outputs[0]].shape[1:]))
    return (fixed_ram(dep) + step_bytes(dep, cut, {}) + ReplayBuffer.bytes_for(1, probe.buffer.feature_count)
            + ReplayBuffer.bytes_for(MIN_FEATURES, feat, "int8"))


def channel_ranking(dep: Any, cut: str, q: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Per region convolution: its output channels, largest weight-gradient norm over the data first."""
    ops = DeepLearner(dep, cut, "sparse", capacity=1, subset={}).region_params
    full = {op.name: Trained(True, None) for op in ops}
    dl = DeepLearner(dep, cut, "sparse", capacity=1, subset=full)
    norm = {op.name: np.zeros(dl.tail.params[op.name].bias.size) for op in ops}
    for s in range(0, len(q), 16):
        g = dl.tail.grads(dl._float_cut(q[s:s + 16]), np.asarray(y[s:s + 16], np.int64))
        for k in norm:
            dw = g[k][0]
            ax = dl.tail.axis[k]
            norm[k] += np.square(np.moveaxis(dw, ax, 0).reshape(dw.shape[ax], -1)).sum(axis=1)
    return {k: np.argsort(-v, kind="stable") for k, v in norm.items()}


def candidates(dep: Any, cut: str, q: np.ndarray, y: np.ndarray) -> list[Candidate]:
    """Biases, whole layers and channel subsets of the last two convolutions after ``cut`` (module docstring)."""
    ops = DeepLearner(dep, cut, "sparse", capacity=1, subset={}).region_params
    out = [Candidate(f"bias of {op.origin or op.name}", op.name, Trained(True, ())) for op in ops
           if len(op.inputs) > 2]  # a layer without a bias: its channels only
    out += [Candidate(f"layer {op.origin or op.name}", op.name, Trained(True, None)) for op in ops]
    convs = [op for op in ops if op.kind in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D)][-2:]
    rank = channel_ranking(dep, cut, q, y) if convs else {}
    for op in convs:
        n = len(rank[op.name])
        for f in FRACTIONS:
            k = max(n // f, 1)
            out.append(Candidate(f"{k}/{n} channels of {op.origin or op.name}", op.name,
                                 Trained(False, tuple(sorted(int(c) for c in rank[op.name][:k])))))
    return out


def accuracy(dep: Any, cut: str, subset: dict[str, Trained], q: np.ndarray, y: np.ndarray, n_train: int,
             lr: float, deep_lr: float) -> float:
    """Test accuracy on ``q[n_train:]`` after learning ``q[:n_train]`` one sample at a time (sparse two-level
    learner, backbone-only deep step)."""
    dl = TwoLevelLearner(dep, cut, "sparse", capacity=CUT_ENTRIES, head_capacity=max(n_train, 1), lr=lr,
                         deep_lr=deep_lr, subset=subset, backbone_only=True)
    for i in range(n_train):
        dl.learn(q[i], int(y[i]))
    return float((dl.predict(q[n_train:])[0] == y[n_train:]).mean())


def analyse(dep: Any, cut: str, x: np.ndarray, y: np.ndarray, lr: float, deep_lr: float,
            n_train: int | None = None, progress: bool = False) -> tuple[float, list[Candidate]]:
    """The contribution analysis: head-only accuracy and every candidate with its gain and exact cost (see the
    module docstring); ``x``, ``y``: labelled float inputs (the first ``n_train``, default 3/4, learn);
    ``progress``: a bar on stderr, one step per learner run (minutes on a big model)."""
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if len(x) != len(y) or len(x) < 8:
        raise TinyccError(f"--train sparse: the contribution analysis needs at least 8 labelled samples, "
                          f"got {len(x)} inputs and {len(y)} labels")
    n_train = int(n_train or (3 * len(x)) // 4)
    q = DeepLearner(dep, cut, "sparse", capacity=1, subset={}).cut_of(x)
    base_step = step_bytes(dep, cut, {})
    cands = candidates(dep, cut, q[:n_train], y[:n_train])
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cands) + 1, desc="sparse: contribution analysis", unit="run", leave=False)
    head = accuracy(dep, cut, {}, q, y, n_train, lr, deep_lr)
    for c in cands:
        if bar is not None:
            bar.update()
        c.cost = step_bytes(dep, cut, {c.op: c.trained}) - base_step
        c.gain = accuracy(dep, cut, {c.op: c.trained}, q, y, n_train, lr, deep_lr) - head
    if bar is not None:
        bar.update()
        bar.close()
    return head, cands


def select(dep: Any, cut: str, head: float, cands: list[Candidate], ram: int) -> SparseChoice:
    """The greedy choice under ``ram`` bytes of total RAM from analysed candidates (see the module docstring)."""
    probe = DeepLearner(dep, cut, "sparse", capacity=1, subset={})
    feat = int(np.prod(dep.extractor.tensors[dep.extractor.outputs[0]].shape[1:]))
    fixed = fixed_ram(dep)
    base_step = step_bytes(dep, cut, {})
    for entries in range(CUT_ENTRIES, 0, -1):  # fewer cut tensors when the budget is short
        cut_buf = ReplayBuffer.bytes_for(entries, probe.buffer.feature_count, "int8")
        room = ram - fixed - cut_buf - ReplayBuffer.bytes_for(MIN_FEATURES, feat, "int8")
        if room >= base_step:
            break
    if room < base_step:
        raise TinyccError(f"--train sparse: {ram:,} B of RAM leave {room:,} B for the learn step after the fixed "
                          f"part and the buffers; the classifier alone needs {base_step:,} B (give at least "
                          f"{minimum_ram(dep, cut):,} B)")
    subset: dict[str, Trained] = {}
    chosen: list[Candidate] = []
    for c in sorted((c for c in cands if c.gain > 0), key=lambda c: (-c.gain / max(c.cost, 1), c.label)):
        trial = merge(subset, c.op, c.trained)
        if trial != subset and step_bytes(dep, cut, trial) <= room:
            subset = trial
            chosen.append(c)
    parts = step_parts(dep, cut, subset)
    step = sum(parts.values())
    per = ReplayBuffer.bytes_for(2, feat, "int8") - ReplayBuffer.bytes_for(1, feat, "int8")
    h = (ram - fixed - step - cut_buf - ReplayBuffer.bytes_for(0, feat, "int8")) // per
    feat_buf = ReplayBuffer.bytes_for(h, feat, "int8")
    mem = {"fixed": fixed, "step": step, "cut_entries": entries, "cut_buffer": cut_buf, "features": int(h),
           "feature_buffer": feat_buf, "total": fixed + step + cut_buf + feat_buf, "budget": int(ram),
           "cut_entry": probe.buffer.feature_count}
    return SparseChoice(cut, subset, chosen, cands, mem, head, parts)


def choose_sparse(dep: Any, cut: str, x: np.ndarray, y: np.ndarray, ram: int, lr: float, deep_lr: float,
                  n_train: int | None = None, progress: bool = False) -> SparseChoice:
    """The subset to train under ``ram`` bytes of total RAM: ``analyse`` then ``select``. A budget below
    ``minimum_ram`` is refused before the analysis."""
    if ram < minimum_ram(dep, cut):
        select(dep, cut, 0.0, [], ram)  # raises, saying why
    head, cands = analyse(dep, cut, x, y, lr, deep_lr, n_train, progress)
    return select(dep, cut, head, cands, ram)

def labelled_data(graph: Any, config: Any, session: Any) -> tuple[np.ndarray, np.ndarray]:
    """The contribution analysis's labelled samples: ``--calib`` (an .npz storing labels), scaled as calibration
    scales them, at most ``--calib-limit``."""
    from ..data import load_data

    spec = config.quant.calib
    if spec is None:
        raise TinyccError("--train sparse: the contribution analysis needs labelled data: give --calib an .npz "
                          "with the samples and their labels (x and y, or x_train and y_train)")
    shape = tuple(int(d) for d in graph.tensors[graph.inputs[0]].shape[1:])
    x, y = load_data(spec, session.registry, shape)
    if y is None:
        raise TinyccError(f"--train sparse: {spec} stores no labels; the contribution analysis needs an .npz with "
                          "the samples and their labels (x and y)")
    n = min(len(x), config.quant.calib_limit)
    x = np.asarray(x[:n], np.float32) * np.float32(config.quant.calib_scale or 1.0)
    if x.shape[1:] != shape:
        raise TinyccError(f"--train sparse: {spec} holds samples of shape {x.shape[1:]}, the model reads {shape}")
    y = np.asarray(y[:n]).reshape(-1)
    if not np.issubdtype(y.dtype, np.integer):
        raise TinyccError(f"--train sparse: the labels of {spec} must be integers")
    return x, y


def _head_and_data(graph: Any, config: Any, session: Any, backend: Any, calib: np.ndarray | None,
                   head: Any) -> tuple[Any, str, np.ndarray, np.ndarray]:
    """The head deployment (``head``, the registry's deployer) without a budget, the deep cut and the labelled data."""
    from dataclasses import replace

    from .deep import choose_deep_cut

    learn, ram = config.learning, config.memory.ram
    if not ram:
        raise TinyccError("--train sparse needs a RAM budget (--ram or --board): it chooses what trains under it")
    x, y = labelled_data(graph, config, session)
    mem_cfg = replace(config.memory, ram=None, flash=None)
    head_cfg = replace(config, learning=replace(learn, train="all", deep_cut=None, deep_lr=None, buffer=1),
                       memory=mem_cfg)
    dep = head(graph, head_cfg, session, backend, calib=calib)
    if dep.loss != "ce":
        raise TinyccError(f"--train sparse needs the softmax cross-entropy head (ce); this model's head is {dep.loss}")
    n_classes = int(dep.classifier[-1].n_out)
    if y.min() < 0 or y.max() >= n_classes:
        raise TinyccError(f"--train sparse: labels must be classes in 0..{n_classes - 1}")
    return dep, choose_deep_cut(dep, learn.deep_cut), x, y


def _progress(config: Any) -> bool:
    """The analysis shows a bar where asked (``compiler.progress``) or where stderr is a terminal."""
    import sys

    return bool(config.compiler.progress) or sys.stderr.isatty()


def build_sparse_choice(graph: Any, config: Any, session: Any, backend: Any, calib: np.ndarray | None,
                        head: Any) -> SparseChoice:
    """``tinycc compile --train sparse``'s analysis: the head deployment without a budget, the deep cut, then
    ``choose_sparse`` under ``--ram`` on the labelled ``--calib`` data."""
    dep, cut, x, y = _head_and_data(graph, config, session, backend, calib, head)
    learn = config.learning
    return choose_sparse(dep, cut, x, y, int(config.memory.ram), learn.lr, learn.backbone_lr,
                         progress=_progress(config))


def build_sparse_deployment(graph: Any, config: Any, session: Any, backend: Any, calib: np.ndarray | None,
                            head: Any) -> tuple[Any, SparseChoice]:
    """The ``--train sparse`` deployment and its choice: ``choose_sparse`` picks the subset, ``sparse_deployment``
    sizes what the target generates; the choice's memory is then the report's (its total equals the report's RAM).
    The choice nothing (no candidate gained) is the head-only step inside the same two-level project."""
    from dataclasses import replace

    dep, cut, x, y = _head_and_data(graph, config, session, backend, calib, head)
    learn = config.learning
    choice = choose_sparse(dep, cut, x, y, int(config.memory.ram), learn.lr, learn.backbone_lr,
                           progress=_progress(config))
    if not choice.subset:  # nothing gained: the head-only project under the same budget
        dep = head(graph, replace(config, learning=replace(learn, train="all", deep_cut=None, deep_lr=None)),
                   session, backend, calib=calib)
        items = {i["name"]: int(i["bytes"]) for i in dep.memory["items"] if i["section"] == "ram"}
        feat_buf = items.get("replay buffer", 0)
        step = sum(items.get(k, 0) for k in HEAD_ITEMS) - feat_buf
        total = int(dep.memory["ram"])
        choice.memory.update(step=step, cut_entries=0, cut_buffer=0, features=int(dep.buffer.capacity),
                             feature_buffer=feat_buf, total=total, fixed=total - step - feat_buf)
        return dep, choice
    dep = sparse_deployment(dep, cut, choice.subset, int(choice.memory["cut_entries"]), config, backend,
                            [c.label for c in choice.chosen])
    choice.memory.update(dep.memory["sparse"])
    return dep, choice


def sparse_deployment(dep: Any, cut: str, subset: dict[str, Trained], entries: int, config: Any, backend: Any,
                      trains: list[str] | None = None) -> Any:
    """``dep`` (the head deployment) made the deployment of ``subset`` for the target (``TwoLevelLearner`` mode
    ``sparse``, backbone-only deep step; ``meta["deep"]``: mode ``sparse``, the cut, the subset, the feature
    entries), sized exactly as ``--deep bias``'s: the int8 front's figures, the step's lines, ``learn step: int8
    channels``, the ``replay buffer`` of ``entries`` cut tensors and a ``feature buffer`` as large as ``--ram`` leaves
    room for (or ``--buffer``; else the default). ``memory["sparse"]``: the choice's figures from the report. A target
    that does not generate the learner refuses in one line."""
    from ..errors import BudgetError
    from ..ir.deployment import BufferConfig
    from .deep import buffer_bytes, front_reports, learning_state
    from .learning import DEFAULT_BUFFER
    from .stage import check_addressable, check_budget

    learn, ram = config.learning, config.memory.ram
    dep.config = config
    dep.meta["deep"] = {"mode": "sparse", "cut": cut, "trains": list(trains or []), "deep_lr": learn.backbone_lr,
                        "subset": dict(subset), "features": 1}
    dep.buffer = BufferConfig(entries, learn.policy, "int8", learn.seed)
    try:
        learner = TwoLevelLearner(dep, cut, "sparse", capacity=entries, head_capacity=1, subset=subset,
                                  backbone_only=True)
    except ValueError as e:
        raise TinyccError(f"--train sparse: {e}") from None
    dep.meta["deep"]["parameters"] = int(learner.tail.parameter_count())
    report_for = front_reports(dep, learner, config, backend)
    if report_for is None:
        backend.check(dep)  # the target's own refusal of a deep learner, in one line naming why
        raise TinyccError(f"--train sparse: the {getattr(backend, 'name', 'chosen')} target does not generate the "
                          "sparse learner; `tinycc compile -t c --train sparse` generates it")
    n = learner.feat_buffer.feature_count

    def fb(h: int) -> int:
        return ReplayBuffer.bytes_for(h, n, "int8")
    if learn.buffer:
        h = int(learn.buffer)
    elif ram:
        fixed = report_for(entries, 1).total("ram") - fb(1)
        per = fb(2) - fb(1)
        h = (int(ram) - fixed - (fb(1) - per)) // per
        if h < 1:
            need = fixed + fb(1)
            raise BudgetError(f"--train sparse: RAM {need:,} bytes with one feature entry ({need - ram:,} above "
                              f"{config.memory.where} {ram:,}); give more RAM")
    else:
        h = DEFAULT_BUFFER
    report = report_for(entries, int(h))
    check_budget(report, config)
    check_addressable(report)
    dep.meta["deep"]["features"] = int(h)
    items = {it.name: it.bytes for it in report.items}
    step = sum(b for k, b in items.items() if k.startswith("learn step: ") or k == "kept int8 activations")
    total = report.total("ram")
    cut_buf, feat_buf = buffer_bytes(learner, entries), fb(int(h))
    figures = {"step": step, "cut_entries": entries, "cut_buffer": cut_buf, "features": int(h),
               "feature_buffer": feat_buf, "total": total, "fixed": total - step - cut_buf - feat_buf}
    dep.memory = {"report": report.table(), **report.to_dict(), "cut": dep.meta["cut"], "deep_cut": cut,
                  "buffer_capacity": entries, "feature_capacity": int(h), "deep": learning_state(report, learner),
                  "sparse": figures}
    return dep
