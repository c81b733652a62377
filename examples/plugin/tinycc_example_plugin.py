"""An example third-party tinycc plugin.

It registers one pass, ``remove_noop_reshapes``, and a pipeline ``example`` that runs the
built-in cleanup followed by it. Installed with pip, it is found through the ``tinycc``
entry-point group, exactly like the built-in plugins are registered through the same hooks.
"""
from __future__ import annotations

import pluggy

from tinycc.ir.graph import Graph
from tinycc.ir.ops import OpKind
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


@hookimpl
def tinycc_register_passes(registry) -> None:
    registry.add_pass(RemoveNoopReshapes)


@hookimpl
def tinycc_register_pipelines(registry) -> None:
    registry.add_pipeline("example", ["remove_noop_reshapes"])
