"""Depthwise convolutions with depth multiplier 1: the channel is the inner loop (four per step).

Two templates. ``depthwise_fast.c.j2`` (the common case: channels a multiple of 4, 3x3-sized windows, the input
zero point folded into the bias, requantization parameters that pack, see `fast_tables`) runs on DSP cores as
hand-scheduled blocks: two output pixels x four channels whose taps are all inside the input as one assembly
block with literal offsets, every other pixel through a table of tap pointers (padding taps read a buffer of the
zero point), and the requantization in five instructions per output. ``depthwise.c.j2`` runs the rest.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ....ir.graph import Graph, Op
from ....ir.interpreter_int8 import conv_params
from ....ir.ops import OpKind
from ..overlap import Geometry, geometry
from . import render
from .common import layer_context

MAX_UNROLLED_TAPS = 25  # interior pixels of kernels up to 5x5 run their taps unrolled
WIDE_WEIGHTS = 2304  # DSP cores: weights up to this many stack bytes when widened (3x3x128) are widened once
LDR_REACH = 4095  # the largest literal offset of a Thumb-2 word load


def matches(g: Graph, op: Op) -> bool:
    return op.kind == OpKind.DEPTHWISE_CONV2D and op.attrs["depth_multiplier"] == 1


def fast_tables(g: Graph, op: Op) -> tuple[np.ndarray | None, np.ndarray] | None:
    """The fast template's flash tables, or None where it does not apply: the bias with the input zero point
    folded in, doubled (the taps multiply by doubled weights, so that one ``smmlar`` is the high multiply), and per
    channel the pair (multiplier, (c << 8) | right) with c = 2^(right-1) + out_zp * 2^right: the rounding half
    and the output zero point added before the right shift (exact: a multiple of 2^right commutes with the
    floor shift). Needs right shifts 1..30, c in 24 bits and every partial sum and ``c + high product`` inside
    int32 (proved from the weights and bias)."""
    p = conv_params(g, op)
    w = g.tensors[op.inputs[1]].data.astype(np.int64)
    c_in = w.shape[-1]
    if len(op.inputs) > 2:  # per channel: bias - in_zp * (the channel's taps summed)
        b = g.tensors[op.inputs[2]].data.astype(np.int64) - int(p["in_zp"]) * w.reshape(-1, c_in).sum(axis=0)
    elif p["in_zp"] == 0:
        b = None  # no bias: the accumulators start at 0
    else:
        return None  # no bias tensor to carry the folded zero point (flash stays as the memory model counts it)
    right = -np.asarray(p["shift"], np.int64)
    if right.min() < 1 or right.max() > 30:
        return None
    c = (1 << (right - 1)) + int(p["out_zp"]) * (1 << right)
    if np.abs(c).max() >= 2**23:
        return None
    acc = (0 if b is None else np.abs(b)) + 128 * np.abs(w).reshape(-1, c_in).sum(axis=0)  # |bias' + sum(x * w)|, x in [-128, 127]
    if 2 * int(acc.max()) + 2**23 + 2 >= 2**31:
        return None
    mult = np.broadcast_to(np.asarray(p["mult"], np.int64), right.shape)
    rq = np.stack([mult, (c << 8) | right], axis=1).reshape(-1)
    return (None if b is None else 2 * b), rq


def emit(g: Graph, op: Op, arrays: Any) -> tuple[str, list[str]]:
    """The function's C text (name left as `{fn}`) and the call's arguments."""
    x = geometry(g, op)
    far = ((x.kh - 1) * x.dh * x.iw + x.sw + (x.kw - 1) * x.dw) * x.ic  # the interior block's last word
    if x.ic % 4 == 0 and 2 * x.kh * x.kw * x.ic <= WIDE_WEIGHTS and x.kh * x.kw <= MAX_TAPS and far <= LDR_REACH:
        tables = fast_tables(g, op)
        if tables is not None:
            ctx, args = layer_context(g, op, arrays, rq_tables=tables)
            return render("depthwise_fast.c.j2", fn="{fn}", **ctx, **fast_context(x)), args
    ctx, args = layer_context(g, op, arrays)
    unroll = ctx["KH"] * ctx["KW"] <= MAX_UNROLLED_TAPS
    ww = unroll and ctx["IC"] % 4 == 0 and 2 * ctx["KH"] * ctx["KW"] * ctx["IC"] <= WIDE_WEIGHTS
    c = ctx
    last_x = ((c["KH"] - 1) * c["DH"] * c["IW"] + (c["KW"] - 1) * c["DW"]) * c["IC"]  # the last tap's offsets
    asm = ww and last_x <= 4095 and (c["KH"] * c["KW"] - 1) * c["IC"] * 2 + 4 <= 4095  # ldr's immediate range
    return render("depthwise.c.j2", fn="{fn}", UNROLL=unroll, WW=ww, ASM=asm, **ctx), args


MAX_TAPS = 128  # the widened weights of one group of channels within ldrd's reach (8 bytes a tap, up to 1020)


def _smla(a: str) -> list[str]:
    """Four multiply-accumulates: lanes 0/2 (u with r) and 1/3 (q with s) into accumulators a0..a3."""
    return [f"smlabb %[{a}0], %[u], %[r], %[{a}0]", f"smlatt %[{a}2], %[u], %[r], %[{a}2]",
            f"smlabb %[{a}1], %[q], %[s], %[{a}1]", f"smlatt %[{a}3], %[q], %[s], %[{a}3]"]


def pair_block(x: Geometry) -> list[str]:
    """Two horizontally adjacent output pixels (accumulators a*, b*) x four channels, every tap inside the input:
    per input word the block reads (literal offset from x), one load and two widenings shared by the taps of
    both pixels that read it; per tap of a pixel one ldrd of its widened weights (8 bytes a tap from w)."""
    out: list[str] = []
    for ky in range(x.kh):
        for col in sorted({p * x.sw + kx * x.dw for p in (0, 1) for kx in range(x.kw)}):
            out += [f"ldr %[u], [%[x], #{(ky * x.dh * x.iw + col) * x.ic}]", "sxtb16 %[q], %[u], ror #8",
                    "sxtb16 %[u], %[u]"]
            for p, acc in ((0, "a"), (1, "b")):
                for kx in range(x.kw):
                    if p * x.sw + kx * x.dw == col:
                        out += [f"ldrd %[r], %[s], [%[w], #{8 * (ky * x.kw + kx)}]", *_smla(acc)]
    return out


def pointer_block(x: Geometry) -> list[str]:
    """One output pixel x four channels through a table of tap pointers (tp; padding taps point at a buffer of
    the zero point), the channel offset in c."""
    out: list[str] = []
    for t in range(x.kh * x.kw):
        out += [f"ldr %[u], [%[tp], #{4 * t}]", "ldr %[u], [%[u], %[c]]", "sxtb16 %[q], %[u], ror #8",
                "sxtb16 %[u], %[u]", f"ldrd %[r], %[s], [%[w], #{8 * t}]", *_smla("a")]
    return out


def _interior(n_out: int, size: int, k: int, stride: int, dil: int, pad: int) -> tuple[int, int]:
    """The first and one past the last output row (or column) whose taps are all inside the input."""
    ok = [o for o in range(n_out) if o * stride - pad >= 0 and o * stride - pad + (k - 1) * dil < size]
    return (ok[0], ok[-1] + 1) if ok else (0, 0)


def fast_context(x: Geometry) -> dict[str, Any]:
    """The fast template's literals: interior rows [OYT, OYB) and columns [OXL, OXR), whether any tap pads, the
    assembly blocks."""
    oyt, oyb = _interior(x.oh, x.ih, x.kh, x.sh, x.dh, x.pt)
    oxl, oxr = _interior(x.ow, x.iw, x.kw, x.sw, x.dw, x.pl)
    pad = (oyt, oyb, oxl, oxr) != (0, x.oh, 0, x.ow)
    return {"T": x.kh * x.kw, "OYT": oyt, "OYB": oyb, "OXL": oxl, "OXR": oxr, "PAD": pad,
            "PAIR": pair_block(x), "POINTER": pointer_block(x)}
