"""The Gaia photometry products of a period (a month): per exposure, block, CCD and day.

VISQL's `plotice` family (VISQL-SPEC 8.7-8.11) rebuilt on the store and the per-exposure
residual tables. Nominal ("long", 560.52 s) and short (89.52 s) exposures are kept apart
(+-1 s); other exposure times are ignored. Per period (`write_gaia_period_products`, a month
'YYYY-MM'), in `folder`:

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
ln ratios). The stacked fits are `measure.gaia_stack`'s, the acceptance `measure.gaia_ice`'s,
the figures `pipeline.gaia_maps`'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from viskom.measure.gaia_colour import COLOUR_FIT_GMAX
from viskom.measure.gaia_ice import (
    KINDS,
    RATIO_METRICS,
    curvature,
    exposure_kind,
    good_mask,
    selfcal_mask,
    utc_day,
)
from viskom.measure.gaia_stack import (
    BLOCKS,
    CCDS,
    FIT_COLUMNS,
    QUAD_TO_CCD,
    stacked_fits,
    visql_unit_order,
)
from viskom.pipeline import gaia_maps
from viskom.pipeline.gaia_io import READ_THREADS, metric_values, read_residuals, residual_path
from viskom.store.products import write_csv

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
    values = metric_values(
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
    exp_day = np.array([utc_day(by_name[n].date_obs) for n in stack.names], dtype="datetime64[D]")
    row_day = exp_day[stack.exposure]
    gmax = float(getattr(settings.gaia, "colour_gmax", COLOUR_FIT_GMAX))
    with np.errstate(invalid="ignore"):
        usable = stack.used & (stack.g < gmax) & np.isfinite(stack.colour)
    d0 = np.datetime64(utc_day(since), "D")
    d1 = np.datetime64(utc_day(until - timedelta(microseconds=1)), "D") + 1
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
            gaia_maps.write_colour_relations_fpa(
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
            map_tasks += gaia_maps.fpa_map_tasks(
                stack, of_kind & usable, row_day, folder, label, kind, nominal, days, weeks
            )
    return written + gaia_maps.render_all(map_tasks, executor)
