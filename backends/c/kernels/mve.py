"""Helium (MVE) kernels for Cortex-M55: chosen only when the deployment targets a Cortex-M55 (`helium`); each
generated function holds the Helium version under ``#if TCC_MVE`` (runtime/tinycc_mve.h) and the scalar family's
version (the DSP path of gemm/conv) under ``#else``, so the project still builds for any core. Both take the
same arguments (the scalar family's tables).

`gemm` layers (1x1 stride-1 convolution, dense) and other ungrouped convolutions (`conv`: per 2 pixels the
windows are gathered on the stack, padding filled with the input zero point, windows up to `MAX_WINDOW` bytes):
2 pixels x 3 output channels per block (VMLADAVA writes even registers: 6 accumulators), 16 inputs per VLDRB and VMLADAVA into scalar accumulators (a predicated
last step when the row is not a multiple of 16), the input zero point in the bias (folded at compile time where
the scalar family folds it, else subtracted once per call: zp x each weight row's sum by VADDVA), four outputs
requantized at once (VQRDMULH + rounding shift, bit-exact).

`depthwise` (depth multiplier 1, up to `MAX_TAPS` taps): channels in lanes, 8 per step as int16 (x - zp), the
even and odd lanes' products accumulated in int32 by VMULLB/VMULLT, interior pixels' taps unrolled.

`add` (same-shape int8 ADD): 4 elements per step in int32 lanes, TFLite's three requantizations vectorized."""
from __future__ import annotations

import re

from typing import Any

from ....ir.graph import Graph, Op
from ....ir.interpreter_int8 import conv_params
from . import add, conv, depthwise, gemm, render
from .common import WIDEN_GUARD, layer_context

HELIUM_CPUS = ("m55",)  # built-in targets with MVE-I
MAX_WINDOW = 1024  # conv: at most this many int8 per pixel window (2 windows on the stack)
MAX_OUTPUTS = 512  # gemm/conv: at most this many output channels (2 pixels' int32 sums on the stack)
MAX_TAPS = 25  # depthwise: kernels up to 5x5 (interior taps unrolled)


def helium(config: Any) -> bool:
    """Whether a deployment's config targets a Helium core (its board's target, or the one validate runs)."""
    targets = (getattr(config, "target", None), getattr(config, "demo_target", None))
    return any(t is not None and t.name in HELIUM_CPUS for t in targets)


class _Names:
    """An ArrayMaker that only names: the template's literals without declaring the arrays twice."""

    def const(self, tensor: str) -> str:
        return ""

    def ptr(self, tensor: str) -> str:
        return ""

    def array(self, base: str, ctype: str, values: Any, flash: bool = True) -> str:
        return ""


class _Shared:
    """The emitter's ArrayMaker for the scalar family beside a Helium function: every table the scalar form
    marks as read only by its portable path is passed as is (the Helium function reads it)."""

    def __init__(self, arrays: Any) -> None:
        self.arrays = arrays

    def __getattr__(self, name: str) -> Any:
        return getattr(self.arrays, name)

    def array(self, base: str, ctype: str, values: Any, flash: bool = True, guard: str = "") -> str:
        if guard == WIDEN_GUARD:  # the widened copy: the scalar form's alone (TCC_WW_SCALAR)
            guard = f"{WIDEN_GUARD} && !TCC_MVE"
        return self.arrays.array(base, ctype, values, flash, guard)

    def portable(self, name: str) -> str:
        return name


def _conv_window(g: Graph, op: Op) -> int:
    kh, kw, c = g.tensors[op.inputs[1]].shape[1:]
    return kh * kw * c


def _conv_folds(g: Graph, op: Op) -> bool:
    """Whether conv.emit passes the bias with the input zero point folded in (its im2col path)."""
    kh, kw, c = g.tensors[op.inputs[1]].shape[1:]
    return kw * c < conv.IM2COL_ROW and kh * kw * c <= conv.IM2COL_WINDOW


def matches(g: Graph, op: Op) -> bool:
    if add.matches(g, op):
        return True
    if depthwise.matches(g, op):
        kh, kw = g.tensors[op.inputs[1]].shape[1:3]
        return kh * kw <= MAX_TAPS
    if g.tensors[op.outputs[0]].shape[-1] > MAX_OUTPUTS:
        return False
    return gemm.matches(g, op) or (conv.matches(g, op) and _conv_window(g, op) <= MAX_WINDOW)


_SIGNATURE = re.compile(r"(TCC_LAYER void \{fn\}\()(.*?)(\)\s*\{)", re.S)


def _params(text: str) -> list[tuple[str, str]]:
    """(declaration, name) of each parameter of a C parameter list."""
    out = []
    for decl in (d.strip() for d in text.split(",")):
        out.append((decl, decl.replace("*", " ").split()[-1]))
    return out


def _align(helium: str, scalar: str) -> str:
    """The Helium function with the scalar family's parameter list: one call serves both #if branches, so the
    parameters the scalar form adds (e.g. the M4's widened weights) are taken and ignored here."""
    mh, ms = _SIGNATURE.search(helium), _SIGNATURE.search(scalar)
    if mh is None or ms is None:
        raise ValueError("a kernel template without a `TCC_LAYER void {fn}(...) {` signature")
    have = {name for _, name in _params(mh.group(2))}
    extra = [(d, n) for d, n in _params(ms.group(2)) if n not in have]
    if not extra:
        return helium
    unused = "".join(f"\n    (void){n};" for _, n in extra)
    params = mh.group(2) + "".join(f", {d}" for d, _ in extra)
    return helium[:mh.start()] + mh.group(1) + params + mh.group(3) + unused + helium[mh.end():]


def emit(g: Graph, op: Op, arrays: Any) -> tuple[str, list[str]]:
    """The Helium function and the scalar family's under #if/#else (name left as `{fn}`), and the call's
    arguments (the scalar family's)."""
    if add.matches(g, op):
        scalar, args = add.emit(g, op, arrays, table=False)  # the Helium add takes the parametric form's arguments
        n = g.tensors[op.outputs[0]].size
        code = _align(render("mve_add.c.j2", fn="{fn}", N=n), scalar)
        return f"#if TCC_MVE\n{code}#else\n{scalar}#endif\n", args
    if depthwise.matches(g, op):
        scalar, args = depthwise.emit(g, op, arrays, fast=False)  # the Helium form reads the plain tables
        ctx, _ = layer_context(g, op, _Names())
        code = _align(render("mve_dw.c.j2", fn="{fn}", **ctx), scalar)
        return f"#if TCC_MVE\n{code}#else\n{scalar}#endif\n", args
    is_gemm = gemm.matches(g, op)
    scalar, args = (gemm if is_gemm else conv).emit(g, op, _Shared(arrays))
    args = [a.replace("TCC_WW(", "TCC_WW_SCALAR(") for a in args]
    ctx, _ = layer_context(g, op, _Names(), fold=True if is_gemm else _conv_folds(g, op))
    ctx["P"] = ctx["OH"] * ctx["OW"]
    ctx["ZFIX"] = not ctx["FOLDED"] and conv_params(g, op)["in_zp"] != 0
    code = _align(render("mve_gemm.c.j2" if is_gemm else "mve_conv.c.j2", fn="{fn}", **ctx), scalar)
    return f"#if TCC_MVE\n{code}#else\n{scalar}#endif\n", args
