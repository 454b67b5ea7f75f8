"""SQLAlchemy ORM models of the viskom database.

The schema itself is created by the Alembic migrations in ``migrations/``; these models must
stay in sync with them (a test compares both).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from .records import as_utc

#: Deterministic constraint names, so later migrations can refer to them on every backend.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always hands out aware UTC datetimes.

    SQLite has no time zone support: values are stored as naive UTC and UTC is re-attached
    when reading. Naive input is taken to be UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC (naive UTC on SQLite, whose text storage would drop the offset)."""
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        return None if value is None else as_utc(value)


def json_type() -> TypeEngine[Any]:
    """Portable JSON column type: JSONB on PostgreSQL, JSON elsewhere; None is SQL NULL."""
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class Base(DeclarativeBase):
    """Declarative base of all viskom tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ExposureRow(Base):
    """One VIS exposure file known to viskom (registered or invalid)."""

    __tablename__ = "exposures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(64))
    frame_type: Mapped[str | None] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    date_obs: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    mjd_obs: Mapped[float | None] = mapped_column(Float)
    exptime: Mapped[float | None] = mapped_column(Float)
    ra: Mapped[float | None] = mapped_column(Float)
    dec: Mapped[float | None] = mapped_column(Float)
    pa: Mapped[float | None] = mapped_column(Float)
    obs_id: Mapped[str | None] = mapped_column(String(32))
    dither: Mapped[int | None] = mapped_column(Integer)
    exposure_index: Mapped[int | None] = mapped_column(Integer)
    img_cat: Mapped[str | None] = mapped_column(String(64))
    img_t1: Mapped[str | None] = mapped_column(String(64))
    img_t2: Mapped[str | None] = mapped_column(String(64))
    obs_mode: Mapped[str | None] = mapped_column(String(64))
    n_quadrants: Mapped[int | None] = mapped_column(Integer)
    header: Mapped[dict[str, Any] | None] = mapped_column(json_type())
    header_warnings: Mapped[list[dict[str, Any]] | None] = mapped_column(json_type())
    ingested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class _StageRunColumns:
    """The columns a stage run has, current or in the history."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    exposure_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("exposures.id", ondelete="CASCADE")
    )
    stage: Mapped[str] = mapped_column(String(64))
    stage_version: Mapped[str] = mapped_column(String(32))
    config_hash: Mapped[str] = mapped_column(String(64))
    software_version: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)
    config: Mapped[dict[str, Any] | None] = mapped_column(json_type())
    calibrations: Mapped[dict[str, Any] | None] = mapped_column(json_type())
    raw_checksum: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255))
    failure_class: Mapped[str | None] = mapped_column(String(16))
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class StageRunRow(_StageRunColumns, Base):
    """The current run of one processing stage on one exposure, with its consecutive failed
    attempts and when a transient failure may be retried."""

    __tablename__ = "stage_runs"
    __table_args__ = (UniqueConstraint("exposure_id", "stage"),)

    attempts: Mapped[int | None] = mapped_column(Integer)
    retry_after: Mapped[datetime | None] = mapped_column(UTCDateTime)


class StageRunHistoryRow(_StageRunColumns, Base):
    """Every run of a stage on an exposure, with its full provenance; never overwritten."""

    __tablename__ = "stage_run_history"
    __table_args__ = (Index("ix_stage_run_history_exposure_stage", "exposure_id", "stage"),)

    pid: Mapped[int | None] = mapped_column(Integer)


class ClaimRow(Base):
    """A work unit ('exposure:ID:STAGE', 'period:2024-07', 'calibrations') and who holds it:
    `owner` (one task of one run) until `expires_at`, which its heartbeat moves on; NULL
    owner: free."""

    __tablename__ = "claims"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    exposure_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("exposures.id", ondelete="CASCADE")
    )
    stage: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MetricRow(Base):
    """One metric value of one exposure on one unit (FPA, CCD or quadrant)."""

    __tablename__ = "metrics"

    exposure_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("exposures.id", ondelete="CASCADE"), primary_key=True
    )
    unit: Mapped[str] = mapped_column(String(16), primary_key=True)
    metric: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    stage: Mapped[str] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float)


class QualityOutcomeRow(Base):
    """One quality outcome of the current run of a stage on an exposure (e.g. no stars)."""

    __tablename__ = "quality_outcomes"
    __table_args__ = (Index("ix_quality_outcomes_exposure_stage", "exposure_id", "stage"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    exposure_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("exposures.id", ondelete="CASCADE")
    )
    stage: Mapped[str] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(64), index=True)
    unit: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProductRow(Base):
    """One file in the product tree: a stage's product of an exposure, or a period product
    (a month's tables and plots: no exposure, `period` 'YYYY-MM')."""

    __tablename__ = "products"
    __table_args__ = (
        UniqueConstraint("path"),
        Index("ix_products_exposure_stage", "exposure_id", "stage"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    exposure_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("exposures.id", ondelete="CASCADE")
    )
    period: Mapped[str | None] = mapped_column(String(16), index=True)
    stage: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64), index=True)
    path: Mapped[str] = mapped_column(Text)  # relative to the data root, '/' separated
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    written_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FetchedFileRow(Base):
    """A raw frame the archive was asked for: where it came from, what came of it (fetched,
    failed, not_found), where it is now, its size and SHA-256 as served, the attempts."""

    __tablename__ = "fetched_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    archive: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)
    path: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    tried_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AlertRow(Base):
    """What is watched (`key`: kind, metric or outcome code, unit, frame type) and its alert:
    open or cleared, warning or alarm, the last breaching value and band, since when, how
    many breaches in a row, who acknowledged it and when people were told."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # band | outcome
    metric: Mapped[str] = mapped_column(String(64))  # metric name, or outcome code
    unit: Mapped[str] = mapped_column(String(16))
    frame_type: Mapped[str | None] = mapped_column(String(16))
    stage: Mapped[str | None] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(16))  # warning | alarm
    state: Mapped[str] = mapped_column(String(16), index=True)  # open | cleared
    value: Mapped[float | None] = mapped_column(Float)
    low: Mapped[float | None] = mapped_column(Float)
    high: Mapped[float | None] = mapped_column(Float)
    exposure_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("exposures.id", ondelete="SET NULL"), index=True
    )
    first_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_checked: Mapped[datetime | None] = mapped_column(UTCDateTime)
    breaches: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(255))
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    notified_via: Mapped[str | None] = mapped_column(String(64))
    notify_error: Mapped[str | None] = mapped_column(Text)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
