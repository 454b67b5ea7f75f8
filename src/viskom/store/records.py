"""Plain, immutable records exchanged with the store, and value cleaning helpers.

The rest of viskom only sees these dataclasses; ORM rows never leave :mod:`viskom.store`.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

FRAME_TYPES: frozenset[str] = frozenset({"SCIENCE", "DARK", "BIAS", "FLAT", "CHARGE", "UNKNOWN"})
EXPOSURE_STATES: frozenset[str] = frozenset({"registered", "invalid"})
#: ok: measured; empty: ran and measured nothing, the reason kept as quality outcomes (done,
#: like ok, for planning); failed: an error, retried on request.
RUN_STATUSES: frozenset[str] = frozenset({"ok", "empty", "failed"})
#: Failure classes: transient (a service, the network, a full disk: later runs retry with
#: backoff) or permanent (a bad file or header: not retried until the input or stage changes).
FAILURE_CLASSES: frozenset[str] = frozenset({"transient", "permanent"})
#: Statuses after which a stage counts as done: not re-run, and its dependants may run.
DONE_STATUSES: frozenset[str] = frozenset({"ok", "empty"})


@dataclass(frozen=True)
class ExposureRecord:
    """What ingest knows about one exposure file; input of :meth:`Store.register_exposure`."""

    name: str
    path: str
    state: str
    size_bytes: int | None = None
    checksum: str | None = None
    frame_type: str | None = None
    reason: str | None = None
    date_obs: datetime | None = None
    mjd_obs: float | None = None
    exptime: float | None = None
    ra: float | None = None
    dec: float | None = None
    pa: float | None = None
    obs_id: str | None = None
    dither: int | None = None
    exposure_index: int | None = None
    img_cat: str | None = None
    img_t1: str | None = None
    img_t2: str | None = None
    obs_mode: str | None = None
    n_quadrants: int | None = None
    header: dict[str, Any] | None = None
    #: Unusable header values found at registration: dicts with keyword, extname, value,
    #: reason (see viskom.le1.header.HeaderProblem); None when there are none.
    header_warnings: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Exposure:
    """A stored exposure: its database id, every :class:`ExposureRecord` field and timestamps."""

    id: int
    name: str
    path: str
    state: str
    size_bytes: int | None = None
    checksum: str | None = None
    frame_type: str | None = None
    reason: str | None = None
    date_obs: datetime | None = None
    mjd_obs: float | None = None
    exptime: float | None = None
    ra: float | None = None
    dec: float | None = None
    pa: float | None = None
    obs_id: str | None = None
    dither: int | None = None
    exposure_index: int | None = None
    img_cat: str | None = None
    img_t1: str | None = None
    img_t2: str | None = None
    obs_mode: str | None = None
    n_quadrants: int | None = None
    header: dict[str, Any] | None = None
    header_warnings: list[dict[str, Any]] | None = None
    ingested_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class StageRun:
    """The outcome of one processing stage on one exposure (one current row per pair)."""

    exposure_id: int
    stage: str
    stage_version: str
    config_hash: str
    software_version: str
    status: str
    error: str | None = None
    started_at: datetime | None = None
    duration_s: float | None = None
    #: The stage's own configuration, the upstream stages' (version, hash) and the
    #: calibrations' identities it ran with (what `config_hash` is the hash of).
    config: dict[str, Any] | None = None
    calibrations: dict[str, Any] | None = None
    raw_checksum: str | None = None  # SHA-256 of the raw file it measured
    host: str | None = None
    pid: int | None = None
    #: failed runs: 'transient' (retried by later runs, with backoff) or 'permanent'
    failure_class: str | None = None
    finished_at: datetime | None = None
    attempts: int | None = None  # consecutive failed runs (set by the store)
    retry_after: datetime | None = None  # transient failures: not retried before this


@dataclass(frozen=True)
class OutcomeRecord:
    """A stored quality outcome: exposure name, stage, code, unit, message, when recorded."""

    exposure: str
    stage: str
    code: str
    unit: str
    message: str
    recorded_at: datetime | None = None


@dataclass(frozen=True)
class ProductRecord:
    """A recorded product file: exposure name (None for a period product), period, stage,
    kind, path relative to the data root, size in bytes, SHA-256, when written."""

    exposure: str | None
    period: str | None
    stage: str
    kind: str
    path: str
    size_bytes: int
    sha256: str
    written_at: datetime | None = None


@dataclass(frozen=True)
class MetricValue:
    """One measured value: exposure name, unit ('FPA', 'R-C' or 'R-C.Q'), metric name, value."""

    exposure: str
    unit: str
    metric: str
    value: float | None


# Fields of ExposureRecord, in declaration order (shared with Exposure).
RECORD_FIELDS: tuple[str, ...] = tuple(ExposureRecord.__dataclass_fields__)
_INT_FIELDS = frozenset({"size_bytes", "dither", "exposure_index", "n_quadrants"})
_FLOAT_FIELDS = frozenset({"mjd_obs", "exptime", "ra", "dec", "pa"})
_STR_FIELDS = frozenset(
    {"name", "path", "state", "checksum", "frame_type", "reason", "obs_id"}
    | {"img_cat", "img_t1", "img_t2", "obs_mode"}
)


def clean_float(value: Any) -> float | None:
    """Return ``value`` as a Python float, or None for None/NaN/±inf (numpy scalars accepted)."""
    if value is None:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def clean_int(value: Any) -> int | None:
    """Return ``value`` as a Python int (numpy integers accepted), keeping None."""
    return None if value is None else operator.index(value)


def as_utc(value: datetime) -> datetime:
    """Return an aware UTC datetime; naive input is taken to be UTC already (FITS convention)."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def clean_json(value: Any) -> Any:
    """Make a header summary JSON-safe on every backend: numpy -> Python, NaN/inf -> None."""
    if value is None:
        return None
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return clean_float(value)
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [clean_json(v) for v in value]
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    item = getattr(value, "item", None)  # numpy scalars and 0-d arrays
    if callable(item) and getattr(value, "ndim", 0) == 0:
        return clean_json(item())
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return clean_float(value)
    tolist = getattr(value, "tolist", None)  # numpy arrays
    if callable(tolist):
        return clean_json(tolist())
    return str(value)


def clean_record(record: ExposureRecord) -> dict[str, Any]:
    """Validate an :class:`ExposureRecord` and return its column values, normalised for storage."""
    if not isinstance(record, ExposureRecord):
        raise TypeError(f"expected an ExposureRecord, got {type(record).__name__}")
    if not record.name:
        raise ValueError("exposure name must not be empty")
    if record.state not in EXPOSURE_STATES:
        raise ValueError(f"state must be one of {sorted(EXPOSURE_STATES)}, got {record.state!r}")
    if record.frame_type is not None and record.frame_type not in FRAME_TYPES:
        raise ValueError(
            f"frame_type must be None or one of {sorted(FRAME_TYPES)}, got {record.frame_type!r}"
        )
    values: dict[str, Any] = {}
    for field in RECORD_FIELDS:
        value = getattr(record, field)
        if field in _INT_FIELDS:
            value = clean_int(value)
        elif field in _FLOAT_FIELDS:
            value = clean_float(value)
        elif field in _STR_FIELDS:
            value = None if value is None else str(value)
        elif field == "date_obs":
            value = None if value is None else as_utc(value)
        elif field == "header":
            value = None if value is None else clean_json(value)
        elif field == "header_warnings":
            value = clean_json(list(value)) if value else None
        values[field] = value
    return values


def validate_run(run: StageRun) -> None:
    """Raise ValueError if ``run`` cannot be stored (unknown status, empty stage)."""
    if not isinstance(run, StageRun):
        raise TypeError(f"expected a StageRun, got {type(run).__name__}")
    if not run.stage:
        raise ValueError("stage name must not be empty")
    if run.status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {sorted(RUN_STATUSES)}, got {run.status!r}")
    if run.failure_class is not None and run.failure_class not in FAILURE_CLASSES:
        raise ValueError(
            f"failure_class must be None or one of {sorted(FAILURE_CLASSES)}, "
            f"got {run.failure_class!r}"
        )


@dataclass(frozen=True)
class Claim:
    """A held claim as `viskom status` shows it."""

    key: str
    stage: str
    exposure_id: int | None
    owner: str
    host: str | None
    pid: int | None
    claimed_at: datetime | None
    heartbeat_at: datetime | None
    expires_at: datetime | None

    def expired(self, now: datetime) -> bool:
        """Whether the lease has run out (its holder stopped beating)."""
        return self.expires_at is None or as_utc(self.expires_at) <= as_utc(now)


@dataclass(frozen=True)
class FetchedFile:
    """A stored fetch record (see `fetched_files`)."""

    name: str
    archive: str
    url: str
    state: str
    path: str | None
    size_bytes: int | None
    sha256: str | None
    fetched_at: datetime | None
    attempts: int
    error: str | None
    tried_at: datetime


def json_clean(value: Any) -> Any:
    """NaN and infinities become null, at any depth (strict JSON, readable by any reader)."""
    if isinstance(value, Mapping):
        return {k: json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
