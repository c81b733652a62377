"""The backend interface: what every code generator (built-in or third-party) implements.

``Candidate`` and ``MemoryFigures`` (the one memory question) are defined by the core in ``tinycc.backend_api``."""
from __future__ import annotations

from pathlib import Path
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from ..backend_api import Candidate, MemoryFigures
from ..config import TestVectors
from ..errors import BudgetError, TinyccError
from ..ir.deployment import Deployment
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


def deep_flag(mode: str) -> str:
    """The option that asks for a deep learner of ``mode`` (``--deep bias|blocks``, ``--train sparse``)."""
    return "--train sparse" if mode == "sparse" else f"--deep {mode}"


def refuse_deep(deployment: Deployment, target: str, why: str) -> None:
    """Refuse a ``--deep bias`` / ``blocks`` / ``--train sparse`` deployment (``tinycc.deploy.deep``, ``sparse``) on a
    target that does not generate its learner (``why``: the reason, a few words), in one line with what it would
    take."""
    deep = (getattr(deployment, "meta", None) or {}).get("deep")
    if deep:
        mem = deployment.memory
        flag = deep_flag(deep["mode"])
        raise TinyccError(f"{flag}: the {target} target does not generate the deep learner ({why}; "
                          f"it would take RAM {int(mem.get('ram', 0)):,} B, flash {int(mem.get('flash', 0)):,} B); "
                          f"`tinycc compile -t c {flag}` generates it")


class Backend(ABC):
    """A code generator registered through ``tinycc_register_backends``.

    The deploy stage asks it one question per candidate deployment, :meth:`memory_figures` (its arena, runtime
    state, scratch and tables for the memory model and the budget check; the memory plan comes with the
    candidate, computed once by the core). The driver then calls :meth:`check` (before any code is emitted:
    raise ``UnsupportedLayerError`` naming the op and its Keras layer) and :meth:`emit` into an empty folder
    (the driver makes output atomic). The deployment carries its config (``deployment.config``), board,
    memory plan and the figures the backend gave for it (``deployment.figures``, with its ``artifact``).

    ``tinycc validate`` runs a generated project's demo: a backend that can build and run its demo implements
    ``embed_test_vectors`` and ``run_demo``; where it runs are the emulators of the registered targets
    (``tinycc.targets.Target``) whose ``runs`` name it (the first is the default), else ``platforms``. The demo
    prints the dump of ``tinycc.backends.demo`` when built for it.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    platforms: ClassVar[tuple[str, ...]] = ()  # where run_demo builds and runs this target's demo
    multi_io: ClassVar[bool] = False  # --inference-only models with several inputs/outputs (one pointer each)

    def check(self, deployment: Deployment) -> None:
        """Raise UnsupportedLayerError for anything this backend cannot run."""

    @classmethod
    def supported_ops(cls) -> list[tuple[str, str, list[str]]]:
        """What ``tinycc ops`` lists for this target: (what, dtypes, sorted names) per section; none by default."""
        return []

    @abstractmethod
    def memory_figures(self, candidate: Candidate) -> MemoryFigures:
        """This target's memory for ``candidate`` (see :class:`tinycc.backend_api.MemoryFigures`)."""

    @abstractmethod
    def emit(self, deployment: Deployment, outdir: Path, vectors: TestVectors | None = None) -> list[Path]:
        """Write the project into ``outdir`` (exists, empty); return the files written. ``vectors``: the
        demo's inputs and labels (default: the calibration samples)."""

    def overlaps(self, graph: Any, config: Any) -> dict[str, int]:
        """Output tensor -> the least shift in bytes at which this target's kernel for its op may write its output
        starting that far below its (last-read) input (``tinycc.memory``); the default: no overlap."""
        return {}

    def stack_bytes(self, deployment: Deployment) -> tuple[int, bool, str] | None:
        """Worst-case stack of the generated code's API on the deployment's board (``deployment.config.target``;
        none: the host build) as (bytes, measured by the core's compiler, detail); None: no stack line."""
        return None

    def deep_figures(self, candidate: Candidate) -> MemoryFigures | None:
        """The memory of a ``--deep bias`` deployment's int8 front (``candidate.extractor``: input -> deep cut, no
        classifier) where this target generates the deep learner; None (the default): it does not, and
        :meth:`check` refuses the deployment (``refuse_deep``)."""
        return None

    def adjust_report(self, report: Any, candidate: Candidate, figures: MemoryFigures) -> None:
        """Change the memory ``report`` of ``candidate`` (``ir.memory_model.MemoryReport``; ``figures``: what
        :meth:`memory_figures` answered for it) for what this target really deploys; the default keeps the C
        runtime's items."""

    def embed_test_vectors(self, project: Path, deployment: Deployment, x: np.ndarray, y: np.ndarray) -> None:
        """Replace the demo's test vectors in a generated project (a copy: validate never edits the user's)."""
        raise TinyccError(f"target {self.name!r} cannot embed test vectors in its project (no demo runner)")

    def run_demo(self, project: Path, platform: str, target: Any = None) -> DemoRun:
        """Build the demo of ``project`` for ``platform`` (the emulator of ``target``, a registered
        ``tinycc.targets.Target``) with the dump on, run it, return what it printed; raise TinyccError (tool
        missing, build or run failed) with one line."""
        raise TinyccError(f"target {self.name!r} has no demo runner")
