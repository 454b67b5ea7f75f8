"""The units of work the runner hands out, and what comes back from them.

A `StageCall` is one stage under one set of settings: its version, its own configuration,
the identities of its calibrations and the (version, hash) of the stages it reads; their
hash decides whether a stored result is still current. Only science settings are in it:
where caches live, `online`, timeouts, workers and the executor change nothing measured and
re-run nothing. A `Task` is what a worker gets: the settings, one exposure's id and the
names of its pending stages (paths come from the store and the settings on the worker).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from viskom.pipeline.resources import calibration_identity, external_config
from viskom.pipeline.stage_io import WrittenProduct
from viskom.stages import STAGES, ExposureInfo, QualityOutcome, Stage, config_hash
from viskom.store import Exposure


@dataclass(frozen=True)
class StageCall:
    """One stage to run, with its configuration, the identities of its calibrations, the
    (version, hash) of the stages it reads and its external inputs' client settings."""

    stage: str
    version: str
    config: dict[str, Any]
    config_hash: str
    calibrations: dict[str, Any] = field(default_factory=dict)
    external: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_root: str = ""  # calibration files are named relative to it (not provenance)
    upstream: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def provenance(self) -> dict[str, Any]:
        """What the stored run keeps as its configuration: its own, and its upstream's."""
        return {"config": self.config, "upstream": {k: list(v) for k, v in self.upstream.items()}}


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
    return StageCall(stage.name, stage.version, cfg, digest, calibrations, external, root, ups)


def stage_calls(settings: Any, stages: Sequence[Stage] = STAGES) -> dict[str, StageCall]:
    """Every stage's call under `settings`, upstream first (a new upstream re-runs a stage)."""
    calls: dict[str, StageCall] = {}
    for stage in stages:
        calls[stage.name] = stage_call(stage, settings, calls)
    return calls


@dataclass(frozen=True)
class Task:
    """All pending stages of one exposure, as a worker gets them (picklable): the settings,
    the exposure's id and name, the stage names, the owner token of its claims and the runs
    the planner saw (`seen`: a unit recorded since by another run is not done again)."""

    settings: Any
    exposure_id: int
    exposure_name: str
    stages: tuple[str, ...]
    token: str
    quadrant_workers: int = 1
    database_url: str | None = None  # the store the run uses (default: the settings')
    #: the names of all stages the run considers, upstream first (their calls make the
    #: provenance of these stages); default: the registered pipeline
    pipeline: tuple[str, ...] = ()
    #: per stage of `stages`, its current run as the planner saw it (`store.claims.run_mark`)
    seen: dict[str, str | None] = field(default_factory=dict)


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
    failure_class: str | None = None
    date_obs: str | None = None


@dataclass
class TaskReport:
    """What a worker did with a task: the outcome of each stage it ran (recorded already),
    and the stages it left because another run held or had done them."""

    outcomes: list[StageOutcome] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


def exposure_info(exp: Exposure, settings: Any, quadrant_workers: int = 1) -> ExposureInfo:
    """What a stage may know of a registered exposure under these settings."""
    return ExposureInfo(
        exposure_id=exp.id,
        name=exp.name,
        path=exp.path,
        frame_type=exp.frame_type or "UNKNOWN",
        exptime=exp.exptime,
        products_dir=str(settings.products_path),
        quadrant_workers=quadrant_workers,
        date_obs=exp.date_obs.isoformat() if exp.date_obs else None,
        data_root=str(settings.data_path),
    )
