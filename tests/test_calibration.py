"""Calibration: observers, the streaming histogram, sample checks and calibration data sources."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycc.errors import TinyccError
from tinycc.ir.calibration import (CalibrationDataError, Histogram, MinMaxObserver, PercentileObserver, calibrate,
                                   check_samples)
from tinycc.ir.graph import Graph
from tinycc.ir.interpreter import run
from tinycc.config import QuantConfig
from tinycc.data import calibration_samples
from tinycc.plugins.passes.quantize import load_data, load_samples


def small_graph(shape: tuple[int, ...] = (6, 6, 2)) -> Graph:
    rng = np.random.default_rng(0)
    g = Graph("small")
    g.add_input("x", (1,) + shape)
    w = g.add_const("w", rng.normal(0, 0.5, (3, 3, 3, shape[-1])).astype(np.float32))
    b = g.add_const("b", rng.normal(0, 0.1, (3,)).astype(np.float32))
    g.add_op("conv2d", ["x", w.name, b.name], "conv", {"padding": "same", "activation": "relu"})
    g.add_op("max_pool2d", ["conv"], "pool")
    g.add_op("flatten", ["pool"], "flat")
    feat = (shape[0] // 2) * (shape[1] // 2) * 3
    d = g.add_const("dw", rng.normal(0, 0.3, (4, feat)).astype(np.float32))
    g.add_op("dense", ["flat", d.name], "fc")
    g.outputs = ["fc"]
    return g


def test_minmax_ranges_are_global_min_max_for_any_batch_size() -> None:
    g = small_graph()
    x = np.random.default_rng(1).normal(0, 2, (37, 6, 6, 2)).astype(np.float32)
    env = run(g, x, outputs=g.activations())
    want = {t: (float(v.min()), float(v.max())) for t, v in env.items()}
    for bs in (1, 7, 64):  # (BLAS may round a matmul differently per batch size)
        got = calibrate(g, x, MinMaxObserver(), batch_size=bs)
        assert got.keys() == want.keys()
        for t in want:
            assert got[t] == pytest.approx(want[t], rel=1e-6), t


def test_progress_callback_sees_every_batch() -> None:
    seen: list[int] = []

    def progress(it):
        for i in it:
            seen.append(i)
            yield i

    calibrate(small_graph(), np.zeros((10, 6, 6, 2), np.float32), batch_size=4, progress=progress)
    assert seen == [0, 4, 8]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=1, max_size=400),
       st.integers(1, 50), st.sampled_from([0.5, 0.9, 0.99, 0.999]))
def test_histogram_is_exact_and_quantiles_bracket_numpy(values: list[float], chunk: int, q: float) -> None:
    v = np.array(values, np.float64)
    h = Histogram(bins=64)
    for i in range(0, len(v), chunk):
        h.add(v[i:i + chunk])
    assert h.counts.sum() == len(v) and h.counts.size <= 64
    edges = (h.start + np.arange(h.counts.size + 1)) * h.width
    np.testing.assert_array_equal(np.histogram(v, bins=edges)[0][:-1], h.counts[:-1])  # last bin: numpy closes it
    hi, lo = h.quantile(q, upper=True), h.quantile(1 - q, upper=False)
    assert np.quantile(v, q, method="inverted_cdf") <= hi <= np.quantile(v, q, method="inverted_cdf") + h.width
    assert np.quantile(v, 1 - q, method="inverted_cdf") - h.width <= lo <= np.quantile(v, 1 - q, method="inverted_cdf")


def test_histogram_survives_a_zero_first_batch_then_huge_values() -> None:
    h = Histogram(bins=128)
    h.add(np.zeros(10))
    h.add(np.array([3e30, -1.0]))
    assert h.counts.sum() == 12 and h.counts.size <= 128


def test_percentile_observer_ignores_rare_outliers() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, 200_000).astype(np.float32)
    x[123] = 500.0
    mm, pc = MinMaxObserver(), PercentileObserver(99.9)
    for part in np.split(x, 8):
        mm.observe("t", part)
        pc.observe("t", part)
    lo, hi = pc.ranges()["t"]
    assert mm.ranges()["t"][1] == 500.0
    assert np.quantile(x, 0.999) <= hi < 4.0 and -4.0 < lo <= np.quantile(x, 0.001)
    with pytest.raises(ValueError, match="percentile"):
        PercentileObserver(30.0)


@pytest.mark.parametrize("bad,words", [
    (np.zeros((0, 6, 6, 2), np.float32), ["empty", "(6, 6, 2)"]),
    (np.zeros((0,), np.float32), ["empty"]),
    (np.zeros((3, 5, 6, 2), np.float32), ["(5, 6, 2)", "expects (6, 6, 2)"]),
    (np.array([["a"] * 72] * 2), ["dtype <U1", "not numeric"]),
    (np.array([None, 1.0], dtype=object), ["object", "not numeric"]),
])
def test_bad_samples_are_named(bad: np.ndarray, words: list[str]) -> None:
    with pytest.raises(CalibrationDataError) as e:
        calibrate(small_graph(), bad)
    for w in words:
        assert w in str(e.value)


def test_nan_and_inf_are_counted_with_the_first_sample() -> None:
    x = np.zeros((5, 6, 6, 2), np.float32)
    x[3, 0, 0, 0] = np.nan
    x[3, 1, 0, 0] = np.inf
    x[4, 2, 2, 1] = -np.inf
    with pytest.raises(CalibrationDataError, match=r"3 NaN/Inf values in 2 of 5 samples \(first in sample 3\)"):
        calibrate(small_graph(), x)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_activation_overflow_is_reported() -> None:
    x = np.full((2, 6, 6, 2), 3e38, np.float32)
    with pytest.raises(CalibrationDataError, match="tensor 'conv' becomes NaN/Inf"):
        calibrate(small_graph(), x)


def test_sample_layout_conveniences() -> None:
    g = small_graph((5, 5, 1))
    assert check_samples(g, np.zeros((4, 5, 5))).shape == (4, 5, 5, 1)  # grayscale without channel axis
    assert check_samples(g, np.zeros((5, 5, 1), np.uint8)).shape == (1, 5, 5, 1)  # one sample
    assert check_samples(g, np.zeros((2, 5, 5, 1), np.uint8)).dtype == np.float32


# ---- data sources ------------------------------------------------------------------
def test_npz_keys_npy_and_errors(tmp_path: Path) -> None:
    a, b = np.ones((3, 2), np.float32), np.zeros((4, 2), np.float32)
    np.savez(tmp_path / "both.npz", x_train=a, x_calib=b, y_calib=np.arange(4))
    x, y = load_data(str(tmp_path / "both.npz"))
    assert x.shape == (4, 2) and list(y) == [0, 1, 2, 3]  # x_calib wins, its labels come along
    np.savez(tmp_path / "one.npz", anything=a)
    assert load_samples(str(tmp_path / "one.npz")).shape == (3, 2)
    np.savez(tmp_path / "two.npz", p=a, q=b)
    with pytest.raises(TinyccError, match="no array named x_calib, x_train, x \\(found p, q\\)"):
        load_samples(str(tmp_path / "two.npz"))
    np.save(tmp_path / "a.npy", a)
    assert load_samples(str(tmp_path / "a.npy")).shape == (3, 2)
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(TinyccError, match="broken.npy: cannot read"):
        load_samples(str(tmp_path / "broken.npy"))
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(TinyccError, match="expected an .npz or .npy file or a folder of images"):
        load_samples(str(tmp_path / "data.csv"))
    with pytest.raises(TinyccError, match="nope.npz: no such file or folder"):
        load_samples(str(tmp_path / "nope.npz"))


def test_image_folder_is_resized_to_the_input(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "cls").mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "cls" / f"{i}.png")
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(tmp_path / "flat.jpg")
    x = load_samples(str(tmp_path), shape=(8, 10, 3))
    assert x.shape == (4, 8, 10, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 255
    gray = load_samples(str(tmp_path), shape=(8, 8, 1))
    assert gray.shape == (4, 8, 8, 1)
    np.testing.assert_allclose(gray[-1], 200.0, atol=1)  # flat.jpg sorts last; JPEG is near-lossless on flat
    (tmp_path / "empty").mkdir()
    with pytest.raises(TinyccError, match="no images"):
        load_samples(str(tmp_path / "empty"))


def test_plugin_and_builtin_sources(session, tmp_path: Path) -> None:
    reg = session.registry
    assert "npz" in reg.calibration_sources
    reg.add_calibration_source("ramp", lambda arg: np.linspace(0, 1, int(arg) * 4).reshape(int(arg), 4))
    assert load_samples("ramp:5", reg).shape == (5, 4)
    np.savez(tmp_path / "d.npz", a=np.ones((2, 3)), b=np.zeros((6, 3)))
    assert load_samples(f"npz:{tmp_path / 'd.npz'}:b", reg).shape == (6, 3)
    with pytest.raises(TinyccError, match="no array 'c'"):
        load_samples(f"npz:{tmp_path / 'd.npz'}:c", reg)
    with pytest.raises(TinyccError, match="'nosuch' is no calibration source \\(registered: npz, ramp\\)"):
        load_samples("nosuch:1", reg)


def test_scale_and_limit_options() -> None:
    g = small_graph()
    x = np.full((30, 6, 6, 2), 255, np.uint8)
    out = calibration_samples(g, QuantConfig(calib_scale=1 / 255, calib_limit=10), x)
    assert out.shape == (10, 6, 6, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0, rtol=1e-6)
    np.testing.assert_array_equal(calibration_samples(g, QuantConfig(), x), x.astype(np.float32))  # as stored
    with pytest.raises(TinyccError, match="needs calibration data"):
        calibration_samples(g, QuantConfig())
    with pytest.raises(TinyccError, match="--calib-limit: must be an integer > 0"):
        QuantConfig(calib_limit=0)
