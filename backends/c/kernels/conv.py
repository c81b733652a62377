"""Ungrouped convolutions of any kernel size, stride, dilation and padding (border split by valid-tap ranges)."""
from __future__ import annotations

from typing import Any

from ....ir.graph import Graph, Op
from ....ir.ops import OpKind
from . import render
from .common import layer_context


def matches(g: Graph, op: Op) -> bool:
    return op.kind == OpKind.CONV2D and op.attrs.get("groups", 1) == 1


def emit(g: Graph, op: Op, arrays: Any) -> tuple[str, list[str]]:
    """The function's C text (name left as `{fn}`) and the call's arguments."""
    ctx, args = layer_context(g, op, arrays)
    return render("conv.c.j2", fn="{fn}", **ctx), args
