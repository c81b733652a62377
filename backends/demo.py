"""The generated demo programs' output: the machine-readable dump (``--dump`` / ``TCC_DEMO_DUMP=1``), the short
report, and what running a demo on a platform gives back (``Backend.run_demo``, used by ``tinycc validate``).

Dump lines (one per item, numbers separated by spaces): ``memory arena A ram R flash F``, ``features I v...``
(``features16 I v...``: int16 features of a 16x8 extractor),
``predict I K p...`` (first time for vector I: before learning; second time: after), ``ticks features T predict
T learn T`` (SysTick, one call each; 0 off ARM), ``time_us features U predict U learn U`` (mean per call, where a
clock is available), ``buffer N``, ``weights L w...`` and ``bias L b...`` (classifier after learning), ``done``.
Inference-only demos (``--inference-only``) print ``memory ...``, ``output I v...`` (float or int8 values),
``check RC`` (the input check's return code: a NaN input, or a NULL output with int8 I/O), ``ticks invoke T``,
``time_us invoke U`` and ``done``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class DemoOutput:
    features: dict[int, np.ndarray] = field(default_factory=dict)
    before: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)
    after: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)
    weights: dict[int, np.ndarray] = field(default_factory=dict)
    bias: dict[int, np.ndarray] = field(default_factory=dict)
    backbone: dict[int, np.ndarray] = field(default_factory=dict)  # --deep bias: the learned int32 biases per layer
    backbone_w: dict[int, np.ndarray] = field(default_factory=dict)  # --deep blocks: float weights per layer
    backbone_b: dict[int, np.ndarray] = field(default_factory=dict)  # --deep blocks: float biases per layer
    backbone_q: dict[int, np.ndarray] = field(default_factory=dict)  # --train sparse: trained int8 channels per layer
    buffer: int = -1
    memory: dict[str, int] = field(default_factory=dict)
    ticks: dict[str, int] = field(default_factory=dict)
    time_us: dict[str, float] = field(default_factory=dict)
    instructions: dict[str, int] = field(default_factory=dict)  # per call, QEMU -icount runs only
    outputs: dict[int, np.ndarray] = field(default_factory=dict)  # inference-only demos
    check: int | None = None  # inference-only: the input check's return code
    done: bool = False


def _pairs(p: list[str], conv: type) -> dict:
    return {p[i]: conv(p[i + 1]) for i in range(1, len(p) - 1, 2)}


def parse(text: str) -> DemoOutput:
    """Read a demo's dump; lines that are not dump lines are ignored."""
    out = DemoOutput()
    for line in text.splitlines():
        p = line.split()
        if not p:
            continue
        try:
            if p[0] == "memory" and len(p) > 2 and p[1] == "arena":
                out.memory = _pairs(p, int)
            elif p[0] in ("features", "features16"):
                out.features[int(p[1])] = np.array([int(v) for v in p[2:]],
                                                   np.int16 if p[0] == "features16" else np.int8)
            elif p[0] == "output":
                out.outputs[int(p[1])] = np.array([float(v) for v in p[2:]], np.float64)
            elif p[0] == "check" and len(p) == 2:
                out.check = int(p[1])
            elif p[0] == "predict":
                i = int(p[1])
                target = out.after if i in out.before else out.before
                target[i] = (int(p[2]), np.array([float(v) for v in p[3:]], np.float32))
            elif p[0] == "weights":
                out.weights[int(p[1])] = np.array([float(v) for v in p[2:]], np.float32)
            elif p[0] == "bias":
                out.bias[int(p[1])] = np.array([float(v) for v in p[2:]], np.float32)
            elif p[0] in ("backbone_w", "backbone_b"):
                getattr(out, p[0])[int(p[1])] = np.array([float(v) for v in p[2:]], np.float32)
            elif p[0] == "backbone_q":
                out.backbone_q[int(p[1])] = np.array([int(v) for v in p[2:]], np.int64)
            elif p[0] == "backbone":
                out.backbone[int(p[1])] = np.array([int(v) for v in p[2:]], np.int64)
            elif p[0] == "buffer":
                out.buffer = int(p[1])
            elif p[0] == "ticks":
                out.ticks = _pairs(p, int)
            elif p[0] == "time_us":
                out.time_us = _pairs(p, float)
            elif p[0] == "done":
                out.done = True
        except (ValueError, IndexError):
            continue  # a line the program did not write as a dump line (e.g. a report line)
    return out


def report_predictions(text: str) -> dict[str, list[int]]:
    """The short report's prediction table: {'expected': [...], 'before': [...], 'after': [...]} in vector
    order ('*' marks of wrong predictions dropped)."""
    rows: dict[str, list[int]] = {"vector": [], "expected": [], "before": [], "after": []}
    for line in text.splitlines():
        p = line.split()
        if p and p[0] in rows:
            try:
                rows[p[0]] += [int(v.rstrip("*")) for v in p[1:]]
            except ValueError:
                continue
    return rows


@dataclass
class DemoRun:
    """A demo built and run on one platform with the dump on."""

    platform: str
    output: DemoOutput
    ram: int | None = None  # static RAM of the built program (bytes)
    flash: int | None = None  # program memory of the built program (bytes)
    size_note: str = ""  # how ram/flash were measured
    per_call: dict[str, float] = field(default_factory=dict)  # features/predict/learn
    per_call_unit: str = ""  # "us" or "instructions"


class DemoFailed(Exception):
    """The demo did not build or did not run to its end (validate: the program fails, exit 1)."""
