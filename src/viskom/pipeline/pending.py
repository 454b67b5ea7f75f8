"""What is pending: which stages of which exposures must run (again), and why.

The rules the runner plans by (`runner.plan`) and `viskom status` counts by, over plain
values: the stored runs (`store.StageRun`, or any object with its fields), and per stage its
current call (`work.StageCall`, or any object with version, config_hash, config, upstream
and calibrations) and its place in the pipeline (`Stage`, or a `StagePlan`). Nothing here
imports a stage, the settings model or the database layer, so the status reader can decide
without them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from viskom.store.records import DONE_STATUSES


@dataclass(frozen=True)
class StagePlan:
    """What planning needs of a stage: its name, the frame types it measures, the stages
    it reads (its provenance) and those that must be done first."""

    name: str
    frame_types: frozenset[str]
    upstream: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()

    @classmethod
    def of(cls, stage: Any) -> StagePlan:
        """The plan of a registered stage."""
        return cls(stage.name, frozenset(stage.frame_types), stage.upstream, stage.needs)

    def applies_to(self, frame_type: str | None) -> bool:
        return (frame_type or "UNKNOWN").upper() in self.frame_types


def pending_work(
    registered: Sequence[Any],
    runs: Mapping[tuple[int, str], Any],
    stages: Sequence[Any],
    calls: Mapping[str, Any],
    now: datetime,
    *,
    force: bool = False,
    retry_failed: bool = False,
    retry_wait: Callable[[int], float] | None = None,
    only: Sequence[str] | None = None,
) -> tuple[list[tuple[Any, list[str]]], int, int]:
    """Per exposure of `registered` (objects with id and frame_type) the names of its stages
    to run, in pipeline order (exposures with none left out); how many (exposure, stage)
    pairs are up to date; how many are blocked because a stage they need is not done.
    `stages` in pipeline order, upstream first; `only` limits the work to those names."""
    planned: list[tuple[Any, list[str]]] = []
    skipped = blocked = 0
    for exp in registered:
        names: list[str] = []
        for stage in stages:
            if not stage.applies_to(exp.frame_type) or (
                only is not None and stage.name not in only
            ):
                continue
            reason = pending_reason(
                runs.get((exp.id, stage.name)), calls[stage.name], now,
                force=force, retry_failed=retry_failed, retry_wait=retry_wait,
            )  # fmt: skip
            if reason is None and any(up in names for up in stage.upstream):
                # a stage it reads runs again (a retried failure, a new calibration): its
                # products are rewritten, so this reader must read them again too
                reason = "a stage it reads runs again"
            if reason is None:
                skipped += 1
                continue
            ready = all(
                name in names
                or (
                    runs.get((exp.id, name)) is not None
                    and runs[(exp.id, name)].status in DONE_STATUSES
                )
                for name in stage.needs
            )
            if ready:
                names.append(stage.name)
            else:
                blocked += 1
        if names:
            planned.append((exp, names))
    return planned, skipped, blocked


def measured_ids(pending: set[int], runs: Mapping[tuple[int, str], Any]) -> set[int]:
    """Ids of exposures that every applicable stage has measured: none of their stages
    `pending` (exposure ids with work left, from `pending_work`) and none failed in `runs`."""
    measured: dict[int, bool] = {}
    for (exposure_id, _stage), run in runs.items():
        measured[exposure_id] = measured.get(exposure_id, True) and run.status in DONE_STATUSES
    return {e for e, done in measured.items() if done and e not in pending}


def pending_reason(
    run: Any,
    call: Any,
    now: datetime,
    *,
    force: bool = False,
    retry_failed: bool = False,
    retry_wait: Callable[[int], float] | None = None,
) -> str | None:
    """Why the stage must run (again) on this exposure, or None when its result stands;
    `retry_wait(attempts)`: the backoff of transient failures (the settings' `[run]`)."""
    if force:
        return "forced (--force)"
    if run is None:
        return "never ran"
    if run.stage_version != call.version:
        return f"stage version {run.stage_version} -> {call.version}"
    if run.config_hash != call.config_hash:
        return "what it depends on changed: " + describe_change(run, call)
    if run.status in DONE_STATUSES:
        return None
    if retry_failed:
        return "failed before; --retry-failed"
    if run.failure_class == "transient" and (retry_due(run, retry_wait) or now) <= now:
        return f"retry after a transient failure (attempt {(run.attempts or 1) + 1})"
    return None


def retry_due(run: Any, retry_wait: Callable[[int], float] | None) -> datetime | None:
    """When a transient failure may be tried again: its end plus the backoff the current
    settings give for its number of attempts (else the time stored with it)."""
    if retry_wait is not None and run.finished_at is not None:
        return run.finished_at + timedelta(seconds=float(retry_wait(run.attempts or 1)))
    return run.retry_after


def describe_change(run: Any, call: Any, limit: int = 4) -> str:
    """What differs between the settings a stored run used and the current ones."""
    if not run.config:
        return f"configuration {run.config_hash[:8]} -> {call.config_hash[:8]}"
    changes: list[str] = []
    old_cfg = run.config.get("config", {}) or {}
    for key in sorted(set(old_cfg) | set(call.config)):
        old, new = old_cfg.get(key, "unset"), call.config.get(key, "unset")
        if old != new:
            changes.append(f"[{call.stage}] {key} {_short(old)} -> {_short(new)}")
    old_up = {k: tuple(v) for k, v in (run.config.get("upstream") or {}).items()}
    for name in sorted(set(old_up) | set(call.upstream)):
        if old_up.get(name) != call.upstream.get(name):
            changes.append(f"stage {name} it reads changed")
    old_cal = run.calibrations or {}
    for name in sorted(set(old_cal) | set(call.calibrations)):
        if old_cal.get(name) != call.calibrations.get(name):
            changes.append(f"calibration {name} changed")
    if not changes:
        return f"configuration {run.config_hash[:8]} -> {call.config_hash[:8]}"
    more = f" (+{len(changes) - limit} more)" if len(changes) > limit else ""
    return "; ".join(changes[:limit]) + more


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "\u2026"
