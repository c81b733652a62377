"""Frontend for `.tflite` models made by the TFLite converter: full-integer int8 (post-training or QAT),
16x8 (int16 activations, int8 weights, int64 or int32 biases) and float32.

An int8 file is read with the flatbuffer schema bindings into the IR in the form the quantize pass
produces: int8 activations with per-tensor parameters, int8 weights (per-axis for convolutions),
int32 biases, fused activations as attributes, QUANTIZE/DEQUANTIZE at float boundaries (the graph is
marked ``meta["quantized"]``). A float file (float32 activations) becomes a float graph like the Keras
frontend's (fused activations kept as attributes, MEAN a plain global average pool), which can be
quantized, pruned and compiled; integer weights of a dynamic-range file (the converter's default
optimization, e.g. MLPerf Tiny's kws_ref_model_float32) are dequantized to float32 (scale * (q - zp),
the values TFLite's hybrid kernels multiply with) and float16 weights (DEQUANTIZE of a constant) are
widened to float32. Op mapping:
CONV_2D (grouped when the filter has fewer input channels), DEPTHWISE_CONV_2D, FULLY_CONNECTED (a
rank > 2 input is reshaped to [1, I], or kept with keep_num_dims), ADD, MUL, RELU, RELU6, LEAKY_RELU,
SUB, MAXIMUM, MINIMUM, RESIZE_NEAREST_NEIGHBOR, RESIZE_BILINEAR, STRIDED_SLICE of activations with stride 1 (Cropping2D; one slice op per cut
axis), TRANSPOSE (batch axis kept), REVERSE_V2 (one non-batch axis; a Bidirectional layer's time reversal),
TRANSPOSE_CONV (output size
from its output tensor), SPLIT/SPLIT_V (one slice op per output), UNPACK (one slice + reshape per output) and
PACK of activations (reshapes + concatenation): the converter's unstacking and stacking of the steps of a Keras 3
recurrent layer with unroll=True, whose batch-1 [T, 1, F] tensors keep a batch axis of 1 in front in the IR,
LOGISTIC, TANH, HARD_SWISH, MAX/AVERAGE_POOL_2D, RESHAPE (+ EXPAND_DIMS, SQUEEZE), CONCATENATION, PAD (spatial), QUANTIZE
(float -> int8, and integer -> integer requantization such as the uint8 <-> int8 of uint8-IO models),
DEQUANTIZE, SVDF (``tflite_svdf.py``: int16 state, kept between frames; ir/svdf.py), SOFTMAX,
MEAN over the last axis with SQUARED_DIFFERENCE, RSQRT and NEG (a layer normalization; the converter's float NEG
between DEQUANTIZE and QUANTIZE becomes one integer ``neg``), MEAN over H,W (global average pooling with TFLite's
requantizing MEAN
arithmetic), REDUCE_MAX over H,W (global max pooling; both also over the steps of [N, L, C]), SPACE_TO_BATCH_ND + CONV_2D/DEPTHWISE_CONV_2D +
BATCH_TO_SPACE_ND (the converter's dilated convolution), runs of RESHAPE/EXPAND_DIMS/TILE that repeat rows and
columns of a map (Keras 3 UpSampling2D, also fused with a preceding Reshape; recognised by their index map and read
as a reshape + nearest-neighbour resize; any other TILE is refused). Shape arithmetic the converter emits for
Flatten (SHAPE, STRIDED_SLICE, PACK, CONCATENATION on int32) is dropped: RESHAPE takes its output tensor's static
shape. A uint8 <-> int8 QUANTIZE runs in the int8 reference interpreter only
(``interpreter_int8.interpreter_only``); every other int8 op has a C kernel.

A 16x8 file reads like an int8 one with int16 activations; an operator without an int16 kernel in
``interpreter_int8.INT16_KINDS`` (TRANSPOSE_CONV, HARD_SWISH, ... in int16) is refused by name. int16 SOFTMAX,
LOGISTIC and TANH (ir/fixedpoint16.py) must have TFLite's fixed output parameters (scale 1/32768, zero point 0).

Not read (reported with the operator and tensor names): other operators (GATHER and the
dynamic-shape arithmetic of Dense on unbatched 3-D inputs, ...), several subgraphs. TFLite's int8
parameter rules (same parameters through pooling, reshape, pad, concatenation; fixed SOFTMAX/LOGISTIC/TANH
outputs) are checked at import.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pluggy

from ...errors import TinyccError, UnsupportedLayerError
from ...ir.graph import Graph, IRError
from ...ir.interpreter_int8 import FIXED_OUTPUT, FIXED_OUTPUT16, INT16_KINDS, SAME_PARAMS
from ...ir.ops import OpKind, same_padding
from ...ir.tensor import DType, QuantParams, Tensor
from ...tflite_schema import builtin_name, schema
from .tflite_lstm import read_lstm
from .tflite_svdf import read_svdf

hookimpl = pluggy.HookimplMarker("tinycc")

_TYPES = {0: DType.FLOAT32, 2: DType.INT32, 3: DType.UINT8, 4: DType.INT64, 7: DType.INT16, 9: DType.INT8}
_ACTIVATION_TYPES = (0, 3, 7, 9)  # float32, uint8, int16, int8
# TFLite's TensorType numbers by name, for messages (schema.fbs)
TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool", 7: "int16",
              8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64", 13: "resource",
              14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16"}
# operators the reader maps (see the module docstring); int32 shape arithmetic (SHAPE, ...) is dropped
SUPPORTED_OPERATORS = frozenset({
    "RELU", "RELU6", "LOGISTIC", "TANH", "QUANTIZE", "DEQUANTIZE", "HARD_SWISH", "SHAPE", "STRIDED_SLICE", "PACK",
    "UNIDIRECTIONAL_SEQUENCE_LSTM", "SVDF", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MUL", "SUB", "MAXIMUM", "MINIMUM",
    "RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR", "TRANSPOSE", "SPLIT", "SPLIT_V", "UNPACK", "LEAKY_RELU", "MAX_POOL_2D", "AVERAGE_POOL_2D",
    "RESHAPE", "EXPAND_DIMS", "SQUEEZE", "CONCATENATION", "PAD", "SOFTMAX", "MEAN", "REDUCE_MAX",
    "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND", "TILE", "TRANSPOSE_CONV", "PRELU", "ELU", "GELU",
    "REVERSE_V2", "SQUARED_DIFFERENCE", "RSQRT", "NEG"})
OPS_HINT = "`tinycc ops` lists what each frontend and backend supports"


def type_name(code: int) -> str:
    """A TFLite tensor type by name (``int16``), for messages."""
    return TYPE_NAMES.get(int(code), f"type {code}")


def short_name(name: str, limit: int = 60) -> str:
    """The part of a converter's tensor name a user recognises: the first of ';'-joined names, without the model
    scope, the ``serving_default_`` prefix or a ``:0`` suffix, at most ``limit`` characters."""
    n = name.split(";")[0]
    n = n[len("serving_default_"):] if n.startswith("serving_default_") else n
    n = n.rsplit(":", 1)[0] if n.rsplit(":", 1)[-1].isdigit() else n
    parts = n.split("/")
    if len(parts) > 2:
        n = "/".join(parts[1:])
    return n if len(n) <= limit else "..." + n[-(limit - 3):]
_ACT = {0: "none", 1: "relu", 3: "relu6"}
_SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK"}
_CALL_NAMES = {"StatefulPartitionedCall", "PartitionedCall"}  # converter names of a signature's outputs
_UNARY = {"RELU": OpKind.RELU, "RELU6": OpKind.RELU6, "LOGISTIC": OpKind.SIGMOID, "TANH": OpKind.TANH,
          "QUANTIZE": OpKind.QUANTIZE, "DEQUANTIZE": OpKind.DEQUANTIZE, "HARD_SWISH": OpKind.HARD_SWISH,
          "ELU": OpKind.ELU, "RSQRT": OpKind.RSQRT, "NEG": OpKind.NEG}


_BROADCASTING = (OpKind.ADD, OpKind.SUB, OpKind.MUL, OpKind.MAXIMUM, OpKind.MINIMUM, OpKind.SQUARED_DIFFERENCE)


class _Reader:
    def __init__(self, data: bytes, name: str) -> None:
        s = schema()
        try:
            if len(data) < 8 or data[4:8] != b"TFL3":
                raise ValueError("no TFL3 file identifier")
            self.m = s.ModelT.InitFromPackedBuf(data, 0)
        except Exception as e:  # flatbuffers raises many types for truncated or foreign bytes
            raise TinyccError(f"{name}: not a readable TFLite flatbuffer ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:120]})") from None
        if not self.m.subgraphs:
            raise TinyccError(f"{name}: the TFLite model has no subgraph")
        if len(self.m.subgraphs) > 1:
            raise UnsupportedLayerError(f"{name}: {len(self.m.subgraphs)} subgraphs (control flow) are not supported")
        self.sg = self.m.subgraphs[0]
        self.codes = [builtin_name(max(oc.builtinCode, oc.deprecatedBuiltinCode)) for oc in self.m.operatorCodes]
        self.g = Graph(name)
        self.names: dict[int, str] = {}
        self.integer = True  # int8/uint8 activations (set by read); False: a float model

    # ---- tensors -------------------------------------------------------------------------
    def _short(self, i: int) -> str:
        return short_name(self._tname(i))

    def _tname(self, i: int) -> str:
        t = self.sg.tensors[i]
        raw = t.name.decode("utf-8", "backslashreplace") if isinstance(t.name, bytes) else str(t.name)
        return raw or f"t{i}"  # invalid UTF-8 bytes kept as \xHH text (a name is any bytes)

    def _data(self, i: int) -> np.ndarray | None:
        t = self.sg.tensors[i]
        buf = self.m.buffers[t.buffer] if t.buffer < len(self.m.buffers) else None
        if buf is None or buf.data is None or len(buf.data) == 0:
            return None
        dt = np.dtype(np.float16) if t.type == 1 else _TYPES[t.type].numpy if t.type in _TYPES else None
        if dt is None:
            raise UnsupportedLayerError(f"constant {self._short(i)!r}: {type_name(t.type)} is not supported; "
                                        f"{OPS_HINT}")
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        data = np.frombuffer(bytes(np.asarray(buf.data, np.uint8)), dt.newbyteorder("<")).astype(dt).reshape(shape)
        return data.astype(np.float32) if t.type == 1 else data

    def _quant(self, i: int) -> QuantParams | None:
        q = self.sg.tensors[i].quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return None
        scale = np.asarray(q.scale, np.float32)
        zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else np.zeros(len(scale)), np.int64)
        return QuantParams(scale, zp, int(q.quantizedDimension) if len(scale) > 1 else None)

    def tensor(self, i: int) -> str:
        """The IR name of TFLite tensor ``i`` (constants are created on first use)."""
        if i in self.names:
            return self.names[i]
        t = self.sg.tensors[i]
        data = self._data(i)
        if data is None:
            raise TinyccError(f"tensor {self._short(i)!r} is read before any operator writes it")
        quant = self._quant(i)
        if not self.integer and data.dtype.kind in "iu" and quant is not None:  # dynamic-range weights
            data, quant = self._dequantized(data, quant), None
        name = self.g.unique_tensor_name(self._tname(i))
        self.g.add_tensor(Tensor(name, data.shape, DType(str(data.dtype)), data, quant))
        self.names[i] = name
        return name

    @staticmethod
    def _dequantized(data: np.ndarray, q: QuantParams) -> np.ndarray:
        """float32 values of an integer constant: scale * (q - zero point), per axis when it has one."""
        shape = [1] * data.ndim
        if q.axis is not None:
            shape[q.axis] = -1
        scale, zp = q.scale.astype(np.float32).reshape(shape), q.zero_point.reshape(shape)
        return (scale * (data.astype(np.int64) - zp).astype(np.float32)).astype(np.float32)

    def _set_out(self, op: Any, i: int) -> None:
        """Give the IR op's output the TFLite tensor's name, dtype and quantization."""
        out = self.g.tensors[op.outputs[0]]
        t = self.sg.tensors[i]
        if t.type not in _ACTIVATION_TYPES:
            raise UnsupportedLayerError(f"operator writing {short_name(out.name)!r}: {type_name(t.type)} activations "
                                        "are not supported (int8, int16, uint8 at the boundaries, or float32)")
        out.dtype = _TYPES[t.type]
        out.quant = self._quant(i)
        self.names[i] = out.name
        self._check_params(op)

    def _check_params(self, op: Any) -> None:
        """TFLite's int8 parameter rules that the IR's kernels rely on, checked at import."""
        g = self.g
        out = g.tensors[op.outputs[0]]
        src = g.tensors[op.inputs[0]].dtype
        if src == DType.INT16 and op.kind not in INT16_KINDS | {OpKind.QUANTIZE, OpKind.DEQUANTIZE}:
            raise UnsupportedLayerError(f"{op.kind.value} writing {short_name(out.name)!r}: int16 activations are "
                                        f"not supported for this operator; {OPS_HINT}")
        if out.dtype not in (DType.INT8, DType.INT16) or src != out.dtype:
            return
        if out.quant is None:
            raise UnsupportedLayerError(f"int8 tensor {out.name!r} has no quantization parameters")
        qp = (float(out.quant.scale[0]), int(out.quant.zero_point[0]))
        fixed = {**FIXED_OUTPUT, OpKind.SOFTMAX: (1.0 / 256.0, -128)}
        if op.kind in fixed and out.dtype == DType.INT8 and qp != fixed[op.kind]:
            raise UnsupportedLayerError(f"{op.kind.value} writing {out.name!r}: int8 output parameters {qp}, TFLite "
                                        f"requires {fixed[op.kind]}")
        if op.kind in FIXED_OUTPUT16 and out.dtype == DType.INT16 and qp != FIXED_OUTPUT16[op.kind]:
            raise UnsupportedLayerError(f"{op.kind.value} writing {short_name(out.name)!r}: int16 output parameters "
                                        f"{qp}, TFLite requires (1/32768, 0)")
        if op.kind in SAME_PARAMS and not op.attrs.get("requantize"):
            for t in op.inputs:
                if not g.tensors[t].is_const and not out.quant.equals(g.tensors[t].quant):
                    raise UnsupportedLayerError(f"{op.kind.value} writing {out.name!r}: input {t!r} has other "
                                                "quantization parameters than the output (TFLite requires the same)")

    def add(self, kind: OpKind, ins: list[str], out_idx: int, attrs: dict | None = None, origin: str = "") -> Any:
        name = self._tname(out_idx)
        op = self.g.add_op(kind, ins, name, attrs or {}, origin=origin or name, output_name=name)
        t = self.sg.tensors[out_idx]
        shape = tuple(int(d) for d in t.shape)
        sig = [int(d) for d in t.shapeSignature] if t.shapeSignature is not None else [0] * len(shape)
        got = tuple(self.g.tensors[op.outputs[0]].shape)  # dynamic (-1) dimensions: the file's value may be stale
        if len(got) != len(shape) or any(a != b and d != -1 for a, b, d in zip(got, shape, sig)):
            raise TinyccError(f"operator writing {short_name(name)!r}: tinycc infers shape "
                              f"{self.g.tensors[op.outputs[0]].shape}, the file says {shape}")
        self._set_out(op, out_idx)
        return op

    # ---- operators -----------------------------------------------------------------------
    def read(self) -> Graph:
        sg = self.sg
        for i in sg.inputs:
            t = sg.tensors[i]
            if t.type not in _ACTIVATION_TYPES:
                raise UnsupportedLayerError(f"input {self._short(i)!r}: {type_name(t.type)} inputs are not supported "
                                            f"(int8, int16, uint8 or float32); {OPS_HINT}")
            inp = self.g.add_input(self._tname(i), tuple(int(d) for d in t.shape), _TYPES[t.type])
            inp.quant = self._quant(i)
            self.names[i] = inp.name
        ops = list(sg.operators or [])
        self.ops, self.time_major = ops, set()
        variable = [t for t in sg.tensors if self._is_activation(t)]
        self.integer = any(t.type in (3, 7, 9) for t in variable)
        self._check_supported(ops)
        skip: set[int] = set()
        for k, o in enumerate(ops):
            if k in skip:
                continue
            code = self.codes[o.opcodeIndex]
            if self._int32_arithmetic(code, o):
                continue
            if code in ("RESHAPE", "EXPAND_DIMS") and self._repeat_at(ops, k) is not None:
                skip.update(self._repeat(ops, k))
                continue
            if code == "SPACE_TO_BATCH_ND":
                skip.update(self._dilated(ops, k))
                continue
            if code not in ("UNPACK", "RESHAPE") and any(i in self.time_major for i in o.inputs):
                raise UnsupportedLayerError(f"TFLite operator {code} writing {self._short(o.outputs[0])!r} reads "
                                            "steps stacked along the batch axis")
            try:
                self._op(code, o)
            except IRError as e:  # the file's shapes or attributes do not fit the IR's op definitions
                outs = self._outs(o)
                raise TinyccError(f"TFLite operator {code} (writing {outs!r}): {e}") from None
        outs = [self.names.get(i) for i in sg.outputs]
        if any(n is None for n in outs):
            raise TinyccError("a model output is not written by any operator")
        self.g.outputs = [n for n in outs if n is not None]
        if self.integer:
            fold_float_elu(self.g)
        self.g.prune_unused()
        self._batch_broadcast_operands()
        self.g.meta["source"] = {"format": "tflite"}
        self.g.meta["io_names"] = self._io_names(sg)
        if self.integer:
            self.g.meta["quantized"] = True
        return self.g

    def _io_names(self, sg: Any) -> dict[str, str]:
        """What a user calls each model input and output (the C API of a model with several names them): the
        short tensor name; an output the converter named after its call (``StatefulPartitionedCall:1``) is
        ``output_K`` (its position)."""
        out = {self.names[i]: self._short(i) for i in sg.inputs if i in self.names}
        for k, i in enumerate(sg.outputs):
            if i in self.names:
                n = self._short(i)
                out[self.names[i]] = f"output_{k}" if n.split("/")[-1].split("_")[0] in _CALL_NAMES else n
        return out

    def _is_activation(self, t: Any) -> bool:
        buf = self.m.buffers[t.buffer] if 0 <= t.buffer < len(self.m.buffers) else None
        return buf is None or buf.data is None or len(buf.data) == 0

    def _batch_broadcast_operands(self) -> None:
        """A graph input without the leading batch dimension of 1 (SEANet's SUB takes a [64] operand beside a
        [1, 2, 12, 64] one) that only element-wise broadcasting ops read is given leading 1s up to their outputs'
        rank: broadcasting aligns shapes from the right, so the results are unchanged, and the IR's rule
        (activations lead with a batch of 1) holds for any batch."""
        g = self.g
        for name in g.inputs:
            t = g.tensors[name]
            readers = g.consumers(name)
            if (t.shape and t.shape[0] == 1) or not readers or any(op.kind not in _BROADCASTING for op in readers):
                continue
            ranks = {len(g.tensors[o].shape) for op in readers for o in op.outputs}
            if len(ranks) == 1 and min(ranks) > len(t.shape):
                t.shape = (1,) * (min(ranks) - len(t.shape)) + t.shape

    def _check_supported(self, ops: list[Any]) -> None:
        known = set(SUPPORTED_OPERATORS)
        for o in ops:
            code = self.codes[o.opcodeIndex]
            if self._int32_arithmetic(code, o):
                continue
            if code == "SHAPE":  # only the int32 shape arithmetic of Flatten is dropped
                known.discard(code)
            if code not in known:
                outs = self._outs(o)
                raise UnsupportedLayerError(f"TFLite operator {code} (writing {outs!r}) is not supported by "
                                            f"tinycc's reader; {OPS_HINT}")

    def _outs(self, o: Any) -> str:
        """An operator's output names for a message: at most two, then how many more (UNPACK writes one per step)."""
        names = [self._short(i) for i in o.outputs]
        return ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")

    def _int32_arithmetic(self, code: str, o: Any) -> bool:
        """int32 shape values (the converter's Flatten/UpSampling2D/Conv2DTranspose shape arithmetic): dropped."""
        return code in _SHAPE_OPS | {"CONCATENATION"} and all(self.sg.tensors[i].type == 2 for i in o.outputs)

    def _consumer(self, ops: list[Any], k: int, code: str) -> int | None:
        """Index of the first op after ``k`` of type ``code`` that reads ``ops[k]``'s output."""
        out = ops[k].outputs[0]
        return next((j for j in range(k + 1, len(ops)) if out in list(ops[j].inputs)
                     and self.codes[ops[j].opcodeIndex] == code), None)

    _MOVES = ("RESHAPE", "EXPAND_DIMS", "SQUEEZE", "TILE")

    def _move_chain(self, ops: list[Any], k: int) -> list[int]:
        """The run of data-movement ops (reshape, expand, squeeze, tile) starting at ``ops[k]``, each the only reader
        of the previous one's output, ending at the first 4-D output read by something else: op indices, or []
        when the run holds no TILE."""
        chain = [k]
        while True:
            out = ops[chain[-1]].outputs[0]
            readers = [j for j in range(chain[-1] + 1, len(ops)) if out in list(ops[j].inputs)]
            nxt = readers[0] if len(readers) == 1 and out not in list(self.sg.outputs) else None
            if nxt is None or self.codes[ops[nxt].opcodeIndex] not in self._MOVES:
                break
            chain.append(nxt)
        while chain and (len(self.sg.tensors[ops[chain[-1]].outputs[0]].shape) != 4
                         or self.codes[ops[chain[-1]].opcodeIndex] == "TILE"):
            chain.pop()
        has_tile = any(self.codes[ops[j].opcodeIndex] == "TILE" for j in chain)
        return chain if has_tile else []

    def _repeat_at(self, ops: list[Any], k: int) -> tuple[list[int], tuple[int, int, int], tuple[int, int]] | None:
        """A reshape/tile run that repeats rows and columns of a feature map (the converter's UpSampling2D, also
        fused with a preceding Reshape): (op indices, the map's [h, w, c], the upsampled [H, W]), else None.
        Decided on the index map: the positions of the source's elements pushed through the run's reshapes and
        tiles must equal a nearest-neighbour upsampling of the source viewed as [1, h, w, c]."""
        chain = self._move_chain(ops, k)
        if not chain:
            return None
        src = [int(d) for d in self.sg.tensors[ops[k].inputs[0]].shape]
        idx = np.arange(int(np.prod(src))).reshape(src)
        tiled: int | None = None  # the axis the last TILE repeated
        for j in chain:
            code, o = self.codes[ops[j].opcodeIndex], ops[j]
            arg = self._data(o.inputs[1]) if len(o.inputs) > 1 and o.inputs[1] >= 0 else None
            arg = [int(v) for v in arg.reshape(-1)] if arg is not None else None
            try:  # the shapes follow from the ops' constants: the file's static shapes can be stale
                if code == "TILE" and arg is not None and len(arg) == idx.ndim:
                    idx = np.tile(idx, arg)
                    grown = [a for a, m in enumerate(arg) if m != 1]
                    tiled = grown[0] if len(grown) == 1 and grown[0] >= 2 else None
                    continue
                elif code == "EXPAND_DIMS" and arg is not None and len(arg) == 1:
                    idx = np.expand_dims(idx, arg[0])
                elif code == "RESHAPE" and arg is not None:
                    idx = idx.reshape(arg)
                elif code == "RESHAPE" and tiled is not None and idx.ndim == 5:  # shape computed at run time:
                    idx = idx.reshape(idx.shape[:tiled - 1] + (-1,) + idx.shape[tiled + 1:])  # the repeat's merge
                elif code in ("RESHAPE", "SQUEEZE"):
                    idx = idx.reshape([int(d) for d in self.sg.tensors[o.outputs[0]].shape])
                else:
                    return None
            except ValueError:
                return None
            tiled = None
        n, H, W, c = idx.shape
        if n != 1 or idx.size == 0 or src[0] != 1 or (idx.size // H // W) != c or int(np.prod(src)) % c:
            return None
        hw = int(np.prod(src)) // c
        for h in range(1, H + 1):
            w = hw // h
            if h * w != hw or H % h or W % w:
                continue
            base = np.arange(hw * c).reshape(1, h, w, c)
            if np.array_equal(idx, base.repeat(H // h, axis=1).repeat(W // w, axis=2)):
                return chain, (h, w, c), (H, W)
        return None

    def _repeat(self, ops: list[Any], k: int) -> list[int]:
        """A repeat of rows and/or columns as a nearest-neighbour resize (half-pixel centres: index i // factor),
        after a reshape to [1, h, w, c] when the run starts from another shape."""
        chain, (h, w, c), size = self._repeat_at(ops, k)
        x = self.tensor(ops[k].inputs[0])
        if tuple(self.g.tensors[x].shape) != (1, h, w, c):
            name = f"{self._tname(ops[chain[-1]].outputs[0])}_map"
            op = self.g.add_op(OpKind.RESHAPE, [x], name, {"shape": (h, w, c)}, origin=name, output_name=name)
            self.g.tensors[op.outputs[0]].quant = self.g.tensors[x].quant
            x = op.outputs[0]
        self.add(OpKind.RESIZE_NEAREST, [x], ops[chain[-1]].outputs[0], {"size": list(size), "half_pixel_centers": True})
        return chain

    def _conv_attrs(self, opt: Any, dilation: tuple[int, int] | None = None) -> dict:
        return {"strides": (opt.strideH, opt.strideW), "padding": "same" if opt.padding == 0 else "valid",
                "dilation": dilation or (opt.dilationHFactor, opt.dilationWFactor),
                "activation": self._act(opt.fusedActivationFunction)}

    def _act(self, code: int) -> str:
        if code not in _ACT:
            raise UnsupportedLayerError(f"fused activation {code} is not supported (relu and relu6 are)")
        return _ACT[code]

    def _op(self, code: str, o: Any, dilation: tuple[int, int] | None = None, padding: str | None = None,
            out_idx: int | None = None) -> None:
        ins = [i for i in o.inputs]
        out = o.outputs[0] if out_idx is None else out_idx
        opt = o.builtinOptions
        x = self.tensor(ins[2] if code == "TRANSPOSE_CONV" else ins[0])  # its first input is the output shape
        if code in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            args = [x, self.tensor(ins[1])] + ([self.tensor(ins[2])] if len(ins) > 2 and ins[2] >= 0 else [])
            attrs = self._conv_attrs(opt, dilation)
            if padding:
                attrs["padding"] = padding
            if code == "CONV_2D":
                cin = self.g.tensors[x].shape[-1]
                ig = self.g.tensors[args[1]].shape[-1]
                attrs["groups"] = cin // ig
                self.add(OpKind.CONV2D, args, out, attrs)
            else:
                attrs["depth_multiplier"] = opt.depthMultiplier or 1
                self.add(OpKind.DEPTHWISE_CONV2D, args, out, attrs)
        elif code == "TRANSPOSE_CONV":  # inputs: output shape (computed or constant), weights, input, bias
            args = [x, self.tensor(ins[1])] + ([self.tensor(ins[3])] if len(ins) > 3 and ins[3] >= 0 else [])
            act = self._act(opt.fusedActivationFunction) if hasattr(opt, "fusedActivationFunction") else "none"
            size = tuple(int(d) for d in self.sg.tensors[out].shape[1:3])
            self.add(OpKind.TRANSPOSE_CONV2D, args, out, {"strides": (opt.strideH, opt.strideW), "activation": act,
                                                          "padding": "same" if opt.padding == 0 else "valid",
                                                          "out_size": size})
        elif code == "FULLY_CONNECTED":
            xs = self.g.tensors[x].shape
            w = self.tensor(ins[1])
            n_in = self.g.tensors[w].shape[1]
            keep = bool(getattr(opt, "keepNumDims", False))  # [1, ..., I] -> [1, ..., O]: Dense on the last axis
            if not (keep and xs[-1] == n_in) and (len(xs) != 2 or xs[-1] != n_in):
                flat = self.g.unique_tensor_name(f"{x}/flat")
                q = self.g.tensors[x].quant
                x = self.g.add_op(OpKind.RESHAPE, [x], flat, {"shape": (n_in,)}, output_name=flat).outputs[0]
                self.g.tensors[x].quant = q
            args = [x, w] + ([self.tensor(ins[2])] if len(ins) > 2 and ins[2] >= 0 else [])
            self.add(OpKind.DENSE, args, out, {"activation": self._act(opt.fusedActivationFunction)})
        elif code == "DEQUANTIZE" and self.g.tensors[x].is_const:  # float16 (or int8) weights of a float model
            self.names[out] = x
        elif code in _UNARY:
            self.add(_UNARY[code], [x], out)
        elif code == "LEAKY_RELU":
            self.add(OpKind.LEAKY_RELU, [x], out, {"alpha": float(np.float32(opt.alpha))})
        elif code == "PRELU":
            self._prelu(x, ins[1], out)
        elif code == "GELU":
            self.add(OpKind.GELU, [x], out, {"approximate": bool(opt.approximate) if opt is not None else False})
        elif code == "SOFTMAX":
            self.add(OpKind.SOFTMAX, [x], out, {"beta": float(np.float32(opt.beta))})
        elif code in ("ADD", "MUL", "SUB"):
            act = self._act(opt.fusedActivationFunction) if opt is not None else "none"
            kind = {"ADD": OpKind.ADD, "MUL": OpKind.MUL, "SUB": OpKind.SUB}[code]
            self.add(kind, [x, self.tensor(ins[1])], out, {"activation": act})
        elif code == "SQUARED_DIFFERENCE":
            self.add(OpKind.SQUARED_DIFFERENCE, [x, self.tensor(ins[1])], out)
        elif code in ("MAXIMUM", "MINIMUM"):
            self.add(OpKind.MAXIMUM if code == "MAXIMUM" else OpKind.MINIMUM, [x, self.tensor(ins[1])], out)
        elif code in ("SPLIT", "SPLIT_V"):  # one slice op per output
            if code == "SPLIT":
                axis_idx, x = ins[0], self.tensor(ins[1])
            else:
                axis_idx = ins[2]
            rank = len(self.g.tensors[x].shape)
            axis = int(self._const(axis_idx, f"{code} axis").reshape(-1)[0]) % rank
            if axis == 0:
                raise UnsupportedLayerError(f"{code} writing {self._short(o.outputs[0])!r} splits the batch axis")
            deq = self.g.producer(x)  # a float split of a dequantized tensor (the converter's float island in an
            if deq is not None and deq.kind == OpKind.DEQUANTIZE:  # unrolled int8 LSTM): slice, then dequantize
                x = deq.inputs[0]
            begin = 0
            for i in o.outputs:
                size = int(self.sg.tensors[i].shape[axis])
                attrs = {"axis": axis, "begin": begin, "length": size}
                if deq is None or deq.kind != OpKind.DEQUANTIZE:
                    self.add(OpKind.SLICE, [x], i, attrs)
                else:
                    part = self.g.unique_tensor_name(f"{self._tname(i)}/quantized")
                    y = self.g.add_op(OpKind.SLICE, [x], self.g.unique_op_name(part), attrs, origin=self._tname(i),
                                      output_name=part).outputs[0]
                    self.g.tensors[y].dtype, self.g.tensors[y].quant = self.g.tensors[x].dtype, self.g.tensors[x].quant
                    self.add(OpKind.DEQUANTIZE, [y], i)
                begin += size
        elif code == "UNPACK":
            self._unpack(o, x)
        elif code == "PACK":
            self._pack(o, out)
        elif code == "UNIDIRECTIONAL_SEQUENCE_LSTM":
            read_lstm(self, o, x, out)
        elif code == "SVDF":
            read_svdf(self, o, x, out)
        elif code == "STRIDED_SLICE":  # of activations (Cropping2D/1D): one slice op per cropped axis
            self._strided_slice(o, x, out)
        elif code == "TRANSPOSE":
            perm = tuple(int(v) for v in self._const(ins[1], "TRANSPOSE permutation").reshape(-1))
            if not perm or perm[0] != 0:
                raise UnsupportedLayerError(f"TRANSPOSE writing {self._short(out)!r} moves the batch axis {perm}")
            self.add(OpKind.TRANSPOSE, [x], out, {"perm": perm})
        elif code == "REVERSE_V2":
            rank = len(self.g.tensors[x].shape)
            axes = [int(v) % rank for v in self._const(ins[1], "REVERSE_V2 axis").reshape(-1)]
            if len(axes) != 1 or axes[0] == 0:
                raise UnsupportedLayerError(f"REVERSE_V2 writing {self._short(out)!r} reverses axes {axes} "
                                            "(one non-batch axis only)")
            self.add(OpKind.REVERSE, [x], out, {"axis": axes[0]})
        elif code in ("RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR"):
            size = tuple(int(v) for v in self._const(ins[1], f"{code} size").reshape(-1))
            kind = OpKind.RESIZE_NEAREST if code == "RESIZE_NEAREST_NEIGHBOR" else OpKind.RESIZE_BILINEAR
            self.add(kind, [x], out, {"size": size, "align_corners": bool(opt.alignCorners),
                                                       "half_pixel_centers": bool(opt.halfPixelCenters)})
        elif code in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            kind = OpKind.MAX_POOL2D if code == "MAX_POOL_2D" else OpKind.AVG_POOL2D
            self.add(kind, [x], out, {"pool_size": (opt.filterHeight, opt.filterWidth),
                                      "strides": (opt.strideH, opt.strideW),
                                      "padding": "same" if opt.padding == 0 else "valid",
                                      "activation": self._act(opt.fusedActivationFunction)})
        elif code in ("RESHAPE", "EXPAND_DIMS", "SQUEEZE"):  # Conv1D's [N, L, C] <-> [N, 1, L, C] too
            shape = tuple(int(d) for d in self.sg.tensors[out].shape)
            if shape and shape[0] != 1 and self.g.tensors[x].shape[0] == 1:
                self._time_major(o, x, out, shape)
            else:
                self.add(OpKind.RESHAPE, [x], out, {"shape": shape[1:]})
        elif code == "CONCATENATION":
            args = [self.tensor(i) for i in ins]
            axis = opt.axis % len(self.g.tensors[x].shape)
            self.add(OpKind.CONCAT, args, out, {"axis": axis, "activation": self._act(opt.fusedActivationFunction)})
        elif code == "PAD" and self._const(ins[1], "PAD paddings").shape == (3, 2):  # [N, L, C]: Conv1D's causal pad
            pads = self._const(ins[1], "PAD paddings")
            if pads[0].any() or pads[2].any():
                raise UnsupportedLayerError(f"PAD writing {self._short(out)!r}: only padding along the steps is supported")
            name = self._tname(out)
            steps, ch = self.g.tensors[x].shape[1:]
            pad = self.g.add_op(OpKind.PAD, [self._as_4d(x)], self.g.unique_op_name(f"{name}/2d"),
                                {"paddings": ((0, 0), tuple(int(v) for v in pads[1]))},
                                origin=name, output_name=self.g.unique_tensor_name(f"{name}/2d"))
            self._set_out(pad, out)
            self.add(OpKind.RESHAPE, pad.outputs, out, {"shape": (steps + int(pads[1].sum()), ch)})
        elif code == "PAD":
            pads = self._const(ins[1], "PAD paddings")
            if pads.shape != (4, 2) or pads[0].any() or pads[3].any():
                raise UnsupportedLayerError(f"PAD writing {self._short(out)!r}: only spatial padding is supported")
            self.add(OpKind.PAD, [x], out, {"paddings": (tuple(pads[1]), tuple(pads[2]))})
        elif code in ("MEAN", "REDUCE_MAX"):
            rank = len(self.g.tensors[x].shape)
            axes = sorted(int(a) % rank for a in self._const(ins[1], f"{code} axes").reshape(-1))
            if rank == 3 and axes == [1] and not (opt is not None and opt.keepDims):  # GlobalPooling1D
                x, rank, axes = self._as_4d(x), 4, [1, 2]
            if code == "MEAN" and axes == [rank - 1] and rank >= 2 and opt is not None and opt.keepDims:
                self.add(OpKind.MEAN, [x], out)  # over the last axis (a layer normalization's mean)
                return
            if axes != [1, 2] or rank != 4:
                raise UnsupportedLayerError(f"{code} writing {self._short(out)!r}: only the mean/max over height "
                                            "and width of a 4-D tensor is supported")
            attrs = {"keepdims": bool(opt.keepDims) if opt is not None else False}
            if code == "MEAN" and self.integer:
                attrs["requantize"] = True
            self.add(OpKind.GLOBAL_AVG_POOL if code == "MEAN" else OpKind.GLOBAL_MAX_POOL, [x], out, attrs)
        else:  # pragma: no cover - _check_supported lists every code handled here
            raise UnsupportedLayerError(f"TFLite operator {code} is not supported")

    def _strided_slice(self, o: Any, x: str, out: int) -> None:
        opt, shape = o.builtinOptions, self.g.tensors[x].shape
        begin, end, strides = (self._const(o.inputs[i], "STRIDED_SLICE " + w).reshape(-1)
                               for i, w in ((1, "begin"), (2, "end"), (3, "strides")))
        shrink = int(opt.shrinkAxisMask or 0)
        if np.any(strides != 1) or opt.ellipsisMask or opt.newAxisMask or shrink & 1:
            raise UnsupportedLayerError(f"STRIDED_SLICE writing {self._short(out)!r}: only a slice with stride 1 "
                                        "that keeps every axis is supported")
        cuts = []
        for axis, dim in enumerate(shape):
            b = 0 if opt.beginMask >> axis & 1 else int(begin[axis])
            e = dim if opt.endMask >> axis & 1 else int(end[axis]) + (b if getattr(opt, "offset", False) else 0)
            b, e = (min(max(v + dim if v < 0 else v, 0), dim) for v in (b, e))
            if shrink >> axis & 1:  # one index, axis dropped (the last step after an LSTM): end is begin + 1
                e = b + 1
            if (b, e) != (0, dim):
                if axis == 0 or e <= b:
                    raise UnsupportedLayerError(f"STRIDED_SLICE writing {self._short(out)!r} slices the batch axis "
                                                "or nothing")
                cuts.append((axis, b, e - b))
        if not cuts:
            self.add(OpKind.RESHAPE, [x], out, {"shape": shape[1:]})
            return
        src = self.g.tensors[x]
        for axis, b, n in cuts[:-1]:
            name = self.g.unique_tensor_name(f"{self._tname(out)}/axis{axis}")
            x = self.g.add_op(OpKind.SLICE, [x], self.g.unique_op_name(name), {"axis": axis, "begin": b, "length": n},
                              origin=self._tname(out), output_name=name).outputs[0]
            self.g.tensors[x].dtype, self.g.tensors[x].quant = src.dtype, src.quant
        axis, b, n = cuts[-1]
        if shrink:  # slice, then drop the shrunk axes
            name = self.g.unique_tensor_name(f"{self._tname(out)}/sliced")
            x = self.g.add_op(OpKind.SLICE, [x], self.g.unique_op_name(name), {"axis": axis, "begin": b, "length": n},
                              origin=self._tname(out), output_name=name).outputs[0]
            self.g.tensors[x].dtype, self.g.tensors[x].quant = src.dtype, src.quant
            self.add(OpKind.RESHAPE, [x], out, {"shape": tuple(int(d) for d in self.sg.tensors[out].shape[1:])})
            return
        self.add(OpKind.SLICE, [x], out, {"axis": axis, "begin": b, "length": n})

    def _time_major(self, o: Any, x: str, out: int, shape: tuple[int, ...]) -> None:
        """Batch-1 reshapes of an unrolled Keras 3 recurrent layer, kept with a batch axis of 1 in front: [1, T, F]
        -> [T, 1, F] read only by UNPACK (the steps moved to the batch axis), and [1, K] -> [K] read only by
        element-wise ADD/SUB/MUL (the batch axis dropped; they broadcast the same)."""
        readers = {self.codes[r.opcodeIndex] for r in self.ops if out in list(r.inputs)}
        dropped = shape == tuple(self.g.tensors[x].shape[1:])
        if out in list(self.sg.outputs) or not readers or not readers <= ({"ADD", "SUB", "MUL"} if dropped
                                                                          else {"UNPACK"}):
            raise UnsupportedLayerError(f"{self.codes[o.opcodeIndex]} writing {self._short(out)!r} moves data into "
                                        "the batch axis")
        name = self._tname(out)
        op = self.g.add_op(OpKind.RESHAPE, [x], name, {"shape": shape}, origin=name, output_name=name)
        self._set_out(op, out)
        if not dropped:
            self.time_major.add(out)

    def _pack(self, o: Any, out: int) -> None:
        """PACK of activations (an unrolled Keras 3 recurrent layer's steps): each input reshaped with the new axis,
        then concatenated along it; stacking along axis 0 gives a time-major tensor (batch axis of 1 kept in front)."""
        axis = int(o.builtinOptions.axis) % (len(self.sg.tensors[o.inputs[0]].shape) + 1)
        xs = [self.tensor(i) for i in o.inputs]
        if any(i in self.time_major for i in o.inputs) or (axis == 0 and any(self.g.tensors[x].shape[0] != 1
                                                                             for x in xs)):
            raise UnsupportedLayerError(f"PACK writing {self._short(out)!r} stacks along the batch axis")
        pos, name = axis + (axis == 0), self._tname(out)
        parts = []
        for k, x in enumerate(xs):
            src = self.g.tensors[x]
            shape = list(src.shape)
            shape.insert(pos, 1)
            part = self.g.unique_tensor_name(f"{name}/{k}")
            y = self.g.add_op(OpKind.RESHAPE, [x], self.g.unique_op_name(part), {"shape": tuple(shape[1:])},
                              origin=name, output_name=part).outputs[0]
            self.g.tensors[y].dtype, self.g.tensors[y].quant = src.dtype, src.quant
            parts.append(y)
        op = self.g.add_op(OpKind.CONCAT, parts, name, {"axis": pos, "activation": "none"}, origin=name,
                           output_name=name)
        self._set_out(op, out)
        if axis == 0:
            self.time_major.add(out)

    def _unpack(self, o: Any, x: str) -> None:
        """UNPACK along a non-batch axis (or any axis of a time-major tensor, whose batch axis the IR keeps in
        front): output i is the length-1 slice at i with that axis dropped."""
        src = self.g.tensors[x]
        folded = o.inputs[0] in self.time_major
        axis = int(o.builtinOptions.axis) % (len(src.shape) - folded) + folded
        if axis == 0:
            raise UnsupportedLayerError(f"UNPACK writing {self._short(o.outputs[0])!r} unstacks the batch axis")
        for i, out in enumerate(o.outputs):
            name = self.g.unique_tensor_name(f"{self._tname(out)}/sliced")
            y = self.g.add_op(OpKind.SLICE, [x], self.g.unique_op_name(name), {"axis": axis, "begin": i, "length": 1},
                              origin=self._tname(out), output_name=name).outputs[0]
            self.g.tensors[y].dtype, self.g.tensors[y].quant = src.dtype, src.quant
            self.add(OpKind.RESHAPE, [y], out, {"shape": tuple(int(d) for d in self.sg.tensors[out].shape[1:])})

    def _prelu(self, x: str, alpha_idx: int, out: int) -> None:
        """PRELU: alpha shaped like the input without its batch axis (leading 1s dropped), one int8 scale."""
        alpha = self.tensor(alpha_idx)
        t = self.g.tensors[alpha]
        if not t.is_const:
            raise UnsupportedLayerError(f"PRELU writing {self._short(out)!r}: alpha must be a constant")
        rank = len(self.g.tensors[x].shape) - 1
        shape = tuple(t.shape)
        while len(shape) > rank and shape[0] == 1:
            shape = shape[1:]
        if t.quant is not None and t.quant.scale.size > 1:
            raise UnsupportedLayerError(f"PRELU writing {self._short(out)!r}: per-channel alpha scales are not "
                                        "supported (TFLite's PRELU takes one)")
        if shape != tuple(t.shape):
            name = self.g.unique_tensor_name(f"{t.name}_alpha")
            self.g.add_tensor(Tensor(name, shape, t.dtype, t.data.reshape(shape), t.quant))
            alpha = name
        self.add(OpKind.PRELU, [x, alpha], out)

    def _as_4d(self, x: str) -> str:
        """[N, L, C] -> [N, 1, L, C] (same dtype and quantization), for 1-D ops run as 2-D ones."""
        src = self.g.tensors[x]
        _, steps, ch = src.shape
        name = self.g.unique_tensor_name(f"{x}/2d")
        y = self.g.add_op(OpKind.RESHAPE, [x], self.g.unique_op_name(name), {"shape": (1, steps, ch)},
                          output_name=name).outputs[0]
        self.g.tensors[y].dtype, self.g.tensors[y].quant = src.dtype, src.quant
        return y

    def _const(self, i: int, what: str) -> np.ndarray:
        data = self._data(i)
        if data is None:
            raise UnsupportedLayerError(f"{what} ({self._short(i)!r}) must be a constant")
        return data

    def _dilated(self, ops: list[Any], k: int) -> tuple[int, int]:
        """SPACE_TO_BATCH_ND -> conv -> BATCH_TO_SPACE_ND (the converter's dilated conv) as one conv."""
        s2b = ops[k]
        nxt = [j for j in range(k + 1, min(k + 3, len(ops)))]
        conv = next((j for j in nxt if s2b.outputs[0] in list(ops[j].inputs)), None)
        code = self.codes[ops[conv].opcodeIndex] if conv is not None else ""
        b2s = next((j for j in range((conv or k) + 1, min((conv or k) + 3, len(ops)))
                    if conv is not None and ops[conv].outputs[0] in list(ops[j].inputs)
                    and self.codes[ops[j].opcodeIndex] == "BATCH_TO_SPACE_ND"), None)
        if code not in ("CONV_2D", "DEPTHWISE_CONV_2D") or b2s is None:
            raise UnsupportedLayerError(f"SPACE_TO_BATCH_ND writing {self._short(s2b.outputs[0])!r} is only "
                                        "supported as part of a dilated convolution")
        block = tuple(int(v) for v in self._const(s2b.inputs[1], "block shape"))
        pads = self._const(s2b.inputs[2], "paddings")
        crops = self._const(ops[b2s].inputs[2], "crops")
        x = self.sg.tensors[s2b.inputs[0]]
        w = self.sg.tensors[ops[conv].inputs[1]]
        kh, kw = int(w.shape[1]), int(w.shape[2])
        same = [same_padding(int(x.shape[1 + d]), (kh, kw)[d], 1, block[d]) for d in range(2)]
        eff = [(int(pads[d][0]) - int(crops[d][0]), int(pads[d][1]) - int(crops[d][1])) for d in range(2)]
        opt = ops[conv].builtinOptions
        padding = "same" if eff == [tuple(p) for p in same] else "valid" if eff == [(0, 0), (0, 0)] else ""
        if (opt.strideH, opt.strideW) != (1, 1) or opt.padding != 1 or int(crops[0][0]) or int(crops[1][0]) \
                or not padding:
            raise UnsupportedLayerError(f"dilated convolution writing {self._short(ops[b2s].outputs[0])!r}: only "
                                        "stride 1 with 'same' or 'valid' padding is supported")
        self.names[s2b.outputs[0]] = self.tensor(s2b.inputs[0])
        self._op(code, ops[conv], dilation=block, padding=padding, out_idx=ops[b2s].outputs[0])
        return conv, b2s


def fold_float_elu(g: Graph) -> None:
    """The converter keeps ELU (and a layer normalization's NEG) in float: integer DEQUANTIZE -> ELU -> QUANTIZE
    becomes one integer ``elu`` (``neg``) whose table repeats that float path (``float_path``)."""
    cons = g.consumers_map()
    prod = g.producers_map()
    for op in [o for o in g.ops if o.kind in (OpKind.ELU, OpKind.NEG)]:
        deq = prod.get(op.inputs[0])
        users = cons.get(op.outputs[0], [])
        if deq is None or deq.kind != OpKind.DEQUANTIZE or len(users) != 1 or users[0].kind != OpKind.QUANTIZE:
            continue
        q = users[0]
        src, dst = g.tensors[deq.inputs[0]], g.tensors[q.outputs[0]]
        if src.dtype != DType.INT8 or dst.dtype != DType.INT8 or len(cons.get(op.inputs[0], [])) != 1 \
                or op.outputs[0] in g.outputs or op.inputs[0] in g.outputs:
            continue
        op.inputs, op.outputs = [deq.inputs[0]], [q.outputs[0]]
        if op.kind == OpKind.ELU:
            op.attrs["float_path"] = True
        g.ops.remove(deq)
        g.ops.remove(q)
    for op in g.ops:
        if op.kind in (OpKind.ELU, OpKind.GELU, OpKind.NEG) and g.tensors[op.inputs[0]].dtype == DType.FLOAT32:
            raise UnsupportedLayerError(f"{op.kind.value.upper()} writing {short_name(op.outputs[0])!r} runs in float "
                                        "inside an integer model: only DEQUANTIZE -> one ELU or NEG -> QUANTIZE is read")


def read_tflite(path: str) -> Graph:
    """Import an int8 or float32 `.tflite` file into the IR (see the module docstring for the op mapping)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise TinyccError(f"{path}: {e.strerror or e}") from None
    try:
        g = _Reader(data, p.stem).read()
    except (IndexError, AttributeError, TypeError, ValueError, OverflowError) as e:  # bad indices, missing tables
        raise TinyccError(f"{path}: malformed TFLite model ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:120]})") from None
    g.meta["source"]["path"] = p.name
    return g


class TfliteFrontend:
    """Frontend for int8 and float32 `.tflite` files (converter output, or tinycc's own writer)."""

    name = "tflite"
    extensions = (".tflite",)

    def supported_ops(self) -> list[tuple[str, str, list[str]]]:
        """What ``tinycc ops`` lists: (what, dtypes, names); the int32 shape arithmetic the reader drops is named
        by its pattern."""
        shape_only = {"SHAPE", "PACK", "TILE", "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"}
        int16 = sorted(k.value for k in INT16_KINDS)
        return [("operators", "int8 activations (uint8 or float32 at the inputs/outputs), int8 weights, int32 "
                 "bias; int16 activations (16x8: int8 weights, int64/int32 bias) for the kinds "
                 f"{', '.join(int16)}; or float32 (float16 and dynamic-range int8 weights become float32)",
                 sorted(SUPPORTED_OPERATORS - shape_only) +
                 ["SPACE_TO_BATCH_ND + conv + BATCH_TO_SPACE_ND (dilated conv)",
                  "EXPAND_DIMS + TILE + RESHAPE (repeat)", "SHAPE/STRIDED_SLICE/PACK (int32 shape arithmetic, dropped)"])]

    def load(self, path: str) -> Graph:
        return read_tflite(path)


@hookimpl
def tinycc_register_frontends(registry: Any) -> None:
    registry.add_frontend(TfliteFrontend())
