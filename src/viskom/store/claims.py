"""Claims of work units under a lease, so that any number of runs share one store (a mixin
of :class:`Store`).

A work unit is named by a key: ``exposure:ID:STAGE`` for a stage of an exposure,
``period:2024-07`` for a month's period products, ``calibrations`` for the calibration
update. Its row in ``claims`` is free (no owner) or held by one owner (a task of a run,
identified by a random token) until ``expires_at``; the holder's heartbeat moves the lease
on. A holder killed with ``kill -9`` stops beating and its units are free again when the
lease ends. Claiming locks the candidate rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` on
PostgreSQL (two claimers never wait for, or take, the same row); SQLite's ``BEGIN
IMMEDIATE`` serialises the whole claim transaction instead. Times come from the database's
clock on PostgreSQL, so that the hosts of a cluster agree on when a lease ends.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .models import ClaimRow, StageRunRow
from .records import Claim, as_utc

_CHUNK = 500


@dataclass(frozen=True)
class ClaimRequest:
    """A work unit to claim: its key, its stage, and its exposure (None for period products
    and calibrations)."""

    key: str
    stage: str
    exposure_id: int | None = None
    #: the exposure stage's current run as the planner saw it (`run_mark`); None: no run
    seen: str | None = None


class LeaseLost(Exception):  # noqa: N818 (a fact, not an error of the data)
    """The claim on a unit was taken by another owner (its lease ran out): this owner's
    result is not recorded."""


def run_mark(run: Any) -> str | None:
    """What identifies one recorded run of an exposure's stage (None: never ran): when it
    finished, with which settings, how it ended. A different mark at claim time means that
    another run recorded the unit after the planner looked."""
    if run is None:
        return None
    finished = run.finished_at
    when = as_utc(finished).isoformat() if finished is not None else "-"
    return f"{when}|{run.config_hash}|{run.status}"


def exposure_key(exposure_id: int, stage: str) -> str:
    """The claim key of one stage of one exposure."""
    return f"exposure:{int(exposure_id)}:{stage}"


def host_name() -> str:
    """This machine's name, as recorded with claims and stage runs."""
    return socket.gethostname()[:255] or "unknown"


class ClaimQueries:
    """Claim, renew and release work units; list who holds what."""

    _dialect: str
    _reader: Any
    _writer: Any

    def now(self) -> datetime:
        """The database's clock (PostgreSQL), or this machine's (SQLite), as aware UTC."""
        if self._dialect != "postgresql":
            return datetime.now(UTC)
        with self._reader() as session, session.begin():
            return self._tx_now(session)

    def _ensure_claim_rows(self, requests: Sequence[ClaimRequest]) -> None:
        """Create the free rows of units never claimed before (concurrent creators agree)."""
        rows = [{"key": r.key, "stage": r.stage, "exposure_id": r.exposure_id} for r in requests]
        if not rows:
            return
        make_insert = pg_insert if self._dialect == "postgresql" else sqlite_insert
        with self._writer() as session, session.begin():
            for i in range(0, len(rows), _CHUNK):
                stmt = make_insert(ClaimRow.__table__).values(rows[i : i + _CHUNK])
                session.execute(stmt.on_conflict_do_nothing(index_elements=["key"]))

    def claim(
        self,
        requests: Iterable[ClaimRequest],
        owner: str,
        *,
        lease_s: float,
        check_seen: bool = False,
    ) -> list[str]:
        """Claim what is free of `requests` for `owner` (or already its own); returns the
        keys granted, in request order.

        A unit held by another owner whose lease has not run out is left alone. With
        `check_seen`, so is an exposure stage whose current run is no longer the one the
        planner saw (`ClaimRequest.seen`): another run recorded it meanwhile, so it is never
        done twice. The comparison is by the stored row itself, not by clocks.
        """
        requests = list(requests)
        if not requests:
            return []
        self._ensure_claim_rows(requests)
        host, pid = host_name(), os.getpid()
        by_key = {r.key: r for r in requests}
        with self._writer() as session, session.begin():
            now = self._tx_now(session)
            stmt = select(ClaimRow.key).where(
                ClaimRow.key.in_(list(by_key)),
                or_(
                    ClaimRow.owner.is_(None),
                    ClaimRow.owner == owner,
                    ClaimRow.expires_at.is_(None),
                    ClaimRow.expires_at <= now,
                ),
            )
            if self._dialect == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            free = set(session.scalars(stmt))
            if check_seen and free:
                free -= self._changed_since_seen(session, [by_key[k] for k in free])
            granted = [r.key for r in requests if r.key in free]
            if granted:
                session.execute(
                    update(ClaimRow)
                    .where(ClaimRow.key.in_(granted))
                    .values(
                        owner=owner,
                        host=host,
                        pid=pid,
                        claimed_at=now,
                        heartbeat_at=now,
                        expires_at=now + timedelta(seconds=lease_s),
                    )
                )
        return granted

    @staticmethod
    def _changed_since_seen(session: Any, requests: Sequence[ClaimRequest]) -> set[str]:
        """Keys of exposure stages whose current run is not the one their request saw."""
        wanted = {(r.exposure_id, r.stage): r for r in requests if r.exposure_id is not None}
        if not wanted:
            return set()
        ids = sorted({e for e, _ in wanted})
        stmt = select(StageRunRow).where(StageRunRow.exposure_id.in_(ids))
        current = {(row.exposure_id, row.stage): run_mark(row) for row in session.scalars(stmt)}
        return {r.key for k, r in wanted.items() if current.get(k) != r.seen}

    def check_claim(self, session: Any, key: str, owner: str) -> None:
        """LeaseLost unless `owner` still holds `key` (inside a writing transaction)."""
        stmt = select(ClaimRow.owner).where(ClaimRow.key == key)
        if self._dialect == "postgresql":
            stmt = stmt.with_for_update()
        holder = session.scalar(stmt)
        if holder != owner:
            raise LeaseLost(f"{key}: claimed by another run meanwhile (this lease ran out)")

    def release_expired_claims(self) -> int:
        """Free the units whose holder stopped renewing its lease (a killed run)."""
        with self._writer() as session, session.begin():
            now = self._tx_now(session)
            stmt = (
                update(ClaimRow)
                .where(ClaimRow.owner.is_not(None), ClaimRow.expires_at <= now)
                .values(owner=None, expires_at=None, heartbeat_at=None)
            )
            return int(session.execute(stmt).rowcount or 0)

    def claim_started(self, key: str) -> datetime | None:
        """When the unit `key` was last claimed (held now or not), or None."""
        with self._reader() as session, session.begin():
            when = session.scalar(select(ClaimRow.claimed_at).where(ClaimRow.key == key))
        return None if when is None else as_utc(when)

    def _tx_now(self, session: Any) -> datetime:
        if self._dialect == "postgresql":
            return as_utc(session.scalar(select(func.now())))
        return datetime.now(UTC)

    def renew_claims(self, owner: str, *, lease_s: float) -> int:
        """The heartbeat: extend the lease of every unit `owner` holds; returns how many."""
        with self._writer() as session, session.begin():
            now = self._tx_now(session)
            result = session.execute(
                update(ClaimRow)
                .where(ClaimRow.owner == owner)
                .values(heartbeat_at=now, expires_at=now + timedelta(seconds=lease_s))
            )
            return int(result.rowcount or 0)

    def release_claims(self, owner: str, keys: Iterable[str] | None = None) -> int:
        """Free the units `owner` holds (all of them, or `keys`); returns how many."""
        stmt = update(ClaimRow).where(ClaimRow.owner == owner)
        if keys is not None:
            keys = list(keys)
            if not keys:
                return 0
            stmt = stmt.where(ClaimRow.key.in_(keys))
        values = {"owner": None, "expires_at": None, "heartbeat_at": None}
        with self._writer() as session, session.begin():
            return int(session.execute(stmt.values(**values)).rowcount or 0)

    def held_claims(self) -> list[Claim]:
        """Every unit someone holds (live or with a lease that ran out), oldest first."""
        stmt = select(ClaimRow).where(ClaimRow.owner.is_not(None)).order_by(ClaimRow.claimed_at)
        with self._reader() as session, session.begin():
            return [
                Claim(
                    r.key,
                    r.stage,
                    r.exposure_id,
                    r.owner,
                    r.host,
                    r.pid,
                    r.claimed_at,
                    r.heartbeat_at,
                    r.expires_at,
                )
                for r in session.scalars(stmt)
            ]

    def oldest_live_claim(self) -> datetime | None:
        """When the oldest claim whose lease still runs was taken (None: no live claim)."""
        now = self.now()
        times = [c.claimed_at for c in self.held_claims() if not c.expired(now) and c.claimed_at]
        return min(times) if times else None
