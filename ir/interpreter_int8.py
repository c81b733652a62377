"""int8 (and int16, TFLite's 16x8) reference interpreter: numpy kernels bit-exact with TFLite's reference kernels.

int16 activations (symmetric, zero point 0) with int8 weights and int64 (or int32) biases run the ops of
``INT16_KINDS``: convolutions and FULLY_CONNECTED accumulate in int64 and requantize with TFLite's 16x8
multiplier (:func:`quant.multiply_by_quantized_multiplier_wide`); ADD/SUB scale their operands with a left
shift of 15 instead of 20; the others are the int8 arithmetic clamped to the int16 range.

Runs a quantized graph (see docs/architecture.md, "Quantized IR"). Float ops after a
DEQUANTIZE (the classifier of a combined graph) run on the float kernels.
Requantization parameters are derived from tensor scales exactly as TFLite's Prepare does.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import interpreter as fl
from . import lut, recurrent
from .fixedpoint import (hard_swish_params, hard_swish_s8, leaky_relu_params, leaky_relu_s8, logistic_s8, prelu_params,
                         prelu_s8, softmax_s8, tanh_s8)
from .fixedpoint16 import logistic_s16, sigmoid_tanh_params, softmax_s16, softmax_s16_params, tanh_s16
from .graph import Graph, IRError, Op
from .lstm import gate_scales, lstm_int8, lstm_params
from .lstm_tflite import lstm_int8_tflite, lstm_params_tflite
from .layernorm import mean_last_s8, sqdiff_params, squared_difference_s8
from .resize_bilinear import resize_bilinear_s8
from .svdf import svdf_int8, svdf_params
from .ops import LUT_KINDS, OpKind, same_padding
from .quant import (activation_range, conv_requant, dequantize, fc_requant, multiply_by_quantized_multiplier,
                    multiply_by_quantized_multiplier_int64, multiply_by_quantized_multiplier_wide, qrange, quantize,
                    quantize_multiplier,
                    rounding_divide_by_pot, saturating_rounding_doubling_high_mul)
from .tensor import DType, QuantParams

Array = np.ndarray

# ops whose int8 kernels exist here (and in the C runtime); anything else has no int8 kernel
INT8_KINDS = frozenset({
    OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE, OpKind.RELU, OpKind.RELU6, OpKind.MAX_POOL2D,
    OpKind.AVG_POOL2D, OpKind.GLOBAL_AVG_POOL, OpKind.GLOBAL_MAX_POOL, OpKind.FLATTEN, OpKind.RESHAPE,
    OpKind.ADD, OpKind.MUL, OpKind.CONCAT, OpKind.PAD, OpKind.QUANTIZE, OpKind.DEQUANTIZE, OpKind.SIGMOID, OpKind.TANH,
    OpKind.LEAKY_RELU, OpKind.SOFTMAX, OpKind.HARD_SWISH, OpKind.SUB, OpKind.MAXIMUM, OpKind.MINIMUM,
    OpKind.RESIZE_NEAREST, OpKind.RESIZE_BILINEAR, OpKind.TRANSPOSE, OpKind.SLICE, OpKind.TRANSPOSE_CONV2D,
    OpKind.GRU, OpKind.SIMPLE_RNN,
    OpKind.LSTM, OpKind.SVDF, OpKind.PRELU, OpKind.REVERSE, OpKind.MEAN, OpKind.SQUARED_DIFFERENCE, *LUT_KINDS,
})
# ops with an int16-activation (16x8) kernel here, bit-exact with TFLite's reference kernels (global average
# pooling as AVERAGE_POOL_2D or as the requantizing MEAN, whose int16 form is the int8 arithmetic)
INT16_KINDS = frozenset({
    OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE, OpKind.RELU, OpKind.RELU6, OpKind.MAX_POOL2D,
    OpKind.AVG_POOL2D, OpKind.GLOBAL_MAX_POOL, OpKind.GLOBAL_AVG_POOL, OpKind.FLATTEN, OpKind.RESHAPE, OpKind.ADD,
    OpKind.SUB, OpKind.MUL, OpKind.CONCAT, OpKind.PAD, OpKind.QUANTIZE, OpKind.DEQUANTIZE, OpKind.LEAKY_RELU,
    OpKind.MAXIMUM, OpKind.MINIMUM, OpKind.TRANSPOSE, OpKind.SLICE, OpKind.RESIZE_NEAREST, OpKind.TRANSPOSE_CONV2D,
    OpKind.SOFTMAX, OpKind.SIGMOID, OpKind.TANH, OpKind.REVERSE,
})
# ops whose int8 output parameters are fixed by TFLite: (scale, zero point)
FIXED_OUTPUT = {OpKind.SIGMOID: (1.0 / 256.0, -128), OpKind.TANH: (1.0 / 128.0, 0),
                OpKind.SOFTMAX: (1.0 / 256.0, -128)}
# the same for int16 (16x8): Q0.15, zero point 0
FIXED_OUTPUT16 = {OpKind.SIGMOID: (1.0 / 32768.0, 0), OpKind.TANH: (1.0 / 32768.0, 0),
                  OpKind.SOFTMAX: (1.0 / 32768.0, 0)}
# ops whose int8 output must carry the input's quantization parameters (TFLite rules)
SAME_PARAMS = frozenset({OpKind.MAX_POOL2D, OpKind.AVG_POOL2D, OpKind.GLOBAL_AVG_POOL, OpKind.GLOBAL_MAX_POOL,
                         OpKind.FLATTEN, OpKind.RESHAPE, OpKind.PAD, OpKind.CONCAT, OpKind.MAXIMUM,
                         OpKind.MINIMUM, OpKind.RESIZE_NEAREST, OpKind.RESIZE_BILINEAR, OpKind.TRANSPOSE,
                         OpKind.SLICE, OpKind.REVERSE})


def interpreter_only(g: Graph, op: Op) -> str | None:
    """Why ``op`` runs in :func:`run_int8` but has no kernel in tinycc's C runtime, or None.

    Only a QUANTIZE between integer types other than int8 -> int8, int16 -> int16 and int16 -> int8 (uint8 <-> int8 of
    uint8-IO models, int8 -> int16) is left.
    """
    src, dst = g.tensors[op.inputs[0]].dtype, g.tensors[op.outputs[0]].dtype
    ok = {(DType.INT8, DType.INT8), (DType.INT16, DType.INT16), (DType.INT16, DType.INT8)}
    if op.kind == OpKind.QUANTIZE and src != DType.FLOAT32 and (src, dst) not in ok:
        return f"requantizing QUANTIZE ({src.value} -> {dst.value})"
    return None


def _qp(q: QuantParams | None, what: str) -> tuple[float, int]:
    if q is None:
        raise IRError(f"{what} has no quantization parameters")
    return float(q.scale[0]), int(q.zero_point[0])


def _clamp(x: Array, lo: int, hi: int, dt: type = np.int8) -> Array:
    return np.clip(x, lo, hi).astype(dt)


def _odt(g: Graph, op: Op) -> np.dtype:
    """The numpy type of ``op``'s integer output (int8, or int16 for 16x8 ops)."""
    return g.tensors[op.outputs[0]].dtype.numpy


def _act_range(g: Graph, op: Op, scale: float, zp: int) -> tuple[int, int]:
    """The fused activation's clamp range in the output's integer type."""
    return activation_range(op.attrs.get("activation", "none"), scale, zp, *qrange(_odt(g, op)))


def _windows_padded(x: Array, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, padding: str,
                    fill: int) -> Array:
    if padding == "same":
        pt, pb = same_padding(x.shape[1], kh, sh, dh)
        pl, pr = same_padding(x.shape[2], kw, sw, dw)
        x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=fill)
    return fl._windows(np.ascontiguousarray(x), kh, kw, sh, sw, dh, dw)


def _requant_out(acc: Array, mult: Array, shift: Array, out_zp: int, act: tuple[int, int], wide: bool = False) -> Array:
    """Requantize accumulators to the output type: int8 (TFLite's int32 path) or int16 (``wide``: the 16x8 path)."""
    if wide:
        return _clamp(multiply_by_quantized_multiplier_wide(acc, mult, shift) + out_zp, *act, np.int16)
    return _clamp(multiply_by_quantized_multiplier(acc, mult, shift) + out_zp, *act)


def lstm_op_params(g: Graph, op: Op, derive: Callable[..., dict] = lstm_params) -> dict:
    """Multipliers and shifts of an int8 ``lstm`` op (shared with the C emitter)."""
    x, wi, wr, y = (g.tensors[t] for t in (op.inputs[0], op.inputs[1], op.inputs[2], op.outputs[0]))
    in_s, in_zp = _qp(x.quant, f"{op.describe()} input")
    out_s, out_zp = _qp(y.quant, f"{op.describe()} output")
    if wi.quant is None or wr.quant is None:
        raise IRError(f"{op.describe()}: weights are not quantized")
    units = wr.shape[1]
    return derive(in_s, in_zp, gate_scales(wi.quant.scale, units), gate_scales(wr.quant.scale, units), out_s,
                  out_zp, op.attrs["cell_power"], op.attrs["cell_clip"])


def svdf_op_params(g: Graph, op: Op) -> dict:
    """The zero points and two multipliers of an int8 ``svdf`` op (shared with the C emitter)."""
    x, wf, wt, y = (g.tensors[t] for t in (op.inputs[0], op.inputs[1], op.inputs[2], op.outputs[0]))
    in_s, in_zp = _qp(x.quant, f"{op.describe()} input")
    out_s, out_zp = _qp(y.quant, f"{op.describe()} output")
    if wf.quant is None or wt.quant is None or wf.quant.scale.size != 1 or wt.quant.scale.size != 1 \
            or not op.attrs["state_scale"] > 0:
        raise IRError(f"{op.describe()}: needs per-tensor weight scales and a state scale")
    return svdf_params(in_s, in_zp, float(wf.quant.scale[0]), float(wt.quant.scale[0]), op.attrs["state_scale"],
                       out_s, out_zp)


def conv_params(g: Graph, op: Op) -> dict:
    """Everything an int8 Conv2D/DepthwiseConv2D/TransposeConv2D/Dense kernel needs (shared with the C emitter)."""
    x, w, y = (g.tensors[t] for t in (op.inputs[0], op.inputs[1], op.outputs[0]))
    in_s, in_zp = _qp(x.quant, f"{op.describe()} input")
    out_s, out_zp = _qp(y.quant, f"{op.describe()} output")
    if w.quant is None:
        raise IRError(f"{op.describe()}: weights are not quantized")
    ws = w.quant.scale.astype(np.float32)
    if op.kind == OpKind.DENSE and not w.quant.per_axis:
        m, s = fc_requant(in_s, float(ws[0]), out_s)
        mult, shift = np.array([m], np.int64), np.array([s], np.int64)
    else:
        mult, shift = conv_requant(in_s, ws, out_s)
    bias = g.tensors[op.inputs[2]].data.astype(np.int64) if len(op.inputs) > 2 else None
    return {"in_zp": in_zp, "out_zp": out_zp, "mult": mult, "shift": shift, "bias": bias,
            "act": _act_range(g, op, out_s, out_zp), "wide": y.dtype == DType.INT16}


def _conv(g: Graph, op: Op, x: Array) -> Array:
    p = conv_params(g, op)
    w = g.tensors[op.inputs[1]].data.astype(np.int64)
    a = op.attrs
    (sh, sw), (dh, dw) = a["strides"], a["dilation"]
    xo = x.astype(np.int64) - p["in_zp"]  # padded pixels contribute 0, like TFLite skipping them
    if op.kind == OpKind.DEPTHWISE_CONV2D:
        _, kh, kw, cm = w.shape
        m = a["depth_multiplier"]
        win = _windows_padded(xo, kh, kw, sh, sw, dh, dw, a["padding"], 0)
        acc = np.einsum("nhwijc,ijcm->nhwcm", win, w.reshape(kh, kw, cm // m, m))
        acc = acc.reshape(acc.shape[:3] + (cm,))
    else:
        o, kh, kw, ig = w.shape
        gr = a["groups"]
        win = _windows_padded(xo, kh, kw, sh, sw, dh, dw, a["padding"], 0)
        if gr == 1:
            acc = np.tensordot(win, w, axes=([3, 4, 5], [1, 2, 3]))
        else:
            n, oh, ow = win.shape[:3]
            acc = np.einsum("nhwijgc,gkijc->nhwgk", win.reshape(n, oh, ow, kh, kw, gr, ig),
                            w.reshape(gr, o // gr, kh, kw, ig)).reshape(n, oh, ow, o)
    if p["bias"] is not None:
        acc = acc + p["bias"]
    return _requant_out(acc, p["mult"], p["shift"], p["out_zp"], p["act"], p["wide"])


def _dense(g: Graph, op: Op, x: Array, flavor: str) -> Array:
    p = conv_params(g, op)
    w = g.tensors[op.inputs[1]].data.astype(np.int64)
    acc = np.matmul(x.astype(np.int64) - p["in_zp"], w.T)
    if p["bias"] is not None:
        acc = acc + p["bias"]
    if p["wide"] and flavor != "tflite":
        return _requant_out(acc, p["mult"], p["shift"], p["out_zp"], p["act"], True)
    if flavor == "tflite":  # TFLite's reference FULLY_CONNECTED rounds once (see quant.py)
        return _clamp(multiply_by_quantized_multiplier_int64(acc, p["mult"], p["shift"]) + p["out_zp"], *p["act"],
                      _odt(g, op))
    return _requant_out(acc, p["mult"], p["shift"], p["out_zp"], p["act"])


def recurrent_params(g: Graph, op: Op) -> dict:
    """Everything tinycc's integer GRU/SimpleRNN needs (ir/recurrent.py; shared with the C emitter)."""
    x, w, r, y = (g.tensors[t] for t in (op.inputs[0], op.inputs[1], op.inputs[2], op.outputs[0]))
    in_s, in_zp = _qp(x.quant, f"{op.describe()} input")
    out_s, out_zp = _qp(y.quant, f"{op.describe()} output")
    if w.quant is None or r.quant is None or w.dtype != DType.INT8 or r.dtype != DType.INT8:
        raise IRError(f"{op.describe()}: weights are not quantized")
    p = recurrent.int_params(in_s, w.quant.scale, r.quant.scale, out_s)
    if max(int(p["ex"].max()), int(p["eh"].max()), p["eo"]) > 30:  # a left shift of 31+ bits has no int32 meaning
        raise IRError(f"{op.describe()}: input, weight or output scales too far apart for the integer form")
    rb = g.tensors[op.inputs[4]].data if op.kind == OpKind.GRU else None
    return {**p, "in_zp": in_zp, "out_zp": out_zp, "w": w.data, "r": r.data, "b": g.tensors[op.inputs[3]].data,
            "rb": rb}


def _recurrent(g: Graph, op: Op, x: Array) -> Array:
    p = recurrent_params(g, op)
    return recurrent.run_int(op.kind.value, x, p["in_zp"], p["w"], p["r"], p["b"], p["rb"], p, p["out_zp"],
                             op.attrs["return_sequences"], op.attrs.get("reset_after", True))


def _round_div(acc: Array, cnt: Array) -> Array:
    """TFLite average: (acc + cnt/2) / cnt for acc > 0 else (acc - cnt/2) / cnt, truncating."""
    num = np.where(acc > 0, acc + cnt // 2, acc - cnt // 2)
    return np.sign(num) * (np.abs(num) // cnt)


def _pool(g: Graph, op: Op, x: Array) -> Array:
    a = op.attrs
    y = g.tensors[op.outputs[0]]
    s, zp = _qp(y.quant, f"{op.describe()} output")
    act = _act_range(g, op, s, zp)
    if op.kind in (OpKind.GLOBAL_AVG_POOL, OpKind.GLOBAL_MAX_POOL):
        ph, pw, sh, sw, pad = x.shape[1], x.shape[2], 1, 1, "valid"
    else:
        (ph, pw), (sh, sw), pad = a["pool_size"], a["strides"], a["padding"]
    xi = x.astype(np.int64)
    if op.kind in (OpKind.MAX_POOL2D, OpKind.GLOBAL_MAX_POOL):
        out = _windows_padded(xi, ph, pw, sh, sw, 1, 1, pad, -(1 << 40)).max(axis=(3, 4))
    else:
        acc = _windows_padded(xi, ph, pw, sh, sw, 1, 1, pad, 0).sum(axis=(3, 4))
        ones = np.ones((1,) + x.shape[1:3] + (1,), np.int64)
        cnt = _windows_padded(ones, ph, pw, sh, sw, 1, 1, pad, 0).sum(axis=(3, 4))
        out = _round_div(acc, cnt)
    out = _clamp(out, *act, _odt(g, op))
    return out.reshape((x.shape[0],) + y.shape[1:])


def mean_params(in_scale: float, out_scale: float, n: int) -> tuple[int, int]:
    """(multiplier, shift) of TFLite's int8 MEAN over ``n`` values: in/out scale with 1/n folded in."""
    mult, shift = quantize_multiplier(float(np.float32(in_scale)) / float(np.float32(out_scale)))
    nshift = min(n.bit_length() - 1, 32, 31 + shift)
    return (mult << nshift) // n, shift - nshift


def _mean(g: Graph, op: Op, x: Array) -> Array:
    """TFLite's int8 MEAN over height and width (reference QuantizedMeanOrSum): requantizes in -> out."""
    si, zi = _qp(g.tensors[op.inputs[0]].quant, f"{op.describe()} input")
    so, zo = _qp(g.tensors[op.outputs[0]].quant, f"{op.describe()} output")
    n = x.shape[1] * x.shape[2]
    mult, shift = mean_params(si, so, n)
    total = x.astype(np.int64).sum(axis=(1, 2)) - zi * n
    out = _clamp(multiply_by_quantized_multiplier(total, mult, shift) + zo, *qrange(_odt(g, op)), _odt(g, op))
    return out.reshape((x.shape[0],) + g.tensors[op.outputs[0]].shape[1:])


def mean_last_params(g: Graph, op: Op) -> dict:
    """Zero points and (multiplier, shift) of an int8 ``mean`` over the last axis (shared with the C emitter)."""
    si, zi = _qp(g.tensors[op.inputs[0]].quant, f"{op.describe()} input")
    so, zo = _qp(g.tensors[op.outputs[0]].quant, f"{op.describe()} output")
    mult, shift = mean_params(si, so, g.tensors[op.inputs[0]].shape[-1])
    return {"in_zp": zi, "out_zp": zo, "mult": mult, "shift": shift}


def sqdiff_op_params(g: Graph, op: Op) -> dict:
    """Zero points and multipliers of an int8 ``squared_difference`` (shared with the C emitter)."""
    (s1, z1), (s2, z2) = (_qp(g.tensors[t].quant, f"{op.describe()} input") for t in op.inputs)
    so, zo = _qp(g.tensors[op.outputs[0]].quant, f"{op.describe()} output")
    return {"z1": z1, "z2": z2, "zo": zo, **sqdiff_params(s1, s2, so)}


def _requantize(g: Graph, op: Op, x: Array) -> Array:
    """TFLite's QUANTIZE between integer types (reference Requantize): multiplier in/out scale."""
    si, zi = _qp(g.tensors[op.inputs[0]].quant, f"{op.describe()} input")
    out = g.tensors[op.outputs[0]]
    so, zo = _qp(out.quant, f"{op.describe()} output")
    m, e = quantize_multiplier(float(np.float32(si)) / float(np.float32(so)))
    info = np.iinfo(out.dtype.numpy)
    y = multiply_by_quantized_multiplier(x.astype(np.int64) - zi, m, e) + zo
    return np.clip(y, info.min, info.max).astype(out.dtype.numpy)


def add_params(s1: float, s2: float, so: float, left_shift: int = 20) -> dict:
    """TFLite ADD Prepare: left shift 20 (int8) or 15 (int16), inputs scaled to twice the larger input scale."""
    twice_max = 2.0 * float(max(np.float32(s1), np.float32(s2)))
    m1, e1 = quantize_multiplier(float(np.float32(s1)) / twice_max)
    m2, e2 = quantize_multiplier(float(np.float32(s2)) / twice_max)
    mo, eo = quantize_multiplier(twice_max / ((1 << left_shift) * float(np.float32(so))))
    return {"left_shift": left_shift, "m1": m1, "e1": e1, "m2": m2, "e2": e2, "mo": mo, "eo": eo}


def _scaled(v: Array, m: int, e: int) -> Array:
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(v, m), -e)


def _binary(g: Graph, op: Op, a: Array, b: Array) -> Array:
    (s1, z1), (s2, z2) = (_qp(g.tensors[t].quant, f"{op.describe()} input") for t in op.inputs)
    so, zo = _qp(g.tensors[op.outputs[0]].quant, f"{op.describe()} output")
    act = _act_range(g, op, so, zo)
    a64, b64 = a.astype(np.int64) - z1, b.astype(np.int64) - z2
    if op.kind in (OpKind.ADD, OpKind.SUB):  # TFLite's SUB: ADD's parameters, the scaled operands subtracted
        p = add_params(s1, s2, so, 15 if _odt(g, op) == np.int16 else 20)
        sa = _scaled(a64 * (1 << p["left_shift"]), p["m1"], p["e1"])
        sb = _scaled(b64 * (1 << p["left_shift"]), p["m2"], p["e2"])
        out = _scaled(sa + sb if op.kind == OpKind.ADD else sa - sb, p["mo"], p["eo"]) + zo
    else:
        real = np.float32(np.float32(s1) * np.float32(s2)) / np.float32(so)
        m, e = quantize_multiplier(float(np.float32(real)))
        out = multiply_by_quantized_multiplier(a64 * b64, m, e) + zo
    return _clamp(out, *act, _odt(g, op))


def _relu(g: Graph, op: Op, x: Array) -> Array:
    si, zi = _qp(g.tensors[op.inputs[0]].quant, f"{op.describe()} input")
    so, zo = _qp(g.tensors[op.outputs[0]].quant, f"{op.describe()} output")
    m, e = quantize_multiplier(float(np.float32(si)) / float(np.float32(so)))
    act = activation_range("relu" if op.kind == OpKind.RELU else "relu6", so, zo, *qrange(_odt(g, op)))
    return _clamp(multiply_by_quantized_multiplier(x.astype(np.int64) - zi, m, e) + zo, *act, _odt(g, op))


def _check_same(g: Graph, op: Op) -> None:
    out = g.tensors[op.outputs[0]].quant
    for t in op.inputs:
        if not g.tensors[t].is_const and not out.equals(g.tensors[t].quant):
            raise IRError(f"{op.describe()}: int8 input {t!r} must share the output's quantization parameters")


def lut_table(g: Graph, op: Op) -> Array:
    """The int8 table of a ``LUT_KINDS`` op (shared with the C emitter and the TFLite writer's checks)."""
    si, zi = _qp(g.tensors[op.inputs[0]].quant, f"{op.describe()} input")
    so, zo = _qp(g.tensors[op.outputs[0]].quant, f"{op.describe()} output")
    return lut.table_s8(op.kind.value, op.attrs, si, zi, so, zo)


def prelu_op_params(g: Graph, op: Op) -> dict:
    """Zero points and TFLite's two multipliers of an int8 ``prelu`` (shared with the C emitter)."""
    si, zi = _qp(g.tensors[op.inputs[0]].quant, f"{op.describe()} input")
    sa, za = _qp(g.tensors[op.inputs[1]].quant, f"{op.describe()} alpha")
    so, zo = _qp(g.tensors[op.outputs[0]].quant, f"{op.describe()} output")
    return {"in_zp": zi, "alpha_zp": za, "out_zp": zo, "mult": prelu_params(si, sa, so)}


def lut16_params(g: Graph, op: Op, flavor: str = "tflm") -> tuple[int, int]:
    """(multiplier, shift) of an int16 SOFTMAX, LOGISTIC or TANH after TFLite's parameter checks (shared with the C
    emitter): input zero point 0, output scale 1/32768 and zero point 0."""
    si, zi = _qp(g.tensors[op.inputs[0]].quant, f"{op.describe()} input")
    so, zo = _qp(g.tensors[op.outputs[0]].quant, f"{op.describe()} output")
    if zi != 0 or (so, zo) != FIXED_OUTPUT16[op.kind]:
        raise IRError(f"{op.describe()}: int16 {op.kind.value} needs input zero point 0 and output scale 1/32768, "
                      f"zero point 0 (got input zero point {zi}, output {so:g}, {zo})")
    if op.kind == OpKind.SOFTMAX:
        return softmax_s16_params(si, op.attrs["beta"], flavor)
    mult, shift = sigmoid_tanh_params(si, op.kind == OpKind.TANH)
    if mult >= 1 << 16 or shift > 30:  # TFLite's int32 products would overflow
        raise IRError(f"{op.describe()}: int16 {op.kind.value} input scale {si:g} is out of range")
    return mult, shift


def _lut16(g: Graph, op: Op, x: Array, flavor: str) -> Array:
    m, e = lut16_params(g, op, flavor)
    if op.kind == OpKind.SOFTMAX:
        return softmax_s16(x, m, e, flavor=flavor)
    return (logistic_s16 if op.kind == OpKind.SIGMOID else tanh_s16)(x, m, e)


def eval_int8(g: Graph, op: Op, args: list[Array], flavor: str = "tflm") -> Array:
    k = op.kind
    if k == OpKind.QUANTIZE:
        out = g.tensors[op.outputs[0]]
        s, zp = _qp(out.quant, f"{op.describe()} output")
        if g.tensors[op.inputs[0]].dtype != DType.FLOAT32:
            return _requantize(g, op, args[0])
        return quantize(args[0], s, zp, out.dtype.value)
    if k == OpKind.DEQUANTIZE:
        s, zp = _qp(g.tensors[op.inputs[0]].quant, f"{op.describe()} input")
        return dequantize(args[0], s, zp)
    if g.tensors[op.inputs[0]].dtype == DType.FLOAT32:
        return fl.eval_op(op, args, g)
    if k not in INT8_KINDS:
        raise IRError(f"{op.describe()}: no int8 kernel for {k.value}")
    if g.tensors[op.inputs[0]].dtype == DType.INT16 and k not in INT16_KINDS:
        raise IRError(f"{op.describe()}: no int16 kernel for {k.value}")
    if k in FIXED_OUTPUT16 and g.tensors[op.inputs[0]].dtype == DType.INT16:
        return _lut16(g, op, args[0], flavor)
    if k == OpKind.SOFTMAX:
        s, _ = _qp(g.tensors[op.inputs[0]].quant, f"{op.describe()} input")
        if _qp(g.tensors[op.outputs[0]].quant, "softmax output") != FIXED_OUTPUT[k]:
            raise IRError(f"{op.describe()}: int8 softmax output must have scale 1/256 and zero point -128")
        return softmax_s8(args[0], s, op.attrs["beta"])
    if k == OpKind.HARD_SWISH:
        si, zi = _qp(g.tensors[op.inputs[0]].quant, f"{op.describe()} input")
        so, zo = _qp(g.tensors[op.outputs[0]].quant, f"{op.describe()} output")
        return hard_swish_s8(args[0], zi, zo, hard_swish_params(si, so))
    if k == OpKind.GLOBAL_AVG_POOL and op.attrs.get("requantize"):
        return _mean(g, op, args[0])
    if k in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D):
        return _conv(g, op, args[0])
    if k == OpKind.TRANSPOSE_CONV2D:  # TFLite's reference TransposeConv: int32 sums, per-channel requantization
        p = conv_params(g, op)
        acc = fl.transpose_conv_acc(args[0].astype(np.int64) - p["in_zp"], g.tensors[op.inputs[1]].data.astype(
            np.int64), op.attrs, np.int64)
        if p["bias"] is not None:
            acc = acc + p["bias"]
        return _requant_out(acc, p["mult"], p["shift"], p["out_zp"], p["act"], p["wide"])  # 16x8: int64 sums
    if k == OpKind.DENSE:
        return _dense(g, op, args[0], flavor)
    if k in (OpKind.GRU, OpKind.SIMPLE_RNN):
        return _recurrent(g, op, args[0])
    if k == OpKind.LSTM:
        bias = args[3] if len(args) > 3 else None
        if flavor == "tflite":  # TFLite's own integer LSTM (gemmlowp sigmoid/tanh, single-rounding cell update)
            return lstm_int8_tflite(args[0], args[1], args[2], bias, lstm_op_params(g, op, lstm_params_tflite),
                                    op.attrs["return_sequences"])
        return lstm_int8(args[0], args[1], args[2], bias, lstm_op_params(g, op), op.attrs["return_sequences"])
    if k == OpKind.SVDF:  # the rows are consecutive frames of one stream from a zero state (ir/svdf.py)
        return svdf_int8(args[0], args[1], args[2], args[3] if len(args) > 3 else None, op.attrs["rank"],
                         svdf_op_params(g, op))
    if k in (OpKind.RELU, OpKind.RELU6):
        return _relu(g, op, args[0])
    if k in (OpKind.SIGMOID, OpKind.TANH):
        s, zp = _qp(g.tensors[op.inputs[0]].quant, f"{op.describe()} input")
        if _qp(g.tensors[op.outputs[0]].quant, f"{k.value} output") != FIXED_OUTPUT[k]:
            raise IRError(f"{op.describe()}: int8 {k.value} output must have scale/zero point {FIXED_OUTPUT[k]}")
        return (logistic_s8 if k == OpKind.SIGMOID else tanh_s8)(args[0], zp, s)
    if k == OpKind.LEAKY_RELU:
        si, zi = _qp(g.tensors[op.inputs[0]].quant, f"{op.describe()} input")
        so, zo = _qp(g.tensors[op.outputs[0]].quant, f"{op.describe()} output")
        return leaky_relu_s8(args[0], zi, zo, leaky_relu_params(si, so, op.attrs["alpha"], flavor), _odt(g, op))
    if k in LUT_KINDS:
        return lut.lookup_s8(args[0], lut_table(g, op))
    if k == OpKind.PRELU:
        p = prelu_op_params(g, op)
        return prelu_s8(args[0], args[1], p["in_zp"], p["alpha_zp"], p["out_zp"], p["mult"])
    if k in (OpKind.ADD, OpKind.MUL, OpKind.SUB):
        return _binary(g, op, args[0], args[1])
    if k in (OpKind.MEAN, OpKind.SQUARED_DIFFERENCE) and args[0].dtype != np.int8:
        raise IRError(f"{op.describe()}: {k.value} runs on int8 activations only")
    if k == OpKind.MEAN:
        p = mean_last_params(g, op)
        return mean_last_s8(args[0], p["in_zp"], p["mult"], p["shift"], p["out_zp"])
    if k == OpKind.SQUARED_DIFFERENCE:
        p = sqdiff_op_params(g, op)
        return squared_difference_s8(args[0], args[1], p["z1"], p["z2"], p["zo"], p)
    if k in SAME_PARAMS:
        _check_same(g, op)
    if k in (OpKind.MAXIMUM, OpKind.MINIMUM):  # TFLite compares the raw int8 values (shared parameters)
        return (np.maximum if k == OpKind.MAXIMUM else np.minimum)(args[0], args[1]).astype(_odt(g, op))
    if k == OpKind.RESIZE_NEAREST:
        return fl.resize_nearest(args[0], op.attrs)
    if k == OpKind.RESIZE_BILINEAR:  # int8 only (TFLite's integer kernel; shared parameters)
        if args[0].dtype != np.int8:
            raise IRError(f"{op.describe()}: bilinear resize runs on int8 activations only")
        try:
            return resize_bilinear_s8(args[0], op.attrs)
        except ValueError as e:
            raise IRError(f"{op.describe()}: {e}") from None
    if k == OpKind.SLICE:
        return fl.eval_op(op, args, g)
    if k == OpKind.TRANSPOSE:
        return np.ascontiguousarray(np.transpose(args[0], op.attrs["perm"]))
    if k == OpKind.REVERSE:  # data movement: the input's parameters (SAME_PARAMS)
        return np.ascontiguousarray(np.flip(args[0], op.attrs["axis"]))
    if k in (OpKind.MAX_POOL2D, OpKind.AVG_POOL2D, OpKind.GLOBAL_AVG_POOL, OpKind.GLOBAL_MAX_POOL):
        return _pool(g, op, args[0])
    if k in (OpKind.FLATTEN, OpKind.RESHAPE):
        return args[0].reshape((args[0].shape[0],) + g.tensors[op.outputs[0]].shape[1:])
    if k == OpKind.PAD:
        _, zp = _qp(g.tensors[op.outputs[0]].quant, "pad output")
        (t, b), (l, r) = op.attrs["paddings"]
        return np.pad(args[0], ((0, 0), (t, b), (l, r), (0, 0)), constant_values=zp)
    if k == OpKind.CONCAT:
        return np.concatenate(args, axis=op.attrs["axis"])
    raise IRError(f"{op.describe()}: no int8 kernel for {k.value}")  # pragma: no cover


def run_int8(graph: Graph, inputs: dict[str, Array] | Array, outputs: list[str] | None = None,
             flavor: str = "tflm") -> dict[str, Array]:
    """Execute a quantized graph on a batch; float graph inputs go through QUANTIZE ops.

    ``flavor``: "tflm" (default) is bit-exact with TFLite Micro and tinycc's C runtime;
    "tflite" is bit-exact with TFLite's BUILTIN_REF kernels. They differ only in
    FULLY_CONNECTED's final rounding (TFLite rounds once, TFLite Micro twice) and in the integer LSTM
    (ir/lstm.py is TFLite Micro's, ir/lstm_tflite.py TFLite's).
    """
    if not isinstance(inputs, dict):
        inputs = {graph.inputs[0]: inputs}
    want = list(outputs or graph.outputs)
    env: dict[str, Array] = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        env[name] = np.asarray(inputs[name], dtype=t.dtype.numpy)
    for op in graph.ops:
        args = [env[t] if t in env else graph.tensors[t].data for t in op.inputs]
        env[op.outputs[0]] = eval_int8(graph, op, args, flavor)
    return {t: env[t] for t in want}
