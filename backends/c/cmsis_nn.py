"""``--kernels cmsis-nn``: which int8 ops the `c` backend hands to Arm's CMSIS-NN, and their scratch sizes.

The generated ``model.c`` calls flat-argument wrappers in ``runtime/tinycc_cmsis.c``, which fill CMSIS-NN's
parameter structs and call its public API (``arm_convolve_wrapper_s8``, ``arm_depthwise_conv_wrapper_s8``,
``arm_fully_connected_wrapper_s8``, ``arm_avgpool_s8``/``arm_max_pool_s8``,
``arm_elementwise_add_s8``/``_mul_s8``), the calls TFLite Micro's ``kernels/cmsis_nn`` makes for the same
ops: offsets are the negated input zero points and the output zero point, multipliers and shifts are the
per-channel tables tinycc already emits (TFLite's Prepare arithmetic, double rounding). Everything else
(quantize, pad, concat, standalone activations, broadcasting add/mul) stays on tinycc's runtime kernels.

Scratch: CMSIS-NN asks for a per-call buffer (``*_get_buffer_size``) whose size depends on the core (the
DSP path of Cortex-M4/M7 needs more than the portable C of the host and Cortex-M0+). ``scratch_bytes`` takes,
per layer, the larger of the two (the sizing rules of the vendored CMSIS-NN, non-MVE) and the model gets one
static buffer of the largest; the wrappers compare each call's real ``*_get_buffer_size`` with it before
calling (too small: the output is the zero point, never an overflow).
"""
from __future__ import annotations

import fcntl
import os
import tarfile
import tempfile
from pathlib import Path

from ...errors import TinyccError
from ...ir.graph import Graph, Op
from ...ir.ops import OpKind, same_padding

# CMSIS-NN source folders the wrappers need (the Makefile compiles their int8 sources into a library)
SOURCE_DIRS = ("ConvolutionFunctions", "FullyConnectedFunctions", "NNSupportFunctions", "PoolingFunctions",
               "BasicMathFunctions")
SOURCE_SKIP = ("_f16.c", "_f32.c", "_flt.c")


def enabled(kernels: str) -> bool:
    """``--kernels cmsis-nn`` (``config.kernels``)."""
    if not isinstance(kernels, str):
        raise TypeError(f"cmsis_nn.enabled takes the --kernels value, got {type(kernels).__name__}")
    return kernels == "cmsis-nn"


def _same_shape_operands(g: Graph, op: Op) -> bool:
    out = g.tensors[op.outputs[0]]
    return all(not g.tensors[t].is_const and g.tensors[t].shape == out.shape for t in op.inputs)


def supports(g: Graph, op: Op) -> bool:
    """True when the op runs on CMSIS-NN (bit-exact with TFLite Micro's reference kernels, as TFLM uses it)."""
    k = op.kind
    if g.tensors[op.inputs[0]].dtype.value != "int8" or g.tensors[op.outputs[0]].dtype.value != "int8":
        return False  # int16 activations: tinycc's own tcc_*_s16 kernels
    if k == OpKind.GLOBAL_AVG_POOL and op.attrs.get("requantize"):
        return False  # TFLite's requantizing MEAN: tinycc's tcc_mean_s8
    if k == OpKind.CONV2D and op.attrs.get("groups", 1) != 1:
        return False  # grouped: tinycc's wrapper passes whole-channel filter dims (it crashed under ASan); ours run it
    if k in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.DENSE, OpKind.MAX_POOL2D, OpKind.AVG_POOL2D,
             OpKind.GLOBAL_AVG_POOL, OpKind.GLOBAL_MAX_POOL):
        return True
    if k in (OpKind.ADD, OpKind.MUL):  # CMSIS-NN's element-wise kernels do not broadcast
        return _same_shape_operands(g, op)
    return False


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


def conv_scratch(in_h: int, in_c: int, kh: int, kw: int, filter_c: int, stride_w: int, padded: bool,
                 dilated: bool) -> int:
    """Bytes ``arm_convolve_wrapper_s8_get_buffer_size`` returns, the larger of the DSP and portable paths."""
    if not padded and kh == kw == 1 and not dilated and in_c == filter_c:
        return 2 * in_c * 2  # 1x1: 0 except the DSP fast path built with Arm Compiler 6 (2 * C int16)
    return 2 * _align4(kw * kh * in_c) * 2  # im2col of two columns in int16 (1xN and general)


def dw_scratch(in_c: int, out_c: int, kh: int, kw: int, pad_h: int, pad_w: int, dilated: bool) -> int:
    """Bytes ``arm_depthwise_conv_wrapper_s8_get_buffer_size`` returns (DSP path; the portable path needs 0)."""
    if in_c != out_c or dilated or (kh == kw == 3 and pad_h <= 1 and pad_w <= 1):
        return 0
    return in_c * kh * kw * 2


def avgpool_scratch(channels: int) -> int:
    """Bytes ``arm_avgpool_s8_get_buffer_size`` returns (DSP: one int32 per channel; portable: 0)."""
    return 4 * channels


def _pads(g: Graph, op: Op, kh: int, kw: int) -> tuple[int, int]:
    a, x = op.attrs, g.tensors[op.inputs[0]]
    if a.get("padding") != "same":
        return 0, 0
    dh, dw = a.get("dilation", (1, 1))
    return same_padding(x.shape[1], kh, a["strides"][0], dh)[0], same_padding(x.shape[2], kw, a["strides"][1], dw)[0]


def op_scratch(g: Graph, op: Op) -> int:
    """Scratch bytes one CMSIS-NN call needs."""
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    a = op.attrs
    if op.kind == OpKind.CONV2D:
        _, kh, kw, fc = g.tensors[op.inputs[1]].shape
        return conv_scratch(x.shape[1], x.shape[3], kh, kw, fc, a["strides"][1], any(_pads(g, op, kh, kw)),
                            tuple(a["dilation"]) != (1, 1))
    if op.kind == OpKind.DEPTHWISE_CONV2D:
        _, kh, kw, _ = g.tensors[op.inputs[1]].shape
        return dw_scratch(x.shape[3], y.shape[3], kh, kw, *_pads(g, op, kh, kw), tuple(a["dilation"]) != (1, 1))
    if op.kind in (OpKind.AVG_POOL2D, OpKind.GLOBAL_AVG_POOL):
        return avgpool_scratch(x.shape[-1])
    return 0  # dense (non-MVE), max pooling, element-wise


def scratch_bytes(g: Graph, kernels: str) -> int:
    """The one static scratch buffer of a ``--kernels cmsis-nn`` project (0: none; other kernels: 0)."""
    if not enabled(kernels):
        return 0
    return max([op_scratch(g, op) for op in g.ops if supports(g, op)] or [0])


# ---- the vendored snapshot, for tests and benchmarks ----

def cache_root() -> Path:
    """``$TINYCC_CACHE`` or ``~/.cache/tinycc`` (outside any clone)."""
    env = os.environ.get("TINYCC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tinycc"


def vendor_archive(vendor: Path) -> Path | None:
    hits = sorted(Path(vendor).glob("cmsis-nn-*.tar.xz"))
    return hits[0] if len(hits) == 1 else None


def extract(archive: Path, cache: Path | None = None) -> Path:
    """Extract a ``cmsis-nn-*.tar.xz`` snapshot once into ``cache/cmsis-nn/<archive stem>/cmsis-nn`` (file lock:
    concurrent pytest-xdist workers wait for one extraction); returns the CMSIS_NN_DIR."""
    stem = archive.name[:-len(".tar.xz")]
    base = (cache or cache_root()) / "cmsis-nn" / stem
    base.mkdir(parents=True, exist_ok=True)
    dest = base / "cmsis-nn"
    with open(base.parent / f"{stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest / "Include" / "arm_nnfunctions.h").is_file():
            with tempfile.TemporaryDirectory(dir=base, prefix=".x-") as tmp:
                with tarfile.open(archive, "r:xz") as tar:
                    tar.extractall(tmp, filter="data")
                top = Path(tmp) / "cmsis-nn"
                if not (top / "Include" / "arm_nnfunctions.h").is_file():
                    raise TinyccError(f"{archive}: no cmsis-nn/Include/arm_nnfunctions.h inside")
                os.rename(top, dest)
    return dest


def sources(cmsis_dir: Path) -> list[Path]:
    """The int8 CMSIS-NN sources the generated project compiles (same list as its Makefile)."""
    out = []
    for d in SOURCE_DIRS:
        out += [p for p in sorted((cmsis_dir / "Source" / d).glob("*.c")) if not p.name.endswith(SOURCE_SKIP)]
    return out
