"""`tinycc ops`: the layers and operators each frontend reads and each backend runs, with their dtypes.

Errors about an unsupported layer, operator or dtype name the one at fault and point here instead of
listing everything on one line.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any

import pluggy

hookimpl = pluggy.HookimplMarker("tinycc")


def sections() -> list[tuple[str, str, list[str]]]:
    """(component, dtypes, sorted names) for every frontend, the int8 kernels and every backend."""
    from ..backends.c.emitter import C_KINDS
    from ..backends.tflm import RESOLVER
    from ..ir.interpreter_int8 import INT8_KINDS
    from ..ir.ops import OpKind
    from .keras_frontend import SUPPORTED_LAYERS
    from .tflite_frontend import SUPPORTED_OPERATORS

    shape_only = {"SHAPE", "PACK", "TILE", "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"}
    return [
        ("keras frontend (.h5, .keras): layers", "float32", list(SUPPORTED_LAYERS)),
        ("tflite frontend (.tflite): operators",
         "int8 activations (uint8 or float32 at the inputs/outputs), int8 weights, int32 bias; or float32 "
         "(float16 and dynamic-range int8 weights become float32); int16 activations are not read",
         sorted(SUPPORTED_OPERATORS - shape_only) +
         ["SPACE_TO_BATCH_ND + conv + BATCH_TO_SPACE_ND (dilated conv)", "EXPAND_DIMS + TILE + RESHAPE (repeat)",
          "SHAPE/STRIDED_SLICE/PACK (int32 shape arithmetic, dropped)"]),
        ("IR float interpreter: ops", "float32", sorted(k.value for k in OpKind)),
        ("int8 quantization and interpreter: ops", "int8 activations, int8 weights, int32 bias",
         sorted(k.value for k in INT8_KINDS)),
        ("c and arduino backends: extractor ops", "int8 (the trainable classifier is float32)",
         sorted(k.value for k in C_KINDS)),
        ("tflm backend: TFLite Micro operators", "int8 (the trainable classifier is float32, tinycc's runtime)",
         sorted(RESOLVER)),
    ]


def render(width: int = 100) -> str:
    out = []
    for title, dtypes, names in sections():
        out.append(f"{title} [{len(names)}]")
        out.append(textwrap.fill(f"dtypes: {dtypes}", width, initial_indent="  ", subsequent_indent="    "))
        out.append(textwrap.fill(", ".join(names), width, initial_indent="  ", subsequent_indent="  ",
                                 break_on_hyphens=False))
    return "\n".join(out) + "\n"


def cmd_ops(args: argparse.Namespace, session: Any) -> int:
    sys.stdout.write(render())
    return 0


@hookimpl
def tinycc_add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("ops", help="list the layers/operators each frontend and backend supports, with dtypes")
    p.set_defaults(func=cmd_ops)
