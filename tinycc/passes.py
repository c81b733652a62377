"""Pass base class, pass context and the pass manager that runs pipelines."""
from __future__ import annotations

import contextvars
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from .ir.graph import Graph, IRError
from .ir.verify import verify
from .config import CompileConfig
from .errors import TinyccError

log = logging.getLogger("tinycc.passes")


@dataclass
class PassContext:
    """What a pass may read besides the graph: the typed config, calibration samples, the session, shared results.

    ``calib``: calibration samples given as an array (the Python API, validate, scenarios); else the calibrate
    pass loads ``config.quant.calib``. A plugin's own options: ``ctx.config.plugin(NAME)``."""

    session: Any = None
    config: CompileConfig = field(default_factory=CompileConfig)
    calib: np.ndarray | None = None
    results: dict[str, Any] = field(default_factory=dict)  # reports keyed by pass name
    progress: bool = False


class Pass:
    """A named graph transformation. ``run`` returns True when it changed the graph.

    ``stage`` / ``before`` / ``after``: where ``tinycc compile`` runs it (``tinycc.stages``), unless the plugin
    passes them to ``registry.add_pass``; a pass without a stage runs only in pipelines that name it."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    stage: ClassVar[str | None] = None
    before: ClassVar[tuple[str, ...]] = ()
    after: ClassVar[tuple[str, ...]] = ()

    def run(self, graph: Graph, ctx: PassContext) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class PassRecord:
    name: str
    seconds: float
    changed: bool
    kind: str = "pass"  # "pass" (run by run_pipeline) or "phase" (frontend, emit, ... timed by the driver)


_SINK: contextvars.ContextVar[list[PassRecord] | None] = contextvars.ContextVar("tinycc_pass_records", default=None)


@contextmanager
def collect_records() -> Iterator[list[PassRecord]]:
    """Collect the record of every pass and phase run inside the block, nested pipelines included."""
    records: list[PassRecord] = []
    token = _SINK.set(records)
    try:
        yield records
    finally:
        _SINK.reset(token)


@contextmanager
def timed(name: str) -> Iterator[None]:
    """Time a phase of a compile (frontend, cut search, emit) into the active collector.

    The record holds the phase's own time: passes and phases recorded inside it are subtracted, so that
    the records of one compile add up to its wall time.
    """
    t0 = time.perf_counter()
    sink = _SINK.get()
    start = len(sink) if sink is not None else 0
    try:
        yield
    finally:
        if sink is not None:
            inner = sum(r.seconds for r in sink[start:])
            sink.append(PassRecord(name, time.perf_counter() - t0 - inner, False, "phase"))


def summarize(records: list[PassRecord]) -> list[tuple[str, str, int, float]]:
    """(name, kind, runs, total seconds) per distinct name, in first-run order."""
    out: dict[str, list[Any]] = {}
    for r in records:
        row = out.setdefault(r.name, [r.name, r.kind, 0, 0.0])
        row[2] += 1
        row[3] += r.seconds
    return [tuple(v) for v in out.values()]  # type: ignore[misc]


def run_pipeline(graph: Graph, pass_names: list[str], ctx: PassContext, *, verify_each: bool = True,
                 dump_after: tuple[str, ...] = (), dump_dir: str | Path | None = None) -> list[PassRecord]:
    """Run passes in order on ``graph`` (in place). Unknown names are a hard error."""
    registry = ctx.session.registry
    unknown = [n for n in pass_names if n not in registry.passes]
    if unknown:
        raise TinyccError(f"unknown pass(es): {', '.join(unknown)}; registered: {', '.join(sorted(registry.passes))}")
    bad_dump = [n for n in dump_after if n not in pass_names]
    if bad_dump:
        raise TinyccError(f"--dump-after names passes not in the pipeline: {', '.join(bad_dump)}")
    records = []
    for name in pass_names:
        p = registry.passes[name].obj()
        t0 = time.perf_counter()
        changed = bool(p.run(graph, ctx))
        dt = time.perf_counter() - t0
        records.append(PassRecord(name, dt, changed))
        sink = _SINK.get()
        if sink is not None:
            sink.append(records[-1])
        log.info("pass %s: %.3f s%s", name, dt, " (changed)" if changed else "")
        if verify_each:
            try:
                verify(graph)
            except IRError as e:
                raise IRError(f"after pass {name!r}: {e}") from None
        if name in dump_after:
            from .ir import serialize

            out = Path(dump_dir or ".") / f"{graph.name}.after-{name}"
            out.parent.mkdir(parents=True, exist_ok=True)
            serialize.save(graph, out)
    return records
