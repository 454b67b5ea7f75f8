"""ORM rows to the record dataclasses the rest of viskom sees, and small query helpers."""

from __future__ import annotations

from collections.abc import Sequence

from .models import ExposureRow, StageRunHistoryRow, StageRunRow
from .records import RECORD_FIELDS, Exposure, StageRun


def as_list(values: Sequence[str] | str) -> list[str]:
    """Accept a single string where a sequence of strings is expected."""
    return [values] if isinstance(values, str) else [str(v) for v in values]


def to_exposure(row: ExposureRow) -> Exposure:
    return Exposure(
        id=row.id,
        **{field: getattr(row, field) for field in RECORD_FIELDS},
        ingested_at=row.ingested_at,
        updated_at=row.updated_at,
    )


def to_run(row: StageRunRow | StageRunHistoryRow) -> StageRun:
    return StageRun(
        exposure_id=row.exposure_id,
        stage=row.stage,
        stage_version=row.stage_version,
        config_hash=row.config_hash,
        software_version=row.software_version,
        status=row.status,
        error=row.error,
        started_at=row.started_at,
        duration_s=row.duration_s,
        config=row.config,
        calibrations=row.calibrations,
        raw_checksum=row.raw_checksum,
        host=row.host,
        pid=getattr(row, "pid", None),
        failure_class=row.failure_class,
        finished_at=row.finished_at,
        attempts=getattr(row, "attempts", None),
        retry_after=getattr(row, "retry_after", None),
    )
