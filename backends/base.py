"""The backend protocol: what every code generator (built-in or third-party) implements."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import BudgetError, TinyccError
from ..ir.deployment import Deployment
from ..ir.graph import Graph
from .demo import DemoRun


# the most bytes of static arrays (RAM + flash) a generated C/C++ project holds: the runtime indexes arrays with
# int32_t, and a host build (x86-64 / AArch64 default code model) addresses its static data within 2 GiB; 16 MiB
# are left for the program's code and the C library
STATIC_LIMIT = 2**31 - 2**24


def check_static_size(deployment: Deployment) -> None:
    """Refuse a deployment whose static arrays the generated C cannot hold (e.g. ``--ram 4G`` on the host: the
    replay buffer fills the budget and the host link would fail with "relocation truncated")."""
    mem = getattr(deployment, "memory", None) or {}  # a deployment not sized yet has nothing to check
    ram, flash = int(mem.get("ram", 0)), int(mem.get("flash", 0))
    if ram + flash <= STATIC_LIMIT:
        return
    items = sorted(mem.get("items", []), key=lambda i: -int(i["bytes"]))[:1]
    big = f" (biggest: {items[0]['name']}, {int(items[0]['bytes']):,} B)" if items else ""
    room = (STATIC_LIMIT - flash) // 2**20
    advice = (f"use --ram {room}M or less, or a smaller --buffer" if room > 0 and ram > flash else
              "use a smaller model (pruning, --ratio) or input")
    raise BudgetError(f"RAM {ram:,} + flash {flash:,} bytes{big}: a generated project holds at most "
                      f"{STATIC_LIMIT:,} bytes of static arrays (2 GiB less 16 MiB: int32 array indices, and a host "
                      f"build addresses its static data within 2 GiB); {advice}")


class Backend:
    """A code generator registered through ``tinycc_register_backends``.

    The driver calls, in order: ``check`` (before any code is emitted: raise
    ``UnsupportedLayerError`` naming the op and its Keras layer), ``arena_bytes``
    (the feature extractor's working memory on this target, used by the memory
    model and the budget check), then ``emit`` into an empty folder (the driver
    makes output atomic).

    ``tinycc validate`` runs a generated project's demo: a backend that can build and run its demo implements
    ``embed_test_vectors`` and ``run_demo``; where it runs are the emulators of the registered targets
    (``tinycc.targets.Target``) whose ``runs`` name it (the first is the default), else ``platforms``. The demo
    prints the dump of ``tinycc.backends.demo`` when built for it.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    arena_detail: ClassVar[str] = "int8 activations, planned"
    platforms: ClassVar[tuple[str, ...]] = ()  # where run_demo builds and runs this target's demo
    # the generated code declares the C runtime's descriptor structs (tcc_layers, tcc_clf, tcc_buf), whose size
    # ``descriptors`` sizes for the board's ABI (backends.runtime_layout)
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

    def descriptors(self, n_layers: int, abi: Any) -> Any:
        """The runtime descriptors' report item (``ir.memory_model.Descriptors``) on a target of ``abi``
        (``tinycc.targets.Abi``; None: unknown), or None when the generated code declares none."""
        if not self.runtime_descriptors:
            return None
        from .runtime_layout import descriptors

        return descriptors(n_layers, abi)

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

    def run_demo(self, project: Path, platform: str, target: Any = None) -> DemoRun:
        """Build the demo of ``project`` for ``platform`` (the emulator of ``target``, a registered
        ``tinycc.targets.Target``) with the dump on, run it, return what it printed; raise TinyccError (tool
        missing, build or run failed) with one line."""
        raise TinyccError(f"target {self.name!r} has no demo runner")
