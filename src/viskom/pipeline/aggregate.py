"""Month aggregates, remade after a run for the months whose exposures changed.

Imported only when they are remade (`service.run_period_products`); the plotting modules
are imported with it, so the processes that draw side by side start with them loaded.

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
from viskom.pipeline.gaia_period import write_gaia_period_products
from viskom.pipeline.gaia_timeline import write_ice_timeline
from viskom.pipeline.iq import EXTRA_COLUMNS, IQ_COLUMNS, iq_rows_from_store
from viskom.pipeline.spaceweather import period_rows, write_period_products
from viskom.present.iq_plots import plot_iq_timeline, plot_psf_month_summary
from viskom.store import Store
from viskom.store.products import month_dir, write_csv, write_figure


def write_iq_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """The month's IQ table as CSV (atomic)."""
    return write_csv(path, [*IQ_COLUMNS, *EXTRA_COLUMNS], rows)


def update_month_products(store: Store, settings: Any, months: Iterable[str]) -> list[Path]:
    """Rewrite the aggregate products of each month and the all-time ice trend; returns
    the files written. The products are independent figures and tables: with more than
    one worker (`workers`) they are drawn side by side, in forked processes that open the
    store anew (`_draw_in_processes`), instead of ~6 s of matplotlib on one core."""
    months = sorted(set(months))
    if not months:
        return []
    # heaviest first (Gaia maps ~2.5 s, health trends and space weather ~1 s each)
    jobs = [(kind, month) for kind in ("gaia", "health", "space_weather", "iq") for month in months]
    jobs.append(("ice", None))
    workers = min(int(getattr(settings, "workers", 1) or 1), len(jobs))
    if workers <= 1 or _daemonic():
        return [path for job in jobs for path in _month_job(store, settings, job)]
    return _draw_in_processes(store.url, settings, jobs, workers)


def _month_job(store: Store, settings: Any, job: tuple[str, str | None]) -> list[Path]:
    """One product group: of a month ('gaia', 'health', 'space_weather', 'iq') or the
    all-time ice trend ('ice', None)."""
    kind, month = job
    if kind == "ice":
        return write_ice_timeline(store, settings, ice_dir(settings.products_path))
    assert month is not None
    folder = month_dir(settings.products_path, month)
    since, until = month_range(month)
    if kind == "gaia":
        return write_gaia_period_products(store, settings, since, until, folder, month)
    if kind == "health":
        return write_health_trends(store, settings, since, until, folder, month)
    if kind == "space_weather":
        return write_period_products(period_rows(store, since, until), folder, month)
    reference = IQReference.from_mapping(settings.iq.reference_mapping())
    rows = iq_rows_from_store(store, month, reference)
    written = [write_iq_csv(rows, folder / f"iq_{month}.csv")]
    table = {c: [r.get(c) for r in rows] for c in [*IQ_COLUMNS, *EXTRA_COLUMNS]}
    timeline = plot_iq_timeline(
        table, month_label=month, ok=settings.iq.ok_below, reject=settings.iq.reject_above
    )
    written.append(write_figure(timeline, folder / f"IQ_timeline_{month}.png"))
    summary = plot_psf_month_summary(table, month_label=month, ok=settings.iq.ok_below)
    written.append(write_figure(summary, folder / f"psfmoments_{month}.png"))
    return written


def _daemonic() -> bool:
    """Whether this process may not have children (a daemonic pool or Dask worker)."""
    import multiprocessing

    return bool(multiprocessing.current_process().daemon)


_worker_store: Store | None = None


def _open_worker_store(url: str) -> None:
    """A drawing process's own connection (the parent's is never used across a fork)."""
    from multiprocessing.util import Finalize

    from viskom.le1.quadrant_map import die_with_parent

    global _worker_store
    die_with_parent()
    _worker_store = Store(url)
    Finalize(None, _worker_store.close, exitpriority=10)  # closed when the pool is done


def _draw_job(settings: Any, job: tuple[str, str | None]) -> list[Path]:
    assert _worker_store is not None
    return _month_job(_worker_store, settings, job)


def _draw_in_processes(
    url: str, settings: Any, jobs: list[tuple[str, str | None]], workers: int
) -> list[Path]:
    """The jobs on `workers` forked processes, in the order given (the first error is
    raised, as it would be on one core); the files in job order."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(workers, initializer=_open_worker_store, initargs=(url,))
    try:
        results = pool.starmap(_draw_job, [(settings, job) for job in jobs], chunksize=1)
        pool.close()  # the processes leave when done, their connections closed
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    return [path for paths in results for path in paths]


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
