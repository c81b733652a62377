"""The deep bias deployment (``--deep bias``): the int8 backbone's biases after a deep cut learn with the head.

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
are dropped: the step owns Φc. Targets without the deep runtime refuse the deployment (``backends.base.refuse_deep``).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import numpy as np

from ..config import CompileConfig
from ..errors import BudgetError, TinyccError
from ..ir.backprop import step_flash
from ..ir.buffer import ReplayBuffer
from ..ir.deep import DeepLearner, deep_cuts
from ..ir.deployment import BufferConfig, Deployment
from ..ir.memory_model import MemoryReport
from .stage import check_addressable, check_budget

COMPILE_DEEP_MODES = ("bias",)  # what `tinycc compile --deep` deploys (blocks: simulator only, so far)
_HEAD_ONLY = ("classifier weights", "training state", "replay buffer", "staging vectors", "classifier initial weights")


def choose_deep_cut(dep: Deployment, name: str | None) -> str:
    """The deep cut: ``name`` (a tensor, or a layer whose output it is), else the latest cut with a parameter layer
    (convolution, depthwise or Dense) between it and the features."""
    try:
        cuts = deep_cuts(dep.extractor, dep.classifier)
    except ValueError as e:
        raise TinyccError(f"--deep: {e}") from None
    ext = dep.extractor
    if name is not None:
        names = {name} | {t for op in ext.ops if name in (op.name, op.origin) for t in op.outputs}
        chosen = [c for c in cuts if c in names]
        if not chosen:
            raise TinyccError(f"--deep-cut {name!r}: not a tensor every later layer depends on only through it; "
                              f"valid: {', '.join(cuts[:12]) or 'none'}")
        return chosen[0]
    for cut in cuts:
        try:
            if DeepLearner(dep, cut, "bias", capacity=1).region_params:
                return cut
        except ValueError:
            continue
    raise TinyccError("--deep bias: no convolution or Dense layer with a bias after a possible deep cut")


def deep_report(head: MemoryReport, learner: DeepLearner, capacity: int) -> MemoryReport:
    """The head deployment's report with the deep bias learner's lines in place of the head's training lines
    (see the module docstring); ``capacity`` cut tensors in the buffer."""
    mem = learner.state_bytes()
    names = tuple(op.name for op in learner.region_params)
    region_biases = sum(4 * learner.tail.params[n].bias.size for n in names)
    r = MemoryReport()
    for it in head.items:
        if it.name in _HEAD_ONLY:
            continue
        nbytes = it.bytes - (region_biases if it.name == "extractor biases" else 0)
        detail = it.detail + (" (the trained region's: RAM, learn step)" if it.name == "extractor biases" else "")
        if it.name == "stack":  # measured on the head-only API; the deep learn entry's is not measured yet
            r.add(it.name, it.section, nbytes, False, detail + " (head-only API; deep learn entry not measured)")
            continue
        r.add(it.name, it.section, nbytes, it.exact, detail)
        if it.name == "feature extractor arena":
            b = learner.batch_size
            for group in ("parameters", "int32_biases", "values", "gradients", "scratch", "descriptors", "labels"):
                r.add(f"learn step: {group.replace('_', ' ')}", "ram", mem[group], detail=_DETAIL[group] + f" (x {b})"
                      if group in ("values", "gradients", "scratch", "labels") else _DETAIL[group])
            r.add("kept int8 activations", "ram", mem["kept_int8"],
                  detail=f"the trained region's int8 outputs the bias step reads (x batch {b})")
            r.add("replay buffer", "ram", buffer_bytes(learner, capacity),
                  detail=f"{capacity} int8 cut tensors of {learner.buffer.feature_count} values + label + stamp")
    known = learner.known_tensors()
    r.add("learn step constants", "flash", step_flash(learner.tail, names, known),
          detail="frozen int8 region weights + float scale per channel, bias scales")
    r.add("learn step initial values", "flash", mem["parameters"] + mem["int32_biases"],
          detail="load image of the trained parameters and int32 biases")
    return r


_DETAIL = {"parameters": "float32: classifier weights and biases, float master copy of the region's biases",
           "int32_biases": "the region's int32 biases the int8 kernels read, requantized after each step",
           "values": "float activations the float ops read", "gradients": "reused gradient slots",
           "scratch": "gradient accumulation", "descriptors": "convolution / pooling descriptors",
           "labels": "int32 labels of a batch"}


def buffer_bytes(learner: DeepLearner, capacity: int) -> int:
    """RAM of a replay buffer of ``capacity`` int8 cut tensors (the runtime's layout)."""
    return ReplayBuffer.bytes_for(capacity, learner.buffer.feature_count, "int8")


def build_deep_deployment(graph: Any, config: CompileConfig, session: Any, backend: Any,
                          calib: np.ndarray | None = None, head: Callable[..., Deployment] | None = None) -> Deployment:
    """The ``--deep bias`` deployment (see the module docstring): sized exactly, its buffer of cut tensors as large
    as ``--ram`` leaves room for (or ``--buffer``), checked against the budget. ``head``: the head deployment's
    builder (the registry's ``ondevice`` deployer; default ``tinycc.deploy.build_deployment``, which itself ignores
    ``learning.deep``: the simulator deploys the head and runs the deep learners beside it)."""
    from .learning import build_deployment

    learn = config.learning
    if learn.deep != ("bias",):
        modes = ", ".join(m for m in learn.deep if m not in COMPILE_DEEP_MODES)
        raise TinyccError(f"--deep {modes}: `tinycc compile` deploys --deep bias only; the other modes run in "
                          "`tinycc simulate --deep`")
    if learn.tinyol or learn.storage not in (None, "int8"):
        raise TinyccError("--deep bias stores int8 cut tensors and replays them: drop --tinyol / --storage float32")
    mem_cfg = replace(config.memory, ram=None, flash=None)
    head_cfg = replace(config, learning=replace(learn, deep=(), deep_cut=None, buffer=1, features="int8"), memory=mem_cfg)
    dep = (head or build_deployment)(graph, head_cfg, session, backend, calib=calib)
    if dep.loss != "ce":
        raise TinyccError(f"--deep bias needs the softmax cross-entropy head (ce); this model's head is {dep.loss}")
    cut = choose_deep_cut(dep, learn.deep_cut)
    try:
        learner = DeepLearner(dep, cut, "bias", capacity=1)
    except ValueError as e:
        raise TinyccError(f"--deep bias: {e}") from None
    head = MemoryReport()
    for it in dep.memory["items"]:
        head.add(it["name"], it["section"], it["bytes"], it["exact"], it["detail"])
    ram = config.memory.ram
    if learn.buffer:
        cap = int(learn.buffer)
    elif ram:
        fixed = deep_report(head, learner, 1).total("ram") - buffer_bytes(learner, 1)
        per = buffer_bytes(learner, 2) - buffer_bytes(learner, 1)
        cap = (ram - fixed - (buffer_bytes(learner, 1) - per)) // per
        if cap < 1:
            need = fixed + buffer_bytes(learner, 1)
            raise BudgetError(f"--deep bias: RAM {need:,} bytes with one buffer entry of cut tensors "
                              f"({need - ram:,} above {config.memory.where} {ram:,}); give more RAM or a later "
                              f"--deep-cut (one entry holds {per:,} bytes)")
    else:
        from .learning import DEFAULT_BUFFER

        cap = DEFAULT_BUFFER
    report = deep_report(head, learner, cap)
    check_budget(report, config)
    check_addressable(report)
    dep.config = config
    dep.buffer = BufferConfig(cap, learn.policy, "int8", learn.seed)
    trains = [op.origin or op.name for op in learner.region_params]
    dep.meta["deep"] = {"mode": "bias", "cut": cut, "trains": trains,
                        "parameters": int(learner.tail.parameter_count())}
    dep.memory = {"report": report.table(), **report.to_dict(), "cut": dep.meta["cut"], "deep_cut": cut,
                  "buffer_capacity": cap}
    return dep
