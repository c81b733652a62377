"""Keras ``GRU`` and ``SimpleRNN`` into the IR's ``gru``/``simple_rnn`` ops (ir/recurrent.py).

Supported: tanh activation, sigmoid recurrent activation (GRU), ``reset_after`` either way, ``return_sequences``
either way, with or without bias, ``go_backwards`` (a time reversal in front, ``keras_bidir``); dropout only
trains. Anything else (``return_state``, ``stateful``, other activations, more than ``MAX_UNITS`` units) is
refused in one line naming the layer.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import UnsupportedLayerError
from ...ir.ops import OpKind
from ...ir.recurrent import MAX_UNITS
from .keras_bidir import time_input


def _name(fn: Any) -> str:
    return fn if isinstance(fn, str) else getattr(fn, "__name__", str(fn))


def _w(v: Any) -> np.ndarray:
    return np.asarray(v.numpy() if hasattr(v, "numpy") else v, dtype=np.float32)


def _check(l: Any, name: str, cls: str, shape: tuple[int, ...]) -> None:
    problems = [f"{flag}=True" for flag in ("return_state", "stateful") if getattr(l, flag, False)]
    if _name(l.activation) != "tanh":
        problems.append(f"activation {_name(l.activation)!r} (tanh only)")
    if cls == "GRU" and _name(l.recurrent_activation) != "sigmoid":
        problems.append(f"recurrent_activation {_name(l.recurrent_activation)!r} (sigmoid only)")
    if l.units > MAX_UNITS:
        problems.append(f"{l.units} units (at most {MAX_UNITS})")
    if len(shape) != 3:
        problems.append(f"input shape {shape[1:]} (needs [steps, features])")
    if problems:
        raise UnsupportedLayerError(f"layer {name!r} ({cls}) uses {', '.join(problems)}: not supported")


def gru(b: Any, l: Any, ins: list[str], name: str) -> str:
    """Keras GRU: kernel [F, 3H], recurrent kernel [H, 3H], bias [3H] or [2, 3H] (reset_after) -> [3H, .]."""
    _check(l, name, "GRU", b.g.tensors[ins[0]].shape)
    cell = getattr(l, "cell", l)
    h3 = 3 * l.units
    bias = _w(cell.bias) if l.use_bias else np.zeros((2, h3) if l.reset_after else (h3,), np.float32)
    b_in, b_rec = (bias[0], bias[1]) if l.reset_after else (bias.reshape(h3), np.zeros(h3, np.float32))
    consts = [b.const(f"{name}/kernel", _w(cell.kernel).T), b.const(f"{name}/recurrent_kernel",
                                                                   _w(cell.recurrent_kernel).T),
              b.const(f"{name}/bias", b_in), b.const(f"{name}/recurrent_bias", b_rec)]
    return b.op(OpKind.GRU, [time_input(b, l, ins[0], name), *consts], name, name,
                {"return_sequences": bool(l.return_sequences), "reset_after": bool(l.reset_after)})


def simple_rnn(b: Any, l: Any, ins: list[str], name: str) -> str:
    """Keras SimpleRNN: kernel [F, H], recurrent kernel [H, H], bias [H]."""
    _check(l, name, "SimpleRNN", b.g.tensors[ins[0]].shape)
    cell = getattr(l, "cell", l)
    bias = _w(cell.bias) if l.use_bias else np.zeros(l.units, np.float32)
    consts = [b.const(f"{name}/kernel", _w(cell.kernel).T),
              b.const(f"{name}/recurrent_kernel", _w(cell.recurrent_kernel).T), b.const(f"{name}/bias", bias)]
    return b.op(OpKind.SIMPLE_RNN, [time_input(b, l, ins[0], name), *consts], name, name,
                {"return_sequences": bool(l.return_sequences)})


CONVERTERS = {"GRU": gru, "SimpleRNN": simple_rnn}
