"""int8 ELU, GELU and the other table activations: a 256-entry table computed from the float function.

TFLite's ``LUTPopulate`` (int8 ELU and GELU kernels, LiteRT and TFLite Micro): for every int8 value ``q``,
``x = s_in * (q - zp_in)`` (float32), ``y = f(x)`` (float32), ``round(y * (1 / s_out)) + zp_out`` clamped. tinycc
computes the same table at compile time; the C kernel only looks it up.

The float functions follow TFLite's float32 code: ELU ``x < 0 ? expm1(x) : x`` (times ``alpha``, 1 in TFLite);
GELU exact ``0.5 * x * erfc(x * -sqrt(1/2))`` (LiteRT's reference ``GeluTransform``; the older form
``0.5 * x * (1 + erf(x * sqrt(1/2)))`` gave the same table on 768,000 random entries), approximate
``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))``. erfc is evaluated in float64 and rounded to float32; the
tests compare whole tables with BUILTIN_REF. TFLite Micro has no GELU kernel (the ``tflm`` target refuses it).

Softplus, softsign, SELU, mish and exponential (Keras's ``activation=`` names; no TFLite builtin runs them in int8,
the converter writes them as EXP/LOG/ABS/DIV/... chains) use the same table and the same rounding rule on tinycc's
calibrated input/output parameters. Their float functions are evaluated in float64 and rounded to float32 (within
an ulp or two of Keras's float32). Exponential's output range is the calibrated one, bounded because its int8 input
is: as with TFLite's int8 EXP table, inputs far below the calibrated maximum all land on the lowest steps.

``rsqrt`` is TFLite's integer RSQRT tabulated (``layernorm.py``); ``neg`` is ``-x`` always on the float path (the converter keeps
NEG in float: DEQUANTIZE, NEG, QUANTIZE; TFLite Micro's NEG is float-only, so tinycc writes it the same way).

A converter file keeps ELU in float between DEQUANTIZE and QUANTIZE; such an ``elu`` has ``float_path`` set and its
table repeats that path instead: DEQUANTIZE, the float ELU, QUANTIZE (float32 division by the output scale).
"""
from __future__ import annotations

import math

import numpy as np

from .layernorm import rsqrt_table_s8
from .quant import dequantize, quantize, round_half_away

F32 = np.float32
_erfc = np.frompyfunc(math.erfc, 1, 1)


def elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Keras/TFLite ELU in float32."""
    x = np.asarray(x, F32)
    with np.errstate(over="ignore"):
        neg = np.expm1(np.minimum(x, F32(0)))
    if alpha != 1.0:
        neg = (neg * F32(alpha)).astype(F32)
    return np.where(x < 0, neg, x).astype(F32)


def gelu(x: np.ndarray, approximate: bool = False) -> np.ndarray:
    """GELU in float32, as LiteRT's reference kernel computes it."""
    x = np.asarray(x, F32)
    half_x = (F32(0.5) * x).astype(F32)
    if approximate:
        k = F32(math.sqrt(2.0 / math.pi))
        cube = (((F32(0.044715) * x).astype(F32) * x).astype(F32) * x).astype(F32)
        inner = (k * (x + cube).astype(F32)).astype(F32)
        return (half_x * (F32(1) + np.tanh(inner)).astype(F32)).astype(F32)
    arg = (x * F32(-math.sqrt(0.5))).astype(F32)
    return (half_x * _erfc(arg.astype(np.float64)).astype(np.float64).astype(F32)).astype(F32)


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _f64(fn):
    """``fn`` evaluated in float64 on float32 input, rounded to float32."""
    def run(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            return fn(np.asarray(x, F32).astype(np.float64)).astype(F32)
    return run


def _selu(x: np.ndarray) -> np.ndarray:
    return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))


# Keras's float functions of the table activations other than ELU/GELU (op kind value -> float32 function)
FUNCTIONS = {
    "softplus": _f64(lambda x: np.logaddexp(0.0, x)),
    "softsign": _f64(lambda x: x / (1.0 + np.abs(x))),
    "selu": _f64(_selu),
    "mish": _f64(lambda x: x * np.tanh(np.logaddexp(0.0, x))),
    "exponential": _f64(np.exp),
}


def float_fn(kind: str, attrs: dict):
    """The float32 function of a table op (``elu``, ``gelu``, or one of :data:`FUNCTIONS`)."""
    if kind == "elu":
        return lambda x: elu(x, attrs.get("alpha", 1.0))
    if kind == "gelu":
        return lambda x: gelu(x, attrs.get("approximate", False))
    if kind == "neg":
        return lambda x: (-np.asarray(x, F32)).astype(F32)
    return FUNCTIONS[kind]


def table_s8(kind: str, attrs: dict, in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """The 256 int8 outputs for the inputs -128..127 (index ``q + 128``)."""
    if kind == "rsqrt":  # TFLite's integer RSQRT, not a float table (layernorm.py)
        return rsqrt_table_s8(in_scale, in_zp, out_scale, out_zp)
    q = np.arange(-128, 128, dtype=np.int64)
    fn = float_fn(kind, attrs)
    if attrs.get("float_path") or kind == "neg":
        return quantize(fn(dequantize(q, in_scale, in_zp)), out_scale, out_zp)
    x = (F32(in_scale) * (q - in_zp).astype(F32)).astype(F32)
    with np.errstate(over="ignore", invalid="ignore"):
        y = (fn(x) * (F32(1) / F32(out_scale))).astype(F32)
    r = np.clip(round_half_away(np.nan_to_num(y)), -1e9, 1e9).astype(np.int64) + int(out_zp)
    return np.clip(r, -128, 127).astype(np.int8)


def lookup_s8(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Apply a table from :func:`table_s8` to int8 values."""
    return table[np.asarray(x, np.int64) + 128]
