"""Static memory planning of activation tensors into one arena.

Lifetimes: a tensor lives from the op that produces it (graph inputs: step 0) to its last
reader (graph outputs: to the end). Reshape/flatten outputs are aliases of their input (same
bytes, no copy) and extend its lifetime. In-place (default): the output of an element-wise int8
op (relu, relu6, leaky relu, logistic, tanh, add, sub, mul, maximum, minimum) takes over the buffer of an input of the
same shape whose last reader it is (not a graph input or output); every such C kernel reads
element i before writing element i. Strategies:
- ``greedy``: greedy by size, TFLite Micro's GreedyMemoryPlanner: largest first, each placed at
  the lowest offset that does not overlap a time-overlapping, already placed buffer.
- ``best``: tries several orders (size, lifetime length x size, start time) with lowest-offset
  placement and keeps the smallest arena; never worse than ``greedy``.
Float graph inputs are read from the caller's memory and are not planned.
The lower bound is the largest total of simultaneously live bytes; no plan can be smaller.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .ir.graph import Graph
from .ir.ops import OpKind

ALIAS_KINDS = (OpKind.RESHAPE, OpKind.FLATTEN)
INPLACE_KINDS = (OpKind.RELU, OpKind.RELU6, OpKind.LEAKY_RELU, OpKind.SIGMOID, OpKind.TANH, OpKind.HARD_SWISH,
                 OpKind.SOFTMAX, OpKind.ADD, OpKind.MUL, OpKind.SUB, OpKind.MAXIMUM, OpKind.MINIMUM)


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


def _place(bufs: list[Buffer], order: list[Buffer]) -> int:
    placed: list[Buffer] = []
    top = 0
    for b in order:
        conflicts = sorted((p for p in placed if p.overlaps_time(b)), key=lambda p: p.offset)
        off = 0
        for p in conflicts:
            if off + b.size <= p.offset:
                break
            off = max(off, p.offset + p.size)
        b.offset = off
        placed.append(b)
        top = max(top, off + b.size)
    return top


def _copy(bufs: list[Buffer]) -> list[Buffer]:
    return [Buffer(b.name, b.size, b.start, b.end) for b in bufs]


def plan_buffers(bufs: list[Buffer], strategy: str = "best") -> tuple[int, int, list[Buffer]]:
    """Return (arena, greedy arena, placed buffers)."""
    g = _copy(bufs)
    greedy = _place(g, sorted(g, key=lambda b: (-b.size, b.start)))
    if strategy == "greedy":
        return greedy, greedy, g
    best, best_bufs = greedy, g
    keys = [lambda b: (-(b.end - b.start + 1) * b.size, b.start), lambda b: (b.start, -b.size),
            lambda b: (-(b.end - b.start), -b.size), lambda b: (-b.size, -b.end)]
    for key in keys:
        c = _copy(bufs)
        top = _place(c, sorted(c, key=key))
        if top < best:
            best, best_bufs = top, c
    return best, greedy, best_bufs


def plan(graph: Graph, strategy: str = "best", alignment: int = 16, inplace: bool = True) -> MemoryPlan:
    """Arena offsets for every activation tensor of ``graph``.

    With ``inplace`` the lower bound is that of the merged (in-place) lifetimes, never above the bound
    without; ``best`` also plans without in-place and keeps that when it is smaller (longer merged
    lifetimes can fragment a heuristic placement), so in-place never costs bytes there."""
    if strategy not in ("best", "greedy"):
        raise ValueError(f"unknown memory planning strategy {strategy!r}")
    bufs, alias = lifetimes(graph, alignment, inplace)
    arena, greedy, placed = plan_buffers(bufs, strategy)
    bound = lower_bound(bufs)
    if inplace and strategy == "best":
        plain_bufs, plain_alias = lifetimes(graph, alignment, False)
        plain = plan_buffers(plain_bufs, strategy)
        if plain[0] < arena:
            (arena, greedy, placed), alias = plain, plain_alias
    offsets = {b.name: b.offset for b in placed}
    for t, root in alias.items():
        offsets[t] = offsets[root]
    ops = {op.outputs[0]: op for op in graph.ops}
    done = [t for t, root in alias.items() if t in ops and ops[t].kind not in ALIAS_KINDS]
    return MemoryPlan(arena, bound, greedy, strategy, offsets, placed, done)
