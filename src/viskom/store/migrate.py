"""Run the Alembic migrations shipped inside the package, without any alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

#: Folder holding env.py, script.py.mako and versions/ (installed as package data).
MIGRATIONS_DIR: Path = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """Build an Alembic config pointing at the packaged migrations.

    Pass ``connection`` to migrate through it (what :class:`~viskom.store.Store` does), or
    ``url`` for command-line style use, e.g. ``command.revision(cfg, autogenerate=True)``.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Migrate the database behind ``connection`` to ``revision`` inside its transaction."""
    command.upgrade(alembic_config(connection), revision)


def head_revision() -> str | None:
    """The newest revision shipped with this version of viskom."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None if it was never migrated."""
    return MigrationContext.configure(connection).get_current_revision()
