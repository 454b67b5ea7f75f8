"""Space weather over a period: per-exposure particle rates beside GOES, and fitted relations.

X-ray event rate (events / cm2 / s) against the GOES XRS-A flux over the exposure, and the
cosmic-ray hit rate against the >= 10 MeV proton flux, one point per SCIENCE or DARK
exposure; `viskom.measure.spaceweather.fit_rate_relation` (robust, clipped) gives the
relation. Written per month, atomically, as `spaceweather_YYYY-MM.csv`,
`xray_vs_goes_YYYY-MM.png`, `cr_vs_protons_YYYY-MM.png` and the fits in
`spaceweather_fits_YYYY-MM.json`.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from viskom.measure.spaceweather import fit_rate_relation
from viskom.store.atomic import atomic_path, write_text_atomic
from viskom.store.products import write_figure

COLUMNS = (
    "exposure", "frame_type", "date_obs", "exptime", "cr_hits", "cr_hits_per_cm2_s",
    "xray_events", "xray_rate_per_cm2_s", "proton_events", "goes_xrsa_mean", "goes_xrsb_mean",
    "goes_protons_ge10mev",
)  # fmt: skip
METRICS = ("cr_hits", "cr_hits_per_cm2_s", "xray_events", "proton_events", "goes_xrsa_mean",
           "goes_xrsb_mean", "goes_protons_ge10mev")  # fmt: skip


def period_rows(store: Any, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """One row per SCIENCE/DARK exposure in [since, until) with its FPA rates and GOES fluxes."""
    exposures = {
        e.name: e
        for ft in ("SCIENCE", "DARK")
        for e in store.list_exposures(frame_type=ft, state="registered", since=since, until=until)
    }
    values: dict[str, dict[str, float]] = {}
    for m in store.metrics(
        exposures=list(exposures), metrics=list(METRICS), units=["FPA"], since=since, until=until
    ):
        values.setdefault(m.exposure, {})[m.metric] = np.nan if m.value is None else m.value
    rows = []

    def when(item: tuple[str, Any]) -> tuple[float, str]:
        d = item[1].date_obs
        return (d.timestamp() if d else 0.0, item[0])

    for name, e in sorted(exposures.items(), key=when):
        v = values.get(name, {})
        if "cr_hits" not in v:
            continue
        hits, rate = v.get("cr_hits", np.nan), v.get("cr_hits_per_cm2_s", np.nan)
        area_time = hits / rate if rate and np.isfinite(rate) and rate > 0 else np.nan
        rows.append(
            {
                "exposure": name,
                "frame_type": e.frame_type,
                "date_obs": e.date_obs.isoformat() if e.date_obs else "",
                "exptime": e.exptime,
                **{k: v.get(k, np.nan) for k in METRICS},
                "xray_rate_per_cm2_s": v.get("xray_events", np.nan) / area_time,
            }
        )
    return rows


def write_period_products(rows: list[dict[str, Any]], folder: Path, label: str) -> list[Path]:
    """The CSV, the two correlation plots and the fitted relations of a period.

    The CSV keeps `csv`'s own cells (NaN as 'nan', None empty), not `store.products.write_csv`'s
    (NaN empty), so that the table reads as it always did.
    """
    from viskom.present.rates import plot_rate_correlation

    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / f"spaceweather_{label}.csv"
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in COLUMNS})
    col = {k: np.array([r.get(k, np.nan) for r in rows], dtype=float) for k in METRICS}
    col["xray_rate_per_cm2_s"] = np.array([r["xray_rate_per_cm2_s"] for r in rows], float)
    kinds = [r["frame_type"] for r in rows]
    fits = {
        "xray_rate_vs_xrsa": fit_rate_relation(col["goes_xrsa_mean"], col["xray_rate_per_cm2_s"]),
        "cr_rate_vs_protons": fit_rate_relation(
            col["goes_protons_ge10mev"], col["cr_hits_per_cm2_s"]
        ),
    }
    fits_path = folder / f"spaceweather_fits_{label}.json"
    write_text_atomic(fits_path, json.dumps(fits, indent=2, default=float))
    paths = [csv_path, fits_path]
    xray = plot_rate_correlation(
        col["goes_xrsa_mean"],
        col["xray_rate_per_cm2_s"],
        "GOES XRS-A 0.05–0.4 nm over the exposure [W m⁻²]",
        "X-ray events [cm⁻² s⁻¹]",
        f"X-ray event rate against GOES, {label}",
        fit=fits["xray_rate_vs_xrsa"],
        labels=kinds,
    )
    paths.append(write_figure(xray, folder / f"xray_vs_goes_{label}.png"))
    cr = plot_rate_correlation(
        col["goes_protons_ge10mev"],
        col["cr_hits_per_cm2_s"],
        "GOES protons ≥ 10 MeV [pfu]",
        "cosmic-ray hits [cm⁻² s⁻¹]",
        f"Cosmic-ray rate against protons, {label}",
        fit=fits["cr_rate_vs_protons"],
        labels=kinds,
    )
    paths.append(write_figure(cr, folder / f"cr_vs_protons_{label}.png"))
    return paths
