"""The runner: find pending (exposure, stage) work, execute it, record outcomes and provenance.

A stage is pending for an exposure when it never ran, or ran with another stage version
or configuration. Failed stages are retried only on request (`retry_failed`), so a bad
frame does not cost time on every run; a stage that ran and measured nothing (status
``empty``, its quality outcomes say why) is done like an ``ok`` one, and the stages that
read its products still run. A stage whose declared header keywords (`Stage.header_keywords`)
are unusable or missing is recorded as failed with that reason, without running. Work is
grouped per exposure (the frame is opened once for all its stages) and executed on an
executor; results are written by this process only, as each exposure finishes.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from viskom import __version__
from viskom.le1.frame import Le1Frame
from viskom.pipeline.executors import Executor
from viskom.pipeline.resources import (
    calibration_identity,
    external_config,
    load_calibration,
    providers,
)
from viskom.pipeline.stage_io import WrittenProduct, remove_products, run_stage
from viskom.stages import (
    STAGES,
    ExposureInfo,
    QualityOutcome,
    Stage,
    StageResult,
    config_hash,
    get_stage,
)
from viskom.store import DONE_STATUSES, Exposure, StageRun, Store


@dataclass(frozen=True)
class StageCall:
    """One stage to run, with its configuration, the identities of its calibrations and
    the configuration of its external inputs' clients (picklable, sent to a worker)."""

    stage: str
    version: str
    config: dict[str, Any]
    config_hash: str
    calibrations: dict[str, Any] = field(default_factory=dict)
    external: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_root: str = ""  # calibration files are named relative to it (not provenance)


def stage_call(
    stage: Stage, settings: Any, upstream: Mapping[str, StageCall] | None = None
) -> StageCall:
    """The call of `stage` under `settings`; its provenance hash covers its configuration,
    its calibrations and the versions and hashes of the stages it reads (`upstream`)."""
    cfg = stage.config_of(settings)
    calibrations = {name: calibration_identity(name, settings) for name in stage.calibrations}
    external = {name: external_config(name, settings) for name in stage.external}
    ups = {
        name: (upstream[name].version, upstream[name].config_hash)
        for name in stage.upstream
        if upstream and name in upstream
    }
    # The configuration alone when there is nothing else (the hash of earlier versions, so
    # that upgrading does not re-measure what did not change), else all of it.
    provenance: dict[str, Any] = {"config": cfg}
    if ups:
        provenance["upstream"] = ups
    if calibrations:
        provenance["calibrations"] = calibrations
    digest = config_hash(provenance if len(provenance) > 1 else cfg)
    root = str(settings.data_path)
    return StageCall(stage.name, stage.version, cfg, digest, calibrations, external, root)


@dataclass(frozen=True)
class Task:
    """All pending stages of one exposure (picklable, sent to a worker)."""

    exposure: ExposureInfo
    calls: tuple[StageCall, ...]


@dataclass
class StageOutcome:
    """What one stage did on one exposure: status ok, empty or failed, metrics, outcomes."""

    exposure_id: int
    exposure_name: str
    call: StageCall
    status: str
    error: str | None
    started_at: datetime
    duration_s: float
    metrics: list[tuple[str, str, float]] = field(default_factory=list)
    outcomes: list[QualityOutcome] = field(default_factory=list)
    products: list[WrittenProduct] = field(default_factory=list)


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
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (exposure, stage, error)
    seconds: float = 0.0
    months: set[str] = field(default_factory=set)  # 'YYYY-MM' of exposures measured anew
    notes: list[str] = field(default_factory=list)  # calibration products and the like


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
    calls_by_stage: dict[str, StageCall] = {}
    for stage in stages:
        # A stage's provenance includes what it reads: a new upstream version re-runs it.
        calls_by_stage[stage.name] = stage_call(stage, settings, calls_by_stage)
    registered = store.list_exposures(state="registered")
    if exposures:
        wanted = set(exposures)
        registered = [e for e in registered if e.name in wanted]
    runs = store.stage_runs([e.id for e in registered])
    tasks, skipped, blocked = [], 0, 0
    for exp in registered:
        calls: list[StageCall] = []
        for stage in stages:
            if not stage.applies_to(exp.frame_type) or (
                only is not None and stage.name not in only
            ):
                continue
            call = calls_by_stage[stage.name]
            if _is_pending(runs.get((exp.id, stage.name)), call, force, retry_failed):
                planned = {c.stage for c in calls}
                ready = all(
                    name in planned
                    or (
                        runs.get((exp.id, name)) is not None
                        and runs[(exp.id, name)].status in DONE_STATUSES
                    )
                    for name in stage.needs
                )
                if ready:
                    calls.append(call)
                else:
                    blocked += 1
            else:
                skipped += 1
        if calls:
            tasks.append(Task(exposure_info(exp, settings), tuple(calls)))
    # Few pending exposures (a frame just landed): let stages spread its quadrants over the
    # idle workers, so the answer comes sooner. Many: one process per exposure.
    n_workers = workers if workers is not None else int(getattr(settings, "workers", 1))
    spare = max(1, n_workers // max(1, len(tasks)))
    if spare > 1:
        tasks = [Task(replace(t.exposure, quadrant_workers=spare), t.calls) for t in tasks]
    return tasks, skipped, blocked


def _is_pending(run: StageRun | None, call: StageCall, force: bool, retry_failed: bool) -> bool:
    if force or run is None:
        return True
    if run.stage_version != call.version or run.config_hash != call.config_hash:
        return True
    return run.status not in DONE_STATUSES and retry_failed


def exposure_info(exp: Exposure, settings: Any) -> ExposureInfo:
    """What a stage may know of a registered exposure under these settings."""
    return ExposureInfo(
        exposure_id=exp.id,
        name=exp.name,
        path=exp.path,
        frame_type=exp.frame_type or "UNKNOWN",
        exptime=exp.exptime,
        products_dir=str(settings.products_path),
        date_obs=exp.date_obs.isoformat() if exp.date_obs else None,
        data_root=str(settings.data_path),
    )


def execute_task(task: Task) -> list[StageOutcome]:
    """Run a task's stages on its frame (in a worker). Each stage's failure is captured."""
    outcomes: list[StageOutcome] = []
    frame = None
    open_error = None
    try:
        frame = Le1Frame(task.exposure.path)
    except Exception as exc:
        open_error = f"cannot open frame: {exc}"
    failed: set[str] = set()
    try:
        for call in task.calls:
            started = datetime.now(UTC)
            t0 = time.perf_counter()
            stage = get_stage(call.stage)
            broken = [name for name in stage.needs if name in failed]
            if frame is None or broken:
                why = open_error or f"needs {', '.join(broken)}, which failed"
                outcomes.append(_failed(task, call, why, started, 0.0))
                failed.add(call.stage)
                continue
            why = _header_blocker(frame, stage)
            if why is not None:
                outcomes.append(_failed(task, call, why, started, 0.0))
                failed.add(call.stage)
                continue
            try:
                result = execute_call(stage, call, frame, task.exposure)
            except Exception as exc:
                detail = "".join(traceback.format_exception_only(exc)).strip()
                tb = traceback.extract_tb(exc.__traceback__)
                where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
                outcomes.append(
                    _failed(task, call, detail + where, started, time.perf_counter() - t0)
                )
                failed.add(call.stage)
                continue
            outcomes.append(
                StageOutcome(
                    task.exposure.exposure_id,
                    task.exposure.name,
                    call,
                    result.status,
                    None,
                    started,
                    time.perf_counter() - t0,
                    [(u, m, float(v)) for u, m, v in result.metrics],
                    list(result.outcomes),
                    list(result.written),
                )
            )
    finally:
        if frame is not None:
            frame.close()
    return outcomes


def execute_call(
    stage: Stage, call: StageCall, frame: Le1Frame | None, exposure: ExposureInfo
) -> StageResult:
    """One stage on one opened frame: its calibrations loaded, its external inputs' clients
    built, then `stage_io.run_stage` (inputs in, checks, roll-up, products written)."""
    calibrations = {
        name: load_calibration(name, identity, exposure, Path(call.data_root))
        for name, identity in call.calibrations.items()
    }
    return run_stage(
        stage, frame, exposure, call.config,
        calibrations=calibrations, external=providers(call.external),
    )  # fmt: skip


def run_one(stage: Stage, frame: Le1Frame | None, exposure: ExposureInfo, settings: Any):
    """Run one stage on one frame as the runner would (tests, benchmarks, notebooks): its
    products written into the exposure's folder, metrics checked and rolled up."""
    return execute_call(stage, stage_call(stage, settings), frame, exposure)


def _header_blocker(frame: Le1Frame, stage: Stage) -> str | None:
    """Why `stage` cannot run on this frame's header ("EXPTIME = 'abc' is not a number
    (primary header): needed by events"), or None."""
    try:
        unusable = frame.primary.blocking_problem(stage.header_keywords)
    except KeyError as exc:
        return f"stage {stage.name} declares an unknown header keyword: {exc}"
    return None if unusable is None else f"{unusable.describe()}: needed by {stage.name}"


def _failed(task: Task, call: StageCall, error: str, started: datetime, dt: float) -> StageOutcome:
    return StageOutcome(
        task.exposure.exposure_id, task.exposure.name, call, "failed", error, started, dt
    )


def record(store: Store, outcome: StageOutcome) -> None:
    """Write what one stage did (provenance row, metrics, quality outcomes) in one
    transaction."""
    run = StageRun(
        exposure_id=outcome.exposure_id,
        stage=outcome.call.stage,
        stage_version=outcome.call.version,
        config_hash=outcome.call.config_hash,
        software_version=__version__,
        status=outcome.status,
        error=outcome.error,
        started_at=outcome.started_at,
        duration_s=outcome.duration_s,
    )
    done = outcome.status in DONE_STATUSES
    store.record_stage_run(
        run,
        outcome.metrics if done else (),
        [(o.code, o.unit, o.message) for o in outcome.outcomes] if done else (),
        outcome.products,
    )


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
) -> RunSummary:
    """Execute all pending work; never stops on a stage's or a worker's failure.

    Calibrations built from many exposures are brought up to date first (hot-pixel map,
    relative gains, X-ray baseline). When the run itself gives the store its first X-ray
    baseline, the events stage of the exposures measured without one runs once more, so that
    their net X-ray counts exist (a new baseline later does not re-measure the past).
    """
    t0 = time.perf_counter()
    from viskom.pipeline.calibration import (
        update_hot_pixel_map,
        update_relative_gains,
        update_xray_baseline,
    )

    stages = tuple(stages)
    _map, hot_note = update_hot_pixel_map(store, settings)
    _gains, gains_note = update_relative_gains(store, settings)
    baseline_before, xray_note = update_xray_baseline(store, settings)
    if not getattr(executor, "nested_pools", True):
        workers = 1  # e.g. Dask's daemonic workers: no quadrant processes inside a task
    tasks, skipped, blocked = plan(
        store,
        settings,
        stages=stages,
        force=force,
        retry_failed=retry_failed,
        exposures=exposures,
        workers=workers,
    )
    summary = RunSummary(
        exposures=len(tasks),
        skipped=skipped,
        blocked=blocked,
        notes=[hot_note, gains_note, xray_note],
    )
    _execute(store, executor, tasks, summary, progress)
    if baseline_before is None:
        _rerun_events_with_new_baseline(store, settings, executor, stages, summary, workers)
    summary.seconds = time.perf_counter() - t0
    return summary


def _execute(
    store: Store,
    executor: Executor,
    tasks: Sequence[Task],
    summary: RunSummary,
    progress: Callable[[int, int, str], None] | None,
) -> None:
    """Run tasks on the executor and record every stage outcome into the store and summary."""
    for done, (task, result) in enumerate(executor.map_unordered(execute_task, tasks), start=1):
        if isinstance(result, BaseException):
            now = datetime.now(UTC)
            msg = f"worker error: {result}"
            result = [_failed(task, call, msg, now, 0.0) for call in task.calls]
        for outcome in result:
            try:
                record(store, outcome)
            except Exception as exc:  # e.g. a metric clash: this stage failed, the run goes on
                outcome.status, outcome.error = "failed", f"could not record results: {exc}"
                outcome.metrics, outcome.outcomes, outcome.products = [], [], []
                record(store, outcome)
            if outcome.status not in DONE_STATUSES:
                # whatever failed (the frame, a needed stage, the header, the stage, the
                # worker, the record): no file of an older or half run stays behind
                remove_products(get_stage(outcome.call.stage), task.exposure)
            if outcome.status in DONE_STATUSES:
                if outcome.status == "ok":
                    summary.stages_ok += 1
                else:
                    summary.stages_empty += 1
                summary.outcomes.extend(
                    (outcome.exposure_name, outcome.call.stage, o) for o in outcome.outcomes
                )
                if task.exposure.date_obs:
                    summary.months.add(task.exposure.date_obs[:7])
            else:
                summary.stages_failed += 1
                summary.failures.append(
                    (outcome.exposure_name, outcome.call.stage, outcome.error or "")
                )
        if progress:
            progress(done, len(tasks), task.exposure.name)


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
        store,
        settings,
        stages=tuple(stages),
        force=True,
        exposures=waiting,
        workers=workers,
        only=("events",),
    )
    again = RunSummary()
    _execute(store, executor, tasks, again, None)
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
