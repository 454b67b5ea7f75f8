"""The runner: find pending (exposure, stage) work, hand it out, tally what came back.

A stage is pending for an exposure when it never ran, or ran with another stage version or
configuration (its own science settings, its calibrations, the stages it reads), or failed
transiently and its backoff has passed; permanent failures wait for a change of input, stage
or settings (or `retry_failed`). A stage that ran and measured nothing (status ``empty``, its
quality outcomes say why) is done like an ``ok`` one. Work is grouped per exposure and run
by `pipeline.worker` wherever the executor puts it: the worker claims the units in the
database, runs, records and releases, so any number of runs, `watch` loops and Dask workers
share one store and nothing is done twice. `explain` says why each stage of an exposure is
pending, done, failed or running (`viskom status --why`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from viskom.pipeline.executors import Executor
from viskom.pipeline.failures import TRANSIENT, describe_failure
from viskom.pipeline.leases import holding, new_token, settings_of_worker, share_store, worker_store
from viskom.pipeline.pending import (
    pending_reason,
    pending_work,
    retry_due,
)
from viskom.pipeline.preload import AFTER_STAGES_IMPORTS, preload
from viskom.pipeline.work import (
    StageCall,
    StageOutcome,
    Task,
    TaskReport,
    exposure_info,
    stage_calls,
)
from viskom.pipeline.worker import (
    calls_of_task,
    execute_call,
    execute_task,
    record_outcome,
    run_one,
)
from viskom.stages import STAGES, QualityOutcome, Stage
from viskom.store import DONE_STATUSES, Store
from viskom.store.claims import ClaimRequest, exposure_key, run_mark

log = logging.getLogger(__name__)

__all__ = [
    "RunSummary", "StageCall", "Task", "execute_call", "execute_task", "explain",
    "exposure_info", "plan", "run_one", "run_pipeline",
]  # fmt: skip


@dataclass
class RunSummary:
    """Counts of what a run did."""

    exposures: int = 0
    stages_ok: int = 0
    stages_failed: int = 0
    stages_empty: int = 0  # ran and measured nothing; the outcomes say why
    outcomes: list[tuple[str, str, QualityOutcome]] = field(default_factory=list)  # (exp, stage)
    skipped: int = 0
    blocked: int = 0  # pending stages whose required stage failed
    left: int = 0  # pending units another run held, or did meanwhile
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (exposure, stage, error)
    seconds: float = 0.0
    months: set[str] = field(default_factory=set)  # 'YYYY-MM' of exposures measured anew
    notes: list[str] = field(default_factory=list)  # calibration products and the like


# -- deciding what is pending (`pipeline.pending`, shared with `viskom status`) ----------------


def plan(
    store: Store,
    settings: Any,
    *,
    stages: Sequence[Stage] = STAGES,
    force: bool = False,
    retry_failed: bool = False,
    exposures: Sequence[str] | None = None,
    workers: int | None = None,
    only: Sequence[str] | None = None,
) -> tuple[list[Task], int, int]:
    """Tasks for everything pending, how many (exposure, stage) pairs were up to date, and
    how many are blocked because a stage they need failed (retry it with retry_failed).
    `only` limits the work to those stage names (provenance still over all `stages`)."""
    planned_at = store.now()
    calls_by_stage = stage_calls(settings, stages)
    registered = store.list_exposures(state="registered")
    if exposures:
        wanted = set(exposures)
        registered = [e for e in registered if e.name in wanted]
    runs = store.stage_runs([e.id for e in registered])
    planned, skipped, blocked = pending_work(
        registered, runs, stages, calls_by_stage, planned_at,
        force=force, retry_failed=retry_failed, retry_wait=settings.run.retry_wait_s, only=only,
    )  # fmt: skip
    # Few pending exposures (a frame just landed): let stages spread its quadrants over the
    # idle workers, so the answer comes sooner. Many: one process per exposure.
    n_workers = workers if workers is not None else int(getattr(settings, "workers", 1))
    spare = max(1, n_workers // max(1, len(planned)))
    pipeline = tuple(s.name for s in stages)
    url = store.url
    tasks = []
    for exp, names in planned:
        seen = {name: run_mark(runs.get((exp.id, name))) for name in names}
        token = new_token()
        tasks.append(
            Task(
                settings,
                exp.id,
                exp.name,
                tuple(names),
                token,
                spare,
                url,
                pipeline,
                seen,
            )
        )
    return tasks, skipped, blocked


@dataclass(frozen=True)
class StageState:
    """One line of `viskom status --why`: a stage, its state and why."""

    stage: str
    state: str  # done, empty, pending, failed, waiting, running, stale
    reason: str


def explain(store: Store, settings: Any, name: str) -> list[StageState]:
    """Why each stage that applies to exposure `name` is done, pending, failed, waiting
    for another stage or running (and where); KeyError when the store does not know it."""
    exp = store.get_exposure(name)
    if exp is None:
        raise KeyError(name)
    if exp.state != "registered":
        return [StageState("-", "invalid", exp.reason or "not a usable frame")]
    now = store.now()
    calls = stage_calls(settings)
    runs = store.stage_runs([exp.id])
    held = {c.key: c for c in store.held_claims() if c.exposure_id == exp.id}
    states: list[StageState] = []
    for stage in STAGES:
        if not stage.applies_to(exp.frame_type):
            continue
        run, call = runs.get((exp.id, stage.name)), calls[stage.name]
        claim = held.get(exposure_key(exp.id, stage.name))
        if claim is not None:
            live = not claim.expired(now)
            where = f"{claim.host} pid {claim.pid}, since {_hhmm(claim.claimed_at)}"
            if live:
                lease = f"lease until {_hhmm(claim.expires_at)}"
                states.append(StageState(stage.name, "running", f"claimed by {where}; {lease}"))
            else:
                why = f"claimed by {where}; lease ran out at {_hhmm(claim.expires_at)}, free again"
                states.append(StageState(stage.name, "stale", why))
            continue
        reason = pending_reason(run, call, now, retry_wait=settings.run.retry_wait_s)
        if reason is not None:
            broken = [
                n
                for n in stage.needs
                if (r := runs.get((exp.id, n))) is not None and r.status not in DONE_STATUSES
            ]
            if broken and run is not None and run.status == "failed":
                reason = f"{reason}; but needs {', '.join(broken)}, which failed"
            states.append(StageState(stage.name, "pending", reason))
        elif run is not None and run.status in DONE_STATUSES:
            what = (
                f"{run.status} at {_hhmm(run.finished_at or run.started_at)}, version "
                f"{run.stage_version}, settings {run.config_hash[:8]}, "
                f"{run.duration_s or 0:.1f} s on {run.host or 'unknown host'}; up to date"
            )
            states.append(StageState(stage.name, "done" if run.status == "ok" else "empty", what))
        elif run is not None and run.failure_class == "transient":
            due = retry_due(run, settings.run.retry_wait_s)
            when = _hhmm(due) if due else "the next run"
            why = f"transient failure, attempt {run.attempts or 1}: {run.error}; retried after "
            why += when
            states.append(StageState(stage.name, "failed", why))
        elif run is not None:
            why = (
                f"{run.failure_class or 'permanent'} failure: {run.error}; not retried until "
                "the file, the stage or its settings change (or `viskom run --retry-failed`)"
            )
            states.append(StageState(stage.name, "failed", why))
    return states


def _hhmm(when: datetime | None) -> str:
    return "?" if when is None else when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- running --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationTask:
    """Bring the calibrations built from many exposures up to date (a task, claimed)."""

    settings: Any
    database_url: str
    token: str


@dataclass
class CalibrationReport:
    notes: list[str]
    had_xray_baseline: bool


def update_calibrations(task: CalibrationTask) -> CalibrationReport:
    """The hot-pixel map, the relative gains and the X-ray baseline, under the claim
    'calibrations' (a run that finds another run making them waits for it)."""
    from viskom.pipeline.calibration import (
        update_hot_pixel_map,
        update_relative_gains,
        update_xray_baseline,
        xray_baseline_path,
    )

    settings = settings_of_worker(task.settings)
    store = worker_store(task.database_url)
    run = settings.run
    with holding(
        store, "calibrations", "calibrations", task.token,
        lease_s=run.lease_s, wait_s=run.claim_wait_s,
    ) as got:  # fmt: skip
        had = xray_baseline_path(settings.products_path).exists()
        if not got:
            return CalibrationReport(["calibrations: another run is updating them"], had)
        notes = [
            update_hot_pixel_map(store, settings)[1],
            update_relative_gains(store, settings)[1],
            update_xray_baseline(store, settings)[1],
        ]
    return CalibrationReport(notes, had)


def run_pipeline(
    store: Store,
    settings: Any,
    executor: Executor,
    *,
    force: bool = False,
    retry_failed: bool = False,
    exposures: Sequence[str] | None = None,
    stages: Iterable[Stage] = STAGES,
    workers: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunSummary:
    """Execute all pending work; never stops on a stage's or a worker's failure.

    Calibrations built from many exposures are brought up to date first (hot-pixel map,
    relative gains, X-ray baseline), as a task. When the run itself gives the store its first
    X-ray baseline, the events stage of the exposures measured without one runs once more, so
    that their net X-ray counts exist (a new baseline later does not re-measure the past).
    """
    t0 = time.perf_counter()
    stages = tuple(stages)
    share_store(store, store.url)
    cleanup_notes: list[str] = []
    _clean_up_after_crashes(store, settings, cleanup_notes)
    cal_task = CalibrationTask(settings, store.url, new_token())
    (_, cal), *_ = list(executor.map_unordered(update_calibrations, [cal_task]))
    if isinstance(cal, BaseException):
        notes, had_baseline = [f"calibrations failed: {describe_failure(cal)[1]}"], True
    else:
        notes, had_baseline = cal.notes, cal.had_xray_baseline
    if not getattr(executor, "nested_pools", True):
        workers = 1  # e.g. Dask's daemonic workers: no quadrant processes inside a task
    tasks, skipped, blocked = plan(
        store, settings, stages=stages, force=force, retry_failed=retry_failed,
        exposures=exposures, workers=workers,
    )  # fmt: skip
    notes = cleanup_notes + notes
    summary = RunSummary(exposures=len(tasks), skipped=skipped, blocked=blocked, notes=notes)
    _execute(store, settings, executor, tasks, summary, progress, should_stop)
    if not had_baseline:
        _rerun_events_with_new_baseline(store, settings, executor, stages, summary, workers)
    summary.seconds = time.perf_counter() - t0
    return summary


def _clean_up_after_crashes(store: Store, settings: Any, notes: list[str]) -> None:
    """Free the units of runs that stopped renewing their lease, and remove the temporary
    files killed writers left: in the product tree those older than every live claim (and
    than one lease), in the Gaia and GOES caches those older than an hour."""
    from viskom.store.atomic import remove_stale_temporaries

    freed = store.release_expired_claims()
    now = store.now()
    oldest = store.oldest_live_claim()
    cutoff = now.timestamp() - float(settings.run.lease_s)
    if oldest is not None:
        cutoff = min(cutoff, oldest.timestamp())
    removed = remove_stale_temporaries(settings.products_path, cutoff)
    for cache in (settings.gaia_cache_path, settings.goes_cache_path):
        removed += remove_stale_temporaries(cache, now.timestamp() - 3600.0)
    if freed:
        notes.append(f"freed {freed} unit(s) whose run stopped renewing its lease")
    if removed:
        notes.append(f"removed {removed} temporary file(s) left by a killed run")


def _tally(summary: RunSummary, report: TaskReport) -> None:
    summary.left += len(report.left)
    for outcome in report.outcomes:
        if outcome.status in DONE_STATUSES:
            if outcome.status == "ok":
                summary.stages_ok += 1
            else:
                summary.stages_empty += 1
            summary.outcomes.extend(
                (outcome.exposure_name, outcome.call.stage, o) for o in outcome.outcomes
            )
            if outcome.date_obs:
                summary.months.add(outcome.date_obs[:7])
        else:
            summary.stages_failed += 1
            summary.failures.append(
                (outcome.exposure_name, outcome.call.stage, outcome.error or "")
            )


def _execute(
    store: Store,
    settings: Any,
    executor: Executor,
    tasks: Sequence[Task],
    summary: RunSummary,
    progress: Callable[[int, int, str], None] | None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """Run tasks on the executor and tally what they did. A task lost with its worker is
    handed out once more (same claims); lost again, its stages are recorded as failed
    (transient: a later run tries again)."""

    def handed_out() -> Iterable[Task]:
        for task in tasks:
            if should_stop is not None and should_stop():
                summary.notes.append("stopped on request: the rest is left for the next run")
                return
            yield task

    lost: list[tuple[Task, BaseException]] = []
    # while the exposures are measured elsewhere, this process imports what the month
    # products import, so that the process that makes them is forked with it
    results = executor.map_unordered(
        execute_task, handed_out(), meanwhile=partial(preload, AFTER_STAGES_IMPORTS)
    )
    for done, (task, result) in enumerate(results, start=1):
        if isinstance(result, BaseException):
            log.warning("task of %s lost: %s", task.exposure_name, result)
            lost.append((task, result))
        else:
            _tally(summary, result)
        if progress:
            progress(done, len(tasks), task.exposure_name)
    if not lost or (should_stop is not None and should_stop()):
        return
    summary.notes.append(f"{len(lost)} exposure task(s) lost with a worker, handed out again")
    for task, result in executor.map_unordered(execute_task, [t for t, _ in lost]):
        if isinstance(result, BaseException):
            _record_lost(store, settings, task, result, summary)
        else:
            _tally(summary, result)


def _record_lost(
    store: Store, settings: Any, task: Task, error: BaseException, summary: RunSummary
) -> None:
    """Record the stages of a twice-lost task that nobody recorded since it was planned,
    as transient failures (what escapes a task is the worker's trouble, not the frame's)."""
    reason = describe_failure(error)[1]
    report = TaskReport()
    try:
        exp = store.exposure_by_id(task.exposure_id)
        if exp is None:
            return
        calls = calls_of_task(task, settings)
        requests = [
            ClaimRequest(exposure_key(exp.id, n), n, exp.id, task.seen.get(n)) for n in task.stages
        ]
        granted = store.claim(requests, task.token, lease_s=settings.run.lease_s, check_seen=True)
        info = exposure_info(exp, settings)
        try:
            for key in granted:
                name = key.rsplit(":", 1)[1]
                now = datetime.now(UTC)
                outcome = StageOutcome(
                    exp.id, exp.name, calls[name], "failed", f"worker error: {reason}", now,
                    0.0, failure_class=TRANSIENT, date_obs=info.date_obs,
                )  # fmt: skip
                record_outcome(
                    store, outcome, info, settings, raw_checksum=exp.checksum,
                    claim=(key, task.token),
                )  # fmt: skip
                report.outcomes.append(outcome)
        finally:
            store.release_claims(task.token)
    except Exception as exc:  # the database is gone too: the leases run out, a later run
        log.error("could not record the lost task of %s: %s", task.exposure_name, exc)
        summary.failures.append((task.exposure_name, "-", describe_failure(exc)[1]))
    _tally(summary, report)


def _rerun_events_with_new_baseline(
    store: Store,
    settings: Any,
    executor: Executor,
    stages: Sequence[Stage],
    summary: RunSummary,
    workers: int | None,
) -> None:
    """If this run's frames gave the store its first X-ray baseline, measure the events of
    the frames that ran without one again (their outcome `no_xray_baseline` goes)."""
    from viskom.pipeline.calibration import update_xray_baseline

    events = [s for s in stages if s.name == "events"]
    waiting = sorted(
        {
            e
            for e, stage, o in summary.outcomes
            if stage == "events" and o.code == "no_xray_baseline"
        }
    )
    if not events or not waiting:
        return
    path, note = update_xray_baseline(store, settings)
    if path is None:
        return
    tasks, _skipped, _blocked = plan(
        store, settings, stages=tuple(stages), force=True, exposures=waiting,
        workers=workers, only=("events",),
    )  # fmt: skip
    again = RunSummary()
    _execute(store, settings, executor, tasks, again, None)
    redone = set(waiting)
    summary.outcomes = [
        (e, stage, o) for e, stage, o in summary.outcomes if not (stage == "events" and e in redone)
    ] + again.outcomes
    summary.failures += again.failures
    # the first measurement of these events was counted ok; count the second one instead
    summary.stages_ok -= again.stages_failed + again.stages_empty
    summary.stages_failed += again.stages_failed
    summary.stages_empty += again.stages_empty
    summary.notes.append(f"{note}; events measured again for {len(tasks)} exposure(s)")
