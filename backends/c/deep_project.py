"""The ``--deep bias`` / ``--deep blocks`` / ``--train sparse`` project of the c target (``tinycc.deploy.deep``,
``sparse``): model.c runs the int8 front (input -> deep cut) with the emitter's kernels over its own arena, then the
learn unit of ``deep_learn.emit_bias_learn`` (the trained region on the int8 kernels reading the RAM int32 biases,
the bias step, ``tcc_deep_learn`` / ``tcc_deep_predict``; ``--deep blocks``: ``deep_learn.emit_blocks_learn``, the
region in float with its weights in RAM; ``--train sparse``: ``deep_learn.emit_sparse_learn`` and a second buffer,
of int8 features, for the classifier), and the project's API (templates/model_deep.c.j2, model_deep.h.j2) over a
replay buffer of int8 cut tensors. The demo, build files and README are the head project's (``deep`` in their
context)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from ...backend_api import Candidate, MemoryFigures
import numpy as np

from ...errors import UnsupportedLayerError
from ...ir.deep import DeepLearner, TwoLevelLearner
from ...ir.deployment import Deployment
from ...ir.memory_model import Descriptors
from .. import names
from ..base import refuse_deep
from .deep_emit import c_step_problem, flash_problem
from .deep_learn import emit_bias_learn, emit_blocks_learn, emit_sparse_learn
from .tables import element_ref


def deep_learner(dep: Deployment) -> DeepLearner:
    """The learner the project runs (the deployment's deep cut and mode, its training settings; ``--train sparse``:
    the two-level learner of the chosen subset, ``meta["deep"]["features"]`` int8 feature entries)."""
    deep = dep.meta["deep"]
    if deep["mode"] == "sparse":
        return TwoLevelLearner(dep, deep["cut"], "sparse", capacity=dep.buffer.capacity,
                               head_capacity=deep["features"], subset=deep["subset"], backbone_only=True)
    return DeepLearner(dep, deep["cut"], deep["mode"], capacity=dep.buffer.capacity)


def refuse_c_step(dep: Deployment, learner: DeepLearner) -> None:
    """One line (``UnsupportedLayerError``) when the generated step cannot train the learner's region (a layer
    whose backward the C step lacks, ``deep_emit.c_step_problem``)."""
    problem = c_step_problem(learner.tail)
    if problem is not None:
        mode = dep.meta["deep"]["mode"]
        flag = "--train sparse" if mode == "sparse" else f"--deep {mode}"
        raise UnsupportedLayerError(f"{flag}: {problem}; `tinycc simulate --deep` trains it on the host, or "
                                    "compile the head-only learner")


def refuse_harvard(dep: Deployment, learner: DeepLearner, target: str) -> None:
    """On a Harvard core (``Target.harvard``, AVR: constant tables in flash, read through ``TCC_READ_*``), refuse in one line a ``--deep bias`` /
    ``--train sparse`` learner whose step keeps a constant that is not a flash table (``deep_emit.flash_problem``).
    The rest runs there: the region's kernels read the learned int32 biases (``tcc_*_bram_s8``) and the trained int8
    channels from RAM, every table from flash."""
    cfg = dep.config.target if dep.config is not None else None
    if cfg is None or not cfg.harvard or learner.mode not in ("bias", "sparse"):
        return
    problem = flash_problem(learner.tail, {op.outputs[0] for op in learner.region.ops})
    if problem is not None:
        refuse_deep(dep, target, f"on {cfg.name} (a Harvard core) the step's constants are flash tables, but "
                                 f"{problem}")


def front_deployment(dep: Deployment) -> Deployment:
    """``dep`` with its int8 front as the extractor (the graph, plan and figures the deploy stage sized)."""
    front = dep.meta["deep_front"]
    g = front["graph"]
    return replace(dep, extractor=g, plan=front["plan"], figures=front["figures"],
                   feature_quant=g.tensors[g.outputs[0]].quant)


def deep_context(dep: Deployment) -> dict[str, Any]:
    """Template values of the deep project: the mode, the learn unit (tinycc's own C: identifiers from positions
    only), the classifier's layers (``k``: the step's parameter index, sizes) and the trained backbone layers (``k``,
    ``n`` biases, ``w`` weights: the float weights of mode blocks, ``bq``: how C names the int32 biases)."""
    learner = deep_learner(dep)
    refuse_c_step(dep, learner)
    params = list(learner.tail.params)
    head_ops = learner.view.ops[len(dep.extractor.ops):]
    head = [{"k": params.index(op.name), "n_out": int(layer.n_out), "n_in": int(layer.n_in)}
            for op, layer in zip(head_ops, dep.classifier)]
    backbone = [{"k": params.index(op.name), "n": int(learner.tail.params[op.name].bias.size),
                 "w": int(learner.tail.params[op.name].weight.size), "tb": learner.tail.trains(op.name)[1],
                 "tw": int(learner.tail.trained_sizes(op.name)[0]),
                 "bq": element_ref(f"tcc_bq{params.index(op.name)}", "int32_t",
                                   int(learner.tail.params[op.name].bias.size))}
                for op in learner.region_params if any(learner.tail.trains(op.name))]
    ctx: dict[str, Any] = {"mode": learner.mode, "head": head, "backbone": backbone}
    if learner.mode == "blocks":
        unit = emit_blocks_learn(learner, dep.train.batch_size)
    elif learner.mode == "sparse":
        unit = emit_sparse_learn(learner, dep.train.batch_size, dep.config)
        fq = learner.view.tensors[learner.feat_name].quant
        ctx["features"] = {"capacity": learner.feat_buffer.capacity, "n": learner.feat_buffer.feature_count,
                           "scale": f"{float(np.float32(fq.scale[0])):.9e}f", "zp": int(fq.zero_point[0])}
    else:
        unit = emit_bias_learn(learner, dep.train.batch_size, dep.config)
    return {**ctx, "unit": names.Escaped(unit)}


def deep_figures(candidate: Candidate, figures: MemoryFigures) -> MemoryFigures:
    """The front's ``figures`` (no classifier: no ``tcc_layers``/``tcc_clf``) with the one descriptor the deep
    project declares, the replay buffer's ``tcc_buf``, sized for the board's ABI."""
    from ..runtime_layout import descriptors

    target = candidate.config.target
    d = descriptors(0, target.abi if target is not None else None)
    learning = candidate.config.learning
    two = learning is not None and learning.train == "sparse"  # --train sparse: the feature buffer's too
    sizes = {"tcc_buf": d.sizes["tcc_buf"], **({"tcc_fbuf": d.sizes["tcc_buf"]} if two else {})}
    return replace(figures, descriptors=Descriptors(sizes, d.exact, d.where))
