"""The backend protocol: what every code generator (built-in or third-party) implements."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import TinyccError
from ..ir.deployment import Deployment
from ..ir.graph import Graph
from .demo import DemoRun


class Backend:
    """A code generator registered through ``tinycc_register_backends``.

    The driver calls, in order: ``check`` (before any code is emitted: raise
    ``UnsupportedLayerError`` naming the op and its Keras layer), ``arena_bytes``
    (the feature extractor's working memory on this target, used by the memory
    model and the budget check), then ``emit`` into an empty folder (the driver
    makes output atomic).

    ``tinycc validate`` runs a generated project's demo: a backend that can build and run its demo lists the
    platforms in ``platforms`` (the first is the default) and implements ``embed_test_vectors`` and
    ``run_demo``; the demo prints the dump of ``tinycc.backends.demo`` when built for it.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    arena_detail: ClassVar[str] = "int8 activations, planned"
    platforms: ClassVar[tuple[str, ...]] = ()  # where run_demo builds and runs this target's demo
    # the generated code declares the C runtime's descriptor structs (tcc_layers, tcc_clf, tcc_buf), whose size
    # the memory model computes for the board's ABI (ir.memory_model.descriptor_bytes)
    runtime_descriptors: ClassVar[bool] = False
    runtime_state_exact: ClassVar[bool] = True  # runtime_state_bytes is what the generated code declares

    def check(self, deployment: Deployment, options: dict[str, Any]) -> None:
        """Raise UnsupportedLayerError for anything this backend cannot run."""

    def arena_bytes(self, extractor: Graph, options: dict[str, Any]) -> int:  # pragma: no cover
        """Bytes of activation memory the extractor needs on this target."""
        raise NotImplementedError

    def runtime_state_bytes(self, extractor: Graph, classifier: Any, options: dict[str, Any]) -> int:
        """RAM of the generated runtime besides arena, classifier, training state and buffer."""
        return 0

    def scratch_bytes(self, extractor: Graph, options: dict[str, Any]) -> int:
        """RAM of kernel scratch buffers outside the arena (``--kernels cmsis-nn``: CMSIS-NN's buffer)."""
        return 0

    def table_bytes(self, extractor: Graph, options: dict[str, Any]) -> int:
        """Flash of constant tables the generated kernels add besides weights, biases and requantization."""
        return 0

    def stack_bytes(self, deployment: Deployment, options: dict[str, Any],
                    arch: str | None) -> tuple[int, bool, str] | None:
        """Worst-case stack of the generated code's API on the board's ``arch`` (None: the host build) as
        (bytes, measured by the core's compiler, detail); None: this target reports no stack line."""
        return None

    def adjust_report(self, report: Any, model: Any, options: dict[str, Any], learning: bool) -> None:
        """Change the memory ``report`` for what this target really deploys (``model``: the extractor Graph, or
        the Deployment of ``--inference-only``); the default keeps the C runtime's items."""

    def inference_arena_bytes(self, deployment: Deployment, options: dict[str, Any]) -> int:
        """Arena of an inference-only deployment (``--inference-only``; the whole int8 model)."""
        return self.arena_bytes(deployment.extractor, options)

    def inference_state_bytes(self, graph: Graph, options: dict[str, Any]) -> int:
        """RAM besides the arena of an inference-only deployment."""
        return 0

    def emit(self, deployment: Deployment, options: dict[str, Any], outdir: Path) -> list[Path]:  # pragma: no cover
        """Write the project into ``outdir`` (exists, empty); return the files written."""
        raise NotImplementedError

    def embed_test_vectors(self, project: Path, deployment: Deployment, x: np.ndarray, y: np.ndarray) -> None:
        """Replace the demo's test vectors in a generated project (a copy: validate never edits the user's)."""
        raise TinyccError(f"target {self.name!r} cannot embed test vectors in its project (no demo runner)")

    def run_demo(self, project: Path, platform: str) -> DemoRun:
        """Build the demo of ``project`` for ``platform`` with the dump on, run it, return what it printed;
        raise TinyccError (tool missing, build or run failed) with one line."""
        raise TinyccError(f"target {self.name!r} has no demo runner")
