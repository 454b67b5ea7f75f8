"""Robust statistics that resolve fractions of an ADU in integer (digitised) data.

Integer pixels are summarised through their histogram (`np.bincount`), which is fast and
needs no float copy of the data: the median is interpolated inside its bin, and the
sigma-clipped mean and standard deviation are computed from the clipped histogram, with
the standard deviation corrected for the truncation of a normal distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import erf, exp, pi, sqrt

import numpy as np

#: MAD -> sigma of a normal distribution (1 / Phi^-1(3/4)).
MAD_TO_SIGMA = 1.4826
#: Standard error of a sample median over that of the mean, for a normal distribution:
#: sqrt(pi / 2).
MEDIAN_ERROR_FACTOR = sqrt(pi / 2.0)


def mad_sigma(values: np.ndarray) -> float:
    """Robust sigma: 1.4826 x the median absolute deviation from the median (0 for fewer
    than two values)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return 0.0
    return MAD_TO_SIGMA * float(np.median(np.abs(v - np.median(v))))


@dataclass(frozen=True)
class RobustStats:
    """Centre and spread of a pixel sample after iterative sigma clipping."""

    median: float
    mean: float
    sigma: float
    n_used: int
    n_total: int


def truncation_variance_factor(nsigma: float) -> float:
    """Variance of a unit normal truncated at +-nsigma (to undo clipping's shrinkage)."""
    phi = exp(-0.5 * nsigma * nsigma) / sqrt(2 * pi)
    mass = erf(nsigma / sqrt(2))
    return 1.0 - 2.0 * nsigma * phi / mass


def _histogram(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Histogram of integer values with unit bins, and the value of bin 0."""
    flat = np.asarray(values).ravel()
    if flat.dtype == np.uint16 or flat.dtype == np.uint8:
        return np.bincount(flat, minlength=1), 0
    lo = int(flat.min())
    return np.bincount((flat - lo).astype(np.intp)), lo


def histogram_median(hist: np.ndarray, offset: int = 0) -> float:
    """Median of integer data from its histogram, interpolated within the median bin.

    Treats the counts in bin v as spread uniformly over [v - 0.5, v + 0.5), so that the
    median of digitised noise moves smoothly with its true centre.
    """
    n = hist.sum()
    if n == 0:
        return float("nan")
    cum = np.cumsum(hist)
    half = n / 2.0
    v = int(np.searchsorted(cum, half, side="left"))
    below = cum[v - 1] if v > 0 else 0
    return offset + v - 0.5 + (half - below) / hist[v]


def _hist_quantile(hist: np.ndarray, offset: int, q: float) -> float:
    cum = np.cumsum(hist)
    target = q * cum[-1]
    v = int(np.searchsorted(cum, target, side="left"))
    below = cum[v - 1] if v > 0 else 0
    return offset + v - 0.5 + (target - below) / max(hist[v], 1)


def _truncated_normal_moments(alpha: float, beta: float) -> tuple[float, float]:
    """Mean and variance of a unit normal truncated to [alpha, beta]."""
    pa = exp(-0.5 * alpha * alpha) / sqrt(2 * pi)
    pb = exp(-0.5 * beta * beta) / sqrt(2 * pi)
    mass = 0.5 * (erf(beta / sqrt(2)) - erf(alpha / sqrt(2)))
    if mass <= 0:
        return 0.0, 1.0
    mean = (pa - pb) / mass
    var = 1.0 + (alpha * pa - beta * pb) / mass - mean * mean
    return mean, var


def clipped_stats_histogram(
    hist: np.ndarray, offset: int = 0, nsigma: float = 3.0, iterations: int = 20
) -> RobustStats:
    """Sigma-clipped mean and sigma of integer data from its histogram, without clipping bias.

    Whole bins are kept, so the analog values kept are those within [lo - 0.5, hi + 0.5]:
    the mean and variance are corrected for that (asymmetric) truncation of a normal
    distribution, and the rounding's 1/12 ADU^2 is kept in the reported sigma, which is
    the spread of the digitised values.
    """
    n_total = int(hist.sum())
    if n_total == 0:
        nan = float("nan")
        return RobustStats(nan, nan, nan, 0, 0)
    values = np.arange(hist.size, dtype=np.float64) + offset
    med = histogram_median(hist, offset)
    iqr = _hist_quantile(hist, offset, 0.75) - _hist_quantile(hist, offset, 0.25)
    sigma_a = max(sqrt(max((iqr / 1.349) ** 2 - 1 / 12, 0.0)), 0.3)  # analog sigma
    centre = med
    used = n_total
    for _ in range(iterations):
        lo = int(np.floor(centre - nsigma * sigma_a - offset + 0.5))
        hi = int(np.ceil(centre + nsigma * sigma_a - offset - 0.5))
        lo, hi = max(lo, 0), min(hi, hist.size - 1)
        h = hist[lo : hi + 1].astype(np.float64)
        v = values[lo : hi + 1]
        used = int(h.sum())
        if used < 2:
            break
        mean = float((h * v).sum() / used)
        var = float((h * (v - mean) ** 2).sum() / (used - 1))
        alpha = (offset + lo - 0.5 - centre) / sigma_a
        beta = (offset + hi + 0.5 - centre) / sigma_a
        shift, factor = _truncated_normal_moments(alpha, beta)
        new_sigma = sqrt(max(var - 1 / 12, 1e-6) / max(factor, 1e-3))
        new_centre = mean - shift * new_sigma
        converged = abs(new_centre - centre) < 1e-5 and abs(new_sigma - sigma_a) < 1e-5
        centre, sigma_a = new_centre, new_sigma
        if converged:
            break
    return RobustStats(med, centre, sqrt(sigma_a * sigma_a + 1 / 12), used, n_total)


def clipped_stats(values: np.ndarray, nsigma: float = 3.0, iterations: int = 10) -> RobustStats:
    """Sigma-clipped statistics of any pixel sample (histogram path for integer data)."""
    arr = np.asarray(values)
    if arr.size == 0:
        nan = float("nan")
        return RobustStats(nan, nan, nan, 0, 0)
    if np.issubdtype(arr.dtype, np.integer):
        hist, offset = _histogram(arr)
        return clipped_stats_histogram(hist, offset, nsigma, iterations)
    flat = arr[np.isfinite(arr)].astype(np.float64, copy=False).ravel()
    if flat.size == 0:
        nan = float("nan")
        return RobustStats(nan, nan, nan, 0, int(arr.size))
    # Starting guesses from at most ~20k values: cheap, and clipping refines them.
    sample = flat[:: max(1, flat.size // 20_000)]
    med = float(np.median(sample))
    q25, q75 = np.percentile(sample, [25, 75])
    sigma = max(float(q75 - q25) / 1.349, 1e-6)
    centre = med
    correction = sqrt(truncation_variance_factor(nsigma))
    n_used, previous = flat.size, None
    for _ in range(iterations):
        keep = np.abs(flat - centre) <= nsigma * sigma
        n_used = int(np.count_nonzero(keep))
        if n_used < 2:
            break
        sel = flat[keep]
        mean = float(sel.mean())
        dev = sel - mean
        std = sqrt(float(np.square(dev, out=dev).sum()) / (n_used - 1)) / correction
        centre, sigma = mean, max(std, 1e-6)
        if previous == n_used:  # the same pixels twice: converged
            break
        previous = n_used
    return RobustStats(med, centre, sigma, n_used, int(arr.size))
