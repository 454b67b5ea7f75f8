"""The pipeline as a service: what the CLI, the demo, `watch` and a Dask cluster call.

`run_pending` brings the calibrations up to date, runs every pending (exposure, stage) on an
executor, then rewrites the period products (month tables and plots, the ice trend) of the
months it measured anew, and records every product file in the products table.
`run_period_products` does the last part alone. Neither prints: they return what happened.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from viskom.pipeline.alerts import AlertSummary, evaluate_after_run
from viskom.pipeline.executors import Executor, make_executor
from viskom.pipeline.failures import describe_failure, short_reason
from viskom.pipeline.leases import holding, new_token, settings_of_worker, worker_store
from viskom.pipeline.register import sha256_of
from viskom.pipeline.runner import RunSummary, run_pipeline
from viskom.pipeline.site import update_site
from viskom.pipeline.stage_io import WrittenProduct
from viskom.store import Store

_MONTH = re.compile(r"(\d{4}-\d{2})")
_DATE = re.compile(r"\d{4}-\d{2}(?:-\d{2})?")  # a month or a day in a file name
_SEPARATORS = re.compile(r"[_-]{2,}")
PERIOD_STAGE = "period"
PERIOD_CLAIM = "period"  # one claim: the month products and the all-time trends together
#: records that finished this long before a period build began may still have been committing
PERIOD_MARGIN = timedelta(seconds=60)
log = logging.getLogger(__name__)


@dataclass
class PeriodProducts:
    """What `run_period_products` wrote: the files, and the error if it stopped."""

    months: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    error: str | None = None
    #: set when the months wait for `[run] period_every_s`: when they are due
    deferred_until: datetime | None = None
    made: bool = True  # False: the run left them for later
    #: (exposure, stage, finished_at) of the records finished within the margin before the
    #: build began that it saw: the next run of this process need not make them again
    covered: frozenset[tuple[str, str, datetime]] = frozenset()

    def line(self) -> str | None:
        """What the run did about them, in one line (None: nothing was measured anew)."""
        if self.error:
            return f"month products failed: {self.error}"
        if self.deferred_until is not None:
            return (f"month products of {', '.join(self.months)} wait until "
                    f"{self.deferred_until:%Y-%m-%d %H:%M} UTC ([run] period_every_s)")  # fmt: skip
        if self.months and not self.made:
            return (f"month products of {', '.join(self.months)} not made in this run "
                    "(`viskom run --month-products` makes them)")  # fmt: skip
        if self.months:
            return f"month products: {len(self.paths)} files for {self.months}"
        return None


@dataclass
class PendingRun:
    """A `run_pending` call: the run's summary, its period products and what the alert
    evaluation of the exposures it measured did (`alerts.error` if that failed)."""

    summary: RunSummary
    periods: PeriodProducts
    alerts: AlertSummary = field(default_factory=AlertSummary)
    site: Any = None  # the dashboard update's SiteReport (None: `[site] update` is off)


def open_store(settings: Any, *, read_only: bool = False) -> Store:
    """The settings' database (Store creates a SQLite file's folder), migrated to the head;
    `read_only`: opened only to read, nothing created or migrated."""
    return Store(settings.db_url, read_only=read_only)


def run_pending(
    settings: Any,
    executor: Executor | None = None,
    *,
    store: Store | None = None,
    force: bool = False,
    retry_failed: bool = False,
    exposures: Sequence[str] | None = None,
    workers: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    month_products: bool | None = None,
    covered: Iterable[tuple[str, str, datetime]] = (),
) -> PendingRun:
    """Measure everything pending, evaluate the alerts of what was measured (`[alerts]`,
    never fatal), then the period products of the months measured anew, then bring the
    dashboard up to date (`[site] update`, never fatal).

    The period products are made when `[run] period_every_s` has passed since they were last
    made (`month_products` True: now; False: not in this run); until then the months wait,
    and `periods.deferred_until` says when they are due. `covered`: the `periods.covered` of
    this process's previous run (`viskom watch`), so that the records its build saw do not
    make the months again (without it, records finished within a minute before the last
    build began count as new: the build may have begun while they were committing).

    The executor defaults to the settings' (`executor`, `workers`); the store to the
    settings' database. A failing period product never undoes the run's measurements.
    `should_stop` (e.g. a signal flag of `viskom watch`) is asked before each exposure is
    handed out: once it says yes, work in flight finishes and nothing new starts.
    """
    n_workers = workers or settings.workers
    own_executor = executor is None
    executor = executor or make_executor(settings.executor, n_workers, settings.scheduler)
    own = store is None
    store = store or open_store(settings)
    try:
        started = store.now()
        summary = run_pipeline(
            store, settings, executor, force=force, retry_failed=retry_failed,
            exposures=exposures, workers=n_workers, progress=progress,
            should_stop=should_stop,
        )  # fmt: skip
        alerts = evaluate_after_run(store, settings, started)  # logs and returns its errors
        # the months measured anew by this run, and by any run since the period products
        # were last made (a run killed before making them, a retried task, a busy claim)
        since = store.claim_started(PERIOD_CLAIM)
        months = set(summary.months) | store.months_measured_since(since)
        if since is not None:  # records that may have been committing as that build began
            seen = set(covered)
            months |= {month for name, stage, done, month in
                       store.measured_between(since - PERIOD_MARGIN, since)
                       if (name, stage, done) not in seen}  # fmt: skip
        periods = PeriodProducts(months=sorted(months))
        due = period_due(since, store.now(), settings.run.period_every_s)
        if month_products is False or (month_products is None and due is not None):
            periods.made = False
            periods.deferred_until = due if months and month_products is None else None
        elif months:
            order = PeriodTask(settings, store.url, tuple(sorted(months)))
            (_, got), *_ = list(executor.map_unordered(period_task, [order]))
            if isinstance(got, BaseException):
                periods.error = describe_failure(got)[1]
            else:
                periods = got
        site = update_site(settings, store)  # after the month products: it shows them
    finally:
        if own:
            store.close()
        if own_executor:
            executor.close()
    return PendingRun(summary, periods, alerts, site)


def period_due(last: datetime | None, now: datetime, every_s: float) -> datetime | None:
    """When the period products may be made again, or None if now: `every_s` after the
    last making (`last`, None for never; 0 s: always now)."""
    if last is None or every_s <= 0:
        return None
    due = last + timedelta(seconds=every_s)
    return due if now < due else None


def run_period_products(
    settings: Any, months: Iterable[str], *, store: Store | None = None
) -> PeriodProducts:
    """Rewrite the month products of `months` ('YYYY-MM') and the all-time trends; record
    each file in the products table (period = its month, or 'all')."""
    from viskom.pipeline.aggregate import update_month_products

    months = sorted(set(months))
    result = PeriodProducts(months=months)
    if not months:
        return result
    own = store is None
    store = store or open_store(settings)
    run = settings.run
    try:
        before = store.claim_started(PERIOD_CLAIM)
        # one run at a time rewrites them; another waits, then rewrites with its own months
        with holding(
            store, PERIOD_CLAIM, PERIOD_STAGE, new_token(),
            lease_s=run.lease_s, wait_s=run.claim_wait_s,
        ) as got:  # fmt: skip
            if not got:
                result.error = "another run kept the period products busy; left for later"
                return result
            # and the months measured since the caller counted them (while it decided, or
            # waited for the claim): after the last build began, as the caller counted
            if before is not None:
                months = sorted(set(months) | store.months_measured_since(before))
                result.months = months
            began = store.claim_started(PERIOD_CLAIM)
            if began is not None:  # what is committed now, of the months the build reads
                result.covered = frozenset(
                    (name, stage, done)
                    for name, stage, done, month in store.measured_between(
                        began - PERIOD_MARGIN, began
                    )
                    if month in months
                )
            try:
                result.paths = list(update_month_products(store, settings, months))
                record_period_files(store, settings, result.paths)
            except Exception as exc:  # reported, never fatal for the run's measurements
                result.error = short_reason(f"{type(exc).__name__}: {exc}")
                result.covered = frozenset()
                log.warning("period products failed", exc_info=exc)
    finally:
        if own:
            store.close()
    return result


@dataclass(frozen=True)
class PeriodTask:
    """The period products of some months, as a task for any worker."""

    settings: Any
    database_url: str
    months: tuple[str, ...]


def period_task(task: PeriodTask) -> PeriodProducts:
    """Run `run_period_products` where the executor puts it (its own store connection)."""
    settings = settings_of_worker(task.settings)
    return run_period_products(settings, task.months, store=worker_store(task.database_url))


def record_period_files(store: Store, settings: Any, paths: Iterable[Path]) -> None:
    """Record period product files, grouped by period (the month in the file name or its
    folder, else 'all'), relative to the data root; files outside it are not recorded
    (ValueError naming them, after the others are recorded)."""
    root = Path(settings.data_path).resolve()
    by_period: dict[str, list[WrittenProduct]] = {}
    outside = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            continue
        try:
            relative = path.resolve().relative_to(root)
        except ValueError:
            outside.append(str(path))
            continue
        found = _MONTH.search(path.name) or _MONTH.search(path.parent.name)
        period = found.group(1) if found else "all"
        kind = _SEPARATORS.sub("_", _DATE.sub("", path.stem)).strip("_-") or path.stem
        by_period.setdefault(period, []).append(
            WrittenProduct(kind, relative.as_posix(), path.stat().st_size, sha256_of(path))
        )
    for period, products in sorted(by_period.items()):
        store.record_period_products(period, PERIOD_STAGE, products)
    if outside:
        raise ValueError(f"period products outside the data root {root}: {', '.join(outside)}")
