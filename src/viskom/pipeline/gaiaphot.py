"""Gaia photometry aggregates: VIS/Gaia per exposure, block, CCD and quadrant, and the ice trend.

VISQL's `plotice` family (VISQL-SPEC 8.7-8.12) rebuilt on the store and the per-exposure
residual tables (`<exposure>_gaia_stars.parquet`, VISQL's `_frat.txt`). Nominal ("long",
560.52 s) and short (89.52 s) exposures are kept apart (+-1 s); other exposure times are
ignored. Per period (`write_gaia_period_products`, a month 'YYYY-MM'), in `folder`:

* `vis_over_gaia_<label>_<long|short>.csv`: one row per exposure, from the store: VIS/Gaia at
  BP-RP 0.75/1.75/2.75 (`r075`...), the colour terms, the astrometric fit, the self-calibration
  flag and VISQL's acceptance `good` (-0.175 < r075 + r275 - 2 r175 < -0.025, sigma < 10 px);
* `vis_over_gaia_3x3_<label>_<long|short>.csv`: VIS/Gaia of each exposure's 3 x 3 blocks;
* `vis_over_gaia_<YYYY-MM-DD>_ccd_<long|short>.csv`: per day, all stars of the day stacked and
  fitted (quadratic, 4 clipped refits) for the focal plane, the 9 blocks, 36 CCDs and 144
  quadrants (VISQL's fitcolcol mode 3);
* `visgaiacolour_<LONG|SHORT>_<label>.csv` and `VISGaia_FPA_<LONG|SHORT>_<label>.png`: the same
  fits over the whole period, focal plane then each CCD followed by its quadrants (8.11);
* `iceplot_FPA_<label>_<exptime>.png` for the period, each Thursday-to-Thursday week starting
  in it (`wk<start>_<end>`, the last one may run past the period's end) and each day (8.10).

`r075, r175, r275` are VIS/Gaia ratios (exp of the fit; VISQL's visgaiacolour table printed
ln ratios). `write_ice_timeline` covers every SCIENCE exposure in the store: the ice trend
`iceplot_<long|short>.png` + `ice_timeline_<long|short>.csv`, ln(VIS/Gaia) relative to the mean
over the configured reference period, and `iceplot_diag_<long|short>.png` +
`ice_diag_<long|short>.csv`, the daily VIS/Gaia(1.75) of the diagonal and cross-diagonal CCDs.

Stacked fits are vectorised over all units and days at once (`grouped_colour_fits`, the same
estimator as `measure.gaia.fit_colour_relation(..., refits=4)`), residual tables are read in
parallel threads, column subset only. Missing or unreadable tables are logged and skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from viskom.le1.geometry import all_ccds, all_extnames, parse_extname
from viskom.measure.gaia import COLOUR_FIT_GMAX, COLOURS, ColourFit, block_name
from viskom.store.products import exposure_dir, product_path, write_csv

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Constants

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
#: Stacked fits: VISQL plotzptCCD's 4 clipped refits, at least this many stars.
STACK_REFITS = 4
STACK_MIN_STARS = 10
#: The residual-table product and the columns the aggregates read.
RESIDUAL_PRODUCT = "gaia_stars"
RESIDUAL_COLUMNS = (
    "extname", "x_world", "y_world", "g_mag", "bp_rp", "ln_ratio", "frat", "flux", "colour_used",
)  # fmt: skip
READ_THREADS = 4

RATIO_METRICS = ("vis_over_gaia_075", "vis_over_gaia_175", "vis_over_gaia_275")
#: Per-exposure CSV column -> store metric (FPA unit).
EXPOSURE_METRICS = {
    "r075": "vis_over_gaia_075",
    "r175": "vis_over_gaia_175",
    "r275": "vis_over_gaia_275",
    "c0": "gaia_colour_c0",
    "c1": "gaia_colour_c1",
    "c2": "gaia_colour_c2",
    "rms": "gaia_colour_rms",
    "n_stars": "gaia_colour_n_stars",
    "n_matched": "n_matched",
    "sigma_pix": "astrom_sigma_pix",
    "dx_pix": "astrom_dx_pix",
    "dy_pix": "astrom_dy_pix",
    "ddx_dx": "astrom_ddx_dx",
    "ddy_dx": "astrom_ddy_dx",
    "ddx_dy": "astrom_ddx_dy",
    "ddy_dy": "astrom_ddy_dy",
}
EXPOSURE_COLUMNS = (
    "exposure", "date_obs", "exptime", "ra", "dec", "pa", "selfcal",
    "r075", "r175", "r275", "c0", "c1", "c2", "rms", "n_stars", "curvature", "good",
    "n_matched", "sigma_pix", "dx_pix", "dy_pix", "ddx_dx", "ddy_dx", "ddx_dy", "ddy_dy",
)  # fmt: skip
BLOCK_COLUMNS = ("exposure", "date_obs", "exptime", "block", "r075", "r175", "r275", "n_stars")
FIT_COLUMNS = ("unit", "n_fit", "n_total", "rms", "c0", "c1", "c2", "r075", "r175", "r275")
TIMELINE_COLUMNS = (
    "exposure", "date_obs", "exptime", "selfcal", "good", "reference",
    "ln_r075", "ln_r175", "ln_r275", "rel_075", "rel_175", "rel_275",
)  # fmt: skip
DIAG_COLUMNS = ("day", "ccd", "diagonal", "n_exposures", "r175", "rel_175")

# Focal-plane units, with integer codes: quadrant q in all_extnames() order, CCD q // 4,
# block by lookup. Block names are 'B' + VISQL's (CCD-column pair, CCD-row pair).
QUADRANTS: tuple[str, ...] = tuple(all_extnames())
CCDS: tuple[str, ...] = tuple(all_ccds())
_QUAD_ID = [parse_extname(q) for q in QUADRANTS]
BLOCKS: tuple[str, ...] = tuple(
    sorted({"B" + block_name(q.ccd_row, q.ccd_column) for q in _QUAD_ID})
)
QUAD_TO_CCD = np.array([CCDS.index(q.ccd) for q in _QUAD_ID], np.int64)
QUAD_TO_BLOCK = np.array(
    [BLOCKS.index("B" + block_name(q.ccd_row, q.ccd_column)) for q in _QUAD_ID], np.int64
)
DIAGONAL_CCDS = tuple(f"{n}-{n}" for n in range(1, 7))
CROSS_DIAGONAL_CCDS = tuple(f"{n}-{7 - n}" for n in range(1, 7))
_QUAD_VALUES = pa.array(QUADRANTS, pa.string())


# ---------------------------------------------------------------------------------------------
# Small pure helpers


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


def thursday_weeks(since: datetime, until: datetime) -> list[tuple[date, date]]:
    """[Thursday, next Thursday) weeks whose Thursday lies in [since, until) (UTC days)."""
    first = since.astimezone(UTC).date()
    last = (until - timedelta(microseconds=1)).astimezone(UTC).date()
    start = first + timedelta(days=(3 - first.weekday()) % 7)
    weeks = []
    while start <= last:
        weeks.append((start, start + timedelta(days=7)))
        start += timedelta(days=7)
    return weeks


def residual_path(products: str | Path, name: str, date_obs: datetime | None) -> Path:
    """Where the gaia stage writes an exposure's residual table."""
    return product_path(exposure_dir(products, name, date_obs), name, RESIDUAL_PRODUCT, "parquet")


def _utc_day(d: datetime) -> date:
    return d.astimezone(UTC).date() if d.tzinfo else d.date()


# ---------------------------------------------------------------------------------------------
# Vectorised stacked colour fits


@dataclass
class GroupFits:
    """Colour relations ln(VIS/Gaia) = c0 + c1 c + c2 c^2 of many groups (arrays over groups)."""

    c0: np.ndarray
    c1: np.ndarray
    c2: np.ndarray
    rms: np.ndarray
    n_fit: np.ndarray
    n_total: np.ndarray

    def ln_ratio(self, colour: float) -> np.ndarray:
        return self.c0 + self.c1 * colour + self.c2 * colour**2

    def ratios(self, colours: Sequence[float] = COLOURS) -> np.ndarray:
        """VIS/Gaia at each colour: array (n_groups, len(colours))."""
        return np.exp(np.column_stack([self.ln_ratio(c) for c in colours]))

    def colour_fit(self, i: int) -> ColourFit:
        """Group i as a `measure.gaia.ColourFit` (n_terms 3, or 0 where it was not fitted)."""
        terms = 3 if np.isfinite(self.c0[i]) else 0
        return ColourFit(
            float(self.c0[i]), float(self.c1[i]), float(self.c2[i]), float(self.rms[i]),
            int(self.n_fit[i]), int(self.n_total[i]), terms,
        )  # fmt: skip

    def rows(self) -> list[dict[str, Any]]:
        """Every group as a table row (FIT_COLUMNS without 'unit'), in group order."""
        r = self.ratios()
        cols = {
            "n_fit": self.n_fit.tolist(),
            "n_total": self.n_total.tolist(),
            "rms": self.rms.tolist(),
            "c0": self.c0.tolist(),
            "c1": self.c1.tolist(),
            "c2": self.c2.tolist(),
            "r075": r[:, 0].tolist(),
            "r175": r[:, 1].tolist(),
            "r275": r[:, 2].tolist(),
        }
        return [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]


def grouped_colour_fits(
    group: np.ndarray,
    colour: np.ndarray,
    ln_ratio: np.ndarray,
    n_groups: int,
    *,
    refits: int = STACK_REFITS,
    clip_sigma: float = 3.0,
    min_stars: int = STACK_MIN_STARS,
) -> GroupFits:
    """`fit_colour_relation(colour, ln_ratio, refits=refits)` of every group at once.

    The same estimator (quadratic least squares; rms = sqrt(sum r^2 / N) of the kept stars;
    keep r^2 < (clip rms)^2 among the finite stars; refit; a group stops when its kept set no
    longer changes or would fall below 3 stars; groups with fewer than `min_stars` finite
    stars get NaN), computed with per-group sums (np.bincount) and a batched 3 x 3 solve, so
    the cost is a few passes over the rows whatever the number of groups. Colours are centred
    at 1.75 for conditioning. Rows with group < 0 are ignored.
    """
    group = np.asarray(group, np.int64)
    c = np.asarray(colour, float)
    v = np.asarray(ln_ratio, float)
    ok = (group >= 0) & np.isfinite(c) & np.isfinite(v)
    g, x, v = group[ok], c[ok] - 1.75, v[ok]
    n_total = np.bincount(g, minlength=n_groups)
    fitted = n_total >= min_stars
    coef = np.full((n_groups, 3), np.nan)
    rms, n_fit = np.full(n_groups, np.nan), np.zeros(n_groups, np.int64)
    keep = fitted[g]
    active = fitted.copy()
    rows = np.flatnonzero(keep)  # rows of the groups still iterating
    for i in range(refits + 1):
        gr, xr, vr, kr = g[rows], x[rows], v[rows], keep[rows]
        gk, xk, vk = gr[kr], xr[kr], vr[kr]
        x2 = xk * xk
        s = [np.bincount(gk, w, minlength=n_groups) for w in (None, xk, x2, x2 * xk, x2 * x2)]
        t = [np.bincount(gk, w, minlength=n_groups) for w in (vk, vk * xk, vk * x2)]
        act = np.flatnonzero(active)
        a = np.stack(
            [np.stack([s[0], s[1], s[2]], -1), np.stack([s[1], s[2], s[3]], -1),
             np.stack([s[2], s[3], s[4]], -1)], -2,
        )[act]  # fmt: skip
        coef[act] = _solve3(a, np.stack(t, -1)[act])
        resid = vr - (coef[gr, 0] + coef[gr, 1] * xr + coef[gr, 2] * xr * xr)
        with np.errstate(invalid="ignore", divide="ignore"):
            ms = np.bincount(gk, resid[kr] ** 2, minlength=n_groups) / s[0]
        rms[act] = np.sqrt(ms[act])
        n_fit[act] = s[0][act].astype(np.int64)
        if i == refits:
            break
        with np.errstate(invalid="ignore"):
            new = resid**2 < (clip_sigma * rms[gr]) ** 2
        n_new = np.bincount(gr, new, minlength=n_groups)
        changed = np.bincount(gr, new != kr, minlength=n_groups) > 0
        active &= changed & (n_new >= 3)
        if not active.any():
            break
        still = active[gr]
        keep[rows[still]] = new[still]
        rows = rows[still]
    # Back from the centred colour x = c - 1.75 to c.
    k0, k1, k2 = coef[:, 0], coef[:, 1], coef[:, 2]
    c0 = k0 - 1.75 * k1 + 1.75**2 * k2
    c1 = k1 - 3.5 * k2
    return GroupFits(c0, c1, k2.copy(), rms, n_fit, n_total)


def _solve3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched least-squares solution of the normal equations a x = b (singular: min-norm)."""
    if a.shape[0] == 0:
        return np.zeros((0, 3))
    try:
        sol = np.linalg.solve(a, b[..., None])[..., 0]
        if np.isfinite(sol).all():
            return sol
    except np.linalg.LinAlgError:
        pass
    return np.einsum("nij,nj->ni", np.linalg.pinv(a), b)


# ---------------------------------------------------------------------------------------------
# Residual tables


@dataclass
class ResidualStack:
    """The residual tables of many exposures, concatenated (row arrays + per-exposure lists)."""

    names: list[str]
    exposure: np.ndarray  # int index into names, per row
    quadrant: np.ndarray  # code into QUADRANTS, -1 if the extname is unknown
    x: np.ndarray
    y: np.ndarray
    g: np.ndarray
    colour: np.ndarray
    ln_ratio: np.ndarray
    frat: np.ndarray
    flux: np.ndarray
    used: np.ndarray
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return int(self.exposure.size)


def _read_one(path: Path) -> dict[str, np.ndarray] | str:
    """Columns of one residual table as numpy, or the reason it cannot be used."""
    if not path.is_file():
        return "missing"
    try:
        t = pq.read_table(path, columns=list(RESIDUAL_COLUMNS), use_threads=False)
        ext = t.column("extname").cast(pa.string())
        codes = pc.fill_null(pc.index_in(ext, value_set=_QUAD_VALUES), -1)
        out = {"quadrant": np.asarray(codes.to_numpy(zero_copy_only=False), np.int16)}
        for name in ("x_world", "y_world", "g_mag", "bp_rp", "ln_ratio", "frat", "flux"):
            col = t.column(name).cast(pa.float64())
            out[name] = np.asarray(col.to_numpy(zero_copy_only=False), float)
        used = pc.fill_null(t.column("colour_used").cast(pa.bool_()), False)
        out["colour_used"] = np.asarray(used.to_numpy(zero_copy_only=False), bool)
    except (OSError, pa.ArrowException, KeyError, ValueError, TypeError) as err:
        return f"unreadable: {err}"
    return out


def read_residuals(
    items: Sequence[tuple[str, Path]], *, threads: int = READ_THREADS
) -> ResidualStack:
    """Read the residual tables of (exposure, path) items in parallel threads and stack them.

    A missing table is skipped (counted, logged once at INFO); an unreadable one (corrupt,
    missing columns) is skipped with a WARNING. Rows keep the order of `items`.
    """
    paths = [p for _, p in items]
    n_threads = max(1, min(threads, len(paths)))
    if n_threads > 1:
        with ThreadPoolExecutor(n_threads) as pool:
            results = list(pool.map(_read_one, paths))
    else:
        results = [_read_one(p) for p in paths]
    names: list[str] = []
    parts: list[dict[str, np.ndarray]] = []
    missing, unreadable = [], []
    for (name, path), res in zip(items, results, strict=True):
        if isinstance(res, str):
            if res == "missing":
                missing.append(name)
                log.debug("%s: no residual table %s", name, path)
            else:
                unreadable.append(name)
                log.warning("%s: residual table %s skipped (%s)", name, path, res)
            continue
        names.append(name)
        parts.append(res)
    if missing:
        log.info("%d of %d exposures have no Gaia residual table", len(missing), len(items))

    def cat(key: str, dtype: Any) -> np.ndarray:
        return np.concatenate([p[key] for p in parts]) if parts else np.zeros(0, dtype)

    sizes = [p["x_world"].size for p in parts]
    return ResidualStack(
        names=names,
        exposure=np.repeat(np.arange(len(parts), dtype=np.int32), sizes),
        quadrant=cat("quadrant", np.int16),
        x=cat("x_world", float),
        y=cat("y_world", float),
        g=cat("g_mag", float),
        colour=cat("bp_rp", float),
        ln_ratio=cat("ln_ratio", float),
        frat=cat("frat", float),
        flux=cat("flux", float),
        used=cat("colour_used", bool),
        missing=missing,
        unreadable=unreadable,
    )


# ---------------------------------------------------------------------------------------------
# Unit levels of stacked fits


def unit_levels(quadrant: np.ndarray) -> list[tuple[str, tuple[str, ...], np.ndarray]]:
    """(level, unit names, unit code per row) for FPA, blocks, CCDs and quadrants.

    Rows with an unknown quadrant (-1) count for the focal plane only.
    """
    q = np.asarray(quadrant, np.int64)
    known = q >= 0
    qq = np.where(known, q, 0)
    return [
        ("fpa", ("FPA",), np.zeros(q.size, np.int64)),
        ("block", BLOCKS, np.where(known, QUAD_TO_BLOCK[qq], -1)),
        ("ccd", CCDS, np.where(known, QUAD_TO_CCD[qq], -1)),
        ("quadrant", QUADRANTS, np.where(known, q, -1)),
    ]


def stacked_fits(
    quadrant: np.ndarray,
    colour: np.ndarray,
    ln_ratio: np.ndarray,
    period: np.ndarray | None = None,
    n_periods: int = 1,
    *,
    refits: int = STACK_REFITS,
    min_stars: int = STACK_MIN_STARS,
) -> dict[str, list[dict[str, Any]]]:
    """Stacked colour fits of every unit (FPA, blocks, CCDs, quadrants) in every period.

    `period` (e.g. a day index per row, default all 0) splits the rows. Returns, per period
    index as str, the rows 'unit' + FIT_COLUMNS in the order FPA, 9 blocks, 36 CCDs, 144
    quadrants.
    """
    q = np.asarray(quadrant, np.int64)
    per = np.zeros(q.size, np.int64) if period is None else np.asarray(period, np.int64)
    out: dict[str, list[dict[str, Any]]] = {str(p): [] for p in range(n_periods)}
    for _, names, code in unit_levels(q):
        n_units = len(names)
        grp = np.where((code >= 0) & (per >= 0), per * n_units + code, -1)
        fits = grouped_colour_fits(
            grp, colour, ln_ratio, n_periods * n_units, refits=refits, min_stars=min_stars
        )
        rows = fits.rows()
        for p in range(n_periods):
            for u, unit in enumerate(names):
                out[str(p)].append({"unit": unit, **rows[p * n_units + u]})
    return out


def visql_unit_order(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """FPA, then each CCD followed by its quadrants (VISQL's visgaiacolour order); no blocks."""
    by_unit = {r["unit"]: r for r in rows}
    order = ["FPA"]
    for ccd in CCDS:
        order += [ccd, *(f"{ccd}.{qd}" for qd in "EFGH")]
    return [by_unit[u] for u in order if u in by_unit]


# ---------------------------------------------------------------------------------------------
# Period products


def _metric_values(
    store: Any,
    metrics: Sequence[str],
    units: Sequence[str],
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    metric_filter_in_db: bool = True,
) -> dict[str, dict[tuple[str, str], float]]:
    """{exposure: {(unit, metric): value}}, None/NaN left out.

    `metric_filter_in_db=False` selects the metrics here rather than in SQL: for many metrics
    of few units SQLite otherwise scans the metric index over every unit (3.4 s instead of
    1.0 s for a month of FPA + block values).
    """
    wanted = set(metrics)
    values: dict[str, dict[tuple[str, str], float]] = {}
    rows = store.metrics(
        metrics=list(metrics) if metric_filter_in_db else None,
        units=list(units),
        since=since,
        until=until,
    )
    for m in rows:
        if m.value is None or not math.isfinite(m.value) or m.metric not in wanted:
            continue
        values.setdefault(m.exposure, {})[(m.unit, m.metric)] = float(m.value)
    return values


def exposure_rows(
    exposures: Sequence[Any],
    values: Mapping[str, Mapping[tuple[str, str], float]],
    settings: Any,
) -> list[dict[str, Any]]:
    """Per-exposure table rows (EXPOSURE_COLUMNS) of the exposures with any Gaia FPA metric."""
    gs = settings.gaia
    rows = []
    for e in exposures:
        v = values.get(e.name, {})
        row: dict[str, Any] = {k: v.get(("FPA", m), math.nan) for k, m in EXPOSURE_METRICS.items()}
        if not any(math.isfinite(row[k]) for k in ("r075", "r175", "r275", "c0", "n_stars")):
            continue
        curv = float(curvature(row["r075"], row["r175"], row["r275"]))
        row.update(
            exposure=e.name,
            date_obs=e.date_obs,
            exptime=e.exptime,
            ra=e.ra,
            dec=e.dec,
            pa=e.pa,
            selfcal=bool(selfcal_mask(e.ra, e.dec, gs.selfcal_ra_deg, gs.selfcal_dec_deg)),
            curvature=curv,
            good=bool(good_mask(curv, row["sigma_pix"])),
        )
        for k in ("n_stars", "n_matched"):
            row[k] = int(row[k]) if math.isfinite(row[k]) else None
        rows.append(row)
    return rows


def block_rows(
    exposures: Sequence[Any], values: Mapping[str, Mapping[tuple[str, str], float]]
) -> list[dict[str, Any]]:
    """Exposure x 3x3-block rows (BLOCK_COLUMNS) where the block has a VIS/Gaia."""
    rows = []
    for e in exposures:
        v = values.get(e.name)
        if not v:
            continue
        for b in BLOCKS:
            r = [v.get((b, m), math.nan) for m in RATIO_METRICS]
            if not any(math.isfinite(x) for x in r):
                continue
            n = v.get((b, "gaia_colour_n_stars"))
            rows.append(
                {
                    "exposure": e.name,
                    "date_obs": e.date_obs,
                    "exptime": e.exptime,
                    "block": b,
                    "r075": r[0],
                    "r175": r[1],
                    "r275": r[2],
                    "n_stars": None if n is None else int(n),
                }
            )
    return rows


def write_gaia_period_products(
    store: Any,
    settings: Any,
    since: datetime,
    until: datetime,
    folder: Path,
    label: str,
    *,
    fpa_maps: bool = True,
    threads: int = READ_THREADS,
    executor: Any | None = None,
) -> list[Path]:
    """Write the Gaia photometry products of [since, until) into `folder`; returns the files.

    Long and short exposures separately (see the module docstring for the files). A kind
    without data writes nothing; a period without any Gaia data writes nothing at all.
    `fpa_maps=False` skips the hexagon maps, the slowest part (one figure per day and week,
    about 1 s each); an `executor` (`pipeline.executors`) draws them in parallel.
    """
    from viskom.present.gaia import plot_colour_relations_fpa

    folder = Path(folder)
    weeks = thursday_weeks(since, until) if fpa_maps else []
    read_until = until  # the last week may run past the period: read its exposures too
    if weeks:
        read_until = max(until, datetime.combine(weeks[-1][1], datetime.min.time(), UTC))
    exposures = [
        e
        for e in store.list_exposures(
            frame_type="SCIENCE", state="registered", since=since, until=read_until
        )
        if e.date_obs is not None and exposure_kind(e.exptime)
    ]
    in_period = [e for e in exposures if e.date_obs < until]
    values = _metric_values(
        store,
        [*EXPOSURE_METRICS.values()],
        ["FPA", *BLOCKS],
        since=since,
        until=until,
        metric_filter_in_db=False,
    )
    written: list[Path] = []
    for kind, _ in KINDS:
        mine = [e for e in in_period if exposure_kind(e.exptime) == kind]
        rows = exposure_rows(mine, values, settings)
        if rows:
            written.append(
                write_csv(folder / f"vis_over_gaia_{label}_{kind}.csv", EXPOSURE_COLUMNS, rows)
            )
        blocks = block_rows(mine, values)
        if blocks:
            written.append(
                write_csv(folder / f"vis_over_gaia_3x3_{label}_{kind}.csv", BLOCK_COLUMNS, blocks)
            )

    if not exposures:
        return written
    products = settings.products_path
    stack = read_residuals(
        [(e.name, residual_path(products, e.name, e.date_obs)) for e in exposures],
        threads=threads,
    )
    if stack.n_rows == 0:
        return written
    by_name = {e.name: e for e in exposures}
    exp_kind = np.array([exposure_kind(by_name[n].exptime) for n in stack.names])
    exp_day = np.array([_utc_day(by_name[n].date_obs) for n in stack.names], dtype="datetime64[D]")
    row_day = exp_day[stack.exposure]
    gmax = float(getattr(settings.gaia, "colour_gmax", COLOUR_FIT_GMAX))
    with np.errstate(invalid="ignore"):
        usable = stack.used & (stack.g < gmax) & np.isfinite(stack.colour)
    d0 = np.datetime64(_utc_day(since), "D")
    d1 = np.datetime64(_utc_day(until - timedelta(microseconds=1)), "D") + 1
    in_period_row = (row_day >= d0) & (row_day < d1)

    map_tasks: list[dict[str, Any]] = []
    for kind, nominal in KINDS:
        of_kind = (exp_kind == kind)[stack.exposure]
        sel = of_kind & usable & in_period_row
        if not sel.any():
            continue
        days, day_idx = np.unique(row_day[sel], return_inverse=True)
        daily = stacked_fits(
            stack.quadrant[sel], stack.colour[sel], stack.ln_ratio[sel], day_idx, len(days)
        )
        for i, day in enumerate(days):
            path = folder / f"vis_over_gaia_{day}_ccd_{kind}.csv"
            written.append(write_csv(path, FIT_COLUMNS, daily[str(i)]))
        month = stacked_fits(stack.quadrant[sel], stack.colour[sel], stack.ln_ratio[sel])["0"]
        ordered = visql_unit_order(month)
        up = kind.upper()
        written.append(write_csv(folder / f"visgaiacolour_{up}_{label}.csv", FIT_COLUMNS, ordered))
        fits = {r["unit"]: r for r in ordered}
        q = stack.quadrant[sel]
        ccd_names = np.asarray((*CCDS, "?"))[np.where(q >= 0, QUAD_TO_CCD[np.maximum(q, 0)], 36)]
        written.append(
            plot_colour_relations_fpa(
                ccd_names,
                stack.colour[sel],
                stack.ln_ratio[sel],
                stack.g[sel],
                fits,
                folder / f"VISGaia_FPA_{up}_{label}.png",
                label=label,
                kind=kind,
                exptime=nominal,
            )
        )
        if fpa_maps:
            map_tasks += fpa_map_tasks(
                stack, of_kind & usable, row_day, folder, label, kind, nominal, days, weeks
            )
    return written + _render_all(map_tasks, executor)


def fpa_map_tasks(
    stack: ResidualStack,
    rows: np.ndarray,
    row_day: np.ndarray,
    folder: Path,
    label: str,
    kind: str,
    exptime: float,
    days: np.ndarray,
    weeks: Sequence[tuple[date, date]],
) -> list[dict[str, Any]]:
    """Keyword arguments of `present.gaia.plot_fpa_maps` for the period, its weeks, its days.

    Only periods with stars; `rows` selects the usable stars of one exposure kind.
    """
    periods: list[tuple[str, str, np.datetime64, np.datetime64]] = []
    if days.size:
        periods.append((label, label, days.min(), days.max() + 1))
    periods += [
        (f"wk{a}_{b}", f"week {a} to {b}", np.datetime64(a, "D"), np.datetime64(b, "D"))
        for a, b in weeks
    ]
    periods += [(str(d), str(d), d, d + 1) for d in days]
    tasks = []
    for name, title, a, b in periods:
        sel = rows & (row_day >= a) & (row_day < b)
        if not sel.any():
            continue
        tasks.append(
            {
                "x": stack.x[sel],
                "y": stack.y[sel],
                "residual": stack.frat[sel],
                "g_mag": stack.g[sel],
                "flux_adu": stack.flux[sel],
                "path": folder / f"iceplot_FPA_{name}_{exptime:.2f}.png",
                "label": title,
                "exptime": exptime,
                "kind": kind,
                "n_exposures": int(np.unique(stack.exposure[sel]).size),
            }
        )
    return tasks


def render_fpa_map(task: Mapping[str, Any]) -> Path:
    """Draw one FPA map task (top level, so that a process pool can run it)."""
    from viskom.present import gaia as present

    return present.plot_fpa_maps(**task)


#: Bump when the FPA map drawing changes: maps with unchanged inputs are otherwise not redrawn.
FPA_MAPS_VERSION = "1"
SIGNATURES_FILE = ".fpa_map_inputs.json"


def map_signature(task: Mapping[str, Any]) -> str:
    """A digest of an FPA map's inputs (the star arrays, labels and the drawing version)."""
    h = hashlib.sha1(usedforsecurity=False)
    for key in ("x", "y", "residual", "g_mag", "flux_adu"):
        h.update(np.ascontiguousarray(task[key], dtype=float).tobytes())
    h.update(
        f"{task['label']}|{task['exptime']}|{task['kind']}|{task['n_exposures']}|"
        f"{FPA_MAPS_VERSION}".encode()
    )
    return h.hexdigest()


def _render_all(tasks: Sequence[Mapping[str, Any]], executor: Any | None) -> list[Path]:
    """Render tasks serially or on an executor (`pipeline.executors`); failures are logged.

    A map whose PNG exists and whose inputs have not changed since it was drawn (digest in a
    hidden JSON file of its folder) is kept as it is: a month's products are rewritten after
    every run, but only the maps of the days that got new exposures change.
    """
    by_folder: dict[Path, dict[str, str]] = {}
    todo, kept, signatures = [], [], {}
    for task in tasks:
        path = Path(task["path"])
        known = by_folder.setdefault(path.parent, _read_signatures(path.parent))
        sig = map_signature(task)
        signatures[path] = sig
        if path.exists() and known.get(path.name) == sig:
            kept.append(path)
        else:
            todo.append(task)
    if executor is None:
        results: Iterable[tuple[Mapping[str, Any], Any]] = ((t, _try_render(t)) for t in todo)
    else:
        results = executor.map_unordered(render_fpa_map, todo)
    written = []
    for task, res in results:
        if isinstance(res, BaseException):
            log.error("FPA map %s failed: %s", task["path"], res)
            by_folder[Path(task["path"]).parent].pop(Path(task["path"]).name, None)
        else:
            written.append(res)
            path = Path(task["path"])
            by_folder[path.parent][path.name] = signatures[path]
    for folder, known in by_folder.items():
        if todo:
            _write_signatures(folder, known)
    return sorted(written + kept)


def _read_signatures(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / SIGNATURES_FILE).read_text())
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_signatures(folder: Path, known: Mapping[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{SIGNATURES_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(dict(sorted(known.items())), indent=0))
    os.replace(tmp, folder / SIGNATURES_FILE)


def _try_render(task: Mapping[str, Any]) -> Path | Exception:
    try:
        return render_fpa_map(task)
    except Exception as err:  # one bad map must not stop the others
        return err


# ---------------------------------------------------------------------------------------------
# The ice trend over the whole store


def clipped_mean(values: np.ndarray, nsigma: float = 3.0, iterations: int = 5) -> float:
    """Mean after iterative nsigma clipping about the mean (NaN if no finite value)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan
    keep = np.ones(v.size, bool)
    for _ in range(iterations):
        m, s = v[keep].mean(), v[keep].std()
        new = np.abs(v - m) <= nsigma * s
        if s == 0 or np.array_equal(new, keep) or new.sum() < 1:
            break
        keep = new
    return float(v[keep].mean())


def _reference_days(settings: Any) -> tuple[date, date]:
    return settings.gaia.reference_start, settings.gaia.reference_end


def _in_reference(days: np.ndarray, ref: tuple[date, date]) -> np.ndarray:
    a = np.datetime64(ref[0], "D")
    b = np.datetime64(ref[1], "D")
    return (days >= a) & (days <= b)


def timeline_table(
    exposures: Sequence[Any],
    values: Mapping[str, Mapping[tuple[str, str], float]],
    settings: Any,
) -> dict[str, Any]:
    """Per-exposure ln(VIS/Gaia) at the three colours, relative to the reference period.

    Returns columns (numpy arrays, TIMELINE_COLUMNS plus 'ln' (3, n) and 'rel' (3, n)) and
    'relative' (bool: the reference period has accepted exposures at all three colours) and
    'n_reference'. The reference is the 3-sigma-clipped mean over the accepted (`good`)
    exposures of the reference period, per colour.
    """
    gs = settings.gaia
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
    ref_mask = _in_reference(dates.astype("datetime64[D]"), _reference_days(settings)) & good
    ref = np.array([clipped_mean(ln[k][ref_mask]) for k in range(3)])
    relative = bool(np.isfinite(ref).all())
    rel = ln - ref[:, None] if relative else np.full_like(ln, np.nan)
    ra = np.array([e.ra if e.ra is not None else np.nan for e in rows], float)
    dec = np.array([e.dec if e.dec is not None else np.nan for e in rows], float)
    return {
        "exposure": np.array([e.name for e in rows], dtype=object),
        "date_obs": dates,
        "exptime": np.array([e.exptime for e in rows], float),
        "selfcal": selfcal_mask(ra, dec, gs.selfcal_ra_deg, gs.selfcal_dec_deg).reshape(n),
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
    settings: Any,
    accepted: Mapping[str, bool] | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Daily median VIS/Gaia(1.75) of the diagonal and cross-diagonal CCDs, and relative.

    The day's value is the median over the day's exposures (only those `accepted`, when
    given) of the CCD's VIS/Gaia; `rel_175` divides by the mean of the CCD's daily values in
    the reference period. Returns (DIAG_COLUMNS rows, whether any CCD has a reference).
    """
    ref_days = _reference_days(settings)
    per: dict[tuple[str, date], list[float]] = {}
    for e in exposures:
        v = values.get(e.name)
        if not v or e.date_obs is None or (accepted is not None and not accepted.get(e.name)):
            continue
        day = _utc_day(e.date_obs)
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


def write_ice_timeline(store: Any, settings: Any, folder: Path) -> list[Path]:
    """The ice trend over every SCIENCE exposure in the store, long and short (module doc).

    A kind without data writes nothing. Without accepted exposures in the reference period the
    values are plotted absolute and the page says so (the CSV's rel_* columns stay empty).
    """
    from viskom.present.gaia import plot_ice_diag, plot_ice_timeline

    folder = Path(folder)
    exposures = [
        e
        for e in store.list_exposures(frame_type="SCIENCE", state="registered")
        if e.date_obs is not None and exposure_kind(e.exptime)
    ]
    if not exposures:
        return []
    fpa = _metric_values(
        store, [*RATIO_METRICS, "astrom_sigma_pix"], ["FPA"], metric_filter_in_db=False
    )
    diag = _metric_values(store, ["vis_over_gaia_175"], [*DIAGONAL_CCDS, *CROSS_DIAGONAL_CCDS])
    ref = _reference_days(settings)
    written: list[Path] = []
    for kind, nominal in KINDS:
        mine = [e for e in exposures if exposure_kind(e.exptime) == kind]
        t = timeline_table(mine, fpa, settings)
        if t["exposure"].size:
            rows = [
                {
                    "exposure": t["exposure"][i],
                    "date_obs": t["date_obs"][i].item().replace(tzinfo=UTC),
                    "exptime": t["exptime"][i],
                    "selfcal": bool(t["selfcal"][i]),
                    "good": bool(t["good"][i]),
                    "reference": bool(t["reference"][i]),
                    **{f"ln_r{c}": t["ln"][k, i] for k, c in enumerate(("075", "175", "275"))},
                    **{f"rel_{c}": t["rel"][k, i] for k, c in enumerate(("075", "175", "275"))},
                }
                for i in range(t["exposure"].size)
            ]
            written.append(write_csv(folder / f"ice_timeline_{kind}.csv", TIMELINE_COLUMNS, rows))
            good = t["good"]
            written.append(
                plot_ice_timeline(
                    t["date_obs"][good],
                    (t["rel"] if t["relative"] else t["ln"])[:, good],
                    t["selfcal"][good],
                    folder / f"iceplot_{kind}.png",
                    kind=kind,
                    exptime=nominal,
                    reference=ref,
                    relative=t["relative"],
                    n_reference=t["n_reference"],
                    n_rejected=int((~good & np.isfinite(t["ln"]).any(axis=0)).sum()),
                    colours=COLOURS,
                )
            )
        accepted = {str(n): bool(g) for n, g in zip(t["exposure"], t["good"], strict=True)}
        drows, relative = diag_table(mine, diag, settings, accepted=accepted or None)
        if not drows:
            continue
        written.append(write_csv(folder / f"ice_diag_{kind}.csv", DIAG_COLUMNS, drows))
        series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for ccd in (*DIAGONAL_CCDS, *CROSS_DIAGONAL_CCDS):
            mine_rows = [r for r in drows if r["ccd"] == ccd]
            key = "rel_175" if relative else "r175"
            series[ccd] = (
                np.array([r["day"] for r in mine_rows], dtype="datetime64[D]"),
                np.array([r[key] for r in mine_rows], float),
            )
        written.append(
            plot_ice_diag(
                series,
                folder / f"iceplot_diag_{kind}.png",
                kind=kind,
                exptime=nominal,
                reference=ref,
                relative=relative,
            )
        )
    return written
