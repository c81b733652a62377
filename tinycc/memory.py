"""Static memory planning of activation tensors into one arena.

Lifetimes: a tensor lives from the op that produces it (graph inputs: step 0) to its last
reader (graph outputs: to the end). Reshape/flatten outputs are aliases of their input (same
bytes, no copy) and extend its lifetime. In-place (default): the output of an element-wise int8
op (relu, relu6, leaky relu, prelu, elu, gelu, logistic, tanh, add, sub, mul, maximum, minimum) takes over the
buffer of an input of the same shape whose last reader it is (not a graph input or output); every such C kernel reads
element i before writing element i. Overlap: the backend may declare, per op output, a shift ``d`` in bytes
(``overlap``: tensor -> d, from the kernel's proven read/write order): the output may then start ``d`` bytes (rounded
up to the alignment) below its single activation input when the op is that input's last reader, so that it writes
over input bytes the kernel has already consumed; a negative ``-e`` declares a kernel that walks backward: its
output may start ``e`` bytes (rounded up) above the input. ``check_placement`` verifies every plan: no two buffers live at
the same step share a byte unless they are such a pair placed at least ``d`` apart. Strategies:
- ``greedy``: greedy by size, TFLite Micro's GreedyMemoryPlanner: largest first, each placed at
  the lowest offset that does not overlap a time-overlapping, already placed buffer.
- ``best``: tries several orders (size, lifetime length x size, start time) with lowest-offset
  placement and keeps the smallest arena; never worse than ``greedy``.
Float graph inputs are read from the caller's memory and are not planned.
The lower bound is the largest total of simultaneously live bytes; no plan can be smaller. The overlap bound
counts each declared pair at its op's step as its smallest footprint, max(d + input, output) (backward:
max(input, e + output)).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .ir.graph import Graph
from .ir.ops import LUT_KINDS, OpKind

ALIAS_KINDS = (OpKind.RESHAPE, OpKind.FLATTEN)
INPLACE_KINDS = (OpKind.RELU, OpKind.RELU6, OpKind.LEAKY_RELU, OpKind.SIGMOID, OpKind.TANH, OpKind.HARD_SWISH,
                 OpKind.SOFTMAX, OpKind.ADD, OpKind.MUL, OpKind.SUB, OpKind.MAXIMUM, OpKind.MINIMUM, OpKind.PRELU,
                 *LUT_KINDS)


@dataclass
class Buffer:
    name: str
    size: int
    start: int
    end: int  # inclusive step of the last use
    offset: int = -1

    def overlaps_time(self, other: "Buffer") -> bool:
        return self.start <= other.end and other.start <= self.end


@dataclass
class MemoryPlan:
    arena: int
    lower_bound: int
    greedy: int
    strategy: str
    offsets: dict[str, int] = field(default_factory=dict)  # every activation tensor (aliases share)
    buffers: list[Buffer] = field(default_factory=list)
    inplace: list[str] = field(default_factory=list)  # outputs written over an input (element-wise ops)
    overlap_bound: int = 0  # the lower bound with the declared overlaps (= lower_bound without any)
    overlaps: dict[str, int] = field(default_factory=dict)  # output tensor -> bytes it shares with its input


def _align(n: int, a: int) -> int:
    return -(-n // a) * a


def lifetimes(graph: Graph, alignment: int = 16, inplace: bool = True) -> tuple[list[Buffer], dict[str, str]]:
    """Buffers with aligned sizes and [start, end] steps, and the alias map tensor -> buffer."""
    alias: dict[str, str] = {}
    last: dict[str, int] = {}
    for i, op in enumerate(graph.ops):
        for t in op.inputs:
            last[t] = i
    for t in graph.outputs:
        last[t] = len(graph.ops)
    members: dict[str, list[str]] = {}
    for i, op in enumerate(graph.ops):
        out = op.outputs[0]
        if op.kind in ALIAS_KINDS:
            src = op.inputs[0]
            alias[out] = alias.get(src, src)
        elif inplace and op.kind in INPLACE_KINDS:
            root = _inplace_source(graph, op, i, alias, last, members)
            if root is not None:
                alias[out] = root
        if out in alias:
            members.setdefault(alias[out], []).append(out)
    bufs: dict[str, Buffer] = {}
    end = len(graph.ops)
    for name in graph.inputs:
        t = graph.tensors[name]
        if t.dtype.value != "float32":  # float inputs stay in the caller's memory
            bufs[name] = Buffer(name, _align(t.nbytes, alignment), 0, 0)
    for i, op in enumerate(graph.ops):
        for t in op.inputs:
            root = alias.get(t, t)
            if root in bufs:
                bufs[root].end = max(bufs[root].end, i)
        for t in op.outputs:
            root = alias.get(t, t)
            if root not in bufs:
                bufs[root] = Buffer(root, _align(graph.tensors[t].nbytes, alignment), i, i)
            bufs[root].end = max(bufs[root].end, i)
    for t in graph.outputs:
        if alias.get(t, t) in bufs:
            bufs[alias.get(t, t)].end = end
    return list(bufs.values()), alias


def _inplace_source(graph: Graph, op, i: int, alias: dict[str, str], last: dict[str, int],
                    members: dict[str, list[str]]) -> str | None:
    """The buffer an element-wise op may overwrite: an int8 activation input it reads last."""
    out = graph.tensors[op.outputs[0]]
    if out.dtype.value != "int8":
        return None
    for t in op.inputs:
        ten = graph.tensors[t]
        root = alias.get(t, t)
        if ten.is_const or ten.shape != out.shape or ten.dtype != out.dtype or root in graph.inputs:
            continue
        group = [root] + members.get(root, [])
        if all(last.get(m, -1) <= i for m in group) and not any(m in graph.outputs for m in group):
            return root
    return None


def lower_bound(bufs: list[Buffer]) -> int:
    steps = {b.start for b in bufs} | {b.end for b in bufs}
    return max((sum(b.size for b in bufs if b.start <= s <= b.end) for s in steps), default=0)


Pairs = Mapping[tuple[str, str], int]  # (output buffer, input buffer) -> aligned shift d (-e: e above, backward)


def _forbidden(b: Buffer, p: Buffer, pairs: Pairs) -> tuple[int, int]:
    """The open interval of offsets ``b`` may not take next to the placed, time-overlapping ``p``."""
    d = pairs.get((b.name, p.name))
    if d is not None and d >= 0:  # b writes over p's consumed bytes: b at least d below p, or disjoint
        return p.offset - d, p.offset + p.size
    if d is not None:  # b walks backward over p: b at least -d above p, or disjoint
        return p.offset - b.size, p.offset - d
    d = pairs.get((p.name, b.name))
    if d is not None and d >= 0:  # p writes over b's: b at least d above p, or disjoint
        return p.offset - b.size, p.offset + d
    if d is not None:  # p walks backward over b: b at least -d below p, or disjoint
        return p.offset + d, p.offset + p.size
    return p.offset - b.size, p.offset + p.size


def _place(bufs: list[Buffer], order: list[Buffer], pairs: Pairs | None = None) -> int:
    """Lowest-offset placement of ``order``; returns the arena size."""
    placed: list[Buffer] = []
    top = 0
    pairs = pairs or {}
    for b in order:
        spans = [_forbidden(b, p, pairs) for p in placed if p.overlaps_time(b)]
        off = min(c for c in {0, *(hi for _, hi in spans)} if c >= 0 and not any(lo < c < hi for lo, hi in spans))
        b.offset = off
        placed.append(b)
        top = max(top, off + b.size)
    return top


def _place_ends(order: list[Buffer], ceiling: int, pairs: Pairs | None = None) -> int:
    """Placement of ``order`` (by start step) at alternate ends of ``ceiling`` bytes: each buffer at the highest
    offset that ends by the ceiling when the one before it went low, at the lowest offset otherwise (or where the
    preferred end has no room). A chain of buffers each live with the next fits in the largest adjacent pair this way,
    where lowest-offset placement can leave holes. Returns the arena size."""
    placed: list[Buffer] = []
    top, high = 0, False
    pairs = pairs or {}
    for b in order:
        spans = [_forbidden(b, p, pairs) for p in placed if p.overlaps_time(b)]
        ok = [c for c in {0, ceiling - b.size, *(hi for _, hi in spans), *(lo for lo, _ in spans)}
              if c >= 0 and not any(lo < c < hi for lo, hi in spans)]
        up = [c for c in ok if c + b.size <= ceiling] if high else []
        b.offset = max(up) if up else min(ok)
        high = not high
        placed.append(b)
        top = max(top, b.offset + b.size)
    return top


def _copy(bufs: list[Buffer]) -> list[Buffer]:
    return [Buffer(b.name, b.size, b.start, b.end) for b in bufs]


def plan_buffers(bufs: list[Buffer], strategy: str = "best",
                 pairs: Pairs | None = None) -> tuple[int, int, list[Buffer]]:
    """Return (arena, greedy arena, placed buffers)."""
    g = _copy(bufs)
    greedy = _place(g, sorted(g, key=lambda b: (-b.size, b.start)), pairs)
    if strategy == "greedy":
        return greedy, greedy, g
    best, best_bufs = greedy, g
    keys = [lambda b: (-(b.end - b.start + 1) * b.size, b.start), lambda b: (b.start, -b.size),
            lambda b: (-(b.end - b.start), -b.size), lambda b: (-b.size, -b.end)]
    for key in keys:
        for first in (0, 1, len(bufs)) if pairs else (0,):
            c = _copy(bufs)
            order = sorted(c, key=key)
            top = _place(c, _outputs_first(order, pairs, first) if first else order, pairs)
            if top < best:
                best, best_bufs = top, c
    floor = overlap_bound(bufs, pairs) if pairs else lower_bound(bufs)
    if best > floor:  # a chain the orders above leave holes in
        c = _copy(bufs)
        top = _place_ends(sorted(c, key=lambda b: (b.start, b.end)), floor, pairs)
        if top < best:
            best, best_bufs = top, c
    return best, greedy, best_bufs


def _outputs_first(order: list[Buffer], pairs: Pairs, depth: int) -> list[Buffer]:
    """``order`` with each buffer preceded by the chain of up to ``depth`` outputs written over it (so an input
    lands its shift above its output instead of pushing the output above itself)."""
    by = {b.name: b for b in order}
    written_by = {i: o for o, i in pairs}
    out: list[Buffer] = []
    seen: set[str] = set()
    for b in order:
        chain = []
        n: str | None = b.name
        while n is not None and n not in seen and len(chain) <= depth:
            chain.append(n)
            seen.add(n)
            n = written_by.get(n)
        out += [by[n] for n in reversed(chain)]
    return out


def overlap_pairs(graph: Graph, bufs: list[Buffer], alias: dict[str, str], overlap: Mapping[str, int],
                  alignment: int = 16) -> dict[tuple[str, str], int]:
    """(output buffer, input buffer) -> shift rounded up to ``alignment``, for each op whose output the backend
    declared (``overlap``) and that reads its first input last (not a graph input or output); a shift that leaves
    no byte shared is dropped."""
    by = {b.name: b for b in bufs}
    pairs: dict[tuple[str, str], int] = {}
    for i, op in enumerate(graph.ops):
        out = op.outputs[0]
        if out not in overlap or alias.get(out, out) != out or out not in by or not op.inputs:
            continue
        src = alias.get(op.inputs[0], op.inputs[0])
        if src not in by or src in graph.inputs or by[src].end != i or by[out].start != i:
            continue
        v = int(overlap[out])
        if v >= 0 and _align(v, alignment) < by[out].size:
            pairs[(out, src)] = _align(v, alignment)
        elif v < 0 and _align(-v, alignment) < by[src].size:
            pairs[(out, src)] = -_align(-v, alignment)
    return pairs


def overlap_bound(bufs: list[Buffer], pairs: Pairs) -> int:
    """The largest total of simultaneously live bytes, each pair counted at its step as max(d + input, output)."""
    by = {b.name: b for b in bufs}
    steps = {b.start for b in bufs} | {b.end for b in bufs}
    best = 0
    for s in steps:
        live = sum(b.size for b in bufs if b.start <= s <= b.end)
        for (o, i), d in pairs.items():
            if by[o].start == s:
                both = by[o].size + by[i].size
                foot = max(d + by[i].size, by[o].size) if d >= 0 else max(by[i].size, by[o].size - d)
                live -= both - min(both, foot)
        best = max(best, live)
    return best


def check_placement(bufs: list[Buffer], pairs: Pairs) -> None:
    """Raise AssertionError where two buffers live at the same step share a byte, unless they are a declared pair
    with the output at least its shift below the input (a backward pair: at least -shift above it)."""
    for a in bufs:
        for b in bufs:
            if a.name >= b.name or not a.overlaps_time(b):
                continue
            if a.offset + a.size <= b.offset or b.offset + b.size <= a.offset:
                continue
            for o, i in ((a, b), (b, a)):
                d = pairs.get((o.name, i.name))
                if d is not None and (o.offset + d <= i.offset if d >= 0 else o.offset >= i.offset - d):
                    break
            else:
                raise AssertionError(f"memory plan: {a.name} and {b.name} share bytes while both live")


def plan(graph: Graph, strategy: str = "best", alignment: int = 16, inplace: bool = True,
         overlap: Mapping[str, int] | None = None) -> MemoryPlan:
    """Arena offsets for every activation tensor of ``graph``.

    With ``inplace`` the lower bound is that of the merged (in-place) lifetimes, never above the bound
    without; ``best`` also plans without in-place and keeps that when it is smaller (longer merged
    lifetimes can fragment a heuristic placement), so in-place never costs bytes there. ``overlap`` (used only
    with ``inplace``): output tensor -> the shift its kernel needs to write over its input (see the module
    docstring); ``best`` keeps the plan without overlaps where that is smaller."""
    if strategy not in ("best", "greedy"):
        raise ValueError(f"unknown memory planning strategy {strategy!r}")
    bufs, alias = lifetimes(graph, alignment, inplace)
    pairs = overlap_pairs(graph, bufs, alias, overlap, alignment) if inplace and overlap else {}
    arena, greedy, placed = plan_buffers(bufs, strategy, pairs)
    bound = lower_bound(bufs)
    obound = overlap_bound(bufs, pairs) if pairs else bound
    if pairs and strategy == "best":
        alone = plan_buffers(bufs, strategy)
        if alone[0] < arena:
            (arena, greedy, placed), pairs = alone, {}
    if inplace and strategy == "best":
        plain_bufs, plain_alias = lifetimes(graph, alignment, False)
        plain = plan_buffers(plain_bufs, strategy)
        if plain[0] < arena:
            (arena, greedy, placed), alias, pairs = plain, plain_alias, {}
    check_placement(placed, pairs)
    by = {b.name: b for b in placed}
    shared = {o: min(by[o].offset + by[o].size, by[i].offset + by[i].size) - max(by[o].offset, by[i].offset)
              for o, i in pairs}
    offsets = {b.name: b.offset for b in placed}
    for t, root in alias.items():
        offsets[t] = offsets[root]
    ops = {op.outputs[0]: op for op in graph.ops}
    done = [t for t, root in alias.items() if t in ops and ops[t].kind not in ALIAS_KINDS]
    return MemoryPlan(arena, bound, greedy, strategy, offsets, placed, done, obound,
                      {o: v for o, v in sorted(shared.items()) if v > 0})
