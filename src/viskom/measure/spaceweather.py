"""GOES space weather over an exposure (VISQL-SPEC 9.5) and particle rates against it.

VISQL averaged XRS-A over [DATE-OBS, DATE-OBS + EXPTIME + 72 s] (or took the nearest sample);
here both XRS bands give a mean and a maximum over the window in which particles reach the
detector, and the proton flux a mean. `fit_rate_relation` fits a per-exposure event rate
against such a flux robustly (Theil-Sen start, clipped least squares). Pure functions on arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np

from viskom.measure.arrays import as_float, quiet_numpy
from viskom.measure.robust import MAD_TO_SIGMA

#: Without a sample inside the window, the nearest one within this many minutes is used.
NEAREST_MAX_MIN = 5.0


def window_stats(
    time: np.ndarray, values: np.ndarray, start: datetime, end: datetime
) -> tuple[float, float]:
    """Mean and maximum of finite values in [start, end]; the nearest sample (within 5 min)
    when the window holds none; NaN, NaN without data."""
    t = np.asarray(time, dtype="datetime64[ms]")
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    t, v = t[ok], v[ok]
    if t.size == 0:
        return float("nan"), float("nan")
    t0 = np.datetime64(start.replace(tzinfo=None), "ms")
    t1 = np.datetime64(end.replace(tzinfo=None), "ms")
    inside = (t >= t0) & (t <= t1)
    if inside.any():
        return float(v[inside].mean()), float(v[inside].max())
    mid = t0 + (t1 - t0) / 2
    gap = np.abs((t - mid).astype("timedelta64[ms]").astype(float)) / 60000.0
    j = int(np.argmin(gap))
    if gap[j] <= NEAREST_MAX_MIN + (t1 - t0).astype(float) / 120000.0:
        return float(v[j]), float(v[j])
    return float("nan"), float("nan")


def exposure_window(
    date_obs: datetime, exptime_s: float, readout_s: float = 72.0
) -> tuple[datetime, datetime]:
    """[DATE-OBS, DATE-OBS + EXPTIME + readout]: when particles can reach the detector."""
    return date_obs, date_obs + timedelta(seconds=float(exptime_s) + float(readout_s))


def archive_has_no_data(missing: str) -> bool:
    """Whether a missing-day entry of GoesClient says the archive answered and has no data
    for the day (rather than that it could not be asked, or its file could not be used)."""
    return bool(getattr(missing, "no_data", False))


def missing_in_window(missing: Sequence[str], start: datetime, end: datetime) -> list[str]:
    """The missing-day entries of GoesClient that name the first or last day of the window
    [start, end]: those that say why GOES has no sample for it."""
    window_days = {start.date().isoformat(), end.date().isoformat()}
    return [m for m in missing if any(day in m for day in window_days)]


def fit_rate_relation(
    x: Any,
    y: Any,
    model: Literal["linear", "loglog"] = "linear",
    *,
    clip_sigma: float = 3.0,
    max_iter: int = 20,
) -> dict[str, Any]:
    """Robust fit rate = intercept + slope * flux ('linear') or in log10-log10 ('loglog').

    Starts from the Theil-Sen line, then iterates least squares on the points within
    clip_sigma robust sigmas (1.4826 MAD) of the current line. Returns model, slope,
    slope_err, intercept, intercept_err (least-squares standard errors on the kept points),
    r (Pearson), rho (Spearman), n (points used), n_total (finite points), n_clipped,
    scatter (rms residual of the kept points, in fitted units) and clip_sigma; NaNs when fewer
    than 3 usable points or no spread in x.
    """
    if model not in ("linear", "loglog"):
        raise ValueError(f"model must be 'linear' or 'loglog', got {model!r}")
    xv = as_float(x)
    yv = as_float(y)
    if xv.shape != yv.shape:
        raise ValueError(f"x ({xv.size}) and y ({yv.size}) differ in length")
    ok = np.isfinite(xv) & np.isfinite(yv)
    if model == "loglog":
        with quiet_numpy():
            ok &= (xv > 0) & (yv > 0)
    u = xv[ok] if model == "linear" else np.log10(xv[ok])
    v = yv[ok] if model == "linear" else np.log10(yv[ok])
    nan = float("nan")
    out: dict[str, Any] = {
        "model": model,
        "slope": nan,
        "slope_err": nan,
        "intercept": nan,
        "intercept_err": nan,
        "r": nan,
        "rho": nan,
        "n": 0,
        "n_total": int(u.size),
        "n_clipped": 0,
        "scatter": nan,
        "clip_sigma": float(clip_sigma),
    }
    if u.size < 3 or np.ptp(u) == 0:
        return out

    from scipy import stats  # lazily: scipy.stats takes half a second to import

    ts = stats.theilslopes(v, u)
    slope, intercept = float(ts.slope), float(ts.intercept)
    keep = np.ones(u.size, dtype=bool)
    fit = None
    for _ in range(max_iter):
        resid = v - (intercept + slope * u)
        # MAD of all residuals about the median of the kept ones (not astropy's mad_std,
        # which centres on the median of all residuals and uses 1.482602...)
        sigma = MAD_TO_SIGMA * float(np.median(np.abs(resid - np.median(resid[keep]))))
        if not sigma > 0:
            sigma = float(np.std(resid[keep]))
        new_keep = np.abs(resid) <= clip_sigma * sigma if sigma > 0 else np.ones_like(keep)
        if new_keep.sum() < 3 or np.ptp(u[new_keep]) == 0:
            break
        fit = stats.linregress(u[new_keep], v[new_keep])
        slope, intercept = float(fit.slope), float(fit.intercept)
        converged = np.array_equal(new_keep, keep)
        keep = new_keep
        if converged:
            break
    if fit is None:  # clipping could not leave 3 points: least squares on all
        keep = np.ones(u.size, dtype=bool)
        fit = stats.linregress(u, v)
        slope, intercept = float(fit.slope), float(fit.intercept)

    uk, vk = u[keep], v[keep]
    resid = vk - (intercept + slope * uk)
    n = int(keep.sum())
    with quiet_numpy():
        rho = stats.spearmanr(uk, vk).statistic if np.ptp(vk) > 0 else nan
    out.update(
        slope=slope,
        slope_err=float(fit.stderr),
        intercept=intercept,
        intercept_err=float(fit.intercept_stderr),
        r=float(fit.rvalue) if np.ptp(vk) > 0 else nan,
        rho=float(rho),
        n=n,
        n_clipped=int(u.size - n),
        scatter=float(np.sqrt(np.sum(resid**2) / max(n - 2, 1))),
    )
    return out
