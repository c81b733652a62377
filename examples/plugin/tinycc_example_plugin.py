"""An example third-party tinycc plugin: two passes that join ``tinycc compile``'s stages, and an option of its own.

- ``remove_noop_reshapes`` joins the ``import`` stage: it runs right after the frontend, before the built-in
  ``cleanup`` stage (whose ``fold_reshapes`` would drop the same reshapes later; here it shows the earliest place
  a pass can run). It is also the whole of the pipeline ``example``, for ``run_pipeline`` from Python.
- ``zero_small_weights`` joins the ``optimize`` stage after the built-in ``prune_channels``: with
  ``--zero-below T`` it sets every float Conv/Dense weight with ``|w| < T`` to 0 before quantization, which the
  emitted ``model.c`` shows as zeros in the weight arrays. Its option is declared through the
  ``tinycc_register_compile_options`` hook and read back typed (``ctx.config.plugin("example")``).

Installed with pip, it is found through the ``tinycc`` entry-point group (``pyproject.toml``), like the built-in
plugins, which register through the same hooks. ``-p no:example`` blocks it; ``tinycc compile --passes
-zero_small_weights`` drops one of its passes for a run; ``tinycc passes`` shows where they run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pluggy

from tinycc.ir.graph import Graph
from tinycc.ir.ops import OpKind
from tinycc.options import positive_float
from tinycc.passes import Pass, PassContext

hookimpl = pluggy.HookimplMarker("tinycc")


class RemoveNoopReshapes(Pass):
    """Drop RESHAPE/FLATTEN ops whose output shape equals their input shape."""

    name = "remove_noop_reshapes"
    description = "remove reshapes that do not change the shape (example plugin)"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        changed = False
        for op in list(graph.ops):
            if op.kind in (OpKind.RESHAPE, OpKind.FLATTEN):
                src, dst = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
                if src.shape == dst.shape and op.outputs[0] not in graph.outputs:
                    graph.bypass(op)
                    changed = True
        ctx.results[self.name] = {"changed": changed}
        return changed


@dataclass(frozen=True)
class ExampleOptions:
    """This plugin's compile options (typed; the defaults live here)."""

    zero_below: float | None = None  # None: zero_small_weights changes nothing


def _add_arguments(group: Any) -> None:
    group.add_argument("--zero-below", type=positive_float, metavar="T",
                       help="example plugin: set float Conv/Dense weights with |w| < T to 0 before quantization")


def _build(args: Any) -> ExampleOptions:
    return ExampleOptions(getattr(args, "zero_below", None))


class ZeroSmallWeights(Pass):
    """Set small float weights of Conv2D, DepthwiseConv2D and Dense ops to exactly 0."""

    name = "zero_small_weights"
    description = "zero float weights below --zero-below (example plugin)"

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        opts = ctx.config.plugin("example") or ExampleOptions()
        if opts.zero_below is None:
            return False
        zeroed = 0
        for op in graph.ops:
            if op.kind in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE) and len(op.inputs) > 1:
                w = graph.tensors[op.inputs[1]]
                if w.data is not None and w.data.dtype == np.float32:
                    small = np.abs(w.data) < opts.zero_below
                    zeroed += int(np.count_nonzero(small & (w.data != 0)))
                    w.data = np.where(small, np.float32(0), w.data)
        ctx.results[self.name] = {"zeroed": zeroed}
        return zeroed > 0


@hookimpl
def tinycc_register_passes(registry: Any) -> None:
    registry.add_pass(RemoveNoopReshapes, "import")
    registry.add_pass(ZeroSmallWeights, "optimize", after="prune_channels")


@hookimpl
def tinycc_register_compile_options(registry: Any) -> None:
    registry.add_compile_options("example", _add_arguments, _build)


@hookimpl
def tinycc_register_pipelines(registry: Any) -> None:
    registry.add_pipeline("example", ["remove_noop_reshapes"])
