"""What every int8 convolution-like kernel template needs, as literals: geometry, zero points, tables."""
from __future__ import annotations

import math
from typing import Any

from ....ir.graph import Graph, Op
from ....ir.interpreter_int8 import conv_params
from ....ir.ops import OpKind, same_padding


def layer_context(g: Graph, op: Op, arrays: Any) -> dict[str, Any]:
    """Shapes (batch 1), strides, dilation, top/left padding, zero points, activation range, and the names of
    the flash arrays (weights, bias or None, per-channel multiplier/shift, or literals when per tensor)."""
    x, y, wt = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]], g.tensors[op.inputs[1]]
    p = conv_params(g, op)
    a = op.attrs
    if op.kind == OpKind.DENSE:
        rows = math.prod(x.shape[1:-1])
        geo = {"IH": rows, "IW": 1, "IC": x.shape[-1], "OH": rows, "OW": 1, "OC": y.shape[-1], "KH": 1, "KW": 1,
               "SH": 1, "SW": 1, "DH": 1, "DW": 1, "PT": 0, "PL": 0}
    else:
        kh, kw = wt.shape[1:3]
        (sh, sw), (dh, dw) = a["strides"], a["dilation"]
        same = a["padding"] == "same"
        geo = {"IH": x.shape[1], "IW": x.shape[2], "IC": x.shape[3], "OH": y.shape[1], "OW": y.shape[2],
               "OC": y.shape[3], "KH": kh, "KW": kw, "SH": sh, "SW": sw, "DH": dh, "DW": dw,
               "PT": same_padding(x.shape[1], kh, sh, dh)[0] if same else 0,
               "PL": same_padding(x.shape[2], kw, sw, dw)[0] if same else 0}
    per_channel = len(p["mult"]) > 1
    ctx = dict(geo)
    ctx.update({
        "ZP": p["in_zp"], "OZP": p["out_zp"], "LO": p["act"][0], "HI": p["act"][1],
        "W": arrays.const(op.inputs[1]),
        "BIAS": arrays.const(op.inputs[2]) if len(op.inputs) > 2 else None,
        "PER_CHANNEL": per_channel,
        "MULT": arrays.array("mult", "int32_t", p["mult"]) if per_channel else str(int(p["mult"][0])),
        "SHIFT": arrays.array("shift", "int32_t", p["shift"]) if per_channel else str(int(p["shift"][0])),
        "comment": f"{op.kind.value} {op.name} ({op.origin})".replace("*/", "* /"),
    })
    return ctx
