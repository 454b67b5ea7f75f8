"""The :class:`Store`: viskom's database access layer (SQLite or PostgreSQL).

Every public method runs in its own short transaction, so one ``Store`` may be shared by
threads. On SQLite, write transactions start with ``BEGIN IMMEDIATE`` so that concurrent
writers queue on the busy timeout instead of failing with "database is locked".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy import (
    ColumnElement,
    Select,
    delete,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from . import migrate
from .alerts import AlertQueries
from .claims import ClaimQueries
from .engine import WRITE_OPTION, can_write, check_revision, make_engine, shown_url
from .fetches import FetchQueries
from .models import (
    ExposureRow,
    MetricRow,
    ProductRow,
    QualityOutcomeRow,
    StageRunHistoryRow,
    StageRunRow,
)
from .records import (
    DONE_STATUSES,
    Exposure,
    ExposureRecord,
    MetricValue,
    StageRun,
    as_utc,
    clean_float,
    clean_json,
    clean_record,
    validate_run,
)
from .reports import ReportQueries
from .rows import as_list as _as_list
from .rows import to_exposure as _to_exposure
from .rows import to_run as _to_run

log = logging.getLogger(__name__)

#: Key of the PostgreSQL advisory lock serialising concurrent migrations.
_PG_MIGRATION_LOCK = 0x76_69_73_6B_6F_6D  # "viskom"
#: Largest number of ids bound in one IN (...) list.
_CHUNK = 500
_S = TypeVar("_S", bound=Select[Any])


_MEASURE_KEYS = ("checksum", "frame_type", "exptime", "date_obs")


def _differs(old: Any, new: Any) -> bool:
    """A real change (datetimes compared in UTC: SQLite returns them naive)."""
    if isinstance(old, datetime) and isinstance(new, datetime):
        return as_utc(old) != as_utc(new)
    return old != new


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _bounded(value: Any, length: int, what: str) -> str:
    """`value` as a non-empty string of at most `length` characters, else ValueError."""
    text = str(value)
    if not text or len(text) > length:
        raise ValueError(f"{what} {text!r} must have 1-{length} characters")
    return text


def _product_row(
    product: Any, stage: str, now: datetime, *, exposure_id: int | None = None,
    period: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    path = str(product.path)
    if path.startswith("/") or ".." in Path(path).parts:
        raise ValueError(f"product path {path!r} must be relative to the data root")
    return {
        "exposure_id": exposure_id,
        "period": period,
        "stage": _bounded(stage, 64, "stage"),
        "kind": _bounded(product.kind, 64, "product kind"),
        "path": path,
        "size_bytes": int(product.size_bytes),
        "sha256": _bounded(product.sha256, 64, "sha256"),
        "written_at": now,
    }


class Store(ReportQueries, ClaimQueries, FetchQueries, AlertQueries):
    """Database of exposures, stage runs and metrics; migrates the schema when opened.

    ``database_url`` is a SQLAlchemy URL, e.g. ``sqlite:///viskom.db`` (the folder is created)
    or ``postgresql+psycopg://user@host/db``. Datetimes go in and come out as aware UTC.
    """

    def __init__(self, database_url: str, *, echo: bool = False, read_only: bool = False) -> None:
        """Connect to ``database_url`` and upgrade the schema to the newest revision; with
        `read_only`, only read (nothing is created or migrated: StoreError if the database
        is missing or older than this viskom)."""
        url = make_url(database_url)
        self._url = url
        self._dialect = url.get_backend_name()
        self._read_only = read_only
        self._engine = make_engine(url, echo=echo, read_only=read_only)
        self._write_engine = self._engine.execution_options(**{WRITE_OPTION: True})
        self._reader = sessionmaker(self._engine, expire_on_commit=False)
        self._writer = sessionmaker(self._write_engine, expire_on_commit=False)
        try:
            if read_only:
                check_revision(self._engine, url)
            else:
                self.upgrade()
        except BaseException:
            self._engine.dispose()
            raise

    @property
    def read_only(self) -> bool:
        """Opened to read only (`viskom status`)."""
        return self._read_only

    def writable(self) -> bool:
        """Whether this process could write to the store (a read-only folder, file or role
        cannot)."""
        return can_write(self._engine, self._url)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The underlying SQLAlchemy engine (for diagnostics and benchmarks)."""
        return self._engine

    @property
    def dialect(self) -> str:
        """Backend name: ``'sqlite'`` or ``'postgresql'``."""
        return self._dialect

    @property
    def url(self) -> str:
        """The database URL, password included (for workers to connect; never print it)."""
        return self._url.render_as_string(hide_password=False)

    def __repr__(self) -> str:
        return f"Store({shown_url(self._url)!r})"

    def close(self) -> None:
        """Close all pooled connections (the Store reconnects if used again)."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def upgrade(self) -> None:
        """Run ``alembic upgrade head`` in one transaction (a no-op when already current)."""
        with self._write_engine.begin() as connection:
            if self._dialect == "postgresql":
                # Two processes opening a fresh database must not both create the tables.
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
            migrate.upgrade(connection)

    # -- helpers ---------------------------------------------------------------------------

    def _text_order(self, column: ColumnElement[str]) -> ColumnElement[str]:
        """Byte-wise ordering of a text column on every backend (PostgreSQL follows locale)."""
        return column.collate("C") if self._dialect == "postgresql" else column

    def _exposure_order(self) -> tuple[ColumnElement[Any], ...]:
        """ORDER BY date_obs (missing dates last), then name."""
        return (
            ExposureRow.date_obs.is_(None),
            ExposureRow.date_obs,
            self._text_order(ExposureRow.name),
        )

    @staticmethod
    def _time_window(stmt: _S, since: datetime | None, until: datetime | None) -> _S:
        if since is not None:
            stmt = stmt.where(ExposureRow.date_obs >= as_utc(since))
        if until is not None:
            stmt = stmt.where(ExposureRow.date_obs < as_utc(until))
        return stmt

    # -- exposures -------------------------------------------------------------------------

    def register_exposure(self, record: ExposureRecord) -> tuple[Exposure, bool]:
        """Insert or update the exposure called ``record.name``; return it and whether it is new.

        Idempotent: registering an identical record changes nothing. ``updated_at`` moves only
        when the checksum or path changes. A changed checksum, frame type, exposure time or
        DATE-OBS invalidates the measurements: the exposure's stage runs and metrics are
        deleted for everything to be re-measured.
        """
        values = clean_record(record)
        for attempt in range(2):
            try:
                return self._register(values)
            except IntegrityError:
                # Another process inserted the same name between our SELECT and INSERT.
                if attempt:
                    raise
                log.debug("concurrent registration of %s, retrying", values["name"])
        raise AssertionError("unreachable")  # pragma: no cover

    def _register(self, values: dict[str, Any]) -> tuple[Exposure, bool]:
        with self._writer() as session, session.begin():
            stmt = select(ExposureRow).where(ExposureRow.name == values["name"])
            if self._dialect == "postgresql":
                stmt = stmt.with_for_update()
            row = session.scalar(stmt)
            now = _utcnow()
            if row is None:
                row = ExposureRow(**values, ingested_at=now, updated_at=now)
                session.add(row)
                session.flush()
                created = True
            else:
                created = False
                changed = {k: v for k, v in values.items() if getattr(row, k) != v}
                before = {k: getattr(row, k) for k in _MEASURE_KEYS}
                for key, value in changed.items():
                    setattr(row, key, value)
                if "checksum" in changed or "path" in changed:
                    row.updated_at = now
                # What the measurements depend on: the bytes, the frame type (which stages
                # apply and how), the exposure time and DATE-OBS (the product folder).
                invalidating = [
                    k for k in _MEASURE_KEYS if k in changed and _differs(before[k], changed[k])
                ]
                if invalidating:
                    log.info("%s: %s changed, forgetting its stage runs", row.name, invalidating)
                    session.execute(delete(MetricRow).where(MetricRow.exposure_id == row.id))
                    session.execute(
                        delete(QualityOutcomeRow).where(QualityOutcomeRow.exposure_id == row.id)
                    )
                    session.execute(delete(StageRunRow).where(StageRunRow.exposure_id == row.id))
        return _to_exposure(row), created

    def get_exposure(self, name: str) -> Exposure | None:
        """The exposure called ``name`` (file name without .fits/.fits.gz), or None."""
        with self._reader() as session, session.begin():
            row = session.scalar(select(ExposureRow).where(ExposureRow.name == name))
            return None if row is None else _to_exposure(row)

    def exposure_by_id(self, exposure_id: int) -> Exposure | None:
        """The exposure with database id `exposure_id`, or None."""
        with self._reader() as session, session.begin():
            row = session.get(ExposureRow, int(exposure_id))
            return None if row is None else _to_exposure(row)

    def list_exposures(
        self,
        *,
        frame_type: str | None = None,
        state: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Exposure]:
        """Exposures matching all given filters, ordered by date_obs then name.

        The time window is ``since <= date_obs < until``; exposures without date_obs are
        excluded when either bound is given.
        """
        stmt = select(ExposureRow)
        if frame_type is not None:
            stmt = stmt.where(ExposureRow.frame_type == frame_type)
        if state is not None:
            stmt = stmt.where(ExposureRow.state == state)
        stmt = self._time_window(stmt, since, until).order_by(*self._exposure_order())
        with self._reader() as session, session.begin():
            return [_to_exposure(row) for row in session.scalars(stmt)]

    # -- stage runs and metrics ------------------------------------------------------------

    def stage_runs(
        self, exposure_ids: Iterable[int] | None = None
    ) -> dict[tuple[int, str], StageRun]:
        """Current stage runs keyed by (exposure_id, stage); all of them, or of the given ids."""
        if exposure_ids is None:
            statements = [select(StageRunRow)]
        else:
            ids = sorted({int(i) for i in exposure_ids})
            statements = [
                select(StageRunRow).where(StageRunRow.exposure_id.in_(ids[i : i + _CHUNK]))
                for i in range(0, len(ids), _CHUNK)
            ]
        result: dict[tuple[int, str], StageRun] = {}
        with self._reader() as session, session.begin():
            for stmt in statements:
                for row in session.scalars(stmt):
                    result[(row.exposure_id, row.stage)] = _to_run(row)
        return result

    def record_stage_run(
        self,
        run: StageRun,
        metrics: Iterable[tuple[str, str, float | None]] = (),
        outcomes: Iterable[tuple[str, str, str]] = (),
        products: Iterable[Any] = (),
        *,
        retry_backoff: Callable[[int], float] | None = None,
        claim: tuple[str, str] | None = None,
    ) -> None:
        """Store a stage's run, its (unit, metric, value) rows, its quality outcomes
        (code, unit, message) and its product files (objects with kind, path, size_bytes,
        sha256) in one transaction.

        The (exposure_id, stage) run row is replaced; the exposure's metrics and outcomes from
        that stage are deleted and, if ``run.status`` is 'ok' or 'empty', ``metrics`` are
        bulk-inserted (NaN/inf become NULL); ``outcomes`` are inserted whatever the status.
        A (unit, metric) pair may appear only once per exposure across stages. The stage's
        product rows of the exposure are replaced by ``products`` whatever the status (a
        failed run removed its old files). Every call also adds a row to the run history. A
        failed run counts its consecutive `attempts`; a transient one may be retried
        `retry_backoff(attempts)` seconds after it finished (`retry_after`). With `claim`
        (key, owner), nothing is written unless that owner still holds the unit (LeaseLost).
        """
        validate_run(run)
        exposure_id = int(run.exposure_id)
        now = _utcnow()
        outcome_rows = [
            {
                "exposure_id": exposure_id,
                "stage": run.stage,
                "code": _bounded(code, 64, "outcome code"),
                "unit": _bounded(unit, 16, "outcome unit"),
                "message": str(message),
                "recorded_at": now,
            }
            for code, unit, message in outcomes
        ]
        product_rows = [_product_row(p, run.stage, now, exposure_id=exposure_id) for p in products]
        rows: list[dict[str, Any]] = []
        if run.status in DONE_STATUSES:
            seen: set[tuple[str, str]] = set()
            for unit, metric, value in metrics:
                key = (str(unit), str(metric))
                if key in seen:
                    raise ValueError(f"metric {key[1]!r} given twice for unit {key[0]!r}")
                seen.add(key)
                rows.append(
                    {
                        "exposure_id": exposure_id,
                        "unit": key[0],
                        "metric": key[1],
                        "stage": run.stage,
                        "value": clean_float(value),
                    }
                )
        run_values: dict[str, Any] = {
            "exposure_id": exposure_id,
            "stage": run.stage,
            "stage_version": run.stage_version,
            "config_hash": run.config_hash,
            "software_version": run.software_version,
            "status": run.status,
            "error": run.error,
            "started_at": now if run.started_at is None else as_utc(run.started_at),
            "duration_s": clean_float(run.duration_s),
            "config": clean_json(run.config),
            "calibrations": clean_json(run.calibrations),
            "raw_checksum": run.raw_checksum,
            "host": None if run.host is None else str(run.host)[:255],
            "failure_class": run.failure_class if run.status == "failed" else None,
            "finished_at": None if run.finished_at is None else as_utc(run.finished_at),
        }
        try:
            with self._writer() as session, session.begin():
                if claim is not None:
                    self.check_claim(session, *claim)
                if run_values["finished_at"] is None:  # stamped once the write lock is held
                    run_values["finished_at"] = _utcnow()
                if session.get(ExposureRow, exposure_id) is None:
                    raise LookupError(f"no exposure with id {exposure_id}")
                session.execute(
                    insert(StageRunHistoryRow.__table__).values(**run_values, pid=run.pid)
                )
                attempts = None
                if run.status == "failed":
                    before = session.scalar(
                        select(StageRunRow).where(
                            StageRunRow.exposure_id == exposure_id, StageRunRow.stage == run.stage
                        )
                    )
                    failed_before = before is not None and before.status == "failed"
                    earlier = (before.attempts or 1) if failed_before else 0
                    attempts = earlier + 1
                retry_after = None
                if run.failure_class == "transient" and attempts and retry_backoff is not None:
                    wait = float(retry_backoff(attempts))
                    retry_after = run_values["finished_at"] + timedelta(seconds=wait)
                run_values["attempts"] = attempts
                run_values["retry_after"] = retry_after
                self._upsert_run(session, run_values)
                session.execute(
                    delete(MetricRow).where(
                        MetricRow.exposure_id == exposure_id, MetricRow.stage == run.stage
                    )
                )
                if rows:
                    session.execute(insert(MetricRow.__table__), rows)
                session.execute(
                    delete(QualityOutcomeRow).where(
                        QualityOutcomeRow.exposure_id == exposure_id,
                        QualityOutcomeRow.stage == run.stage,
                    )
                )
                if outcome_rows:
                    session.execute(insert(QualityOutcomeRow.__table__), outcome_rows)
                self._replace_products(
                    session,
                    (ProductRow.exposure_id == exposure_id) & (ProductRow.stage == run.stage),
                    product_rows,
                )
        except IntegrityError as err:
            clashes = self._metric_clashes(exposure_id, run.stage, rows)
            if not clashes:
                raise
            raise ValueError(
                f"stage {run.stage!r} of exposure {exposure_id} reports metrics already owned "
                f"by another stage: {clashes[:5]} (unit, metric, owner stage)"
            ) from err

    def record_period_products(self, period: str, stage: str, products: Iterable[Any]) -> None:
        """Replace the product rows of one period product family ('2024-07', 'month:iq')."""
        now = _utcnow()
        rows = [_product_row(p, stage, now, period=period) for p in products]
        with self._writer() as session, session.begin():
            self._replace_products(
                session, (ProductRow.period == period) & (ProductRow.stage == stage), rows
            )

    @staticmethod
    def _replace_products(session: Session, which: Any, rows: list[dict[str, Any]]) -> None:
        """Delete the product rows `which` selects, and rows of the same paths, then insert."""
        session.execute(delete(ProductRow).where(which))
        if rows:
            paths = [r["path"] for r in rows]
            for i in range(0, len(paths), _CHUNK):
                session.execute(
                    delete(ProductRow).where(ProductRow.path.in_(paths[i : i + _CHUNK]))
                )
            session.execute(insert(ProductRow.__table__), rows)

    def _upsert_run(self, session: Session, values: dict[str, Any]) -> None:
        table = StageRunRow.__table__
        if self._dialect in ("sqlite", "postgresql"):
            make_insert = sqlite_insert if self._dialect == "sqlite" else pg_insert
            stmt = make_insert(table).values(**values)
            stmt = stmt.on_conflict_do_update(
                index_elements=["exposure_id", "stage"],
                set_={k: stmt.excluded[k] for k in values if k not in ("exposure_id", "stage")},
            )
            session.execute(stmt)
        else:  # portable fallback
            session.execute(
                delete(StageRunRow).where(
                    StageRunRow.exposure_id == values["exposure_id"],
                    StageRunRow.stage == values["stage"],
                )
            )
            session.execute(insert(table).values(**values))

    def _metric_clashes(
        self, exposure_id: int, stage: str, rows: list[dict[str, Any]]
    ) -> list[tuple[str, str, str]]:
        """(unit, metric, stage) of stored metrics of other stages that ``rows`` collide with."""
        wanted = {(r["unit"], r["metric"]) for r in rows}
        if not wanted:
            return []
        stmt = select(MetricRow.unit, MetricRow.metric, MetricRow.stage).where(
            MetricRow.exposure_id == exposure_id, MetricRow.stage != stage
        )
        with self._reader() as session, session.begin():
            return sorted((u, m, s) for u, m, s in session.execute(stmt) if (u, m) in wanted)

    def metrics(
        self,
        *,
        exposures: Sequence[str] | None = None,
        metrics: Sequence[str] | None = None,
        units: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[MetricValue]:
        """Metric values matching all given filters, ordered by date_obs, exposure, unit, metric.

        Filters: exposure names, metric names, units (None = any; an empty sequence matches
        nothing) and ``since <= date_obs < until``.
        """
        stmt = select(ExposureRow.name, MetricRow.unit, MetricRow.metric, MetricRow.value).join(
            ExposureRow, ExposureRow.id == MetricRow.exposure_id
        )
        if exposures is not None:
            stmt = stmt.where(ExposureRow.name.in_(_as_list(exposures)))
        if metrics is not None:
            stmt = stmt.where(MetricRow.metric.in_(_as_list(metrics)))
        if units is not None:
            stmt = stmt.where(MetricRow.unit.in_(_as_list(units)))
        stmt = self._time_window(stmt, since, until).order_by(
            *self._exposure_order(),
            self._text_order(MetricRow.unit),
            self._text_order(MetricRow.metric),
        )
        with self._reader() as session, session.begin():
            return [MetricValue(*row) for row in session.execute(stmt)]
