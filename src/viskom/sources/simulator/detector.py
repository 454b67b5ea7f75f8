"""Detector physics of one quadrant: shot noise, blooming, LED flat and charge-injection light.

Shot noise is exact Poisson for the uniform background (inverse CDF) and for the sparse source
maps, except where a pixel's mean exceeds 1000 e- (flats, injection lines, bright star cores),
which use the Gaussian N(mu, mu) approximation, exact to 1/sqrt(mu). Charge above the full
well blooms along its column (or is clipped).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.special import gammaln

if TYPE_CHECKING:
    from viskom.sources.simulator.quadrant import QuadrantTask

GAUSS_POISSON_ABOVE_E = 1000.0


def poisson_uniform(rng: np.random.Generator, lam: float, n: int) -> np.ndarray:
    """n Poisson(lam) deviates (float32): exact inverse CDF, Gaussian above 1000 e-.

    Inverse CDF on 32-bit uniform integers through a 65536-bin lookup table; only the few
    bins that contain a CDF step need a search.
    """
    if lam <= 0.0 or n == 0:
        return np.zeros(n, dtype=np.float32)
    if lam > GAUSS_POISSON_ABOVE_E:
        out = rng.standard_normal(n, dtype=np.float32)
        out *= np.float32(np.sqrt(lam))
        out += np.float32(lam)
        return np.rint(out, out=out)
    kmax = int(lam + 12.0 * np.sqrt(lam) + 12.0)
    k = np.arange(kmax + 1, dtype=np.float64)
    cdf = np.cumsum(np.exp(k * np.log(lam) - lam - gammaln(k + 1.0)))
    cdf[-1] = 1.0
    scaled = cdf * 2.0**32  # k(u) = number of scaled CDF values <= u, u uniform in [0, 2^32)
    starts = np.arange(65536, dtype=np.float64) * 65536.0
    k_lo = np.searchsorted(scaled, starts, side="right")
    k_hi = np.searchsorted(scaled, starts + 65535.0, side="right")
    table = k_lo.astype(np.float32)
    ambiguous = k_hi != k_lo
    u32 = rng.integers(0, 2**32, n, dtype=np.uint32, endpoint=False)
    bins = u32 >> np.uint32(16)
    out = table[bins]
    fix = np.flatnonzero(ambiguous[bins])
    if fix.size:
        out[fix] = np.searchsorted(scaled, u32[fix].astype(np.float64), side="right")
    return out


def poisson_any(rng: np.random.Generator, lam: np.ndarray) -> np.ndarray:
    """Poisson deviates of an array of means (Gaussian approximation above 1000 e-)."""
    lam = np.asarray(lam, dtype=np.float64)
    out = np.empty(lam.shape, dtype=np.float64)
    big = lam > GAUSS_POISSON_ABOVE_E
    small = ~big
    out[small] = rng.poisson(np.maximum(lam[small], 0.0))
    if big.any():
        lb = lam[big]
        out[big] = np.rint(lb + np.sqrt(lb) * rng.standard_normal(lb.size))
    return out


def bloom(electrons: np.ndarray, full_well: float, spread: bool = True) -> None:
    """In place: charge above full well spreads up and down its column (lost at the edges)."""
    over = electrons > full_well
    if not over.any():
        return
    if not spread:
        np.minimum(electrons, full_well, out=electrons)
        return
    for col in np.flatnonzero(over.any(axis=0)):
        column = electrons[:, col].astype(np.float64)
        for _ in range(50):
            full = column >= full_well
            if not (column > full_well).any():
                break
            # Runs of full pixels containing an excess.
            edges = np.diff(np.concatenate(([0], full.astype(np.int8), [0])))
            starts = np.flatnonzero(edges == 1)
            ends = np.flatnonzero(edges == -1)  # exclusive
            for a, b in zip(starts, ends, strict=True):
                excess = float(np.sum(column[a:b] - full_well))
                if excess <= 0.0:
                    continue
                column[a:b] = full_well
                half = 0.5 * excess
                # Upwards (increasing row), then downwards; leftovers cross to the other side.
                left_over = _fill(column[b:], full_well, half)
                left_over = _fill(column[:a][::-1], full_well, half + left_over)
                if left_over > 0.0:
                    _fill(column[b:], full_well, left_over)
        electrons[:, col] = np.minimum(column, full_well)


def _fill(segment: np.ndarray, full_well: float, amount: float) -> float:
    """Fill a 1-D view from its start up to full well with `amount`; return what did not fit."""
    if amount <= 0.0 or segment.size == 0:
        return max(amount, 0.0)
    capacity = np.maximum(full_well - segment, 0.0)
    cum = np.cumsum(capacity)
    k = int(np.searchsorted(cum, amount, side="left"))
    if k >= segment.size:
        segment[:] = full_well
        return float(amount - cum[-1])
    segment[:k] = np.maximum(segment[:k], full_well)
    segment[k] += amount - (cum[k - 1] if k > 0 else 0.0)
    return 0.0


def flat_illumination(task: QuadrantTask, width: int, height: int) -> tuple[np.ndarray, float]:
    """Noiseless LED illumination (e-) of the image area, before PRNU; and its median."""
    m = task.model
    cfg = task.config
    u = (2.0 * (np.arange(width) + 0.5) / width - 1.0)[None, :]
    v = (2.0 * (np.arange(height) + 0.5) / height - 1.0)[:, None]
    c = m.flat_coeffs
    pattern = (
        c[0] * u + c[1] * v + c[2] * (u * u - 1.0 / 3.0) + c[3] * (v * v - 1.0 / 3.0) + c[4] * u * v
    )
    pattern = pattern - pattern.mean()
    pattern *= cfg.flat_nonuniformity / max(float(pattern.std()), 1e-12)
    illum = (m.flat_level_e * task.flat_factor) * (1.0 + pattern)
    return illum, float(np.median(illum))


def ci_profile(task: QuadrantTask, height: int) -> tuple[np.ndarray, float]:
    """Mean injected electrons per image row (bands + CTI trails) and the band level (e-)."""
    m = task.model
    cfg = task.config
    level_adu = m.ci_level_adu * task.ci_factor
    level_e = level_adu * m.gain_e_per_adu
    dist = np.arange(height)  # rows from the serial register, in readout order
    period, rows = int(cfg.ci_period_rows), int(cfg.ci_rows)
    start = period // 2
    phase = (dist - start) % period
    in_band = (dist >= start) & (phase < rows)
    profile = np.where(in_band, level_e, 0.0)
    trail_j = phase - rows  # rows after the end of the band
    has_band = dist - start >= rows
    trail = (~in_band) & has_band & (trail_j >= 0) & (trail_j < max(1, int(6 * cfg.cti_trail_rows)))
    profile = profile + np.where(
        trail,
        level_e * cfg.cti_trail_fraction * np.exp(-np.maximum(trail_j, 0) / cfg.cti_trail_rows),
        0.0,
    )
    if m.geometry.parallel_overscan_side == "bottom":  # serial register at the top
        profile = profile[::-1]
    return profile, level_adu
