"""What a worker does with a task: claim its units, run its stages on the frame, record
each outcome with its full provenance, release the claims.

Everything here runs where the task runs (a pool process, a Dask worker, or the run's own
process): the worker opens its own store from the database URL, reads the exposure from it
and its paths from the settings, so a task carries no connection and no file path. Each
stage's failure is captured, classified (transient or permanent, `pipeline.failures`) and
recorded as one short reason; the traceback goes to the log.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from viskom import __version__
from viskom.le1.frame import Le1Frame
from viskom.le1.quadrant_map import die_with_parent
from viskom.pipeline.failures import (
    PERMANENT,
    TRANSIENT,
    describe_failure,
    failure_class,
    short_reason,
)
from viskom.pipeline.leases import LeaseKeeper, settings_of_worker, worker_store
from viskom.pipeline.preload import preload, stage_imports
from viskom.pipeline.resources import load_calibration, providers
from viskom.pipeline.stage_io import remove_products, run_stage
from viskom.pipeline.work import (
    StageCall,
    StageOutcome,
    Task,
    TaskReport,
    exposure_info,
    stage_call,
    stage_calls,
)
from viskom.stages import STAGES, ExposureInfo, Stage, StageResult, get_stage
from viskom.store import DONE_STATUSES, StageRun, Store
from viskom.store.claims import ClaimRequest, LeaseLost, exposure_key, host_name, run_mark

log = logging.getLogger(__name__)


def execute_task(task: Task) -> TaskReport:
    """Claim, run and record a task's stages on its exposure (in a worker). Units another
    run holds, or did since the task was planned, are left (`TaskReport.left`)."""
    settings = settings_of_worker(task.settings)
    store = worker_store(task.database_url or settings.db_url)
    exp = store.exposure_by_id(task.exposure_id)
    report = TaskReport()
    if exp is None:  # forgotten meanwhile (its file changed): the next plan decides
        report.left = list(task.stages)
        return report
    calls = calls_of_task(task, settings)
    lease_s = float(settings.run.lease_s)
    requests = [
        ClaimRequest(exposure_key(exp.id, name), name, exp.id, task.seen.get(name))
        for name in task.stages
    ]
    granted = set(store.claim(requests, task.token, lease_s=lease_s, check_seen=True))
    mine = _runnable(store, task, exp.id, granted)
    report.left = [name for name in task.stages if name not in mine]
    dropped = [exposure_key(exp.id, n) for n in report.left if exposure_key(exp.id, n) in granted]
    if dropped:
        store.release_claims(task.token, dropped)
    if not mine:
        return report
    info = exposure_info(exp, settings, task.quadrant_workers)
    try:
        with LeaseKeeper(store, task.token, lease_s):
            for outcome in run_calls(info, [calls[name] for name in mine]):
                outcome.date_obs = info.date_obs
                key = exposure_key(exp.id, outcome.call.stage)
                try:
                    record_outcome(
                        store, outcome, info, settings, raw_checksum=exp.checksum,
                        claim=(key, task.token),
                    )  # fmt: skip
                except LeaseLost as exc:  # another run took the unit over: its result counts
                    log.warning("%s: %s; result not recorded", exp.name, exc)
                    report.left.append(outcome.call.stage)
                    continue
                store.release_claims(task.token, [key])
                outcome.metrics = []  # recorded; not sent back
                report.outcomes.append(outcome)
    finally:
        store.release_claims(task.token)
    return report


def calls_of_task(task: Task, settings: Any) -> dict[str, StageCall]:
    """The calls of the task's pipeline under the worker's settings."""
    names = task.pipeline or tuple(s.name for s in STAGES)
    return stage_calls(settings, [get_stage(n) for n in names])


def _runnable(store: Store, task: Task, exposure_id: int, granted: set[str]) -> list[str]:
    """The granted stages whose needed stages are either run first in this task, or were
    done by another run meanwhile; a needed stage another run holds now holds them back."""
    runs = None
    mine: list[str] = []
    for name in task.stages:
        if exposure_key(exposure_id, name) not in granted:
            continue
        ok = True
        for need in get_stage(name).needs:
            if need in mine or need not in task.stages:
                continue
            if runs is None:
                runs = store.stage_runs([exposure_id])
            run = runs.get((exposure_id, need))
            done_meanwhile = (
                run is not None
                and run.status in DONE_STATUSES
                and run_mark(run) != task.seen.get(need)
            )
            if not done_meanwhile:
                ok = False
                break
        if ok:
            mine.append(name)
    return mine


def run_calls(exposure: ExposureInfo, calls: Sequence[StageCall]) -> Iterator[StageOutcome]:
    """Run `calls` on the exposure's frame (opened once), yielding each stage's outcome as it
    finishes; a stage whose needed stage failed fails too, with the same failure class. With
    more than one core for the exposure (`quadrant_workers`), the stages run side by side
    (`_run_side_by_side`); otherwise one after the other, in this process."""
    frame = None
    open_error: tuple[str, str] | None = None
    try:
        frame = Le1Frame(exposure.path)
    except Exception as exc:
        cls, reason = describe_failure(exc)
        open_error = (cls, f"cannot open frame: {reason}")
        log.warning("%s: cannot open frame: %s", exposure.name, exc)
    failed: dict[str, str] = {}
    try:
        if frame is not None and exposure.quadrant_workers > 1 and len(calls) > 1:
            yield from _run_side_by_side(exposure, calls, frame)
            return
        for call in calls:
            yield _run_call(call, frame, exposure, failed, open_error)
    finally:
        if frame is not None:
            frame.close()


def _blocked(
    call: StageCall,
    frame: Le1Frame | None,
    exposure: ExposureInfo,
    failed: dict[str, str],
    open_error: tuple[str, str] | None = None,
) -> StageOutcome | None:
    """The failed outcome of a stage that cannot run (the frame did not open, a stage it
    needs failed, its header keywords are unusable), recorded in `failed`; else None."""
    stage = get_stage(call.stage)
    broken = [name for name in stage.needs if name in failed]
    if open_error is not None:
        cls, why = open_error
    elif broken:
        cls = failed[broken[0]]
        why = f"needs {', '.join(broken)}, which failed"
    else:
        cls, why = PERMANENT, _header_blocker(frame, stage)  # type: ignore[arg-type]
    if open_error is None and not broken and why is None:
        return None
    failed[call.stage] = cls
    return _failed(exposure, call, str(why), datetime.now(UTC), 0.0, cls)


def _run_call(
    call: StageCall,
    frame: Le1Frame | None,
    exposure: ExposureInfo,
    failed: dict[str, str],
    open_error: tuple[str, str] | None = None,
) -> StageOutcome:
    """One stage on the opened frame, in this process: its outcome, failures recorded in
    `failed` (for the stages that need it)."""
    blocked = _blocked(call, frame, exposure, failed, open_error)
    if blocked is not None:
        return blocked
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    stage = get_stage(call.stage)
    try:
        result = execute_call(stage, call, frame, exposure)
    except Exception as exc:
        tb = traceback.extract_tb(exc.__traceback__)
        where = f"{tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
        cls, why = describe_failure(exc, where)
        log.warning("%s %s failed (%s)", exposure.name, call.stage, cls, exc_info=exc)
        failed[call.stage] = cls
        return _failed(exposure, call, why, started, time.perf_counter() - t0, cls)
    return StageOutcome(
        exposure.exposure_id,
        exposure.name,
        call,
        result.status,
        None,
        started,
        time.perf_counter() - t0,
        [(u, m, float(v)) for u, m, v in result.metrics],
        list(result.outcomes),
        list(result.written),
    )


def _run_side_by_side(
    exposure: ExposureInfo, calls: Sequence[StageCall], frame: Le1Frame
) -> Iterator[StageOutcome]:
    """The stages of one exposure as a graph on its cores: each starts, in a process of its
    own, once the stages it reads (`Stage.upstream`) among `calls` are done. A
    `parallel_quadrants` stage (catalogue, events) gets every core and never runs beside
    another such stage; the others get one core each, as many at a time as there are cores,
    beside it or each other. So the single-core stages (plots, Gaia, images) fill the cores
    instead of leaving one idle. Once the first stages run, this process imports what the
    others declare (`Stage.imports`), so that they are forked with it. A stage process that
    dies is a transient failure."""
    import multiprocessing
    from multiprocessing.connection import wait

    cores = exposure.quadrant_workers
    ctx = multiprocessing.get_context("fork")
    in_task = {c.stage for c in calls}
    pending = list(calls)
    done: set[str] = set()
    failed: dict[str, str] = {}
    running: dict[Any, tuple[StageCall, Any, Any, datetime, float]] = {}
    preloaded = False
    try:
        while pending or running:
            waiting = len(pending)
            for call in list(pending):
                stage = get_stage(call.stage)
                if any(u in in_task and u not in done for u in stage.upstream):
                    continue
                heavy = sum(get_stage(c.stage).parallel_quadrants for c, *_ in running.values())
                if stage.parallel_quadrants and heavy:
                    continue
                if not stage.parallel_quadrants and len(running) - heavy >= cores:
                    continue
                pending.remove(call)
                blocked = _blocked(call, frame, exposure, failed)
                if blocked is not None:
                    done.add(call.stage)
                    yield blocked
                    continue
                share = replace(exposure, quadrant_workers=cores if stage.parallel_quadrants else 1)
                receive, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_stage_process, args=(send, call, share), daemon=False)
                proc.start()
                send.close()
                running[receive] = (call, proc, receive, datetime.now(UTC), time.perf_counter())
            if not preloaded:  # the first stages run: import what the others will need
                preloaded = True
                preload(stage_imports(c.stage for c in pending))
            if not running:
                if len(pending) == waiting:  # nothing started, nothing settled: a cycle
                    names = ", ".join(c.stage for c in pending)
                    raise RuntimeError(f"stages that wait for each other: {names}")
                continue
            ready = wait(list(running) + [r[1].sentinel for r in running.values()])
            for key in [k for k, r in running.items() if k in ready or r[1].sentinel in ready]:
                call, proc, receive, started, t0 = running.pop(key)
                outcome = None
                try:
                    if receive.poll():
                        outcome = receive.recv()
                except (EOFError, OSError):
                    outcome = None
                proc.join()
                receive.close()
                if outcome is None:
                    why = f"the stage's process ended without a result (exit code {proc.exitcode})"
                    log.warning("%s %s: %s", exposure.name, call.stage, why)
                    outcome = _failed(exposure, call, why, started, time.perf_counter() - t0,
                                      TRANSIENT)  # fmt: skip
                if outcome.status == "failed":
                    failed[call.stage] = outcome.failure_class or PERMANENT
                done.add(call.stage)
                yield outcome
    finally:
        for _call, proc, receive, *_ in running.values():
            proc.terminate()
            proc.join()
            receive.close()


def _stage_process(send: Any, call: StageCall, exposure: ExposureInfo) -> None:
    """A stage process of `_run_side_by_side`: the frame opened anew (its own file handle),
    the stage run, its outcome sent back."""
    die_with_parent()
    preload(stage_imports([call.stage]))  # before its quadrant workers fork
    try:
        frame = Le1Frame(exposure.path)
    except Exception as exc:
        cls, reason = describe_failure(exc)
        outcome = _failed(exposure, call, f"cannot open frame: {reason}", datetime.now(UTC),
                          0.0, cls)  # fmt: skip
    else:
        with frame:
            outcome = _run_call(call, frame, exposure, {})
    send.send(outcome)
    send.close()


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


def _failed(
    exposure: ExposureInfo, call: StageCall, error: str, started: datetime, dt: float, cls: str
) -> StageOutcome:
    return StageOutcome(
        exposure.exposure_id, exposure.name, call, "failed", short_reason(error), started, dt,
        failure_class=cls,
    )  # fmt: skip


def record(
    store: Store,
    outcome: StageOutcome,
    settings: Any = None,
    *,
    raw_checksum: str | None = None,
    claim: tuple[str, str] | None = None,
) -> None:
    """Write what one stage did (a history row with its full provenance, the current run,
    metrics, quality outcomes, products) in one transaction."""
    call = outcome.call
    run = StageRun(
        exposure_id=outcome.exposure_id,
        stage=call.stage,
        stage_version=call.version,
        config_hash=call.config_hash,
        software_version=__version__,
        status=outcome.status,
        error=outcome.error,
        started_at=outcome.started_at,
        duration_s=outcome.duration_s,
        config=call.provenance,
        calibrations=call.calibrations or None,
        raw_checksum=raw_checksum,
        host=host_name(),
        pid=os.getpid(),
        failure_class=outcome.failure_class if outcome.status == "failed" else None,
    )
    done = outcome.status in DONE_STATUSES
    backoff = settings.run.retry_wait_s if settings is not None else None
    store.record_stage_run(
        run,
        outcome.metrics if done else (),
        [(o.code, o.unit, o.message) for o in outcome.outcomes] if done else (),
        outcome.products,
        retry_backoff=backoff,
        claim=claim,
    )


def record_outcome(
    store: Store,
    outcome: StageOutcome,
    exposure: ExposureInfo,
    settings: Any,
    *,
    raw_checksum: str | None = None,
    claim: tuple[str, str] | None = None,
) -> None:
    """Record one outcome; a record the store refuses (e.g. a metric another stage owns)
    makes the stage failed instead. A failed stage leaves none of its files behind, nor does
    one whose record could not be written (the database gone: a later run measures it)."""
    try:
        record(store, outcome, settings, raw_checksum=raw_checksum, claim=claim)
    except LeaseLost:
        raise
    except Exception as exc:
        if failure_class(exc) != PERMANENT:
            remove_products(get_stage(outcome.call.stage), exposure)
            raise  # nothing can be recorded; the lease runs out, a later run re-measures
        outcome.status = "failed"
        outcome.error = short_reason(f"could not record results: {exc}")
        outcome.failure_class = PERMANENT
        outcome.metrics, outcome.outcomes, outcome.products = [], [], []
        record(store, outcome, settings, raw_checksum=raw_checksum, claim=claim)
    if outcome.status not in DONE_STATUSES:
        # whatever failed (the frame, a needed stage, the header, the stage, the record): no
        # file of an older or half run stays behind
        remove_products(get_stage(outcome.call.stage), exposure)
