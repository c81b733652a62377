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
from .common import WIDEN_GUARD, layer_context, portable_args

MAX_UNROLLED_TAPS = 25  # interior pixels of kernels up to 5x5 run their taps unrolled
WIDE_WEIGHTS = 2304  # DSP cores: weights up to this many stack bytes when widened (3x3x128) are widened once
LDR_REACH = 4095  # the largest literal offset of a Thumb-2 word load


def matches(g: Graph, op: Op) -> bool:
    return op.kind == OpKind.DEPTHWISE_CONV2D and op.attrs["depth_multiplier"] == 1


def fast_tables(g: Graph, op: Op) -> tuple[np.ndarray | None, np.ndarray, bool] | None:
    """The fast template's flash tables, or None where it does not apply: the bias with the input zero point
    folded in, doubled (the taps multiply by doubled weights, so that one ``smmlar`` is the high multiply), and per
    channel the pair (multiplier, (c << 8) | right) with c = 2^(right-1) + out_zp * 2^right: the rounding half
    and the output zero point added before the right shift (exact: a multiple of 2^right commutes with the
    floor shift); where some c needs more than 24 bits (``long_c``, the third item) the pair holds
    ((1 + 2 out_zp) << 8) | right and the kernel shifts c into place. Needs right shifts 1..30 and every partial
    sum and ``c + high product`` inside int32 (proved from the weights and bias)."""
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
    acc = (0 if b is None else np.abs(b)) + 128 * np.abs(w).reshape(-1, c_in).sum(axis=0)  # |bias' + sum(x * w)|
    if 2 * int(acc.max()) + int(np.abs(c).max()) + 2 >= 2**31 or 255 << int(right.max()) >= 2**31:
        return None
    mult = np.broadcast_to(np.asarray(p["mult"], np.int64), right.shape)
    long_c = bool(np.abs(c).max() >= 2**23)  # c = (1 + 2 out_zp) << (right - 1) made at run time from 9 bits
    rq = np.stack([mult, ((2 * int(p["out_zp"]) + 1 if long_c else c) << 8) | right], axis=1).reshape(-1)
    return (None if b is None else 2 * b), rq, long_c


def fast_tables_for(g: Graph, op: Op) -> tuple[np.ndarray | None, np.ndarray, bool] | None:
    """`fast_tables` where the fast template runs the layer: channels a multiple of 4, at most MAX_TAPS taps, the interior block's offsets within a word load's reach, an
    activation range of all of int8 (the loops saturate, they do not clamp); None elsewhere."""
    x = geometry(g, op)
    far = ((x.kh - 1) * x.dh * x.iw + x.sw + (x.kw - 1) * x.dw) * x.ic  # the interior block's last word
    if x.ic % 4 or x.kh * x.kw > MAX_TAPS or far > LDR_REACH:
        return None
    if tuple(conv_params(g, op)["act"]) != (-128, 127):
        return None
    return fast_tables(g, op)


def emit(g: Graph, op: Op, arrays: Any, fast: bool = True, widen: bool = True) -> tuple[str, list[str]]:
    """The function's C text (name left as `{fn}`) and the call's arguments (``fast``: the fast template where it
    applies, else always the general one, whose arguments are the plain bias/multiplier/shift tables; ``widen``
    False: the fast template widens every layer's weights on its stack, none in flash)."""
    tables = fast_tables_for(g, op) if fast else None
    if tables is not None:
        x = geometry(g, op)
        ctx, args = layer_context(g, op, arrays, rq_tables=tables[:2])
        ctx["LONG_C"] = tables[2]
        ctx["WWARG"] = widen
        if widen:  # the assembly path reads the records alone: weights, bias and requantization for the portable
            name = arrays.array("ww", "int32_t", fast_widened(g, op), guard=WIDEN_GUARD)
            args = portable_args(arrays, args, ("w", "bias", "mult")) + [f"TCC_WW({name})"]
        return render("depthwise_fast.c.j2", fn="{fn}", **ctx,
                      **fast_context(x, ctx["HAS_BIAS"], ctx["PER_CHANNEL"], tables[2])), args
    ctx, args = layer_context(g, op, arrays)
    unroll = ctx["KH"] * ctx["KW"] <= MAX_UNROLLED_TAPS
    ww = unroll and ctx["IC"] % 4 == 0 and 2 * ctx["KH"] * ctx["KW"] * ctx["IC"] <= WIDE_WEIGHTS
    c = ctx
    last_x = ((c["KH"] - 1) * c["DH"] * c["IW"] + (c["KW"] - 1) * c["DW"]) * c["IC"]  # the last tap's offsets
    asm = ww and last_x <= 4095 and (c["KH"] * c["KW"] - 1) * c["IC"] * 2 + 4 <= 4095  # ldr's immediate range
    return render("depthwise.c.j2", fn="{fn}", UNROLL=unroll, WW=ww, ASM=asm, **ctx), args


def flash_ww(g: Graph, op: Op) -> bool:
    """Whether the fast template reads its per-group records (`fast_widened`, under WIDEN_GUARD) from flash: every
    layer it runs (without: --no-widen, it makes them on its stack at each call)."""
    return fast_tables_for(g, op) is not None


def fast_widened(g: Graph, op: Op) -> np.ndarray:
    """The fast template's records, one per group of four channels (REC_HEAD + 8 bytes a tap, int32 words): the
    group's doubled folded bias (0 without one), per channel (m, right, c) of `fast_tables` (c = 2^(right-1) +
    out_zp * 2^right in full, whatever its width; a per-tensor requantization repeated), then per tap two words
    of doubled int16 weights, channels (0, 2) then (1, 3), low half first."""
    w = g.tensors[op.inputs[1]].data.astype(np.int64)
    bias, _, _ = fast_tables(g, op)
    p = conv_params(g, op)
    c = w.shape[-1]
    v = 2 * w.reshape(-1, c // 4, 4).transpose(1, 0, 2)  # group, tap, channel
    words = np.stack([(v[..., 0] & 0xFFFF) | ((v[..., 2] & 0xFFFF) << 16),
                      (v[..., 1] & 0xFFFF) | ((v[..., 3] & 0xFFFF) << 16)], axis=-1).reshape(c // 4, -1)
    b = np.zeros(c, np.int64) if bias is None else np.asarray(bias, np.int64)
    right = np.broadcast_to(-np.asarray(p["shift"], np.int64), (c,))
    mult = np.broadcast_to(np.asarray(p["mult"], np.int64), (c,))
    rq = np.stack([mult, right, (1 << (right - 1)) + int(p["out_zp"]) * (1 << right)], axis=1).reshape(c // 4, 12)
    rec = np.concatenate([b.reshape(c // 4, 4) & 0xFFFFFFFF, rq & 0xFFFFFFFF, words], axis=1)
    return rec.astype(np.uint32).view(np.int32).reshape(-1)


def ww_bytes(g: Graph, op: Op, widen: bool = True) -> int:
    """Flash of the records `emit` adds for `op` (0 without: made on the stack, or not the fast template)."""
    return 4 * len(fast_widened(g, op)) if widen and flash_ww(g, op) else 0


MAX_TAPS = 120  # a group's record within ldrd's reach (REC_HEAD + 8 bytes a tap, offsets up to 1020)
NARROW = 5  # output widths up to this: edge pixels of interior rows get their own assembly blocks (code size)
REC_HEAD = 64  # a record's bias (16 bytes) and requantization triples (48) before its widened weights
# the state the assembly loops read (``st`` in the template, int32 words; the loops never write it): the literal
# loops' window (first word), records, output - input distance (and it less 4), records' end, zero point (both
# halves), a run's stop; the pointer loop's output pixel (ST_D), tap table and what it is built from
ST_X, ST_W, ST_D, ST_D4, ST_END, ST_ZP, ST_STOP = 0, 4, 8, 12, 16, 20, 24
ST_TP, ST_IN, ST_IY, ST_IX, ST_GEO, ST_ZB = 28, 32, 36, 40, 44, 48
ST_DY = 52  # the pair pointer loop: the second pixel's output less the first's, less 1 (oc - 1)
ST_WORDS = 14
# the literal loops' frame below the stack pointer: distance, distance less 4, records' end, zero point, stop
F_D, F_D4, F_END, F_ZP, F_STOP, FRAME = 0, 4, 8, 12, 16, 24


def _imm(op: str, reg: str, v: int) -> list[str]:
    """reg op= v (v >= 0; op add or sub) in 12-bit immediate steps."""
    out: list[str] = []
    while v > 0:
        out.append(f"{op}w %[{reg}], %[{reg}], #{min(v, 4095)}")
        v -= min(v, 4095)
    return out


def _smla(a: str) -> list[str]:
    """Four multiply-accumulates: lanes 0/2 (u with r) and 1/3 (q with s) into accumulators a0..a3."""
    return [f"smlabb %[{a}0], %[u], %[r], %[{a}0]", f"smlatt %[{a}2], %[u], %[r], %[{a}2]",
            f"smlabb %[{a}1], %[q], %[s], %[{a}1]", f"smlatt %[{a}3], %[q], %[s], %[{a}3]"]


def _bias(accs: list[str]) -> list[str]:
    """Accumulators from the group's record (w): its doubled folded bias."""
    return [f"ldrd %[{a}{j}], %[{a}{j + 1}], [%[w], #{4 * j}]" for a in accs for j in (0, 2)]


def _requant(accs: list[tuple[str, int]], rq: int, y: str) -> list[str]:
    """tcc_dwq on each accumulator (name, output byte offset from y) of the four channels, saturated to int8 and
    stored: per channel (m, right) by ldrd and c by ldr from the record (w, offset rq); per output add, smmlar,
    asr, ssat, strb."""
    out: list[str] = []
    for j in range(4):
        out += [f"ldrd %[r], %[s], [%[w], #{rq + 12 * j}]", f"ldr %[q], [%[w], #{rq + 12 * j + 8}]"]
        for a, off in accs:
            out += [f"add %[u], %[q], %[{a}{j}], asr #31", f"smmlar %[{a}{j}], %[{a}{j}], %[r], %[u]",
                    f"asr %[{a}{j}], %[{a}{j}], %[s]", f"ssat %[{a}{j}], #8, %[{a}{j}]",
                    f"strb %[{a}{j}], [%[{y}], #{off + j}]"]
    return out


def literal_loop(x: Geometry, valid: list[frozenset[int]], run: bool = False) -> list[str]:
    """The loop over the groups of four channels for one or two horizontally adjacent output pixels (valid: the
    taps inside the input, per pixel) with every input offset a literal from x (the window's first word of the
    group): per input word read, one load and two widenings shared by the taps of both pixels that read it, per
    tap one ldrd of its widened weights from the group's record (w); a padding tap multiplies the zero point
    (both halves) without a read. The output is x + distance (frame word): x turns into the output pointer for
    the requantization and back. On entry x holds the state, copied into a frame below the stack pointer for the
    loop; 14 registers. ``run`` (a pair): after the channel groups the loop steps to the pair on the left itself
    (the records and x rewound by literals) until x reaches the state's stop: a run of interior pairs in one
    call."""
    pair = len(valid) == 2
    accs = ["a", "b"][:len(valid)]
    taps = x.kh * x.kw
    rec = REC_HEAD + 8 * taps
    groups = x.ic // 4
    out = [f"ldrd %[u], %[q], [%[x], #{ST_D}]", f"strd %[u], %[q], [sp, #-{FRAME}]!",
           f"ldrd %[u], %[q], [%[x], #{ST_END}]", f"strd %[u], %[q], [sp, #{F_END}]"]
    out += [f"ldr %[u], [%[x], #{ST_STOP}]", f"str %[u], [sp, #{F_STOP}]"] if run else []
    padded = any(len(v) < taps for v in valid)
    # a pair without padding taps loads the bias into a only: b's first multiply-accumulates (their column
    # first, before a's) add to a's bias instead of b's own value
    seed = pair and not padded
    out += [f"ldr %[w], [%[x], #{ST_W}]", f"ldr %[x], [%[x], #{ST_X}]", "1:", *_bias(accs[:1] if seed else accs)]
    if padded:
        out += [f"ldr %[u], [sp, #{F_ZP}]", "mov %[q], %[u]"]
        for a, v in zip(accs, valid):
            for t in sorted(set(range(taps)) - v):
                out += [f"ldrd %[r], %[s], [%[w], #{REC_HEAD + 8 * t}]", *_smla(a)]
    reads: list[tuple[int, list[tuple[str, int]]]] = []  # (input offset, the taps that multiply it)
    for ky in range(x.kh):
        uses: dict[int, list[tuple[str, int]]] = {}
        for p, (a, v) in enumerate(zip(accs, valid)):
            for kx in range(x.kw):
                if ky * x.kw + kx in v:
                    uses.setdefault(p * x.sw + kx * x.dw, []).append((a, ky * x.kw + kx))
        reads += [((ky * x.dh * x.iw + col) * x.ic, uses[col]) for col in sorted(uses)]
    if seed:
        first = next(i for i, (_, u) in enumerate(reads) if any(a == "b" for a, _ in u))
        off, u = reads.pop(first)
        reads.insert(0, (off, sorted(u, key=lambda at: at[0] != "b")))
    for i, (off, uses_) in enumerate(reads):
        out += [f"ldr %[u], [%[x], #{off}]", "sxtb16 %[q], %[u], ror #8", "sxtb16 %[u], %[u]"]
        for j, (a, t) in enumerate(uses_):
            mac = _smla(a)
            if seed and i == 0 and j == 0:  # b = a's bias + the first product
                mac = [m[:m.rindex("%[")] + m[m.rindex("%["):].replace("b", "a") for m in mac]
            out += [f"ldrd %[r], %[s], [%[w], #{REC_HEAD + 8 * t}]", *mac]
    out += [f"ldr %[u], [sp, #{F_D}]", "add %[x], %[x], %[u]"]
    out += _requant([(a, p * x.oc) for p, a in enumerate(accs)], 16, "x")
    out += [f"ldrd %[u], %[q], [sp, #{F_D4}]", "sub %[x], %[x], %[u]", f"add %[w], %[w], #{rec}",
            "cmp %[w], %[q]", "bne 1b"]  # the distance less 4 and the records' end (F_END = F_D4 + 4)
    if run:  # x: this pair's window + ic; the next pair is 2 pixels to the left, its output 2 * oc lower
        delta = 2 * x.sw * x.ic - 2 * x.oc  # the distance's change (>= 0: oc == ic)
        out += [f"ldr %[u], [sp, #{F_STOP}]", "cmp %[x], %[u]", "beq 2f",
                *_imm("sub", "x", x.ic + 2 * x.sw * x.ic), *_imm("sub", "w", groups * rec)]
        if delta:
            out += [f"ldrd %[u], %[q], [sp, #{F_D}]", *_imm("add", "u", delta), *_imm("add", "q", delta),
                    f"strd %[u], %[q], [sp, #{F_D}]"]
        out += ["b 1b", "2:"]
    return out + [f"add sp, sp, #{FRAME}"]


def pointer_loop(x: Geometry) -> list[str]:
    """The loop over the groups of four channels for one output pixel through its table of tap pointers (state
    word ST_TP, in t for the whole loop; padding taps point at a buffer of the zero point), c the channel offset,
    w the group's record, n the records' end; windows up to UNROLLED_POINTER_TAPS taps unrolled, larger ones a loop over the
    window's rows; x holds the state."""
    taps = x.kh * x.kw
    rec = REC_HEAD + 8 * taps
    unrolled = taps <= UNROLLED_POINTER_TAPS
    # unrolled: e holds the group's output pointer for the whole loop (the rows' loop needs it as its end)
    out = [f"ldr %[t], [%[x], #{ST_TP}]", f"ldr %[w], [%[x], #{ST_W}]", f"ldr %[n], [%[x], #{ST_END}]",
           "mov %[c], #0"]
    out += [f"ldr %[e], [%[x], #{ST_D}]"] if unrolled else []
    out += ["1:", *_bias(["a"])]
    if unrolled:
        for k in range(taps):
            out += [f"ldr %[u], [%[t], #{4 * k}]", "ldr %[u], [%[u], %[c]]", "sxtb16 %[q], %[u], ror #8",
                    "sxtb16 %[u], %[u]", f"ldrd %[r], %[s], [%[w], #{REC_HEAD + 8 * k}]", *_smla("a")]
        rq, step = 16, [f"add %[w], %[w], #{rec}", "add %[e], %[e], #4"]
    else:
        out += [f"add %[w], %[w], #{REC_HEAD}", f"add %[e], %[t], #{4 * taps}", "2:"]
        for j in range(x.kw):  # one window row per iteration (the first tap's loads advance the pointers)
            out += [f"ldr %[u], [%[t]], #{4 * x.kw}" if j == 0 else f"ldr %[u], [%[t], #{4 * (j - x.kw)}]",
                    "ldr %[u], [%[u], %[c]]", "sxtb16 %[q], %[u], ror #8", "sxtb16 %[u], %[u]",
                    f"ldrd %[r], %[s], [%[w]], #{8 * x.kw}" if j == 0
                    else f"ldrd %[r], %[s], [%[w], #{8 * (j - x.kw)}]", *_smla("a")]
        out += ["cmp %[t], %[e]", "bne 2b", f"sub %[t], %[t], #{4 * taps}", f"ldr %[e], [%[x], #{ST_D}]",
                "add %[e], %[e], %[c]"]
        rq, step = 16 - rec, []  # w is at the next record already
    out += _requant([("a", 0)], rq, "e")
    out += ["add %[c], %[c], #4", *step, "cmp %[w], %[n]", "bne 1b"]
    return out


def pair_cols(x: Geometry) -> list[int]:
    """The input columns (from the first pixel's window corner) that two horizontally adjacent pixels read."""
    return sorted({kx * x.dw for kx in range(x.kw)} | {x.sw + kx * x.dw for kx in range(x.kw)})


def pair_pointer_loop(x: Geometry) -> list[str]:
    """`pointer_loop` for two horizontally adjacent output pixels through one table of the pair's window (rows x
    `pair_cols`, copied into a frame below the stack pointer with the first pixel's output, oc - 1 and the
    records' end): per table entry one pointer load, one input load and two widenings shared by both pixels'
    taps, the second pixel's accumulators seeded from the first's bias; c (the state on entry) the channel
    offset, turned into the output pointer for the requantization (the second pixel's bytes at oc - 1 past the
    first's, post-incremented). 14 registers."""
    cols = pair_cols(x)
    n = x.kh * len(cols)
    rec = REC_HEAD + 8 * x.kh * x.kw
    p = 4 * n  # frame: table, first output, oc - 1, records' end
    frame = 4 * (n + 3 + (n + 3) % 2)
    out = [f"ldr %[u], [%[c], #{ST_TP}]"]
    for k in range(0, n - 1, 2):
        out += [f"ldrd %[r], %[s], [%[u], #{4 * k}]",
                f"strd %[r], %[s], [sp, #-{frame}]!" if k == 0 else f"strd %[r], %[s], [sp, #{4 * k}]"]
    if n % 2:
        out += [f"ldr %[r], [%[u], #{4 * (n - 1)}]", f"str %[r], [sp, #{4 * (n - 1)}]"]
    out += [f"ldr %[r], [%[c], #{ST_D}]", f"ldr %[s], [%[c], #{ST_DY}]", f"strd %[r], %[s], [sp, #{p}]",
            f"ldr %[r], [%[c], #{ST_END}]", f"str %[r], [sp, #{p + 8}]", f"ldr %[w], [%[c], #{ST_W}]",
            "mov %[c], #0", "1:", *_bias(["a"])]
    reads: list[tuple[int, list[tuple[str, int]]]] = []
    for ky in range(x.kh):
        for j, col in enumerate(cols):
            uses = [(a, ky * x.kw + kx) for a, base in (("a", 0), ("b", x.sw)) for kx in range(x.kw)
                    if base + kx * x.dw == col]
            reads.append((ky * len(cols) + j, uses))
    first = next(i for i, (_, u) in enumerate(reads) if any(a == "b" for a, _ in u))
    e0, u0 = reads.pop(first)
    reads.insert(0, (e0, sorted(u0, key=lambda at: at[0] != "b")))
    for i, (e, uses) in enumerate(reads):
        out += [f"ldr %[u], [sp, #{4 * e}]", "ldr %[u], [%[u], %[c]]", "sxtb16 %[q], %[u], ror #8",
                "sxtb16 %[u], %[u]"]
        for j, (a, t) in enumerate(uses):
            mac = _smla(a)
            if i == 0 and j == 0:  # b = a's bias + the first product
                mac = [m[:m.rindex("%[")] + m[m.rindex("%["):].replace("b", "a") for m in mac]
            out += [f"ldrd %[r], %[s], [%[w], #{REC_HEAD + 8 * t}]", *mac]
    out += [f"ldr %[u], [sp, #{p}]", "add %[c], %[c], %[u]"]
    for j in range(4):
        out += [f"ldrd %[r], %[s], [%[w], #{16 + 12 * j}]", f"ldr %[q], [%[w], #{24 + 12 * j}]"]
        for a in "ab":
            out += [f"add %[u], %[q], %[{a}{j}], asr #31", f"smmlar %[{a}{j}], %[{a}{j}], %[r], %[u]",
                    f"asr %[{a}{j}], %[{a}{j}], %[s]", f"ssat %[{a}{j}], #8, %[{a}{j}]"]
        out += [f"strb %[a{j}], [%[c]], #1"]
        out += [f"ldr %[a0], [sp, #{p + 4}]"] if j == 0 else []
        out += [f"strb %[b{j}], [%[c], %[a0]]"]
    out += [f"ldr %[u], [sp, #{p}]", "sub %[c], %[c], %[u]", f"add %[w], %[w], #{rec}",
            f"ldr %[u], [sp, #{p + 8}]", "cmp %[w], %[u]", "bne 1b", f"add sp, sp, #{frame}"]
    return out


def pair_pointer(x: Geometry) -> bool:
    """Whether rows of padding run `pair_pointer_loop` (windows up to 3x3, stride and dilation across 1, rows of
    at least PAIR_ROW_WORK pixel-groups: one such function per window in a model, about 1.3 kB; strided layers
    pad one bottom row at most)."""
    return (x.kh * x.kw <= UNROLLED_POINTER_TAPS and x.ow > 1 and x.sw == 1 and x.dw == 1
            and x.ow * x.ic // 4 >= PAIR_ROW_WORK)


PAIR_ROW_WORK = 128  # pixel x channel groups a row from which a layer uses the pair pointer function (its code,
# about 1.3 kB once per model, pays where padding rows are long: VWW from 24x24x32 on, not KWS's 25x5x64)


EDGE_PAIR_GROUPS = 8  # from this many channel groups the edge pairs of interior rows run the pair pointer loop
# (its table and frame cost more per call than a single pixel's; with fewer groups they run one pointer pixel
# and one pixel of the run's literal pairs)


def pair_pointer_fn(x: Geometry) -> str:
    """The name of the function that runs `pair_pointer_loop` (shared like `pointer_fn`'s; the stride and the
    dilation across set the pair's columns)."""
    return f"tcc_dwpp_{x.kh}x{x.kw}_s{x.sw}d{x.dw}"


UNROLLED_POINTER_TAPS = 9  # the pointer loop's taps unrolled up to 3x3 (one function per window: little code)


def pointer_fn(x: Geometry) -> str:
    """The name of the function that runs `pointer_loop` (defined once in model.c, shared by every layer whose
    loop text is the same: it depends on the window only)."""
    return f"tcc_dwp_{x.kh}x{x.kw}"


def v6m_single(taps: int) -> list[str]:
    """`v6m_block` for one pixel (a row's first when its width is odd), its input pointers where pixel 0's
    are: 6 instructions a MAC into a1."""
    out = [".syntax unified"]
    for t in range(taps):
        out += [f"ldr %[w], [%[tp], #{4 * t}]", "ldrsb %[w], [%[w], %[i]]", f"ldr %[x], [%[tp], #{4 * (taps + t)}]",
                "ldrsb %[x], [%[x], %[i]]", "muls %[x], %[w], %[x]", "adds %[a1], %[a1], %[x]"]
    return out


def v6m_block(taps: int) -> list[str]:
    """ARMv6-M (Thumb-1): one channel (index i) of two output pixels, sum(x * w) into a0 and a1, from the table
    tp of weight pointers (taps), then pixel 0's and pixel 1's input pointers (padding taps point at a buffer
    of the zero point): per tap and pixel pair one weight load shared by both products, 10 instructions for
    2 MACs in six low registers (r7 stays free for a frame pointer)."""
    out = [".syntax unified"]
    for t in range(taps):
        out += [f"ldr %[w], [%[tp], #{4 * t}]", "ldrsb %[w], [%[w], %[i]]"]
        for a, base in (("a0", taps), ("a1", 2 * taps)):
            out += [f"ldr %[x], [%[tp], #{4 * (base + t)}]", "ldrsb %[x], [%[x], %[i]]", "muls %[x], %[w], %[x]",
                    f"adds %[{a}], %[{a}], %[x]"]
    return out


V6M_TAPS = 10  # the tap table's 3 x taps words within a Thumb-1 ldr's reach (124 bytes)


def _taps_inside(x: Geometry, ox: int) -> frozenset[int]:
    """The taps of output column ox (any interior row) that lie inside the input."""
    return frozenset(ky * x.kw + kx for ky in range(x.kh) for kx in range(x.kw)
                     if 0 <= ox * x.sw - x.pl + kx * x.dw < x.iw)


def _interior(n_out: int, size: int, k: int, stride: int, dil: int, pad: int) -> tuple[int, int]:
    """The first and one past the last output row (or column) whose taps are all inside the input."""
    ok = [o for o in range(n_out) if o * stride - pad >= 0 and o * stride - pad + (k - 1) * dil < size]
    return (ok[0], ok[-1] + 1) if ok else (0, 0)


def fast_context(x: Geometry, has_bias: bool, per_channel: bool, long_c: bool) -> dict[str, Any]:
    """The fast template's literals: interior rows [OYT, OYB); for those rows the column schedule (blocks of one
    or two pixels in row-major order, each with its assembly loop; a run of interior pairs as one C loop over
    RUN = (first, end)); the pointer loop for every other pixel."""
    oyt, oyb = _interior(x.oh, x.ih, x.kh, x.sh, x.dh, x.pt)
    oxl, oxr = _interior(x.ow, x.iw, x.kw, x.sw, x.dw, x.pl)
    full = frozenset(range(x.kh * x.kw))
    loops: dict[tuple[tuple[frozenset[int], ...], bool], int] = {}
    blocks: list[tuple[int, int, int]] = []  # (first column, pixels, loop)
    run = (0, 0)
    ox = 0
    pp = pair_pointer(x) and x.ic >= 4 * EDGE_PAIR_GROUPS
    while ox < x.ow and oyb > oyt:
        n = 2 if ox + 1 < x.ow else 1
        valid = tuple(_taps_inside(x, ox + p) for p in range(n))
        if valid == (full, full) and ox >= oxl and run == (0, 0):
            end = ox
            while end + 1 < oxr:
                end += 2
            run = (ox, end)
            blocks.append((ox, -1, loops.setdefault((valid, True), len(loops))))
            ox = end
            continue
        if pp and n == 2 and all(valid) and x.ow > NARROW and valid != (full, full):
            blocks.append((ox, 2, -3))  # an edge pair of a wide layer: the pair pointer loop
            ox += 2
            continue
        if not all(valid) or (x.ow > NARROW and valid != (full, full)):
            blocks.append((ox, 1, -2))  # a pixel without taps inside, or an edge of a wide layer: pointers
            ox += 1
            continue
        blocks.append((ox, n, loops.setdefault((valid, False), len(loops))))
        ox += n
    return {"T": x.kh * x.kw, "OYT": oyt, "OYB": oyb, "RUN": run, "BLOCKS": blocks,
            "LOOPS": [literal_loop(x, list(v), r) for v, r in loops], "REC": REC_HEAD + 8 * x.kh * x.kw,
            "PAIRS": [len(v) == 2 for v, _ in loops], "ST_WORDS": ST_WORDS,
            "PAD": (oyt, oyb, oxl, oxr) != (0, x.oh, 0, x.ow), "POINTER": pointer_loop(x),
            "PFN": pointer_fn(x), "TT": x.kh * x.kw <= UNROLLED_POINTER_TAPS,
            "PP": pair_pointer_loop(x) if pair_pointer(x) else [],
            "PPFN": pair_pointer_fn(x), "PCOLS": pair_cols(x),
            "V6M": v6m_block(x.kh * x.kw) if x.kh * x.kw <= V6M_TAPS else [],
            "V6M1": v6m_single(x.kh * x.kw) if x.kh * x.kw <= V6M_TAPS else []}
