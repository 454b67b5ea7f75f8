"""Read-only reports of the store: status per day and type, failed runs, header warnings,
quality outcomes and the products table (a mixin of :class:`Store`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Date, cast, func, select

from .models import ExposureRow, ProductRow, QualityOutcomeRow, StageRunHistoryRow, StageRunRow
from .records import Exposure, OutcomeRecord, ProductRecord, StageRun, as_utc
from .rows import as_list as _as_list
from .rows import to_exposure as _to_exposure
from .rows import to_run as _to_run


class ReportQueries:
    """Queries behind `viskom status`, `viskom products` and the dashboard."""

    _dialect: str
    _reader: Any
    _exposure_order: Any
    _text_order: Any
    _time_window: Any

    # -- reports ---------------------------------------------------------------------------

    def status_summary(self) -> list[dict[str, Any]]:
        """Exposure counts per UTC day of date_obs, frame_type and state (for ``viskom status``).

        Rows are ``{"date": date | None, "frame_type", "state", "count"}`` sorted by date
        (undated last), frame type and state.
        """
        column = ExposureRow.date_obs
        day: ColumnElement[Any]
        if self._dialect == "sqlite":
            day = func.date(column, type_=Date)  # stored as naive UTC text
        elif self._dialect == "postgresql":
            day = cast(func.timezone("UTC", column), Date)
        else:
            day = cast(column, Date)
        stmt = select(day, ExposureRow.frame_type, ExposureRow.state, func.count()).group_by(
            day, ExposureRow.frame_type, ExposureRow.state
        )
        with self._reader() as session, session.begin():
            raw = session.execute(stmt).all()
        counts: dict[tuple[date | None, str | None, str], int] = defaultdict(int)
        for day_value, frame_type, state, count in raw:
            if isinstance(day_value, str):
                day_value = date.fromisoformat(day_value)
            elif isinstance(day_value, datetime):
                day_value = day_value.date()
            counts[(day_value, frame_type, state)] += int(count)
        keys = sorted(counts, key=lambda k: (k[0] is None, k[0] or date.min, k[1] or "", k[2]))
        return [
            {"date": d, "frame_type": ft, "state": st, "count": counts[(d, ft, st)]}
            for d, ft, st in keys
        ]

    def failed_stage_runs(self) -> list[tuple[str, StageRun]]:
        """(exposure name, run) for every current run with status 'failed', oldest first."""
        stmt = (
            select(ExposureRow.name, StageRunRow)
            .join(ExposureRow, ExposureRow.id == StageRunRow.exposure_id)
            .where(StageRunRow.status == "failed")
            .order_by(*self._exposure_order(), self._text_order(StageRunRow.stage))
        )
        with self._reader() as session, session.begin():
            return [(name, _to_run(row)) for name, row in session.execute(stmt)]

    def stage_run_history(self, exposure_id: int, stage: str | None = None) -> list[StageRun]:
        """Every recorded run of an exposure's stages (or of one stage), oldest first."""
        stmt = select(StageRunHistoryRow).where(StageRunHistoryRow.exposure_id == exposure_id)
        if stage is not None:
            stmt = stmt.where(StageRunHistoryRow.stage == stage)
        stmt = stmt.order_by(StageRunHistoryRow.id)
        with self._reader() as session, session.begin():
            return [_to_run(row) for row in session.scalars(stmt)]

    def months_measured_since(self, since: datetime | None) -> set[str]:
        """'YYYY-MM' (UTC) of the exposures with a stage run that finished after `since`
        (all measured exposures when None): the months whose period products are stale."""
        stmt = (
            select(ExposureRow.date_obs)
            .join(StageRunRow, StageRunRow.exposure_id == ExposureRow.id)
            .where(ExposureRow.date_obs.is_not(None))
            .distinct()
        )
        if since is not None:
            stmt = stmt.where(StageRunRow.finished_at > since)
        with self._reader() as session, session.begin():
            return {as_utc(d).strftime("%Y-%m") for d in session.scalars(stmt)}

    def measured_between(
        self, start: datetime, end: datetime
    ) -> list[tuple[str, str, datetime, str]]:
        """(exposure, stage, finished_at, 'YYYY-MM') of the stage runs of dated exposures that
        finished in (start, end]: the records near a period build's start, which it may or
        may not have seen."""
        stmt = (
            select(ExposureRow.name, StageRunRow.stage, StageRunRow.finished_at,
                   ExposureRow.date_obs)
            .join(StageRunRow, StageRunRow.exposure_id == ExposureRow.id)
            .where(ExposureRow.date_obs.is_not(None))
            .where(StageRunRow.finished_at > start, StageRunRow.finished_at <= end)
        )  # fmt: skip
        with self._reader() as session, session.begin():
            return [
                (name, stage, as_utc(done), as_utc(when).strftime("%Y-%m"))
                for name, stage, done, when in session.execute(stmt)
            ]

    def exposures_with_header_warnings(self) -> list[Exposure]:
        """Exposures whose registration found unusable header values, by date_obs, name."""
        stmt = (
            select(ExposureRow)
            .where(ExposureRow.header_warnings.is_not(None))
            .order_by(*self._exposure_order())
        )
        with self._reader() as session, session.begin():
            return [_to_exposure(row) for row in session.scalars(stmt)]

    # -- quality outcomes ------------------------------------------------------------------

    def quality_outcomes(
        self,
        *,
        exposures: Sequence[str] | None = None,
        stages: Sequence[str] | None = None,
        codes: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[OutcomeRecord]:
        """Current quality outcomes matching all given filters (None = any), ordered by
        date_obs, exposure, stage, unit and code; ``since <= date_obs < until``."""
        stmt = select(
            ExposureRow.name,
            QualityOutcomeRow.stage,
            QualityOutcomeRow.code,
            QualityOutcomeRow.unit,
            QualityOutcomeRow.message,
            QualityOutcomeRow.recorded_at,
        ).join(ExposureRow, ExposureRow.id == QualityOutcomeRow.exposure_id)
        if exposures is not None:
            stmt = stmt.where(ExposureRow.name.in_(_as_list(exposures)))
        if stages is not None:
            stmt = stmt.where(QualityOutcomeRow.stage.in_(_as_list(stages)))
        if codes is not None:
            stmt = stmt.where(QualityOutcomeRow.code.in_(_as_list(codes)))
        stmt = self._time_window(stmt, since, until).order_by(
            *self._exposure_order(),
            self._text_order(QualityOutcomeRow.stage),
            self._text_order(QualityOutcomeRow.unit),
            self._text_order(QualityOutcomeRow.code),
            QualityOutcomeRow.id,
        )
        with self._reader() as session, session.begin():
            return [OutcomeRecord(*row) for row in session.execute(stmt)]

    def quality_outcome_counts(self) -> list[tuple[str, str, int]]:
        """(stage, code, number of exposures with it) for every current outcome code."""
        stmt = (
            select(
                QualityOutcomeRow.stage,
                QualityOutcomeRow.code,
                func.count(func.distinct(QualityOutcomeRow.exposure_id)),
            )
            .group_by(QualityOutcomeRow.stage, QualityOutcomeRow.code)
            .order_by(
                self._text_order(QualityOutcomeRow.stage), self._text_order(QualityOutcomeRow.code)
            )
        )
        with self._reader() as session, session.begin():
            return [(stage, code, int(n)) for stage, code, n in session.execute(stmt)]

    # -- products --------------------------------------------------------------------------

    def products(
        self,
        *,
        exposures: Sequence[str] | None = None,
        stages: Sequence[str] | None = None,
        kinds: Sequence[str] | None = None,
        periods: Sequence[str] | None = None,
    ) -> list[ProductRecord]:
        """Recorded product files matching all given filters (None = any): those of
        exposures by date_obs and name, then period products by period; stage, kind, path."""
        stmt = select(
            ExposureRow.name,
            ProductRow.period,
            ProductRow.stage,
            ProductRow.kind,
            ProductRow.path,
            ProductRow.size_bytes,
            ProductRow.sha256,
            ProductRow.written_at,
        ).outerjoin(ExposureRow, ExposureRow.id == ProductRow.exposure_id)
        if exposures is not None:
            stmt = stmt.where(ExposureRow.name.in_(_as_list(exposures)))
        if stages is not None:
            stmt = stmt.where(ProductRow.stage.in_(_as_list(stages)))
        if kinds is not None:
            stmt = stmt.where(ProductRow.kind.in_(_as_list(kinds)))
        if periods is not None:
            stmt = stmt.where(ProductRow.period.in_(_as_list(periods)))
        stmt = stmt.order_by(
            ProductRow.exposure_id.is_(None),
            *self._exposure_order(),
            self._text_order(func.coalesce(ProductRow.period, "")),
            self._text_order(ProductRow.stage),
            self._text_order(ProductRow.path),
        )
        with self._reader() as session, session.begin():
            return [ProductRecord(*row) for row in session.execute(stmt)]
