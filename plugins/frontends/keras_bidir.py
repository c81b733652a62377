"""Keras ``Bidirectional`` and ``go_backwards`` recurrent layers, lowered onto the IR's ``reverse`` op.

``go_backwards=True`` on LSTM/GRU/SimpleRNN is ``reverse`` (time axis) in front of the layer; as in Keras, a
sequence output stays in reversed time order. ``Bidirectional(layer, merge_mode)`` runs its forward layer and its
backward layer (each with its own ``go_backwards``, weights from the wrapper's ``forward_layer`` /
``backward_layer``) on the same input; with ``return_sequences`` the backward output is reversed back, then
the two are merged: ``concat`` (last axis, forward first), ``sum`` (add), ``ave`` (add, then rescale by 0.5),
``mul``. ``merge_mode=None`` (two outputs), ``return_state`` and inner layers other than LSTM/GRU/SimpleRNN are
refused in one line naming the layer.
"""
from __future__ import annotations

from typing import Any, Callable

from ...errors import UnsupportedLayerError
from ...ir.ops import OpKind

MERGE_MODES = ("concat", "sum", "ave", "mul")


def time_input(b: Any, layer: Any, x: str, name: str) -> str:
    """The input a recurrent layer reads: ``x``, or ``x`` reversed along time when the layer goes backwards."""
    if not getattr(layer, "go_backwards", False):
        return x
    return b.op(OpKind.REVERSE, [x], f"{name}/reverse", name, {"axis": 1})


def _inner_converters() -> dict[str, Callable[[Any, Any, list[str], str], str]]:
    from .keras_lstm import convert_lstm
    from .keras_recurrent import CONVERTERS

    return {**CONVERTERS, "LSTM": convert_lstm}


def bidirectional(b: Any, l: Any, ins: list[str], name: str) -> str:
    """Keras ``Bidirectional``: forward and backward layers on ``ins[0]``, merged by ``merge_mode``."""
    mode = getattr(l, "merge_mode", "concat")
    fwd, bwd = l.forward_layer, l.backward_layer
    convs = _inner_converters()
    problems = []
    if mode not in MERGE_MODES:
        problems.append(f"merge_mode={mode!r} (supported: {', '.join(MERGE_MODES)})")
    if getattr(l, "return_state", False) or getattr(fwd, "return_state", False):
        problems.append("return_state=True")
    for inner in (fwd, bwd):
        cls = type(inner).__name__
        if cls not in convs:
            problems.append(f"a {cls} layer (LSTM, GRU or SimpleRNN only)")
            break
    if problems:
        raise UnsupportedLayerError(f"layer {name!r} (Bidirectional) uses {', '.join(problems)}: not supported")
    y_f = convs[type(fwd).__name__](b, fwd, ins, f"{name}/forward")
    y_b = convs[type(bwd).__name__](b, bwd, ins, f"{name}/backward")
    if bool(getattr(fwd, "return_sequences", False)):
        y_b = b.op(OpKind.REVERSE, [y_b], f"{name}/backward/reverse_out", name, {"axis": 1})
    if mode == "concat":
        return b.op(OpKind.CONCAT, [y_f, y_b], name, name, {"axis": len(b.g.tensors[y_f].shape) - 1})
    if mode == "mul":
        return b.op(OpKind.MUL, [y_f, y_b], name, name)
    if mode == "sum":
        return b.op(OpKind.ADD, [y_f, y_b], name, name)
    total = b.op(OpKind.ADD, [y_f, y_b], f"{name}/sum", name)
    return b.op(OpKind.RESCALE, [total], name, name, {"scale": 0.5, "offset": 0.0})
