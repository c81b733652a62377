"""Quantization report: per-tensor parameters, clipping and SQNR, float vs int8 accuracy.

For every int8 activation that also exists in the float graph: its scale and zero point, the
share of float values (on the calibration samples) that saturate, i.e. lie more than half a step
outside the int8 grid ``[scale*(-128.5-zp), scale*(127.5-zp)]`` (min/max ranges give 0 here), and the SQNR in dB of the dequantized int8 values
against the float values on the same inputs: ``10*log10(sum(f^2) / sum((f - dq)^2))``
(``inf`` when equal). With labelled evaluation data: top-1 accuracy of both graphs. int16 activations (TFLite's
16x8, whole model or chosen layers) are reported the same way, with their type; ``add_baseline`` adds the SQNR
of the plain int8 quantization of the same tensors, so the table shows what int16 gains per layer.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ...errors import TinyccError
from ...ir.graph import Graph
from ...ir.interpreter import run
from ...ir.interpreter_int8 import run_int8
from ...ir.ops import OpKind
from ...ir.quant import dequantize, quantize
from ...ir.tensor import DType


@dataclass
class TensorReport:
    """One int8 activation tensor."""

    tensor: str
    op: str
    layer: str
    scale: float
    zero_point: int
    clipped: float  # share of float values that saturate (beyond half a step outside the grid)
    sqnr_db: float  # inf when int8 reproduces float exactly
    dtype: str = "int8"  # int8 or int16
    int8_sqnr_db: float | None = None  # the same tensor's SQNR in the all-int8 quantization (``add_baseline``)


@dataclass
class QuantReport:
    """What quantization did to a model; ``render()`` gives a text table, ``to_dict()`` JSON."""

    samples: int
    tensors: list[TensorReport] = field(default_factory=list)
    output_sqnr_db: float = math.inf
    eval_samples: int = 0
    float_accuracy: float | None = None
    int8_accuracy: float | None = None
    baseline_output_sqnr_db: float | None = None  # all-int8 output SQNR (``add_baseline``)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: infinite SQNR becomes the string "inf"."""
        def fix(v: Any) -> Any:
            return "inf" if isinstance(v, float) and math.isinf(v) else v

        d = asdict(self)
        d["tensors"] = [{k: fix(v) for k, v in t.items()} for t in d["tensors"]]
        d["output_sqnr_db"] = fix(d["output_sqnr_db"])
        d["baseline_output_sqnr_db"] = fix(d["baseline_output_sqnr_db"])
        return d

    def render(self) -> str:
        from ...report import table

        base = self.baseline_output_sqnr_db is not None
        rows = [[t.tensor, t.op, t.dtype, f"{t.scale:.6g}", str(t.zero_point), f"{100 * t.clipped:.3f}%",
                 _db(t.sqnr_db)] + ([_db(t.int8_sqnr_db) if t.int8_sqnr_db is not None else "-"] if base else [])
                for t in self.tensors]
        head = ["tensor", "op", "type", "scale", "zp", "clipped", "SQNR dB"] + (["all-int8 SQNR dB"] if base else [])
        lines = [table(head, rows),
                 f"output SQNR {_db(self.output_sqnr_db)} dB over {self.samples} calibration samples"
                 + (f" (all-int8: {_db(self.baseline_output_sqnr_db)} dB)" if base else "")]
        if self.float_accuracy is not None:
            lines.append(f"accuracy on {self.eval_samples} samples: float {100 * self.float_accuracy:.2f}%, "
                         f"int8 {100 * self.int8_accuracy:.2f}%")
        return "\n".join(lines)


def _db(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.1f}"


def sqnr_db(ref: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when equal, -inf for a zero signal with noise)."""
    ref = np.asarray(ref, np.float64)
    noise = float(np.sum((ref - np.asarray(approx, np.float64)) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _top1(y: np.ndarray) -> np.ndarray:
    return np.asarray(y).reshape(len(y), -1).argmax(axis=1)


def build_report(float_graph: Graph, int8_graph: Graph, calib: np.ndarray, eval_x: np.ndarray | None = None,
                 eval_y: np.ndarray | None = None, batch_size: int = 256) -> QuantReport:
    """Compare the int8 graph with the float graph it came from (same input and output order)."""
    producers = int8_graph.producers_map()
    pairs = {}  # int8 tensor -> float tensor (a QUANTIZE output stands for the float input it quantizes)
    for t in int8_graph.activations():
        op = producers.get(t)
        if op is None or int8_graph.tensors[t].dtype not in (DType.INT8, DType.INT16):
            continue
        f = op.inputs[0] if op.kind == OpKind.QUANTIZE else t
        if f in float_graph.tensors:
            pairs[t] = f
    names = list(pairs)
    fout, qout = float_graph.outputs[0], int8_graph.outputs[0]
    fnames = list(dict.fromkeys(list(pairs.values()) + [fout]))
    f_env: dict[str, list[np.ndarray]] = {t: [] for t in fnames}
    q_env: dict[str, list[np.ndarray]] = {t: [] for t in names + [qout]}
    for i in range(0, len(calib), batch_size):
        x = calib[i:i + batch_size]
        for t, v in run(float_graph, x, outputs=fnames).items():
            f_env[t].append(v)
        for t, v in run_int8(int8_graph, _input(int8_graph, x), outputs=names + [qout]).items():
            q_env[t].append(v)
    rep = QuantReport(samples=len(calib))
    for t in names:
        q = int8_graph.tensors[t].quant
        s, zp = float(q.scale[0]), int(q.zero_point[0])
        f = np.concatenate(f_env[pairs[t]])
        dq = dequantize(np.concatenate(q_env[t]), s, zp)
        info = np.iinfo(int8_graph.tensors[t].dtype.numpy)
        lo, hi = s * (info.min - 0.5 - zp), s * (info.max + 0.5 - zp)
        op = producers[t]
        rep.tensors.append(TensorReport(t, op.kind.value, op.origin, s, zp, float(np.mean((f < lo) | (f > hi))),
                                        sqnr_db(f, dq), int8_graph.tensors[t].dtype.value))
    rep.output_sqnr_db = sqnr_db(np.concatenate(f_env[fout]), _as_float(int8_graph, qout, np.concatenate(q_env[qout])))
    if eval_x is not None and eval_y is not None:
        y = np.asarray(eval_y)
        y = y.argmax(axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(-1)  # one-hot or indices
        if len(y) != len(eval_x):
            raise TinyccError(f"evaluation data: {len(eval_x)} samples but {len(y)} labels")
        fp = np.concatenate([_top1(run(float_graph, eval_x[i:i + batch_size])[fout])
                             for i in range(0, len(eval_x), batch_size)])
        qp = np.concatenate([_top1(run_int8(int8_graph, _input(int8_graph, eval_x[i:i + batch_size]))[qout])
                             for i in range(0, len(eval_x), batch_size)])
        rep.eval_samples = len(y)
        rep.float_accuracy = float(np.mean(fp == y))
        rep.int8_accuracy = float(np.mean(qp == y))
    return rep


def add_baseline(report: QuantReport, int8_report: QuantReport) -> QuantReport:
    """Put the all-int8 quantization's SQNR beside each tensor of an int16 or mixed report (matched by name)."""
    base = {t.tensor: t.sqnr_db for t in int8_report.tensors}
    by_layer = {(t.layer, t.op): t.sqnr_db for t in int8_report.tensors}  # the input QUANTIZE's tensor is renamed
    for t in report.tensors:
        t.int8_sqnr_db = base.get(t.tensor, by_layer.get((t.layer, t.op)) if t.op == "quantize" else None)
    report.baseline_output_sqnr_db = int8_report.output_sqnr_db
    return report


def _input(graph: Graph, x: np.ndarray) -> np.ndarray:
    """Float samples, quantized when the graph takes int8 input directly."""
    t = graph.tensors[graph.inputs[0]]
    if t.dtype in (DType.INT8, DType.INT16):
        return quantize(x, float(t.quant.scale[0]), int(t.quant.zero_point[0]), t.dtype.value)
    return x


def _as_float(graph: Graph, name: str, v: np.ndarray) -> np.ndarray:
    t = graph.tensors[name]
    if t.dtype in (DType.INT8, DType.INT16):
        return dequantize(v, float(t.quant.scale[0]), int(t.quant.zero_point[0]))
    return v
