"""Emit model: the backend-neutral description (arrays, kernel calls, sizes) that templates render."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import TinyccError, UnsupportedLayerError
from ...ir.deployment import Deployment
from ...ir.fixedpoint import hard_swish_params, leaky_relu_params, logistic_params, softmax_params
from ...ir.graph import Graph, Op
from ...ir.interpreter import nearest_index
from ...ir.interpreter_int8 import (add_params, conv_params, lut_table, mean_last_params, mean_params, prelu_op_params,
                                   sqdiff_op_params)
from ...ir.ops import LUT_KINDS, OpKind, same_padding, transpose_conv_padding
from ...ir.quant import activation_range, quantize_multiplier
from ...ir.resize_bilinear import int_positions
from ...ir.tensor import DType
from ...ir.train import layer_has_delta, layer_trains
from ...memory import MemoryPlan
from .. import names
from . import cmsis_nn
from .emit16 import emit_int16, is_int16_op
from .kernels.mve import helium
from .kernels import Kernel, rnn, specialize
from .kernels.common import PORTABLE_GUARD
from .layout import c_float
from .tables import CArray

C_KINDS = {OpKind.QUANTIZE, OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE, OpKind.MAX_POOL2D,
           OpKind.AVG_POOL2D, OpKind.GLOBAL_AVG_POOL, OpKind.GLOBAL_MAX_POOL, OpKind.ADD, OpKind.MUL, OpKind.CONCAT,
           OpKind.PAD, OpKind.RELU, OpKind.RELU6, OpKind.FLATTEN, OpKind.RESHAPE, OpKind.SIGMOID,
           OpKind.TANH, OpKind.LEAKY_RELU, OpKind.SOFTMAX, OpKind.HARD_SWISH, OpKind.SUB, OpKind.MAXIMUM,
           OpKind.MINIMUM, OpKind.RESIZE_NEAREST, OpKind.RESIZE_BILINEAR, OpKind.TRANSPOSE, OpKind.SLICE,
           OpKind.TRANSPOSE_CONV2D, OpKind.GRU, OpKind.SIMPLE_RNN, OpKind.LSTM, OpKind.PRELU, OpKind.SVDF,
           OpKind.REVERSE, OpKind.MEAN, OpKind.SQUARED_DIFFERENCE, *LUT_KINDS}
ACT_CODES = {"linear": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "softmax": 4, "relu6": 5, "leaky_relu": 6}
LOSS_CODES = {"ce": 0, "bce": 1, "mse": 2}
POLICY_CODES = {"fifo": 0, "reservoir": 1, "class_balanced": 2}
TRAIN_NAMES = ("TCC_TRAIN_NONE", "TCC_TRAIN_BIAS", "TCC_TRAIN_WEIGHTS", "TCC_TRAIN_BOTH")
# a flash table's role in its layer's name (ww: the weights widened for the Cortex-M4/M7 assembly; ta/tb: ADD's tables)
ROLES = {"lut": "table", "w": "weights", "ww": "widened", "ta": "table", "tb": "table"}


def c_kernel_problem(g: Graph, op: Op) -> str | None:
    """Why an op with a C kernel cannot run on it with these parameters, or None."""
    if op.kind == OpKind.HARD_SWISH and g.tensors[op.inputs[0]].dtype == DType.INT8:
        si, so = (float(g.tensors[t].quant.scale[0]) for t in (op.inputs[0], op.outputs[0]))
        if hard_swish_params(si, so)[1] > 0:
            return "int8 hard_swish with an output scale below 1/128 of the input scale"
    if op.kind == OpKind.PRELU and len(g.tensors[op.inputs[0]].shape) > 4:
        return "prelu on a tensor of rank above 4"
    if op.kind == OpKind.RESIZE_BILINEAR:
        x, (oh, ow) = g.tensors[op.inputs[0]], op.attrs["size"]
        if x.dtype != DType.INT8:
            return "bilinear resize of non-int8 activations"
        try:
            int_positions(oh, x.shape[1], op.attrs["align_corners"], op.attrs["half_pixel_centers"])
            int_positions(ow, x.shape[2], op.attrs["align_corners"], op.attrs["half_pixel_centers"])
        except ValueError as e:
            return str(e)
    return None


NAME_LIMIT = 64  # characters of a layer's name (from the model file) in a comment (wrapped under 100 columns)


@dataclass
class Call:
    """A kernel call of the schedule; ``comment`` (the op's name, from the model file) is stored escaped
    for a C comment (``names.comment``, cut to NAME_LIMIT characters), whoever builds the call; ``what`` is
    tinycc's own description of the layer (position, kind, shapes), put in front of the comment."""
    fn: str
    args: list[str]
    comment: str = ""
    skip_when_int8_input: bool = False
    what: str = ""

    def __post_init__(self) -> None:
        self.comment = names.comment(self.comment, NAME_LIMIT)


@dataclass
class EmitModel:
    name: str
    arrays: list[CArray] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    plan: MemoryPlan | None = None
    consts: dict[str, Any] = field(default_factory=dict)
    kernels: list[Kernel] = field(default_factory=list)  # per-layer functions defined in model.c


_c_float = c_float  # the name the backends import


class _Builder:
    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.g: Graph = dep.extractor
        self.m = EmitModel(dep.name)
        self.names: dict[str, str] = {}
        self.shared: dict[str, str] = {}  # tables of tinycc's own, one per model (the recurrent layers' sigmoid, tanh)
        self.taken: set[str] = set()
        self.uses: dict[str, int] = {}  # flash table -> the call arguments that name it
        self.portable_uses: dict[str, int] = {}  # of those, the ones only a kernel's portable path reads
        self.layer: tuple[int, str] = (0, "layer")  # the current op's position in the schedule and kind
        self.op_now: Op | None = None
        self.kernels_mode = dep.config.kernels
        self.m.plan = dep.plan  # computed once by the deploy stage
        self.cmsis = cmsis_nn.enabled(self.kernels_mode)
        self.m.consts["scratch"] = cmsis_nn.scratch_bytes(self.g, self.kernels_mode)
        scratch = ["tcc_scratch", str(self.m.consts["scratch"])] if self.m.consts["scratch"] else ["NULL", "0"]
        self.scratch_args = scratch
        # an inference-only model with several inputs/outputs: run_model gets an array of input pointers
        self.multi_io = bool(getattr(dep, "inference_only", False)) and (len(self.g.inputs) > 1 or
                                                                        len(self.g.outputs) > 1)

    def call(self, op: Op, fn: str, args: list[str], scratch: bool = True) -> None:
        """Append a runtime kernel call, or its CMSIS-NN wrapper (``tcc_X_s8`` -> ``tcc_cmsis_X_s8``)."""
        if self.cmsis and cmsis_nn.supports(self.g, op):
            fn, args = "tcc_cmsis_" + fn[4:], (self.scratch_args if scratch else []) + args
        self.m.calls.append(Call(fn, args, op.name))

    def array(self, base: str, ctype: str, values: np.ndarray, flash: bool = True, guard: str = "") -> str:
        """A flash table of the current layer, named by its position and kind (``tcc_conv2d_3_mult``): never
        by a name from the model file; ``guard``: defined only under that preprocessor condition."""
        pos, kind = self.layer
        name = stem = f"tcc_{kind}_{pos}_{ROLES.get(base, base)}"
        n = 2
        while name in self.taken:  # a second table of one role in a layer (none today): still unique
            name, n = f"{stem}_{n}", n + 1
        self.taken.add(name)
        self.m.arrays.append(CArray(name, ctype, np.asarray(values).reshape(-1), flash, guard=guard))
        ref = self.m.arrays[-1].ref  # what code names it by (a packed wide table: name.v)
        self.uses[ref] = 1
        return ref

    def portable(self, name: str) -> str:
        """The argument for a table that only the kernel's portable path reads (``kernels.common.portable_args``):
        NULL where the assembly loops are built; a table no other argument names is defined only where they are
        not (`guard_portable`)."""
        self.portable_uses[name] = self.portable_uses.get(name, 0) + 1
        return f"TCC_PORTABLE({name})"

    def guard_portable(self) -> None:
        """Put every flash table that only portable paths read under PORTABLE_GUARD (one copy per core)."""
        for a in self.m.arrays:
            n = self.portable_uses.get(a.ref, 0)
            if n and n == self.uses.get(a.ref) and not a.guard:
                a.guard = PORTABLE_GUARD

    def const(self, tensor: str) -> str:
        """The flash table of a constant tensor (one per tensor), named after the first layer that reads it and
        its role there (``weights``, ``bias``, ``input1``, ...)."""
        if tensor not in self.names:
            t = self.g.tensors[tensor]
            ctype = {"int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t",
                     "float32": "float"}[t.dtype.value]
            self.names[tensor] = self.array(self.role(tensor), ctype, t.data)
        else:
            self.uses[self.names[tensor]] = self.uses.get(self.names[tensor], 0) + 1
        return self.names[tensor]

    def role(self, tensor: str) -> str:
        """What a constant input is to the current op: its weights, bias, or input N."""
        i = self.op_now.inputs.index(tensor) if tensor in self.op_now.inputs else 0
        if self.op_now.kind in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE) and i in (1, 2):
            return ("weights", "bias")[i - 1]
        if self.op_now.kind == OpKind.PRELU and i == 1:
            return "alpha"
        return f"input{i}"

    def ptr(self, tensor: str) -> str:
        t = self.g.tensors[tensor]
        if t.is_const:
            return self.const(tensor)
        if tensor in self.g.inputs and t.dtype.value == "float32":
            return f"x[{self.g.inputs.index(tensor)}]" if self.multi_io else "x"
        off = self.m.plan.offsets[tensor]
        p = f"(tcc_arena + {off})" if off else "tcc_arena"
        cast = {"int16": "int16_t", "float32": "float"}.get(t.dtype.value)  # 16-aligned arena buffers
        return f"(({cast} *)(void *){p})" if cast else p

    def add_call(self, fn: str, args: list[str], name: str) -> None:
        """Append a runtime kernel call (int16 ops, ``emit16``)."""
        self.m.calls.append(Call(fn, args, name))

    @staticmethod
    def float_lit(v: float) -> str:
        return _c_float(v)

    def input_quantize(self, op: Op, s: float, zp: int, fn: str) -> None:
        """The QUANTIZE of the float model input (skipped when the caller passes quantized input)."""
        out = self.ptr(op.outputs[0])
        self.m.consts["input_scale"], self.m.consts["input_zp"] = s, zp
        self.m.consts.setdefault("quantized_inputs", {})[op.inputs[0]] = (out, s, zp)
        self.m.calls.append(Call(fn, [self.ptr(op.inputs[0]), str(self.g.tensors[op.outputs[0]].size), _c_float(s),
                                      str(zp), out], op.name, skip_when_int8_input=True))

    def build(self) -> EmitModel:
        for pos, op in enumerate(self.g.ops):
            self.layer, self.op_now = (pos, op.kind.value), op
            if op.kind not in C_KINDS and not is_int16_op(self.g, op):
                raise UnsupportedLayerError(f"layer {op.origin!r} ({op.kind.value}) has no C kernel; "
                                            "`tinycc ops` lists them")
            why = c_kernel_problem(self.g, op)
            if why is not None:
                raise UnsupportedLayerError(f"layer {op.origin!r}: {why} has no C kernel")
            n = len(self.m.calls)
            self.op(op)
            desc = f"layer {pos}, {op.kind.value} {self.shapes(op)}"
            for c in self.m.calls[n:]:
                c.what = desc + (f" ({c.what})" if c.what else "")
                for k in self.m.kernels:
                    if k.fn == c.fn:
                        k.uses.append(names.Escaped(f"{desc}: {c.comment}"))
            if op.outputs[0] in self.m.plan.inplace:  # the kernel reads element i before it writes element i
                for c in self.m.calls[n:]:
                    c.what += ", in place"
            shared = self.m.plan.overlaps.get(op.outputs[0])
            if shared:  # backends/c/overlap.py: the kernel has read every byte it writes over
                if self.cmsis:
                    raise TinyccError("internal: a memory plan with overlapping buffers for the CMSIS-NN kernels")
                for c in self.m.calls[n:]:
                    c.what += f", over {shared} bytes of its input"
        self.guard_portable()
        return self.m

    def shapes(self, op: Op) -> str:
        """``8x8x1 -> 8x8x8``: the op's activation inputs and its output at batch 1 (tinycc's own text)."""
        def dims(t: str) -> str:
            return "x".join(str(d) for d in self.g.tensors[t].shape[1:]) or "1"
        ins = [t for t in op.inputs if not self.g.tensors[t].is_const]
        return f"{', '.join(dims(t) for t in ins)} -> {dims(op.outputs[0])}"

    def _q(self, tensor: str) -> tuple[float, int]:
        q = self.g.tensors[tensor].quant
        return float(q.scale[0]), int(q.zero_point[0])

    def op(self, op: Op) -> None:
        g, k, a = self.g, op.kind, op.attrs
        x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        out = self.ptr(op.outputs[0])
        if k in rnn.KINDS:  # tinycc's integer GRU/SimpleRNN: always a generated function
            kern, args = rnn.kernel_call(g, op, self, self.m.kernels)
            self.m.calls.append(Call(kern.fn, args, op.name, what="recurrent kernel"))
            return
        if is_int16_op(g, op):
            emit_int16(self, op, out)
            return
        spec = specialize(g, op, self, self.m.kernels, self.kernels_mode, helium(self.dep.config),
                          self.dep.config.memory.widen)
        if spec is not None:
            kern, args = spec
            self.m.calls.append(Call(kern.fn, args, op.name, what=f"{kern.family} kernel"))
            return
        if k == OpKind.QUANTIZE and x.dtype == DType.INT8:  # int8 -> int8 requantization (TFLite Requantize)
            self._requantize(op, out, -128, 127)
        elif k == OpKind.QUANTIZE:
            s, zp = self._q(op.outputs[0])
            self.m.consts["input_scale"], self.m.consts["input_zp"] = s, zp
            self.m.consts.setdefault("quantized_inputs", {})[op.inputs[0]] = (out, s, zp)
            self.m.calls.append(Call("tcc_quantize_f32", [self.ptr(op.inputs[0]), str(y.size), _c_float(s), str(zp), out],
                                     op.name, skip_when_int8_input=True))
        elif k in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE):
            p = conv_params(g, op)
            w = self.const(op.inputs[1])
            b = self.const(op.inputs[2]) if len(op.inputs) > 2 else "NULL"
            mult = self.array("mult", "int32_t", p["mult"])
            shift = self.array("shift", "int32_t", p["shift"])
            q = [str(p["in_zp"]), str(p["out_zp"]), str(p["act"][0]), str(p["act"][1])]
            if k == OpKind.DENSE:
                rows = math.prod(x.shape[1:-1])
                per = "1" if g.tensors[op.inputs[1]].quant.per_axis else "0"
                self.call(op, "tcc_fc_s8", [self.ptr(op.inputs[0]), str(rows), str(x.shape[-1]), w, b,
                                            str(y.shape[-1]), mult, shift, per] + q + [out], scratch=False)
                return
            kh, kw = g.tensors[op.inputs[1]].shape[1:3]
            (sh, sw), (dh, dw) = a["strides"], a["dilation"]
            pt = same_padding(x.shape[1], kh, sh, dh)[0] if a["padding"] == "same" else 0
            pl = same_padding(x.shape[2], kw, sw, dw)[0] if a["padding"] == "same" else 0
            geo = [str(v) for v in (sh, sw, dh, dw, pt, pl)]
            if k == OpKind.CONV2D:
                args = [self.ptr(op.inputs[0]), *map(str, x.shape[1:4]), w, b, str(y.shape[3]), str(kh), str(kw),
                        str(a["groups"]), *geo, mult, shift, *q, out, str(y.shape[1]), str(y.shape[2])]
                self.call(op, "tcc_conv2d_s8", args)
            else:
                args = [self.ptr(op.inputs[0]), *map(str, x.shape[1:4]), w, b, str(a["depth_multiplier"]), str(kh),
                        str(kw), *geo, mult, shift, *q, out, str(y.shape[1]), str(y.shape[2])]
                self.call(op, "tcc_dwconv2d_s8", args)
        elif k == OpKind.TRANSPOSE_CONV2D:
            p = conv_params(g, op)
            kh, kw = g.tensors[op.inputs[1]].shape[1:3]
            (sh, sw), (oh, ow) = a["strides"], a["out_size"]
            geo = [sh, sw, transpose_conv_padding(oh, kh, sh, a["padding"]),
                   transpose_conv_padding(ow, kw, sw, a["padding"])]
            args = [self.ptr(op.inputs[0]), *map(str, x.shape[1:4]), self.const(op.inputs[1]),
                    self.const(op.inputs[2]) if len(op.inputs) > 2 else "NULL", str(y.shape[3]), str(kh), str(kw),
                    *map(str, geo), self.array("mult", "int32_t", p["mult"]),
                    self.array("shift", "int32_t", p["shift"]),
                    *map(str, (p["in_zp"], p["out_zp"], *p["act"])), out, str(oh), str(ow)]
            self.m.calls.append(Call("tcc_transpose_conv_s8", args, op.name))
        elif k == OpKind.GLOBAL_AVG_POOL and a.get("requantize"):  # TFLite's MEAN: its own output parameters
            (si, zi), (so, zo) = self._q(op.inputs[0]), self._q(op.outputs[0])
            hw = x.shape[1] * x.shape[2]
            m, e = mean_params(si, so, hw)
            args = [self.ptr(op.inputs[0]), str(hw), str(x.shape[3]), str(zi), str(m), str(e), str(zo), out]
            self.m.calls.append(Call("tcc_mean_s8", args, op.name))
        elif k in (OpKind.MAX_POOL2D, OpKind.AVG_POOL2D, OpKind.GLOBAL_AVG_POOL, OpKind.GLOBAL_MAX_POOL):
            s, zp = self._q(op.outputs[0])
            lo, hi = activation_range(a.get("activation", "none"), s, zp)
            is_max = "1" if k in (OpKind.MAX_POOL2D, OpKind.GLOBAL_MAX_POOL) else "0"
            if k in (OpKind.GLOBAL_AVG_POOL, OpKind.GLOBAL_MAX_POOL):
                ph, pw, sh, sw, pt, pl, oh, ow = x.shape[1], x.shape[2], 1, 1, 0, 0, 1, 1
            else:
                (ph, pw), (sh, sw) = a["pool_size"], a["strides"]
                pt = same_padding(x.shape[1], ph, sh, 1)[0] if a["padding"] == "same" else 0
                pl = same_padding(x.shape[2], pw, sw, 1)[0] if a["padding"] == "same" else 0
                oh, ow = y.shape[1], y.shape[2]
            args = [self.ptr(op.inputs[0]), *map(str, x.shape[1:4]), *map(str, (ph, pw, sh, sw, pt, pl)), is_max,
                    str(lo), str(hi), out, str(oh), str(ow)]
            self.call(op, "tcc_pool_s8", args)
        elif k in (OpKind.ADD, OpKind.MUL, OpKind.SUB, OpKind.MAXIMUM, OpKind.MINIMUM, OpKind.SQUARED_DIFFERENCE):
            self._binary(op, out)
        elif k == OpKind.MEAN:  # over the last axis (a layer normalization's mean and variance)
            p = mean_last_params(g, op)
            args = [self.ptr(op.inputs[0]), str(x.size // x.shape[-1]), str(x.shape[-1]),
                    *map(str, (p["in_zp"], p["mult"], p["shift"], p["out_zp"])), out]
            self.m.calls.append(Call("tcc_mean_last_s8", args, op.name))
        elif k == OpKind.SLICE:
            ax = a["axis"]
            inner = math.prod(x.shape[ax + 1:])
            args = [str(v) for v in (math.prod(x.shape[1:ax]), x.shape[ax] * inner, a["length"] * inner,
                                     a["begin"] * inner)]
            self.m.calls.append(Call("tcc_slice_s8", [self.ptr(op.inputs[0]), *args, out], op.name))
        elif k == OpKind.REVERSE:
            self.m.calls.append(Call("tcc_reverse_s8", [self.ptr(op.inputs[0]), *reverse_args(x.shape, a["axis"]),
                                                        out], op.name))
        elif k == OpKind.TRANSPOSE:
            self.m.calls.append(Call("tcc_transpose_s8", [self.ptr(op.inputs[0]), *transpose_args(x.shape, a["perm"]),
                                                          out], op.name))
        elif k == OpKind.RESIZE_NEAREST:
            (oh, ow), ac, hp = a["size"], a["align_corners"], a["half_pixel_centers"]
            ys = self.array("rows", "int32_t", nearest_index(oh, x.shape[1], ac, hp))
            xs = self.array("cols", "int32_t", nearest_index(ow, x.shape[2], ac, hp))
            self.m.calls.append(Call("tcc_resize_nearest_s8", [self.ptr(op.inputs[0]), str(x.shape[2]),
                                                               str(x.shape[3]), ys, xs, str(oh), str(ow), out],
                                     op.name))
        elif k == OpKind.RESIZE_BILINEAR:
            (oh, ow), ac, hp = a["size"], a["align_corners"], a["half_pixel_centers"]
            ry = self.array("rows", "int32_t", np.stack(int_positions(oh, x.shape[1], ac, hp), axis=1))
            rx = self.array("cols", "int32_t", np.stack(int_positions(ow, x.shape[2], ac, hp), axis=1))
            self.m.calls.append(Call("tcc_resize_bilinear_s8", [self.ptr(op.inputs[0]), str(x.shape[2]),
                                                                str(x.shape[3]), ry, rx, str(oh), str(ow), out],
                                     op.name))
        elif k == OpKind.CONCAT:
            ax = a["axis"]
            outer = math.prod(y.shape[1:ax])
            out_inner = math.prod(y.shape[ax:])
            off = 0
            for t in op.inputs:
                ti = g.tensors[t]
                inner = math.prod(ti.shape[ax:])
                self.m.calls.append(Call("tcc_concat_s8", [self.ptr(t), "1" if ti.is_const else "0", str(outer),
                                                           str(inner), str(out_inner), str(off), out], op.name))
                off += inner
        elif k == OpKind.PAD:
            (t, b), (l, r) = a["paddings"]
            _, zp = self._q(op.outputs[0])
            self.m.calls.append(Call("tcc_pad_s8", [self.ptr(op.inputs[0]), *map(str, x.shape[1:4]),
                                                    *map(str, (t, b, l, r)), str(zp), out], op.name))
        elif k in (OpKind.RELU, OpKind.RELU6):
            self._requantize(op, out, *activation_range(k.value, *self._q(op.outputs[0])))
        elif k == OpKind.SOFTMAX:
            m, e, diff_min = softmax_params(self._q(op.inputs[0])[0], a["beta"])
            depth = x.shape[-1]
            args = [self.ptr(op.inputs[0]), str(x.size // depth), str(depth), str(m), str(e), str(diff_min), out]
            self.m.calls.append(Call("tcc_softmax_s8", args, op.name))
        elif k == OpKind.HARD_SWISH:
            (si, zi), (so, zo) = self._q(op.inputs[0]), self._q(op.outputs[0])
            p = hard_swish_params(si, so)
            self.m.calls.append(Call("tcc_hard_swish_s8", [self.ptr(op.inputs[0]), str(x.size), str(zi), str(zo),
                                                           *map(str, p), out], op.name))
        elif k in (OpKind.SIGMOID, OpKind.TANH):
            si, zi = self._q(op.inputs[0])
            m, e, radius = logistic_params(si)
            fn = "tcc_logistic_s8" if k == OpKind.SIGMOID else "tcc_tanh_s8"
            self.m.calls.append(Call(fn, [self.ptr(op.inputs[0]), str(x.size), str(zi), str(m), str(e),
                                          str(radius), out], op.name))
        elif k == OpKind.LEAKY_RELU:
            si, zi = self._q(op.inputs[0])
            so, zo = self._q(op.outputs[0])
            p = leaky_relu_params(si, so, a["alpha"])
            self.m.calls.append(Call("tcc_leaky_relu_s8", [self.ptr(op.inputs[0]), str(x.size), str(zi), str(zo),
                                                           *map(str, p), out], op.name))
        elif k in LUT_KINDS:  # TFLite's table, computed here (TFLite Micro computes it in Prepare)
            table = self.array("lut", "int8_t", lut_table(self.g, op))
            self.m.calls.append(Call("tcc_lut_s8", [self.ptr(op.inputs[0]), str(x.size), table, out], op.name))
        elif k == OpKind.PRELU:
            p = prelu_op_params(self.g, op)
            dims = prelu_dims(x.shape, self.g.tensors[op.inputs[1]].shape)
            args = [self.ptr(op.inputs[0]), self.ptr(op.inputs[1]), *dims]
            self.m.calls.append(Call("tcc_prelu_s8", args + [str(v) for v in (p["in_zp"], p["alpha_zp"], p["out_zp"],
                                                                              *p["mult"])] + [out], op.name))
        # FLATTEN/RESHAPE: aliases of their input in the memory plan, no code

    def _requantize(self, op: Op, out: str, lo: int, hi: int) -> None:
        """RELU/RELU6 and int8 -> int8 QUANTIZE: (x - zi) * si / so + zo, clamped to [lo, hi]."""
        (si, zi), (so, zo) = self._q(op.inputs[0]), self._q(op.outputs[0])
        m, e = quantize_multiplier(float(np.float32(si)) / float(np.float32(so)))
        self.m.calls.append(Call("tcc_relu_s8", [self.ptr(op.inputs[0]), str(self.g.tensors[op.inputs[0]].size),
                                                 str(zi), str(m), str(e), str(zo), str(lo), str(hi), out], op.name))

    def _binary(self, op: Op, out: str) -> None:
        g = self.g
        y = g.tensors[op.outputs[0]]
        oshape = (y.shape[1:] if len(y.shape) > 1 else ())
        o3 = (1,) * (3 - len(oshape)) + tuple(oshape)

        def strides(t: str) -> list[str]:
            ten = g.tensors[t]
            shp = tuple(ten.shape if ten.is_const else ten.shape[1:])
            shp = shp[len(shp) - 3:] if len(shp) > 3 and math.prod(shp[:len(shp) - 3]) == 1 else shp  # [1, 1, 1, C]
            s3 = (1,) * (3 - len(shp)) + shp
            res, acc = [], 1
            for d in (2, 1, 0):
                res.append(0 if s3[d] == 1 and o3[d] != 1 else acc)
                acc *= s3[d]
            return [str(v) for v in reversed(res)]

        (s1, z1), (s2, z2) = (self._q(t) for t in op.inputs)
        so, zo = self._q(op.outputs[0])
        lo, hi = activation_range(op.attrs.get("activation", "none"), so, zo)
        if self.cmsis and cmsis_nn.supports(g, op):  # same-shape operands, no strides
            opnd = [self.ptr(op.inputs[0]), self.ptr(op.inputs[1]), str(y.size)]
        else:
            opnd = []
            for t in op.inputs:
                opnd += [self.ptr(t), "1" if g.tensors[t].is_const else "0", *strides(t)]
            opnd += [str(v) for v in o3]
        if op.kind == OpKind.SQUARED_DIFFERENCE:
            p = sqdiff_op_params(g, op)
            q = [str(p[v]) for v in ("z1", "z2", "m1", "e1", "m2", "e2", "mo", "eo", "zo")]
            self.m.calls.append(Call("tcc_sqdiff_s8", opnd + q + [out], op.name))
        elif op.kind in (OpKind.MAXIMUM, OpKind.MINIMUM):
            self.m.calls.append(Call("tcc_maxmin_s8", opnd + ["1" if op.kind == OpKind.MAXIMUM else "0", out],
                                     op.name))
        elif op.kind in (OpKind.ADD, OpKind.SUB):
            p = add_params(s1, s2, so)
            q = [str(v) for v in (z1, z2, p["m1"], p["e1"], p["m2"], p["e2"], p["mo"], p["eo"], zo, lo, hi)]
            self.call(op, "tcc_add_s8" if op.kind == OpKind.ADD else "tcc_sub_s8", opnd + q + [out], scratch=False)
        else:
            real = np.float32(np.float32(s1) * np.float32(s2)) / np.float32(so)
            m, e = quantize_multiplier(float(np.float32(real)))
            q = [str(v) for v in (z1, z2, m, e, zo, lo, hi)]
            self.call(op, "tcc_mul_s8", opnd + q + [out], scratch=False)


def prelu_dims(shape: tuple[int, ...], alpha: tuple[int, ...]) -> list[str]:
    """The input's sizes without the batch axis as three (rank <= 4, ``c_kernel_problem``) and alpha's strides
    (0 on a shared axis)."""
    dims = list(shape[1:])
    al = [1] * (len(dims) - len(alpha)) + list(alpha)
    dims = [1] * (3 - len(dims)) + dims
    al = [1] * (3 - len(al)) + al
    strides, acc = [0, 0, 0], 1
    for d in (2, 1, 0):
        strides[d] = 0 if al[d] == 1 and dims[d] != 1 else acc
        acc *= al[d]
    return [str(v) for v in dims + strides]


def transpose_args(shape: tuple[int, ...], perm: tuple[int, ...]) -> list[str]:
    """Output sizes and input strides (elements) of the three innermost axes of a batch-1 transpose."""
    dims = list(shape[1:])
    if len(dims) > 3:
        raise UnsupportedLayerError(f"transpose of a rank-{len(shape)} tensor has no C kernel (rank 4 at most)")
    strides = [math.prod(dims[i + 1:]) for i in range(len(dims))]
    p = [q - 1 for q in perm[1:]]
    out = [dims[i] for i in p]
    st = [strides[i] for i in p]
    pad = 3 - len(dims)
    return [str(v) for v in [1] * pad + out] + [str(v) for v in [0] * pad + st]


def reverse_args(shape: tuple[int, ...], axis: int) -> list[str]:
    """Blocks before the axis, its length and the elements after it, of a batch-1 reverse."""
    return [str(v) for v in (math.prod(shape[1:axis]), shape[axis], math.prod(shape[axis + 1:]))]


def build_emit_model(dep: Deployment) -> EmitModel:
    b = _Builder(dep)
    m = b.build()
    feat = dep.extractor.outputs[0]
    fq = dep.feature_quant
    m.consts.update({
        "features_ptr": b.ptr(feat), "feature_scale": _c_float(float(fq.scale[0])),
        "feature_zp": int(fq.zero_point[0]), "n_features": dep.feature_count, "n_classes": dep.num_classes,
        "input_size": dep.extractor.tensors[dep.extractor.inputs[0]].size,
        "arena": max(m.plan.arena, 16), "lower_bound": m.plan.lower_bound, "greedy": m.plan.greedy,
        "inplace": len(m.plan.inplace), "overlap_bound": m.plan.overlap_bound, "overlaps": len(m.plan.overlaps),
        "output_ptrs": [b.ptr(t) for t in dep.extractor.outputs],
    })
    for i, l in enumerate(dep.classifier):
        m.arrays.append(CArray(f"tcc_classifier_{i}_weights_init", "float", l.weight.reshape(-1), True,
                               "classifier"))
        m.arrays.append(CArray(f"tcc_classifier_{i}_bias_init", "float", l.bias.reshape(-1), True,
                               "classifier"))
    n, mode = len(dep.classifier), dep.train.mode
    m.consts["layers"] = [{"i": i, "n_in": l.n_in, "n_out": l.n_out, "act": ACT_CODES[l.activation],
                           "alpha": _c_float(l.alpha),
                           "train": 2 * layer_trains(i, n, mode)[0] + layer_trains(i, n, mode)[1],  # TCC_TRAIN_*
                           "delta": layer_has_delta(i, n, mode)} for i, l in enumerate(dep.classifier)]
    for l in m.consts["layers"]:  # the runtime's names of the codes (tinycc_learn.h)
        l["act_c"] = "TCC_ACT_" + dep.classifier[l["i"]].activation.upper()
        l["train_c"] = TRAIN_NAMES[l["train"]]
    m.consts["policy"] = POLICY_CODES[dep.buffer.policy]
    m.consts["policy_c"] = "TCC_POLICY_" + dep.buffer.policy.upper()
    m.consts["loss_c"] = "TCC_LOSS_" + dep.loss.upper()
    tq = dep.target_quant
    m.consts.update({
        "loss": LOSS_CODES[dep.loss], "n_outputs": dep.num_outputs, "targets": dep.target_count,
        "regression": dep.loss == "mse", "target_is_input": dep.target == "input",
        "target_int8": tq is not None, "target_scale": _c_float(float(tq.scale[0])) if tq is not None else "0.0f",
        "target_zp": int(tq.zero_point[0]) if tq is not None else 0,
    })
    return m
