"""What both deployment kinds share: a candidate's memory plan and the backend's figures for it, budgets, names.

The memory plan of a candidate's int8 graph is computed here, once (``tinycc.memory.plan``); backends get it in
a :class:`~tinycc.backend_api.Candidate` and answer one question, ``memory_figures(candidate)``.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from ..backend_api import Candidate
from ..config import CompileConfig
from ..errors import BudgetError
from ..ir.graph import Graph
from ..ir.memory_model import MemoryReport
from ..memory import MemoryPlan, plan
from ..names import c_identifier
from ..options import MAX_BYTES

log = logging.getLogger("tinycc.deploy")
BUDGET_ADVICE = "Try a smaller --buffer, pruning (--ratio), a later --cut, or a bigger board"


def memory_plan(graph: Graph, config: CompileConfig, backend: Any = None) -> MemoryPlan:
    """tinycc's arena plan of ``graph`` under the config's planner settings, with the overlaps ``backend``'s
    kernels declare (none without a backend or with in-place off)."""
    overlap = backend.overlaps(graph, config) if backend is not None and config.memory.inplace else None
    return plan(graph, config.memory.planner, inplace=config.memory.inplace, overlap=overlap)


def candidate_figures(backend: Any, extractor: Graph, classifier: Any, config: CompileConfig,
                      program: Graph | None = None) -> tuple[Any, Any]:
    """(candidate, the backend's memory figures for it); the plan is computed once, here."""
    cand = Candidate(extractor, classifier, config, memory_plan(extractor, config, backend),
                     program or extractor)
    return cand, backend.memory_figures(cand)


def c_name(name: str) -> str:
    """The prefix of the generated C names (``tinycc.names.c_identifier``: ASCII, no keyword, no clash with the
    runtime's ``tcc_``/``tinycc_`` names)."""
    return c_identifier(name)


def check_addressable(report: MemoryReport) -> None:
    """Refuse a deployment larger than a 32-bit microcontroller can address (e.g. a huge --buffer)."""
    for section in ("ram", "flash"):
        total = report.total(section)
        if total > MAX_BYTES:
            raise BudgetError(f"{section.upper()} would be {total:,} bytes, above {MAX_BYTES:,} (4 GiB, the most a "
                              f"32-bit microcontroller addresses); biggest: "
                              + ", ".join(f"{i.name} {i.bytes:,} B" for i in report.biggest(section)))


def check_budget(report: MemoryReport, config: CompileConfig, advice: str = BUDGET_ADVICE) -> None:
    """Refuse a report above the config's RAM or flash budget, naming the biggest items."""
    problems = []
    mem = config.memory
    for section, limit in (("ram", mem.ram), ("flash", mem.flash)):
        if limit is None:
            continue
        total = report.total(section)
        if total > limit:
            big = ", ".join(f"{i.name} {i.bytes:,} B" for i in report.biggest(section))
            problems.append(f"{section.upper()} needs {total:,} bytes but {mem.where} allows {limit:,}: "
                            f"short by {total - limit:,} bytes (biggest: {big})")
    if problems:
        err = BudgetError("; ".join(problems) + f". {advice}")
        err.sections = tuple(p.split()[0].lower() for p in problems)  # which budgets it exceeds: ram, flash
        raise err


def with_widening_fallback(build: Callable[..., Any], graph: Graph, config: CompileConfig, *args: Any,
                           **kwargs: Any) -> Any:
    """``build(graph, config, ...)``; where a flash budget refuses it while the weights widened in flash (the
    Cortex-M4/M7 kernels' int16 copies) are on, once more as with --no-widen: that deployment if it fits (its
    ``meta["widen_dropped"]`` set, a warning logged), else the first refusal."""
    if config.memory.flash is None or not config.memory.widen:
        return build(graph, config, *args, **kwargs)
    try:
        return build(graph.copy(), config, *args, **kwargs)
    except BudgetError as first:
        if "flash" not in getattr(first, "sections", ()):
            raise
        try:
            dep = build(graph, config.without_widening(), *args, **kwargs)
        except BudgetError:
            raise first from None
    log.warning("the flash budget (%s) leaves no room for the int16 copies of the weights: compiled as with "
                "--no-widen (slower kernels)", config.memory.where)
    dep.meta["widen_dropped"] = True
    return dep
