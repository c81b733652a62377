"""TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM (float, or int8 with an int16 cell state) -> the IR ``lstm`` op.

Only the standard LSTM is read (what Keras ``LSTM`` converts to, and what TFLite Micro's kernel runs): batch-major,
tanh, every gate present, no peepholes, projection or layer norm. The four per-gate weight and bias tensors are
stacked in the IR's gate order i, f, c, o; int8 per-tensor gate scales become per-axis parameters (H rows each).
The int16 cell state's scale must be a power of two (``cell_power``), the hidden state's parameters those of the
output. Anything else is refused in one line naming the operator's output tensor.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import UnsupportedLayerError
from ...ir.ops import OpKind
from ...ir.tensor import DType, QuantParams, Tensor

_ABSENT = (9, 10, 11, 16, 17, 20, 21, 22, 23)  # peepholes, projection, layer norm
_WEIGHTS, _RECURRENT, _BIAS = (1, 2, 3, 4), (5, 6, 7, 8), (12, 13, 14, 15)


def read_lstm(r: Any, o: Any, x: str, out: int) -> None:
    """Add the ``lstm`` op of TFLite operator ``o`` (reader ``r``, input tensor ``x``, output tensor index ``out``)."""
    ins = [int(i) for i in o.inputs]
    opt = o.builtinOptions
    where = f"UNIDIRECTIONAL_SEQUENCE_LSTM writing {r._short(out)!r}"
    problems = [
        (len(ins) in (20, 24), f"{len(ins)} inputs"),
        (all(ins[i] < 0 for i in _ABSENT if i < len(ins)), "peepholes, projection or layer normalization"),
        (all(ins[i] >= 0 for i in _WEIGHTS + _RECURRENT + _BIAS), "a missing gate (CIFG)"),
        (opt is not None and not opt.timeMajor, "time-major input"),
        (opt is not None and opt.fusedActivationFunction == 4, "an activation other than tanh"),
        (len(r.g.tensors[x].shape) == 3, "an input that is not [batch, steps, features]"),
    ]
    for ok, what in problems:
        if not ok:
            raise UnsupportedLayerError(f"{where}: {what} is not supported (only the standard LSTM)")
    integer = r.g.tensors[x].dtype == DType.INT8
    parts = [_stack(r, [ins[i] for i in group], integer, where) for group in (_WEIGHTS, _RECURRENT, _BIAS)]
    units = parts[1][0].shape[1]
    attrs: dict = {"return_sequences": True, "cell_clip": float(np.float32(opt.cellClip or 0.0))}
    if integer:
        cell = r._quant(ins[19])
        hidden = r._quant(ins[18])
        power = math.log2(float(cell.scale[0])) if cell is not None and cell.scale[0] > 0 else 0.5
        if r.sg.tensors[ins[19]].type != 7 or power != int(power):
            raise UnsupportedLayerError(f"{where}: the cell state must be int16 with a power-of-two scale")
        out_q = r._quant(out)
        if hidden is None or out_q is None or not hidden.equals(out_q):
            raise UnsupportedLayerError(f"{where}: the hidden state's parameters differ from the output's")
        attrs["cell_power"] = int(power)
    names = []
    for (data, quant), what in zip(parts, ("kernel", "recurrent_kernel", "bias")):
        name = r.g.unique_tensor_name(f"{r._tname(out)}/{what}")
        r.g.add_tensor(Tensor(name, data.shape, DType(str(data.dtype)), data, quant))
        names.append(name)
    if parts[0][0].shape != (4 * units, r.g.tensors[x].shape[2]):
        raise UnsupportedLayerError(f"{where}: weight shapes do not match the input")
    r.add(OpKind.LSTM, [x] + names, out, attrs)


def _stack(r: Any, idx: list[int], integer: bool, where: str) -> tuple[np.ndarray, QuantParams | None]:
    """The four gate tensors stacked on axis 0, with per-axis parameters when int8/int32."""
    datas = [r._const(i, f"{where}: gate tensor") for i in idx]
    quants = [r._quant(i) for i in idx]
    if not integer:
        datas = [r._dequantized(d, q) if d.dtype.kind in "iu" and q is not None else d.astype(np.float32)
                 for d, q in zip(datas, quants)]
        return np.ascontiguousarray(np.concatenate(datas)), None
    if any(q is None or q.scale.size != 1 or int(q.zero_point[0]) != 0 for q in quants):
        raise UnsupportedLayerError(f"{where}: gate weights and biases need one symmetric scale per gate")
    rows = datas[0].shape[0]
    scale = np.repeat(np.array([q.scale[0] for q in quants], np.float32), rows)
    data = np.ascontiguousarray(np.concatenate(datas))
    return data, QuantParams(scale, np.zeros(scale.size, np.int64), 0)
