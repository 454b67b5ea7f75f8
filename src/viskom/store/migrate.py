"""Run the Alembic migrations shipped inside the package, without any alembic.ini."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # alembic is imported where it is used: reading commands start faster
    from sqlalchemy.engine import Connection

#: Folder holding env.py, script.py.mako and versions/ (installed as package data).
MIGRATIONS_DIR: Path = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Any:
    """Build an Alembic config pointing at the packaged migrations.

    Pass ``connection`` to migrate through it (what :class:`~viskom.store.Store` does), or
    ``url`` for command-line style use, e.g. ``command.revision(cfg, autogenerate=True)``.
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Migrate the database behind ``connection`` to ``revision`` inside its transaction."""
    from alembic import command

    command.upgrade(alembic_config(connection), revision)


_REVISION = re.compile(r"^revision(?::[^=]*)?=\s*[\"']([^\"']+)[\"']", re.M)
_DOWN_REVISION = re.compile(r"^down_revision(?::[^=]*)?=\s*[\"']([^\"']+)[\"']", re.M)


def head_revision() -> str | None:
    """The newest revision shipped with this version of viskom.

    Read from the revision files' `revision` and `down_revision` lines (a linear history
    has one revision nobody points down to): importing alembic's script machinery costs a
    reading command such as `viskom status` a tenth of a second. Alembic answers when the
    history is not a single line.
    """
    revisions: set[str] = set()
    downs: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        text = path.read_text()
        if found := _REVISION.search(text):
            revisions.add(found.group(1))
        if found := _DOWN_REVISION.search(text):
            downs.add(found.group(1))
    heads = revisions - downs
    if len(heads) == 1:
        return heads.pop()
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None if it was never migrated (alembic's
    `alembic_version` table read directly; alembic itself when it holds several rows)."""
    from sqlalchemy import inspect, text

    if not inspect(connection).has_table("alembic_version"):
        return None
    rows = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) <= 1:
        return rows[0] if rows else None
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()
