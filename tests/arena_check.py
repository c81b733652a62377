"""The overlap checker: an independent, byte-level check of a memory plan against its graph's schedule.

tests/conftest.py runs it on every plan ``tinycc.memory.plan`` makes while the tests run (every model a test builds
in-process, through any backend or the CLI's ``main``), so a plan that lets an op write a byte some op still has to
read fails the test that built it. It re-derives everything from the graph, not from the planner's buffers:

- reshape/flatten outputs are views of their input (the same offset, no bytes written);
- every other op writes each of its planned outputs whole; a written byte may belong to no other tensor that is
  read later (or is a graph output), nor to any tensor written at the same step;
- except a tensor the op reads for the last time: an element-wise op may write its output exactly over it (element i
  is read before element i is written), and a convolution over its first input where, pixel by pixel, every input
  byte it overwrites was last read at least ``BLOCK`` output pixels earlier in the kernel's walk (the kernels visit
  the output in blocks of at most two pixels; a negative declared shift means the walk goes last pixel first).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tinycc.ir.graph import Graph, Op
from tinycc.ir.ops import LUT_KINDS, OpKind, same_padding

BLOCK = 2
VIEWS = (OpKind.RESHAPE, OpKind.FLATTEN)
ELEMENTWISE = (OpKind.RELU, OpKind.RELU6, OpKind.LEAKY_RELU, OpKind.SIGMOID, OpKind.TANH, OpKind.HARD_SWISH,
               OpKind.SOFTMAX, OpKind.ADD, OpKind.MUL, OpKind.SUB, OpKind.MAXIMUM, OpKind.MINIMUM, OpKind.PRELU,
               *LUT_KINDS)  # each output byte from the input bytes at its own position
CONVS = (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D)

checked = {"plans": 0, "overlapping_ops": 0}  # what the checker has seen in this test process


class PlanError(AssertionError):
    """A plan lets an op write a byte that is still to be read."""


def walk_safe(g: Graph, op: Op, distance: int, backward: bool) -> bool:
    """Whether convolution ``op`` may write its output starting ``distance`` bytes below its input's first byte
    (negative: above): every input byte an output byte lands on is last read at least BLOCK output pixels before the
    pixel that writes it, in the walk's order (forward, or last pixel first). All channels of an input pixel count as
    read when any window covers it."""
    _, ih, iw, ic = g.tensors[op.inputs[0]].shape
    _, oh, ow, oc = g.tensors[op.outputs[0]].shape
    kh, kw = g.tensors[op.inputs[1]].shape[1:3]
    (sh, sw), (dh, dw) = op.attrs["strides"], op.attrs["dilation"]
    same = op.attrs["padding"] == "same"
    pt = same_padding(ih, kh, sh, dh)[0] if same else 0
    pl = same_padding(iw, kw, sw, dw)[0] if same else 0
    pixels = oh * ow
    step = np.arange(pixels)[::-1] if backward else np.arange(pixels)  # when each output pixel is visited
    last = np.full(ih * iw, -1, np.int64)  # the last visit that reads each input pixel
    oy, ox = np.divmod(np.arange(pixels), ow)
    for ky in range(kh):
        for kx in range(kw):
            iy, ix = oy * sh - pt + ky * dh, ox * sw - pl + kx * dw
            ok = (iy >= 0) & (iy < ih) & (ix >= 0) & (ix < iw)
            np.maximum.at(last, iy[ok] * iw + ix[ok], step[ok])
    out_byte = np.arange(pixels * oc)
    in_byte = out_byte - distance  # the input byte under each output byte
    over = (in_byte >= 0) & (in_byte < ih * iw * ic)
    read = last[in_byte[over] // ic]
    writer = step[out_byte[over] // oc]
    return bool(np.all((read < 0) | (writer >= read + BLOCK)))


def check_plan(g: Graph, plan: Any, declared: Mapping[str, int] | None = None) -> None:
    """Raise PlanError unless ``plan`` (a tinycc.memory.MemoryPlan of ``g``) keeps every byte until its last read;
    ``declared``: the backend's overlap shifts (their sign gives a convolution's walk direction)."""
    declared = declared or {}
    off, n = plan.offsets, len(g.ops)
    root: dict[str, str] = {}
    for op in g.ops:
        if op.kind in VIEWS and op.outputs[0] in off:
            src = root.get(op.inputs[0], op.inputs[0])
            root[op.outputs[0]] = src
            if off[op.outputs[0]] != off.get(src):
                raise PlanError(f"{op.outputs[0]} is a view of {src} but is placed elsewhere")
    size = {t: g.tensors[t].nbytes for t in off if t not in root}
    born = {t: -1 for t in size if t in g.inputs}
    last = dict.fromkeys(size, -1)
    for i, op in enumerate(g.ops):
        for t in op.inputs:
            if root.get(t, t) in last:
                last[root.get(t, t)] = max(last[root.get(t, t)], i)
        if op.kind not in VIEWS:
            born.update({t: i for t in op.outputs if t in size})
    for t in g.outputs:
        if root.get(t, t) in last:
            last[root.get(t, t)] = n
    for t, s in size.items():
        if off[t] < 0 or off[t] + s > plan.arena:
            raise PlanError(f"{t} ({s} B at {off[t]}) lies outside the {plan.arena} B arena")
    for i, op in enumerate(g.ops):
        if op.kind in VIEWS:
            continue
        for o in (t for t in op.outputs if t in size):
            lo, hi = off[o], off[o] + size[o]
            for r, b in born.items():
                if r == o or b > i or max(last[r], b) < i or hi <= off[r] or off[r] + size[r] <= lo:
                    continue
                if b == i or last[r] > i or not _may_overwrite(g, op, o, r, root, off, size, declared):
                    raise PlanError(f"step {i} ({op.kind.value} {op.name!r}) writes {o} over bytes of {r} "
                                    f"still to be read")
    checked["plans"] += 1


def _may_overwrite(g: Graph, op: Op, o: str, r: str, root: dict[str, str], off: Mapping[str, int],
                   size: Mapping[str, int], declared: Mapping[str, int]) -> bool:
    """Whether ``op`` may write its output ``o`` over ``r``, an input it reads for the last time."""
    if op.kind in ELEMENTWISE:
        return off[o] == off[r] and size[o] == size[r] and any(root.get(t, t) == r for t in op.inputs)
    if op.kind in CONVS and root.get(op.inputs[0], op.inputs[0]) == r and o in declared:
        checked["overlapping_ops"] += 1
        return walk_safe(g, op, off[r] - off[o], declared[o] < 0)
    return False
