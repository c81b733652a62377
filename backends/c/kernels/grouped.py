"""Grouped convolutions (1 < groups): each group's output channels read only its own slice of the input channels.
Group, per-group channel counts and geometry are literals; the valid taps of each pixel are computed once (padding
is never materialized); without padding the input zero point is folded into the bias."""
from __future__ import annotations

from typing import Any

from ....ir.graph import Graph, Op
from ....ir.ops import OpKind, same_padding
from . import render
from .common import layer_context


def matches(g: Graph, op: Op) -> bool:
    return op.kind == OpKind.CONV2D and op.attrs.get("groups", 1) > 1


def _unpadded(g: Graph, op: Op) -> bool:
    """Whether no tap of any output pixel falls outside the input (no padding: the zero point folds)."""
    if op.attrs["padding"] == "valid":
        return True
    x, w = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
    (sh, sw), (dh, dw) = op.attrs["strides"], op.attrs["dilation"]
    return same_padding(x.shape[1], w.shape[1], sh, dh) == (0, 0) == same_padding(x.shape[2], w.shape[2], sw, dw)


def emit(g: Graph, op: Op, arrays: Any) -> tuple[str, list[str]]:
    """The function's C text (name left as `{fn}`) and the call's arguments."""
    ctx, args = layer_context(g, op, arrays, fold=_unpadded(g, op))
    groups = int(op.attrs["groups"])
    ctx.update(G=groups, ICG=ctx["IC"] // groups, OCG=ctx["OC"] // groups)
    return render("grouped.c.j2", fn="{fn}", **ctx), args
