"""The runner: find pending (exposure, stage) work, execute it, record outcomes and provenance.

A stage is pending for an exposure when it never ran, or ran with another stage version
or configuration. Failed stages are retried only on request (`retry_failed`), so a bad
frame does not cost time on every run. Work is grouped per exposure (the frame is opened
once for all its stages) and executed on an executor; results are written by this
process only, as each exposure finishes.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from viskom import __version__
from viskom.le1.frame import Le1Frame
from viskom.pipeline.executors import Executor
from viskom.stages import STAGES, ExposureInfo, Stage, config_hash, get_stage
from viskom.store import Exposure, StageRun, Store


@dataclass(frozen=True)
class StageCall:
    """One stage to run on one exposure, with its configuration."""

    stage: str
    version: str
    config: dict[str, Any]
    config_hash: str


@dataclass(frozen=True)
class Task:
    """All pending stages of one exposure (picklable, sent to a worker)."""

    exposure: ExposureInfo
    calls: tuple[StageCall, ...]


@dataclass
class Outcome:
    """What one stage did on one exposure."""

    exposure_id: int
    exposure_name: str
    call: StageCall
    status: str
    error: str | None
    started_at: datetime
    duration_s: float
    metrics: list[tuple[str, str, float]] = field(default_factory=list)


@dataclass
class RunSummary:
    """Counts of what a run did."""

    exposures: int = 0
    stages_ok: int = 0
    stages_failed: int = 0
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
) -> tuple[list[Task], int, int]:
    """Tasks for everything pending, how many (exposure, stage) pairs were up to date, and
    how many are blocked because a stage they need failed (retry it with retry_failed)."""
    calls_by_stage: dict[str, StageCall] = {}
    for stage in stages:
        cfg = stage.config_of(settings)
        # A stage's provenance includes what it reads: a new upstream version re-runs it.
        upstream = {
            name: (calls_by_stage[name].version, calls_by_stage[name].config_hash)
            for name in stage.requires
            if name in calls_by_stage
        }
        digest = config_hash({"config": cfg, "upstream": upstream} if upstream else cfg)
        calls_by_stage[stage.name] = StageCall(stage.name, stage.version, cfg, digest)
    registered = store.list_exposures(state="registered")
    if exposures:
        wanted = set(exposures)
        registered = [e for e in registered if e.name in wanted]
    runs = store.stage_runs([e.id for e in registered])
    tasks, skipped, blocked = [], 0, 0
    for exp in registered:
        calls: list[StageCall] = []
        for stage in stages:
            if not stage.applies_to(exp.frame_type):
                continue
            call = calls_by_stage[stage.name]
            if _is_pending(runs.get((exp.id, stage.name)), call, force, retry_failed):
                planned = {c.stage for c in calls}
                ready = all(
                    name in planned
                    or (
                        runs.get((exp.id, name)) is not None and runs[(exp.id, name)].status == "ok"
                    )
                    for name in stage.requires
                )
                if ready:
                    calls.append(call)
                else:
                    blocked += 1
            else:
                skipped += 1
        if calls:
            tasks.append(Task(_exposure_info(exp, settings), tuple(calls)))
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
    return run.status != "ok" and retry_failed


def _exposure_info(exp: Exposure, settings: Any) -> ExposureInfo:
    return ExposureInfo(
        exposure_id=exp.id,
        name=exp.name,
        path=exp.path,
        frame_type=exp.frame_type or "UNKNOWN",
        exptime=exp.exptime,
        products_dir=str(settings.products_path),
        date_obs=exp.date_obs.isoformat() if exp.date_obs else None,
    )


def execute_task(task: Task) -> list[Outcome]:
    """Run a task's stages on its frame (in a worker). Each stage's failure is captured."""
    outcomes: list[Outcome] = []
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
            broken = [name for name in stage.requires if name in failed]
            if frame is None or broken:
                why = open_error or f"needs {', '.join(broken)}, which failed"
                outcomes.append(_failed(task, call, why, started, 0.0))
                failed.add(call.stage)
                continue
            try:
                result = stage.run(frame, task.exposure, call.config)
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
                Outcome(
                    task.exposure.exposure_id,
                    task.exposure.name,
                    call,
                    "ok",
                    None,
                    started,
                    time.perf_counter() - t0,
                    [(u, m, float(v)) for u, m, v in result.metrics],
                )
            )
    finally:
        if frame is not None:
            frame.close()
    return outcomes


def _failed(task: Task, call: StageCall, error: str, started: datetime, dt: float) -> Outcome:
    return Outcome(
        task.exposure.exposure_id, task.exposure.name, call, "failed", error, started, dt
    )


def record(store: Store, outcome: Outcome) -> None:
    """Write one stage outcome (provenance row and metrics) in one transaction."""
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
    store.record_stage_run(run, outcome.metrics if outcome.status == "ok" else ())


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
    """Execute all pending work; never stops on a stage's or a worker's failure."""
    t0 = time.perf_counter()
    from viskom.pipeline.calibration import update_hot_pixel_map, update_relative_gains

    _map, hot_note = update_hot_pixel_map(store, settings)
    _gains, gains_note = update_relative_gains(store, settings)
    tasks, skipped, blocked = plan(
        store,
        settings,
        stages=tuple(stages),
        force=force,
        retry_failed=retry_failed,
        exposures=exposures,
        workers=workers,
    )
    summary = RunSummary(
        exposures=len(tasks), skipped=skipped, blocked=blocked, notes=[hot_note, gains_note]
    )
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
                outcome.metrics = []
                record(store, outcome)
            if outcome.status == "ok":
                summary.stages_ok += 1
                if task.exposure.date_obs:
                    summary.months.add(task.exposure.date_obs[:7])
            else:
                summary.stages_failed += 1
                summary.failures.append(
                    (outcome.exposure_name, outcome.call.stage, outcome.error or "")
                )
        if progress:
            progress(done, len(tasks), task.exposure.name)
    summary.seconds = time.perf_counter() - t0
    return summary
