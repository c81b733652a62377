"""Exact memory model of a deployment: every array the generated code declares, by section.

RAM  = feature-extractor arena + kernel scratch (``--kernels cmsis-nn`` only) + classifier weights and
       biases (float32, trainable) + training state (kept activations and deltas x batch: the fused SGD
       update keeps no gradient array, see ir.train) + replay buffer (entries, labels or regression
       targets, stamps, state; read in place by training) + staging vectors (none: outputs live in the last layer's activations)
       + runtime state + runtime descriptors (the C runtime's structs ``tcc_layers``, ``tcc_clf``,
       ``tcc_buf``: their size depends on the target's pointer width and alignment, so it is exact only
       for a known ABI; the backend sizes them, ``Descriptors``) + stack (the API's worst-case depth, see
       backends/c/stack.py: measured with the core's compiler, else estimated).
Flash = int8 weights + int32 biases + requantization tables (int32 multiplier + int32 shift per
       output channel of each conv/dense, as emitted) + the classifier's initial weights (float32,
       for reset) + code (an estimate: the target's per-kernel table, ``code_table``).
Everything but the code size (and the descriptors of an unknown ABI) is exact; the C backend declares
exactly these arrays.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

from .graph import Graph
from .ops import OpKind

class Descriptors(NamedTuple):
    """RAM of the runtime's descriptor structs as a backend sized them for the target's ABI."""

    sizes: dict[str, int]  # struct array -> bytes
    exact: bool            # False: the target's ABI is unknown (the host's sizes)
    where: str             # the ABI, in words


@dataclass
class Item:
    name: str
    section: str  # "ram" | "flash"
    bytes: int
    exact: bool = True
    detail: str = ""


@dataclass
class MemoryReport:
    items: list[Item] = field(default_factory=list)

    def add(self, name: str, section: str, nbytes: int, exact: bool = True, detail: str = "") -> None:
        self.items.append(Item(name, section, int(nbytes), exact, detail))

    def total(self, section: str) -> int:
        return sum(i.bytes for i in self.items if i.section == section)

    def get(self, name: str) -> int:
        return sum(i.bytes for i in self.items if i.name == name)

    def biggest(self, section: str, n: int = 3) -> list[Item]:
        return sorted((i for i in self.items if i.section == section), key=lambda i: -i.bytes)[:n]

    def table(self) -> str:
        rows = [(i.section, i.name, f"{i.bytes:,}", ("~ " if not i.exact else "") + i.detail) for i in self.items]
        rows += [("ram", "TOTAL", f"{self.total('ram'):,}", ""), ("flash", "TOTAL", f"{self.total('flash'):,}", "")]
        w = max(len(r[1]) for r in rows)
        lines = [f"{'section':<6} {'item':<{w}} {'bytes':>10}  detail"]
        lines += [f"{a:<6} {b:<{w}} {c:>10}  {d}" for a, b, c, d in rows]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """Totals and items; ``static_ram``: RAM without the stack (what the program's data and bss symbols hold)."""
        return {"ram": self.total("ram"), "flash": self.total("flash"), "stack": self.get("stack"),
                "static_ram": self.total("ram") - self.get("stack"), "items": [i.__dict__ for i in self.items]}


def extractor_flash(graph: Graph) -> tuple[int, int, int]:
    """(int8 weight bytes, int32/int64 bias bytes, requant table bytes) of a quantized extractor."""
    weights = biases = tables = 0
    seen: set[str] = set()
    for op in graph.ops:
        for t in op.inputs:
            ten = graph.tensors[t]
            if ten.is_const and t not in seen:
                seen.add(t)
                if ten.dtype.value in ("int32", "int64"):  # int64: biases of int16 (16x8) layers
                    biases += ten.nbytes
                else:
                    weights += ten.nbytes
        if op.kind in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE):
            q = graph.tensors[op.inputs[1]].quant
            per_tensor = op.kind == OpKind.DENSE and q is not None and not q.per_axis  # one multiplier and shift
            tables += 8 * (1 if per_tensor else graph.tensors[op.outputs[0]].shape[-1])
        elif op.kind in (OpKind.GRU, OpKind.SIMPLE_RNN):  # multiplier + shift per row, for the input and the state
            tables += 16 * graph.tensors[op.inputs[1]].shape[0]
    return weights, biases, tables


LUT_DETAIL = ("generated kernels' tables (--kernels tinycc): LOGISTIC/TANH and ADD operand tables, for a DSP "
              "Cortex-M board the int16-widened convolution weights; int16 sigmoid/tanh per GRU/SimpleRNN, "
              "int32 sigmoid table per LSTM layer")


def code_estimate(graph: Graph, table: Mapping[str, int], learning: bool = True) -> int:
    """Code bytes from a per-kernel ``table`` (keys: op kind values, "base", "learn", "buffer", "other")."""
    kinds = {op.kind.value for op in graph.ops}
    learn = table["learn"] + table["buffer"] if learning else 0
    return table["base"] + learn + sum(table.get(k, table["other"]) for k in kinds)


def inference_memory(graph: Graph, arena: int, runtime_state: int,
                     arena_detail: str = "int8 activations, planned", scratch: int = 0,
                     runtime_state_exact: bool = True, tables: int = 0,
                     stack: tuple[int, bool, str] | None = None, *, code_table: Mapping[str, int]) -> MemoryReport:
    """The report of an inference-only deployment (``graph``: the whole int8 model): arena (+ runtime state)
    in RAM; int8 weights, int32 biases, requantization tables and code in flash. Float input and output stay
    in the caller's memory."""
    r = MemoryReport()
    r.add("arena", "ram", arena, detail=arena_detail)
    if scratch:
        r.add("kernel scratch", "ram", scratch, detail="CMSIS-NN buffer, largest layer (--kernels cmsis-nn)")
    if runtime_state:
        r.add("runtime state", "ram", runtime_state, exact=runtime_state_exact)
    if stack is not None:
        r.add("stack", "ram", stack[0], exact=stack[1], detail=stack[2])
    w, b, t = extractor_flash(graph)
    r.add("weights", "flash", w, detail="int8")
    r.add("biases", "flash", b, detail="int32")
    r.add("requantization tables", "flash", t, detail="int32 multiplier + shift per channel")
    if tables:
        r.add("kernel lookup tables", "flash", tables, detail=LUT_DETAIL)
    r.add("code", "flash", code_estimate(graph, code_table, learning=False), exact=False, detail="per-kernel table")
    return r


def deployment_memory(extractor: Graph, classifier, buffer_bytes: int, batch_size: int, arena: int,
                      runtime_state: int, arena_detail: str = "int8 activations, planned",
                      scratch: int = 0, descriptors: Descriptors | None = None,
                      runtime_state_exact: bool = True, tables: int = 0,
                      stack: tuple[int, bool, str] | None = None, *, code_table: Mapping[str, int],
                      buffer_detail: str = "") -> MemoryReport:
    """The report for a deployment (``classifier``: ir.train.Classifier). ``descriptors``: the runtime's
    descriptor structs the target's code declares (None: none); ``stack``: (bytes, exact, detail) of the
    API's worst-case stack (None: not counted); ``code_table``: the target's code-size estimate per kernel."""
    r = MemoryReport()
    r.add("feature extractor arena", "ram", arena, detail=arena_detail)
    if scratch:
        r.add("kernel scratch", "ram", scratch, detail="CMSIS-NN buffer, largest layer (--kernels cmsis-nn)")
    r.add("classifier weights", "ram", classifier.param_bytes(), detail="float32, trainable")
    st = classifier.training_state_bytes(batch_size)
    r.add("training state", "ram", sum(st.values()),
          detail=", ".join(f"{k} {v}" for k, v in st.items()) + f" (x batch {batch_size}; fused SGD: no gradient "
                 f"array, --train {classifier.train_mode})")
    r.add("replay buffer", "ram", buffer_bytes, detail=buffer_detail)
    r.add("staging vectors", "ram", 0,
          detail=f"none: {'probabilities' if classifier.loss_name != 'mse' else 'outputs'} are computed in the last "
                 "layer's activations, features, labels and targets read where they are stored")
    r.add("runtime state", "ram", runtime_state, exact=runtime_state_exact)
    if descriptors is not None:
        what = ", ".join(f"{k} {v}" for k, v in descriptors.sizes.items())
        r.add("runtime descriptors", "ram", sum(descriptors.sizes.values()), exact=descriptors.exact,
              detail=f"{what} ({descriptors.where})")
    if stack is not None:
        r.add("stack", "ram", stack[0], exact=stack[1], detail=stack[2])
    w, b, t = extractor_flash(extractor)
    r.add("extractor weights", "flash", w, detail="int8")
    r.add("extractor biases", "flash", b, detail="int32")
    r.add("requantization tables", "flash", t, detail="int32 multiplier + shift per channel")
    if tables:
        r.add("kernel lookup tables", "flash", tables, detail=LUT_DETAIL)
    r.add("classifier initial weights", "flash", classifier.param_bytes(), detail="float32, for reset")
    r.add("code", "flash", code_estimate(extractor, code_table), exact=False, detail="per-kernel table")
    return r
