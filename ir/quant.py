"""TFLite int8 quantization arithmetic, reproduced exactly (numpy, vectorised).

Everything here follows TensorFlow Lite's reference implementation: QuantizeMultiplier
(frexp-based), MultiplyByQuantizedMultiplier without single rounding (the default build of
TFLite and TFLite Micro), SaturatingRoundingDoublingHighMul and RoundingDivideByPOT, the
Quantize/Dequantize ops, activation clamping ranges, and the converter's choice of
asymmetric activation parameters (range widened to include 0, zero point nudged).
"""
from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: real ~= m * 2^(shift - 31), m in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(math.copysign(math.floor(abs(q) * (1 << 31) + 0.5), q))  # std::round
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        shift, q_fixed = 30, INT32_MAX
    return q_fixed, shift


def quantize_multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(r)) for r in np.asarray(reals, np.float64).reshape(-1)]
    return (np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64))


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    s = ab + nudge
    res = np.where(s >= 0, s >> 31, -((-s) >> 31))  # C++ integer division truncates toward zero
    overflow = (a == b) & (a == INT32_MIN)
    return np.where(overflow, INT32_MAX, res).astype(np.int64)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    x = np.asarray(x, np.int64)
    e = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def _wrap32(x: np.ndarray) -> np.ndarray:
    return ((np.asarray(x, np.int64) + (1 << 31)) % (1 << 32)) - (1 << 31)


def multiply_by_quantized_multiplier(x: np.ndarray, m: np.ndarray | int, shift: np.ndarray | int) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier (double rounding), int32 semantics, int64 arrays."""
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    xs = _wrap32(np.asarray(x, np.int64) * (np.int64(1) << left))
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(xs, m), right)


def round_half_away(x: np.ndarray) -> np.ndarray:
    """std::round semantics (ties away from zero), exact for float32 inputs (done in float64)."""
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str = "int8") -> np.ndarray:
    """TFLite QUANTIZE (float -> int8): round(x / scale) + zp, clamped (float32 division). Defined for every
    float, as the generated C's tcc_quantize_f32: NaN gives the zero point, +-infinity and huge values saturate."""
    info = np.iinfo(dtype)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        v = np.asarray(x, np.float32) / np.float32(scale)
    r = np.clip(round_half_away(np.where(np.isnan(v), 0.0, v)), -1e9, 1e9)
    q = r.astype(np.int64) + int(zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float | np.ndarray, zero_point: int | np.ndarray) -> np.ndarray:
    """TFLite DEQUANTIZE: scale * (q - zp) in float32."""
    diff = np.asarray(q).astype(np.int64) - np.asarray(zero_point, np.int64)  # int64: the biases of 16x8 layers
    return (np.float32(scale) * diff.astype(np.float32)).astype(np.float32)


def qrange(dtype: str) -> tuple[int, int]:
    """The integer range of an activation type: (-128, 127) for int8, (-32768, 32767) for int16."""
    info = np.iinfo(str(dtype))
    return int(info.min), int(info.max)


def activation_range(activation: str, scale: float, zero_point: int, qmin: int = -128, qmax: int = 127) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized for a fused activation."""
    def q(v: float) -> int:
        return int(zero_point + round_half_away(np.float32(v) / np.float32(scale)))

    if activation == "relu":
        return max(qmin, q(0.0)), qmax
    if activation == "relu6":
        return max(qmin, q(0.0)), min(qmax, q(6.0))
    if activation == "none":
        return qmin, qmax
    raise ValueError(f"no quantized range for activation {activation!r}")


def choose_activation_params(rmin: float, rmax: float, qmin: int = -128, qmax: int = 127) -> tuple[float, int]:
    """Asymmetric (scale, zero point) for a float range, as TFLite's converter computes them.

    The range is widened to include 0; the zero point is nudged to an integer in [qmin, qmax].
    """
    rmin = min(float(rmin), 0.0)
    rmax = max(float(rmax), 0.0)
    if rmin == rmax:
        return 1.0, 0
    scale = (rmax - rmin) / (qmax - qmin)
    zp_from_min = qmin - rmin / scale
    zp_from_max = qmax - rmax / scale
    err_min = abs(qmin) + abs(rmin / scale)
    err_max = abs(qmax) + abs(rmax / scale)
    zp_real = zp_from_min if err_min < err_max else zp_from_max
    if zp_real < qmin:
        zp = qmin
    elif zp_real > qmax:
        zp = qmax
    else:
        zp = int(round_half_away(zp_real))
    return float(np.float32(scale)), int(zp)


def symmetric_weight_scales(w: np.ndarray, axis: int | None) -> np.ndarray:
    """Per-channel (or per-tensor) symmetric scales max|w|/127 (all-zero channels get scale 1)."""
    a = np.abs(np.asarray(w, np.float32))
    if axis is None:
        m = np.array([a.max() if a.size else 0.0], np.float32)
    else:
        m = np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1).max(axis=1)
    s = (m / np.float32(127.0)).astype(np.float32)
    return np.where(s > 0, s, np.float32(1.0)).astype(np.float32)


def quantize_weights(w: np.ndarray, scales: np.ndarray, axis: int | None) -> np.ndarray:
    """Symmetric int8 in the narrow range [-127, 127]."""
    w = np.asarray(w, np.float32)
    if axis is None:
        s = np.float32(scales[0])
    else:
        shape = [1] * w.ndim
        shape[axis] = -1
        s = scales.reshape(shape)
    return np.clip(round_half_away(w / s), -127, 127).astype(np.int8)


BIAS_LIMIT = 2 ** 30  # |int32 bias| bound: leaves 2**30 of headroom for the accumulator (fan-in <= 33,000)


def bias_fitting_scales(b: np.ndarray, input_scale: float, weight_scales: np.ndarray) -> np.ndarray:
    """Weight scales raised where the int32 bias would exceed ``BIAS_LIMIT``.

    A filter that BatchNorm folding shrank to ~0 (gamma ~ 0) keeps a real bias: with scale
    max|w|/127 its int32 bias saturates and ``acc + bias`` overflows, so its output would be wrong.
    Its weight scale becomes |b| / (input_scale * BIAS_LIMIT) (the weights then round to ~0, the bias
    fits), which is what the channel computes anyway. Other channels keep their scales.
    """
    ws = np.asarray(weight_scales, np.float32)
    mag = np.abs(np.asarray(b, np.float64)).reshape(-1)
    need = (mag.max(initial=0.0) if ws.size == 1 else mag) / (float(np.float32(input_scale)) * BIAS_LIMIT)
    need = np.broadcast_to(np.asarray(need * (1 + 1e-6), np.float64), ws.shape)
    return np.where(need > ws, need, ws).astype(np.float32)


def quantize_bias(b: np.ndarray, input_scale: float, weight_scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 bias with scale input_scale * weight_scale[c] (float32 product, as the converter)."""
    scales = (np.float32(input_scale) * weight_scales.astype(np.float32)).astype(np.float32)
    q = round_half_away(np.asarray(b, np.float64) / scales.astype(np.float64))
    return np.clip(q, INT32_MIN, INT32_MAX).astype(np.int32), scales


def conv_requant(input_scale: float, weight_scales: np.ndarray, output_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel multipliers/shifts as TFLite PopulateConvolutionQuantizationParams (double math)."""
    eff = float(np.float32(input_scale)) * weight_scales.astype(np.float64) / float(np.float32(output_scale))
    return quantize_multipliers(eff)


def fc_requant(input_scale: float, weight_scale: float, output_scale: float) -> tuple[int, int]:
    """Per-tensor FULLY_CONNECTED multiplier: double(float(in*w)) / double(out)."""
    prod = float(np.float32(input_scale)) * float(np.float32(weight_scale))
    return quantize_multiplier(prod / float(np.float32(output_scale)))


def multiply_by_quantized_multiplier_int64(x: np.ndarray, m: np.ndarray | int, shift: np.ndarray | int) -> np.ndarray:
    """TFLite's int64-accumulator overload (single rounding, ties toward +inf), clamped to int32.

    TFLite's FULLY_CONNECTED reference kernel (BUILTIN_REF) requantizes this way; TFLite Micro's
    uses :func:`multiply_by_quantized_multiplier`. See ``interpreter_int8`` flavors.
    """
    total = 31 - np.asarray(shift, np.int64)
    x = np.asarray(x, np.int64)
    m = np.asarray(m, np.int64)
    # x * m can exceed int64 only for |x| > 2^32: not reachable from int8 kernels
    res = (x * m + (np.int64(1) << (total - 1))) >> total
    return np.clip(res, INT32_MIN, INT32_MAX)


def multiply_by_quantized_multiplier_wide(x: np.ndarray, m: np.ndarray | int, shift: np.ndarray | int) -> np.ndarray:
    """TFLite's int64-accumulator MultiplyByQuantizedMultiplier of the 16x8 kernels (CONV_2D, DEPTHWISE_CONV_2D,
    FULLY_CONNECTED with int16 input): the multiplier reduced to 16 bits (rounded), one rounding right shift by
    15 - shift, the result cast to int32. Valid for |x| < 2^47 (any int16 x int8 accumulation tinycc emits)."""
    m = np.asarray(m, np.int64)
    reduced = np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)
    total = 15 - np.asarray(shift, np.int64)
    res = (np.asarray(x, np.int64) * reduced + (np.int64(1) << (total - 1))) >> total
    return _wrap32(res)
