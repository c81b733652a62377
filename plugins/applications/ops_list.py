"""`tinycc ops`: the layers and operators each registered frontend reads and each backend runs, with their dtypes.

Errors about an unsupported layer, operator or dtype name the one at fault and point here instead of
listing everything on one line. Frontends and backends declare their lists (``supported_ops``); the IR's
interpreters are listed from the IR.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any

import pluggy

hookimpl = pluggy.HookimplMarker("tinycc")


def sections(registry: Any) -> list[tuple[str, str, list[str]]]:
    """(component, dtypes, names) for every registered frontend, the IR interpreters and every backend."""
    from ...ir.interpreter_int8 import INT8_KINDS, INT16_KINDS
    from ...ir.ops import OpKind

    out: list[tuple[str, str, list[str]]] = []
    for name, e in sorted(registry.frontends.items()):
        exts = ", ".join(e.obj.extensions)
        for what, dtypes, names in getattr(e.obj, "supported_ops", lambda: [])():
            out.append((f"{name} frontend ({exts}): {what}", dtypes, list(names)))
    out.append(("IR float interpreter: ops", "float32", sorted(k.value for k in OpKind)))
    out.append(("int8 quantization and interpreter: ops", "int8 activations, int8 weights, int32 bias",
                sorted(k.value for k in INT8_KINDS)))
    out.append(("int16 quantization and interpreter: ops", "int16 activations (TFLite's 16x8: symmetric), int8 "
                "weights, int64 bias (--activations int16, --int16-layers)", sorted(k.value for k in INT16_KINDS)))
    for name, e in sorted(registry.backends.items()):
        for what, dtypes, names in getattr(e.obj, "supported_ops", lambda: [])():
            out.append((f"{name} backend: {what}", dtypes, list(names)))
    return out


def render(registry: Any, width: int = 100) -> str:
    out = []
    for title, dtypes, names in sections(registry):
        out.append(f"{title} [{len(names)}]")
        out.append(textwrap.fill(f"dtypes: {dtypes}", width, initial_indent="  ", subsequent_indent="    "))
        out.append(textwrap.fill(", ".join(names), width, initial_indent="  ", subsequent_indent="  ",
                                 break_on_hyphens=False))
    return "\n".join(out) + "\n"


def cmd_ops(args: argparse.Namespace, session: Any) -> int:
    sys.stdout.write(render(session.registry))
    return 0


@hookimpl
def tinycc_add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("ops", help="list the layers/operators each frontend and backend supports, with dtypes")
    p.set_defaults(func=cmd_ops)
