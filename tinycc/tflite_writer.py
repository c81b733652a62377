"""Serialise an IR graph (int8 quantized, float, or mixed) to a TFLite flatbuffer (schema version 3).

Op mapping: conv2d -> CONV_2D, depthwise_conv2d -> DEPTHWISE_CONV_2D, dense -> FULLY_CONNECTED,
relu/relu6/leaky_relu/sigmoid/tanh/hard_swish/softmax -> RELU/RELU6/LEAKY_RELU/LOGISTIC/TANH/
HARD_SWISH/SOFTMAX, prelu -> PRELU (alpha as stored: the input's shape without the batch axis),
elu/gelu -> ELU/GELU (an imported ``float_path`` ELU as DEQUANTIZE + float ELU + QUANTIZE),
max/avg_pool2d -> MAX/AVERAGE_POOL_2D, global_avg_pool -> AVERAGE_POOL_2D
over the whole map (+ RESHAPE without keepdims; input and output share parameters, and MEAN's
arithmetic would differ) or, with ``requantize`` (own output parameters: imported, or quantized by
tinycc), MEAN over axes 1, 2; global_max_pool -> MAX_POOL_2D like the average pool, flatten/reshape ->
RESHAPE (const int32 shape), add/mul/sub/maximum/minimum -> ADD/MUL/SUB/MAXIMUM/MINIMUM, resize_nearest ->
RESIZE_NEAREST_NEIGHBOR (const int32 size), resize_bilinear -> RESIZE_BILINEAR (const int32 size), transpose_conv2d -> TRANSPOSE_CONV
(const int32 output shape; version 4, bias and fused activation), transpose -> TRANSPOSE (const int32 permutation), slice -> SLICE (const int32 begin and
size), concat -> CONCATENATION, reverse -> REVERSE_V2 (const int32 axis, one non-batch axis; a Bidirectional or
``go_backwards`` layer's time reversal), pad -> PAD (const int32
paddings), quantize/dequantize -> QUANTIZE/DEQUANTIZE, lstm -> UNIDIRECTIONAL_SEQUENCE_LSTM (+ a STRIDED_SLICE of
the last step without ``return_sequences``, as the converter writes it), svdf -> SVDF (+ its variable state
tensor). Operator versions are those the TF 2.21
converter emits (int8 table below; float ops are version 1). int16 activations (TFLite's 16x8) are written as
the converter writes them: int16 tensors, int64 biases, ADD/SUB with ``pot_scale_int16`` false (the general
rescaling TFLite and TFLite Micro run). Output bytes are deterministic.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import UnsupportedLayerError
from .ir.graph import Graph, Op
from .ir.ops import MORE_LUT_KINDS, OpKind
from .ir.tensor import DType, QuantParams, Tensor
from .tflite_schema import schema

# operator versions the TF 2.21 converter emits for int8 models (float ops: version 1)
INT8_VERSIONS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4, "RELU": 2, "RELU6": 2,
                 "MAX_POOL_2D": 2, "AVERAGE_POOL_2D": 2, "RESHAPE": 1, "ADD": 2, "MUL": 2, "CONCATENATION": 2,
                 "PAD": 2, "QUANTIZE": 1, "DEQUANTIZE": 2, "LOGISTIC": 2, "TANH": 2, "SOFTMAX": 2,
                 "HARD_SWISH": 1, "LEAKY_RELU": 1, "MEAN": 2, "SUB": 2, "MAXIMUM": 2, "MINIMUM": 2,
                 "RESIZE_NEAREST_NEIGHBOR": 2, "RESIZE_BILINEAR": 3, "TRANSPOSE": 2, "SLICE": 2,
                 "TRANSPOSE_CONV": 4, "UNIDIRECTIONAL_SEQUENCE_LSTM": 1,
                 "STRIDED_SLICE": 2, "PRELU": 1, "ELU": 1, "GELU": 2, "SVDF": 3, "REVERSE_V2": 3,
                 "SQUARED_DIFFERENCE": 2, "RSQRT": 2}
INT16_VERSIONS = {**INT8_VERSIONS, "LEAKY_RELU": 2, "QUANTIZE": 2, "REVERSE_V2": 1}  # what the TF 2.21 converter writes for 16x8
FLOAT_VERSIONS = {"TRANSPOSE_CONV": 4,  # bias input and fused activation
                  "RESIZE_BILINEAR": 3}  # half_pixel_centers (the converter's version)
_UNARY = {OpKind.RELU: "RELU", OpKind.RELU6: "RELU6", OpKind.SIGMOID: "LOGISTIC", OpKind.TANH: "TANH",
          OpKind.HARD_SWISH: "HARD_SWISH"}
_ACT = {"none": 0, "relu": 1, "relu6": 3}
_TYPES = {DType.FLOAT32: 0, DType.INT32: 2, DType.UINT8: 3, DType.INT64: 4, DType.INT16: 7, DType.INT8: 9}


class _Writer:
    def __init__(self, graph: Graph) -> None:
        self.s = schema()
        self.g = graph
        self.buffers: list[Any] = [self.s.BufferT()]
        self.tensors: list[Any] = []
        self.index: dict[str, int] = {}
        self.opcodes: list[tuple[str, int]] = []
        self.operators: list[Any] = []

    def tensor(self, t: Tensor) -> int:
        if t.name in self.index:
            return self.index[t.name]
        s = self.s
        tt = s.TensorT()
        tt.name = t.name.encode()
        tt.shape = np.array(t.shape, np.int32)
        tt.type = _TYPES[t.dtype]
        tt.buffer = 0
        if t.data is not None:
            b = s.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(t.data).astype(t.data.dtype.newbyteorder("<")).tobytes(),
                                   np.uint8)
            self.buffers.append(b)
            tt.buffer = len(self.buffers) - 1
        if t.quant is not None:
            q = s.QuantizationParametersT()
            q.scale = t.quant.scale.astype(np.float32)
            q.zeroPoint = t.quant.zero_point.astype(np.int64)
            q.quantizedDimension = int(t.quant.axis or 0)
            tt.quantization = q
        self.tensors.append(tt)
        self.index[t.name] = len(self.tensors) - 1
        return self.index[t.name]

    def const_i32(self, name: str, values: list[int]) -> int:
        arr = np.array(values, np.int32)
        return self.tensor(Tensor(name, arr.shape, DType.INT32, arr))

    def emit(self, code: str, inputs: list[int], outputs: list[int], opt_type: int = 0, opt: Any = None) -> None:
        data_in = inputs[2] if code == "TRANSPOSE_CONV" else inputs[0]  # after the output shape and weights
        int8 = self.tensors[data_in].type != _TYPES[DType.FLOAT32] or code == "QUANTIZE"
        wide = _TYPES[DType.INT16] in (self.tensors[data_in].type, self.tensors[outputs[0]].type)
        table = INT16_VERSIONS if wide else INT8_VERSIONS
        key = (code, table.get(code, 1) if int8 else FLOAT_VERSIONS.get(code, 1))
        if key not in self.opcodes:
            self.opcodes.append(key)
        o = self.s.OperatorT()
        o.opcodeIndex = self.opcodes.index(key)
        o.inputs = np.array(inputs, np.int32)
        o.outputs = np.array(outputs, np.int32)
        if opt is not None:
            o.builtinOptionsType = opt_type
            o.builtinOptions = opt
        self.operators.append(o)

    def op(self, op: Op) -> None:
        s, g = self.s, self.g
        ins = [self.tensor(g.tensors[t]) for t in op.inputs]
        outs = [self.tensor(g.tensors[t]) for t in op.outputs]
        a, k = op.attrs, op.kind
        if k in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D) and len(ins) == 2:
            ins.append(self._zero_bias(op))  # TFLite's int8 convolutions require a bias
        if k == OpKind.CONV2D:
            if a["groups"] != 1:
                raise UnsupportedLayerError(
                    f"layer {op.origin!r}: grouped convolution ({a['groups']} groups) has no TFLite/TFLite Micro "
                    "reference kernel; use the 'c' target, or depthwise (groups == channels)")
            o = s.Conv2DOptionsT()
            o.padding = 0 if a["padding"] == "same" else 1
            o.strideH, o.strideW = a["strides"]
            o.dilationHFactor, o.dilationWFactor = a["dilation"]
            o.fusedActivationFunction = _ACT[a["activation"]]
            self.emit("CONV_2D", ins, outs, s.BuiltinOptions.Conv2DOptions, o)
        elif k == OpKind.DEPTHWISE_CONV2D:
            o = s.DepthwiseConv2DOptionsT()
            o.padding = 0 if a["padding"] == "same" else 1
            o.strideH, o.strideW = a["strides"]
            o.dilationHFactor, o.dilationWFactor = a["dilation"]
            o.depthMultiplier = a["depth_multiplier"]
            o.fusedActivationFunction = _ACT[a["activation"]]
            self.emit("DEPTHWISE_CONV_2D", ins, outs, s.BuiltinOptions.DepthwiseConv2DOptions, o)
        elif k == OpKind.DENSE:
            o = s.FullyConnectedOptionsT()
            o.fusedActivationFunction = _ACT[a["activation"]]
            o.keepNumDims = len(g.tensors[op.inputs[0]].shape) > 2
            if len(ins) == 2:
                ins.append(-1)
            self.emit("FULLY_CONNECTED", ins, outs, s.BuiltinOptions.FullyConnectedOptions, o)
        elif k in _UNARY:
            self.emit(_UNARY[k], ins, outs)
        elif k == OpKind.LEAKY_RELU:
            o = s.LeakyReluOptionsT()
            o.alpha = float(a["alpha"])
            self.emit("LEAKY_RELU", ins, outs, s.BuiltinOptions.LeakyReluOptions, o)
        elif k == OpKind.PRELU:
            self.emit("PRELU", ins, outs)
        elif k == OpKind.ELU:
            self._elu(op, ins, outs)
        elif k == OpKind.GELU:
            o = s.GeluOptionsT()
            o.approximate = bool(a["approximate"])
            self.emit("GELU", ins, outs, s.BuiltinOptions.GeluOptions, o)
        elif k == OpKind.SOFTMAX:
            o = s.SoftmaxOptionsT()
            o.beta = float(a["beta"])
            self.emit("SOFTMAX", ins, outs, s.BuiltinOptions.SoftmaxOptions, o)
        elif k in (OpKind.MAX_POOL2D, OpKind.AVG_POOL2D):
            self._pool("MAX_POOL_2D" if k == OpKind.MAX_POOL2D else "AVERAGE_POOL_2D", ins, outs,
                       a["pool_size"], a["strides"], a["padding"], a["activation"])
        elif k == OpKind.GLOBAL_AVG_POOL and a.get("requantize"):  # imported MEAN: its own arithmetic
            axes = self.tensor(Tensor(f"{op.name}/axes", (2,), DType.INT32, np.array([1, 2], np.int32)))
            o = s.ReducerOptionsT()
            o.keepDims = bool(a["keepdims"])
            self.emit("MEAN", ins + [axes], outs, s.BuiltinOptions.ReducerOptions, o)
        elif k == OpKind.MEAN:  # over the last axis, kept
            last = len(g.tensors[op.inputs[0]].shape) - 1
            axes = self.tensor(Tensor(f"{op.name}/axes", (1,), DType.INT32, np.array([last], np.int32)))
            o = s.ReducerOptionsT()
            o.keepDims = True
            self.emit("MEAN", ins + [axes], outs, s.BuiltinOptions.ReducerOptions, o)
        elif k == OpKind.SQUARED_DIFFERENCE:
            self.emit("SQUARED_DIFFERENCE", ins, outs, s.BuiltinOptions.SquaredDifferenceOptions,
                      s.SquaredDifferenceOptionsT())
        elif k == OpKind.RSQRT:
            self.emit("RSQRT", ins, outs)
        elif k == OpKind.NEG:
            self._neg(op, ins, outs)
        elif k in (OpKind.GLOBAL_AVG_POOL, OpKind.GLOBAL_MAX_POOL):
            x = g.tensors[op.inputs[0]]
            y = g.tensors[op.outputs[0]]
            code = "AVERAGE_POOL_2D" if k == OpKind.GLOBAL_AVG_POOL else "MAX_POOL_2D"
            if a["keepdims"]:
                self._pool(code, ins, outs, x.shape[1:3], (1, 1), "valid", "none")
            else:
                mid = self.tensor(Tensor(f"{y.name}/pooled", (x.shape[0], 1, 1, x.shape[3]), y.dtype, quant=y.quant))
                self._pool(code, ins, [mid], x.shape[1:3], (1, 1), "valid", "none")
                self._reshape([mid], outs, y.shape)
        elif k in (OpKind.FLATTEN, OpKind.RESHAPE):
            self._reshape(ins, outs, g.tensors[op.outputs[0]].shape)
        elif k in (OpKind.ADD, OpKind.MUL):
            o = (s.AddOptionsT if k == OpKind.ADD else s.MulOptionsT)()
            o.fusedActivationFunction = _ACT[a["activation"]]
            if k == OpKind.ADD:
                o.potScaleInt16 = False  # int16: TFLite's general rescaling (the schema's default is the POT one)
            self.emit(k.name, ins, outs, s.BuiltinOptions.AddOptions if k == OpKind.ADD else s.BuiltinOptions.MulOptions, o)
        elif k == OpKind.SUB:
            o = s.SubOptionsT()
            o.fusedActivationFunction = _ACT[a["activation"]]
            o.potScaleInt16 = False
            self.emit("SUB", ins, outs, s.BuiltinOptions.SubOptions, o)
        elif k in (OpKind.MAXIMUM, OpKind.MINIMUM):
            self.emit(k.name, ins, outs, s.BuiltinOptions.MaximumMinimumOptions, s.MaximumMinimumOptionsT())
        elif k == OpKind.RESIZE_NEAREST:
            size = self.const_i32(f"{op.name}/size", list(a["size"]))
            o = s.ResizeNearestNeighborOptionsT()
            o.alignCorners, o.halfPixelCenters = bool(a["align_corners"]), bool(a["half_pixel_centers"])
            self.emit("RESIZE_NEAREST_NEIGHBOR", ins + [size], outs, s.BuiltinOptions.ResizeNearestNeighborOptions, o)
        elif k == OpKind.RESIZE_BILINEAR:
            size = self.const_i32(f"{op.name}/size", list(a["size"]))
            o = s.ResizeBilinearOptionsT()
            o.alignCorners, o.halfPixelCenters = bool(a["align_corners"]), bool(a["half_pixel_centers"])
            self.emit("RESIZE_BILINEAR", ins + [size], outs, s.BuiltinOptions.ResizeBilinearOptions, o)
        elif k == OpKind.TRANSPOSE_CONV2D:
            y = g.tensors[op.outputs[0]]
            shape = self.const_i32(f"{op.name}/output_shape", list(y.shape))
            bias = ins[2:] if len(ins) > 2 else [self._zero_bias(op)]
            o = s.TransposeConvOptionsT()
            o.padding = 0 if a["padding"] == "same" else 1
            o.strideH, o.strideW = a["strides"]
            o.fusedActivationFunction = _ACT[a["activation"]]
            self.emit("TRANSPOSE_CONV", [shape, ins[1], ins[0]] + bias, outs, s.BuiltinOptions.TransposeConvOptions, o)
        elif k == OpKind.SLICE:
            x = g.tensors[op.inputs[0]]
            begin = [a["begin"] if i == a["axis"] else 0 for i in range(len(x.shape))]
            size = [a["length"] if i == a["axis"] else d for i, d in enumerate(x.shape)]
            b, n = self.const_i32(f"{op.name}/begin", begin), self.const_i32(f"{op.name}/size", size)
            self.emit("SLICE", ins + [b, n], outs, s.BuiltinOptions.SliceOptions, s.SliceOptionsT())
        elif k == OpKind.TRANSPOSE:
            perm = self.const_i32(f"{op.name}/perm", list(a["perm"]))
            self.emit("TRANSPOSE", ins + [perm], outs, s.BuiltinOptions.TransposeOptions, s.TransposeOptionsT())
        elif k == OpKind.REVERSE:  # data movement: the output keeps the input's parameters
            axis = self.const_i32(f"{op.name}/axis", [int(a["axis"])])
            self.emit("REVERSE_V2", ins + [axis], outs, s.BuiltinOptions.ReverseV2Options, s.ReverseV2OptionsT())
        elif k == OpKind.CONCAT:
            o = s.ConcatenationOptionsT()
            o.axis = a["axis"]
            o.fusedActivationFunction = _ACT[a["activation"]]
            self.emit("CONCATENATION", ins, outs, s.BuiltinOptions.ConcatenationOptions, o)
        elif k == OpKind.PAD:
            (t, b), (l, r) = a["paddings"]
            pads = self.tensor(Tensor(f"{op.name}/paddings", (4, 2), DType.INT32,
                                      np.array([[0, 0], [t, b], [l, r], [0, 0]], np.int32)))
            self.emit("PAD", ins + [pads], outs, s.BuiltinOptions.PadOptions, s.PadOptionsT())
        elif k in (OpKind.QUANTIZE, OpKind.DEQUANTIZE):
            self.emit(k.name, ins, outs)
        elif k in (OpKind.GRU, OpKind.SIMPLE_RNN):  # tinycc's integer form has no TFLite operator
            raise UnsupportedLayerError(f"layer {op.origin!r} ({k.value}) cannot be written to TFLite (no TFLite "
                                        "operator computes tinycc's integer GRU/SimpleRNN); compile it for --target c "
                                        "or arduino")
        elif k in MORE_LUT_KINDS:  # tinycc's int8 table; the converter writes a float/EXP-LOG chain instead
            raise UnsupportedLayerError(f"layer {op.origin!r} ({k.value}) cannot be written to TFLite (no TFLite "
                                        f"builtin runs {k.value} in int8; tinycc runs it as a 256-entry table); "
                                        "compile it for --target c or arduino")
        elif k == OpKind.LSTM:
            self._lstm(op, ins, outs)
        elif k == OpKind.SVDF:
            self._svdf(op, ins, outs)
        else:
            raise UnsupportedLayerError(f"layer {op.origin!r} ({k.value}) cannot be written to TFLite; "
                                        "`tinycc ops` lists what can")

    def _raw_tensor(self, name: str, shape: tuple[int, ...], type_: int, scale: float | None = None,
                    zero_point: int = 0, variable: bool = False) -> int:
        """A tensor with no IR counterpart (LSTM states and intermediates), optionally quantized."""
        tt = self.s.TensorT()
        tt.name = name.encode()
        tt.shape = np.array(shape, np.int32)
        tt.type = type_
        tt.buffer = 0
        tt.isVariable = variable
        if scale is not None:
            q = self.s.QuantizationParametersT()
            q.scale = np.array([scale], np.float32)
            q.zeroPoint = np.array([zero_point], np.int64)
            tt.quantization = q
        self.tensors.append(tt)
        return len(self.tensors) - 1

    def _svdf(self, op: Op, ins: list[int], outs: list[int]) -> None:
        """SVDF with its zero-initialised variable state tensor ``[batch, filters * memory]`` (int16 of scale
        ``state_scale`` in int8; the fused activation is written as read, though TFLite's int8 kernels ignore it;
        a zero bias where the op has none)."""
        g, a = self.g, op.attrs
        x = g.tensors[op.inputs[0]]
        filters, memory = g.tensors[op.inputs[2]].shape
        int8 = x.dtype != DType.FLOAT32
        if int8:
            state = self._raw_tensor(f"{op.name}/state", (x.shape[0], filters * memory), 7, float(a["state_scale"]),
                                     0, True)
        else:
            state = self._raw_tensor(f"{op.name}/state", (x.shape[0], filters * memory), _TYPES[DType.FLOAT32],
                                     variable=True)
        o = self.s.SVDFOptionsT()
        o.rank = int(a["rank"])
        o.fusedActivationFunction = _ACT[a["activation"]]
        bias = ins[3] if len(ins) > 3 else -1
        if bias < 0:  # TFLite Micro's SVDF reads the bias's scale unconditionally: a zero bias instead of none
            units = filters // int(a["rank"])
            q = None
            if int8:
                wt_s = np.float32(g.tensors[op.inputs[2]].quant.scale[0])
                q = QuantParams([float(np.float32(np.float32(a["state_scale"]) * wt_s))], [0])
            bias = self.tensor(Tensor(f"{op.name}/bias", (units,), DType.INT32 if int8 else DType.FLOAT32,
                                      np.zeros(units, np.int32 if int8 else np.float32), q))
        self.emit("SVDF", ins[:3] + [bias, state], outs, self.s.BuiltinOptions.SVDFOptions, o)

    def _lstm(self, op: Op, ins: list[int], outs: list[int]) -> None:
        """UNIDIRECTIONAL_SEQUENCE_LSTM (24 inputs, batch-major) as the converter writes it: one weight and bias
        tensor per gate, zero-initialised variable state tensors, and for int8 an int16 cell state of scale
        2**cell_power plus the five intermediates of TFLite's 8x8_16 kernel; ``return_sequences=False`` adds a
        SLICE of the last step and a RESHAPE."""
        from .ir.lstm import gate_scales

        g, a = self.g, op.attrs
        x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        units = g.tensors[op.inputs[2]].shape[1]
        n, steps = x.shape[0], x.shape[1]
        int8 = x.dtype != DType.FLOAT32
        gate_t: list[list[int]] = [[], [], []]
        for j, t in enumerate(op.inputs[1:4] if len(op.inputs) > 3 else list(op.inputs[1:3]) + [None]):
            for k in range(4):
                name = f"{op.name}/{('w_in', 'w_rec', 'bias')[j]}_{'ifco'[k]}"
                if t is None:
                    src = None
                    data = np.zeros(units, np.int32 if int8 else np.float32)
                else:
                    src = g.tensors[t]
                    data = src.data[k * units:(k + 1) * units]
                if int8 and j < 2:
                    sc = float(gate_scales(src.quant.scale, units)[k])
                    q = QuantParams([sc], [0])
                elif int8:
                    wsc = float(gate_scales(g.tensors[op.inputs[1]].quant.scale, units)[k])
                    q = QuantParams([np.float32(np.float32(x.quant.scale[0]) * np.float32(wsc))], [0])
                else:
                    q = None
                dt = DType.FLOAT32 if not int8 else (DType.INT8 if j < 2 else DType.INT32)
                gate_t[j].append(self.tensor(Tensor(name, data.shape, dt, np.ascontiguousarray(data), q)))
        f32, i8, i16 = _TYPES[DType.FLOAT32], _TYPES[DType.INT8], 7
        yq = y.quant
        if int8:
            out_s, out_zp = float(yq.scale[0]), int(yq.zero_point[0])
            h = self._raw_tensor(f"{op.name}/output_state", (n, units), i8, out_s, out_zp, True)
            c = self._raw_tensor(f"{op.name}/cell_state", (n, units), i16, 2.0 ** a["cell_power"], 0, True)
        else:
            h = self._raw_tensor(f"{op.name}/output_state", (n, units), f32, variable=True)
            c = self._raw_tensor(f"{op.name}/cell_state", (n, units), f32, variable=True)
        inputs = [ins[0]] + gate_t[0] + gate_t[1] + [-1, -1, -1] + gate_t[2] + [-1, -1, h, c, -1, -1, -1, -1]
        seq = outs[0]
        if not a["return_sequences"]:
            seq = self._raw_tensor(f"{y.name}/sequence", (n, steps, units), i8 if int8 else f32,
                                   *((float(yq.scale[0]), int(yq.zero_point[0])) if int8 else (None, 0)))
        o = self.s.UnidirectionalSequenceLSTMOptionsT()
        o.fusedActivationFunction = 4  # tanh
        o.cellClip = float(a["cell_clip"])
        o.projClip = 0.0
        o.timeMajor = False
        self.emit("UNIDIRECTIONAL_SEQUENCE_LSTM", inputs, [seq], self.s.BuiltinOptions.UnidirectionalSequenceLSTMOptions,
                  o)
        if int8:
            self.operators[-1].intermediates = np.array(
                [self._raw_tensor(f"{op.name}/{w}_intermediate", (0,), f32) for w in
                 ("input_to_input", "input_to_forget", "input_to_cell", "input_to_output")] +
                [self._raw_tensor(f"{op.name}/effective_hidden_scale_intermediate", (0,), i8, out_s, out_zp)],
                np.int32)
        if not a["return_sequences"]:  # the converter's form: STRIDED_SLICE of the last step, time axis shrunk
            b = self.const_i32(f"{op.name}/begin", [0, -1, 0])
            e = self.const_i32(f"{op.name}/end", [0, 0, 0])
            st = self.const_i32(f"{op.name}/strides", [1, 1, 1])
            o = self.s.StridedSliceOptionsT()
            o.beginMask, o.endMask, o.shrinkAxisMask = 5, 5, 2
            self.emit("STRIDED_SLICE", [seq, b, e, st], outs, self.s.BuiltinOptions.StridedSliceOptions, o)

    def _zero_bias(self, op: Op) -> int:
        x, w = self.g.tensors[op.inputs[0]], self.g.tensors[op.inputs[1]]
        n = w.shape[3] if op.kind == OpKind.DEPTHWISE_CONV2D else w.shape[0]
        name = f"{op.name}/zero_bias"
        if w.quant is None:
            return self.tensor(Tensor(name, (n,), DType.FLOAT32, np.zeros(n, np.float32)))
        scale = (np.float32(x.quant.scale[0]) * np.broadcast_to(w.quant.scale, (n,))).astype(np.float32)
        dt = DType.INT64 if x.dtype == DType.INT16 else DType.INT32  # 16x8: int64 bias
        return self.tensor(Tensor(name, (n,), dt, np.zeros(n, dt.numpy), QuantParams(scale, np.zeros(n, np.int64), 0)))

    def _pool(self, code: str, ins: list[int], outs: list[int], size: Any, strides: Any, padding: str, act: str) -> None:
        o = self.s.Pool2DOptionsT()
        o.padding = 0 if padding == "same" else 1
        o.filterHeight, o.filterWidth = int(size[0]), int(size[1])
        o.strideH, o.strideW = int(strides[0]), int(strides[1])
        o.fusedActivationFunction = _ACT[act]
        self.emit(code, ins, outs, self.s.BuiltinOptions.Pool2DOptions, o)

    def _elu(self, op: Op, ins: list[int], outs: list[int]) -> None:
        """ELU (TFLite's has no alpha); ``float_path``: DEQUANTIZE, float ELU, QUANTIZE, as the converter wrote it."""
        if op.attrs["alpha"] != 1.0:
            raise UnsupportedLayerError(f"{op.describe()}: TFLite's ELU has no alpha (got {op.attrs['alpha']:g})")
        if not op.attrs["float_path"] or self.g.tensors[op.inputs[0]].dtype == DType.FLOAT32:
            self.emit("ELU", ins, outs)
            return
        shape = self.g.tensors[op.outputs[0]].shape
        mid = [self.tensor(Tensor(f"{op.name}/{n}", shape, DType.FLOAT32)) for n in ("dequantized", "elu")]
        self.emit("DEQUANTIZE", ins, mid[:1])
        self.emit("ELU", mid[:1], mid[1:])
        self.emit("QUANTIZE", mid[1:], outs)

    def _neg(self, op: Op, ins: list[int], outs: list[int]) -> None:
        """NEG; int8 as the converter writes it (TFLite Micro's NEG is float-only): DEQUANTIZE, NEG, QUANTIZE."""
        if self.g.tensors[op.inputs[0]].dtype == DType.FLOAT32:
            self.emit("NEG", ins, outs, self.s.BuiltinOptions.NegOptions, self.s.NegOptionsT())
            return
        shape = self.g.tensors[op.outputs[0]].shape
        mid = [self.tensor(Tensor(f"{op.name}/{n}", shape, DType.FLOAT32)) for n in ("dequantized", "neg")]
        self.emit("DEQUANTIZE", ins, mid[:1])
        self.emit("NEG", mid[:1], mid[1:], self.s.BuiltinOptions.NegOptions, self.s.NegOptionsT())
        self.emit("QUANTIZE", mid[1:], outs)

    def _reshape(self, ins: list[int], outs: list[int], shape: tuple[int, ...]) -> None:
        name = f"{self.tensors[outs[0]].name.decode()}/shape"
        shp = self.const_i32(name, list(shape))
        o = self.s.ReshapeOptionsT()
        o.newShape = np.array(shape, np.int32)
        self.emit("RESHAPE", ins[:1] + [shp], outs, self.s.BuiltinOptions.ReshapeOptions, o)

    def finish(self) -> bytes:
        import flatbuffers

        s = self.s
        for t in self.g.inputs:
            self.tensor(self.g.tensors[t])
        for op in self.g.ops:
            self.op(op)
        sub = s.SubGraphT()
        sub.tensors = self.tensors
        sub.inputs = np.array([self.index[t] for t in self.g.inputs], np.int32)
        sub.outputs = np.array([self.index[t] for t in self.g.outputs], np.int32)
        sub.operators = self.operators
        sub.name = b"main"
        codes = []
        for name, version in self.opcodes:
            oc = s.OperatorCodeT()
            code = getattr(s.BuiltinOperator, name)
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = version
            codes.append(oc)
        m = s.ModelT()
        m.version = 3
        m.operatorCodes = codes
        m.subgraphs = [sub]
        m.description = b"tinycc"
        m.buffers = self.buffers
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def write_tflite(graph: Graph) -> bytes:
    """The graph as TFLite flatbuffer bytes (int8 tensors carry their quantization).

    Raises UnsupportedLayerError (naming the layer) for ops TFLite's kernels cannot run.
    """
    return _Writer(graph).finish()


def operator_names(tflite: bytes) -> list[str]:
    """Builtin operator names used by a .tflite model, in its operator-code order."""
    return [name for name, _ in operator_versions(tflite)]


def operator_versions(tflite: bytes) -> list[tuple[str, int]]:
    """(builtin operator name, version) of every operator code of a .tflite model."""
    from .tflite_schema import builtin_name

    m = schema().ModelT.InitFromPackedBuf(tflite, 0)
    return [(builtin_name(max(oc.builtinCode, oc.deprecatedBuiltinCode)), int(oc.version)) for oc in m.operatorCodes]
