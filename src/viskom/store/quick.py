"""The store read for `viskom status` without SQLAlchemy: the DB-API driver (sqlite3 or
psycopg) and plain SQL, read-only, in one transaction.

Importing SQLAlchemy and the ORM models costs ~0.35 s, more than the whole answer may take:
a status that people type again and again must come back in well under half a second. These
queries ask what the `Store` methods of the same names ask (`status_summary`,
`held_claims`, `quality_outcome_counts`...), and return the same records or lighter ones
(`ExposureBrief`, `RunBrief`); tests hold the two to the same answers on SQLite and
PostgreSQL. Anything else keeps using `Store`.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .records import Claim, FetchedFile, OutcomeRecord


class QuickReadError(Exception):
    """The store cannot be read (no database, another schema, an unknown backend)."""


@dataclass(frozen=True)
class ExposureBrief:
    """What status shows of an exposure (`Exposure` without its header)."""

    id: int
    name: str
    frame_type: str | None
    state: str
    reason: str | None
    date_obs: datetime | None
    header_warnings: list[dict[str, Any]] | None


@dataclass(frozen=True)
class RunBrief:
    """What planning and status need of a current stage run (`StageRun` without the
    configuration it kept: `pending.describe_change` then says only that the hash moved)."""

    exposure_id: int
    stage: str
    stage_version: str
    config_hash: str
    status: str
    error: str | None
    failure_class: str | None
    finished_at: datetime | None
    attempts: int | None
    retry_after: datetime | None
    config: dict[str, Any] | None = None
    calibrations: dict[str, Any] | None = None


def _utc(value: Any) -> datetime | None:
    """SQLite's naive UTC text, or PostgreSQL's aware datetime, as aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json(value: Any) -> Any:
    """SQLite's JSON text, or PostgreSQL's decoded JSONB."""
    return json.loads(value) if isinstance(value, str) else value


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLAlchemy SQLite URL (None: in memory, or given as a URI)."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    database = unquote(rest[1:].split("?", 1)[0]) if rest.startswith("/") else ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def postgres_params(url: str) -> dict[str, Any]:
    """psycopg's connection parameters from a SQLAlchemy PostgreSQL URL (its query decoded
    as SQLAlchemy decodes it: '+' is a space, as in libpq `options`)."""
    parts = urlsplit(url)
    params: dict[str, Any] = {"dbname": unquote(parts.path.lstrip("/")) or None}
    if parts.username is not None:
        params["user"] = unquote(parts.username)
    if parts.password is not None:
        params["password"] = unquote(parts.password)
    if parts.hostname:
        params["host"] = parts.hostname
    if parts.port:
        params["port"] = parts.port
    params.update(parse_qsl(parts.query))
    return {k: v for k, v in params.items() if v is not None}


class QuickReader:
    """Read-only queries of a store, by its SQLAlchemy URL (sqlite or postgresql)."""

    def __init__(self, url: str, shown: str) -> None:
        self._url, self._shown = url, shown
        backend = url.split(":", 1)[0].split("+", 1)[0]
        if backend not in ("sqlite", "postgresql"):
            raise QuickReadError(f"no quick reader for {backend!r} databases")
        self.dialect = backend
        self._connection: Any = None
        self._order = 'COLLATE "C"' if backend == "postgresql" else ""

    # -- connection ------------------------------------------------------------------------

    @contextmanager
    def opened(self) -> Iterator[QuickReader]:
        """One connection and one read transaction for every query (a consistent view)."""
        if self.dialect == "sqlite":
            path = sqlite_path(self._url)
            if path is None:
                raise QuickReadError(f"{self._shown} is not a database file")
            if not path.exists():
                raise QuickReadError(f"no database at {path} yet (`viskom run` creates it)")
            wal = path.with_name(path.name + "-wal")
            frozen = not os.access(path.parent, os.W_OK) and not wal.exists()
            flags = "mode=ro" + ("&immutable=1" if frozen else "")
            connection = sqlite3.connect(
                f"file:{path.resolve()}?{flags}", uri=True, timeout=30, isolation_level=None
            )
            connection.execute("BEGIN")
        else:
            import psycopg  # only for PostgreSQL stores

            connection = psycopg.connect(**postgres_params(self._url), autocommit=False)
            connection.read_only = True
        self._connection = connection
        try:
            yield self
        finally:
            self._connection = None
            connection.rollback()
            connection.close()

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        placeholder = "?" if self.dialect == "sqlite" else "%s"
        cursor = self._connection.cursor()
        try:
            cursor.execute(sql.replace("%s", placeholder), params)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    # -- the store as a whole --------------------------------------------------------------

    def revision(self) -> list[str]:
        """The alembic revisions the database is at (none: never migrated)."""
        if self.dialect == "sqlite":
            exists = self._rows(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
            )
        else:
            exists = self._rows("SELECT 1 WHERE to_regclass('alembic_version') IS NOT NULL")
        if not exists:
            return []
        return [r[0] for r in self._rows("SELECT version_num FROM alembic_version")]

    def check_revision(self, head: str | None) -> None:
        """QuickReadError unless the schema is the one this viskom reads (`Store`'s words)."""
        current = self.revision()
        if len(current) > 1:
            raise QuickReadError(f"the database {self._shown} has several schema heads")
        if (current[0] if current else None) != head:
            raise QuickReadError(
                f"the database {self._shown} is at schema revision "
                f"{current[0] if current else 'none'}, this viskom reads {head}: a command "
                "that writes (`viskom run`) migrates it"
            )

    def writable(self) -> bool:
        """Whether this process could write: the SQLite file and its folder, or the role's
        INSERT privilege (`store.engine.can_write`)."""
        if self.dialect == "sqlite":
            path = sqlite_path(self._url)
            if path is None:
                return True
            return os.access(path.parent, os.W_OK) and (
                not path.exists() or os.access(path, os.W_OK)
            )
        return bool(self._rows("SELECT has_table_privilege('stage_runs', 'INSERT')")[0][0])

    def now(self) -> datetime:
        """The database's clock (PostgreSQL), or this machine's (SQLite)."""
        if self.dialect == "postgresql":
            return _utc(self._rows("SELECT now()")[0][0]) or datetime.now(UTC)
        return datetime.now(UTC)

    # -- the queries of `Store` ------------------------------------------------------------

    def held_claims(self) -> list[Claim]:
        """`Store.held_claims`."""
        rows = self._rows(
            "SELECT key, stage, exposure_id, owner, host, pid, claimed_at, heartbeat_at, "
            "expires_at FROM claims WHERE owner IS NOT NULL ORDER BY claimed_at"
        )
        return [Claim(*r[:6], _utc(r[6]), _utc(r[7]), _utc(r[8])) for r in rows]

    def status_summary(self) -> list[dict[str, Any]]:
        """`Store.status_summary`: exposures per UTC day, frame type and state."""
        day = "date(date_obs)"
        if self.dialect == "postgresql":
            day = "CAST(timezone('UTC', date_obs) AS DATE)"
        rows = self._rows(
            f"SELECT {day}, frame_type, state, count(*) FROM exposures "
            f"GROUP BY {day}, frame_type, state"
        )
        counts: dict[tuple[date | None, str | None, str], int] = {}
        for d, frame_type, state, n in rows:
            d = date.fromisoformat(d) if isinstance(d, str) else d
            counts[(d, frame_type, state)] = counts.get((d, frame_type, state), 0) + int(n)
        keys = sorted(counts, key=lambda k: (k[0] is None, k[0] or date.min, k[1] or "", k[2]))
        return [
            {"date": d, "frame_type": f, "state": s, "count": counts[(d, f, s)]} for d, f, s in keys
        ]

    def exposures(self) -> list[ExposureBrief]:
        """Every exposure, by date_obs (undated last) and name (`Store.list_exposures`)."""
        rows = self._rows(
            "SELECT id, name, frame_type, state, reason, date_obs, header_warnings "
            f"FROM exposures ORDER BY date_obs IS NULL, date_obs, name {self._order}"
        )
        return [ExposureBrief(*r[:5], _utc(r[5]), _json(r[6])) for r in rows]

    def stage_runs(self) -> dict[tuple[int, str], RunBrief]:
        """`Store.stage_runs` (every current run), keyed by (exposure id, stage)."""
        rows = self._rows(
            "SELECT exposure_id, stage, stage_version, config_hash, status, error, "
            "failure_class, finished_at, attempts, retry_after FROM stage_runs"
        )
        return {
            (r[0], r[1]): RunBrief(*r[:7], _utc(r[7]), r[8], _utc(r[9]))  # type: ignore[arg-type]
            for r in rows
        }

    def fetched_files(self) -> list[FetchedFile]:
        """`Store.fetched_files`, by name."""
        rows = self._rows(
            "SELECT name, archive, url, state, path, size_bytes, sha256, fetched_at, attempts, "
            "error, tried_at FROM fetched_files ORDER BY name"
        )
        return [FetchedFile(*r[:7], _utc(r[7]), r[8], r[9], _utc(r[10])) for r in rows]  # type: ignore[arg-type]

    def fpa_metric(self, metric: str) -> list[tuple[str, float | None]]:
        """(exposure, value) of one metric on the FPA, by date_obs and name (`Store.metrics`)."""
        return [
            (name, value)
            for name, value in self._rows(
                "SELECT e.name, m.value FROM metrics m JOIN exposures e ON e.id = m.exposure_id "
                "WHERE m.metric = %s AND m.unit = 'FPA' "
                f"ORDER BY e.date_obs IS NULL, e.date_obs, e.name {self._order}",
                (metric,),
            )
        ]

    def quality_outcome_counts(self) -> list[tuple[str, str, int]]:
        """`Store.quality_outcome_counts`."""
        rows = self._rows(
            "SELECT stage, code, count(DISTINCT exposure_id) FROM quality_outcomes "
            f"GROUP BY stage, code ORDER BY stage {self._order}, code {self._order}"
        )
        return [(stage, code, int(n)) for stage, code, n in rows]

    def quality_outcomes(self) -> list[OutcomeRecord]:
        """`Store.quality_outcomes` (all of them)."""
        o = self._order
        rows = self._rows(
            "SELECT e.name, q.stage, q.code, q.unit, q.message, q.recorded_at "
            "FROM quality_outcomes q JOIN exposures e ON e.id = q.exposure_id "
            f"ORDER BY e.date_obs IS NULL, e.date_obs, e.name {o}, q.stage {o}, q.unit {o}, "
            f"q.code {o}, q.id"
        )
        return [OutcomeRecord(*r[:5], _utc(r[5])) for r in rows]  # type: ignore[arg-type]
