"""Depthwise convolutions with depth multiplier 1: the channel is the inner loop (four per step)."""
from __future__ import annotations

from typing import Any

from ....ir.graph import Graph, Op
from ....ir.ops import OpKind
from . import render
from .common import layer_context

MAX_UNROLLED_TAPS = 25  # interior pixels of kernels up to 5x5 run their taps unrolled
WIDE_WEIGHTS = 2304  # DSP cores: weights up to this many stack bytes when widened (3x3x128) are widened once


def matches(g: Graph, op: Op) -> bool:
    return op.kind == OpKind.DEPTHWISE_CONV2D and op.attrs["depth_multiplier"] == 1


def emit(g: Graph, op: Op, arrays: Any) -> tuple[str, list[str]]:
    """The function's C text (name left as `{fn}`) and the call's arguments."""
    ctx, args = layer_context(g, op, arrays)
    unroll = ctx["KH"] * ctx["KW"] <= MAX_UNROLLED_TAPS
    ww = unroll and ctx["IC"] % 4 == 0 and 2 * ctx["KH"] * ctx["KW"] * ctx["IC"] <= WIDE_WEIGHTS
    c = ctx
    last_x = ((c["KH"] - 1) * c["DH"] * c["IW"] + (c["KW"] - 1) * c["DW"]) * c["IC"]  # the last tap's offsets
    asm = ww and last_x <= 4095 and (c["KH"] * c["KW"] - 1) * c["IC"] * 2 + 4 <= 4095  # ldr's immediate range
    return render("depthwise.c.j2", fn="{fn}", UNROLL=unroll, WW=ww, ASM=asm, **ctx), args
