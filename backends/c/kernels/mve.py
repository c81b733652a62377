"""Helium (MVE) kernels for Cortex-M55: chosen only when the deployment targets a Cortex-M55 (`helium`); each
generated function holds the Helium version under ``#if TCC_MVE`` (runtime/tinycc_mve.h) and the portable/DSP
version of the scalar family under ``#else``, so the project still builds for any core.

`gemm` (1x1 stride-1 convolution, dense): 2 pixels x 4 output channels per block, 16 inputs per VLDRB and
VMLADAVA into scalar accumulators (a predicated last step when the inputs are not a multiple of 16), the input
zero point folded into the bias at compile time, four outputs requantized at once (VQRDMULH + rounding shift,
bit-exact). Only layers whose zero point folds (or is 0) are taken."""
from __future__ import annotations

from typing import Any

from ....ir.graph import Graph, Op
from ....ir.interpreter_int8 import conv_params
from . import gemm, render
from .common import folded_bias, layer_context

HELIUM_CPUS = ("m55",)  # built-in targets with MVE-I


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


def matches(g: Graph, op: Op) -> bool:
    if not gemm.matches(g, op):
        return False
    zp = conv_params(g, op)["in_zp"]
    return zp == 0 or folded_bias(g, op, zp) is not None


def emit(g: Graph, op: Op, arrays: Any) -> tuple[str, list[str]]:
    """The Helium function and the scalar family's under #if/#else (name left as `{fn}`), and the call's
    arguments (the scalar family's: same tables, same order)."""
    scalar, args = gemm.emit(g, op, arrays)
    ctx, _ = layer_context(g, op, _Names(), fold=True)
    ctx["P"] = ctx["OH"] * ctx["OW"]
    code = render("mve_gemm.c.j2", fn="{fn}", **ctx)
    return f"#if TCC_MVE\n{code}#else\n{scalar}#endif\n", args
