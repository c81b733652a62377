"""The one memory question the deploy stage asks a backend, as data: a :class:`Candidate` in, :class:`MemoryFigures`
out. The backend interface itself (``Backend``) lives in ``tinycc.backends.base``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import CompileConfig
from .ir.graph import Graph
from .memory import MemoryPlan


@dataclass(frozen=True)
class Candidate:
    """One deployment the deploy stage sizes.

    ``extractor``: the int8 graph tinycc plans (Φf, or with --inference-only the whole int8 model);
    ``classifier``: the trainable ``ir.train.Classifier`` (None with --inference-only); ``plan``: tinycc's arena
    plan of ``extractor`` (computed once by the core); ``program``: the graph with the boundaries the deployed
    program has (--inference-only: float or int8 I/O; else ``extractor``)."""

    extractor: Graph
    classifier: Any
    config: CompileConfig
    plan: MemoryPlan
    program: Graph


@dataclass(frozen=True)
class MemoryFigures:
    """A backend's memory for a candidate, in bytes, and how exact the figures are.

    ``state``: RAM of the generated runtime besides arena, classifier, training state and buffer;
    ``scratch``: kernel scratch outside the arena; ``tables``: flash of constant tables the kernels add;
    ``descriptors``: the report item (``ir.memory_model.Descriptors``) of the C runtime's descriptor structs the
    code declares, sized for the board's ABI (None: none declared);
    ``artifact``: what the backend produced while sizing and reuses when it emits (tflm: the .tflite and its
    measured arena), so that nothing is computed twice."""

    arena: int
    state: int = 0
    scratch: int = 0
    tables: int = 0
    arena_detail: str = "int8 activations, planned"
    descriptors: Any = None
    state_exact: bool = True
    artifact: Any = None
