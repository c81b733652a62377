"""The backend interface: what every code generator (built-in or third-party) implements.

``Candidate`` and ``MemoryFigures`` (the one memory question) are defined by the core in ``tinycc.backend_api``."""
from __future__ import annotations

from pathlib import Path
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from ..backend_api import Candidate, MemoryFigures
from ..config import TestVectors
from ..errors import TinyccError
from ..ir.deployment import Deployment
from .demo import DemoRun


class Backend(ABC):
    """A code generator registered through ``tinycc_register_backends``.

    The deploy stage asks it one question per candidate deployment, :meth:`memory_figures` (its arena, runtime
    state, scratch and tables for the memory model and the budget check; the memory plan comes with the
    candidate, computed once by the core). The driver then calls :meth:`check` (before any code is emitted:
    raise ``UnsupportedLayerError`` naming the op and its Keras layer) and :meth:`emit` into an empty folder
    (the driver makes output atomic). The deployment carries its config (``deployment.config``), board,
    memory plan and the figures the backend gave for it (``deployment.figures``, with its ``artifact``).

    ``tinycc validate`` runs a generated project's demo: a backend that can build and run its demo lists the
    platforms in ``platforms`` (the first is the default) and implements ``embed_test_vectors`` and
    ``run_demo``; the demo prints the dump of ``tinycc.backends.demo`` when built for it.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    platforms: ClassVar[tuple[str, ...]] = ()  # where run_demo builds and runs this target's demo

    def check(self, deployment: Deployment) -> None:
        """Raise UnsupportedLayerError for anything this backend cannot run."""

    @abstractmethod
    def memory_figures(self, candidate: Candidate) -> MemoryFigures:
        """This target's memory for ``candidate`` (see :class:`tinycc.backend_api.MemoryFigures`)."""

    @abstractmethod
    def emit(self, deployment: Deployment, outdir: Path, vectors: TestVectors | None = None) -> list[Path]:
        """Write the project into ``outdir`` (exists, empty); return the files written. ``vectors``: the
        demo's inputs and labels (default: the calibration samples)."""

    def embed_test_vectors(self, project: Path, deployment: Deployment, x: np.ndarray, y: np.ndarray) -> None:
        """Replace the demo's test vectors in a generated project (a copy: validate never edits the user's)."""
        raise TinyccError(f"target {self.name!r} cannot embed test vectors in its project (no demo runner)")

    def run_demo(self, project: Path, platform: str) -> DemoRun:
        """Build the demo of ``project`` for ``platform`` with the dump on, run it, return what it printed;
        raise TinyccError (tool missing, build or run failed) with one line."""
        raise TinyccError(f"target {self.name!r} has no demo runner")
