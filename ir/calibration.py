"""Calibration: per-tensor float ranges from a representative dataset (numpy only).

Observers see every activation of every batch and turn what they saw into ``(min, max)``
ranges. ``MinMaxObserver`` is what the TFLite converter does (running min/max over all
samples); ``PercentileObserver`` clips rare outliers using an exact streaming histogram.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

from .graph import Graph
from .interpreter import run

Ranges = dict[str, tuple[float, float]]


class CalibrationDataError(ValueError):
    """Unusable calibration samples; the message says what is wrong (the plugin shows it to the user)."""


class MinMaxObserver:
    """Running min/max over all samples (the TFLite converter's default)."""

    name = "minmax"

    def __init__(self) -> None:
        self.lo: dict[str, float] = {}
        self.hi: dict[str, float] = {}

    def observe(self, name: str, x: np.ndarray) -> None:
        lo, hi = float(x.min()), float(x.max())
        self.lo[name] = min(self.lo.get(name, lo), lo)
        self.hi[name] = max(self.hi.get(name, hi), hi)

    def ranges(self) -> Ranges:
        return {k: (self.lo[k], self.hi[k]) for k in self.lo}


class Histogram:
    """Exact streaming histogram: bins of width ``w`` aligned to 0, at most ``bins`` of them.

    When new values fall outside the covered span the width doubles and neighbouring bins
    merge, so counts stay exact at the current resolution whatever order the data comes in.
    """

    def __init__(self, bins: int = 4096) -> None:
        self.bins = bins
        self.width = 0.0
        self.start = 0  # bin index of counts[0]; bin i covers [i*w, (i+1)*w)
        self.counts = np.zeros(0, np.int64)

    def add(self, x: np.ndarray) -> None:
        v = np.asarray(x, np.float64).reshape(-1)
        if v.size == 0:
            return
        if self.width == 0.0:
            span = max(float(v.max() - v.min()), float(np.abs(v).max()) * 1e-6, 1e-30)
            self.width = 2.0 ** math.ceil(math.log2(span / (self.bins - 1)))
        vmin, vmax = float(v.min()), float(v.max())
        while True:  # coarsen first (in float arithmetic, so huge values cannot overflow int64)
            lo, hi = math.floor(vmin / self.width), math.floor(vmax / self.width)
            if self.counts.size:
                lo, hi = min(lo, self.start), max(hi, self.start + self.counts.size - 1)
            if hi - lo + 1 <= self.bins:
                break
            self._coarsen()
        idx = np.floor(v / self.width).astype(np.int64)
        grown = np.zeros(hi - lo + 1, np.int64)
        if self.counts.size:
            grown[self.start - lo:self.start - lo + self.counts.size] = self.counts
        grown += np.bincount(idx - lo, minlength=grown.size)
        self.start, self.counts = lo, grown

    def _coarsen(self) -> None:
        if self.counts.size:
            old = np.arange(self.start, self.start + self.counts.size) // 2
            self.counts = np.bincount(old - old[0], weights=self.counts).astype(np.int64)
        self.start //= 2
        self.width *= 2.0

    def quantile(self, q: float, upper: bool) -> float:
        """A bin edge bracketing the q-quantile: the bin's right edge if ``upper`` else its left edge."""
        cum = np.cumsum(self.counts)
        k = int(np.searchsorted(cum, q * cum[-1], side="left"))
        k = min(k, self.counts.size - 1)
        return (self.start + k + (1 if upper else 0)) * self.width


class PercentileObserver(MinMaxObserver):
    """Ranges from the [100-p, p] percentiles (default p = 99.99) of each tensor's values.

    Robust to rare outliers; the range never goes beyond min/max and errs on the wide side by
    at most one histogram bin (span / 4096).
    """

    name = "percentile"

    def __init__(self, percentile: float = 99.99, bins: int = 4096) -> None:
        super().__init__()
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        self.p = percentile
        self.bins = bins
        self.hists: dict[str, Histogram] = {}

    def observe(self, name: str, x: np.ndarray) -> None:
        super().observe(name, x)
        self.hists.setdefault(name, Histogram(self.bins)).add(x)

    def ranges(self) -> Ranges:
        out = {}
        for k, h in self.hists.items():
            lo = h.quantile(1.0 - self.p / 100.0, upper=False)
            hi = h.quantile(self.p / 100.0, upper=True)
            out[k] = (max(lo, self.lo[k]), min(hi, self.hi[k]))
        return out


OBSERVERS: dict[str, Callable[[], MinMaxObserver]] = {"minmax": MinMaxObserver, "percentile": PercentileObserver}


def sample_count(x: np.ndarray | dict[str, np.ndarray]) -> int:
    """How many samples ``x`` holds (one array, or the arrays of a model with several inputs)."""
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def take_samples(x: np.ndarray | dict[str, np.ndarray], index: slice) -> np.ndarray | dict[str, np.ndarray]:
    """Samples ``x[index]`` (every input's array of a model with several)."""
    return {k: v[index] for k, v in x.items()} if isinstance(x, dict) else x[index]


def check_samples(graph: Graph, x: object, what: str = "calibration data") -> np.ndarray | dict[str, np.ndarray]:
    """Validate samples for the graph's input; return them as float32 ``[N, ...]``. A model with several inputs
    takes one array per input, as a dict by input tensor name or a list/tuple in input order, with the same N;
    it gets a dict back.

    A single sample without the batch axis is accepted, as is a missing trailing channel
    axis of size 1 (grayscale images stored as ``[N, H, W]``).
    """
    if len(graph.inputs) != 1:
        n = len(graph.inputs)
        if isinstance(x, (list, tuple)) and len(x) == n:
            x = dict(zip(graph.inputs, x))
        if not isinstance(x, dict) or set(x) != set(graph.inputs):
            raise CalibrationDataError(f"{what}: the model has {n} inputs; give one array of samples per input "
                                       f"(an .npz with arrays x_0 .. x_{n - 1})")
        out = {t: _check_input(graph, t, x[t], f"{what} (input {k})") for k, t in enumerate(graph.inputs)}
        counts = {len(v) for v in out.values()}
        if len(counts) != 1:
            raise CalibrationDataError(f"{what}: the inputs' arrays hold different sample counts {sorted(counts)}")
        return out
    return _check_input(graph, graph.inputs[0], x, what)


def _check_input(graph: Graph, name: str, x: object, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise CalibrationDataError(f"{what}: dtype {x.dtype} is not numeric")
    want = tuple(graph.tensors[name].shape[1:])
    if x.size == 0 or x.ndim == 0 or x.shape[0] == 0:
        raise CalibrationDataError(f"{what}: empty (no samples); the model expects samples of shape {want}")
    if tuple(x.shape) == want:
        x = x[None]
    if tuple(x.shape[1:]) != want:
        if want and want[-1] == 1 and tuple(x.shape[1:]) == want[:-1]:
            x = x[..., None]
        else:
            raise CalibrationDataError(f"{what}: samples have shape {tuple(x.shape[1:])}, the model expects {want}")
    x = x.astype(np.float32)
    check_finite(x, what)
    return x


def check_finite(x: np.ndarray, what: str) -> None:
    """Raise CalibrationDataError naming how many samples of ``x`` ``[N, ...]`` hold NaN/Inf."""
    if x.dtype.kind != "f":
        return
    bad = ~np.isfinite(x)
    if bad.any():
        per = bad.reshape(len(x), -1).sum(axis=1)
        first = int(np.nonzero(per)[0][0])
        raise CalibrationDataError(f"{what}: {int(bad.sum())} NaN/Inf values in {int((per > 0).sum())} of {len(x)} "
                                   f"samples (first in sample {first})")


OUTLIER_SHARE = 0.001  # samples trimmed at each end (at least one) when testing a range for outliers
OUTLIER_RATIO = 0.01  # a range is "dominated" when the trimmed range is below this share of the full one
OUTLIER_MIN_SAMPLES = 20  # fewer samples say nothing about outliers


class SampleRanges:
    """Per-sample minimum and maximum of some tensors, to find ranges set by a few samples."""

    def __init__(self) -> None:
        self.lo: dict[str, list[np.ndarray]] = {}
        self.hi: dict[str, list[np.ndarray]] = {}

    def observe(self, name: str, x: np.ndarray) -> None:
        flat = np.asarray(x, np.float64).reshape(len(x), -1)
        self.lo.setdefault(name, []).append(flat.min(axis=1))
        self.hi.setdefault(name, []).append(flat.max(axis=1))

    def dominance(self, name: str) -> tuple[float, int, tuple[float, float], tuple[float, float]]:
        """(trimmed range / full range, the most extreme sample, full range, trimmed range) of ``name``.

        Trimmed: without the top/bottom OUTLIER_SHARE of samples (at least one at each end)."""
        lo, hi = np.concatenate(self.lo[name]), np.concatenate(self.hi[name])
        full = (float(lo.min()), float(hi.max()))
        span = full[1] - full[0]
        if len(lo) < OUTLIER_MIN_SAMPLES or span <= 0 or not math.isfinite(span):
            return 1.0, -1, full, full  # too few samples (from one up) to tell an outlier
        k = max(1, math.ceil(OUTLIER_SHARE * len(lo)))
        trimmed = (float(np.partition(lo, k)[k]), float(np.partition(hi, len(hi) - 1 - k)[len(hi) - 1 - k]))
        ratio = max(trimmed[1] - trimmed[0], 0.0) / span
        worst = int(np.argmax(hi)) if full[1] - trimmed[1] >= trimmed[0] - full[0] else int(np.argmin(lo))
        return ratio, worst, full, trimmed

    def check(self, what: str = "calibration data") -> None:
        """Raise CalibrationDataError for the first tensor whose range a few samples dominate."""
        for name in self.lo:
            ratio, worst, full, trimmed = self.dominance(name)
            if ratio < OUTLIER_RATIO:
                raise CalibrationDataError(
                    f"{what}: sample {worst} alone sets the range of tensor {name!r} to "
                    f"[{full[0]:.4g}, {full[1]:.4g}]; "
                    f"without the {max(1, math.ceil(OUTLIER_SHARE * sum(map(len, self.lo[name]))))} most extreme "
                    f"samples at each end it is [{trimmed[0]:.4g}, {trimmed[1]:.4g}] ({100 * ratio:.2g}% of it), so "
                    "int8 would round every other sample to a few steps: remove the outlier or use --observer "
                    "percentile")


FLOAT32_MAX = float(np.finfo(np.float32).max)
FEATURE_HEADROOM = 2.0 ** 40  # growth left for SGD: weight updates lr * x make later dot products lr * F * M^2


def check_feature_scale(scale: float, zero_point: int, n_features: int, lr: float, bits: int = 8) -> None:
    """Raise CalibrationDataError when int8 (``bits`` 16: int16) features of this scale would overflow the float
    classifier.

    A feature's largest magnitude is M = max(|qmin - zp|, |qmax - zp|) * scale (int8: -128, 127). One SGD step adds lr * delta * x
    to the weights, so the next dot product holds lr * F * M^2: it must stay FEATURE_HEADROOM below float32's
    maximum, or learning turns the classifier's outputs into Inf/NaN after a few steps."""
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    m = max(abs(qmin - zero_point), abs(qmax - zero_point)) * float(scale)
    worst = max(float(lr), 1.0) * n_features * m * m
    if not math.isfinite(worst) or worst > FLOAT32_MAX / FEATURE_HEADROOM:
        if lr > 1.0 and n_features * m * m <= FLOAT32_MAX / FEATURE_HEADROOM:
            raise CalibrationDataError(
                f"learning rate {lr:g} with features up to {m:.3g}: one SGD step makes the float classifier's dot "
                f"products about {worst:.3g}, which overflows float32 arithmetic; give a learning rate of at most "
                f"{FLOAT32_MAX / FEATURE_HEADROOM / (n_features * m * m):.3g}")
        raise CalibrationDataError(
            f"calibration data: the features reach {m:.3g} (int{bits} scale {float(scale):.3g}), too large for the float "
            f"classifier: {n_features} features x {m:.3g}^2 overflows float32 arithmetic once it learns; give calibration "
            f"data in the range the model was trained on")


class ModelWeightsError(CalibrationDataError):
    """The model's own weights hold NaN/Inf (not the data's fault); the message names the layer."""


def check_weights(graph: Graph) -> None:
    """Raise ModelWeightsError naming the first layer whose constant tensors hold NaN/Inf."""
    for op in graph.ops:
        for name in op.inputs:
            t = graph.tensors.get(name)
            if t is None or t.data is None or t.data.dtype.kind != "f":
                continue
            bad = int((~np.isfinite(t.data)).sum())
            if bad:
                raise ModelWeightsError(f"{graph.name}: layer {op.origin or op.name!r} has {bad} NaN/Inf values in "
                                        f"its weights ({name!r}); the model file itself is broken (retrain or "
                                        "re-export it)")


def calibrate(graph: Graph, samples: np.ndarray | dict[str, np.ndarray], observer: MinMaxObserver | None = None, batch_size: int = 64,
              progress: Callable[[Iterable[int]], Iterable[int]] | None = None) -> Ranges:
    """Run ``samples`` through the float graph; return (min, max) of every activation tensor.

    Raises CalibrationDataError for bad samples and for activations that become NaN/Inf.
    """
    check_weights(graph)
    x = check_samples(graph, samples)
    count = sample_count(x)
    if batch_size < 1:
        raise CalibrationDataError(f"batch size must be >= 1, got {batch_size}")
    observer = observer or MinMaxObserver()
    check_sample_size(graph)
    batch_size = max(1, min(batch_size, CALIB_BATCH_BYTES // max(sample_bytes(graph), 1)))  # bounded host memory
    names = graph.activations()
    watched = set(graph.inputs) | set(graph.outputs)  # the model input and the features it produces
    per_sample = SampleRanges()
    starts = range(0, count, batch_size)
    for i in (progress(starts) if progress else starts):
        env = run(graph, take_samples(x, slice(i, i + batch_size)), outputs=names)
        for name in names:
            v = env[name]
            if not np.isfinite(v).all():
                raise CalibrationDataError(f"calibration data: tensor {name!r} becomes NaN/Inf on samples "
                                           f"{i}..{i + len(v) - 1} (check the input scale)")
            observer.observe(name, v)
            if name in watched:
                per_sample.observe(name, v)
    if type(observer) is MinMaxObserver:  # the percentile observer clips outliers by design
        per_sample.check()
    return observer.ranges()


MAX_SAMPLE_BYTES = 256 * 1024 ** 2  # float32 activations of one sample held while calibrating (64 MiB in int8)
CALIB_BATCH_BYTES = 512 * 1024 ** 2  # float32 activations of one calibration batch
MAX_TEST_VALUES = 1 << 22  # input values the demo embeds as C source (its test vectors), all vectors together


def test_vector_count(input_size: int, wanted: int) -> int:
    """How many test vectors of ``input_size`` values the demo embeds: ``wanted``, fewer when they would exceed
    MAX_TEST_VALUES (at least one; :func:`check_sample_size` refuses an input larger than that)."""
    return max(1, min(int(wanted), MAX_TEST_VALUES // max(int(input_size), 1)))


def sample_bytes(graph: Graph) -> int:
    """Bytes of every float32 activation of one sample (what the float interpreter holds for a batch of 1),
    computed from the shapes alone."""
    return sum(4 * math.prod(int(d) for d in graph.tensors[t].shape[1:]) for t in graph.activations())


def check_sample_size(graph: Graph, embeds_vectors: bool = False) -> None:
    """Refuse, before any sample is read, a model whose activations for one sample exceed MAX_SAMPLE_BYTES:
    no microcontroller holds them, and calibrating it would take gigabytes of host memory. ``embeds_vectors``:
    a demo embeds at least one input as C source, refused above MAX_TEST_VALUES values."""
    size = sum(math.prod(int(d) for d in graph.tensors[t].shape[1:]) for t in graph.inputs)
    if embeds_vectors and size > MAX_TEST_VALUES:
        raise CalibrationDataError(f"{graph.name}: an input of {size:,} values; the project's demo embeds at least "
                                   f"one as C source, above tinycc's limit of {MAX_TEST_VALUES:,} values: give the "
                                   "model a smaller input")
    need = sample_bytes(graph)
    if need > MAX_SAMPLE_BYTES:
        name, size = max(((t, math.prod(int(d) for d in graph.tensors[t].shape[1:])) for t in graph.activations()),
                         key=lambda p: p[1])
        raise CalibrationDataError(
            f"{graph.name}: one sample's activations take {need:,} bytes in float32 (the largest, {name!r} "
            f"{list(graph.tensors[name].shape)}, {4 * size:,}), above tinycc's limit of {MAX_SAMPLE_BYTES:,}: "
            "far more than a microcontroller's RAM; give the model a smaller input")
