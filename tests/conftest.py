"""Shared pytest configuration and fixtures."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TINYCC_DATA", ROOT.parent / "shared" / "data"))
MLPERF_MODELS = Path(os.environ.get("TINYCC_MODELS", ROOT.parent / "shared" / "models")) / "mlperf-tiny"


def _check_every_plan() -> None:
    """Wrap tinycc.memory.plan (and the names it is imported under) so that every memory plan made in this test
    process passes the overlap checker (tests/arena_check.py) and lies between its bounds: at least the overlap
    bound, which is at most the separate-buffer bound."""
    import functools

    import tinycc.deploy.stage
    import tinycc.memory

    from . import arena_check

    original = tinycc.memory.plan

    @functools.wraps(original)
    def checked(graph, strategy: str = "best", alignment: int = 16, inplace: bool = True, overlap=None):
        p = original(graph, strategy, alignment, inplace, overlap)
        arena_check.check_plan(graph, p, overlap)
        if not p.overlap_bound <= p.arena or not p.overlap_bound <= p.lower_bound:
            raise arena_check.PlanError(f"arena {p.arena} B below the overlap bound {p.overlap_bound} B, or that "
                                        f"above the separate-buffer bound {p.lower_bound} B")
        return p

    tinycc.memory.plan = checked
    tinycc.deploy.stage.plan = checked


_check_every_plan()


@pytest.fixture()
def session():
    """A fresh plugin session without third-party autoload (tests never leak registries)."""
    from tinycc.session import Session

    return Session(autoload=False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (../shared/data); tests that need it skip with a reason when absent."""
    if not (SHARED_DATA / "cifar10.npz").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (set TINYCC_DATA)")
    return SHARED_DATA


def mlperf_model(name: str) -> Path:
    """An MLPerf Tiny model file (../shared/models/mlperf-tiny, or $TINYCC_MODELS/mlperf-tiny); skips when absent."""
    path = MLPERF_MODELS / name
    if not path.exists():
        pytest.skip(f"{name} not found in {MLPERF_MODELS} (set TINYCC_MODELS)")
    return path


def fake_thesis_data(folder: Path, side: int, n_train: int, n_test: int, seed: int = 0) -> None:
    """Random uint8 images and labels in the thesis's folder layout (cifar10.npz with x/y_train and x/y_test,
    imagenette-32.npz with x/y_train and x/y_val), ``side`` x ``side`` x 3, for `simulate` tests."""
    rng = np.random.default_rng(seed)
    for name, keys in (("cifar10.npz", ("x_train", "y_train", "x_test", "y_test")),
                       ("imagenette-32.npz", ("x_train", "y_train", "x_val", "y_val"))):
        arrays = {}
        for k in keys:
            n = n_train if "train" in k else n_test
            arrays[k] = (rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8) if k.startswith("x")
                         else rng.integers(0, 10, n).astype(np.uint8))
        np.savez(folder / name, **arrays)
