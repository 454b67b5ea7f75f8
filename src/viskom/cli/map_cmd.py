"""`viskom map`: any registered metric as a focal-plane map, for an exposure, a day or a month."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from viskom.cli.common import ConfigOption, check_names, console, fail, load, open_store


def _window(day: str | None, month: str | None) -> tuple[datetime, datetime, str]:
    """[start, end) of a UTC day 'YYYY-MM-DD' or month 'YYYY-MM', and its label."""
    try:
        if day is not None:
            d = date.fromisoformat(day)
            start = datetime(d.year, d.month, d.day, tzinfo=UTC)
            return start, start + timedelta(days=1), d.isoformat()
        assert month is not None
        year, mon = (int(p) for p in month.split("-"))
        start = datetime(year, mon, 1, tzinfo=UTC)
        days = calendar.monthrange(year, mon)[1]
        return start, start + timedelta(days=days), f"{year:04d}-{mon:02d}"
    except (ValueError, AssertionError):
        raise fail(f"not a day (YYYY-MM-DD) or month (YYYY-MM): {day or month!r}") from None


def map_(
    metric: Annotated[str, typer.Option(help="a registered metric (viskom metrics --list)")],
    config: ConfigOption = None,
    exposure: Annotated[str | None, typer.Option(help="one exposure")] = None,
    day: Annotated[str | None, typer.Option(help="a UTC day, YYYY-MM-DD: median per cell")] = None,
    month: Annotated[str | None, typer.Option(help="a month, YYYY-MM: median per cell")] = None,
    frame_type: Annotated[
        str | None, typer.Option("--type", help="day/month: only this frame type (e.g. DARK)")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="the PNG to write")] = None,
) -> None:
    """Draw METRIC over the focal plane (a filled cell per quadrant, or per CCD for CCD-level
    metrics) for one exposure, or its median per cell over a day or a month; a colour bar
    with the unit, cells outside the metric's alert band outlined in red."""
    import numpy as np

    from viskom.metrics import METRICS
    from viskom.present.metric_maps import plot_metric_map
    from viskom.store.products import write_figure

    check_names("metric", [metric], METRICS)
    if sum(x is not None for x in (exposure, day, month)) != 1:
        raise fail("give one of --exposure, --day or --month")
    settings = load(config)
    entry = METRICS[metric]
    with open_store(settings, read_only=True) as store:
        if exposure is not None:
            check_names("exposure", [exposure], (e.name for e in store.list_exposures()))
            rows = store.metrics(exposures=[exposure], metrics=[metric])
            label, chosen = exposure, {exposure}
            known = store.get_exposure(exposure)
            kind = known.frame_type if known else None
        else:
            start, end, label = _window(day, month)
            rows = store.metrics(metrics=[metric], since=start, until=end)
            kind = frame_type.upper() if frame_type else None
            chosen = {
                e.name
                for e in store.list_exposures(since=start, until=end)
                if kind is None or (e.frame_type or "").upper() == kind
            }
    by_unit: dict[str, list[float]] = {}
    for r in rows:
        if r.exposure in chosen and r.value is not None:
            by_unit.setdefault(r.unit, []).append(r.value)
    values = {u: float(np.nanmedian(v)) for u, v in by_unit.items() if u != "FPA"}
    quadrants = {u: v for u, v in values.items() if "." in u}
    values = quadrants or {u: v for u, v in values.items() if not u.startswith("B")}
    n = len({r.exposure for r in rows if r.exposure in chosen})
    if not values:
        raise fail(f"no {metric} values for {label}" + (f" ({kind})" if kind else ""), code=1)
    band = _band(settings, metric, kind)
    what = f"{label}" if exposure else f"{label}: median of {n} exposure(s)"
    title = f"{metric} — {what}" + (f", {kind}" if kind else "")
    fig = plot_metric_map(values, metric=metric, unit=entry.unit,
                          description=entry.description, title=title, band=band)  # fmt: skip
    path = output or Path(f"{metric}_{label}{'_' + kind if kind and not exposure else ''}.png")
    write_figure(fig, path)
    console.print(f"wrote {path} ({len(values)} cells)")


def _band(settings: object, metric: str, frame_type: str | None) -> tuple | None:
    """The metric's fixed alert band for this frame type, when the settings have one."""
    alerts = getattr(settings, "alerts", None)
    if alerts is None:
        return None
    return alerts.fixed_band(metric, frame_type)
