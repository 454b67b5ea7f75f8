"""GOES space weather over an exposure: XRS fluxes and >= 10 MeV protons (VISQL-SPEC 9.5).

VISQL averaged XRS-A over [DATE-OBS, DATE-OBS + EXPTIME + 72 s] (or took the nearest sample);
here both XRS bands give a mean and a maximum over the window in which particles reach the
detector, and the proton flux a mean. Pure functions on arrays.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

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


def exposure_window(date_obs: datetime, exptime_s: float, readout_s: float = 72.0):
    """[DATE-OBS, DATE-OBS + EXPTIME + readout]: when particles can reach the detector."""
    return date_obs, date_obs + timedelta(seconds=float(exptime_s) + float(readout_s))
