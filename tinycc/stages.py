"""Compile stages that passes join.

``tinycc compile`` runs named stages in this order: ``import`` (right after the frontend), ``cleanup``,
``optimize`` (e.g. pruning), then, on each deployed int8 graph, ``pre_quantize``, ``quantize``,
``post_quantize``. A pass joins a stage when it is registered (``registry.add_pass(P, stage=..., before=...,
after=...)``, or class attributes ``stage``/``before``/``after``); the order inside a stage is the registration
order (built-ins first) refined by the before/after constraints. ``--passes +NAME,-NAME`` adds a registered pass
to its stage, or drops one, for a run. ``tinycc passes`` prints the resolved order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .errors import TinyccError
from .options import OptionError

STAGES = ("import", "cleanup", "optimize", "pre_quantize", "quantize", "post_quantize")
FRONT_STAGES = ("import", "cleanup", "optimize")  # on the whole float model, before the deploy stage
QUANTIZE_STAGES = ("pre_quantize", "quantize", "post_quantize")  # on each int8 graph the deploy stage builds
PIPELINE_STAGES = {"cleanup": ("cleanup",), "int8": QUANTIZE_STAGES}  # the built-in pipelines, as stages


@dataclass(frozen=True)
class Placement:
    """Where a registered pass runs: its stage, passes it must run before/after, and whether it runs by
    default (``default=False``: only with ``--passes +NAME``)."""

    stage: str
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    default: bool = True


def parse_passes(text: str) -> tuple[str, ...]:
    """``--passes +NAME,-NAME`` -> ('+NAME', '-NAME'); one error line for anything else."""
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    for s in items:
        if s[0] not in "+-" or not s[1:]:
            raise OptionError(f"--passes: {s!r}: write +NAME to add a pass or -NAME to drop one")
    return items


def resolve(registry: Any, stage: str, edits: Iterable[str] = ()) -> list[str]:
    """The passes of ``stage`` in run order, with ``--passes`` edits applied."""
    if stage not in STAGES:
        raise TinyccError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    edits = tuple(edits)
    for e in edits:
        if e[1:] not in registry.passes:
            raise TinyccError(f"--passes: unknown pass {e[1:]!r}; registered: {', '.join(sorted(registry.passes))}")
        if e[1:] not in registry.placements:
            raise TinyccError(f"--passes: pass {e[1:]!r} belongs to no stage (its plugin runs it itself)")
    add = {e[1:] for e in edits if e[0] == "+"}
    drop = {e[1:] for e in edits if e[0] == "-"}
    names = [n for n, p in registry.placements.items()
             if p.stage == stage and (p.default or n in add) and n not in drop]
    return _order(names, registry.placements)


def _order(names: list[str], placements: dict[str, Placement]) -> list[str]:
    """Stable topological order: registration order, each pass after its ``after`` and before its ``before``."""
    index = {n: i for i, n in enumerate(names)}
    preds: dict[str, set[str]] = {n: set() for n in names}
    for n in names:
        p = placements[n]
        preds[n].update(a for a in p.after if a in index)
        for b in p.before:
            if b in index:
                preds[b].add(n)
    out: list[str] = []
    done: set[str] = set()
    while len(out) < len(names):
        ready = [n for n in names if n not in done and preds[n] <= done]
        if not ready:
            left = [n for n in names if n not in done]
            raise TinyccError(f"pass order constraints form a cycle among: {', '.join(left)}")
        out.append(ready[0])
        done.add(ready[0])
    return out


def check_placements(registry: Any) -> None:
    """At session start: every stage is known and the constraints have no cycle. A constraint on a pass that is
    not registered (its plugin blocked with ``-p no:NAME``, or not installed) is ignored."""
    for name, p in registry.placements.items():
        if p.stage not in STAGES:
            raise TinyccError(f"pass {name!r}: unknown stage {p.stage!r}; stages: {', '.join(STAGES)}")
    for stage in STAGES:
        resolve(registry, stage)  # cycles fail here, at startup


def run_stages(graph: Any, registry: Any, stages: Iterable[str], ctx: Any, **kw: Any) -> None:
    """Run ``stages`` in order on ``graph`` (in place) with the config's ``--passes`` edits."""
    from .passes import run_pipeline

    edits = ctx.config.compiler.passes
    for stage in stages:
        names = resolve(registry, stage, edits)
        if names:
            dump = tuple(p for p in kw.get("dump_after", ()) if p in names)
            run_pipeline(graph, names, ctx, verify_each=kw.get("verify_each", True), dump_after=dump,
                         dump_dir=kw.get("dump_dir"))
