"""Which exposures count for the ice monitor, and the ice trend's statistics.

VISQL's plotice family (VISQL-SPEC 8.7-8.12): nominal ("long", 560.52 s) and short (89.52 s)
exposures are kept apart (+-1 s), an exposure is accepted on the curvature of its three
VIS/Gaia ratios and its astrometric sigma, the self-calibration field is a circle-like cut
about its centre. The trend is ln(VIS/Gaia) relative to the 3-sigma-clipped mean over a
reference period (`timeline_table`), and the daily VIS/Gaia(1.75) of the diagonal and
cross-diagonal CCDs relative to their reference-period means (`diag_table`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import numpy as np

LONG_EXPTIME_S = 560.52
SHORT_EXPTIME_S = 89.52
EXPTIME_TOLERANCE_S = 1.0
#: (kind, nominal exposure time) of the two exposure families kept apart.
KINDS = (("long", LONG_EXPTIME_S), ("short", SHORT_EXPTIME_S))
#: VISQL's acceptance of an exposure (plotice step 1): curvature window and astrometric sigma.
CURVATURE_RANGE = (-0.175, -0.025)
SIGMA_MAX_PIX = 10.0
#: VISQL's self-calibration field: (dRA / 2)^2 + dDec^2 < 0.04 (deg^2) about the centre.
SELFCAL_RA_SCALE = 2.0
SELFCAL_LIMIT = 0.04
#: Store metrics (FPA unit) of VIS/Gaia at BP-RP 0.75, 1.75, 2.75.
RATIO_METRICS = ("vis_over_gaia_075", "vis_over_gaia_175", "vis_over_gaia_275")
DIAGONAL_CCDS = tuple(f"{n}-{n}" for n in range(1, 7))
CROSS_DIAGONAL_CCDS = tuple(f"{n}-{7 - n}" for n in range(1, 7))
#: Columns of the ice timeline table (one row per exposure) and of the diagonal-CCD table.
TIMELINE_COLUMNS = (
    "exposure", "date_obs", "exptime", "selfcal", "good", "reference",
    "ln_r075", "ln_r175", "ln_r275", "rel_075", "rel_175", "rel_275",
)  # fmt: skip
DIAG_COLUMNS = ("day", "ccd", "diagonal", "n_exposures", "r175", "rel_175")


def exposure_kind(exptime: float | None) -> str | None:
    """'long' (560.52 s), 'short' (89.52 s), each +-1 s, or None for any other time."""
    if exptime is None or not math.isfinite(exptime):
        return None
    for kind, nominal in KINDS:
        if abs(exptime - nominal) <= EXPTIME_TOLERANCE_S:
            return kind
    return None


def selfcal_mask(
    ra: np.ndarray | float | None, dec: np.ndarray | float | None, ra0: float, dec0: float
) -> np.ndarray:
    """VISQL's self-calibration field test: ((RA - RA0) / 2)^2 + (Dec - Dec0)^2 < 0.04.

    RA differences are wrapped to +-180 deg; missing coordinates are not in the field.
    """
    r = np.asarray(ra, dtype=float)  # None -> NaN
    d = np.asarray(dec, dtype=float)
    dra = (r - ra0 + 180.0) % 360.0 - 180.0
    with np.errstate(invalid="ignore"):
        return np.asarray((dra / SELFCAL_RA_SCALE) ** 2 + (d - dec0) ** 2 < SELFCAL_LIMIT)


def curvature(r075: Any, r175: Any, r275: Any) -> np.ndarray:
    """VISQL's second difference of the three ratios: r075 + r275 - 2 r175."""
    return np.asarray(r075, float) + np.asarray(r275, float) - 2.0 * np.asarray(r175, float)


def good_mask(curv: Any, sigma_pix: Any) -> np.ndarray:
    """VISQL's acceptance: curvature in (-0.175, -0.025) and astrometric sigma < 10 px.

    An exposure without a stored sigma is judged on the curvature alone.
    """
    c = np.asarray(curv, float)
    s = np.asarray(sigma_pix, float)
    with np.errstate(invalid="ignore"):
        return (c > CURVATURE_RANGE[0]) & (c < CURVATURE_RANGE[1]) & ~(s >= SIGMA_MAX_PIX)


def utc_day(d: datetime) -> date:
    """The UTC calendar day of a datetime (a naive one is taken as UTC)."""
    return d.astimezone(UTC).date() if d.tzinfo else d.date()


def clipped_mean(values: np.ndarray, nsigma: float = 3.0, iterations: int = 5) -> float:
    """Mean after iterative nsigma clipping about the mean (NaN if no finite value).

    astropy's `sigma_clip`: mean and standard deviation of the kept values, at most
    `iterations` passes, values within the bounds (inclusive) kept; non-finite values are
    left out first.
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan
    if iterations < 1:  # astropy would read maxiters=0 as "until convergence"
        return float(v.mean())
    from astropy.stats import sigma_clip  # lazily: start-up time

    kept = sigma_clip(v, sigma=nsigma, maxiters=iterations, cenfunc="mean", stdfunc="std")
    return float(kept.compressed().mean())


def _in_reference(days: np.ndarray, ref: tuple[date, date]) -> np.ndarray:
    a = np.datetime64(ref[0], "D")
    b = np.datetime64(ref[1], "D")
    return (days >= a) & (days <= b)


def timeline_table(
    exposures: Sequence[Any],
    values: Mapping[str, Mapping[tuple[str, str], float]],
    *,
    reference: tuple[date, date],
    selfcal_centre: tuple[float, float],
) -> dict[str, Any]:
    """Per-exposure ln(VIS/Gaia) at the three colours, relative to the reference period.

    Returns columns (numpy arrays, TIMELINE_COLUMNS plus 'ln' (3, n) and 'rel' (3, n)) and
    'relative' (bool: the reference period has accepted exposures at all three colours) and
    'n_reference'. The reference is the 3-sigma-clipped mean over the accepted (`good`)
    exposures of the reference period (UTC days, both included), per colour. `exposures` are
    records with name, date_obs, exptime, ra, dec; `values` maps an exposure name to its
    {(unit, metric): value}; `selfcal_centre` is (RA, Dec) of the self-calibration field.
    """
    rows = [e for e in exposures if e.name in values and e.date_obs is not None]
    n = len(rows)
    ratio = np.array(
        [[values[e.name].get(("FPA", m), math.nan) for e in rows] for m in RATIO_METRICS], float
    ).reshape(3, n)
    sigma = np.array([values[e.name].get(("FPA", "astrom_sigma_pix"), math.nan) for e in rows])
    with np.errstate(divide="ignore", invalid="ignore"):
        ln = np.where(ratio > 0, np.log(np.where(ratio > 0, ratio, 1.0)), np.nan)
    good = good_mask(curvature(*ratio), sigma) & np.isfinite(ln).all(axis=0)
    dates = np.array([e.date_obs.astimezone(UTC).replace(tzinfo=None) for e in rows],
                     dtype="datetime64[us]").reshape(n)  # fmt: skip
    ref_mask = _in_reference(dates.astype("datetime64[D]"), reference) & good
    ref = np.array([clipped_mean(ln[k][ref_mask]) for k in range(3)])
    relative = bool(np.isfinite(ref).all())
    rel = ln - ref[:, None] if relative else np.full_like(ln, np.nan)
    ra = np.array([e.ra if e.ra is not None else np.nan for e in rows], float)
    dec = np.array([e.dec if e.dec is not None else np.nan for e in rows], float)
    return {
        "exposure": np.array([e.name for e in rows], dtype=object),
        "date_obs": dates,
        "exptime": np.array([e.exptime for e in rows], float),
        "selfcal": selfcal_mask(ra, dec, *selfcal_centre).reshape(n),
        "good": good,
        "reference": ref_mask,
        "ln": ln,
        "rel": rel,
        "relative": relative,
        "n_reference": int(ref_mask.sum()),
        "reference_mean": ref,
    }


def diag_table(
    exposures: Sequence[Any],
    values: Mapping[str, Mapping[tuple[str, str], float]],
    *,
    reference: tuple[date, date],
    accepted: Mapping[str, bool] | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Daily median VIS/Gaia(1.75) of the diagonal and cross-diagonal CCDs, and relative.

    The day's value is the median over the day's exposures (only those `accepted`, when
    given) of the CCD's VIS/Gaia; `rel_175` divides by the mean of the CCD's daily values in
    the reference period. Returns (DIAG_COLUMNS rows, whether any CCD has a reference).
    """
    ref_days = reference
    per: dict[tuple[str, date], list[float]] = {}
    for e in exposures:
        v = values.get(e.name)
        if not v or e.date_obs is None or (accepted is not None and not accepted.get(e.name)):
            continue
        day = utc_day(e.date_obs)
        for ccd in (*DIAGONAL_CCDS, *CROSS_DIAGONAL_CCDS):
            x = v.get((ccd, "vis_over_gaia_175"))
            if x is not None:
                per.setdefault((ccd, day), []).append(x)
    rows = []
    for (ccd, day), xs in sorted(per.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rows.append(
            {
                "day": day,
                "ccd": ccd,
                "diagonal": "diagonal" if ccd in DIAGONAL_CCDS else "cross",
                "n_exposures": len(xs),
                "r175": float(np.median(xs)),
            }
        )
    ref: dict[str, float] = {}
    for ccd in {r["ccd"] for r in rows}:
        vals = [
            r["r175"] for r in rows if r["ccd"] == ccd and ref_days[0] <= r["day"] <= ref_days[1]
        ]
        if vals:
            ref[ccd] = float(np.mean(vals))
    for r in rows:
        r["rel_175"] = r["r175"] / ref[r["ccd"]] if r["ccd"] in ref else math.nan
    return rows, bool(ref)
