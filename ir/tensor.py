"""Tensors and quantization parameters of the tinycc IR."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np


class DType(str, Enum):
    """Element types a tensor may have."""

    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"  # activations of TFLite's 16x8 quantization (symmetric, zero point 0)
    INT32 = "int32"
    INT64 = "int64"  # biases of 16x8 convolutions and FULLY_CONNECTED

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(self.value)

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize


@dataclass
class QuantParams:
    """Affine quantization: real = scale * (q - zero_point).

    ``axis`` is None for per-tensor parameters (``scale`` and ``zero_point`` of
    length 1) or the quantized dimension for per-axis parameters.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    def __post_init__(self) -> None:
        self.scale = np.atleast_1d(np.asarray(self.scale, dtype=np.float32))
        self.zero_point = np.atleast_1d(np.asarray(self.zero_point, dtype=np.int64))
        if self.scale.shape != self.zero_point.shape:
            raise ValueError("scale and zero_point must have the same length")
        if self.axis is None and self.scale.size != 1:
            raise ValueError("per-tensor quantization needs exactly one scale")

    @property
    def per_axis(self) -> bool:
        return self.axis is not None

    def equals(self, other: "QuantParams | None") -> bool:
        return (
            other is not None
            and self.axis == other.axis
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
        )


@dataclass
class Tensor:
    """A named value: a constant (``data`` set) or an activation.

    Activation shapes carry a leading batch dimension stored as 1; the
    interpreters accept any batch size in its place.
    """

    name: str
    shape: tuple[int, ...]
    dtype: DType = DType.FLOAT32
    data: np.ndarray | None = None
    quant: QuantParams | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dtype = DType(self.dtype)
        self.shape = tuple(int(d) for d in self.shape)
        if self.data is not None:
            self.data = np.asarray(self.data, dtype=self.dtype.numpy)
            if tuple(self.data.shape) != self.shape:
                raise ValueError(
                    f"tensor {self.name!r}: data shape {self.data.shape} != declared {self.shape}"
                )

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize
