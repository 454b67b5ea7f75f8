"""What the archive was asked for and what came of it (a mixin of :class:`Store`): one row
per raw file name in ``fetched_files``, written by `viskom fetch` and read by `viskom status`
and by the next fetch (a file held and recorded is not fetched, nor read, again)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update

from .models import ExposureRow, FetchedFileRow
from .records import FetchedFile

FETCH_STATES = ("fetched", "failed", "not_found")


@dataclass(frozen=True)
class FetchOutcome:
    """One file's outcome in a fetch: name, URL (no credentials), state, and for a fetched
    file its path, size and SHA-256; for a failure the reason."""

    name: str
    url: str
    state: str
    path: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    error: str | None = None


class FetchQueries:
    """Recording fetches, and reading them back."""

    _reader: Any
    _writer: Any
    _tx_now: Any

    def record_fetches(self, archive: str, outcomes: Iterable[FetchOutcome]) -> None:
        """Record what a fetch did with each file. A fetched file replaces the row (attempts
        back to 0); a failure counts one more attempt and keeps what an earlier success
        recorded (the file may still be there from before)."""
        outcomes = list(outcomes)
        if not outcomes:
            return
        for o in outcomes:
            if o.state not in FETCH_STATES:
                raise ValueError(f"unknown fetch state {o.state!r}")
        with self._writer() as session, session.begin():
            now = self._tx_now(session)
            names = [o.name for o in outcomes]
            rows = {
                r.name: r
                for r in session.scalars(
                    select(FetchedFileRow).where(FetchedFileRow.name.in_(names))
                )
            }
            for o in outcomes:
                row = rows.get(o.name)
                if row is None:
                    row = FetchedFileRow(name=o.name, attempts=0)
                    session.add(row)
                    rows[o.name] = row
                row.archive, row.url, row.tried_at = archive, o.url, now
                if o.state == "fetched":
                    row.state, row.path, row.error, row.attempts = "fetched", o.path, None, 0
                    row.size_bytes, row.sha256, row.fetched_at = o.size_bytes, o.sha256, now
                else:
                    row.attempts = (row.attempts or 0) + 1
                    row.error = o.error
                    if row.state != "fetched" or row.path is None:
                        row.state = o.state

    def fetched_files(self, state: str | None = None) -> list[FetchedFile]:
        """The fetch records (of one state), by name."""
        stmt = select(FetchedFileRow).order_by(FetchedFileRow.name)
        if state is not None:
            stmt = stmt.where(FetchedFileRow.state == state)
        with self._reader() as session, session.begin():
            return [_to_fetched(r) for r in session.scalars(stmt)]

    def fetch_counts(self) -> dict[str, int]:
        """Fetch records per state."""
        stmt = select(FetchedFileRow.state, func.count()).group_by(FetchedFileRow.state)
        with self._reader() as session, session.begin():
            return {state: int(n) for state, n in session.execute(stmt)}

    def relocate_file(self, name: str, exposure: str | None, old: str, new: str) -> bool:
        """Point the fetch record `name` and the exposure `exposure` at `new` (a verified copy
        of `old`), only where they still point at `old`; False if the exposure moved meanwhile."""
        with self._writer() as session, session.begin():
            now = self._tx_now(session)
            if exposure is not None:
                done = session.execute(
                    update(ExposureRow)
                    .where(ExposureRow.name == exposure, ExposureRow.path == old)
                    .values(path=new, updated_at=now)
                )
                if done.rowcount != 1:
                    return False
            session.execute(
                update(FetchedFileRow)
                .where(FetchedFileRow.name == name, FetchedFileRow.path == old)
                .values(path=new)
            )
        return True


def _to_fetched(row: FetchedFileRow) -> FetchedFile:
    return FetchedFile(
        name=row.name,
        archive=row.archive,
        url=row.url,
        state=row.state,
        path=row.path,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        fetched_at=row.fetched_at,
        attempts=row.attempts,
        error=row.error,
        tried_at=row.tried_at,
    )
