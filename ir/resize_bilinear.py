"""TFLite's RESIZE_BILINEAR: the float reference arithmetic and the int8 integer form (10-bit fractional positions).

Float: the source position of output row ``y`` is ``y * scale`` (``(y + 0.5) * scale - 0.5`` with half-pixel
centres) in float32, ``scale = in / out`` (``(in - 1) / (out - 1)`` with ``align_corners``); the lower row is its
floor clamped at 0, the upper its ceiling clamped at ``in - 1``; the weights are the distance from the lower row.
Int8: the scale is ``round(1024 * in / out)`` (integer division, half up), positions are in 1/1024 units, the four
products are summed exactly and divided by 2**20 rounding half away from zero. Output and input share their
quantization parameters, so the raw int8 values are interpolated.
"""
from __future__ import annotations

import numpy as np

Array = np.ndarray
F32 = np.float32
ONE = 1 << 10


def float_positions(out_size: int, in_size: int, align_corners: bool, half_pixel: bool
                    ) -> tuple[Array, Array, Array]:
    """Per output row/column: source position (float32), lower and upper source index."""
    scale = F32(in_size) / F32(out_size)
    if align_corners and out_size > 1:
        scale = F32(in_size - 1) / F32(out_size - 1)
    v = np.arange(out_size, dtype=F32)
    pos = ((v + F32(0.5)) * scale - F32(0.5)).astype(F32) if half_pixel else (v * scale).astype(F32)
    lo = np.maximum(np.floor(pos).astype(np.int64), 0)
    hi = np.minimum(np.ceil(pos).astype(np.int64), in_size - 1)
    return pos, lo, hi


def resize_bilinear_float(x: Array, attrs: dict) -> Array:
    """RESIZE_BILINEAR on float32 NHWC, in the reference kernel's float32 operation order."""
    oh, ow = attrs["size"]
    ac, hp = bool(attrs["align_corners"]), bool(attrs["half_pixel_centers"])
    py, y0, y1 = float_positions(oh, x.shape[1], ac, hp)
    px, x0, x1 = float_positions(ow, x.shape[2], ac, hp)
    dy = (py - y0.astype(F32)).astype(F32)[None, :, None, None]
    dx = (px - x0.astype(F32)).astype(F32)[None, None, :, None]
    one = F32(1)
    x = x.astype(F32)
    a = x[:, y0][:, :, x0] * (one - dy) * (one - dx)
    b = x[:, y1][:, :, x0] * dy * (one - dx)
    c = x[:, y0][:, :, x1] * (one - dy) * dx
    d = x[:, y1][:, :, x1] * dy * dx
    return np.ascontiguousarray((((a + b) + c) + d).astype(F32))


def scale_10(out_size: int, in_size: int, align_corners: bool) -> int:
    """The source step per output row in 1/1024 units, rounded half up (C integer division of positives)."""
    if align_corners and out_size > 1:
        return (ONE * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    return (ONE * in_size + out_size // 2) // out_size


def _trunc_div(a: Array, b: int) -> Array:
    """C's integer division (toward zero)."""
    return np.sign(a) * (np.abs(a) // b)


def int_positions(out_size: int, in_size: int, align_corners: bool, half_pixel: bool) -> tuple[Array, Array, Array]:
    """Per output row/column: lower index, upper index and the weight of the upper one in 1/1024 units (negative
    left of the first centre, where lower and upper are both 0). ValueError where a lower index falls outside the
    input (the rounded integer scale overshoots: TFLite's kernel would read past the tensor)."""
    s = scale_10(out_size, in_size, align_corners)
    v = np.arange(out_size, dtype=np.int64)
    pos = v * s + s // 2 - (1 << 9) if half_pixel else v * s
    lo = np.maximum(_trunc_div(pos, ONE), 0)
    hi = np.minimum(_trunc_div(pos + ONE - 1, ONE), in_size - 1)
    if (lo > in_size - 1).any():
        raise ValueError(f"int8 bilinear resize of {in_size} to {out_size} (TFLite's integer kernel reads past the "
                         "input: its rounded scale overshoots)")
    return lo, hi, pos - ONE * lo


def resize_bilinear_s8(x: Array, attrs: dict) -> Array:
    """RESIZE_BILINEAR on int8 NHWC, bit-exact with TFLite's reference integer kernel (int8 in and out)."""
    oh, ow = attrs["size"]
    ac, hp = bool(attrs["align_corners"]), bool(attrs["half_pixel_centers"])
    y0, y1, wy = int_positions(oh, x.shape[1], ac, hp)
    x0, x1, wx = int_positions(ow, x.shape[2], ac, hp)
    wy, wx = wy[None, :, None, None], wx[None, None, :, None]
    v = x.astype(np.int64)
    acc = (v[:, y0][:, :, x0] * (ONE - wy) * (ONE - wx) + v[:, y1][:, :, x0] * wy * (ONE - wx)
           + v[:, y0][:, :, x1] * (ONE - wy) * wx + v[:, y1][:, :, x1] * wy * wx)
    rnd = np.where(acc > 0, 1 << 19, -(1 << 19))
    return np.ascontiguousarray(_trunc_div(acc + rnd, 1 << 20).astype(x.dtype))
