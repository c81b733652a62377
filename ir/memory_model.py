"""Exact memory model of a deployment: every array the generated code declares, by section.

RAM  = feature-extractor arena + kernel scratch (``--kernels cmsis-nn`` only) + classifier weights and
       biases (float32, trainable) + training state (kept activations and deltas x batch: the fused SGD
       update keeps no gradient array, see ir.train) + replay buffer (entries, labels or regression
       targets, stamps, state; read in place by training) + staging vectors (none: outputs live in the last layer's activations)
       + runtime state + runtime descriptors (the C runtime's structs ``tcc_layers``, ``tcc_clf``,
       ``tcc_buf``: their size depends on the target's pointer width and alignment, so it is exact only
       for a known ABI).
Flash = int8 weights + int32 biases + requantization tables (int32 multiplier + int32 shift per
       output channel of each conv/dense, as emitted) + the classifier's initial weights (float32,
       for reset) + code (an estimate: a per-kernel table measured with arm-none-eabi-gcc -Os).
Everything but the code size (and the descriptors of an unknown ABI) is exact; the C backend declares
exactly these arrays.
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
                 OpKind.DEQUANTIZE: 120, OpKind.SIGMOID: 700, OpKind.TANH: 700, OpKind.LEAKY_RELU: 200, "learn": 2500, "buffer": 600}


@dataclass(frozen=True)
class Abi:
    """Size and alignment of the C types in the runtime's descriptor structs on a target."""

    name: str
    pointer: int        # sizeof(void *)
    pointer_align: int
    int_align: int      # int32_t, uint32_t, float (all 4 bytes)


ABIS = {"lp64": Abi("64-bit (x86-64, AArch64)", 8, 8, 4), "ilp32": Abi("32-bit (Cortex-M, ESP32)", 4, 4, 4),
        "avr": Abi("AVR", 2, 1, 1)}
ARCH_ABI = {"avr": "avr", "cortex-m0plus": "ilp32", "cortex-m3": "ilp32", "cortex-m4": "ilp32", "cortex-m7": "ilp32",
            "cortex-m33": "ilp32", "cortex-m55": "ilp32", "xtensa": "ilp32", "riscv32": "ilp32"}

# fields of the runtime's structs (backends/c/runtime/tinycc_learn.h) in declaration order: "i" a 4-byte int or
# float, "p" a pointer; tests/test_memory_layout.py checks these against sizeof on the host, Cortex-M4 and AVR
DESCRIPTOR_FIELDS = {"tcc_dense_t": "iiii" + "p" * 6, "tcc_classifier_t": "piii",
                     "tcc_buffer_t": "iiiiii" + "ppppp" + "ii" + "pp" + "ii"}


def struct_size(fields: str, abi: Abi) -> int:
    """sizeof of a C struct of ``fields`` on ``abi`` (each field at its alignment, tail padded)."""
    off, align = 0, 1
    for f in fields:
        size, a = (abi.pointer, abi.pointer_align) if f == "p" else (4, abi.int_align)
        off = -(-off // a) * a + size
        align = max(align, a)
    return -(-off // align) * align


def descriptor_bytes(n_layers: int, abi: Abi) -> dict[str, int]:
    """Static RAM of the generated model's descriptors: one ``tcc_dense_t`` per classifier layer (``tcc_layers``),
    the classifier (``tcc_clf``) and the replay buffer (``tcc_buf``)."""
    return {"tcc_layers": n_layers * struct_size(DESCRIPTOR_FIELDS["tcc_dense_t"], abi),
            "tcc_clf": struct_size(DESCRIPTOR_FIELDS["tcc_classifier_t"], abi),
            "tcc_buf": struct_size(DESCRIPTOR_FIELDS["tcc_buffer_t"], abi)}


def host_abi() -> str:
    """The ABI of the machine running tinycc (a host build of a generated project)."""
    import struct

    return "lp64" if struct.calcsize("P") == 8 else "ilp32"


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
                     runtime_state_exact: bool = True, tables: int = 0) -> MemoryReport:
    """The report of an inference-only deployment (``graph``: the whole int8 model): arena (+ runtime state)
    in RAM; int8 weights, int32 biases, requantization tables and code in flash. Float input and output stay
    in the caller's memory."""
    r = MemoryReport()
    r.add("arena", "ram", arena, detail=arena_detail)
    if scratch:
        r.add("kernel scratch", "ram", scratch, detail="CMSIS-NN buffer, largest layer (--kernels cmsis-nn)")
    if runtime_state:
        r.add("runtime state", "ram", runtime_state, exact=runtime_state_exact)
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
                      scratch: int = 0, abi: str | None = None, descriptors: bool = False,
                      runtime_state_exact: bool = True, tables: int = 0) -> MemoryReport:
    """The report for a deployment (``classifier``: ir.train.Classifier). ``descriptors``: the target's code
    declares the runtime's descriptor structs, sized for ``abi`` (a key of ABIS; None: unknown, the host's
    sizes, not exact)."""
    r = MemoryReport()
    r.add("feature extractor arena", "ram", arena, detail=arena_detail)
    if scratch:
        r.add("kernel scratch", "ram", scratch, detail="CMSIS-NN buffer, largest layer (--kernels cmsis-nn)")
    r.add("classifier weights", "ram", classifier.param_bytes(), detail="float32, trainable")
    st = classifier.training_state_bytes(batch_size)
    r.add("training state", "ram", sum(st.values()),
          detail=", ".join(f"{k} {v}" for k, v in st.items()) + f" (x batch {batch_size}; fused SGD: no gradient "
                 f"array, --train {classifier.train_mode})")
    r.add("replay buffer", "ram", buffer_bytes)
    r.add("staging vectors", "ram", 0,
          detail=f"none: {'probabilities' if classifier.loss_name != 'mse' else 'outputs'} are computed in the last "
                 "layer's activations, features, labels and targets read where they are stored")
    r.add("runtime state", "ram", runtime_state, exact=runtime_state_exact)
    if descriptors:
        key = abi or host_abi()
        d = descriptor_bytes(len(classifier.layers), ABIS[key])
        what = ", ".join(f"{k} {v}" for k, v in d.items())
        where = ABIS[key].name if abi else f"host ABI, {ABIS[key].name}: --board names the target"
        r.add("runtime descriptors", "ram", sum(d.values()), exact=abi is not None, detail=f"{what} ({where})")
    w, b, t = extractor_flash(extractor)
    r.add("extractor weights", "flash", w, detail="int8")
    r.add("extractor biases", "flash", b, detail="int32")
    r.add("requantization tables", "flash", t, detail="int32 multiplier + shift per channel")
    if tables:
        r.add("kernel lookup tables", "flash", tables, detail=LUT_DETAIL)
    r.add("classifier initial weights", "flash", classifier.param_bytes(), detail="float32, for reset")
    r.add("code", "flash", code_estimate(extractor), exact=False, detail="per-kernel table")
    return r
