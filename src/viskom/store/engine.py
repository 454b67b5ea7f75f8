"""The SQLAlchemy engine behind a Store: SQLite's pragmas and locking, PostgreSQL's pool
checks, and opening a store only to read it.

On SQLite, write transactions start with ``BEGIN IMMEDIATE`` (the write lock at once, so
concurrent writers queue on the busy timeout instead of failing with "database is locked");
that lock is also what makes a claim exclusive there. A read-only store opens the file with
``mode=ro`` (and, with no write-ahead log in a folder this user may not write,
``immutable=1``: SQLite then needs no lock files), never migrates, and says so when the
schema is older than this viskom.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url

from . import migrate

#: How long a SQLite connection waits for another writer before giving up.
SQLITE_BUSY_TIMEOUT_S = 60.0
#: Execution option of the engine whose transactions write (BEGIN IMMEDIATE on SQLite).
WRITE_OPTION = "viskom_write"


def shown_url(url: str | URL) -> str:
    """A database URL fit to print or log: its password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL: say so rather than echo it (it may hold a password)
        return "(unparseable URL)"


class StoreError(Exception):
    """The store cannot be opened as asked (missing, read-only, or another schema)."""


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    if url.query.get("mode") == "memory":
        return None
    return Path(database).expanduser()


def make_engine(url: URL, *, echo: bool = False, read_only: bool = False) -> Engine:
    """The engine for `url`; creates a SQLite file's folder unless `read_only`."""
    kwargs: dict[str, Any] = {}
    dialect = url.get_backend_name()
    if dialect == "sqlite":
        path = _sqlite_file(url)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
        if read_only and path is not None:
            if not path.exists():
                raise StoreError(f"no database at {path} yet (`viskom run` creates it)")
            # mode=ro reads a live WAL database if its -wal and -shm files exist (or may be
            # made); only a database with no WAL at all, in a folder nobody may write, is
            # opened as immutable (no writer can be using it then)
            wal = path.with_name(path.name + "-wal")
            frozen = not os.access(path.parent, os.W_OK) and not wal.exists()
            flags = "mode=ro" + ("&immutable=1" if frozen else "")
            url = url.set(database=f"file:{path.resolve()}?{flags}", query={"uri": "true"})
        elif path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, echo=echo, **kwargs)
    if dialect == "sqlite":
        _install_sqlite_hooks(engine, read_only=read_only)
    return engine


def _install_sqlite_hooks(engine: Engine, *, read_only: bool = False) -> None:
    """Foreign keys, WAL, busy timeout, and SQLAlchemy-controlled BEGIN on SQLite."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (see _on_begin): pysqlite's legacy implicit
        # transactions do not cover SELECT or DDL statements.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            if not read_only:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def check_revision(engine: Engine, url: URL) -> None:
    """StoreError unless the database's schema is the one this viskom writes."""
    with engine.connect() as connection:
        current = migrate.current_revision(connection)
    head = migrate.head_revision()
    if current != head:
        shown = shown_url(url)
        raise StoreError(
            f"the database {shown} is at schema revision {current or 'none'}, this viskom "
            f"reads {head}: a command that writes (`viskom run`) migrates it"
        )


def can_write(engine: Engine, url: URL) -> bool:
    """Whether this process may write: the SQLite file and its folder writable, or the
    PostgreSQL role allowed to insert into the tables."""
    if url.get_backend_name() == "sqlite":
        path = _sqlite_file(url)
        if path is None:
            return True
        return os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))
    try:
        with engine.connect() as connection:
            sql = "SELECT has_table_privilege('stage_runs', 'INSERT')"
            return bool(connection.execute(text(sql)).scalar())
    except Exception:
        return False
