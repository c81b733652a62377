"""Kernel generator: per-layer C specialized at compile time (sizes, strides, padding, zero points as literals).

The emitter asks `specialize` for each int8 op; a kernel module that matches renders its template beside it
into one `static void tcc_layer_N(const int8_t *in, int8_t *out)` function that model.c defines and the
schedule calls. Ops no module matches (or option ``kernels=generic``) run the generic loops of
`runtime/tinycc_kernels.c`. Modules: `gemm` (1x1 stride-1 convolution and dense as a matrix product),
`conv` (any other ungrouped convolution), `grouped` (groups > 1), `depthwise` (depth multiplier 1),
`add` (same-shape int8 ADD, TFLite's fixed-point arithmetic inlined; the operands by flash tables), `pool` (average over the whole input),
`lut` (LOGISTIC and TANH by a 256-entry flash table), `conv16` (int16-activation convolution, depthwise and
dense) and `pool16` (int16 max pooling): the only modules for int16 ops. `table_bytes` counts the lut and add tables for the memory
report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ....config import KERNELS as KERNEL_CHOICES  # noqa: F401  (--kernels; cmsis-nn is backends/c/cmsis_nn.py)
from ....ir.graph import Graph, Op
from ..layout import fold_constants
from ..tables import CTYPE_BYTES

HERE = Path(__file__).parent


class ArrayMaker(Protocol):
    """What a kernel module needs from the emitter: flash arrays for constants and tables."""

    def const(self, tensor: str) -> str: ...
    def ptr(self, tensor: str) -> str: ...
    def array(self, base: str, ctype: str, values: Any, flash: bool = True, guard: str = "") -> str: ...
    def portable(self, name: str) -> str: ...  # the argument for a table only the portable path reads
    shared: dict[str, str]  # tables of tinycc's own made once per model, by role


@dataclass
class Kernel:
    """A generated function: its name, its C definition, the module that made it, the layers that call it
    (their names from the model file, raw) and ``uses``: one escaped comment line per call (position, kind,
    shapes, name)."""
    fn: str
    code: str
    family: str
    layers: list[str]
    uses: list[str] = field(default_factory=list)


@lru_cache(maxsize=1)
def _env() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE)), trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def render(template: str, **ctx: Any) -> str:
    return _env().get_template(template).render(**ctx)


def _modules(helium: bool = False) -> list[Any]:
    from . import add, conv, depthwise, gemm, grouped, lut, mve, pool

    first = [mve] if helium else []  # Cortex-M55: the Helium kernels of mve.py where they match
    return first + [gemm, conv, grouped, depthwise, add, pool, lut]  # first match wins: gemm before the general convolution


def choose(g: Graph, op: Op, mode: str = "tinycc", helium: bool = False) -> Any | None:
    """The kernel module that generates ``op``'s function (the first that matches; an LSTM's whatever ``mode``),
    or None when the generic runtime kernel runs it: the one choice `specialize`, the memory report
    (`table_bytes`, `widened_weight_bytes`) and the overlap planner (`overlap.walks_backward`) all read."""
    from . import conv16, lstm, pool16, svdf

    if conv16.is_int16(g, op):  # the int16 path (emit16.py): conv16, pool16 or the portable runtime kernel
        if mode != "tinycc":
            return None
        return next((m for m in (conv16, pool16) if m.matches(g, op)), None)
    if lstm.matches(g, op):  # the only C form of an LSTM, whatever --kernels says
        return lstm
    if svdf.matches(g, op):  # the only C form of an SVDF, whatever --kernels says
        return svdf
    if mode != "tinycc":
        return None
    return next((m for m in _modules(helium) if m.matches(g, op)), None)


DSP_CPUS = ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m35p", "cortex-m55", "cortex-m85")  # __ARM_FEATURE_DSP


def dsp_target(target: Any) -> bool:
    """Whether the generated code's assembly loops (TCC_DSP_ASM) are built for ``target`` (a tinycc.targets.Target;
    None, no board: the host's build, without them)."""
    if target is None:
        return False
    return getattr(target, "family", "") == "cortexm" and any(
        f"-mcpu={c}" in getattr(target, "cflags", "").split() for c in DSP_CPUS)


def table_bytes(g: Graph, kernels: str, dsp: bool = True, helium: bool = False, widen: bool = True) -> int:
    """Flash of the tables that the generated kernels of `g` add: GRU/SimpleRNN's, LSTM's and the int16
    LOGISTIC/TANH/SOFTMAX ones always; with
    ``--kernels tinycc`` the LOGISTIC/TANH and ADD tables and, where the assembly loops are built (``dsp``), the
    weights they read widened to int16 - of the kernel that `specialize` picks for each layer (``helium``: the
    Cortex-M55's Helium kernels first, which need neither; ``widen`` False: --no-widen, no widened weights)."""
    from . import add, lstm, lut, rnn

    from ..emit16 import lut16_table_bytes

    tables = rnn.table_bytes(g) + sum(lstm.table_bytes(g, op) for op in g.ops if lstm.matches(g, op))  # every --kernels
    tables += lut16_table_bytes(g)  # int16 LOGISTIC/TANH/SOFTMAX, every --kernels
    if kernels != "tinycc":
        return tables
    for op in g.ops:
        mod = choose(g, op, kernels, helium)
        if mod is lut:
            tables += lut.TABLE_BYTES
        elif mod is add:
            tables += add.table_bytes(g, op)
        elif mod is not None and dsp and hasattr(mod, "ww_bytes"):
            tables += mod.ww_bytes(g, op, widen)
    return tables


def widened_weight_bytes(g: Graph, helium: bool = False) -> int:
    """Flash of the widened weight copies (defined under TCC_DSP_ASM) of the layers of `g` the kernel generator
    specializes: the module that matches first, as `specialize` picks it."""
    total = 0
    for op in g.ops:
        mod = choose(g, op, "tinycc", helium)
        total += mod.ww_bytes(g, op) if mod is not None and hasattr(mod, "ww_bytes") else 0
    return total


REPORT_KINDS = {"bias": "biases", "mult": "requantization tables", "shift": "requantization tables"}


class _Tally:
    """An ArrayMaker that defines nothing: per table the kernels name, its bytes, its report item ("weights",
    "biases", "requantization tables"), how many call arguments name it and how many of those only a portable path
    reads (the emitter's `guard_portable` rule)."""

    def __init__(self, g: Graph) -> None:
        self.g = g
        self.shared: dict[str, str] = {}
        self.bytes: dict[str, int] = {}
        self.kind: dict[str, str] = {}
        self.uses: dict[str, int] = {}
        self.portable_uses: dict[str, int] = {}

    def const(self, tensor: str) -> str:
        t = self.g.tensors[tensor]
        key = "t:" + tensor
        self.bytes[key] = t.nbytes
        self.kind[key] = "biases" if t.dtype.value in ("int32", "int64") else "weights"  # as extractor_flash
        self.uses[key] = self.uses.get(key, 0) + 1
        return key

    def ptr(self, tensor: str) -> str:
        return self.const(tensor) if self.g.tensors[tensor].is_const else tensor

    def array(self, base: str, ctype: str, values: Any, flash: bool = True, guard: str = "") -> str:
        key = f"a:{len(self.bytes)}"
        self.bytes[key] = int(np.asarray(values).size) * CTYPE_BYTES[ctype]
        self.kind[key] = REPORT_KINDS.get(base, "tables")
        self.uses[key] = 1
        return key

    def portable(self, name: str) -> str:
        self.portable_uses[name] = self.portable_uses.get(name, 0) + 1
        return name

    def portable_only(self) -> dict[str, int]:
        """Bytes per report item of the tables that only portable paths read."""
        out: dict[str, int] = {}
        for key, n in self.portable_uses.items():
            if n == self.uses[key]:
                out[self.kind[key]] = out.get(self.kind[key], 0) + self.bytes[key]
        return out


def portable_bytes(g: Graph, kernels: str, helium: bool = False, widen: bool = True) -> dict[str, int]:
    """Where the assembly loops are built: the flash per report item ("weights", "biases", "requantization
    tables") of the tables that only the portable path of their kernels reads, which the generated code defines
    only where the loops are not built (``common.PORTABLE_GUARD``: the widened copies replace them); {} without
    widened weights (--no-widen, ``kernels`` other than tinycc)."""
    from . import conv, conv16, depthwise, gemm

    if kernels != "tinycc" or not widen:
        return {}
    tally = _Tally(g)
    for op in g.ops:
        mod = choose(g, op, kernels, helium)
        if mod in (conv, conv16, depthwise, gemm):
            mod.emit(g, op, tally, widen=True)
        else:  # the generic kernels and the other modules read their constants on every core
            for t in op.inputs:
                if g.tensors[t].is_const:
                    tally.const(t)
    return tally.portable_only()


def specialize(g: Graph, op: Op, arrays: ArrayMaker, kernels: list[Kernel],
               mode: str, helium: bool = False, widen: bool = True) -> tuple[Kernel, list[str]] | None:
    """The kernel that runs `op` and the call's arguments, or None when the generic runtime
    kernel must run it. Layers of the same geometry share one function (`kernels` is extended in place);
    ``mode`` is ``--kernels`` (only ``tinycc`` specializes); ``helium``: the target is a Cortex-M55 (mve.py);
    ``widen`` False (--no-widen): no weights widened in flash."""
    mod = choose(g, op, mode, helium)
    if mod is None:
        return None
    code, args = mod.emit(g, op, arrays, widen=widen) if hasattr(mod, "ww_bytes") else mod.emit(g, op, arrays)
    code = fold_constants(code)  # `oy * 1 - 0` -> `oy`: the same compiled code, read by people
    for k in kernels:
        if k.code == code.replace("{fn}", k.fn):
            k.layers.append(op.name)
            return k, args
    fn = f"tcc_layer_{len(kernels)}"
    kernels.append(Kernel(fn, code.replace("{fn}", fn), mod.__name__.rsplit(".", 1)[-1], [op.name]))
    return kernels[-1], args

