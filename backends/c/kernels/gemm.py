"""1x1 stride-1 convolutions and dense layers as a matrix product: pixels x inputs times inputs x outputs."""
from __future__ import annotations

from typing import Any

import numpy as np

from ....ir.graph import Graph, Op
from ....ir.ops import OpKind
from . import render
from .common import (WIDEN_GUARD, layer_context, literals, portable_args, rq_headers, widened_arg, widened_bytes,
                     widened_pairs)


WIDEN_MAX_INPUTS = 256  # DSP path: two pixels widened once into 4 x inputs bytes of stack (at most 1 KiB)
REC_WORDS = 10  # TCC_GEMM2_'s record per channel pair besides the weights: 2b0 2b1 2b0 2b1, m0 m1 c0 c1 r0 r1
LAST_FLAG = 0x100  # set in the last record's right shift (asr by a register reads its low byte only)
MAX_STRB_OC = 4094  # the second pixel's outputs are stored at a literal offset OC + 1 (strb imm12)


def matches(g: Graph, op: Op) -> bool:
    if op.kind == OpKind.DENSE:
        return True
    if op.kind != OpKind.CONV2D or op.attrs.get("groups", 1) != 1:
        return False
    kh, kw = g.tensors[op.inputs[1]].shape[1:3]
    return (kh, kw) == (1, 1) and tuple(op.attrs["strides"]) == (1, 1)


def emit(g: Graph, op: Op, arrays: Any, widen: bool = True) -> tuple[str, list[str]]:
    """The function's C text (name left as `{fn}`) and the call's arguments (``widen``: the weights widened in
    flash where the assembly path reads them, else widened as it runs)."""
    ctx, args = layer_context(g, op, arrays, fold=True)  # no padding: the zero point folds into the bias
    ctx["P"] = ctx["OH"] * ctx["OW"]
    ctx["WIDEN"] = ctx["IC"] % 4 == 0 and ctx["IC"] <= WIDEN_MAX_INPUTS
    ctx["WWARG"] = widen and ww_used(g, op, ctx)
    ctx["RQH"] = ctx["WWARG"] and ctx["RQ"]  # the widened weights carry each pair's requantization
    ctx["FAST"] = ctx["RQH"] and _fast(ctx)
    ctx["G8"] = ctx["FAST"] and ctx["IC"] == 8 and ctx["FOLDED"]
    if ctx["G8"]:  # TCC_GEMM8_: the whole layer in one assembly block
        name = arrays.array("ww", "int32_t", gemm8_words(g, op, ctx["_rq"]), guard=WIDEN_GUARD)
        args.append(f"TCC_WW({name})")
    elif ctx["FAST"]:  # TCC_GEMM2_: one assembly block per pixel pair
        ic = ctx["IC"]
        ctx["NSTEPS"] = ic // 4
        ctx["PER"] = _steps_per_pass(ic // 4)
        name = arrays.array("ww", "int32_t", gemm_words(g, op, ctx["_rq"]), guard=WIDEN_GUARD)
        args.append(f"TCC_WW({name})")
    elif ctx["WWARG"]:
        args.append(widened_arg(g, op, arrays, ctx["IC"], ctx["_rq"] if ctx["RQH"] else None))
    if ctx["WWARG"]:
        args = portable_args(arrays, args, portable_roles(ctx))
    return render("gemm.c.j2", fn="{fn}", **ctx), args


def portable_roles(ctx: dict[str, Any]) -> tuple[str, ...]:
    """The tables (`common.ROLE_ARGS`) that only the portable path reads where the layer has widened weights: all
    four for TCC_GEMM8_; with an even channel count (no odd last channel, which reads them all) all four for
    TCC_GEMM2_, bias, multipliers and shifts where the pairs' requantization heads the widened weights (RQH), the
    int8 weights where every pixel has a partner (a last odd pixel reads them)."""
    if ctx["G8"]:
        return ("w", "bias", "mult", "shift")
    if ctx["OC"] % 2:
        return ()
    rq = ("bias", "mult", "shift") if ctx["RQH"] else ()
    return (("w",) if ctx["FAST"] or ctx["P"] % 2 == 0 else ()) + rq


def _fast(ctx: dict[str, Any]) -> bool:
    """Whether the layer runs TCC_GEMM2_ (Cortex-M4/M7): the pair requantization with the full int8 range, at
    least two pixels (an odd last one runs with the pixel before it) and the second pixel's outputs at a literal
    store offset."""
    return bool(ctx["FULL_RANGE"] and ctx["P"] >= 2 and ctx["OC"] <= MAX_STRB_OC)


def _steps_per_pass(s: int) -> int:
    """TCC_GEMM2_'s steps per compare and branch: all of them up to 16, else 8/4/2/1."""
    return s if s <= 16 else (8 if s % 8 == 0 else (4 if s % 4 == 0 else (2 if s % 2 == 0 else 1)))


def gemm_words(g: Graph, op: Op, rq: tuple) -> np.ndarray:
    """TCC_GEMM2_'s flash table: per output channel pair the doubled biases twice (the four accumulators), the
    doubled weights widened (`widened_pairs`), then the pair's multipliers, rounding constants and shifts."""
    w = g.tensors[op.inputs[1]].data
    w = w.reshape(w.shape[0], -1).astype(np.int64)
    n = w.shape[1]
    pairs = widened_pairs(2 * w, n).reshape(-1, n)
    h = rq_headers(rq, len(pairs))  # 2b0 2b1 m0 m1 c0 c1 r0 r1 per pair
    recs = np.concatenate([h[:, :2], h[:, :2], pairs, h[:, 2:]], axis=1).astype(np.int64)
    recs[-1, -1] |= LAST_FLAG  # the last pair's r1: the block's loop ends there
    return recs.reshape(-1)


def gemm8_words(g: Graph, op: Op, rq: tuple) -> np.ndarray:
    """TCC_GEMM8_'s flash table (8 inputs): per output channel its doubled bias, its four words of doubled weights
    widened (inputs 0/2, 1/3, 4/6, 5/7), its multiplier, rounding constant and right shift."""
    bias, mult, right, ozp = rq
    w = 2 * g.tensors[op.inputs[1]].data.reshape(g.tensors[op.inputs[1]].shape[0], -1).astype(np.int64)
    lanes = w[:, [0, 2, 1, 3, 4, 6, 5, 7]] & 0xFFFF  # low and high half of each word
    words = (lanes[:, 0::2] | (lanes[:, 1::2] << 16)).astype(np.uint32).view(np.int32).astype(np.int64)
    right = np.asarray(right, np.int64)
    c = (np.int64(1) << (right - 1)) + np.int64(ozp) * (np.int64(1) << right)
    recs = np.concatenate([2 * np.asarray(bias, np.int64)[:, None], words, np.asarray(mult, np.int64)[:, None],
                           c[:, None], right[:, None]], axis=1)
    recs[-1, -1] |= LAST_FLAG
    return recs.reshape(-1)


def ww_used(g: Graph, op: Op, lit: dict[str, Any]) -> bool:
    """Whether the assembly path reads weights widened at compile time (``lit``: the layer's `literals`): it
    widens the inputs, there is a pair of output channels, and a pair of pixels or the pairs' requantization
    heading the widened weights (a lone pixel without it reads the int8 weights only)."""
    ic = g.tensors[op.inputs[0]].shape[-1]
    pairs = lit["RQ"] or lit["OH"] * lit["OW"] >= 2
    return ic % 4 == 0 and ic <= WIDEN_MAX_INPUTS and g.tensors[op.inputs[1]].shape[0] >= 2 and pairs


def ww_bytes(g: Graph, op: Op, widen: bool = True) -> int:
    """Flash of the widened weights `emit` adds for `op` (0 without)."""
    if not widen:
        return 0
    lit = literals(g, op, fold=True)
    if not ww_used(g, op, lit):
        return 0
    lit["P"] = lit["OH"] * lit["OW"]
    if lit["RQ"] and _fast(lit):
        if lit["IC"] == 8 and lit["FOLDED"]:
            return lit["OC"] * 8 * 4
        return (lit["OC"] // 2) * (REC_WORDS + lit["IC"]) * 4
    return widened_bytes(g, op, g.tensors[op.inputs[0]].shape[-1], lit["RQ"])
