"""Month aggregates, remade after a run for the months whose exposures changed.

Per month: the IQ table (CSV: exposure, r2, e1, e2, score, the other moments, n_stars,
date_obs, exptime), the IQ timeline and the PSF month summary (PNG), in
`<products>/months/YYYY-MM/`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from viskom.measure.iq import IQReference
from viskom.pipeline.iq import EXTRA_COLUMNS, IQ_COLUMNS, iq_rows_from_store
from viskom.pipeline.spaceweather import period_rows, write_period_products
from viskom.store import Store
from viskom.store.products import month_dir, write_csv, write_figure


def write_iq_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """The month's IQ table as CSV (atomic)."""
    return write_csv(path, [*IQ_COLUMNS, *EXTRA_COLUMNS], rows)


def update_month_products(store: Store, settings: Any, months: Iterable[str]) -> list[Path]:
    """Rewrite the aggregate products of each month; returns the files written."""
    from viskom.pipeline.gaia_period import write_gaia_period_products
    from viskom.pipeline.gaia_timeline import write_ice_timeline
    from viskom.present.iq_plots import plot_iq_timeline, plot_psf_month_summary

    reference = IQReference.from_mapping(settings.iq.reference_mapping())
    written: list[Path] = []
    months = sorted(set(months))
    for month in months:
        rows = iq_rows_from_store(store, month, reference)
        folder = month_dir(settings.products_path, month)
        written.append(write_iq_csv(rows, folder / f"iq_{month}.csv"))
        table = {c: [r.get(c) for r in rows] for c in [*IQ_COLUMNS, *EXTRA_COLUMNS]}
        timeline = plot_iq_timeline(
            table,
            month_label=month,
            ok=settings.iq.ok_below,
            reject=settings.iq.reject_above,
        )
        written.append(write_figure(timeline, folder / f"IQ_timeline_{month}.png"))
        summary = plot_psf_month_summary(table, month_label=month, ok=settings.iq.ok_below)
        written.append(write_figure(summary, folder / f"psfmoments_{month}.png"))
        since, until = month_range(month)
        written += write_period_products(period_rows(store, since, until), folder, month)
        written += write_gaia_period_products(store, settings, since, until, folder, month)
        written += write_health_trends(store, settings, since, until, folder, month)
    if months:
        # the ice trend spans every month: one timeline over all exposures
        written += write_ice_timeline(store, settings, ice_dir(settings.products_path))
    return written


def write_health_trends(
    store: Store, settings: Any, since: datetime, until: datetime, folder: Path, month: str
) -> list[Path]:
    """The month's detector-health trends (bias and read noise of every quadrant against
    time) as `health_<month>.png`; nothing when no exposure of the month was measured."""
    from viskom.present.health_plots import BIAS_METRIC, NOISE_METRIC, plot_health_trends

    names = (BIAS_METRIC[0], NOISE_METRIC[0])
    rows = store.metrics(metrics=list(names), since=since, until=until)
    if not rows:
        return []
    exposures = {e.name: e for e in store.list_exposures(since=since, until=until)}
    measured = sorted({r.exposure for r in rows if r.exposure in exposures},
                      key=lambda n: exposures[n].date_obs)  # fmt: skip
    index = {name: i for i, name in enumerate(measured)}
    series: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    for r in rows:
        if "." not in r.unit or r.exposure not in index:
            continue
        values = series[r.metric].setdefault(r.unit, [float("nan")] * len(measured))
        values[index[r.exposure]] = float("nan") if r.value is None else r.value
    band = settings.alerts.fixed_band(NOISE_METRIC[0])
    figure = plot_health_trends(
        [exposures[n].date_obs for n in measured],
        [exposures[n].frame_type or "UNKNOWN" for n in measured],
        series[BIAS_METRIC[0]],
        series[NOISE_METRIC[0]],
        month_label=month,
        noise_max_e=band[1] if band else None,
    )
    return [write_figure(figure, folder / f"health_{month}.png")]


def ice_dir(products: Path) -> Path:
    """Folder of the all-time Gaia photometry timeline (the ice trend)."""
    return Path(products) / "gaia"


def month_range(month: str) -> tuple[datetime, datetime]:
    """[first day, first day of the next month) of 'YYYY-MM', UTC."""
    first = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    nxt = first.replace(year=first.year + (first.month == 12), month=first.month % 12 + 1)
    return first, nxt
