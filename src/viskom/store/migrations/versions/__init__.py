"""Alembic revision scripts of the viskom database."""
