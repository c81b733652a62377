"""The deep deployments (``--deep bias`` / ``--deep blocks``): the int8 backbone's biases after a deep cut learn
with the head (bias), or the layers after the cut run in float and all their weights learn with it (blocks).

Built on the head-only deployment (the cut before the Dense chain, no budget, one buffer entry): the deep cut
(``--deep-cut``, default the latest cut tensor with a convolution or Dense layer after it) splits the int8
feature extractor; ``tinycc.ir.deep.DeepLearner`` (mode ``bias``) is the learner the device runs. What the
deeper learning costs replaces the head's training lines in the memory report, exactly as the generated step
declares it (``tinycc.ir.backprop.step_memory`` / ``step_flash``, the arrays of
``backends/c/deep_emit.learner_step``):

- RAM ``learn step: <group>``: trained float parameters (Φc's weights and biases, the master copies of the region's
  biases), the int32 biases the int8 kernels read (RAM-resident, requantized after every step), float values,
  gradient slots, scratch, descriptors, labels (``batch`` rows);
- RAM ``kept int8 activations``: the region's int8 activations the bias step reads (``batch`` rows);
- RAM ``replay buffer``: cut tensors (int8, with label and stamp; ``ReplayBuffer.bytes_for``), as large as the
  RAM budget leaves room for, or ``--buffer``;
- flash ``learn step constants``: the frozen int8 weights of the region the backward reads, with a float scale per
  output channel, and the bias scales; ``learn step initial values``: the load image of the step's initialised RAM
  arrays (parameters and int32 biases); the region's int32 biases leave ``extractor biases``.

The head's ``classifier weights``, ``training state``, ``classifier initial weights`` and its buffer of features
are dropped: the step owns Φc.

``--deep blocks`` (``DeepLearner`` mode ``blocks``): ``learn step: parameters`` holds the region's float32 weights
and biases (every one trains, in RAM; initial values in flash) with Φc's; ``int32 biases``, ``kept int8
activations``, ``learn step constants`` and ``learn step region tables`` are 0 (the region runs in float); on a
target that refuses, the region's int8 weights, biases and tables leave the extractor's flash lines.

A target that generates the deep learner (``Backend.deep_figures`` answers) emits the int8 *front* (input -> deep
cut, ``front_graph``) as its feature extractor and the region after the cut in the learn unit: the report's
extractor lines are then the front's (its own arena plan, weights, biases, tables; ``runtime descriptors`` the
replay buffer's struct alone), flash ``learn step region tables`` holds the region's int8 weights and
requantization tables, and the ``stack`` line is the generated deep API's, measured. ``meta["deep_front"]`` keeps
the front graph, its plan and figures for the backend. Other targets refuse the deployment
(``backends.base.refuse_deep``); their report keeps the whole extractor.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import numpy as np

from ..backend_api import Candidate
from ..config import CompileConfig
from ..errors import BudgetError, TinyccError
from ..ir.backprop import int8_weights, step_flash
from ..ir.buffer import ReplayBuffer
from ..ir.deep import DeepLearner, cut_refusal, deep_cuts
from ..ir.deployment import BufferConfig, Deployment
from ..ir.graph import Graph
from ..ir.memory_model import MemoryReport, deployment_memory, extractor_flash
from ..ir.train import Classifier
from ..targets import code_table
from .stage import check_addressable, check_budget, memory_plan, with_widening_fallback

COMPILE_DEEP_MODES = ("bias", "blocks")  # what `tinycc compile --deep` deploys
_HEAD_ONLY = ("classifier weights", "training state", "replay buffer", "staging vectors", "classifier initial weights")


def choose_deep_cut(dep: Deployment, name: str | None, mode: str = "bias") -> str:
    """The deep cut: ``name`` (a tensor, or a layer whose output it is), else the latest cut with a parameter layer
    (convolution, depthwise or Dense) between it and the features (``mode`` ``bias``: one with a bias)."""
    try:
        cuts = deep_cuts(dep.extractor, dep.classifier)
    except ValueError as e:
        raise TinyccError(f"--deep: {e}") from None
    ext = dep.extractor
    if name is not None:
        names = {name} | {t for op in ext.ops if name in (op.name, op.origin) for t in op.outputs}
        chosen = [c for c in cuts if c in names]
        if not chosen:
            why = next((w for w in (cut_refusal(ext, dep.classifier, t) for t in sorted(names) if t in ext.tensors)
                        if w), None)  # a later layer without a backward pass, named
            why = why or "not a tensor every later layer depends on only through it"
            raise TinyccError(f"--deep-cut {name!r}: {why}; valid: {', '.join(cuts[:12]) or 'none'}")
        return chosen[0]
    for cut in cuts:
        try:
            if DeepLearner(dep, cut, mode, capacity=1).region_params:
                return cut
        except ValueError:
            continue
    what = "with a bias " if mode == "bias" else ""
    raise TinyccError(f"--deep {mode}: no convolution or Dense layer {what}after a possible deep cut")


def front_graph(ext: Graph, cut: str) -> Graph:
    """The int8 front of ``ext``: its ops up to the one computing ``cut`` (a deep cut: every later op depends on the
    input only through it), ``cut`` its output, unused tensors dropped (a copy)."""
    g = ext.copy()
    g.ops = g.ops[:g.ops.index(g.producers_map()[cut]) + 1]
    g.outputs = [cut]
    g.prune_unused()
    return g


def deep_report(head: MemoryReport, learner: DeepLearner, capacity: int, front: bool = False,
                features: int | None = None) -> MemoryReport:
    """The head deployment's report with the deep learner's lines in place of the head's training lines
    (see the module docstring); ``capacity`` cut tensors in the buffer. ``front``: ``head`` is the report of the
    int8 front alone (the target generates the learner): the region's flash tables get their own line and the stack
    line is kept as measured. ``features`` (``--train sparse``, a two-level learner): the capacity of its buffer of
    int8 features (``feature buffer``); its step's ``learn step: int8 channels`` are the int8 copies of the trained
    channels the kernels read."""
    mem = learner.state_bytes()
    blocks = learner.mode == "blocks"
    names = tuple(op.name for op in learner.region_params if not blocks and learner.tail.trains(op.name)[1])
    channels = learner.sparse_ram()["int8_channels"] if learner.mode == "sparse" else 0
    moved = {}  # the region's int8 flash lines the whole-extractor report (not front) holds but the learner owns
    if not front:
        w, b, t = extractor_flash(learner.region)
        moved = ({"extractor weights": w, "extractor biases": b, "requantization tables": t} if blocks else
                 {"extractor biases": sum(4 * learner.tail.params[n].bias.size for n in names)})
    r = MemoryReport()
    for it in head.items:
        if it.name in _HEAD_ONLY:
            continue
        nbytes = it.bytes - moved.get(it.name, 0)
        where = "float32 in RAM" if blocks else "RAM"
        detail = it.detail + (f" (the trained region's: {where}, learn step)" if it.name in moved else "")
        if it.name == "stack" and not front:  # measured on the head-only API, not the deep learn entry
            r.add(it.name, it.section, nbytes, False, detail + " (head-only API; deep learn entry not measured)")
            continue
        r.add(it.name, it.section, nbytes, it.exact, detail)
        if it.name == "feature extractor arena":
            b = learner.batch_size
            details = _BLOCKS_DETAIL if blocks else _DETAIL
            for group in ("parameters", "int32_biases", "values", "gradients", "scratch", "descriptors", "labels"):
                r.add(f"learn step: {group.replace('_', ' ')}", "ram", mem[group], detail=details[group] + f" (x {b})"
                      if group in ("values", "gradients", "scratch", "labels") else details[group])
            if learner.mode == "sparse":
                r.add("learn step: int8 channels", "ram", channels, detail="int8 copy of the trained output "
                      "channels the int8 kernels read, requantized after each step")
            r.add("kept int8 activations", "ram", mem["kept_int8"],
                  detail="none: the float region keeps its float values (learn step: values)" if blocks else
                  f"the trained region's int8 outputs the bias step reads (x batch {b})")
            r.add("replay buffer", "ram", buffer_bytes(learner, capacity),
                  detail=f"{capacity} int8 cut tensors of {learner.buffer.feature_count} values + label + stamp")
            if features is not None:
                n = learner.feat_buffer.feature_count
                r.add("feature buffer", "ram", ReplayBuffer.bytes_for(features, n, "int8"),
                      detail=f"{features} int8 features of {n} values + label + stamp (the classifier's replay)")
            if front:
                r.add("outputs", "ram", 4 * learner.num_classes, detail="float32 probabilities of the last predict")
    known = learner.known_tensors()
    r.add("learn step constants", "flash", step_flash(learner.tail, names, known),
          detail="none: every weight of the float region trains (RAM)" if blocks else
          "frozen int8 region weights + float scale per channel, bias scales")
    r.add("learn step initial values", "flash", mem["parameters"] + mem["int32_biases"] + channels,
          detail="load image of the trained float32 parameters" if blocks else
          "load image of the trained parameters and int32 biases")
    if front and blocks:
        r.add("learn step region tables", "flash", 0, detail="none: the trained region runs in float (its "
              "weights are the learn step's parameters)")
    elif front:  # the region's int8 forward: its weights (those the step keeps as int8 are shared) and tables
        w, b, t = extractor_flash(learner.region)
        shared = sum(wq.size for wq, _ in int8_weights(learner.tail, known).values())
        t += b - sum(4 * learner.tail.params[n].bias.size for n in names)  # sparse: the frozen int32 biases
        r.add("learn step region tables", "flash", w - shared + t,
              detail="the trained region's int32 multiplier and shift per channel (its int8 kernels; the int8 "
                     "weights are the learn step's" + ("; its frozen int32 biases" if learner.mode == "sparse" else "")
                     + ")" if w == shared else
              "the trained region's int8 weights the step does not keep + int32 multiplier and shift per channel")
    return r


_DETAIL = {"parameters": "float32: classifier weights and biases, float master copy of the region's biases",
           "int32_biases": "the region's int32 biases the int8 kernels read, requantized after each step",
           "values": "float activations the float ops read", "gradients": "reused gradient slots",
           "scratch": "gradient accumulation", "descriptors": "convolution / pooling descriptors",
           "labels": "int32 labels of a batch"}
_BLOCKS_DETAIL = {**_DETAIL, "parameters": "float32: the region's weights and biases (from the dequantized int8 "
                  "ones) and the classifier's, updated in place", "int32_biases": "none: the region runs in float",
                  "values": "float activations of the region and classifier (the cut dequantized)"}


def buffer_bytes(learner: DeepLearner, capacity: int) -> int:
    """RAM of a replay buffer of ``capacity`` int8 cut tensors (the runtime's layout)."""
    return ReplayBuffer.bytes_for(capacity, learner.buffer.feature_count, "int8")


def build_deep_deployment(graph: Any, config: CompileConfig, session: Any, backend: Any,
                          calib: np.ndarray | None = None, head: Callable[..., Deployment] | None = None) -> Deployment:
    """The ``--deep bias`` / ``blocks`` deployment (see the module docstring): sized exactly, its buffer of cut
    tensors as large as ``--ram`` leaves room for (or ``--buffer``), checked against the budget; a flash budget
    that only the widened weight copies exceed drops them, as the head's deployment does
    (`with_widening_fallback`). ``head``: the head deployment's builder (the registry's ``ondevice`` deployer;
    default ``tinycc.deploy.build_deployment``, which itself ignores ``learning.deep``: the simulator deploys the
    head and runs the deep learners beside it)."""
    return with_widening_fallback(_build_deep, graph, config, session, backend, calib, head)


def _build_deep(graph: Any, config: CompileConfig, session: Any, backend: Any, calib: np.ndarray | None,
                head: Callable[..., Deployment] | None) -> Deployment:
    from .learning import build_deployment

    learn = config.learning
    if len(learn.deep) != 1 or learn.deep[0] not in COMPILE_DEEP_MODES:
        raise TinyccError(f"--deep {','.join(learn.deep)}: `tinycc compile` deploys one of "
                          f"{', '.join(COMPILE_DEEP_MODES)}")
    mode = learn.deep[0]
    if learn.tinyol or learn.storage not in (None, "int8"):
        raise TinyccError(f"--deep {mode} stores int8 cut tensors and replays them: drop --tinyol / --storage float32")
    mem_cfg = replace(config.memory, ram=None, flash=None)
    head_cfg = replace(config, learning=replace(learn, deep=(), deep_cut=None, buffer=1, features="int8"), memory=mem_cfg)
    dep = (head or build_deployment)(graph, head_cfg, session, backend, calib=calib)
    if dep.loss != "ce":
        raise TinyccError(f"--deep {mode} needs the softmax cross-entropy head (ce); this model's head is {dep.loss}")
    cut = choose_deep_cut(dep, learn.deep_cut, mode)
    try:
        learner = DeepLearner(dep, cut, mode, capacity=1)
    except ValueError as e:
        raise TinyccError(f"--deep {mode}: {e}") from None
    dep.config = config
    trains = [op.origin or op.name for op in learner.region_params  # --deep bias: a layer without a bias trains none
              if mode != "bias" or len(op.inputs) > 2]
    dep.meta["deep"] = {"mode": mode, "cut": cut, "trains": trains, "deep_lr": learn.backbone_lr,
                        "parameters": int(learner.tail.parameter_count())}
    dep.buffer = BufferConfig(1, learn.policy, "int8", learn.seed)
    report_for = front_reports(dep, learner, config, backend)
    if report_for is None:  # the target does not generate the learner (it refuses): the head's extractor lines
        head = MemoryReport()
        for it in dep.memory["items"]:
            head.add(it["name"], it["section"], it["bytes"], it["exact"], it["detail"])

        def report_for(capacity: int) -> MemoryReport:
            return deep_report(head, learner, capacity)
    ram = config.memory.ram
    if learn.buffer:
        cap = int(learn.buffer)
    elif ram:
        fixed = report_for(1).total("ram") - buffer_bytes(learner, 1)
        per = buffer_bytes(learner, 2) - buffer_bytes(learner, 1)
        cap = (ram - fixed - (buffer_bytes(learner, 1) - per)) // per
        if cap < 1:
            need = fixed + buffer_bytes(learner, 1)
            raise BudgetError(f"--deep {mode}: RAM {need:,} bytes with one buffer entry of cut tensors "
                              f"({need - ram:,} above {config.memory.where} {ram:,}); give more RAM or a later "
                              f"--deep-cut (one entry holds {per:,} bytes)")
    else:
        from .learning import DEFAULT_BUFFER

        cap = DEFAULT_BUFFER
    report = report_for(cap)
    check_budget(report, config)
    check_addressable(report)
    dep.buffer = BufferConfig(cap, learn.policy, "int8", learn.seed)
    dep.memory = {"report": report.table(), **report.to_dict(), "cut": dep.meta["cut"], "deep_cut": cut,
                  "buffer_capacity": cap, "deep": learning_state(report, learner)}
    return dep


def learning_state(report: MemoryReport, learner: DeepLearner) -> dict[str, Any]:
    """The learning state of ``report`` (the learn step's RAM lines and the kept int8 activations: what training
    holds besides the replay buffer), the trained parameters (Φc's weights and biases, the region's biases) and the
    state's bytes per trained parameter."""
    state = sum(it.bytes for it in report.items if it.name.startswith("learn step: ") or
                it.name == "kept int8 activations")
    n = int(learner.tail.parameter_count())
    return {"trained_parameters": n, "state_bytes": state, "bytes_per_parameter": round(state / n, 2),
            "buffer_entry_bytes": buffer_bytes(learner, 2) - buffer_bytes(learner, 1)}


def front_reports(dep: Deployment, learner: DeepLearner, config: CompileConfig,
                   backend: Any) -> Callable[[int], MemoryReport] | None:
    """Where ``backend`` generates the deep learner (``deep_figures``): the report of ``dep`` with ``capacity``
    buffer entries, from its int8 front's figures and the measured stack of the deep API (``dep.meta["deep_front"]``
    set for the backend); None where it does not."""
    front = front_graph(dep.extractor, learner.cut)
    cand = Candidate(front, None, config, memory_plan(front, config, backend), front)
    figures = backend.deep_figures(cand)
    if figures is None:
        return None
    dep.meta["deep_front"] = {"graph": front, "plan": cand.plan, "figures": figures}
    stack = backend.stack_bytes(dep)
    clf = Classifier(dep.classifier, dep.train.batch_size, dep.loss, dep.train.mode)
    head = deployment_memory(front, clf, 0, dep.train.batch_size, figures.arena, figures.state,
                             figures.arena_detail, figures.scratch, figures.descriptors, figures.state_exact,
                             figures.tables, stack, code_table=code_table(config.target))
    backend.adjust_report(head, cand, figures)

    def report_for(capacity: int, features: int | None = None) -> MemoryReport:
        return deep_report(head, learner, capacity, front=True, features=features)
    return report_for
