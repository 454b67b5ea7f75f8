"""Robust statistics on digitised data: sub-ADU levels and unbiased noise."""

from __future__ import annotations

import numpy as np
import pytest

from viskom.measure.robust import clipped_stats, histogram_median, truncation_variance_factor


def test_truncation_factor() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=2_000_000)
    for k in (2.0, 3.0, 4.0):
        clipped = x[np.abs(x) < k]
        assert clipped.var() == pytest.approx(truncation_variance_factor(k), rel=5e-3)


@pytest.mark.parametrize("true_level", [2700.0, 2700.25, 2700.5, 2700.8])
@pytest.mark.parametrize("sigma", [1.1, 1.3, 3.0])
def test_sub_adu_level_and_noise_of_integer_data(true_level: float, sigma: float) -> None:
    rng = np.random.default_rng(int(true_level * 100 + sigma * 10))
    analog = rng.normal(true_level, sigma, size=200_000)
    digital = np.round(analog).astype(np.uint16)
    # a few outliers (hot pixels, cosmics) that clipping must ignore
    digital[:200] = 9000
    s = clipped_stats(digital, nsigma=3.0)
    # standard error of the mean is sigma/sqrt(N) ~ 0.003 ADU; allow 0.02
    assert s.mean == pytest.approx(true_level, abs=0.02)
    # the digitised noise includes quantisation: sqrt(sigma^2 + 1/12)
    assert s.sigma == pytest.approx(np.hypot(sigma, np.sqrt(1 / 12)), rel=0.01)
    assert s.n_used < s.n_total


def test_histogram_median_interpolates() -> None:
    rng = np.random.default_rng(1)
    for centre in (100.0, 100.3, 100.6):
        x = np.round(rng.normal(centre, 2.0, size=400_000)).astype(np.uint16)
        hist = np.bincount(x)
        assert histogram_median(hist) == pytest.approx(centre, abs=0.02)


def test_float_and_empty_inputs() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(5.0, 2.0, size=100_000)
    x[:50] = np.nan
    s = clipped_stats(x)
    assert s.mean == pytest.approx(5.0, abs=0.03) and s.sigma == pytest.approx(2.0, rel=0.02)
    e = clipped_stats(np.array([], dtype=np.uint16))
    assert np.isnan(e.mean) and e.n_total == 0
