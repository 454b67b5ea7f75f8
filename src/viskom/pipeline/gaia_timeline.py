"""The ice trend over the whole store: VIS/Gaia of every SCIENCE exposure against time.

VISQL's `plotice.py` and `ploticetimelinediag.py` (VISQL-SPEC 8.9, 8.12). For long and short
exposures apart, `write_ice_timeline` writes the trend `iceplot_<long|short>.png` +
`ice_timeline_<long|short>.csv`, ln(VIS/Gaia) relative to the mean over the configured
reference period, and `iceplot_diag_<long|short>.png` + `ice_diag_<long|short>.csv`, the daily
VIS/Gaia(1.75) of the diagonal and cross-diagonal CCDs. The statistics are
`measure.gaia_ice`'s, the figures `present.gaia_ice`'s.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np

from viskom.measure.gaia_colour import COLOURS
from viskom.measure.gaia_ice import (
    CROSS_DIAGONAL_CCDS,
    DIAG_COLUMNS,
    DIAGONAL_CCDS,
    KINDS,
    RATIO_METRICS,
    TIMELINE_COLUMNS,
    diag_table,
    exposure_kind,
    timeline_table,
)
from viskom.pipeline.gaia_io import metric_values
from viskom.store.products import write_csv, write_figure


def write_ice_timeline(store: Any, settings: Any, folder: Path) -> list[Path]:
    """The ice trend over every SCIENCE exposure in the store, long and short (module doc).

    A kind without data writes nothing. Without accepted exposures in the reference period the
    values are plotted absolute and the page says so (the CSV's rel_* columns stay empty).
    """
    from viskom.present.gaia_ice import plot_ice_diag, plot_ice_timeline

    folder = Path(folder)
    exposures = [
        e
        for e in store.list_exposures(frame_type="SCIENCE", state="registered")
        if e.date_obs is not None and exposure_kind(e.exptime)
    ]
    if not exposures:
        return []
    fpa = metric_values(
        store, [*RATIO_METRICS, "astrom_sigma_pix"], ["FPA"], metric_filter_in_db=False
    )
    diag = metric_values(store, ["vis_over_gaia_175"], [*DIAGONAL_CCDS, *CROSS_DIAGONAL_CCDS])
    gs = settings.gaia
    ref = (gs.reference_start, gs.reference_end)
    selfcal = (gs.selfcal_ra_deg, gs.selfcal_dec_deg)
    written: list[Path] = []
    for kind, nominal in KINDS:
        mine = [e for e in exposures if exposure_kind(e.exptime) == kind]
        t = timeline_table(mine, fpa, reference=ref, selfcal_centre=selfcal)
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
            fig = plot_ice_timeline(
                t["date_obs"][good],
                (t["rel"] if t["relative"] else t["ln"])[:, good],
                t["selfcal"][good],
                kind=kind,
                exptime=nominal,
                reference=ref,
                relative=t["relative"],
                n_reference=t["n_reference"],
                n_rejected=int((~good & np.isfinite(t["ln"]).any(axis=0)).sum()),
                colours=COLOURS,
            )
            written.append(write_figure(fig, folder / f"iceplot_{kind}.png"))
        accepted = {str(n): bool(g) for n, g in zip(t["exposure"], t["good"], strict=True)}
        drows, relative = diag_table(mine, diag, reference=ref, accepted=accepted or None)
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
        fig = plot_ice_diag(series, kind=kind, exptime=nominal, reference=ref, relative=relative)
        written.append(write_figure(fig, folder / f"iceplot_diag_{kind}.png"))
    return written
