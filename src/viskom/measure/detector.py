"""Detector health of one quadrant: bias, read noise, image level, dark, flat and CI levels.

Pure functions: a quadrant's pixels and geometry in, a dict of named metrics out. Integer
pixels are summarised by histogram (see `robust`), so no float copy of the image is made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from viskom.le1.geometry import QuadrantGeometry, check_geometry
from viskom.measure.robust import clipped_stats

NAN = float("nan")

#: Metrics that add up over quadrants (CCD and FPA values are sums); the rest use medians.


@dataclass(frozen=True)
class DetectorHealthParams:
    """Tunable thresholds of the detector-health measurement."""

    bias_clip_sigma: float = 3.0
    noise_clip_sigma: float = 4.0
    hot_pixel_sigma: float = 10.0
    flat_block_px: int = 32
    geometry_threshold_adu: float = 5.0
    level_sample_px: int = 500_000


def quadrant_bias(
    data: np.ndarray, geometry: QuadrantGeometry, nsigma: float = 3.0
) -> tuple[float, float, float]:
    """Bias levels (ADU) of the serial prescan and overscan, and the level under the image.

    The prescan and overscan bracket every image row, so their mean is the bias under the
    image even with a gradient along the rows.
    """
    pre = clipped_stats(data[geometry.serial_prescan.slices], nsigma).mean
    over = clipped_stats(data[geometry.serial_overscan.slices], nsigma).mean
    return pre, over, float(np.nanmean([pre, over]))


def smooth_trend(values: np.ndarray) -> np.ndarray:
    """Least-squares quadratic through a 1-d profile (plain sums: no BLAS threads)."""
    n = values.size
    if n < 4:
        return np.full(n, values.mean())
    t = np.linspace(-1.0, 1.0, n)
    basis = np.stack([np.ones(n), t, t * t])
    gram = np.array([[float((bi * bj).sum()) for bj in basis] for bi in basis])
    rhs = np.array([float((bi * values).sum()) for bi in basis])
    coeffs = np.linalg.solve(gram, rhs)
    return coeffs[0] + coeffs[1] * t + coeffs[2] * t * t


def read_noise_adu(overscan: np.ndarray, nsigma: float = 4.0) -> float:
    """Robust standard deviation of the digitised serial overscan, in ADU.

    A smooth trend along the rows (a bias gradient) is removed first with a quadratic fit
    to the row means, so it does not inflate the noise; row-to-row noise and the
    quantisation of the ADC are kept, as they are part of what a pixel sees.
    """
    block = np.asarray(overscan, dtype=np.float64)
    if block.size < 10:
        return NAN
    row_means = block.mean(axis=1)
    resid = block - smooth_trend(row_means).reshape(-1, 1)
    return clipped_stats(resid, nsigma=nsigma).sigma


def _block_means(image: np.ndarray, block: int) -> np.ndarray:
    ny, nx = image.shape[0] // block, image.shape[1] // block
    if ny == 0 or nx == 0:
        return np.asarray(image, dtype=np.float64).ravel()
    trimmed = image[: ny * block, : nx * block].astype(np.float32)
    return trimmed.reshape(ny, block, nx, block).mean(axis=(1, 3)).ravel()


def dark_level_adu(image: np.ndarray, median: float, sigma: float, nsigma: float = 3.0) -> float:
    """Mean dark level (ADU, bias included) with cosmic rays and hot pixels masked.

    Pixels above median + 5 sigma and their 8 neighbours are masked (the charge a hit
    diffuses into its neighbours is too faint to clip, yet biases a mean of ~0.1 ADU),
    then the rest gets a sigma-clipped mean.
    """
    hits = image > median + 5.0 * sigma
    if hits.any():
        from scipy import ndimage  # lazily: start-up time of the CLI

        hits = ndimage.binary_dilation(hits, structure=np.ones((3, 3), dtype=bool))
        return clipped_stats(image[~hits], nsigma).mean
    return clipped_stats(image, nsigma).mean


def charge_injection_level(image: np.ndarray, bias: float, noise: float) -> tuple[float, int]:
    """Level (ADU above bias) of injected charge lines and how many image rows carry them."""
    profile = np.median(image, axis=1).astype(np.float64) - bias
    peak = float(profile.max()) if profile.size else NAN
    if not np.isfinite(peak) or peak < max(20.0 * noise, 50.0):
        return NAN, 0
    lines = profile > 0.5 * peak
    return float(np.median(profile[lines])), int(lines.sum())


def quadrant_health(
    data: np.ndarray,
    geometry: QuadrantGeometry,
    *,
    frame_type: str,
    gain_e_per_adu: float | None,
    exptime_s: float | None,
    saturate_adu: float | None = None,
    params: DetectorHealthParams | None = None,
) -> dict[str, float]:
    """All detector-health metrics of one quadrant (names as stored in the database)."""
    p = params or DetectorHealthParams()
    gain = gain_e_per_adu if gain_e_per_adu and gain_e_per_adu > 0 else NAN
    over = data[geometry.serial_overscan.slices]
    pover = data[geometry.parallel_overscan.slices]
    image = data[geometry.image.slices]

    bias_pre, bias_over, bias_image = quadrant_bias(data, geometry, p.bias_clip_sigma)
    bias_pover = clipped_stats(pover, p.bias_clip_sigma).mean
    noise = read_noise_adu(over, p.noise_clip_sigma)

    # Level and spread from a subsample of rows (>= 0.5 Mpx: sub-0.01 ADU precision);
    # hot and saturated pixels are counted over every pixel.
    step = max(1, image.shape[0] * image.shape[1] // p.level_sample_px)
    img = clipped_stats(image[::step], p.bias_clip_sigma)
    threshold = img.median + p.hot_pixel_sigma * max(img.sigma, noise if noise == noise else 1.0)
    sat_level = saturate_adu if saturate_adu and saturate_adu > 0 else 65535.0
    bright = image[image > threshold]  # one pass; a few percent of the pixels at most
    hot = int(bright.size)
    saturated = int(np.count_nonzero(bright >= sat_level))
    if sat_level <= threshold:  # a saturation level below the hot threshold (odd header)
        saturated = int(np.count_nonzero(image >= sat_level))
    check = check_geometry(data, geometry, p.geometry_threshold_adu)

    m: dict[str, float] = {
        "bias_prescan_adu": bias_pre,
        "bias_overscan_adu": bias_over,
        "bias_parallel_overscan_adu": bias_pover,
        "read_noise_adu": noise,
        "read_noise_e": noise * gain,
        "image_level_adu": img.median - bias_image,
        "image_sigma_adu": img.sigma,
        "hot_pixels": float(hot),
        "saturated_pixels": float(saturated),
        "geometry_mismatch": 1.0 if check.consistent is False else 0.0,
    }
    ftype = frame_type.upper()
    if ftype == "DARK":
        level_adu = dark_level_adu(image, img.median, img.sigma, p.bias_clip_sigma) - bias_image
        m["dark_current_e_per_s"] = (
            level_adu * gain / exptime_s if exptime_s and exptime_s > 0 else NAN
        )
    elif ftype == "FLAT":
        level_adu = img.median - bias_image
        blocks = _block_means(image, p.flat_block_px) - bias_image
        m["flat_level_e"] = level_adu * gain
        block_stats = clipped_stats(blocks, 4.0)
        m["flat_nonuniformity"] = (
            block_stats.sigma / block_stats.median if block_stats.median > 0 else NAN
        )
    elif ftype == "CHARGE":
        level, nrows = charge_injection_level(image, bias_image, noise)
        m["ci_level_adu"] = level
        m["ci_rows"] = float(nrows)
    return m
