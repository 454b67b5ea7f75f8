"""Benchmark: a month of Gaia photometry aggregates and the ice timeline, on synthetic data.

Usage: python benchmarks/bench_gaia_aggregates.py [--exposures 1800] [--rows 600]
       [--no-maps] [--workers N] [--keep DIR]

Builds a month (July 2024) in a temporary folder: a SQLite store with every metric the gaia
stage records (FPA, 9 blocks, 36 CCDs, 144 quadrants) and one residual table
(`_gaia_stars.parquet`, all the stage's columns) per exposure, two thirds nominal (560.52 s)
and one third short (89.52 s). Then times, in the same run:

* baseline: reading every residual table completely with `store.products.read_table`;
* `write_gaia_period_products(..., fpa_maps=False)`: the month's CSVs, the daily and monthly
  stacked fits of every unit and the two VISGaia_FPA figures (with the read and the fits
  timed on their own as well);
* the same with the hexagon maps (month, weeks, days; `--workers N` draws them on N
  processes);
* `write_ice_timeline` over the store.

Prints seconds and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from viskom.config import Settings
from viskom.le1.geometry import all_ccds, all_extnames
from viskom.measure.gaia import COLOURS, STAR_COLUMNS, gaia_flux
from viskom.measure.gaia_stack import BLOCKS, stacked_fits
from viskom.pipeline.gaia_io import RESIDUAL_COLUMNS, read_residuals, residual_path
from viskom.pipeline.gaia_period import write_gaia_period_products
from viskom.pipeline.gaia_timeline import write_ice_timeline
from viskom.present.focal import quadrant_rectangle
from viskom.store import Store
from viskom.store.products import read_table, write_table
from viskom.store.records import ExposureRecord, StageRun

MONTH_START = datetime(2024, 7, 1, tzinfo=UTC)
QUADS = np.array(all_extnames())
RECTS = np.array([quadrant_rectangle(q) for q in QUADS])  # x0, y0, w, h
BASE = (-0.27, 0.36, -0.07)


def ln_truth(c: np.ndarray, day: float) -> np.ndarray:
    return BASE[0] + BASE[1] * c + BASE[2] * c**2 - 0.002 * day * (1 - 0.1 * c)


def residual_table(rng: np.random.Generator, n: int, exptime: float, day: float) -> dict:
    """One exposure's residual table with every column the gaia stage writes."""
    q = rng.integers(0, 144, n)
    x = RECTS[q, 0] + RECTS[q, 2] * rng.random(n)
    y = RECTS[q, 1] + RECTS[q, 3] * rng.random(n)
    g = rng.uniform(15.0, 20.5, n)
    c = rng.normal(1.3, 0.5, n).clip(0.2, 3.5)
    gf = gaia_flux(g)
    ln = ln_truth(c, day) + rng.normal(0, 0.02, n) + (rng.random(n) < 0.02) * 0.5
    gain = rng.uniform(0.97, 1.03, n)
    vis = gf * np.exp(ln)
    model = np.exp(ln_truth(c, day))
    kept = rng.random(n) < 0.95
    used = kept & (g < 19.5)
    cols = {
        "extname": QUADS[q],
        "x_world": x,
        "y_world": y,
        "x_gaia": x + rng.normal(0, 1e-5, n),
        "y_gaia": y + rng.normal(0, 1e-5, n),
        "source_id": rng.integers(0, 2**62, n),
        "flux": vis * exptime / 89.52 / gain,
        "exptime": np.full(n, exptime),
        "gain": gain,
        "g_mag": g,
        "bp_rp": c,
        "vis_flux": vis,
        "gaia_flux": gf,
        "ln_ratio": np.log(vis / gf),
        "frat_model": model,
        "frat": vis / gf / model,
        "astrom_kept": kept,
        "colour_used": used,
        "colour_kept": used & (np.abs(ln - ln_truth(c, day)) < 0.1),
    }
    assert set(cols) == set(STAR_COLUMNS)
    return cols


def metric_rows(rng: np.random.Generator, day: float) -> list[tuple[str, str, float]]:
    """Every metric the gaia stage records: FPA, blocks, CCDs and quadrants."""
    r = np.exp(ln_truth(np.array(COLOURS), day))
    rows: list[tuple[str, str, float]] = []
    for unit in ("FPA", *BLOCKS, *all_ccds(), *QUADS):
        f = r * np.exp(rng.normal(0, 0.005))
        rows += [
            (unit, "vis_over_gaia_075", float(f[0])),
            (unit, "vis_over_gaia_175", float(f[1])),
            (unit, "vis_over_gaia_275", float(f[2])),
            (unit, "gaia_colour_n_stars", 300.0),
            (unit, "gaia_colour_c0", BASE[0]),
            (unit, "gaia_colour_c1", BASE[1]),
            (unit, "gaia_colour_c2", BASE[2]),
            (unit, "gaia_colour_rms", 0.02),
        ]
        if unit != "FPA" and not unit.startswith("B"):
            rows += [(unit, "n_matched", 20.0), (unit, "astrom_dx_pix", 0.1),
                     (unit, "astrom_dy_pix", -0.1)]  # fmt: skip
    rows += [
        ("FPA", "n_matched", 580.0),
        ("FPA", "n_gaia_stars", 900.0),
        ("FPA", "astrom_dx_pix", 1.0),
        ("FPA", "astrom_dy_pix", -2.0),
        ("FPA", "astrom_sigma_pix", 0.8),
        ("FPA", "astrom_ddx_dx", 0.1),
        ("FPA", "astrom_ddy_dx", 0.2),
        ("FPA", "astrom_ddx_dy", 0.3),
        ("FPA", "astrom_ddy_dy", 0.4),
    ]
    return rows


def build(root: Path, n_exposures: int, n_rows: int) -> tuple[Store, Settings]:
    settings = Settings(data_root=root, products_dir=root / "products")
    store = Store(f"sqlite:///{root / 'viskom.db'}")
    rng = np.random.default_rng(1)
    step = timedelta(days=31) / n_exposures
    for i in range(n_exposures):
        t = MONTH_START + i * step
        exptime = 89.52 if i % 3 == 2 else 560.52
        selfcal = (i // 60) % 10 == 0
        name = f"EUC_LE1_VIS-{i:05d}-1-W_{t:%Y%m%dT%H%M%S}.000000Z_01_01_01.00"
        e, _ = store.register_exposure(
            ExposureRecord(
                name=name, path=f"/raw/{name}.fits", state="registered", frame_type="SCIENCE",
                date_obs=t, exptime=exptime, ra=268.8 if selfcal else 56.2,
                dec=65.3 if selfcal else -55.7, pa=46.2,
            )
        )  # fmt: skip
        day = (t - MONTH_START).total_seconds() / 86400
        store.record_stage_run(
            StageRun(e.id, "gaia", "1", "c" * 64, "bench", "ok"), metric_rows(rng, day)
        )
        write_table(
            residual_table(rng, n_rows, exptime, day),
            residual_path(settings.products_path, name, t),
        )
    return store, settings


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exposures", type=int, default=1800)
    ap.add_argument("--rows", type=int, default=600, help="residual-table rows per exposure")
    ap.add_argument("--no-maps", action="store_true", help="skip the run with FPA maps")
    ap.add_argument("--workers", type=int, default=1, help="processes drawing the FPA maps")
    ap.add_argument("--keep", type=Path, help="build in this folder and keep it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        t_build, (store, settings) = timed(build, root, args.exposures, args.rows)
        print(f"built {args.exposures} exposures x {args.rows} rows in {t_build:.1f} s",
              file=sys.stderr)  # fmt: skip
        since, until = MONTH_START, datetime(2024, 8, 1, tzinfo=UTC)
        exposures = store.list_exposures(frame_type="SCIENCE", since=since, until=until)
        paths = [residual_path(settings.products_path, e.name, e.date_obs) for e in exposures]

        t_base, _ = timed(lambda: [read_table(p) for p in paths])
        items = [(e.name, p) for e, p in zip(exposures, paths, strict=True)]
        t_read, stack = timed(read_residuals, items)
        sel = stack.used
        day = (stack.exposure // max(1, args.exposures // 31)).astype(int)
        t_fit, _ = timed(stacked_fits, stack.quadrant[sel], stack.colour[sel],
                         stack.ln_ratio[sel], day[sel], int(day.max()) + 1)  # fmt: skip
        folder = root / "months" / "2024-07"
        t_agg, files = timed(
            write_gaia_period_products, store, settings, since, until, folder, "2024-07",
            fpa_maps=False,
        )  # fmt: skip
        t_tl, tl_files = timed(write_ice_timeline, store, settings, root / "timeline")
        result = {
            "exposures": args.exposures,
            "rows_per_exposure": args.rows,
            "residual_columns_read": len(RESIDUAL_COLUMNS),
            "baseline_read_all_tables_s": round(t_base, 3),
            "read_residuals_s": round(t_read, 3),
            "daily_stacked_fits_all_units_s": round(t_fit, 3),
            "period_products_no_maps_s": round(t_agg, 3),
            "period_products_no_maps_files": len(files),
            "period_products_no_maps_over_baseline": round(t_agg / t_base, 2),
            "ice_timeline_s": round(t_tl, 3),
            "ice_timeline_files": len(tl_files),
            "ice_timeline_over_baseline": round(t_tl / t_base, 2),
        }
        if not args.no_maps:
            executor = None
            if args.workers > 1:
                from viskom.pipeline.executors import ProcessExecutor

                executor = ProcessExecutor(args.workers)
            t_full, full = timed(
                write_gaia_period_products, store, settings, since, until, folder, "2024-07",
                executor=executor,
            )  # fmt: skip
            n_maps = sum(p.name.startswith("iceplot_FPA_") for p in full)
            result.update(
                period_products_with_maps_s=round(t_full, 3),
                fpa_maps=n_maps,
                fpa_map_workers=args.workers,
                seconds_per_map=round((t_full - t_agg) / max(n_maps, 1), 3),
                period_products_with_maps_over_baseline=round(t_full / t_base, 2),
            )
        store.close()
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
