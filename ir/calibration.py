"""Calibration observers: per-tensor ranges from a representative dataset (numpy only)."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from .graph import Graph
from .interpreter import run


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

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {k: (self.lo[k], self.hi[k]) for k in self.lo}


class PercentileObserver(MinMaxObserver):
    """Clips each range to the [100-p, p] percentiles of a bounded, deterministic sample of values.

    Robust to rare outliers; never widens beyond min/max. ``p`` defaults to 99.99.
    """

    name = "percentile"

    def __init__(self, percentile: float = 99.99, keep: int = 200_000) -> None:
        super().__init__()
        self.p = percentile
        self.keep = keep
        self.values: dict[str, list[np.ndarray]] = {}
        self.rng = np.random.default_rng(0)

    def observe(self, name: str, x: np.ndarray) -> None:
        super().observe(name, x)
        flat = x.reshape(-1)
        if flat.size > self.keep // 8:
            flat = self.rng.choice(flat, self.keep // 8, replace=False)
        self.values.setdefault(name, []).append(flat.astype(np.float32))

    def ranges(self) -> dict[str, tuple[float, float]]:
        out = {}
        for k, vs in self.values.items():
            v = np.concatenate(vs)
            lo, hi = np.percentile(v, [100.0 - self.p, self.p])
            out[k] = (max(float(lo), self.lo[k]), min(float(hi), self.hi[k]))
        return out


OBSERVERS: dict[str, Callable[[], MinMaxObserver]] = {"minmax": MinMaxObserver, "percentile": PercentileObserver}


def calibrate(graph: Graph, samples: np.ndarray, observer: MinMaxObserver, batch_size: int = 64,
              progress: Callable[[Iterable], Iterable] | None = None) -> dict[str, tuple[float, float]]:
    """Run ``samples`` through the float graph; return per-tensor (min, max) of every activation."""
    names = graph.activations()
    starts = range(0, len(samples), batch_size)
    for i in (progress(starts) if progress else starts):
        x = samples[i:i + batch_size]
        env = run(graph, x, outputs=names)
        for name in names:
            observer.observe(name, env[name])
    return observer.ranges()
