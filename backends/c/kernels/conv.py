"""Ungrouped convolutions of any kernel size, stride, dilation and padding: the valid taps of each pixel are
computed once (padding is never materialized); convolutions with short kernel rows (small input channel counts,
e.g. a first layer on an image) gather two pixels' windows into a small stack buffer instead."""
from __future__ import annotations

from typing import Any

from ....ir.graph import Graph, Op
from ....ir.ops import OpKind
from . import render
from .common import layer_context, literals, portable_args, widened_arg, widened_bytes


def matches(g: Graph, op: Op) -> bool:
    return op.kind == OpKind.CONV2D and op.attrs.get("groups", 1) == 1


IM2COL_ROW = 16  # kernel rows shorter than this (bytes) are gathered: per-row dot products would be too short
IM2COL_WINDOW = 256  # at most this many bytes per pixel window: 2 windows on the stack
WIDE_WINDOW = 576  # Cortex-M4/M7: windows up to this many int8 (3x3x64) are widened, 4x their size on the stack


def emit(g: Graph, op: Op, arrays: Any, widen: bool = True) -> tuple[str, list[str]]:
    """The function's C text (name left as `{fn}`) and the call's arguments (``widen``: the weights widened in
    flash where the assembly path reads them; without, the wide path is not taken and im2col widens as it runs)."""
    kind = _path(g, op, widen)
    ctx, args = layer_context(g, op, arrays, fold=kind == "im2col")  # im2col: padded taps hold the zero point
    n = ww_inputs(g, op, widen)
    ctx["WWARG"] = n > 0
    ctx["RQH"] = n > 0 and ctx["RQ"]  # the widened weights carry each pair's requantization
    if kind == "im2col":
        ctx["LEFT"] = leftover_bytes(g, op)
    if n:
        order = window_order(g, op) if kind == "im2col" else None
        args.append(widened_arg(g, op, arrays, n, ctx["_rq"] if ctx["RQH"] else None, order))
        args = portable_args(arrays, args, portable_roles(kind, ctx))
    return render({"im2col": "conv_im2col.c.j2", "wide": "conv_wide.c.j2", "plain": "conv.c.j2"}[kind],
                  fn="{fn}", **ctx), args  # conv_wide: conv.c.j2 where the assembly is not built


def portable_roles(kind: str, ctx: dict[str, Any]) -> tuple[str, ...]:
    """The tables (`common.ROLE_ARGS`) that only the portable path reads where the layer has widened weights: the
    int8 weights (the assembly path reads the widened copy) and, where each pair's requantization heads its widened
    weights (RQH), bias, multipliers and shifts; im2col's odd last channel reads them all."""
    if kind == "im2col" and ctx["OC"] % 2:
        return ()
    return ("w", "bias", "mult", "shift") if ctx["RQH"] else ("w",)


def leftover_bytes(g: Graph, op: Op) -> list[tuple[int, int]]:
    """im2col: (kernel row, byte in the row) of the bytes past each kernel row's whole words, row by row."""
    kh, kw, c = g.tensors[op.inputs[1]].shape[1:]
    row = kw * c
    return [(ky, row - row % 4 + b) for ky in range(kh) for b in range(row % 4)]


def window_order(g: Graph, op: Op) -> list[int]:
    """im2col on Cortex-M4/M7: the window position (ky * KW * C + byte) of each widened input, as the template
    widens a window straight from the input: each kernel row's whole words, then the rows' leftover bytes
    (`leftover_bytes`), then -1 (zero weights) to a whole number of words."""
    kh, kw, c = g.tensors[op.inputs[1]].shape[1:]
    row = kw * c
    order = [ky * row + b for ky in range(kh) for b in range(row - row % 4)]
    order += [ky * row + b for ky, b in leftover_bytes(g, op)]
    return order + [-1] * ((kh * row + 3) // 4 * 4 - len(order))


def _path(g: Graph, op: Op, widen: bool = True) -> str:
    kh, kw, c = g.tensors[op.inputs[1]].shape[1:]
    if kw * c < IM2COL_ROW and kh * kw * c <= IM2COL_WINDOW:
        return "im2col"
    if widen and c % 4 == 0 and kh * kw * c <= WIDE_WINDOW and g.tensors[op.outputs[0]].shape[-1] % 2 == 0:
        return "wide"  # the assembly 2x2 block's shapes
    return "plain"


def ww_inputs(g: Graph, op: Op, widen: bool = True) -> int:
    """How many weights per output channel the assembly loop reads widened at compile time (0: none)."""
    if not widen:
        return 0
    kh, kw, c = g.tensors[op.inputs[1]].shape[1:]
    kind = _path(g, op)
    if kind == "wide":
        return kh * kw * c
    if kind == "im2col" and g.tensors[op.outputs[0]].shape[-1] >= 2:
        return (kh * kw * c + 3) // 4 * 4  # the window padded to whole words (zero weights)
    return 0


def ww_bytes(g: Graph, op: Op, widen: bool = True) -> int:
    """Flash of the widened weights `emit` adds for `op` (0 without)."""
    n = ww_inputs(g, op, widen)
    return widened_bytes(g, op, n, literals(g, op, fold=_path(g, op) == "im2col")["RQ"]) if n else 0
