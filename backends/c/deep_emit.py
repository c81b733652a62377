"""C for one SGD step of a float tail (``tinycc.ir.backprop.Tail``): trainable convolution blocks in C.

``emit_step(tail, batch)`` gives a C99 translation unit (to compile with runtime/tinycc_backprop.c) defining the
tail's float parameters ``tcc_dw<k>`` / ``tcc_db<k>`` (k: the parameter op's position; a weight the tail does not
train is ``const``, in flash), every tensor's value and
gradient array for ``batch`` rows, and ``int tcc_deep_step(const float *x, const int32_t *y, int32_t n, float
lr)``: forward in float, softmax cross-entropy, backward with the old weights, then the fused update of what the
tail trains, checked first (returns 0, nothing written, when a new value would not be finite; -1 for a bad n,
label or NULL; -2 for a NaN or infinite input, as the project's learn API). Identifiers are made from positions
only: nothing of the model's text reaches the C. Sigmoid, swish and hard sigmoid call the runtime's ``tcc_fp_*`` /
``tcc_bp_*_dx``; an element-wise Mul, Sub and an Add of a constant or of a broadcast tensor (``[N,H,W,C] +
[N,1,1,C]``) are loops emitted per op (numpy broadcasting, a broadcast operand's gradient summed over its broadcast
axes, the constants ``tcc_cv<j>`` of ``step_consts`` in flash); ``c_step_problem`` names what the step cannot run.

``tcc_deep_logits(x, n, z)`` (bias mode: ``(x, known, n, z)``) is the forward alone: the logits of n rows (0; -1 for
a bad n or NULL; -2 for a non-finite input).
``emit_step(tail, batch, known, biases)``: the int8 backbone's bias learning (``tinycc.ir.deep`` mode ``bias``).
The tensors of ``known`` (tensor -> (scale, zero point)) are not computed: the step is
``tcc_deep_step_known(x, known, y, n, lr)`` and dequantizes them from the caller's int8 activations
(``known[j]``: n rows of the j-th known tensor, in the order of ``known_order``), as the simulator takes them
from the int8 kernels. ``biases`` (parameter op name -> (bias scale s_in * s_w[c], int32 bias)) adds each op's
int32 bias ``tcc_bq<k>`` (RAM), recomputed from the float master bias after every applied step
(``tcc_bp_requantize_bias``) so that inference stays on the int8 kernels.
Wired into generated projects by backends/c/deep_learn.py and deep_project.py (`--deep bias`, c target).
Its RAM: ``step_memory`` (``tinycc.ir.backprop``, re-exported here).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...ir.backprop import (BINARY_KINDS, PARAM_KINDS, Tail, const_value, int8_weights, step_consts, step_flash,
                             step_memory, step_ops, step_plan, uses_descriptor)
from ...ir.ops import MORE_LUT_KINDS, OpKind, same_padding
from .tables import CArray, element_ref, prologue

__all__ = ["c_step_problem", "emit_learn", "emit_step", "flash_problem", "known_order", "learner_step", "step_flash",
           "step_memory"]

_ACT = {"none": 0, "relu": 1, "relu6": 2}


def _f(v: float) -> str:
    return f"{float(v):.9e}f"


class _Tables:
    """The step's arrays, each defined by tables.py (an integer table of ``PACK_BYTES`` or more as a string of its
    bytes, floats as their shortest literals), remembered for the prologue the packed ones need."""

    def __init__(self) -> None:
        self.arrays: list[CArray] = []

    def define(self, ctype: str, name: str, a: np.ndarray, const: bool = False, flash: bool = False) -> str:
        """The C definition of array ``name`` (external linkage); ``const``: read-only; ``flash``: a constant table
        the runtime reads through TCC_READ_* (TCC_WEIGHT: PROGMEM on AVR)."""
        data = np.asarray(a, np.float32 if ctype == "float" else None).reshape(-1)
        arr = CArray(name, ctype, data, qualifiers="const" if const or flash else "")
        self.arrays.append(arr)
        return arr.definition("TCC_WEIGHT" if flash else "") + "\n"

    def ref(self, name: str) -> str:
        """How code names the elements of the defined array ``name`` (``name.v``: a packed union)."""
        return next(a.ref for a in self.arrays if a.name == name)


_UNARY = {OpKind.SIGMOID: "sigmoid", OpKind.SWISH: "swish", OpKind.HARD_SIGMOID: "hard_sigmoid",
          **{k: k.value for k in MORE_LUT_KINDS}}


def _binary_problem(tail: Tail, op) -> str | None:
    """What of an Add/Sub/Mul the step cannot run: a tensor operand of another rank than the output or that does not
    broadcast to it, a constant that does not broadcast, two constants."""
    g = tail.graph
    out = tuple(g.tensors[op.outputs[0]].shape)
    tensors = [t for t in op.inputs[:2] if g.tensors[t].data is None]
    for t in op.inputs[:2]:
        shape = tuple(g.tensors[t].shape)
        if t in tensors and (len(shape) != len(out) or any(a not in (1, b) for a, b in zip(shape, out))):
            return f"{op.kind.value} of a tensor of another rank or shape"
        if t not in tensors and (len(shape) > len(out) or any(
                a not in (1, b) for a, b in zip(shape[::-1], out[::-1])) or (len(shape) == len(out) and shape[0] != 1)):
            return f"{op.kind.value} of a constant that does not broadcast"
    return None if tensors else f"{op.kind.value} of two constants"


def c_step_problem(tail: Tail) -> str | None:
    """Why the generated step cannot train ``tail`` (an op whose backward the C runtime lacks), or None."""
    for op in step_ops(tail):
        what = _binary_problem(tail, op) if op.kind in BINARY_KINDS else None
        if what is not None:
            return (f"layer {op.origin or op.name!r} ({what}) has no backward pass in the generated C step "
                    "(the simulator's only)")
    return None


def flash_problem(tail: Tail, known: set[str] | tuple[str, ...]) -> str | None:
    """Why the step of ``tail`` (``known``: the tensors the int8 kernels compute) keeps a constant that is not a flash
    table read through ``TCC_READ_*`` (a Harvard core, AVR: its plain ``const`` arrays would be RAM): a frozen float
    weight or bias, read by the float kernels; None when every constant is (int8 weights and their scales, bias
    scales, channel rows, Add/Mul constants)."""
    qw = int8_weights(tail, tuple(known))
    for op in step_ops(tail):
        if op.name not in tail.params:
            continue
        tw, tb = tail.trains(op.name)
        if op.name not in qw and not tw:
            return f"layer {op.origin or op.name!r} keeps frozen float weights"
        if not tb and op.outputs[0] not in set(known):
            return f"layer {op.origin or op.name!r} keeps a frozen float bias"
    return None


def _row_strides(shape: tuple, out: tuple, tensor: bool) -> tuple[int, list[int]]:
    """(row stride, stride per output axis after the batch; 0 along a broadcast axis) of an Add/Mul operand of graph
    shape ``shape`` (a tensor: with the batch axis; a constant: numpy-aligned to the right, no batch rows)."""
    full = (1,) * (len(out) - len(shape)) + tuple(shape)
    row = full[1:]
    strides, acc = [0] * len(row), 1
    for ax in range(len(row) - 1, -1, -1):
        strides[ax] = acc if row[ax] != 1 else 0
        acc *= row[ax]
    return (acc if tensor else 0), strides


def _loops(out: tuple, operands: list[tuple[int, list[int]]], body) -> str:
    """C loops over n rows of the output (per-row axes ``out[1:]``), ``k`` its element; ``body(k, idx)`` gets the
    element index of each operand (``operands``: ``_row_strides``)."""
    dims = [(ax, d) for ax, d in enumerate(out[1:]) if d != 1]
    lines = "    {\n        int32_t k = 0;\n        for (int32_t r = 0; r < n; ++r)\n"
    ind = "            "
    for ax, d in dims:
        lines += f"{ind}for (int32_t i{ax} = 0; i{ax} < {d}; ++i{ax})\n"
        ind += "    "
    idx = []
    for rs, st in operands:
        terms = ([f"r * {rs}"] if rs else []) + [f"i{ax} * {st[ax]}" if st[ax] != 1 else f"i{ax}"
                                                 for ax, _ in dims if st[ax]]
        idx.append(" + ".join(terms) or "0")
    return lines + f"{ind}{{\n{ind}    {body('k', idx)}\n{ind}    ++k;\n{ind}}}\n    }}\n"


def known_order(tail: Tail, known: dict[str, tuple[float, int]]) -> list[str]:
    """The known tensors in the order ``tcc_deep_step_known`` takes them (the order of the ops computing them)."""
    return [op.outputs[0] for op in step_ops(tail) if op.outputs[0] in known]


def _size(tail: Tail, t: str) -> int:
    return int(np.prod(tail.graph.tensors[t].shape[1:]))


def _conv_params(tail: Tail, op, batch: int) -> str:
    g = tail.graph
    _, h, w, c = g.tensors[op.inputs[0]].shape
    out = g.tensors[op.outputs[0]].shape
    oh, ow, o = (1, 1, c) if len(out) != 4 else out[1:]
    a = op.attrs
    if op.kind == OpKind.GLOBAL_AVG_POOL:
        k, s, d, pad, mult = (h, w), (1, 1), (1, 1), "valid", 0
        o, oh, ow = c, 1, 1
    elif op.kind in (OpKind.AVG_POOL2D, OpKind.MAX_POOL2D):
        k, s, d, pad, mult = a["pool_size"], a["strides"], (1, 1), a["padding"], 0
    else:
        wt = g.tensors[op.inputs[1]].shape
        k, s, d, pad = (wt[1], wt[2]), a["strides"], a["dilation"], a["padding"]
        mult = a["depth_multiplier"] if op.kind == OpKind.DEPTHWISE_CONV2D else 0
    pt = same_padding(h, k[0], s[0], d[0])[0] if pad == "same" else 0
    pl = same_padding(w, k[1], s[1], d[1])[0] if pad == "same" else 0
    return (f"{{{batch}, {h}, {w}, {c}, {o}, {k[0]}, {k[1]}, {s[0]}, {s[1]}, {d[0]}, {d[1]}, {pt}, {pl}, "
            f"{oh}, {ow}, {mult}}}")


def value_name(tail: Tail, t: str) -> str:
    """The C name of tensor ``t``'s float value array in the step (``tcc_t<position>``; the cut is ``tcc_t0``)."""
    order = [tail.cut] + [op.outputs[0] for op in step_ops(tail)]
    return f"tcc_t{order.index(t)}"


def rows_of(tail: Tail, name: str) -> np.ndarray:
    """Sparse: output channel -> its row among the op's trained channels (-1: frozen), int32."""
    n = tail.params[name].bias.size
    ch = tail.channels(name)
    row = np.full(n, -1, np.int32)
    ch = np.arange(n) if ch is None else ch
    row[ch] = np.arange(len(ch), dtype=np.int32)
    return row


def channel_rows(tail: Tail, name: str, weight: np.ndarray) -> np.ndarray:
    """The trained channels' rows of ``weight`` (the op's layout): [nch, weights per channel]."""
    row = rows_of(tail, name)
    ch = np.flatnonzero(row >= 0)
    return np.moveaxis(np.asarray(weight), tail.axis[name], 0)[ch].reshape(len(ch), -1)


def emit_step(tail: Tail, batch: int, known: dict[str, tuple[float, int]] | None = None,
              biases: dict[str, tuple[np.ndarray, np.ndarray]] | None = None, cut_input: bool = True,
              rates: dict[str, float] | None = None, head_from: str | None = None) -> str:
    """The C step of ``tail`` for at most ``batch`` rows, laid out by ``step_plan`` (see the module docstring).
    ``cut_input`` False (a step that never reads the cut in float, as the bias step): the step and the forward take
    no float cut (``tcc_deep_step_known(known, y, n, lr)``, ``tcc_deep_logits(known, n, z)``). ``rates``: the
    backbone ops' own learning rates (``DeepLearner.rates``, float32 literals fixed at compile time); the other
    parameters learn at the step's ``lr`` argument.

    A sparse subset (``tail.subset``, ``--train sparse``): a region op's frozen bias is the int8 kernels' alone (no
    float copy); an op whose weight trains keeps the int8 weights ``tcc_wq<k>`` / scales ``tcc_ws<k>`` (flash), the
    float masters of its trained channels ``tcc_dw<k>`` [nch][per] and their int8 copy ``tcc_w8<k>`` (RAM, what the
    int8 kernels read, ``tcc_bp_requantize_rows`` after each applied step), ``tcc_row<k>`` mapping each output channel
    to its row (-1: frozen). The backward stops below the earliest trained op. ``head_from`` (a tensor after the
    cut, the features): also ``int tcc_head_step(const int32_t *y, int32_t n, float lr)``, the step of the ops after
    it alone, at ``lr``, on the values its caller wrote into that tensor's array (``value_name``)."""
    problem = c_step_problem(tail)
    if problem is not None:
        raise ValueError(problem)
    known, biases, rates = known or {}, biases or {}, rates or {}
    order = known_order(tail, known)
    ops = step_ops(tail)
    plan = step_plan(tail, tuple(known))
    names = {t: value_name(tail, t) for t in [tail.cut] + [op.outputs[0] for op in ops]}
    floats = set(plan.values)
    grads = {t: f"tcc_gs{k}" for t, k in plan.slot.items()}
    params = {op.name: k for k, op in enumerate(o for o in ops if o.kind in PARAM_KINDS)}
    classes = _size(tail, tail.logits)
    if not cut_input and (tail.cut in floats or not known):
        raise ValueError("a step without the float cut input needs known tensors and no float read of the cut")
    xarg, xnull = ("const float *x, ", "!x || ") if cut_input else ("", "")
    out = ['#include <math.h>\n#include <stddef.h>\n#include <stdint.h>\n#include "tinycc_backprop.h"\n\n']
    qw = int8_weights(tail, tuple(known))
    tabs = _Tables()
    rows = {op.name for op in ops if op.name in qw and tail.trains(op.name)[0]}  # sparse: trained channels
    for op in ops:
        if op.name in params and op.name not in rows and tail.trains(op.name)[0] and tail.channels(op.name) is not None:
            raise ValueError(f"{op.describe()}: a channel subset trains only on int8 weights with zero point 0 "
                             "whose output comes from the int8 kernels")
    fbias = {op.name for op in ops if op.name in params and (tail.trains(op.name)[1] or op.outputs[0] not in known)}
    for op in ops:
        if op.name in params:
            p, k = tail.params[op.name], params[op.name]
            if op.name in qw:  # the int8 backbone's own weights and scales (dequantized in the backward)
                wq, ws = qw[op.name]
                out.append(tabs.define("int8_t", f"tcc_wq{k}", wq, flash=True)
                           + tabs.define("float", f"tcc_ws{k}", ws, flash=True))
            else:
                out.append(tabs.define("float", f"tcc_dw{k}", p.weight, not tail.trains(op.name)[0]))
            if op.name in rows:
                out.append(tabs.define("float", f"tcc_dw{k}", channel_rows(tail, op.name, p.weight))
                           + tabs.define("int8_t", f"tcc_w8{k}", channel_rows(tail, op.name, qw[op.name][0]))
                           + tabs.define("int32_t", f"tcc_row{k}", rows_of(tail, op.name), flash=True))
            if op.name in fbias:
                out.append(tabs.define("float", f"tcc_db{k}", p.bias, not tail.trains(op.name)[1]))
            if op.name in biases:
                scale, q = biases[op.name]
                out.append(tabs.define("float", f"tcc_bs{k}", np.asarray(scale, np.float32), flash=True)
                           + tabs.define("int32_t", f"tcc_bq{k}", q))
    consts = {t: f"tcc_cv{j}" for j, t in enumerate(step_consts(tail, tuple(known)))}
    for t, name in consts.items():  # the Add/Mul constants the step reads (float32, flash)
        out.append(tabs.define("float", name, const_value(tail.graph, t), flash=True))
    for t in plan.values:  # float values: what a float op, an update or a max pooling's backward reads
        out.append(f"static float {names[t]}[{batch * _size(tail, t)}];\n")
    for k in range(plan.slots):  # gradient slots, reused along the backward pass
        out.append(f"static float tcc_gs{k}[{batch * plan.slot_size}];\n")
    if plan.scratch_size:
        out.append(f"static float tcc_gx[{batch * plan.scratch_size}];\n")
    conv_ops = [op for op in ops if uses_descriptor(tail, op, tuple(known))]  # what the step reads
    pidx = {op.name: i for i, op in enumerate(conv_ops)}
    for op in conv_ops:
        out.append(f"static tcc_bp_conv_t tcc_p{pidx[op.name]} = {_conv_params(tail, op, batch)};\n")
    if any(t in floats for t in order):
        out.append("\nstatic inline void tcc_dq(float *v, const int8_t *q, int32_t count, float scale, int32_t zp) {\n"
                   "    for (int32_t k = 0; k < count; ++k) v[k] = scale * (float)((int32_t)q[k] - zp);\n}\n")
    out.append("\nstatic inline void tcc_acc(float *g, const float *d, int32_t count) {\n"
                   "    for (int32_t k = 0; k < count; ++k) g[k] += d[k];\n}\n")
    out.append("\nstatic inline void tcc_copy(float *g, const float *d, int32_t count) {\n"
               "    for (int32_t k = 0; k < count; ++k) g[k] = d[k];\n}\n\n")
    head = len(out)  # the forward function goes here, before the step
    if order:
        out.append(f"int tcc_deep_step_known({xarg}const int8_t *const *known, const int32_t *y, int32_t n, "
                   f"float lr) {{\n    if (!known) return -1;\n    for (int32_t j = 0; j < {len(order)}; ++j) "
                   f"if (!known[j]) return -1;\n")
    else:
        out.append("int tcc_deep_step(const float *x, const int32_t *y, int32_t n, float lr) {\n")
    labels = f"    for (int32_t r = 0; r < n; ++r) if (y[r] < 0 || y[r] >= {classes}) return -1;\n"
    out.append(f"    if (n < 1 || n > {batch} || {xnull}!y) return -1;\n" + labels)
    if cut_input:
        out.append(f"    for (int32_t k = 0; k < n * {_size(tail, tail.cut)}; ++k) if (!isfinite(x[k])) return -2;\n")
    sets = "".join(f"    tcc_p{pidx[op.name]}.n = n;\n" for op in conv_ops)
    cut_copy = (f"    for (int32_t k = 0; k < n * {_size(tail, tail.cut)}; ++k) tcc_t0[k] = x[k];\n"
                if tail.cut in floats else "")
    out.append(cut_copy)

    def mask(dst: str, src: str, t: str, cnt: str, act: int) -> str:
        """dst := src masked by the activation's derivative at t's value (float, or its int8 value)."""
        if t in floats or t not in known:
            return f"    tcc_bp_act({dst}, {src}, {names[t]}, {cnt}, {act});\n"
        scale, zp = known[t]
        return (f"    tcc_bp_act_q({dst}, {src}, known[{order.index(t)}], {cnt}, {act}, {_f(scale)}, "
                f"{int(zp)});\n")

    def into(op, pos: int, call, cnt_in: str) -> str:
        """The gradient of input ``pos``: written by call(dst) in place when first, else through tcc_gx."""
        g = grads[op.inputs[pos]]
        if (op.name, pos) in plan.fresh:
            return call(g)
        return call("tcc_gx") + f"    tcc_acc({g}, tcc_gx, {cnt_in});\n"

    def binary(op, fwd: list[str], bwd: list[str], go: str | None, cnt: str, act: int, stop: str) -> None:
        """An element-wise Mul, Sub (or an Add of a constant or a broadcast tensor) with numpy broadcasting: the
        forward, then the gradient of each tensor operand it reaches, summed over the axes it was broadcast along
        (Mul: dz times the other operand; Add: dz; Sub: dz, -dz for the second operand)."""
        g = tail.graph
        out_shape = tuple(g.tensors[op.outputs[0]].shape)
        ins = op.inputs[:2]
        src = [consts.get(t, names.get(t)) for t in ins]  # a constant outside step_consts: never read

        def el(j: int, ix: str) -> str:
            """Element ``ix`` of operand ``j``: a constant is a flash table (TCC_READ_F32)."""
            return f"TCC_READ_F32({src[j]} + ({ix}))" if ins[j] in consts else f"{src[j]}[{ix}]"
        geo = [_row_strides(tuple(g.tensors[t].shape), out_shape, g.tensors[t].data is None) for t in ins]
        sym = {OpKind.MUL: "*", OpKind.ADD: "+", OpKind.SUB: "-"}[op.kind]
        o = names[op.outputs[0]]
        fwd.append(_loops(out_shape, geo, lambda k, ix: f"{o}[{k}] = {el(0, ix[0])} {sym} {el(1, ix[1])};"))
        if act:
            fwd.append(f"    tcc_fp_act({o}, {cnt}, {act});\n")
        if act and go:
            bwd.append(mask(go, go, op.outputs[0], cnt, act))
        for pos, t in enumerate(ins):
            if not go or t == stop or t not in grads:
                continue
            size = _size(tail, t)
            if op.kind != OpKind.MUL:  # add, sub: dz (-dz: sub's second operand), straight into the gradient's slot
                d, neg, fresh = grads[t], op.kind == OpKind.SUB and pos == 1, (op.name, pos) in plan.fresh
                if tuple(g.tensors[t].shape) == out_shape and not neg:
                    bwd.append(f"    tcc_{'copy' if fresh else 'acc'}({d}, {go}, {cnt});\n")
                    continue
                if fresh:
                    bwd.append(f"    for (int32_t k = 0; k < n * {size}; ++k) {d}[k] = 0.0f;\n")
                sign = "-" if neg else "+"
                bwd.append(_loops(out_shape, geo, lambda k, ix, d=d, pos=pos, sign=sign:
                                  f"{d}[{ix[pos]}] {sign}= {go}[{k}];"))
                continue
            whole = size == int(np.prod(out_shape[1:]))  # a tensor operand of the output's rank: its shape

            def call(d: str, pos: int = pos, whole: bool = whole, size: int = size) -> str:
                if whole:  # the operand has the output's shape: element k
                    return _loops(out_shape, geo, lambda k, ix: f"{d}[{k}] = {go}[{k}] * {el(1 - pos, ix[1 - pos])};")
                return (f"    for (int32_t k = 0; k < n * {size}; ++k) {d}[k] = 0.0f;\n"
                        + _loops(out_shape, geo,
                                 lambda k, ix: f"{d}[{ix[pos]}] += {go}[{k}] * {el(1 - pos, ix[1 - pos])};"))
            bwd.append(into(op, pos, call, f"n * {size}"))

    def gen(some: list, stop: str, rate_of) -> tuple[list[str], list[list[str]], list[str]]:
        """Forward lines, backward blocks and updates of ``some`` ops; no gradient flows into ``stop``."""
        fwd: list[str] = []
        blocks: list[list[str]] = []
        upd: list[str] = []
        for op in some:
            bwd: list[str] = []
            blocks.append(bwd)
            upd.append("")
            f0 = len(fwd)
            i, o = names.get(op.inputs[0], ""), names[op.outputs[0]]  # "": a constant first operand
            go = grads.get(op.outputs[0])  # None: no gradient reaches the op (below the earliest trained op)
            cnt = f"n * {_size(tail, op.outputs[0])}"
            cnt_in = f"n * {_size(tail, op.inputs[0])}"
            act = _ACT[op.attrs.get("activation", "none")] if op.kind != OpKind.RELU6 else 2
            act = 1 if op.kind == OpKind.RELU else act
            no_dx = go is None or op.inputs[0] == stop or op.inputs[0] not in grads
            if op.name in params:
                k = params[op.name]
                tw, tb = (int(v) for v in tail.trains(op.name))
                row = op.name in rows
                rix = tabs.ref(f"tcc_row{k}") if row else ""  # its channels' rows (sparse)
                wt = f"tcc_dw{k}" if tw else "NULL"  # a frozen weight is const: the update reads only the bias
                xin = i if tw else "NULL"
                bias = f"tcc_db{k}" if tb else "NULL"
                rate = rate_of(op)
                if act and go:
                    bwd.append(mask(go, go, op.outputs[0], cnt, act))
                q8 = op.name in qw
                if op.kind == OpKind.DENSE:
                    kind, geo = "dense", f"n, {_size(tail, op.inputs[0])}, {_size(tail, op.outputs[0])}"
                else:  # tcc_p_unused: no line reads it
                    kind, geo = "conv", f"&tcc_p{pidx[op.name]}" if op.name in pidx else "&tcc_p_unused"
                if not q8:
                    fwd.append(f"    tcc_fp_{kind}({geo}, {i}, tcc_dw{k}, tcc_db{k}, {o}, {act});\n")
                if not no_dx:
                    bwd.append(into(op, 0, lambda d, kind=kind, geo=geo: (
                        f"    tcc_bp_{kind}_dx_rows({geo}, tcc_wq{k}, tcc_ws{k}, tcc_dw{k}, {rix}, {go}, "
                        f"{d});\n" if row else
                        f"    tcc_bp_{kind}_dx_q({geo}, tcc_wq{k}, tcc_ws{k}, {go}, {d});\n" if q8 else
                        f"    tcc_bp_{kind}_dx({geo}, tcc_dw{k}, {go}, {d});\n"), cnt_in))
                upd[-1] = (f"tcc_bp_{kind}_update_rows({geo}, tcc_dw{k}, {rix}, {bias}, {i}, {go}, {rate}, W)"
                           if row else f"tcc_bp_{kind}_update({geo}, {wt}, {bias}, {xin}, {go}, {rate}, {tw}, W)")
                if go is None or not (tw or tb):
                    upd[-1] = ""
            elif op.kind in (OpKind.MUL, OpKind.SUB) or (op.kind == OpKind.ADD and any(
                    tuple(tail.graph.tensors[t].shape) != tuple(tail.graph.tensors[op.outputs[0]].shape)
                    or tail.graph.tensors[t].data is not None for t in op.inputs[:2])):
                binary(op, fwd, bwd, go, cnt, act, stop)
            elif op.kind in _UNARY:
                fn = _UNARY[op.kind]
                fwd.append(f"    tcc_fp_{fn}({i}, {o}, {cnt});\n")
                at = o if op.kind == OpKind.SIGMOID else i  # the value its derivative reads
                if not no_dx:
                    bwd.append(into(op, 0, lambda d, fn=fn, at=at: f"    tcc_bp_{fn}_dx({at}, {go}, {d}, {cnt});\n",
                                    cnt))
            elif op.kind == OpKind.ADD:
                j = names[op.inputs[1]]
                fwd.append(f"    for (int32_t k = 0; k < {cnt}; ++k) {o}[k] = {i}[k] + {j}[k];\n"
                           f"    tcc_fp_act({o}, {cnt}, {act});\n")
                if act and go:
                    bwd.append(mask(go, go, op.outputs[0], cnt, act))
                for pos, t in enumerate(op.inputs[:2]):
                    if go and t != stop and t in grads:
                        g = grads[t]
                        bwd.append(f"    tcc_{'copy' if (op.name, pos) in plan.fresh else 'acc'}({g}, {go}, {cnt});\n")
            elif op.kind in (OpKind.RELU, OpKind.RELU6):
                fwd.append(f"    for (int32_t k = 0; k < {cnt}; ++k) {o}[k] = {i}[k];\n"
                           f"    tcc_fp_act({o}, {cnt}, {act});\n")
                if not no_dx:
                    bwd.append(into(op, 0, lambda d: mask(d, go, op.outputs[0], cnt, act), cnt))
            elif op.kind in (OpKind.AVG_POOL2D, OpKind.GLOBAL_AVG_POOL, OpKind.MAX_POOL2D):
                p = f"&tcc_p{pidx[op.name]}" if op.name in pidx else "&tcc_p_unused"  # unused: no line reads it
                mx = op.kind == OpKind.MAX_POOL2D
                fwd.append(f"    tcc_fp_{'max' if mx else 'avg'}pool({p}, {i}, {o});\n")
                if not no_dx:
                    bwd.append(into(op, 0, lambda d: f"    tcc_bp_maxpool_dx({p}, {i}, {go}, {d});\n" if mx else
                                    f"    tcc_bp_avgpool_dx({p}, {go}, {d});\n", cnt_in))
            else:  # flatten, reshape, dropout, (de)quantize: the identity
                fwd.append(f"    for (int32_t k = 0; k < {cnt}; ++k) {o}[k] = {i}[k];\n")
                if not no_dx:
                    bwd.append(f"    tcc_{'copy' if (op.name, 0) in plan.fresh else 'acc'}({grads[op.inputs[0]]}, "
                               f"{go}, {cnt});\n")
            if op.outputs[0] in known:  # the int8 kernels' value, dequantized where a float reader needs it
                scale, zp = known[op.outputs[0]]
                fwd[f0:] = ([f"    tcc_dq({o}, known[{order.index(op.outputs[0])}], {cnt}, {_f(scale)}, {int(zp)});\n"]
                            if op.outputs[0] in floats else [])
        return fwd, blocks, upd

    fwd, blocks, upd = gen(ops, tail.cut, lambda op: _f(rates[op.name]) if op.name in rates else "lr")
    kargs, kcall = (", const int8_t *const *known", ", known") if order else ("", "")
    z = names[tail.logits]
    cut = _size(tail, tail.cut)
    out.insert(head, f"static void tcc_deep_forward(int32_t n{kargs}) {{\n" + sets + "".join(fwd) + "}\n\n"
               + f"int tcc_deep_logits({xarg.rstrip(', ') if not kargs else xarg + kargs[2:]}, int32_t n, float *z) {{\n"
               + f"    if (n < 1 || n > {batch} || {xnull}!z) return -1;\n"
               + ("    if (!known) return -1;\n"
                  f"    for (int32_t j = 0; j < {len(order)}; ++j) if (!known[j]) return -1;\n" if order else "")
               + (f"    for (int32_t k = 0; k < n * {cut}; ++k) if (!isfinite(x[k])) return -2;\n" if cut_input else "")
               + cut_copy
               + f"    tcc_deep_forward(n{kcall});\n"
               + f"    for (int32_t k = 0; k < n * {classes}; ++k) z[k] = {z}[k];\n    return 0;\n}}\n\n")
    out.append(f"    tcc_deep_forward(n{kcall});\n")
    gz = grads[tail.logits]
    start = (f"    for (int32_t r = 0; r < n; ++r) {{\n"
             f"        const float *zr = {z} + r * {classes};\n        float *d = {gz} + r * {classes};\n"
             f"        float m = zr[0], s = 0.0f;\n"
             f"        for (int32_t c = 1; c < {classes}; ++c) if (zr[c] > m) m = zr[c];\n"
             f"        for (int32_t c = 0; c < {classes}; ++c) s += (d[c] = expf(zr[c] - m));\n"
             f"        for (int32_t c = 0; c < {classes}; ++c) d[c] = (d[c] / s - (c == y[r] ? 1.0f : 0.0f)) / "
             f"(float)n;\n    }}\n")

    # The gradient slots are reused, so each update runs right after its op's backward (which used the old
    # weights). Two passes over the backward: the first only checks that every new value is finite (nothing is
    # written; a refused step changes nothing), the second recomputes the same gradients and applies them.
    def backward(blocks: list[list[str]], upd: list[str], write: int) -> str:
        return start + "".join("".join(b) + (f"    {'' if write else 'ok &= '}{u.replace(', W)', f', {write})')};\n"
                                            if u else "") for b, u in zip(reversed(blocks), reversed(upd)))
    out.append("    int ok = 1;\n    (void)lr; /* every rate may be compiled in */\n" + backward(blocks, upd, 0)
               + "    if (!ok) return 0;\n" + backward(blocks, upd, 1))
    for name, (scale, _) in biases.items():
        k = params[name]
        out.append(f"    tcc_bp_requantize_bias(tcc_db{k}, tcc_bs{k}, {tabs.ref(f'tcc_bq{k}')}, "
                   f"{np.asarray(scale).size});\n")
    for op in ops:
        if op.name in rows:
            k, n_out = params[op.name], tail.params[op.name].bias.size
            per = tail.params[op.name].weight.size // n_out
            out.append(f"    tcc_bp_requantize_rows(tcc_dw{k}, tcc_ws{k}, {tabs.ref(f'tcc_row{k}')}, {n_out}, {per}, "
                       f"tcc_w8{k});\n")
    out.append("    return 1;\n}\n")
    if head_from is not None:  # the ops after the features, on the values the caller wrote there
        later = ops[[op.outputs[0] for op in ops].index(head_from) + 1:]
        hf, hb, hu = gen(later, head_from, lambda op: "lr")
        hsets = "".join(f"    tcc_p{pidx[op.name]}.n = n;\n" for op in later if op.name in pidx)
        out.append("\nint tcc_head_step(const int32_t *y, int32_t n, float lr) {\n"
                   + f"    if (n < 1 || n > {batch} || !y) return -1;\n" + labels + "    int ok = 1;\n"
                   + hsets + "".join(hf) + backward(hb, hu, 0) + "    if (!ok) return 0;\n" + backward(hb, hu, 1)
                   + "    return 1;\n}\n")
    return out[0] + prologue(tabs.arrays) + "".join(out[1:])  # the pragma and byte order check for packed tables


def learner_step(learner: Any, batch: int) -> tuple[str, list[str]]:
    """(C source, known tensors in argument order) of the SGD step of a ``tinycc.ir.deep.DeepLearner``:
    ``tcc_deep_step`` for mode ``blocks``; mode ``bias``: ``tcc_deep_step_known`` taking the int8 activations of
    the region (the int8 kernels' values) and requantizing every region bias into ``tcc_bq<k>``."""
    if learner.mode == "blocks":
        return emit_step(learner.tail, batch, rates=learner.rates), []
    tensors = learner.view.tensors
    known = {}
    for op in learner.region.ops:
        q = tensors[op.outputs[0]].quant
        known[op.outputs[0]] = (float(q.scale[0]), int(q.zero_point[0]))
    biases = {}
    for op in learner.region_params:
        if not learner.tail.trains(op.name)[1]:  # sparse: a frozen bias stays the int8 kernels' own
            continue
        t = tensors[op.inputs[2]]
        scale = np.asarray(t.quant.scale, np.float64)
        if not np.array_equal(scale.astype(np.float32).astype(np.float64), scale):
            raise ValueError(f"{op.describe()}: a bias scale that is not a float32 value")
        biases[op.name] = (scale.astype(np.float32), np.asarray(t.data, np.int32))
    for op in learner.region_params:  # sparse: the trained channels requantize with their weight scales
        w = tensors[op.inputs[1]]
        scale = np.asarray(w.quant.scale, np.float64) if w.quant is not None else np.zeros(0)
        if learner.tail.trains(op.name)[0] and not np.array_equal(scale.astype(np.float32).astype(np.float64), scale):
            raise ValueError(f"{op.describe()}: a weight scale that is not a float32 value")
    return emit_step(learner.tail, batch, known, biases, rates=learner.rates), known_order(learner.tail, known)


def emit_learn(tail: Tail, batch: int, rates: dict[str, float] | None = None) -> str:
    """``emit_step(tail, batch)`` plus the learn path of a buffer of int8 cut tensors (compile with
    runtime/tinycc_learn.c): ``int32_t tcc_deep_learn(tcc_buffer_t *b, const int8_t *q, uint8_t label, float lr,
    int32_t epochs)`` pushes ``q`` (one int8 cut tensor, the buffer's quantization) and its label, then trains
    ``epochs`` epochs over the buffer in its training order, batches of ``batch`` consecutive entries
    dequantized straight into the step's cut values (``tcc_deep_step``), as ``DeepLearner.learn`` (mode
    ``blocks``). Returns the buffer count; -1 label out of range; -2 ``b`` or ``q`` NULL (nothing stored or
    trained); -4 a step was refused: the retraining stopped there and the sample was removed again
    (``tcc_buffer_unpush``), the steps before it stay applied. Adds ``tcc_y`` (``batch`` int32 labels)."""
    classes, cut = _size(tail, tail.logits), _size(tail, tail.cut)
    src = emit_step(tail, batch, rates=rates).replace('#include "tinycc_backprop.h"\n',
                                         '#include "tinycc_backprop.h"\n#include "tinycc_learn.h"\n', 1)
    return src + (
        f"\nstatic int32_t tcc_y[{batch}];\n\n"
        "int32_t tcc_deep_learn(tcc_buffer_t *b, const int8_t *q, uint8_t label, float lr, int32_t epochs) {\n"
        "    uint32_t before[4];\n    int32_t slot, n;\n"
        "    if (!b || !q) return -2;\n"
        f"    if (label >= {classes} || b->features != {cut} || b->targets != 0) return -1;\n"
        "    tcc_buffer_save(b, before);\n    slot = tcc_buffer_push(b, NULL, q, label, NULL);\n"
        "    n = tcc_buffer_count(b);\n"
        "    for (int32_t e = 0; e < epochs; ++e)\n"
        f"        for (int32_t s = 0; s < n; s += {batch}) {{\n"
        f"            const int32_t m = n - s < {batch} ? n - s : {batch};\n"
        "            for (int32_t r = 0; r < m; ++r)\n"
        f"                tcc_y[r] = tcc_buffer_entry(b, s + r, tcc_t0 + r * {cut}, NULL);\n"
        "            if (tcc_deep_step(tcc_t0, tcc_y, m, lr) != 1) {\n"
        "                tcc_buffer_unpush(b, slot, before); /* refused: nothing of this step was written */\n"
        "                return -4;\n            }\n        }\n"
        "    return n;\n}\n")
