"""Keras ``LSTM`` -> the IR ``lstm`` op (weights transposed to ``[4H, F]``/``[4H, H]``, gate order i, f, c, o kept).

Only the standard layer is taken: tanh activation, sigmoid recurrent activation, no returned state, not
stateful (``go_backwards``: a time reversal in front, ``keras_bidir``); dropout settings are ignored
(inference). Anything else is refused in one line naming the layer.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import UnsupportedLayerError
from ...ir.ops import OpKind
from .keras_bidir import time_input


def _act_name(fn: Any) -> str:
    if fn is None:
        return "linear"
    return fn if isinstance(fn, str) else getattr(fn, "__name__", str(fn))


def _array(v: Any) -> np.ndarray:
    return np.asarray(v.numpy() if hasattr(v, "numpy") else v, np.float32)


def convert_lstm(b: Any, layer: Any, ins: list[str], name: str) -> str:
    """One Keras LSTM layer on ``ins[0]`` ([N, T, F]) into an ``lstm`` op; returns its output tensor."""
    x = b.g.tensors[ins[0]]
    checks = [
        (_act_name(layer.activation) == "tanh", f"activation {_act_name(layer.activation)!r} (only tanh)"),
        (_act_name(layer.recurrent_activation) == "sigmoid",
         f"recurrent_activation {_act_name(layer.recurrent_activation)!r} (only sigmoid)"),
        (not getattr(layer, "return_state", False), "return_state=True"),
        (not getattr(layer, "stateful", False), "stateful=True"),
        (len(x.shape) == 3, f"an input of rank {len(x.shape)} (expected [batch, steps, features])"),
    ]
    for ok, what in checks:
        if not ok:
            raise UnsupportedLayerError(f"layer {name!r} (LSTM) uses {what}; tinycc supports the standard LSTM")
    cell = layer.cell  # a Keras LSTM keeps its weights on its cell; keras_direct's layer object is its own cell
    kernel = _array(cell.kernel)  # [F, 4H]
    rec = _array(cell.recurrent_kernel)  # [H, 4H]
    w_in = b.const(f"{name}/kernel", np.ascontiguousarray(kernel.T))
    w_rec = b.const(f"{name}/recurrent_kernel", np.ascontiguousarray(rec.T))
    bias = [b.const(f"{name}/bias", _array(cell.bias))] if cell.use_bias else []
    return b.op(OpKind.LSTM, [time_input(b, layer, ins[0], name), w_in, w_rec] + bias, name, name,
                {"return_sequences": bool(layer.return_sequences)})
