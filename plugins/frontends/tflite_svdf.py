"""TFLite's SVDF (builtin 27; float, or int8 with int16 weights_time and an int16 state) -> the IR ``svdf`` op.

Inputs: x ``[batch, F]``, weights_feature ``[filters, F]``, weights_time ``[filters, memory]``, optional bias
``[units]`` and the variable activation-state tensor ``[batch, filters * memory]``, which is not read as data: its
parameters become the op's ``state_scale`` (int8) and the IR starts it at zero (see ir/svdf.py for the streaming
semantics). Refused in one line naming the output tensor: a batch other than 1, a state that is not a variable
tensor, int8 weights_time/state (TFLite Micro's int8-state variant), a state zero point other than 0, per-axis
weight scales, asymmetric_quantize_inputs (the hybrid kernel) and activations other than none/relu/relu6.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import UnsupportedLayerError
from ...ir.ops import OpKind
from ...ir.tensor import DType, Tensor

_ACT = {0: "none", 1: "relu", 3: "relu6"}


def read_svdf(r: Any, o: Any, x: str, out: int) -> None:
    """Add the ``svdf`` op of TFLite operator ``o`` (reader ``r``, input tensor ``x``, output tensor index ``out``)."""
    ins = [int(i) for i in o.inputs]
    opt = o.builtinOptions
    where = f"SVDF writing {r._short(out)!r}"
    if len(ins) != 5 or ins[4] < 0 or not r.sg.tensors[ins[4]].isVariable:
        raise UnsupportedLayerError(f"{where}: needs 5 inputs with a variable state tensor")
    rank = int(opt.rank) if opt is not None else 0
    act = _ACT.get(int(opt.fusedActivationFunction) if opt is not None else 0)
    xs = r.g.tensors[x].shape
    if rank < 1 or act is None or (opt is not None and opt.asymmetricQuantizeInputs):
        raise UnsupportedLayerError(f"{where}: rank {rank}, its activation or hybrid inputs are not supported")
    if len(xs) != 2 or xs[0] != 1:
        raise UnsupportedLayerError(f"{where}: only a [1, features] input (one frame per invoke) is supported")
    integer = r.g.tensors[x].dtype == DType.INT8
    attrs: dict = {"rank": rank, "activation": act}
    names = []
    for idx, what in zip(ins[1:4], ("weights_feature", "weights_time", "bias")):
        if idx < 0:
            continue
        data = r._const(idx, f"{where}: {what}")
        q = r._quant(idx)
        if not integer:
            data = r._dequantized(data, q) if data.dtype.kind in "iu" and q is not None else data.astype(np.float32)
            q = None
        elif q is None or q.scale.size != 1 or int(q.zero_point[0]) != 0:
            raise UnsupportedLayerError(f"{where}: {what} needs one symmetric scale")
        name = r.g.unique_tensor_name(f"{r._tname(out)}/{what}")
        r.g.add_tensor(Tensor(name, data.shape, DType(str(data.dtype)), np.ascontiguousarray(data), q))
        names.append(name)
    if integer:
        state = r._quant(ins[4])
        st = r.sg.tensors[ins[4]].type
        wt = r.g.tensors[names[1]].dtype
        if st != 7 or wt != DType.INT16 or state is None or int(state.zero_point[0]) != 0:
            raise UnsupportedLayerError(f"{where}: only int16 weights_time and an int16 state of zero point 0 are "
                                        "supported")
        attrs["state_scale"] = float(state.scale[0])
    r.add(OpKind.SVDF, [x] + names, out, attrs)
