"""The image-quality month table: per-exposure PSF medians and IQ scores.

From viskom's own metrics (the psf stage's FPA values) or from VISQL's
`psfmoments_YYYYMM.txt`, with the same columns, so that a month VISQL measured can be
compared with viskom's.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from viskom.measure.iq import IQReference, iq_score
from viskom.sources.visql import iq_rows_from_visql
from viskom.store import Store

#: Column order of the table: `exposure,r2,e1,e2,score`, then the other moments.
IQ_COLUMNS = ("exposure", "r2", "e1", "e2", "score", "coma1", "coma2", "trefoil1", "trefoil2")
EXTRA_COLUMNS = ("n_stars", "date_obs", "exptime")
_METRIC_OF = {
    "r2": "psf_r2",
    "e1": "psf_e1",
    "e2": "psf_e2",
    "coma1": "psf_coma1",
    "coma2": "psf_coma2",
    "trefoil1": "psf_trefoil1",
    "trefoil2": "psf_trefoil2",
    "n_stars": "n_stars",
}


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """[start, end) of a calendar month 'YYYY-MM' in UTC; ValueError if malformed."""
    try:
        year, mon = (int(p) for p in month.split("-"))
        start = datetime(year, mon, 1, tzinfo=UTC)
    except (ValueError, TypeError):
        raise ValueError(f"month must look like 2024-07, got {month!r}") from None
    days = calendar.monthrange(year, mon)[1]
    end = datetime(year, mon, days, tzinfo=UTC).replace(hour=0) + (
        datetime(2000, 1, 2) - datetime(2000, 1, 1)
    )
    return start, end


def iq_rows_from_store(store: Store, month: str, reference: IQReference) -> list[dict[str, Any]]:
    """One row per SCIENCE exposure of the month that has PSF medians, by DATE-OBS."""
    start, end = month_bounds(month)
    exposures = {
        e.name: e for e in store.list_exposures(frame_type="SCIENCE", since=start, until=end)
    }
    values: dict[str, dict[str, float | None]] = {}
    for m in store.metrics(
        exposures=list(exposures), metrics=list(_METRIC_OF.values()), units=["FPA"]
    ):
        values.setdefault(m.exposure, {})[m.metric] = m.value
    rows = []
    for name, exp in exposures.items():
        v = values.get(name)
        if not v or v.get("psf_r2") is None:
            continue
        row: dict[str, Any] = {"exposure": name}
        for col, metric in _METRIC_OF.items():
            val = v.get(metric)
            row[col] = float("nan") if val is None else float(val)
        row["score"] = float(iq_score(row["r2"], row["e1"], row["e2"], reference))
        row["date_obs"] = exp.date_obs.isoformat() if exp.date_obs else ""
        row["exptime"] = exp.exptime
        rows.append(row)
    return rows


def iq_rows_visql(path: Path, reference: IQReference) -> list[dict[str, Any]]:
    """The same table from VISQL's psfmoments_YYYYMM.txt."""
    return iq_rows_from_visql(path, reference)
