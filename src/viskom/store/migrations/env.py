"""Alembic environment of viskom.

Normally driven by :func:`viskom.store.migrate.upgrade`, which passes an open connection in
``config.attributes["connection"]``; a ``sqlalchemy.url`` main option works too (development).
No logging configuration is applied, so the application's logging is left alone.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection

from viskom.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run_on(connection: Connection) -> None:
    """Run the pending migrations on ``connection`` (batch mode on SQLite for ALTERs)."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through the shared connection, or through a throw-away engine on the URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "viskom migrations need config.attributes['connection'] or a sqlalchemy.url option"
        )
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            _run_on(connection)
    finally:
        engine.dispose()


def run_migrations_offline() -> None:
    """Emit the migration SQL for ``sqlalchemy.url``'s dialect instead of running it."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
