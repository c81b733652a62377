"""Shared pytest configuration and fixtures."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TINYCC_DATA", ROOT.parent / "shared" / "data"))
MLPERF_MODELS = Path(os.environ.get("TINYCC_MODELS", ROOT.parent / "shared" / "models")) / "mlperf-tiny"


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
