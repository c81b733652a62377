"""Kernel calls of int16-activation ops (TFLite's 16x8) and of the int8 <-> int16 boundaries of mixed models.

The portable runtime kernels ``tcc_*_s16`` of ``runtime/tinycc_kernels.c`` run them, except the convolution,
depthwise and dense layers and the max pooling that ``kernels/conv16.py`` and ``kernels/pool16.py`` generate
(``--kernels tinycc``); arguments are computed here exactly as ``ir.interpreter_int8`` computes them, so
the C equals ``run_int8`` bit for bit.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import UnsupportedLayerError
from ...ir.fixedpoint import leaky_relu_params
from ...ir.graph import Graph, Op
from ...ir.interpreter import nearest_index
from ...ir.fixedpoint16 import exp_table, reciprocal_table, sigmoid_table
from ...ir.interpreter_int8 import add_params, conv_params, lut16_params, mean_params
from ...ir.ops import OpKind, same_padding, transpose_conv_padding
from ...ir.quant import activation_range, quantize_multiplier
from ...ir.tensor import DType
from .kernels import specialize

INT16_C_KINDS = frozenset({
    OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE, OpKind.MAX_POOL2D, OpKind.AVG_POOL2D,
    OpKind.GLOBAL_MAX_POOL, OpKind.GLOBAL_AVG_POOL, OpKind.ADD, OpKind.SUB, OpKind.MUL, OpKind.RELU, OpKind.RELU6,
    OpKind.LEAKY_RELU,
    OpKind.PAD, OpKind.CONCAT, OpKind.FLATTEN, OpKind.RESHAPE, OpKind.QUANTIZE, OpKind.DEQUANTIZE, OpKind.MAXIMUM,
    OpKind.MINIMUM, OpKind.SLICE, OpKind.TRANSPOSE, OpKind.RESIZE_NEAREST, OpKind.SOFTMAX, OpKind.SIGMOID,
    OpKind.TANH, OpKind.TRANSPOSE_CONV2D, OpKind.REVERSE,
})
LO, HI = -32768, 32767


def lut16_table_bytes(g: Graph) -> int:
    """Flash of the int16 LOGISTIC/TANH (256 uint16 sigmoid values) and SOFTMAX (two 513-entry int16) tables, one
    copy per layer."""
    sizes = {OpKind.SIGMOID: 512, OpKind.TANH: 512, OpKind.SOFTMAX: 2 * 513 * 2}
    return sum(sizes[o.kind] for o in g.ops if o.kind in sizes and g.tensors[o.inputs[0]].dtype == DType.INT16)


def is_int16_op(g: Graph, op: Op) -> bool:
    """An op this module emits: int16 input or output, or a DEQUANTIZE inside the graph (int8 -> float32 -> int16)."""
    dts = {g.tensors[t].dtype for t in [*op.inputs, *op.outputs]}
    return op.kind != OpKind.SVDF and DType.INT16 in dts or (op.kind == OpKind.DEQUANTIZE and op.outputs[0] not in g.outputs)


def _q(g: Graph, t: str) -> tuple[float, int]:
    q = g.tensors[t].quant
    return float(q.scale[0]), int(q.zero_point[0])


def _mult(si: float, so: float) -> tuple[int, int]:
    return quantize_multiplier(float(np.float32(si)) / float(np.float32(so)))


def emit_int16(b: Any, op: Op, out: str) -> None:
    """Append the kernel call(s) of int16 op ``op`` to builder ``b`` (``backends.c.emitter._Builder``)."""
    g, k, a = b.g, op.kind, op.attrs
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    if k not in INT16_C_KINDS:
        raise UnsupportedLayerError(f"layer {op.origin!r} ({k.value}) has no int16 C kernel; `tinycc ops` lists them")
    src = b.ptr(op.inputs[0])

    def call(fn: str, args: list[Any]) -> None:
        b.add_call(fn, [str(v) for v in args], op.name)

    if k == OpKind.QUANTIZE and x.dtype == DType.FLOAT32:
        s, zp = _q(g, op.outputs[0])
        if op.inputs[0] in g.inputs:
            b.input_quantize(op, s, zp, "tcc_quantize_f32_s16")
        else:
            call("tcc_quantize_f32_s16", [src, y.size, b.float_lit(s), zp, out])
    elif k == OpKind.QUANTIZE:
        (si, zi), (so, zo) = _q(g, op.inputs[0]), _q(g, op.outputs[0])
        m, e = _mult(si, so)
        if y.dtype == DType.INT8:
            call("tcc_requant_s16_s8", [src, x.size, zi, m, e, zo, out])
        elif x.dtype == DType.INT16:
            call("tcc_requant_s16", [src, x.size, zi, m, e, zo, LO, HI, out])
        else:
            raise UnsupportedLayerError(f"layer {op.origin!r}: int8 -> int16 QUANTIZE has no C kernel "
                                        "(tinycc writes DEQUANTIZE + QUANTIZE)")
    elif k == OpKind.DEQUANTIZE:
        s, zp = _q(g, op.inputs[0])
        fn = "tcc_dequantize_s16" if x.dtype == DType.INT16 else "tcc_dequantize_s8"
        call(fn, [src, x.size, b.float_lit(s), zp, out])
    elif k == OpKind.TRANSPOSE_CONV2D:
        _transpose_conv(b, g, op, src, out, call)
    elif k in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE):
        _conv(b, g, op, src, out, call)
    elif k in (OpKind.MAX_POOL2D, OpKind.AVG_POOL2D, OpKind.GLOBAL_MAX_POOL, OpKind.GLOBAL_AVG_POOL):
        spec = specialize(g, op, b, b.m.kernels, b.kernels_mode, False, b.dep.config.memory.widen)
        if spec is not None:  # kernels/pool16.py
            b.add_call(spec[0].fn, spec[1], op.name)
            return
        if a.get("requantize"):  # TFLite's MEAN: its own output parameters
            (si, zi), (so, zo) = _q(g, op.inputs[0]), _q(g, op.outputs[0])
            hw = x.shape[1] * x.shape[2]
            call("tcc_mean_s16", [src, hw, x.shape[3], zi, *mean_params(si, so, hw), zo, out])
            return
        s, zp = _q(g, op.outputs[0])
        lo, hi = activation_range(a.get("activation", "none"), s, zp, LO, HI)
        if k in (OpKind.GLOBAL_MAX_POOL, OpKind.GLOBAL_AVG_POOL):
            ph, pw, sh, sw, pt, pl, oh, ow = x.shape[1], x.shape[2], 1, 1, 0, 0, 1, 1
        else:
            (ph, pw), (sh, sw) = a["pool_size"], a["strides"]
            pt = same_padding(x.shape[1], ph, sh, 1)[0] if a["padding"] == "same" else 0
            pl = same_padding(x.shape[2], pw, sw, 1)[0] if a["padding"] == "same" else 0
            oh, ow = y.shape[1], y.shape[2]
        call("tcc_pool_s16", [src, *x.shape[1:4], ph, pw, sh, sw, pt, pl,
                              int(k in (OpKind.MAX_POOL2D, OpKind.GLOBAL_MAX_POOL)), lo, hi, out, oh, ow])
    elif k in (OpKind.ADD, OpKind.SUB, OpKind.MUL, OpKind.MAXIMUM, OpKind.MINIMUM):
        _binary(b, g, op, out, call)
    elif k == OpKind.SLICE:
        ax = a["axis"]
        inner = math.prod(x.shape[ax + 1:])
        call("tcc_slice_s16", [src, math.prod(x.shape[1:ax]), x.shape[ax] * inner, a["length"] * inner,
                               a["begin"] * inner, out])
    elif k == OpKind.REVERSE:
        from .emitter import reverse_args

        call("tcc_reverse_s16", [src, *reverse_args(x.shape, a["axis"]), out])
    elif k == OpKind.TRANSPOSE:
        from .emitter import transpose_args

        call("tcc_transpose_s16", [src, *transpose_args(x.shape, a["perm"]), out])
    elif k == OpKind.RESIZE_NEAREST:
        (oh, ow), ac, hp = a["size"], a["align_corners"], a["half_pixel_centers"]
        ys = b.array("rows", "int32_t", nearest_index(oh, x.shape[1], ac, hp))
        xs = b.array("cols", "int32_t", nearest_index(ow, x.shape[2], ac, hp))
        call("tcc_resize_nearest_s16", [src, x.shape[2], x.shape[3], ys, xs, oh, ow, out])
    elif k in (OpKind.SIGMOID, OpKind.TANH):
        m, e = lut16_params(g, op)
        if m == 0:  # power-of-two input scale: TFLite's multiplier 3 << shift, no shift
            m, e = 3 << e, 0
        call("tcc_sigmoid_tanh_s16", [src, x.size, m, e, int(k == OpKind.TANH),
                                      b.array("lut", "uint16_t", sigmoid_table()), out])
    elif k == OpKind.SOFTMAX:
        m, e = lut16_params(g, op)
        depth = x.shape[-1]
        call("tcc_softmax_s16", [src, x.size // depth, depth, m, e, b.array("ta", "int16_t", exp_table()),
                                 b.array("tb", "int16_t", reciprocal_table()), out])
    elif k in (OpKind.RELU, OpKind.RELU6):
        (si, zi), (so, zo) = _q(g, op.inputs[0]), _q(g, op.outputs[0])
        m, e = _mult(si, so)
        call("tcc_requant_s16", [src, x.size, zi, m, e, zo, *activation_range(k.value, so, zo, LO, HI), out])
    elif k == OpKind.LEAKY_RELU:
        (si, zi), (so, zo) = _q(g, op.inputs[0]), _q(g, op.outputs[0])
        call("tcc_leaky_relu_s16", [src, x.size, zi, zo, *leaky_relu_params(si, so, a["alpha"]), out])
    elif k == OpKind.PAD:
        (t, bt), (l, r) = a["paddings"]
        call("tcc_pad_s16", [src, *x.shape[1:4], t, bt, l, r, _q(g, op.outputs[0])[1], out])
    elif k == OpKind.CONCAT:
        ax = a["axis"]
        outer, out_inner, off = math.prod(y.shape[1:ax]), math.prod(y.shape[ax:]), 0
        for t in op.inputs:
            ti = g.tensors[t]
            inner = math.prod(ti.shape[ax:])
            call("tcc_concat_s16", [b.ptr(t), int(ti.is_const), outer, inner, out_inner, off, out])
            off += inner
    # FLATTEN/RESHAPE: aliases of their input in the memory plan, no code


def _transpose_conv(b: Any, g: Graph, op: Op, src: str, out: str, call: Any) -> None:
    """TFLite's 16x8 TransposeConv: int64 sums of int16 inputs and int8 weights, int64 bias, the wide multiplier."""
    p = conv_params(g, op)
    if p["in_zp"] or p["out_zp"]:
        raise UnsupportedLayerError(f"layer {op.origin!r}: int16 convolutions need zero points 0 (TFLite's 16x8)")
    x, y, a = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]], op.attrs
    kh, kw = g.tensors[op.inputs[1]].shape[1:3]
    (sh, sw), (oh, ow) = a["strides"], a["out_size"]
    bias = b.const(op.inputs[2]) if len(op.inputs) > 2 else "NULL"
    call("tcc_transpose_conv_s16", [src, *x.shape[1:4], b.const(op.inputs[1]), bias, y.shape[3], kh, kw, sh, sw,
                                    transpose_conv_padding(oh, kh, sh, a["padding"]),
                                    transpose_conv_padding(ow, kw, sw, a["padding"]),
                                    b.array("mult", "int32_t", p["mult"]), b.array("shift", "int32_t", p["shift"]),
                                    *p["act"], out, oh, ow])


def _conv(b: Any, g: Graph, op: Op, src: str, out: str, call: Any) -> None:
    p = conv_params(g, op)
    if p["in_zp"] or p["out_zp"]:
        raise UnsupportedLayerError(f"layer {op.origin!r}: int16 convolutions need zero points 0 (TFLite's 16x8)")
    spec = specialize(g, op, b, b.m.kernels, b.kernels_mode, False, b.dep.config.memory.widen)
    if spec is not None:  # kernels/conv16.py: the layer's generated function
        kern, args = spec
        b.add_call(kern.fn, args, op.name)
        return
    x, y, a = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]], op.attrs
    w = b.const(op.inputs[1])
    bias = b.const(op.inputs[2]) if len(op.inputs) > 2 else "NULL"
    mult, shift = b.array("mult", "int32_t", p["mult"]), b.array("shift", "int32_t", p["shift"])
    act = list(p["act"])
    if op.kind == OpKind.DENSE:
        per = int(g.tensors[op.inputs[1]].quant.per_axis)
        call("tcc_fc_s16", [src, math.prod(x.shape[1:-1]), x.shape[-1], w, bias, y.shape[-1], mult, shift, per,
                            *act, out])
        return
    kh, kw = g.tensors[op.inputs[1]].shape[1:3]
    (sh, sw), (dh, dw) = a["strides"], a["dilation"]
    pt = same_padding(x.shape[1], kh, sh, dh)[0] if a["padding"] == "same" else 0
    pl = same_padding(x.shape[2], kw, sw, dw)[0] if a["padding"] == "same" else 0
    if op.kind == OpKind.CONV2D:
        call("tcc_conv2d_s16", [src, *x.shape[1:4], w, bias, y.shape[3], kh, kw, a["groups"], sh, sw, dh, dw, pt, pl,
                                mult, shift, *act, out, y.shape[1], y.shape[2]])
    else:
        call("tcc_dwconv2d_s16", [src, *x.shape[1:4], w, bias, a["depth_multiplier"], kh, kw, sh, sw, dh, dw, pt,
                                  pl, mult, shift, *act, out, y.shape[1], y.shape[2]])


def _binary(b: Any, g: Graph, op: Op, out: str, call: Any) -> None:
    y = g.tensors[op.outputs[0]]
    o3 = (1,) * (3 - len(y.shape[1:])) + tuple(y.shape[1:])

    def strides(t: str) -> list[int]:
        ten = g.tensors[t]
        shp = ten.shape if ten.is_const else ten.shape[1:]
        s3 = (1,) * (3 - len(shp)) + tuple(shp)
        res, acc = [], 1
        for d in (2, 1, 0):
            res.append(0 if s3[d] == 1 and o3[d] != 1 else acc)
            acc *= s3[d]
        return list(reversed(res))

    opnd: list[Any] = []
    for t in op.inputs:
        opnd += [b.ptr(t), int(g.tensors[t].is_const), *strides(t)]
    opnd += list(o3)
    if op.kind in (OpKind.MAXIMUM, OpKind.MINIMUM):  # raw values (shared parameters)
        call("tcc_maxmin_s16", opnd + [int(op.kind == OpKind.MAXIMUM), out])
        return
    (s1, z1), (s2, z2), (so, zo) = _q(g, op.inputs[0]), _q(g, op.inputs[1]), _q(g, op.outputs[0])
    lo, hi = activation_range(op.attrs.get("activation", "none"), so, zo, LO, HI)
    if op.kind == OpKind.MUL:
        m, e = quantize_multiplier(float(np.float32(np.float32(np.float32(s1) * np.float32(s2)) / np.float32(so))))
        call("tcc_mul_s16", opnd + [z1, z2, m, e, zo, lo, hi, out])
        return
    p = add_params(s1, s2, so, 15)
    call("tcc_addsub_s16", opnd + [int(op.kind == OpKind.SUB), z1, z2, p["m1"], p["e1"], p["m2"], p["e2"], p["mo"],
                                   p["eo"], zo, lo, hi, out])
