"""The tinycc graph IR: tensors, ops and a deterministic schedule."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterable

import networkx as nx
import numpy as np

from .ops import OP_DEFS, OpKind, ShapeError, normalize_attrs
from .tensor import DType, QuantParams, Tensor


class IRError(ValueError):
    """An inconsistency in the IR; the message names the op or tensor."""


@dataclass
class Op:
    """One operation. ``origin`` is the frontend layer it came from (for messages)."""

    name: str
    kind: OpKind
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    origin: str = ""

    def __post_init__(self) -> None:
        self.kind = OpKind(self.kind)
        self.attrs = normalize_attrs(self.kind, self.attrs)

    def describe(self) -> str:
        org = f" (from layer {self.origin!r})" if self.origin and self.origin != self.name else ""
        return f"op {self.name!r} [{self.kind.value}]{org}"


class Graph:
    """A dataflow graph; ``ops`` is kept in a valid topological (execution) order."""

    def __init__(self, name: str = "model") -> None:
        self.name = name
        self.tensors: dict[str, Tensor] = {}
        self.ops: list[Op] = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.meta: dict[str, Any] = {}

    # ---- construction -------------------------------------------------
    def add_tensor(self, tensor: Tensor) -> Tensor:
        if tensor.name in self.tensors:
            raise IRError(f"duplicate tensor name {tensor.name!r}")
        self.tensors[tensor.name] = tensor
        return tensor

    def add_const(self, name: str, data: np.ndarray, dtype: DType | str | None = None,
                  quant: QuantParams | None = None) -> Tensor:
        data = np.asarray(data)
        dt = DType(dtype) if dtype is not None else DType(str(data.dtype)) if str(data.dtype) in DType._value2member_map_ else DType.FLOAT32
        return self.add_tensor(Tensor(self.unique_tensor_name(name), data.shape, dt, data, quant))

    def add_input(self, name: str, shape: tuple[int, ...], dtype: DType | str = DType.FLOAT32) -> Tensor:
        t = self.add_tensor(Tensor(name, shape, DType(dtype)))
        self.inputs.append(name)
        return t

    def unique_tensor_name(self, base: str) -> str:
        if base not in self.tensors:
            return base
        i = 1
        while f"{base}_{i}" in self.tensors:
            i += 1
        return f"{base}_{i}"

    def unique_op_name(self, base: str) -> str:
        names = {o.name for o in self.ops}
        if base not in names:
            return base
        i = 1
        while f"{base}_{i}" in names:
            i += 1
        return f"{base}_{i}"

    def add_op(self, kind: OpKind | str, inputs: list[str], name: str, attrs: dict | None = None,
               origin: str = "", output_name: str | None = None,
               output_dtype: DType | str | None = None, index: int | None = None) -> Op:
        """Create an op and its output tensor (shape inferred); append or insert at ``index``."""
        kind = OpKind(kind)
        attrs = dict(attrs or {})
        for i in inputs:
            if i not in self.tensors:
                raise IRError(f"op {name!r}: unknown input tensor {i!r}")
        if kind == OpKind.CONCAT and attrs.get("axis", -1) < 0:
            attrs["axis"] = attrs.get("axis", -1) + len(self.tensors[inputs[0]].shape)
        op = Op(self.unique_op_name(name), kind, list(inputs), [], attrs, origin or name)
        shapes = self._infer(op)
        out_name = self.unique_tensor_name(output_name or op.name)
        dt = DType(output_dtype) if output_dtype is not None else self.tensors[inputs[0]].dtype
        if kind == OpKind.DEQUANTIZE:
            dt = DType.FLOAT32
        self.add_tensor(Tensor(out_name, shapes[0], dt))
        op.outputs = [out_name]
        if index is None:
            self.ops.append(op)
        else:
            self.ops.insert(index, op)
        return op

    def _infer(self, op: Op) -> list[tuple[int, ...]]:
        d = OP_DEFS[op.kind]
        if not d.min_inputs <= len(op.inputs) <= d.max_inputs:
            raise IRError(f"{op.describe()}: expects {d.min_inputs}..{d.max_inputs} inputs, got {len(op.inputs)}")
        try:
            return d.shape_fn([self.tensors[i].shape for i in op.inputs], op.attrs)
        except ShapeError as e:
            raise IRError(f"{op.describe()}: {e}") from None

    def infer_shapes(self) -> None:
        """Recompute every activation shape along the schedule (after pruning, say)."""
        for op in self.ops:
            shapes = self._infer(op)
            for name, shape in zip(op.outputs, shapes):
                self.tensors[name].shape = tuple(shape)

    # ---- queries ------------------------------------------------------
    def op(self, name: str) -> Op:
        for o in self.ops:
            if o.name == name:
                return o
        raise KeyError(name)

    def producer(self, tensor: str) -> Op | None:
        for o in self.ops:
            if tensor in o.outputs:
                return o
        return None

    def consumers(self, tensor: str) -> list[Op]:
        return [o for o in self.ops if tensor in o.inputs]

    def producers_map(self) -> dict[str, Op]:
        return {t: o for o in self.ops for t in o.outputs}

    def consumers_map(self) -> dict[str, list[Op]]:
        m: dict[str, list[Op]] = {}
        for o in self.ops:
            for t in o.inputs:
                m.setdefault(t, []).append(o)
        return m

    def activations(self) -> list[str]:
        """Non-constant tensors in first-definition order (inputs first)."""
        seen = list(self.inputs)
        for o in self.ops:
            seen.extend(t for t in o.outputs if t not in seen)
        return seen

    def to_networkx(self) -> nx.DiGraph:
        """Op-level dependency graph (nodes are op names, edges carry the tensor)."""
        g = nx.DiGraph()
        prod = self.producers_map()
        for i, o in enumerate(self.ops):
            g.add_node(o.name, index=i, kind=o.kind.value)
        for o in self.ops:
            for t in o.inputs:
                p = prod.get(t)
                if p is not None:
                    g.add_edge(p.name, o.name, tensor=t)
        return g

    # ---- mutation -----------------------------------------------------
    def replace_uses(self, old: str, new: str, after: Op | None = None) -> None:
        """Make every consumer of ``old`` (except ``after``) read ``new``; outputs follow."""
        for o in self.ops:
            if o is after:
                continue
            o.inputs = [new if t == old else t for t in o.inputs]
        self.outputs = [new if t == old else t for t in self.outputs]

    def remove_op(self, op: Op) -> None:
        self.ops.remove(op)

    def bypass(self, op: Op) -> None:
        """Remove a single-input single-output op, wiring its input to its consumers.

        ``src`` now holds what ``dst`` held (a no-op reshape, a folded BN, a fused activation), so the op's
        name, origin and output are remembered as aliases of ``src`` (see ``resolve_alias``)."""
        src, dst = op.inputs[0], op.outputs[0]
        self.ops.remove(op)
        self.replace_uses(dst, src)
        self.tensors.pop(dst, None)
        aliases = self.meta.setdefault("aliases", {})
        for key in (dst, op.name, op.origin):
            if key:
                aliases[key] = src

    def resolve_alias(self, name: str) -> str | None:
        """The tensor that now holds what the removed op or tensor ``name`` produced, if any."""
        aliases: dict[str, str] = self.meta.get("aliases", {})
        seen: set[str] = set()
        t = aliases.get(name)
        while t is not None and t not in self.tensors and t not in seen:
            seen.add(t)
            t = aliases.get(t)
        return t if t in self.tensors else None

    def prune_unused(self) -> None:
        """Drop tensors no op reads or writes and that are not graph inputs/outputs."""
        used = set(self.inputs) | set(self.outputs)
        for o in self.ops:
            used.update(o.inputs)
            used.update(o.outputs)
        for name in list(self.tensors):
            if name not in used:
                del self.tensors[name]

    def reschedule(self) -> None:
        """Restore a topological order, stable with respect to the current order."""
        g = self.to_networkx()
        index = {o.name: i for i, o in enumerate(self.ops)}
        order = list(nx.lexicographical_topological_sort(g, key=lambda n: index[n]))
        by_name = {o.name: o for o in self.ops}
        self.ops = [by_name[n] for n in order]

    def copy(self) -> "Graph":
        return copy.deepcopy(self)

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self.ops)} ops, {len(self.tensors)} tensors)"


def iter_weights(graph: Graph, op: Op) -> Iterable[Tensor]:
    for i in OP_DEFS[op.kind].weight_inputs:
        if i < len(op.inputs):
            yield graph.tensors[op.inputs[i]]
