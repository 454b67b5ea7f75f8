"""Alerts (a mixin of :class:`Store`): metrics out of their bands and quality outcomes, one
row per watched key, written by the alert evaluation after every run and read by
`viskom alerts` and the dashboard.

A key is what is watched: ``band:read_noise_e:2-3.F:BIAS`` (a metric on a unit for a frame
type) or ``outcome:missing_quadrant:1-1.E:SCIENCE``. Its row is open while the key breaches
and cleared when it is back; a new breach opens the same row again (new first_seen, not
acknowledged, not notified). Also here: the few reads the evaluation needs (exposures by id,
those measured since a time, a metric's history for one frame type).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from .models import AlertRow, ExposureRow, MetricRow, StageRunRow
from .records import Exposure, as_utc
from .rows import to_exposure

ALERT_KINDS = ("band", "outcome")
ALERT_LEVELS = ("warning", "alarm")
ALERT_STATES = ("open", "cleared")
#: Largest number of values bound in one IN (...) list.
_CHUNK = 500


@dataclass(frozen=True)
class AlertRecord:
    """A stored alert. `value`, `low` and `high` are those of the last evaluation that
    breached (a learned band's alarm edges); `exposure` is the name of the last breaching
    exposure (None once deleted); first/last_seen its DATE-OBS span; `breaches` how many
    exposures in a row breached (0 once cleared); `notified_via` the channels that took it."""

    id: int
    key: str
    kind: str
    metric: str
    unit: str
    frame_type: str | None
    stage: str | None
    level: str
    state: str
    value: float | None
    low: float | None
    high: float | None
    exposure_id: int | None
    exposure: str | None
    first_seen: datetime | None
    last_seen: datetime | None
    last_checked: datetime | None
    breaches: int
    message: str
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    notified_at: datetime | None
    notified_via: tuple[str, ...]
    notify_error: str | None
    cleared_at: datetime | None
    updated_at: datetime | None

    @property
    def is_open(self) -> bool:
        """Still breaching (not cleared)."""
        return self.state == "open"


@dataclass
class AlertState:
    """The evaluated part of an alert, as the evaluation reads, changes and saves it back.
    `reopened`: a new breach of a key that was clear (or never seen): saving it forgets the
    old acknowledgement and notification."""

    key: str
    kind: str
    metric: str
    unit: str
    frame_type: str | None
    stage: str | None
    level: str
    state: str
    value: float | None
    low: float | None
    high: float | None
    exposure_id: int | None
    first_seen: datetime | None
    last_seen: datetime | None
    last_checked: datetime | None
    breaches: int
    message: str
    cleared_at: datetime | None = None
    reopened: bool = False


@dataclass(frozen=True)
class AlertNotification:
    """What sending an alert did: the channels that have taken it so far, whether that is
    all of them (`done`: notified_at is set), and the last failure (None: none)."""

    alert_id: int
    via: tuple[str, ...]
    done: bool
    error: str | None = None


_STATE_FIELDS = tuple(f.name for f in fields(AlertState) if f.name != "reopened")


def _check(state: AlertState) -> None:
    if state.kind not in ALERT_KINDS:
        raise ValueError(f"alert kind {state.kind!r} not in {ALERT_KINDS}")
    if state.level not in ALERT_LEVELS:
        raise ValueError(f"alert level {state.level!r} not in {ALERT_LEVELS}")
    if state.state not in ALERT_STATES:
        raise ValueError(f"alert state {state.state!r} not in {ALERT_STATES}")
    if not state.key or len(state.key) > 255:
        raise ValueError(f"alert key {state.key!r} must have 1-255 characters")


class AlertQueries:
    """Reading, acknowledging and saving alerts; the reads of the alert evaluation."""

    _dialect: str
    _reader: Any
    _writer: Any
    _tx_now: Any
    _exposure_order: Any
    _text_order: Any

    # -- for people and the dashboard ------------------------------------------------------

    def alerts(
        self,
        *,
        state: str | None = None,
        exposure: str | None = None,
        since: datetime | None = None,
        kind: str | None = None,
        level: str | None = None,
    ) -> list[AlertRecord]:
        """Alerts matching all given filters (None = any): `state` open or cleared, the last
        breaching `exposure` (a name), last breach at or after `since` (DATE-OBS), `kind`
        band or outcome, `level` warning or alarm. Open ones first, then the most recent."""
        stmt = _alert_select()
        if state is not None:
            stmt = stmt.where(AlertRow.state == state)
        if exposure is not None:
            stmt = stmt.where(ExposureRow.name == exposure)
        if since is not None:
            stmt = stmt.where(AlertRow.last_seen >= as_utc(since))
        if kind is not None:
            stmt = stmt.where(AlertRow.kind == kind)
        if level is not None:
            stmt = stmt.where(AlertRow.level == level)
        stmt = stmt.order_by(
            AlertRow.state != "open",
            AlertRow.last_seen.is_(None),
            AlertRow.last_seen.desc(),
            AlertRow.id.desc(),
        )
        with self._reader() as session, session.begin():
            return [_to_record(row, name) for row, name in session.execute(stmt)]

    def alert(self, alert_id: int) -> AlertRecord | None:
        """The alert with id `alert_id`, or None."""
        stmt = _alert_select().where(AlertRow.id == int(alert_id))
        with self._reader() as session, session.begin():
            found = session.execute(stmt).first()
        return None if found is None else _to_record(*found)

    def open_alert_counts(self) -> dict[str, int]:
        """Open alerts per level: {'warning': n, 'alarm': m} (both keys always there)."""
        stmt = (
            select(AlertRow.level, func.count())
            .where(AlertRow.state == "open")
            .group_by(AlertRow.level)
        )
        counts = dict.fromkeys(ALERT_LEVELS, 0)
        with self._reader() as session, session.begin():
            counts.update({level: int(n) for level, n in session.execute(stmt)})
        return counts

    def acknowledge_alert(self, alert_id: int, by: str) -> AlertRecord:
        """Mark an alert as seen by `by` (now); LookupError for an unknown id. Acknowledging
        does not clear it: it clears when the values are back in band."""
        who = str(by).strip()[:255]
        if not who:
            raise ValueError("say who acknowledges the alert")
        with self._writer() as session, session.begin():
            row = session.get(AlertRow, int(alert_id))
            if row is None:
                raise LookupError(f"no alert with id {alert_id}")
            now = self._tx_now(session)
            row.acknowledged_at, row.acknowledged_by, row.updated_at = now, who, now
        found = self.alert(alert_id)
        assert found is not None
        return found

    # -- for the evaluation ----------------------------------------------------------------

    def alert_states(self, kinds: Sequence[str] = ALERT_KINDS) -> dict[str, AlertState]:
        """Every stored alert of these kinds (open or cleared) by key, to evaluate further."""
        stmt = select(AlertRow).where(AlertRow.kind.in_(list(kinds)))
        with self._reader() as session, session.begin():
            return {
                row.key: AlertState(**{f: getattr(row, f) for f in _STATE_FIELDS})
                for row in session.scalars(stmt)
            }

    def save_alert_states(self, states: Iterable[AlertState]) -> None:
        """Insert or update alerts by key, in one transaction. A `reopened` state forgets the
        acknowledgement, notification and clearing of the key's previous alert; otherwise
        those columns are left as they are (an acknowledgement made meanwhile stays)."""
        states = list(states)
        for state in states:
            _check(state)
        if not states:
            return
        with self._writer() as session, session.begin():
            now = self._tx_now(session)
            keys = [s.key for s in states]
            rows: dict[str, AlertRow] = {}
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                rows.update(
                    (r.key, r)
                    for r in session.scalars(select(AlertRow).where(AlertRow.key.in_(chunk)))
                )
            for state in states:
                row = rows.get(state.key)
                if row is None:
                    row = rows[state.key] = AlertRow(key=state.key)
                    session.add(row)
                for name in _STATE_FIELDS:
                    setattr(row, name, getattr(state, name))
                if state.reopened:
                    row.acknowledged_at = row.acknowledged_by = None
                    row.notified_at = row.notified_via = row.notify_error = None
                row.updated_at = now

    def alerts_to_notify(self) -> list[AlertRecord]:
        """Open alarms nobody has been told of yet and nobody has acknowledged, oldest first."""
        stmt = (
            _alert_select()
            .where(
                AlertRow.state == "open",
                AlertRow.level == "alarm",
                AlertRow.notified_at.is_(None),
                AlertRow.acknowledged_at.is_(None),
            )
            .order_by(AlertRow.first_seen, AlertRow.id)
        )
        with self._reader() as session, session.begin():
            return [_to_record(row, name) for row, name in session.execute(stmt)]

    def record_notifications(self, notes: Iterable[AlertNotification]) -> None:
        """Record what sending did for each alert: its channels, notified_at once `done`, the
        last failure (kept for people to see; cleared by a success)."""
        notes = list(notes)
        if not notes:
            return
        with self._writer() as session, session.begin():
            now = self._tx_now(session)
            for note in notes:
                row = session.get(AlertRow, int(note.alert_id))
                if row is None:  # deleted meanwhile
                    continue
                row.notified_via = ",".join(note.via) or None
                row.notify_error = None if note.error is None else str(note.error)[:2000]
                if note.done:
                    row.notified_at = now
                row.updated_at = now

    def exposures_by_ids(self, exposure_ids: Iterable[int]) -> list[Exposure]:
        """The exposures with these ids (unknown ids left out), by DATE-OBS then name."""
        ids = sorted({int(i) for i in exposure_ids})
        found: list[Exposure] = []
        with self._reader() as session, session.begin():
            for i in range(0, len(ids), _CHUNK):
                stmt = select(ExposureRow).where(ExposureRow.id.in_(ids[i : i + _CHUNK]))
                found += [to_exposure(row) for row in session.scalars(stmt)]
        return sorted(found, key=lambda e: (e.date_obs is None, e.date_obs or 0, e.name))

    def exposures_measured_since(self, since: datetime | None) -> list[int]:
        """Ids of the exposures with a stage run that finished after `since` (all measured
        exposures when None), the ones whose alerts may have changed."""
        stmt = select(StageRunRow.exposure_id).distinct()
        if since is not None:
            stmt = stmt.where(StageRunRow.finished_at > as_utc(since))
        with self._reader() as session, session.begin():
            return sorted(int(i) for i in session.scalars(stmt))

    def metric_history(
        self, metric: str, frame_type: str, since: datetime, until: datetime
    ) -> list[tuple[int, datetime, float | None, str, float]]:
        """(exposure id, DATE-OBS, EXPTIME, unit, value) of every stored value of `metric`
        on exposures of `frame_type` with since <= DATE-OBS <= until (NULL values left out):
        one query for a run's worth of learned bands."""
        stmt = (
            select(
                MetricRow.exposure_id,
                ExposureRow.date_obs,
                ExposureRow.exptime,
                MetricRow.unit,
                MetricRow.value,
            )
            .join(ExposureRow, ExposureRow.id == MetricRow.exposure_id)
            .where(
                MetricRow.metric == metric,
                ExposureRow.frame_type == frame_type,
                ExposureRow.date_obs >= as_utc(since),
                ExposureRow.date_obs <= as_utc(until),
                MetricRow.value.is_not(None),
            )
        )
        with self._reader() as session, session.begin():
            return [(int(i), as_utc(t), e, u, float(v)) for i, t, e, u, v in session.execute(stmt)]


def _alert_select() -> Any:
    return select(AlertRow, ExposureRow.name).outerjoin(
        ExposureRow, ExposureRow.id == AlertRow.exposure_id
    )


def _to_record(row: AlertRow, exposure: str | None) -> AlertRecord:
    via = tuple(v for v in (row.notified_via or "").split(",") if v)
    return AlertRecord(
        **{f.name: getattr(row, f.name) for f in fields(AlertRecord)
           if f.name not in ("exposure", "notified_via")},
        exposure=exposure,
        notified_via=via,
    )  # fmt: skip
