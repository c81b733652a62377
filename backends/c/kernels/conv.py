"""Ungrouped convolutions of any kernel size, stride, dilation and padding: the valid taps of each pixel are
computed once (padding is never materialized); convolutions with short kernel rows (small input channel counts,
e.g. a first layer on an image) gather two pixels' windows into a small stack buffer instead."""
from __future__ import annotations

from typing import Any

from ....ir.graph import Graph, Op
from ....ir.ops import OpKind
from . import render
from .common import layer_context


def matches(g: Graph, op: Op) -> bool:
    return op.kind == OpKind.CONV2D and op.attrs.get("groups", 1) == 1


IM2COL_ROW = 16  # kernel rows shorter than this (bytes) are gathered: per-row dot products would be too short
IM2COL_WINDOW = 256  # at most this many bytes per pixel window: 2 windows on the stack
WIDE_WINDOW = 576  # Cortex-M4/M7: windows up to this many int8 (3x3x64) are widened, 4x their size on the stack


def emit(g: Graph, op: Op, arrays: Any) -> tuple[str, list[str]]:
    """The function's C text (name left as `{fn}`) and the call's arguments."""
    kh, kw, c = g.tensors[op.inputs[1]].shape[1:]
    if kw * c < IM2COL_ROW and kh * kw * c <= IM2COL_WINDOW:
        ctx, args = layer_context(g, op, arrays, fold=True)  # padded taps hold the zero point: it folds
        return render("conv_im2col.c.j2", fn="{fn}", **ctx), args
    ctx, args = layer_context(g, op, arrays)
    if c % 4 == 0 and kh * kw * c <= WIDE_WINDOW and ctx["OC"] % 2 == 0:  # the assembly 2x2 block's shapes
        return render("conv_wide.c.j2", fn="{fn}", **ctx), args  # conv.c.j2 where the assembly is not built
    return render("conv.c.j2", fn="{fn}", **ctx), args
