"""Alembic migrations of the viskom database (run by viskom.store.migrate)."""
