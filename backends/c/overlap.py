"""How far a C kernel's output may start below its input (the memory planner's declared overlaps).

Every convolution and depthwise kernel the C backend emits (generated families conv, conv_wide, conv_im2col,
gemm, depthwise, and the runtime's tcc_conv2d_s8 / tcc_dwconv2d_s8) walks the output in row-major pixel order,
in blocks of at most two consecutive pixels: a block reads only the input windows of its own pixels (possibly
after some of its own outputs are written) and writes only its own pixels' bytes. So a byte written by pixel w
is safe when no pixel from w - 1 on reads it. With the output starting ``d`` bytes below the input, that holds
for every w when ``d >= max_w (min(w + 2, P) * OC - R(w))``, R(w) being the lowest input byte any pixel from w on
reads (``shift``). ``order_safe`` is the byte-level check of that rule (every written byte's last reader at least
two pixels earlier), used on every declared shift. CMSIS-NN's kernels are not analysed: no overlap for them.

Backward walks: the generated depthwise kernel of ``kernels/depthwise_fast.c.j2`` visits the same blocks in the
reverse order (last row first, right to left). Read with every address negated, that is the forward walk of the
geometry flipped upside down and left to right (``flip``: the bottom and right padding become top and left), so
the same rule and check apply there: its output may start ``e = input bytes - output bytes + need(flip)`` bytes
*above* its input (``backward_shift``; declared to the planner as the negative value ``-e``, at least 1), which
lets a chain of equal-sized buffers alternate down and up instead of drifting down by every shift.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir.graph import Graph, Op
from ...ir.ops import OpKind, same_padding

BLOCK = 2  # the most output pixels a kernel block handles between its reads and writes
KINDS = (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D)


@dataclass(frozen=True)
class Geometry:
    """Input (ih, iw, ic), output (oh, ow, oc), window and stride/dilation/top-left padding of a convolution."""
    ih: int
    iw: int
    ic: int
    oh: int
    ow: int
    oc: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pl: int


def geometry(g: Graph, op: Op) -> Geometry:
    """The geometry of a CONV2D / DEPTHWISE_CONV2D op of ``g`` (NHWC, batch 1)."""
    x, y = g.tensors[op.inputs[0]].shape, g.tensors[op.outputs[0]].shape
    kh, kw = g.tensors[op.inputs[1]].shape[1:3]
    (sh, sw), (dh, dw) = op.attrs["strides"], op.attrs["dilation"]
    same = op.attrs["padding"] == "same"
    pt = same_padding(x[1], kh, sh, dh)[0] if same else 0
    pl = same_padding(x[2], kw, sw, dw)[0] if same else 0
    return Geometry(x[1], x[2], x[3], y[1], y[2], y[3], kh, kw, sh, sw, dh, dw, pt, pl)


def _lowest(n_out: int, size: int, k: int, stride: int, dil: int, pad: int) -> np.ndarray:
    """Per output row (or column): the lowest input row read, -1 where the window is all padding."""
    pos = np.arange(n_out)[:, None] * stride - pad + np.arange(k)[None, :] * dil
    pos = np.where((pos >= 0) & (pos < size), pos, np.iinfo(np.int64).max)
    low = pos.min(axis=1)
    return np.where(low == np.iinfo(np.int64).max, -1, low)


def shift(geo: Geometry, block: int = BLOCK) -> int:
    """The least d >= 0 such that the output may start d bytes below the input (see the module docstring)."""
    return max(0, need(geo, block))


def need(geo: Geometry, block: int = BLOCK) -> int:
    """The least d, of any sign, such that the output may start d bytes below the input (-d above it)."""
    rows = _lowest(geo.oh, geo.ih, geo.kh, geo.sh, geo.dh, geo.pt)
    cols = _lowest(geo.ow, geo.iw, geo.kw, geo.sw, geo.dw, geo.pl)
    in_size = geo.ih * geo.iw * geo.ic
    first = (rows[:, None] * geo.iw + cols[None, :]) * geo.ic
    first = np.where((rows[:, None] >= 0) & (cols[None, :] >= 0), first, in_size).ravel()
    reach = np.minimum.accumulate(first[::-1])[::-1]  # lowest byte read from pixel w on
    p = first.size
    written = np.minimum(np.arange(p) + block, p) * geo.oc  # end of the bytes written up to the block from w
    return int((written - reach).max())


def order_safe(geo: Geometry, d: int, block: int = BLOCK) -> bool:
    """Byte-level check: with the output ``d`` bytes below the input, every input byte the kernel writes over is
    last read at least ``block`` pixels before the pixel that writes it (so also before, in any block order)."""
    last = np.full(geo.ih * geo.iw, -1, np.int64)
    oy, ox = np.meshgrid(np.arange(geo.oh), np.arange(geo.ow), indexing="ij")
    q = (oy * geo.ow + ox).ravel()
    for ky in range(geo.kh):
        for kx in range(geo.kw):
            iy = (oy * geo.sh - geo.pt + ky * geo.dh).ravel()
            ix = (ox * geo.sw - geo.pl + kx * geo.dw).ravel()
            ok = (iy >= 0) & (iy < geo.ih) & (ix >= 0) & (ix < geo.iw)
            np.maximum.at(last, iy[ok] * geo.iw + ix[ok], q[ok])
    last_byte = np.repeat(last, geo.ic)  # every channel of a pixel read when its window is (conservative)
    out_index = np.arange(last_byte.size) + d  # the output byte over each input byte
    over = (out_index >= 0) & (out_index < geo.oh * geo.ow * geo.oc) & (last_byte >= 0)
    writer = out_index[over] // geo.oc
    return bool(np.all(writer >= last_byte[over] + block))


def flip(geo: Geometry) -> Geometry:
    """The geometry upside down and left to right: what the padding after the last row / column was becomes the
    top / left padding (possibly negative where a strided 'valid' window leaves input rows unread)."""
    pb = (geo.oh - 1) * geo.sh + (geo.kh - 1) * geo.dh - (geo.ih - 1) - geo.pt
    pr = (geo.ow - 1) * geo.sw + (geo.kw - 1) * geo.dw - (geo.iw - 1) - geo.pl
    return Geometry(geo.ih, geo.iw, geo.ic, geo.oh, geo.ow, geo.oc, geo.kh, geo.kw, geo.sh, geo.sw, geo.dh, geo.dw,
                    pb, pr)


def backward_shift(geo: Geometry) -> int:
    """The least e such that a backward-walking kernel's output may start e bytes above its input (see the
    module docstring; negative where the output is larger than the input and may start below it)."""
    return geo.ih * geo.iw * geo.ic - geo.oh * geo.ow * geo.oc + need(flip(geo))


def walks_backward(g: Graph, op: Op, kernels: str, helium: bool = False) -> bool:
    """Whether the C kernel of ``op`` under ``kernels`` visits its output pixels last first (the generated fast
    depthwise kernel does; on a Cortex-M55 the Helium depthwise kernel runs instead, which walks forward)."""
    from .kernels import choose, depthwise

    return choose(g, op, kernels, helium) is depthwise and depthwise.fast_tables_for(g, op) is not None


def c_overlaps(g: Graph, kernels: str, helium: bool = False) -> dict[str, int]:
    """Output tensor -> shift for every convolution of ``g`` the C kernels of mode ``kernels`` run (none for
    cmsis-nn): d >= 0, the output may start d bytes below its input; -e (e >= 1), a backward walk whose output
    may start e bytes above it. Each shift is checked byte by byte (``order_safe``, on the flipped geometry
    for a backward walk) before it is declared."""
    if kernels == "cmsis-nn":
        return {}
    out: dict[str, int] = {}
    for op in g.ops:
        if op.kind not in KINDS or g.tensors[op.inputs[0]].dtype.value != "int8":
            continue
        geo = geometry(g, op)
        back = walks_backward(g, op, kernels, helium)
        walk = flip(geo) if back else geo
        d = need(walk) if back else shift(walk)
        if not order_safe(walk, d):
            raise AssertionError(f"overlap: shift {d} of {op.name!r} fails the byte-level order check")
        out[op.outputs[0]] = -max(1, backward_shift(geo)) if back else d
    return out
