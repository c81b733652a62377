"""Exact memory model of a deployment: every array the generated code declares, by section.

RAM  = feature-extractor arena + kernel scratch (``--kernels cmsis-nn`` only) + classifier weights and
       biases (float32, trainable) + training state (kept activations, deltas, weight/bias gradients) +
       replay buffer (entries, labels or regression targets, stamps, state) + staging vectors (float
       features x batch, probabilities or outputs, batch labels or float targets x batch) + runtime state.
Flash = int8 weights + int32 biases + requantization tables (int32 multiplier + int32 shift per
       output channel of each conv/dense, as emitted) + the classifier's initial weights (float32,
       for reset) + code (an estimate: a per-kernel table measured with arm-none-eabi-gcc -Os).
Everything but the code size is exact; the C backend declares exactly these arrays.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .graph import Graph
from .ops import OpKind

# .text bytes per kernel/module on Cortex-M4 (-Os), measured on the generated runtime; an estimate
CODE_ESTIMATE = {"base": 1200, OpKind.CONV2D: 700, OpKind.DEPTHWISE_CONV2D: 650, OpKind.DENSE: 350,
                 OpKind.MAX_POOL2D: 300, OpKind.AVG_POOL2D: 350, OpKind.GLOBAL_AVG_POOL: 350,
                 OpKind.GLOBAL_MAX_POOL: 300, OpKind.ADD: 450, OpKind.MUL: 400, OpKind.CONCAT: 200,
                 OpKind.PAD: 200, OpKind.RELU: 150, OpKind.RELU6: 150, OpKind.QUANTIZE: 200,
                 OpKind.DEQUANTIZE: 120, OpKind.SIGMOID: 700, OpKind.TANH: 700, OpKind.LEAKY_RELU: 200, "learn": 2200, "buffer": 600}


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
        return {"ram": self.total("ram"), "flash": self.total("flash"),
                "items": [i.__dict__ for i in self.items]}


def extractor_flash(graph: Graph) -> tuple[int, int, int]:
    """(int8 weight bytes, int32 bias bytes, requant table bytes) of a quantized extractor."""
    weights = biases = tables = 0
    seen: set[str] = set()
    for op in graph.ops:
        for t in op.inputs:
            ten = graph.tensors[t]
            if ten.is_const and t not in seen:
                seen.add(t)
                if ten.dtype.value == "int32":
                    biases += ten.nbytes
                else:
                    weights += ten.nbytes
        if op.kind in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE):
            tables += 8 * graph.tensors[op.outputs[0]].shape[-1]
    return weights, biases, tables


LUT_DETAIL = "int8 table per LOGISTIC/TANH layer (--kernels tinycc)"


def code_estimate(graph: Graph, learning: bool = True) -> int:
    kinds = {op.kind for op in graph.ops}
    learn = CODE_ESTIMATE["learn"] + CODE_ESTIMATE["buffer"] if learning else 0
    return CODE_ESTIMATE["base"] + learn + sum(CODE_ESTIMATE.get(k, 300) for k in kinds)


def inference_memory(graph: Graph, arena: int, runtime_state: int,
                     arena_detail: str = "int8 activations, planned", scratch: int = 0,
                     tables: int = 0) -> MemoryReport:
    """The report of an inference-only deployment (``graph``: the whole int8 model): arena (+ runtime state)
    in RAM; int8 weights, int32 biases, requantization tables and code in flash. Float input and output stay
    in the caller's memory."""
    r = MemoryReport()
    r.add("arena", "ram", arena, detail=arena_detail)
    if scratch:
        r.add("kernel scratch", "ram", scratch, detail="CMSIS-NN buffer, largest layer (--kernels cmsis-nn)")
    if runtime_state:
        r.add("runtime state", "ram", runtime_state)
    w, b, t = extractor_flash(graph)
    r.add("weights", "flash", w, detail="int8")
    r.add("biases", "flash", b, detail="int32")
    r.add("requantization tables", "flash", t, detail="int32 multiplier + shift per channel")
    if tables:
        r.add("kernel lookup tables", "flash", tables, detail=LUT_DETAIL)
    r.add("code", "flash", code_estimate(graph, learning=False), exact=False, detail="per-kernel table")
    return r


def deployment_memory(extractor: Graph, classifier, buffer_bytes: int, batch_size: int, arena: int,
                      runtime_state: int, arena_detail: str = "int8 activations, planned",
                      scratch: int = 0, tables: int = 0) -> MemoryReport:
    """The report for a deployment (``classifier``: ir.train.Classifier)."""
    r = MemoryReport()
    r.add("feature extractor arena", "ram", arena, detail=arena_detail)
    if scratch:
        r.add("kernel scratch", "ram", scratch, detail="CMSIS-NN buffer, largest layer (--kernels cmsis-nn)")
    r.add("classifier weights", "ram", classifier.param_bytes(), detail="float32, trainable")
    st = classifier.training_state_bytes(batch_size)
    r.add("training state", "ram", sum(st.values()), detail=", ".join(f"{k} {v}" for k, v in st.items()))
    r.add("replay buffer", "ram", buffer_bytes)
    if classifier.target_count:
        stage, what = 4 * batch_size * classifier.target_count, "float targets x batch"
    else:
        stage, what = batch_size, "batch labels"
    r.add("staging vectors", "ram", 4 * (classifier.n_in * batch_size + classifier.n_out) + stage,
          detail=f"float features x batch, {'probabilities' if classifier.loss_name != 'mse' else 'outputs'}, {what}")
    r.add("runtime state", "ram", runtime_state)
    w, b, t = extractor_flash(extractor)
    r.add("extractor weights", "flash", w, detail="int8")
    r.add("extractor biases", "flash", b, detail="int32")
    r.add("requantization tables", "flash", t, detail="int32 multiplier + shift per channel")
    if tables:
        r.add("kernel lookup tables", "flash", tables, detail=LUT_DETAIL)
    r.add("classifier initial weights", "flash", classifier.param_bytes(), detail="float32, for reset")
    r.add("code", "flash", code_estimate(extractor), exact=False, detail="per-kernel table")
    return r
