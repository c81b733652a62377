"""Feasibility of a candidate, decided by tinycc's own compile path before any training.

``compile_deployment`` is `tinycc compile --target c` without the code generation: frontend, verify,
pipeline ``cleanup``, ``ondevice.build_deployment`` (cut, int8 calibration + quantization of Φf, Φc,
replay buffer filling the RAM left, exact memory model ``ir/memory_model.py``, budget check) and the C
backend's ``check``. Its RAM/flash are therefore the figures `tinycc compile` prints for the same model
and budget. A candidate over the RAM/flash budget is reported with the figures of its smallest
deployment (a replay buffer of one entry), a candidate over ``--max-instructions`` with its estimate.

Instruction estimate per inference (features + classifier forward), from the cost per op of the C kernels: MACs
of conv/depthwise/dense times ``INSTR_PER_MAC`` (``ir.stats.op_instructions``), output elements of every other
op times ``INSTR_PER_ELEMENT`` (default ``OTHER_PER_ELEMENT``), plus the float classifier's MACs times
``INSTR_PER_FLOAT_MAC``. The constants were fitted to the instructions per call measured under QEMU Cortex-M4
(`benchmarks/results/backends.md`); on those models the estimate is within about 10 % (features call: digits
1.11 M estimated vs 1.17 M measured, resnet_add 3.55 M vs 3.26 M, mobilenet_v2 1.52 M vs 1.53 M, mobilenet_v3
3.17 M vs 3.42 M, cnas_like 0.51 M vs 0.52 M). An estimate to rank and bound candidates.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ....errors import BudgetError
from ....ir.graph import Graph
from ....ir.stats import op_instructions

INSTR_PER_FLOAT_MAC = 10  # the float classifier (Cortex-M4F)


@dataclass
class Feasibility:
    feasible: bool
    ram: int  # the whole deployment's, as compile reports it (the buffer fills what the budget leaves)
    ram_network: int  # RAM without the replay buffer: arena, classifier, training state, staging, runtime
    flash: int
    instructions: int
    buffer: int
    cut: str
    reason: str = ""
    deployment: Any = field(default=None, repr=False)


def instruction_estimate(extractor: Graph, classifier: list[Any]) -> int:
    """Estimated instructions of one inference: int8 Φf from per-op costs plus the float Φc."""
    total = sum(op_instructions(extractor, op) for op in extractor.ops)
    return total + INSTR_PER_FLOAT_MAC * sum(int(l.weight.size) for l in classifier)


def load_cleaned(path: str, session: Any) -> Graph:
    """Frontend + verify + the import and cleanup stages, as the compile driver does."""
    from ....api import load_cleaned as cleaned

    return cleaned(path, session)


def compile_deployment(path: str, options: Mapping[str, Any], session: Any, calib: np.ndarray | None = None) -> Any:
    """The deployment `tinycc compile PATH --target c` builds with the command-line ``options`` (no files)."""
    from ....api import deploy, make_config

    return deploy(load_cleaned(path, session), make_config(session, **options), session, "c", calib=calib)


def check(path: str, budget: dict[str, Any], cut: str, calib: np.ndarray, session: Any,
          max_instructions: int | None = None) -> Feasibility:
    """Compile the candidate at ``path`` under ``budget`` (board/ram/flash); feasible or why not."""
    try:
        dep = compile_deployment(path, {**budget, "cut": cut}, session, calib)
    except BudgetError as e:
        smallest = compile_deployment(path, {"cut": cut, "buffer": 1}, session, calib)
        return _result(smallest, False, str(e))
    res = _result(dep, True)
    if max_instructions is not None and res.instructions > max_instructions:
        res.feasible, res.deployment = False, None
        res.reason = f"about {res.instructions:,} instructions per inference, over --max-instructions {max_instructions:,}"
    return res


def _result(dep: Any, feasible: bool, reason: str = "") -> Feasibility:
    buffer = sum(i["bytes"] for i in dep.memory["items"] if i["name"] == "replay buffer")
    return Feasibility(feasible, int(dep.memory["ram"]), int(dep.memory["ram"]) - buffer, int(dep.memory["flash"]),
                       instruction_estimate(dep.extractor, dep.classifier), int(dep.buffer.capacity),
                       str(dep.meta["cut"]), reason, dep if feasible else None)


def model_bytes(model: Any, directory: str, name: str) -> bytes:
    """A Keras model saved as ``.keras`` (the bytes travel from Ray workers to the driver)."""
    path = os.path.join(directory, name)
    model.save(path)
    with open(path, "rb") as f:
        return f.read()

